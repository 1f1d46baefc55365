//! The daemon's federation task and the join it performs for the CLI: the
//! settings come from the store's enrolment (made by `alliance join`) or
//! from the config's `[alliance]` section, which enrols at start.

use crate::clock::unix_now;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::appliance::Appliance;
use crate::config::Config;
use crate::directory::{alliance, ldap, slapd};
use crate::federation::join::{self, Check, PushPlan};
use crate::federation::rules::Suffixes;
use crate::federation::{self, FederationError, Settings};
use crate::status::DirectoryObservation;

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
        console_url: crate::onboarding::service::Settings::from_config(config).console_url,
        collective_name: config.collective.name.to_string(),
        ca_file,
        starttls: starttls || a.is_some_and(|a| a.starttls),
        insecure: a.is_some_and(|a| a.insecure),
        deletion_limits: a.map(|a| a.deletion_limits()).unwrap_or_default(),
    }
}

/// The settings in force: the config's `[alliance]` first (and whether it
/// still has to be enrolled), else the store's enrolment.
fn current(shared: &Appliance) -> Result<Option<(Settings, bool)>, String> {
    let config = shared.config();
    let enrolment = shared.with_store(|s| s.enrolment())?;
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

async fn directory_ready(shared: &Appliance) {
    loop {
        let ready = shared
            .directory
            .read()
            .is_ok_and(|d| matches!(*d, DirectoryObservation::Running { .. }));
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs federation while it is configured; a join or a reload starts it
/// again with the new settings.
pub async fn run(shared: Arc<Appliance>, token: CancellationToken) {
    let link = shared.federation.clone();
    loop {
        let settings = match current(&shared) {
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
                _ = shared.federation_restart.notified() => continue,
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
                _ = shared.federation_restart.notified() => continue,
            }
        }
        link.update(|s| s.refused = None);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = directory_ready(&shared) => {}
        }
        if enrol {
            match join_with(&shared, &settings, false).await {
                Ok(a) if a.joined => {}
                Ok(a) => {
                    let failed = a.checks.iter().find(|c| !c.ok).map(|c| c.message.clone());
                    let e = failed.unwrap_or_else(|| "joining the alliance failed".into());
                    link.set_up(false, unix_now(), Some(e.clone()));
                    log::warn!(task = "federation"; "alliance (config): {e}");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = shared.federation_restart.notified() => {}
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
            _ = shared.federation_restart.notified() => {
                log::info!(task = "federation"; "federation settings changed; reconnecting");
            }
            () = federation::sync::run(settings, shared.store.clone(), link.clone()) => {}
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

pub async fn join(shared: &Appliance, req: JoinRequest) -> Result<JoinAnswer, FederationError> {
    let config = shared.config();
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
    let answer = join_with(shared, &settings, req.dry_run).await?;
    if answer.joined {
        shared.federation_restart.notify_one();
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
    shared: &Appliance,
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
    let config = shared.config();
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
        let store = shared
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
    shared.audit(
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
