//! The `reconcile` task: runs `apply::reconcile` when the apps may have
//! drifted from the config.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::appliance::Appliance;
use crate::config::Config;
use crate::status::{self, DirectoryObservation};

/// How often the apps are reconciled when nothing else asks.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// Reconciles the apps on start, every [`RECONCILE_EVERY`], on a reload and
/// when Docker reports one of ours dying or going away. A failure is a
/// state in `status`, retried with backoff, never a crash loop.
pub async fn run(shared: Arc<Appliance>, token: CancellationToken) {
    let set = |o: status::AppsObservation| {
        if let Ok(mut a) = shared.apps.write() {
            *a = o;
        }
    };
    let mut failures: u32 = 0;
    let mut trigger = "start";
    // The apps are wired to the directory: let it come up first (its
    // service account secrets are made then), for a minute at most.
    for _ in 0..240 {
        let up = matches!(
            shared.directory.read().as_deref(),
            Ok(DirectoryObservation::Running { .. })
        );
        if up {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    loop {
        let config = shared.config();
        let delay = match crate::apps::desired(&config) {
            Err(e) => {
                set(status::AppsObservation::Refused(e.to_string()));
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
                                set(status::AppsObservation::Reconciling {
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
                        let run = crate::reconcile::apply::reconcile(
                            &docker,
                            &shared.store,
                            &settings,
                            trigger,
                        );
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
                                    shared.directory_reload.notify_one();
                                    wait_for_listeners(&shared, &config).await;
                                    set(status::AppsObservation::Converged);
                                    RECONCILE_EVERY
                                }
                                Some((app, step, cause)) => {
                                    failures = failures.saturating_add(1);
                                    set(status::AppsObservation::Failed { app, step, cause });
                                    status::restart_delay(failures + 4)
                                }
                            },
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                log::warn!(task = "reconcile"; "{e}");
                                set(status::AppsObservation::Failed {
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
            _ = shared.reconcile_wakeup.notified() => trigger = "event",
            _ = tokio::time::sleep(delay) => trigger = "timer",
        }
    }
}

/// Waits (15 s at most) until slapd listens where the config and the
/// apps' bridge want it.
pub async fn wait_for_listeners(shared: &Appliance, config: &Config) {
    let paths = crate::directory::slapd::Paths::new(config);
    let wanted = crate::directory::slapd::wanted_urls(config, &paths);
    for _ in 0..150 {
        if let Some(pid) = crate::directory::slapd::running_pid(&paths) {
            let have = crate::directory::slapd::listen_urls(pid).unwrap_or_default();
            let up = matches!(
                shared.directory.read().as_deref(),
                Ok(DirectoryObservation::Running { pid: p, .. }) if *p == pid
            );
            if have == wanted && up {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
