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
    /// The CA file for `ldaps://` or StartTLS, when not the system's roots.
    pub ca_file: Option<String>,
    /// The `ldap://` link is upgraded by StartTLS.
    #[serde(default)]
    pub starttls: bool,
}

/// A refresh's deletions, held until an admin confirms them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// Never reused: a confirmation names the hold the admin looked at.
    pub id: i64,
    pub at: i64,
    /// Entries copied here from the alliance when it was held.
    pub local_copy: i64,
    /// Entries the refresh would delete here (and will, once confirmed).
    pub delete: i64,
    /// Entries it asked to delete that stay (homed here, or this box's
    /// collective): never deleted by a refresh.
    pub keep: i64,
    pub confirmed_at: Option<i64>,
    pub confirmed_by: Option<String>,
}

/// One entry of a hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldEntry {
    #[serde(skip)]
    pub uuid: Vec<u8>,
    pub dn: String,
    pub kept: bool,
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
                "SELECT url, bind_dn, suffix, node, joined_at, ca_file, starttls
                 FROM federation WHERE id = 1",
                [],
                |r| {
                    Ok(Enrolment {
                        url: r.get(0)?,
                        bind_dn: r.get(1)?,
                        suffix: r.get(2)?,
                        node: r.get(3)?,
                        joined_at: r.get(4)?,
                        ca_file: r.get(5)?,
                        starttls: r.get(6)?,
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
                "INSERT INTO federation (id, url, bind_dn, suffix, node, joined_at, ca_file, starttls)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                   cookie = CASE WHEN url = excluded.url AND bind_dn = excluded.bind_dn
                                  AND suffix = excluded.suffix THEN cookie ELSE NULL END,
                   url = excluded.url, bind_dn = excluded.bind_dn,
                   suffix = excluded.suffix, node = excluded.node, ca_file = excluded.ca_file,
                   starttls = excluded.starttls",
                params![
                    e.url,
                    e.bind_dn,
                    e.suffix,
                    e.node,
                    e.joined_at,
                    e.ca_file,
                    e.starttls
                ],
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

    /// The held refresh, if one is held (or confirmed and not yet applied).
    pub fn fed_hold(&self) -> Result<Option<Hold>, StoreError> {
        self.conn
            .query_row(
                "SELECT h.id, h.at, h.local_copy,
                        (SELECT count(*) FROM fed_hold_entries e WHERE e.hold_id = h.id AND NOT e.kept),
                        (SELECT count(*) FROM fed_hold_entries e WHERE e.hold_id = h.id AND e.kept),
                        h.confirmed_at, h.confirmed_by
                 FROM fed_hold h ORDER BY h.id DESC LIMIT 1",
                [],
                |r| {
                    Ok(Hold {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        local_copy: r.get(2)?,
                        delete: r.get(3)?,
                        keep: r.get(4)?,
                        confirmed_at: r.get(5)?,
                        confirmed_by: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A hold's entries, those to delete first, each part by DN; at most
    /// `limit`.
    pub fn fed_hold_entries(&self, id: i64, limit: i64) -> Result<Vec<HeldEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT uuid, dn, kept FROM fed_hold_entries WHERE hold_id = ?1
                 ORDER BY kept, dn LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        st.query_map(params![id, limit], |r| {
            Ok(HeldEntry {
                uuid: r.get(0)?,
                dn: r.get(1)?,
                kept: r.get(2)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.err(e))
    }

    /// The entries of the hold, once an admin confirmed it.
    pub fn fed_hold_confirmed(&self) -> Result<Option<BTreeSet<Vec<u8>>>, StoreError> {
        let Some(hold) = self.fed_hold()? else {
            return Ok(None);
        };
        if hold.confirmed_at.is_none() {
            return Ok(None);
        }
        let mut st = self
            .conn
            .prepare("SELECT uuid FROM fed_hold_entries WHERE hold_id = ?1")
            .map_err(|e| self.err(e))?;
        st.query_map([hold.id], |r| r.get(0))
            .and_then(Iterator::collect)
            .map(Some)
            .map_err(|e| self.err(e))
    }

    /// Holds a refresh's deletions: the same entries as the current hold
    /// keep it (and its confirmation); others replace it under a new id.
    /// Returns the hold's id.
    pub fn hold_fed_deletions(
        &self,
        now: i64,
        local_copy: i64,
        entries: &[HeldEntry],
    ) -> Result<i64, StoreError> {
        self.atomically(|s| {
            if let Some(h) = s.fed_hold()? {
                let mut st = s
                    .conn
                    .prepare("SELECT uuid FROM fed_hold_entries WHERE hold_id = ?1")
                    .map_err(|e| s.err(e))?;
                let held: BTreeSet<Vec<u8>> = st
                    .query_map([h.id], |r| r.get(0))
                    .and_then(Iterator::collect)
                    .map_err(|e| s.err(e))?;
                let asked: BTreeSet<&[u8]> = entries.iter().map(|e| e.uuid.as_slice()).collect();
                if asked.len() == held.len() && held.iter().all(|u| asked.contains(u.as_slice())) {
                    return Ok(h.id);
                }
            }
            s.clear_fed_hold()?;
            s.conn
                .execute(
                    "INSERT INTO fed_hold (at, local_copy) VALUES (?1, ?2)",
                    params![now, local_copy],
                )
                .map_err(|e| s.err(e))?;
            let id = s.conn.last_insert_rowid();
            let mut st = s
                .conn
                .prepare(
                    "INSERT OR IGNORE INTO fed_hold_entries (hold_id, uuid, dn, kept)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| s.err(e))?;
            for e in entries {
                st.execute(params![id, e.uuid, e.dn, e.kept])
                    .map_err(|e| s.err(e))?;
            }
            Ok(id)
        })
    }

    /// Confirms hold `id`, if it is the current one. Returns whether it was.
    pub fn confirm_fed_hold(&self, id: i64, by: &str, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE fed_hold SET confirmed_at = ?2, confirmed_by = ?3
                 WHERE id = ?1 AND id = (SELECT max(id) FROM fed_hold)",
                params![id, now, by],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Drops the hold (the sync went past it).
    pub fn clear_fed_hold(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("DELETE FROM fed_hold_entries; DELETE FROM fed_hold;")
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
            starttls: false,
        }
    }

    fn held(uuid: &[u8], kept: bool) -> HeldEntry {
        HeldEntry {
            uuid: uuid.to_vec(),
            dn: format!("uid={},ou=people,dc=q", String::from_utf8_lossy(uuid)),
            kept,
        }
    }

    #[test]
    fn a_hold_keeps_its_id_for_the_same_entries_and_a_confirmation_names_it() {
        let (_d, s) = store();
        assert_eq!(s.fed_hold().unwrap(), None);
        let a = [held(b"a", false), held(b"b", true), held(b"c", false)];
        let id = s.hold_fed_deletions(10, 40, &a).unwrap();
        let h = s.fed_hold().unwrap().unwrap();
        assert_eq!(
            (h.id, h.at, h.local_copy, h.delete, h.keep),
            (id, 10, 40, 2, 1)
        );
        assert_eq!(s.fed_hold_confirmed().unwrap(), None, "not confirmed yet");
        let listed = s.fed_hold_entries(id, 10).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|e| (e.dn.as_str(), e.kept))
                .collect::<Vec<_>>(),
            [
                ("uid=a,ou=people,dc=q", false),
                ("uid=c,ou=people,dc=q", false),
                ("uid=b,ou=people,dc=q", true)
            ]
        );
        // The same refresh again: the same hold, its time kept.
        assert_eq!(s.hold_fed_deletions(20, 40, &a).unwrap(), id);
        assert!(!s.confirm_fed_hold(id + 1, "admin", 30).unwrap());
        assert!(s.confirm_fed_hold(id, "admin", 30).unwrap());
        let c = s.fed_hold_confirmed().unwrap().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            s.hold_fed_deletions(40, 40, &a).unwrap(),
            id,
            "still confirmed"
        );
        assert!(s.fed_hold_confirmed().unwrap().is_some());
        // Other entries: a new hold, unconfirmed; the old id confirms nothing.
        let id2 = s.hold_fed_deletions(50, 40, &a[..2]).unwrap();
        assert!(id2 > id);
        assert_eq!(s.fed_hold_confirmed().unwrap(), None);
        assert!(!s.confirm_fed_hold(id, "admin", 60).unwrap());
        s.clear_fed_hold().unwrap();
        assert_eq!(s.fed_hold().unwrap(), None);
        // Ids are never reused, even after a clear.
        assert!(s.hold_fed_deletions(70, 40, &a).unwrap() > id2);
    }

    #[test]
    fn starttls_is_kept_with_the_enrolment() {
        let (_d, s) = store();
        s.enrol(&Enrolment {
            starttls: true,
            ..enrolment("ldap://a")
        })
        .unwrap();
        assert!(s.enrolment().unwrap().unwrap().starttls);
        s.enrol(&enrolment("ldap://a")).unwrap();
        assert!(!s.enrolment().unwrap().unwrap().starttls);
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
