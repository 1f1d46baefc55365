//! The only code that talks to the Docker Engine (through bollard).
//!
//! Adapter: it reports what Docker says and decides nothing.

use std::time::Duration;

use bollard::Docker;

pub mod context;
pub mod inventory;
pub mod objects;
pub mod watch;

/// Where to find the engine unless `DOCKER_HOST` names a unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Versions the engine reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    pub socket: String,
    pub engine_version: String,
    /// The API version the engine speaks (its maximum).
    pub api_version: String,
}

/// The last Docker probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerObservation {
    NotYetProbed,
    Reachable(EngineInfo),
    Unreachable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker socket {socket} does not exist: install Docker (`apt install docker.io`) and start it (`systemctl enable --now docker`)"
    )]
    NoSocket { socket: String },
    #[error(
        "cannot reach Docker at {socket}: {source}. Check that the docker service runs and that this user is in the `docker` group"
    )]
    Unreachable {
        socket: String,
        source: bollard::errors::Error,
    },
    #[error("Docker at {socket} did not answer within {secs} s")]
    Timeout { socket: String, secs: u64 },
    #[error(
        "image {image} cannot be pulled: {message}. With no registry reachable (offline), load the image with `docker load` or wait for the link to return"
    )]
    Pull { image: String, message: String },
    #[error("building image {tag}: {message}")]
    Build { tag: String, message: String },
    #[error("Docker: {what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
}

pub(crate) fn api(what: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError + '_ {
    move |source| DockerError::Api {
        what: what.to_owned(),
        source,
    }
}

/// A connection with the API version negotiated.
pub async fn connect(socket: &str, timeout: Duration) -> Result<Docker, DockerError> {
    if !std::path::Path::new(socket).exists() {
        return Err(DockerError::NoSocket {
            socket: socket.to_owned(),
        });
    }
    let unreachable = |source| DockerError::Unreachable {
        socket: socket.to_owned(),
        source,
    };
    Docker::connect_with_unix(
        socket,
        timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unreachable)?
    .negotiate_version()
    .await
    .map_err(unreachable)
}

/// Waits until Docker reports a container of this instance dying or being
/// removed (someone killed or deleted it by hand); returns the action.
pub async fn next_container_event(docker: &Docker, instance: &str) -> Result<String, DockerError> {
    use futures_util::StreamExt;
    let filters = std::collections::HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            vec!["die".to_owned(), "destroy".to_owned()],
        ),
        (
            "label".to_owned(),
            vec![format!("{}={instance}", LABEL_INSTANCE)],
        ),
    ]);
    let mut stream = docker.events(Some(bollard::query_parameters::EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    match stream.next().await {
        Some(Ok(e)) => Ok(e.action.unwrap_or_default()),
        Some(Err(e)) => Err(api("watching events")(e)),
        None => Err(DockerError::Api {
            what: "watching events".into(),
            source: bollard::errors::Error::RequestTimeoutError,
        }),
    }
}

/// Builds an image from a tar build context (classic builder: no
/// registry is contacted for `FROM scratch`), tagged `tag`.
pub async fn build_image(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    build_args: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> Result<(), DockerError> {
    use futures_util::StreamExt;
    let options = bollard::query_parameters::BuildImageOptions {
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        buildargs: Some(build_args.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let what = format!("building {tag}");
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(api(&what))?;
        if let Some(detail) = info.error_detail {
            return Err(DockerError::Build {
                tag: tag.to_owned(),
                message: detail.message.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Labels on every object the daemon manages; it touches nothing without
/// them.
pub const LABEL_MANAGED: &str = "org.commonscloud.managed";
pub const LABEL_APP: &str = "org.commonscloud.app";
pub const LABEL_ROLE: &str = "org.commonscloud.role";
/// Hash of the container's spec: a different hash means drift.
pub const LABEL_SPEC: &str = "org.commonscloud.spec";

/// Which appliance an object belongs to (its `apps.prefix`): tests run
/// several on one engine.
pub const LABEL_INSTANCE: &str = "org.commonscloud.instance";

/// A container Docker has, named like ours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedContainer {
    pub name: String,
    pub id: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub running: bool,
}

/// A network or volume Docker has, named like ours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedObject {
    pub name: String,
    /// Carries our labels, for this instance.
    pub managed: bool,
}

/// What [`observe`] found: Docker's objects under this instance's names
/// or labels, and the images present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Objects {
    pub containers: Vec<ObservedContainer>,
    pub networks: Vec<ObservedObject>,
    pub volumes: Vec<ObservedObject>,
    /// Image references present locally.
    pub images: std::collections::BTreeSet<String>,
}

/// What Docker has under this instance's names (`<prefix>…`) or labels,
/// labels included, and which images are present: `reconcile` decides what
/// is ours.
pub async fn observe(docker: &Docker, prefix: &str) -> Result<Objects, DockerError> {
    use bollard::query_parameters::{
        ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions,
    };
    let ours = |name: &str| name.starts_with(prefix);
    let managed = |labels: Option<&std::collections::HashMap<String, String>>| {
        labels.is_some_and(|l| {
            l.get(LABEL_MANAGED).is_some_and(|v| v == "true")
                && l.get(LABEL_INSTANCE).is_some_and(|v| v == prefix)
        })
    };
    let mut o = Objects::default();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(api("listing containers"))?;
    for c in containers {
        let Some(name) = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
        else {
            continue;
        };
        let labels = c.labels.unwrap_or_default();
        if !ours(&name) && !managed(Some(&labels)) {
            continue;
        }
        o.containers.push(ObservedContainer {
            name,
            id: c.id.unwrap_or_default(),
            labels: labels.into_iter().collect(),
            running: c
                .state
                .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING),
        });
    }
    let networks = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(api("listing networks"))?;
    for n in networks {
        let name = n.name.unwrap_or_default();
        if ours(&name) {
            o.networks.push(ObservedObject {
                managed: managed(n.labels.as_ref()),
                name,
            });
        }
    }
    let volumes = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .map_err(api("listing volumes"))?;
    for v in volumes.volumes.unwrap_or_default() {
        if ours(&v.name) {
            o.volumes.push(ObservedObject {
                managed: managed(Some(&v.labels)),
                name: v.name,
            });
        }
    }
    let images = docker
        .list_images(None::<ListImagesOptions>)
        .await
        .map_err(api("listing images"))?;
    for i in images {
        o.images.extend(i.repo_tags);
        o.images.extend(i.repo_digests);
    }
    Ok(o)
}

/// The unix socket to use: `DOCKER_HOST=unix://…` or the default.
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}

/// Connects, negotiates the API version and asks the engine for its versions.
pub async fn probe(socket: &str, timeout: Duration) -> Result<EngineInfo, DockerError> {
    let work = async {
        let docker = connect(socket, timeout).await?;
        let v = docker
            .version()
            .await
            .map_err(|source| DockerError::Unreachable {
                socket: socket.to_owned(),
                source,
            })?;
        Ok(EngineInfo {
            socket: socket.to_owned(),
            engine_version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DockerError::Timeout {
            socket: socket.to_owned(),
            secs: timeout.as_secs(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_says_how_to_fix() {
        let err = probe("/nonexistent/docker.sock", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, DockerError::NoSocket { .. }));
        assert!(err.to_string().contains("apt install docker.io"));
    }

    #[tokio::test]
    async fn real_engine_reports_its_api_version() {
        // The Docker Engine runs on every machine this project tests on.
        let info = probe(&socket_path(), Duration::from_secs(10))
            .await
            .unwrap();
        let (major, minor) = info.api_version.split_once('.').unwrap();
        assert_eq!(major, "1");
        assert!(minor.parse::<u32>().unwrap() >= 41, "{info:?}");
        assert!(!info.engine_version.is_empty());
    }
}
