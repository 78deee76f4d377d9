//! `pgveil --log-json serve`: every stderr line is one JSON object; session
//! start and end, refusals and failed logins are events carrying the
//! session's id, user, view set and peer.

mod common;
mod ops;

use std::time::Duration;

use ops::Pgveil;

fn span_field<'a>(line: &'a serde_json::Value, field: &str) -> &'a str {
    line["span"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no span.{field} in {line}"))
}

// Multi-threaded: the log waits block their thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_session_fields() {
    let database = common::fresh_database("logs_json").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = pgveil::demo::Setup {
        listen: "127.0.0.1:0".parse().expect("addr"),
        customers: 50,
        policy: None,
    };
    pgveil::demo::prepare(common::cluster(), &database, dir.path(), &setup)
        .await
        .expect("prepare the CRM");
    let mut pgveil = Pgveil::start(&dir.path().join("pgveil.toml"), &database);
    pgveil.password = pgveil::demo::DEMO_PASSWORD.to_owned();

    let (sam, connection) = pgveil.connect("sam").await.expect("sam connects");
    let refused = sam.simple_query("set role postgres").await;
    assert!(refused.is_err(), "set role must be refused");
    drop(sam);
    connection
        .await
        .expect("connection task")
        .expect("sam's session ends cleanly");
    let wrong = pgveil
        .pg_config("ana")
        .password("wrong")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(wrong.is_err());
    let ended = pgveil.wait_for_message("session ended", Duration::from_secs(5));
    pgveil.signal(libc::SIGTERM);
    let status = pgveil.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));

    let log = pgveil.log();
    for line in &log {
        assert!(line.is_object(), "not a JSON object: {line}");
        for field in ["timestamp", "level", "message", "target"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    let started = pgveil.wait_for_message("session started", Duration::ZERO);
    let session_id = span_field(&started, "session_id");
    assert_eq!(session_id.len(), 16, "{started}");
    assert_eq!(span_field(&started, "user"), "sam");
    assert_eq!(span_field(&started, "view_set"), "standard");
    assert!(
        span_field(&started, "peer").starts_with("127.0.0.1:"),
        "{started}"
    );

    let refusal = pgveil.wait_for_message("statement refused", Duration::ZERO);
    assert_eq!(span_field(&refusal, "session_id"), session_id);
    assert_eq!(refusal["sqlstate"], "42501");
    assert_eq!(refusal["level"], "INFO");
    assert_eq!(span_field(&ended, "session_id"), session_id);
    assert!(ended["duration_ms"].is_u64(), "{ended}");

    let failed = pgveil
        .wait_for(Duration::ZERO, |l| {
            ops::message(l).starts_with("password authentication failed")
        })
        .expect("the failed login is logged");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(span_field(&failed, "user"), "ana");
    assert_ne!(span_field(&failed, "session_id"), session_id);
}
