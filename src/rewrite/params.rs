//! Statements a simple-protocol Query may run as a prepared statement.
//!
//! PostgreSQL parses, rewrites and plans every simple Query; a prepared
//! statement does that once per connection. pgveil runs a Query as Bind and
//! Execute of a statement it prepared itself when turning its constants
//! into parameters cannot change what the statement means: only constants
//! compared with `=`, `<>`, `!=`, `<`, `>`, `<=`, `>=`, `LIKE` or `ILIKE`
//! and followed by the end of a condition become parameters, declared with
//! the type PostgreSQL gives the literal (an integer as `int4` or `int8`, a
//! plain string as unknown, which takes its type from the other side as
//! the literal does). `ORDER BY 1`, `LIMIT 10`, typed literals
//! (`DATE '...'`), escape strings and everything else stay in the text.
//! One statement only (a multi-statement Query is one implicit
//! transaction), beginning with `SELECT`, `UPDATE`, `DELETE` or `WITH`,
//! and without `INTO`.

use super::lexer::{Kind, Lexer, StringKind, Token};

/// OID of `int4`.
const INT4: u32 = 23;
/// OID of `int8`.
const INT8: u32 = 20;
/// Parameter type left for PostgreSQL to infer, as for an untyped literal.
const UNSPECIFIED: u32 = 0;

/// Statements that may run as prepared statements.
const STATEMENTS: [&str; 4] = ["select", "update", "delete", "with"];

/// Operators whose right-hand constant may become a parameter.
const COMPARISONS: [&str; 7] = ["=", "<>", "!=", "<", ">", "<=", ">="];

/// Words that may follow such a constant.
const AFTER_WORDS: [&str; 14] = [
    "and",
    "or",
    "order",
    "group",
    "limit",
    "offset",
    "having",
    "returning",
    "union",
    "except",
    "intersect",
    "where",
    "from",
    "window",
];

/// A statement text with its constants as parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameterized {
    /// The text with `$1`, `$2`, ... in place of the constants.
    pub sql: String,
    /// The parameters' declared types (0: inferred).
    pub types: Vec<u32>,
    /// The parameters' values, in text format.
    pub values: Vec<String>,
}

/// `sql` as a statement with parameters, or None when it may not run as
/// a prepared statement (see the module documentation).
pub fn parameterize(sql: &str) -> Option<Parameterized> {
    let tokens: Vec<Token> = Lexer::new(sql).collect::<Result<_, _>>().ok()?;
    let body = statement_tokens(sql, &tokens)?;
    let mut out = Parameterized {
        sql: String::with_capacity(sql.len()),
        types: Vec::new(),
        values: Vec::new(),
    };
    let mut cursor = 0;
    for (i, token) in body.iter().enumerate() {
        let Some((ty, value)) = parameter(sql, body, i) else {
            continue;
        };
        out.sql.push_str(&sql[cursor..token.span.start]);
        out.types.push(ty);
        out.values.push(value);
        out.sql.push('$');
        out.sql.push_str(&out.values.len().to_string());
        cursor = token.span.end;
    }
    out.sql.push_str(&sql[cursor..]);
    Some(out)
}

/// The tokens of the one statement in `sql`, if it is one that may run
/// prepared.
fn statement_tokens<'t>(sql: &str, tokens: &'t [Token]) -> Option<&'t [Token]> {
    let body = match tokens.iter().position(|t| t.kind == Kind::Semicolon) {
        Some(at) if tokens[at..].iter().all(|t| t.kind == Kind::Semicolon) => &tokens[..at],
        Some(_) => return None,
        None => tokens,
    };
    let first = body.first()?;
    let starts = first.kind == Kind::Word
        && STATEMENTS
            .iter()
            .any(|s| sql[first.span.clone()].eq_ignore_ascii_case(s));
    let unsafe_token = body.iter().any(|t| match t.kind {
        Kind::Param => true,
        Kind::Word => sql[t.span.clone()].eq_ignore_ascii_case("into"),
        _ => false,
    });
    (starts && !unsafe_token).then_some(body)
}

/// The type and value of token `i` as a parameter, if it may be one.
fn parameter(sql: &str, tokens: &[Token], i: usize) -> Option<(u32, String)> {
    let token = &tokens[i];
    let text = &sql[token.span.clone()];
    let typed = match token.kind {
        Kind::Number => integer_type(text).map(|ty| (ty, text.to_owned())),
        Kind::String(StringKind::Standard) => plain_string(text).map(|v| (UNSPECIFIED, v)),
        _ => None,
    }?;
    let before = tokens.get(i.checked_sub(1)?)?;
    let after = tokens.get(i + 1);
    (compares(sql, before) && ends_condition(sql, after)).then_some(typed)
}

/// The type PostgreSQL gives an integer literal, for those pgveil passes
/// as parameters.
fn integer_type(text: &str) -> Option<u32> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = text.parse().ok()?;
    Some(if i32::try_from(value).is_ok() {
        INT4
    } else {
        INT8
    })
}

/// The value of a `'...'` literal without backslashes (whose meaning
/// depends on `standard_conforming_strings`).
fn plain_string(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    (!inner.contains('\\')).then(|| inner.replace("''", "'"))
}

fn compares(sql: &str, token: &Token) -> bool {
    let text = &sql[token.span.clone()];
    match token.kind {
        Kind::Operator => COMPARISONS.contains(&text),
        Kind::Word => text.eq_ignore_ascii_case("like") || text.eq_ignore_ascii_case("ilike"),
        _ => false,
    }
}

fn ends_condition(sql: &str, token: Option<&Token>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let text = &sql[token.span.clone()];
    match token.kind {
        Kind::Punct => text == ")" || text == ",",
        Kind::Word => AFTER_WORDS.iter().any(|w| text.eq_ignore_ascii_case(w)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sql: &str) -> Option<(String, Vec<u32>, Vec<String>)> {
        parameterize(sql).map(|p| (p.sql, p.types, p.values))
    }

    #[test]
    fn compared_constants_become_typed_parameters() {
        let (sql, types, values) =
            params("SELECT abalance FROM veil.pgbench_accounts WHERE aid = 12345;").unwrap();
        assert_eq!(
            sql,
            "SELECT abalance FROM veil.pgbench_accounts WHERE aid = $1;"
        );
        assert_eq!(types, vec![INT4]);
        assert_eq!(values, vec!["12345"]);
        let (sql, types, values) = params(
            "select * from c where region = 'it''s' and id >= 5000000000 and email like 'a%' order by 1 limit 50",
        )
        .unwrap();
        assert_eq!(
            sql,
            "select * from c where region = $1 and id >= $2 and email like $3 order by 1 limit 50"
        );
        assert_eq!(types, vec![UNSPECIFIED, INT8, UNSPECIFIED]);
        assert_eq!(values, vec!["it's", "5000000000", "a%"]);
    }

    #[test]
    fn constants_whose_meaning_depends_on_their_place_stay() {
        for sql in [
            "SELECT a FROM t ORDER BY 1",
            "SELECT a FROM t GROUP BY 1 LIMIT 5",
            "SELECT a FROM t WHERE d = DATE '2024-01-01'",
            "SELECT a FROM t WHERE x = 1.5",
            "SELECT a FROM t WHERE x = 'a\\b'",
            "SELECT a FROM t WHERE x = E'a'",
            "SELECT a FROM t WHERE x = 1 + y",
            "SELECT a FROM t WHERE x = 'a' COLLATE \"C\"",
            "SELECT a FROM t WHERE x = 'a'::text",
            "SELECT a FROM t WHERE x IN (1, 2)",
            "SELECT a FROM t WHERE x = -1",
            "SELECT 1",
        ] {
            let (text, types, _) = params(sql).unwrap();
            assert_eq!(text, sql);
            assert!(types.is_empty(), "{sql}");
        }
    }

    #[test]
    fn only_single_plain_statements_run_prepared() {
        for sql in [
            "SELECT 1; SELECT 2",
            "SELECT * INTO t2 FROM t WHERE a = 1",
            "INSERT INTO t VALUES (1)",
            "SET x = 1",
            "BEGIN",
            "SELECT $1",
            "COPY t TO STDOUT",
            "",
        ] {
            assert_eq!(params(sql), None, "{sql}");
        }
        assert!(params("UPDATE t SET a = 1, b = 'x' WHERE id = 7 RETURNING a").is_some());
    }
}
