//! A bounded least-recently-used cache of loaded case documents, so that memory does not grow with the number of cases.
//!
//! Hand-written (a map plus a recency index) to avoid a dependency for forty lines; every operation is O(log n).

use std::collections::{BTreeMap, HashMap};

/// An LRU map from document id to a value, holding at most `capacity` entries.
#[derive(Debug)]
pub(crate) struct Lru<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
    recency: BTreeMap<u64, String>,
}

impl<V> Lru<V> {
    pub fn new(capacity: usize) -> Lru<V> {
        assert!(capacity > 0, "an LRU of zero entries caches nothing");
        Lru { capacity, tick: 0, entries: HashMap::new(), recency: BTreeMap::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value for `key`, marked as most recently used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let (tick, _) = self.entries.get(key)?;
        let old = *tick;
        self.tick += 1;
        let now = self.tick;
        let name = self.recency.remove(&old).expect("recency tracks every entry");
        self.recency.insert(now, name);
        let entry = self.entries.get_mut(key).expect("checked above");
        entry.0 = now;
        Some(&mut entry.1)
    }

    /// Inserts `value` as most recently used, evicting the least recently used entry when full.
    pub fn insert(&mut self, key: String, value: V) {
        self.remove(&key);
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.recency.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.recency.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, value));
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (tick, value) = self.entries.remove(key)?;
        self.recency.remove(&tick);
        Some(value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("b".into(), 2);
        assert_eq!(lru.get_mut("a"), Some(&mut 1));
        lru.insert("c".into(), 3);
        assert!(lru.get_mut("b").is_none(), "b was the least recently used");
        assert_eq!(lru.get_mut("a"), Some(&mut 1));
        assert_eq!(lru.get_mut("c"), Some(&mut 3));
        assert_eq!(lru.len(), 2);
    }
}
