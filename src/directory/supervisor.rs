//! The `directory` task: keeps our slapd running (the control plane's
//! side of the data plane: slapd outlives it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Live;
use crate::events::{Bus, Event};
use crate::status::{self, DirectoryObservation};
use crate::store::{Store, audit_daemon, with_store};

/// `meta` key holding the managed slapd settings last applied.
const DIRECTORY_CONFIG_KEY: &str = "directory_config";
/// The directory data's version (see `directory::tree::TREE_VERSION`).
const TREE_VERSION_KEY: &str = "directory_tree_version";
/// How often the directory task checks slapd's listen addresses against
/// what they should be (the apps' bridge may have appeared).
const LISTEN_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Keeps our slapd running: bootstrap once, start or adopt, make sure the
/// service accounts bind, then watch the process and start it again with
/// backoff when it dies. On shutdown slapd is left running on purpose: it is
/// the data plane, and the next daemon adopts it.
///
/// It reports slapd's state on `report`, and looks at slapd's listeners
/// again when a reload changed what they depend on or a reconcile made the
/// apps' bridge.
pub async fn run(
    live: Live,
    store: Arc<Mutex<Store>>,
    events: Bus,
    report: watch::Sender<DirectoryObservation>,
    token: CancellationToken,
) {
    use crate::directory::tree::{self, Tree};
    use crate::directory::{ldap, slapd};
    let set = |obs: DirectoryObservation| {
        report.send_replace(obs);
    };
    let remember = |text: &str| {
        if let Err(e) = with_store(&store, |s| s.set_meta(DIRECTORY_CONFIG_KEY, text)) {
            log::warn!("cannot record the directory's settings: {e}");
        }
    };
    let mut heard = events.subscribe();
    let mut failures = 0u32;
    let mut restarts = 0u32;
    loop {
        let config = live.get();
        let paths = slapd::Paths::new(&config);
        let starting = async {
            let (c, p) = ((*config).clone(), paths.clone());
            let made = tokio::task::spawn_blocking(move || slapd::bootstrap(&c, &p))
                .await
                .map_err(|e| crate::directory::DirectoryError::Io {
                    what: "bootstrap task".into(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            let suffix = config.suffix().as_str();
            let wanted = tree::managed_config_text(suffix);
            if made == slapd::Bootstrap::Created {
                log::info!(task = "directory"; "created the directory for {suffix}");
                remember(&wanted);
            }
            // A cn=config naming a missing certificate would stop slapd
            // from starting: the pair is made (again) first.
            let (c, p) = ((*config).clone(), paths.clone());
            let now = OffsetDateTime::now_utc();
            match tokio::task::spawn_blocking(move || {
                crate::directory::tls::ensure_pair(&c, &p, now)
            })
            .await
            {
                Ok(Ok(Some(true))) => {
                    log::info!(task = "directory"; "issued slapd's certificate for the apps' bridge")
                }
                Ok(Err(e)) => {
                    log::warn!(task = "directory"; "slapd's certificate for the apps' bridge: {e}")
                }
                _ => {}
            }
            let (pid, adopted) = slapd::start_or_adopt(&config, &paths).await?;
            // Settings an older release wrote are brought up to this one's.
            let applied = with_store(&store, |s| s.meta(DIRECTORY_CONFIG_KEY))
                .ok()
                .flatten();
            if applied.as_deref() != Some(wanted.as_str()) {
                ldap::apply_config(&paths, &tree::managed_config(suffix)).await?;
                log::info!(task = "directory"; "applied this release's slapd settings over ldapi");
                audit_daemon(
                    &store,
                    "directory-config",
                    "applied this release's slapd settings",
                );
                remember(&wanted);
            }
            let tree = Tree::new(suffix);
            ldap::ensure_service_accounts(&paths, &tree, &config.paths.secrets_dir).await?;
            // Data an older release wrote is brought up to this one's tree.
            let at: u32 = with_store(&store, |s| s.meta(TREE_VERSION_KEY))
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if made == slapd::Bootstrap::Created {
                    tree::TREE_VERSION
                } else {
                    0
                });
            if at < tree::TREE_VERSION {
                let mut root = ldap::connect_root(&paths).await?;
                let now = crate::directory::people::migrate_tree(&mut root, &tree, at).await?;
                log::info!(task = "directory"; "directory data migrated from tree version {at} to {now}");
                audit_daemon(
                    &store,
                    "directory-migrate",
                    &format!("tree version {at} to {now}"),
                );
            }
            if let Err(e) = with_store(&store, |s| {
                s.set_meta(TREE_VERSION_KEY, &tree::TREE_VERSION.to_string())
            }) {
                log::warn!(task = "directory"; "cannot record the tree version: {e}");
            }
            Ok::<_, crate::directory::DirectoryError>((pid, adopted))
        };
        // Startup must not hold up a shutdown; bootstrap is crash-safe and a
        // slapd already forked is adopted next time.
        let started = tokio::select! {
            _ = token.cancelled() => return,
            r = starting => r,
        };
        match started {
            Ok((pid, adopted)) => {
                failures = 0;
                log::info!(task = "directory", pid = pid; "slapd {} (pid {pid})", if adopted { "adopted" } else { "started" });
                set(DirectoryObservation::Running {
                    pid,
                    adopted,
                    restarts,
                });
                let up_since = tokio::time::Instant::now();
                let mut listen_check = tokio::time::interval(LISTEN_CHECK_EVERY);
                listen_check.tick().await;
                // Listeners are slapd's command line: a change needs a
                // restart, which is planned and not counted. A slapd found
                // gone while checking died, whichever branch saw it first.
                let replan = |reason: &str| -> Option<bool> {
                    let now = live.get();
                    let have = slapd::listen_urls(pid)?;
                    let wanted = slapd::wanted_urls(&now, &paths);
                    if slapd::Paths::new(&now) == paths && wanted == have {
                        return Some(false);
                    }
                    log::info!(task = "directory"; "{reason}: slapd should listen on {wanted:?} (it listens on {have:?}); restarting it");
                    Some(true)
                };
                // LDAPS for the apps: the certificate made, renewed and
                // handed to slapd; a renewal needs a restart to be served.
                let keep_tls = || async {
                    match crate::directory::tls::keep(&live.get(), &paths).await {
                        Ok(k) => {
                            if k.applied {
                                log::info!(task = "directory"; "slapd serves its certificate for the apps' bridge");
                                audit_daemon(
                                    &store,
                                    "directory-tls",
                                    "slapd's certificate for the apps' bridge applied",
                                );
                            }
                            k.restart
                        }
                        Err(e) => {
                            log::warn!(task = "directory"; "LDAPS for the apps: {e}");
                            false
                        }
                    }
                };
                let died = loop {
                    let planned = tokio::select! {
                        biased;
                        _ = token.cancelled() => {
                            log::info!(task = "directory"; "slapd (pid {pid}) keeps serving while the daemon is down");
                            return;
                        }
                        _ = slapd::wait_exit(pid) => None,
                        // The apps' bridge appears (or goes) with the apps.
                        _ = listen_check.tick() => {
                            if keep_tls().await {
                                log::info!(task = "directory"; "slapd's certificate for the apps' bridge was renewed; restarting slapd to serve it");
                                Some(true)
                            } else {
                                replan("the apps' bridge changed")
                            }
                        }
                        event = heard.next(|e| match e {
                            Event::ConfigReloaded(d) => d.slapd_listeners(),
                            e => *e == Event::AppsReconciled,
                        }) => replan(match event {
                            Some(Event::AppsReconciled) => "the apps were reconciled",
                            Some(_) => "the config changed",
                            None => "events were missed",
                        }),
                    };
                    match planned {
                        None => break true,
                        Some(false) => continue,
                        Some(true) => break false,
                    }
                };
                if died {
                    restarts += 1;
                    log::warn!(task = "directory", pid = pid; "slapd (pid {pid}) exited; starting it again");
                    // A slapd that dies right after starting is a crash
                    // loop: back off as for a failed start.
                    if up_since.elapsed() < Duration::from_secs(10) {
                        failures += 1;
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(status::restart_delay(failures)) => {}
                        }
                    }
                } else if let Err(e) = slapd::stop(&paths, Duration::from_secs(10)).await {
                    log::warn!(task = "directory"; "stopping slapd: {e}");
                }
            }
            Err(e) => {
                failures += 1;
                let delay = status::restart_delay(failures);
                log::error!(task = "directory"; "{e}; retrying in {delay:?}");
                set(DirectoryObservation::Failed {
                    error: e.to_string(),
                    restarts,
                    retry_in_secs: delay.as_secs().max(1),
                });
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
