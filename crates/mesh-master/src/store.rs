//! What the master keeps across restarts, in SQLite: broadcaster accounts and their streams
//! (key hashes and identities), admin role assignments, node credentials (key generations,
//! revocations), the master's epoch, the viewer keys ([`crate::viewer_keys`]), the keys of
//! the hops placed (their own table, [`crate::hop_keys`])
//! and a ceiling on table versions (so a restarted master never hands out a version it used
//! before). Everything else is rebuilt from announces and heartbeats.
//!
//! The database holds the viewer keys and hop keys in clear: it and its `-wal` and `-shm` files are made
//! 0600 (SQLite gives the last two the database's mode), and an existing one is brought to 0600.

use std::collections::BTreeMap;
use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use mesh_core::role::Role;

use crate::creds::NodeCred;

/// Table versions are reserved in blocks: one write per `VERSION_BLOCK` changes.
pub const VERSION_BLOCK: u64 = 1000;

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

pub struct Store {
    pub(crate) db: Connection,
}

/// A stream as the tables need it: its key hash and its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub key_sha256: String,
    /// Made anew whenever the stream is created: its viewer tokens are bound to it.
    pub id: String,
}

/// The files SQLite keeps for the database at `path`.
pub fn db_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// The database file and, when they exist, its -wal and -shm: 0600. The database is created
/// 0600 if it does not exist (never truncated), so the files SQLite makes beside it are too.
fn private_files(path: &Path) -> Result<(), StoreError> {
    let fail =
        |p: &Path, e: std::io::Error| StoreError(format!("cannot make \"{}\" private: {e}", p.display()));
    let [db, wal, shm] = db_files(path);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&db)
        .map_err(|e| fail(&db, e))?;
    for p in [&db, &wal, &shm] {
        match std::fs::set_permissions(p, Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p != &db => {}
            Err(e) => return Err(fail(p, e)),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub created: u64,
    pub streams: Vec<String>,
}

impl Store {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        private_files(path)?;
        let db = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open \"{}\": {e}", path.display())))?;
        let store = Store::init(db)?;
        // The -wal and -shm exist now (WAL mode): check them once more.
        private_files(path)?;
        Ok(store)
    }

    /// A database in memory (tests).
    pub fn memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(db: Connection) -> Result<Store, StoreError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS streams (
                 stream TEXT PRIMARY KEY,
                 account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
                 key_sha256 TEXT NOT NULL,
                 created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS roles (node_id TEXT PRIMARY KEY, role TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS node_creds (
                 node_id TEXT PRIMARY KEY,
                 generation INTEGER NOT NULL DEFAULT 0,
                 revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS viewer_keys (
                 id TEXT PRIMARY KEY,
                 secret TEXT NOT NULL,
                 created INTEGER NOT NULL,
                 not_after INTEGER);",
        )?;
        // Streams of a database made before stream identities: the column, then an identity
        // for each (give_stream_ids).
        let has_sid =
            db.prepare("SELECT 1 FROM pragma_table_info('streams') WHERE name = 'sid'")?.exists([])?;
        if !has_sid {
            db.execute_batch("ALTER TABLE streams ADD COLUMN sid TEXT")?;
        }
        Ok(Store { db })
    }

    /// Give every stream without an identity one (streams of a database made before them).
    /// Returns how many were given.
    pub fn give_stream_ids(&self, mut make: impl FnMut() -> String) -> Result<usize, StoreError> {
        let mut q = self.db.prepare("SELECT stream FROM streams WHERE sid IS NULL")?;
        let missing: Vec<String> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        for s in &missing {
            self.db.execute("UPDATE streams SET sid = ?2 WHERE stream = ?1", [s.as_str(), &make()])?;
        }
        Ok(missing.len())
    }

    pub(crate) fn meta(&self, k: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).optional()?)
    }

    pub(crate) fn set_meta(&self, k: &str, v: &str) -> Result<(), StoreError> {
        self.db
            .execute("INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2", [k, v])?;
        Ok(())
    }

    /// The version ceiling of the last run (0 on a new database).
    pub fn version_ceiling(&self) -> Result<u64, StoreError> {
        Ok(self.meta("version_ceiling")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub fn set_version_ceiling(&self, v: u64) -> Result<(), StoreError> {
        self.set_meta("version_ceiling", &v.to_string())
    }

    /// The master's epoch: a random id made once with the database (`make`), kept for its
    /// life. Table versions count within it (docs/protocol.md, "Epochs").
    pub fn epoch_or_make(&self, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        if let Some(e) = self.meta("epoch")? {
            return Ok(e);
        }
        let e = make();
        self.set_meta("epoch", &e)?;
        Ok(e)
    }

    /// Every node credential the database says something of.
    pub fn node_creds(&self) -> Result<Vec<(String, NodeCred)>, StoreError> {
        let mut q = self.db.prepare("SELECT node_id, generation, revoked FROM node_creds")?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                NodeCred { generation: r.get(1)?, revoked: r.get::<_, i64>(2)? != 0 },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_node_cred(&self, node_id: &str, c: NodeCred) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO node_creds (node_id, generation, revoked) VALUES (?1, ?2, ?3)
             ON CONFLICT(node_id) DO UPDATE SET generation = ?2, revoked = ?3",
            params![node_id, c.generation, i64::from(c.revoked)],
        )?;
        Ok(())
    }

    pub fn create_account(&self, name: &str, now: u64) -> Result<bool, StoreError> {
        let n = self
            .db
            .execute("INSERT OR IGNORE INTO accounts (name, created) VALUES (?1, ?2)", params![name, now])?;
        Ok(n == 1)
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut q = self.db.prepare(
            "SELECT a.name, a.created, s.stream FROM accounts a LEFT JOIN streams s ON s.account = a.name
             ORDER BY a.name, s.stream",
        )?;
        let mut out: Vec<Account> = Vec::new();
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?, r.get::<_, Option<String>>(2)?))
        })?;
        for row in rows {
            let (name, created, stream) = row?;
            if out.last().is_none_or(|a| a.name != name) {
                out.push(Account { name, created, streams: vec![] });
            }
            if let Some(s) = stream {
                out.last_mut().expect("pushed").streams.push(s);
            }
        }
        Ok(out)
    }

    pub fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM accounts WHERE name = ?1", [name])? == 1)
    }

    /// Give `account` the stream `stream` with this key hash and identity `id`; false if the
    /// stream is taken.
    pub fn create_stream(
        &self,
        stream: &str,
        account: &str,
        key_sha256: &str,
        id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let n = self.db.execute(
            "INSERT OR IGNORE INTO streams (stream, account, key_sha256, created, sid) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![stream, account, key_sha256, now, id],
        )?;
        Ok(n == 1)
    }

    pub fn set_stream_key(&self, stream: &str, key_sha256: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("UPDATE streams SET key_sha256 = ?2 WHERE stream = ?1", [stream, key_sha256])?
            == 1)
    }

    pub fn delete_stream(&self, stream: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM streams WHERE stream = ?1", [stream])? == 1)
    }

    pub fn account_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .query_row("SELECT 1 FROM accounts WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stream → hex sha256 of its key.
    pub fn publish_keys(&self) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.streams()?.into_iter().map(|(s, r)| (s, r.key_sha256)).collect())
    }

    /// Every stream, with its key hash and identity.
    pub fn streams(&self) -> Result<BTreeMap<String, StreamRow>, StoreError> {
        let mut q = self.db.prepare("SELECT stream, key_sha256, COALESCE(sid, '') FROM streams")?;
        let rows =
            q.query_map([], |r| Ok((r.get(0)?, StreamRow { key_sha256: r.get(1)?, id: r.get(2)? })))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_role(&self, node_id: &str, role: Option<Role>) -> Result<(), StoreError> {
        match role {
            Some(r) => self.db.execute(
                "INSERT INTO roles (node_id, role) VALUES (?1, ?2) ON CONFLICT(node_id) DO UPDATE SET role = ?2",
                [node_id, r.as_str()],
            )?,
            None => self.db.execute("DELETE FROM roles WHERE node_id = ?1", [node_id])?,
        };
        Ok(())
    }

    pub fn roles(&self) -> Result<Vec<(String, Role)>, StoreError> {
        let mut q = self.db.prepare("SELECT node_id, role FROM roles")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, role) = row?;
            let role = role
                .parse()
                .map_err(|_| StoreError(format!("node \"{id}\": bad role \"{role}\" in the database")))?;
            out.push((id, role));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_it_is_given_across_opens() {
        let dir = std::env::temp_dir().join(format!("mesh-master-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.db");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.version_ceiling().unwrap(), 0);
            s.set_version_ceiling(2000).unwrap();
            assert_eq!(
                s.viewer_keys_or_make(1, || "v1-0123456789abcdef".into()).unwrap().0[0].secret,
                "v1-0123456789abcdef"
            );
            assert!(s.create_account("acme", 1).unwrap());
            assert!(!s.create_account("acme", 1).unwrap(), "once");
            assert!(s.create_stream("cam1", "acme", "aa", "id1", 1).unwrap());
            assert!(!s.create_stream("cam1", "acme", "bb", "id2", 1).unwrap(), "a stream has one owner");
            s.set_role("root-1", Some(Role::Relay)).unwrap();
            assert_eq!(s.epoch_or_make(|| "e1".into()).unwrap(), "e1");
            s.set_node_cred("edge-1", NodeCred { generation: 2, revoked: true }).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.version_ceiling().unwrap(), 2000);
        assert_eq!(s.epoch_or_make(|| unreachable!()).unwrap(), "e1", "made once, with the database");
        assert_eq!(
            s.node_creds().unwrap(),
            [("edge-1".to_string(), NodeCred { generation: 2, revoked: true })]
        );
        assert_eq!(
            s.viewer_keys_or_make(2, || unreachable!()).unwrap().0[0].secret,
            "v1-0123456789abcdef",
            "made once"
        );
        assert_eq!(s.publish_keys().unwrap(), BTreeMap::from([("cam1".into(), "aa".into())]));
        assert_eq!(s.streams().unwrap()["cam1"].id, "id1");
        assert_eq!(s.roles().unwrap(), [("root-1".to_string(), Role::Relay)]);
        assert!(s.set_stream_key("cam1", "cc").unwrap());
        assert_eq!(s.publish_keys().unwrap()["cam1"], "cc");
        assert_eq!(
            s.accounts().unwrap(),
            [Account { name: "acme".into(), created: 1, streams: vec!["cam1".into()] }]
        );
        assert!(s.delete_account("acme").unwrap());
        assert!(s.publish_keys().unwrap().is_empty(), "an account's streams go with it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mesh-master-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
    }

    /// The database and its -wal and -shm hold the viewer keys in clear: 0600, whatever the
    /// umask (the test runs under the usual 022, which would give 0644).
    #[test]
    fn the_database_and_its_wal_and_shm_are_private() {
        let dir = temp_dir("modes");
        let path = dir.join("m.db");
        let s = Store::open(&path).unwrap();
        s.viewer_keys_or_make(1, || "0123456789abcdef0123".into()).unwrap();
        s.create_account("acme", 1).unwrap();
        for p in db_files(&path) {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        drop(s);
        // A database left 0644 by an earlier version, with its -wal and -shm: made private.
        for p in db_files(&path) {
            if p.exists() {
                std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
            }
        }
        std::fs::write(&db_files(&path)[2], b"").ok();
        std::fs::set_permissions(&db_files(&path)[2], Permissions::from_mode(0o644)).unwrap();
        let s = Store::open(&path).unwrap();
        s.create_account("other", 2).unwrap();
        for p in db_files(&path) {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn streams_of_an_older_database_get_identities() {
        let dir = temp_dir("migrate");
        let path = dir.join("m.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE accounts (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
                 CREATE TABLE streams (stream TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name)
                     ON DELETE CASCADE, key_sha256 TEXT NOT NULL, created INTEGER NOT NULL);
                 INSERT INTO accounts VALUES ('acme', 1);
                 INSERT INTO streams VALUES ('cam1', 'acme', 'aa', 1), ('cam2', 'acme', 'bb', 1);",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let mut n = 0;
        assert_eq!(
            s.give_stream_ids(|| {
                n += 1;
                format!("id{n}")
            })
            .unwrap(),
            2
        );
        assert_eq!(s.give_stream_ids(|| unreachable!()).unwrap(), 0, "once");
        let ids: Vec<String> = s.streams().unwrap().into_values().map(|r| r.id).collect();
        assert_eq!(ids, ["id1", "id2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
