//! `pgveil report` for the example CRM after a scripted session through
//! the proxy: the values it shows (reads per classification, refusals,
//! top statements, opt-outs, k-anonymity, the data model, installed view
//! SQL) against the privacy log and direct SQL, and the HTML as headless
//! Chromium renders it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::proxy::{self, Proxy};
use serde_json::Value;
use tokio_postgres::Client;

/// The report's main sections, by element id.
const SECTIONS: [&str; 8] = [
    "summary",
    "data-model",
    "view-sets",
    "access",
    "drift",
    "privacy-log",
    "consent",
    "k-anonymity",
];

async fn connect(proxy: &Proxy, user: &str) -> Client {
    proxy
        .connect(user)
        .await
        .unwrap_or_else(|e| panic!("cannot connect as {user}: {e}"))
}

/// Runs `sql` as `user`; it must succeed.
async fn run(proxy: &Proxy, user: &str, statements: &[&str]) {
    let client = connect(proxy, user).await;
    for sql in statements {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{user}: {sql}: {e}"));
    }
}

/// Runs `sql` as `user`; the proxy must refuse it with `sqlstate`.
async fn refused(proxy: &Proxy, user: &str, sql: &str, sqlstate: &str) {
    let client = connect(proxy, user).await;
    let e = client.simple_query(sql).await.unwrap_err();
    assert_eq!(
        e.code().map(|c| c.code()),
        Some(sqlstate),
        "{user}: {sql}: {e}"
    );
}

/// The scripted session: several users, a refused statement per kind of
/// refusal, a failed login, the extended protocol.
async fn session(proxy: &Proxy, admin: &Client) {
    run(
        proxy,
        "olivia",
        &[
            "select health_notes from customers limit 1",
            "select email, city from customers limit 1",
        ],
    )
    .await;
    let sam =
        "select customer_id, email, date_of_birth from customers order by customer_id limit 5";
    run(proxy, "sam", &[sam, sam]).await;
    refused(proxy, "sam", "set role postgres", "42501").await;
    refused(proxy, "ana", "select email from customers", "42501").await;
    run(
        proxy,
        "ana",
        &["select country, count(*) from customers group by country"],
    )
    .await;
    run(proxy, "mark", &["select count(*) from customers"]).await;
    let north: i64 = admin
        .query_one(
            "select min(customer_id) from customers where region = 'north'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let alice = connect(proxy, "alice_north").await;
    let rows = alice
        .query(
            "select first_name from customers where customer_id = $1",
            &[&north],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let mut wrong = proxy.pg_config("sam");
    wrong.password("not-the-password");
    assert!(wrong.connect(tokio_postgres::NoTls).await.is_err());
}

/// Runs the pgveil binary; it must succeed. Returns its standard output.
fn pgveil(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgveil {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn one_i64(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The report's consent row for `purpose`, from the consents table.
async fn consent_row(admin: &Client, purpose: &str, opt_in: bool) -> String {
    let row = admin
        .query_one(
            "select count(distinct customer_id) filter (where not granted), \
                    count(distinct customer_id) filter (where granted), \
                    (select count(*) from customers) \
             from consents where purpose = $1",
            &[&purpose],
        )
        .await
        .unwrap();
    let (refused, granted, all): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let none = all - refused - granted;
    let excluded = if opt_in { refused + none } else { refused };
    let basis = if opt_in { "opt\\_in" } else { "opt\\_out" };
    format!(
        "| {} | {basis} | consents | {refused} | {granted} | {none} | {excluded} |",
        purpose.replace('_', "\\_")
    )
}

/// The report's k-anonymity row for the analytics view set, by direct SQL
/// over its installed view.
async fn k_row(admin: &Client) -> String {
    let row = admin
        .query_one(
            "select min(n), sum(n)::bigint, count(*), count(*) filter (where n < 5), \
                    coalesce(sum(n) filter (where n < 5), 0)::bigint \
             from (select count(*) as n from veil_analytics.customers \
                   group by date_of_birth, gender, city, postal_code) g",
            &[],
        )
        .await
        .unwrap();
    let values: Vec<i64> = (0..5).map(|i| row.get(i)).collect();
    format!(
        "| 5 | {} | {} | {} | {} | {} |",
        values[0], values[1], values[2], values[3], values[4]
    )
}

/// The serialized DOM of `file` after headless Chromium loaded it.
fn chromium_dom(file: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): install it with `apt-get install chromium` (scripts/test.sh does)")
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reason the proxy gave sam for `set role postgres`, from the log.
fn refusal_reason(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["user"] == "sam" && r["verdict"] == "refused")
        .and_then(|r| r["reason"].as_str().map(str::to_owned))
        .expect("sam's refusal is in the log")
}

#[tokio::test]
async fn the_report_shows_the_session_the_data_and_the_views() {
    let proxy = proxy::start_crm_logged("report", 400).await;
    let config = proxy.dir.join("pgveil.toml");
    let config = config.to_str().unwrap();
    let log = proxy.dir.join(pgveil::demo::AUDIT_FILE);
    let admin = common::cluster().connect(&proxy.database).await.unwrap();
    session(&proxy, &admin).await;

    // Data-subject requests from the command line, into the same log.
    let customer = one_i64(
        &admin,
        "select min(customer_id) from customers c where not exists (select 1 from consents k \
         where k.customer_id = c.customer_id and k.purpose = 'direct_marketing' and not k.granted)",
    )
    .await
    .to_string();
    let subject = |args: &[&str]| {
        let mut all = vec!["subject"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", config, "--actor", "olivia"]);
        pgveil(&all);
    };
    subject(&[
        "opt-out",
        "--customer",
        &customer,
        "--purpose",
        "direct_marketing",
    ]);
    subject(&["export", "--customer", &customer]);
    let handle = proxy
        .state
        .audit()
        .expect("the demo configures a privacy log");
    tokio::time::timeout(Duration::from_secs(10), handle.flush())
        .await
        .unwrap()
        .unwrap();

    let out: PathBuf = tempfile::tempdir().unwrap().keep().join("report");
    let printed = pgveil(&["report", "--config", config, "--out", out.to_str().unwrap()]);
    let (html_path, md_path) = (out.join("report.html"), out.join("report.md"));
    assert_eq!(
        printed,
        format!("{}\n{}\n", html_path.display(), md_path.display())
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    let md = std::fs::read_to_string(&md_path).unwrap();
    let both = |needle: &str, md_needle: &str| {
        assert!(html.contains(needle), "HTML lacks {needle:?}");
        assert!(md.contains(md_needle), "Markdown lacks {md_needle:?}\n{md}");
    };

    // The privacy log: chain, reads, refusals, top statements, logins, requests.
    both("OK: the chain is intact", "OK: the chain is intact");
    assert!(
        md.contains("| olivia | 1 | 1 | 1 | 0 | 0 |"),
        "olivia read one identity, personal and sensitive statement each:\n{md}"
    );
    assert!(md.contains("| sam | 2 | 2 | 0 | 0 | 0 |"), "{md}");
    let reason = refusal_reason(&log);
    assert!(reason.len() > 10, "{reason}");
    assert!(
        html.contains(&*html_escape::encode_text(&reason)),
        "HTML lacks {reason:?}"
    );
    assert!(md.contains("| set role postgres | "), "{md}");
    assert!(md.contains(
        "| select customer\\_id, email, date\\_of\\_birth from customers order by customer\\_id limit ? | 2 | 10 |"
    ), "{md}");
    assert!(
        md.contains("| sam | 1 |"),
        "one failed login for sam:\n{md}"
    );
    assert!(md.contains("| opt\\_out | done | 1 |"), "{md}");
    assert!(md.contains("| export | done | 1 |"), "{md}");

    // Opt-outs per purpose equal the consents table (after the opt-out above).
    for (purpose, opt_in) in [
        ("direct_marketing", false),
        ("third_party_disclosure", true),
    ] {
        let row = consent_row(&admin, purpose, opt_in).await;
        assert!(md.contains(&row), "Markdown lacks {row}\n{md}");
    }

    // k-anonymity of the analytics set equals direct SQL over its view.
    assert!(
        md.contains(
            "Quasi-identifiers (default choice): date\\_of\\_birth, gender, city, postal\\_code"
        ),
        "{md}"
    );
    let k = k_row(&admin).await;
    assert!(md.contains(&k), "Markdown lacks {k}\n{md}");

    // The data model and the view SQL as installed.
    both(
        "<td>email</td><td>text</td><td>identity</td><td>email</td><td>email domain</td><td>keep</td><td>hidden</td><td>keep</td><td>keep</td>",
        "| email | text | identity | email | email domain | keep | hidden | keep | keep |",
    );
    let view_sql: String = admin
        .query_one(
            "select pg_get_viewdef('veil_standard.customers'::regclass, true)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(html.contains(&*html_escape::encode_text(view_sql.trim())));
    both(
        "Nothing: the installed objects match the policy.",
        "Nothing: the installed objects match the policy.",
    );
    both(
        "olivia",
        "| privacy\\_officer | personal (default), standard | olivia |",
    );

    // The browser renders every main section (and the charts) from the file.
    let dom = chromium_dom(&html_path);
    for id in SECTIONS {
        assert!(
            dom.contains(&format!("<section id=\"{id}\">")),
            "DOM lacks section {id}"
        );
    }
    assert!(dom.contains("<svg"), "no chart in the DOM");
    assert!(dom.contains(&*html_escape::encode_text(&reason)));

    // A view dropped behind pgveil's back is drift that apply would fix.
    admin
        .batch_execute("DROP VIEW veil_marketing.orders")
        .await
        .unwrap();
    let again = out.with_file_name("after-drift");
    pgveil(&[
        "report",
        "--config",
        config,
        "--out",
        again.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(again.join("report.md")).unwrap();
    assert!(
        md.contains("\n+ relation veil_marketing.orders kind=v "),
        "the dropped view is not reported:\n{md}"
    );
    assert!(
        md.contains(
            "- the installed objects drifted from the policy (1 differences; run pgveil apply)"
        ),
        "{md}"
    );
}
