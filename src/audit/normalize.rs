//! Statement normalization for the log: literal values become `?`,
//! comments and runs of whitespace become one space; and the protected
//! tables a statement names, with how it uses them and which of their
//! columns it names.

use std::collections::{BTreeSet, HashSet};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

use super::catalog::{ProtectedTable, TableCatalog};
use super::event::{Access, ColumnAccess, TableAccess};

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

/// [`normalize`] plus the protected tables of `catalog` named in `sql`,
/// each with the columns a session of `view_set` reads or writes by it.
pub fn analyse(sql: &str, catalog: &TableCatalog, view_set: Option<&str>) -> Normalized {
    match tokenize(sql) {
        Some(tokens) => Normalized {
            text: render(&tokens),
            tables: tables_named(&significant(tokens), catalog, view_set),
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

/// What the tokens of a statement name.
#[derive(Default)]
struct Names<'c> {
    /// Protected tables in order of appearance, with their access.
    tables: Vec<(&'c ProtectedTable, Access)>,
    /// Names that may be columns (last parts of names that are not tables).
    columns: HashSet<String>,
    /// Whether the statement selects or copies every column (`*`, `t.*`,
    /// `COPY t TO`).
    every_column: bool,
}

/// Every protected table named anywhere in the statement, with its access
/// and the columns of it the statement uses: the ones it names, or with a
/// `*` every column `view_set` shows.
fn tables_named(
    tokens: &[Token],
    catalog: &TableCatalog,
    view_set: Option<&str>,
) -> Vec<TableAccess> {
    let names = scan(tokens, catalog);
    names
        .tables
        .iter()
        .map(|(table, access)| {
            let columns: Vec<ColumnAccess> = table
                .columns
                .iter()
                .filter(|c| {
                    names.columns.contains(&c.name)
                        || (names.every_column && c.visible_in(view_set))
                })
                .map(|c| ColumnAccess {
                    column: c.name.clone(),
                    classification: c.classification.clone(),
                })
                .collect();
            TableAccess {
                table: table.qualified(),
                access: *access,
                classification: classes(&columns),
                columns,
            }
        })
        .collect()
}

fn scan<'c>(tokens: &[Token], catalog: &'c TableCatalog) -> Names<'c> {
    let mut names = Names::default();
    let mut i = 0;
    while i < tokens.len() {
        if is_star(tokens, i) {
            names.every_column = true;
            i += 1;
            continue;
        }
        let Some(parts) = dotted_name(tokens, i) else {
            i += 1;
            continue;
        };
        let end = i + 2 * parts.len() - 1;
        let access = access_at(tokens, i, end);
        let mut table_at = None;
        for (k, part) in parts.iter().enumerate() {
            let qualifier = k.checked_sub(1).map(|q| parts[q].as_str());
            if let Some(table) = catalog.lookup(qualifier, part) {
                add(&mut names.tables, table, access);
                table_at = Some(k);
            }
        }
        let last = parts.len() - 1;
        if table_at == Some(last) {
            names.every_column |= copies_whole_table(tokens, i, end);
        } else if !matches!(tokens.get(end), Some(Token::LParen)) {
            names.columns.insert(parts[last].clone());
        }
        i = end;
    }
    names
}

/// Whether the `*` at `i` stands for every column (`select *`, `t.*`,
/// `, *`), not for a multiplication or `count(*)`.
fn is_star(tokens: &[Token], i: usize) -> bool {
    if !matches!(tokens[i], Token::Mul) {
        return false;
    }
    let prev = i.checked_sub(1).and_then(|p| tokens.get(p));
    matches!(prev, Some(Token::Comma | Token::Period))
        || ["select", "distinct", "all", "returning"]
            .iter()
            .any(|k| is_keyword(prev, k))
}

/// Whether the table name spanning `start..end` is a `COPY table TO`
/// without a column list.
fn copies_whole_table(tokens: &[Token], start: usize, end: usize) -> bool {
    let prev = start.checked_sub(1).and_then(|p| tokens.get(p));
    is_keyword(prev, "copy") && is_keyword(tokens.get(end), "to")
}

/// The classifications of `columns`, sorted and comma-separated
/// (`unclassified` for columns the policy does not classify); None when
/// no column is known.
fn classes(columns: &[ColumnAccess]) -> Option<String> {
    let set: BTreeSet<&str> = columns
        .iter()
        .map(|c| c.classification.as_deref().unwrap_or("unclassified"))
        .collect();
    (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>().join(", "))
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

fn add<'c>(
    found: &mut Vec<(&'c ProtectedTable, Access)>,
    table: &'c ProtectedTable,
    access: Access,
) {
    match found.iter_mut().find(|(t, _)| std::ptr::eq(*t, table)) {
        Some((_, a)) => *a = a.merge(access),
        None => found.push((table, access)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::catalog::{ProtectedColumn, ProtectedTable};

    fn column(name: &str, class: Option<&str>, hidden_in: &[&str]) -> ProtectedColumn {
        ProtectedColumn {
            name: name.into(),
            classification: class.map(str::to_owned),
            hidden_in: hidden_in.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn catalog() -> TableCatalog {
        let customers = ProtectedTable {
            schema: "public".into(),
            table: "customers".into(),
            columns: vec![
                column("id", Some("identity"), &[]),
                column("email", Some("identity"), &["analytics"]),
                column("city", Some("personal"), &[]),
                column("religion", Some("sensitive"), &["standard", "analytics"]),
                column("note", None, &["standard", "analytics"]),
            ],
        };
        let orders = ProtectedTable {
            schema: "public".into(),
            table: "orders".into(),
            columns: vec![
                column("id", Some("non_personal"), &[]),
                column("customer_id", Some("identity"), &[]),
            ],
        };
        TableCatalog::new([customers, orders])
    }

    fn analyse_as(sql: &str, view_set: Option<&str>) -> Normalized {
        analyse(sql, &catalog(), view_set)
    }

    fn used(n: &Normalized, table: usize) -> Vec<(&str, Option<&str>)> {
        n.tables[table]
            .columns
            .iter()
            .map(|c| (c.column.as_str(), c.classification.as_deref()))
            .collect()
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
        let n = analyse_as(
            "insert into public.orders (customer_id) select id from Customers c where c.id = 1",
            None,
        );
        assert_eq!(n.tables.len(), 2);
        assert_eq!(n.tables[0].table, "public.orders");
        assert_eq!(n.tables[0].access, Access::Write);
        assert_eq!(
            used(&n, 0),
            vec![
                ("id", Some("non_personal")),
                ("customer_id", Some("identity"))
            ]
        );
        assert_eq!(
            n.tables[0].classification.as_deref(),
            Some("identity, non_personal")
        );
        assert_eq!(n.tables[1].table, "public.customers");
        assert_eq!(n.tables[1].access, Access::Read);
        assert_eq!(used(&n, 1), vec![("id", Some("identity"))]);
    }

    #[test]
    fn writes_and_reads_of_one_table_merge() {
        let n = analyse_as(
            "update customers set x = 1 where id in (select id from customers)",
            None,
        );
        assert_eq!(n.tables.len(), 1);
        assert_eq!(n.tables[0].access, Access::ReadWrite);
        let copy_in = analyse_as("COPY customers (id, email) FROM STDIN", None);
        assert_eq!(copy_in.tables[0].access, Access::Write);
        assert_eq!(
            used(&copy_in, 0),
            vec![("id", Some("identity")), ("email", Some("identity"))]
        );
        let copy_out = analyse_as("COPY customers TO STDOUT", Some("standard"));
        assert_eq!(copy_out.tables[0].access, Access::Read);
        assert_eq!(used(&copy_out, 0).len(), 3, "every visible column");
        let delete = analyse_as("DELETE FROM ONLY orders", None);
        assert_eq!(delete.tables[0].access, Access::Write);
        assert!(delete.tables[0].columns.is_empty());
        assert_eq!(delete.tables[0].classification, None);
    }

    #[test]
    fn quoted_names_keep_their_case() {
        assert!(analyse_as("select * from \"Customers\"", None)
            .tables
            .is_empty());
        assert_eq!(
            analyse_as("select * from \"customers\"", None).tables.len(),
            1
        );
        assert!(analyse_as("select * from sales_reps", None)
            .tables
            .is_empty());
    }

    #[test]
    fn named_columns_carry_their_classification() {
        let n = analyse_as(
            "select c.email, upper(city) from customers c where religion is null",
            Some("personal"),
        );
        assert_eq!(
            used(&n, 0),
            vec![
                ("email", Some("identity")),
                ("city", Some("personal")),
                ("religion", Some("sensitive"))
            ]
        );
        assert_eq!(
            n.tables[0].classification.as_deref(),
            Some("identity, personal, sensitive")
        );
    }

    #[test]
    fn a_star_reads_the_columns_the_view_set_shows() {
        let all = |view_set| {
            let n = analyse_as("select * from customers", view_set);
            used(&n, 0)
                .into_iter()
                .map(|(c, _)| c.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all(Some("standard")), vec!["id", "email", "city"]);
        assert_eq!(all(Some("analytics")), vec!["id", "city"]);
        assert_eq!(
            all(Some("admin")),
            vec!["id", "email", "city", "religion", "note"]
        );
        let n = analyse_as(
            "select o.*, c.city from orders o join customers c using (id)",
            None,
        );
        assert_eq!(used(&n, 0).len(), 2);
        assert_eq!(used(&n, 1).len(), 5);
        assert_eq!(
            n.tables[1].classification.as_deref(),
            Some("identity, personal, sensitive, unclassified")
        );
    }

    #[test]
    fn counting_and_multiplying_read_no_column() {
        let n = analyse_as("select count(*), 2 * 3 from customers", Some("standard"));
        assert!(n.tables[0].columns.is_empty());
        assert_eq!(n.tables[0].classification, None);
        let n = analyse_as("select count(*) from customers where email like ?", None);
        assert_eq!(used(&n, 0), vec![("email", Some("identity"))]);
    }
}
