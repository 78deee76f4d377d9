//! Session start: TLS or not, the startup packet, and SCRAM-SHA-256
//! authentication of the client against the proxy's own user list.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ServerState, SessionError};
use crate::auth::Refused;
use crate::protocol::messages::{self, PgError};
use crate::protocol::scram::{split_sasl_initial, Exchange, ScramError, Verifier};
use crate::protocol::startup::{read_startup_packet, Startup, StartupPacket, MAX_STARTUP_LEN};
use crate::protocol::stream::Stream;
use crate::protocol::ProtocolError;

/// What the opening of a connection asked for.
pub enum Opening {
    /// A session to run, with its (possibly TLS) stream.
    Session(Stream, Startup),
    /// A cancel request, already handled; close the connection.
    Cancelled,
}

/// Reads packets until a StartupMessage, answering TLS and GSSAPI requests
/// and forwarding cancel requests.
pub async fn open(state: &ServerState, tcp: TcpStream) -> Result<Opening, SessionError> {
    let mut stream = Stream::Plain(tcp);
    loop {
        let packet = match read_startup_packet(&mut stream).await {
            Ok(packet) => packet,
            Err(e) => return Err(refuse_opening(&mut stream, e).await),
        };
        match packet {
            StartupPacket::SslRequest => stream = answer_ssl_request(state, stream).await?,
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                state.cancels.cancel(pid, secret).await;
                return Ok(Opening::Cancelled);
            }
            StartupPacket::Startup(startup) => return Ok(Opening::Session(stream, startup)),
        }
    }
}

/// Tells a client whose opening packet is unusable (e.g. a regular message
/// sent before any startup packet) why, with FATAL 08P01, as far as the
/// connection still works; the error is returned for the log.
async fn refuse_opening(stream: &mut Stream, e: ProtocolError) -> SessionError {
    let error = SessionError::from_client_protocol(e);
    if let SessionError::Client(pg_error) = &error {
        let mut out = BytesMut::new();
        pg_error.encode(&mut out);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    }
    error
}

async fn answer_ssl_request(state: &ServerState, stream: Stream) -> Result<Stream, SessionError> {
    match (stream, &state.tls_acceptor) {
        (Stream::Plain(mut tcp), Some(acceptor)) => {
            tcp.write_all(b"S").await?;
            let tls = acceptor
                .accept(tcp)
                .await
                .map_err(|e| SessionError::Silent(format!("TLS handshake failed: {e}")))?;
            Ok(Stream::Tls(Box::new(tls.into())))
        }
        (Stream::Plain(mut tcp), None) => {
            tcp.write_all(b"N").await?;
            Ok(Stream::Plain(tcp))
        }
        (Stream::Tls(_), _) => Err(SessionError::Client(PgError::fatal(
            "08P01",
            "SSLRequest received on an encrypted connection",
        ))),
    }
}

/// Authenticates `user` with SCRAM-SHA-256. Unknown users go through the
/// same exchange with a decoy verifier, so the answer never reveals whether
/// a user exists. A login the failed-login limits refuse ends before the
/// exchange starts; a failed proof is counted against them.
pub async fn authenticate(
    state: &ServerState,
    stream: &mut Stream,
    user: &str,
) -> Result<(), SessionError> {
    let ip = stream.peer_addr()?.ip();
    state
        .logins
        .check(ip, user, Instant::now())
        .map_err(locked_out)?;
    match scram_exchange(state, stream, user).await {
        Err(SessionError::AuthFailed(e)) => {
            state.logins.record_failure(ip, user, Instant::now());
            Err(SessionError::AuthFailed(e))
        }
        Ok(()) => {
            state.logins.record_success(ip, user, Instant::now());
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// The SCRAM-SHA-256 exchange, up to AuthenticationOk.
async fn scram_exchange(
    state: &ServerState,
    stream: &mut Stream,
    user: &str,
) -> Result<(), SessionError> {
    let verifier = state
        .config
        .user(user)
        .and_then(|u| Verifier::parse(&u.scram))
        .unwrap_or_else(|| Verifier::decoy(&state.decoy_seed, user));
    let known = state.config.user(user).is_some();
    let mut out = BytesMut::new();
    messages::auth_sasl(&mut out);
    stream.write_all(&out).await?;

    let initial = read_password_message(stream).await?;
    let client_first = parse_sasl_initial(&initial)?;
    let nonce = B64.encode(rand::random::<[u8; 18]>());
    let (exchange, server_first) =
        Exchange::start(verifier, client_first, &nonce).map_err(scram_error)?;
    out.clear();
    messages::auth_sasl_continue(server_first.as_bytes(), &mut out);
    stream.write_all(&out).await?;

    let client_final = read_password_message(stream).await?;
    let server_final = exchange
        .finish(&client_final)
        .ok()
        .filter(|_| known)
        .ok_or_else(|| auth_failed(user))?;
    out.clear();
    messages::auth_sasl_final(server_final.as_bytes(), &mut out);
    messages::auth_ok(&mut out);
    stream.write_all(&out).await?;
    Ok(())
}

/// The refusal of a login while its address or user name is locked out;
/// the same for every user name, known or not.
fn locked_out(refused: Refused) -> SessionError {
    let secs = refused.retry_after.as_secs_f64().ceil().max(1.0);
    SessionError::AuthFailed(
        PgError::fatal("28000", "too many failed login attempts; try again later")
            .with_hint(format!("wait {secs} seconds before trying again")),
    )
}

fn auth_failed(user: &str) -> SessionError {
    SessionError::AuthFailed(PgError::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    ))
}

fn scram_error(e: ScramError) -> SessionError {
    SessionError::Client(PgError::fatal("28000", e.to_string()))
}

/// Reads one PasswordMessage/SASLResponse ('p') body.
async fn read_password_message(stream: &mut Stream) -> Result<Vec<u8>, SessionError> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if header[0] != b'p' || !(4..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(SessionError::Client(PgError::fatal(
            "08P01",
            "expected a SASL response during authentication",
        )));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Checks SASLInitialResponse's mechanism and returns its client-first data.
fn parse_sasl_initial(body: &[u8]) -> Result<&[u8], SessionError> {
    let (mechanism, data) = split_sasl_initial(body).ok_or_else(|| {
        SessionError::Client(PgError::fatal("08P01", "malformed SASLInitialResponse"))
    })?;
    if mechanism != b"SCRAM-SHA-256" {
        return Err(SessionError::Client(PgError::fatal(
            "28000",
            "pgveil only offers SCRAM-SHA-256; connect with channel_binding=disable or prefer",
        )));
    }
    Ok(data)
}
