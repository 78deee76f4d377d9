//! The rewriter over the protected tables of `policies/crm.toml`, for the
//! standard, read-only and anonymous targets, on arbitrary UTF-8 SQL. It
//! may not panic, a cached verdict must equal the first one, and a
//! Rewritten verdict for a text sqlparser can parse must parse again and
//! name no base table.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgveil::policy::Policy;
use pgveil::rewrite::{Rewriter, Target, Verdict};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

#[path = "../../tests/common/base_tables.rs"]
mod base_tables;

/// The protected tables of the example policy, as (schema, table).
fn protected() -> &'static [(String, String)] {
    static TABLES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/crm.toml"));
        Policy::load(&[path])
            .expect("policies/crm.toml loads")
            .protected_tables()
    })
}

fn targets() -> [Target; 3] {
    let standard = Target {
        schema: "veil_standard".into(),
        admin: false,
        read_only: false,
        min_group_size: None,
    };
    let read_only = Target {
        schema: "veil_sales".into(),
        read_only: true,
        ..standard.clone()
    };
    let anonymous = Target {
        schema: "veil_analytics".into(),
        min_group_size: Some(5),
        ..standard.clone()
    };
    [standard, read_only, anonymous]
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let protected = protected();
    let rewriter = Rewriter::new(protected.iter().cloned(), 16);
    let tables: Vec<String> = protected.iter().map(|(_, t)| t.clone()).collect();
    let schema = &protected[0].0;
    let input_parses = Parser::parse_sql(&PostgreSqlDialect {}, sql).is_ok();
    for target in targets() {
        let verdict = rewriter.rewrite(&target, sql);
        assert_eq!(
            rewriter.rewrite(&target, sql),
            verdict,
            "cache changed the verdict"
        );
        let Verdict::Rewritten(out) = verdict else {
            continue;
        };
        if !input_parses {
            continue;
        }
        match base_tables::base_tables_named(&out, &tables, schema) {
            Ok(named) => assert!(named.is_empty(), "{sql}\n=> {out}\nnames {named:?}"),
            Err(e) => panic!("{sql}\n=> rewritten SQL does not parse: {e}"),
        }
    }
});
