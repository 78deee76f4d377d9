//! Property: for generated queries over the protected tables, the rewritten
//! SQL never names a base table unless qualified by the view set schema, and
//! it always re-parses.

use pgveil::rewrite::{Rewriter, Target, Verdict};
use proptest::prelude::*;
use sqlparser::ast::{visit_relations, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

use pgveil::crm::TABLES;

fn rewriter() -> Rewriter {
    Rewriter::new(
        TABLES
            .iter()
            .map(|t| ("public".to_owned(), (*t).to_owned())),
        64,
    )
}

fn target() -> Target {
    Target {
        schema: "veil_standard".into(),
        admin: false,
        read_only: false,
        min_group_size: None,
    }
}

/// A table reference in one of the spellings a client may use.
fn table_ref() -> impl Strategy<Value = String> {
    (0..TABLES.len(), 0..4usize).prop_map(|(i, style)| {
        let t = TABLES[i];
        match style {
            0 => t.to_owned(),
            1 => t.to_ascii_uppercase(),
            2 => format!("public.{t}"),
            _ => format!("\"{t}\""),
        }
    })
}

/// A query that reads protected tables in some position.
fn query() -> impl Strategy<Value = String> {
    let leaf = table_ref().prop_map(|t| format!("SELECT * FROM {t}"));
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), table_ref())
                .prop_map(|(q, t)| format!("SELECT * FROM {t} WHERE EXISTS ({q})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) UNION ALL ({b})")),
            (inner.clone(), table_ref())
                .prop_map(|(q, t)| format!("SELECT * FROM {t} AS x JOIN ({q}) AS y ON true")),
            inner
                .clone()
                .prop_map(|q| format!("WITH w AS ({q}) SELECT * FROM w")),
            (inner.clone(), table_ref())
                .prop_map(|(q, t)| format!("SELECT (SELECT 1 FROM ({q}) AS sq LIMIT 1) FROM {t}")),
            (inner, table_ref())
                .prop_map(|(q, t)| { format!("SELECT * FROM {t}, LATERAL ({q}) AS l") }),
        ]
    })
}

/// A statement: a query, or a write whose subquery is one.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        query(),
        (query(), table_ref()).prop_map(|(q, t)| {
            format!("DELETE FROM {t} WHERE customer_id IN (SELECT customer_id FROM ({q}) AS s)")
        }),
        (query(), table_ref())
            .prop_map(|(q, t)| format!("INSERT INTO {t} SELECT * FROM ({q}) AS s")),
    ]
}

fn relations(stmts: &[Statement]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let _ = visit_relations(&stmts.to_vec(), |name| {
        out.push(name.0.iter().map(|p| p.to_string()).collect());
        ControlFlow::<()>::Continue(())
    });
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn rewritten_queries_name_only_views(sql in statement()) {
        let rw = rewriter();
        let out = match rw.rewrite(&target(), &sql) {
            Verdict::Rewritten(s) => s,
            Verdict::Forward => sql.clone(),
            Verdict::Refused(r) => return Err(TestCaseError::fail(format!("{sql}: {r:?}"))),
        };
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, &out)
            .map_err(|e| TestCaseError::fail(format!("{out}: {e}")))?;
        for parts in relations(&stmts) {
            let last = parts.last().cloned().unwrap_or_default();
            let base = TABLES.iter().any(|t| last.eq_ignore_ascii_case(t) || last == format!("\"{t}\""));
            let cte = parts.len() == 1 && parts[0] == "w";
            prop_assert!(
                !base || cte || parts[0] == "\"veil_standard\"",
                "{sql}\n=> {out}\nunqualified relation {parts:?}"
            );
        }
        // rewriting the output again changes nothing
        prop_assert_eq!(rw.rewrite(&target(), &out), Verdict::Forward);
    }
}
