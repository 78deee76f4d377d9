//! Table-driven tests of the whole rewriter.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;

const TABLES: [&str; 6] = [
    "sales_reps",
    "customers",
    "contact_preferences",
    "opportunities",
    "orders",
    "consents",
];

fn rewriter() -> Rewriter {
    Rewriter::new(
        TABLES
            .iter()
            .map(|t| ("public".to_owned(), (*t).to_owned())),
        1024,
    )
}

fn standard() -> Target {
    Target {
        schema: "veil_standard".into(),
        admin: false,
        read_only: false,
        min_group_size: None,
    }
}

fn read_only() -> Target {
    Target {
        read_only: true,
        ..standard()
    }
}

fn anonymous(k: u32) -> Target {
    Target {
        schema: "veil_anon".into(),
        min_group_size: Some(k),
        ..standard()
    }
}

fn run(target: &Target, sql: &str) -> Verdict {
    rewriter().rewrite(target, sql)
}

#[track_caller]
fn rewritten(target: &Target, sql: &str) -> String {
    match run(target, sql) {
        Verdict::Rewritten(s) => {
            match target.min_group_size {
                // the output names only views: rewriting it again changes nothing
                None => assert_eq!(run(target, &s), Verdict::Forward, "not idempotent: {s}"),
                Some(_) => {
                    Parser::parse_sql(&PostgreSqlDialect {}, &s)
                        .unwrap_or_else(|e| panic!("output does not re-parse: {s}: {e}"));
                }
            }
            s
        }
        other => panic!("{sql}: expected a rewrite, got {other:?}"),
    }
}

#[track_caller]
fn refused(target: &Target, sql: &str) -> Refusal {
    match run(target, sql) {
        Verdict::Refused(r) => r,
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_position_is_rewritten_exactly() {
    let cases = [
        (
            "SELECT * FROM customers WHERE customer_id = $1",
            r#"SELECT * FROM "veil_standard"."customers" AS customers WHERE customer_id = $1"#,
        ),
        (
            "select c.email from customers c where c.region = 'north'",
            r#"SELECT c.email FROM "veil_standard"."customers" c WHERE c.region = 'north'"#,
        ),
        (
            "SELECT customers.email FROM public.customers",
            r#"SELECT customers.email FROM "veil_standard"."customers" AS customers"#,
        ),
        (
            "SELECT * FROM CUSTOMERS",
            r#"SELECT * FROM "veil_standard"."customers" AS CUSTOMERS"#,
        ),
        (
            r#"SELECT * FROM "customers""#,
            r#"SELECT * FROM "veil_standard"."customers" AS "customers""#,
        ),
        (
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.customer_id",
            r#"SELECT * FROM "veil_standard"."customers" c JOIN "veil_standard"."orders" o ON o.customer_id = c.customer_id"#,
        ),
        (
            "SELECT * FROM sales_reps r, LATERAL (SELECT * FROM customers c WHERE c.rep_id = r.rep_id) x",
            r#"SELECT * FROM "veil_standard"."sales_reps" r, LATERAL (SELECT * FROM "veil_standard"."customers" c WHERE c.rep_id = r.rep_id) x"#,
        ),
        (
            "SELECT (SELECT count(*) FROM orders) FROM sales_reps WHERE EXISTS (SELECT 1 FROM consents) AND rep_id IN (SELECT rep_id FROM customers) GROUP BY 1 HAVING max(rep_id) > (SELECT min(amount) FROM opportunities)",
            r#"SELECT (SELECT count(*) FROM "veil_standard"."orders" AS orders) FROM "veil_standard"."sales_reps" AS sales_reps WHERE EXISTS (SELECT 1 FROM "veil_standard"."consents" AS consents) AND rep_id IN (SELECT rep_id FROM "veil_standard"."customers" AS customers) GROUP BY 1 HAVING max(rep_id) > (SELECT min(amount) FROM "veil_standard"."opportunities" AS opportunities)"#,
        ),
        (
            "SELECT email FROM customers UNION SELECT email FROM sales_reps",
            r#"SELECT email FROM "veil_standard"."customers" AS customers UNION SELECT email FROM "veil_standard"."sales_reps" AS sales_reps"#,
        ),
        (
            "WITH x AS (SELECT * FROM customers) SELECT * FROM x",
            r#"WITH x AS (SELECT * FROM "veil_standard"."customers" AS customers) SELECT * FROM x"#,
        ),
        (
            "INSERT INTO orders (order_id, customer_id) SELECT 1, customer_id FROM customers RETURNING orders.order_id",
            r#"INSERT INTO "veil_standard"."orders" (order_id, customer_id) SELECT 1, customer_id FROM "veil_standard"."customers" AS customers RETURNING orders.order_id"#,
        ),
        (
            "UPDATE customers SET email = $1 WHERE customer_id = $2",
            r#"UPDATE "veil_standard"."customers" AS customers SET email = $1 WHERE customer_id = $2"#,
        ),
        (
            "UPDATE customers SET region = 'x' FROM orders WHERE orders.customer_id = customers.customer_id",
            r#"UPDATE "veil_standard"."customers" AS customers SET region = 'x' FROM "veil_standard"."orders" AS orders WHERE orders.customer_id = customers.customer_id"#,
        ),
        (
            "DELETE FROM consents WHERE customer_id IN (SELECT customer_id FROM customers) RETURNING *",
            r#"DELETE FROM "veil_standard"."consents" AS consents WHERE customer_id IN (SELECT customer_id FROM "veil_standard"."customers" AS customers) RETURNING *"#,
        ),
        (
            "MERGE INTO customers c USING orders o ON c.customer_id = o.customer_id WHEN MATCHED THEN UPDATE SET region = 'x'",
            r#"MERGE INTO "veil_standard"."customers" c USING "veil_standard"."orders" o ON c.customer_id = o.customer_id WHEN MATCHED THEN UPDATE SET region = 'x'"#,
        ),
        ("TABLE customers", r#"TABLE "veil_standard"."customers""#),
        ("TABLE public.orders", r#"TABLE "veil_standard"."orders""#),
        (
            "COPY customers TO STDOUT",
            r#"COPY (SELECT * FROM "veil_standard"."customers" AS customers) TO STDOUT"#,
        ),
        (
            "COPY customers (email, region) TO STDOUT WITH (FORMAT csv)",
            r#"COPY (SELECT email, region FROM "veil_standard"."customers" AS customers) TO STDOUT (FORMAT csv)"#,
        ),
        (
            "COPY (SELECT email FROM customers) TO STDOUT",
            r#"COPY (SELECT email FROM "veil_standard"."customers" AS customers) TO STDOUT"#,
        ),
        (
            "COPY orders FROM STDIN",
            r#"COPY "veil_standard"."orders" FROM STDIN"#,
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers",
            r#"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM "veil_standard"."customers" AS customers"#,
        ),
        (
            "PREPARE p (int) AS SELECT * FROM customers WHERE customer_id = $1",
            r#"PREPARE p (INT) AS SELECT * FROM "veil_standard"."customers" AS customers WHERE customer_id = $1"#,
        ),
        (
            "LOCK TABLE orders IN SHARE MODE",
            r#"LOCK TABLE "veil_standard"."orders" IN SHARE MODE"#,
        ),
        (
            "SELECT public.customers.email FROM public.customers",
            r#"SELECT customers.email FROM "veil_standard"."customers" AS customers"#,
        ),
        (
            "SELECT * FROM public./* hidden */customers",
            r#"SELECT * FROM "veil_standard"."customers" AS customers"#,
        ),
        (
            "SELECT $$customers$$, * FROM customers",
            r#"SELECT $$customers$$, * FROM "veil_standard"."customers" AS customers"#,
        ),
        (
            "SELECT * FROM ONLY customers",
            r#"SELECT * FROM ONLY "veil_standard"."customers" AS customers"#,
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(rewritten(&standard(), sql), want, "input: {sql}");
    }
}

#[test]
fn cte_shadowing() {
    let cases = [
        (
            "WITH customers AS (SELECT 1 AS id) SELECT * FROM customers",
            None,
        ),
        (
            "WITH customers AS (SELECT * FROM public.customers) SELECT * FROM customers",
            Some(r#"WITH customers AS (SELECT * FROM "veil_standard"."customers" AS customers) SELECT * FROM customers"#),
        ),
        (
            // a non-recursive CTE does not see itself: the inner name is the table
            "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
            Some(r#"WITH customers AS (SELECT * FROM "veil_standard"."customers" AS customers) SELECT * FROM customers"#),
        ),
        (
            // a CTE only sees the CTEs before it
            "WITH a AS (SELECT * FROM orders), orders AS (SELECT 1) SELECT * FROM a, orders",
            Some(r#"WITH a AS (SELECT * FROM "veil_standard"."orders" AS orders), orders AS (SELECT 1) SELECT * FROM a, orders"#),
        ),
        (
            "WITH RECURSIVE orders AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM orders WHERE n < 3) SELECT * FROM orders",
            None,
        ),
        (
            // the CTE scope ends with its query
            "SELECT * FROM (WITH orders AS (SELECT 1) SELECT * FROM orders) x, orders",
            Some(r#"SELECT * FROM (WITH orders AS (SELECT 1) SELECT * FROM orders) x, "veil_standard"."orders" AS orders"#),
        ),
    ];
    for (sql, want) in cases {
        match want {
            None => assert_eq!(run(&standard(), sql), Verdict::Forward, "{sql}"),
            Some(w) => assert_eq!(rewritten(&standard(), sql), w, "{sql}"),
        }
    }
}

#[test]
fn unprotected_and_other_case_names_are_forwarded() {
    for sql in [
        "SELECT 1",
        r#"SELECT * FROM "Customers""#,
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM other_schema.customers",
        r#"SELECT * FROM "veil_standard".customers"#,
        "SELECT 'customers' AS t, $x$ from customers $x$",
        "-- select * from customers\nSELECT 1",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT a",
        "LISTEN x",
        "NOTIFY x",
        "FETCH 10 FROM c",
        "CLOSE c",
        "EXECUTE p(1)",
        "DEALLOCATE p",
        "DISCARD ALL",
        "RESET ALL",
        "SET statement_timeout = 0",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'utf8'",
        "SET standard_conforming_strings = on",
        "SET TIME ZONE 'UTC'",
        "SHOW server_version",
        "MOVE NEXT IN c",
        "SELECT current_setting('server_version_num')",
        "SELECT pg_catalog.version()",
        "",
        ";",
    ] {
        assert_eq!(run(&standard(), sql), Verdict::Forward, "{sql:?}");
    }
}

#[test]
fn admin_passes_through() {
    let admin = Target {
        admin: true,
        ..standard()
    };
    for sql in [
        "SELECT * FROM customers",
        "DROP TABLE customers",
        "garbage (((",
    ] {
        assert_eq!(run(&admin, sql), Verdict::Forward);
    }
}

#[test]
fn refusals_with_sqlstate() {
    use super::{INSUFFICIENT_PRIVILEGE as P, NOT_SUPPORTED as N};
    let cases = [
        ("CREATE TABLE x (a int)", P),
        ("CREATE TABLE x AS SELECT * FROM customers", P),
        ("CREATE VIEW v AS SELECT * FROM customers", P),
        ("ALTER TABLE customers ADD COLUMN x int", P),
        ("DROP TABLE customers", P),
        ("TRUNCATE customers", P),
        ("GRANT SELECT ON customers TO bob", P),
        ("REVOKE SELECT ON customers FROM bob", P),
        ("COMMENT ON TABLE customers IS 'x'", P),
        ("DO $$ BEGIN PERFORM 1; END $$", P),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            P,
        ),
        ("CREATE PROCEDURE p() LANGUAGE sql AS $$ select 1 $$", P),
        ("CALL p()", P),
        ("SELECT * INTO stolen FROM customers", P),
        ("SELECT 1 INTO stolen", P),
        ("SET ROLE postgres", P),
        ("SET LOCAL role = 'postgres'", P),
        ("RESET ROLE", P),
        ("SET SESSION AUTHORIZATION postgres", P),
        ("RESET SESSION AUTHORIZATION", P),
        ("SET pgveil.purpose = 'marketing'", P),
        ("SET SESSION pgveil.key TO 'x'", P),
        ("RESET pgveil.purpose", P),
        ("SET search_path TO evil, public", P),
        ("SET search_path = public", P),
        ("SELECT set_config('search_path', 'evil', false)", P),
        ("SELECT set_config('application_name', 'x', false)", P),
        ("SELECT current_setting('pgveil.key')", P),
        ("SHOW pgveil.key", P),
        ("SHOW ALL", P),
        (
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
            P,
        ),
        ("UPDATE pg_catalog.pg_class SET relname = 'x'", P),
        (
            "SELECT query_to_xml('select * from customers', true, true, '')",
            P,
        ),
        (
            "SELECT pg_catalog.query_to_xml('select 1', true, true, '')",
            P,
        ),
        (
            "SELECT * FROM query_to_xml_and_xmlschema('select 1', true, true, '')",
            P,
        ),
        ("SELECT table_to_xml('customers', true, true, '')", P),
        ("SELECT cursor_to_xml('c', 10, true, true, '')", P),
        ("SELECT schema_to_xml('public', true, true, '')", P),
        ("SELECT database_to_xml(true, true, '')", P),
        ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", P),
        ("SELECT dblink_exec('x', 'drop table y')", P),
        ("SELECT pg_read_file('/etc/passwd')", P),
        ("SELECT pg_read_binary_file('/etc/passwd')", P),
        ("SELECT pg_ls_dir('.')", P),
        ("SELECT pg_stat_file('x')", P),
        ("SELECT lo_import('/etc/passwd')", P),
        ("SELECT lo_export(1, '/tmp/x')", P),
        ("SELECT lo_get(1)", P),
        ("SELECT lo_open(1, 262144)", P),
        ("SELECT loread(0, 10)", P),
        ("SELECT lo_from_bytea(0, 'x')", P),
        ("SELECT pg_file_write('x', 'y', false)", P),
        (
            "SELECT * FROM ts_stat('select to_tsvector(email) from customers')",
            P,
        ),
        ("SELECT evil.f(1)", P),
        ("SELECT * FROM evil.f(1)", P),
        ("SELECT * FROM pg_stats WHERE tablename = 'customers'", P),
        ("SELECT * FROM pg_catalog.pg_statistic", P),
        ("SELECT * FROM pg_stats_ext", P),
        ("SELECT * FROM pg_stats_ext_exprs", P),
        ("SELECT * FROM pg_statistic_ext_data", P),
        ("SELECT query FROM pg_stat_activity", P),
        ("SELECT * FROM pg_settings", P),
        ("EXPLAIN SELECT * FROM customers", P),
        ("EXPLAIN ANALYZE SELECT * FROM customers", P),
        ("EXPLAIN SELECT 1", P),
        ("COPY customers TO '/tmp/x'", P),
        ("COPY customers FROM '/tmp/x'", P),
        ("COPY (SELECT 1) TO PROGRAM 'cat > /tmp/x'", P),
        ("COPY orders FROM PROGRAM 'cat /etc/passwd'", P),
        ("LOAD 'evil'", P),
        ("ALTER SYSTEM SET work_mem = '1GB'", P),
        ("CHECKPOINT", P),
        ("VACUUM customers", P),
        ("ANALYZE customers", P),
        ("SET client_encoding = 'SJIS'", P),
        ("SET client_encoding TO 'LATIN1'", P),
        ("SET NAMES 'GBK'", P),
        ("SET standard_conforming_strings = off", P),
        ("SET standard_conforming_strings TO false", P),
        (r#"SELECT * FROM U&"cust\006fmers""#, N),
        (r#"SELECT * FROM U&"d\0061ta""#, N),
        (
            "SELECT * FROM customers WHERE x OPERATOR(pg_catalog.~~~) 1 ???",
            N,
        ),
        ("FROBNICATE customers", N),
        ("SELECT 'unterminated", N),
    ];
    for (sql, state) in cases {
        let r = refused(&standard(), sql);
        assert_eq!(r.sqlstate, state, "{sql}: {r:?}");
        assert!(r.message.starts_with("pgveil"), "{sql}: {}", r.message);
        assert!(r.hint.as_deref().is_some_and(|h| !h.is_empty()), "{sql}");
    }
}

#[test]
fn read_only_targets_refuse_writes() {
    for sql in [
        "INSERT INTO orders (order_id) VALUES (1)",
        "UPDATE customers SET email = 'x'",
        "DELETE FROM customers",
        "MERGE INTO customers c USING orders o ON true WHEN MATCHED THEN DELETE",
        "COPY orders FROM STDIN",
        "WITH x AS (DELETE FROM customers RETURNING *) SELECT * FROM x",
        "INSERT INTO unprotected_log VALUES (1)",
        "PREPARE p AS DELETE FROM customers",
    ] {
        let r = refused(&read_only(), sql);
        assert_eq!(r.sqlstate, "42501", "{sql}");
        assert!(r.message.contains("read-only"), "{sql}: {}", r.message);
    }
    rewritten(&read_only(), "SELECT * FROM customers");
    rewritten(&read_only(), "COPY customers TO STDOUT");
}

#[test]
fn multi_statement_text_is_rewritten_as_a_whole() {
    assert_eq!(
        rewritten(&standard(), "select 1; select * from customers"),
        r#"select 1; SELECT * FROM "veil_standard"."customers" AS customers"#
    );
    assert_eq!(
        rewritten(
            &standard(),
            "TABLE orders;SHOW search_path;  select * from orders o;"
        ),
        r#"TABLE "veil_standard"."orders";SHOW search_path;  SELECT * FROM "veil_standard"."orders" o;"#
    );
    let r = refused(&standard(), "select * from customers; drop table customers");
    assert_eq!(r.sqlstate, "42501");
    let r = refused(&standard(), "select 1; set role postgres; select 2");
    assert_eq!(r.sqlstate, "42501");
    let multi_line = "SELECT 'é';\n  SELECT *\n  FROM customers";
    assert_eq!(
        rewritten(&standard(), multi_line),
        "SELECT 'é';\n  SELECT * FROM \"veil_standard\".\"customers\" AS customers"
    );
}

/// Catalog queries sent by psql 15 (`psql -E`) and pgJDBC metadata calls.
const CLIENT_CATALOG_QUERIES: &[&str] = &[
    // \dt
    r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#,
    // \d customers (first query)
    r#"SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;"#,
    // \d customers (columns)
    r#"SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16390' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;"#,
    // \d customers (extended statistics definitions)
    r#"SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = '16390'
ORDER BY nsp, stxname;"#,
    // \dn
    r#"SELECT n.nspname AS "Name",
  pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1;"#,
    // \df with a pattern
    r#"SELECT n.nspname as "Schema", p.proname as "Name"
FROM pg_catalog.pg_proc p
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname OPERATOR(pg_catalog.~) '^(lo_.*)$' COLLATE pg_catalog.default
ORDER BY 1, 2;"#,
    // pgJDBC DatabaseMetaData.getPrimaryKeys
    r#"SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND ct.relname = E'customers' AND i.indisprimary"#,
    // pgJDBC getTables
    r#"SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, c.relname AS TABLE_NAME,  CASE n.nspname ~ '^pg_' OR n.nspname = 'information_schema'  WHEN true THEN CASE  WHEN n.nspname = 'pg_catalog' OR n.nspname = 'information_schema' THEN CASE c.relkind   WHEN 'r' THEN 'SYSTEM TABLE'   ELSE NULL   END  ELSE NULL  END  ELSE CASE c.relkind   WHEN 'r' THEN 'TABLE'   WHEN 'v' THEN 'VIEW'   ELSE NULL   END  END  AS TABLE_TYPE, d.description AS REMARKS FROM pg_catalog.pg_namespace n, pg_catalog.pg_class c  LEFT JOIN pg_catalog.pg_description d ON (c.oid = d.objoid AND d.objsubid = 0  and d.classoid = 'pg_class'::regclass)  WHERE c.relnamespace = n.oid  AND c.relname LIKE 'customers' ORDER BY TABLE_TYPE,TABLE_SCHEM,TABLE_NAME "#,
    // pgJDBC type lookup
    "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid   FROM pg_catalog.pg_type   LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r           from pg_namespace as ns           join ( select s.r, (current_schemas(false))[s.r] as nspname                    from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r          using ( nspname )        ) as sp     ON sp.nspoid = typnamespace  WHERE pg_type.oid = $1  ORDER BY sp.r, pg_type.oid DESC",
    "SET extra_float_digits = 3",
    "SET application_name = 'PostgreSQL JDBC Driver'",
    "select current_schema()",
    "show standard_conforming_strings",
    "select pg_catalog.version()",
];

#[test]
fn client_catalog_queries_are_forwarded() {
    for sql in CLIENT_CATALOG_QUERIES {
        assert_eq!(run(&standard(), sql), Verdict::Forward, "{sql}");
        assert_eq!(run(&anonymous(5), sql), Verdict::Forward, "{sql}");
    }
}

#[test]
fn unparsable_statements() {
    // not parsed by sqlparser, names no protected table: forwarded
    for sql in [
        "SELECT x FROM pg_class WHERE relname OPERATOR(pg_catalog.~~) 'y' ???",
        "MOVE FORWARD 5 IN c",
        "SELECT 1 FROM t WHERE a = ANY ??? (b)",
    ] {
        assert_eq!(run(&standard(), sql), Verdict::Forward, "{sql}");
    }
    // names a protected table, even quoted or in another case: refused 0A000
    for sql in [
        "SELECT 1 FROM t WHERE a = ANY ??? (SELECT id FROM customers)",
        r#"SELECT 1 ??? "CUSTOMERS""#,
        "MOVE FORWARD 5 IN orders",
        "SELECT 1 ??? (TABLE customers)",
    ] {
        assert_eq!(refused(&standard(), sql).sqlstate, "0A000", "{sql}");
    }
    // unparsable writes or SELECT INTO are never forwarded
    for sql in [
        "WITH x AS (DELETE FROM log RETURNING *) SELECT ??? FROM x",
        "SELECT 1 ??? INTO t",
    ] {
        assert!(
            matches!(run(&standard(), sql), Verdict::Refused(_)),
            "{sql}"
        );
    }
}

#[test]
fn anonymous_targets_suppress_small_groups() {
    let t = anonymous(5);
    let cases = [
        (
            "SELECT country, count(*) FROM customers GROUP BY country",
            r#"SELECT country, count(*) FROM "veil_anon"."customers" AS customers GROUP BY country HAVING count(*) >= 5"#,
        ),
        (
            "SELECT region, avg(annual_income) FROM customers GROUP BY region HAVING avg(annual_income) > 10",
            r#"SELECT region, avg(annual_income) FROM "veil_anon"."customers" AS customers GROUP BY region HAVING (avg(annual_income) > 10) AND count(*) >= 5"#,
        ),
        (
            "SELECT count(*) FROM customers WHERE region = 'north'",
            r#"SELECT count(*) FROM "veil_anon"."customers" AS customers WHERE region = 'north' HAVING count(*) >= 5"#,
        ),
        (
            "SELECT c.region, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY c.region",
            r#"SELECT c.region, sum(o.total) FROM "veil_anon"."customers" c JOIN "veil_anon"."orders" o ON o.customer_id = c.customer_id GROUP BY c.region HAVING count(*) >= 5"#,
        ),
        (
            "SELECT x.region, x.n FROM (SELECT region, count(*) AS n FROM customers GROUP BY region) x",
            r#"SELECT x.region, x.n FROM (SELECT region, count(*) AS n FROM "veil_anon"."customers" AS customers GROUP BY region HAVING count(*) >= 5) x"#,
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(rewritten(&t, sql), want, "{sql}");
    }
    for sql in [
        "SELECT * FROM customers",
        "SELECT email FROM customers WHERE region = 'north'",
        "SELECT email, count(*) OVER () FROM customers",
        "SELECT count(*) FROM (SELECT * FROM customers) s",
        "SELECT region, count(*) FROM customers WHERE customer_id IN (SELECT customer_id FROM orders) GROUP BY region",
        "TABLE customers",
        "COPY customers TO STDOUT",
        "SELECT region, array_agg(email) FROM customers GROUP BY region",
        "SELECT string_agg(email, ',') FROM customers",
        "SELECT count(*) FROM customers WHERE customer_id = 42",
        "SELECT count(*) FROM customers WHERE email LIKE 'bob%'",
        "SELECT avg(annual_income) FROM customers WHERE customer_id <> 42",
        "SELECT avg(annual_income) FROM customers WHERE national_id IN ('a', 'b')",
        "INSERT INTO orders (order_id) VALUES (1)",
    ] {
        assert_eq!(refused(&t, sql).sqlstate, "42501", "{sql}");
    }
    // no protected table: nothing to suppress
    assert_eq!(run(&t, "SELECT 1"), Verdict::Forward);
}

#[test]
fn cache_hit_returns_the_same_verdict() {
    let rw = rewriter();
    let t = standard();
    let sql = "SELECT * FROM customers WHERE customer_id = $1";
    let first = rw.rewrite(&t, sql);
    assert!(matches!(first, Verdict::Rewritten(_)));
    assert_eq!(rw.rewrite(&t, sql), first);
    // the same text for another view set is a different entry
    let other = Target {
        schema: "veil_personal".into(),
        ..standard()
    };
    match rw.rewrite(&other, sql) {
        Verdict::Rewritten(s) => assert!(s.contains("\"veil_personal\".\"customers\"")),
        v => panic!("{v:?}"),
    }
    let refusal = rw.rewrite(&t, "DROP TABLE customers");
    assert_eq!(rw.rewrite(&t, "DROP TABLE customers"), refusal);
}

#[test]
fn rewriter_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rewriter>();
}

#[test]
fn unhandled_positions_fail_closed() {
    // parsed, but a protected name sits where the walk rewrites nothing
    for sql in [
        "SELECT customers FROM orders",
        "SELECT * FROM orders WHERE customers IS NULL",
        "LISTEN customers",
        "SELECT * FROM orders o, LATERAL (SELECT customers) x",
    ] {
        let r = refused(&standard(), sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(r.message.contains("customers"), "{sql}: {}", r.message);
    }
    // user-written aliases and CTE names equal to a table name are fine
    assert_eq!(
        rewritten(
            &standard(),
            "SELECT customers.email FROM orders AS customers"
        ),
        r#"SELECT customers.email FROM "veil_standard"."orders" AS customers"#
    );
}

#[test]
fn string_and_comment_tricks() {
    // standard_conforming_strings = on: a backslash does not escape the quote
    assert_eq!(
        rewritten(&standard(), r"SELECT 'a\', * FROM customers --'"),
        r#"SELECT 'a\', * FROM "veil_standard"."customers" AS customers"#
    );
    assert_eq!(
        rewritten(&standard(), r"SELECT E'it\'s', * FROM customers"),
        r#"SELECT E'it\'s', * FROM "veil_standard"."customers" AS customers"#
    );
    assert_eq!(
        rewritten(
            &standard(),
            "SELECT * FROM /* x */ customers /* y */ WHERE 1 = 1"
        ),
        r#"SELECT * FROM "veil_standard"."customers" AS customers WHERE 1 = 1"#
    );
    assert_eq!(
        rewritten(&standard(), "SELECT * FROM customers;"),
        r#"SELECT * FROM "veil_standard"."customers" AS customers;"#
    );
    // a PREPARE body goes through the same rules
    assert_eq!(
        refused(&standard(), "PREPARE p AS SELECT * FROM pg_stats").sqlstate,
        "42501"
    );
    assert_eq!(
        refused(&standard(), "PREPARE p AS SELECT * INTO t FROM customers").sqlstate,
        "42501"
    );
}

/// `sql` with every number and standard string constant changed.
fn vary_constants(sql: &str) -> String {
    let mut out = String::new();
    let mut cursor = 0;
    for token in lexer::Lexer::new(sql) {
        let token = token.expect("terminated");
        let text = &sql[token.span.clone()];
        let varied = match token.kind {
            lexer::Kind::Number => format!("{text}7"),
            lexer::Kind::String(lexer::StringKind::Standard) => {
                format!("{}q'", &text[..text.len() - 1])
            }
            _ => continue,
        };
        out.push_str(&sql[cursor..token.span.start]);
        out.push_str(&varied);
        cursor = token.span.end;
    }
    out.push_str(&sql[cursor..]);
    out
}

#[test]
fn shape_fast_path_gives_the_verdict_of_a_full_analysis() {
    let statements = [
        "SELECT customer_id, email FROM customers WHERE customer_id = 42",
        "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.customer_id WHERE o.total > 10.5 AND c.region = 'north' LIMIT 20 OFFSET 5",
        "select email from customers where email like 'ann%' order by email limit 20",
        "SELECT country, count(*) FROM customers WHERE region = 'north' GROUP BY country HAVING count(*) > 3",
        "UPDATE customers SET email = 'x@example.org', city = 'Vilnius' WHERE customer_id = 7",
        "INSERT INTO orders (order_id, customer_id, total) VALUES (1, 2, 3.5), (4, 5, 6)",
        "DELETE FROM opportunities WHERE opportunity_id = 9",
        "WITH x AS (SELECT * FROM customers WHERE customer_id < 100) SELECT count(*) FROM x",
        "SELECT 1, 'a', E'b\\n', $$c$$",
        "SELECT * FROM pg_stats WHERE attname = 'email'",
        "SELECT current_setting('application_name')",
        "SELECT * FROM customers WHERE date_of_birth > DATE '1980-01-01'",
        "SELECT * FROM customers WHERE created_at > now() - INTERVAL '3 days'",
        "SELECT customers FROM orders WHERE total = 1",
        "select 1; select * from customers where customer_id = 2; select 3",
        "SELECT * FROM customers WHERE customer_id IN (1, 2, 3) AND 'x' = 'x'",
    ];
    let targets = [standard(), read_only(), anonymous(5)];
    for target in &targets {
        for sql in statements {
            let warmed = rewriter();
            let variant = vary_constants(sql);
            assert_ne!(variant, sql);
            warmed.rewrite(target, &variant);
            let fresh = Rewriter::new(
                TABLES
                    .iter()
                    .map(|t| ("public".to_owned(), (*t).to_owned())),
                0,
            );
            assert_eq!(
                warmed.rewrite(target, sql),
                fresh.rewrite(target, sql),
                "{sql} after {variant} for {}",
                target.schema
            );
        }
    }
}

#[test]
fn shape_hits_still_refuse_pgveil_settings() {
    let rw = rewriter();
    let t = standard();
    assert_eq!(
        rw.rewrite(&t, "SELECT current_setting('application_name')"),
        Verdict::Forward
    );
    for sql in [
        "SELECT current_setting('pgveil.view')",
        "SELECT current_setting(' PgVeil.view')",
        r"SELECT current_setting(E'\x70gveil.view')",
    ] {
        assert_eq!(refused(&t, sql).sqlstate, "42501", "{sql}");
        assert!(
            matches!(rw.rewrite(&t, sql), Verdict::Refused(_)),
            "{sql} on a warm shape"
        );
    }
}

#[test]
fn shape_hits_are_counted_as_cache_hits() {
    let rw = rewriter();
    let t = standard();
    for id in 0..10 {
        let sql = format!("SELECT email FROM customers WHERE customer_id = {id}");
        assert_eq!(
            rw.rewrite(&t, &sql),
            Verdict::Rewritten(format!(
                r#"SELECT email FROM "veil_standard"."customers" AS customers WHERE customer_id = {id}"#
            ))
        );
    }
    assert_eq!(rw.cache_stats(), CacheStats { hits: 9, misses: 1 });
}
