//! The privacy log through the proxy: every statement path (simple,
//! multi-statement, extended and prepared, failed, refused) and every failed
//! login yields exactly one record; statements skipped after an error up
//! to Sync are not recorded; with `required = true` statements are refused while the log
//! cannot be written, and run again once it can.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use pgveil::audit::{self, AuditConfig};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

use common::proxy::{self, Proxy, ProxyOptions};

const USER: &str = "app";

/// A proxy for a fresh database whose `[audit]` table holds `extra` and a
/// log file in a directory of its own; returns the proxy and the log file.
async fn audited_proxy(prefix: &str, extra: &str) -> (Proxy, PathBuf) {
    let db = common::fresh_database(prefix).await;
    let dir = tempfile::tempdir().expect("temp dir").keep();
    std::fs::create_dir(dir.join("log")).expect("log dir");
    let file = dir.join("log").join("pgveil-audit.jsonl");
    let tables = format!("[audit]\nfile = \"{}\"\n{extra}\n", file.display());
    let options = ProxyOptions {
        tables,
        ..Default::default()
    };
    (proxy::start(&db, &[USER], options), file)
}

/// Waits until every record queued so far is written, then reads them all.
async fn records(proxy: &Proxy, file: &Path) -> Vec<Value> {
    let handle = proxy.state.audit().expect("audit configured");
    tokio::time::timeout(Duration::from_secs(10), handle.flush())
        .await
        .expect("flush in time")
        .expect("flush");
    std::fs::read_to_string(file)
        .expect("read log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record is JSON"))
        .collect()
}

fn assert_intact(file: &Path, expected: u64) {
    let report = audit::verify(&audit::log_files(file)).expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, expected, "{report}");
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(|d| d.code())
}

#[tokio::test]
async fn every_statement_path_yields_exactly_one_record() {
    let (proxy, file) = audited_proxy("audit_paths", "").await;
    let mut config = proxy.pg_config(USER);
    config.application_name("audit-test");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);

    let simple = "select 1 as a";
    client.simple_query(simple).await.unwrap();
    let multi = "select 'x@example.org' as mail; select generate_series(1, 3)";
    client.simple_query(multi).await.unwrap();
    let prepared = "select $1::int + 41";
    let statement = client.prepare(prepared).await.unwrap();
    for i in 0..3 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 41);
    }
    let failing = "select 1/0";
    let e = client.batch_execute(failing).await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::DIVISION_BY_ZERO));
    let misspelt = "selec 'secret'";
    let e = client.prepare(misspelt).await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::SYNTAX_ERROR));
    let mut wrong = proxy.pg_config(USER);
    wrong.password("wrong-password");
    let Err(e) = wrong.connect(tokio_postgres::NoTls).await else {
        panic!("a wrong password must be refused");
    };
    assert_eq!(code(&e), Some(&SqlState::INVALID_PASSWORD));

    let records = records(&proxy, &file).await;
    let summary: Vec<(String, String, Option<u64>, Option<String>)> = records
        .iter()
        .map(|r| {
            (
                r["statement"].as_str().unwrap_or("").to_owned(),
                r["verdict"].as_str().unwrap().to_owned(),
                r["rows"].as_u64(),
                r["sqlstate"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let n = audit::normalize;
    let row = |sql: &str, rows: Option<u64>, state: Option<&str>| {
        (
            n(sql),
            "forwarded".to_owned(),
            rows,
            state.map(str::to_owned),
        )
    };
    let mut expected = vec![
        row(simple, Some(1), None),
        row(multi, Some(4), None),
        row(prepared, None, None),
        row(prepared, Some(1), None),
        row(prepared, Some(1), None),
        row(prepared, Some(1), None),
        row(failing, None, Some("22012")),
        row(misspelt, None, Some("42601")),
    ];
    expected.push((
        String::new(),
        "login_failed".to_owned(),
        None,
        Some("28P01".to_owned()),
    ));
    assert_eq!(summary, expected);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("x@example.org") && !text.contains("secret"));
    let session = &records[0]["session_id"];
    for r in &records[..records.len() - 1] {
        assert_eq!(&r["session_id"], session);
        assert_eq!(r["user"], USER);
        assert_eq!(r["view_set"], "passthrough");
        assert_eq!(r["application_name"], "audit-test");
        assert_eq!(r["event"], "statement");
        assert!(r["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(r["duration_us"].is_u64());
    }
    let login = records.last().unwrap();
    assert_eq!(login["event"], "login");
    assert_eq!(login["user"], USER);
    assert_ne!(&login["session_id"], session);
    assert_intact(&file, records.len() as u64);
}

/// Logs in to `proxy` as [`USER`] over a raw connection.
async fn raw_login(proxy: &Proxy) -> (TcpStream, BytesMut) {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let params = [("user", USER), ("database", proxy.database.as_str())];
    frontend::startup_message(params.iter().copied(), &mut out).unwrap();
    let mut scram = ScramSha256::new(proxy.password.as_bytes(), ChannelBinding::unsupported());
    loop {
        tcp.write_all(&out).await.unwrap();
        out.clear();
        match next_message(&mut tcp, &mut buf).await {
            Message::AuthenticationSasl(_) => {
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap()
            }
            Message::AuthenticationSaslContinue(body) => {
                scram.update(body.data()).unwrap();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).unwrap(),
            Message::ReadyForQuery(_) => return (tcp, buf),
            _ => {}
        }
    }
}

async fn next_message(tcp: &mut TcpStream, buf: &mut BytesMut) -> Message {
    loop {
        if let Some(m) = Message::parse(buf).unwrap() {
            return m;
        }
        assert!(tcp.read_buf(buf).await.unwrap() > 0, "proxy closed");
    }
}

#[tokio::test]
async fn statements_skipped_after_an_error_are_not_recorded() {
    let (proxy, file) = audited_proxy("audit_skip", "").await;
    let (mut tcp, mut buf) = raw_login(&proxy).await;
    let mut out = BytesMut::new();
    for sql in ["select 1/0", "select 'skipped'"] {
        frontend::parse("", sql, None, &mut out).unwrap();
        let no_params: [Option<i32>; 0] = [];
        frontend::bind(
            "",
            "",
            None,
            no_params,
            |_: Option<i32>, _| unreachable!(),
            None,
            &mut out,
        )
        .map_err(|_| "bind")
        .unwrap();
        frontend::execute("", 0, &mut out).unwrap();
    }
    frontend::sync(&mut out);
    frontend::parse("", "select 'prepared only'", None, &mut out).unwrap();
    frontend::sync(&mut out);
    tcp.write_all(&out).await.unwrap();
    let mut readies = 0;
    while readies < 2 {
        if let Message::ReadyForQuery(_) = next_message(&mut tcp, &mut buf).await {
            readies += 1;
        }
    }
    let records = records(&proxy, &file).await;
    let summary: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r["statement"].as_str().unwrap(), r["sqlstate"].as_str()))
        .collect();
    let first = audit::normalize("select 1/0");
    let prepared = audit::normalize("select 'prepared only'");
    assert_eq!(
        summary,
        vec![(first.as_str(), Some("22012")), (prepared.as_str(), None)]
    );
    assert!(records[1]["rows"].is_null());
    assert_intact(&file, 2);
}

/// Runs `sql` until the proxy refuses it with the audit SQLSTATE, or fails
/// the test after 10 s; returns how many runs succeeded before.
async fn until_refused(client: &tokio_postgres::Client, sql: &str) -> u64 {
    let mut ran = 0;
    for _ in 0..200 {
        match client.simple_query(sql).await {
            Ok(_) => ran += 1,
            Err(e) => {
                let db = e.as_db_error().expect("a server error");
                assert_eq!(db.code().code(), "53000", "{db:?}");
                assert!(db.message().contains("privacy log"), "{db:?}");
                return ran;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("statements kept running while the privacy log could not be written");
}

#[tokio::test]
async fn a_required_log_refuses_statements_while_it_cannot_be_written() {
    let (proxy, file) = audited_proxy("audit_required", "required = true").await;
    let client = proxy.connect(USER).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    let statement = client.prepare("select 2").await.unwrap();
    let mut ran = 2;
    let dir = file.parent().unwrap().to_owned();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();

    ran += until_refused(&client, "select 3").await;
    let e = client.query(&statement, &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_RESOURCES), "{e}");
    let e = client.query("select 4", &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_RESOURCES), "{e}");

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    let mut back = false;
    for _ in 0..200 {
        if client.simple_query("select 5").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the session did not recover with the log");
    ran += 1;
    let row = client.query_one(&statement, &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    ran += 1;

    let records = records(&proxy, &file).await;
    let forwarded = records
        .iter()
        .filter(|r| r["verdict"] == "forwarded")
        .count() as u64;
    assert_eq!(forwarded, ran, "every statement that ran is in the log");
    assert_intact(&file, records.len() as u64);
}

#[tokio::test]
async fn policy_refusals_are_recorded_as_refused() {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let file = dir.join("pgveil-audit.jsonl");
    let config = AuditConfig {
        file: Some(file.clone()),
        ..AuditConfig::default()
    };
    let proxy = proxy::start_crm_with("audit_crm", 20, Some(config)).await;
    let client = proxy.connect("sam").await.unwrap();
    let count = "select count(*) from customers where email like '%@example.org'";
    client.simple_query(count).await.unwrap();
    let email = "select email from customers limit 2";
    client.simple_query(email).await.unwrap();
    let star = "select * from customers limit 1";
    client.simple_query(star).await.unwrap();
    let e = client.simple_query("set role postgres").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let e = client.prepare("set role postgres").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    client.simple_query("select 1").await.unwrap();

    let records = records(&proxy, &file).await;
    let verdicts: Vec<(&str, Option<&str>, Option<u64>)> = records
        .iter()
        .map(|r| {
            (
                r["verdict"].as_str().unwrap(),
                r["sqlstate"].as_str(),
                r["rows"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("rewritten", None, Some(1)),
            ("rewritten", None, Some(2)),
            ("rewritten", None, Some(1)),
            ("refused", Some("42501"), None),
            ("refused", Some("42501"), None),
            ("forwarded", None, Some(1)),
        ]
    );
    assert_eq!(records[0]["statement"], audit::normalize(count));
    assert_eq!(records[1]["statement"], audit::normalize(email));
    for r in &records[..2] {
        assert_eq!(
            r["tables"],
            serde_json::json!([{
                "table": "public.customers",
                "access": "read",
                "classification": "identity",
                "columns": [{ "column": "email", "classification": "identity" }]
            }]),
            "{r}"
        );
    }
    // `*` reads what the standard view shows: no sensitive column.
    let star_columns: Vec<(&str, &str)> = records[2]["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap(),
                c["classification"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        star_columns.contains(&("email", "identity")),
        "{star_columns:?}"
    );
    assert!(star_columns.contains(&("date_of_birth", "personal")));
    assert!(star_columns.contains(&("country", "non_personal")));
    assert!(!star_columns
        .iter()
        .any(|(c, _)| *c == "religion" || *c == "health_notes"));
    assert_eq!(
        records[2]["tables"][0]["classification"],
        "identity, non_personal, personal"
    );
    assert!(records[3]["reason"].as_str().unwrap().len() > 5);
    for r in &records {
        assert_eq!(r["user"], "sam");
        assert_eq!(r["view_set"], "standard");
        assert!(r["role"].as_str().is_some_and(|role| role != "postgres"));
    }
    assert_intact(&file, 6);
}
