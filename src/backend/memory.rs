//! What pgveil remembers of a backend connection's session state, so that
//! under transaction pooling it knows what a client needs redone on the
//! connection it is handed: the statements pgveil prepared on it (under
//! names of its own) and the client settings applied to it.
//!
//! Forgetting is always safe (a statement is prepared again under a new
//! name, settings are applied again); remembering something the connection
//! no longer has is not, so every reset forgets.

use std::collections::HashMap;
use std::sync::Arc;

/// Statements pgveil keeps prepared per connection before it closes the
/// least recently used.
pub const MAX_PREPARED: usize = 500;

/// A statement as parsed on the backend: text and parameter types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Body {
    /// The SQL text sent to PostgreSQL (rewritten where needed).
    pub sql: String,
    /// Parameter type OIDs given in the Parse message.
    pub types: Vec<u32>,
}

/// A client's settings: from its startup packet, then the `SET`s it ran
/// outside transactions, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Startup parameters and `-c` options.
    pub startup: Vec<(String, String)>,
    /// `SET`/`RESET` statements to replay.
    pub carried: Vec<String>,
}

impl Settings {
    /// One Query text that puts a connection in exactly these settings.
    pub fn apply_sql(&self) -> String {
        let calls: Vec<String> = self
            .startup
            .iter()
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(name),
                    quote_literal(value)
                )
            })
            .collect();
        let mut sql = String::from("RESET ALL");
        if !calls.is_empty() {
            sql.push_str("; SELECT ");
            sql.push_str(&calls.join(", "));
        }
        for statement in &self.carried {
            sql.push_str("; ");
            sql.push_str(statement);
        }
        sql
    }

    /// These settings with more statements carried; `RESET ALL` drops
    /// what was carried before it.
    pub fn carrying(&self, statements: Vec<String>) -> Settings {
        let mut carried = self.carried.clone();
        for statement in statements {
            if is_reset_all(&statement) {
                carried.clear();
            } else {
                carried.push(statement);
            }
        }
        Settings {
            startup: self.startup.clone(),
            carried,
        }
    }
}

fn is_reset_all(statement: &str) -> bool {
    let words: Vec<String> = statement
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    words == ["reset", "all"]
}

/// An escape-string literal, safe whatever standard_conforming_strings is.
pub fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// What pgveil knows of one connection's session state.
#[derive(Debug, Default)]
pub struct Memory {
    prepared: HashMap<Arc<Body>, Prepared>,
    next_name: u64,
    clock: u64,
    /// The unnamed statement last parsed on it, if pgveil knows it.
    pub unnamed: Option<Arc<Body>>,
    /// The client settings last applied to it, if pgveil knows them.
    pub settings: Option<Arc<Settings>>,
}

#[derive(Debug)]
struct Prepared {
    name: u64,
    used: u64,
}

impl Memory {
    /// The backend name of a statement prepared on this connection.
    pub fn prepared_name(&mut self, body: &Body) -> Option<String> {
        self.clock += 1;
        let clock = self.clock;
        let prepared = self.prepared.get_mut(body)?;
        prepared.used = clock;
        Some(statement_name(prepared.name))
    }

    /// Records that `body` is being prepared; returns its backend name.
    pub fn prepare(&mut self, body: Arc<Body>) -> String {
        self.clock += 1;
        self.next_name += 1;
        let prepared = Prepared {
            name: self.next_name,
            used: self.clock,
        };
        self.prepared.insert(body, prepared);
        statement_name(self.next_name)
    }

    /// When more than [`MAX_PREPARED`] statements are kept, forgets the
    /// least recently used one and returns its backend name to close.
    pub fn evict(&mut self) -> Option<String> {
        if self.prepared.len() <= MAX_PREPARED {
            return None;
        }
        let oldest = self
            .prepared
            .iter()
            .min_by_key(|(_, p)| p.used)
            .map(|(body, _)| body.clone())?;
        self.prepared
            .remove(&oldest)
            .map(|p| statement_name(p.name))
    }

    /// The connection does not have this statement.
    pub fn forget(&mut self, body: &Body) {
        self.prepared.remove(body);
    }

    /// The connection was reset, or may have been: it has none of pgveil's
    /// statements or settings any more.
    pub fn forget_all(&mut self) {
        self.prepared.clear();
        self.unnamed = None;
        self.settings = None;
    }

    /// Whether the connection has exactly these settings applied.
    pub fn has_settings(&self, settings: &Arc<Settings>) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, settings) || **s == **settings)
    }
}

/// Backend statement names never repeat on a connection, so a statement
/// forgotten but still there can never be mistaken for another.
fn statement_name(n: u64) -> String {
    format!("pgveil_s{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(sql: &str) -> Arc<Body> {
        Arc::new(Body {
            sql: sql.into(),
            types: vec![23],
        })
    }

    #[test]
    fn names_are_per_body_and_never_reused() {
        let mut m = Memory::default();
        let a = m.prepare(body("select $1"));
        assert_eq!(m.prepared_name(&body("select $1")), Some(a.clone()));
        assert_eq!(m.prepared_name(&body("select $1 + 1")), None);
        m.forget_all();
        assert_eq!(m.prepared_name(&body("select $1")), None);
        let b = m.prepare(body("select $1"));
        assert_ne!(a, b);
    }

    #[test]
    fn the_least_recently_used_statement_is_evicted() {
        let mut m = Memory::default();
        let first = m.prepare(body("select 0"));
        for i in 1..=MAX_PREPARED {
            m.prepare(body(&format!("select {i}")));
        }
        m.prepared_name(&body("select 0"));
        let evicted = m.evict().expect("one too many");
        assert_ne!(evicted, first);
        assert_eq!(m.evict(), None);
    }

    #[test]
    fn settings_replay_as_one_text() {
        let s = Settings {
            startup: vec![("application_name".into(), "it's".into())],
            carried: vec![],
        }
        .carrying(vec![
            "SET a.b = 1".into(),
            "reset  ALL".into(),
            "SET c.d = 2".into(),
        ]);
        assert_eq!(
            s.apply_sql(),
            "RESET ALL; SELECT pg_catalog.set_config(E'application_name', E'it''s', false); SET c.d = 2"
        );
        assert_eq!(Settings::default().apply_sql(), "RESET ALL");
    }
}
