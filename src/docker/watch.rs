//! The Docker watchers: `docker-probe` and `docker-events`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::appliance::Appliance;
use crate::status::DockerObservation;

/// How often Docker is probed when nothing else asks.
const DOCKER_PROBE_EVERY: Duration = Duration::from_secs(30);

/// Probes Docker every [`DOCKER_PROBE_EVERY`] and on reload.
pub async fn probe(shared: Arc<Appliance>, token: CancellationToken) {
    loop {
        let socket = crate::docker::socket_path();
        let obs = match crate::docker::probe(&socket, Duration::from_secs(5)).await {
            Ok(info) => DockerObservation::Reachable(info),
            Err(e) => DockerObservation::Unreachable(e.to_string()),
        };
        let changed = shared.docker.read().map(|d| *d != obs).unwrap_or(true);
        if changed {
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
        if let Ok(mut d) = shared.docker.write() {
            *d = obs;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = shared.docker_wakeup.notified() => {}
            _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
        }
    }
}

/// Waits for Docker to report a container of ours dying or going away.
pub async fn events(shared: Arc<Appliance>, token: CancellationToken) {
    loop {
        let prefix = shared.config().apps.prefix.to_string();
        let wait = async {
            // A long request timeout: the event stream stays open.
            let docker =
                crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(86_400))
                    .await?;
            crate::docker::next_container_event(&docker, &prefix).await
        };
        tokio::select! {
            _ = token.cancelled() => break,
            r = wait => match r {
                Ok(action) => {
                    log::info!(task = "docker-events"; "a container of ours had `{action}`: reconciling");
                    shared.reconcile_wakeup.notify_one();
                }
                Err(_) => tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
                },
            },
        }
    }
}
