//! Graceful shutdown. On SIGTERM (or Ctrl-C) the listener stops accepting
//! and the server starts *draining*: a session with no transaction open and
//! nothing in flight ends at once with FATAL 57P01; a session inside a
//! transaction may finish it, then ends the same way. After the grace
//! period the shutdown is *forced*: every remaining session gets 57P01, its
//! backend query is cancelled and its connection closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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

    /// What one session watches: the start of the drain, then its forcing.
    pub fn watch(&self) -> Watch {
        Watch {
            draining: Some(Box::pin(self.draining.clone().cancelled_owned())),
            forced: Some(Box::pin(self.forced.clone().cancelled_owned())),
        }
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

/// A session's view of the shutdown, polled from its event loop.
pub struct Watch {
    draining: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    forced: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Watch {
    /// Ready once the drain has begun: an idle session ends then, a busy
    /// one as soon as it becomes idle.
    pub fn poll_draining(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        poll_once(&mut self.draining, cx)
    }

    /// Ready once the grace period is over: every session ends now.
    pub fn poll_forced(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        poll_once(&mut self.forced, cx)
    }
}

/// Polls a future that is ready for good once it has been ready.
fn poll_once(
    slot: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(future) = slot.as_mut() else {
        return Poll::Ready(());
    };
    let ready = future.as_mut().poll(cx);
    if ready.is_ready() {
        *slot = None;
    }
    ready
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

    /// Whether the drain has begun, and whether it is forced, right now.
    async fn peek(watch: &mut Watch) -> (bool, bool) {
        std::future::poll_fn(|cx| {
            let draining = watch.poll_draining(cx).is_ready();
            Poll::Ready((draining, watch.poll_forced(cx).is_ready()))
        })
        .await
    }

    #[tokio::test]
    async fn a_watch_sees_the_drain_then_its_forcing() {
        let shutdown = Shutdown::default();
        let mut watch = shutdown.watch();
        assert_eq!(peek(&mut watch).await, (false, false));
        shutdown.draining.cancel();
        assert_eq!(peek(&mut watch).await, (true, false));
        shutdown.forced.cancel();
        assert_eq!(peek(&mut watch).await, (true, true));
        assert_eq!(peek(&mut watch).await, (true, true), "stays ready");
        assert_eq!(admin_shutdown().code, "57P01");
    }
}
