//! The reconcile journal: runs, their steps and the wiring steps done.
//! Stores and reads; `reconcile` decides.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// One reconcile run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `running`, `done`, `failed` or `interrupted`.
    pub outcome: String,
    pub steps: i64,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepRow {
    pub seq: i64,
    pub app: String,
    pub kind: String,
    pub description: String,
    /// `started`, `done` or `failed`.
    pub state: String,
    pub error: String,
}

fn run(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        outcome: r.get(4)?,
        steps: r.get(5)?,
    })
}

impl Store {
    pub fn begin_run(&self, trigger: &str, steps: usize, now: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO reconcile_runs (trigger, started_at, steps) VALUES (?1, ?2, ?3)",
                params![trigger, now, steps as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn step_started(
        &self,
        run_id: i64,
        seq: usize,
        app: &str,
        kind: &str,
        description: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO reconcile_steps (run_id, seq, app, kind, description, state, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6)",
                params![run_id, seq as i64, app, kind, description, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn step_finished(
        &self,
        run_id: i64,
        seq: usize,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE reconcile_steps SET state = ?3, error = ?4, finished_at = ?5
                 WHERE run_id = ?1 AND seq = ?2",
                params![
                    run_id,
                    seq as i64,
                    if error.is_some() { "failed" } else { "done" },
                    error.unwrap_or(""),
                    now
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn finish_run(&self, run_id: i64, outcome: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE reconcile_runs SET outcome = ?2, finished_at = ?3 WHERE id = ?1",
                params![run_id, outcome, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Marks runs a crash left `running` as `interrupted`; returns them.
    pub fn interrupted_runs(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("UPDATE reconcile_runs SET outcome = 'interrupted', finished_at = ?1 WHERE outcome = 'running' RETURNING id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([now], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn last_run(&self) -> Result<Option<RunRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, trigger, started_at, finished_at, outcome, steps FROM reconcile_runs ORDER BY id DESC LIMIT 1",
                [],
                run,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn run_steps(&self, run_id: i64) -> Result<Vec<StepRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, app, kind, description, state, error FROM reconcile_steps
                 WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(StepRow {
                    seq: r.get(0)?,
                    app: r.get(1)?,
                    kind: r.get(2)?,
                    description: r.get(3)?,
                    state: r.get(4)?,
                    error: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn wiring_done(
        &self,
        id: &str,
        app: &str,
        description: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO wiring_done (id, app, description, done_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, app, description, now],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn wired(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM wiring_done")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records a DiscourseConnect nonce the first time it is seen; returns
    /// when it was first seen and whether it was answered.
    pub fn sso_nonce_seen(&self, nonce: &str, now: i64) -> Result<(i64, bool), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO sso_nonces (nonce, first_seen) VALUES (?1, ?2)",
                params![nonce, now],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .query_row(
                "SELECT first_seen, answered_at IS NOT NULL FROM sso_nonces WHERE nonce = ?1",
                [nonce],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// Marks a nonce answered; `false` if it already was (a race lost).
    pub fn sso_nonce_answered(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE sso_nonces SET answered_at = ?2 WHERE nonce = ?1 AND answered_at IS NULL",
                params![nonce, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Forgets nonces first seen before `before`.
    pub fn sso_nonces_prune(&self, before: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM sso_nonces WHERE first_seen < ?1", [before])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets an app's wiring (its data was purged: wire it again).
    pub fn forget_wiring(&self, app: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM wiring_done WHERE app = ?1", [app])
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_and_its_steps_are_journaled_and_a_crash_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let run = s.begin_run("start", 2, 10).unwrap();
        s.step_started(run, 0, "nextcloud", "create_container", "create x", 11)
            .unwrap();
        s.step_finished(run, 0, None, 12).unwrap();
        s.step_started(run, 1, "nextcloud", "wire", "occ y", 13)
            .unwrap();
        // The daemon dies here. The next start finds the run.
        assert_eq!(s.interrupted_runs(20).unwrap(), [run]);
        assert_eq!(s.interrupted_runs(21).unwrap(), Vec::<i64>::new());
        let last = s.last_run().unwrap().unwrap();
        assert_eq!(last.outcome, "interrupted");
        let steps = s.run_steps(run).unwrap();
        assert_eq!(
            steps.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
            ["done", "started"]
        );
        s.wiring_done("abc", "nextcloud", "occ y", 30).unwrap();
        s.wiring_done("abc", "nextcloud", "occ y", 31).unwrap();
        assert!(s.wired().unwrap().contains("abc"));
        s.forget_wiring("nextcloud").unwrap();
        assert!(s.wired().unwrap().is_empty());
    }
}
