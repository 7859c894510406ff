//! Metadata: the key/value pairs carried by call headers, response headers and trailers.
//!
//! Keys are 1 to 255 bytes of lower-case ASCII letters, digits, `-`, `_` and `.`,
//! the same rule as gRPC, so metadata maps one to one onto HTTP/2 headers. A key
//! ending in `-bin` holds arbitrary bytes; any other key holds printable ASCII
//! (0x20..=0x7E). A key may appear several times; order is kept.

use bytes::Bytes;
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
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MetadataMap {
    entries: Vec<(String, Bytes)>,
}

/// Longest key, in bytes (its length is one byte on the wire).
pub(crate) const MAX_KEY_LEN: usize = 255;

impl MetadataMap {
    /// An empty map. Does not allocate.
    pub const fn new() -> MetadataMap {
        MetadataMap {
            entries: Vec::new(),
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
        self.entries
            .push((key.to_owned(), Bytes::copy_from_slice(value.as_bytes())));
        Ok(())
    }

    /// Adds one more ASCII value for `key`, keeping the ones already there.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        Self::validate_key(key)?;
        Self::validate_value(key, value.as_bytes())?;
        self.entries
            .push((key.to_owned(), Bytes::copy_from_slice(value.as_bytes())));
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
        self.entries.push((key.to_owned(), value.into()));
        Ok(())
    }

    /// Adds an entry whose key and value were already validated (decoding, merging).
    pub(crate) fn push_unchecked(&mut self, key: String, value: Bytes) {
        self.entries.push((key, value));
    }

    /// The first value of `key` as text, if present and ASCII.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bin(key)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of `key` as bytes.
    pub fn get_bin(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Removes every value of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        before - self.entries.len()
    }

    /// Moves every entry of `other` to the end of this map.
    pub fn extend(&mut self, other: MetadataMap) {
        if self.entries.is_empty() {
            self.entries = other.entries;
        } else {
            self.entries.extend(other.entries);
        }
    }

    /// All entries in order, as (key, value bytes).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Number of entries (a key with two values counts twice).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes this map takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| 1 + k.len() + 4 + v.len())
            .sum()
    }
}

impl fmt::Debug for MetadataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.entries {
            match std::str::from_utf8(value) {
                Ok(text) if !key.ends_with("-bin") => map.entry(key, &text),
                _ => map.entry(key, value),
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
