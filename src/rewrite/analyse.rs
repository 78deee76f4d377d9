//! The pipeline for one Query or Parse text: tokenize, deny-scan, split into
//! statements, rewrite each (AST or token fallback), re-scan, assemble.

use std::ops::{ControlFlow, Range};

use sqlparser::ast::VisitMut;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::mapper::Mapper;
use super::names::Protected;
use super::tokens::{check_denied, is_blank, protected_mentions, split_statements};
use super::{fallback, Refusal, Target, Verdict};

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, Refusal> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Refusal::unanalysable(format!("it could not be tokenized ({e})")))
}

/// Analyses a whole text for a non-admin target.
pub fn analyse(protected: &Protected, target: &Target, sql: &str) -> Verdict {
    match rewrite_text(protected, target, sql) {
        Ok(None) => Verdict::Forward,
        Ok(Some(text)) => Verdict::Rewritten(text),
        Err(r) => Verdict::Refused(r),
    }
}

fn rewrite_text(
    protected: &Protected,
    target: &Target,
    sql: &str,
) -> Result<Option<String>, Refusal> {
    let tokens = tokenize(sql)?;
    check_denied(&tokens)?;
    let ranges = split_statements(&tokens);
    if let [_] = ranges.as_slice() {
        return rewrite_statement(protected, target, tokens, sql);
    }
    let offsets = LineOffsets::new(sql);
    let mut out = String::new();
    let mut cursor = 0;
    let mut changed = false;
    for range in ranges {
        let bytes = byte_range(&tokens, range.clone(), &offsets, sql.len());
        let part = tokens[range].to_vec();
        let Some(new) = rewrite_statement(protected, target, part, &sql[bytes.clone()])? else {
            continue;
        };
        out.push_str(&sql[cursor..bytes.start]);
        out.push_str(&new);
        cursor = bytes.end;
        changed = true;
    }
    out.push_str(&sql[cursor..]);
    Ok(changed.then_some(out))
}

/// Rewrites one statement (its tokens, and its text for the fallback);
/// `None` means forward its text unchanged.
fn rewrite_statement(
    protected: &Protected,
    target: &Target,
    tokens: Vec<TokenWithSpan>,
    text: &str,
) -> Result<Option<String>, Refusal> {
    if is_blank(&tokens) {
        return Ok(None);
    }
    let mentions = protected_mentions(&tokens, protected, &target.schema);
    let parsed = Parser::new(&PostgreSqlDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements();
    let mut stmts = match parsed {
        Ok(s) => s,
        Err(_) => return fallback::check(&tokenize(text)?, protected, target),
    };
    let (Some(mut stmt), true) = (stmts.pop(), stmts.is_empty()) else {
        return Err(Refusal::unanalysable("expected exactly one statement"));
    };
    let mut mapper = Mapper::new(protected, target);
    if let ControlFlow::Break(r) = stmt.visit(&mut mapper) {
        return Err(r);
    }
    let unhandled = mentions
        .iter()
        .find(|m| !mapper.replaced.contains(&m.at) && !mapper.exempt.contains(&m.name));
    if let Some(m) = unhandled {
        return Err(m.unhandled());
    }
    Ok(mapper.changed.then(|| stmt.to_string()))
}

/// Byte offsets of line starts, to turn token locations into byte offsets.
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { sql, starts }
    }

    /// Byte offset of a 1-based line/column (columns count characters).
    fn byte(&self, loc: Location) -> usize {
        let line = (loc.line as usize).saturating_sub(1);
        let Some(&start) = self.starts.get(line) else {
            return self.sql.len();
        };
        let col = (loc.column as usize).saturating_sub(1);
        self.sql[start..]
            .char_indices()
            .nth(col)
            .map_or(self.sql.len(), |(i, _)| start + i)
    }
}

/// The byte range of a statement's tokens: from its first significant token to the start
/// of the token after it (the `;`), or the end of the text.
fn byte_range(
    tokens: &[TokenWithSpan],
    range: Range<usize>,
    offsets: &LineOffsets,
    len: usize,
) -> Range<usize> {
    let at = |i: usize| tokens.get(i).map_or(len, |t| offsets.byte(t.span.start));
    let first = range
        .clone()
        .find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .unwrap_or(range.start);
    at(first)..at(range.end)
}
