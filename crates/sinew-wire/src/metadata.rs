//! Metadata: the key/value pairs carried by call headers, response headers and trailers.
//!
//! Keys are 1 to 255 bytes of lower-case ASCII letters, digits, `-`, `_` and `.`,
//! the same rule as gRPC, so metadata maps one to one onto HTTP/2 headers. A key
//! ending in `-bin` holds arbitrary bytes; any other key holds printable ASCII
//! (0x20..=0x7E). A key may appear several times; order is kept.
//!
//! Every operation costs O(1) per entry whatever the peer sent: a map with
//! more than a few entries keeps an index of how many values each key has
//! (with the standard library's randomly seeded hasher, so that a peer cannot
//! choose keys that collide), and `insert` or `remove` of a key the map does
//! not hold never scans it. How much metadata a peer may send at all is
//! bounded by the receiver's `MAX_HEADER_LIST_SIZE` setting
//! ([`Settings`](crate::Settings)).
//!
//! Cheap for the few entries calls usually carry: the first two live inline
//! in the map's one allocation, keys decoded from a frame are slices of it,
//! and a key known at compile time ([`MetadataMap::insert_static`]) is not
//! copied.

use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::fmt;

/// Why a metadata key or value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMetadata {
    /// The key is empty, longer than 255 bytes or has a character outside `[a-z0-9-_.]`.
    #[error("invalid metadata key {0:?}: keys are 1 to 255 characters of [a-z0-9-_.]")]
    Key(String),
    /// The value of a non-`-bin` key is not printable ASCII.
    #[error("invalid value for metadata key {0:?}: only printable ASCII is allowed unless the key ends in \"-bin\"")]
    Value(String),
}

/// Ordered multi-map of metadata keys to values.
///
/// One pointer wide, and empty without allocating: most calls carry no
/// metadata, and maps travel inside every request, response and status.
#[derive(Clone, Default)]
pub struct MetadataMap {
    inner: Option<Box<Inner>>,
}

#[derive(Clone, Default)]
struct Inner {
    /// Keys are checked (`[a-z0-9-_.]`, so also UTF-8) before they get here.
    entries: SmallVec<[(Bytes, Bytes); 2]>,
    /// Values per key, kept once the map has more than [`INDEX_AFTER`]
    /// entries (below that a scan is cheaper than hashing).
    counts: Option<HashMap<Bytes, usize>>,
}

/// A checked key as text.
fn key_str(key: &Bytes) -> &str {
    // Keys are checked ASCII on the way in: never the empty fallback.
    std::str::from_utf8(key).unwrap_or_default()
}

/// Longest key, in bytes (its length is one byte on the wire).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Entries a map holds before it starts indexing its keys.
const INDEX_AFTER: usize = 16;

impl MetadataMap {
    /// An empty map. Does not allocate.
    pub const fn new() -> MetadataMap {
        MetadataMap { inner: None }
    }

    fn entries(&self) -> &[(Bytes, Bytes)] {
        self.inner.as_deref().map_or(&[], |inner| &inner.entries)
    }

    fn counts(&self) -> Option<&HashMap<Bytes, usize>> {
        self.inner
            .as_deref()
            .and_then(|inner| inner.counts.as_ref())
    }

    /// Appends one entry, keeping the index.
    fn push(&mut self, key: Bytes, value: Bytes) {
        let inner = self.inner.get_or_insert_with(Box::default);
        match &mut inner.counts {
            Some(counts) => *counts.entry(key.clone()).or_insert(0) += 1,
            None if inner.entries.len() >= INDEX_AFTER => {
                let mut counts = HashMap::with_capacity(inner.entries.len() * 2);
                for k in inner.entries.iter().map(|(k, _)| k).chain([&key]) {
                    *counts.entry(k.clone()).or_insert(0) += 1;
                }
                inner.counts = Some(counts);
            }
            None => {}
        }
        inner.entries.push((key, value));
    }

    /// Whether `key` has a value, without a scan when the map is indexed.
    pub fn contains_key(&self, key: &str) -> bool {
        match self.counts() {
            Some(counts) => counts.contains_key(key.as_bytes()),
            None => self.entries().iter().any(|(k, _)| k == key.as_bytes()),
        }
    }

    /// Checks a key against the metadata key rule.
    pub fn validate_key(key: &str) -> Result<(), InvalidMetadata> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
        if valid {
            Ok(())
        } else {
            Err(InvalidMetadata::Key(key.to_owned()))
        }
    }

    /// Checks a value against the rule for its key (printable ASCII unless `-bin`).
    pub fn validate_value(key: &str, value: &[u8]) -> Result<(), InvalidMetadata> {
        if key.ends_with("-bin") || value.iter().all(|b| (0x20..=0x7e).contains(b)) {
            Ok(())
        } else {
            Err(InvalidMetadata::Value(key.to_owned()))
        }
    }

    /// Replaces every value of `key` with one ASCII value.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        Self::validate_key(key)?;
        Self::validate_value(key, value.as_bytes())?;
        self.remove(key);
        self.push(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
        Ok(())
    }

    /// [`MetadataMap::insert`] for a key known at compile time, which is
    /// not copied (for layers that set the same key on every call).
    pub fn insert_static(&mut self, key: &'static str, value: &str) -> Result<(), InvalidMetadata> {
        Self::validate_key(key)?;
        Self::validate_value(key, value.as_bytes())?;
        self.remove(key);
        self.push(
            Bytes::from_static(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
        Ok(())
    }

    /// Adds one more ASCII value for `key`, keeping the ones already there.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        Self::validate_key(key)?;
        Self::validate_value(key, value.as_bytes())?;
        self.push(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
        Ok(())
    }

    /// Replaces every value of a binary key (which must end in `-bin`).
    pub fn insert_bin(
        &mut self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<(), InvalidMetadata> {
        Self::validate_key(key)?;
        if !key.ends_with("-bin") {
            return Err(InvalidMetadata::Key(key.to_owned()));
        }
        self.remove(key);
        self.push(Bytes::copy_from_slice(key.as_bytes()), value.into());
        Ok(())
    }

    /// Adds an entry whose key and value were already validated (decoding, merging).
    pub(crate) fn push_unchecked(&mut self, key: Bytes, value: Bytes) {
        self.push(key, value);
    }

    /// The first value of `key` as text, if present and ASCII.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bin(key)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of `key` as bytes.
    pub fn get_bin(&self, key: &str) -> Option<&[u8]> {
        if self
            .counts()
            .is_some_and(|c| !c.contains_key(key.as_bytes()))
        {
            return None;
        }
        self.entries()
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries()
            .iter()
            .filter(move |(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    /// Removes every value of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        let Some(inner) = self.inner.as_deref_mut() else {
            return 0;
        };
        if let Some(counts) = &mut inner.counts {
            if counts.remove(key.as_bytes()).is_none() {
                return 0;
            }
        }
        let before = inner.entries.len();
        inner.entries.retain(|(k, _)| k != key.as_bytes());
        before - inner.entries.len()
    }

    /// Moves every entry of `other` to the end of this map.
    pub fn extend(&mut self, other: MetadataMap) {
        if self.is_empty() {
            *self = other;
        } else if let Some(other) = other.inner {
            for (key, value) in other.entries {
                self.push(key, value);
            }
        }
    }

    /// All entries in order, as (key, value bytes).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries().iter().map(|(k, v)| (key_str(k), v.as_ref()))
    }

    /// Number of entries (a key with two values counts twice).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Bytes this map takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.entries()
            .iter()
            .map(|(k, v)| 1 + k.len() + 4 + v.len())
            .sum()
    }
}

impl PartialEq for MetadataMap {
    fn eq(&self, other: &MetadataMap) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for MetadataMap {}

impl fmt::Debug for MetadataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.entries() {
            let key = key_str(key);
            match std::str::from_utf8(value) {
                Ok(text) if !key.ends_with("-bin") => map.entry(&key, &text),
                _ => map.entry(&key, value),
            };
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_grpc_rule() {
        assert!(MetadataMap::validate_key("x-request-id").is_ok());
        assert!(MetadataMap::validate_key("a.b_c-9").is_ok());
        assert!(MetadataMap::validate_key("").is_err());
        assert!(MetadataMap::validate_key("Upper").is_err());
        assert!(MetadataMap::validate_key("sp ace").is_err());
        assert!(MetadataMap::validate_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn ascii_values_refuse_control_bytes_and_bin_values_take_anything() {
        let mut map = MetadataMap::new();
        assert!(map.insert("k", "line\nbreak").is_err());
        assert!(
            map.insert_bin("k", vec![0u8, 255]).is_err(),
            "binary needs -bin"
        );
        map.insert_bin("trace-bin", vec![0u8, 255]).unwrap();
        assert_eq!(map.get_bin("trace-bin"), Some(&[0u8, 255][..]));
    }

    #[test]
    fn a_large_map_answers_like_a_small_one() {
        let mut map = MetadataMap::new();
        for i in 0..100 {
            map.append(&format!("k{}", i % 40), &i.to_string()).unwrap();
        }
        assert!(map.counts().is_some(), "indexed past {INDEX_AFTER} entries");
        assert_eq!(map.len(), 100);
        assert_eq!(map.get("k3"), Some("3"));
        assert_eq!(map.get_all("k3").count(), 3);
        assert!(map.get("absent").is_none());
        assert!(map.contains_key("k39") && !map.contains_key("k40"));
        assert_eq!(map.remove("absent"), 0);
        assert_eq!(map.remove("k3"), 3);
        assert!(!map.contains_key("k3"));
        map.insert("k4", "new").unwrap();
        assert_eq!(map.get_all("k4").collect::<Vec<_>>(), vec![&b"new"[..]]);
        assert_eq!(map.iter().last(), Some(("k4", &b"new"[..])));
        let mut other = MetadataMap::new();
        other.append("k3", "back").unwrap();
        map.extend(other);
        assert_eq!(map.get("k3"), Some("back"));
        let mut small = MetadataMap::new();
        small.append("k0", "0").unwrap();
        assert_ne!(map, small);
        assert_eq!(map.clone(), map);
    }

    #[test]
    fn inserting_many_distinct_keys_takes_linear_time() {
        // 128k distinct keys, each inserted (replace semantics) as an echo
        // handler does: quadratic before the index, instant with it.
        let mut map = MetadataMap::new();
        for i in 0..128 * 1024 {
            map.insert_bin(&format!("x-echo-{i}-bin"), Bytes::new())
                .unwrap();
        }
        assert_eq!(map.len(), 128 * 1024);
        for i in (0..128 * 1024).step_by(4096) {
            assert!(map.contains_key(&format!("x-echo-{i}-bin")));
        }
    }

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut map = MetadataMap::new();
        map.append("k", "1").unwrap();
        map.append("k", "2").unwrap();
        assert_eq!(map.get_all("k").count(), 2);
        map.insert("k", "3").unwrap();
        assert_eq!(map.get("k"), Some("3"));
        assert_eq!(map.len(), 1);
        assert_eq!(map.remove("k"), 1);
        assert!(map.is_empty());
    }
}
