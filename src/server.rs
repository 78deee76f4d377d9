//! The listener: shared state of all sessions, accepting connections and
//! the routing of users to backend login roles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwapOption;

use crate::audit::{self, AuditError, AuditHandle};
use crate::backend::{BackendError, BackendTarget, Login, Pools};
use crate::config::{Config, ConfigError, TlsConfig};
use crate::control::{self, ControlError, PolicyRuntime};
use crate::protocol::messages::PgError;
use crate::session::{self, CancelRegistry, Route};

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
    admin_login: Login,
    sessions: AtomicUsize,
    policy: ArcSwapOption<PolicyRuntime>,
    control: Option<deadpool_postgres::Pool>,
    audit: Option<AuditHandle>,
}

impl ServerState {
    /// Builds the shared state from a configuration; with a policy, checks
    /// that its views are installed.
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
            admin_login,
            sessions: AtomicUsize::new(0),
            config,
        })
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

    /// Refuses a session when `max_sessions` are already open.
    pub fn check_capacity(&self) -> Result<(), PgError> {
        if self.sessions.load(Ordering::Acquire) > self.config.max_sessions {
            return Err(PgError::fatal("53300", "sorry, too many clients already")
                .with_hint("raise max_sessions in pgveil.toml or close idle sessions"));
        }
        Ok(())
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
    state: Arc<ServerState>,
}

impl Server {
    /// Validates the configuration and binds the listen address.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let state = Arc::new(ServerState::new(config).await?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server { listener, state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state shared by this server's sessions.
    pub fn state(&self) -> Arc<ServerState> {
        self.state.clone()
    }

    /// Accepts connections until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => self.spawn_session(tcp, peer),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => return,
            }
        }
    }

    fn spawn_session(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let state = self.state.clone();
        state.sessions.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            session::run(state.clone(), tcp, peer).await;
            state.sessions.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
