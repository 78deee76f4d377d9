//! A pool of idle, reset backend connections per backend login role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{
    self, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult, Status,
};
use deadpool::Runtime;

use super::{BackendConn, BackendError, BackendTarget, Login};

/// Creates backend connections for one login role.
pub struct Manager {
    target: Arc<BackendTarget>,
    login: Login,
}

impl managed::Manager for Manager {
    type Type = BackendConn;
    type Error = BackendError;

    async fn create(&self) -> Result<BackendConn, BackendError> {
        BackendConn::connect(&self.target, &self.login).await
    }

    async fn recycle(&self, conn: &mut BackendConn, _: &Metrics) -> RecycleResult<BackendError> {
        if conn.broken {
            return Err(RecycleError::message("connection marked broken"));
        }
        if conn.hung_up() {
            return Err(RecycleError::message(
                "connection closed by PostgreSQL while idle",
            ));
        }
        Ok(())
    }
}

/// A backend connection on loan from its pool; dropping it returns it.
pub type PooledConn = Object<Manager>;

/// One pool per backend login role, created on first use.
pub struct Pools {
    target: Arc<BackendTarget>,
    max_size: usize,
    wait: Duration,
    pools: Mutex<HashMap<Login, Pool<Manager>>>,
}

impl Pools {
    /// Pools of at most `max_size` connections per role; a session waits at
    /// most `wait` for a free one.
    pub fn new(target: BackendTarget, max_size: usize, wait: Duration) -> Self {
        Pools {
            target: Arc::new(target),
            max_size,
            wait,
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool_for(&self, login: &Login) -> Result<Pool<Manager>, BackendError> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(login) {
            return Ok(pool.clone());
        }
        let manager = Manager {
            target: self.target.clone(),
            login: login.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(self.max_size)
            .wait_timeout(Some(self.wait))
            .create_timeout(Some(self.target.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| BackendError::Protocol(format!("cannot build pool: {e}")))?;
        pools.insert(login.clone(), pool.clone());
        Ok(pool)
    }

    /// Takes an idle connection for `login`, or opens a new one.
    pub async fn get(&self, login: &Login) -> Result<PooledConn, BackendError> {
        let pool = self.pool_for(login)?;
        pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(managed::TimeoutType::Wait) => BackendError::PoolExhausted,
            PoolError::Timeout(_) => BackendError::Timeout("connecting to PostgreSQL"),
            other => BackendError::Protocol(other.to_string()),
        })
    }

    /// The state of each login role's pool, by role name.
    pub fn status(&self) -> Vec<(String, Status)> {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools
            .iter()
            .map(|(login, pool)| (login.user.clone(), pool.status()))
            .collect()
    }

    /// Where the pools connect to.
    pub fn target(&self) -> &BackendTarget {
        &self.target
    }

    /// Returns a connection after use: reset (within the connect timeout)
    /// and pooled when `reusable`,
    /// closed otherwise. (Transaction pooling hands a caught-up connection
    /// back by dropping it, without a reset.)
    pub async fn release(&self, mut conn: PooledConn, reusable: bool) {
        if reusable && !conn.broken {
            // a backend that stops answering must not hold the session forever
            let limit = self.target.connect_timeout;
            let reset = tokio::time::timeout(limit, conn.reset()).await;
            if matches!(reset, Ok(Ok(()))) {
                return;
            }
        }
        drop(Object::take(conn));
    }
}
