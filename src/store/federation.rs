//! Federation state: the enrolment and sync cookie, the alliance's UUIDs of
//! the entries copied here, the outbox of local changes and the conflicts
//! the authority rule settled. Stores and reads; decides nothing.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// How this appliance is enrolled with the alliance (the password is the
/// secret file `alliance-password`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enrolment {
    pub url: String,
    pub bind_dn: String,
    /// The alliance's suffix.
    pub suffix: String,
    /// This appliance's node name (its people's `commonsHomeNode`).
    pub node: String,
    pub joined_at: i64,
    /// The CA file for `ldaps://`, when not the system's roots.
    pub ca_file: Option<String>,
}

/// One local change waiting for (or settled at) the alliance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: i64,
    pub kind: String,
    pub dn: String,
    pub detail: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub settled_at: Option<i64>,
}

/// A conflict the authority rule settled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConflictRow {
    pub id: i64,
    pub at: i64,
    pub dn: String,
    pub attr: String,
    pub kind: String,
    pub winner: String,
    pub detail: String,
    pub outbox_id: Option<i64>,
}

/// The outbox in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    pub oldest_pending_at: Option<i64>,
    pub done: i64,
    pub failed: i64,
    pub conflicts: i64,
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        created_at: r.get(1)?,
        kind: r.get(2)?,
        dn: r.get(3)?,
        detail: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        settled_at: r.get(8)?,
    })
}

const OUTBOX_COLS: &str =
    "id, created_at, kind, dn, detail, state, attempts, last_error, settled_at";

impl Store {
    pub fn enrolment(&self) -> Result<Option<Enrolment>, StoreError> {
        self.conn
            .query_row(
                "SELECT url, bind_dn, suffix, node, joined_at, ca_file FROM federation WHERE id = 1",
                [],
                |r| {
                    Ok(Enrolment {
                        url: r.get(0)?,
                        bind_dn: r.get(1)?,
                        suffix: r.get(2)?,
                        node: r.get(3)?,
                        joined_at: r.get(4)?,
                        ca_file: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records the enrolment. A new URL, account or suffix drops the cookie
    /// (it belongs to the old provider); the same one keeps it.
    pub fn enrol(&self, e: &Enrolment) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO federation (id, url, bind_dn, suffix, node, joined_at, ca_file)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET
                   cookie = CASE WHEN url = excluded.url AND bind_dn = excluded.bind_dn
                                  AND suffix = excluded.suffix THEN cookie ELSE NULL END,
                   url = excluded.url, bind_dn = excluded.bind_dn,
                   suffix = excluded.suffix, node = excluded.node, ca_file = excluded.ca_file",
                params![e.url, e.bind_dn, e.suffix, e.node, e.joined_at, e.ca_file],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The sync cookie and when it was last written.
    pub fn sync_cookie(&self) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        self.conn
            .query_row(
                "SELECT cookie, cookie_at FROM federation WHERE id = 1 AND cookie IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or_default())),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes the cookie (`None` drops it, for a reload).
    pub fn set_sync_cookie(&self, cookie: Option<&[u8]>, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE federation SET cookie = ?1, cookie_at = ?2, last_contact = ?2 WHERE id = 1",
                params![cookie, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn touch_contact(&self, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE federation SET last_contact = ?1 WHERE id = 1",
                [now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn last_contact(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT last_contact FROM federation WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Our DN of the alliance entry with this UUID.
    pub fn fed_entry(&self, uuid: &[u8]) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT dn FROM fed_entries WHERE uuid = ?1", [uuid], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn map_fed_entry(&self, uuid: &[u8], dn: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO fed_entries (uuid, dn, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (uuid) DO UPDATE SET dn = excluded.dn, seen_at = excluded.seen_at",
                params![uuid, dn, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn unmap_fed_entry(&self, uuid: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM fed_entries WHERE uuid = ?1", [uuid])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Every copied entry: (UUID, our DN).
    pub fn fed_entries(&self) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT uuid, dn FROM fed_entries")
            .map_err(|e| self.err(e))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    pub fn fed_entry_count(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM fed_entries", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Queues a local change for the alliance, but only once enrolled: a
    /// standalone appliance pushes everything when it joins instead.
    /// `preparing`: queued before its LDAP write, released after it.
    pub fn outbox_push(
        &self,
        now: i64,
        kind: &str,
        dn: &str,
        detail: &str,
        preparing: bool,
    ) -> Result<Option<i64>, StoreError> {
        let state = if preparing { "preparing" } else { "pending" };
        let n = self
            .conn
            .execute(
                "INSERT INTO fed_outbox (created_at, kind, dn, detail, state)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM federation)",
                params![now, kind, dn, detail, state],
            )
            .map_err(|e| self.err(e))?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// Hands prepared rows to the replay (their LDAP write is done).
    pub fn outbox_release(&self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.conn
                .execute(
                    "UPDATE fed_outbox SET state = 'pending' WHERE id = ?1 AND state = 'preparing'",
                    [id],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Drops prepared rows whose LDAP write failed.
    pub fn outbox_discard(&self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.conn
                .execute(
                    "DELETE FROM fed_outbox WHERE id = ?1 AND state = 'preparing'",
                    [id],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// At start: rows a crash left prepared go to the replay, which finds
    /// out whether their write happened.
    pub fn outbox_release_all(&self) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE fed_outbox SET state = 'pending' WHERE state = 'preparing'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    /// The pending changes, oldest first.
    pub fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLS} FROM fed_outbox WHERE state = 'pending' ORDER BY id LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map([limit], outbox_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// The latest changes whatever their state, newest first.
    pub fn outbox_recent(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLS} FROM fed_outbox ORDER BY id DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map([limit], outbox_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Settles a change: `done`, `conflict` or `failed`.
    pub fn outbox_settle(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE fed_outbox SET state = ?2, last_error = ?3, settled_at = ?4,
                        attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending'",
                params![id, state, error, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A try that did not settle (the link failed): counted, kept pending.
    pub fn outbox_retry_later(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE fed_outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The pending changes' rows for one DN (to hold their attributes back
    /// from the down-sync until they are settled).
    pub fn outbox_pending_for(&self, dn: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLS} FROM fed_outbox WHERE dn = ?1 COLLATE NOCASE AND state IN ('preparing', 'pending') ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map([dn], outbox_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// DNs with pending changes.
    pub fn outbox_pending_dns(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT lower(dn) FROM fed_outbox WHERE state = 'pending'")
            .map_err(|e| self.err(e))?;
        st.query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.conn
            .query_row(
                "SELECT
                   (SELECT count(*) FROM fed_outbox WHERE state = 'pending'),
                   (SELECT min(created_at) FROM fed_outbox WHERE state = 'pending'),
                   (SELECT count(*) FROM fed_outbox WHERE state = 'done'),
                   (SELECT count(*) FROM fed_outbox WHERE state = 'failed'),
                   (SELECT count(*) FROM fed_conflicts)",
                [],
                |r| {
                    Ok(OutboxStats {
                        pending: r.get(0)?,
                        oldest_pending_at: r.get(1)?,
                        done: r.get(2)?,
                        failed: r.get(3)?,
                        conflicts: r.get(4)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_conflict(
        &self,
        at: i64,
        dn: &str,
        attr: &str,
        kind: &str,
        winner: &str,
        detail: &str,
        outbox_id: Option<i64>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO fed_conflicts (at, dn, attr, kind, winner, detail, outbox_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![at, dn, attr, kind, winner, detail, outbox_id],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Whether a conflict of this kind was recorded for `dn`.
    pub fn has_conflict(&self, dn: &str, kind: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM fed_conflicts WHERE dn = ?1 COLLATE NOCASE AND kind = ?2 LIMIT 1",
                params![dn, kind],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// The latest conflicts, newest first.
    pub fn conflicts(&self, limit: i64) -> Result<Vec<ConflictRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, at, dn, attr, kind, winner, detail, outbox_id FROM fed_conflicts
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        st.query_map([limit], |r| {
            Ok(ConflictRow {
                id: r.get(0)?,
                at: r.get(1)?,
                dn: r.get(2)?,
                attr: r.get(3)?,
                kind: r.get(4)?,
                winner: r.get(5)?,
                detail: r.get(6)?,
                outbox_id: r.get(7)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    fn enrolment(url: &str) -> Enrolment {
        Enrolment {
            url: url.into(),
            bind_dn: "cn=box,ou=appliances,dc=a".into(),
            suffix: "dc=a".into(),
            node: "box.q.org".into(),
            joined_at: 5,
            ca_file: None,
        }
    }

    #[test]
    fn the_outbox_fills_only_once_enrolled() {
        let (_d, s) = store();
        assert_eq!(
            s.outbox_push(1, "attrs", "uid=a", "{}", false).unwrap(),
            None
        );
        s.enrol(&enrolment("ldap://a")).unwrap();
        let id = s
            .outbox_push(2, "attrs", "uid=a", "{}", false)
            .unwrap()
            .unwrap();
        let id2 = s
            .outbox_push(3, "member", "cn=g", "{}", true)
            .unwrap()
            .unwrap();
        let id3 = s
            .outbox_push(3, "member", "cn=h", "{}", true)
            .unwrap()
            .unwrap();
        // Prepared rows wait for their write.
        assert_eq!(s.outbox_pending(10).unwrap().len(), 1);
        s.outbox_release(&[id2]).unwrap();
        s.outbox_discard(&[id3]).unwrap();
        assert!(id2 > id);
        let p = s.outbox_pending(10).unwrap();
        assert_eq!(p.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id, id2]);
        s.outbox_settle(id, "done", None, 9).unwrap();
        // Settling twice changes nothing.
        s.outbox_settle(id, "failed", Some("x"), 10).unwrap();
        let st = s.outbox_stats().unwrap();
        assert_eq!((st.pending, st.done, st.failed), (1, 1, 0));
        assert_eq!(st.oldest_pending_at, Some(3));
        assert_eq!(s.outbox_pending_for("CN=G").unwrap().len(), 1);
    }

    #[test]
    fn a_new_provider_drops_the_cookie_the_same_one_keeps_it() {
        let (_d, s) = store();
        s.enrol(&enrolment("ldap://a")).unwrap();
        s.set_sync_cookie(Some(b"c1"), 7).unwrap();
        s.enrol(&enrolment("ldap://a")).unwrap();
        assert_eq!(s.sync_cookie().unwrap(), Some((b"c1".to_vec(), 7)));
        s.enrol(&enrolment("ldap://b")).unwrap();
        assert_eq!(s.sync_cookie().unwrap(), None);
        assert_eq!(s.enrolment().unwrap().unwrap().url, "ldap://b");
    }

    #[test]
    fn entries_map_by_uuid_and_follow_renames() {
        let (_d, s) = store();
        s.map_fed_entry(b"u1", "uid=a,ou=people,dc=q", 1).unwrap();
        s.map_fed_entry(b"u1", "uid=b,ou=people,dc=q", 2).unwrap();
        assert_eq!(
            s.fed_entry(b"u1").unwrap().as_deref(),
            Some("uid=b,ou=people,dc=q")
        );
        assert_eq!(s.fed_entry_count().unwrap(), 1);
        s.unmap_fed_entry(b"u1").unwrap();
        assert_eq!(s.fed_entry(b"u1").unwrap(), None);
    }
}
