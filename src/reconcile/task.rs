//! The `reconcile` task: runs [`super::apply::reconcile`] when the apps
//! may have drifted from the config, and reports how the apps are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Live};
use crate::events::{Bus, Event};
use crate::status::{self, AppsObservation, DirectoryObservation};
use crate::store::Store;

/// How often the apps are reconciled when nothing else asks.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// Reconciles the apps on start, every [`RECONCILE_EVERY`], on a reload,
/// when Docker reports one of ours dying or going away, when a collective
/// is created and when an admin asks. A failure is a state in `status`,
/// retried with backoff, never a crash loop. Once the apps converged it
/// announces [`Event::AppsReconciled`] and waits (a while) for slapd to
/// listen on the apps' bridge too.
pub async fn run(
    config: Live,
    store: Arc<Mutex<Store>>,
    events: Bus,
    report: watch::Sender<AppsObservation>,
    mut directory: watch::Receiver<DirectoryObservation>,
    token: CancellationToken,
) {
    let set = |o: AppsObservation| {
        report.send_replace(o);
    };
    let mut heard = events.subscribe();
    let mut failures: u32 = 0;
    let mut trigger = "start";
    // The apps are wired to the directory: let it come up first (its
    // service account secrets are made then), for a minute at most.
    let up = directory.wait_for(|d| matches!(d, DirectoryObservation::Running { .. }));
    tokio::select! {
        _ = token.cancelled() => return,
        _ = tokio::time::timeout(Duration::from_secs(60), up) => {}
    }
    loop {
        let config = config.get();
        let delay = match crate::apps::desired(&config) {
            Err(e) => {
                set(AppsObservation::Refused(e.to_string()));
                RECONCILE_EVERY
            }
            Ok(_) => {
                match crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(10))
                    .await
                {
                    Err(e) => {
                        log::debug!(task = "reconcile"; "Docker unreachable: {e}");
                        status::restart_delay(failures.saturating_add(1))
                            .max(Duration::from_secs(5))
                    }
                    Ok(docker) => {
                        let progress = |p: crate::reconcile::apply::Progress<'_>| match p {
                            crate::reconcile::apply::Progress::Step {
                                seq,
                                of,
                                description,
                            } => {
                                log::info!(task = "reconcile"; "step {seq}/{of}: {description}");
                                set(AppsObservation::Reconciling {
                                    step: description.to_owned(),
                                });
                            }
                            crate::reconcile::apply::Progress::Pulled { image, bytes } => {
                                log::info!(task = "reconcile"; "pulled {image} ({})", crate::reconcile::apply::megabytes(bytes));
                            }
                            crate::reconcile::apply::Progress::Pull { .. } => {}
                        };
                        let settings = crate::reconcile::apply::Settings {
                            config: &config,
                            ready_timeout: Duration::from_secs(900),
                            progress: &progress,
                        };
                        let run =
                            crate::reconcile::apply::reconcile(&docker, &store, &settings, trigger);
                        let outcome = tokio::select! {
                            _ = token.cancelled() => break,
                            r = run => r,
                        };
                        match outcome {
                            Ok(report) => match report.failed {
                                None => {
                                    failures = 0;
                                    if report.steps > 0 {
                                        log::info!(task = "reconcile"; "{} step(s) applied; the apps are as the config wants them", report.steps);
                                    }
                                    // A new bridge means slapd must listen on its
                                    // gateway too: not converged until it does.
                                    events.publish(Event::AppsReconciled);
                                    wait_for_listeners(&directory, &config).await;
                                    set(AppsObservation::Converged);
                                    RECONCILE_EVERY
                                }
                                Some((app, step, cause)) => {
                                    failures = failures.saturating_add(1);
                                    set(AppsObservation::Failed { app, step, cause });
                                    status::restart_delay(failures + 4)
                                }
                            },
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                log::warn!(task = "reconcile"; "{e}");
                                set(AppsObservation::Failed {
                                    app: String::new(),
                                    step: "observe".into(),
                                    cause: e.to_string(),
                                });
                                status::restart_delay(failures + 4)
                            }
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = token.cancelled() => break,
            _ = heard.next(|e| matches!(
                e,
                Event::ConfigReloaded(_)
                    | Event::ContainerChanged(_)
                    | Event::CollectiveCreated
                    | Event::ReconcileAsked
            )) => trigger = "event",
            _ = tokio::time::sleep(delay) => trigger = "timer",
        }
    }
}

/// Waits (15 s at most) until slapd listens where the config and the
/// apps' bridge want it.
async fn wait_for_listeners(directory: &watch::Receiver<DirectoryObservation>, config: &Config) {
    let paths = crate::directory::slapd::Paths::new(config);
    let wanted = crate::directory::slapd::wanted_urls(config, &paths);
    for _ in 0..150 {
        if let Some(pid) = crate::directory::slapd::running_pid(&paths) {
            let have = crate::directory::slapd::listen_urls(pid).unwrap_or_default();
            let up = matches!(
                *directory.borrow(),
                DirectoryObservation::Running { pid: p, .. } if p == pid
            );
            if have == wanted && up {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
