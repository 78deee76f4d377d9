//! A small, fast PostgreSQL lexer: byte spans of words, quoted identifiers,
//! literals, parameters, operators and punctuation, with whitespace and
//! comments skipped. It follows PostgreSQL's scanner (`scan.l`) for the
//! things that decide where a token ends: nested block comments, `''` and
//! backslash escapes, dollar quoting, `U&`/`E`/`N`/`B`/`X` prefixes.
//!
//! It does not build an AST and never allocates; the rewriter's fast path
//! and the transaction pooler use it on every statement, and sqlparser
//! stays the authority for everything it analyses.

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `"quoted"` or `U&"quoted"` identifier.
    QuotedIdent,
    /// An unsigned numeric constant.
    Number,
    /// A string constant of some flavour.
    String(StringKind),
    /// A positional parameter such as `$1`.
    Param,
    /// An operator such as `=`, `<>`, `||`.
    Operator,
    /// `;`, which ends a statement.
    Semicolon,
    /// Any other single character or `::`.
    Punct,
}

/// The flavours of string constant; a shape keeps them apart because
/// their escapes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringKind {
    /// `'...'`
    Standard,
    /// `E'...'` with backslash escapes.
    Escape,
    /// `N'...'`
    National,
    /// `B'...'`
    Bit,
    /// `X'...'`
    Hex,
    /// `U&'...'`
    Unicode,
    /// `$tag$...$tag$`
    Dollar,
}

/// One token and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// Its bytes in the text.
    pub span: Range<usize>,
}

impl Token {
    /// Whether the token is a constant (number or string).
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Number | Kind::String(_))
    }
}

/// The text ends inside a string, quoted identifier or comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unterminated;

/// Iterates over the tokens of a text.
pub struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer over `sql`.
    pub fn new(sql: &'a str) -> Self {
        Lexer {
            text: sql.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.text.get(self.at + offset).copied()
    }

    /// Skips whitespace and comments; fails inside an unclosed comment.
    fn skip_blank(&mut self) -> Result<(), Unterminated> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c), _) => self.at += 1,
                (Some(b'-'), Some(b'-')) => {
                    while !matches!(self.peek(0), None | Some(b'\n' | b'\r')) {
                        self.at += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), Unterminated> {
        let mut depth = 0usize;
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return Err(Unterminated),
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.at += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.at += 2;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => self.at += 1,
            }
        }
    }

    fn token(&mut self) -> Result<Kind, Unterminated> {
        let c = self.text[self.at];
        let next = self.peek(1);
        let prefixed = |kind| (kind, 1);
        let string_prefix = match (c, next) {
            (b'e' | b'E', Some(b'\'')) => Some(prefixed(StringKind::Escape)),
            (b'n' | b'N', Some(b'\'')) => Some(prefixed(StringKind::National)),
            (b'b' | b'B', Some(b'\'')) => Some(prefixed(StringKind::Bit)),
            (b'x' | b'X', Some(b'\'')) => Some(prefixed(StringKind::Hex)),
            (b'u' | b'U', Some(b'&')) if self.peek(2) == Some(b'\'') => {
                Some((StringKind::Unicode, 2))
            }
            _ => None,
        };
        if let Some((kind, prefix)) = string_prefix {
            self.at += prefix;
            self.quoted(b'\'', kind == StringKind::Escape)?;
            return Ok(Kind::String(kind));
        }
        match c {
            b'\'' => {
                self.quoted(b'\'', false)?;
                Ok(Kind::String(StringKind::Standard))
            }
            b'"' => {
                self.quoted(b'"', false)?;
                Ok(Kind::QuotedIdent)
            }
            b'u' | b'U' if next == Some(b'&') && self.peek(2) == Some(b'"') => {
                self.at += 2;
                self.quoted(b'"', false)?;
                Ok(Kind::QuotedIdent)
            }
            b'$' => self.dollar(),
            b'0'..=b'9' => {
                self.number();
                Ok(Kind::Number)
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                self.number();
                Ok(Kind::Number)
            }
            c if is_ident_start(c) => {
                self.at += 1;
                while self.peek(0).is_some_and(is_ident_continue) {
                    self.at += 1;
                }
                Ok(Kind::Word)
            }
            b';' => {
                self.at += 1;
                Ok(Kind::Semicolon)
            }
            b':' if next == Some(b':') => {
                self.at += 2;
                Ok(Kind::Punct)
            }
            c if is_operator_char(c) => {
                self.operator();
                Ok(Kind::Operator)
            }
            _ => {
                // one character; a multi-byte UTF-8 character counts as one
                self.at += 1;
                while self.peek(0).is_some_and(|b| b & 0xc0 == 0x80) {
                    self.at += 1;
                }
                Ok(Kind::Punct)
            }
        }
    }

    /// A quoted string or identifier starting at the opening quote; a
    /// doubled quote is part of it, and in `E'...'` a backslash escapes
    /// the next byte.
    fn quoted(&mut self, quote: u8, backslash: bool) -> Result<(), Unterminated> {
        self.at += 1;
        loop {
            match self.peek(0) {
                None => return Err(Unterminated),
                Some(b'\\') if backslash => self.at += 2,
                Some(q) if q == quote => {
                    self.at += 1;
                    if self.peek(0) != Some(quote) {
                        return Ok(());
                    }
                    self.at += 1;
                }
                Some(_) => self.at += 1,
            }
        }
    }

    /// `$1` (a parameter) or `$tag$...$tag$` (a dollar-quoted string).
    fn dollar(&mut self) -> Result<Kind, Unterminated> {
        let start = self.at;
        if self.peek(1).is_some_and(|d| d.is_ascii_digit()) {
            self.at += 1;
            while self.peek(0).is_some_and(|d| d.is_ascii_digit()) {
                self.at += 1;
            }
            return Ok(Kind::Param);
        }
        let mut end = start + 1;
        while self.text.get(end).is_some_and(|&b| is_dollar_tag_char(b))
            && (end > start + 1 || is_ident_start(self.text[end]))
        {
            end += 1;
        }
        if self.text.get(end) != Some(&b'$') {
            self.at += 1;
            return Ok(Kind::Punct);
        }
        let tag = &self.text[start..=end];
        let body = end + 1;
        let close = self.text[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .ok_or(Unterminated)?;
        self.at = body + close + tag.len();
        Ok(Kind::String(StringKind::Dollar))
    }

    fn number(&mut self) {
        let digits = |l: &mut Self| {
            while l.peek(0).is_some_and(|d| d.is_ascii_digit()) {
                l.at += 1;
            }
        };
        digits(self);
        if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
            self.at += 1;
            digits(self);
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|d| d.is_ascii_digit()) {
                self.at += 1 + sign;
                digits(self);
            }
        }
    }

    /// A run of operator characters, stopping where a comment starts.
    fn operator(&mut self) {
        self.at += 1;
        while let Some(c) = self.peek(0) {
            let comment = matches!((c, self.peek(1)), (b'-', Some(b'-')) | (b'/', Some(b'*')));
            if !is_operator_char(c) || comment {
                break;
            }
            self.at += 1;
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Token, Unterminated>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.skip_blank() {
            self.at = self.text.len();
            return Some(Err(e));
        }
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        Some(match self.token() {
            Ok(kind) => Ok(Token {
                kind,
                span: start..self.at.min(self.text.len()),
            }),
            Err(e) => {
                self.at = self.text.len();
                Err(e)
            }
        })
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_continue(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn is_dollar_tag_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

fn is_operator_char(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(sql: &str) -> Vec<(Kind, &str)> {
        Lexer::new(sql)
            .map(|t| t.map(|t| (t.kind, &sql[t.span])))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|_| panic!("unterminated: {sql}"))
    }

    #[test]
    fn words_literals_and_punctuation() {
        use Kind::*;
        assert_eq!(
            lex("SELECT a$b, \"Q\"\"x\" FROM t WHERE x = 'it''s' AND y >= -1.5e3;"),
            vec![
                (Word, "SELECT"),
                (Word, "a$b"),
                (Punct, ","),
                (QuotedIdent, "\"Q\"\"x\""),
                (Word, "FROM"),
                (Word, "t"),
                (Word, "WHERE"),
                (Word, "x"),
                (Operator, "="),
                (String(StringKind::Standard), "'it''s'"),
                (Word, "AND"),
                (Word, "y"),
                (Operator, ">="),
                (Operator, "-"),
                (Number, "1.5e3"),
                (Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn string_flavours() {
        use StringKind::*;
        let kinds: Vec<Kind> = lex(r"E'a\'b' N'n' B'01' X'ff' U&'d\0061' $$x'y$$ $q$a$$b$q$ e'\\'")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            kinds,
            [Escape, National, Bit, Hex, Unicode, Dollar, Dollar, Escape].map(Kind::String)
        );
    }

    #[test]
    fn comments_are_skipped_and_nest() {
        assert_eq!(
            lex("a /* x /* y */ 'not a string */ b -- c 'd\n e+--f\n1"),
            vec![
                (Kind::Word, "a"),
                (Kind::Word, "b"),
                (Kind::Word, "e"),
                (Kind::Operator, "+"),
                (Kind::Number, "1"),
            ]
        );
    }

    #[test]
    fn parameters_casts_and_dollar_edge_cases() {
        use Kind::*;
        assert_eq!(
            lex("$1::int $12 .5 1. a.b 1..2"),
            vec![
                (Param, "$1"),
                (Punct, "::"),
                (Word, "int"),
                (Param, "$12"),
                (Number, ".5"),
                (Number, "1."),
                (Word, "a"),
                (Punct, "."),
                (Word, "b"),
                (Number, "1"),
                (Punct, "."),
                (Number, ".2"),
            ]
        );
    }

    #[test]
    fn unterminated_text_is_an_error() {
        for sql in ["'abc", "E'abc\\'", "\"x", "/* x", "$a$ b", "U&\"x"] {
            assert!(
                Lexer::new(sql).any(|t| t.is_err()),
                "{sql} should be unterminated"
            );
        }
    }

    #[test]
    fn multibyte_text_keeps_char_boundaries() {
        let sql = "select 'Žemaitė', 名字 from t where x ≥ 1";
        for t in Lexer::new(sql) {
            let t = t.expect("terminated");
            assert!(sql.is_char_boundary(t.span.start) && sql.is_char_boundary(t.span.end));
        }
    }
}
