//! The background writer: takes events from the channel in batches, turns
//! them into chained record lines and writes every batch to all sinks,
//! retrying a failing sink until it recovers. The health flag tells the
//! data path whether the last write succeeded. With a file, each batch is
//! written under the file's lock and continues the chain from the files,
//! so other processes may append to the same log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::catalog::TableCatalog;
use super::chain::Link;
use super::event::AuditEvent;
use super::file_sink::{FileSink, Locked};
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
        let mut retry = Retry::new(Arc::clone(&self.shared));
        let written = match self.file.clone() {
            Some(file) => {
                self.write_with_file(file, events, &catalog, &mut retry)
                    .await
            }
            None => self.write_table_only(events, &catalog, &mut retry).await,
        };
        self.shared.written.fetch_add(written, Ordering::Relaxed);
        self.shared.healthy.store(true, Ordering::Release);
    }

    /// Under the file's lock: the chain continues from the files, every
    /// line goes to the file and (when configured) the table.
    async fn write_with_file(
        &mut self,
        file: Arc<Mutex<FileSink>>,
        events: &[AuditEvent],
        catalog: &TableCatalog,
        retry: &mut Retry,
    ) -> u64 {
        let _lock = loop {
            match lock_file(&file).await {
                Ok(locked) => {
                    // Another writer appended: continue after its records.
                    // Files that lost records (removed, cut off) do not
                    // move the chain back; the gap stays visible.
                    if let Some(link) = locked.moved.filter(|l| l.seq > self.last.seq) {
                        self.last = link;
                    }
                    break locked.lock;
                }
                Err(e) => retry.failed(e).await,
            }
        };
        let first_seq = self.last.seq + 1;
        let (lines, end) = render_all(events, catalog, &self.last);
        let lines = Arc::new(lines);
        let mut file_done = false;
        let mut table_done = self.table.is_none();
        loop {
            if !file_done {
                match append_file(&file, &lines, first_seq, &end).await {
                    Ok(()) => file_done = true,
                    Err(e) => retry.failed(e).await,
                }
            }
            if let (false, Some(table)) = (table_done, &mut self.table) {
                match table.insert(&lines).await {
                    Ok(()) => table_done = true,
                    Err(e) => retry.failed(e).await,
                }
            }
            if file_done && table_done {
                break;
            }
        }
        self.last = end;
        lines.len() as u64
    }

    /// Without a file: the chain continues from the table, inside the
    /// table's own transaction and lock.
    async fn write_table_only(
        &mut self,
        events: &[AuditEvent],
        catalog: &TableCatalog,
        retry: &mut Retry,
    ) -> u64 {
        let Some(table) = &mut self.table else {
            return 0;
        };
        loop {
            match table
                .append_chained(|link| render_all(events, catalog, link))
                .await
            {
                Ok(end) => {
                    self.last = end;
                    return events.len() as u64;
                }
                Err(e) => retry.failed(e).await,
            }
        }
    }
}

/// The record lines of `events` following `last`, and the link after them.
fn render_all(events: &[AuditEvent], catalog: &TableCatalog, last: &Link) -> (Vec<String>, Link) {
    let mut link = last.clone();
    let lines = events
        .iter()
        .map(|event| {
            let line = record::render(event, catalog, &link);
            link = link.next(&line);
            line
        })
        .collect();
    (lines, link)
}

/// Takes the file's lock (waiting for other writers) off the runtime.
async fn lock_file(file: &Arc<Mutex<FileSink>>) -> Result<Locked, AuditError> {
    let file = Arc::clone(file);
    blocking(move || sink(&file).lock()).await
}

async fn append_file(
    file: &Arc<Mutex<FileSink>>,
    lines: &Arc<Vec<String>>,
    first_seq: u64,
    end: &Link,
) -> Result<(), AuditError> {
    let (file, lines, end) = (Arc::clone(file), Arc::clone(lines), end.clone());
    blocking(move || sink(&file).append(&lines, first_seq, &end)).await
}

fn sink(file: &Mutex<FileSink>) -> std::sync::MutexGuard<'_, FileSink> {
    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(AuditError::Config(format!("audit file writer failed: {e}"))))
}

/// Waiting between attempts while a sink fails: marks the log unhealthy
/// and backs off exponentially.
struct Retry {
    shared: Arc<Shared>,
    delay: Duration,
}

impl Retry {
    fn new(shared: Arc<Shared>) -> Self {
        Retry {
            shared,
            delay: RETRY_FIRST,
        }
    }

    async fn failed(&mut self, error: AuditError) {
        tracing::error!(error = %error, "audit write failed; retrying");
        self.shared.healthy.store(false, Ordering::Release);
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(RETRY_MAX);
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
