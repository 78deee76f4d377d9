//! What pgveil refuses, and that refusals are ordinary errors: every refused
//! class gets its SQLSTATE (42501 or 0A000) over the simple and the extended
//! protocol, in tokio-postgres, psql and psycopg 3, and the session keeps
//! working afterwards — also inside a transaction and inside a pipeline.
//! Also: PostgreSQL itself refuses the view-set roles the base tables, and
//! a sales rep's writes are held to her region.
//!
//! The tests share one proxy in front of one CRM database (300 customers).

mod common;
mod veil;

use common::proxy::{shared_crm, Proxy};
use veil::{connect, rows, sqlstate, Rows};

fn proxy() -> &'static Proxy {
    shared_crm("deny", 300)
}

const DENIED: &str = "42501";
const UNSUPPORTED: &str = "0A000";

/// Every refused class, for a standard (non-admin) user, with its SQLSTATE.
const REFUSED: &[(&str, &str)] = &[
    // DDL of every kind
    ("create table scratch (x int)", DENIED),
    ("drop table customers", DENIED),
    ("drop view customers", DENIED),
    ("alter table customers add column leak text", DENIED),
    ("truncate customers", DENIED),
    ("grant select on customers to public", DENIED),
    ("revoke select on customers from public", DENIED),
    ("create view v as select * from customers", DENIED),
    ("create index on customers (email)", DENIED),
    // server-side code
    ("do $$ begin perform 1; end $$", DENIED),
    ("create function f() returns int language sql as 'select 1'", DENIED),
    ("create or replace function f() returns setof text language plpgsql as $$ begin return query execute 'select email from public.customers'; end $$", DENIED),
    ("create procedure p() language sql as $$ select 1 $$", DENIED),
    ("call p()", DENIED),
    // copy-out into tables
    ("create table copied as select * from customers", DENIED),
    ("create temp table copied as select * from customers", DENIED),
    ("select * into copied from customers", DENIED),
    ("select email into temp copied from customers", DENIED),
    // escaping the role
    ("set role postgres", DENIED),
    ("set local role postgres", DENIED),
    ("reset role", DENIED),
    ("set session authorization postgres", DENIED),
    ("reset session authorization", DENIED),
    ("set pgveil.view = 'personal'", DENIED),
    ("set pgveil.view to personal", DENIED),
    ("reset pgveil.view", DENIED),
    ("show pgveil.view", DENIED),
    ("select set_config('pgveil.view', 'personal', false)", DENIED),
    ("select pg_catalog.set_config('role', 'postgres', false)", DENIED),
    ("select current_setting('pgveil.view')", DENIED),
    ("set search_path = public", DENIED),
    ("set search_path to public, pg_catalog", DENIED),
    ("reset search_path", DENIED),
    ("select set_config('search_path', 'public', false)", DENIED),
    // running SQL text, reading files, reaching other servers
    ("select query_to_xml('select * from public.customers', true, true, '')", DENIED),
    ("select table_to_xml('public.customers', true, true, '')", DENIED),
    ("select cursor_to_xml('c', 10, true, true, '')", DENIED),
    ("select * from dblink('dbname=postgres', 'select email from public.customers') as t(email text)", DENIED),
    ("select pg_read_file('/etc/passwd')", DENIED),
    ("select pg_read_binary_file('/etc/passwd')", DENIED),
    ("select lo_import('/etc/passwd')", DENIED),
    ("select lo_get(1)", DENIED),
    // planner statistics and plans
    ("select * from pg_stats where tablename = 'customers'", DENIED),
    ("select * from pg_catalog.pg_statistic", DENIED),
    ("explain select * from customers", DENIED),
    ("explain analyze select * from customers where email like 'a%'", DENIED),
    ("explain (analyze, buffers) select 1", DENIED),
    // COPY to or from files and programs
    ("copy customers to '/tmp/pgveil_leak.csv'", DENIED),
    ("copy (select email from customers) to '/tmp/pgveil_leak.csv'", DENIED),
    ("copy customers to program 'cat > /tmp/pgveil_leak.csv'", DENIED),
    ("copy customers from '/etc/passwd'", DENIED),
    // parser games
    ("set client_encoding = 'LATIN1'", DENIED),
    ("set client_encoding to 'SJIS'", DENIED),
    ("set names 'LATIN1'", DENIED),
    ("set standard_conforming_strings = off", DENIED),
    ("select email from U&\"customers\"", UNSUPPORTED),
    ("select email from U&\"\\0063ustomers\"", UNSUPPORTED),
    // valid PostgreSQL the parser cannot analyse, naming a protected table
    ("select xmlelement(name x, email) from customers", UNSUPPORTED),
    ("select email from rows from (generate_series(1, 2)) x, customers", UNSUPPORTED),
    ("selectt email from customers", UNSUPPORTED),
];

fn one() -> Rows {
    vec![vec![Some("1".to_owned())]]
}

#[tokio::test]
async fn every_refused_class_has_its_sqlstate_and_the_session_goes_on_simple_protocol() {
    let sam = connect(proxy(), "sam").await;
    for (sql, state) in REFUSED {
        assert_eq!(sqlstate(&sam, sql).await, *state, "{sql}");
        assert_eq!(rows(&sam, "select 1").await, one(), "after {sql}");
    }
}

#[tokio::test]
async fn every_refused_class_has_its_sqlstate_and_the_session_goes_on_extended_protocol() {
    let sam = connect(proxy(), "sam").await;
    for (sql, state) in REFUSED {
        let err = match sam.query(*sql, &[]).await {
            Ok(_) => panic!("not refused: {sql}"),
            Err(e) => e,
        };
        assert_eq!(veil::code(&err).as_deref(), Some(*state), "{sql}: {err:?}");
        let n: i32 = sam.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "after {sql}");
    }
}

#[tokio::test]
async fn every_refused_class_in_psycopg() {
    let texts: Vec<&str> = REFUSED.iter().map(|(s, _)| *s).collect();
    let out = veil::psycopg(
        proxy(),
        "sam",
        "statements",
        &[],
        &serde_json::to_string(&texts).unwrap(),
    );
    let results = out.as_array().unwrap();
    assert_eq!(results.len(), REFUSED.len());
    for ((sql, state), result) in REFUSED.iter().zip(results) {
        assert_eq!(result["error"].as_str(), Some(*state), "{sql}: {result}");
        assert_eq!(veil::json_rows(&result["after"]), one(), "after {sql}");
    }
}

#[test]
fn every_refused_class_in_psql() {
    let mut script = String::new();
    for (i, (sql, _)) in REFUSED.iter().enumerate() {
        script.push_str(&format!(
            "{sql};\n\\echo result {i} :SQLSTATE\nselect 'alive';\n\\echo after {i} :SQLSTATE\n"
        ));
    }
    let mut command = veil::psql(proxy(), "sam");
    command.args(["-At", "-v", "ON_ERROR_STOP=0", "-f", "-"]);
    let out = veil::output(command, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (i, (sql, state)) in REFUSED.iter().enumerate() {
        assert!(
            stdout.contains(&format!("result {i} {state}\nalive\nafter {i} 00000\n")),
            "{sql}:\n{stdout}\n{stderr}"
        );
    }
    assert_eq!(stderr.matches("ERROR:").count(), REFUSED.len(), "{stderr}");
    assert!(stderr.contains("pgveil"), "{stderr}");
}

#[tokio::test]
async fn a_refusal_aborts_a_transaction_like_any_error() {
    let sam = connect(proxy(), "sam").await;
    sam.batch_execute("begin").await.unwrap();
    assert_eq!(
        rows(&sam, "select count(*)::text from customers").await,
        vec![vec![Some("300".to_owned())]]
    );
    assert_eq!(sqlstate(&sam, "set role postgres").await, DENIED);
    assert_eq!(sqlstate(&sam, "select 1").await, "25P02");
    sam.batch_execute("rollback").await.unwrap();
    assert_eq!(rows(&sam, "select 1").await, one());
    // a multi-statement text is refused as a whole: nothing of it runs
    assert_eq!(
        sqlstate(&sam, "select 1; create table scratch (x int); select 2").await,
        DENIED
    );
    assert_eq!(rows(&sam, "select 1").await, one());
}

/// A customer of region north: (id, city).
async fn north_customer(root: &tokio_postgres::Client, offset: u32) -> (String, Option<String>) {
    let r = rows(root, &format!("select customer_id::text, city from customers where region = 'north' order by customer_id offset {offset} limit 1")).await;
    (r[0][0].clone().unwrap(), r[0][1].clone())
}

#[tokio::test]
async fn pipeline_with_a_refused_statement_skips_to_sync() {
    let p = proxy();
    let root = connect(p, "root").await;
    let (id, city) = north_customer(&root, 0).await;
    let out = veil::psycopg(p, "alice_north", "pipeline", &[&id], "");
    assert_eq!(out["error"], "42501", "{out}");
    let results = out["results"].as_array().unwrap();
    assert_eq!(veil::json_rows(&results[0]["rows"]), one(), "{out}");
    assert_eq!(
        veil::json_rows(&results[1]["rows"]),
        vec![vec![city.clone()]],
        "{out}"
    );
    assert!(
        results[2]["rows"].is_null(),
        "the refused statement has no result: {out}"
    );
    for skipped in &results[3..] {
        assert!(skipped["rows"].is_null(), "skipped up to the Sync: {out}");
    }
    // the UPDATE after the refusal did not run, and the session works
    assert_eq!(veil::json_rows(&out["after"]), vec![vec![city.clone()]]);
    let now = rows(
        &root,
        &format!("select city from customers where customer_id = {id}"),
    )
    .await;
    assert_eq!(now, vec![vec![city]]);
}

#[test]
fn psql_describe_works_for_a_non_admin() {
    let p = proxy();
    for (command, expect) in [
        ("\\dt", None),
        ("\\d", Some("customers")),
        ("\\d customers", Some("email")),
        ("\\dv", Some("customers")),
    ] {
        let mut psql = veil::psql(p, "sam");
        psql.args(["-v", "ON_ERROR_STOP=1", "-c", command]);
        let out = veil::output(psql, "");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(word) = expect {
            assert!(text.contains(word), "{command}:\n{text}");
        }
        for hidden in ["religion", "health_notes", "date_of_death", "ethnicity"] {
            assert!(!text.contains(hidden), "{command} shows {hidden}:\n{text}");
        }
    }
    let mut psql = veil::psql(p, "sam");
    psql.args(["-c", "\\d customers"]);
    let text = veil::stdout_ok(psql, "");
    assert!(text.contains("View \"veil_standard.customers\""), "{text}");
}

#[test]
fn connect_time_settings_that_escape_are_fatal() {
    let p = proxy();
    for (var, value) in [
        ("PGCLIENTENCODING", "LATIN1"),
        ("PGOPTIONS", "-c search_path=public"),
        ("PGOPTIONS", "-c role=postgres"),
        ("PGOPTIONS", "-c session_authorization=postgres"),
        ("PGOPTIONS", "-c standard_conforming_strings=off"),
        ("PGOPTIONS", "-c pgveil.secret=x"),
        ("PGOPTIONS", "-c pgveil.view=personal"),
    ] {
        let mut psql = veil::psql(p, "sam");
        psql.env(var, value)
            .args(["-c", "select email from customers limit 1"]);
        let out = veil::output(psql, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} connected");
        assert!(stderr.contains("FATAL"), "{var}={value}: {stderr}");
        assert!(out.stdout.is_empty(), "{var}={value}");
    }
    // the privacy officer may pick her other view set
    let mut psql = veil::psql(p, "olivia");
    psql.env("PGOPTIONS", "-c pgveil.view=standard").args([
        "-At",
        "-c",
        "select count(*) from customers where email like '***@%'",
    ]);
    assert_ne!(veil::stdout_ok(psql, "").trim(), "0");
}

/// A direct PostgreSQL connection as a view-set login role, with the
/// password pgveil derives for it.
async fn login_directly(p: &Proxy, role: &str) -> tokio_postgres::Client {
    let secret = std::fs::read_to_string(p.dir.join("role.secret")).unwrap();
    let password = pgveil::views::login_password(secret.trim_end().as_bytes(), role);
    let cluster = common::cluster();
    let mut config = tokio_postgres::Config::new();
    config
        .host(cluster.host())
        .port(cluster.port())
        .user(role)
        .password(password)
        .dbname(&p.database);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("login as {role}: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn view_set_roles_cannot_read_base_tables_in_postgresql() {
    let p = proxy();
    let root = connect(p, "root").await;
    root.batch_execute("analyze customers").await.unwrap();
    for role in [
        "veil_standard",
        "veil_analytics",
        "veil_marketing",
        "veil_partner_export",
        "veil_sales__region_north",
    ] {
        let client = login_directly(p, role).await;
        for table in [
            "customers",
            "orders",
            "consents",
            "sales_reps",
            "opportunities",
            "contact_preferences",
        ] {
            assert_eq!(
                sqlstate(&client, &format!("select * from public.{table} limit 1")).await,
                DENIED,
                "{role} {table}"
            );
        }
        assert_eq!(
            sqlstate(&client, "select * from pgveil_private.keys").await,
            DENIED,
            "{role}"
        );
        assert_eq!(
            sqlstate(&client, "set role postgres").await,
            DENIED,
            "{role}"
        );
        let stats = rows(
            &client,
            "select attname::text from pg_stats where tablename = 'customers'",
        )
        .await;
        assert_eq!(stats, Rows::new(), "{role} sees planner statistics");
        // its own views work
        rows(&client, "select count(*) from customers").await;
    }
    let stats = rows(
        &root,
        "select attname::text from pg_stats where tablename = 'customers'",
    )
    .await;
    assert!(!stats.is_empty(), "the statistics exist");
}

// ------------------------------------------------------------ writes (sales rep)

#[tokio::test]
async fn sales_rep_writes_stay_in_her_region() {
    let p = proxy();
    let root = connect(p, "root").await;
    let alice = connect(p, "alice_north").await;
    let insert = |id: u32, region: &str| {
        format!("insert into customers (customer_id, account_no, first_name, last_name, country, region) values ({id}, 'T-{id}', 'Test', 'Person', 'LT', '{region}')")
    };
    let state = sqlstate(&alice, &insert(990_001, "south")).await;
    assert!(state == "44000" || state == DENIED, "{state}");
    assert_eq!(
        rows(
            &root,
            "select count(*)::text from customers where customer_id = 990001"
        )
        .await,
        vec![vec![Some("0".to_owned())]]
    );
    rows(&alice, &insert(990_002, "north")).await;
    assert_eq!(
        rows(
            &root,
            "select region from customers where customer_id = 990002"
        )
        .await,
        vec![vec![Some("north".to_owned())]]
    );
    root.batch_execute("delete from customers where customer_id = 990002")
        .await
        .unwrap();

    let (id, city) = north_customer(&root, 1).await;
    assert_eq!(
        sqlstate(
            &alice,
            &format!("update customers set region = 'south' where customer_id = {id}")
        )
        .await,
        "44000"
    );
    // a masked column is not writable: PostgreSQL refuses the view column
    // (0A000, not a base column) or the column grant (42501)
    let state = sqlstate(
        &alice,
        &format!("update customers set email = 'x@y.z' where customer_id = {id}"),
    )
    .await;
    assert!(state == "0A000" || state == DENIED, "{state}");
    rows(
        &alice,
        &format!("update customers set city = 'Updated-by-alice' where customer_id = {id}"),
    )
    .await;
    let now = rows(
        &root,
        &format!("select city, region from customers where customer_id = {id}"),
    )
    .await;
    assert_eq!(
        now,
        vec![vec![
            Some("Updated-by-alice".to_owned()),
            Some("north".to_owned())
        ]]
    );
    root.batch_execute(&format!(
        "update customers set city = {} where customer_id = {id}",
        city.map_or("null".to_owned(), |c| format!(
            "'{}'",
            c.replace('\'', "''")
        ))
    ))
    .await
    .unwrap();

    // a south customer is invisible, so untouched
    let south = rows(
        &root,
        "select customer_id::text, city from customers where region = 'south' order by 1 limit 1",
    )
    .await;
    let sid = south[0][0].clone().unwrap();
    alice
        .batch_execute(&format!(
            "update customers set city = 'hijacked' where customer_id = {sid}"
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(
            &root,
            &format!("select city from customers where customer_id = {sid}")
        )
        .await,
        vec![vec![south[0][1].clone()]]
    );
}

#[tokio::test]
async fn insert_select_copies_only_masked_values() {
    let p = proxy();
    let root = connect(p, "root").await;
    let alice = connect(p, "alice_north").await;
    let (id, _) = north_customer(&root, 2).await;
    let raw = rows(
        &root,
        &format!("select email from customers where customer_id = {id}"),
    )
    .await;
    let email = raw[0][0].clone().unwrap();
    alice.batch_execute("begin").await.unwrap();
    rows(&alice, &format!("insert into customers (customer_id, account_no, first_name, last_name, country, region) \
        select customer_id + 5000000, account_no || '-copy', email, 'x', country, region from customers where customer_id = {id}")).await;
    let copied = rows(
        &alice,
        &format!("select first_name from customers where customer_id = {id} + 5000000"),
    )
    .await;
    alice.batch_execute("rollback").await.unwrap();
    let at = email.rfind('@').unwrap();
    assert_eq!(
        copied,
        vec![vec![Some(format!("***@{}", &email[at + 1..]))]]
    );
}

#[tokio::test]
async fn read_only_and_standard_sets_cannot_write() {
    let p = proxy();
    for user in ["sam", "ana", "pat", "mark"] {
        let client = connect(p, user).await;
        for sql in [
            "update customers set city = 'x'",
            "delete from orders",
            "insert into consents (customer_id, purpose, granted) values (1, 'direct_marketing', true)",
        ] {
            assert_eq!(sqlstate(&client, sql).await, DENIED, "{user}: {sql}");
        }
    }
    let root = connect(p, "root").await;
    assert_eq!(
        rows(
            &root,
            "select count(*)::text from customers where city = 'x'"
        )
        .await,
        vec![vec![Some("0".to_owned())]]
    );
}
