//! Load: 1,000 concurrent sessions through the real binary, 100 of them
//! running queries whose results are checked while the rest stay idle;
//! prints the proxy's memory before and after, the memory per idle session
//! and its open files. `scripts/load.sh` runs this with other sizes
//! (PGVEIL_LOAD_SESSIONS, PGVEIL_LOAD_ACTIVE).
//!
//! It runs once with session pooling (a backend per session) and once with
//! transaction pooling (1,000 sessions over 20 backend connections); both
//! must hold the thousand idle sessions in at most 100 MB of proxy memory.

mod common;
mod ops;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use pgveil::cluster::{Cluster, ClusterOptions};

use common::proxy::{write_config, ProxyOptions};
use ops::Pgveil;

const USER: &str = "app";
/// Sessions opened at the same time while connecting them all.
const CONNECTING_AT_ONCE: usize = 32;

/// One run of the harness.
struct Plan {
    sessions: usize,
    active: usize,
    queries_per_active: usize,
    /// The `[pool]` table of the configuration.
    pool_toml: String,
}

/// What a run measured.
#[derive(Debug)]
struct Figures {
    sessions_held: usize,
    rss_start_kib: u64,
    rss_idle_kib: u64,
    rss_active_kib: u64,
    open_fds: usize,
    backends: i64,
    connect_time: Duration,
    active_time: Duration,
    results_checked: usize,
}

impl Figures {
    fn per_idle_session_kib(&self) -> f64 {
        (self.rss_idle_kib.saturating_sub(self.rss_start_kib)) as f64 / self.sessions_held as f64
    }

    fn print(&self, plan: &Plan) {
        println!(
            "load: {} sessions held ({} active x {} queries, {} results checked)\n\
             load: connecting them all took {:?}; the active phase {:?}\n\
             load: proxy RSS {} KiB at start, {} KiB with all sessions idle, {} KiB after the active phase\n\
             load: memory per idle session {:.1} KiB\n\
             load: proxy open fds {}; PostgreSQL client backends {}",
            self.sessions_held,
            plan.active,
            plan.queries_per_active,
            self.results_checked,
            self.connect_time,
            self.active_time,
            self.rss_start_kib,
            self.rss_idle_kib,
            self.rss_active_kib,
            self.per_idle_session_kib(),
            self.open_fds,
            self.backends,
        );
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The single value of a simple query's first row.
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Runs `queries` statements on one session and checks each result;
/// returns how many were checked.
async fn work(client: &tokio_postgres::Client, session: usize, queries: usize) -> usize {
    for q in 0..queries {
        let got = value(
            client,
            &format!(
                "select {session} * 1000 + {q} || ':' || repeat('x', {})",
                q % 40
            ),
        )
        .await;
        assert_eq!(
            got,
            format!("{}:{}", session * 1000 + q, "x".repeat(q % 40))
        );
    }
    queries
}

async fn client_backends(admin: &tokio_postgres::Client, database: &str) -> i64 {
    admin
        .query_one(
            "select count(*) from pg_stat_activity \
             where datname = $1 and backend_type = 'client backend' and pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Opens `plan.sessions` sessions through a fresh `pgveil serve`, runs the
/// active ones, checks that every session still answers, and measures.
async fn run(cluster: &'static Cluster, plan: &Plan) -> Figures {
    let database = common::fresh_database_in(cluster, "load").await;
    let admin = cluster.connect(&database).await.expect("admin");
    let options = ProxyOptions {
        top: format!("max_sessions = {}", plan.sessions + 100),
        tables: plan.pool_toml.clone(),
        cluster: Some(cluster),
        ..ProxyOptions::default()
    };
    let config = write_config(&database, &[USER], &options, "disable");
    let pgveil = Pgveil::start(&config, &database);
    {
        let (warm_up, _connection) = pgveil.connect(USER).await.expect("warm-up session");
        assert_eq!(value(&warm_up, "select 'warm'").await, "warm");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start_kib = pgveil.rss_kib();

    let started = Instant::now();
    let sessions: Vec<_> = futures::stream::iter(0..plan.sessions)
        .map(|_| pgveil.connect(USER))
        .buffered(CONNECTING_AT_ONCE)
        .try_collect()
        .await
        .expect("every session connects");
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_kib = pgveil.rss_kib();
    let open_fds = pgveil.open_fds();
    let backends = client_backends(&admin, &database).await;

    let started = Instant::now();
    let checked = futures::future::join_all(
        sessions[..plan.active]
            .iter()
            .enumerate()
            .map(|(k, (client, _))| work(client, k, plan.queries_per_active)),
    )
    .await;
    let active_time = started.elapsed();
    let rss_active_kib = pgveil.rss_kib();
    let alive = futures::stream::iter(sessions.iter().enumerate())
        .map(|(k, (client, _))| async move {
            value(client, &format!("select {k}")).await == k.to_string()
        })
        .buffer_unordered(64)
        .filter(|answered| std::future::ready(*answered))
        .count()
        .await;
    assert_eq!(
        alive, plan.sessions,
        "every session answers with its own number"
    );
    Figures {
        sessions_held: alive,
        rss_start_kib,
        rss_idle_kib,
        rss_active_kib,
        open_fds,
        backends,
        connect_time,
        active_time,
        results_checked: checked.iter().sum::<usize>() + alive,
    }
}

/// The ceiling for a thousand idle sessions.
const MAX_RSS_FOR_A_THOUSAND_KIB: u64 = 100 * 1024;

fn plan(pool_toml: String) -> Plan {
    let sessions = env_or("PGVEIL_LOAD_SESSIONS", 1000);
    Plan {
        sessions,
        active: env_or("PGVEIL_LOAD_ACTIVE", 100).min(sessions),
        queries_per_active: 20,
        pool_toml,
    }
}

async fn measure(plan: &Plan, max_connections: usize) -> Figures {
    assert!(
        pgveil::server::raise_open_file_limit(),
        "this test holds a socket per session"
    );
    let options = ClusterOptions {
        max_connections: u32::try_from(max_connections).expect("max_connections"),
        ..ClusterOptions::default()
    };
    let cluster: &'static Cluster =
        Box::leak(Box::new(Cluster::start(options).await.expect("cluster")));
    let figures = run(cluster, plan).await;
    figures.print(plan);
    assert_eq!(figures.sessions_held, plan.sessions);
    assert_eq!(
        figures.results_checked,
        plan.active * plan.queries_per_active + plan.sessions
    );
    let ceiling = MAX_RSS_FOR_A_THOUSAND_KIB * plan.sessions.max(1000) as u64 / 1000;
    assert!(
        figures.rss_idle_kib <= ceiling,
        "{} idle sessions take {} KiB of proxy memory (ceiling {ceiling} KiB)",
        plan.sessions,
        figures.rss_idle_kib
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_idle_and_active() {
    let sessions = env_or("PGVEIL_LOAD_SESSIONS", 1000);
    let plan = plan(format!(
        "[pool]\nmode = \"session\"\nmax_size = {}\n",
        sessions + 10
    ));
    let figures = measure(&plan, sessions + 20).await;
    assert!(
        figures.backends >= plan.sessions as i64,
        "session pooling: one backend per session, found {}",
        figures.backends
    );
    assert!(
        figures.open_fds >= 2 * plan.sessions,
        "a client and a backend socket per session, found {} fds",
        figures.open_fds
    );
}

/// Backend connections of the transaction-pooling run.
const TRANSACTION_POOL: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_share_a_transaction_pool() {
    let plan = plan(format!(
        "[pool]\nmode = \"transaction\"\nmax_size = {TRANSACTION_POOL}\n"
    ));
    let figures = measure(&plan, TRANSACTION_POOL + 20).await;
    assert!(
        figures.backends <= TRANSACTION_POOL as i64,
        "transaction pooling: at most {TRANSACTION_POOL} backends, found {}",
        figures.backends
    );
}
