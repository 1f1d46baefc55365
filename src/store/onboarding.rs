//! Typed access to the onboarding tables: registrations, single-use tokens
//! and the mail outbox. Stores and reads; the state machine decides.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// One registration request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationRow {
    pub id: i64,
    pub uid: String,
    pub email: String,
    pub display_name: String,
    pub collective: String,
    pub message: String,
    pub language: String,
    pub state: String,
    pub expires_at: Option<i64>,
    pub reason: String,
    pub decided_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a new registration stores.
#[derive(Debug, Clone)]
pub struct NewRegistration<'a> {
    pub uid: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub collective: &'a str,
    pub message: &'a str,
    pub language: &'a str,
    pub state: &'a str,
    pub expires_at: Option<i64>,
}

/// A token that was just used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub purpose: String,
    pub registration_id: Option<i64>,
    pub uid: String,
    pub invitation_id: Option<i64>,
}

/// A mail waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRow {
    pub id: i64,
    pub recipient: String,
    pub template: String,
    pub language: String,
    pub params: String,
    pub attempts: i64,
}

const REG_COLUMNS: &str = "id, uid, email, display_name, collective, message, language, state, expires_at, reason, decided_by, created_at, updated_at";

fn reg(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistrationRow> {
    Ok(RegistrationRow {
        id: r.get(0)?,
        uid: r.get(1)?,
        email: r.get(2)?,
        display_name: r.get(3)?,
        collective: r.get(4)?,
        message: r.get(5)?,
        language: r.get(6)?,
        state: r.get(7)?,
        expires_at: r.get(8)?,
        reason: r.get(9)?,
        decided_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

impl Store {
    /// Runs `f` in one transaction: all its writes land, or none.
    pub fn atomically<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let out = f(self)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Which field a pending request already holds, if any (`uid` first).
    pub fn pending_holder(
        &self,
        uid: &str,
        email: &str,
    ) -> Result<Option<&'static str>, StoreError> {
        let holds = |col: &str, value: &str| -> Result<bool, StoreError> {
            self.conn
                .query_row(
                    &format!(
                        "SELECT 1 FROM registrations WHERE {col} = ?1
                         AND state IN ('email_unverified', 'awaiting_validation', 'approved')"
                    ),
                    [value],
                    |_| Ok(()),
                )
                .optional()
                .map(|o| o.is_some())
                .map_err(|e| self.err(e))
        };
        if holds("uid", uid)? {
            return Ok(Some("uid"));
        }
        if self.verified_request_for(email)? {
            return Ok(Some("email"));
        }
        Ok(None)
    }

    /// The verified request (waiting for the admins, or approved) that
    /// holds `email`, if any.
    pub fn pending_request_for(&self, email: &str) -> Result<Option<RegistrationRow>, StoreError> {
        self.newest_request("email", email, "'awaiting_validation', 'approved'")
    }

    /// The newest request whose `column` is `value`, in one of `states`
    /// (an SQL list of literals, never input).
    fn newest_request(
        &self,
        column: &str,
        value: &str,
        states: &str,
    ) -> Result<Option<RegistrationRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {REG_COLUMNS} FROM registrations WHERE {column} = ?1
                     AND state IN ({states}) ORDER BY id DESC LIMIT 1"
                ),
                [value],
                reg,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Whether a request whose mail address was proven (waiting for the
    /// admins, or approved) holds `email`. Unverified requests do not: any
    /// number may name an address, and the first verified one takes it.
    pub fn verified_request_for(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self.pending_request_for(email)?.is_some())
    }

    pub fn insert_registration(
        &self,
        r: &NewRegistration<'_>,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO registrations (uid, email, display_name, collective, message, language, state, expires_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                params![r.uid, r.email, r.display_name, r.collective, r.message, r.language, r.state, r.expires_at, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn registration(&self, id: i64) -> Result<Option<RegistrationRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {REG_COLUMNS} FROM registrations WHERE id = ?1"),
                [id],
                reg,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Requests, newest first, optionally in one state only.
    /// The newest request that made `uid`'s account (approved or active).
    pub fn registration_of_account(
        &self,
        uid: &str,
    ) -> Result<Option<RegistrationRow>, StoreError> {
        self.newest_request("uid", uid, "'approved', 'active'")
    }

    /// The account a request made was renamed (its uid was someone else's
    /// at the alliance).
    pub fn rename_registration(&self, id: i64, uid: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE registrations SET uid = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, uid, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn registrations(&self, state: Option<&str>) -> Result<Vec<RegistrationRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {REG_COLUMNS} FROM registrations WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([state], reg).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// How many requests are in `state`.
    pub fn count_registrations(&self, state: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM registrations WHERE state = ?1",
                [state],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Moves a request from `from` to `to`; `false` if it was no longer in
    /// `from` (someone else decided first), and nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub fn transition(
        &self,
        id: i64,
        from: &str,
        to: &str,
        expires_at: Option<i64>,
        reason: &str,
        decided_by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE registrations SET state = ?3, expires_at = ?4,
                     reason = CASE WHEN ?5 = '' THEN reason ELSE ?5 END,
                     decided_by = CASE WHEN ?6 = '' THEN decided_by ELSE ?6 END,
                     updated_at = ?7
                 WHERE id = ?1 AND state = ?2",
                params![id, from, to, expires_at, reason, decided_by, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Requests whose wait has a deadline, with it: the sweep's input.
    pub fn timed_registrations(&self) -> Result<Vec<(i64, String, Option<i64>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, state, expires_at FROM registrations
                 WHERE state IN ('email_unverified', 'awaiting_validation')",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn insert_token(
        &self,
        hash: &str,
        purpose: &str,
        registration_id: Option<i64>,
        uid: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (hash, purpose, registration_id, uid, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, purpose, registration_id, uid, expires_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Uses a token once: `None` if unknown, of another purpose, used or
    /// expired. The check and the marking are one statement, so two clicks
    /// on the same link cannot both pass.
    pub fn use_token(
        &self,
        hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<TokenRow>, StoreError> {
        self.conn
            .query_row(
                "UPDATE tokens SET used_at = ?3
                 WHERE hash = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3
                 RETURNING purpose, registration_id, uid, invitation_id",
                params![hash, purpose, now],
                |r| {
                    Ok(TokenRow {
                        purpose: r.get(0)?,
                        registration_id: r.get(1)?,
                        uid: r.get(2)?,
                        invitation_id: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A token that would pass [`Store::use_token`] now, without using it.
    pub fn peek_token(
        &self,
        hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<TokenRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT purpose, registration_id, uid, invitation_id FROM tokens
                 WHERE hash = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3",
                params![hash, purpose, now],
                |r| {
                    Ok(TokenRow {
                        purpose: r.get(0)?,
                        registration_id: r.get(1)?,
                        uid: r.get(2)?,
                        invitation_id: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn enqueue_mail(
        &self,
        recipient: &str,
        template: &str,
        language: &str,
        params_json: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO mail_outbox (recipient, template, language, params, created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![recipient, template, language, params_json, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Unsent mail due at `now`, oldest first.
    pub fn due_mail(&self, now: i64, limit: usize) -> Result<Vec<MailRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, recipient, template, language, params, attempts FROM mail_outbox
                 WHERE sent_at IS NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(MailRow {
                        id: r.get(0)?,
                        recipient: r.get(1)?,
                        template: r.get(2)?,
                        language: r.get(3)?,
                        params: r.get(4)?,
                        attempts: r.get(5)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Marks a mail sent and forgets its parameters: they may hold a link
    /// with a live token.
    pub fn mail_sent(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE mail_outbox SET sent_at = ?2, params = '{}', attempts = attempts + 1 WHERE id = ?1",
                params![id, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn mail_failed(&self, id: i64, error: &str, retry_at: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
                params![id, error, retry_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Makes every unsent mail due at `now`: after the SMTP settings were
    /// fixed, nobody should wait for the backoff.
    pub fn mail_retry_now(&self, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE mail_outbox SET next_attempt_at = ?1 WHERE sent_at IS NULL AND next_attempt_at > ?1",
                [now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// (unsent, oldest unsent's creation time): for status and metrics.
    pub fn outbox_depth(&self) -> Result<(i64, Option<i64>), StoreError> {
        self.conn
            .query_row(
                "SELECT count(*), min(created_at) FROM mail_outbox WHERE sent_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
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

    fn new<'a>(uid: &'a str, email: &'a str) -> NewRegistration<'a> {
        NewRegistration {
            uid,
            email,
            display_name: "Ana",
            collective: "quimper",
            message: "",
            language: "en",
            state: "email_unverified",
            expires_at: Some(100),
        }
    }

    #[test]
    fn a_pending_request_holds_its_uid_and_once_verified_its_mail() {
        let (_d, s) = store();
        let id = s.insert_registration(&new("ana", "ana@x.org"), 1).unwrap();
        assert_eq!(s.pending_holder("ana", "other@x.org").unwrap(), Some("uid"));
        // Unverified, the address is not held: a stranger's request does
        // not keep its owner out.
        assert_eq!(s.pending_holder("bob", "ana@x.org").unwrap(), None);
        let other = s.insert_registration(&new("bob", "ana@x.org"), 2).unwrap();
        assert!(
            s.insert_registration(&new("ana", "b@x.org"), 2).is_err(),
            "index refuses a second"
        );
        // The first verified takes it; the other can no longer be verified.
        assert!(
            s.transition(
                other,
                "email_unverified",
                "awaiting_validation",
                Some(9),
                "",
                "",
                2
            )
            .unwrap()
        );
        assert_eq!(s.pending_holder("cy", "ana@x.org").unwrap(), Some("email"));
        assert!(
            s.transition(
                id,
                "email_unverified",
                "awaiting_validation",
                Some(9),
                "",
                "",
                2
            )
            .is_err(),
            "index refuses a second verified request for one address"
        );
        assert!(
            s.transition(other, "awaiting_validation", "rejected", None, "r", "x", 3)
                .unwrap()
        );
        assert!(
            s.transition(id, "email_unverified", "expired", None, "", "", 3)
                .unwrap()
        );
        assert_eq!(s.pending_holder("ana", "ana@x.org").unwrap(), None);
        assert!(
            s.insert_registration(&new("ana", "ana@x.org"), 4).is_ok(),
            "uid reusable after expiry"
        );
    }

    #[test]
    fn a_transition_from_a_stale_state_changes_nothing() {
        let (_d, s) = store();
        let id = s.insert_registration(&new("ana", "ana@x.org"), 1).unwrap();
        assert!(
            s.transition(
                id,
                "email_unverified",
                "awaiting_validation",
                Some(9),
                "",
                "",
                2
            )
            .unwrap()
        );
        assert!(
            !s.transition(id, "email_unverified", "rejected", None, "late", "bob", 3)
                .unwrap()
        );
        let r = s.registration(id).unwrap().unwrap();
        assert_eq!(
            (r.state.as_str(), r.expires_at, r.reason.as_str()),
            ("awaiting_validation", Some(9), "")
        );
    }

    #[test]
    fn tokens_are_single_use_purposeful_and_expire() {
        let (_d, s) = store();
        s.insert_token("h1", "verify", None, "ana", 100).unwrap();
        assert!(
            s.use_token("h1", "reset", 50).unwrap().is_none(),
            "wrong purpose"
        );
        assert!(
            s.use_token("h1", "verify", 100).unwrap().is_none(),
            "expired at 100"
        );
        s.insert_token("h2", "verify", None, "ana", 100).unwrap();
        assert_eq!(s.use_token("h2", "verify", 99).unwrap().unwrap().uid, "ana");
        assert!(
            s.use_token("h2", "verify", 99).unwrap().is_none(),
            "used once"
        );
    }

    #[test]
    fn outbox_retries_and_forgets_links_once_sent() {
        let (_d, s) = store();
        let id = s
            .enqueue_mail(
                "a@x.org",
                "verify",
                "ca",
                r#"{"link":"https://box/verify?t=secret"}"#,
                10,
            )
            .unwrap();
        assert_eq!(s.outbox_depth().unwrap(), (1, Some(10)));
        s.mail_failed(id, "connection refused", 70).unwrap();
        assert!(s.due_mail(69, 10).unwrap().is_empty());
        let due = s.due_mail(70, 10).unwrap();
        assert_eq!((due[0].attempts, due[0].language.as_str()), (1, "ca"));
        s.mail_sent(id, 71).unwrap();
        assert_eq!(s.outbox_depth().unwrap(), (0, None));
        let params: String = s
            .connection()
            .query_row("SELECT params FROM mail_outbox WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(params, "{}");
    }

    #[test]
    fn atomically_rolls_back_on_error() {
        let (_d, s) = store();
        let res: Result<(), StoreError> = s.atomically(|s| {
            s.insert_registration(&new("ana", "ana@x.org"), 1)?;
            s.insert_registration(&new("ana", "again@x.org"), 1)?;
            Ok(())
        });
        assert!(res.is_err());
        assert!(s.registrations(None).unwrap().is_empty());
    }
}
