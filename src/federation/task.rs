//! The `federation` task and the join it performs for the CLI: the
//! settings come from the store's enrolment (made by `alliance join`) or
//! from the config's `[alliance]` section, which enrols at start. It hears
//! on the bus when they may have changed (a reload of `[alliance]`, a
//! join) and starts again with them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::config::{Config, Live};
use crate::directory::{alliance, ldap, slapd};
use crate::events::{Bus, Event, Subscriber};
use crate::federation::join::{self, Check, PushPlan};
use crate::federation::rules::Suffixes;
use crate::federation::{self, FederationError, Link, Settings};
use crate::status::DirectoryObservation;
use crate::store::{Store, audit_daemon, with_store};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn password_path(config: &Config) -> std::path::PathBuf {
    config.paths.secrets_dir.join(federation::PASSWORD_FILE)
}

/// The settings for a link to `url`; how it is kept safe (`insecure`, the
/// deletion limits) comes from `[alliance]`, whichever way the box joined.
fn settings_for(
    config: &Config,
    url: String,
    bind_dn: String,
    password: String,
    alliance_suffix: String,
    ca_file: Option<std::path::PathBuf>,
    starttls: bool,
) -> Settings {
    let a = config.alliance.as_ref();
    Settings {
        url,
        bind_dn,
        password,
        suffixes: Suffixes::new(config.suffix().as_str(), &alliance_suffix),
        collective: config.collective.slug.clone(),
        node: config.console_host().to_string(),
        local: slapd::Paths::new(config),
        connect_timeout: CONNECT_TIMEOUT,
        console_url: config.console_url(),
        collective_name: config.collective.name.to_string(),
        ca_file,
        starttls: starttls || a.is_some_and(|a| a.starttls),
        insecure: a.is_some_and(|a| a.insecure),
        deletion_limits: a.map(|a| a.deletion_limits()).unwrap_or_default(),
    }
}

/// The settings in force: the config's `[alliance]` first (and whether it
/// still has to be enrolled), else the store's enrolment.
fn current(parts: &Parts) -> Result<Option<(Settings, bool)>, String> {
    let config = parts.config.get();
    let enrolment = with_store(&parts.store, |s| s.enrolment()).map_err(|e| e.to_string())?;
    if let Some(a) = &config.alliance
        && let Some(named) = a.enrolment()
    {
        let password = match (&a.bind_password, &a.bind_password_file) {
            (Some(p), _) => p.expose().to_owned(),
            (None, Some(f)) => federation::read_password(f).map_err(|e| e.to_string())?,
            (None, None) => {
                return Err(
                    "alliance: set bind_password_file (or bind_password) in the config".into(),
                );
            }
        };
        let s = settings_for(
            &config,
            named.directory.to_string(),
            named.bind_dn.to_string(),
            password,
            named.suffix.to_string(),
            a.ca_file.as_ref().map(|p| p.to_path_buf()),
            a.starttls,
        );
        let enrolled = enrolment.is_some_and(|e| {
            e.url == s.url && e.bind_dn == s.bind_dn && e.suffix == s.suffixes.alliance
        });
        return Ok(Some((s, !enrolled)));
    }
    let Some(e) = enrolment else {
        return Ok(None);
    };
    let password = federation::read_password(&password_path(&config)).map_err(|e| e.to_string())?;
    let ca = e.ca_file.map(std::path::PathBuf::from).or_else(|| {
        config
            .alliance
            .as_ref()
            .and_then(|a| a.ca_file.as_ref().map(|p| p.to_path_buf()))
    });
    Ok(Some((
        settings_for(
            &config, e.url, e.bind_dn, password, e.suffix, ca, e.starttls,
        ),
        false,
    )))
}

/// What the federation task and a join work with.
#[derive(Clone)]
pub struct Parts {
    pub config: Live,
    pub store: Arc<Mutex<Store>>,
    /// The link's state, shared with status, the console and onboarding.
    pub link: Arc<Link>,
    pub events: Bus,
}

/// Until federation's settings may have changed: a reload that changed
/// `[alliance]`, a join (or events missed, which may have been either).
async fn settings_changed(heard: &mut Subscriber) {
    heard
        .next(|e| match e {
            Event::ConfigReloaded(d) => d.alliance,
            e => *e == Event::AllianceJoined,
        })
        .await;
}

/// Runs federation while it is configured; a join or a reload of
/// `[alliance]` starts it again with the new settings. It waits for slapd
/// (`directory`) before it connects.
pub async fn run(
    parts: Parts,
    mut directory: watch::Receiver<DirectoryObservation>,
    token: CancellationToken,
) {
    let link = parts.link.clone();
    let mut heard = parts.events.subscribe();
    loop {
        let settings = match current(&parts) {
            Ok(s) => s,
            Err(e) => {
                link.update(|s| {
                    s.enabled = true;
                    s.up = false;
                    s.last_error = Some(e.clone());
                });
                log::warn!(task = "federation"; "{e}");
                None
            }
        };
        let Some((settings, enrol)) = settings else {
            if link.state().last_error.is_none() {
                link.update(|s| s.enabled = false);
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = settings_changed(&mut heard) => continue,
                _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
            }
        };
        link.update(|s| s.enabled = true);
        if let Err(e) = settings.security() {
            // Refused until the config (or the enrolment) changes.
            log::warn!(task = "federation"; "{e}");
            link.update(|s| {
                s.up = false;
                s.refused = Some(e.to_string());
                s.last_error = Some(e.to_string());
            });
            tokio::select! {
                _ = token.cancelled() => return,
                _ = settings_changed(&mut heard) => continue,
            }
        }
        link.update(|s| s.refused = None);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = directory.wait_for(|d| matches!(d, DirectoryObservation::Running { .. })) => {}
        }
        if enrol {
            match join_with(&parts, &settings, false).await {
                Ok(a) if a.joined => {}
                Ok(a) => {
                    let failed = a.checks.iter().find(|c| !c.ok).map(|c| c.message.clone());
                    let e = failed.unwrap_or_else(|| "joining the alliance failed".into());
                    link.set_up(false, unix_now(), Some(e.clone()));
                    log::warn!(task = "federation"; "alliance (config): {e}");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = settings_changed(&mut heard) => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    continue;
                }
                Err(e) => {
                    link.set_up(false, unix_now(), Some(e.to_string()));
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = settings_changed(&mut heard) => {
                log::info!(task = "federation"; "federation settings changed; reconnecting");
            }
            () = federation::sync::run(settings, parts.store.clone(), link.clone(), parts.events.clone()) => {}
        }
    }
}

/// What a join answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinAnswer {
    pub checks: Vec<Check>,
    pub plan: Option<PushPlan>,
    pub joined: bool,
    pub dry_run: bool,
}

/// A join asked for by the CLI.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JoinRequest {
    pub url: String,
    pub bind_dn: String,
    pub password: String,
    /// The alliance's suffix; by default the one the alliance serves.
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// The CA the alliance's certificate chains to (absolute).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Upgrade an `ldap://` URL with StartTLS.
    #[serde(default)]
    pub starttls: bool,
}

/// Joins the alliance for the CLI (`POST /v1/alliance/join`); a join that
/// enrolled is announced ([`Event::AllianceJoined`]), so the federation
/// task starts with it.
pub async fn join(parts: &Parts, req: JoinRequest) -> Result<JoinAnswer, FederationError> {
    let config = parts.config.get();
    let mut settings = settings_for(
        &config,
        req.url,
        req.bind_dn,
        req.password,
        req.suffix.clone().unwrap_or_default(),
        req.ca_file,
        req.starttls,
    );
    if req.suffix.is_none() {
        match served_suffix(&settings).await {
            Ok(s) => settings.suffixes = Suffixes::new(config.suffix().as_str(), &s),
            Err(e) => {
                let name = if matches!(e, FederationError::Check(_)) {
                    "suffix"
                } else {
                    "link"
                };
                return Ok(JoinAnswer {
                    checks: vec![Check {
                        name,
                        ok: false,
                        message: e.to_string(),
                    }],
                    plan: None,
                    joined: false,
                    dry_run: req.dry_run,
                });
            }
        }
    }
    let answer = join_with(parts, &settings, req.dry_run).await?;
    if answer.joined {
        parts.events.publish(Event::AllianceJoined);
    }
    Ok(answer)
}

/// The alliance's naming context, when the CLI gave none.
async fn served_suffix(settings: &Settings) -> Result<String, FederationError> {
    let mut remote = settings.connect().await?;
    let contexts = alliance::read(&mut remote, "", &["namingContexts"])
        .await?
        .and_then(|(_, a)| a.get("namingcontexts").cloned())
        .unwrap_or_default();
    let mut it = contexts.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(FederationError::Check(
            "the alliance does not name one suffix: give it with --suffix".into(),
        )),
    }
}

async fn join_with(
    parts: &Parts,
    settings: &Settings,
    dry_run: bool,
) -> Result<JoinAnswer, FederationError> {
    let (checks, remote) = join::check(settings).await;
    let Some(mut remote) = remote else {
        return Ok(JoinAnswer {
            checks,
            plan: None,
            joined: false,
            dry_run,
        });
    };
    let config = parts.config.get();
    let mut local = ldap::connect_root(&slapd::Paths::new(&config)).await?;
    let plan = join::plan_push(settings, &mut local, &mut remote).await?;
    if dry_run {
        return Ok(JoinAnswer {
            checks,
            plan: Some(plan),
            joined: false,
            dry_run,
        });
    }
    let members = join::memberships(&mut local, &settings.suffixes, settings).await?;
    {
        let store = parts
            .store
            .lock()
            .map_err(|_| FederationError::Task("the store lock is poisoned".into()))?;
        join::enrol(
            &store,
            settings,
            &plan,
            &members,
            &password_path(&config),
            unix_now(),
        )?;
    }
    audit_daemon(
        &parts.store,
        "alliance-join",
        &format!(
            "joined {} as {}: {} entries to add, {} present, {} collisions",
            settings.url,
            settings.bind_dn,
            plan.add.len(),
            plan.present.len(),
            plan.collisions.len()
        ),
    );
    log::info!(task = "federation"; "joined the alliance at {}", settings.url);
    Ok(JoinAnswer {
        checks,
        plan: Some(plan),
        joined: true,
        dry_run,
    })
}
