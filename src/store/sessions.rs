//! Console sessions. Stores and reads by the cookie's hash; lifetimes are
//! decided by `web::session`.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub uid: String,
    pub csrf: String,
    pub ip: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

impl Store {
    /// Records a new session under the hash of its cookie.
    pub fn insert_session(
        &self,
        id_hash: &str,
        uid: &str,
        csrf: &str,
        ip: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sessions (id_hash, uid, csrf, ip, created_at, last_seen, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                params![id_hash, uid, csrf, ip, now, expires_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The session with this hash, if it has not expired at `now`.
    pub fn session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT uid, csrf, ip, created_at, last_seen, expires_at FROM sessions
                 WHERE id_hash = ?1 AND expires_at > ?2",
                params![id_hash, now],
                |r| {
                    Ok(SessionRow {
                        uid: r.get(0)?,
                        csrf: r.get(1)?,
                        ip: r.get(2)?,
                        created_at: r.get(3)?,
                        last_seen: r.get(4)?,
                        expires_at: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Slides a session's end (idle timeout) as it is used.
    pub fn touch_session(
        &self,
        id_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sessions SET last_seen = ?2, expires_at = ?3 WHERE id_hash = ?1",
                params![id_hash, now, expires_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Ends one session (logout). Whether it existed.
    pub fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Ends every session of a person (password change, suspension).
    pub fn delete_sessions_of(&self, uid: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM sessions WHERE uid = ?1", [uid])
            .map_err(|e| self.err(e))
    }

    /// Whether `uid` signed in from network `net` (see
    /// `onboarding::ratelimit::address_key`) at or after `since`.
    pub fn is_known_address(&self, uid: &str, net: &str, since: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM known_addresses WHERE uid = ?1 AND net = ?2 AND last_used >= ?3",
                params![uid, net, since],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// Records that `uid` signed in (or finished a password link) from
    /// `net` at `now`, keeping only their `keep` most recent networks.
    pub fn remember_address(
        &self,
        uid: &str,
        net: &str,
        now: i64,
        keep: usize,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO known_addresses (uid, net, last_used) VALUES (?1, ?2, ?3)
                 ON CONFLICT (uid, net) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
                params![uid, net, now],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM known_addresses WHERE uid = ?1 AND net NOT IN
                 (SELECT net FROM known_addresses WHERE uid = ?1
                  ORDER BY last_used DESC, net LIMIT ?2)",
                params![uid, i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A person's known networks follow them to a new uid (and do not stay
    /// behind for whoever takes the old one).
    pub fn rename_addresses(&self, old: &str, new: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE OR REPLACE known_addresses SET uid = ?2 WHERE uid = ?1",
                params![old, new],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets networks not used since `before`. How many.
    pub fn forget_addresses_before(&self, before: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM known_addresses WHERE last_used < ?1", [before])
            .map_err(|e| self.err(e))
    }

    /// Forgets expired sessions. How many.
    pub fn prune_sessions(&self, now: i64) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_slide_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert_session("h1", "ana", "c1", "192.0.2.1", 100, 200)
            .unwrap();
        s.insert_session("h2", "ana", "c2", "192.0.2.1", 100, 200)
            .unwrap();
        s.insert_session("h3", "bea", "c3", "192.0.2.2", 100, 150)
            .unwrap();
        let row = s.session("h1", 150).unwrap().unwrap();
        assert_eq!((row.uid.as_str(), row.csrf.as_str()), ("ana", "c1"));
        assert_eq!(s.session("h3", 150).unwrap(), None, "expired at 150");
        s.touch_session("h1", 190, 400).unwrap();
        assert_eq!(s.session("h1", 300).unwrap().unwrap().last_seen, 190);
        assert_eq!(s.session("h2", 300).unwrap(), None);
        assert_eq!(s.prune_sessions(300).unwrap(), 2);
        assert!(s.delete_session("h1").unwrap());
        assert!(!s.delete_session("h1").unwrap());
        s.insert_session("h4", "ana", "c4", "", 500, 900).unwrap();
        s.insert_session("h5", "ana", "c5", "", 500, 900).unwrap();
        assert_eq!(s.delete_sessions_of("ana").unwrap(), 2);
        assert_eq!(s.session("h4", 501).unwrap(), None);
    }

    #[test]
    fn known_addresses_are_per_person_bounded_and_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.remember_address("ana", "192.0.2.1", 100, 3).unwrap();
        assert!(s.is_known_address("ana", "192.0.2.1", 50).unwrap());
        assert!(
            !s.is_known_address("ana", "192.0.2.1", 101).unwrap(),
            "too old"
        );
        assert!(!s.is_known_address("bob", "192.0.2.1", 0).unwrap());
        for (i, net) in ["a", "b", "c", "d"].iter().enumerate() {
            s.remember_address("ana", net, 200 + i as i64, 3).unwrap();
        }
        // Only the 3 most recent stay.
        assert!(!s.is_known_address("ana", "192.0.2.1", 0).unwrap());
        assert!(!s.is_known_address("ana", "a", 0).unwrap());
        assert!(s.is_known_address("ana", "d", 0).unwrap());
        s.rename_addresses("ana", "ana2").unwrap();
        assert!(!s.is_known_address("ana", "d", 0).unwrap());
        assert!(s.is_known_address("ana2", "d", 0).unwrap());
        assert_eq!(s.forget_addresses_before(203).unwrap(), 2);
        assert!(s.is_known_address("ana2", "d", 0).unwrap());
    }
}
