//! Protocol edges a client can hit: messages over the size limit, malformed
//! messages, fast-path FunctionCall, NegotiateProtocolVersion. Each bad
//! session gets a clear error, and the proxy keeps serving the others.

mod common;

use common::proxy::{self, ProxyOptions, USER_PASSWORD};
use common::raw::{codes, frame, Raw};
use postgres_protocol::message::backend::Message;

const USER: &str = "app";

/// Logs in as [`USER`] with a raw connection.
async fn login(proxy: &proxy::Proxy) -> Raw {
    Raw::login(
        proxy.addr,
        &[("user", USER), ("database", &proxy.database)],
        USER_PASSWORD,
    )
    .await
}

async fn proxy_with_limit(prefix: &str) -> proxy::Proxy {
    let db = common::fresh_database(prefix).await;
    proxy::start(
        &db,
        &[USER],
        ProxyOptions {
            top: "max_message_bytes = 100000".into(),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn oversized_message_ends_only_that_session() {
    let proxy = proxy_with_limit("edge_size").await;
    let bystander = proxy.connect(USER).await.expect("bystander connects");
    let mut raw = login(&proxy).await;
    raw.query(&format!("select '{}'", "x".repeat(200_000)))
        .await;
    let errors = raw.until_closed().await;
    assert_eq!(codes(&errors), [("54000", "FATAL")]);
    let row = bystander
        .query_one("select 'unaffected'::text", &[])
        .await
        .expect("bystander still served");
    assert_eq!(row.get::<_, String>(0), "unaffected");
    let mut again = login(&proxy).await;
    again.query("select 1").await;
    assert!(again.until_ready().await.is_empty());
}

#[tokio::test]
async fn malformed_message_gets_protocol_violation() {
    let proxy = proxy_with_limit("edge_malformed").await;
    let mut raw = login(&proxy).await;
    // A Parse whose parameter count promises more OIDs than it carries.
    raw.send(&frame(b'P', b"\0select 1\0\0\x05\0\0\0\x17"))
        .await;
    assert_eq!(codes(&raw.until_closed().await), [("08P01", "FATAL")]);
}

#[tokio::test]
async fn function_call_is_refused_and_session_goes_on() {
    let proxy = proxy_with_limit("edge_fcall").await;
    let mut raw = login(&proxy).await;
    raw.send(&frame(b'F', &[0, 0, 0x04, 0xd2, 0, 0, 0, 0, 0, 0]))
        .await;
    assert_eq!(codes(&raw.until_ready().await), [("0A000", "ERROR")]);
    raw.query("select 1").await;
    assert!(raw.until_ready().await.is_empty());
}

#[tokio::test]
async fn newer_protocol_version_is_negotiated_down() {
    let proxy = proxy_with_limit("edge_version").await;
    let mut raw = Raw::connect(proxy.addr).await;
    let params = [
        ("user", USER),
        ("database", &proxy.database),
        ("_pq_.test_option", "1"),
    ];
    raw.startup_minor(&params, 2).await;
    let seen = raw.authenticate(USER_PASSWORD).await.expect("login");
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::ParameterStatus(_))),
        "no ParameterStatus"
    );
    raw.query("select 1").await;
    assert!(raw.until_ready().await.is_empty());
}
