//! What the master keeps across restarts, in SQLite: broadcaster accounts and their stream keys
//! (hashed), admin role assignments, the viewer secret, and a ceiling on table versions (so a
//! restarted master never hands out a version it used before). Everything else is rebuilt from
//! announces and heartbeats.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use mesh_core::role::Role;

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
    db: Connection,
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
        let db = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open \"{}\": {e}", path.display())))?;
        Store::init(db)
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
             CREATE TABLE IF NOT EXISTS roles (node_id TEXT PRIMARY KEY, role TEXT NOT NULL);",
        )?;
        Ok(Store { db })
    }

    fn meta(&self, k: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).optional()?)
    }

    fn set_meta(&self, k: &str, v: &str) -> Result<(), StoreError> {
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

    /// The viewer secret, made on first use.
    pub fn viewer_secret(&self, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        if let Some(s) = self.meta("viewer_secret")? {
            return Ok(s);
        }
        let s = make();
        self.set_meta("viewer_secret", &s)?;
        Ok(s)
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

    /// Give `account` the stream `stream` with this key hash; false if the stream is taken.
    pub fn create_stream(
        &self,
        stream: &str,
        account: &str,
        key_sha256: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let n = self.db.execute(
            "INSERT OR IGNORE INTO streams (stream, account, key_sha256, created) VALUES (?1, ?2, ?3, ?4)",
            params![stream, account, key_sha256, now],
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
        let mut q = self.db.prepare("SELECT stream, key_sha256 FROM streams")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
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
            assert_eq!(s.viewer_secret(|| "v1".into()).unwrap(), "v1");
            assert!(s.create_account("acme", 1).unwrap());
            assert!(!s.create_account("acme", 1).unwrap(), "once");
            assert!(s.create_stream("cam1", "acme", "aa", 1).unwrap());
            assert!(!s.create_stream("cam1", "acme", "bb", 1).unwrap(), "a stream has one owner");
            s.set_role("root-1", Some(Role::Relay)).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.version_ceiling().unwrap(), 2000);
        assert_eq!(s.viewer_secret(|| "v2".into()).unwrap(), "v1", "made once");
        assert_eq!(s.publish_keys().unwrap(), BTreeMap::from([("cam1".into(), "aa".into())]));
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
}
