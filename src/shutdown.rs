//! Graceful shutdown. On SIGTERM (or Ctrl-C) the listener stops accepting
//! and the server starts *draining*: a session with no transaction open and
//! nothing in flight ends at once with FATAL 57P01; a session inside a
//! transaction may finish it, then ends the same way. After the grace
//! period the shutdown is *forced*: every remaining session gets 57P01, its
//! backend query is cancelled and its connection closed.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::messages::PgError;

/// How often a draining session looks whether it has become idle.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How long forced sessions get to say goodbye before the server returns.
const FORCED_LIMIT: Duration = Duration::from_secs(5);

/// The shutdown state every session watches.
#[derive(Default)]
pub struct Shutdown {
    draining: CancellationToken,
    forced: CancellationToken,
}

impl Shutdown {
    /// True once a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves with the error to end a session with: once the shutdown has
    /// begun and `idle()` holds, or once it is forced.
    pub async fn session_must_end(&self, idle: impl Fn() -> bool) -> PgError {
        self.draining.cancelled().await;
        while !idle() {
            tokio::select! {
                () = self.forced.cancelled() => break,
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        admin_shutdown()
    }

    /// Drains: waits up to `grace` for the sessions counted by `open` to
    /// end, then forces the rest and waits a few seconds more.
    pub async fn drain(&self, open: impl Fn() -> usize, grace: Duration) {
        self.draining.cancel();
        tracing::info!(
            sessions = open(),
            grace_secs = grace.as_secs(),
            "shutting down: no new sessions; open transactions may finish"
        );
        if !wait_for_zero(&open, grace).await {
            tracing::warn!(
                sessions = open(),
                "shutdown grace period over: cancelling and closing the remaining sessions"
            );
            self.forced.cancel();
            if !wait_for_zero(&open, FORCED_LIMIT).await {
                tracing::warn!(sessions = open(), "sessions still open; exiting anyway");
            }
        }
    }
}

/// The error PostgreSQL sends when an administrator ends a session.
pub fn admin_shutdown() -> PgError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command",
    )
}

/// Waits until `open()` is 0; false when `limit` passed first.
async fn wait_for_zero(open: &impl Fn() -> usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while open() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(IDLE_POLL).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn idle_sessions_end_when_draining_busy_ones_when_idle_or_forced() {
        let shutdown = Shutdown::default();
        let idle = || true;
        let waiting = tokio::time::timeout(IDLE_POLL * 5, shutdown.session_must_end(idle));
        assert!(waiting.await.is_err(), "nothing ends before the shutdown");
        shutdown.draining.cancel();
        assert_eq!(shutdown.session_must_end(idle).await.code, "57P01");

        let busy = AtomicBool::new(true);
        let in_transaction = || !busy.load(Ordering::Relaxed);
        let waiting =
            tokio::time::timeout(IDLE_POLL * 5, shutdown.session_must_end(in_transaction));
        assert!(waiting.await.is_err(), "a transaction may finish");
        busy.store(false, Ordering::Relaxed);
        assert_eq!(
            shutdown.session_must_end(in_transaction).await.code,
            "57P01"
        );

        shutdown.forced.cancel();
        assert_eq!(shutdown.session_must_end(|| false).await.code, "57P01");
    }
}
