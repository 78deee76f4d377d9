//! Simple-protocol queries that pgveil runs as statements it prepares
//! itself (`[pool] auto_prepare`): the client sees exactly what PostgreSQL
//! gives it directly (rows, command tags, errors), the statement is
//! prepared once on the backend connection with its compared constants as
//! parameters, and it survives what drops prepared statements.

mod common;

use tokio_postgres::{Client, SimpleQueryMessage};

use common::proxy::{self, Proxy, ProxyOptions};

const USER: &str = "app";

const SCHEMA: &str = "
CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, born date, tag bigint);
INSERT INTO people VALUES
  (1, 'Anna', '1980-05-17', 1), (2, 'O''Brien', '1991-02-03', 5000000000),
  (3, 'Arvydas', '1975-11-30', 7), (4, 'Bo', NULL, NULL);";

/// Statements whose constants become parameters, and some that keep them.
const QUERIES: [&str; 9] = [
    "select name from people where id = 2",
    "select id, born from people where name = 'O''Brien'",
    "select id from people where name like 'A%' order by 1",
    "select id from people where born >= '1990-01-01' and id <> 3 order by id",
    "select id, name from people where tag = 5000000000",
    "select name, count(*) from people where id < 4 group by 1 order by 1",
    "select id from people where id = 99",
    "select id from people where id = 1.0 order by 1 limit 2",
    "update people set born = '1980-05-18' where id = 1 returning id, born",
];

/// A proxy with session pooling for its passthrough user, so that one
/// client session sees one backend connection.
async fn start(prefix: &str, auto_prepare: bool) -> (Proxy, Client) {
    let db = common::fresh_database(prefix).await;
    let direct = common::cluster().connect(&db).await.expect("direct");
    direct.batch_execute(SCHEMA).await.expect("schema");
    let proxy = proxy::start(
        &db,
        &[USER],
        ProxyOptions {
            tables: format!(
                "[pool]\nauto_prepare = {auto_prepare}\n[pool.view_sets]\npassthrough = \"session\"\n"
            ),
            ..ProxyOptions::default()
        },
    );
    (proxy, direct)
}

/// Rows, column names and command tags of a simple query, as text.
async fn outcome(client: &Client, sql: &str) -> Result<Vec<String>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| e.code().map(|c| c.code().to_owned()).unwrap_or_default())?;
    Ok(messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                let values: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect();
                format!("{names:?} {values:?}")
            }
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            SimpleQueryMessage::RowDescription(columns) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                format!("columns {names:?}")
            }
            _ => "other".to_owned(),
        })
        .collect())
}

async fn prepared_texts(client: &Client) -> Vec<String> {
    let rows = client
        .query(
            "select statement from pg_prepared_statements where name like 'pgveil_s%' order by statement",
            &[],
        )
        .await
        .expect("pg_prepared_statements");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn queries_run_prepared_and_answer_as_directly() {
    let (proxy, direct) = start("auto_prepare", true).await;
    let client = proxy.connect(USER).await.expect("connect");
    for sql in QUERIES {
        for round in 0..2 {
            let expected = outcome(&direct, sql).await;
            let got = outcome(&client, sql).await;
            assert_eq!(got, expected, "{sql} (round {round})");
        }
    }
    let prepared = prepared_texts(&client).await;
    assert!(
        prepared.contains(&"select name from people where id = $1".to_owned()),
        "{prepared:#?}"
    );
    assert!(
        prepared.contains(&"select id from people where name like $1 order by 1".to_owned()),
        "{prepared:#?}"
    );
    assert!(
        prepared.contains(&"select id from people where id = 1.0 order by 1 limit 2".to_owned()),
        "constants that keep their place stay in the text: {prepared:#?}"
    );
    assert_eq!(
        prepared
            .iter()
            .filter(|s| s.as_str() == "select name from people where id = $1")
            .count(),
        1,
        "prepared once per connection"
    );
}

#[tokio::test]
async fn errors_are_those_of_postgresql_and_the_session_goes_on() {
    let (proxy, direct) = start("auto_prepare_errors", true).await;
    let client = proxy.connect(USER).await.expect("connect");
    let bad = "select id from people where id = 'abc'";
    assert_eq!(outcome(&client, bad).await, outcome(&direct, bad).await);
    assert_eq!(outcome(&client, bad).await, Err("22P02".to_owned()));
    let good = "select name from people where id = 3";
    assert_eq!(outcome(&client, good).await, outcome(&direct, good).await);

    // in a failed transaction the statement cannot be prepared; afterwards it can
    client.batch_execute("begin").await.expect("begin");
    assert_eq!(
        outcome(&client, "select 1/0").await,
        Err("22012".to_owned())
    );
    let other = "select born from people where id = 4";
    assert_eq!(outcome(&client, other).await, Err("25P02".to_owned()));
    client.batch_execute("rollback").await.expect("rollback");
    assert_eq!(outcome(&client, other).await, outcome(&direct, other).await);
}

#[tokio::test]
async fn statements_come_back_after_the_client_drops_them() {
    let (proxy, direct) = start("auto_prepare_reset", true).await;
    let client = proxy.connect(USER).await.expect("connect");
    let sql = "select name from people where id = 1";
    let expected = outcome(&direct, sql).await;
    for reset in ["DEALLOCATE ALL", "discard all", "select 1; deallocate all"] {
        assert_eq!(outcome(&client, sql).await, expected);
        client.batch_execute(reset).await.expect(reset);
        assert!(prepared_texts(&client).await.is_empty(), "after {reset}");
        assert_eq!(outcome(&client, sql).await, expected, "after {reset}");
        assert_eq!(prepared_texts(&client).await.len(), 1, "after {reset}");
    }
}

#[tokio::test]
async fn auto_prepare_can_be_turned_off() {
    let (proxy, _direct) = start("auto_prepare_off", false).await;
    let client = proxy.connect(USER).await.expect("connect");
    outcome(&client, "select name from people where id = 2")
        .await
        .expect("query");
    assert!(prepared_texts(&client).await.is_empty());
}
