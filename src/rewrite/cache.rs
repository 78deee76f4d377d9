//! A bounded cache of decisions keyed by target and text: either a
//! statement's exact text, or its shape (constants taken out, see
//! `shape.rs`).
//!
//! Two generations approximate LRU: lookups hit the young generation or
//! promote from the old one; when the young one is full it becomes the old one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use super::shape::Template;
use super::{Target, Verdict};

/// What is known about a text or a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The verdict, whatever the constants are.
    Same(Verdict),
    /// Rewritten: the template to fill with the statement's constants.
    Template(Template),
    /// The shape's verdict may depend on its constants: analyse each text.
    Unshaped,
}

#[derive(Clone)]
struct Entry {
    schema: Box<str>,
    flags: (bool, bool, Option<u32>),
    text: Box<str>,
    value: Cached,
}

impl Entry {
    fn matches(&self, target: &Target, text: &str) -> bool {
        *self.text == *text && *self.schema == *target.schema && self.flags == flags(target)
    }
}

#[derive(Default)]
struct Generations {
    young: HashMap<u64, Entry>,
    old: HashMap<u64, Entry>,
}

/// Bounded map from (target, text or shape) to what is known about it.
pub struct Cache {
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    inner: Mutex<Generations>,
}

fn flags(target: &Target) -> (bool, bool, Option<u32>) {
    (target.admin, target.read_only, target.min_group_size)
}

impl Cache {
    /// A cache holding up to about `capacity` entries (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.div_ceil(2),
            hasher: Default::default(),
            inner: Mutex::new(Generations::default()),
        }
    }

    fn key(&self, target: &Target, text: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        target.schema.hash(&mut h);
        flags(target).hash(&mut h);
        text.hash(&mut h);
        h.finish()
    }

    /// What is cached for this target and text (or shape key), if anything.
    pub fn get(&self, target: &Target, text: &str) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let k = self.key(target, text);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.young.get(&k) {
            return e.matches(target, text).then(|| e.value.clone());
        }
        let entry = g.old.remove(&k).filter(|e| e.matches(target, text))?;
        let value = entry.value.clone();
        self.store(&mut g, k, entry);
        Some(value)
    }

    /// Remembers what is known for this target and text (or shape key).
    pub fn insert(&self, target: &Target, text: &str, value: Cached) {
        if self.capacity == 0 {
            return;
        }
        let entry = Entry {
            schema: target.schema.as_str().into(),
            flags: flags(target),
            text: text.into(),
            value,
        };
        let k = self.key(target, text);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.store(&mut g, k, entry);
    }

    fn store(&self, g: &mut Generations, k: u64, entry: Entry) {
        if g.young.len() >= self.capacity {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(k, entry);
    }

    /// Number of cached entries (both generations).
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

    fn forward() -> Cached {
        Cached::Same(Verdict::Forward)
    }

    #[test]
    fn bounded_and_keyed_by_target() {
        let c = Cache::new(4);
        let t = target();
        for i in 0..100 {
            c.insert(&t, &format!("select {i}"), forward());
        }
        assert!(c.len() <= 4, "len {}", c.len());
        assert_eq!(c.get(&t, "select 99"), Some(forward()));
        assert_eq!(c.get(&t, "select 0"), None);
        let ro = Target {
            read_only: true,
            ..target()
        };
        assert_eq!(c.get(&ro, "select 99"), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = Cache::new(0);
        c.insert(&target(), "select 1", forward());
        assert_eq!(c.get(&target(), "select 1"), None);
    }
}
