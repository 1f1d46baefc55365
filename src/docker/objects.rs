//! Creating, starting, inspecting and removing networks, volumes and
//! containers, pulling images and running commands in containers. The
//! caller says exactly what to make; nothing here decides.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Ipam, IpamConfig,
    NetworkConnectRequest, NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use super::{DockerError, api};

/// A container to create, every value resolved (secrets read, paths made).
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    pub name: String,
    pub image: String,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    /// `(volume name, target, read-only)`.
    pub volumes: Vec<(String, String, bool)>,
    /// `(host path, target, read-only)`.
    pub binds: Vec<(String, String, bool)>,
    /// `(network, alias)`; the first is joined at creation, the others
    /// before the start.
    pub networks: Vec<(String, String)>,
    /// Docker's `CMD` form, seconds.
    pub health: Option<(Vec<String>, u32, u32, u32, u32)>,
    pub memory_bytes: i64,
    pub restart_unless_stopped: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `(host port on 127.0.0.1, container port)`.
    pub publish: Option<(u16, u16)>,
}

/// What `inspect` tells about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub running: bool,
    /// `healthy`, `unhealthy`, `starting`, or `none` without a health check.
    pub health: String,
    pub exit_code: i64,
    pub restarting: bool,
}

/// The result of a command run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

pub async fn create_network(
    docker: &Docker,
    name: &str,
    internal: bool,
    subnet: Option<&str>,
    labels: HashMap<String, String>,
) -> Result<(), DockerError> {
    let ipam = subnet.map(|s| Ipam {
        config: Some(vec![IpamConfig {
            subnet: Some(s.to_owned()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            ipam,
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(api(&format!("creating network {name}")))?;
    Ok(())
}

/// Removes a network; Docker refuses while a container is attached.
pub async fn remove_network(docker: &Docker, name: &str) -> Result<(), DockerError> {
    docker
        .remove_network(name)
        .await
        .map_err(api(&format!("removing network {name}")))
}

pub async fn create_volume(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<(), DockerError> {
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(api(&format!("creating volume {name}")))?;
    Ok(())
}

pub async fn remove_volume(docker: &Docker, name: &str) -> Result<(), DockerError> {
    docker
        .remove_volume(name, None::<RemoveVolumeOptions>)
        .await
        .map_err(api(&format!("removing volume {name}")))
}

/// Pulls an image, reporting `(layer, downloaded bytes, layer size)` while
/// layers download. Returns the bytes downloaded (layers already here cost
/// nothing). Without a registry (offline) this fails with Docker's reason.
pub async fn pull_image(
    docker: &Docker,
    image: &str,
    mut progress: impl FnMut(&str, i64, i64),
) -> Result<i64, DockerError> {
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        }),
        None,
        None,
    );
    let mut sizes: HashMap<String, i64> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|source| DockerError::Pull {
            image: image.to_owned(),
            message: source.to_string(),
        })?;
        if let Some(e) = info.error_detail {
            return Err(DockerError::Pull {
                image: image.to_owned(),
                message: e.message.unwrap_or_default(),
            });
        }
        // Both report the layer's compressed size; a small layer may come in
        // one read and skip "Downloading". Layers already here report
        // neither.
        let status = info.status.as_deref().unwrap_or("");
        if let (Some(d), Some(layer), "Downloading" | "Extracting") =
            (info.progress_detail, info.id.as_deref(), status)
        {
            let total = d.total.unwrap_or(0);
            if total > 0 {
                sizes.insert(layer.to_owned(), total);
            }
            if status == "Downloading" {
                progress(layer, d.current.unwrap_or(0), total);
            }
        }
    }
    Ok(sizes.values().sum())
}

/// Creates the container (not started) and joins its other networks.
/// Returns its id.
pub async fn create_container(docker: &Docker, c: &NewContainer) -> Result<String, DockerError> {
    let what = format!("creating container {}", c.name);
    let mut mounts: Vec<String> = c
        .volumes
        .iter()
        .map(|(v, t, ro)| format!("{v}:{t}{}", if *ro { ":ro" } else { "" }))
        .collect();
    mounts.extend(
        c.binds
            .iter()
            .map(|(h, t, ro)| format!("{h}:{t}{}", if *ro { ":ro" } else { "" })),
    );
    let (first_net, first_alias) = c.networks.first().cloned().unzip();
    let port_bindings = c.publish.map(|(host, inner)| {
        HashMap::from([(
            format!("{inner}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(host.to_string()),
            }]),
        )])
    });
    let secs = |s: u32| i64::from(s) * 1_000_000_000;
    let body = ContainerCreateBody {
        image: Some(c.image.clone()),
        env: Some(c.env.clone()),
        labels: Some(c.labels.clone()),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        user: c.user.clone(),
        exposed_ports: c.publish.map(|(_, inner)| vec![format!("{inner}/tcp")]),
        healthcheck: c
            .health
            .as_ref()
            .map(|(test, interval, timeout, retries, start)| HealthConfig {
                test: Some(test.clone()),
                interval: Some(secs(*interval)),
                timeout: Some(secs(*timeout)),
                retries: Some(i64::from(*retries)),
                start_period: Some(secs(*start)),
                ..Default::default()
            }),
        host_config: Some(HostConfig {
            binds: Some(mounts),
            memory: (c.memory_bytes > 0).then_some(c.memory_bytes),
            restart_policy: Some(RestartPolicy {
                name: Some(if c.restart_unless_stopped {
                    RestartPolicyNameEnum::UNLESS_STOPPED
                } else {
                    RestartPolicyNameEnum::NO
                }),
                maximum_retry_count: None,
            }),
            cap_add: (!c.cap_add.is_empty()).then(|| c.cap_add.clone()),
            cap_drop: (!c.cap_drop.is_empty()).then(|| c.cap_drop.clone()),
            network_mode: first_net.clone(),
            port_bindings,
            ..Default::default()
        }),
        networking_config: first_net
            .as_ref()
            .map(|n| bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    n.clone(),
                    EndpointSettings {
                        aliases: first_alias.clone().map(|a| vec![a]),
                        ..Default::default()
                    },
                )])),
            }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(c.name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(api(&what))?;
    for (net, alias) in c.networks.iter().skip(1) {
        docker
            .connect_network(
                net,
                NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: Some(vec![alias.clone()]),
                        ..Default::default()
                    }),
                },
            )
            .await
            .map_err(api(&format!("connecting {} to {net}", c.name)))?;
    }
    Ok(created.id)
}

pub async fn start_container(docker: &Docker, id: &str) -> Result<(), DockerError> {
    docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(api(&format!("starting container {id}")))
}

/// Restarts a container (10 s grace to stop), as an admin asked.
pub async fn restart_container(docker: &Docker, name: &str) -> Result<(), DockerError> {
    docker
        .restart_container(
            name,
            Some(bollard::query_parameters::RestartContainerOptions {
                t: Some(10),
                ..Default::default()
            }),
        )
        .await
        .map_err(api(&format!("restarting container {name}")))
}

/// Stops (10 s grace) and removes a container; one already gone is fine.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let _ = docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(10),
                ..Default::default()
            }),
        )
        .await;
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(api(&format!("removing container {id}"))(e)),
    }
}

/// Running, health and exit code; `None` when the container does not exist.
pub async fn inspect(docker: &Docker, name: &str) -> Result<Option<ContainerStatus>, DockerError> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => {
            let s = c.state.unwrap_or_default();
            Ok(Some(ContainerStatus {
                running: s.running.unwrap_or(false),
                restarting: s.restarting.unwrap_or(false),
                exit_code: s.exit_code.unwrap_or(0),
                health: s
                    .health
                    .and_then(|h| h.status)
                    .map_or_else(|| "none".to_owned(), |h| h.to_string()),
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(api(&format!("inspecting container {name}"))(e)),
    }
}

/// Runs `cmd` in a running container as `user` and collects its output.
pub async fn exec(
    docker: &Docker,
    container: &str,
    user: &str,
    workdir: Option<&str>,
    cmd: Vec<String>,
) -> Result<ExecOutput, DockerError> {
    let what = format!("running a command in {container}");
    let created = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                // Empty: the image's own user.
                user: (!user.is_empty()).then(|| user.to_owned()),
                working_dir: workdir.map(str::to_owned),
                cmd: Some(cmd),
                ..Default::default()
            },
        )
        .await
        .map_err(api(&what))?;
    let mut out = ExecOutput {
        exit_code: -1,
        stdout: String::new(),
        stderr: String::new(),
    };
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None::<bollard::exec::StartExecOptions>)
        .await
        .map_err(api(&what))?
    {
        while let Some(chunk) = output.next().await {
            match chunk.map_err(api(&what))? {
                bollard::container::LogOutput::StdOut { message } => {
                    out.stdout.push_str(&String::from_utf8_lossy(&message));
                }
                bollard::container::LogOutput::StdErr { message } => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message));
                }
                _ => {}
            }
        }
    }
    let inspected = docker.inspect_exec(&created.id).await.map_err(api(&what))?;
    out.exit_code = inspected.exit_code.unwrap_or(-1);
    Ok(out)
}

/// The last lines of a container's output, to explain why it stopped.
pub async fn logs_tail(docker: &Docker, name: &str, lines: usize) -> String {
    let mut stream = docker.logs(
        name,
        Some(bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        }),
    );
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text
}
