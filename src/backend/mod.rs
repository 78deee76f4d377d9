//! Connections to PostgreSQL: login as a backend role, a pool of idle
//! connections per role, reset before reuse, and cancel requests.

mod connect;
pub mod memory;
mod pool;
mod tls;

pub use connect::{send_cancel, BackendConn, BackendTarget, CancelKey, Login};
pub use pool::{PooledConn, Pools};

use crate::protocol::messages::PgError;

/// Failure to reach, log in to, or talk with PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connection failed.
    #[error("cannot connect to PostgreSQL at {addr}: {source}")]
    Connect {
        /// host:port tried.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A step took longer than the configured limit.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// TLS negotiation failed or was required but refused.
    #[error("TLS to PostgreSQL failed: {0}")]
    Tls(String),
    /// PostgreSQL asked for an authentication method pgveil cannot do.
    #[error("PostgreSQL asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    /// PostgreSQL answered with an error.
    #[error("PostgreSQL: {}", .0.message)]
    Server(PgError),
    /// PostgreSQL sent something unexpected.
    #[error("unexpected message from PostgreSQL: {0}")]
    Protocol(String),
    /// The connection broke.
    #[error("connection to PostgreSQL lost: {0}")]
    Io(#[from] std::io::Error),
    /// Every pooled connection for the role is busy.
    #[error("no backend connection became free in time (pool.max_size reached)")]
    PoolExhausted,
}

impl BackendError {
    /// The error a client is told, with its SQLSTATE.
    pub fn to_client_error(&self) -> PgError {
        match self {
            BackendError::Server(e) => e.clone(),
            BackendError::PoolExhausted => PgError::fatal("53300", self.to_string())
                .with_hint("raise pool.max_size in pgveil.toml or close idle sessions"),
            BackendError::UnsupportedAuth(_) | BackendError::Tls(_) => {
                PgError::fatal("08001", self.to_string())
            }
            _ => PgError::fatal("08006", self.to_string())
                .with_hint("check that PostgreSQL is running and reachable from pgveil"),
        }
    }
}
