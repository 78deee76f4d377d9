//! The cancel keys pgveil hands to clients, mapped to the backend process
//! that currently runs each session's queries.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::{send_cancel, CancelKey};

/// Maps (pid, secret) given to clients to backend cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<(i32, i32), CancelKey>>,
}

impl CancelRegistry {
    /// Registers a session and returns the (pid, secret) for its client.
    pub fn register(&self, backend: CancelKey) -> (i32, i32) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if key.0 != 0 && !keys.contains_key(&key) {
                keys.insert(key, backend);
                return key;
            }
        }
    }

    /// Forgets a session's key.
    pub fn unregister(&self, key: (i32, i32)) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Forwards a client's CancelRequest to the right backend; unknown keys
    /// are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, secret))
            .cloned();
        match target {
            Some(key) => send_cancel(&key).await,
            None => tracing::info!(pid, "cancel request with an unknown key ignored"),
        }
    }
}
