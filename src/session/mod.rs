//! One client session: startup and authentication, choice of route and
//! backend connection, the relay, and the return of the backend
//! connection to its pool.

mod audit;
mod cancel;
mod handshake;
mod relay;
mod replies;
mod route;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

pub use cancel::{CancelRegistry, CancelSlot};
pub use relay::End;
pub use route::Route;

use crate::audit::{new_session_id, AuditEvent, SessionInfo};
use crate::backend::memory::Settings;
use crate::backend::{BackendError, PooledConn};
use crate::config::PoolMode;
use crate::protocol::messages::{self, PgError};
use crate::protocol::startup::{parse_options, Startup};
use crate::protocol::stream::Stream;
use crate::protocol::ProtocolError;
use crate::server::ServerState;
use audit::StatementLog;
use handshake::Opening;
use relay::{Relay, Shared};

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// An error to send to the client as it is (FATAL).
    #[error("{}", .0.message)]
    Client(PgError),
    /// Authentication failed.
    #[error("{}", .0.message)]
    AuthFailed(PgError),
    /// PostgreSQL could not serve the session.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend connection of a running session failed (FATAL 08006).
    #[error("{}", .0.message)]
    BackendLost(PgError),
    /// The connection failed; nobody to tell.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// Something to log but not to tell the client (e.g. a failed TLS handshake).
    #[error("{0}")]
    Silent(String),
}

impl From<ProtocolError> for SessionError {
    fn from(e: ProtocolError) -> Self {
        SessionError::from_client_protocol(e)
    }
}

impl SessionError {
    /// A protocol violation by the client ends its session with FATAL.
    pub fn from_client_protocol(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Io(io) => SessionError::Silent(io.to_string()),
            other => SessionError::Client(PgError::fatal(other.sqlstate(), other.to_string())),
        }
    }

    /// The FATAL error the client should see, if any.
    fn client_error(&self) -> Option<PgError> {
        match self {
            SessionError::Client(e)
            | SessionError::AuthFailed(e)
            | SessionError::BackendLost(e) => Some(e.clone()),
            SessionError::Backend(e) => Some(e.to_client_error()),
            SessionError::Io(_) | SessionError::Silent(_) => None,
        }
    }

    /// Why the session was refused, as a metrics label.
    fn refusal_reason(&self) -> &'static str {
        match self {
            SessionError::AuthFailed(_) => "auth_failed",
            SessionError::Backend(BackendError::PoolExhausted) => "pool_exhausted",
            SessionError::Backend(_) => "backend_unavailable",
            SessionError::Client(e) => match e.code.as_str() {
                "53300" => "too_many_sessions",
                "57P01" => "shutting_down",
                "3D000" => "unknown_database",
                "28000" | "42501" => "not_allowed",
                _ => "bad_request",
            },
            SessionError::Io(_) | SessionError::Silent(_) => "connection_lost",
            SessionError::BackendLost(_) => "backend_unavailable",
        }
    }
}

/// Runs one client connection to its end, inside a `session` tracing span
/// (session_id, peer, and once known user and view_set).
pub async fn run(state: Arc<ServerState>, tcp: TcpStream, peer: SocketAddr) {
    let session_id = new_session_id();
    let span = tracing::info_span!(
        "session",
        session_id = %session_id,
        %peer,
        user = tracing::field::Empty,
        view_set = tracing::field::Empty,
    );
    serve(state, tcp, peer, session_id).instrument(span).await
}

async fn serve(state: Arc<ServerState>, tcp: TcpStream, peer: SocketAddr, session_id: String) {
    let _ = tcp.set_nodelay(true);
    let startup_limit = state.config.timeouts.startup();
    let started = tokio::time::timeout(startup_limit, start(&state, tcp)).await;
    let Started {
        stream,
        route,
        conn,
        settings,
        application_name,
    } = match started {
        Ok(Ok(Some(ready))) => ready,
        Ok(Ok(None)) => return,
        Ok(Err((stream, user, e))) => {
            count_refusal(&state, &e);
            log_login_failure(&state, user, &e, peer, &session_id);
            return report_startup_failure(stream, e, peer).await;
        }
        Err(_) => {
            state.metrics().session_refused("startup_timeout");
            tracing::info!("startup timed out");
            return;
        }
    };
    tracing::info!("session started");
    let opened = Instant::now();
    let (client_key, cancel) = state.cancels.register();
    let log = state.audit().map(|handle| {
        StatementLog::new(
            handle.clone(),
            Arc::new(session_info(&route, peer, application_name, session_id)),
        )
    });
    let conn = match route.pool_mode {
        PoolMode::Session => Some(conn),
        PoolMode::Transaction => {
            // back to the pool as it is: it has this client's settings
            drop(conn);
            None
        }
    };
    let shared = Shared {
        pools: &state.pools,
        route: &route,
        log: log.as_ref(),
        cancel: &cancel,
        metrics: state.metrics().session(&route.view_set),
        shutdown: state.shutdown(),
        max_message_bytes: state.config.max_message_bytes,
        idle_timeout: state.config.timeouts.idle(),
    };
    let mut greeting = BytesMut::new();
    messages::backend_key_data(client_key.0, client_key.1, &mut greeting);
    messages::ready_for_query_idle(&mut greeting);
    let (end, conn, clean) = Relay::new(shared, stream, conn, settings)
        .run(&greeting)
        .await;
    tracing::info!(
        ?end,
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
        "session ended"
    );
    state.cancels.unregister(client_key);
    if let Some(conn) = conn {
        if !clean && !conn.broken {
            crate::backend::send_cancel(&conn.cancel_key).await;
        }
        state.pools.release(conn, clean).await;
    }
}

/// A started session.
struct Started {
    stream: Stream,
    route: Route,
    /// The connection the client's settings were checked on.
    conn: PooledConn,
    settings: Arc<Settings>,
    application_name: Option<String>,
}

/// A failed start: the stream (when there is one) so the error can be
/// reported, and the user name tried (when known).
type Failed = (Option<Stream>, Option<String>, SessionError);

/// Everything before the relay.
async fn start(state: &ServerState, tcp: TcpStream) -> Result<Option<Started>, Failed> {
    let (mut stream, startup) = match handshake::open(state, tcp).await {
        Ok(Opening::Session(stream, startup)) => (stream, startup),
        Ok(Opening::Cancelled) => return Ok(None),
        Err(e) => return Err((None, None, e)),
    };
    let application_name = startup.param("application_name").map(str::to_owned);
    match establish(state, &mut stream, &startup).await {
        Ok((route, conn, settings)) => Ok(Some(Started {
            stream,
            route,
            conn,
            settings,
            application_name,
        })),
        Err(e) => {
            let user = startup.param("user").map(str::to_owned);
            Err((Some(stream), user, e))
        }
    }
}

/// Counts a connection that ended before its session started.
fn count_refusal(state: &ServerState, error: &SessionError) {
    state.metrics().session_refused(error.refusal_reason());
    if matches!(error, SessionError::AuthFailed(_)) {
        state.metrics().login_failed();
    }
}

/// The facts every privacy-log record of this session repeats.
fn session_info(
    route: &Route,
    peer: SocketAddr,
    application_name: Option<String>,
    session_id: String,
) -> SessionInfo {
    SessionInfo {
        session_id,
        user: route.user.clone(),
        role: Some(route.login.user.clone()),
        view_set: Some(route.view_set.clone()),
        purpose: route.purpose.clone(),
        client_addr: Some(peer),
        application_name,
    }
}

/// Records a failed authentication in the privacy log, if there is one.
fn log_login_failure(
    state: &ServerState,
    user: Option<String>,
    error: &SessionError,
    peer: SocketAddr,
    session_id: &str,
) {
    let (Some(handle), SessionError::AuthFailed(pg_error)) = (state.audit(), error) else {
        return;
    };
    let session = SessionInfo {
        session_id: session_id.to_owned(),
        user: user.unwrap_or_default(),
        client_addr: Some(peer),
        ..SessionInfo::default()
    };
    let event = AuditEvent::login_failed(Arc::new(session), &pg_error.message, &pg_error.code);
    // A failed login is refused whether or not its record can be written.
    let _ = handle.record(event);
}

async fn establish(
    state: &ServerState,
    stream: &mut Stream,
    startup: &Startup,
) -> Result<(Route, PooledConn, Arc<Settings>), SessionError> {
    negotiate_protocol(stream, startup).await?;
    state.check_capacity().map_err(SessionError::Client)?;
    let user = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            SessionError::Client(PgError::fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ))
        })?;
    tracing::Span::current().record("user", user);
    check_database(state, startup.param("database").unwrap_or(user))?;
    if startup
        .param("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(SessionError::Client(PgError::fatal(
            "0A000",
            "pgveil does not proxy replication connections",
        )));
    }
    let settings = client_settings(startup)?;
    handshake::authenticate(state, stream, user).await?;
    let requested_view = settings
        .iter()
        .find(|(k, _)| k == "pgveil.view")
        .map(|(_, v)| v.as_str());
    let route = state
        .route(user, requested_view)
        .map_err(SessionError::Client)?;
    tracing::Span::current().record("view_set", route.view_set.as_str());
    check_settings(&route, &settings)?;
    let settings = Arc::new(Settings {
        startup: settings
            .into_iter()
            .filter(|(name, _)| !name.starts_with("pgveil."))
            .collect(),
        carried: Vec::new(),
    });
    let mut conn = acquire(state, &route, &settings).await?;
    let mut out = BytesMut::new();
    for (name, value) in &conn.params {
        messages::parameter_status(name, value, &mut out);
    }
    conn.status = b'I';
    stream.write_all(&out).await?;
    Ok((route, conn, settings))
}

/// Answers a request for a newer protocol minor version or `_pq_` options
/// with NegotiateProtocolVersion, as PostgreSQL does.
async fn negotiate_protocol(stream: &mut Stream, startup: &Startup) -> Result<(), SessionError> {
    let unrecognized: Vec<String> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if startup.minor_version > 0 || !unrecognized.is_empty() {
        let mut out = BytesMut::new();
        messages::negotiate_protocol_version(&unrecognized, &mut out);
        stream.write_all(&out).await?;
    }
    Ok(())
}

fn check_database(state: &ServerState, database: &str) -> Result<(), SessionError> {
    let expected = &state.config.backend.database;
    if database == expected {
        return Ok(());
    }
    Err(SessionError::Client(
        PgError::fatal("3D000", format!("database \"{database}\" does not exist")).with_hint(
            format!("pgveil serves the database \"{expected}\"; connect with dbname={expected}"),
        ),
    ))
}

/// The settings a client asked for in its startup packet, `options`
/// expanded, in the order given.
fn client_settings(startup: &Startup) -> Result<Vec<(String, String)>, SessionError> {
    let mut settings = Vec::new();
    for (name, value) in &startup.params {
        match name.as_str() {
            "user" | "database" | "replication" => {}
            n if n.starts_with("_pq_.") => {}
            "options" => settings.extend(parse_options(value).map_err(|e| {
                SessionError::Client(PgError::fatal(
                    "22023",
                    format!("invalid startup options: {e}"),
                ))
            })?),
            _ => settings.push((name.clone(), value.clone())),
        }
    }
    Ok(settings)
}

/// Refuses startup settings that would change identity, name resolution or
/// the encoding pgveil parses in.
fn check_settings(route: &Route, settings: &[(String, String)]) -> Result<(), SessionError> {
    for (name, value) in settings {
        let lower = name.to_ascii_lowercase();
        let refused = match lower.as_str() {
            "client_encoding" => !is_utf8_compatible(value),
            "pgveil.view" => false,
            n if n.starts_with("pgveil.") => true,
            "role" | "session_authorization" | "search_path" | "standard_conforming_strings" => {
                !route.privileged
            }
            _ => false,
        };
        if refused {
            return Err(SessionError::Client(
                PgError::fatal(
                    "42501",
                    format!(
                        "pgveil does not allow setting \"{name}\" to \"{value}\" at connect time"
                    ),
                )
                .with_hint(if lower == "client_encoding" {
                    "use client_encoding UTF8 (PGCLIENTENCODING=UTF8)"
                } else {
                    "remove the setting from the connection options"
                }),
            ));
        }
    }
    Ok(())
}

/// UTF8 and SQL_ASCII (bytes passed as they are) can be parsed safely.
fn is_utf8_compatible(encoding: &str) -> bool {
    let normalized: String = encoding
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(normalized.as_str(), "utf8" | "unicode" | "sqlascii")
}

/// Takes a backend connection for the route and applies the client's
/// settings (which checks them); a pooled connection that turns out dead
/// is replaced.
async fn acquire(
    state: &ServerState,
    route: &Route,
    settings: &Arc<Settings>,
) -> Result<PooledConn, SessionError> {
    let apply = settings.apply_sql();
    let mut last_error = None;
    for _ in 0..3 {
        let mut conn = state.pools.get(&route.login).await?;
        conn.memory.settings = None;
        match conn.execute(&apply).await {
            Ok(()) => {
                conn.memory.settings = Some(settings.clone());
                conn.memory.unnamed = None;
                return Ok(conn);
            }
            Err(BackendError::Server(e)) => {
                state.pools.release(conn, true).await;
                return Err(SessionError::Client(PgError {
                    severity: messages::Severity::Fatal,
                    ..e
                }));
            }
            Err(e) => {
                conn.broken = true;
                state.pools.release(conn, false).await;
                last_error = Some(e);
            }
        }
    }
    Err(last_error.map_or_else(
        || SessionError::Silent("no backend connection".into()),
        SessionError::Backend,
    ))
}

async fn report_startup_failure(stream: Option<Stream>, error: SessionError, peer: SocketAddr) {
    match &error {
        SessionError::AuthFailed(_) => tracing::warn!(%peer, "{error}"),
        SessionError::Io(_) | SessionError::Silent(_) => tracing::debug!(%peer, "{error}"),
        SessionError::Backend(e) => tracing::warn!(error = %e, "session refused: backend error"),
        _ => tracing::info!(%peer, "session refused: {error}"),
    }
    if let (Some(mut stream), Some(pg_error)) = (stream, error.client_error()) {
        let mut out = BytesMut::new();
        pg_error.encode(&mut out);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    }
}
