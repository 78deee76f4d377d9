//! The privacy log end to end: records written by the background writer,
//! the hash chain across rotation and restart, tamper detection by
//! `verify`, fail-closed behaviour when the sink breaks, and the
//! PostgreSQL table sink.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgveil::audit::{
    self, AuditConfig, AuditEvent, AuditHandle, AuditUnavailable, AuditVerdict, ProtectedColumn,
    ProtectedTable, SessionInfo, TableCatalog, Tail,
};

const WAIT: Duration = Duration::from_secs(10);

fn session() -> Arc<SessionInfo> {
    Arc::new(SessionInfo {
        session_id: "s-test".into(),
        user: "alice".into(),
        role: Some("sales".into()),
        view_set: Some("standard".into()),
        purpose: Some("support".into()),
        client_addr: Some("127.0.0.1:6000".parse().unwrap()),
        application_name: Some("psql".into()),
    })
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::statement(
        session(),
        format!("select name from customers where id = {i} and note = 'padding text'"),
        AuditVerdict::Rewritten,
    )
    .with_rows(Some(1))
    .with_duration(Duration::from_micros(1500))
}

fn file_config(path: &Path) -> AuditConfig {
    AuditConfig {
        file: Some(path.to_path_buf()),
        ..AuditConfig::default()
    }
}

async fn start(config: AuditConfig) -> AuditHandle {
    let (handle, _task) = audit::start(config, None).await.unwrap();
    handle
}

async fn flush(handle: &AuditHandle) {
    tokio::time::timeout(WAIT, handle.flush())
        .await
        .expect("flush timed out")
        .unwrap();
}

/// Writes `n` records to a log rotated every ~4 KB; returns the live path.
async fn write_log(dir: &Path, n: u64) -> PathBuf {
    let live = dir.join("pgveil-audit.jsonl");
    let handle = start(AuditConfig {
        max_file_bytes: 4000,
        ..file_config(&live)
    })
    .await;
    for i in 0..n {
        handle.record(event(i)).unwrap();
    }
    handle.shutdown().await.unwrap();
    live
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test]
async fn verify_passes_across_rotation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let live = write_log(dir.path(), 30).await;
    let files = audit::log_files(&live);
    assert!(files.len() >= 3, "expected rotation, got {files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 4000,
            "{f:?} too large"
        );
    }

    // A restarted writer continues the chain where the files end.
    let handle = start(AuditConfig {
        max_file_bytes: 4000,
        ..file_config(&live)
    })
    .await;
    for i in 30..40 {
        handle.record(event(i)).unwrap();
    }
    flush(&handle).await;

    let report = audit::verify(&audit::log_files(&live)).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 40);
    assert_eq!(report.seq_range, Some((1, 40)));
    assert!(report.from_genesis);
    assert_eq!(report.tail, Tail::Matches(40));
    assert!(
        report.to_string().ends_with("OK: the chain is intact"),
        "{report}"
    );
}

#[tokio::test]
async fn verify_reports_the_first_broken_record() {
    let dir = tempfile::tempdir().unwrap();
    let live = write_log(dir.path(), 30).await;
    let files = audit::log_files(&live);
    let older = files[files.len() - 2].clone();
    assert!(lines(&live).len() >= 4 && lines(&older).len() >= 4);

    // Each case tampers with a fresh copy and names the line verify must blame.
    type Tamper = fn(&Path, &Path) -> (PathBuf, u64, &'static str);
    let cases: Vec<(&str, Tamper)> = vec![
        ("edited", |live, _| {
            let mut l = lines(live);
            l[1] = l[1].replace("alice", "mallory");
            write_lines(live, &l);
            (live.to_path_buf(), 3, "prev_hash does not match")
        }),
        ("edited in an older file", |_, older| {
            let mut l = lines(older);
            l[0] = l[0].replace("\"rows\":1", "\"rows\":2");
            write_lines(older, &l);
            (older.to_path_buf(), 2, "prev_hash does not match")
        }),
        ("last record edited", |live, _| {
            let mut l = lines(live);
            let last = l.len() - 1;
            l[last] = l[last].replace("alice", "mallory");
            write_lines(live, &l);
            (live.to_path_buf(), l.len() as u64, "edited")
        }),
        ("removed", |live, _| {
            let mut l = lines(live);
            l.remove(1);
            write_lines(live, &l);
            (live.to_path_buf(), 2, "removed, inserted or reordered")
        }),
        ("swapped", |live, _| {
            let mut l = lines(live);
            l.swap(1, 2);
            write_lines(live, &l);
            (live.to_path_buf(), 2, "removed, inserted or reordered")
        }),
        ("inserted copy", |live, _| {
            let mut l = lines(live);
            let copy = l[1].clone();
            l.insert(2, copy);
            write_lines(live, &l);
            (live.to_path_buf(), 3, "removed, inserted or reordered")
        }),
        ("tail cut off", |live, _| {
            let mut l = lines(live);
            l.pop();
            write_lines(live, &l);
            (live.to_path_buf(), l.len() as u64, "cut off")
        }),
        ("older file emptied", |live, older| {
            std::fs::write(older, "").unwrap();
            (live.to_path_buf(), 1, "removed, inserted or reordered")
        }),
    ];
    for (name, tamper) in cases {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let live_copy = copy.path().join(live.file_name().unwrap());
        let older_copy = copy.path().join(older.file_name().unwrap());
        let (path, line, why) = tamper(&live_copy, &older_copy);
        let report = audit::verify(&audit::log_files(&live_copy)).unwrap();
        let problem = report
            .problem
            .clone()
            .unwrap_or_else(|| panic!("{name}: not detected\n{report}"));
        assert_eq!(
            (problem.path.as_path(), problem.line),
            (path.as_path(), line),
            "{name}: {report}"
        );
        assert!(problem.reason.contains(why), "{name}: {report}");
        let shown = report.to_string();
        assert!(
            shown.contains(&format!("BROKEN at {}:{line}", path.display())),
            "{name}: {shown}"
        );
    }
}

#[tokio::test]
async fn statements_are_logged_without_literal_values() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("a.jsonl");
    let handle = start(file_config(&live)).await;
    let column = |name: &str, class: &str, hidden_in: &[&str]| ProtectedColumn {
        name: name.into(),
        classification: Some(class.into()),
        hidden_in: hidden_in.iter().map(|s| s.to_string()).collect(),
    };
    handle.set_catalog(TableCatalog::new([ProtectedTable {
        schema: "public".into(),
        table: "customers".into(),
        columns: vec![
            column("id", "identity", &[]),
            column("email", "personal", &[]),
            column("religion", "sensitive", &["standard"]),
        ],
    }]));
    let sql = "select * from customers where email = 'a@b.c' and id = 42";
    handle
        .record(AuditEvent::statement(session(), sql, AuditVerdict::Rewritten).with_rows(Some(1)))
        .unwrap();
    handle
        .record(
            AuditEvent::statement(
                session(),
                "select pg_read_file('/etc/passwd')",
                AuditVerdict::Refused("function pg_read_file is not allowed".into()),
            )
            .with_sqlstate("42501"),
        )
        .unwrap();
    handle
        .record(AuditEvent::login_failed(
            session(),
            "password authentication failed",
            "28P01",
        ))
        .unwrap();
    flush(&handle).await;

    let text = std::fs::read_to_string(&live).unwrap();
    assert!(
        !text.contains("a@b.c") && !text.contains("/etc/passwd"),
        "{text}"
    );
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    assert_eq!(
        r["statement"],
        "select * from customers where email = ? and id = ?"
    );
    for field in ["statement", "reason", "tables", "user", "session_id"] {
        assert!(!r[field].to_string().contains("42"), "{field}: {r}");
    }
    assert_eq!(r["event"], "statement");
    assert_eq!(r["verdict"], "rewritten");
    assert_eq!(r["user"], "alice");
    assert_eq!(r["role"], "sales");
    assert_eq!(r["view_set"], "standard");
    assert_eq!(r["purpose"], "support");
    assert_eq!(r["client_addr"], "127.0.0.1:6000");
    assert_eq!(r["application_name"], "psql");
    assert_eq!(r["rows"], 1);
    assert_eq!(r["tables"][0]["table"], "public.customers");
    assert_eq!(r["tables"][0]["access"], "read");
    assert_eq!(r["tables"][0]["classification"], "identity, personal");
    // `*` in view set standard: every column but the hidden one.
    assert_eq!(
        r["tables"][0]["columns"],
        serde_json::json!([
            { "column": "id", "classification": "identity" },
            { "column": "email", "classification": "personal" }
        ])
    );
    assert_eq!(records[1]["verdict"], "refused");
    assert_eq!(records[1]["reason"], "function pg_read_file is not allowed");
    assert_eq!(records[1]["sqlstate"], "42501");
    assert_eq!(records[1]["statement"], "select pg_read_file(?)");
    assert_eq!(records[2]["event"], "login");
    assert_eq!(records[2]["verdict"], "login_failed");
    assert_eq!(records[2]["sqlstate"], "28P01");
    assert_eq!(records[2]["statement"], serde_json::Value::Null);
}

/// Replaces the log directory by a regular file, so nothing can be opened
/// in it (chmod does not stop root).
fn break_dir(dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::write(dir, "not a directory").unwrap();
}

fn repair_dir(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::create_dir(dir).unwrap();
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_required_log_fails_closed_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let live = logs.join("pgveil-audit.jsonl");
    let handle = start(AuditConfig {
        required: true,
        buffer: 16,
        ..file_config(&live)
    })
    .await;
    handle.record(event(0)).unwrap();
    flush(&handle).await;
    assert!(handle.admit().is_ok());

    break_dir(&logs);
    let mut accepted = 0;
    let refused = until("record is refused", || match handle.record(event(1)) {
        Ok(()) => {
            accepted += 1;
            None
        }
        Err(e) => Some(e),
    })
    .await;
    assert!(
        matches!(refused, AuditUnavailable::Failing | AuditUnavailable::Full),
        "{refused:?}"
    );
    assert!(handle.admit().is_err());
    assert!(!handle.healthy() || refused == AuditUnavailable::Full);

    repair_dir(&logs);
    until("record is accepted again", || handle.record(event(2)).ok()).await;
    flush(&handle).await;
    assert!(handle.healthy());
    assert!(handle.admit().is_ok());

    // What was accepted during the outage was kept and written after it, and
    // the new file chains on from the lost one.
    let report = audit::verify(std::slice::from_ref(&live)).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, accepted + 1);
    assert!(!report.from_genesis);
    assert_eq!(report.seq_range.map(|r| r.0), Some(2));
}

#[tokio::test]
async fn an_optional_log_drops_and_counts() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let live = logs.join("pgveil-audit.jsonl");
    let handle = start(AuditConfig {
        buffer: 4,
        ..file_config(&live)
    })
    .await;
    break_dir(&logs);
    for i in 0..200 {
        assert!(handle.record(event(i)).is_ok());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(handle.dropped() > 0);
    assert!(handle.admit().is_ok());
    repair_dir(&logs);
    flush(&handle).await;
    assert_eq!(handle.written() + handle.dropped(), 200);
}

fn pool(db: &str) -> deadpool_postgres::Pool {
    let mut config = common::cluster().pg_config();
    config.dbname(db);
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(2)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_table_sink_writes_the_same_records() {
    let db = common::fresh_database("audit_table").await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("a.jsonl");
    let config = AuditConfig {
        table: true,
        ..file_config(&live)
    };
    let (handle, _task) = audit::start(config, Some(pool(&db))).await.unwrap();
    for i in 0..5 {
        handle.record(event(i)).unwrap();
    }
    handle
        .record(AuditEvent::login_failed(
            session(),
            "password authentication failed",
            "28P01",
        ))
        .unwrap();
    handle.shutdown().await.unwrap();

    let client = common::cluster().connect(&db).await.unwrap();
    let rows = client
        .query(
            "SELECT seq, event, user_name, view_set, statement, verdict, rows, duration_us, line \
             FROM pgveil_audit.log ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    let first = &rows[0];
    assert_eq!(first.get::<_, i64>("seq"), 1);
    assert_eq!(first.get::<_, &str>("event"), "statement");
    assert_eq!(first.get::<_, &str>("user_name"), "alice");
    assert_eq!(first.get::<_, &str>("view_set"), "standard");
    assert_eq!(
        first.get::<_, &str>("statement"),
        "select name from customers where id = ? and note = ?"
    );
    assert_eq!(first.get::<_, &str>("verdict"), "rewritten");
    assert_eq!(first.get::<_, Option<i64>>("rows"), Some(1));
    assert_eq!(first.get::<_, Option<i64>>("duration_us"), Some(1500));
    assert_eq!(rows[5].get::<_, &str>("verdict"), "login_failed");
    let table_lines: Vec<String> = rows.iter().map(|r| r.get("line")).collect();
    assert_eq!(table_lines, lines(&live));

    // A role without grants (as every view set role is) cannot read it.
    client
        .batch_execute("CREATE ROLE audit_probe")
        .await
        .unwrap();
    let denied = client
        .batch_execute("SET ROLE audit_probe; SELECT count(*) FROM pgveil_audit.log")
        .await
        .unwrap_err();
    assert_eq!(
        denied.as_db_error().map(|e| e.code().code()),
        Some("42501"),
        "{denied}"
    );
    client.batch_execute("RESET ROLE").await.unwrap();

    // A table-only writer continues the chain stored in the table.
    let (handle, _task) = audit::start(
        AuditConfig {
            table: true,
            ..AuditConfig::default()
        },
        Some(pool(&db)),
    )
    .await
    .unwrap();
    handle.record(event(9)).unwrap();
    handle.shutdown().await.unwrap();
    let next = client
        .query_one(
            "SELECT seq, prev_hash FROM pgveil_audit.log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(next.get::<_, i64>("seq"), 7);
    let last_line = lines(&live).pop().unwrap();
    let expected = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(last_line.as_bytes())
    );
    assert_eq!(next.get::<_, &str>("prev_hash"), expected);
}

/// A statement event of session `id`.
fn event_of(id: &str) -> AuditEvent {
    let session = Arc::new(SessionInfo {
        session_id: id.into(),
        ..(*session()).clone()
    });
    AuditEvent::statement(session, "select 1", AuditVerdict::Forwarded)
}

/// Records per session id in the chain-checked records of `lines`.
fn per_session(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *counts
            .entry(v["session_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn two_writers_of_one_file_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("shared.jsonl");
    let config = AuditConfig {
        max_file_bytes: 4000,
        keep_files: 50,
        ..file_config(&live)
    };
    // Like the proxy and `pgveil subject` in two processes: two writers,
    // each with its own sink state, appending to the same files.
    let a = start(config.clone()).await;
    let b = start(config).await;
    for i in 0..40 {
        a.record(event_of("a")).unwrap();
        b.record(event_of("b")).unwrap();
        if i % 5 == 0 {
            flush(&b).await;
        }
    }
    flush(&a).await;
    flush(&b).await;

    let files = audit::log_files(&live);
    assert!(files.len() >= 3, "expected rotation, got {files:?}");
    let report = audit::verify(&files).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 80, "{report}");
    assert_eq!(report.tail, Tail::Matches(80));
    let all: Vec<String> = files.iter().flat_map(|f| lines(f)).collect();
    let counts = per_session(&all);
    assert_eq!(counts.get("a"), Some(&40));
    assert_eq!(counts.get("b"), Some(&40));
}

#[tokio::test]
async fn two_writers_of_one_table_keep_one_chain() {
    let db = common::fresh_database("audit_table_shared").await;
    let config = AuditConfig {
        table: true,
        ..AuditConfig::default()
    };
    let (a, _) = audit::start(config.clone(), Some(pool(&db))).await.unwrap();
    let (b, _) = audit::start(config, Some(pool(&db))).await.unwrap();
    for _ in 0..30 {
        a.record(event_of("a")).unwrap();
        b.record(event_of("b")).unwrap();
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    let client = common::cluster().connect(&db).await.unwrap();
    let table_lines: Vec<String> = client
        .query("SELECT line FROM pgveil_audit.log ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("from-table.jsonl");
    write_lines(&exported, &table_lines);
    let report = audit::verify(&[exported]).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 60);
    let counts = per_session(&table_lines);
    assert_eq!(counts.get("a"), Some(&30));
    assert_eq!(counts.get("b"), Some(&30));
}
