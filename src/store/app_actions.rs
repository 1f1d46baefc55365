//! The queue of what the apps must still be told about someone's access
//! (migration 9). Stores and reads; `apps::access` decides what goes in
//! and what an answer means, `app_access` carries it out.

use rusqlite::params;

use super::{Store, StoreError};

/// One queued action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppActionRow {
    pub id: i64,
    pub created_at: i64,
    pub app: String,
    /// The JSON of an `apps::access::Action`.
    pub action: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: String,
}

/// How the queue stands, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppActionStats {
    pub pending: i64,
    /// The oldest pending action's age's start (unix seconds).
    pub oldest_pending_at: Option<i64>,
    pub failed: i64,
    /// The last error of a pending action that was tried.
    pub last_error: Option<String>,
}

impl Store {
    /// Queues `(app, action JSON)` rows, due at once. Call it inside the
    /// transaction that records the change they follow from.
    pub fn app_actions_enqueue(
        &self,
        rows: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        for (app, action) in rows {
            self.conn
                .execute(
                    "INSERT INTO app_actions (created_at, app, action, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?1)",
                    params![now, app, action],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Every pending action, in the order they were queued.
    pub fn app_actions_pending(&self) -> Result<Vec<AppActionRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, created_at, app, action, attempts, next_attempt_at, last_error
                 FROM app_actions WHERE state = 'pending' ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(AppActionRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
                app: r.get(2)?,
                action: r.get(3)?,
                attempts: r.get(4)?,
                next_attempt_at: r.get(5)?,
                last_error: r.get(6)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.err(e))
    }

    /// Settles an action: `done`, `skipped` (its app is not enabled) or
    /// `failed` (it never can be done), with why.
    pub fn app_action_settle(
        &self,
        id: i64,
        state: &str,
        note: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE app_actions SET state = ?2, last_error = ?3, settled_at = ?4,
                     attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending'",
                params![id, state, note, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a failed attempt and when to try again.
    pub fn app_action_retry(&self, id: i64, error: &str, next_at: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE app_actions SET attempts = attempts + 1, last_error = ?2,
                     next_attempt_at = ?3
                 WHERE id = ?1 AND state = 'pending'",
                params![id, error, next_at],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Makes every pending action due now (a reload, or the app came back).
    pub fn app_actions_due_now(&self, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE app_actions SET next_attempt_at = ?1 WHERE state = 'pending'",
                params![now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn app_action_stats(&self) -> Result<AppActionStats, StoreError> {
        self.conn
            .query_row(
                "SELECT
                     (SELECT count(*) FROM app_actions WHERE state = 'pending'),
                     (SELECT min(created_at) FROM app_actions WHERE state = 'pending'),
                     (SELECT count(*) FROM app_actions WHERE state = 'failed'),
                     (SELECT last_error FROM app_actions
                      WHERE state = 'pending' AND attempts > 0 ORDER BY id LIMIT 1)",
                [],
                |r| {
                    Ok(AppActionStats {
                        pending: r.get(0)?,
                        oldest_pending_at: r.get(1)?,
                        failed: r.get(2)?,
                        last_error: r.get(3)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_queue_in_order_retry_and_settle() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let rows = vec![
            ("discourse".to_owned(), r#"{"kind":"a"}"#.to_owned()),
            ("nextcloud".to_owned(), r#"{"kind":"b"}"#.to_owned()),
        ];
        // Queued with the change it follows from, or not at all.
        let res: Result<(), StoreError> = s.atomically(|s| {
            s.app_actions_enqueue(&rows, 100)?;
            Err(StoreError::Conflict)
        });
        assert!(res.is_err());
        assert!(s.app_actions_pending().unwrap().is_empty());
        s.atomically(|s| s.app_actions_enqueue(&rows, 100)).unwrap();
        let p = s.app_actions_pending().unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].id < p[1].id);
        assert_eq!(
            (p[0].app.as_str(), p[0].next_attempt_at),
            ("discourse", 100)
        );
        s.app_action_retry(p[0].id, "HTTP 502", 160).unwrap();
        let st = s.app_action_stats().unwrap();
        assert_eq!((st.pending, st.oldest_pending_at), (2, Some(100)));
        assert_eq!(st.last_error.as_deref(), Some("HTTP 502"));
        let p = s.app_actions_pending().unwrap();
        assert_eq!((p[0].attempts, p[0].next_attempt_at), (1, 160));
        s.app_actions_due_now(120).unwrap();
        assert_eq!(s.app_actions_pending().unwrap()[0].next_attempt_at, 120);
        s.app_action_settle(p[0].id, "done", "HTTP 200", 130)
            .unwrap();
        s.app_action_settle(p[1].id, "failed", "never", 130)
            .unwrap();
        // Settled once: a second settle changes nothing.
        s.app_action_settle(p[1].id, "done", "", 140).unwrap();
        assert!(s.app_actions_pending().unwrap().is_empty());
        let st = s.app_action_stats().unwrap();
        assert_eq!((st.pending, st.failed), (0, 1));
    }
}
