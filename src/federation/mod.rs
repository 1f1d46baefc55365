//! Federation with the alliance's directory (DESIGN.md §5): a writable local
//! slapd kept in step both ways.
//!
//! - Down: [`sync`] runs an RFC 4533 refreshAndPersist search against the
//!   alliance and applies what it says to the local slapd, keyed by the
//!   alliance's entryUUIDs, the cookie stored with what it covers.
//! - Up: every local change is queued in the store's outbox in the same
//!   transaction as the change's record ([`outbox`]); [`replay`] pushes them
//!   in order whenever the alliance answers, settling conflicts by the
//!   authority rule ([`rules::settle`]).
//! - [`join`] enrols an appliance (checks first) and pushes a standalone
//!   appliance's people up.
//!
//! Decisions are in [`rules`] and [`guard`] (pure); LDAP goes through
//! `directory::alliance`, the only LDAP code; state through `store`.

pub mod guard;
pub mod join;
pub mod outbox;
pub mod replay;
pub mod rules;
pub mod sync;
pub mod task;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::directory::DirectoryError;
use crate::directory::slapd::Paths;
use crate::events::{Bus, Event};
use crate::model::CollectiveSlug;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Check(String),
    #[error("reading the alliance password from {}: {source}", path.display())]
    Password {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the sync task stopped: {0}")]
    Task(String),
    #[error(transparent)]
    Security(#[from] guard::LinkSecurityError),
}

/// Secret file holding the alliance account's password (0600).
pub const PASSWORD_FILE: &str = "alliance-password";

/// How to reach the alliance and who we are there.
#[derive(Clone)]
pub struct Settings {
    pub url: String,
    pub bind_dn: String,
    pub password: String,
    /// The alliance's suffix and ours.
    pub suffixes: rules::Suffixes,
    pub collective: CollectiveSlug,
    /// Our node name (`commonsHomeNode` of the people homed here).
    pub node: String,
    pub local: Paths,
    pub connect_timeout: Duration,
    /// `https://box.<domain>`, for the link mailed on a uid collision.
    pub console_url: String,
    /// This collective's name, for that mail.
    pub collective_name: String,
    /// The CA certificate(s) the alliance's certificate (`ldaps://` or
    /// StartTLS) must chain to; the system's roots without it.
    pub ca_file: Option<PathBuf>,
    /// Upgrade an `ldap://` URL with StartTLS.
    pub starttls: bool,
    /// Allow plain `ldap://` (`[alliance] insecure = true`).
    pub insecure: bool,
    /// Past these, a refresh's deletions wait for an admin.
    pub deletion_limits: guard::DeletionLimits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("password", &"<redacted>")
            .field("suffixes", &self.suffixes)
            .field("node", &self.node)
            .field("starttls", &self.starttls)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn scope(&self) -> rules::Scope {
        rules::Scope::new(&self.suffixes.alliance, self.collective.clone())
    }

    /// How the link must be protected, or why it may not be made.
    pub fn security(&self) -> Result<guard::LinkSecurity, guard::LinkSecurityError> {
        guard::link_security(&self.url, self.starttls, self.insecure)
    }

    /// A connection to the alliance as this appliance's account, once
    /// [`Settings::security`] allows it.
    pub async fn connect(&self) -> Result<ldap3::Ldap, FederationError> {
        let security = self.security()?;
        Ok(crate::directory::alliance::connect(
            &self.url,
            security,
            self.ca_file.as_deref(),
            &self.bind_dn,
            &self.password,
            self.connect_timeout,
        )
        .await?)
    }
}

/// The link as the daemon sees it now, shared with status, the console and
/// the onboarding service (which refuses changes that need the alliance
/// while it is down).
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
    remote: Mutex<Option<Remote>>,
    /// Between the two halves of one session: the replay wakes the
    /// down-sync after it settled group memberships, which then checks who
    /// is in scope. (What other parts of the box do reaches the sync as
    /// events: `FederationQueued`, `DeletionsConfirmed`.)
    pub scope_check: tokio::sync::Notify,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkState {
    /// Whether federation is configured at all.
    pub enabled: bool,
    pub up: bool,
    /// Since when `up` has been what it is.
    pub since: Option<i64>,
    pub last_error: Option<String>,
    /// The initial (or reload) refresh is running.
    pub refreshing: bool,
    /// Changes applied from the alliance since the daemon started.
    pub applied: u64,
    /// Outbox entries replayed since the daemon started.
    pub replayed: u64,
    /// Why the daemon will not make the link at all until the config
    /// changes (plain `ldap://` without `insecure = true`, say).
    pub refused: Option<String>,
    /// How the link is protected, once connected.
    pub security: Option<guard::LinkSecurity>,
}

/// Where the alliance is, for a person who changes their own password there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    pub suffix: String,
    pub ca_file: Option<PathBuf>,
    /// As the sync's own link (a person's password crosses it).
    pub security: guard::LinkSecurity,
}

impl Remote {
    pub fn person_dn(&self, uid: &str) -> String {
        crate::directory::tree::Tree::new(&self.suffix).person(uid)
    }
}

impl Link {
    /// The alliance, while the link is up.
    pub fn remote(&self) -> Option<Remote> {
        if !self.is_up() {
            return None;
        }
        self.remote.lock().ok().and_then(|r| r.clone())
    }

    pub(crate) fn set_remote(&self, remote: Option<Remote>) {
        if let Ok(mut r) = self.remote.lock() {
            *r = remote;
        }
    }

    pub fn new(enabled: bool) -> Self {
        let link = Self::default();
        link.update(|s| s.enabled = enabled);
        link
    }

    pub fn state(&self) -> LinkState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn is_up(&self) -> bool {
        self.state().up
    }

    pub fn is_enabled(&self) -> bool {
        self.state().enabled
    }

    pub fn update(&self, f: impl FnOnce(&mut LinkState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    pub fn set_up(&self, up: bool, now: i64, error: Option<String>) {
        self.update(|s| {
            if s.up != up || s.since.is_none() {
                s.since = Some(now);
            }
            s.up = up;
            if error.is_some() || up {
                s.last_error = error;
            }
        });
    }
}

/// Everything `alliance status` and the console show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub enrolment: Option<crate::store::Enrolment>,
    pub link: LinkState,
    pub last_contact: Option<i64>,
    /// Age of the sync cookie in seconds (how old our view may be).
    pub cookie_age_secs: Option<i64>,
    pub entries_in_scope: i64,
    pub outbox: crate::store::OutboxStats,
    pub conflicts: Vec<crate::store::ConflictRow>,
    pub recent: Vec<crate::store::OutboxRow>,
    /// A refresh's deletions held for an admin, with the first entries.
    pub hold: Option<HoldView>,
}

/// A held refresh as `alliance status` shows it: the figures and the
/// first entries of each kind (`alliance confirm-deletions` lists them all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldView {
    #[serde(flatten)]
    pub hold: crate::store::Hold,
    pub entries: Vec<crate::store::HeldEntry>,
}

/// How many entries of a hold `alliance status` shows.
pub const HOLD_SHOWN: i64 = 20;

/// The hold with up to `limit` of its entries, if one is held.
pub fn hold_view(store: &Store, limit: i64) -> Result<Option<HoldView>, FederationError> {
    let Some(hold) = store.fed_hold()? else {
        return Ok(None);
    };
    let entries = store.fed_hold_entries(hold.id, limit)?;
    Ok(Some(HoldView { hold, entries }))
}

/// The store, or an error saying its lock is poisoned.
pub(crate) fn lock(
    store: &Mutex<Store>,
) -> Result<std::sync::MutexGuard<'_, Store>, FederationError> {
    store
        .lock()
        .map_err(|_| FederationError::Task("the store lock is poisoned".into()))
}

/// Gathers the status from the store and the link.
pub fn status(store: &Mutex<Store>, link: &Link, now: i64) -> Result<Status, FederationError> {
    let s = lock(store)?;
    Ok(Status {
        enrolment: s.enrolment()?,
        link: link.state(),
        last_contact: s.last_contact()?,
        cookie_age_secs: s.sync_cookie()?.map(|(_, at)| (now - at).max(0)),
        entries_in_scope: s.fed_entry_count()?,
        outbox: s.outbox_stats()?,
        conflicts: s.conflicts(20)?,
        recent: s.outbox_recent(20)?,
        hold: hold_view(&s, HOLD_SHOWN)?,
    })
}

/// What an admin's confirmation of a held refresh came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Confirmed: the down-sync refreshes again and deletes them.
    Confirmed(crate::store::Hold),
    /// Nothing is held.
    NoHold,
    /// The hold now is another than the one the admin saw (`id`): nothing
    /// was confirmed.
    Changed(crate::store::Hold),
}

/// Confirms hold `id` (the one `by` looked at), audited, and announces it
/// ([`Event::DeletionsConfirmed`]): the down-sync refreshes again at once.
pub fn confirm_deletions(
    store: &Mutex<Store>,
    events: &Bus,
    id: i64,
    by: &str,
    now: i64,
) -> Result<Confirmation, FederationError> {
    let s = lock(store)?;
    let Some(hold) = s.fed_hold()? else {
        return Ok(Confirmation::NoHold);
    };
    if hold.id != id {
        return Ok(Confirmation::Changed(hold));
    }
    let done = s.atomically(|s| {
        if !s.confirm_fed_hold(id, by, now)? {
            return Ok(false);
        }
        s.audit(
            now,
            by,
            "alliance-confirm-deletions",
            &format!(
                "hold {id}: {} entries to delete, {} kept (homed here), of {} copied here",
                hold.delete, hold.keep, hold.local_copy
            ),
        )?;
        Ok(true)
    })?;
    let now_held = s.fed_hold()?;
    drop(s);
    match (done, now_held) {
        (true, Some(h)) => {
            events.publish(Event::DeletionsConfirmed);
            Ok(Confirmation::Confirmed(h))
        }
        (_, Some(h)) => Ok(Confirmation::Changed(h)),
        (_, None) => Ok(Confirmation::NoHold),
    }
}

/// Reads the alliance password file.
pub fn read_password(path: &std::path::Path) -> Result<String, FederationError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| FederationError::Password {
            path: path.to_owned(),
            source,
        })
}
