//! The example CRM: its schema and a fast, deterministic data generator.
//!
//! [`load`] fills the tables of [`SCHEMA_SQL`] with synthetic customers in
//! three locales (Chinese, Lithuanian, English) and their sales reps,
//! contact preferences, opportunities, orders and consents. The same seed
//! always yields the same rows. Data is streamed with `COPY FROM STDIN`;
//! rows are produced on a worker thread while PostgreSQL ingests them.

mod calendar;
mod constraints;
mod copy_text;
mod generate;
mod locale;
mod stream;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::mpsc;

pub use generate::{PURPOSES, REGIONS, REPS_PER_REGION, REP_COUNT};

use copy_text::RowBuf;
use generate::{Counters, Dependent};

/// The example CRM schema (tables in schema `public`).
pub const SCHEMA_SQL: &str = include_str!("../../examples/crm/schema.sql");

/// The tables of [`SCHEMA_SQL`], in load order.
pub const TABLES: [&str; 6] = [
    "sales_reps",
    "customers",
    "contact_preferences",
    "opportunities",
    "orders",
    "consents",
];

/// Bytes of COPY data sent to the server per message.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered between the generator thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Errors of the CRM loader.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// PostgreSQL rejected a statement or the COPY data.
    #[error("loading the example CRM: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The generator thread panicked.
    #[error("the CRM data generator failed: {0}")]
    Generator(#[from] tokio::task::JoinError),
}

/// What to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Number of customers; their ids are 1..=customers.
    pub customers: u64,
    /// Seed of the generator: the same seed gives identical data.
    pub seed: u64,
    /// Run [`SCHEMA_SQL`] first (set to false when the tables exist).
    pub create_schema: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            customers: 10_000,
            seed: 42,
            create_schema: true,
        }
    }
}

/// Rows loaded per table, and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Rows in `sales_reps`.
    pub sales_reps: u64,
    /// Rows in `customers`.
    pub customers: u64,
    /// Rows in `contact_preferences`.
    pub contact_preferences: u64,
    /// Rows in `opportunities`.
    pub opportunities: u64,
    /// Rows in `orders`.
    pub orders: u64,
    /// Rows in `consents`.
    pub consents: u64,
    /// Wall-clock time of the whole load.
    pub elapsed: Duration,
}

/// Creates the schema (unless `opts.create_schema` is false) and loads the
/// example data, all in one transaction.
pub async fn load(
    client: &tokio_postgres::Client,
    opts: &LoadOptions,
) -> Result<LoadReport, CrmError> {
    let started = Instant::now();
    client.batch_execute("BEGIN").await?;
    match load_tables(client, opts).await {
        Ok(mut report) => {
            client.batch_execute("COMMIT").await?;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        Err(err) => {
            // The original error matters more than a failed rollback.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

async fn load_tables(
    client: &tokio_postgres::Client,
    opts: &LoadOptions,
) -> Result<LoadReport, CrmError> {
    // Fresh tables load fastest without indexes and foreign keys, which are
    // then rebuilt in bulk; FREEZE skips later hint-bit and freeze writes.
    let mut deferred = None;
    if opts.create_schema {
        client.batch_execute(SCHEMA_SQL).await?;
        deferred = Some(constraints::Deferred::drop_all(client, &TABLES).await?);
    }
    let report = copy_tables(client, opts).await?;
    if let Some(deferred) = deferred {
        deferred.restore(client).await?;
    }
    Ok(report)
}

async fn copy_tables(
    client: &tokio_postgres::Client,
    opts: &LoadOptions,
) -> Result<LoadReport, CrmError> {
    let (seed, n) = (opts.seed, opts.customers);
    let reps = copy(client, opts, "sales_reps", move |rows, _| {
        generate::write_reps(seed, rows);
    });
    let sales_reps = reps.await?;
    let customers = copy(client, opts, "customers", move |rows, flush| {
        for id in 1..=n {
            generate::write_customer(seed, id, rows);
            if !flush(rows) {
                return;
            }
        }
    })
    .await?;
    Ok(LoadReport {
        sales_reps,
        customers,
        contact_preferences: copy_dependent(client, opts, Dependent::ContactPreferences).await?,
        opportunities: copy_dependent(client, opts, Dependent::Opportunities).await?,
        orders: copy_dependent(client, opts, Dependent::Orders).await?,
        consents: copy_dependent(client, opts, Dependent::Consents).await?,
        elapsed: Duration::ZERO,
    })
}

async fn copy_dependent(
    client: &tokio_postgres::Client,
    opts: &LoadOptions,
    table: Dependent,
) -> Result<u64, CrmError> {
    let name = match table {
        Dependent::ContactPreferences => "contact_preferences",
        Dependent::Opportunities => "opportunities",
        Dependent::Orders => "orders",
        Dependent::Consents => "consents",
    };
    let (seed, n) = (opts.seed, opts.customers);
    copy(client, opts, name, move |rows, flush| {
        let mut counters = Counters::default();
        for id in 1..=n {
            generate::write_dependent(seed, id, table, &mut counters, rows);
            if !flush(rows) {
                return;
            }
        }
    })
    .await
}

/// Streams the rows that `produce` writes into `table` (all columns, in
/// table order) and returns the number of rows copied. `produce` runs on a
/// worker thread; it calls its second argument after each row to hand over
/// full chunks, and stops when that returns false (the COPY failed).
async fn copy<F>(
    client: &tokio_postgres::Client,
    opts: &LoadOptions,
    table: &str,
    produce: F,
) -> Result<u64, CrmError>
where
    F: FnOnce(&mut RowBuf, &mut dyn FnMut(&mut RowBuf) -> bool) + Send + 'static,
{
    // FREEZE is allowed (and saves rewriting every page later) only for
    // tables created in this transaction.
    let freeze = if opts.create_schema { " (FREEZE)" } else { "" };
    let sink = client
        .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN{freeze}"))
        .await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let producer = tokio::task::spawn_blocking(move || {
        let mut rows = RowBuf::with_capacity(CHUNK_BYTES + 4096);
        // A closed channel means the COPY failed; its error is reported below.
        let mut flush =
            |rows: &mut RowBuf| rows.len() < CHUNK_BYTES || tx.blocking_send(rows.take()).is_ok();
        produce(&mut rows, &mut flush);
        if rows.len() > 0 {
            let _ = tx.blocking_send(rows.take());
        }
    });
    futures::pin_mut!(sink);
    while let Some(chunk) = rx.recv().await {
        sink.send(chunk).await?;
    }
    producer.await?;
    Ok(sink.finish().await?)
}
