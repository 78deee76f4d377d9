//! Helpers shared by the privacy-view tests (`views_proxy`, `deny_proxy`):
//! one CRM proxy per test binary, and the same query run through
//! tokio-postgres, psql and psycopg 3 with every value as text.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::common;
use super::common::proxy::Proxy;

/// Result rows with every value as text (NULL = None).
pub type Rows = Vec<Vec<Option<String>>>;

/// psql's rendering of NULL in [`psql_rows`].
const PSQL_NULL: &str = "<NULL>";
const FIELD_SEP: &str = "\x1f";
const RECORD_SEP: &str = "\x1e";

/// Connects as `user` and panics with a useful message on failure.
pub async fn connect(proxy: &Proxy, user: &str) -> tokio_postgres::Client {
    proxy
        .connect(user)
        .await
        .unwrap_or_else(|e| panic!("cannot connect as {user}: {e}"))
}

/// Rows of one statement over the simple query protocol, as text.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    try_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// Like [`rows`], or the error.
pub async fn try_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Rows, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The SQLSTATE of a failed statement (panics if it succeeded).
pub async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => panic!("expected an error from: {sql}"),
        Err(e) => code(&e).unwrap_or_else(|| panic!("{sql}: no SQLSTATE in {e:?}")),
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// The first column of every row.
pub fn column(rows: &Rows) -> Vec<Option<String>> {
    rows.iter().map(|r| r[0].clone()).collect()
}

/// The first column of every row as a set of non-NULL texts.
pub fn set(rows: &Rows) -> BTreeSet<String> {
    rows.iter().filter_map(|r| r[0].clone()).collect()
}

fn client_env(command: &mut Command, proxy: &Proxy, user: &str) {
    command
        .env("PGHOST", proxy.addr.ip().to_string())
        .env("PGPORT", proxy.addr.port().to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", &proxy.password)
        .env("PGDATABASE", &proxy.database)
        .env("PGSSLMODE", "disable")
        .env("PGCLIENTENCODING", "UTF8")
        .env_remove("PGOPTIONS");
}

/// A psql command for `user` through the proxy (no psqlrc).
pub fn psql(proxy: &Proxy, user: &str) -> Command {
    let mut command = Command::new(common::cluster().bin_dir().join("psql"));
    client_env(&mut command, proxy, user);
    command.arg("-X");
    command
}

/// Runs a command, feeding `stdin`, and returns its output.
pub fn output(mut command: Command, stdin: &str) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for client")
}

/// Stdout of a command that must succeed.
pub fn stdout_ok(command: Command, stdin: &str) -> String {
    let debug = format!("{command:?}");
    let out = output(command, stdin);
    assert!(
        out.status.success(),
        "{debug} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rows of one query run by psql as `user`.
pub fn psql_rows(proxy: &Proxy, user: &str, sql: &str) -> Rows {
    let mut command = psql(proxy, user);
    command.args([
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-F",
        FIELD_SEP,
        "-R",
        RECORD_SEP,
        "-P",
        &format!("null={PSQL_NULL}"),
        "-c",
        sql,
    ]);
    let text = stdout_ok(command, "");
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split(RECORD_SEP)
        .map(|record| {
            record
                .split(FIELD_SEP)
                .map(|f| (f != PSQL_NULL).then(|| f.to_owned()))
                .collect()
        })
        .collect()
}

/// The psycopg probe script.
pub fn psycopg_script() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/psycopg_views.py"
    ))
}

/// Runs the psycopg probe in `mode` as `user`; returns its JSON output.
pub fn psycopg(
    proxy: &Proxy,
    user: &str,
    mode: &str,
    args: &[&str],
    stdin: &str,
) -> serde_json::Value {
    let mut command = Command::new("python3");
    command
        .arg(psycopg_script())
        .arg(mode)
        .arg(proxy.dsn(user))
        .args(args);
    let text = stdout_ok(command, stdin);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("psycopg output is not JSON ({e}): {text}"))
}

/// JSON rows (arrays of strings/nulls) as [`Rows`].
pub fn json_rows(value: &serde_json::Value) -> Rows {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {value}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("not a row: {row}"))
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// Rows of one query run by psycopg as `user`.
pub fn psycopg_rows(proxy: &Proxy, user: &str, sql: &str) -> Rows {
    let out = psycopg(proxy, user, "query", &[sql], "");
    assert!(out["error"].is_null(), "psycopg {user}: {sql}: {out}");
    json_rows(&out["rows"])
}

/// Runs `sql` as `user` through tokio-postgres, psql and psycopg; all three
/// must return the same rows, which are returned. Cast non-text values to
/// text in `sql` so every client renders them alike.
pub async fn all_clients(proxy: &Proxy, user: &str, sql: &str) -> Rows {
    let client = connect(proxy, user).await;
    let via_tokio = rows(&client, sql).await;
    let via_psql = psql_rows(proxy, user, sql);
    assert_eq!(
        via_psql, via_tokio,
        "psql and tokio-postgres differ for {user}: {sql}"
    );
    let via_psycopg = psycopg_rows(proxy, user, sql);
    assert_eq!(
        via_psycopg, via_tokio,
        "psycopg and tokio-postgres differ for {user}: {sql}"
    );
    via_tokio
}
