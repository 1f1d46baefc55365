//! Membership after registration, on the same service: joining another
//! collective, invitations, forgotten passwords and the admins' actions.
//! The rules come from [`super::membership`]; as for registrations, the
//! directory is changed first (idempotently) and the record, mails and
//! audit follow in one SQLite transaction, so a retry after any failure
//! completes the work instead of doubling it.

use ldap3::Ldap;
use serde_json::json;

use super::membership::{self, Refusal};
use super::service::{Onboarding, OnboardingError, hash_token, new_token};
use crate::apps::access;
use crate::directory::ldap;
use crate::directory::people::{self, Collective, Person, Service};
use crate::directory::tree::group_entry;
use crate::federation::outbox::Change;
use crate::model::{CollectiveSlug, Email, Name};
use crate::store::{InvitationRow, JoinRequestRow, StoreError};

/// A collective with who is in it, for `collective show` and the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CollectiveView {
    #[serde(flatten)]
    pub collective: Collective,
    pub members: Vec<String>,
    pub admins: Vec<String>,
    /// Every group but the built-in ones, with its members' uids.
    pub groups: Vec<(String, Vec<String>)>,
    pub services: Vec<Service>,
    pub pending_join_requests: usize,
    pub pending_registrations: usize,
}

/// What an invitation's link leads to, for the page that opens it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InvitationInfo {
    pub collective: String,
    pub collective_name: String,
    pub email: String,
    /// Whether the address already has an account (then the link joins;
    /// otherwise it opens the registration form with the collective set).
    pub has_account: bool,
}

fn slug(s: &str) -> Result<CollectiveSlug, OnboardingError> {
    s.trim().parse().map_err(|e: crate::model::Invalid| {
        OnboardingError::Invalid(vec![super::validate::FieldError {
            field: "collective",
            message: e.0,
        }])
    })
}

fn invalid(field: &'static str, message: String) -> OnboardingError {
    OnboardingError::Invalid(vec![super::validate::FieldError { field, message }])
}

/// An access change's actions for the apps, as the queue stores them.
fn queued(event: &access::Event) -> Vec<(String, String)> {
    access::plan(event)
        .into_iter()
        .map(|a| {
            let json = serde_json::to_string(&a).unwrap_or_default();
            (a.app().to_string(), json)
        })
        .collect()
}

fn uids(tree: &crate::directory::tree::Tree, dns: &[String]) -> Vec<String> {
    let mut out: Vec<String> = dns.iter().filter_map(|dn| tree.uid_of(dn)).collect();
    out.sort();
    out
}

impl Onboarding {
    pub(super) async fn root(&self) -> Result<Ldap, OnboardingError> {
        Ok(ldap::connect_root(&self.settings().ldap).await?)
    }

    pub(super) async fn existing_person(
        &self,
        root: &mut Ldap,
        uid: &str,
    ) -> Result<Person, OnboardingError> {
        people::person(root, &self.settings().tree, uid.trim())
            .await?
            .ok_or_else(|| Refusal::NoPerson(uid.trim().to_owned()).into())
    }

    async fn existing_collective(
        &self,
        root: &mut Ldap,
        s: &str,
    ) -> Result<Collective, OnboardingError> {
        let slug = slug(s)?;
        self.known_collectives(root)
            .await?
            .into_iter()
            .find(|c| c.slug == slug)
            .ok_or_else(|| Refusal::NoCollective(slug.to_string()).into())
    }

    pub(super) fn audit(
        &self,
        now: i64,
        by: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), OnboardingError> {
        self.with_store(|s| s.audit(now, by, action, detail))
    }

    /// Audits an action and hands its prepared outbox rows to the replay,
    /// in one transaction.
    pub(super) fn audit_release(
        &self,
        now: i64,
        by: &str,
        action: &str,
        detail: &str,
        ids: &[i64],
    ) -> Result<(), OnboardingError> {
        self.with_store(|s| {
            s.atomically(|s| {
                s.outbox_release(ids)?;
                s.audit(now, by, action, detail)
            })
        })?;
        self.wake_replay();
        Ok(())
    }

    // ---- people --------------------------------------------------------

    /// Everyone in the directory, or one collective's members.
    pub async fn people(&self, collective: Option<&str>) -> Result<Vec<Person>, OnboardingError> {
        let mut root = self.root().await?;
        let slug = match collective {
            Some(c) => Some(self.existing_collective(&mut root, c).await?.slug),
            None => None,
        };
        Ok(people::people(&mut root, &self.settings().tree, slug.as_ref()).await?)
    }

    pub async fn person(&self, uid: &str) -> Result<Person, OnboardingError> {
        let mut root = self.root().await?;
        self.existing_person(&mut root, uid).await
    }

    /// Locks the account in the directory (no bind anywhere works) and tells
    /// the person why. Suspending twice changes nothing more.
    pub async fn suspend(
        &self,
        uid: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        self.set_suspension(uid, by, Some(reason.trim()), now).await
    }

    /// Lifts the lock and tells the person.
    pub async fn reactivate(
        &self,
        uid: &str,
        by: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        self.set_suspension(uid, by, None, now).await
    }

    /// The name of a person's primary collective, for mails.
    pub(super) fn home_name(&self, p: &Person) -> String {
        p.primary_collective
            .as_ref()
            .map(|c| self.name_of(c.as_str()))
            .unwrap_or_else(|| self.settings().collective_name.clone())
    }

    /// `Some(reason)` suspends, `None` reactivates; the person is mailed
    /// only when their state changes.
    async fn set_suspension(
        &self,
        uid: &str,
        by: &str,
        suspend: Option<&str>,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        let mut root = self.root().await?;
        let p = self.existing_person(&mut root, uid).await?;
        self.check_home(&p.uid, &p.home_node, "account state")?;
        let base = Self::base_of(&mut root, &p.dn, &["commonsAccountState"]).await?;
        let change = Change::attrs(&p.dn, &base);
        let (_, ids) = self
            .federated(now, vec![change], async {
                Ok(people::set_suspended(&mut root, &p.dn, suspend.is_some()).await?)
            })
            .await?;
        let collective = self.home_name(&p);
        let external_id = Self::external_id(&mut root, &p.dn).await?;
        let event = match suspend {
            Some(reason) => access::Event::Suspended {
                uid: p.uid.clone(),
                external_id,
                reason: reason.to_owned(),
            },
            None => access::Event::Reactivated {
                uid: p.uid.clone(),
                external_id,
            },
        };
        self.mailing(|s| {
            s.atomically(|s| {
                s.outbox_release(&ids)?;
                s.app_actions_enqueue(&queued(&event), now)?;
                let (template, action, detail) = match suspend {
                    Some(reason) => ("suspended", "suspend", format!("{}: {reason}", p.uid)),
                    None => ("reactivated", "reactivate", p.uid.clone()),
                };
                if p.suspended != suspend.is_some() {
                    let params = json!({"name": p.display_name, "collective": collective,
                        "reason": suspend.unwrap_or_default()});
                    s.enqueue_mail(&p.mail, template, &p.language, &params.to_string(), now)?;
                }
                s.audit(now, by, action, &detail)
            })
        })?;
        self.wake_replay();
        self.wake_apps();
        self.person(uid).await
    }

    /// A person's entryUUID: the apps know them by it (DiscourseConnect's
    /// `external_id`).
    async fn external_id(root: &mut Ldap, dn: &str) -> Result<String, OnboardingError> {
        Ok(ldap::read(root, dn, &["entryUUID"])
            .await?
            .and_then(|e| e.attrs.get("entryUUID").and_then(|v| v.first()).cloned())
            .unwrap_or_default())
    }

    fn wake_apps(&self) {
        self.announce(crate::events::Event::AppActionsQueued);
    }

    /// Takes a person out of a collective and all its groups. Their primary
    /// collective moves to another of theirs; their only one is refused.
    pub async fn remove_from_collective(
        &self,
        uid: &str,
        collective: &str,
        by: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let p = self.existing_person(&mut root, uid).await?;
        let plan = membership::plan_removal(&p, &c.slug)?;
        let settings = self.settings();
        let tree = &settings.tree;
        let mut changes = Vec::new();
        if plan.new_primary.is_some() {
            let base = Self::base_of(&mut root, &p.dn, &["commonsPrimaryCollective"]).await?;
            changes.push(Change::attrs(&p.dn, &base));
        }
        for g in &plan.groups {
            changes.push(Change::Member {
                group: tree.group(&c.slug, g),
                member: p.dn.clone(),
                added: false,
            });
        }
        let (_, ids) = self
            .federated(now, changes, async {
                if let Some(new) = &plan.new_primary {
                    people::set_primary(&mut root, &p.dn, &tree.collective(new)).await?;
                }
                for g in &plan.groups {
                    people::remove_member(&mut root, tree, &tree.group(&c.slug, g), &p.dn).await?;
                }
                Ok(())
            })
            .await?;
        let event = access::Event::LeftCollective {
            uid: p.uid.clone(),
            external_id: Self::external_id(&mut root, &p.dn).await?,
            collective: c.slug.to_string(),
        };
        self.with_store(|s| {
            s.atomically(|s| {
                s.outbox_release(&ids)?;
                s.app_actions_enqueue(&queued(&event), now)?;
                s.audit(
                    now,
                    by,
                    "remove-from-collective",
                    &format!("{} from {}", p.uid, c.slug),
                )
            })
        })?;
        self.wake_replay();
        self.wake_apps();
        self.person(uid).await
    }

    /// Makes an active member an admin of the collective, or no longer one.
    pub async fn set_admin(
        &self,
        uid: &str,
        collective: &str,
        admin: bool,
        by: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        self.group_member(uid, collective, "admins", admin, by, now)
            .await
    }

    /// Adds a member to one of the collective's groups, or removes them.
    pub async fn group_member(
        &self,
        uid: &str,
        collective: &str,
        group: &str,
        add: bool,
        by: &str,
        now: i64,
    ) -> Result<Person, OnboardingError> {
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let p = self.existing_person(&mut root, uid).await?;
        let settings = self.settings();
        let tree = &settings.tree;
        let group: Name = group
            .trim()
            .parse()
            .map_err(|e: crate::model::Invalid| invalid("group", e.0))?;
        let dn = tree.group(&c.slug, group.as_str());
        if people::group_members(&mut root, tree, &dn).await?.is_none() {
            return Err(Refusal::NoGroup {
                collective: c.slug.to_string(),
                group: group.to_string(),
            }
            .into());
        }
        if add {
            membership::check_active_member(&p, &c.slug)?;
        } else if group.as_str() == "members" {
            return self.remove_from_collective(uid, collective, by, now).await;
        }
        let change = Change::Member {
            group: dn.clone(),
            member: p.dn.clone(),
            added: add,
        };
        let (_, ids) = self
            .federated(now, vec![change], async {
                if add {
                    people::add_member(&mut root, &dn, &p.dn).await?;
                } else {
                    people::remove_member(&mut root, tree, &dn, &p.dn).await?;
                }
                Ok(())
            })
            .await?;
        let action = match (group.as_str(), add) {
            ("admins", true) => "promote",
            ("admins", false) => "demote",
            (_, true) => "add-to-group",
            (_, false) => "remove-from-group",
        };
        self.audit_release(
            now,
            by,
            action,
            &format!("{} in {}/{group}", p.uid, c.slug),
            &ids,
        )?;
        self.person(uid).await
    }

    // ---- collectives, groups, services ---------------------------------

    pub async fn collectives(&self) -> Result<Vec<Collective>, OnboardingError> {
        let mut root = self.root().await?;
        self.known_collectives(&mut root).await
    }

    /// A new collective on this appliance, with its built-in groups.
    pub async fn create_collective(
        &self,
        collective: &str,
        name: &str,
        by: &str,
        now: i64,
    ) -> Result<Collective, OnboardingError> {
        let slug = slug(collective)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "give the collective a name of 1 to 100 characters".into(),
            ));
        }
        let mut root = self.root().await?;
        let login = people::person(&mut root, &self.settings().tree, slug.as_str())
            .await?
            .is_some()
            || self.with_store(|s| s.pending_holder(slug.as_str(), ""))? == Some("uid");
        if login {
            return Err(Refusal::SlugIsLogin(slug.to_string()).into());
        }
        let settings = self.settings();
        let tree = &settings.tree;
        let changes =
            crate::directory::tree::collective_entries(tree, &slug, name, &settings.home_node)
                .into_iter()
                .map(|e| Change::Add { dn: e.dn })
                .collect();
        let (created, ids) = self
            .federated(now, changes, async {
                Ok(
                    people::create_collective(&mut root, tree, &slug, name, &settings.home_node)
                        .await?,
                )
            })
            .await?;
        if !created {
            self.with_store(|s| s.outbox_discard(&ids))?;
            return Err(Refusal::Exists(format!("collective {slug}")).into());
        }
        self.audit_release(
            now,
            by,
            "create-collective",
            &format!("{slug}: {name}"),
            &ids,
        )?;
        // Its group folder and forum group come with the next reconcile.
        self.announce(crate::events::Event::CollectiveCreated);
        self.existing_collective(&mut root, slug.as_str()).await
    }

    pub async fn collective(&self, collective: &str) -> Result<CollectiveView, OnboardingError> {
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let settings = self.settings();
        let tree = &settings.tree;
        let mut members = Vec::new();
        let mut admins = Vec::new();
        let mut groups = Vec::new();
        for g in people::groups(&mut root, tree, &c.slug).await? {
            let dns = people::group_members(&mut root, tree, &tree.group(&c.slug, &g))
                .await?
                .unwrap_or_default();
            match g.as_str() {
                "members" => members = uids(tree, &dns),
                "admins" => admins = uids(tree, &dns),
                _ => groups.push((g, uids(tree, &dns))),
            }
        }
        let services = people::services(&mut root, tree, &c.slug).await?;
        let slug = c.slug.to_string();
        let (pending_join_requests, pending_registrations) = self.with_store(|s| {
            let j = s
                .join_requests(Some(&slug), Some(membership::JOIN_PENDING))?
                .len();
            let r = s
                .registrations(Some(super::machine::State::AwaitingValidation.as_str()))?
                .into_iter()
                .filter(|r| r.collective == slug)
                .count();
            Ok((j, r))
        })?;
        Ok(CollectiveView {
            collective: c,
            members,
            admins,
            groups,
            services,
            pending_join_requests,
            pending_registrations,
        })
    }

    /// A new ACL group in a collective (empty until members are added).
    pub async fn create_group(
        &self,
        collective: &str,
        group: &str,
        by: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let name = membership::check_group_name(group).map_err(|m| invalid("group", m))?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let entry = group_entry(&self.settings().tree, &c.slug, name.as_str());
        let change = Change::Add {
            dn: entry.dn.clone(),
        };
        let (added, ids) = self
            .federated(now, vec![change], async {
                Ok(people::add_entry(&mut root, &entry).await?)
            })
            .await?;
        if !added {
            self.with_store(|s| s.outbox_discard(&ids))?;
            return Err(Refusal::Exists(format!("group {name} in {}", c.slug)).into());
        }
        self.audit_release(now, by, "create-group", &format!("{}/{name}", c.slug), &ids)
    }

    /// Lets a group's members use a service of the collective, or stops it.
    pub async fn grant_service(
        &self,
        collective: &str,
        service: &str,
        group: &str,
        grant: bool,
        by: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let service: Name = service
            .trim()
            .parse()
            .map_err(|e: crate::model::Invalid| invalid("service", e.0))?;
        let group: Name = group
            .trim()
            .parse()
            .map_err(|e: crate::model::Invalid| invalid("group", e.0))?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let settings = self.settings();
        let tree = &settings.tree;
        if people::group_members(&mut root, tree, &tree.group(&c.slug, group.as_str()))
            .await?
            .is_none()
        {
            return Err(Refusal::NoGroup {
                collective: c.slug.to_string(),
                group: group.to_string(),
            }
            .into());
        }
        let dn = tree.service(&c.slug, service.as_str());
        let base = Self::base_of(&mut root, &dn, &["commonsAccessGroup"]).await?;
        let changes = vec![Change::Add { dn: dn.clone() }, Change::attrs(&dn, &base)];
        let (_, ids) = self
            .federated(now, changes, async {
                Ok(people::grant_service(
                    &mut root,
                    tree,
                    &c.slug,
                    service.as_str(),
                    group.as_str(),
                    grant,
                )
                .await?)
            })
            .await?;
        let action = if grant {
            "grant-service"
        } else {
            "revoke-service"
        };
        self.audit_release(
            now,
            by,
            action,
            &format!("{}/{service} to {group}", c.slug),
            &ids,
        )
    }

    // ---- joining another collective ------------------------------------

    /// An active person asks to join another collective; its admins are told.
    pub async fn ask_to_join(
        &self,
        uid: &str,
        collective: &str,
        message: &str,
        now: i64,
    ) -> Result<i64, OnboardingError> {
        let message = message.trim();
        if message.chars().count() > 2000 {
            return Err(invalid("message", "use at most 2000 characters".into()));
        }
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let p = self.existing_person(&mut root, uid).await?;
        membership::check_join(&p, &c.slug)?;
        let admins = self.admin_mails(&mut root, &c.slug).await?;
        let name = self.name_of(c.slug.as_str());
        let id = self.mailing(|s| {
            s.atomically(|s| {
                let id = s.insert_join_request(&p.uid, c.slug.as_str(), message, now)?;
                let link = format!(
                    "{}/console/joins/{id}",
                    self.settings().console_url.trim_end_matches('/')
                );
                let params = json!({"name": p.display_name, "uid": p.uid, "email": p.mail,
                    "collective": name, "message": message, "link": link});
                for a in &admins {
                    s.enqueue_mail(a, "admins_join_request", "en", &params.to_string(), now)?;
                }
                s.audit(
                    now,
                    &p.uid,
                    "ask-to-join",
                    &format!("request {id} for {}", c.slug),
                )?;
                Ok(id)
            })
        });
        id.map_err(|e| match e {
            OnboardingError::Store(StoreError::Conflict) => invalid(
                "collective",
                format!(
                    "you already asked to join {}: its admins will answer",
                    c.slug
                ),
            ),
            e => e,
        })
    }

    pub fn join_requests(
        &self,
        collective: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<JoinRequestRow>, OnboardingError> {
        self.with_store(|s| s.join_requests(collective, state))
    }

    /// An admin of the collective decides a join request; the person is
    /// told either way, with the reason when refused.
    pub async fn decide_join(
        &self,
        id: i64,
        approve: bool,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let r = self
            .with_store(|s| s.join_request(id))?
            .ok_or(OnboardingError::NotFound(id))?;
        membership::check_decidable("join request", id, &r.state)?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, &r.collective).await?;
        let p = self.existing_person(&mut root, &r.uid).await?;
        let name = self.name_of(c.slug.as_str());
        let mut ids = Vec::new();
        if approve {
            if p.suspended {
                return Err(Refusal::Suspended { uid: p.uid }.into());
            }
            let group = self.settings().tree.group(&c.slug, "members");
            let change = Change::Member {
                group: group.clone(),
                member: p.dn.clone(),
                added: true,
            };
            ids = self
                .federated(now, vec![change], async {
                    Ok(people::add_member(&mut root, &group, &p.dn).await?)
                })
                .await?
                .1;
        }
        let reason = reason.trim();
        let done = self
            .mailing(|s| {
                s.atomically(|s| {
                    s.outbox_release(&ids)?;
                    let state = if approve {
                        membership::JOIN_APPROVED
                    } else {
                        membership::JOIN_REJECTED
                    };
                    if !s.decide_join_request(id, state, reason, by, now)? {
                        return Err(StoreError::Conflict);
                    }
                    let (template, params) = if approve {
                        (
                            "join_approved",
                            json!({"name": p.display_name, "collective": name}),
                        )
                    } else {
                        (
                            "join_rejected",
                            json!({"name": p.display_name, "collective": name, "reason": reason}),
                        )
                    };
                    s.enqueue_mail(&p.mail, template, &p.language, &params.to_string(), now)?;
                    s.audit(
                        now,
                        by,
                        if approve {
                            "approve-join"
                        } else {
                            "reject-join"
                        },
                        &format!("request {id}: {} to {}", p.uid, c.slug),
                    )
                })
            })
            .map_err(|e| match e {
                OnboardingError::Store(StoreError::Conflict) => OnboardingError::Conflict,
                e => e,
            });
        self.wake_replay();
        done
    }

    // ---- invitations ---------------------------------------------------

    /// An admin invites an address to a collective: a person who has an
    /// account gets a link that makes them a member; anyone else a link to
    /// the registration form with the collective chosen. Inviting the same
    /// address again re-sends (the earlier link stops working).
    pub async fn invite(
        &self,
        email: &str,
        collective: &str,
        by: &str,
        now: i64,
    ) -> Result<i64, OnboardingError> {
        let email: Email = email
            .trim()
            .to_lowercase()
            .parse()
            .map_err(|e: crate::model::Invalid| invalid("email", e.0))?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, collective).await?;
        let existing =
            people::person_by_mail(&mut root, &self.settings().tree, email.as_str()).await?;
        if let Some(p) = &existing {
            membership::check_join(p, &c.slug)?;
        }
        let (plain, hash) = new_token(self.random);
        let name = self.name_of(c.slug.as_str());
        let expires = now + membership::INVITE_TTL_SECS;
        self.mailing(|s| {
            s.atomically(|s| {
                let id = s.insert_invitation(email.as_str(), c.slug.as_str(), by, expires, now)?;
                s.insert_invitation_token(&hash, id, expires)?;
                let (template, lang, params) = match &existing {
                    Some(p) => (
                        "invite_existing",
                        p.language.as_str(),
                        json!({"name": p.display_name, "collective": name, "by": by,
                            "link": self.link("join", &plain)}),
                    ),
                    None => (
                        "invite_new",
                        "en",
                        json!({"collective": name, "by": by,
                            "link": format!("{}&collective={}", self.link("register", &plain).replacen("?token=", "?invite=", 1), c.slug)}),
                    ),
                };
                s.enqueue_mail(email.as_str(), template, lang, &params.to_string(), now)?;
                s.audit(now, by, "invite", &format!("invitation {id}: {email} to {}", c.slug))?;
                Ok(id)
            })
        })
    }

    pub fn invitations(
        &self,
        collective: Option<&str>,
    ) -> Result<Vec<InvitationRow>, OnboardingError> {
        self.with_store(|s| s.invitations(collective))
    }

    /// The pending invitation behind a link, or `BadLink`.
    pub(super) fn invitation_for(
        &self,
        token: &str,
        now: i64,
    ) -> Result<InvitationRow, OnboardingError> {
        let hash = hash_token(token);
        let t = self
            .with_store(|s| s.peek_token(&hash, "invite", now))?
            .ok_or(OnboardingError::BadLink)?;
        let inv = self
            .with_store(|s| s.invitation(t.invitation_id.unwrap_or(-1)))?
            .ok_or(OnboardingError::BadLink)?;
        if inv.state != membership::JOIN_PENDING || inv.expires_at <= now {
            return Err(OnboardingError::BadLink);
        }
        Ok(inv)
    }

    /// What a link leads to, so that the page can say it.
    pub async fn invitation_info(
        &self,
        token: &str,
        now: i64,
    ) -> Result<InvitationInfo, OnboardingError> {
        let inv = self.invitation_for(token, now)?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, &inv.collective).await?;
        let has_account = people::person_by_mail(&mut root, &self.settings().tree, &inv.email)
            .await?
            .is_some();
        Ok(InvitationInfo {
            collective: c.slug.to_string(),
            collective_name: c.name,
            email: inv.email,
            has_account,
        })
    }

    /// The invited person (who has an account at the invited address)
    /// opened the link: they are now a member. Returns their uid.
    pub async fn accept_invitation(
        &self,
        token: &str,
        now: i64,
    ) -> Result<String, OnboardingError> {
        let inv = self.invitation_for(token, now)?;
        let mut root = self.root().await?;
        let c = self.existing_collective(&mut root, &inv.collective).await?;
        let p = people::person_by_mail(&mut root, &self.settings().tree, &inv.email)
            .await?
            .ok_or_else(|| {
                invalid(
                    "invite",
                    "this address has no account yet: register with this link first".into(),
                )
            })?;
        if p.suspended {
            return Err(Refusal::Suspended { uid: p.uid }.into());
        }
        let group = self.settings().tree.group(&c.slug, "members");
        let change = Change::Member {
            group: group.clone(),
            member: p.dn.clone(),
            added: true,
        };
        let (_, ids) = self
            .federated(now, vec![change], async {
                Ok(people::add_member(&mut root, &group, &p.dn).await?)
            })
            .await?;
        let hash = hash_token(token);
        let name = self.name_of(c.slug.as_str());
        self.mailing(|s| {
            s.atomically(|s| {
                s.outbox_release(&ids)?;
                if s.use_token(&hash, "invite", now)?.is_none()
                    || !s.accept_invitation(inv.id, &p.uid, now)?
                {
                    return Err(StoreError::Conflict);
                }
                let params = json!({"name": p.display_name, "collective": name});
                s.enqueue_mail(
                    &p.mail,
                    "join_approved",
                    &p.language,
                    &params.to_string(),
                    now,
                )?;
                s.audit(
                    now,
                    &p.uid,
                    "accept-invitation",
                    &format!("invitation {}: {}", inv.id, c.slug),
                )
            })
        })
        .map_err(|e| match e {
            OnboardingError::Store(StoreError::Conflict) => OnboardingError::BadLink,
            e => e,
        })?;
        self.wake_replay();
        Ok(p.uid)
    }

    // ---- forgotten password --------------------------------------------

    /// Mails a reset link to the person with this uid or address, if there
    /// is one and it is not suspended. The answer is the same either way, so
    /// nobody learns who has an account here; only the limits show.
    pub async fn forgot_password(
        &self,
        login: &str,
        ip: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let login = login.trim().to_lowercase();
        if login.is_empty() || login.len() > 254 {
            return Err(invalid(
                "login",
                "give your user name or your mail address".into(),
            ));
        }
        let net = super::ratelimit::address_key(ip);
        self.limit(&self.reset_per_ip, "this address", &net, now)?;
        let mut root = self.root().await?;
        let settings = self.settings();
        let tree = &settings.tree;
        let found = if login.contains('@') {
            people::person_by_mail(&mut root, tree, &login).await?
        } else {
            people::person(&mut root, tree, &login).await?
        };
        // Per account, whichever way it was named. Past the limit the
        // answer is the same and no mail goes: the links mailed in the last
        // hour are still in the owner's mailbox (they last 2 hours), so a
        // stranger asking for resets cannot keep them from one.
        let key = found.as_ref().map_or(login.as_str(), |p| p.uid.as_str());
        if self
            .limit(&self.reset_per_login, "this account", key, now)
            .is_err()
        {
            return Ok(());
        }
        let Some(p) = found.filter(|p| p.may_sign_in()) else {
            self.audit(
                now,
                "anonymous",
                "forgot-password",
                "no active account matched",
            )?;
            return Ok(());
        };
        let (plain, hash) = new_token(self.random);
        let link = self.link("set-password", &plain);
        let collective = self.home_name(&p);
        self.mailing(|s| {
            s.atomically(|s| {
                s.insert_token(&hash, "reset", None, &p.uid, now + membership::RESET_TTL_SECS)?;
                let params = json!({"name": p.display_name, "uid": p.uid, "collective": collective, "link": link});
                s.enqueue_mail(&p.mail, "reset_password", &p.language, &params.to_string(), now)?;
                s.audit(now, &p.uid, "forgot-password", "reset link mailed")
            })
        })
    }
}
