//! A table as the protocol's JSON, written from parts whose JSON is kept: each stream's
//! entries in a node's table, and the parts every table shares (broadcaster keys, stream
//! identities), are written once and copied into every table (and every later version) that
//! has them. So a change that gives 1,000 relays a new version of a 1,000-stream table writes
//! the stream that changed, and copies the rest (bench/README.md, 3d). The bytes are the ones
//! the document's `Serialize` gives (tested).

use std::fmt;
use std::io::Write;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};

use super::tables::{Entry, TableDoc};

/// A value and its JSON, written the first time a table needs it (off the mesh's lock, by
/// whichever long poll comes first) and kept as long as the value is.
#[derive(Default)]
pub struct Cached<T> {
    value: T,
    json: OnceLock<Box<[u8]>>,
}

/// How a kept part is written as JSON.
pub trait ToJson {
    fn to_json(&self) -> Vec<u8>;
}

impl<K: Serialize, V: Serialize> ToJson for std::collections::BTreeMap<K, V> {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A list of entries from its entries' own JSON: a root relay's list of 1,000 edges that
/// gained one is copied, not written again.
impl ToJson for Vec<Arc<Entry>> {
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.iter().map(|e| e.json().len() + 1).sum::<usize>());
        out.push(b'[');
        for (i, e) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(e.json());
        }
        out.push(b']');
        out
    }
}

/// An entry's JSON, written once; not part of what the entry is (equal whatever it holds).
#[derive(Default, Clone)]
pub struct EntryJson(OnceLock<Box<[u8]>>);

impl PartialEq for EntryJson {
    fn eq(&self, _: &EntryJson) -> bool {
        true
    }
}

impl Eq for EntryJson {}

impl fmt::Debug for EntryJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

impl Entry {
    /// The entry as JSON.
    pub fn json(&self) -> &[u8] {
        self.json.0.get_or_init(|| serde_json::to_vec(self).unwrap_or_default().into())
    }
}

impl<T: ToJson> Cached<T> {
    pub fn new(value: T) -> Cached<T> {
        Cached { value, json: OnceLock::new() }
    }

    /// The value, its JSON dropped.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The value as JSON.
    pub fn json(&self) -> &[u8] {
        self.json.get_or_init(|| self.value.to_json().into())
    }
}

impl<T> Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Cached<T> {
    fn eq(&self, other: &Cached<T>) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Cached<T> {}

impl<T: fmt::Debug> fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Cached<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// One stream's entries in one node's table.
pub type Entries = Arc<Cached<Vec<Arc<Entry>>>>;

/// A table as the protocol's JSON: the document with its version first. Fields in the
/// document's order (`role`, `ingest`, `relay`, `publish`, `viewer_keys`, `max_token_ttl_s`,
/// `streams`), the optional ones only when present, as its `Serialize` writes them.
pub fn table_json(version: u64, doc: &TableDoc) -> Option<(u64, Vec<u8>)> {
    let entries = |m: &std::collections::BTreeMap<Arc<str>, Entries>| {
        m.iter().map(|(k, v)| k.len() + v.json().len() + 4).sum::<usize>()
    };
    let shared = doc.publish.json().len() + doc.streams.as_ref().map_or(0, |s| s.json().len());
    let mut out = Vec::with_capacity(entries(&doc.ingest) + entries(&doc.relay) + shared + 256);
    write!(out, "{{\"version\":{version},\"role\":").ok()?;
    serde_json::to_writer(&mut out, &doc.role).ok()?;
    for (name, map) in [("ingest", &doc.ingest), ("relay", &doc.relay)] {
        write!(out, ",\"{name}\":{{").ok()?;
        for (i, (stream, v)) in map.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**stream).ok()?;
            out.push(b':');
            out.extend_from_slice(v.json());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"publish\":");
    out.extend_from_slice(doc.publish.json());
    if let Some(k) = &doc.viewer_keys {
        out.extend_from_slice(b",\"viewer_keys\":");
        serde_json::to_writer(&mut out, &**k).ok()?;
    }
    if let Some(t) = doc.max_token_ttl_s {
        write!(out, ",\"max_token_ttl_s\":{t}").ok()?;
    }
    if let Some(s) = &doc.streams {
        out.extend_from_slice(b",\"streams\":");
        out.extend_from_slice(s.json());
    }
    out.push(b'}');
    Some((version, out))
}

/// The same JSON from the document's `Serialize`: what [`table_json`] is checked against.
#[cfg(test)]
pub(super) fn table_json_by_serde(version: u64, doc: &TableDoc) -> Vec<u8> {
    let body = serde_json::to_vec(doc).unwrap();
    let rest = body.strip_prefix(b"{").unwrap();
    let mut out = format!("{{\"version\":{version}").into_bytes();
    if !rest.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}
