//! Real client libraries through pgveil: psycopg 3, node-postgres and pgJDBC
//! run the same workload directly and through the proxy and must observe
//! exactly the same; plus cancel, wrong passwords and TLS on both legs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::{self, ProxyOptions, USER_PASSWORD};

const USER: &str = "app";

fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (host, port, user, password, database) of the direct and the proxied run.
async fn endpoints(prefix: &str) -> [(String, u16, String, String, String); 2] {
    let cluster = common::cluster();
    let direct_db = common::fresh_database(&format!("{prefix}_direct")).await;
    let proxied_db = common::fresh_database(&format!("{prefix}_proxied")).await;
    let proxy = proxy::start(&proxied_db, &[USER], ProxyOptions::default());
    [
        (cluster.host().to_owned(), cluster.port(), cluster.superuser().to_owned(), cluster.password().to_owned(), direct_db),
        (proxy.addr.ip().to_string(), proxy.addr.port(), USER.to_owned(), USER_PASSWORD.to_owned(), proxied_db),
    ]
}

#[tokio::test]
async fn psycopg_text_binary_pipeline_and_copy_match_direct() {
    let outputs: Vec<String> = endpoints("psycopg")
        .await
        .iter()
        .map(|(host, port, user, password, db)| {
            let dsn = format!("host={host} port={port} user={user} password={password} dbname={db} sslmode=disable");
            run_ok(Command::new("python3").arg(clients_dir().join("psycopg_compat.py")).arg(dsn).arg("psy_items"))
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let out: serde_json::Value = serde_json::from_str(&outputs[1]).expect("json");
    assert_eq!(out["params_binary"][0][0], 21);
    assert_eq!(out["params_binary"][0][2], "0001ff");
    assert_eq!(out["prepared"][7], 14);
    assert_eq!(out["executemany"][0][0], 200);
    assert_eq!(out["copy"][0], 50);
    assert_eq!(out["error"][0], "22012");
    assert_eq!(out["after_rollback"][0][0], 250);
}

#[tokio::test]
async fn node_postgres_parameters_and_named_statements_match_direct() {
    let outputs: Vec<String> = endpoints("nodepg")
        .await
        .iter()
        .map(|(host, port, user, password, db)| {
            let url = format!("postgres://{user}:{password}@{host}:{port}/{db}?sslmode=disable");
            run_ok(Command::new("node").arg(clients_dir().join("node/compat.js")).arg(url).arg("node_items"))
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let out: serde_json::Value = serde_json::from_str(&outputs[1]).expect("json");
    assert_eq!(out["named"][5], "名字-6");
    assert_eq!(out["binary"], 42);
    assert_eq!(out["error"][0], "22P02");
    assert_eq!(out["after_error"][0]["n"], 20);
}

#[tokio::test]
async fn jdbc_prepared_statements_and_batches_match_direct() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    assert!(jar.exists(), "pgJDBC missing: apt-get install -y libpostgresql-jdbc-java");
    let outputs: Vec<String> = endpoints("jdbc")
        .await
        .iter()
        .map(|(host, port, user, password, db)| {
            let url = format!("jdbc:postgresql://{host}:{port}/{db}");
            run_ok(Command::new("java").arg("-cp").arg(jar).arg(clients_dir().join("jdbc/Compat.java")).args([&url, user, password, "jdbc_items"]))
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[1].contains("batch 300 300"), "{}", outputs[1]);
    assert!(outputs[1].contains("Jonas Kazlauskas 56 王 5.60"), "{}", outputs[1]);
    assert!(outputs[1].contains("error 23505"), "{}", outputs[1]);
    assert!(outputs[1].contains("metadata jdbc_items"), "{}", outputs[1]);
}

#[tokio::test]
async fn cancel_reaches_the_running_backend_query() {
    let db = common::fresh_database("cancel").await;
    let proxy = proxy::start(&db, &[USER], ProxyOptions::default());
    let client = proxy.connect(USER).await.expect("connect");
    let token = client.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let error = client.simple_query("select pg_sleep(30)").await.expect_err("query must be cancelled");
    canceller.await.expect("join").expect("cancel sent");
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15), "cancel took {:?}", started.elapsed());
    let rows = client.simple_query("select 'alive'").await.expect("session still usable");
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused_alike() {
    let db = common::fresh_database("badpw").await;
    let proxy = proxy::start(&db, &[USER], ProxyOptions::default());
    for user in [USER, "nobody"] {
        let mut config = proxy.pg_config(user);
        config.password("wrong");
        let error = config.connect(tokio_postgres::NoTls).await.err().expect("login must fail");
        assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{error}");
        assert!(error.to_string().contains(&format!("password authentication failed for user \"{user}\"")), "{error}");
    }
    let client = proxy.connect(USER).await.expect("right password still works");
    let row = client.query_one("select current_database()", &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0), db);
}

fn write_self_signed(dir: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("cert");
    std::fs::write(dir.join("proxy.crt"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("proxy.key"), cert.key_pair.serialize_pem()).expect("write key");
    format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", dir.join("proxy.crt").display(), dir.join("proxy.key").display())
}

#[tokio::test]
async fn tls_with_sslmode_require_on_the_client_leg() {
    let db = common::fresh_database("tls_client").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = proxy::start(&db, &[USER], ProxyOptions { tables: write_self_signed(dir.path()), ..Default::default() });
    let psql = common::cluster().bin_dir().join("psql");
    let conninfo = format!(
        "host=127.0.0.1 port={} user={USER} password={USER_PASSWORD} dbname={db} sslmode=require",
        proxy.addr.port()
    );
    let out = run_ok(Command::new(&psql).args(["-X", "-c", "\\conninfo", "-c", "select 'over tls' as t", &conninfo]));
    assert!(out.contains("SSL connection (protocol: TLSv1."), "{out}");
    assert!(out.contains("over tls"), "{out}");
    let plain = format!("host=127.0.0.1 port={} user={USER} password={USER_PASSWORD} dbname={db} sslmode=disable", proxy.addr.port());
    let out = run_ok(Command::new(&psql).args(["-X", "-c", "\\conninfo", &plain]));
    assert!(!out.contains("SSL connection"), "{out}");
}

#[tokio::test]
async fn tls_required_on_the_backend_leg() {
    let tls_cluster = common::tls_cluster();
    let db = common::fresh_database_in(tls_cluster, "tls_backend").await;
    let options = ProxyOptions { cluster: Some(tls_cluster), ..Default::default() };
    let proxy = proxy::start_with_backend_tls(&db, &[USER], options, "require");
    let client = proxy.connect(USER).await.expect("connect over backend TLS");
    let row = client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.expect("query");
    assert!(row.get::<_, bool>(0), "backend leg is not encrypted");

    let plain = common::cluster();
    let plain_db = common::fresh_database("tls_refused").await;
    let options = ProxyOptions { cluster: Some(plain), ..Default::default() };
    let proxy = proxy::start_with_backend_tls(&plain_db, &[USER], options, "require");
    let error = proxy.connect(USER).await.err().expect("a server without TLS is refused");
    assert!(error.to_string().contains("does not accept TLS"), "{error}");
}
