//! A pgveil server running in this test process, in front of the shared
//! test cluster. Each call starts a new server on a free port with its own
//! runtime thread; it lives until the test process ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pgveil::config::{Config, PoolMode};
use pgveil::server::{Server, ServerState};

/// The password of every proxy user the fixture creates.
pub const USER_PASSWORD: &str = "veil-test-pw";

/// A running proxy and how to reach it.
pub struct Proxy {
    /// The password of its users.
    pub password: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The database it serves.
    pub database: String,
    /// Proxy users (all with [`USER_PASSWORD`]).
    pub users: Vec<String>,
    /// Directory holding its configuration and secrets.
    pub dir: PathBuf,
    /// The server's shared state (e.g. to flush its privacy log).
    pub state: Arc<ServerState>,
    /// Where its admin endpoint listens, when `[admin]` is configured.
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    /// A libpq connection string for a proxy user.
    pub fn dsn(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} password={} dbname={} sslmode=disable",
            self.addr.ip(),
            self.addr.port(),
            self.password,
            self.database
        )
    }

    /// A tokio-postgres configuration for a proxy user.
    pub fn pg_config(&self, user: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(user)
            .password(&self.password)
            .dbname(&self.database);
        config
    }

    /// Connects with tokio-postgres as a proxy user.
    pub async fn connect(
        &self,
        user: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.pg_config(user).connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// Options for [`start`].
#[derive(Default)]
pub struct ProxyOptions {
    /// Extra top-level TOML lines (before any table).
    pub top: String,
    /// Extra lines inside `[backend]`.
    pub backend: String,
    /// Extra TOML tables appended at the end.
    pub tables: String,
    /// The cluster to front (default: the shared one).
    pub cluster: Option<&'static pgveil::cluster::Cluster>,
}

/// Starts a proxy for `database` with users `users`.
pub fn start(database: &str, users: &[&str], options: ProxyOptions) -> Proxy {
    start_with_backend_tls(database, users, options, "disable")
}

/// Like [`start`], with `backend.tls` set to `tls`.
pub fn start_with_backend_tls(
    database: &str,
    users: &[&str],
    options: ProxyOptions,
    tls: &str,
) -> Proxy {
    let path = write_config(database, users, &options, tls);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let (addr, admin, state) = serve(config);
    Proxy {
        state,
        admin,
        password: USER_PASSWORD.to_owned(),
        addr,
        database: database.to_owned(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
        dir: path.parent().expect("config dir").to_owned(),
    }
}

/// Writes `pgveil.toml` (listening on a free port) and the backend password
/// into a new directory, for a proxy in front of `database` with users
/// `users` (all with [`USER_PASSWORD`]); returns the configuration's path.
pub fn write_config(database: &str, users: &[&str], options: &ProxyOptions, tls: &str) -> PathBuf {
    let cluster = options.cluster.unwrap_or_else(super::cluster);
    let dir = tempfile::tempdir().expect("temp dir").keep();
    std::fs::write(dir.join("backend.pw"), cluster.password()).expect("write password");
    let mut toml = format!("listen = \"127.0.0.1:0\"\n{}\n", options.top);
    toml.push_str(&format!(
        "[backend]\nhost = \"{}\"\nport = {}\ndatabase = \"{database}\"\nuser = \"{}\"\npassword_file = \"backend.pw\"\ntls = \"{tls}\"\n{}\n",
        cluster.host(),
        cluster.port(),
        cluster.superuser(),
        options.backend
    ));
    toml.push_str(&options.tables);
    for user in users {
        let verifier = postgres_protocol::password::scram_sha_256(USER_PASSWORD.as_bytes());
        toml.push_str(&format!(
            "\n[[users]]\nname = \"{user}\"\nscram = \"{verifier}\"\n"
        ));
    }
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, &toml).expect("write config");
    path
}

/// A proxy in front of a fresh database holding the example CRM
/// (`customers` generated customers, seed 42) with the example policy
/// applied; its users are the policy's, with the demo password.
pub async fn start_crm(prefix: &str, customers: u64) -> Proxy {
    start_crm_with(prefix, customers, None).await
}

/// Like [`start_crm`], with this `[audit]` configuration.
pub async fn start_crm_with(
    prefix: &str,
    customers: u64,
    audit: Option<pgveil::audit::AuditConfig>,
) -> Proxy {
    start_crm_configured(prefix, customers, |config| config.audit = audit).await
}

/// Like [`start_crm`], writing the demo's privacy log
/// (`pgveil::demo::AUDIT_FILE` in [`Proxy::dir`]) as its `pgveil.toml` says,
/// so the command line (`pgveil subject`, `pgveil report`) can share it.
pub async fn start_crm_logged(prefix: &str, customers: u64) -> Proxy {
    start_crm_configured(prefix, customers, |_| {}).await
}

/// Like [`start_crm`], with the configuration changed by `configure`.
pub async fn start_crm_configured(
    prefix: &str,
    customers: u64,
    configure: impl FnOnce(&mut Config),
) -> Proxy {
    let database = super::fresh_database(prefix).await;
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let setup = pgveil::demo::Setup {
        listen: "127.0.0.1:0".parse().expect("addr"),
        customers,
        policy: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies"
        ))),
    };
    let config = pgveil::demo::prepare(super::cluster(), &database, &dir, &setup)
        .await
        .unwrap_or_else(|e| panic!("cannot prepare the CRM: {e}"));
    let mut config = config;
    configure(&mut config);
    let users = config.users.iter().map(|u| u.name.clone()).collect();
    let (addr, admin, state) = serve(config);
    Proxy {
        state,
        admin,
        password: pgveil::demo::DEMO_PASSWORD.to_owned(),
        addr,
        database,
        users,
        dir,
    }
}

/// The pool mode the suite runs in: `PGVEIL_TEST_POOL_MODE=transaction`
/// runs every proxy test under transaction pooling (`scripts/test.sh` runs
/// the suite in both modes). A test's `[pool.view_sets]` entries still win.
pub fn suite_pool_mode() -> PoolMode {
    match std::env::var("PGVEIL_TEST_POOL_MODE").as_deref() {
        Ok("transaction") => PoolMode::Transaction,
        Ok("session") | Err(_) => PoolMode::Session,
        Ok(other) => panic!("PGVEIL_TEST_POOL_MODE={other}: use session or transaction"),
    }
}

/// Runs a server for `config` on its own runtime thread; returns its
/// address, its admin endpoint's address and its state.
fn serve(mut config: Config) -> (SocketAddr, Option<SocketAddr>, Arc<ServerState>) {
    config.pool.mode = suite_pool_mode();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let server = Server::bind(config).await.expect("bind proxy");
            let addr = server.local_addr().expect("local addr");
            tx.send((addr, server.admin_addr(), server.state()))
                .expect("send addr");
            server.run(std::future::pending()).await;
        });
    });
    rx.recv().expect("proxy started")
}

/// The CRM proxy shared by all tests of one test binary: started once (on a
/// throwaway runtime thread, so it outlives the per-test runtimes of
/// `#[tokio::test]`) with `customers` generated customers.
pub fn shared_crm(prefix: &'static str, customers: u64) -> &'static Proxy {
    static PROXY: std::sync::OnceLock<Proxy> = std::sync::OnceLock::new();
    PROXY.get_or_init(|| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(start_crm(prefix, customers))
        })
        .join()
        .expect("CRM proxy setup panicked")
    })
}
