//! Graceful shutdown of the real binary on SIGTERM: new connections are
//! refused, idle sessions end with 57P01 at once, an open transaction may
//! commit, one that does not finish within `shutdown_secs` is rolled back
//! and its session closed with 57P01, a running query is cancelled, and the
//! process exits 0 within the bound.

mod common;
mod ops;

use std::time::{Duration, Instant};

use common::proxy::{write_config, ProxyOptions};
use ops::Pgveil;
use tokio_postgres::error::SqlState;

const USER: &str = "app";
const GRACE_SECS: u64 = 3;
const SLEEP: &str = "select pg_sleep(60)";

/// How a session's connection ended: Ok(()) if cleanly, else the SQLSTATE.
async fn ended_with(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    limit: Duration,
) -> Option<SqlState> {
    let ended = tokio::time::timeout(limit, connection)
        .await
        .expect("the session was not ended in time")
        .expect("connection task");
    ended.err().and_then(|e| e.code().cloned())
}

// Multi-threaded: waiting for the process to exit blocks its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_transactions_finish_then_closes_sessions_and_exits_0() {
    let db = common::fresh_database("shutdown").await;
    let admin = common::cluster().connect(&db).await.expect("admin");
    admin
        .batch_execute("create table t (id int primary key)")
        .await
        .expect("create table");
    let options = ProxyOptions {
        tables: format!("[timeouts]\nshutdown_secs = {GRACE_SECS}\n"),
        ..ProxyOptions::default()
    };
    let config = write_config(&db, &[USER], &options, "disable");
    let mut pgveil = Pgveil::start(&config, &db);

    let (committer, committer_conn) = pgveil.connect(USER).await.expect("committer");
    committer
        .batch_execute("begin; insert into t values (1)")
        .await
        .expect("insert 1");
    let (lingerer, lingerer_conn) = pgveil.connect(USER).await.expect("lingerer");
    lingerer
        .batch_execute("begin; insert into t values (2)")
        .await
        .expect("insert 2");
    let (_idle, idle_conn) = pgveil.connect(USER).await.expect("idle");
    let (sleeper, sleeper_conn) = pgveil.connect(USER).await.expect("sleeper");
    let sleep = tokio::spawn(async move { sleeper.simple_query(SLEEP).await });
    while ops::running(&admin, SLEEP).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pgveil.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // An idle session ends at once with 57P01.
    let idle_end = ended_with(idle_conn, Duration::from_secs(2)).await;
    assert_eq!(idle_end, Some(SqlState::ADMIN_SHUTDOWN));
    // The listener is closed: a new connection is refused.
    let Err(error) = pgveil.connect(USER).await else {
        panic!("a new session during shutdown must fail");
    };
    let io_kind = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(
        io_kind,
        Some(std::io::ErrorKind::ConnectionRefused),
        "{error}"
    );

    // An open transaction may still commit; then its session ends with 57P01.
    committer
        .batch_execute("insert into t values (3); commit")
        .await
        .expect("commit during shutdown");
    let committer_end = ended_with(committer_conn, Duration::from_secs(2)).await;
    assert_eq!(committer_end, Some(SqlState::ADMIN_SHUTDOWN));

    // After the grace period the rest get 57P01 and their queries are cancelled.
    let bound = Duration::from_secs(GRACE_SECS + 3);
    let lingerer_end = ended_with(lingerer_conn, bound).await;
    assert_eq!(lingerer_end, Some(SqlState::ADMIN_SHUTDOWN));
    assert!(
        signalled.elapsed() >= Duration::from_secs(GRACE_SECS),
        "an open transaction must get the grace period"
    );
    let sleep_error = sleep
        .await
        .expect("sleep task")
        .expect_err("pg_sleep(60) cannot have finished");
    assert_eq!(
        sleep_error.code(),
        Some(&SqlState::ADMIN_SHUTDOWN),
        "{sleep_error}"
    );
    drop(sleeper_conn);
    let status = pgveil
        .wait_exit(bound.saturating_sub(signalled.elapsed()) + Duration::from_secs(1))
        .expect("pgveil did not exit within the bound");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let exited_after = signalled.elapsed();
    assert!(
        lingerer.simple_query("select 1").await.is_err(),
        "the lingering session is closed"
    );

    let rows: Vec<i32> = admin
        .query("select id from t order by id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        vec![1, 3],
        "committed rows stay, the unfinished one is rolled back"
    );
    let cancelled = ops::until_not_running(&admin, SLEEP, Duration::from_secs(2)).await;
    assert!(cancelled.is_some(), "the backend still runs {SLEEP}");
    println!("shutdown: exited 0 after {exited_after:?} (grace {GRACE_SECS} s)");
}
