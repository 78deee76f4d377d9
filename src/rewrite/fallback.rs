//! Statements sqlparser cannot parse: forwarded only when their tokens show
//! a harmless kind of statement that touches no protected table.

use sqlparser::ast::{Ident, ObjectName};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::names::{view_name, Protected, Resolution};
use super::tokens::{mentions_protected, significant_indices};
use super::{anon, Refusal, Target};

/// First words of statements that may be forwarded without a parse.
const FORWARDABLE: &[&str] = &[
    "SELECT",
    "WITH",
    "VALUES",
    "SHOW",
    "FETCH",
    "MOVE",
    "CLOSE",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "DEALLOCATE",
    "DISCARD",
];

/// First words of statements that are refused as not allowed.
const DENIED: &[&str] = &[
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "COMMENT",
    "DO",
    "CALL",
    "SECURITY",
    "REINDEX",
    "CLUSTER",
    "VACUUM",
    "ANALYZE",
    "ANALYSE",
    "LOAD",
    "CHECKPOINT",
    "REFRESH",
    "IMPORT",
    "REASSIGN",
    "EXPLAIN",
    "SET",
    "RESET",
    "COPY",
    "EXECUTE",
    "PREPARE",
];

fn upper_word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// Checks an unparsable statement; returns replacement text for `TABLE t`.
pub fn check(
    tokens: &[TokenWithSpan],
    protected: &Protected,
    target: &Target,
) -> Result<Option<String>, Refusal> {
    let sig: Vec<&Token> = significant_indices(tokens)
        .into_iter()
        .map(|i| &tokens[i].token)
        .collect();
    let first = sig.first().and_then(|t| upper_word(t));
    match first.as_deref() {
        Some("TABLE") => return table_statement(&sig[1..], protected, target),
        Some(w) if DENIED.contains(&w) => {
            return Err(Refusal::denied(
                format!("{w} statements are not allowed (or not in a form pgveil can check)"),
                "Schema changes, settings and server-side code need an administrator connection.",
            ))
        }
        Some(w) if FORWARDABLE.contains(&w) => {}
        _ if matches!(sig.first(), Some(Token::LParen)) => {}
        _ => return Err(Refusal::unanalysable("unknown kind of statement")),
    }
    if mentions_protected(tokens, protected) {
        return Err(Refusal::unanalysable(
            "it could not be parsed and it names a protected table",
        ));
    }
    check_words(&sig, first.as_deref())?;
    Ok(None)
}

/// Refuses writes, SELECT INTO and pgveil settings hidden in unparsed text.
fn check_words(sig: &[&Token], first: Option<&str>) -> Result<(), Refusal> {
    for (i, t) in sig.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| upper_word(sig[p]));
        let Some(w) = upper_word(t) else { continue };
        let write = match w.as_str() {
            "INSERT" | "DELETE" | "MERGE" | "TRUNCATE" => true,
            "UPDATE" => !matches!(prev.as_deref(), Some("FOR" | "KEY")),
            _ => false,
        };
        if write {
            return Err(Refusal::unanalysable(format!(
                "{w} inside a statement pgveil could not parse"
            )));
        }
        if w == "INTO" {
            return Err(Refusal::denied(
                "SELECT INTO is not allowed: it copies data out of the privacy views",
                "Select the rows without INTO.",
            ));
        }
        let shows_all = first == Some("SHOW") && (w == "ALL" || w.starts_with("PGVEIL"));
        if shows_all {
            return Err(Refusal::denied(
                "SHOW of pgveil.* settings (or SHOW ALL) is not allowed",
                "Show individual settings by name.",
            ));
        }
    }
    Ok(())
}

/// `TABLE [ONLY] name [*]`, which sqlparser does not parse as a statement.
fn table_statement(
    rest: &[&Token],
    protected: &Protected,
    target: &Target,
) -> Result<Option<String>, Refusal> {
    let rest = match rest.first() {
        Some(Token::Word(w)) if w.keyword == Keyword::ONLY && w.quote_style.is_none() => &rest[1..],
        _ => rest,
    };
    let rest = match rest.last() {
        Some(Token::Mul) => &rest[..rest.len() - 1],
        _ => rest,
    };
    let mut idents = Vec::new();
    for (i, t) in rest.iter().enumerate() {
        match (i % 2, t) {
            (0, Token::Word(w)) => idents.push(Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: sqlparser::tokenizer::Span::empty(),
            }),
            (1, Token::Period) => {}
            _ => return Err(Refusal::unanalysable("TABLE with an unexpected name")),
        }
    }
    if idents.is_empty() || rest.len() % 2 == 0 {
        return Err(Refusal::unanalysable("TABLE with an unexpected name"));
    }
    match protected.resolve(&ObjectName::from(idents), &target.schema) {
        Resolution::Protected(_) if target.min_group_size.is_some() => Err(anon::non_aggregate()),
        Resolution::Protected(t) => Ok(Some(format!("TABLE {}", view_name(&target.schema, &t)))),
        Resolution::Unknown => Err(Refusal::unanalysable("TABLE with an unexpected name")),
        Resolution::View | Resolution::Other => Ok(None),
    }
}
