//! Statement shapes: the text of a statement with its constants taken out,
//! so that `... WHERE id = 7` and `... WHERE id = 8` share one cached
//! verdict, and a template that puts a statement's own constants back into
//! the rewritten text.
//!
//! A shape is cached only for statements whose verdict cannot depend on
//! the value of a constant: queries and DML (`SELECT`, `WITH`, `VALUES`,
//! `TABLE`, `INSERT`, `UPDATE`, `DELETE`). `SET` values, `COPY` options and
//! everything else are cached by their exact text. The one rule that reads
//! constants in those statements, the refusal of strings naming `pgveil.*`
//! settings, is checked on every use of a shape ([`Shape::constants_plain`]).
//!
//! A template is made by rewriting a *probe*: the statement with every
//! constant replaced by a numbered placeholder (`$100000000`, ...), which
//! sqlparser carries through unchanged. It is kept only when the probe's
//! verdict, filled with the statement's own constants, equals the verdict
//! for the statement itself (see `cache.rs`).

use std::borrow::Cow;
use std::ops::Range;

use super::lexer::{Kind, Lexer, StringKind, Token};

/// Placeholders in a probe are numbered from here, far above any real
/// parameter number (PostgreSQL allows at most 65535).
const PLACEHOLDER_BASE: usize = 100_000_000;

/// Statements whose verdict depends only on their shape.
const SHAPED_STATEMENTS: [&str; 7] = [
    "select", "with", "values", "table", "insert", "update", "delete",
];

/// The shape of one Query or Parse text.
#[derive(Debug)]
pub struct Shape<'a> {
    sql: &'a str,
    /// The text with each constant replaced by `\0` and a letter naming its
    /// kind (a Query text cannot contain `\0`); the text itself when it has
    /// no constants.
    pub key: Cow<'a, str>,
    /// Where the constants are, in order.
    pub constants: Vec<Range<usize>>,
}

impl<'a> Shape<'a> {
    /// The shape of `sql`, or None when its verdict may depend on a
    /// constant's value or the text does not lex.
    pub fn of(sql: &'a str) -> Option<Self> {
        let mut constants = Vec::new();
        let mut key = String::new();
        let mut cursor = 0;
        let mut statement_start = true;
        for token in Lexer::new(sql) {
            let token = token.ok()?;
            if statement_start && !starts_shaped_statement(sql, &token) {
                return None;
            }
            statement_start = token.kind == Kind::Semicolon;
            match token.kind {
                Kind::Param if token.span.len() > 9 => return None,
                Kind::Number | Kind::String(_) => {
                    key.push_str(&sql[cursor..token.span.start]);
                    key.push('\0');
                    key.push(kind_letter(token.kind));
                    cursor = token.span.end;
                    constants.push(token.span);
                }
                _ => {}
            }
        }
        let key = if constants.is_empty() {
            Cow::Borrowed(sql)
        } else {
            key.push_str(&sql[cursor..]);
            Cow::Owned(key)
        };
        Some(Shape {
            sql,
            key,
            constants,
        })
    }

    /// The text with each constant replaced by its numbered placeholder.
    pub fn probe(&self) -> String {
        let mut out = String::with_capacity(self.sql.len() + 8 * self.constants.len());
        let mut cursor = 0;
        for (i, span) in self.constants.iter().enumerate() {
            out.push_str(&self.sql[cursor..span.start]);
            out.push('$');
            out.push_str(&(PLACEHOLDER_BASE + i).to_string());
            cursor = span.end;
        }
        out.push_str(&self.sql[cursor..]);
        out
    }

    /// True unless a string constant might name a `pgveil.*` setting
    /// (any mention of "pgveil", or escapes that could spell it); such
    /// statements take the full analysis.
    pub fn constants_plain(&self) -> bool {
        self.constants.iter().all(|span| {
            let text = &self.sql[span.clone()];
            let escapes = text.starts_with(['e', 'E', 'u', 'U']) && text.contains('\\');
            !escapes && !contains_ignore_case(text, "pgveil")
        })
    }

    /// The text of the `i`-th constant.
    fn constant(&self, i: usize) -> &str {
        &self.sql[self.constants[i].clone()]
    }
}

/// A rewritten text with holes for the constants of the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    len_hint: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Constant(usize),
}

impl Template {
    /// The template of a probe's rewritten text, or None unless every
    /// constant's placeholder occurs in it exactly once.
    pub fn from_rewritten_probe(rewritten: &str, constants: usize) -> Option<Template> {
        let mut pieces = Vec::new();
        let mut seen = vec![false; constants];
        let mut cursor = 0;
        for token in Lexer::new(rewritten) {
            let token = token.ok()?;
            let Some(i) = placeholder_index(rewritten, &token) else {
                continue;
            };
            if i >= constants || std::mem::replace(&mut seen[i], true) {
                return None;
            }
            pieces.push(Piece::Text(rewritten[cursor..token.span.start].into()));
            pieces.push(Piece::Constant(i));
            cursor = token.span.end;
        }
        pieces.push(Piece::Text(rewritten[cursor..].into()));
        let len_hint = rewritten.len();
        seen.iter()
            .all(|&s| s)
            .then_some(Template { len_hint, pieces })
    }

    /// The rewritten text for a statement of this template's shape.
    pub fn fill(&self, shape: &Shape<'_>) -> String {
        let mut out = String::with_capacity(self.len_hint + shape.sql.len() / 2);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Constant(i) => out.push_str(shape.constant(*i)),
            }
        }
        out
    }
}

fn placeholder_index(text: &str, token: &Token) -> Option<usize> {
    if token.kind != Kind::Param {
        return None;
    }
    let n: usize = text[token.span.start + 1..token.span.end].parse().ok()?;
    n.checked_sub(PLACEHOLDER_BASE)
}

fn starts_shaped_statement(sql: &str, token: &Token) -> bool {
    match token.kind {
        Kind::Word => {
            let word = &sql[token.span.clone()];
            SHAPED_STATEMENTS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(word))
        }
        Kind::Punct => &sql[token.span.clone()] == "(",
        Kind::Semicolon => true,
        _ => false,
    }
}

fn kind_letter(kind: Kind) -> char {
    match kind {
        Kind::Number => 'n',
        Kind::String(StringKind::Standard) => 's',
        Kind::String(StringKind::Escape) => 'e',
        Kind::String(StringKind::National) => 'N',
        Kind::String(StringKind::Bit) => 'b',
        Kind::String(StringKind::Hex) => 'x',
        Kind::String(StringKind::Unicode) => 'u',
        Kind::String(StringKind::Dollar) => 'd',
        _ => '?',
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_differing_in_constants_share_a_shape() {
        let a = Shape::of("SELECT * FROM t WHERE id = 7 AND s = 'x'").expect("shaped");
        let b = Shape::of("SELECT * FROM t WHERE id = 123 AND s = 'it''s'").expect("shaped");
        assert_eq!(a.key, b.key);
        assert_ne!(
            a.key,
            Shape::of("SELECT * FROM t WHERE id = 7 AND s = E'x'")
                .expect("shaped")
                .key,
            "string flavours are part of the shape"
        );
        assert_ne!(
            a.key,
            Shape::of("SELECT * FROM t WHERE id = 7 OR s = 'x'")
                .expect("shaped")
                .key
        );
    }

    #[test]
    fn only_queries_and_dml_have_shapes() {
        for sql in [
            "select 1",
            "WITH x AS (select 1) select * from x",
            "(select 1) union (select 2)",
            "insert into t values (1)",
            "Update t set a = 1",
            "delete from t where a = 'b'; select 2;",
            "values (1)",
        ] {
            assert!(Shape::of(sql).is_some(), "{sql}");
        }
        for sql in [
            "set client_encoding = 'LATIN1'",
            "select 1; set x = 1",
            "copy t to stdout with (format 'csv')",
            "prepare p as select 1",
            "show x",
            "select 'unterminated",
            "select $1000000000",
        ] {
            assert!(Shape::of(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn a_template_puts_the_constants_back() {
        let first = Shape::of("SELECT a FROM t WHERE id = 7 AND s = 'x'").expect("shaped");
        assert_eq!(
            first.probe(),
            "SELECT a FROM t WHERE id = $100000000 AND s = $100000001"
        );
        let rewritten_probe = "SELECT a FROM v.t AS t WHERE id = $100000000 AND s = $100000001";
        let template = Template::from_rewritten_probe(rewritten_probe, 2).expect("template");
        let second = Shape::of("SELECT a FROM t WHERE id = 42 AND s = 'it''s'").expect("shaped");
        assert_eq!(
            template.fill(&second),
            "SELECT a FROM v.t AS t WHERE id = 42 AND s = 'it''s'"
        );
    }

    #[test]
    fn a_template_needs_every_placeholder_once() {
        assert!(Template::from_rewritten_probe("SELECT $100000000", 2).is_none());
        assert!(Template::from_rewritten_probe("SELECT $100000000, $100000000", 1).is_none());
        assert!(Template::from_rewritten_probe("SELECT $100000002", 1).is_none());
    }

    #[test]
    fn constants_that_may_name_pgveil_settings_are_not_plain() {
        let plain = |sql| Shape::of(sql).expect("shaped").constants_plain();
        assert!(plain("select 'abc', 1"));
        assert!(!plain("select current_setting('PGVEIL.view')"));
        assert!(!plain(r"select current_setting(E'\x70gveil.view')"));
        assert!(!plain(r"select current_setting(U&'\0070gveil.view')"));
        assert!(
            plain(r"select 'a\b'"),
            "backslash is plain in standard strings"
        );
    }
}
