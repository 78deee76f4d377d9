//! Statement normalization for the log: literal values become `?`,
//! comments and runs of whitespace become one space; and the protected
//! tables a statement names, with how it uses them.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

use super::catalog::TableCatalog;
use super::event::{Access, TableAccess};

/// A statement as it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The text with literals replaced by `?`.
    pub text: String,
    /// Protected tables named in the text.
    pub tables: Vec<TableAccess>,
}

/// The statement with every literal replaced by `?`. Text the tokenizer
/// cannot read (e.g. an unterminated string) is scrubbed crudely: quoted
/// parts, numbers and everything after an unterminated quote become `?`.
pub fn normalize(sql: &str) -> String {
    match tokenize(sql) {
        Some(tokens) => render(&tokens),
        None => scrub(sql),
    }
}

/// [`normalize`] plus the protected tables of `catalog` named in `sql`.
pub fn analyse(sql: &str, catalog: &TableCatalog) -> Normalized {
    match tokenize(sql) {
        Some(tokens) => Normalized {
            text: render(&tokens),
            tables: tables_named(&significant(tokens), catalog),
        },
        None => Normalized {
            text: scrub(sql),
            tables: Vec::new(),
        },
    }
}

fn tokenize(sql: &str) -> Option<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()
}

fn render(tokens: &[Token]) -> String {
    let mut out = String::with_capacity(64);
    let mut space = false;
    for token in tokens {
        match token {
            Token::Whitespace(_) => space = !out.is_empty(),
            Token::EOF => {}
            t => {
                if space {
                    out.push(' ');
                    space = false;
                }
                if is_literal(t) {
                    out.push('?');
                } else {
                    out.push_str(&t.to_string());
                }
            }
        }
    }
    out
}

/// Literals, and — to be safe with token kinds added later — any other
/// non-word token whose text holds a quote, a dollar sign or a digit.
fn is_literal(token: &Token) -> bool {
    match token {
        Token::Word(_) | Token::Placeholder(_) => false,
        Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::CopyData { .. } => true,
        other => {
            let text = other.to_string();
            text.contains(['\'', '$', '"']) || text.chars().any(|c| c.is_ascii_digit())
        }
    }
}

/// The crude fallback: keeps words and punctuation, drops comments, and
/// replaces quoted text and numbers by `?`; gives up with `?` at anything
/// it cannot skip safely (unterminated quote or comment, dollar quote).
fn scrub(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' => match closing_quote(&chars, i) {
                Some(end) => {
                    out.push('?');
                    i = end + 1;
                }
                None => return finish(out),
            },
            '$' => return finish(out),
            '-' if next == Some('-') => {
                i = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p);
            }
            '/' if next == Some('*') => match find_comment_end(&chars, i + 2) {
                Some(end) => {
                    out.push(' ');
                    i = end;
                }
                None => return finish(out),
            },
            c if c.is_ascii_digit() && !ends_in_word(&out) => {
                out.push('?');
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn finish(mut out: String) -> String {
    out.push('?');
    out
}

fn ends_in_word(out: &str) -> bool {
    out.chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Index of the quote closing the one at `start` (a doubled quote is an
/// escaped quote), if any.
fn closing_quote(chars: &[char], start: usize) -> Option<usize> {
    let q = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            if chars.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn find_comment_end(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len().saturating_sub(1))
        .find(|&i| chars[i] == '*' && chars[i + 1] == '/')
        .map(|i| i + 2)
}

fn significant(tokens: Vec<Token>) -> Vec<Token> {
    tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .collect()
}

/// The name PostgreSQL uses for a word: folded unless double-quoted.
fn word_name(w: &Word) -> String {
    match w.quote_style {
        Some('"') => w.value.clone(),
        _ => w.value.to_ascii_lowercase(),
    }
}

fn is_keyword(token: Option<&Token>, keyword: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// Every protected table named anywhere in the statement, with its access.
fn tables_named(tokens: &[Token], catalog: &TableCatalog) -> Vec<TableAccess> {
    let mut found: Vec<TableAccess> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let Some(parts) = dotted_name(tokens, i) else {
            i += 1;
            continue;
        };
        let end = i + 2 * parts.len() - 1;
        let access = access_at(tokens, i, end);
        for (k, part) in parts.iter().enumerate() {
            let qualifier = k.checked_sub(1).map(|q| parts[q].as_str());
            if let Some(table) = catalog.lookup(qualifier, part) {
                add(
                    &mut found,
                    table.qualified(),
                    table.classification.clone(),
                    access,
                );
            }
        }
        i = end;
    }
    found
}

/// The parts of `a.b.c` starting at word `i`.
fn dotted_name(tokens: &[Token], i: usize) -> Option<Vec<String>> {
    let Token::Word(first) = &tokens[i] else {
        return None;
    };
    let mut parts = vec![word_name(first)];
    let mut j = i + 1;
    while let (Some(Token::Period), Some(Token::Word(w))) = (tokens.get(j), tokens.get(j + 1)) {
        parts.push(word_name(w));
        j += 2;
    }
    Some(parts)
}

/// How the name spanning `start..end` is used: written when it is the
/// target of INSERT INTO, UPDATE, DELETE FROM, MERGE INTO, TRUNCATE or
/// COPY ... FROM; read otherwise.
fn access_at(tokens: &[Token], start: usize, end: usize) -> Access {
    let mut before = start;
    if before > 0 && is_keyword(tokens.get(before - 1), "only") {
        before -= 1;
    }
    let prev = before.checked_sub(1).and_then(|p| tokens.get(p));
    let prev2 = before.checked_sub(2).and_then(|p| tokens.get(p));
    let written = is_keyword(prev, "update")
        || is_keyword(prev, "truncate")
        || (is_keyword(prev, "table") && is_keyword(prev2, "truncate"))
        || (is_keyword(prev, "into")
            && (is_keyword(prev2, "insert") || is_keyword(prev2, "merge")))
        || (is_keyword(prev, "from") && is_keyword(prev2, "delete"))
        || (is_keyword(prev, "copy") && copies_in(tokens, end));
    if written {
        Access::Write
    } else {
        Access::Read
    }
}

/// Whether `COPY name [(columns)]` ending at `end` continues with FROM.
fn copies_in(tokens: &[Token], end: usize) -> bool {
    let mut j = end;
    if matches!(tokens.get(j), Some(Token::LParen)) {
        while j < tokens.len() && !matches!(tokens[j], Token::RParen) {
            j += 1;
        }
        j += 1;
    }
    is_keyword(tokens.get(j), "from")
}

fn add(
    found: &mut Vec<TableAccess>,
    table: String,
    classification: Option<String>,
    access: Access,
) {
    match found.iter_mut().find(|t| t.table == table) {
        Some(t) => t.access = t.access.merge(access),
        None => found.push(TableAccess {
            table,
            access,
            classification,
            columns: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::catalog::ProtectedTable;

    fn catalog() -> TableCatalog {
        TableCatalog::new(["customers", "orders"].map(|t| ProtectedTable {
            schema: "public".into(),
            table: t.into(),
            classification: Some(format!("{t}: personal")),
        }))
    }

    #[test]
    fn literals_become_placeholders() {
        let n = normalize("select * from customers where email = 'a@b.c' and id = 42");
        assert_eq!(n, "select * from customers where email = ? and id = ?");
    }

    #[test]
    fn every_literal_kind_is_dropped() {
        let sql =
            "SELECT E'x\\'y', U&'d\\0061t', $$secret$$, $t$also$t$, B'0101', X'ff', 3.5e2, -7, \
                   '{1,2}'::int[], ARRAY[11, 12] -- note 99\n/* ssn 123 */ FROM t WHERE a = $1";
        let n = normalize(sql);
        assert_eq!(
            n,
            "SELECT ?, ?, ?, ?, ?, ?, ?, -?, ?::int[], ARRAY[?, ?] FROM t WHERE a = $1"
        );
        for value in [
            "x", "y'", "d", "secret", "also", "0101", "ff", "3.5", "7", "11", "12", "99", "123",
            "ssn", "note",
        ] {
            let quoted_or_bare = n
                .split(|c: char| !c.is_alphanumeric() && c != '.')
                .any(|w| w == value);
            assert!(!quoted_or_bare, "{value:?} survived in {n:?}");
        }
        assert!(n.contains("$1"), "{n}");
        assert!(n.contains("ARRAY[?, ?]"), "{n}");
    }

    #[test]
    fn whitespace_and_comments_collapse() {
        assert_eq!(normalize("select\n\t1  -- one\n ,  2"), "select ? , ?");
    }

    #[test]
    fn untokenizable_text_is_scrubbed() {
        let n = normalize("select * from customers where email = 'a@b.c");
        assert_eq!(n, "select * from customers where email = ?");
        let n = normalize("select x1, 42, 'it''s' from t where a = $$open");
        assert_eq!(n, "select x1, ?, ? from t where a = ?");
    }

    #[test]
    fn protected_tables_are_found_with_access() {
        let n = analyse(
            "insert into public.orders (customer_id) select id from Customers c where c.id = 1",
            &catalog(),
        );
        assert_eq!(n.tables.len(), 2);
        assert_eq!(n.tables[0].table, "public.orders");
        assert_eq!(n.tables[0].access, Access::Write);
        assert_eq!(
            n.tables[0].classification.as_deref(),
            Some("orders: personal")
        );
        assert_eq!(n.tables[1].table, "public.customers");
        assert_eq!(n.tables[1].access, Access::Read);
    }

    #[test]
    fn writes_and_reads_of_one_table_merge() {
        let n = analyse(
            "update customers set x = 1 where id in (select id from customers)",
            &catalog(),
        );
        assert_eq!(n.tables.len(), 1);
        assert_eq!(n.tables[0].access, Access::ReadWrite);
        let copy_in = analyse("COPY customers (id, email) FROM STDIN", &catalog());
        assert_eq!(copy_in.tables[0].access, Access::Write);
        let copy_out = analyse("COPY customers TO STDOUT", &catalog());
        assert_eq!(copy_out.tables[0].access, Access::Read);
        let delete = analyse("DELETE FROM ONLY orders", &catalog());
        assert_eq!(delete.tables[0].access, Access::Write);
    }

    #[test]
    fn quoted_names_keep_their_case() {
        assert!(analyse("select * from \"Customers\"", &catalog())
            .tables
            .is_empty());
        assert_eq!(
            analyse("select * from \"customers\"", &catalog())
                .tables
                .len(),
            1
        );
        assert!(analyse("select * from sales_reps", &catalog())
            .tables
            .is_empty());
    }
}
