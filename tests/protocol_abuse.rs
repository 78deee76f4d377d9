//! Bad protocol input against the proxy with the example CRM policy:
//! truncated messages, wrong lengths, unknown tags, a message before any
//! startup packet, a startup packet without a user, a 100 MB query (with the
//! default 64 MiB limit), invalid UTF-8, a non-UTF8 client_encoding. Each
//! gets its exact error and ends at most its own session, while a bystander
//! load of sessions checking their results runs throughout and sees no
//! error, and new sessions work afterwards.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{self, Proxy};
use common::raw::{codes, errors_in, frame, Raw};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

const CUSTOMERS: u64 = 300;
/// A support user: standard view set, emails masked as `***@domain`.
const USER: &str = "sam";

async fn login(proxy: &Proxy, extra: &[(&str, &str)]) -> Raw {
    let mut params = vec![("user", USER), ("database", proxy.database.as_str())];
    params.extend_from_slice(extra);
    Raw::login(proxy.addr, &params, &proxy.password).await
}

/// Sessions running rewritten queries in a loop and checking the values,
/// through the extended (Parse) and the simple (Query) protocol.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Result<u64, String>>>,
}

impl Load {
    async fn start(proxy: &Proxy, sessions: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            let client = proxy.connect(USER).await.expect("bystander connects");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) {
                    check_round(&client).await?;
                    rounds += 1;
                }
                Ok(rounds)
            }));
        }
        Load { stop, tasks }
    }

    /// Stops the load; the rounds each session completed, or its first error.
    async fn finish(self) -> Vec<Result<u64, String>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for task in self.tasks {
            results.push(task.await.expect("bystander task"));
        }
        results
    }
}

async fn check_round(client: &tokio_postgres::Client) -> Result<(), String> {
    let row = client
        .query_one(
            "select count(*)::int, bool_and(email like '***%') from customers",
            &[],
        )
        .await
        .map_err(|e| format!("extended query: {e}"))?;
    let got = (row.get::<_, i32>(0), row.get::<_, bool>(1));
    if got != (CUSTOMERS as i32, true) {
        return Err(format!("extended query returned {got:?}"));
    }
    let messages = client
        .simple_query("select count(*) from orders where customer_id <= 10")
        .await
        .map_err(|e| format!("simple query: {e}"))?;
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    match rows.as_slice() {
        [count] if count.parse::<u32>().is_ok() => Ok(()),
        other => Err(format!("simple query returned {other:?}")),
    }
}

/// A new session works: a value through the rewritten view.
async fn fresh_session_works(proxy: &Proxy) {
    let client = proxy.connect(USER).await.expect("new session");
    let row = client
        .query_one("select count(*)::int from customers", &[])
        .await
        .expect("new session query");
    assert_eq!(row.get::<_, i32>(0), CUSTOMERS as i32);
}

#[tokio::test]
async fn bad_input_ends_only_its_own_session() {
    let proxy = proxy::start_crm("abuse", CUSTOMERS).await;
    let load = Load::start(&proxy, 4).await;

    step("truncated", truncated_messages_then_close(&proxy)).await;
    step("length below 4", length_below_four(&proxy)).await;
    step("unknown tag", unknown_message_tag(&proxy)).await;
    step("query before startup", query_before_startup(&proxy)).await;
    step("no user", startup_without_user(&proxy)).await;
    step("100 MB query", hundred_megabyte_query(&proxy)).await;
    step("invalid UTF-8", invalid_utf8(&proxy)).await;
    step("LATIN1", latin1_client_encoding(&proxy)).await;

    let results = load.finish().await;
    for result in &results {
        let rounds = result.as_ref().expect("a bystander saw an error");
        assert!(*rounds > 0, "a bystander made no progress");
    }
    fresh_session_works(&proxy).await;
}

/// Runs one abuse case; a case that hangs fails instead of blocking the suite.
async fn step(name: &str, case: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(60), case)
        .await
        .is_err()
    {
        panic!("{name}: no answer within 60 s");
    }
}

/// A Query cut short, and a Bind (which the proxy passes on in pieces) cut
/// short, each followed by closing the connection. Nothing to tell anyone;
/// the half-sent Bind must not leave its backend connection in the pool.
async fn truncated_messages_then_close(proxy: &Proxy) {
    let mut raw = login(proxy, &[]).await;
    raw.send(&frame(b'Q', b"select 1\0")[..7]).await;
    raw.tcp.shutdown().await.expect("close");
    assert!(raw.until_closed().await.is_empty());

    for _ in 0..3 {
        let mut raw = login(proxy, &[]).await;
        let mut bind = vec![b'B'];
        bind.extend_from_slice(&1000i32.to_be_bytes());
        bind.extend_from_slice(&[0u8; 20]);
        raw.send(&bind).await;
        raw.tcp.shutdown().await.expect("close");
        assert!(raw.until_closed().await.is_empty());
    }
    for _ in 0..3 {
        fresh_session_works(proxy).await;
    }
}

async fn length_below_four(proxy: &Proxy) {
    let mut raw = login(proxy, &[]).await;
    raw.send(b"Q\0\0\0\x02").await;
    let errors = raw.until_closed().await;
    assert_eq!(codes(&errors), [("08P01", "FATAL")]);
    assert_eq!(
        errors[0].message,
        "invalid message length 2 for message type 'Q'"
    );
}

async fn unknown_message_tag(proxy: &Proxy) {
    let mut raw = login(proxy, &[]).await;
    raw.send(&frame(b'z', b"what is this")).await;
    let errors = raw.until_closed().await;
    assert_eq!(codes(&errors), [("08P01", "FATAL")]);
    assert_eq!(errors[0].message, "invalid frontend message type 122");
}

async fn query_before_startup(proxy: &Proxy) {
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&frame(b'Q', b"select 1\0")).await;
    let errors = raw.until_closed().await;
    assert_eq!(codes(&errors), [("08P01", "FATAL")]);
    assert!(
        errors[0]
            .message
            .starts_with("invalid startup packet length"),
        "{}",
        errors[0].message
    );
}

async fn startup_without_user(proxy: &Proxy) {
    let mut raw = Raw::connect(proxy.addr).await;
    raw.startup(&[("database", &proxy.database)]).await;
    let errors = raw.until_closed().await;
    assert_eq!(codes(&errors), [("28000", "FATAL")]);
    assert_eq!(
        errors[0].message,
        "no PostgreSQL user name specified in startup packet"
    );
}

/// Resident and peak memory of this process (the proxy runs in it), bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .expect("memory field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 100 MB of query text, over the default 64 MiB limit: FATAL 54000 as soon
/// as the header arrives, without the proxy buffering the text (the client
/// streams it in 1 MB pieces, so the peak memory of this process tells).
async fn hundred_megabyte_query(proxy: &Proxy) {
    const SIZE: usize = 100_000_000;
    let (rss_before, _) = memory();
    let raw = login(proxy, &[]).await;
    let (mut reader, mut writer) = raw.tcp.into_split();
    let sender = tokio::spawn(async move {
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(SIZE as i32 + 4).to_be_bytes());
        writer.write_all(&header).await?;
        let chunk = vec![b'x'; 1_000_000];
        for _ in 0..SIZE / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    });
    let mut reply = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut reply).await;
    assert!(
        sender.await.expect("sender").is_err(),
        "the proxy read all 100 MB instead of closing"
    );
    let errors = errors_in(&reply);
    assert_eq!(codes(&errors), [("54000", "FATAL")]);
    let (_, peak_after) = memory();
    let growth = peak_after.saturating_sub(rss_before);
    assert!(
        growth < 40_000_000,
        "memory grew by {growth} bytes for a refused 100 MB query"
    );
}

/// Invalid UTF-8 in a Query and in a Parse: ERROR 22021, the session goes on.
async fn invalid_utf8(proxy: &Proxy) {
    let mut raw = login(proxy, &[]).await;
    raw.send(&frame(b'Q', b"select '\xff\xfe'\0")).await;
    assert_eq!(codes(&raw.until_ready().await), [("22021", "ERROR")]);
    let mut extended = frame(b'P', b"\0select '\xc3\x28' from customers\0\0\0");
    extended.extend_from_slice(&frame(b'S', b""));
    raw.send(&extended).await;
    assert_eq!(codes(&raw.until_ready().await), [("22021", "ERROR")]);
    raw.query("select 1").await;
    assert!(raw.until_ready().await.is_empty());
}

/// LATIN1 asked for at startup (parameter or options): FATAL 42501 with a
/// hint; set later with SET or SET NAMES: ERROR 42501, and the session
/// stays in UTF8.
async fn latin1_client_encoding(proxy: &Proxy) {
    for extra in [
        ("client_encoding", "LATIN1"),
        ("options", "-c client_encoding=LATIN1"),
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        let params = [("user", USER), ("database", &proxy.database), extra];
        raw.startup(&params).await;
        let refused = raw
            .authenticate(&proxy.password)
            .await
            .err()
            .expect("LATIN1 must be refused at startup");
        assert_eq!(codes(std::slice::from_ref(&refused)), [("42501", "FATAL")]);
        assert!(refused.hint.expect("hint").contains("UTF8"));
    }
    let mut raw = login(proxy, &[]).await;
    for set in ["SET client_encoding = 'LATIN1'", "SET NAMES 'LATIN1'"] {
        raw.query(set).await;
        assert_eq!(
            codes(&raw.until_ready().await),
            [("42501", "ERROR")],
            "{set}"
        );
    }
    raw.query("show client_encoding").await;
    assert!(raw.until_ready().await.is_empty());
    let client = proxy.connect(USER).await.expect("connect");
    let row = client
        .query_one("show client_encoding", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "UTF8");
}
