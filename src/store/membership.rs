//! Typed access to join requests and invitations. Stores and reads; the
//! rules live in `onboarding::membership`.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A person's request to join another collective.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinRequestRow {
    pub id: i64,
    pub uid: String,
    pub collective: String,
    pub message: String,
    pub state: String,
    pub reason: String,
    pub decided_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An admin's invitation, by mail, to join a collective.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvitationRow {
    pub id: i64,
    pub email: String,
    pub collective: String,
    pub invited_by: String,
    pub state: String,
    pub accepted_uid: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const JOIN_COLUMNS: &str =
    "id, uid, collective, message, state, reason, decided_by, created_at, updated_at";
const INVITE_COLUMNS: &str =
    "id, email, collective, invited_by, state, accepted_uid, expires_at, created_at, updated_at";

fn join(r: &rusqlite::Row<'_>) -> rusqlite::Result<JoinRequestRow> {
    Ok(JoinRequestRow {
        id: r.get(0)?,
        uid: r.get(1)?,
        collective: r.get(2)?,
        message: r.get(3)?,
        state: r.get(4)?,
        reason: r.get(5)?,
        decided_by: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

fn invite(r: &rusqlite::Row<'_>) -> rusqlite::Result<InvitationRow> {
    Ok(InvitationRow {
        id: r.get(0)?,
        email: r.get(1)?,
        collective: r.get(2)?,
        invited_by: r.get(3)?,
        state: r.get(4)?,
        accepted_uid: r.get(5)?,
        expires_at: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl Store {
    /// A new pending join request; `Err(Conflict)` if one is already pending
    /// for this person and collective.
    pub fn insert_join_request(
        &self,
        uid: &str,
        collective: &str,
        message: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let res = self.conn.execute(
            "INSERT INTO join_requests (uid, collective, message, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
            params![uid, collective, message, now],
        );
        match res {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    pub fn join_request(&self, id: i64) -> Result<Option<JoinRequestRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {JOIN_COLUMNS} FROM join_requests WHERE id = ?1"),
                [id],
                join,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Join requests, newest first, optionally of one collective or state.
    pub fn join_requests(
        &self,
        collective: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOIN_COLUMNS} FROM join_requests
                 WHERE (?1 IS NULL OR collective = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY id DESC"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![collective, state], join)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Decides a pending request; `false` if it was no longer pending.
    pub fn decide_join_request(
        &self,
        id: i64,
        state: &str,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE join_requests SET state = ?2, reason = ?3, decided_by = ?4, updated_at = ?5
                 WHERE id = ?1 AND state = 'pending'",
                params![id, state, reason, by, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// A new pending invitation, replacing (revoking) a pending one to the
    /// same address and collective, so that inviting again re-sends.
    pub fn insert_invitation(
        &self,
        email: &str,
        collective: &str,
        invited_by: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "UPDATE invitations SET state = 'revoked', updated_at = ?3
                 WHERE email = ?1 AND collective = ?2 AND state = 'pending'",
                params![email, collective, now],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "INSERT INTO invitations (email, collective, invited_by, state, expires_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?5)",
                params![email, collective, invited_by, expires_at, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn invitation(&self, id: i64) -> Result<Option<InvitationRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {INVITE_COLUMNS} FROM invitations WHERE id = ?1"),
                [id],
                invite,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Invitations, newest first, optionally of one collective.
    pub fn invitations(&self, collective: Option<&str>) -> Result<Vec<InvitationRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {INVITE_COLUMNS} FROM invitations WHERE ?1 IS NULL OR collective = ?1
                 ORDER BY id DESC"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![collective], invite)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Marks a pending invitation accepted by `uid`; `false` if it was no
    /// longer pending.
    pub fn accept_invitation(&self, id: i64, uid: &str, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE invitations SET state = 'accepted', accepted_uid = ?2, updated_at = ?3
                 WHERE id = ?1 AND state = 'pending' AND expires_at > ?3",
                params![id, uid, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Expires pending invitations past their date; returns how many.
    pub fn expire_invitations(&self, now: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE invitations SET state = 'expired', updated_at = ?1
                 WHERE state = 'pending' AND expires_at <= ?1",
                [now],
            )
            .map_err(|e| self.err(e))
    }

    /// The token behind an invitation's link.
    pub fn insert_invitation_token(
        &self,
        hash: &str,
        invitation_id: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (hash, purpose, invitation_id, expires_at) VALUES (?1, 'invite', ?2, ?3)",
                params![hash, invitation_id, expires_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Links a registration to the invitation it came with.
    pub fn set_registration_invitation(
        &self,
        registration_id: i64,
        invitation_id: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE registrations SET invitation_id = ?2 WHERE id = ?1",
                params![registration_id, invitation_id],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn one_pending_join_request_per_person_and_collective() {
        let (_d, s) = store();
        let id = s.insert_join_request("ana", "brest", "hi", 10).unwrap();
        assert!(matches!(
            s.insert_join_request("ana", "brest", "again", 11),
            Err(StoreError::Conflict)
        ));
        s.insert_join_request("ana", "quimper", "", 11).unwrap();
        assert!(
            s.decide_join_request(id, "approved", "", "bea", 12)
                .unwrap()
        );
        // Decided once: a second decision changes nothing.
        assert!(
            !s.decide_join_request(id, "rejected", "no", "cy", 13)
                .unwrap()
        );
        let r = s.join_request(id).unwrap().unwrap();
        assert_eq!(
            (r.state.as_str(), r.decided_by.as_str()),
            ("approved", "bea")
        );
        // Decided, so a new request may be made.
        s.insert_join_request("ana", "brest", "", 14).unwrap();
        assert_eq!(s.join_requests(Some("brest"), None).unwrap().len(), 2);
        assert_eq!(s.join_requests(None, Some("pending")).unwrap().len(), 2);
    }

    #[test]
    fn inviting_again_revokes_the_earlier_invitation_and_expiry_ends_it() {
        let (_d, s) = store();
        let a = s
            .insert_invitation("x@y.org", "brest", "bea", 100, 1)
            .unwrap();
        s.insert_invitation_token("h1", a, 100).unwrap();
        let b = s
            .insert_invitation("x@y.org", "brest", "bea", 200, 2)
            .unwrap();
        assert_eq!(s.invitation(a).unwrap().unwrap().state, "revoked");
        assert!(!s.accept_invitation(a, "xy", 3).unwrap());
        assert_eq!(s.expire_invitations(150).unwrap(), 0);
        assert_eq!(s.expire_invitations(200).unwrap(), 1);
        assert!(!s.accept_invitation(b, "xy", 201).unwrap());
        let t = s.use_token("h1", "invite", 5).unwrap().unwrap();
        assert_eq!(t.invitation_id, Some(a));
    }
}
