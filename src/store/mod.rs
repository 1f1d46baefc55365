//! SQLite state: `<state_dir>/state.db`, WAL mode, numbered forward-only
//! migrations.
//!
//! Adapter: stores and reads, decides nothing. A database written by a newer
//! binary is refused before anything in it is touched.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

mod app_actions;
mod federation;
mod journal;
mod membership;
mod onboarding;
mod sessions;
pub use app_actions::{AppActionRow, AppActionStats};
pub use federation::{ConflictRow, Enrolment, HeldEntry, Hold, OutboxRow, OutboxStats};
pub use journal::{RunRow, StepRow};
pub use membership::{InvitationRow, JoinRequestRow};
pub use onboarding::{MailRow, NewRegistration, RegistrationRow, TokenRow};
pub use sessions::SessionRow;

/// The migrations, in order. Append only: never edit or reorder a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: appliance identity. The id seeds the rollout wave and names the box to
    // the alliance, so it is made once and never changes.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     ) STRICT;
     INSERT INTO meta (key, value) VALUES ('appliance_id', lower(hex(randomblob(16))));",
    // 2: audit log of what the daemon and admins did.
    "CREATE TABLE audit (
         id     INTEGER PRIMARY KEY,
         at     INTEGER NOT NULL,
         actor  TEXT NOT NULL,
         action TEXT NOT NULL,
         detail TEXT NOT NULL DEFAULT ''
     ) STRICT;
     CREATE INDEX audit_at ON audit (at);",
    // 3: onboarding. Requests live here, never in LDAP, until approved. A
    // pending request holds its uid and mail (partial unique indexes);
    // rejected and expired ones release them.
    "CREATE TABLE registrations (
         id           INTEGER PRIMARY KEY,
         uid          TEXT NOT NULL,
         email        TEXT NOT NULL,
         display_name TEXT NOT NULL,
         collective   TEXT NOT NULL,
         message      TEXT NOT NULL DEFAULT '',
         language     TEXT NOT NULL DEFAULT 'en',
         state        TEXT NOT NULL,
         expires_at   INTEGER,
         reason       TEXT NOT NULL DEFAULT '',
         decided_by   TEXT NOT NULL DEFAULT '',
         created_at   INTEGER NOT NULL,
         updated_at   INTEGER NOT NULL
     ) STRICT;
     CREATE UNIQUE INDEX registrations_pending_uid ON registrations (uid)
         WHERE state IN ('email_unverified', 'awaiting_validation', 'approved');
     CREATE UNIQUE INDEX registrations_pending_email ON registrations (email)
         WHERE state IN ('email_unverified', 'awaiting_validation', 'approved');
     CREATE INDEX registrations_state ON registrations (state, expires_at);
     CREATE TABLE tokens (
         hash            TEXT PRIMARY KEY NOT NULL,
         purpose         TEXT NOT NULL,
         registration_id INTEGER REFERENCES registrations (id),
         uid             TEXT NOT NULL DEFAULT '',
         expires_at      INTEGER NOT NULL,
         used_at         INTEGER
     ) STRICT;
     CREATE TABLE mail_outbox (
         id              INTEGER PRIMARY KEY,
         recipient       TEXT NOT NULL,
         template        TEXT NOT NULL,
         language        TEXT NOT NULL,
         params          TEXT NOT NULL,
         created_at      INTEGER NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL,
         sent_at         INTEGER,
         last_error      TEXT NOT NULL DEFAULT ''
     ) STRICT;
     CREATE INDEX mail_outbox_due ON mail_outbox (sent_at, next_attempt_at);",
    // 4: membership beyond registration. A person asks to join another
    // collective (join_requests); admins invite by mail (invitations, whose
    // link is a token). One pending of each per person (or address) and
    // collective.
    "CREATE TABLE join_requests (
         id         INTEGER PRIMARY KEY,
         uid        TEXT NOT NULL,
         collective TEXT NOT NULL,
         message    TEXT NOT NULL DEFAULT '',
         state      TEXT NOT NULL,
         reason     TEXT NOT NULL DEFAULT '',
         decided_by TEXT NOT NULL DEFAULT '',
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL
     ) STRICT;
     CREATE UNIQUE INDEX join_requests_pending ON join_requests (uid, collective)
         WHERE state = 'pending';
     CREATE TABLE invitations (
         id           INTEGER PRIMARY KEY,
         email        TEXT NOT NULL,
         collective   TEXT NOT NULL,
         invited_by   TEXT NOT NULL,
         state        TEXT NOT NULL,
         accepted_uid TEXT NOT NULL DEFAULT '',
         expires_at   INTEGER NOT NULL,
         created_at   INTEGER NOT NULL,
         updated_at   INTEGER NOT NULL
     ) STRICT;
     CREATE UNIQUE INDEX invitations_pending ON invitations (email, collective)
         WHERE state = 'pending';
     ALTER TABLE tokens ADD COLUMN invitation_id INTEGER REFERENCES invitations (id);
     ALTER TABLE registrations ADD COLUMN invitation_id INTEGER REFERENCES invitations (id);",
    // 5: the reconcile journal. Each run and each of its steps, with its
    // outcome; wiring steps done (by content id) so that a converged
    // system plans nothing and a crash resumes where it stopped.
    "CREATE TABLE reconcile_runs (
         id          INTEGER PRIMARY KEY,
         trigger     TEXT NOT NULL,
         started_at  INTEGER NOT NULL,
         finished_at INTEGER,
         outcome     TEXT NOT NULL DEFAULT 'running',
         steps       INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE TABLE reconcile_steps (
         id          INTEGER PRIMARY KEY,
         run_id      INTEGER NOT NULL REFERENCES reconcile_runs (id),
         seq         INTEGER NOT NULL,
         app         TEXT NOT NULL DEFAULT '',
         kind        TEXT NOT NULL,
         description TEXT NOT NULL,
         state       TEXT NOT NULL,
         error       TEXT NOT NULL DEFAULT '',
         started_at  INTEGER NOT NULL,
         finished_at INTEGER
     ) STRICT;
     CREATE INDEX reconcile_steps_run ON reconcile_steps (run_id, seq);
     CREATE TABLE wiring_done (
         id          TEXT PRIMARY KEY NOT NULL,
         app         TEXT NOT NULL,
         description TEXT NOT NULL,
         done_at     INTEGER NOT NULL
     ) STRICT;",
    // 6: DiscourseConnect nonces: when first seen and when answered, so a
    // request is answered once and not after it went stale.
    "CREATE TABLE sso_nonces (
         nonce       TEXT PRIMARY KEY NOT NULL,
         first_seen  INTEGER NOT NULL,
         answered_at INTEGER
     ) STRICT;
     CREATE INDEX sso_nonces_seen ON sso_nonces (first_seen);",
    // 7: console sessions. Only a hash of the cookie is kept, so a copy of
    // the database opens no session. Each has its CSRF token; logging in
    // makes a new row (never upgrades one), logging out deletes it.
    "CREATE TABLE sessions (
         id_hash    TEXT PRIMARY KEY NOT NULL,
         uid        TEXT NOT NULL,
         csrf       TEXT NOT NULL,
         ip         TEXT NOT NULL DEFAULT '',
         created_at INTEGER NOT NULL,
         last_seen  INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX sessions_uid ON sessions (uid);
     CREATE INDEX sessions_expires ON sessions (expires_at);",
    // 8: federation with the alliance. `federation` is the one enrolment
    // (its password is a secret file, not here) with the sync cookie, which
    // is written in the same transaction as what it covers; `fed_entries`
    // maps the alliance's entryUUIDs to our DNs (renames arrive as a new DN
    // for a known UUID); `fed_outbox` holds every local change for the
    // alliance, replayed in id order; `fed_conflicts` what the authority
    // rule settled, for the console and `alliance status`. A row is
    // `preparing` from just before its LDAP write until the write's record
    // commits: the replay leaves it alone, and a crash in between leaves it
    // to be released at the next start (the replay then finds whether the
    // write happened).
    "CREATE TABLE federation (
         id           INTEGER PRIMARY KEY CHECK (id = 1),
         url          TEXT NOT NULL,
         bind_dn      TEXT NOT NULL,
         suffix       TEXT NOT NULL,
         node         TEXT NOT NULL,
         joined_at    INTEGER NOT NULL,
         ca_file      TEXT,
         cookie       BLOB,
         cookie_at    INTEGER,
         last_contact INTEGER
     ) STRICT;
     CREATE TABLE fed_entries (
         uuid    BLOB PRIMARY KEY NOT NULL,
         dn      TEXT NOT NULL,
         seen_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX fed_entries_dn ON fed_entries (dn);
     CREATE TABLE fed_outbox (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         created_at INTEGER NOT NULL,
         kind       TEXT NOT NULL CHECK (kind IN ('add', 'attrs', 'member')),
         dn         TEXT NOT NULL,
         detail     TEXT NOT NULL,
         state      TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('preparing', 'pending', 'done', 'conflict', 'failed')),
         attempts   INTEGER NOT NULL DEFAULT 0,
         last_error TEXT,
         settled_at INTEGER
     ) STRICT;
     CREATE INDEX fed_outbox_state ON fed_outbox (state, id);
     CREATE INDEX fed_outbox_dn ON fed_outbox (dn, state);
     CREATE TABLE fed_conflicts (
         id        INTEGER PRIMARY KEY AUTOINCREMENT,
         at        INTEGER NOT NULL,
         dn        TEXT NOT NULL,
         attr      TEXT NOT NULL DEFAULT '',
         kind      TEXT NOT NULL,
         winner    TEXT NOT NULL,
         detail    TEXT NOT NULL,
         outbox_id INTEGER
     ) STRICT;",
    // 9: sign-in hardening. `known_addresses`: the client networks (an
    // IPv4 address, an IPv6 /64) a person signed in from or finished a
    // password link at; the per-account limit of failed sign-ins leaves
    // them alone, so a stranger hammering an account does not keep its
    // owner out. A registration that has not proven its mail address no
    // longer holds it (a stranger could keep the owner from registering
    // for the 48 h of the link): only verified requests do.
    "CREATE TABLE known_addresses (
         uid       TEXT NOT NULL,
         net       TEXT NOT NULL,
         last_used INTEGER NOT NULL,
         PRIMARY KEY (uid, net)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX known_addresses_used ON known_addresses (last_used);
     DROP INDEX registrations_pending_email;
     CREATE UNIQUE INDEX registrations_pending_email ON registrations (email)
         WHERE state IN ('awaiting_validation', 'approved');",
    // 10: federation hardening. `starttls`: the enrolment's ldap:// link is
    // upgraded by StartTLS. `fed_hold`: the deletions of a refresh that
    // would have deleted too much of the local copy, held (nothing deleted)
    // until an admin confirms these very entries; one hold at a time, its
    // id never reused, so a confirmation names what the admin saw.
    // `fed_hold_entries`: its entries (`kept`: homed here or this box's
    // collective, which a refresh never deletes).
    "ALTER TABLE federation ADD COLUMN starttls INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE fed_hold (
         id           INTEGER PRIMARY KEY AUTOINCREMENT,
         at           INTEGER NOT NULL,
         local_copy   INTEGER NOT NULL,
         confirmed_at INTEGER,
         confirmed_by TEXT
     ) STRICT;
     CREATE TABLE fed_hold_entries (
         hold_id INTEGER NOT NULL REFERENCES fed_hold (id) ON DELETE CASCADE,
         uuid    BLOB NOT NULL,
         dn      TEXT NOT NULL,
         kept    INTEGER NOT NULL CHECK (kept IN (0, 1)),
         PRIMARY KEY (hold_id, uuid)
     ) STRICT;",
    // 11: what the apps must still be told about someone's access (a
    // suspension, a reactivation, a removal from a collective), queued in
    // the transaction that records the change and carried out in id order
    // per app until each lands (`app_access`). `action` is the JSON of an
    // `apps::access::Action`.
    "CREATE TABLE app_actions (
         id              INTEGER PRIMARY KEY AUTOINCREMENT,
         created_at      INTEGER NOT NULL,
         app             TEXT NOT NULL,
         action          TEXT NOT NULL,
         state           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL,
         last_error      TEXT NOT NULL DEFAULT '',
         settled_at      INTEGER
     ) STRICT;
     CREATE INDEX app_actions_pending ON app_actions (state, app, id);",
];

fn migrations(upto: usize) -> Migrations<'static> {
    Migrations::new(MIGRATIONS[..upto].iter().map(|sql| M::up(sql)).collect())
}

/// The schema version this binary writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path} is at schema version {found}, newer than this binary's {supported}: it was written by a newer commonscloud. Install that version again (or restore a backup taken before the upgrade); the database was not touched"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the store lock is poisoned (a thread panicked holding it); restart the daemon")]
    Poisoned,
    #[error("the row changed meanwhile")]
    Conflict,
    #[error("inconsistent state: {0}")]
    Corrupt(String),
    #[error("migrating state database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: rusqlite_migration::Error,
    },
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// Runs `f` with the store locked; a poisoned lock is
/// [`StoreError::Poisoned`]. The lock is never held across an await.
pub fn with_store<T>(
    store: &std::sync::Mutex<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let s = store.lock().map_err(|_| StoreError::Poisoned)?;
    f(&s)
}

/// Audits what the daemon itself did (actor `daemon`); a failure is
/// logged, not returned: the action happened either way.
pub fn audit_daemon(store: &std::sync::Mutex<Store>, action: &str, detail: &str) {
    let now = crate::clock::unix_now();
    if let Err(e) = with_store(store, |s| s.audit(now, "daemon", action, detail)) {
        log::warn!("cannot write audit entry {action}: {e}");
    }
}

/// An open, migrated state database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/state.db` and migrates it to
    /// [`SCHEMA_VERSION`].
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        Self::open_path(&state_dir.join("state.db"), SCHEMA_VERSION)
    }

    /// Opens a database migrated only up to `version`: for tests that need an
    /// appliance as an older release left it.
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, version: usize) -> Result<Store, StoreError> {
        Self::open_path(path, version.min(SCHEMA_VERSION))
    }

    fn open_path(path: &Path, target: usize) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            // Read the version on a read-only handle: a database from the
            // future must not even get a WAL file.
            let ro = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sqlite)?;
            let found: usize = ro
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .map_err(sqlite)?
                .try_into()
                .unwrap_or(usize::MAX);
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    path: path.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrations(target)
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        set_private(path);
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// This appliance's stable random id.
    pub fn appliance_id(&self) -> Result<String, StoreError> {
        self.meta("appliance_id").map(|v| v.unwrap_or_default())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Appends to the audit log. `at` is Unix seconds, given by the caller.
    pub fn audit(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![at, actor, action, detail],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets audit entries older than `before`, then the oldest beyond
    /// the newest `keep`. How many went.
    pub fn prune_audit(&self, before: i64, keep: u64) -> Result<usize, StoreError> {
        let old = self
            .conn
            .execute("DELETE FROM audit WHERE at < ?1", [before])
            .map_err(|e| self.err(e))?;
        let over = self
            .conn
            .execute(
                "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.err(e))?;
        Ok(old + over)
    }

    /// How many entries the audit log holds.
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// The newest audit entries, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The journal mode in force (`wal` once opened).
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        self.conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Raw access for tests that need to plant rows an older release wrote.
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The database holds registrations and tokens later on: keep it private.
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [
        path.to_owned(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations(SCHEMA_VERSION).validate().unwrap();
    }

    #[test]
    fn fresh_database_reaches_current_version_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.journal_mode().unwrap(), "wal");
        let id = store.appliance_id().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reopening keeps the identity.
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().appliance_id().unwrap(), id);
    }

    #[test]
    fn every_older_version_upgrades_and_keeps_its_data() {
        for from in 1..SCHEMA_VERSION {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let old = Store::open_at_version(&path, from).unwrap();
            assert_eq!(old.schema_version().unwrap(), from);
            let id = old.appliance_id().unwrap();
            old.connection()
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('planted', 'by v1')",
                    [],
                )
                .unwrap();
            drop(old);
            let new = Store::open(dir.path()).unwrap();
            assert_eq!(new.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(new.appliance_id().unwrap(), id);
            assert_eq!(new.meta("planted").unwrap().as_deref(), Some("by v1"));
            new.audit(1, "test", "upgraded", "").unwrap();
            assert_eq!(new.recent_audit(5).unwrap()[0].action, "upgraded");
        }
    }

    #[test]
    fn database_from_the_future_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); INSERT INTO future VALUES (42);")
                .unwrap();
            conn.pragma_update(None, "user_version", (SCHEMA_VERSION + 1) as i64)
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let listing = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let files_before = listing(dir.path());
        let err = Store::open(dir.path()).err().expect("must refuse");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1));
        assert!(
            msg.contains("newer") && msg.contains("not touched"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(
            listing(dir.path()),
            files_before,
            "no -wal or -shm file appeared"
        );
    }

    #[test]
    fn audit_is_pruned_by_age_then_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..100 {
            store.audit(i, "daemon", &format!("a{i}"), "").unwrap();
        }
        // Older than 30: 30 entries go.
        assert_eq!(store.prune_audit(30, 1000).unwrap(), 30);
        assert_eq!(store.audit_len().unwrap(), 70);
        // Then only the newest 10 stay.
        assert_eq!(store.prune_audit(0, 10).unwrap(), 60);
        let kept: Vec<_> = store
            .recent_audit(100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(kept.len(), 10);
        assert_eq!((kept[0].as_str(), kept[9].as_str()), ("a99", "a90"));
        assert_eq!(store.prune_audit(0, 10).unwrap(), 0);
        assert_eq!(store.prune_audit(0, 0).unwrap(), 10);
    }

    #[test]
    fn audit_is_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store.audit(i, "daemon", &format!("a{i}"), "").unwrap();
        }
        let got: Vec<_> = store
            .recent_audit(2)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(got, ["a4", "a3"]);
    }
}
