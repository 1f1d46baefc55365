//! The DiscourseConnect provider: checks the request, the nonce, the
//! person's password (through the daemon's authentication path, so a
//! suspended account is refused), and answers with their entryUUID, mail,
//! user name, name and collectives as Discourse groups. IO in order: the
//! secret, the store (nonce), the directory, the store (answered, audit).

use std::path::Path;
use std::sync::Mutex;

use super::discourse::{self, Identity, SsoError};
use crate::directory::auth::{AuthError, Authenticator};
use crate::directory::people::Person;
use crate::directory::slapd::Paths;
use crate::directory::tree::Tree;
use crate::directory::{DirectoryError, ldap, people};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Sso(#[from] SsoError),
    #[error("wrong user name or password, or the account is suspended")]
    Refused,
    #[error(
        "Discourse is not set up on this appliance yet (no connect secret): run `commonscloud reconcile`"
    )]
    NotSetUp,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
}

/// A sign-in for Discourse: returns where to send the browser, which is
/// always on `forum_host` (the forum's configured hostname).
#[allow(clippy::too_many_arguments)]
pub async fn login(
    store: &Mutex<Store>,
    paths: &Paths,
    tree: &Tree,
    secrets_dir: &Path,
    forum_host: &str,
    sso: &str,
    sig: &str,
    uid: &str,
    password: &str,
    now: i64,
) -> Result<String, LoginError> {
    let (secret, req) = check(store, secrets_dir, forum_host, sso, sig, now)?;
    let auth = Authenticator::new(paths.clone(), tree.clone());
    let person = match auth.authenticate(uid, password).await {
        Ok(p) => p,
        Err(AuthError::Refused) => return Err(LoginError::Refused),
        Err(AuthError::Directory(e)) => return Err(e.into()),
    };
    respond(store, paths, tree, &secret, &req, &person, now).await
}

/// The same for a person the console already knows (their session): no
/// password is asked again. The caller checked that they may sign in.
#[allow(clippy::too_many_arguments)]
pub async fn login_as(
    store: &Mutex<Store>,
    paths: &Paths,
    tree: &Tree,
    secrets_dir: &Path,
    forum_host: &str,
    sso: &str,
    sig: &str,
    person: &Person,
    now: i64,
) -> Result<String, LoginError> {
    let (secret, req) = check(store, secrets_dir, forum_host, sso, sig, now)?;
    if !person.may_sign_in() {
        return Err(LoginError::Refused);
    }
    respond(store, paths, tree, &secret, &req, person, now).await
}

/// The request's signature and nonce, before anyone is asked anything.
fn check(
    store: &Mutex<Store>,
    secrets_dir: &Path,
    forum_host: &str,
    sso: &str,
    sig: &str,
    now: i64,
) -> Result<(String, discourse::Request), LoginError> {
    let secret = std::fs::read_to_string(secrets_dir.join("discourse-connect-secret"))
        .map(|s| s.trim().to_owned())
        .map_err(|_| LoginError::NotSetUp)?;
    let req = discourse::verify(secret.as_bytes(), sso, sig, forum_host)?;
    let (first_seen, answered) = {
        let s = store.lock().map_err(|_| StoreError::Poisoned)?;
        s.sso_nonces_prune(now - discourse::USED_NONCE_KEEP_SECS)?;
        s.sso_nonce_seen(&req.nonce, now)?
    };
    discourse::check_nonce(first_seen, answered, now)?;
    Ok((secret, req))
}

async fn respond(
    store: &Mutex<Store>,
    paths: &Paths,
    tree: &Tree,
    secret: &str,
    req: &discourse::Request,
    person: &Person,
    now: i64,
) -> Result<String, LoginError> {
    // Discourse makes an admin of whoever comes with a developer address:
    // never answer with one it could take for that (see
    // `apps::discourse::DEVELOPER_EMAIL`).
    if reserved_address(&person.mail) {
        return Err(LoginError::Refused);
    }
    let mut root = ldap::connect_root(paths).await?;
    let uuid = ldap::read(&mut root, &person.dn, &["entryUUID"])
        .await?
        .and_then(|e| e.attrs.get("entryUUID").and_then(|v| v.first()).cloned())
        .unwrap_or_default();
    if uuid.is_empty() {
        return Err(LoginError::Refused);
    }
    let mine: Vec<String> = person
        .collectives()
        .iter()
        .map(ToString::to_string)
        .collect();
    let others: Vec<String> = people::collectives(&mut root, tree)
        .await?
        .into_iter()
        .map(|c| c.slug.to_string())
        .filter(|s| !mine.contains(s))
        .collect();
    let who = Identity {
        external_id: uuid,
        email: person.mail.clone(),
        username: person.uid.clone(),
        name: person.display_name.clone(),
        add_groups: mine,
        remove_groups: others,
    };
    let (payload, sig) = discourse::answer(secret.as_bytes(), &req.nonce, &who);
    {
        let s = store.lock().map_err(|_| StoreError::Poisoned)?;
        if !s.sso_nonce_answered(&req.nonce, now)? {
            return Err(SsoError::Replayed.into());
        }
        s.audit(now, &person.uid, "sso-discourse", "signed in to the forum")?;
    }
    Ok(discourse::redirect(&req.return_sso_url, &payload, &sig))
}

/// An address under `.invalid` (RFC 6761: no mailbox has one), whatever
/// its case or trailing dots; the forum's developer address is one.
pub fn reserved_address(mail: &str) -> bool {
    let domain = mail.rsplit_once('@').map_or(mail, |(_, d)| d);
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    domain == "invalid" || domain.ends_with(".invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_developer_address_is_never_answered_for() {
        assert!(reserved_address(crate::apps::discourse::DEVELOPER_EMAIL));
        for m in [
            "No-Developer@CommonsCloud.INVALID",
            "x@commonscloud.invalid.",
            "x@invalid",
            " x@a.invalid ",
        ] {
            assert!(reserved_address(m), "{m}");
        }
        for m in [
            "ana@example.org",
            "invalid@example.org",
            "x@invalid.example.org",
        ] {
            assert!(!reserved_address(m), "{m}");
        }
    }
}
