//! Authentication abuse: failed-login limits per client address and per
//! user name, the startup timeout against slow clients, and max_sessions.
//! Other client machines are played by binding to other 127.x addresses.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::proxy::{self, Proxy, ProxyOptions, USER_PASSWORD};
use common::raw::{codes, Raw, Reported};
use tokio::io::AsyncReadExt;

const WRONG: &str = "not-the-password";

async fn proxy_with(prefix: &str, users: &[&str], top: &str, tables: &str) -> Proxy {
    let db = common::fresh_database(prefix).await;
    proxy::start(
        &db,
        users,
        ProxyOptions {
            top: top.into(),
            tables: tables.into(),
            ..Default::default()
        },
    )
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Logs in from `source` as `user`; the error that ended the login, if any.
async fn login_from(proxy: &Proxy, source: IpAddr, user: &str, password: &str) -> Option<Reported> {
    let mut raw = Raw::connect_from(source, proxy.addr).await;
    raw.startup(&[("user", user), ("database", &proxy.database)])
        .await;
    let refused = raw.authenticate(password).await.err();
    if refused.is_none() {
        raw.query("select 1").await;
        assert!(
            raw.until_ready().await.is_empty(),
            "logged-in session works"
        );
    }
    refused
}

/// The refusal of a locked-out login: before any SASL message, the same
/// text whoever the user is.
fn assert_locked_out(refused: Option<Reported>) {
    let e = refused.expect("login should be refused");
    assert_eq!(
        (e.code.as_str(), e.severity.as_str(), e.message.as_str()),
        (
            "28000",
            "FATAL",
            "too many failed login attempts; try again later"
        )
    );
    let hint = e.hint.expect("hint");
    assert!(
        hint.starts_with("wait ") && hint.ends_with(" seconds before trying again"),
        "{hint}"
    );
}

fn assert_wrong_password(refused: Option<Reported>, user: &str) {
    let e = refused.expect("wrong password must be refused");
    assert_eq!((e.code.as_str(), e.severity.as_str()), ("28P01", "FATAL"));
    assert_eq!(
        e.message,
        format!("password authentication failed for user \"{user}\"")
    );
}

#[tokio::test]
async fn failures_from_one_address_lock_it_out_for_the_lockout() {
    let auth = "[auth]\nmax_failures = 3\nmax_user_failures = 0\nlockout_secs = 2\n";
    let proxy = proxy_with("auth_addr", &["app", "other"], "", auth).await;
    let attacker = ip(2);
    for user in ["app", "app", "nobody"] {
        assert_wrong_password(login_from(&proxy, attacker, user, WRONG).await, user);
    }
    // Locked: the right password is refused too, and so is an unknown user,
    // with the same words; no SCRAM exchange is started (the refusal is the
    // first message after the startup packet).
    let mut raw = Raw::connect_from(attacker, proxy.addr).await;
    raw.startup(&[("user", "app"), ("database", &proxy.database)])
        .await;
    assert!(matches!(
        raw.next().await,
        postgres_protocol::message::backend::Message::ErrorResponse(_)
    ));
    assert_locked_out(login_from(&proxy, attacker, "app", USER_PASSWORD).await);
    assert_locked_out(login_from(&proxy, attacker, "ghost", USER_PASSWORD).await);
    // Another address, and so the same users elsewhere, are unaffected.
    assert_eq!(login_from(&proxy, ip(1), "app", USER_PASSWORD).await, None);
    assert_eq!(
        login_from(&proxy, ip(3), "other", USER_PASSWORD).await,
        None
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login_from(&proxy, attacker, "app", USER_PASSWORD).await,
        None
    );
}

#[tokio::test]
async fn failures_for_one_user_from_many_addresses_throttle_only_that_user() {
    let auth = "[auth]\nmax_failures = 100\nmax_user_failures = 4\nlockout_secs = 2\n";
    let proxy = proxy_with("auth_user", &["alice", "bob"], "", auth).await;
    let office = ip(20);
    assert_eq!(
        login_from(&proxy, office, "alice", USER_PASSWORD).await,
        None
    );
    for attacker in 21..25 {
        assert_wrong_password(
            login_from(&proxy, ip(attacker), "alice", WRONG).await,
            "alice",
        );
        assert_wrong_password(
            login_from(&proxy, ip(attacker), "ghost", WRONG).await,
            "ghost",
        );
    }
    let fresh = ip(26);
    // The guessed names are throttled from addresses they never logged in
    // from, with the same refusal for a real and an unknown user ...
    assert_locked_out(login_from(&proxy, fresh, "alice", USER_PASSWORD).await);
    assert_locked_out(login_from(&proxy, fresh, "ghost", USER_PASSWORD).await);
    // ... but not from the address alice works from, and bob is unaffected.
    assert_eq!(
        login_from(&proxy, office, "alice", USER_PASSWORD).await,
        None
    );
    assert_eq!(login_from(&proxy, fresh, "bob", USER_PASSWORD).await, None);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login_from(&proxy, fresh, "alice", USER_PASSWORD).await,
        None
    );
}

/// True once the proxy has closed `raw` (EOF or reset).
async fn closed_by_proxy(raw: &mut Raw) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.tcp.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_block_others() {
    let tables = "[timeouts]\nstartup_secs = 1\n";
    let proxy = proxy_with("auth_slow", &["app"], "", tables).await;
    let mut slow = Vec::new();
    for _ in 0..40 {
        // Half a startup packet: a length of 40 and 3 bytes of the version.
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(&[0, 0, 0, 40, 0, 3, 0]).await;
        slow.push(raw);
    }
    // A client that sends its startup packet and never answers AuthenticationSASL.
    let mut silent = Raw::connect(proxy.addr).await;
    silent
        .startup(&[("user", "app"), ("database", &proxy.database)])
        .await;
    slow.push(silent);
    // While they stall, a good client logs in and is served.
    let client = proxy.connect("app").await.expect("good client connects");
    let row = client.query_one("select 41 + 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
    for raw in &mut slow {
        assert!(
            closed_by_proxy(raw).await,
            "a stalled client was not cut off"
        );
    }
    let row = client
        .query_one("select 'still here'::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "still here");
}

#[tokio::test]
async fn session_beyond_max_sessions_is_refused_until_one_closes() {
    let proxy = proxy_with("auth_max", &["app"], "max_sessions = 3", "").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(proxy.connect("app").await.expect("within max_sessions"));
    }
    let mut raw = Raw::connect(proxy.addr).await;
    raw.startup(&[("user", "app"), ("database", &proxy.database)])
        .await;
    let Err(refused) = raw.authenticate(USER_PASSWORD).await else {
        panic!("a 4th session must be refused");
    };
    assert_eq!(codes(std::slice::from_ref(&refused)), [("53300", "FATAL")]);
    assert_eq!(refused.message, "sorry, too many clients already");
    assert!(refused.hint.expect("hint").contains("max_sessions"));
    drop(open.pop());
    let mut fourth = None;
    for _ in 0..50 {
        if let Ok(client) = proxy.connect("app").await {
            fourth = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fourth = fourth.expect("a session is accepted again after one closed");
    let row = fourth.query_one("select 7", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 7);
    for client in &open {
        client
            .query_one("select 1", &[])
            .await
            .expect("the others still work");
    }
}
