//! The data path's side of the log: a cheap, non-blocking handle, and
//! [`start`], which recovers the chain and spawns the writer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::catalog::TableCatalog;
use super::chain::Link;
use super::config::AuditConfig;
use super::event::AuditEvent;
use super::file_sink::FileSink;
use super::table_sink::TableSink;
use super::writer::{Message, Shared, Writer};
use super::{AuditError, AuditUnavailable};

/// Hands events to the background writer; Clone + Send + Sync.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    required: bool,
}

/// Opens the sinks, finds the chain's last link (head file and live file,
/// else the table) and spawns the writer. Fails if a configured sink cannot
/// be opened now. Must run inside a tokio runtime.
pub async fn start(
    config: AuditConfig,
    pool: Option<Pool>,
) -> Result<(AuditHandle, JoinHandle<()>), AuditError> {
    config.validate(pool.is_some())?;
    let mut file = config
        .file
        .clone()
        .map(|path| FileSink::new(path, config.max_file_bytes, config.keep_files));
    let mut table = pool.filter(|_| config.table).map(TableSink::new);
    let from_table = match &mut table {
        Some(t) => Some(t.recover().await?),
        None => None,
    };
    let last = match (&mut file, from_table) {
        (Some(f), _) => f.lock()?.moved.unwrap_or_else(Link::genesis),
        (None, Some(link)) => link,
        (None, None) => return Err(AuditError::Config("no sink".into())),
    };
    let (tx, rx) = mpsc::channel(config.buffer);
    let shared = Arc::new(Shared::new());
    let writer = Writer {
        rx,
        shared: Arc::clone(&shared),
        file: file.map(|f| Arc::new(Mutex::new(f))),
        table,
        last,
    };
    let task = tokio::spawn(writer.run());
    let handle = AuditHandle {
        tx,
        shared,
        required: config.required,
    };
    Ok((handle, task))
}

impl AuditHandle {
    /// Queues one event without waiting. An event that cannot be queued
    /// (buffer full, writer stopped) is dropped and counted; the result is
    /// then Err with `required = true` and Ok otherwise. Events are queued
    /// while a sink fails, so the statements that already ran are written
    /// once it recovers; [`Self::admit`] is what refuses new statements.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        match self.tx.try_send(Message::Event(Box::new(event))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => self.lost(AuditUnavailable::Full),
            Err(TrySendError::Closed(_)) => self.lost(AuditUnavailable::Stopped),
        }
    }

    /// Queues one event, waiting while the buffer is full; for callers
    /// off the data path that must not lose a record (`pgveil subject`).
    pub async fn record_waiting(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.tx
            .send(Message::Event(Box::new(event)))
            .await
            .map_err(|_| AuditError::Stopped)
    }

    /// Whether a statement may run now: always Ok with `required = false`;
    /// with `required = true`, Err when an event recorded now would be
    /// refused. Call before forwarding; call [`Self::record`] on completion.
    pub fn admit(&self) -> Result<(), AuditUnavailable> {
        if !self.required {
            return Ok(());
        }
        if self.tx.is_closed() {
            Err(AuditUnavailable::Stopped)
        } else if !self.healthy() {
            Err(AuditUnavailable::Failing)
        } else if self.tx.capacity() == 0 {
            Err(AuditUnavailable::Full)
        } else {
            Ok(())
        }
    }

    fn lost(&self, why: AuditUnavailable) -> Result<(), AuditUnavailable> {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        if self.required {
            Err(why)
        } else {
            Ok(())
        }
    }

    /// Whether `required = true` was configured.
    pub fn required(&self) -> bool {
        self.required
    }

    /// False after a failed write until a write succeeds again.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Events not logged (buffer full, writer stopped, or refused while failing).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written to every sink since start.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Replaces the protected tables looked for in statements (call at start
    /// and after each policy reload).
    pub fn set_catalog(&self, catalog: TableCatalog) {
        self.shared.catalog.store(Arc::new(catalog));
    }

    /// Waits until every event queued before this call is written to every
    /// sink (waits through a sink outage; bound it with a timeout).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.send_and_wait(Message::Flush).await
    }

    /// Writes everything queued before this call, then stops the writer;
    /// later events are refused (or dropped) as [`AuditUnavailable::Stopped`].
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        self.send_and_wait(Message::Shutdown).await
    }

    async fn send_and_wait(
        &self,
        message: fn(oneshot::Sender<()>) -> Message,
    ) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(message(done))
            .await
            .map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)
    }
}
