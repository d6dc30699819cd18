//! The master's viewer keys, in its database: one signing key (no `not_after`) and the keys it
//! replaced, each until the end of its grace. A rotation makes a new signing key and gives every
//! other key a `not_after`; the sweep drops a key once its grace has ended. Key ids are `k1`,
//! `k2`, ... from a counter that never goes back, so an id is never used for two secrets.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use mesh_core::viewer::ViewerKey;

use crate::store::{Store, StoreError};

/// A key as the admin API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub created: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// The key new tokens are made with.
    pub signing: bool,
}

/// What dropping a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Done,
    NoSuchKey,
    /// The signing key is not dropped: rotate first.
    SigningKey,
}

const ORDER: &str = "ORDER BY not_after IS NOT NULL, not_after DESC, created DESC, id";

impl Store {
    /// The viewer keys, the signing key first. A database without any (new, or made by a master
    /// that kept one viewer secret) gets one, made with `make_secret`, and loses the old secret.
    /// Returns the keys and whether an old secret was replaced.
    pub fn viewer_keys_or_make(
        &self,
        now: u64,
        make_secret: impl FnOnce() -> String,
    ) -> Result<(Vec<ViewerKey>, bool), StoreError> {
        let keys = self.viewer_keys()?;
        if !keys.is_empty() {
            return Ok((keys, false));
        }
        let tx = self.db.unchecked_transaction()?;
        let id = self.next_key_id()?;
        tx.execute(
            "INSERT INTO viewer_keys (id, secret, created, not_after) VALUES (?1, ?2, ?3, NULL)",
            params![id, make_secret(), now],
        )?;
        let replaced = tx.execute("DELETE FROM meta WHERE k = 'viewer_secret'", [])? == 1;
        tx.commit()?;
        Ok((self.viewer_keys()?, replaced))
    }

    /// The viewer keys, the signing key first.
    pub fn viewer_keys(&self) -> Result<Vec<ViewerKey>, StoreError> {
        let mut q = self.db.prepare(&format!("SELECT id, secret, not_after FROM viewer_keys {ORDER}"))?;
        let rows =
            q.query_map([], |r| Ok(ViewerKey { id: r.get(0)?, secret: r.get(1)?, not_after: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The keys without their secrets.
    pub fn viewer_key_info(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let mut q = self.db.prepare(&format!("SELECT id, created, not_after FROM viewer_keys {ORDER}"))?;
        let rows = q.query_map([], |r| {
            let not_after: Option<u64> = r.get(2)?;
            Ok(KeyInfo { id: r.get(0)?, created: r.get(1)?, not_after, signing: not_after.is_none() })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A new signing key with `secret`; every other key retires at `retire_at` at the latest
    /// (one already retiring earlier keeps its end). Returns the new key's id.
    pub fn rotate_viewer_key(&self, secret: &str, retire_at: u64, now: u64) -> Result<String, StoreError> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "UPDATE viewer_keys SET not_after = MIN(COALESCE(not_after, ?1), ?1)",
            params![retire_at],
        )?;
        let id = self.next_key_id()?;
        tx.execute(
            "INSERT INTO viewer_keys (id, secret, created, not_after) VALUES (?1, ?2, ?3, NULL)",
            params![id, secret, now],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Drop a retiring key now (its tokens are refused with the next tables).
    pub fn drop_viewer_key(&self, id: &str) -> Result<Dropped, StoreError> {
        let not_after: Option<Option<u64>> = self
            .db
            .query_row("SELECT not_after FROM viewer_keys WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(match not_after {
            None => Dropped::NoSuchKey,
            Some(None) => Dropped::SigningKey,
            Some(Some(_)) => {
                self.db.execute("DELETE FROM viewer_keys WHERE id = ?1", [id])?;
                Dropped::Done
            }
        })
    }

    /// Drop the keys whose grace ended before `now`; their ids.
    pub fn drop_retired_viewer_keys(&self, now: u64) -> Result<Vec<String>, StoreError> {
        let mut q = self.db.prepare("DELETE FROM viewer_keys WHERE not_after < ?1 RETURNING id")?;
        let ids = q.query_map([now], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(ids)
    }

    fn next_key_id(&self) -> Result<String, StoreError> {
        let n = self.meta("viewer_key_seq")?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        self.set_meta("viewer_key_seq", &n.to_string())?;
        Ok(format!("k{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_key_for_its_grace() {
        let s = Store::memory().unwrap();
        let (keys, replaced) = s.viewer_keys_or_make(100, || "first-secret-0123456789".into()).unwrap();
        assert!(!replaced);
        assert_eq!(
            keys,
            [ViewerKey { id: "k1".into(), secret: "first-secret-0123456789".into(), not_after: None }]
        );
        assert_eq!(s.viewer_keys_or_make(101, || unreachable!()).unwrap().0, keys, "made once");
        assert_eq!(s.rotate_viewer_key("second-secret-0123456789", 500, 200).unwrap(), "k2");
        let keys = s.viewer_keys().unwrap();
        assert_eq!((keys[0].id.as_str(), keys[0].not_after), ("k2", None), "the signing key first");
        assert_eq!((keys[1].id.as_str(), keys[1].not_after), ("k1", Some(500)));
        // A second rotation with a shorter grace shortens the first one's; never lengthens it.
        assert_eq!(s.rotate_viewer_key("third-secret-0123456789", 300, 250).unwrap(), "k3");
        let info = s.viewer_key_info().unwrap();
        let ends: Vec<_> = info.iter().map(|k| (k.id.as_str(), k.not_after, k.signing)).collect();
        assert_eq!(ends, [("k3", None, true), ("k2", Some(300), false), ("k1", Some(300), false)]);
        s.rotate_viewer_key("fourth-secret-0123456789", 10_000, 260).unwrap();
        assert_eq!(s.viewer_keys().unwrap()[3].not_after, Some(300), "k1 keeps its end");
        // The sweep drops what has ended; the admin drops a retiring key, never the signing one.
        assert_eq!(
            s.drop_retired_viewer_keys(300).unwrap(),
            Vec::<String>::new(),
            "300 is still in the grace"
        );
        let mut gone = s.drop_retired_viewer_keys(301).unwrap();
        gone.sort();
        assert_eq!(gone, ["k1", "k2"]);
        assert_eq!(s.drop_viewer_key("k4").unwrap(), Dropped::SigningKey);
        assert_eq!(s.drop_viewer_key("k3").unwrap(), Dropped::Done);
        assert_eq!(s.drop_viewer_key("k3").unwrap(), Dropped::NoSuchKey);
        assert_eq!(s.viewer_keys().unwrap().len(), 1);
        // Ids are never used twice, even once dropped.
        assert_eq!(s.rotate_viewer_key("fifth-secret-0123456789", 0, 270).unwrap(), "k5");
    }

    #[test]
    fn the_single_viewer_secret_of_earlier_versions_is_replaced() {
        let s = Store::memory().unwrap();
        s.set_meta("viewer_secret", "old-single-secret").unwrap();
        let (keys, replaced) = s.viewer_keys_or_make(100, || "new-secret-0123456789".into()).unwrap();
        assert!(replaced);
        assert_eq!(keys[0].secret, "new-secret-0123456789");
        assert_eq!(s.meta("viewer_secret").unwrap(), None, "the old secret is gone from the database");
    }
}
