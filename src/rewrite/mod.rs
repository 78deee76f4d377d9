//! SQL rewriting: parse a statement, refuse what may not run, and map each
//! reference to a protected table onto the view of the session's view set.
//!
//! Pure functions, no I/O. [`Rewriter::rewrite`] takes one Query or Parse
//! text and, for a non-admin [`Target`]:
//!
//! 1. tokenizes it once (sqlparser, PostgreSQL dialect) and runs the
//!    position-independent deny scan: functions that run SQL text, read
//!    files/large objects, reach other servers or change settings
//!    (`query_to_xml*`, `table_to_xml*`, `cursor_to_xml*`, `dblink*`,
//!    `pg_read_file`, `lo_*`, `set_config`, `ts_stat`, ...), catalog views
//!    that reveal values, query texts or settings (`pg_stats*`,
//!    `pg_statistic*`, `pg_stat_activity`, `pg_settings`, ...), any string
//!    literal naming a `pgveil.*` setting, and `U&"..."` identifiers (0A000);
//! 2. splits the text into statements at `;` tokens; each statement is
//!    parsed and walked: deny rules per statement kind, tables mapped to
//!    `"<schema>"."<table>" AS <original name>` in FROM/JOIN/LATERAL, every
//!    subquery, CTE bodies (a CTE named like a table shadows it, with
//!    PostgreSQL's scoping: a non-recursive CTE sees only earlier ones),
//!    set operations, DML targets and sources, `TABLE t`, `COPY t TO`
//!    (becomes `COPY (SELECT cols FROM view) TO`), `COPY t FROM`, cursors,
//!    `PREPARE` bodies and `LOCK`;
//! 3. fails closed: every token naming a protected table must have been
//!    rewritten, be a column qualifier, an alias, qualified by the view set
//!    schema or an unprotected schema, or a user-written CTE/alias name;
//!    otherwise the statement is refused (0A000);
//! 4. statements sqlparser cannot parse are forwarded unchanged only if they
//!    start like a harmless statement (SELECT/WITH/VALUES/SHOW/FETCH/MOVE/
//!    transaction control/LISTEN/...), contain no write or INTO keyword, and
//!    name no protected table in any case or quoting; `TABLE t` is rewritten.
//!
//! Only statements that changed are re-serialised; the others keep their
//! exact text, and a text where nothing changed yields [`Verdict::Forward`].
//! A multi-statement text is refused as a whole if any statement is refused.
//!
//! Decisions (what is refused, 42501 unless noted):
//! - DDL of every kind, DO, CALL, CREATE FUNCTION/PROCEDURE, CREATE TABLE AS,
//!   SELECT INTO, VACUUM/ANALYZE, LOAD, CHECKPOINT, ALTER SYSTEM: everything
//!   outside an allow-list of statement kinds is refused.
//! - EXPLAIN (with or without ANALYZE) is refused for every non-admin target:
//!   row estimates come from base-table statistics and leak distributions.
//! - SET/RESET of role, session_authorization, search_path and `pgveil.*`;
//!   SET ROLE, SET SESSION AUTHORIZATION; client_encoding/SET NAMES other
//!   than UTF8; standard_conforming_strings other than on; SHOW ALL and SHOW
//!   pgveil.*. `RESET ALL`/`DISCARD ALL` are allowed (pools such as asyncpg
//!   send them): they return settings to the role defaults, so settings that
//!   views read must be role defaults (`ALTER ROLE ... SET`), not session SETs.
//! - SQL-level PREPARE is rewritten (its body goes through the same rules);
//!   EXECUTE of a prepared name is allowed, EXECUTE IMMEDIATE is refused.
//! - COPY to/from a server file or PROGRAM; only STDIN/STDOUT.
//! - Writes to catalogs (`UPDATE pg_settings ...`, any `pg_*`/pg_catalog/
//!   information_schema target).
//! - Schema-qualified function calls outside pg_catalog/information_schema
//!   (functions elsewhere cannot be vetted). Unqualified functions are not
//!   vetted: `apply` should revoke EXECUTE from PUBLIC on non-system
//!   functions (a SECURITY DEFINER function could read base tables).
//! - Read-only targets: INSERT/UPDATE/DELETE/MERGE (also inside CTEs and
//!   PREPARE) and COPY FROM.
//! - Anonymous targets (`min_group_size: Some(k)`): every SELECT whose FROM
//!   reads a protected table must aggregate (GROUP BY or a summary aggregate)
//!   and gets `HAVING count(*) >= k` (ANDed with an existing HAVING; a global
//!   aggregate over fewer than k rows returns no row). Collecting aggregates
//!   (array_agg, string_agg, json_agg, ...) are refused; writes, `TABLE t`
//!   and `COPY t TO` are refused. Differencing (attack 10) is mitigated, not
//!   solved: comparisons of identifying columns (`id`, `*_id`, email, phone,
//!   national_id, account_no, names) with non-column values in WHERE/HAVING
//!   are refused. Two aggregates whose groups both have at least k rows can
//!   still differ by one person (e.g. `region = 'north'` vs `region = 'north'
//!   AND gender = 'f'`); count(*) counts joined rows, not people; min/max
//!   return a member's (masked) value. The views' generalisation must carry
//!   the rest.
//! - Unparsable statements: 0A000 unless harmless as described above.

mod analyse;
mod anon;
mod cache;
mod deny;
pub mod effects;
mod fallback;
pub mod lexer;
mod mapper;
mod names;
pub mod params;
mod refusal;
mod shape;
mod tokens;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use cache::{Cache, Cached};
use shape::{Shape, Template};

pub use refusal::{INSUFFICIENT_PRIVILEGE, NOT_SUPPORTED};

/// How many rewrites the cache answered, and how many it did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Rewrites answered from the cache.
    pub hits: u64,
    /// Rewrites that had to analyse the statement.
    pub misses: u64,
}

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

/// The shared rewriter: protected tables and a decision cache (Send + Sync).
pub struct Rewriter {
    protected: names::Protected,
    cache: Cache,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Rewriter {
    /// A rewriter for these protected `(schema, table)` base tables, caching
    /// up to `cache_capacity` decisions.
    pub fn new(
        protected: impl IntoIterator<Item = (String, String)>,
        cache_capacity: usize,
    ) -> Self {
        Self {
            protected: names::Protected::new(protected),
            cache: Cache::new(cache_capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The verdict for one Query or Parse text sent by a session of `target`.
    ///
    /// A text seen before is answered from the cache; so is a query or DML
    /// statement whose shape was seen before with other constants (the
    /// fast path: one pass of the lexer and a template fill).
    pub fn rewrite(&self, target: &Target, sql: &str) -> Verdict {
        if target.admin {
            return Verdict::Forward;
        }
        let verdict = self.cached(target, sql);
        let counter = if verdict.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict.unwrap_or_else(|| self.analyse_and_learn(target, sql))
    }

    /// Hits and misses of the decision cache since this rewriter was built
    /// (a statement whose shape was cached counts as a hit).
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, target: &Target, sql: &str) -> Option<Verdict> {
        if let Some(Cached::Same(verdict)) = self.cache.get(target, sql) {
            return Some(verdict);
        }
        let shape = Shape::of(sql).filter(|s| !s.constants.is_empty() && s.constants_plain())?;
        match self.cache.get(target, &shape.key)? {
            Cached::Same(verdict) => Some(verdict),
            Cached::Template(template) => Some(Verdict::Rewritten(template.fill(&shape))),
            Cached::Unshaped => None,
        }
    }

    fn analyse_and_learn(&self, target: &Target, sql: &str) -> Verdict {
        let verdict = analyse::analyse(&self.protected, target, sql);
        let shape = Shape::of(sql).filter(|s| !s.constants.is_empty() && s.constants_plain());
        let learned = shape.map(|shape| {
            let known = self.cache.get(target, &shape.key);
            let value = known.unwrap_or_else(|| self.learn_shape(target, &shape, &verdict));
            self.cache.insert(target, &shape.key, value.clone());
            value
        });
        if !matches!(learned, Some(Cached::Same(_) | Cached::Template(_))) {
            self.cache
                .insert(target, sql, Cached::Same(verdict.clone()));
        }
        verdict
    }

    /// What a shape's verdict is, checked against the verdict of one
    /// statement of that shape: the probe (constants replaced by
    /// placeholders) must give the same verdict once the statement's own
    /// constants are put back.
    fn learn_shape(&self, target: &Target, shape: &Shape<'_>, verdict: &Verdict) -> Cached {
        let probe = analyse::analyse(&self.protected, target, &shape.probe());
        match (verdict, probe) {
            (Verdict::Forward, Verdict::Forward) => Cached::Same(Verdict::Forward),
            (Verdict::Refused(a), Verdict::Refused(b)) if *a == b => {
                Cached::Same(Verdict::Refused(b))
            }
            (Verdict::Rewritten(text), Verdict::Rewritten(probe_text)) => {
                match Template::from_rewritten_probe(&probe_text, shape.constants.len()) {
                    Some(t) if t.fill(shape) == *text => Cached::Template(t),
                    _ => Cached::Unshaped,
                }
            }
            _ => Cached::Unshaped,
        }
    }
}
