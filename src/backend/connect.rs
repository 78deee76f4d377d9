//! Logging in to PostgreSQL as a backend role, and the small amount of
//! talking pgveil does on its own behalf (reset, settings, cancel).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use futures::FutureExt;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use super::memory::Memory;
use super::BackendError;
use crate::config::BackendTls;
use crate::protocol::messages::PgError;
use crate::protocol::stream::Stream;

/// Where PostgreSQL is and how to reach it.
#[derive(Debug, Clone)]
pub struct BackendTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// TLS mode.
    pub tls: BackendTls,
    /// Limit for connecting and logging in.
    pub connect_timeout: Duration,
    tls_config: Option<Arc<ClientConfig>>,
}

impl BackendTarget {
    /// A target; builds the TLS client configuration once when TLS may be used.
    pub fn new(
        host: String,
        port: u16,
        database: String,
        tls: BackendTls,
        connect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        let tls_config = match tls {
            BackendTls::Disable => None,
            _ => Some(
                super::tls::encrypt_only_config().map_err(|e| BackendError::Tls(e.to_string()))?,
            ),
        };
        Ok(BackendTarget {
            host,
            port,
            database,
            tls,
            connect_timeout,
            tls_config,
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Credentials of one backend login role.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    /// Role name.
    pub user: String,
    /// Password (may be empty for trust authentication).
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", self.user)
    }
}

/// What is needed to cancel the query running on a backend connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    /// Host of the backend.
    pub host: Arc<str>,
    /// Port of the backend.
    pub port: u16,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret key.
    pub secret: i32,
}

/// One logged-in connection to PostgreSQL.
pub struct BackendConn {
    /// The socket, possibly TLS.
    pub stream: Stream,
    /// ParameterStatus values as last reported by the server.
    pub params: BTreeMap<String, String>,
    /// The cancel key of this backend process.
    pub cancel_key: CancelKey,
    /// Transaction status from the last ReadyForQuery (`I`, `T` or `E`).
    pub status: u8,
    /// Set when the connection must not be reused.
    pub broken: bool,
    /// Bytes read from the server and not yet handled (the session relay
    /// reads into it while the connection is attached).
    pub read_buf: BytesMut,
    /// What pgveil prepared and applied on this connection.
    pub memory: Memory,
}

impl BackendConn {
    /// Connects, negotiates TLS and logs in; fails after the target's timeout.
    pub async fn connect(
        target: &BackendTarget,
        login: &Login,
    ) -> Result<BackendConn, BackendError> {
        tokio::time::timeout(target.connect_timeout, Self::connect_inner(target, login))
            .await
            .map_err(|_| BackendError::Timeout("connecting to PostgreSQL"))?
    }

    async fn connect_inner(
        target: &BackendTarget,
        login: &Login,
    ) -> Result<BackendConn, BackendError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| BackendError::Connect {
                addr: target.addr(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let stream = negotiate_tls(tcp, target).await?;
        let mut conn = BackendConn {
            stream,
            params: BTreeMap::new(),
            cancel_key: CancelKey {
                host: target.host.as_str().into(),
                port: target.port,
                pid: 0,
                secret: 0,
            },
            status: b'I',
            broken: false,
            read_buf: BytesMut::with_capacity(8192),
            memory: Memory::default(),
        };
        conn.login(target, login).await?;
        Ok(conn)
    }

    async fn login(&mut self, target: &BackendTarget, login: &Login) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        let params = [
            ("user", login.user.as_str()),
            ("database", target.database.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out)?;
        self.stream.write_all(&out).await?;
        self.authenticate(login).await?;
        self.read_until_ready().await
    }

    async fn authenticate(&mut self, login: &Login) -> Result<(), BackendError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(login.password.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(
                        login.user.as_bytes(),
                        login.password.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mechanisms: Vec<String> =
                        body.mechanisms().map(|m| Ok(m.to_owned())).collect()?;
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(BackendError::UnsupportedAuth(mechanisms.join(", ")));
                    }
                    let client =
                        ScramSha256::new(login.password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out)?;
                    scram = Some(client);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let client = scram.as_mut().ok_or_else(|| {
                        BackendError::Protocol("SASL continue without SASL".into())
                    })?;
                    client.update(body.data())?;
                    frontend::sasl_response(client.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| BackendError::Protocol("SASL final without SASL".into()))?;
                    client.finish(body.data())?;
                    continue;
                }
                Message::ErrorResponse(body) => return Err(BackendError::Server(pg_error(&body)?)),
                Message::AuthenticationKerberosV5
                | Message::AuthenticationGss
                | Message::AuthenticationSspi => {
                    return Err(BackendError::UnsupportedAuth("GSSAPI/SSPI/Kerberos".into()))
                }
                _ => {
                    return Err(BackendError::Protocol(
                        "unexpected message during authentication".into(),
                    ))
                }
            }
            self.stream.write_all(&out).await?;
        }
    }

    /// Reads ParameterStatus, BackendKeyData and notices until ReadyForQuery;
    /// an ErrorResponse on the way is returned after ReadyForQuery arrives.
    async fn read_until_ready(&mut self) -> Result<(), BackendError> {
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return error.map_or(Ok(()), |e| Err(BackendError::Server(e)));
                }
                Message::ParameterStatus(body) => {
                    self.params
                        .insert(body.name()?.to_owned(), body.value()?.to_owned());
                }
                Message::BackendKeyData(body) => {
                    self.cancel_key.pid = body.process_id();
                    self.cancel_key.secret = body.secret_key();
                }
                Message::ErrorResponse(body) => {
                    let e = pg_error(&body)?;
                    if e.severity == crate::protocol::messages::Severity::Fatal {
                        return Err(BackendError::Server(e));
                    }
                    error = Some(e);
                }
                _ => {}
            }
        }
    }

    /// Runs SQL on pgveil's own behalf with the simple protocol and waits for
    /// ReadyForQuery; results are discarded.
    pub async fn execute(&mut self, sql: &str) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.stream.write_all(&out).await?;
        self.read_until_ready().await
    }

    /// Makes the connection fit for another client: ends any transaction and
    /// runs DISCARD ALL. On failure the connection is marked broken.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        self.memory.forget_all();
        let result = async {
            if self.status != b'I' {
                self.execute("ROLLBACK").await?;
            }
            self.execute("DISCARD ALL").await
        }
        .await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// True when an idle connection has been closed by the server or has
    /// something unasked to say (PostgreSQL sends FATAL 57P01 and closes
    /// its connections when it shuts down). Checks without waiting.
    pub fn hung_up(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        self.stream.read(&mut probe).now_or_never().is_some()
    }

    async fn read_message(&mut self) -> Result<Message, BackendError> {
        loop {
            if let Some(message) = Message::parse(&mut self.read_buf)? {
                return Ok(message);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

async fn negotiate_tls(mut tcp: TcpStream, target: &BackendTarget) -> Result<Stream, BackendError> {
    let Some(config) = target.tls_config.clone() else {
        return Ok(Stream::Plain(tcp));
    };
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match (answer[0], target.tls) {
        (b'S', _) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| BackendError::Tls(format!("bad server name {}: {e}", target.host)))?;
            let tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| BackendError::Tls(e.to_string()))?;
            Ok(Stream::Tls(Box::new(tls.into())))
        }
        (b'N', BackendTls::Require) => Err(BackendError::Tls(
            "the server does not accept TLS but backend.tls = \"require\"".into(),
        )),
        (b'N', _) => Ok(Stream::Plain(tcp)),
        (other, _) => Err(BackendError::Protocol(format!(
            "bad answer {other:#x} to SSLRequest"
        ))),
    }
}

/// Converts a server ErrorResponse to the error pgveil hands on.
fn pg_error(body: &ErrorResponseBody) -> Result<PgError, BackendError> {
    let mut error = PgError::error("XX000", "");
    let mut fields = body.fields();
    while let Some(field) = fields.next()? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' if value == "FATAL" || value == "PANIC" => {
                error.severity = crate::protocol::messages::Severity::Fatal
            }
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    Ok(error)
}

/// Sends a CancelRequest for a backend process (best effort: errors are logged).
pub async fn send_cancel(key: &CancelKey) {
    let result = async {
        let mut tcp = TcpStream::connect((&*key.host, key.port)).await?;
        let mut out = BytesMut::new();
        frontend::cancel_request(key.pid, key.secret, &mut out);
        tcp.write_all(&out).await?;
        // PostgreSQL closes the connection once it has read the request.
        let mut sink = [0u8; 1];
        let _ = tcp.read(&mut sink).await;
        Ok::<(), std::io::Error>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, pid = key.pid, "cancel request to PostgreSQL failed");
    }
}
