//! Shared fixture for integration tests: one throwaway PostgreSQL cluster per
//! test binary, started lazily on first use and shared by all its tests.
//!
//! Use it from a test file with:
//!
//! ```ignore
//! mod common;
//!
//! #[tokio::test]
//! async fn my_test() {
//!     let db = common::fresh_database("my_test").await;   // own database
//!     let client = common::cluster().connect(&db).await.unwrap();
//!     client.batch_execute(pgveil::crm::SCHEMA_SQL).await.unwrap();
//! }
//! ```
//!
//! Each test creates its own database with [`fresh_database`] so tests stay
//! independent although they run concurrently against one server. The cluster
//! is started synchronously (no tokio runtime involved), so it outlives the
//! per-test runtimes of `#[tokio::test]`; it is stopped and its directory
//! removed when the test process ends, however it ends (see
//! `pgveil::cluster`). [`tls_cluster`] is a second cluster that serves TLS
//! with a self-signed certificate, started only by tests that ask for it.

#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use pgveil::cluster::{Cluster, ClusterOptions};

/// The shared plain-TCP cluster of this test binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start(ClusterOptions::default()))
}

/// The shared cluster of this test binary that serves TLS (`ssl = on`,
/// certificate in [`Cluster::server_cert_pem`]); plain connections work too.
pub fn tls_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        start(ClusterOptions {
            ssl: true,
            ..ClusterOptions::default()
        })
    })
}

fn start(opts: ClusterOptions) -> Cluster {
    match Cluster::start_blocking(opts) {
        Ok(cluster) => cluster,
        Err(err) => panic!("cannot start the test PostgreSQL cluster: {err}"),
    }
}

/// Creates a new, empty database in [`cluster`] named `<prefix>_<n>` and
/// returns its name; `prefix` should be a lowercase identifier.
pub async fn fresh_database(prefix: &str) -> String {
    fresh_database_in(cluster(), prefix).await
}

/// Like [`fresh_database`], in the given cluster.
pub async fn fresh_database_in(cluster: &Cluster, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    cluster
        .create_database(&name)
        .await
        .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
    name
}
pub mod base_tables;
pub mod proxy;
pub mod raw;
