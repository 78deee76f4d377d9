//! A throwaway PostgreSQL cluster in a temporary directory, used by
//! `pgveil demo` and by the integration tests.
//!
//! [`Cluster::start`] runs `initdb` and `pg_ctl start` on a private directory
//! and a local port. The cluster never outlives the process that started it:
//! a small reaper process (`sh`) waits for end-of-file on a pipe whose only
//! write end lives in this process. When the process exits for any reason —
//! normal exit, panic, `SIGKILL` — the kernel closes the pipe and the reaper
//! stops the server and removes the directory. This also covers clusters kept
//! in a `static`, whose `Drop` never runs.
//!
//! PostgreSQL refuses to run as root. When we are root, every PostgreSQL
//! command runs as the `postgres` OS user (created as `pgveil` when no
//! `postgres` user exists) and the directory is owned by that user.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use rand::distributions::{Alphanumeric, DistString};

/// Everything that can go wrong while managing a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH \
         nor in /usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql`"
    )]
    BinariesNotFound,
    /// A file-system operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What we were doing, e.g. "creating /tmp/pgveil-cluster-1".
        action: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line that failed.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr and stdout (and the server log, for `pg_ctl start`).
        output: String,
    },
    /// We are root and found no unprivileged OS user to run PostgreSQL as.
    #[error("cannot find or create an unprivileged OS user to run PostgreSQL as: {0}")]
    NoServerUser(String),
    /// Generating the server's self-signed TLS certificate failed.
    #[error("generating the server's TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Connecting to or querying the running cluster failed.
    #[error("talking to the cluster: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A blocking background task panicked or was cancelled.
    #[error("cluster background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// Name of the cluster's superuser role.
const SUPERUSER: &str = "postgres";
/// Address the server listens on.
const HOST: &str = "127.0.0.1";
/// How often `start` picks a new free port when the chosen one was taken.
const PORT_ATTEMPTS: usize = 5;

/// How to set up a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Password of the `postgres` superuser; `None` generates a random one.
    pub password: Option<String>,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines, applied after the built-in settings.
    pub extra_conf: Vec<String>,
    /// Serve TLS with a freshly generated self-signed certificate.
    pub ssl: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            port: None,
            password: None,
            max_connections: 200,
            extra_conf: Vec::new(),
            ssl: false,
        }
    }
}

/// Returns the directory holding `initdb`, `pg_ctl` and `postgres`: the one
/// `initdb` on PATH resolves to, else the newest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> std::result::Result<PathBuf, ClusterError> {
    bin_dir_on_path()
        .or_else(newest_packaged_bin_dir)
        .ok_or(ClusterError::BinariesNotFound)
}

fn bin_dir_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        .filter_map(|initdb| fs::canonicalize(initdb).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| has_server_binaries(dir))
}

fn newest_packaged_bin_dir() -> Option<PathBuf> {
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server_binaries(dir))
        .max()
        .map(|(_, dir)| dir)
}

/// "15" → [15], "9.6" → [9, 6]; `None` for names that are not versions.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|bin| dir.join(bin).is_file())
}

/// An OS account that PostgreSQL commands run as (when we are root).
#[derive(Debug, Clone)]
struct OsUser {
    uid: u32,
    gid: u32,
}

/// Returns the user to run PostgreSQL as, or `None` to run as ourselves.
fn server_user() -> Result<Option<OsUser>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    if let Some(user) = lookup_user("postgres") {
        return Ok(Some(user));
    }
    if let Some(user) = lookup_user("pgveil") {
        return Ok(Some(user));
    }
    let created = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--shell", "/usr/sbin/nologin", "pgveil"])
        .output();
    // A concurrent process may have created the user first: look it up anyway.
    lookup_user("pgveil").map(Some).ok_or_else(|| {
        ClusterError::NoServerUser(match created {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("running useradd: {e}"),
        })
    })
}

fn lookup_user(name: &str) -> Option<OsUser> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let mut fields = line.trim().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(OsUser { uid, gid })
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Io { action, source }
}

/// Runs `cmd`, returning its output, or an error naming it with its stderr.
fn run(mut cmd: Command) -> Result<Output> {
    let line = command_line(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running `{line}`")))?;
    if out.status.success() {
        return Ok(out);
    }
    Err(ClusterError::Command {
        command: line,
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .trim()
        .to_string(),
    })
}

fn command_line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program()];
    parts.extend(cmd.get_args());
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs PostgreSQL's programs on one data directory, as the right OS user.
/// Cheap to clone, so blocking work can move to a worker thread.
#[derive(Debug, Clone)]
struct Server {
    bin_dir: PathBuf,
    base_dir: PathBuf,
    user: Option<OsUser>,
}

impl Server {
    fn data_dir(&self) -> PathBuf {
        self.base_dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.base_dir.join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.base_dir.join("server.log")
    }

    /// A command for one of PostgreSQL's programs, run as the server user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.base_dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT");
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// Creates `path` (or replaces its content), owned by the server user.
    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        let action = || format!("writing {}", path.display());
        fs::write(path, contents).map_err(io_err(action()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(action()))?;
        self.give_to_server_user(path)
    }

    fn create_dir(&self, path: &Path) -> Result<()> {
        fs::create_dir(path).map_err(io_err(format!("creating {}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("restricting {}", path.display())))?;
        self.give_to_server_user(path)
    }

    fn give_to_server_user(&self, path: &Path) -> Result<()> {
        give_to(self.user.as_ref(), path)
    }

    fn initdb(&self, password: &str) -> Result<()> {
        let pwfile = self.base_dir.join("pwfile");
        self.write_file(&pwfile, password.as_bytes(), 0o600)?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["--username", SUPERUSER, "--encoding=UTF8", "--no-locale"])
            .args([
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let result = run(cmd);
        fs::remove_file(&pwfile).map_err(io_err("removing the initdb password file"))?;
        result.map(drop)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"]);
        run(cmd).map(drop).map_err(|err| self.with_log_tail(err))
    }

    /// Stops the server; `mode` is a `pg_ctl stop -m` mode.
    fn stop(&self, mode: &str) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(cmd).map(drop)
    }

    /// Appends the end of the server log to a failed command's output.
    fn with_log_tail(&self, err: ClusterError) -> ClusterError {
        let ClusterError::Command {
            command,
            status,
            mut output,
        } = err
        else {
            return err;
        };
        if let Ok(log) = fs::read_to_string(self.log_file()) {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            let _ = write!(output, "\nserver log:\n{}", tail.join("\n"));
        }
        ClusterError::Command {
            command,
            status,
            output,
        }
    }

    /// Starts the reaper: it stops the server and deletes the directory once
    /// the returned pipe closes, i.e. when this process ends or drops it.
    fn spawn_reaper(&self) -> Result<(Child, ChildStdin)> {
        const SCRIPT: &str = r#"trap '' INT HUP
cat >/dev/null
"$1" -D "$2" -m immediate -w stop >/dev/null 2>&1
rm -rf "$3""#;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SCRIPT, "pgveil-reaper"])
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.base_dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at us must not kill it.
            .process_group(0);
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd.spawn().map_err(io_err("starting the cluster reaper"))?;
        match child.stdin.take() {
            Some(pipe) => Ok((child, pipe)),
            None => Err(ClusterError::Io {
                action: "starting the cluster reaper".into(),
                source: io::Error::other("no stdin pipe"),
            }),
        }
    }
}

/// Hands `path` to `user` (no-op for `None`, i.e. when we are not root).
fn give_to(user: Option<&OsUser>, path: &Path) -> Result<()> {
    match user {
        Some(user) => chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(format!(
            "handing {} to uid {}",
            path.display(),
            user.uid
        ))),
        None => Ok(()),
    }
}

/// Creates a fresh, empty directory for one cluster under the temp dir.
fn make_base_dir(user: Option<&OsUser>) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("pgveil-cluster-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err(format!("restricting {}", dir.display())))?;
                give_to(user, &dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
        }
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).map_err(io_err("finding a free port"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("finding a free port"))?;
    Ok(addr.port())
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A running throwaway PostgreSQL server. Dropping it stops the server and
/// removes its directory; so does the end of the process that started it.
#[derive(Debug)]
pub struct Cluster {
    server: Server,
    port: u16,
    password: String,
    cert_pem: Option<String>,
    reaper: Child,
    /// The reaper's lifeline: closing it triggers the clean-up.
    lifeline: Option<ChildStdin>,
}

impl Cluster {
    /// Creates and starts a cluster; the blocking work runs on a worker thread.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        tokio::task::spawn_blocking(move || Cluster::start_blocking(opts)).await?
    }

    /// Creates and starts a cluster without needing an async runtime.
    pub fn start_blocking(opts: ClusterOptions) -> Result<Cluster> {
        let bin_dir = find_bin_dir()?;
        let user = server_user()?;
        let server = Server {
            bin_dir,
            base_dir: make_base_dir(user.as_ref())?,
            user,
        };
        // The reaper comes first so that even a failed start leaves nothing behind.
        let (reaper, lifeline) = server.spawn_reaper()?;
        let mut cluster = Cluster {
            server,
            port: 0,
            password: opts
                .password
                .clone()
                .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::thread_rng(), 24)),
            cert_pem: None,
            reaper,
            lifeline: Some(lifeline),
        };
        cluster.init(&opts)?;
        Ok(cluster)
    }

    fn init(&mut self, opts: &ClusterOptions) -> Result<()> {
        self.server.initdb(&self.password)?;
        self.server.create_dir(&self.server.socket_dir())?;
        if opts.ssl {
            self.cert_pem = Some(self.write_certificate()?);
        }
        let conf = self.server.data_dir().join("postgresql.conf");
        let mut include = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err(format!("opening {}", conf.display())))?;
        io::Write::write_all(&mut include, b"\ninclude 'pgveil.conf'\n")
            .map_err(io_err(format!("writing {}", conf.display())))?;
        self.start_on_some_port(opts)
    }

    /// Starts the server, retrying with another free port when none was
    /// requested and the chosen one got taken in the meantime.
    fn start_on_some_port(&mut self, opts: &ClusterOptions) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = match opts.port {
                Some(port) => port,
                None => free_port()?,
            };
            let conf = self.settings(opts);
            let path = self.server.data_dir().join("pgveil.conf");
            self.server.write_file(&path, conf.as_bytes(), 0o600)?;
            match self.server.start() {
                Err(err) if opts.port.is_none() && attempt < PORT_ATTEMPTS => {
                    tracing::debug!(%err, "cluster start failed, retrying on another port");
                }
                result => return result,
            }
        }
    }

    fn settings(&self, opts: &ClusterOptions) -> String {
        let mut conf = format!(
            "listen_addresses = '{HOST}'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = {}\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             wal_level = minimal\n\
             max_wal_senders = 0\n\
             max_wal_size = '2GB'\n",
            self.port,
            self.server.socket_dir().display(),
            opts.max_connections,
        );
        if opts.ssl {
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        conf
    }

    /// Writes a self-signed certificate for 127.0.0.1/localhost into the data
    /// directory and returns it as PEM.
    fn write_certificate(&self) -> Result<String> {
        let names = vec![HOST.to_string(), "localhost".to_string()];
        let certified = rcgen::generate_simple_self_signed(names)?;
        let cert_pem = certified.cert.pem();
        let data = self.server.data_dir();
        self.server
            .write_file(&data.join("server.crt"), cert_pem.as_bytes(), 0o644)?;
        let key_pem = certified.key_pair.serialize_pem();
        self.server
            .write_file(&data.join("server.key"), key_pem.as_bytes(), 0o600)?;
        Ok(cert_pem)
    }

    /// The address the server listens on (`127.0.0.1`).
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name (`postgres`).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory holding the server's Unix-domain socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.server.socket_dir()
    }

    /// The directory holding `initdb`, `pg_ctl` and `postgres`.
    pub fn bin_dir(&self) -> &Path {
        &self.server.bin_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.server.data_dir()
    }

    /// The server's self-signed certificate (PEM), when started with `ssl`.
    pub fn server_cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Connection settings for the superuser over TCP, database `postgres`.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname("postgres");
        config
    }

    /// Connects as the superuser to database `db` (without TLS); the
    /// connection is driven by a task on the current tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) = self
            .pg_config()
            .dbname(db)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "test cluster connection ended with an error");
            }
        });
        Ok(client)
    }

    /// Creates database `name`, owned by the superuser.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await?;
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended).
    pub async fn stop_server(&self) -> Result<()> {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.stop("fast")).await?
    }

    /// Starts the stopped server again on the same port.
    pub async fn start_server(&self) -> Result<()> {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.start()).await?
    }

    /// Stops and starts the server; every open session is ended.
    pub async fn restart(&self) -> Result<()> {
        self.stop_server().await?;
        self.start_server().await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the lifeline makes the reaper stop the server and remove the
        // directory; wait so the clean-up is finished when drop returns.
        drop(self.lifeline.take());
        if let Err(err) = self.reaper.wait() {
            tracing::warn!(%err, dir = %self.server.base_dir.display(), "cluster reaper lost");
        }
    }
}
