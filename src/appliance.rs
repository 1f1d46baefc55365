//! The appliance's handle: what pages, API handlers and tasks share (the
//! config in force, the store, the onboarding service, what each task
//! last observed, the link to the alliance, the metrics), and the reload.
//! Locks are held only for short reads and swaps, never across an await.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use sd_notify::NotifyState;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

use crate::config::{self, Config};
use crate::metrics::{Metrics, ResultLabels};
use crate::onboarding::service::{Onboarding, Settings};
use crate::status::{
    self, ComponentState, DirectoryObservation, DockerObservation, Observed, ReloadOutcome, Status,
};
use crate::store::{Store, StoreError};

/// `meta` key holding the managed slapd settings last applied.
pub(crate) const DIRECTORY_CONFIG_KEY: &str = "directory_config";

/// State the tasks share. Locks are held only for short reads and swaps.
pub struct Appliance {
    pub(crate) started: Instant,
    pub(crate) started_at: OffsetDateTime,
    pub(crate) config_path: PathBuf,
    pub(crate) config: RwLock<Arc<Config>>,
    pub(crate) last_reload: Mutex<Option<ReloadOutcome>>,
    pub(crate) docker: RwLock<DockerObservation>,
    pub(crate) directory: RwLock<DirectoryObservation>,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) onboarding: RwLock<Arc<Onboarding>>,
    pub(crate) mail: RwLock<status::MailObservation>,
    /// Wakes the mail task: something was queued, or the config changed.
    pub mail_wakeup: Notify,
    pub(crate) appliance_id: String,
    pub metrics: Metrics,
    pub(crate) docker_wakeup: Notify,
    /// Tells the directory task the config was reloaded.
    pub(crate) directory_reload: Notify,
    pub(crate) apps: RwLock<status::AppsObservation>,
    /// Wakes the reconcile task: a reload, or a Docker event about ours.
    pub(crate) reconcile_wakeup: Notify,
    /// Tells the front-door task the config was reloaded.
    pub(crate) front_door_reload: Notify,
    /// The link to the alliance, as the federation task sees it.
    pub federation: Arc<crate::federation::Link>,
    /// Tells the federation task its settings changed (a join, a reload).
    pub(crate) federation_restart: Notify,
    /// Wakes the app-access task: access changes queued for the apps.
    pub app_access: Arc<Notify>,
}

/// The onboarding service for a config.
pub(crate) fn onboarding_for(
    config: &Config,
    store: Arc<Mutex<Store>>,
    link: Arc<crate::federation::Link>,
    app_access: Arc<Notify>,
) -> Onboarding {
    Onboarding::new(
        Settings::from_config(config),
        store,
        crate::onboarding::service::os_random,
    )
    .with_federation(link)
    .with_app_access(app_access)
}

impl Appliance {
    /// The onboarding service for the config in force.
    pub fn onboarding(&self) -> Arc<Onboarding> {
        self.onboarding
            .read()
            .map(|o| o.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, String> {
        let store = self
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        f(&store).map_err(|e| e.to_string())
    }

    /// Whether the state database answers.
    pub fn store_healthy(&self) -> Result<(), String> {
        self.with_store(|s| s.schema_version()).map(drop)
    }

    pub fn status(&self) -> Status {
        let config = self.config();
        let last_reload = self.last_reload.lock().ok().and_then(|r| r.clone());
        let refused = last_reload
            .as_ref()
            .filter(|r| !r.applied)
            .map(|r| r.message.clone());
        let docker = self
            .docker
            .read()
            .map(|d| d.clone())
            .unwrap_or(DockerObservation::NotYetProbed);
        let mut components = vec![crate::status::Component {
            name: "daemon".into(),
            state: ComponentState::Ok,
            detail: format!("pid {}", std::process::id()),
        }];
        let directory = self
            .directory
            .read()
            .map(|d| d.clone())
            .unwrap_or(DirectoryObservation::Starting);
        let apps = self.apps.read().map(|a| a.clone()).unwrap_or_default();
        let mut mail = self.mail.read().map(|m| m.clone()).unwrap_or_default();
        if let Ok((queued, oldest)) = self.with_store(|s| s.outbox_depth()) {
            mail.queued = queued;
            mail.oldest = oldest;
        }
        components.extend(status::components(
            &config,
            Observed {
                docker: &docker,
                directory: &directory,
                mail: &mail,
                apps: &apps,
                store: self.with_store(|s| s.schema_version()),
                last_reload_refused: refused.as_deref(),
            },
        ));
        let now = crate::clock::unix_now();
        if let Ok(f) = crate::federation::status(&self.store, &self.federation, now) {
            let obs = status::FederationObservation {
                enabled: f.link.enabled || f.enrolment.is_some(),
                up: f.link.up,
                refreshing: f.link.refreshing,
                last_error: f.link.last_error.clone(),
                pending: f.outbox.pending,
                oldest_age: f.outbox.oldest_pending_at.map(|t| (now - t).max(0)),
                failed: f.outbox.failed,
                conflicts: f.outbox.conflicts,
                refused: f.link.refused.clone(),
                hold: f.hold.as_ref().map(|h| status::HeldRefresh {
                    delete: h.hold.delete,
                    keep: h.hold.keep,
                    local_copy: h.hold.local_copy,
                    confirmed: h.hold.confirmed_at.is_some(),
                }),
            };
            components.extend(status::federation_component(&obs));
        }
        if let Ok(a) = self.with_store(|s| s.app_action_stats()) {
            components.extend(status::app_access_component(&a, now));
        }
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at: self.started_at.format(&Rfc3339).unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
            appliance_id: self.appliance_id.clone(),
            collective: config.collective.slug.to_string(),
            config_path: self.config_path.display().to_string(),
            components,
            last_reload,
        }
    }

    /// Gauges that are read rather than counted.
    /// Reloads the config (as SIGHUP does), e.g. after the console changed
    /// the apps chosen.
    pub fn reload(&self) {
        reload(self);
    }

    /// Asks the reconcile task to run now.
    pub fn reconcile_now(&self) {
        self.reconcile_wakeup.notify_one();
    }

    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.uptime_seconds
            .set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        let up = matches!(
            self.docker.read().as_deref(),
            Ok(DockerObservation::Reachable(_))
        );
        m.docker_up.set(i64::from(up));
        if let Ok(v) = self.with_store(|s| s.schema_version()) {
            m.store_schema_version.set(i64::try_from(v).unwrap_or(0));
        }
        if let Ok((queued, oldest)) = self.with_store(|s| s.outbox_depth()) {
            m.mail_queued.set(queued);
            let now = crate::clock::unix_now();
            m.mail_oldest_queued_age_seconds
                .set(oldest.map_or(0, |t| (now - t).max(0)));
        }
        if let Ok(n) = self.with_store(|s| {
            s.count_registrations(crate::onboarding::machine::State::AwaitingValidation.as_str())
        }) {
            m.registrations_awaiting_validation.set(n);
        }
        let now = crate::clock::unix_now();
        if let Ok(f) = crate::federation::status(&self.store, &self.federation, now) {
            let g = &m.federation;
            g.link_up.set(i64::from(f.link.up));
            g.last_contact_age_seconds
                .set(f.last_contact.map_or(0, |t| (now - t).max(0)));
            g.cookie_age_seconds.set(f.cookie_age_secs.unwrap_or(0));
            g.entries_in_scope.set(f.entries_in_scope);
            g.outbox_pending.set(f.outbox.pending);
            g.outbox_oldest_age_seconds
                .set(f.outbox.oldest_pending_at.map_or(0, |t| (now - t).max(0)));
            g.outbox_failed.set(f.outbox.failed);
            g.conflicts.set(f.outbox.conflicts);
            g.deletions_held.set(
                f.hold
                    .as_ref()
                    .filter(|h| h.hold.confirmed_at.is_none())
                    .map_or(0, |h| h.hold.delete),
            );
        }
    }

    pub(crate) fn remember_directory_config(&self, text: &str) {
        if let Err(e) = self.with_store(|s| s.set_meta(DIRECTORY_CONFIG_KEY, text)) {
            log::warn!("cannot record the directory's settings: {e}");
        }
    }

    pub(crate) fn audit(&self, action: &str, detail: &str) {
        let now = crate::clock::unix_now();
        if let Err(e) = self.with_store(|s| s.audit(now, "daemon", action, detail)) {
            log::warn!("cannot write audit entry {action}: {e}");
        }
    }
}

/// SIGHUP: read the config again; keep the old one if the new one is invalid.
pub fn reload(shared: &Appliance) {
    crate::sys::notify_systemd(&[
        NotifyState::Reloading,
        NotifyState::Status("reloading config"),
    ]);
    let at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let outcome = match config::load(&shared.config_path) {
        Err(e) => {
            log::error!("config reload refused, keeping the running config: {e}");
            shared.audit("reload-refused", &e.to_string());
            ReloadOutcome {
                at,
                applied: false,
                message: e.to_string(),
            }
        }
        Ok(mut new) => {
            let old = shared.config();
            let mut message = String::from("applied");
            if new.paths != old.paths {
                // Moving the state or runtime dir under a running daemon would
                // split its state; that takes a restart.
                new.paths = old.paths.clone();
                message =
                    "applied, except [paths]: restart the daemon to move its directories".into();
                log::warn!("{message}");
            }
            log::set_max_level(new.log.level.to_filter());
            let now = crate::clock::unix_now();
            if let Err(e) = shared.with_store(|s| s.mail_retry_now(now)) {
                log::warn!("cannot reschedule queued mail: {e}");
            }
            shared.reconcile_wakeup.notify_one();
            if let Ok(mut o) = shared.onboarding.write() {
                *o = Arc::new(onboarding_for(
                    &new,
                    shared.store.clone(),
                    shared.federation.clone(),
                    shared.app_access.clone(),
                ));
            }
            // An app enabled, a key fixed: what waits for the apps is tried
            // again at once.
            if let Err(e) = shared.with_store(|s| s.app_actions_due_now(now)) {
                log::warn!("cannot reschedule the apps' pending access changes: {e}");
            }
            shared.app_access.notify_one();
            let alliance_changed = old.alliance != new.alliance;
            if let Ok(mut c) = shared.config.write() {
                *c = Arc::new(new);
            }
            if alliance_changed {
                shared.federation_restart.notify_one();
            }
            shared.mail_wakeup.notify_one();
            shared.docker_wakeup.notify_one();
            shared.directory_reload.notify_one();
            shared.front_door_reload.notify_one();
            shared.audit("reload", &message);
            log::info!("config reloaded from {}", shared.config_path.display());
            ReloadOutcome {
                at,
                applied: true,
                message,
            }
        }
    };
    shared
        .metrics
        .config_reloads
        .get_or_create(&ResultLabels {
            result: if outcome.applied {
                "applied"
            } else {
                "refused"
            }
            .into(),
        })
        .inc();
    if let Ok(mut r) = shared.last_reload.lock() {
        *r = Some(outcome);
    }
    crate::sys::notify_systemd(&[NotifyState::Ready, NotifyState::Status("running")]);
}
