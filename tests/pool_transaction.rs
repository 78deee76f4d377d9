//! Transaction pooling: sessions share a few backend connections between
//! transactions, and each client still finds its prepared statements, its
//! settings and its transaction wherever it runs. State that cannot move
//! (LISTEN, advisory locks, SET inside a transaction) pins the session.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{stream, StreamExt};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use common::proxy::{self, Proxy, ProxyOptions};

const USER: &str = "app";

/// A proxy whose sessions share at most `pool` backend connections.
async fn pooled_proxy(prefix: &str, pool: usize) -> Proxy {
    let db = common::fresh_database(prefix).await;
    proxy::start(
        &db,
        &[USER],
        ProxyOptions {
            tables: format!(
                "[pool]\nmax_size = {pool}\n[pool.view_sets]\npassthrough = \"transaction\"\n"
            ),
            ..ProxyOptions::default()
        },
    )
}

async fn connect(proxy: &Proxy, application_name: &str) -> Client {
    let mut config = proxy.pg_config(USER);
    config.application_name(application_name);
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn pid(client: &Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Runs `f` on the backend connection other than `avoid`: with a pool of
/// two, two holders take both connections in transactions, and the one
/// holding the other connection lets go.
async fn on_other_connection<F, Fut, T>(proxy: &Proxy, avoid: i32, f: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let x = connect(proxy, "holder").await;
    let y = connect(proxy, "holder").await;
    x.batch_execute("begin").await.expect("begin");
    let px = pid(&x).await;
    y.batch_execute("begin").await.expect("begin");
    let py = pid(&y).await;
    assert_ne!(px, py, "two transactions on one connection");
    assert!(
        px == avoid || py == avoid,
        "{avoid} is not one of the pool's connections"
    );
    let (keep, free) = if px == avoid { (&x, &y) } else { (&y, &x) };
    free.batch_execute("commit").await.expect("commit");
    let out = f().await;
    keep.batch_execute("commit").await.expect("commit");
    out
}

#[tokio::test]
async fn many_sessions_share_the_pool_and_get_their_own_results() {
    let proxy = pooled_proxy("txpool_share", 2).await;
    let tasks = (0..12).map(|n| {
        let proxy = &proxy;
        async move {
            let client = connect(proxy, "share").await;
            let statement = client
                .prepare("select pg_backend_pid(), $1::int * 10")
                .await
                .expect("prepare");
            let mut pids = BTreeSet::new();
            for i in 0..30 {
                let row = client
                    .query_one(&statement, &[&(n * 100 + i)])
                    .await
                    .expect("query");
                assert_eq!(row.get::<_, i32>(1), (n * 100 + i) * 10);
                pids.insert(row.get::<_, i32>(0));
                let simple = client
                    .simple_query(&format!("select {n} * 1000 + {i}"))
                    .await
                    .expect("simple");
                let value = match &simple[1] {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    other => panic!("{other:?}"),
                };
                assert_eq!(value, Some((n * 1000 + i).to_string()));
            }
            pids
        }
    });
    let pids: BTreeSet<i32> = stream::iter(tasks)
        .buffer_unordered(12)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        (1..=2).contains(&pids.len()),
        "12 sessions ran on {} backend connections, pool is 2",
        pids.len()
    );
}

#[tokio::test]
async fn a_prepared_statement_runs_on_another_connection() {
    let proxy = pooled_proxy("txpool_prepared", 2).await;
    let a = connect(&proxy, "a").await;
    let statement = a
        .prepare("select pg_backend_pid(), $1::text || '!'")
        .await
        .expect("prepare");
    let first = a.query_one(&statement, &[&"one"]).await.expect("first");
    assert_eq!(first.get::<_, String>(1), "one!");
    let first_pid: i32 = first.get(0);
    let second = on_other_connection(&proxy, first_pid, || async {
        a.query_one(&statement, &[&"two"]).await.expect("second")
    })
    .await;
    assert_eq!(second.get::<_, String>(1), "two!");
    assert_ne!(
        second.get::<_, i32>(0),
        first_pid,
        "ran on the other connection"
    );
    // closing the statement is the client's own business: others are unaffected
    drop(statement);
    let again = a
        .prepare("select $1::int + 1")
        .await
        .expect("prepare again");
    let n: i32 = a.query_one(&again, &[&41]).await.expect("again").get(0);
    assert_eq!(n, 42);
}

#[tokio::test]
async fn settings_follow_the_session_and_stay_out_of_others() {
    let proxy = pooled_proxy("txpool_settings", 2).await;
    let a = connect(&proxy, "client-a").await;
    a.simple_query("SET TIME ZONE 'Pacific/Auckland'")
        .await
        .expect("set");
    a.simple_query("set statement_timeout = '7s'")
        .await
        .expect("set");
    let (zone, a_pid) = setting(&a, "TimeZone").await;
    assert_eq!(zone, "Pacific/Auckland");
    let (zone, other_pid) = on_other_connection(&proxy, a_pid, || setting(&a, "TimeZone")).await;
    assert_eq!(zone, "Pacific/Auckland", "carried to the other connection");
    assert_ne!(other_pid, a_pid);
    assert_eq!(setting(&a, "statement_timeout").await.0, "7s");
    assert_eq!(setting(&a, "application_name").await.0, "client-a");

    let b = connect(&proxy, "client-b").await;
    for _ in 0..4 {
        let (zone, _) = setting(&b, "TimeZone").await;
        assert_ne!(zone, "Pacific/Auckland", "another session's setting leaked");
        assert_eq!(setting(&b, "application_name").await.0, "client-b");
        assert_eq!(setting(&a, "application_name").await.0, "client-a");
    }
    a.simple_query("RESET ALL").await.expect("reset");
    assert_ne!(setting(&a, "TimeZone").await.0, "Pacific/Auckland");
    assert_eq!(setting(&a, "application_name").await.0, "client-a");
}

/// A setting's value as the session sees it, and the backend it ran on.
async fn setting(client: &Client, name: &str) -> (String, i32) {
    let row = client
        .query_one("select current_setting($1), pg_backend_pid()", &[&name])
        .await
        .expect("current_setting");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_transaction_keeps_its_connection() {
    let proxy = pooled_proxy("txpool_transaction", 2).await;
    proxy_admin(&proxy)
        .await
        .batch_execute("create table items (id int primary key, by text)")
        .await
        .expect("create");
    let a = connect(&proxy, "a").await;
    a.batch_execute("begin").await.expect("begin");
    let before = pid(&a).await;
    a.execute("insert into items values (1, 'a')", &[])
        .await
        .expect("insert");
    let busy = connect(&proxy, "busy").await;
    for _ in 0..10 {
        busy.simple_query("select 1").await.expect("other session");
    }
    assert_eq!(pid(&a).await, before, "the transaction moved");
    let seen: i64 = busy
        .query_one("select count(*) from items", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seen, 0, "uncommitted row visible to another session");
    a.batch_execute("commit").await.expect("commit");
    let seen: i64 = busy
        .query_one("select count(*) from items", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seen, 1);
}

async fn proxy_admin(proxy: &Proxy) -> Client {
    connect(proxy, "setup").await
}

#[tokio::test]
async fn a_session_that_leaves_mid_transaction_leaves_nothing_behind() {
    let proxy = pooled_proxy("txpool_leave", 1).await;
    let setup = connect(&proxy, "setup").await;
    setup
        .batch_execute("create table t (x int)")
        .await
        .expect("create");
    drop(setup);
    let a = connect(&proxy, "a").await;
    a.batch_execute("begin; insert into t values (1)")
        .await
        .expect("insert");
    let a_pid = pid(&a).await;
    drop(a);
    let b = connect(&proxy, "b").await;
    let row = b
        .query_one("select (select count(*) from t), pg_backend_pid()", &[])
        .await
        .expect("b");
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the abandoned insert was rolled back"
    );
    assert_eq!(row.get::<_, i32>(1), a_pid, "the pool has one connection");
    let e = b
        .batch_execute("savepoint s")
        .await
        .expect_err("b is not inside a transaction");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION)
    );
}

#[tokio::test]
async fn listen_and_advisory_locks_pin_the_session() {
    let proxy = pooled_proxy("txpool_pin", 3).await;
    let (a, mut connection) = proxy.pg_config(USER).connect(NoTls).await.expect("connect");
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = notes_tx.send(n.payload().to_owned());
            }
        }
    });
    a.batch_execute("listen events").await.expect("listen");
    let a_pid = pid(&a).await;
    let b = connect(&proxy, "b").await;
    assert_ne!(pid(&b).await, a_pid, "a pinned connection was handed to b");
    b.batch_execute("notify events, 'hello'")
        .await
        .expect("notify");
    let payload = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("notification within 10 s");
    assert_eq!(payload.as_deref(), Some("hello"));

    let c = connect(&proxy, "c").await;
    c.batch_execute("begin; select pg_advisory_lock(42)")
        .await
        .expect("lock");
    let c_pid = pid(&c).await;
    c.batch_execute("commit").await.expect("commit");
    for _ in 0..5 {
        assert_eq!(pid(&c).await, c_pid, "a session holding a lock moved");
    }
    let unlocked: bool = c
        .query_one("select pg_advisory_unlock(42)", &[])
        .await
        .expect("unlock")
        .get(0);
    assert!(unlocked, "the lock was not held by this session");

    let d = connect(&proxy, "d").await;
    d.batch_execute("begin; set statement_timeout = '3s'; commit")
        .await
        .expect("set in transaction");
    let d_pid = pid(&d).await;
    let timeout: String = d
        .query_one("select current_setting('statement_timeout')", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(timeout, "3s");
    assert_eq!(pid(&d).await, d_pid);
}
