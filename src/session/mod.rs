//! One client session: startup and authentication, choice of route and
//! backend connection, the two pumps, and the return of the backend
//! connection to its pool.

mod audit;
mod cancel;
mod handshake;
mod pump;
mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::Instrument;

pub use cancel::CancelRegistry;
pub use route::Route;

use crate::admin::SessionMetrics;
use crate::audit::{new_session_id, AuditEvent, SessionInfo};
use crate::backend::{BackendError, PooledConn, Pools};
use crate::protocol::messages::{self, PgError};
use crate::protocol::startup::{parse_options, Startup};
use crate::protocol::stream::Stream;
use crate::protocol::ProtocolError;
use crate::server::ServerState;
use audit::StatementLog;
use handshake::Opening;
use pump::{BackendEnd, Client, ClientEnd, Tracker};

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
            SessionError::Client(e) | SessionError::AuthFailed(e) => Some(e.clone()),
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
    let (mut stream, route, mut conn, application_name) = match started {
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
    let client_key = state.cancels.register(conn.cancel_key.clone());
    let log = state.audit().map(|handle| {
        StatementLog::new(
            handle.clone(),
            Arc::new(session_info(&route, peer, application_name, session_id)),
        )
    });
    let session = Session {
        route: &route,
        log: log.as_ref(),
        client_key,
        metrics: Arc::new(state.metrics().session(&route.view_set)),
    };
    let reusable = run_pumps(&state, &mut stream, &session, &mut conn).await;
    tracing::info!(
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
        "session ended"
    );
    state.cancels.unregister(client_key);
    if !reusable && !conn.broken {
        crate::backend::send_cancel(&conn.cancel_key).await;
    }
    Pools::release(conn, reusable).await;
}

/// A started session: its stream, route, backend connection and the
/// client's `application_name`.
type Started = (Stream, Route, PooledConn, Option<String>);

/// A failed start: the stream (when there is one) so the error can be
/// reported, and the user name tried (when known).
type Failed = (Option<Stream>, Option<String>, SessionError);

/// Everything before the pumps.
async fn start(state: &ServerState, tcp: TcpStream) -> Result<Option<Started>, Failed> {
    let (mut stream, startup) = match handshake::open(state, tcp).await {
        Ok(Opening::Session(stream, startup)) => (stream, startup),
        Ok(Opening::Cancelled) => return Ok(None),
        Err(e) => return Err((None, None, e)),
    };
    let application_name = startup.param("application_name").map(str::to_owned);
    match establish(state, &mut stream, &startup).await {
        Ok((route, conn)) => Ok(Some((stream, route, conn, application_name))),
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
) -> Result<(Route, PooledConn), SessionError> {
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
    let mut conn = acquire(state, &route, &settings).await?;
    let mut out = BytesMut::new();
    for (name, value) in &conn.params {
        messages::parameter_status(name, value, &mut out);
    }
    conn.status = b'I';
    stream.write_all(&out).await?;
    Ok((route, conn))
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
/// settings; a pooled connection that turns out dead is replaced.
async fn acquire(
    state: &ServerState,
    route: &Route,
    settings: &[(String, String)],
) -> Result<PooledConn, SessionError> {
    let apply = settings_sql(settings);
    let mut last_error = None;
    for _ in 0..3 {
        let mut conn = state.pools.get(&route.login).await?;
        match conn.execute(&apply).await {
            Ok(()) => return Ok(conn),
            Err(BackendError::Server(e)) => {
                Pools::release(conn, true).await;
                return Err(SessionError::Client(PgError {
                    severity: messages::Severity::Fatal,
                    ..e
                }));
            }
            Err(e) => {
                conn.broken = true;
                Pools::release(conn, false).await;
                last_error = Some(e);
            }
        }
    }
    Err(last_error.map_or_else(
        || SessionError::Silent("no backend connection".into()),
        SessionError::Backend,
    ))
}

/// One statement applying all client settings (also proves the connection alive).
fn settings_sql(settings: &[(String, String)]) -> String {
    let calls: Vec<String> = settings
        .iter()
        .filter(|(name, _)| !name.starts_with("pgveil."))
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            )
        })
        .collect();
    if calls.is_empty() {
        "SELECT 1".to_owned()
    } else {
        format!("SELECT {}", calls.join(", "))
    }
}

/// An escape-string literal, safe whatever standard_conforming_strings is.
fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
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

/// What the pumps of one session share.
struct Session<'a> {
    route: &'a Route,
    log: Option<&'a StatementLog>,
    client_key: (i32, i32),
    metrics: Arc<SessionMetrics>,
}

/// Sends the end of startup, runs both pumps, and says whether the backend
/// connection is clean enough to pool again.
async fn run_pumps(
    state: &ServerState,
    stream: &mut Stream,
    session: &Session<'_>,
    conn: &mut PooledConn,
) -> bool {
    let client_key = session.client_key;
    let mut out = BytesMut::new();
    messages::backend_key_data(client_key.0, client_key.1, &mut out);
    messages::ready_for_query_idle(&mut out);
    if stream.write_all(&out).await.is_err() {
        return true;
    }
    let tracker = Tracker::new(session.metrics.clone());
    let (fatal_tx, fatal_rx) = oneshot::channel();
    let conn = &mut **conn;
    let (mut client_rd, mut client_wr) = stream.split();
    let (mut backend_rd, mut backend_wr) = conn.stream.split();
    let config = &state.config;
    let client = Client {
        route: session.route,
        tracker: &tracker,
        log: session.log,
    };
    let c2b = pump::client_to_backend(
        &mut client_rd,
        &mut backend_wr,
        &client,
        config.max_message_bytes,
        config.timeouts.idle(),
    );
    let b2c = pump::backend_to_client(
        &mut backend_rd,
        &mut client_wr,
        &tracker,
        session.log,
        &mut conn.status,
        &mut conn.params,
        fatal_rx,
    );
    let leave = state.shutdown().session_must_end(|| tracker.idle());
    tokio::pin!(c2b, b2c, leave);
    let (client_end, backend_end) = tokio::select! {
        end = &mut c2b => {
            match end {
                Ok(end) => (Some(end), None),
                Err(e) => {
                    if let Some(error) = e.client_error() {
                        let _ = fatal_tx.send(error);
                        (None, Some(b2c.await))
                    } else {
                        (None, None)
                    }
                }
            }
        }
        end = &mut b2c => (None, Some(end)),
        error = &mut leave => {
            tracing::info!("ending the session: pgveil is shutting down");
            let _ = fatal_tx.send(error);
            (None, Some(b2c.await))
        }
    };
    match backend_end {
        Some(BackendEnd::BackendGone) => {
            tracing::warn!("backend error: the connection to PostgreSQL was lost");
            conn.broken = true;
            false
        }
        _ => {
            matches!(client_end, Some(ClientEnd::Terminated | ClientEnd::Closed))
                && tracker.caught_up()
        }
    }
}
