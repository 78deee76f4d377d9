//! The listener: shared state of all sessions, accepting connections and
//! the routing of users to backend login roles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwapOption;

use crate::admin::{Metrics, Snapshot};
use crate::audit::{self, AuditError, AuditHandle};
use crate::auth::LoginLimiter;
use crate::backend::{BackendConn, BackendError, BackendTarget, Login, Pools};
use crate::config::{Config, ConfigError, TlsConfig};
use crate::control::{self, ControlError, PolicyRuntime};
use crate::protocol::messages::PgError;
use crate::session::{self, CancelRegistry, Route};
use crate::shutdown::Shutdown;

/// The first wait before connecting to PostgreSQL again at startup.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between two startup attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration or secrets.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Backend settings unusable.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Policy, views or the control plane.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The privacy log could not be started.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What every session shares.
pub struct ServerState {
    /// The configuration the server started with.
    pub config: Config,
    /// Backend connection pools.
    pub pools: Pools,
    /// Cancel keys handed to clients.
    pub cancels: CancelRegistry,
    /// TLS for clients, when configured.
    pub tls_acceptor: Option<TlsAcceptor>,
    /// Seed of decoy SCRAM verifiers for unknown users.
    pub decoy_seed: [u8; 32],
    /// Failed-login limits per client address and user name.
    pub logins: LoginLimiter,
    admin_login: Login,
    sessions: AtomicUsize,
    policy: ArcSwapOption<PolicyRuntime>,
    control: Option<deadpool_postgres::Pool>,
    audit: Option<AuditHandle>,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl ServerState {
    /// Builds the shared state from a configuration once PostgreSQL accepts
    /// the administrator's login (waiting for it with backoff); with a
    /// policy, checks that its views are installed.
    pub async fn new(config: Config) -> Result<Self, ServerError> {
        let backend = &config.backend;
        let target = BackendTarget::new(
            backend.host.clone(),
            backend.port,
            backend.database.clone(),
            backend.tls,
            config.timeouts.connect(),
        )?;
        let admin_login = Login {
            user: backend.user.clone(),
            password: config.backend_password()?,
        };
        let tls_acceptor = config.tls.as_ref().map(tls_acceptor).transpose()?;
        wait_for_backend(&target, &admin_login).await;
        let (control, policy) = match config.policy {
            Some(_) => {
                let pool = control::admin_pool(&config)?;
                let runtime = PolicyRuntime::load(&config, &pool).await?;
                (Some(pool), Some(Arc::new(runtime)))
            }
            None => (None, None),
        };
        let audit = start_audit(&config, control.as_ref()).await?;
        if let (Some(audit), Some(runtime)) = (&audit, &policy) {
            audit.set_catalog(runtime.audit_catalog.clone());
        }
        Ok(ServerState {
            audit,
            policy: ArcSwapOption::new(policy),
            control,
            pools: Pools::new(target, config.pool.max_size, config.timeouts.connect()),
            cancels: CancelRegistry::default(),
            tls_acceptor,
            decoy_seed: rand::random(),
            logins: LoginLimiter::new(&config.auth),
            admin_login,
            sessions: AtomicUsize::new(0),
            config,
            metrics: Metrics::default(),
            shutdown: Shutdown::default(),
        })
    }

    /// The live metrics sessions update.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The graceful-shutdown state sessions watch.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The values `/metrics` reads at scrape time.
    pub fn metrics_snapshot(&self) -> Snapshot {
        Snapshot {
            connections: self.sessions.load(Ordering::Acquire),
            cache: self
                .policy
                .load()
                .as_ref()
                .map(|runtime| runtime.rewriter.cache_stats()),
            pools: self.pools.status(),
        }
    }

    /// Why new sessions are refused right now, if they are.
    pub fn refusing_sessions(&self) -> Option<String> {
        if self.shutdown.is_draining() {
            return Some("shutting down: new sessions are refused".into());
        }
        let open = self.sessions.load(Ordering::Acquire);
        (open > self.config.max_sessions)
            .then(|| format!("max_sessions reached: {open} sessions open"))
    }

    /// Logs in to PostgreSQL as the administrator on a new connection.
    pub async fn probe_backend(&self) -> Result<(), BackendError> {
        BackendConn::connect(self.pools.target(), &self.admin_login)
            .await
            .map(drop)
    }

    /// The privacy log, when `[audit]` is configured.
    pub fn audit(&self) -> Option<&AuditHandle> {
        self.audit.as_ref()
    }

    /// Decides the backend role and rewriting for a user.
    pub fn route(&self, user: &str, requested_view: Option<&str>) -> Result<Route, PgError> {
        let Some(runtime) = self.policy.load_full() else {
            return self.passthrough_route(user, requested_view);
        };
        let grant = runtime
            .policy
            .resolve_session(user, requested_view)
            .map_err(|e| {
                PgError::fatal("28000", e.to_string())
                    .with_hint("ask the privacy officer which view sets your role may use")
            })?;
        let login = match &grant.login_role {
            Some(role) => Login {
                user: role.clone(),
                password: crate::views::login_password(&runtime.secret, role),
            },
            None => self.admin_login.clone(),
        };
        let target = control::target_for(&grant);
        Ok(Route {
            user: user.to_owned(),
            pool_mode: self.config.pool.mode_for(&grant.view_set),
            auto_prepare: self.config.pool.auto_prepare,
            purpose: grant.purpose,
            view_set: grant.view_set,
            login,
            privileged: target.admin,
            rewriter: Some((runtime.rewriter.clone(), target)),
        })
    }

    fn passthrough_route(
        &self,
        user: &str,
        requested_view: Option<&str>,
    ) -> Result<Route, PgError> {
        if let Some(view) = requested_view {
            return Err(PgError::fatal(
                "42501",
                format!("view set \"{view}\" is not available: pgveil runs without a policy"),
            )
            .with_hint("remove pgveil.view from the connection options"));
        }
        Ok(Route {
            user: user.to_owned(),
            pool_mode: self.config.pool.mode_for("passthrough"),
            auto_prepare: self.config.pool.auto_prepare,
            purpose: None,
            view_set: "passthrough".to_owned(),
            login: self.admin_login.clone(),
            privileged: true,
            rewriter: None,
        })
    }

    /// Loads the policy again (on SIGHUP) and swaps it in atomically; on any
    /// error the running policy stays in force. Open sessions keep the route
    /// they started with.
    pub async fn reload_policy(&self) -> Result<(), ServerError> {
        let Some(pool) = &self.control else {
            return Ok(());
        };
        let config = Config::load(&self.config.source)?;
        let runtime = PolicyRuntime::load(&config, pool).await?;
        if let Some(audit) = &self.audit {
            audit.set_catalog(runtime.audit_catalog.clone());
        }
        self.policy.store(Some(Arc::new(runtime)));
        Ok(())
    }

    /// Refuses a session when `max_sessions` are already open or the server
    /// is shutting down.
    pub fn check_capacity(&self) -> Result<(), PgError> {
        if self.shutdown.is_draining() {
            return Err(crate::shutdown::admin_shutdown()
                .with_hint("pgveil is shutting down; connect again once it is back"));
        }
        if self.sessions.load(Ordering::Acquire) > self.config.max_sessions {
            return Err(PgError::fatal("53300", "sorry, too many clients already")
                .with_hint("raise max_sessions in pgveil.toml or close idle sessions"));
        }
        Ok(())
    }
}

/// Waits until PostgreSQL answers the administrator's login, retrying
/// unreachable or starting servers with growing pauses and a log line per
/// attempt. Other failures (a wrong password, TLS refused) are logged and
/// not waited for: sessions will get the same error.
async fn wait_for_backend(target: &BackendTarget, login: &Login) {
    let mut delay = FIRST_RETRY;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match BackendConn::connect(target, login).await {
            Ok(_) => {
                if attempt > 1 {
                    tracing::info!(attempt, "PostgreSQL answers");
                }
                return;
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(
                    attempt,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %e,
                    "PostgreSQL at {}:{} is not reachable yet; retrying",
                    target.host,
                    target.port
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL refuses the administrator's login; sessions will fail until this is fixed");
                return;
            }
        }
    }
}

/// Failures that go away when PostgreSQL comes up: no connection, a
/// timeout, a dropped connection, "the database system is starting up".
fn is_transient(e: &BackendError) -> bool {
    match e {
        BackendError::Connect { .. } | BackendError::Timeout(_) | BackendError::Io(_) => true,
        BackendError::Server(error) => error.code == "57P03",
        _ => false,
    }
}

/// Raises this process's soft limit of open files to its hard limit (every
/// session holds two sockets); false when that failed.
pub fn raise_open_file_limit() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    }
}

/// Starts the privacy log writer when `[audit]` is configured; the table
/// sink uses the control-plane pool (or a new one without a policy).
async fn start_audit(
    config: &Config,
    control: Option<&deadpool_postgres::Pool>,
) -> Result<Option<AuditHandle>, ServerError> {
    let Some(audit_config) = &config.audit else {
        return Ok(None);
    };
    let pool = match (audit_config.table, control) {
        (false, _) => None,
        (true, Some(pool)) => Some(pool.clone()),
        (true, None) => Some(control::admin_pool(config)?),
    };
    let (handle, _writer) = audit::start(audit_config.clone(), pool).await?;
    Ok(Some(handle))
}

fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, ServerError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(&tls.cert)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(&tls.key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key found", tls.key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<ServerState>,
}

impl Server {
    /// Validates the configuration, waits for PostgreSQL, and binds the
    /// listen address (and the admin address, when configured).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let admin_addr = config.admin.as_ref().map(|admin| admin.listen);
        let state = Arc::new(ServerState::new(config).await?);
        let listener = bind(addr).await?;
        let admin = match admin_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Server {
            listener,
            admin,
            state,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin endpoint's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The state shared by this server's sessions.
    pub fn state(&self) -> Arc<ServerState> {
        self.state.clone()
    }

    /// Accepts connections until `shutdown` completes, then drains the
    /// open sessions (see [`crate::shutdown`]) and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server {
            listener,
            admin,
            state,
        } = self;
        let admin = admin.map(|l| tokio::spawn(crate::admin::serve(l, state.clone())));
        accept_until(&listener, &state, shutdown).await;
        drop(listener);
        let open = || state.sessions.load(Ordering::Acquire);
        state
            .shutdown
            .drain(open, state.config.timeouts.shutdown())
            .await;
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

async fn accept_until(
    listener: &TcpListener,
    state: &Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => spawn_session(state, tcp, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

fn spawn_session(state: &Arc<ServerState>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let state = state.clone();
    state.sessions.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        session::run(state.clone(), tcp, peer).await;
        state.sessions.fetch_sub(1, Ordering::AcqRel);
    });
}
