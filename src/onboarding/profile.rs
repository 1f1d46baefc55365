//! What a signed-in person does for themselves: their profile, their
//! password, and the services they may use. Same service as the rest of
//! onboarding: directory first, then the audit.

use super::service::MIN_PASSWORD;
use super::service::{Onboarding, OnboardingError};
use super::validate::{FieldError, Language, display_name};
use crate::directory::auth::{AuthError, Authenticator};
use crate::directory::people::{self, Person};
use crate::directory::{DirectoryError, ldap};
use crate::store::StoreError;

/// A service a person may open, and through which collective.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MyService {
    pub collective: String,
    pub name: String,
    pub url: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> OnboardingError {
    OnboardingError::Invalid(vec![FieldError {
        field,
        message: message.into(),
    }])
}

/// Which of `services` (per collective, with the groups allowed) `p` may
/// use: one of their groups of that collective is allowed. Pure.
pub fn allowed(p: &Person, services: &[(String, Vec<people::Service>)]) -> Vec<MyService> {
    let mut out = Vec::new();
    for (slug, list) in services {
        for s in list {
            let may = p
                .groups
                .iter()
                .any(|(c, g)| c.as_str() == slug && s.groups.iter().any(|a| a == g));
            if may {
                out.push(MyService {
                    collective: slug.clone(),
                    name: s.name.clone(),
                    url: s.url.clone(),
                });
            }
        }
    }
    out
}

impl Onboarding {
    /// Changes the name shown and the language; audited as the person.
    pub async fn update_profile(
        &self,
        uid: &str,
        name: &str,
        language: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        let name = name.trim();
        display_name(name).map_err(|m| invalid("display_name", m))?;
        let language = Language::parse(language.trim())
            .ok_or_else(|| invalid("language", "choose en, ca or es"))?;
        let mut root = self.root().await?;
        let p = self.existing_person(&mut root, uid).await?;
        self.check_home(&p.uid, &p.home_node, "profile")?;
        let base = Self::base_of(
            &mut root,
            &p.dn,
            &["cn", "sn", "displayName", "preferredLanguage"],
        )
        .await?;
        let change = crate::federation::outbox::Change::attrs(&p.dn, &base);
        let (_, ids) = self
            .federated(now, vec![change], async {
                Ok(people::set_profile(&mut root, &p.dn, name, language.as_str()).await?)
            })
            .await?;
        self.audit_release(now, &p.uid, "update-profile", "", &ids)?;
        self.existing_person(&mut root, uid).await
    }

    /// A new password for a person who knows the current one. Their other
    /// console sessions end.
    pub async fn change_password(
        &self,
        uid: &str,
        current: &str,
        new: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        if new.chars().count() < MIN_PASSWORD {
            return Err(invalid(
                "new_password",
                format!("use at least {MIN_PASSWORD} characters"),
            ));
        }
        let auth = Authenticator::new(self.settings().ldap.clone(), self.settings().tree.clone());
        let p = match auth.authenticate(uid, current).await {
            Ok(p) => p,
            Err(AuthError::Refused) => {
                return Err(invalid("password", "this is not your current password"));
            }
            Err(AuthError::Directory(e)) => return Err(e.into()),
        };
        let mut root = self.root().await?;
        if let Err(e) = self.check_home(&p.uid, &p.home_node, "password") {
            // Homed elsewhere: while the alliance answers, the person changes
            // it there themselves (their own right), and the down-sync
            // brings the new hash back; offline, it waits.
            let Some(remote) = self.link.as_ref().and_then(|l| l.remote()) else {
                return Err(e);
            };
            let dn = remote.person_dn(&p.uid);
            let mut conn = crate::directory::alliance::connect(
                &remote.url,
                remote.security,
                remote.ca_file.as_deref(),
                &dn,
                current,
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|_| e)?;
            ldap::set_password(&mut conn, &dn, new).await?;
            ldap::set_password(&mut root, &p.dn, new).await?;
        } else {
            let base = Self::base_of(&mut root, &p.dn, &["userPassword"]).await?;
            let change = crate::federation::outbox::Change::attrs(&p.dn, &base);
            let (_, ids) = self
                .federated(now, vec![change], async {
                    Ok(ldap::set_password(&mut root, &p.dn, new).await?)
                })
                .await?;
            self.with_store(|s| s.outbox_release(&ids))?;
            self.wake_replay();
        }
        self.with_store(|s| {
            s.atomically(|s| {
                s.delete_sessions_of(&p.uid)?;
                s.audit(now, &p.uid, "change-password", "")
            })
        })
    }

    /// The services `uid` may open, across their collectives.
    pub async fn my_services(&self, uid: &str) -> Result<Vec<MyService>, OnboardingError> {
        let mut root = self.root().await?;
        let p = self.existing_person(&mut root, uid).await?;
        let settings = self.settings();
        let tree = &settings.tree;
        let mut all = Vec::new();
        for slug in &p.collectives() {
            all.push((
                slug.to_string(),
                people::services(&mut root, tree, slug).await?,
            ));
        }
        Ok(allowed(&p, &all))
    }

    /// The collectives `uid` is not in yet (where they may ask to join).
    pub async fn others(&self, uid: &str) -> Result<Vec<people::Collective>, OnboardingError> {
        let mut root = self.root().await?;
        let p = self.existing_person(&mut root, uid).await?;
        let all = people::collectives(&mut root, &self.settings().tree).await?;
        Ok(all.into_iter().filter(|c| !p.is_member(&c.slug)).collect())
    }
}

/// Groups a page lists for granting services: the built-in ones first,
/// then a collective's own (which `collective()` lists without them).
pub fn grantable(groups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = ["members", "admins"].map(str::to_owned).to_vec();
    out.extend(
        groups
            .iter()
            .filter(|g| !out.contains(g))
            .cloned()
            .collect::<Vec<_>>(),
    );
    out
}

impl Onboarding {
    /// A person whose uid was someone else's at the alliance (found when
    /// their account was pushed there) chooses another through the mailed
    /// link: the entry is renamed here (refint moves their group
    /// memberships), their request and sessions follow, and the new uid
    /// goes to the alliance with their memberships. Their password stays.
    pub async fn choose_uid(
        &self,
        token: &str,
        new_uid: &str,
        now: i64,
    ) -> Result<String, OnboardingError> {
        let hash = super::service::hash_token(token);
        let peek = self
            .with_store(|s| s.peek_token(&hash, "choose_uid", now))?
            .ok_or(OnboardingError::BadLink)?;
        let uid: crate::model::Uid = new_uid
            .trim()
            .parse()
            .map_err(|e: crate::model::Invalid| invalid("uid", e.0))?;
        let mut root = self.root().await?;
        let collectives = self.known_collectives(&mut root).await?;
        if collectives.iter().any(|c| c.slug.as_str() == uid.as_str()) {
            return Err(invalid(
                "uid",
                format!("`{uid}` is the name of a collective here: choose another user name"),
            ));
        }
        let settings = self.settings();
        let tree = &settings.tree;
        let taken = people::person(&mut root, tree, uid.as_str())
            .await?
            .is_some()
            || self.with_store(|s| s.pending_holder(uid.as_str(), ""))? == Some("uid");
        if taken || uid.as_str() == peek.uid {
            return Err(invalid("uid", format!("`{uid}` is taken: choose another")));
        }
        let p = self.existing_person(&mut root, &peek.uid).await?;
        let new_dn = tree.person(uid.as_str());
        let mut changes = vec![crate::federation::outbox::Change::Add { dn: new_dn.clone() }];
        for (slug, g) in &p.groups {
            changes.push(crate::federation::outbox::Change::Member {
                group: tree.group(slug, g),
                member: new_dn.clone(),
                added: true,
            });
        }
        let (_, ids) = self
            .federated(now, changes, async {
                let res = crate::directory::alliance::rename(&mut root, &p.dn, &new_dn).await?;
                if res.rc != 0 {
                    return Err(OnboardingError::Directory(DirectoryError::Ldap {
                        what: format!("renaming {} to {new_dn}", p.dn),
                        source: Box::new(ldap3::LdapError::LdapResult { result: res }),
                    }));
                }
                Ok(())
            })
            .await?;
        self.with_store(|s| {
            s.atomically(|s| {
                if s.use_token(&hash, "choose_uid", now)?.is_none() {
                    return Err(StoreError::Conflict);
                }
                s.outbox_release(&ids)?;
                if let Some(id) = peek.registration_id {
                    s.rename_registration(id, uid.as_str(), now)?;
                }
                s.delete_sessions_of(&peek.uid)?;
                s.rename_addresses(&peek.uid, uid.as_str())?;
                s.audit(
                    now,
                    uid.as_str(),
                    "choose-uid",
                    &format!("{} is now {uid}", peek.uid),
                )
            })
        })?;
        self.wake_replay();
        Ok(uid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CollectiveSlug;

    fn person(groups: &[(&str, &str)]) -> Person {
        Person {
            dn: "uid=ana,ou=people,dc=x".into(),
            uid: "ana".into(),
            display_name: "Ana".into(),
            mail: "ana@x.org".into(),
            language: "en".into(),
            suspended: false,
            primary_collective: None,
            home_node: String::new(),
            groups: groups
                .iter()
                .map(|(c, g)| (c.parse::<CollectiveSlug>().unwrap(), (*g).to_owned()))
                .collect(),
        }
    }

    fn service(name: &str, groups: &[&str]) -> people::Service {
        people::Service {
            name: name.into(),
            url: format!("https://{name}.x.org"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn a_service_is_allowed_through_a_group_of_the_same_collective() {
        let p = person(&[("brest", "members"), ("quimper", "editors")]);
        let all = vec![
            (
                "brest".to_owned(),
                vec![
                    service("cloud", &["members"]),
                    service("forum", &["admins"]),
                ],
            ),
            (
                "quimper".to_owned(),
                vec![
                    service("office", &["editors"]),
                    service("wiki", &["members"]),
                ],
            ),
        ];
        let names: Vec<(String, String)> = allowed(&p, &all)
            .into_iter()
            .map(|s| (s.collective, s.name))
            .collect();
        assert_eq!(
            names,
            [
                ("brest".to_owned(), "cloud".to_owned()),
                ("quimper".to_owned(), "office".to_owned())
            ]
        );
    }

    #[test]
    fn the_builtin_groups_come_first_once() {
        let g = grantable(&["editors".into(), "members".into()]);
        assert_eq!(g, ["members", "admins", "editors"]);
    }
}
