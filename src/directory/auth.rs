//! The daemon's authentication path: find the person by uid (escaped, over
//! the root connection), then bind as them, so slapd checks the password
//! and the ppolicy lock. Every login of the console and of SSO goes through
//! here; `bench directory` measures it against raw binds.

use ldap3::Ldap;
use tokio::sync::Mutex;

use super::DirectoryError;
use super::people::{self, Person};
use super::slapd::Paths;
use super::tree::Tree;
use crate::model::Uid;

/// Why a login failed; what the person is told is the same for every
/// refusal (wrong password, unknown uid, suspended, not a member here).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong user name or password, or the account is suspended")]
    Refused,
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// Checks passwords against the local slapd. Cheap to share: the look-up
/// connection is multiplexed and re-opened when it breaks.
pub struct Authenticator {
    paths: Paths,
    tree: Tree,
    lookup: Mutex<Option<Ldap>>,
}

impl Authenticator {
    pub fn new(paths: Paths, tree: Tree) -> Self {
        Self {
            paths,
            tree,
            lookup: Mutex::new(None),
        }
    }

    /// The person with this uid, over the shared look-up connection. While
    /// slapd restarts (the daemon does that for new listeners, in well
    /// under a second) the look-up is tried again on a fresh connection for
    /// up to 2 s, so nobody is signed out or refused for it.
    pub async fn find(&self, uid: &str) -> Result<Option<Person>, DirectoryError> {
        let mut tries = 0;
        loop {
            match self.find_once(uid).await {
                Ok(p) => return Ok(p),
                Err(e) if tries >= 10 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn find_once(&self, uid: &str) -> Result<Option<Person>, DirectoryError> {
        let mut guard = self.lookup.lock().await;
        let mut ldap = match guard.as_ref() {
            Some(l) => l.clone(),
            None => {
                let l = super::ldap::connect_root(&self.paths).await?;
                *guard = Some(l.clone());
                l
            }
        };
        drop(guard);
        let found = people::person(&mut ldap, &self.tree, uid).await;
        if found.is_err() {
            // Next login opens a fresh connection (slapd may have restarted).
            *self.lookup.lock().await = None;
        }
        found
    }

    /// The person, if the password is theirs, the account is not suspended
    /// and they are a member of one of this box's collectives.
    pub async fn authenticate(&self, uid: &str, password: &str) -> Result<Person, AuthError> {
        // Not a possible uid, or an empty password (an anonymous bind would
        // "succeed"): refuse without asking slapd.
        if uid.parse::<Uid>().is_err() || password.is_empty() {
            return Err(AuthError::Refused);
        }
        let person = self.find(uid).await?.ok_or(AuthError::Refused)?;
        // A suspension, or nobody of this box's collectives (someone
        // another appliance put in through the alliance).
        if !person.may_sign_in() {
            return Err(AuthError::Refused);
        }
        if super::ldap::check_password(&self.paths.ldapi_url(), &person.dn, password).await? {
            Ok(person)
        } else {
            Err(AuthError::Refused)
        }
    }
}
