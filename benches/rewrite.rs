//! Rewriter speed: parse + rewrite of typical CRM statements (cache off), a
//! cache hit on the same text, a shape hit (the same statement with other
//! constants, as simple-protocol clients send it), and as baselines
//! sqlparser's tokenizer and parser alone.

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

/// The workload's statements as simple-protocol clients send them: the
/// constants inline, a different value each time.
fn with_constants(name: &str, i: usize) -> Option<String> {
    let sql = match name {
        "point_lookup" => format!("SELECT customer_id, first_name, last_name, email FROM customers WHERE customer_id = {i}"),
        "list_by_region" => format!("SELECT c.customer_id, c.email, c.city FROM customers c WHERE c.region = 'r{i}' ORDER BY c.last_name LIMIT 50"),
        "email_prefix" => format!("SELECT customer_id, email FROM customers WHERE email LIKE 'a{i}%' ORDER BY email LIMIT 20"),
        "update" => format!("UPDATE customers SET email = 'c{i}@example.com', last_active_at = now() WHERE customer_id = {i}"),
        _ => return None,
    };
    Some(sql)
}

/// Distinct constants per statement in the shape-hit bench.
const VARIANTS: usize = 4096;

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
        shape_hit(c, &t, name);
    }
}

fn shape_hit(c: &mut Criterion, t: &Target, name: &str) {
    let Some(first) = with_constants(name, 0) else {
        return;
    };
    let shaped = rewriter(1024);
    shaped.rewrite(t, &first);
    let variants: Vec<String> = (1..=VARIANTS)
        .filter_map(|i| with_constants(name, i))
        .collect();
    let before = shaped.cache_stats();
    for sql in &variants[..16] {
        assert!(
            matches!(shaped.rewrite(t, sql), Verdict::Rewritten(_)),
            "{name}"
        );
    }
    let after = shaped.cache_stats();
    assert_eq!(
        after.hits - before.hits,
        16,
        "{name}: not served by its shape"
    );
    let mut i = 0;
    c.bench_function(&format!("shape_hit/{name}"), |b| {
        b.iter(|| {
            i = (i + 1) % variants.len();
            shaped.rewrite(t, black_box(&variants[i]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
