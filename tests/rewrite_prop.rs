//! Property: for generated statements over the tables and columns of the
//! example policy (policies/crm.toml), in every spelling a client may use
//! (case, quoting, schema qualification, aliases) and every position
//! (joins, subqueries in FROM/WHERE/SELECT, LATERAL, CTEs, set operations,
//! writes with subqueries), the rewriter rewrites them, the rewritten SQL
//! parses again, names no base table (checked by sqlparser's own AST walk,
//! independently of the rewriter), and rewriting it again changes nothing.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::base_tables::base_tables_named;
use pgveil::policy::Policy;
use pgveil::rewrite::{Rewriter, Target, Verdict};
use proptest::prelude::*;

/// A protected table and its (non-pattern) columns from the policy.
struct Table {
    name: String,
    columns: Vec<String>,
}

struct Example {
    schema: String,
    tables: Vec<Table>,
}

fn example() -> &'static Example {
    static EXAMPLE: OnceLock<Example> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.toml"));
        let policy = Policy::load(&[path]).expect("policies/crm.toml loads");
        let tables = policy
            .tables()
            .iter()
            .map(|(name, def)| Table {
                name: name.clone(),
                columns: def
                    .get()
                    .columns
                    .keys()
                    .filter(|c| !c.contains('*'))
                    .cloned()
                    .collect(),
            })
            .collect();
        Example {
            schema: policy.settings().base_schema,
            tables,
        }
    })
}

fn table_names() -> Vec<String> {
    example().tables.iter().map(|t| t.name.clone()).collect()
}

fn standard() -> Target {
    Target {
        schema: "veil_standard".into(),
        admin: false,
        read_only: false,
        min_group_size: None,
    }
}

/// A table name as a client may spell it.
fn spelled(name: &str, schema: &str, style: usize) -> String {
    match style {
        0 => name.to_owned(),
        1 => name.to_ascii_uppercase(),
        2 => format!("{schema}.{name}"),
        3 => format!("\"{name}\""),
        4 => format!("{}.\"{name}\"", schema.to_ascii_uppercase()),
        _ => {
            let mut chars = name.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect()
        }
    }
}

/// One aliased table reference and two of its columns: (`FROM` item, alias,
/// column, column).
fn source() -> impl Strategy<Value = (String, String, String, String)> {
    let count = example().tables.len();
    (
        0..count,
        0..6usize,
        0..4usize,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0..1000u32,
    )
        .prop_map(|(i, style, alias_style, c1, c2, n)| {
            let ex = example();
            let table = &ex.tables[i];
            let alias = format!("t{n}");
            let name = spelled(&table.name, &ex.schema, style);
            let item = match alias_style {
                0 => format!("{name} AS {alias}"),
                1 => format!("{name} {alias}"),
                2 => format!("{name} AS \"{alias}\""),
                _ => format!("{name} {}", alias.to_ascii_uppercase()),
            };
            (
                item,
                alias,
                c1.get(&table.columns).clone(),
                c2.get(&table.columns).clone(),
            )
        })
}

/// A query reading protected tables in some position.
fn query() -> impl Strategy<Value = String> {
    let leaf = source().prop_map(|(item, a, c1, c2)| {
        format!("SELECT {a}.{c1}, {a}.\"{c2}\" FROM {item} WHERE {a}.{c1} IS NOT NULL")
    });
    leaf.prop_recursive(3, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), source()).prop_map(|(q, (item, a, c1, _))| format!(
                "SELECT {a}.{c1} FROM {item} WHERE EXISTS ({q})"
            )),
            (inner.clone(), source()).prop_map(|(q, (item, a, c1, _))| format!(
                "SELECT {a}.{c1} FROM {item} WHERE {a}.{c1} IN (SELECT 1 FROM ({q}) AS s)"
            )),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) UNION ALL ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) EXCEPT ({b})")),
            (source(), source()).prop_map(|((i1, a1, c1, _), (i2, a2, c2, _))| format!(
                "SELECT {a1}.{c1}, {a2}.{c2} FROM {i1} LEFT JOIN {i2} ON {a1}.{c1} = {a2}.{c2}"
            )),
            (inner.clone(), source()).prop_map(|(q, (item, a, c1, _))| format!(
                "SELECT {a}.{c1} FROM {item} JOIN ({q}) AS y ON true"
            )),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!(
                "WITH w1 AS ({a}), w2 AS (SELECT * FROM w1) SELECT * FROM w2, ({b}) AS z"
            )),
            (inner.clone(), source()).prop_map(|(q, (item, a, c1, _))| format!(
                "SELECT (SELECT 1 FROM ({q}) AS sq LIMIT 1), {a}.{c1} FROM {item}"
            )),
            (inner, source()).prop_map(|(q, (item, a, c1, _))| format!(
                "SELECT {a}.{c1} FROM {item}, LATERAL ({q}) AS l ORDER BY 1 LIMIT 5"
            )),
        ]
    })
}

/// A statement: a query, `TABLE t` in a subquery, or a write whose subquery is one.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => query(),
        1 => (0..example().tables.len()).prop_map(|i| {
            format!("SELECT * FROM (TABLE {}) AS tt", example().tables[i].name)
        }),
        1 => (query(), source()).prop_map(|(q, (item, a, c1, _))| format!(
            "DELETE FROM {item} WHERE {a}.{c1} IN (SELECT 1 FROM ({q}) AS s)"
        )),
        1 => (query(), source()).prop_map(|(q, (item, a, c1, c2))| format!(
            "UPDATE {item} SET {c1} = {a}.{c2} WHERE EXISTS ({q})"
        )),
        1 => (query(), source()).prop_map(|(q, (item, _, c1, _))| {
            let table = item.split_whitespace().next().unwrap_or_default().to_owned();
            format!("INSERT INTO {table} ({c1}) SELECT 1 FROM ({q}) AS s")
        }),
    ]
}

/// The property for one statement the rewriter must rewrite.
fn check_rewrite(sql: &str) -> Result<(), TestCaseError> {
    let ex = example();
    let rewriter = Rewriter::new(
        ex.tables
            .iter()
            .map(|t| (ex.schema.clone(), t.name.clone())),
        64,
    );
    let out = match rewriter.rewrite(&standard(), sql) {
        Verdict::Rewritten(s) => s,
        other => return Err(TestCaseError::fail(format!("{sql}: {other:?}"))),
    };
    let named = base_tables_named(&out, &table_names(), &ex.schema).map_err(TestCaseError::fail)?;
    prop_assert!(
        named.is_empty(),
        "{sql}\n=> {out}\nnames base tables {named:?}"
    );
    prop_assert_eq!(rewriter.rewrite(&standard(), &out), Verdict::Forward);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn rewritten_statements_name_only_views(sql in statement()) {
        check_rewrite(&sql)?;
    }
}

#[test]
fn the_check_sees_base_tables_in_every_spelling() {
    let tables = table_names();
    let cases = [
        ("SELECT * FROM customers", 1),
        ("SELECT * FROM CUSTOMERS c", 1),
        ("SELECT * FROM public.\"customers\"", 1),
        (
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM veil_standard.orders o JOIN Orders p ON true)",
            1,
        ),
        (
            "SELECT * FROM \"veil_standard\".\"customers\" AS customers",
            0,
        ),
        ("WITH customers AS (SELECT 1) SELECT * FROM customers", 0),
        ("SELECT * FROM \"Customers\"", 0),
        ("SELECT * FROM other.customers", 0),
    ];
    for (sql, base_tables) in cases {
        let named = base_tables_named(sql, &tables, "public").expect("parses");
        assert_eq!(named.len(), base_tables, "{sql}: {named:?}");
    }
}
