//! What session state a statement leaves on its backend connection, for
//! transaction pooling: a statement run on a shared connection must not
//! leave anything another client could see, and the client must find its
//! own state again on whichever connection runs its next transaction.
//!
//! - Settings (`SET`, `RESET`, `SET TIME ZONE`, ...) outside a transaction
//!   are *carried*: the pooler replays them on the next connection.
//! - State that cannot be carried *pins* the session to its connection
//!   until it ends: `LISTEN`, SQL `PREPARE`, cursors `WITH HOLD`, temporary
//!   tables, session advisory locks, `set_config`, `SET ROLE`/`SESSION
//!   AUTHORIZATION`/`SESSION CHARACTERISTICS`, `LOAD`, `DO` and `CALL`
//!   (they may do any of these), and `SET` inside a transaction block.
//! - `DISCARD` and `DEALLOCATE ALL` *reset* what the pooler prepared on the
//!   connection.
//!
//! Functions that change settings or take locks inside their own body
//! cannot be seen from the statement text; the README documents this.

use std::ops::Range;

use super::lexer::{Kind, Lexer};

/// The session state one Query or Parse text leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Nothing beyond the transaction.
    None,
    /// Discards prepared statements or settings of the connection.
    Reset,
    /// Only settings, which can be replayed on another connection.
    Settings,
    /// State that cannot be carried: the session keeps its connection.
    Pin,
}

/// Session-level functions that leave state behind.
const PINNING_FUNCTIONS: [&str; 7] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "set_config",
    "dblink_connect",
    "dblink_connect_u",
];

/// The effect of a text, and for [`Effect::Settings`] where its
/// settings statements are (to replay them without the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The strongest effect of its statements.
    pub effect: Effect,
    /// Byte ranges of the `SET`/`RESET` statements, in order.
    pub settings: Vec<Range<usize>>,
}

/// A quick test before [`classify`]: false when `sql` cannot reset the
/// prepared statements of its connection (it names neither `DISCARD` nor
/// `DEALLOCATE`).
pub fn may_reset(sql: &str) -> bool {
    let has = |word: &str| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    has("discard") || has("deallocate")
}

/// The effect of a whole text: the strongest of its statements', except
/// that settings changed next to transaction control pin, because a
/// rollback would undo them.
pub fn classify(sql: &str) -> Classified {
    let pin = Classified {
        effect: Effect::Pin,
        settings: Vec::new(),
    };
    let mut statement = Statement::default();
    let mut effect = Effect::None;
    let mut settings = Vec::new();
    let mut transaction_control = false;
    let mut tokens = Lexer::new(sql).peekable();
    loop {
        let token = match tokens.next() {
            None => None,
            Some(Ok(token)) => Some(token),
            Some(Err(_)) => return pin,
        };
        let Some(token) = token.filter(|t| t.kind != Kind::Semicolon) else {
            let this = classify_statement(&statement.words);
            if this == Effect::Settings {
                settings.push(statement.span.clone());
            }
            transaction_control |= is_transaction_control(&statement.words);
            effect = effect.max(this);
            if tokens.peek().is_none() {
                break;
            }
            statement = Statement::default();
            continue;
        };
        if statement.words.is_empty() {
            statement.span.start = token.span.start;
        }
        statement.span.end = token.span.end;
        let word = match token.kind {
            Kind::Word => sql[token.span].to_ascii_lowercase(),
            _ => String::new(),
        };
        let call = matches!(tokens.peek(), Some(Ok(t)) if &sql[t.span.clone()] == "(");
        if call && PINNING_FUNCTIONS.contains(&word.as_str()) {
            return pin;
        }
        statement.words.push(word);
    }
    if transaction_control && !settings.is_empty() {
        return pin;
    }
    Classified { effect, settings }
}

/// The words of one statement (other tokens as empty strings) and its span.
#[derive(Default)]
struct Statement {
    words: Vec<String>,
    span: Range<usize>,
}

fn word(words: &[String], i: usize) -> &str {
    words.get(i).map_or("", String::as_str)
}

fn classify_statement(words: &[String]) -> Effect {
    let has = |w: &str| words.iter().any(|x| x == w);
    match (word(words, 0), word(words, 1), word(words, 2)) {
        ("set", "local" | "transaction" | "constraints", _) => Effect::None,
        ("set", "role", _) | ("set", "session", "authorization" | "characteristics") => Effect::Pin,
        ("set", "session", "role") => Effect::Pin,
        ("set", _, _) => Effect::Settings,
        ("reset", "role" | "session", _) => Effect::Pin,
        ("reset", _, _) => Effect::Settings,
        ("listen" | "prepare" | "load" | "do" | "call", _, _) => Effect::Pin,
        ("declare", _, _) if has("hold") => Effect::Pin,
        ("create", "temp" | "temporary", _) => Effect::Pin,
        ("create", "local" | "global", "temp" | "temporary") => Effect::Pin,
        ("select" | "with", _, _) if selects_into_temp(words) => Effect::Pin,
        ("discard", _, _) => Effect::Reset,
        ("deallocate", "all", _) | ("deallocate", "prepare", "all") => Effect::Reset,
        _ => Effect::None,
    }
}

fn selects_into_temp(words: &[String]) -> bool {
    words
        .windows(2)
        .any(|w| w[0] == "into" && matches!(w[1].as_str(), "temp" | "temporary"))
}

fn is_transaction_control(words: &[String]) -> bool {
    matches!(
        word(words, 0),
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_their_effects() {
        let cases = [
            ("select 1", Effect::None),
            ("insert into t values (1); select 2", Effect::None),
            ("SET statement_timeout = 1000", Effect::Settings),
            ("set session DateStyle to ISO", Effect::Settings),
            ("SET TIME ZONE 'UTC'", Effect::Settings),
            ("reset all", Effect::Settings),
            ("SET LOCAL statement_timeout = 5", Effect::None),
            ("set transaction isolation level serializable", Effect::None),
            ("begin; set x = 1; commit", Effect::Pin),
            ("set role postgres", Effect::Pin),
            ("SET SESSION AUTHORIZATION bob", Effect::Pin),
            ("listen events", Effect::Pin),
            ("unlisten *", Effect::None),
            ("prepare p as select 1", Effect::Pin),
            ("declare c cursor with hold for select 1", Effect::Pin),
            ("declare c cursor for select 1", Effect::None),
            ("create temp table t (a int)", Effect::Pin),
            ("CREATE LOCAL TEMPORARY TABLE t (a int)", Effect::Pin),
            ("create table t (a int)", Effect::None),
            ("select * into temp t from x", Effect::Pin),
            ("select pg_advisory_lock(1)", Effect::Pin),
            ("select pg_advisory_xact_lock(1)", Effect::None),
            ("select set_config('a.b', 'c', true)", Effect::Pin),
            (
                "select pg_advisory_unlock_all(); close all; unlisten *; reset all",
                Effect::Settings,
            ),
            ("discard all", Effect::Reset),
            ("deallocate all", Effect::Reset),
            ("deallocate p", Effect::None),
            ("do $$ begin perform 1; end $$", Effect::Pin),
            ("select 'set x = 1'", Effect::None),
            ("select 'unterminated", Effect::Pin),
        ];
        for (sql, expected) in cases {
            assert_eq!(classify(sql).effect, expected, "{sql}");
        }
    }

    #[test]
    fn settings_statements_are_located() {
        let sql = "select pg_advisory_unlock_all(); RESET ALL ; set a.b = 'x;y'";
        let found: Vec<&str> = classify(sql)
            .settings
            .into_iter()
            .map(|r| &sql[r])
            .collect();
        assert_eq!(found, ["RESET ALL", "set a.b = 'x;y'"]);
    }
}
