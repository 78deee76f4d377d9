//! The background writer: takes events from the channel in batches, turns
//! them into chained record lines and writes every batch to all sinks,
//! retrying a failing sink until it recovers. The health flag tells the
//! data path whether the last write succeeded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::catalog::TableCatalog;
use super::chain::Link;
use super::event::AuditEvent;
use super::file_sink::FileSink;
use super::record;
use super::table_sink::TableSink;
use super::AuditError;

const BATCH: usize = 512;
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// State shared by the handles and the writer.
pub struct Shared {
    /// False after a failed write until a write succeeds.
    pub healthy: AtomicBool,
    /// Events not logged because the buffer was full or the writer stopped.
    pub dropped: AtomicU64,
    /// Records written to every sink.
    pub written: AtomicU64,
    /// Protected tables looked for in statements.
    pub catalog: ArcSwap<TableCatalog>,
}

impl Shared {
    /// Fresh state: healthy, nothing dropped, empty catalog.
    pub fn new() -> Self {
        Shared {
            healthy: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            catalog: ArcSwap::from_pointee(TableCatalog::default()),
        }
    }
}

/// What goes through the channel.
pub enum Message {
    /// An event to log.
    Event(Box<AuditEvent>),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
    /// Like Flush, then stop.
    Shutdown(oneshot::Sender<()>),
}

/// The writer task's state.
pub struct Writer {
    pub rx: mpsc::Receiver<Message>,
    pub shared: Arc<Shared>,
    pub file: Option<Arc<Mutex<FileSink>>>,
    pub table: Option<TableSink>,
    pub last: Link,
}

struct Batch {
    events: Vec<AuditEvent>,
    waiters: Vec<oneshot::Sender<()>>,
    stop: bool,
}

impl Writer {
    /// Runs until Shutdown or until every handle is gone.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut batch = Batch {
                events: Vec::new(),
                waiters: Vec::new(),
                stop: false,
            };
            batch.take(first);
            while !batch.stop && batch.events.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(message) => batch.take(message),
                    Err(_) => break,
                }
            }
            if !batch.events.is_empty() {
                self.write(&batch.events).await;
            }
            for waiter in batch.waiters {
                let _ = waiter.send(());
            }
            if batch.stop {
                break;
            }
        }
    }

    /// Writes one batch to every sink, retrying until all have it.
    async fn write(&mut self, events: &[AuditEvent]) {
        let catalog = self.shared.catalog.load_full();
        let first_seq = self.last.seq + 1;
        let mut link = self.last.clone();
        let lines: Arc<Vec<String>> = Arc::new(
            events
                .iter()
                .map(|event| {
                    let line = record::render(event, &catalog, &link);
                    link = link.next(&line);
                    line
                })
                .collect(),
        );
        let mut file_done = self.file.is_none();
        let mut table_done = self.table.is_none();
        let mut delay = RETRY_FIRST;
        loop {
            if !file_done {
                file_done = report(self.write_file(&lines, first_seq, &link).await);
            }
            if !table_done {
                if let Some(table) = &mut self.table {
                    table_done = report(table.insert(&lines).await);
                }
            }
            if file_done && table_done {
                break;
            }
            self.shared.healthy.store(false, Ordering::Release);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
        self.last = link;
        self.shared
            .written
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.shared.healthy.store(true, Ordering::Release);
    }

    async fn write_file(
        &self,
        lines: &Arc<Vec<String>>,
        first_seq: u64,
        end: &Link,
    ) -> Result<(), AuditError> {
        let Some(sink) = self.file.clone() else {
            return Ok(());
        };
        let lines = Arc::clone(lines);
        let end = end.clone();
        tokio::task::spawn_blocking(move || {
            sink.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .append(&lines, first_seq, &end)
        })
        .await
        .unwrap_or_else(|e| Err(AuditError::Config(format!("audit file writer failed: {e}"))))
    }
}

impl Batch {
    fn take(&mut self, message: Message) {
        match message {
            Message::Event(event) => self.events.push(*event),
            Message::Flush(waiter) => self.waiters.push(waiter),
            Message::Shutdown(waiter) => {
                self.waiters.push(waiter);
                self.stop = true;
            }
        }
    }
}

fn report(result: Result<(), AuditError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; retrying");
            false
        }
    }
}
