//! A cache of API responses: the serialized JSON bodies, keyed by the request (its path and its
//! query parameters in a canonical order). An entry is served for `ttl` after it was stored, and all
//! entries together stay within `max_bytes`, the oldest evicted first.
//!
//! The clock is passed in (`now`) so that tests can move it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// The cache key of a request: the path, then the query parameters sorted by name (the order of
/// the values of one name is kept, as it can matter) and percent-encoded, so that two spellings of
/// one request share an entry.
pub fn key(path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut key = path.to_owned();
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        key.push(if i == 0 { '?' } else { '&' });
        key.extend(utf8_percent_encode(name, NON_ALPHANUMERIC));
        key.push('=');
        key.extend(utf8_percent_encode(value, NON_ALPHANUMERIC));
    }
    key
}

pub struct Cache {
    ttl: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// The keys by insertion number: the first is the oldest.
    order: BTreeMap<u64, String>,
    next: u64,
    bytes: usize,
}

struct Entry {
    body: Bytes,
    stored: Instant,
    number: u64,
}

/// What an entry counts against `max_bytes`: its key and its body.
fn size(key: &str, body: &Bytes) -> usize {
    key.len() + body.len()
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.number);
            self.bytes -= size(key, &entry.body);
        }
    }

    fn remove_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= size(&key, &entry.body);
            }
        }
    }
}

impl Cache {
    /// A zero `ttl` or `max_bytes` makes a cache that keeps nothing.
    pub fn new(ttl: Duration, max_bytes: usize) -> Cache {
        Cache {
            ttl,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves consistent data: every change is made whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.stored) >= self.ttl
    }

    /// The body stored under `key`, unless it is older than the TTL.
    pub fn get(&self, key: &str, now: Instant) -> Option<Bytes> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if self.expired(entry, now) {
            inner.remove(key);
            return None;
        }
        Some(entry.body.clone())
    }

    /// Stores a body, replacing what `key` held, and evicts expired entries, then the oldest ones,
    /// until everything fits. A body larger than the whole cache is not stored.
    pub fn insert(&self, key: String, body: Bytes, now: Instant) {
        let needed = size(&key, &body);
        if self.ttl.is_zero() || needed > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        while let Some(oldest) = inner.order.first_key_value().map(|(_, key)| key.clone()) {
            let expired = inner
                .entries
                .get(&oldest)
                .is_none_or(|entry| self.expired(entry, now));
            if !expired && inner.bytes + needed <= self.max_bytes {
                break;
            }
            inner.remove_oldest();
        }
        let number = inner.next;
        inner.next += 1;
        inner.order.insert(number, key.clone());
        inner.bytes += needed;
        inner.entries.insert(
            key,
            Entry {
                body,
                stored: now,
                number,
            },
        );
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_sort_parameters_by_name_and_keep_repeated_ones_in_order() {
        let a = key(
            "/api/traces",
            &pairs(&[
                ("service", "a b"),
                ("tag", "x:1"),
                ("limit", "20"),
                ("tag", "y:2"),
            ]),
        );
        let b = key(
            "/api/traces",
            &pairs(&[
                ("tag", "x:1"),
                ("limit", "20"),
                ("tag", "y:2"),
                ("service", "a b"),
            ]),
        );
        assert_eq!(a, b);
        assert_eq!(a, "/api/traces?limit=20&service=a%20b&tag=x%3A1&tag=y%3A2");
        let swapped = key(
            "/api/traces",
            &pairs(&[
                ("tag", "y:2"),
                ("tag", "x:1"),
                ("limit", "20"),
                ("service", "a b"),
            ]),
        );
        assert_ne!(a, swapped);
        // Separators inside names and values cannot make two requests look alike.
        assert_ne!(
            key("/p", &pairs(&[("a", "1&b=2")])),
            key("/p", &pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(key("/api/services", &[]), "/api/services");
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = Cache::new(Duration::from_secs(60), 1 << 20);
        let start = Instant::now();
        cache.insert("a".into(), Bytes::from_static(b"[1]"), start);
        assert_eq!(
            cache.get("a", start + Duration::from_secs(59)),
            Some(Bytes::from_static(b"[1]"))
        );
        assert_eq!(cache.get("a", start + Duration::from_secs(60)), None);
        assert_eq!(cache.bytes(), 0, "the expired entry is dropped");
        assert_eq!(cache.get("b", start), None);

        // Storing again restarts the TTL and replaces the body.
        cache.insert("a".into(), Bytes::from_static(b"[2]"), start);
        cache.insert(
            "a".into(),
            Bytes::from_static(b"[3]"),
            start + Duration::from_secs(30),
        );
        assert_eq!(
            cache.get("a", start + Duration::from_secs(80)),
            Some(Bytes::from_static(b"[3]"))
        );
        assert_eq!(cache.bytes(), 4);
    }

    #[test]
    fn the_oldest_entries_are_evicted_to_stay_within_the_bytes() {
        // Each entry is a 1-byte key and a 9-byte body: 10 bytes.
        let cache = Cache::new(Duration::from_secs(60), 30);
        let now = Instant::now();
        let body = Bytes::from_static(b"123456789");
        for k in ["a", "b", "c"] {
            cache.insert(k.into(), body.clone(), now);
        }
        assert_eq!(cache.bytes(), 30);
        // Reading does not make an entry younger: eviction is by age.
        assert!(cache.get("a", now).is_some());
        cache.insert("d".into(), body.clone(), now);
        assert_eq!(cache.get("a", now), None);
        for k in ["b", "c", "d"] {
            assert!(cache.get(k, now).is_some(), "{k}");
        }
        // A larger body pushes out as many of the oldest as it needs.
        cache.insert("e".into(), Bytes::from(vec![b'x'; 19]), now);
        assert_eq!(cache.get("b", now), None);
        assert_eq!(cache.get("c", now), None);
        assert!(cache.get("d", now).is_some());
        assert!(cache.get("e", now).is_some());
        assert_eq!(cache.bytes(), 30);
        // One larger than the whole cache is not stored and evicts nothing.
        cache.insert("f".into(), Bytes::from(vec![b'x'; 30]), now);
        assert_eq!(cache.get("f", now), None);
        assert!(cache.get("d", now).is_some());
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let cache = Cache::new(Duration::from_secs(60), 30);
        let start = Instant::now();
        let body = Bytes::from_static(b"123456789");
        cache.insert("a".into(), body.clone(), start);
        cache.insert("b".into(), body.clone(), start + Duration::from_secs(30));
        // At 61s "a" has expired: inserting drops it though the cache is not full.
        cache.insert("c".into(), body.clone(), start + Duration::from_secs(61));
        assert_eq!(cache.bytes(), 20);
        assert!(cache.get("b", start + Duration::from_secs(61)).is_some());
    }

    #[test]
    fn a_zero_ttl_or_size_keeps_nothing() {
        let now = Instant::now();
        for cache in [
            Cache::new(Duration::ZERO, 1 << 20),
            Cache::new(Duration::from_secs(1), 0),
        ] {
            cache.insert("a".into(), Bytes::from_static(b"[]"), now);
            assert_eq!(cache.get("a", now), None);
        }
    }
}
