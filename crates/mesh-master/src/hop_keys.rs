//! Hop keys kept across restarts: every hop's random key is written to the master's database
//! (table `hop_keys`, in the 0600 files [`crate::store`] keeps) while the hop is placed, and
//! deleted when it is taken away. A restarted master that places the same hop again (the
//! same stream, from the same node, to the same node) hands out the same key, so no push
//! reconnects across a restart. Keys of the last run that no hop claims again by `until`
//! are deleted: a hop placed after that is a new one, with a new key.
//!
//! Why kept and not derived from the secret (docs/protocol.md, "Hop keys across restarts"):
//! a derived key is the same every time the hop is placed again, so a key read once on the
//! path (RTMP is plaintext) would open that hop at every later placement; a kept random key
//! opens it only while that placement lasts.
//!
//! Writes are gathered and committed once per placement change ([`Keys::commit`], called
//! before any table with the new keys goes out), with `synchronous = NORMAL`: no fsync on
//! the master's lock. A master killed keeps every committed key; a host that loses power may
//! lose the last ones, and those pushes reconnect once with new keys.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{params, Connection};
use tracing::warn;

use crate::mesh::Keys;
use crate::server::random_hex;
use crate::store::StoreError;

/// (stream, from, to).
type HopId = (String, String, String);

enum Write {
    Put(HopId, String),
    Delete(HopId),
}

pub struct KeptKeys {
    db: Connection,
    /// The key of every hop placed now, and of the last run's hops not placed again yet.
    kept: HashMap<HopId, String>,
    /// The last run's hops not placed again yet.
    last_run: HashSet<HopId>,
    /// Until when the last run's keys are handed back (unix seconds).
    until: u64,
    writes: Vec<Write>,
}

fn id(stream: &str, from: &str, to: &str) -> HopId {
    (stream.to_string(), from.to_string(), to.to_string())
}

impl KeptKeys {
    /// The keys kept in the database at `path` (opened by [`crate::store::Store::open`] first,
    /// which makes its files private); the last run's are handed back until `until`.
    pub fn open(path: &Path, until: u64) -> Result<KeptKeys, StoreError> {
        let db = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open \"{}\": {e}", path.display())))?;
        KeptKeys::init(db, until)
    }

    /// Keys in a database in memory (tests).
    pub fn memory(until: u64) -> Result<KeptKeys, StoreError> {
        KeptKeys::init(Connection::open_in_memory()?, until)
    }

    fn init(db: Connection, until: u64) -> Result<KeptKeys, StoreError> {
        db.busy_timeout(std::time::Duration::from_secs(2))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS hop_keys (
                 stream TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL, key TEXT NOT NULL,
                 PRIMARY KEY (stream, src, dst));",
        )?;
        let mut kept = HashMap::new();
        {
            let mut q = db.prepare("SELECT stream, src, dst, key FROM hop_keys")?;
            let rows = q.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?;
            for row in rows {
                let (hop, key): (HopId, String) = row?;
                kept.insert(hop, key);
            }
        }
        let last_run = kept.keys().cloned().collect();
        Ok(KeptKeys { db, kept, last_run, until, writes: Vec::new() })
    }

    /// How many keys are kept (placed hops, and the last run's not claimed yet).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn flush(&mut self) -> Result<(), rusqlite::Error> {
        let tx = self.db.transaction()?;
        for w in &self.writes {
            match w {
                Write::Put((s, f, t), key) => {
                    tx.execute(
                        "INSERT INTO hop_keys (stream, src, dst, key) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(stream, src, dst) DO UPDATE SET key = ?4",
                        params![s, f, t, key],
                    )?;
                }
                Write::Delete((s, f, t)) => {
                    tx.execute(
                        "DELETE FROM hop_keys WHERE stream = ?1 AND src = ?2 AND dst = ?3",
                        [s, f, t],
                    )?;
                }
            }
        }
        tx.commit()
    }
}

impl Keys for KeptKeys {
    fn hop_key(&mut self) -> String {
        random_hex(16)
    }

    fn key_of(&mut self, stream: &str, from: &str, to: &str) -> String {
        let hop = id(stream, from, to);
        if let Some(k) = self.kept.get(&hop) {
            self.last_run.remove(&hop);
            return k.clone();
        }
        let k = random_hex(16);
        self.kept.insert(hop.clone(), k.clone());
        self.writes.push(Write::Put(hop, k.clone()));
        k
    }

    fn had(&self, stream: &str, from: &str, to: &str) -> bool {
        !self.last_run.is_empty() && self.last_run.contains(&id(stream, from, to))
    }

    fn dropped(&mut self, stream: &str, from: &str, to: &str) {
        let hop = id(stream, from, to);
        self.last_run.remove(&hop);
        if self.kept.remove(&hop).is_some() {
            self.writes.push(Write::Delete(hop));
        }
    }

    fn commit(&mut self, now: u64) {
        if now >= self.until && !self.last_run.is_empty() {
            for hop in std::mem::take(&mut self.last_run) {
                self.kept.remove(&hop);
                self.writes.push(Write::Delete(hop));
            }
        }
        if self.writes.is_empty() {
            return;
        }
        if let Err(e) = self.flush() {
            // The keys stay in force; a restart before the next commit that succeeds reconnects
            // those pushes once (new keys), as before keys were kept.
            warn!(error = %e, "hop keys not saved");
        }
        self.writes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of its own per test, removed at the end.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file() -> (Dir, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mesh-hop-keys-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.db");
        crate::store::Store::open(&path).unwrap();
        (Dir(dir), path)
    }

    #[test]
    fn a_restart_hands_out_the_same_key_for_a_hop_placed_again() {
        let (_dir, path) = file();
        let mut k = KeptKeys::open(&path, 0).unwrap();
        let a = k.key_of("cam1", "ingest-1", "root-1");
        let b = k.key_of("cam1", "root-1", "edge-1");
        assert_eq!(k.key_of("cam1", "ingest-1", "root-1"), a, "the same hop, the same key");
        assert_ne!(a, b);
        k.commit(10);
        drop(k);
        let mut k = KeptKeys::open(&path, 100).unwrap();
        assert_eq!(k.key_of("cam1", "ingest-1", "root-1"), a, "kept across the restart");
        assert_eq!(k.key_of("cam1", "root-1", "edge-1"), b);
        // Another hop (the feed moved): a new key.
        assert_ne!(k.key_of("cam1", "root-2", "edge-1"), b);
    }

    #[test]
    fn a_hop_taken_away_and_placed_again_gets_a_new_key() {
        let (_dir, path) = file();
        let mut k = KeptKeys::open(&path, 0).unwrap();
        let a = k.key_of("cam1", "root-1", "edge-1");
        k.commit(10);
        k.dropped("cam1", "root-1", "edge-1");
        k.commit(11);
        assert_ne!(k.key_of("cam1", "root-1", "edge-1"), a);
        k.commit(12);
        k.dropped("cam1", "root-1", "edge-1");
        k.commit(13);
        drop(k);
        // Nothing left for a restarted master to hand back.
        let k = KeptKeys::open(&path, 100).unwrap();
        assert!(k.is_empty());
    }

    #[test]
    fn the_last_runs_keys_not_claimed_in_time_are_forgotten() {
        let (_dir, path) = file();
        let mut k = KeptKeys::open(&path, 0).unwrap();
        let a = k.key_of("cam1", "ingest-1", "root-1");
        let b = k.key_of("cam1", "root-1", "edge-1");
        k.commit(10);
        drop(k);
        let mut k = KeptKeys::open(&path, 100).unwrap();
        assert_eq!(k.key_of("cam1", "ingest-1", "root-1"), a, "claimed in time");
        k.commit(50);
        assert_eq!(k.len(), 2, "the other one still waits");
        k.commit(100);
        assert_eq!(k.len(), 1, "past `until`: the unclaimed one is gone");
        assert_ne!(k.key_of("cam1", "root-1", "edge-1"), b, "placed after: a new hop, a new key");
        k.commit(101);
        drop(k);
        let mut k = KeptKeys::open(&path, 200).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.key_of("cam1", "ingest-1", "root-1"), a, "the claimed one is kept still");
    }

    #[test]
    fn the_database_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = file();
        let mut k = KeptKeys::open(&path, 0).unwrap();
        k.key_of("cam1", "ingest-1", "root-1");
        k.commit(1);
        for p in crate::store::db_files(&path) {
            if let Ok(m) = std::fs::metadata(&p) {
                assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
            }
        }
    }
}
