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
}
