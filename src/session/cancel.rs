//! The cancel keys pgveil hands to clients, mapped to the backend process
//! that currently runs each session's queries (none between transactions
//! under transaction pooling).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::{send_cancel, CancelKey};

/// The backend connection a session's queries run on right now.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Option<CancelKey>>);

impl CancelSlot {
    /// Records the backend attached to the session (None: none attached).
    pub fn set(&self, key: Option<CancelKey>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = key;
    }

    fn get(&self) -> Option<CancelKey> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Maps the (pid, secret) pairs given to clients to their sessions' slots.
#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Registers a session; returns the (pid, secret) for its client and
    /// the slot the session keeps up to date.
    pub fn register(&self) -> ((i32, i32), Arc<CancelSlot>) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if key.0 != 0 && !keys.contains_key(&key) {
                let slot = Arc::new(CancelSlot::default());
                keys.insert(key, slot.clone());
                return (key, slot);
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

    /// Forwards a client's CancelRequest to the backend running its query;
    /// unknown keys and idle sessions are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let slot = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, secret))
            .cloned();
        match slot.and_then(|s| s.get()) {
            Some(key) => send_cancel(&key).await,
            None => tracing::info!(pid, "cancel request with an unknown key ignored"),
        }
    }
}
