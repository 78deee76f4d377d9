//! Faults: PostgreSQL restarting under write load (clear errors, no
//! acknowledged write lost, new sessions work as soon as it is back) and
//! while nobody connects (the dead pooled connections are dropped), a client leaving in the middle of a
//! query (its backend query is cancelled), and PostgreSQL unreachable when
//! `pgveil serve` starts (it retries, logging each attempt, then serves).

mod common;
mod ops;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::proxy::{self, Proxy, ProxyOptions};
use pgveil::cluster::{Cluster, ClusterOptions};

const USER: &str = "app";
const WRITERS: usize = 8;
const IDLE_POOLED: usize = 10;
const RESTART_AT: Duration = Duration::from_millis(1500);
const RUN_FOR: Duration = Duration::from_secs(7);

/// A cluster of this test alone, kept for the life of the test process.
fn private_cluster(slot: &'static OnceLock<Cluster>) -> &'static Cluster {
    slot.get_or_init(|| Cluster::start_blocking(ClusterOptions::default()).expect("cluster"))
}

/// What one writer saw.
#[derive(Default)]
struct Tally {
    acknowledged: Vec<String>,
    acknowledged_after_restart: usize,
    errors: BTreeMap<String, usize>,
}

/// The SQLSTATE of an error, or what kind of failure it was.
fn error_kind(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => code.code().to_owned(),
        None if e.is_closed() => "connection closed".to_owned(),
        None => format!("no SQLSTATE: {e}"),
    }
}

/// Inserts rows with ids `w<k>-<i>` in autocommit until `until`,
/// reconnecting after every error.
async fn writer(proxy: &Proxy, k: usize, until: Instant, back: &Mutex<Option<Instant>>) -> Tally {
    let mut tally = Tally::default();
    let mut i = 0;
    while Instant::now() < until {
        let client = match proxy.connect(USER).await {
            Ok(client) => client,
            Err(e) => {
                *tally.errors.entry(error_kind(&e)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while Instant::now() < until {
            let id = format!("w{k}-{i}");
            i += 1;
            match client
                .simple_query(&format!("insert into writes values ('{id}')"))
                .await
            {
                Ok(_) => {
                    let restarted = back.lock().expect("lock").is_some();
                    tally.acknowledged_after_restart += usize::from(restarted);
                    tally.acknowledged.push(id);
                }
                Err(e) => {
                    *tally.errors.entry(error_kind(&e)).or_default() += 1;
                    break;
                }
            }
        }
    }
    tally
}

/// A new session: when it started, when it ended, whether it ran `select 1`.
type Probe = (Instant, Instant, Result<(), String>);

/// New sessions, one after another, until `until`.
async fn probe(proxy: &Proxy, until: Instant) -> Vec<Probe> {
    let mut results = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let outcome = match proxy.connect(USER).await {
            Ok(client) => client
                .simple_query("select 1")
                .await
                .map(drop)
                .map_err(|e| error_kind(&e)),
            Err(e) => Err(error_kind(&e)),
        };
        results.push((started, Instant::now(), outcome));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    results
}

/// Leaves `n` idle connections in the proxy's pool.
async fn fill_pool(proxy: &Proxy, n: usize) {
    let clients = futures::future::join_all((0..n).map(|_| proxy.connect(USER))).await;
    for client in &clients {
        let client = client.as_ref().expect("connect");
        // an open transaction holds its connection in either pool mode
        client
            .simple_query("begin; select 1")
            .await
            .expect("select 1");
    }
    drop(clients);
    for _ in 0..200 {
        let idle: usize = proxy
            .state
            .metrics_snapshot()
            .pools
            .iter()
            .map(|(_, s)| s.available)
            .sum();
        if idle >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool did not get {n} idle connections");
}

#[tokio::test]
async fn backend_restart_loses_no_acknowledged_write_and_the_pool_recovers() {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let cluster = private_cluster(&CLUSTER);
    let db = common::fresh_database_in(cluster, "restart").await;
    let admin = cluster.connect(&db).await.expect("admin");
    admin
        .batch_execute("create table writes (id text primary key)")
        .await
        .expect("create table");
    let proxy = Arc::new(proxy::start(
        &db,
        &[USER],
        ProxyOptions {
            cluster: Some(cluster),
            ..ProxyOptions::default()
        },
    ));
    fill_pool(&proxy, IDLE_POOLED).await;

    let begin = Instant::now();
    let until = begin + RUN_FOR;
    let back = Arc::new(Mutex::new(None::<Instant>));
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let (proxy, back) = (proxy.clone(), back.clone());
            tokio::spawn(async move { writer(&proxy, k, until, &back).await })
        })
        .collect();
    tokio::time::sleep(RESTART_AT).await;
    let probes = {
        let proxy = proxy.clone();
        tokio::spawn(async move { probe(&proxy, until).await })
    };
    let restart_began = Instant::now();
    cluster.stop_server().await.expect("stop");
    cluster.start_server().await.expect("start");
    let back_at = Instant::now();
    *back.lock().expect("lock") = Some(back_at);

    let mut acknowledged = BTreeSet::new();
    let mut errors = BTreeMap::<String, usize>::new();
    for (k, task) in writers.into_iter().enumerate() {
        let tally = task.await.expect("writer");
        assert!(
            tally.acknowledged_after_restart > 0,
            "writer {k} wrote nothing after the restart; errors {:?}",
            tally.errors
        );
        acknowledged.extend(tally.acknowledged);
        for (kind, n) in tally.errors {
            *errors.entry(kind).or_default() += n;
        }
    }
    let probes = probes.await.expect("probes");

    let admin = cluster.connect(&db).await.expect("admin after the restart");
    let found: BTreeSet<String> = admin
        .query("select id from writes", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&found).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let clear = ["57P01", "57P03", "08006", "connection closed"];
    assert!(
        errors.keys().all(|k| clear.contains(&k.as_str())),
        "unexpected errors: {errors:?}"
    );
    // sessions caught mid-statement are told (57P01 when PostgreSQL's
    // message arrives first, 08006 when the drop does); under transaction
    // pooling a session between transactions holds no connection to lose
    assert!(
        errors.contains_key("57P01") || errors.contains_key("08006"),
        "sessions must be told: {errors:?}"
    );
    let after_back: Vec<_> = probes.iter().filter(|(at, _, _)| *at >= back_at).collect();
    let failed: Vec<_> = after_back.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(
        !after_back.is_empty() && failed.is_empty(),
        "new sessions failed after PostgreSQL was back: {failed:?}"
    );
    let first_ok = probes
        .iter()
        .find(|(_, _, r)| r.is_ok())
        .map(|(_, done, _)| done.saturating_duration_since(back_at));
    // A restart while nobody connects leaves only dead connections in the
    // pool; the first sessions afterwards must not get them.
    fill_pool(&proxy, IDLE_POOLED).await;
    cluster.stop_server().await.expect("stop");
    cluster.start_server().await.expect("start");
    for n in 0..IDLE_POOLED {
        let client = proxy
            .connect(USER)
            .await
            .unwrap_or_else(|e| panic!("session {n} after a quiet restart failed: {e}"));
        client.simple_query("select 1").await.expect("select 1");
    }
    println!(
        "restart: {WRITERS} writers, {IDLE_POOLED} stale pooled connections; PostgreSQL down {:?}; \
         acknowledged {} / found {} (committed but not acknowledged: {}); lost 0; \
         errors {errors:?}; first new session done {:?} after PostgreSQL was back; \
         {} new sessions after it, none failed",
        back_at - restart_began,
        acknowledged.len(),
        found.len(),
        found.len() - acknowledged.len(),
        first_ok,
        after_back.len(),
    );
}

#[tokio::test]
async fn a_client_leaving_mid_query_gets_its_backend_query_cancelled() {
    const SLEEP: &str = "select pg_sleep(60)";
    let db = common::fresh_database("disconnect").await;
    let admin = common::cluster().connect(&db).await.expect("admin");
    let proxy = proxy::start(&db, &[USER], ProxyOptions::default());
    let (client, connection) = proxy
        .pg_config(USER)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    let query = tokio::spawn(async move { client.simple_query(SLEEP).await });
    while ops::running(&admin, SLEEP).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the connection task closes the socket without a Terminate.
    connection.abort();
    let gone = ops::until_not_running(&admin, SLEEP, Duration::from_secs(5)).await;
    assert!(gone.is_some(), "PostgreSQL still runs {SLEEP}");
    query.abort();
    println!("disconnect: backend query cancelled {gone:?} after the client left");
}

#[tokio::test]
async fn serve_waits_for_an_unreachable_backend_with_a_log_line_per_attempt() {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let cluster = private_cluster(&CLUSTER);
    let db = common::fresh_database_in(cluster, "late").await;
    cluster.stop_server().await.expect("stop");
    let options = ProxyOptions {
        cluster: Some(cluster),
        ..ProxyOptions::default()
    };
    let config = proxy::write_config(&db, &[USER], &options, "disable");
    let pgveil = ops::Pgveil::spawn(&config, &db);
    let is_retry =
        |line: &serde_json::Value| ops::message(line).ends_with("is not reachable yet; retrying");
    let third = pgveil.wait_for(Duration::from_secs(10), |l| {
        is_retry(l) && l["attempt"] == 3
    });
    assert!(
        third.is_some(),
        "no third attempt logged: {:?}",
        pgveil.log()
    );
    cluster.start_server().await.expect("start");
    let up = Instant::now();
    pgveil.wait_for_message("pgveil listening", Duration::from_secs(15));
    let waited = up.elapsed();

    let retries: Vec<_> = pgveil.log().into_iter().filter(|l| is_retry(l)).collect();
    let expected_message = format!(
        "PostgreSQL at 127.0.0.1:{} is not reachable yet; retrying",
        cluster.port()
    );
    for (n, line) in retries.iter().enumerate() {
        assert_eq!(line["attempt"], n + 1, "{line}");
        assert_eq!(ops::message(line), expected_message);
        assert_eq!(line["level"], "WARN");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("Connection refused"), "{line}");
    }
    let delays: Vec<u64> = retries
        .iter()
        .filter_map(|l| l["retry_in_ms"].as_u64())
        .collect();
    assert_eq!(&delays[..3], &[250, 500, 1000], "backoff doubles");
    let (client, _connection) = pgveil.connect(USER).await.expect("connect once up");
    let rows = client.simple_query("select 'served'").await.expect("query");
    let served = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(served.as_deref(), Some("served"));
    println!(
        "unreachable at start: {} attempts logged, listening {waited:?} after PostgreSQL was up",
        retries.len()
    );
}
