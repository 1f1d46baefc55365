//! The appliance's handle: what the console's pages, the API's handlers
//! and the reload share. It holds the config in force, the store, the
//! onboarding service (made once: a reload updates its settings in place,
//! so its rate limits survive), the link to the alliance, the metrics, the
//! event bus, and the readers of what each task reports for `status`.
//!
//! It starts nothing: the daemon starts the tasks and hands each the parts
//! it needs (never this handle). Locks are held only for short reads and
//! swaps, never across an await.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sd_notify::NotifyState;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigDiff};
use crate::docker::DockerObservation;
use crate::events::{Bus, Event};
use crate::federation::Link;
use crate::metrics::{Metrics, ResultLabels};
use crate::onboarding::service::{Onboarding, Settings};
use crate::status::{
    self, AppsObservation, ComponentState, DirectoryObservation, MailObservation, Observed,
    ReloadOutcome, Status,
};
use crate::store::{Store, StoreError};

/// Where each task reports what it observes (each writes its own).
pub struct Reports {
    pub docker: watch::Sender<DockerObservation>,
    pub directory: watch::Sender<DirectoryObservation>,
    pub mail: watch::Sender<MailObservation>,
    pub apps: watch::Sender<AppsObservation>,
}

/// The readers of [`Reports`], for `status` and the metrics.
#[derive(Clone)]
pub struct Observers {
    pub docker: watch::Receiver<DockerObservation>,
    pub directory: watch::Receiver<DirectoryObservation>,
    pub mail: watch::Receiver<MailObservation>,
    pub apps: watch::Receiver<AppsObservation>,
}

/// The report channels, each with what it says before its task runs.
pub fn reports() -> (Reports, Observers) {
    let (docker, docker_rx) = watch::channel(DockerObservation::NotYetProbed);
    let (directory, directory_rx) = watch::channel(DirectoryObservation::Starting);
    let (mail, mail_rx) = watch::channel(MailObservation::default());
    let (apps, apps_rx) = watch::channel(AppsObservation::Pending);
    (
        Reports {
            docker,
            directory,
            mail,
            apps,
        },
        Observers {
            docker: docker_rx,
            directory: directory_rx,
            mail: mail_rx,
            apps: apps_rx,
        },
    )
}

pub struct Appliance {
    started: Instant,
    started_at: OffsetDateTime,
    config_path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    last_reload: Mutex<Option<ReloadOutcome>>,
    observed: Observers,
    pub store: Arc<Mutex<Store>>,
    onboarding: Arc<Onboarding>,
    appliance_id: String,
    pub metrics: Arc<Metrics>,
    /// The link to the alliance, as the federation task sees it.
    pub federation: Arc<Link>,
    /// Where services announce what happened.
    pub events: Bus,
    clock: Arc<dyn Clock>,
}

impl Appliance {
    /// The handle for `config` (read from `config_path`), reading the
    /// tasks' reports through `observed`.
    pub fn new(
        config_path: PathBuf,
        config: Config,
        store: Arc<Mutex<Store>>,
        appliance_id: String,
        observed: Observers,
    ) -> Self {
        let events = Bus::new();
        let federation = Arc::new(Link::new(false));
        let onboarding = Onboarding::new(
            Settings::from_config(&config),
            store.clone(),
            crate::token::os_random,
        )
        .with_federation(federation.clone())
        .with_events(events.clone());
        Self {
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            config_path,
            config: watch::Sender::new(Arc::new(config)),
            last_reload: Mutex::new(None),
            observed,
            store,
            onboarding: Arc::new(onboarding),
            appliance_id,
            metrics: Arc::new(Metrics::new()),
            federation,
            events,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same handle reading the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Seconds since the epoch, by the appliance's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The onboarding service (one for the daemon's life).
    pub fn onboarding(&self) -> Arc<Onboarding> {
        self.onboarding.clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The config in force as the tasks follow it across reloads.
    pub fn live(&self) -> config::Live {
        config::Live::from(self.config.subscribe())
    }

    /// What the federation task and a join from the API work with.
    pub fn federation_parts(&self) -> crate::federation::task::Parts {
        crate::federation::task::Parts {
            config: self.live(),
            store: self.store.clone(),
            link: self.federation.clone(),
            events: self.events.clone(),
        }
    }

    /// This appliance's id (made once by the store's first migration).
    pub fn appliance_id(&self) -> &str {
        &self.appliance_id
    }

    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, String> {
        crate::store::with_store(&self.store, f).map_err(|e| e.to_string())
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
        let docker = self.observed.docker.borrow().clone();
        let mut components = vec![crate::status::Component {
            name: "daemon".into(),
            state: ComponentState::Ok,
            detail: format!("pid {}", std::process::id()),
        }];
        let directory = self.observed.directory.borrow().clone();
        let apps = self.observed.apps.borrow().clone();
        let mut mail = self.observed.mail.borrow().clone();
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
        let now = self.now();
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
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.uptime_seconds
            .set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        let up = matches!(
            *self.observed.docker.borrow(),
            DockerObservation::Reachable(_)
        );
        m.docker_up.set(i64::from(up));
        if let Ok(v) = self.with_store(|s| s.schema_version()) {
            m.store_schema_version.set(i64::try_from(v).unwrap_or(0));
        }
        if let Ok((queued, oldest)) = self.with_store(|s| s.outbox_depth()) {
            m.mail_queued.set(queued);
            let now = self.now();
            m.mail_oldest_queued_age_seconds
                .set(oldest.map_or(0, |t| (now - t).max(0)));
        }
        if let Ok(n) = self.with_store(|s| {
            s.count_registrations(crate::onboarding::machine::State::AwaitingValidation.as_str())
        }) {
            m.registrations_awaiting_validation.set(n);
        }
        let now = self.now();
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

    /// Audits what the daemon did.
    pub fn audit(&self, action: &str, detail: &str) {
        crate::store::audit_daemon(&self.store, action, detail);
    }

    /// Reads the config file again (SIGHUP, or the console after it changed
    /// the apps chosen). An invalid file is refused and the running config
    /// stays; `[paths]` cannot change under a running daemon. Otherwise the
    /// new config is put in force, the onboarding service's settings are
    /// updated in place when they changed, and the diff is announced
    /// ([`Event::ConfigReloaded`]): each task acts on what it reads.
    pub fn reload(&self) {
        crate::sys::notify_systemd(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading config"),
        ]);
        let at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let outcome = match config::load(&self.config_path) {
            Err(e) => {
                log::error!("config reload refused, keeping the running config: {e}");
                self.audit("reload-refused", &e.to_string());
                ReloadOutcome {
                    at,
                    applied: false,
                    message: e.to_string(),
                }
            }
            Ok(mut new) => {
                let old = self.config();
                let mut message = String::from("applied");
                if new.paths != old.paths {
                    // Moving the state or runtime dir under a running daemon
                    // would split its state; that takes a restart.
                    new.paths = old.paths.clone();
                    message = "applied, except [paths]: restart the daemon to move its directories"
                        .into();
                    log::warn!("{message}");
                }
                let diff = ConfigDiff::new(&old, &new);
                log::set_max_level(new.log.level.to_filter());
                if diff.onboarding() {
                    self.onboarding.update_settings(Settings::from_config(&new));
                }
                self.config.send_replace(Arc::new(new));
                self.events.publish(Event::ConfigReloaded(diff));
                self.audit("reload", &message);
                log::info!(
                    "config reloaded from {} (changed: {})",
                    self.config_path.display(),
                    if diff.is_empty() {
                        "nothing".to_owned()
                    } else {
                        diff.changed().join(", ")
                    }
                );
                ReloadOutcome {
                    at,
                    applied: true,
                    message,
                }
            }
        };
        self.metrics
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
        if let Ok(mut r) = self.last_reload.lock() {
            *r = Some(outcome);
        }
        crate::sys::notify_systemd(&[NotifyState::Ready, NotifyState::Status("running")]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn config_text(dir: &std::path::Path, name: &str) -> String {
        format!(
            "[collective]\nname = \"{name}\"\nslug = \"quimper\"\ndomain = \"quimper.example.org\"\nadmin_email = \"admin@quimper.example.org\"\n\
             [hardware]\nprofile = \"rpi5-8gb\"\n[apps]\nenabled = []\n\
             [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\nsecrets_dir = \"{0}/secrets\"\n",
            dir.display()
        )
    }

    fn appliance(dir: &std::path::Path) -> (Appliance, Arc<FakeClock>) {
        let path = dir.join("appliance.toml");
        std::fs::write(&path, config_text(dir, "Les Communs")).unwrap();
        let config = config::load(&path).unwrap();
        let store = Store::open(dir).unwrap();
        let id = store.appliance_id().unwrap();
        let clock = Arc::new(FakeClock::at(1_000));
        let (_reports, observed) = reports();
        let a = Appliance::new(path, config, Arc::new(Mutex::new(store)), id, observed)
            .with_clock(clock.clone());
        (a, clock)
    }

    /// The status reads the appliance's clock: an access change waiting
    /// for two minutes makes the component degraded.
    #[test]
    fn the_status_is_as_old_as_its_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let (a, clock) = appliance(dir.path());
        a.with_store(|s| {
            s.app_actions_enqueue(&[("discourse".into(), "{\"kind\":\"nope\"}".into())], 1_000)
        })
        .unwrap();
        let access = |a: &Appliance| {
            a.status()
                .components
                .into_iter()
                .find(|c| c.name == "app-access")
                .unwrap()
        };
        assert_eq!(access(&a).state, ComponentState::Ok);
        clock.advance(120);
        let c = access(&a);
        assert_eq!(c.state, ComponentState::Degraded, "{c:?}");
        assert!(c.detail.contains("the oldest for 120 s"), "{c:?}");
    }

    /// A reload keeps the onboarding service (and so its rate limits),
    /// updates its settings, and announces what changed; a broken file
    /// changes nothing and announces nothing.
    #[tokio::test]
    async fn a_reload_is_announced_as_a_diff_and_keeps_the_onboarding_service() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = appliance(dir.path());
        let mut heard = a.events.subscribe();
        let before = a.onboarding();
        let path = dir.path().join("appliance.toml");
        std::fs::write(&path, config_text(dir.path(), "Communs de Quimper")).unwrap();
        a.reload();
        let after = a.onboarding();
        assert!(Arc::ptr_eq(&before, &after), "the service was rebuilt");
        assert_eq!(after.settings().collective_name, "Communs de Quimper");
        assert_eq!(a.config().collective.name.to_string(), "Communs de Quimper");
        match heard.next(|e| matches!(e, Event::ConfigReloaded(_))).await {
            Some(Event::ConfigReloaded(d)) => assert_eq!(d.changed(), ["collective"]),
            other => panic!("{other:?}"),
        }

        std::fs::write(&path, "[collective]\nnope = 1\n").unwrap();
        a.reload();
        assert_eq!(a.config().collective.name.to_string(), "Communs de Quimper");
        let s = a.status();
        assert_eq!(s.last_reload.map(|r| r.applied), Some(false));
        let more = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            heard.next(|e| matches!(e, Event::ConfigReloaded(_))),
        )
        .await;
        assert!(more.is_err(), "a refused reload announced {more:?}");
    }
}
