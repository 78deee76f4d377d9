//! Rewriter speed: parse + rewrite of typical CRM statements (cache off), a
//! cache hit, and as baselines sqlparser's tokenizer and parser alone.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgveil::rewrite::{Rewriter, Target, Verdict};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Tokenizer;

use pgveil::crm::TABLES;

const STATEMENTS: [(&str, &str); 5] = [
    ("point_lookup", "SELECT customer_id, first_name, last_name, email FROM customers WHERE customer_id = $1"),
    ("list_by_region", "SELECT c.customer_id, c.email, c.city FROM customers c WHERE c.region = $1 ORDER BY c.last_name LIMIT 50"),
    ("email_prefix", "SELECT customer_id, email FROM customers WHERE email LIKE 'ann%' ORDER BY email LIMIT 20"),
    ("aggregate_by_country", "SELECT c.country, count(*), sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY c.country"),
    ("update", "UPDATE customers SET email = $1, last_active_at = now() WHERE customer_id = $2"),
];

fn rewriter(cache: usize) -> Rewriter {
    Rewriter::new(
        TABLES
            .iter()
            .map(|t| ("public".to_owned(), (*t).to_owned())),
        cache,
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

fn bench(c: &mut Criterion) {
    let t = target();
    let cold = rewriter(0);
    let warm = rewriter(1024);
    for (name, sql) in STATEMENTS {
        assert!(
            matches!(cold.rewrite(&t, sql), Verdict::Rewritten(_)),
            "{name}"
        );
        c.bench_function(&format!("parse_rewrite/{name}"), |b| {
            b.iter(|| cold.rewrite(&t, black_box(sql)))
        });
        c.bench_function(&format!("baseline_sqlparser_parse/{name}"), |b| {
            b.iter(|| Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql)))
        });
        c.bench_function(&format!("baseline_tokenize/{name}"), |b| {
            b.iter(|| {
                Tokenizer::new(&PostgreSqlDialect {}, black_box(sql)).tokenize_with_location()
            })
        });
        warm.rewrite(&t, sql);
        c.bench_function(&format!("cache_hit/{name}"), |b| {
            b.iter(|| warm.rewrite(&t, black_box(sql)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
