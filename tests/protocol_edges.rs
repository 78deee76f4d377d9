//! Protocol edges a client can hit: messages over the size limit, malformed
//! messages, fast-path FunctionCall, NegotiateProtocolVersion. Each bad
//! session gets a clear error, and the proxy keeps serving the others.

mod common;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::proxy::{self, ProxyOptions, USER_PASSWORD};

const USER: &str = "app";

/// A raw protocol connection to the proxy, logged in.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn login(addr: std::net::SocketAddr, db: &str, extra: &[(&str, &str)], minor: u16) -> (Raw, Vec<Message>) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut raw = Raw { tcp, buf: BytesMut::new() };
        let mut out = BytesMut::new();
        if minor == 0 {
            let mut params = vec![("user", USER), ("database", db)];
            params.extend_from_slice(extra);
            frontend::startup_message(params.iter().copied(), &mut out).expect("startup");
        } else {
            let mut body = BytesMut::new();
            body.put_u32((3 << 16) | u32::from(minor));
            for (k, v) in [("user", USER), ("database", db)].iter().chain(extra) {
                body.put_slice(k.as_bytes());
                body.put_u8(0);
                body.put_slice(v.as_bytes());
                body.put_u8(0);
            }
            body.put_u8(0);
            out.put_i32(body.len() as i32 + 4);
            out.put_slice(&body);
        }
        raw.send(&out).await;
        if minor > 0 {
            raw.expect_negotiation().await;
        }
        let mut seen = Vec::new();
        let mut scram = ScramSha256::new(USER_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        loop {
            let mut out = BytesMut::new();
            match raw.next().await {
                Message::AuthenticationSasl(_) => frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).expect("sasl"),
                Message::AuthenticationSaslContinue(body) => {
                    scram.update(body.data()).expect("scram update");
                    frontend::sasl_response(scram.message(), &mut out).expect("sasl");
                }
                Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).expect("server signature"),
                Message::ReadyForQuery(_) => return (raw, seen),
                other => seen.push(other),
            }
            if !out.is_empty() {
                raw.send(&out).await;
            }
        }
    }

    /// Reads NegotiateProtocolVersion (which postgres-protocol does not
    /// parse): newest minor version 0 and the unrecognized `_pq_` options.
    async fn expect_negotiation(&mut self) {
        while self.buf.len() < 5 {
            assert!(self.tcp.read_buf(&mut self.buf).await.expect("read") > 0);
        }
        assert_eq!(self.buf[0], b'v', "expected NegotiateProtocolVersion");
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize + 1;
        while self.buf.len() < len {
            assert!(self.tcp.read_buf(&mut self.buf).await.expect("read") > 0);
        }
        let message = self.buf.split_to(len);
        assert_eq!(&message[5..9], &0i32.to_be_bytes(), "newest minor version");
        assert!(message.windows(16).any(|w| w == b"_pq_.test_option"), "option not listed");
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    async fn next(&mut self) -> Message {
        loop {
            if let Some(m) = Message::parse(&mut self.buf).expect("parse") {
                return m;
            }
            let n = self.tcp.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "proxy closed the connection");
        }
    }

    /// Reads until ReadyForQuery; returns (SQLSTATE, severity) of errors seen.
    async fn until_ready(&mut self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        loop {
            match self.next().await {
                Message::ErrorResponse(body) => errors.push(error_fields(&body)),
                Message::ReadyForQuery(_) => return errors,
                _ => {}
            }
        }
    }

    /// Reads until the proxy closes; returns the errors seen.
    async fn until_closed(&mut self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        loop {
            match Message::parse(&mut self.buf).expect("parse") {
                Some(Message::ErrorResponse(body)) => errors.push(error_fields(&body)),
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

fn error_fields(body: &postgres_protocol::message::backend::ErrorResponseBody) -> (String, String) {
    use fallible_iterator::FallibleIterator;
    let mut code = String::new();
    let mut severity = String::new();
    let mut fields = body.fields();
    while let Some(f) = fields.next().expect("fields") {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'V' => severity = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    (code, severity)
}

async fn proxy_with_limit(prefix: &str) -> proxy::Proxy {
    let db = common::fresh_database(prefix).await;
    proxy::start(&db, &[USER], ProxyOptions { top: "max_message_bytes = 100000".into(), ..Default::default() })
}

#[tokio::test]
async fn oversized_message_ends_only_that_session() {
    let proxy = proxy_with_limit("edge_size").await;
    let bystander = proxy.connect(USER).await.expect("bystander connects");
    let (mut raw, _) = Raw::login(proxy.addr, &proxy.database, &[], 0).await;
    let mut out = BytesMut::new();
    frontend::query(&format!("select '{}'", "x".repeat(200_000)), &mut out).expect("query");
    raw.send(&out).await;
    let errors = raw.until_closed().await;
    assert_eq!(errors, vec![("54000".to_owned(), "FATAL".to_owned())]);
    let row = bystander.query_one("select 'unaffected'::text", &[]).await.expect("bystander still served");
    assert_eq!(row.get::<_, String>(0), "unaffected");
    let (mut again, _) = Raw::login(proxy.addr, &proxy.database, &[], 0).await;
    let mut out = BytesMut::new();
    frontend::query("select 1", &mut out).expect("query");
    again.send(&out).await;
    assert!(again.until_ready().await.is_empty());
}

#[tokio::test]
async fn malformed_message_gets_protocol_violation() {
    let proxy = proxy_with_limit("edge_malformed").await;
    let (mut raw, _) = Raw::login(proxy.addr, &proxy.database, &[], 0).await;
    // A Parse whose parameter count promises more OIDs than it carries.
    let body = b"\0select 1\0\0\x05\0\0\0\x17";
    let mut out = BytesMut::new();
    out.put_u8(b'P');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    raw.send(&out).await;
    assert_eq!(raw.until_closed().await, vec![("08P01".to_owned(), "FATAL".to_owned())]);
}

#[tokio::test]
async fn function_call_is_refused_and_session_goes_on() {
    let proxy = proxy_with_limit("edge_fcall").await;
    let (mut raw, _) = Raw::login(proxy.addr, &proxy.database, &[], 0).await;
    let mut out = BytesMut::new();
    out.put_u8(b'F');
    let body: &[u8] = &[0, 0, 0x04, 0xd2, 0, 0, 0, 0, 0, 0];
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    raw.send(&out).await;
    assert_eq!(raw.until_ready().await, vec![("0A000".to_owned(), "ERROR".to_owned())]);
    let mut out = BytesMut::new();
    frontend::query("select 1", &mut out).expect("query");
    raw.send(&out).await;
    assert!(raw.until_ready().await.is_empty());
}

#[tokio::test]
async fn newer_protocol_version_is_negotiated_down() {
    let proxy = proxy_with_limit("edge_version").await;
    let (mut raw, seen) = Raw::login(proxy.addr, &proxy.database, &[("_pq_.test_option", "1")], 2).await;
    assert!(seen.iter().any(|m| matches!(m, Message::ParameterStatus(_))), "no ParameterStatus");
    let mut out = BytesMut::new();
    frontend::query("select 1", &mut out).expect("query");
    raw.send(&out).await;
    assert!(raw.until_ready().await.is_empty());
}
