//! The admin endpoint: `/metrics` after a known sequence of statements
//! shows exactly those counts, and `/health` follows PostgreSQL (200, 503
//! while it is stopped, 200 again once it is back).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use pgveil::config::{AdminConfig, PoolMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status code and body of `GET path` (HTTP/1.1, one request per connection).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: pgveil\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels, exactly as encoded).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}

async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn metrics_count_a_known_sequence_and_health_follows_the_backend() {
    let proxy = common::proxy::start_crm_configured("admin_http", 100, |config| {
        config.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
        });
    })
    .await;
    let admin = proxy.admin.expect("admin endpoint");

    let wrong = proxy
        .pg_config("sam")
        .password("wrong")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(wrong.is_err(), "a wrong password must fail");

    let sam = proxy.connect("sam").await.expect("sam connects");
    let statements = [
        ("select email from customers where customer_id = 1", true),
        ("select email from customers where customer_id = 1", true),
        ("select count(*) from opportunities", true),
        ("set role postgres", false),
        // Last, so its answer comes after the refusal's ReadyForQuery.
        ("select 1", true),
    ];
    for (sql, runs) in statements {
        assert_eq!(sam.simple_query(sql).await.is_ok(), runs, "{sql}");
    }

    let metrics = scrape(admin).await;
    let standard = |verdict: &str| {
        sample(
            &metrics,
            &format!("pgveil_statements_total{{view_set=\"standard\",verdict=\"{verdict}\"}}"),
        )
    };
    assert_eq!(standard("rewritten"), 3.0);
    assert_eq!(standard("forwarded"), 1.0);
    assert_eq!(standard("refused"), 1.0);
    assert_eq!(sample(&metrics, "pgveil_rewrite_cache_hits_total"), 1.0);
    assert_eq!(sample(&metrics, "pgveil_rewrite_cache_misses_total"), 4.0);
    assert_eq!(
        sample(
            &metrics,
            "pgveil_statement_duration_seconds_count{view_set=\"standard\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(&metrics, "pgveil_sessions_open{view_set=\"standard\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, "pgveil_login_failures_total"), 1.0);
    assert_eq!(
        sample(
            &metrics,
            "pgveil_sessions_refused_total{reason=\"auth_failed\"}"
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "pgveil_connections"), 1.0);
    let pool = |gauge: &str| {
        sample(
            &metrics,
            &format!("pgveil_backend_pool_{gauge}{{role=\"veil_standard\"}}"),
        )
    };
    // an idle session keeps its connection in session pooling only
    let available = match common::proxy::suite_pool_mode() {
        PoolMode::Session => 0.0,
        PoolMode::Transaction => 1.0,
    };
    assert_eq!(
        (pool("size"), pool("available"), pool("waiting")),
        (1.0, available, 0.0)
    );
    assert_eq!(pool("max"), 50.0);

    drop(sam);
    let mut metrics = scrape(admin).await;
    for _ in 0..100 {
        if sample(&metrics, "pgveil_connections") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = scrape(admin).await;
    }
    assert_eq!(
        sample(&metrics, "pgveil_sessions_open{view_set=\"standard\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "pgveil_backend_pool_available{role=\"veil_standard\"}"
        ),
        1.0,
        "the session's backend connection went back to the pool"
    );

    assert_eq!(get(admin, "/health").await, (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/nothing").await.0, 404);
    common::cluster()
        .stop_server()
        .await
        .expect("stop PostgreSQL");
    let (status, reason) = get(admin, "/health").await;
    common::cluster()
        .start_server()
        .await
        .expect("start PostgreSQL");
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason
            .starts_with("PostgreSQL does not answer: cannot connect to PostgreSQL at 127.0.0.1:"),
        "{reason}"
    );
    assert_eq!(get(admin, "/health").await, (200, "ok\n".to_owned()));
}
