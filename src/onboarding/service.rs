//! The onboarding service: runs the state machine against the store, the
//! directory and the mail outbox. Every decision comes from [`super::machine`]
//! and [`super::validate`]; this file sequences IO so that nothing is
//! half-written: LDAP work comes first and is idempotent, then the request's
//! new state, its token and its mails are written in one SQLite transaction.

use std::sync::Mutex;

use serde_json::json;

use super::machine::{self, Clock, Effect, Event, MachineError, State};
use super::ratelimit::Limiter;
use super::validate::{self, FieldError, Form};
use crate::directory::people::{self, NewPerson};
use crate::directory::slapd::Paths;
use crate::directory::tree::Tree;
use crate::directory::{DirectoryError, ldap};
use crate::model::CollectiveSlug;
use crate::store::{NewRegistration, RegistrationRow, Store, StoreError};

/// Shortest password accepted, in characters (the directory's policy asks
/// for as many bytes: `directory::tree::MIN_PASSWORD`).
pub const MIN_PASSWORD: usize = crate::directory::tree::MIN_PASSWORD;

/// What a registration led to. Both answer the person the same way ("look
/// in your mailbox"), so nobody learns whether an address has an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new request, its verification link mailed.
    Request(i64),
    /// The address already has an account or a verified request: its
    /// owner was mailed what they have, and no request was made.
    OwnerTold,
}

impl Registered {
    /// The new request's id, if one was made.
    pub fn request(self) -> Option<i64> {
        match self {
            Registered::Request(id) => Some(id),
            Registered::OwnerTold => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("too many attempts from {what}: try again in {retry_after_secs} s")]
    RateLimited {
        what: &'static str,
        retry_after_secs: i64,
    },
    #[error("this link is not valid: it was already used, has expired, or was mistyped")]
    BadLink,
    #[error("no registration request {0}")]
    NotFound(i64),
    #[error("the request changed meanwhile (someone else decided it): reload and look again")]
    Conflict,
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Refused(#[from] super::membership::Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error(
        "{uid} is homed at {home}, which owns their {what}; that change goes through the alliance, which this box cannot reach now: try again later"
    )]
    AllianceDown {
        uid: String,
        home: String,
        what: &'static str,
    },
    #[error("{uid} is homed at {home}: their {what} can only be changed there")]
    HomedElsewhere {
        uid: String,
        home: String,
        what: &'static str,
    },
}

fn field(field: &'static str, message: impl Into<String>) -> OnboardingError {
    OnboardingError::Invalid(vec![FieldError {
        field,
        message: message.into(),
    }])
}

/// What the service needs to know about the appliance.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tree: Tree,
    pub ldap: Paths,
    /// The human name of this appliance's own collective, for mails when
    /// the directory cannot say (other collectives' names come from there).
    pub collective_name: String,
    /// `https://box.<domain>`: where links point.
    pub console_url: String,
    /// Also told of every request (the appliance's admin address).
    pub admin_email: String,
    /// This appliance's name as a home node.
    pub home_node: String,
}

impl Settings {
    /// The settings for an appliance's config.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let console = config.console_host().to_string();
        Settings {
            tree: Tree::new(config.suffix().as_str()),
            ldap: Paths::new(config),
            collective_name: config.collective.name.to_string(),
            console_url: config.console_url(),
            admin_email: config.collective.admin_email.to_string(),
            home_node: console,
        }
    }
}

// Tokens are made and hashed in one place for every link (`token`).
pub use crate::token::{Random, hash_token, new_token, os_random};

pub struct Onboarding {
    /// Updated in place by a reload ([`Onboarding::update_settings`]): the
    /// service and its rate limits live as long as the daemon.
    settings: std::sync::RwLock<Settings>,
    store: std::sync::Arc<Mutex<Store>>,
    pub(super) random: Random,
    per_ip: Mutex<Limiter>,
    per_email: Mutex<Limiter>,
    per_email_total: Mutex<Limiter>,
    pub(super) reset_per_ip: Mutex<Limiter>,
    pub(super) reset_per_login: Mutex<Limiter>,
    /// Collectives' human names as last read from the directory, for mails.
    names: Mutex<std::collections::HashMap<String, String>>,
    /// The link to the alliance, when federated.
    pub(super) link: Option<std::sync::Arc<crate::federation::Link>>,
    /// Where it announces what it did (mail queued, access changes for
    /// the apps, changes for the alliance, a collective created).
    events: crate::events::Bus,
}

impl Onboarding {
    pub fn new(settings: Settings, store: std::sync::Arc<Mutex<Store>>, random: Random) -> Self {
        Self {
            settings: std::sync::RwLock::new(settings),
            store,
            random,
            // A household or a school shares an IP: be generous there, strict
            // per address.
            per_ip: Mutex::new(Limiter::new(10, 3600)),
            // Mails to one address: 3 a day per client network, 10 a day
            // from all of them. A stranger needs several networks to keep
            // an address from registering, and then only for a day.
            per_email: Mutex::new(Limiter::new(3, 86_400)),
            per_email_total: Mutex::new(Limiter::new(10, 86_400)),
            reset_per_ip: Mutex::new(Limiter::new(10, 3600)),
            reset_per_login: Mutex::new(Limiter::new(3, 3600)),
            names: Mutex::new(Default::default()),
            link: None,
            events: crate::events::Bus::new(),
        }
    }

    /// Announces what it does on `events` (by default on a bus of its own,
    /// which nobody hears).
    pub fn with_events(mut self, events: crate::events::Bus) -> Self {
        self.events = events;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// New settings (a reload changed the config they come from). Nothing
    /// else changes: requests in flight finish with the settings they
    /// started with, and the rate limits keep counting.
    pub fn update_settings(&self, settings: Settings) {
        match self.settings.write() {
            Ok(mut s) => *s = settings,
            Err(p) => *p.into_inner() = settings,
        }
    }

    pub(super) fn announce(&self, event: crate::events::Event) {
        self.events.publish(event);
    }

    /// Federated: changes are queued for the alliance, and changes that
    /// need it are refused while it cannot be reached.
    pub fn with_federation(mut self, link: std::sync::Arc<crate::federation::Link>) -> Self {
        self.link = Some(link);
        self
    }

    /// Runs `write` (an LDAP change) with `changes` prepared in the outbox
    /// just before it: the caller releases the ids in the transaction that
    /// records the change; a failed write drops them. (A crash in between
    /// leaves them prepared; the next start hands them to the replay, which
    /// finds out whether the write happened.)
    pub(super) async fn federated<T>(
        &self,
        now: i64,
        changes: Vec<crate::federation::outbox::Change>,
        write: impl std::future::Future<Output = Result<T, OnboardingError>>,
    ) -> Result<(T, Vec<i64>), OnboardingError> {
        let ids = self.with_store(|s| crate::federation::outbox::prepare(s, now, &changes))?;
        match write.await {
            Ok(v) => Ok((v, ids)),
            Err(e) => {
                let _ = self.with_store(|s| s.outbox_discard(&ids));
                Err(e)
            }
        }
    }

    /// An entry's values of `attrs` before a change (the outbox's base).
    pub(super) async fn base_of(
        root: &mut ldap3::Ldap,
        dn: &str,
        attrs: &[&'static str],
    ) -> Result<Vec<(&'static str, Vec<String>)>, OnboardingError> {
        let found = crate::directory::alliance::read(root, dn, attrs).await?;
        let here = found.map(|(_, a)| a).unwrap_or_default();
        Ok(attrs
            .iter()
            .map(|k| {
                (
                    *k,
                    here.get(&k.to_ascii_lowercase())
                        .map(|v| v.iter().cloned().collect())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Tells the replay after a transaction that queued changes committed.
    pub(super) fn wake_replay(&self) {
        if self.link.is_some() {
            self.announce(crate::events::Event::FederationQueued);
        }
    }

    /// A change to `person`'s password or account state, which their home
    /// node owns: fine when that is us (or we are standalone); otherwise it
    /// must go through the alliance, refused while it is down.
    pub(super) fn check_home(
        &self,
        uid: &str,
        home: &str,
        what: &'static str,
    ) -> Result<(), OnboardingError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        if !link.is_enabled()
            || !crate::federation::rules::needs_alliance(home, &self.settings().home_node)
        {
            return Ok(());
        }
        if link.is_up() {
            Err(OnboardingError::HomedElsewhere {
                uid: uid.to_owned(),
                home: home.to_owned(),
                what,
            })
        } else {
            Err(OnboardingError::AllianceDown {
                uid: uid.to_owned(),
                home: home.to_owned(),
                what,
            })
        }
    }

    /// The collectives people may register with or join, from the
    /// directory (remembering their names for mails).
    pub(super) async fn known_collectives(
        &self,
        root: &mut ldap3::Ldap,
    ) -> Result<Vec<people::Collective>, OnboardingError> {
        let all = people::collectives(root, &self.settings().tree).await?;
        if let Ok(mut names) = self.names.lock() {
            for c in &all {
                let name = if c.name.is_empty() {
                    c.slug.to_string()
                } else {
                    c.name.clone()
                };
                names.insert(c.slug.to_string(), name);
            }
        }
        Ok(all)
    }

    /// A collective's human name for mails.
    pub(super) fn name_of(&self, slug: &str) -> String {
        self.names
            .lock()
            .ok()
            .and_then(|n| n.get(slug).cloned())
            .unwrap_or_else(|| self.settings().collective_name.clone())
    }

    pub(super) fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, OnboardingError> {
        let store = self
            .store
            .lock()
            .map_err(|_| OnboardingError::Store(StoreError::Poisoned))?;
        Ok(f(&store)?)
    }

    /// [`Self::with_store`] for a transaction that queues mail: once it
    /// committed, the mail task is told.
    pub(super) fn mailing<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, OnboardingError> {
        let done = self.with_store(f);
        if done.is_ok() {
            self.announce(crate::events::Event::MailQueued);
        }
        done
    }

    pub(super) fn limit(
        &self,
        limiter: &Mutex<Limiter>,
        what: &'static str,
        key: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let mut l = limiter
            .lock()
            .map_err(|_| OnboardingError::Store(StoreError::Poisoned))?;
        l.prune(now);
        l.hit(key, now)
            .map_err(|retry_after_secs| OnboardingError::RateLimited {
                what,
                retry_after_secs,
            })
    }

    pub(super) fn link(&self, path: &str, token: &str) -> String {
        format!(
            "{}/{path}?token={token}",
            self.settings().console_url.trim_end_matches('/')
        )
    }

    /// A new request: validated, rate-limited, checked against pending
    /// requests and the directory, stored with its verification token, and
    /// its mail queued. An address that already has an account or a
    /// verified request makes no request: its owner is mailed instead, and
    /// the answer is the same, so the form tells nobody which addresses
    /// have accounts. An unverified request holds no address.
    pub async fn register(
        &self,
        form: &Form,
        ip: &str,
        now: i64,
    ) -> Result<Registered, OnboardingError> {
        let net = super::ratelimit::address_key(ip);
        self.limit(&self.per_ip, "this address", &net, now)?;
        let mut root = ldap::connect_root(&self.settings().ldap).await?;
        // An invitation's link preselects its collective.
        let invitation = match form.invite.trim() {
            "" => None,
            token => Some(self.invitation_for(token, now)?),
        };
        let mut form = form.clone();
        if let Some(inv) = &invitation {
            form.collective = inv.collective.clone();
        }
        let collectives: Vec<CollectiveSlug> = self
            .known_collectives(&mut root)
            .await?
            .into_iter()
            .map(|c| c.slug)
            .collect();
        let r = validate::validate(&form, &collectives).map_err(OnboardingError::Invalid)?;
        let mail = r.email.as_str();
        self.limit(
            &self.per_email,
            "this mail address",
            &format!("{mail} {net}"),
            now,
        )?;
        self.limit(&self.per_email_total, "this mail address", mail, now)?;
        let uid_taken = || {
            field(
                "uid",
                format!("`{}` is already taken: choose another user name", r.uid),
            )
        };
        let held = self.with_store(|s| s.pending_holder(r.uid.as_str(), mail))?;
        if held == Some("uid") {
            return Err(uid_taken());
        }
        let taken = people::taken(&mut root, &self.settings().tree, r.uid.as_str(), mail).await?;
        if taken == Some("uid") {
            return Err(uid_taken());
        }
        if held.is_some() || taken.is_some() {
            self.tell_owner(&mut root, &r, now).await?;
            return Ok(Registered::OwnerTold);
        }
        // Invited at this very address: the invitation proved it.
        let invited = invitation
            .as_ref()
            .filter(|inv| inv.email.eq_ignore_ascii_case(r.email.as_str()));
        let t = if invited.is_some() {
            machine::register_invited(now)
        } else {
            machine::register(now)
        };
        let mut admins = Vec::new();
        if invited.is_some() {
            admins = self.admin_mails(&mut root, &r.collective).await?;
        }
        let (plain, hash) = new_token(self.random);
        let link = self.link("verify", &plain);
        let name = self.name_of(r.collective.as_str());
        let id = self.mailing(|s| {
            s.atomically(|s| {
                let id = s.insert_registration(
                    &NewRegistration {
                        uid: r.uid.as_str(),
                        email: r.email.as_str(),
                        display_name: &r.display_name,
                        collective: r.collective.as_str(),
                        message: &r.message,
                        language: r.language.as_str(),
                        state: t.state.as_str(),
                        expires_at: t.expires_at,
                    },
                    now,
                )?;
                if let Some(inv) = invited {
                    if !s.accept_invitation(inv.id, r.uid.as_str(), now)? {
                        return Err(StoreError::Conflict);
                    }
                    s.set_registration_invitation(id, inv.id)?;
                }
                if t.effects.contains(&Effect::MailVerifyLink) {
                    s.insert_token(
                        &hash,
                        "verify",
                        Some(id),
                        r.uid.as_str(),
                        t.expires_at.unwrap_or(now),
                    )?;
                    let params = json!({"name": r.display_name, "uid": r.uid.as_str(),
                        "collective": name, "link": link});
                    s.enqueue_mail(
                        r.email.as_str(),
                        "verify",
                        r.language.as_str(),
                        &params.to_string(),
                        now,
                    )?;
                }
                if t.effects.contains(&Effect::MailAdmins) {
                    let console = format!(
                        "{}/console/requests/{id}",
                        self.settings().console_url.trim_end_matches('/')
                    );
                    let params = json!({"name": r.display_name, "uid": r.uid.as_str(), "email": r.email.as_str(),
                        "collective": name, "message": r.message, "link": console});
                    for a in &admins {
                        s.enqueue_mail(a, "admins_new_request", "en", &params.to_string(), now)?;
                    }
                }
                let how = match invited {
                    Some(inv) => format!(" (invited by {}, address proven)", inv.invited_by),
                    None => String::new(),
                };
                s.audit(
                    now,
                    r.uid.as_str(),
                    "register",
                    &format!("request {id} for {}{how}", r.collective),
                )?;
                Ok(id)
            })
        });
        // Two registrations racing for one uid: the partial unique index
        // lets one through. (Or, invited at this address, another request
        // for it was verified meanwhile: the same answer as a taken uid.)
        id.map(Registered::Request).map_err(|e| match e {
            OnboardingError::Store(StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            }) if f.code == rusqlite::ErrorCode::ConstraintViolation => uid_taken(),
            OnboardingError::Store(StoreError::Conflict) => OnboardingError::BadLink,
            e => e,
        })
    }

    /// Someone registered with an address that has an account or a
    /// verified request: its owner is told what they already have (and
    /// how to sign in or reset their password), in their language.
    async fn tell_owner(
        &self,
        root: &mut ldap3::Ldap,
        r: &validate::Registration,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let mail = r.email.as_str();
        let settings = self.settings();
        let console = settings.console_url.trim_end_matches('/');
        let (template, language, params) =
            match people::person_by_mail(root, &self.settings().tree, mail).await? {
                Some(p) => (
                    "register_existing",
                    p.language.clone(),
                    json!({"name": p.display_name, "uid": p.uid,
                        "collective": self.home_name(&p), "link": format!("{console}/forgot")}),
                ),
                None => {
                    let pending = self.with_store(|s| s.pending_request_for(mail))?;
                    let (name, collective, language) = pending
                        .map(|q| (q.display_name, self.name_of(&q.collective), q.language))
                        .unwrap_or_else(|| {
                            (
                                String::new(),
                                self.settings().collective_name.clone(),
                                "en".into(),
                            )
                        });
                    (
                        "register_pending",
                        language,
                        json!({"name": name, "collective": collective,
                            "link": format!("{console}/login")}),
                    )
                }
            };
        self.mailing(|s| {
            s.atomically(|s| {
                s.enqueue_mail(mail, template, &language, &params.to_string(), now)?;
                s.audit(
                    now,
                    "anonymous",
                    "register-taken-address",
                    "a registration named an address that has an account or a verified request; its owner was mailed",
                )
            })
        })
    }

    /// Mail addresses of a collective's admins, plus the appliance's.
    pub(super) async fn admin_mails(
        &self,
        root: &mut ldap3::Ldap,
        slug: &CollectiveSlug,
    ) -> Result<Vec<String>, OnboardingError> {
        let mut admins = vec![self.settings().admin_email.clone()];
        let group = self.settings().tree.group(slug, "admins");
        admins.extend(people::member_mails(root, &self.settings().tree, &group).await?);
        admins.sort();
        admins.dedup();
        Ok(admins)
    }

    fn request(&self, id: i64) -> Result<RegistrationRow, OnboardingError> {
        self.with_store(|s| s.registration(id))?
            .ok_or(OnboardingError::NotFound(id))
    }

    fn state_of(r: &RegistrationRow) -> Result<State, OnboardingError> {
        State::parse(&r.state).ok_or_else(|| {
            OnboardingError::Store(StoreError::Corrupt(format!(
                "registration {} has state {}",
                r.id, r.state
            )))
        })
    }

    /// The person opened the verification link: the request now waits for
    /// the collective's admins, who are told.
    pub async fn verify_email(&self, token: &str, now: i64) -> Result<i64, OnboardingError> {
        let hash = hash_token(token);
        let used = self
            .with_store(|s| s.use_token(&hash, "verify", now))?
            .ok_or(OnboardingError::BadLink)?;
        let id = used.registration_id.ok_or(OnboardingError::BadLink)?;
        let r = self.request(id)?;
        let t = machine::apply(
            Self::state_of(&r)?,
            Clock {
                expires_at: r.expires_at,
            },
            &Event::VerifyEmail,
            now,
        )?;
        // Unverified requests hold no address: the first one verified takes
        // it, and a later one (or one for an address that got an account
        // meanwhile) stops here, told to its mailbox's owner.
        let address_taken = || {
            field(
                "email",
                "this mail address already has an account or a request waiting for the admins: sign in, or use \"forgot your password\"",
            )
        };
        let mut root = ldap::connect_root(&self.settings().ldap).await?;
        if people::person_by_mail(&mut root, &self.settings().tree, &r.email)
            .await?
            .is_some()
        {
            return Err(address_taken());
        }
        let admins = match r.collective.parse::<CollectiveSlug>() {
            Ok(slug) => {
                self.known_collectives(&mut root).await?;
                self.admin_mails(&mut root, &slug).await?
            }
            Err(_) => vec![self.settings().admin_email.clone()],
        };
        let console = format!(
            "{}/console/requests/{id}",
            self.settings().console_url.trim_end_matches('/')
        );
        self.mailing(|s| {
            s.atomically(|s| {
                if !s.transition(id, &r.state, t.state.as_str(), t.expires_at, "", "", now)? {
                    return Err(StoreError::Conflict);
                }
                if t.effects.contains(&Effect::MailAdmins) {
                    let params = json!({"name": r.display_name, "uid": r.uid, "email": r.email,
                        "collective": self.name_of(&r.collective), "message": r.message, "link": console});
                    for a in &admins {
                        s.enqueue_mail(a, "admins_new_request", "en", &params.to_string(), now)?;
                    }
                }
                s.audit(now, &r.uid, "verify-email", &format!("request {id}"))
            })
        })
        .map_err(|e| match e {
            OnboardingError::Store(StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            }) if f.code == rusqlite::ErrorCode::ConstraintViolation => address_taken(),
            e => conflict(e),
        })?;
        Ok(id)
    }

    /// An admin approved: the entry is created (with membership of the
    /// collective's members group), then the request moves on and the
    /// set-password link is mailed.
    pub async fn approve(&self, id: i64, by: &str, now: i64) -> Result<(), OnboardingError> {
        let r = self.request(id)?;
        let t = machine::apply(
            Self::state_of(&r)?,
            Clock {
                expires_at: r.expires_at,
            },
            &Event::Approve { by: by.into() },
            now,
        )?;
        let slug: CollectiveSlug = r.collective.parse().map_err(|_| {
            OnboardingError::Store(StoreError::Corrupt(format!(
                "registration {id}: collective {}",
                r.collective
            )))
        })?;
        let settings = self.settings();
        let tree = &settings.tree;
        let mut root = ldap::connect_root(&settings.ldap).await?;
        let collective_dn = tree.collective(&slug);
        let members = tree.group(&slug, "members");
        use crate::federation::outbox::Change;
        let changes = vec![
            Change::Add {
                dn: tree.person(&r.uid),
            },
            Change::Member {
                group: members.clone(),
                member: tree.person(&r.uid),
                added: true,
            },
        ];
        let (_, ids) = self
            .federated(now, changes, async {
                let dn = people::create_person(
                    &mut root,
                    tree,
                    &NewPerson {
                        uid: &r.uid,
                        display_name: &r.display_name,
                        mail: &r.email,
                        language: &r.language,
                        collective_dn: &collective_dn,
                        home_node: &settings.home_node,
                    },
                )
                .await?;
                people::add_member(&mut root, &members, &dn).await?;
                Ok(dn)
            })
            .await?;
        let (plain, hash) = new_token(self.random);
        let link = self.link("set-password", &plain);
        self.mailing(|s| {
            s.atomically(|s| {
                if !s.transition(id, &r.state, t.state.as_str(), t.expires_at, "", by, now)? {
                    return Err(StoreError::Conflict);
                }
                s.insert_token(
                    &hash,
                    "set_password",
                    Some(id),
                    &r.uid,
                    now + machine::LINK_TTL_SECS,
                )?;
                let params = json!({"name": r.display_name, "uid": r.uid,
                    "collective": self.name_of(&r.collective), "link": link});
                s.enqueue_mail(
                    &r.email,
                    "set_password",
                    &r.language,
                    &params.to_string(),
                    now,
                )?;
                s.outbox_release(&ids)?;
                s.audit(now, by, "approve", &format!("request {id}: {}", r.uid))
            })
        })
        .map_err(conflict)?;
        self.wake_replay();
        Ok(())
    }

    /// An admin rejected, with a reason that is mailed to the person.
    pub async fn reject(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), OnboardingError> {
        let r = self.request(id)?;
        let ev = Event::Reject {
            by: by.into(),
            reason: reason.into(),
        };
        let t = machine::apply(
            Self::state_of(&r)?,
            Clock {
                expires_at: r.expires_at,
            },
            &ev,
            now,
        )?;
        let reason = reason.trim();
        self.mailing(|s| {
            s.atomically(|s| {
                if !s.transition(id, &r.state, t.state.as_str(), t.expires_at, reason, by, now)? {
                    return Err(StoreError::Conflict);
                }
                let params = json!({"name": r.display_name, "collective": self.name_of(&r.collective), "reason": reason});
                s.enqueue_mail(&r.email, "rejected", &r.language, &params.to_string(), now)?;
                s.audit(now, by, "reject", &format!("request {id}: {reason}"))
            })
        })
        .map_err(conflict)
    }

    /// The person chose a password through the mailed link. slapd hashes it
    /// (Password Modify); the token is spent only once that worked, and
    /// every console session of theirs ends with it.
    pub async fn set_password(
        &self,
        token: &str,
        password: &str,
        now: i64,
    ) -> Result<String, OnboardingError> {
        if password.chars().count() < MIN_PASSWORD {
            return Err(field(
                "password",
                format!("use at least {MIN_PASSWORD} characters"),
            ));
        }
        let hash = hash_token(token);
        // The first password (after approval) or a reset.
        let (purpose, peek) = match self.with_store(|s| s.peek_token(&hash, "set_password", now))? {
            Some(p) => ("set_password", p),
            None => (
                "reset",
                self.with_store(|s| s.peek_token(&hash, "reset", now))?
                    .ok_or(OnboardingError::BadLink)?,
            ),
        };
        let mut root = ldap::connect_root(&self.settings().ldap).await?;
        let person = people::person(&mut root, &self.settings().tree, &peek.uid)
            .await?
            .ok_or(OnboardingError::BadLink)?;
        if person.suspended {
            return Err(super::membership::Refusal::Suspended { uid: person.uid }.into());
        }
        self.check_home(&person.uid, &person.home_node, "password")?;
        let base = Self::base_of(&mut root, &person.dn, &["userPassword"]).await?;
        let change = crate::federation::outbox::Change::attrs(&person.dn, &base);
        let (_, ids) = self
            .federated(now, vec![change], async {
                Ok(ldap::set_password(&mut root, &person.dn, password).await?)
            })
            .await?;
        self.with_store(|s| {
            s.atomically(|s| {
                if s.use_token(&hash, purpose, now)?.is_none() {
                    return Err(StoreError::Conflict);
                }
                s.outbox_release(&ids)?;
                if let Some(id) = peek.registration_id
                    && let Some(r) = s.registration(id)?
                    && r.state == State::Approved.as_str()
                {
                    s.transition(id, &r.state, State::Active.as_str(), None, "", "", now)?;
                }
                // Whoever had a session with the old password loses it.
                s.delete_sessions_of(&peek.uid)?;
                s.audit(
                    now,
                    &peek.uid,
                    if purpose == "reset" {
                        "reset-password"
                    } else {
                        "set-password"
                    },
                    "",
                )
            })
        })
        .map_err(conflict)?;
        self.wake_replay();
        Ok(peek.uid)
    }

    /// Expires what timed out, releasing uids. Returns how many.
    pub fn expire_due(&self, now: i64) -> Result<usize, OnboardingError> {
        let timed = self.with_store(|s| s.timed_registrations())?;
        let input: Vec<(i64, State, Clock)> = timed
            .iter()
            .filter_map(|(id, st, exp)| Some((*id, State::parse(st)?, Clock { expires_at: *exp })))
            .collect();
        self.with_store(|s| s.expire_invitations(now))?;
        let due = machine::due_for_expiry(&input, now);
        for id in &due {
            if let Some((_, st, _)) = input.iter().find(|(i, _, _)| i == id) {
                self.with_store(|s| {
                    s.atomically(|s| {
                        if s.transition(
                            *id,
                            st.as_str(),
                            State::Expired.as_str(),
                            None,
                            "",
                            "",
                            now,
                        )? {
                            s.audit(now, "daemon", "expire", &format!("request {id}"))?;
                        }
                        Ok(())
                    })
                })?;
            }
        }
        Ok(due.len())
    }
}

fn conflict(e: OnboardingError) -> OnboardingError {
    match e {
        OnboardingError::Store(StoreError::Conflict) => OnboardingError::Conflict,
        e => e,
    }
}
