//! Token-level checks: deny lists that hold in every position, statement
//! splitting, and the fail-closed scan for bare protected table names.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Word};

use super::names::Protected;
use super::Refusal;

/// Functions that run SQL text, read files or large objects, reach other
/// servers, change settings, or act on the server: refused in every position.
const DENIED_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "ts_stat",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "loread",
    "lowrite",
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_terminate_backend",
    "pg_cancel_backend",
];

/// Prefixes of denied function families.
const DENIED_FUNCTION_PREFIXES: &[&str] = &[
    "table_to_xml",
    "cursor_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "dblink",
    "lo_",
    "pg_ls_",
    "pg_file_",
    "pg_logical_",
];

/// Catalog relations that reveal data values, query texts or settings.
const DENIED_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_stat_activity",
    "pg_settings",
    "pg_file_settings",
    "pg_db_role_setting",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_largeobject",
];

/// The name PostgreSQL uses for a word token.
pub fn word_name(w: &Word) -> String {
    match w.quote_style {
        Some('"') => w.value.clone(),
        _ => w.value.to_ascii_lowercase(),
    }
}

fn significant(t: &Token) -> bool {
    !matches!(t, Token::Whitespace(_))
}

/// Indices of the tokens that are not whitespace or comments.
pub fn significant_indices(tokens: &[TokenWithSpan]) -> Vec<usize> {
    (0..tokens.len())
        .filter(|&i| significant(&tokens[i].token))
        .collect()
}

fn is_denied_function(name: &str) -> bool {
    DENIED_FUNCTIONS.contains(&name) || DENIED_FUNCTION_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn is_string(t: &Token) -> Option<&str> {
    match t {
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::NationalStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => Some(s),
        Token::DollarQuotedString(d) => Some(&d.value),
        _ => None,
    }
}

/// Refuses denied functions and relations, pgveil setting names in strings,
/// and `U&"..."` identifiers, wherever they occur.
pub fn check_denied(tokens: &[TokenWithSpan]) -> Result<(), Refusal> {
    let sig = significant_indices(tokens);
    for (n, &i) in sig.iter().enumerate() {
        let next = sig.get(n + 1).map(|&j| &tokens[j].token);
        match &tokens[i].token {
            // denied names are not SQL keywords: skip those cheaply
            Token::Word(w) if w.keyword != Keyword::NoKeyword && w.quote_style.is_none() => {}
            Token::Word(w) => check_word(w, next, tokens.get(i + 1), tokens.get(i + 2))?,
            t => {
                if let Some(s) = is_string(t) {
                    check_string(s)?;
                }
            }
        }
    }
    Ok(())
}

fn check_word(
    w: &Word,
    next: Option<&Token>,
    adjacent: Option<&TokenWithSpan>,
    after: Option<&TokenWithSpan>,
) -> Result<(), Refusal> {
    let name = word_name(w);
    if matches!(next, Some(Token::LParen)) && is_denied_function(&name) {
        return Err(Refusal::denied(
            format!("function {name}() is not allowed: it can run SQL text, read files or large objects, reach other servers or change settings outside the privacy views"),
            "Query the tables directly; ask an administrator if you need this function.",
        ));
    }
    if DENIED_RELATIONS.contains(&name.as_str()) {
        return Err(Refusal::denied(
            format!("{name} is not allowed: it reveals data values, statistics, query texts or settings outside the privacy views"),
            "Query the privacy views instead; planner statistics and settings are not available through pgveil.",
        ));
    }
    let unicode_ident = w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case("u")
        && matches!(adjacent.map(|t| &t.token), Some(Token::Ampersand))
        && matches!(after.map(|t| &t.token), Some(Token::Word(q)) if q.quote_style == Some('"'));
    if unicode_ident {
        return Err(Refusal::unanalysable(
            "U&\"...\" identifiers with Unicode escapes are not supported",
        ));
    }
    Ok(())
}

fn check_string(s: &str) -> Result<(), Refusal> {
    if s.trim_start().to_ascii_lowercase().starts_with("pgveil.") {
        return Err(Refusal::denied(
            "pgveil.* settings cannot be read or changed",
            "These settings belong to pgveil and its privacy views.",
        ));
    }
    Ok(())
}

/// Splits a token stream into statements at top-level semicolons; each range
/// excludes the semicolon.
pub fn split_statements(tokens: &[TokenWithSpan]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.token == Token::SemiColon {
            out.push(start..i);
            start = i + 1;
        }
    }
    out.push(start..tokens.len());
    out
}

/// Whether a statement's tokens hold nothing but whitespace and comments.
pub fn is_blank(tokens: &[TokenWithSpan]) -> bool {
    tokens.iter().all(|t| !significant(&t.token))
}

/// A word naming a protected table that the AST walk must account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// Where the word starts in the text.
    pub at: Location,
    /// The (normalised) table name.
    pub name: String,
}

impl Mention {
    /// Refusal for a mention the AST walk did not rewrite.
    pub fn unhandled(&self) -> Refusal {
        unhandled(&self.name)
    }
}

/// Fail-closed scan: the words naming a protected table that are not a column
/// qualifier (`customers.email`), an alias (`AS customers`), or qualified by
/// the view set schema or an unprotected schema. Each must be rewritten by
/// the AST walk (or be a CTE/alias name), else the statement is refused.
pub fn protected_mentions(
    tokens: &[TokenWithSpan],
    protected: &Protected,
    schema: &str,
) -> Vec<Mention> {
    let sig = significant_indices(tokens);
    let at = |n: usize| sig.get(n).map(|&j| &tokens[j].token);
    let mut out = Vec::new();
    for n in 0..sig.len() {
        let Some(Token::Word(w)) = at(n) else {
            continue;
        };
        let name = word_name(w);
        if !protected.is_table_name(&name) || matches!(at(n + 1), Some(Token::Period)) {
            continue;
        }
        let prev = n.checked_sub(1).and_then(at);
        let alias = matches!(prev, Some(Token::Word(a)) if a.keyword == Keyword::AS && a.quote_style.is_none());
        let qualifier = match (prev, n.checked_sub(2).and_then(at)) {
            (Some(Token::Period), Some(Token::Word(s))) => Some(word_name(s)),
            _ => None,
        };
        let harmless = alias
            || qualifier
                .is_some_and(|q| q == schema || !protected.is_qualified_protected(&q, &name));
        if !harmless {
            out.push(Mention {
                at: tokens[sig[n]].span.start,
                name,
            });
        }
    }
    out
}

fn unhandled(name: &str) -> Refusal {
    Refusal::unanalysable(format!(
        "table {name} is used in a position pgveil does not handle"
    ))
}

/// Whether any word in the tokens names a protected table, compared without
/// regard to case or quoting (the cautious reading for text we cannot parse).
pub fn mentions_protected(tokens: &[TokenWithSpan], protected: &Protected) -> bool {
    tokens.iter().any(|t| match &t.token {
        Token::Word(w) => protected.is_table_name_folded(&w.value),
        _ => false,
    })
}
