//! What each component's state is, from what the daemon observed, and the
//! status document the local API serves (`api` re-exports it: it is part
//! of the API's contract, so fields are only ever added). Pure.

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_seconds: u64,
    pub appliance_id: String,
    pub collective: String,
    pub config_path: String,
    pub components: Vec<Component>,
    /// The most recent reload, if any happened.
    pub last_reload: Option<ReloadOutcome>,
}

/// One part of the appliance and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub state: ComponentState,
    /// What it is doing, or why it is not, and what to do about it.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    /// Working.
    Ok,
    /// Working, but something needs attention.
    Degraded,
    /// Not working.
    Down,
    /// Not running yet, for the reason in `detail`.
    Waiting,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Ok => "ok",
            ComponentState::Degraded => "degraded",
            ComponentState::Down => "down",
            ComponentState::Waiting => "waiting",
        }
    }
}

/// The result of a SIGHUP reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// RFC 3339, UTC.
    pub at: String,
    pub applied: bool,
    /// Why the new config was refused, or what could not apply live.
    pub message: String,
}

// The probe's result is `docker`'s (its `docker-probe` task reports it).
pub use crate::docker::DockerObservation;

/// What the reconcile task last saw or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AppsObservation {
    /// No reconcile has run yet.
    #[default]
    Pending,
    /// A run is going on; the step it is at.
    Reconciling { step: String },
    /// The last run left everything as the config wants it.
    Converged,
    /// The last run stopped at a step.
    Failed {
        app: String,
        step: String,
        cause: String,
    },
    /// The config asks for what cannot run (does not fit, no image).
    Refused(String),
}

/// Oldest Docker API this appliance supports (Debian's docker.io 20.10).
pub const MIN_DOCKER_API: (u32, u32) = (1, 41);

/// Parses "1.41" into (1, 41).
pub fn api_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The local slapd, as the directory task last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryObservation {
    Starting,
    Running {
        pid: i32,
        /// Found running at start (a daemon restart) rather than started.
        adopted: bool,
        restarts: u32,
    },
    Failed {
        error: String,
        restarts: u32,
        retry_in_secs: u64,
    },
}

/// Delay before restarting slapd after `failures` consecutive failures:
/// 0.5 s doubling to at most 30 s, so a crash is fixed fast and a broken
/// config does not spin.
pub fn restart_delay(failures: u32) -> std::time::Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    std::time::Duration::from_millis(ms.min(30_000))
}

/// The mail sender and its queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailObservation {
    pub configured: bool,
    pub queued: i64,
    /// Creation time of the oldest unsent mail.
    pub oldest: Option<i64>,
    pub sent: u64,
    pub last_error: Option<String>,
}

/// What the daemon observed, for [`components`].
#[derive(Debug)]
pub struct Observed<'a> {
    pub docker: &'a DockerObservation,
    pub directory: &'a DirectoryObservation,
    pub mail: &'a MailObservation,
    pub apps: &'a AppsObservation,
    pub store: Result<usize, String>,
    pub last_reload_refused: Option<&'a str>,
}

/// Federation as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationObservation {
    pub enabled: bool,
    pub up: bool,
    pub refreshing: bool,
    pub last_error: Option<String>,
    pub pending: i64,
    /// Seconds the oldest waiting change has waited.
    pub oldest_age: Option<i64>,
    pub failed: i64,
    pub conflicts: i64,
    /// Why the daemon will not make the link at all (what to change).
    pub refused: Option<String>,
    /// A refresh's deletions held for an admin.
    pub hold: Option<HeldRefresh>,
}

/// A held refresh, in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldRefresh {
    pub delete: i64,
    pub keep: i64,
    pub local_copy: i64,
    pub confirmed: bool,
}

/// The `federation` component; none on a standalone box.
pub fn federation_component(f: &FederationObservation) -> Option<Component> {
    if !f.enabled {
        return None;
    }
    if let Some(why) = &f.refused {
        return Some(Component {
            name: "federation".into(),
            state: ComponentState::Down,
            detail: format!(
                "the link to the alliance is refused: {why}. Logins and local work go on from the local directory"
            ),
        });
    }
    if let Some(h) = f.hold.as_ref().filter(|h| !h.confirmed) {
        return Some(Component {
            name: "federation".into(),
            state: ComponentState::Degraded,
            detail: format!(
                "the alliance's last refresh would delete {} of the {} entries copied here ({} of them people homed here or this box's collective, which stay): nothing was deleted, and the alliance's changes wait. Check the alliance, then run `commonscloud alliance confirm-deletions`",
                h.delete + h.keep,
                h.local_copy,
                h.keep
            ),
        });
    }
    let waiting = match (f.pending, f.oldest_age) {
        (0, _) => "nothing waits for the alliance".to_owned(),
        (n, Some(age)) => format!("{n} change(s) wait for the alliance, the oldest for {age} s"),
        (n, None) => format!("{n} change(s) wait for the alliance"),
    };
    let mut notes = Vec::new();
    if f.failed > 0 {
        notes.push(format!("{} refused", f.failed));
    }
    if f.conflicts > 0 {
        notes.push(format!("{} conflict(s) settled", f.conflicts));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(
            " ({}; see `commonscloud alliance status`)",
            notes.join(", ")
        )
    };
    let (state, detail) = if f.up {
        let what = if f.refreshing {
            "linked, copying the alliance's entries"
        } else {
            "linked"
        };
        let state = if f.failed > 0 {
            ComponentState::Degraded
        } else {
            ComponentState::Ok
        };
        (state, format!("{what}; {waiting}{notes}"))
    } else {
        (
            ComponentState::Degraded,
            format!(
                "the alliance cannot be reached{}: logins and local work go on from the local directory; {waiting}{notes}",
                f.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        )
    };
    Some(Component {
        name: "federation".into(),
        state,
        detail,
    })
}

/// What waits to be told to the apps about people's access (suspensions,
/// reactivations, removals): shown only while something waits or failed.
/// Degraded once a change has waited over a minute (an app down, or its
/// API key not made) or one was given up.
pub fn app_access_component(s: &crate::store::AppActionStats, now: i64) -> Option<Component> {
    if s.pending == 0 && s.failed == 0 {
        return None;
    }
    let age = s.oldest_pending_at.map_or(0, |t| (now - t).max(0));
    let mut detail = format!("{} access change(s) waiting for the apps", s.pending);
    if s.pending > 0 {
        detail.push_str(&format!(", the oldest for {age} s"));
    }
    if let Some(e) = &s.last_error {
        detail.push_str(&format!(" (last try: {e})"));
    }
    if s.failed > 0 {
        detail.push_str(&format!(
            "; {} could not be applied: see the audit log (app-access-failed)",
            s.failed
        ));
    }
    let state = if s.failed > 0 || age > 60 {
        ComponentState::Degraded
    } else {
        ComponentState::Ok
    };
    Some(Component {
        name: "app-access".into(),
        state,
        detail,
    })
}

/// Every component, in a stable order.
pub fn components(config: &Config, o: Observed<'_>) -> Vec<Component> {
    let Observed {
        docker,
        directory,
        mail,
        apps,
        store,
        last_reload_refused,
    } = o;
    let c = |name: &str, state, detail: String| Component {
        name: name.into(),
        state,
        detail,
    };
    let mut out = Vec::new();
    out.push(match last_reload_refused {
        None => c(
            "config",
            ComponentState::Ok,
            format!(
                "collective {}, profile {}",
                config.collective.slug, config.hardware.profile
            ),
        ),
        Some(why) => c(
            "config",
            ComponentState::Degraded,
            format!("the last reload was refused, the previous config stays in force: {why}"),
        ),
    });
    out.push(match store {
        Ok(v) => c(
            "store",
            ComponentState::Ok,
            format!("state.db schema v{v}, WAL"),
        ),
        Err(e) => c("store", ComponentState::Down, e),
    });
    out.push(match directory {
        DirectoryObservation::Starting => c(
            "directory",
            ComponentState::Waiting,
            "starting slapd".into(),
        ),
        DirectoryObservation::Running {
            pid,
            adopted,
            restarts,
        } => {
            let listen: Vec<&str> = config.directory.listen.iter().map(|u| u.as_str()).collect();
            c(
                "directory",
                ComponentState::Ok,
                format!(
                    "slapd pid {pid}{} on {}{}",
                    if *adopted { " (adopted)" } else { "" },
                    listen.join(" "),
                    if *restarts > 0 {
                        format!(", restarted {restarts}×")
                    } else {
                        String::new()
                    }
                ),
            )
        }
        DirectoryObservation::Failed {
            error,
            retry_in_secs,
            ..
        } => c(
            "directory",
            ComponentState::Down,
            format!("{error} (retrying in {retry_in_secs} s)"),
        ),
    });
    out.push(match (mail.configured, &mail.last_error) {
        (false, _) => c(
            "mail",
            ComponentState::Waiting,
            format!(
                "no [smtp] in the config: {} mail(s) queued until it is set",
                mail.queued
            ),
        ),
        (true, Some(e)) => c(
            "mail",
            ComponentState::Degraded,
            format!("{e}; {} mail(s) queued, retrying", mail.queued),
        ),
        (true, None) => c(
            "mail",
            ComponentState::Ok,
            format!("{} sent, {} queued", mail.sent, mail.queued),
        ),
    });
    let docker_ok;
    out.push(match docker {
        DockerObservation::NotYetProbed => {
            docker_ok = false;
            c("docker", ComponentState::Waiting, "first probe running".into())
        }
        DockerObservation::Reachable(info) => {
            let old = api_version(&info.api_version).is_some_and(|v| v < MIN_DOCKER_API);
            docker_ok = !old;
            if old {
                c(
                    "docker",
                    ComponentState::Degraded,
                    format!(
                        "Docker {} speaks API {}, older than the {}.{} this appliance needs: upgrade docker.io",
                        info.engine_version, info.api_version, MIN_DOCKER_API.0, MIN_DOCKER_API.1
                    ),
                )
            } else {
                c(
                    "docker",
                    ComponentState::Ok,
                    format!("Docker {}, API {}", info.engine_version, info.api_version),
                )
            }
        }
        DockerObservation::Unreachable(why) => {
            docker_ok = false;
            c("docker", ComponentState::Down, why.clone())
        }
    });
    for app in &config.apps.enabled {
        let name = app.as_str();
        let (state, detail) = if !docker_ok {
            (
                ComponentState::Waiting,
                "waiting for Docker (see the docker line above)".to_owned(),
            )
        } else {
            match apps {
                AppsObservation::Pending => (
                    ComponentState::Waiting,
                    "the first reconcile has not run yet".to_owned(),
                ),
                AppsObservation::Reconciling { step } => {
                    (ComponentState::Waiting, format!("reconciling: {step}"))
                }
                AppsObservation::Converged => (
                    ComponentState::Ok,
                    "running as the config wants it".to_owned(),
                ),
                AppsObservation::Failed {
                    app: failed,
                    step,
                    cause,
                } if failed == name => (
                    ComponentState::Down,
                    format!("step `{step}` failed: {cause}"),
                ),
                AppsObservation::Failed { app: failed, .. } => (
                    ComponentState::Waiting,
                    format!("waiting: the last reconcile stopped at a step of {failed}"),
                ),
                AppsObservation::Refused(why) => (ComponentState::Down, why.clone()),
            }
        };
        out.push(c(&format!("app:{app}"), state, detail));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::EngineInfo;

    #[test]
    fn federation_says_what_waits_and_that_logins_go_on() {
        assert_eq!(
            federation_component(&FederationObservation::default()),
            None
        );
        let up = FederationObservation {
            enabled: true,
            up: true,
            ..Default::default()
        };
        let c = federation_component(&up).unwrap();
        assert_eq!(c.state, ComponentState::Ok);
        assert_eq!(c.detail, "linked; nothing waits for the alliance");
        let down = FederationObservation {
            enabled: true,
            last_error: Some("connection refused".into()),
            pending: 3,
            oldest_age: Some(40),
            conflicts: 1,
            ..Default::default()
        };
        let c = federation_component(&down).unwrap();
        assert_eq!(c.state, ComponentState::Degraded);
        assert!(
            c.detail
                .contains("(connection refused): logins and local work go on"),
            "{}",
            c.detail
        );
        assert!(
            c.detail
                .contains("3 change(s) wait for the alliance, the oldest for 40 s")
        );
        assert!(c.detail.contains("1 conflict(s) settled"));
    }

    #[test]
    fn federation_shows_a_refused_link_and_a_held_refresh() {
        let refused = FederationObservation {
            enabled: true,
            refused: Some("ldap://a is plain LDAP: … `insecure = true` …".into()),
            ..Default::default()
        };
        let c = federation_component(&refused).unwrap();
        assert_eq!(c.state, ComponentState::Down);
        assert!(c.detail.contains("refused") && c.detail.contains("insecure = true"));
        let mut held = FederationObservation {
            enabled: true,
            up: true,
            hold: Some(HeldRefresh {
                delete: 30,
                keep: 55,
                local_copy: 90,
                confirmed: false,
            }),
            ..Default::default()
        };
        let c = federation_component(&held).unwrap();
        assert_eq!(c.state, ComponentState::Degraded);
        assert!(
            c.detail.contains("would delete 85 of the 90 entries")
                && c.detail.contains("55 of them")
                && c.detail.contains("nothing was deleted")
                && c.detail.contains("commonscloud alliance confirm-deletions"),
            "{}",
            c.detail
        );
        // Confirmed: the next refresh applies it; the link is what counts.
        if let Some(h) = held.hold.as_mut() {
            h.confirmed = true;
        }
        assert_eq!(
            federation_component(&held).unwrap().state,
            ComponentState::Ok
        );
    }
    use std::path::Path;

    fn config(apps: &str, profile: &str) -> Config {
        crate::config::parse(
            &format!(
                "[collective]\nname='Q'\nslug='quimper'\ndomain='q.example.org'\nadmin_email='a@q.example.org'\n[hardware]\nprofile='{profile}'\n[apps]\nenabled=[{apps}]\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn info(api: &str) -> DockerObservation {
        DockerObservation::Reachable(EngineInfo {
            socket: "/var/run/docker.sock".into(),
            engine_version: "20.10.24".into(),
            api_version: api.into(),
        })
    }

    const CONFIGURED: MailObservation = MailObservation {
        configured: true,
        queued: 0,
        oldest: None,
        sent: 0,
        last_error: None,
    };

    fn obs<'a>(
        docker: &'a DockerObservation,
        store: Result<usize, String>,
        refused: Option<&'a str>,
    ) -> Observed<'a> {
        Observed {
            docker,
            directory: &DirectoryObservation::Starting,
            mail: &CONFIGURED,
            apps: &AppsObservation::Pending,
            store,
            last_reload_refused: refused,
        }
    }

    #[test]
    fn access_changes_waiting_for_the_apps_show_until_they_land() {
        let mut s = crate::store::AppActionStats::default();
        assert!(app_access_component(&s, 1000).is_none());
        s.pending = 2;
        s.oldest_pending_at = Some(990);
        let c = app_access_component(&s, 1000).unwrap();
        assert_eq!(c.state, ComponentState::Ok);
        s.last_error = Some("Discourse answered HTTP 502".into());
        let c = app_access_component(&s, 1100).unwrap();
        assert_eq!(c.state, ComponentState::Degraded);
        assert!(
            c.detail.contains("110 s") && c.detail.contains("HTTP 502"),
            "{}",
            c.detail
        );
        s = crate::store::AppActionStats {
            failed: 1,
            ..Default::default()
        };
        assert_eq!(
            app_access_component(&s, 0).unwrap().state,
            ComponentState::Degraded
        );
    }

    fn state<'a>(cs: &'a [Component], name: &str) -> &'a Component {
        cs.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn healthy_box() {
        let cs = components(
            &config("'nextcloud'", "rpi4-4gb"),
            obs(&info("1.41"), Ok(2), None),
        );
        let names: Vec<_> = cs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config",
                "store",
                "directory",
                "mail",
                "docker",
                "app:nextcloud"
            ]
        );
        assert_eq!(state(&cs, "docker").state, ComponentState::Ok);
        assert_eq!(state(&cs, "app:nextcloud").state, ComponentState::Waiting);
        assert!(
            state(&cs, "app:nextcloud")
                .detail
                .contains("has not run yet")
        );
    }

    #[test]
    fn each_app_says_how_its_last_reconcile_went() {
        let docker = info("1.47");
        let c = config("'nextcloud','collabora'", "rpi5-8gb");
        let failed = AppsObservation::Failed {
            app: "collabora".into(),
            step: "pull image collabora/code:25.04".into(),
            cause: "image collabora/code:25.04 cannot be pulled: no registry".into(),
        };
        let cs = components(
            &c,
            Observed {
                apps: &failed,
                ..obs(&docker, Ok(5), None)
            },
        );
        let office = state(&cs, "app:collabora");
        assert_eq!(office.state, ComponentState::Down);
        assert!(office.detail.contains("pull image") && office.detail.contains("cannot be pulled"));
        assert_eq!(state(&cs, "app:nextcloud").state, ComponentState::Waiting);
        let cs = components(
            &c,
            Observed {
                apps: &AppsObservation::Converged,
                ..obs(&docker, Ok(5), None)
            },
        );
        assert_eq!(state(&cs, "app:nextcloud").state, ComponentState::Ok);
    }

    #[test]
    fn old_or_missing_docker() {
        let cs = components(
            &config("'nextcloud'", "rpi4-4gb"),
            obs(&info("1.40"), Ok(2), None),
        );
        assert_eq!(state(&cs, "docker").state, ComponentState::Degraded);
        assert!(
            state(&cs, "app:nextcloud")
                .detail
                .contains("waiting for Docker")
        );
        let unreachable = DockerObservation::Unreachable("no socket".into());
        let cs = components(
            &config("'nextcloud'", "rpi4-4gb"),
            obs(&unreachable, Ok(2), None),
        );
        assert_eq!(state(&cs, "docker").state, ComponentState::Down);
    }

    #[test]
    fn apps_that_do_not_fit_say_why() {
        let refused =
            AppsObservation::Refused("nextcloud + collabora need 2000 MB together".into());
        let cs = components(
            &config("'nextcloud','collabora'", "arm64-2gb"),
            Observed {
                apps: &refused,
                ..obs(&info("1.47"), Ok(2), None)
            },
        );
        assert_eq!(state(&cs, "app:collabora").state, ComponentState::Down);
        assert!(state(&cs, "app:collabora").detail.contains("need 2000 MB"));
    }

    #[test]
    fn refused_reload_degrades_config() {
        let docker = info("1.47");
        let cs = components(
            &config("", "rpi4-4gb"),
            obs(&docker, Err("locked".into()), Some("bad key")),
        );
        assert_eq!(state(&cs, "config").state, ComponentState::Degraded);
        assert!(state(&cs, "config").detail.contains("bad key"));
        assert_eq!(state(&cs, "store").state, ComponentState::Down);
    }

    #[test]
    fn directory_states() {
        let docker = info("1.47");
        let c = config("", "rpi4-4gb");
        let running = DirectoryObservation::Running {
            pid: 42,
            adopted: true,
            restarts: 2,
        };
        let o = Observed {
            directory: &running,
            ..obs(&docker, Ok(2), None)
        };
        let d = components(&c, o)
            .into_iter()
            .find(|c| c.name == "directory")
            .unwrap();
        assert_eq!(d.state, ComponentState::Ok);
        assert_eq!(
            d.detail,
            "slapd pid 42 (adopted) on ldap://127.0.0.1:3389, restarted 2×"
        );
        let failed = DirectoryObservation::Failed {
            error: "port busy".into(),
            restarts: 0,
            retry_in_secs: 4,
        };
        let o = Observed {
            directory: &failed,
            ..obs(&docker, Ok(2), None)
        };
        let d = components(&c, o)
            .into_iter()
            .find(|c| c.name == "directory")
            .unwrap();
        assert_eq!(d.state, ComponentState::Down);
        assert!(d.detail.contains("port busy") && d.detail.contains("4 s"));
    }

    #[test]
    fn restart_delay_backs_off_to_a_ceiling() {
        let ms = |n| restart_delay(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(7)],
            [500, 500, 1000, 2000, 30_000]
        );
        assert_eq!(ms(100), 30_000);
    }
}
