//! The proxy's metrics: live counters, gauges and histograms that sessions
//! update with atomics, and values read from the pools and the rewrite
//! cache when `/metrics` is scraped. Encoded in the Prometheus text format.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use deadpool::managed::Status;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::rewrite::CacheStats;

/// Prefix of every metric name.
const PREFIX: &str = "pgveil";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewSetLabels {
    view_set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    view_set: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

/// What happened to one statement text (Query, Parse or Execute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementVerdict {
    /// Sent to PostgreSQL unchanged.
    Forwarded = 0,
    /// Sent with its tables mapped to the view set.
    Rewritten = 1,
    /// Not run; the client got an error.
    Refused = 2,
}

impl StatementVerdict {
    const ALL: [StatementVerdict; 3] = [
        StatementVerdict::Forwarded,
        StatementVerdict::Rewritten,
        StatementVerdict::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            StatementVerdict::Forwarded => "forwarded",
            StatementVerdict::Rewritten => "rewritten",
            StatementVerdict::Refused => "refused",
        }
    }
}

/// Statement latency buckets: 0.25 ms doubling to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The live metrics every session updates.
pub struct Metrics {
    registry: Registry,
    sessions_open: Family<ViewSetLabels, Gauge>,
    sessions_refused: Family<ReasonLabels, Counter>,
    login_failures: Counter,
    statements: Family<StatementLabels, Counter>,
    latency: Family<ViewSetLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let sessions_open = Family::<ViewSetLabels, Gauge>::default();
        registry.register(
            "sessions_open",
            "Client sessions past authentication, by view set",
            sessions_open.clone(),
        );
        let sessions_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_refused",
            "Connections that ended before their session started, by reason",
            sessions_refused.clone(),
        );
        let login_failures = Counter::default();
        registry.register(
            "login_failures",
            "Failed authentications (wrong password or unknown user)",
            login_failures.clone(),
        );
        let statements = Family::<StatementLabels, Counter>::default();
        registry.register(
            "statements",
            "Statement texts (Query, Parse) by verdict and view set",
            statements.clone(),
        );
        let latency: Family<ViewSetLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "statement_duration",
            "Time from a Query or Sync sent to PostgreSQL to its ReadyForQuery, by view set",
            Unit::Seconds,
            latency.clone(),
        );
        Metrics {
            registry,
            sessions_open,
            sessions_refused,
            login_failures,
            statements,
            latency,
        }
    }
}

impl Metrics {
    /// Counts a connection that ended before its session started.
    pub fn session_refused(&self, reason: &'static str) {
        self.sessions_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a failed authentication.
    pub fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// The handle of one session of `view_set`; counted as open until dropped.
    pub fn session(&self, view_set: &str) -> SessionMetrics {
        let labels = ViewSetLabels {
            view_set: view_set.to_owned(),
        };
        let open = self.sessions_open.get_or_create(&labels).clone();
        open.inc();
        let statements = StatementVerdict::ALL.map(|verdict| {
            self.statements
                .get_or_create(&StatementLabels {
                    view_set: view_set.to_owned(),
                    verdict: verdict.label(),
                })
                .clone()
        });
        SessionMetrics {
            statements,
            latency: self.latency.get_or_create(&labels).clone(),
            open,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// The live metrics and `snapshot` in the Prometheus text format.
    pub fn encode(&self, snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        prometheus_text::encode(&mut text, &snapshot.registry())?;
        Ok(text)
    }
}

/// A per-role pool gauge: name, help and how to read it from the status.
type PoolGauge = (&'static str, &'static str, fn(&Status) -> usize);

/// Values read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Open client connections, including those still starting.
    pub connections: usize,
    /// The rewrite cache of the current policy (None without a policy).
    pub cache: Option<CacheStats>,
    /// Each backend login role's pool.
    pub pools: Vec<(String, Status)>,
}

impl Snapshot {
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "connections",
            "Open client connections, including those still starting",
            gauge(self.connections),
        );
        if let Some(cache) = self.cache {
            registry.register(
                "rewrite_cache_hits",
                "Statement texts whose verdict came from the cache (since the policy was loaded)",
                counter(cache.hits),
            );
            registry.register(
                "rewrite_cache_misses",
                "Statement texts analysed because no verdict was cached (since the policy was loaded)",
                counter(cache.misses),
            );
        }
        let pool_gauges: [PoolGauge; 4] = [
            (
                "backend_pool_size",
                "Backend connections, idle or in use, by login role",
                |s| s.size,
            ),
            (
                "backend_pool_available",
                "Idle backend connections, by login role",
                |s| s.available,
            ),
            (
                "backend_pool_waiting",
                "Sessions waiting for a backend connection, by login role",
                |s| s.waiting,
            ),
            (
                "backend_pool_max",
                "Most backend connections, by login role",
                |s| s.max_size,
            ),
        ];
        for (name, help, value) in pool_gauges {
            let family = Family::<RoleLabels, Gauge>::default();
            for (role, status) in &self.pools {
                family
                    .get_or_create(&RoleLabels { role: role.clone() })
                    .set(clamp(value(status)));
            }
            registry.register(name, help, family);
        }
        registry
    }
}

fn clamp(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(value: usize) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(clamp(value));
    gauge
}

fn counter(value: u64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(value);
    counter
}

/// One session's share of the metrics: counters resolved once, so the data
/// path only touches atomics (and the histogram's short lock).
pub struct SessionMetrics {
    statements: [Counter; 3],
    latency: Histogram,
    open: Gauge,
    sent: Mutex<VecDeque<Instant>>,
}

impl SessionMetrics {
    /// Counts one statement text.
    pub fn statement(&self, verdict: StatementVerdict) {
        self.statements[verdict as usize].inc();
    }

    /// A Query or Sync went to PostgreSQL: its latency clock starts.
    pub fn request_sent(&self) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Instant::now());
    }

    /// A ReadyForQuery arrived: the oldest request's latency is observed.
    pub fn ready(&self) {
        let started = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some(started) = started {
            self.latency.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn session_counters_and_gauges_encode_by_view_set() {
        let metrics = Metrics::default();
        let session = metrics.session("standard");
        session.statement(StatementVerdict::Rewritten);
        session.statement(StatementVerdict::Rewritten);
        session.statement(StatementVerdict::Refused);
        session.request_sent();
        session.ready();
        metrics.session_refused("auth_failed");
        metrics.login_failed();
        let snapshot = Snapshot {
            connections: 2,
            cache: Some(CacheStats { hits: 7, misses: 3 }),
            pools: Vec::new(),
        };
        let text = metrics.encode(&snapshot).unwrap();
        assert_eq!(
            line(
                &text,
                "pgveil_statements_total{view_set=\"standard\",verdict=\"rewritten\"}"
            ),
            "pgveil_statements_total{view_set=\"standard\",verdict=\"rewritten\"} 2"
        );
        assert!(text.contains("verdict=\"refused\"} 1\n"), "{text}");
        assert!(text.contains("verdict=\"forwarded\"} 0\n"), "{text}");
        assert!(
            text.contains("pgveil_sessions_open{view_set=\"standard\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pgveil_statement_duration_seconds_count{view_set=\"standard\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pgveil_sessions_refused_total{reason=\"auth_failed\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pgveil_login_failures_total 1\n"), "{text}");
        assert!(
            text.contains("pgveil_rewrite_cache_hits_total 7\n"),
            "{text}"
        );
        assert!(text.contains("pgveil_connections 2\n"), "{text}");
        drop(session);
        let text = metrics.encode(&Snapshot::default()).unwrap();
        assert!(
            text.contains("pgveil_sessions_open{view_set=\"standard\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("rewrite_cache"), "{text}");
    }
}
