//! The real `pgveil serve` binary as a child process, for the operations
//! tests (shutdown, faults, load, logs): its JSON log lines, its address
//! (read from the "pgveil listening" line, so it can listen on port 0),
//! signals, and its memory and open files from /proc.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::common::proxy::USER_PASSWORD;

/// A running `pgveil serve --log-json`; killed when dropped.
pub struct Pgveil {
    child: Child,
    log: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)>,
    /// The database its configuration serves.
    pub database: String,
    /// The password of its users (default [`USER_PASSWORD`]).
    pub password: String,
}

impl Pgveil {
    /// Starts `pgveil --log-json serve --config <config>` without waiting.
    pub fn spawn(config: &Path, database: &str) -> Pgveil {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["--log-json", "serve", "--config"])
            .arg(config)
            .env("PGVEIL_LOG", "info,tokio_postgres=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgveil");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // A line that is not JSON is kept as a string, for the log test to find.
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                sink.0.lock().expect("log lock").push(value);
                sink.1.notify_all();
            }
        });
        Pgveil {
            child,
            log,
            database: database.to_owned(),
            password: USER_PASSWORD.to_owned(),
        }
    }

    /// Starts it and waits until it listens.
    pub fn start(config: &Path, database: &str) -> Pgveil {
        let pgveil = Pgveil::spawn(config, database);
        pgveil.wait_for_message("pgveil listening", Duration::from_secs(60));
        pgveil
    }

    /// The first log object whose message is `message`, waiting up to `limit`.
    pub fn wait_for_message(&self, message: &str, limit: Duration) -> serde_json::Value {
        self.wait_for(limit, |line| line["message"] == message)
            .unwrap_or_else(|| {
                panic!(
                    "pgveil did not log {message:?} within {limit:?}; it logged:\n{}",
                    self.log_text()
                )
            })
    }

    /// The first log object that satisfies `wanted`, waiting up to `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        let (lines, changed) = &*self.log;
        let mut lines = lines.lock().expect("log lock");
        loop {
            if let Some(found) = lines.iter().find(|l| wanted(l)) {
                return Some(found.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = changed.wait_timeout(lines, left).expect("log lock").0;
        }
    }

    /// Every log object so far.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log.0.lock().expect("log lock").clone()
    }

    fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listening_field("addr")
    }

    /// Where the admin endpoint listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.listening_field("admin")
    }

    fn listening_field(&self, field: &str) -> SocketAddr {
        let line = self.wait_for_message("pgveil listening", Duration::from_secs(60));
        line[field]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {line}"))
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill() with our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A tokio-postgres configuration for `user`.
    pub fn pg_config(&self, user: &str) -> tokio_postgres::Config {
        let addr = self.addr();
        let mut config = tokio_postgres::Config::new();
        config
            .host(addr.ip().to_string())
            .port(addr.port())
            .user(user)
            .password(&self.password)
            .dbname(&self.database)
            .connect_timeout(Duration::from_secs(30));
        config
    }

    /// Connects as `user`; the connection task's handle comes back too, so
    /// a test can see how the server ended the session.
    pub async fn connect(
        &self,
        user: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    > {
        let (client, connection) = self.pg_config(user).connect(tokio_postgres::NoTls).await?;
        Ok((client, tokio::spawn(connection)))
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }
}

impl Drop for Pgveil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message of a log object.
pub fn message(line: &serde_json::Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

/// How many backends run a query starting with `prefix` right now (asked
/// directly of PostgreSQL, as the superuser).
pub async fn running(admin: &tokio_postgres::Client, prefix: &str) -> i64 {
    admin
        .query_one(
            "select count(*) from pg_stat_activity \
             where state = 'active' and starts_with(query, $1) and pid <> pg_backend_pid()",
            &[&prefix],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Waits up to `limit` until no backend runs a query starting with
/// `prefix`; how long that took, or None.
pub async fn until_not_running(
    admin: &tokio_postgres::Client,
    prefix: &str,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if running(admin, prefix).await == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
