//! What the upgrade planner's facts need from Docker: the instance's
//! containers with their image, labels and environment, the digests of the
//! images present, and where Docker keeps its data.
//!
//! Adapter: reports what Docker says and decides nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListImagesOptions};

use super::{DockerError, api};

/// One container of the instance, with what its image says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub running: bool,
    /// The image as the container was created with.
    pub image: String,
    /// The image's `name@sha256:…` digests (none for an image built here
    /// and never pushed).
    pub repo_digests: Vec<String>,
    /// The container's labels, the image's included.
    pub labels: BTreeMap<String, String>,
    /// The container's environment, the image's included.
    pub env: BTreeMap<String, String>,
}

/// The containers carrying every one of `labels` (`(key, value)`: the
/// instance's own, as the caller names them).
pub async fn containers(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<ContainerInfo>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(api("listing containers"))?;
    let mut out = Vec::new();
    for c in list {
        let Some(id) = c.id else { continue };
        if let Some(info) = container(docker, &id).await? {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One container by name or id; `None` when it does not exist.
pub async fn container(docker: &Docker, name: &str) -> Result<Option<ContainerInfo>, DockerError> {
    let c = match docker
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(api(&format!("inspecting container {name}"))(e)),
    };
    let config = c.config.unwrap_or_default();
    let repo_digests = match &c.image {
        Some(id) => match docker.inspect_image(id).await {
            Ok(i) => i.repo_digests.unwrap_or_default(),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Vec::new(),
            Err(e) => return Err(api(&format!("inspecting image {id}"))(e)),
        },
        None => Vec::new(),
    };
    Ok(Some(ContainerInfo {
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        running: c.state.and_then(|s| s.running).unwrap_or(false),
        image: config.image.unwrap_or_default(),
        repo_digests,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env: config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
    }))
}

/// The digests (`sha256:…`) of every image present, from their
/// `name@sha256:…` repo digests.
pub async fn image_digests(docker: &Docker) -> Result<BTreeSet<String>, DockerError> {
    let images = docker
        .list_images(None::<ListImagesOptions>)
        .await
        .map_err(api("listing images"))?;
    Ok(images
        .into_iter()
        .flat_map(|i| i.repo_digests)
        .filter_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .collect())
}

/// Where Docker keeps images and volumes (`/var/lib/docker`).
pub async fn root_dir(docker: &Docker) -> Result<Option<String>, DockerError> {
    let info = docker
        .info()
        .await
        .map_err(api("asking Docker for its info"))?;
    Ok(info.docker_root_dir)
}
