//! The admin endpoint: `/health` and Prometheus `/metrics` over HTTP on
//! `[admin] listen`, beside the data path. Sessions update the metrics with
//! atomics and never wait for the endpoint.

mod http;
mod metrics;

pub use http::{serve, serve_http};
pub use metrics::{Metrics, SessionMetrics, Snapshot, StatementVerdict};
