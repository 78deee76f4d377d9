//! A raw protocol client for tests that send what libraries refuse to:
//! malformed, truncated or unexpected messages, from a chosen source
//! address. It speaks just enough of the protocol to log in with SCRAM.

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An ErrorResponse as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// SQLSTATE.
    pub code: String,
    /// ERROR or FATAL.
    pub severity: String,
    /// The primary message.
    pub message: String,
    /// The hint, if any.
    pub hint: Option<String>,
}

impl Reported {
    fn from_body(body: &ErrorResponseBody) -> Reported {
        let mut reported = Reported {
            code: String::new(),
            severity: String::new(),
            message: String::new(),
            hint: None,
        };
        let mut fields = body.fields();
        while let Some(f) = fields.next().expect("error fields") {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => reported.code = value,
                b'V' => reported.severity = value,
                b'M' => reported.message = value,
                b'H' => reported.hint = Some(value),
                _ => {}
            }
        }
        reported
    }
}

/// (SQLSTATE, severity) of each error, for compact assertions.
pub fn codes(errors: &[Reported]) -> Vec<(&str, &str)> {
    errors
        .iter()
        .map(|e| (e.code.as_str(), e.severity.as_str()))
        .collect()
}

/// A raw protocol connection.
pub struct Raw {
    /// The socket.
    pub tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw::wrap(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Connects to `addr` from the local address `source` (any 127.x.y.z
    /// works on Linux loopback), to act as another client machine.
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> Raw {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source address");
        Raw::wrap(socket.connect(addr).await.expect("connect"))
    }

    fn wrap(tcp: TcpStream) -> Raw {
        Raw {
            tcp,
            buf: BytesMut::new(),
        }
    }

    /// Connects and logs in with protocol 3.0 and these startup parameters;
    /// panics unless the login succeeds.
    pub async fn login(addr: SocketAddr, params: &[(&str, &str)], password: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.startup(params).await;
        if let Err(e) = raw.authenticate(password).await {
            panic!("login refused: {e:?}");
        }
        raw
    }

    /// Sends a protocol 3.0 StartupMessage.
    pub async fn startup(&mut self, params: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).expect("startup");
        self.send(&out).await;
    }

    /// Sends a StartupMessage of protocol 3.`minor` (which postgres-protocol
    /// cannot build) and reads the NegotiateProtocolVersion it must get.
    pub async fn startup_minor(&mut self, params: &[(&str, &str)], minor: u16) {
        let mut body = BytesMut::new();
        body.put_u32((3 << 16) | u32::from(minor));
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        self.send(&out).await;
        self.expect_negotiation().await;
    }

    /// Answers the SCRAM exchange until ReadyForQuery; returns the messages
    /// seen on the way, or the error that ended the login.
    pub async fn authenticate(&mut self, password: &str) -> Result<Vec<Message>, Reported> {
        let mut seen = Vec::new();
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        loop {
            let mut out = BytesMut::new();
            match self.next().await {
                Message::AuthenticationSasl(_) => {
                    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
                        .expect("sasl")
                }
                Message::AuthenticationSaslContinue(body) => {
                    scram.update(body.data()).expect("scram update");
                    frontend::sasl_response(scram.message(), &mut out).expect("sasl");
                }
                Message::AuthenticationSaslFinal(body) => {
                    scram.finish(body.data()).expect("server signature")
                }
                Message::ErrorResponse(body) => return Err(Reported::from_body(&body)),
                Message::ReadyForQuery(_) => return Ok(seen),
                other => seen.push(other),
            }
            if !out.is_empty() {
                self.send(&out).await;
            }
        }
    }

    /// Reads NegotiateProtocolVersion (which postgres-protocol does not
    /// parse): newest minor version 0 and the unrecognized `_pq_` options.
    async fn expect_negotiation(&mut self) {
        self.fill(5).await;
        assert_eq!(self.buf[0], b'v', "expected NegotiateProtocolVersion");
        let len =
            i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize + 1;
        self.fill(len).await;
        let message = self.buf.split_to(len);
        assert_eq!(&message[5..9], &0i32.to_be_bytes(), "newest minor version");
        assert!(
            message.windows(16).any(|w| w == b"_pq_.test_option"),
            "option not listed"
        );
    }

    async fn fill(&mut self, len: usize) {
        while self.buf.len() < len {
            assert!(self.tcp.read_buf(&mut self.buf).await.expect("read") > 0);
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    /// Sends a Query message.
    pub async fn query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).expect("query");
        self.send(&out).await;
    }

    /// The next message; panics if the connection closes first.
    pub async fn next(&mut self) -> Message {
        loop {
            if let Some(m) = Message::parse(&mut self.buf).expect("parse") {
                return m;
            }
            let n = self.tcp.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "proxy closed the connection");
        }
    }

    /// Reads until ReadyForQuery; returns the errors seen.
    pub async fn until_ready(&mut self) -> Vec<Reported> {
        let mut errors = Vec::new();
        loop {
            match self.next().await {
                Message::ErrorResponse(body) => errors.push(Reported::from_body(&body)),
                Message::ReadyForQuery(_) => return errors,
                _ => {}
            }
        }
    }

    /// Reads until the proxy closes the connection; returns the errors seen.
    pub async fn until_closed(&mut self) -> Vec<Reported> {
        let mut errors = Vec::new();
        loop {
            match Message::parse(&mut self.buf).expect("parse") {
                Some(Message::ErrorResponse(body)) => errors.push(Reported::from_body(&body)),
                Some(_) => {}
                None => {
                    if self.tcp.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                        return errors;
                    }
                }
            }
        }
    }
}

/// The errors among whole backend messages in `bytes`.
pub fn errors_in(bytes: &[u8]) -> Vec<Reported> {
    let mut buf = BytesMut::from(bytes);
    let mut errors = Vec::new();
    while let Some(m) = Message::parse(&mut buf).expect("parse") {
        if let Message::ErrorResponse(body) = m {
            errors.push(Reported::from_body(&body));
        }
    }
    errors
}

/// A frame: tag, length, body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}
