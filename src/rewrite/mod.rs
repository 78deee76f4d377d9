//! SQL rewriting: parse a statement, refuse what may not run, and map each
//! reference to a protected table onto the view of the session's view set.
//!
//! Pure functions, no I/O. [`Rewriter::rewrite`] runs, per statement of a
//! Query or Parse text: a token-level deny scan (functions that run SQL text
//! or read files, catalog views that reveal values, `U&"..."` identifiers),
//! a parse with sqlparser, the statement deny rules ([`deny`]), the AST walk
//! that maps tables to views ([`mapper`]) and, for anonymous view sets, the
//! aggregate-only rules ([`anon`]); finally a fail-closed token re-scan that
//! refuses any protected table name left unqualified by the view set schema.
//! Statements sqlparser cannot parse are forwarded only if their tokens show
//! a harmless statement kind naming no protected table ([`fallback`]).

mod analyse;
mod anon;
mod cache;
mod deny;
mod fallback;
mod mapper;
mod names;
mod refusal;
mod tokens;

#[cfg(test)]
mod tests;

pub use refusal::{INSUFFICIENT_PRIVILEGE, NOT_SUPPORTED};

/// Why a statement was refused; becomes an ErrorResponse at the protocol edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE, e.g. `42501` (insufficient privilege) or `0A000` (not supported).
    pub sqlstate: &'static str,
    /// Primary message shown to the user.
    pub message: String,
    /// What the user can do instead.
    pub hint: Option<String>,
}

/// The outcome of rewriting one Query or Parse text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the original bytes unchanged.
    Forward,
    /// Forward this SQL text instead.
    Rewritten(String),
    /// Do not forward; answer with this error.
    Refused(Refusal),
}

/// Whom a statement is rewritten for: the session's view set and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Schema of the view set, e.g. `veil_standard`.
    pub schema: String,
    /// Administrators pass through unchanged.
    pub admin: bool,
    /// Refuse INSERT/UPDATE/DELETE/MERGE/COPY FROM.
    pub read_only: bool,
    /// Anonymous view sets: minimum rows per aggregate group.
    pub min_group_size: Option<u32>,
}

/// The shared rewriter: protected tables and a verdict cache (Send + Sync).
pub struct Rewriter {
    protected: names::Protected,
    cache: cache::Cache,
}

impl Rewriter {
    /// A rewriter for these protected `(schema, table)` base tables, caching
    /// up to `cache_capacity` verdicts.
    pub fn new(
        protected: impl IntoIterator<Item = (String, String)>,
        cache_capacity: usize,
    ) -> Self {
        Self {
            protected: names::Protected::new(protected),
            cache: cache::Cache::new(cache_capacity),
        }
    }

    /// The verdict for one Query or Parse text sent by a session of `target`.
    pub fn rewrite(&self, target: &Target, sql: &str) -> Verdict {
        if target.admin {
            return Verdict::Forward;
        }
        if let Some(v) = self.cache.get(target, sql) {
            return v;
        }
        let verdict = analyse::analyse(&self.protected, target, sql);
        self.cache.insert(target, sql, verdict.clone());
        verdict
    }
}
