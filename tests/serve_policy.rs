//! `serve` with a policy: it refuses to start when the installed views do
//! not match the policy, and SIGHUP's reload swaps a new policy in for new
//! sessions while open sessions keep working.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use pgveil::config::Config;
use pgveil::server::{Server, ServerState};

fn copy_policy(dir: &std::path::Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.toml");
    std::fs::copy(source, policies.join("crm.toml")).expect("copy policy");
    policies
}

/// Starts a server on its own runtime thread; returns its address and state.
fn serve(config: Config) -> (std::net::SocketAddr, Arc<ServerState>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let server = Server::bind(config).await.expect("bind");
            tx.send((server.local_addr().expect("addr"), server.state())).expect("send");
            server.run(std::future::pending()).await;
        });
    });
    rx.recv().expect("server started")
}

async fn email_of_customer_1(addr: std::net::SocketAddr, db: &str) -> (tokio_postgres::Client, String) {
    let mut config = tokio_postgres::Config::new();
    config.host(addr.ip().to_string()).port(addr.port()).user("sam").password(pgveil::demo::DEMO_PASSWORD).dbname(db);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("sam connects");
    tokio::spawn(connection);
    let email = client.query_one("select email from customers where customer_id = 1", &[]).await.expect("query").get(0);
    (client, email)
}

#[tokio::test]
async fn serve_checks_the_fingerprint_and_reloads_on_demand() {
    let db = common::fresh_database("serve_policy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = copy_policy(dir.path());
    let setup = pgveil::demo::Setup { listen: "127.0.0.1:0".parse().expect("addr"), customers: 200, policy: Some(policies.clone()) };
    let config = pgveil::demo::prepare(common::cluster(), &db, dir.path(), &setup).await.expect("prepare");
    let admin = common::cluster().connect(&db).await.expect("admin");
    let raw_email: String = admin.query_one("select email from customers where customer_id = 1", &[]).await.expect("raw").get(0);

    let (addr, state) = serve(config.clone());
    let (old_session, masked) = email_of_customer_1(addr, &db).await;
    assert_ne!(masked, raw_email);
    assert!(masked.starts_with("***@"), "{masked}");

    // sam becomes a privacy officer; until apply runs, serve refuses the policy.
    let policy_file = policies.join("crm.toml");
    let text = std::fs::read_to_string(&policy_file).expect("read");
    let changed = text.replace("[users.sam]\nrole = \"support\"", "[users.sam]\nrole = \"privacy_officer\"");
    assert_ne!(text, changed, "the example policy no longer has sam as support");
    std::fs::write(&policy_file, changed).expect("write");
    let refused = match Server::bind(config.clone()).await {
        Ok(_) => panic!("serve must refuse a policy whose views are not installed"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("run: pgveil apply --config"), "{refused}");
    let reload_error = state.reload_policy().await.expect_err("reload refuses too");
    assert!(reload_error.to_string().contains("pgveil apply"), "{reload_error}");
    let (_, still_masked) = email_of_customer_1(addr, &db).await;
    assert_eq!(still_masked, masked, "the old policy stays in force");

    let applied = pgveil::control::apply(&config, false).await.expect("apply");
    assert!(applied.contains("applied"), "{applied}");
    state.reload_policy().await.expect("reload");
    let (_, now_raw) = email_of_customer_1(addr, &db).await;
    assert_eq!(now_raw, raw_email, "a new session gets the new policy");
    let row = old_session.query_one("select 'old session alive'::text", &[]).await.expect("old session keeps working");
    assert_eq!(row.get::<_, String>(0), "old session alive");

    let again = pgveil::control::apply(&config, false).await.expect("apply again");
    assert!(again.contains("no changes"), "{again}");
}
