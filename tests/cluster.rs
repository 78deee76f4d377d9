//! The throwaway cluster: settings, authentication, restart, TLS, and that
//! it is cleaned up when dropped and when its process is killed.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgveil::cluster::{Cluster, ClusterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn superuser_connects_to_a_fast_utf8_scram_server() {
    let cluster = common::cluster();
    let client = cluster.connect("postgres").await.unwrap();
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(setting("server_encoding").await, "UTF8");
    assert_eq!(setting("password_encryption").await, "scram-sha-256");
    assert_eq!(setting("max_connections").await, "200");
    assert_eq!(setting("fsync").await, "off");
    assert_eq!(setting("listen_addresses").await, "127.0.0.1");
    assert_eq!(setting("port").await, cluster.port().to_string());
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, cluster.superuser());
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()))
        .exists());
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let cluster = common::cluster();
    let err = cluster
        .pg_config()
        .password("not-the-password")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password must not log in");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "28P01", "{db_err}");
}

#[tokio::test]
async fn databases_are_separate() {
    let a = common::fresh_database("sep").await;
    let b = common::fresh_database("sep").await;
    assert_ne!(a, b);
    let cluster = common::cluster();
    let in_a = cluster.connect(&a).await.unwrap();
    in_a.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    let in_b = cluster.connect(&b).await.unwrap();
    let found: i64 = in_b
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 0);
}

#[tokio::test]
async fn restart_ends_sessions_and_keeps_data() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let before = cluster.connect("postgres").await.unwrap();
    before
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    cluster.restart().await.unwrap();
    assert!(
        before.query_one("SELECT 1", &[]).await.is_err(),
        "old session must be gone"
    );
    let after = cluster.connect("postgres").await.unwrap();
    let x: i32 = after
        .query_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 7);

    cluster.stop_server().await.unwrap();
    assert!(
        cluster.connect("postgres").await.is_err(),
        "server is stopped"
    );
    cluster.start_server().await.unwrap();
    assert!(cluster.connect("postgres").await.is_ok());
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let base = base_dir(&cluster);
    let port = cluster.port();
    assert!(base.exists());
    drop(cluster);
    assert!(!base.exists(), "{} left behind", base.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening"
    );
}

#[tokio::test]
async fn tls_cluster_completes_a_handshake_with_its_certificate() {
    let cluster = common::tls_cluster();
    let pem = cluster
        .server_cert_pem()
        .expect("TLS cluster has a certificate");
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut tcp = tokio::net::TcpStream::connect((cluster.host(), cluster.port()))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap(); // SSLRequest
    assert_eq!(tcp.read_u8().await.unwrap(), b'S', "server must accept TLS");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the cluster's certificate");

    // Plain connections still work.
    assert!(cluster.connect("postgres").await.is_ok());
}

/// Set in the child process of `killed_process_leaves_no_cluster_behind`.
const CHILD_ENV: &str = "PGVEIL_CLUSTER_CHILD";

/// Not a test of its own: the body of the child process that gets killed.
#[test]
#[ignore = "run by killed_process_leaves_no_cluster_behind"]
fn child_holding_a_static_cluster() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = common::cluster();
    println!("{} {}", base_dir(cluster).display(), cluster.port());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn killed_process_leaves_no_cluster_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_holding_a_static_cluster",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with('/'))
        .expect("child reports its cluster");
    let (dir, port) = line.rsplit_once(' ').unwrap();
    let (base, port) = (PathBuf::from(dir), port.parse::<u16>().unwrap());
    assert!(base.exists());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "child's server runs"
    );

    child.kill().unwrap(); // SIGKILL: no destructors, no exit handlers
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while base.exists() || TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "cluster of killed process still around"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn base_dir(cluster: &Cluster) -> PathBuf {
    cluster.data_dir().parent().unwrap().to_path_buf()
}
