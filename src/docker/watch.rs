//! The Docker watchers (adapter): the `docker-probe` task reports whether
//! the engine answers, and the `docker-events` task announces a container
//! of ours dying or going away. They decide nothing: the reconcile task
//! hears the event and looks.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::DockerObservation;
use crate::config::Live;
use crate::events::{Bus, Event};

/// How often Docker is probed when nothing else asks.
const DOCKER_PROBE_EVERY: Duration = Duration::from_secs(30);

/// Probes Docker every [`DOCKER_PROBE_EVERY`] and on every reload,
/// reporting what it found (and logging a change).
pub async fn probe(
    report: watch::Sender<DockerObservation>,
    events: Bus,
    token: CancellationToken,
) {
    let mut heard = events.subscribe();
    loop {
        let socket = super::socket_path();
        let obs = match super::probe(&socket, Duration::from_secs(5)).await {
            Ok(info) => DockerObservation::Reachable(info),
            Err(e) => DockerObservation::Unreachable(e.to_string()),
        };
        if *report.borrow() != obs {
            match &obs {
                DockerObservation::Reachable(i) => log::info!(
                    task = "docker-probe";
                    "Docker {} reachable, API {}", i.engine_version, i.api_version
                ),
                DockerObservation::Unreachable(e) => {
                    log::warn!(task = "docker-probe"; "{e}")
                }
                DockerObservation::NotYetProbed => {}
            }
        }
        report.send_replace(obs);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = heard.next(|e| matches!(e, Event::ConfigReloaded(_))) => {}
            _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
        }
    }
}

/// Waits for Docker to report a container of this instance dying or going
/// away and announces it ([`Event::ContainerChanged`]); while Docker is
/// unreachable, tries again every [`DOCKER_PROBE_EVERY`].
pub async fn events(config: Live, events: Bus, token: CancellationToken) {
    loop {
        let prefix = config.get().apps.prefix.to_string();
        let wait = async {
            // A long request timeout: the event stream stays open.
            let docker = super::connect(&super::socket_path(), Duration::from_secs(86_400)).await?;
            super::next_container_event(&docker, &prefix).await
        };
        tokio::select! {
            _ = token.cancelled() => break,
            r = wait => match r {
                Ok(action) => {
                    log::info!(task = "docker-events"; "a container of ours had `{action}`: reconciling");
                    events.publish(Event::ContainerChanged(action));
                }
                Err(_) => tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
                },
            },
        }
    }
}
