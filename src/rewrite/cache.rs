//! A bounded verdict cache keyed by target and SQL text.
//!
//! Two generations approximate LRU: lookups hit the young generation or
//! promote from the old one; when the young one is full it becomes the old one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Target, Verdict};

#[derive(Clone)]
struct Entry {
    schema: Box<str>,
    flags: (bool, bool, Option<u32>),
    sql: Box<str>,
    verdict: Verdict,
}

impl Entry {
    fn matches(&self, target: &Target, sql: &str) -> bool {
        *self.sql == *sql && *self.schema == *target.schema && self.flags == flags(target)
    }
}

#[derive(Default)]
struct Generations {
    young: HashMap<u64, Entry>,
    old: HashMap<u64, Entry>,
}

/// Bounded map from (target, SQL text) to the verdict for it.
pub struct Cache {
    capacity: usize,
    inner: Mutex<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How many lookups found a cached verdict, and how many did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to analyse the statement.
    pub misses: u64,
}

fn flags(target: &Target) -> (bool, bool, Option<u32>) {
    (target.admin, target.read_only, target.min_group_size)
}

fn key(target: &Target, sql: &str) -> u64 {
    let mut h = DefaultHasher::new();
    target.schema.hash(&mut h);
    flags(target).hash(&mut h);
    sql.hash(&mut h);
    h.finish()
}

impl Cache {
    /// A cache holding up to about `capacity` verdicts (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.div_ceil(2),
            inner: Mutex::new(Generations::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hits and misses since the cache was created.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The cached verdict for this target and text, if any; counted as a
    /// hit or a miss.
    pub fn get(&self, target: &Target, sql: &str) -> Option<Verdict> {
        let found = self.lookup(target, sql);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, target: &Target, sql: &str) -> Option<Verdict> {
        if self.capacity == 0 {
            return None;
        }
        let k = key(target, sql);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.young.get(&k) {
            return e.matches(target, sql).then(|| e.verdict.clone());
        }
        let entry = g.old.remove(&k).filter(|e| e.matches(target, sql))?;
        let verdict = entry.verdict.clone();
        self.store(&mut g, k, entry);
        Some(verdict)
    }

    /// Remembers the verdict for this target and text.
    pub fn insert(&self, target: &Target, sql: &str, verdict: Verdict) {
        if self.capacity == 0 {
            return;
        }
        let entry = Entry {
            schema: target.schema.as_str().into(),
            flags: flags(target),
            sql: sql.into(),
            verdict,
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.store(&mut g, key(target, sql), entry);
    }

    fn store(&self, g: &mut Generations, k: u64, entry: Entry) {
        if g.young.len() >= self.capacity {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(k, entry);
    }

    /// Number of cached verdicts (both generations).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.young.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            schema: "v".into(),
            admin: false,
            read_only: false,
            min_group_size: None,
        }
    }

    #[test]
    fn bounded_and_keyed_by_target() {
        let c = Cache::new(4);
        let t = target();
        for i in 0..100 {
            c.insert(&t, &format!("select {i}"), Verdict::Forward);
        }
        assert!(c.len() <= 4, "len {}", c.len());
        assert_eq!(c.get(&t, "select 99"), Some(Verdict::Forward));
        assert_eq!(c.get(&t, "select 0"), None);
        let ro = Target {
            read_only: true,
            ..target()
        };
        assert_eq!(c.get(&ro, "select 99"), None);
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 2 });
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = Cache::new(0);
        c.insert(&target(), "select 1", Verdict::Forward);
        assert_eq!(c.get(&target(), "select 1"), None);
    }
}
