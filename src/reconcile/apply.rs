//! The executor: applies a plan's steps one by one through the `docker`
//! module (the only code that talks to Docker), journaling each step in
//! SQLite. After a crash, the next run plans again from what exists and
//! from the journal of wiring done, so it resumes where the last stopped
//! and never makes an object twice. It decides nothing the plan did not.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;

use super::{Observed, Step, plan};
use crate::apps::{self, ContainerSpec, Desired, MountSource, Value, Wiring};
use crate::clock::unix_now;
use crate::config::Config;
use crate::docker::{self, DockerError, objects};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Apps(#[from] apps::AppsError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("secret {name}: {message}")]
    Secret { name: String, message: String },
    #[error("{container} is not ready after {secs} s: {why}")]
    NotReady {
        container: String,
        secs: u64,
        why: String,
    },
    #[error("{container} stopped (exit code {code}): {logs}")]
    Stopped {
        container: String,
        code: i64,
        logs: String,
    },
    /// `what` is the step, which the report names already.
    #[error("{output}")]
    Wiring { what: String, output: String },
    #[error("{0}")]
    NameTaken(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How a run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub run_id: Option<i64>,
    pub steps: usize,
    /// The first failure: `(app, step, cause)`; later steps were not run.
    pub failed: Option<(String, String, String)>,
}

/// What the executor needs, besides Docker and the store.
pub struct Settings<'a> {
    pub config: &'a Config,
    /// How long a container may take to become ready.
    pub ready_timeout: Duration,
    /// Told of each step as it starts, and of pull progress.
    pub progress: &'a (dyn Fn(Progress<'_>) + Sync),
}

/// Events for whoever shows progress (the CLI's bars, the daemon's log).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Step {
        seq: usize,
        of: usize,
        description: &'a str,
    },
    /// A layer downloading: bytes so far of its size.
    Pull {
        image: &'a str,
        layer: &'a str,
        current: i64,
        total: i64,
    },
    /// An image is here, after downloading `bytes`.
    Pulled { image: &'a str, bytes: i64 },
}

/// Bytes as an admin reads them: `12.3 MB`.
pub fn megabytes(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

pub(crate) use crate::store::with_store;

/// The desired state with the collectives the directory holds (each gets a
/// group folder); the config's own when the directory cannot be read.
pub async fn desired(config: &Config) -> Result<Desired, apps::AppsError> {
    let paths = crate::directory::slapd::Paths::new(config);
    let tree = crate::directory::tree::Tree::new(config.suffix().as_str());
    let found = async {
        let mut root = crate::directory::ldap::connect_root(&paths).await?;
        crate::directory::people::collectives(&mut root, &tree).await
    };
    match tokio::time::timeout(Duration::from_secs(5), found).await {
        Ok(Ok(list)) if !list.is_empty() => {
            let pairs: Vec<_> = list
                .into_iter()
                .map(|c| {
                    let name = if c.name.is_empty() {
                        c.slug.to_string()
                    } else {
                        c.name
                    };
                    (c.slug, name)
                })
                .collect();
            apps::desired_with(config, &pairs)
        }
        _ => apps::desired(config),
    }
}

/// Everything that exists: Docker, the secrets dir and the journal.
pub async fn observe(
    docker: &Docker,
    config: &Config,
    desired: &Desired,
    store: &Mutex<Store>,
) -> Result<Observed, ApplyError> {
    let found = docker::observe(docker, config.apps.prefix.as_str()).await?;
    let mut o = Observed {
        containers: found.containers,
        networks: found.networks,
        volumes: found.volumes,
        images: found.images,
        ..Observed::default()
    };
    for s in &desired.secrets {
        if config.paths.secrets_dir.join(&s.name).exists() {
            o.secrets.insert(s.name.clone());
        }
    }
    o.wired = with_store(store, |s| s.wired())?;
    Ok(o)
}

/// One reconcile: plan, then apply each step, journaled. Stops at the first
/// failure (later steps may need it) and reports it. One at a time per
/// state dir (`reconcile.lock`), whether the daemon or the CLI runs it.
pub async fn reconcile(
    docker: &Docker,
    store: &Mutex<Store>,
    settings: &Settings<'_>,
    trigger: &str,
) -> Result<Report, ApplyError> {
    let _lock = lock(&settings.config.paths.state_dir).await?;
    if let Ok(runs) = with_store(store, |s| s.interrupted_runs(unix_now()))
        && !runs.is_empty()
    {
        log::warn!(
            "reconcile run(s) {runs:?} were cut short (a crash or a kill); planning again from what exists"
        );
    }
    let desired = desired(settings.config).await?;
    let observed = observe(docker, settings.config, &desired, store).await?;
    let steps = plan(&desired, &observed);
    if steps.is_empty() {
        return Ok(Report {
            run_id: None,
            steps: 0,
            failed: None,
        });
    }
    let run_id = with_store(store, |s| s.begin_run(trigger, steps.len(), unix_now()))?;
    for (seq, step) in steps.iter().enumerate() {
        let description = step.describe();
        let app = step_app(step, &desired);
        let kind = step_kind(step);
        (settings.progress)(Progress::Step {
            seq: seq + 1,
            of: steps.len(),
            description: &description,
        });
        with_store(store, |s| {
            s.step_started(run_id, seq, &app, kind, &description, unix_now())
        })?;
        let result = apply_step(docker, store, settings, &desired, step).await;
        match result {
            Ok(()) => with_store(store, |s| s.step_finished(run_id, seq, None, unix_now()))?,
            Err(e) => {
                let cause = e.to_string();
                log::warn!(app = app.as_str(), step = description.as_str(); "reconcile step failed: {cause}");
                with_store(store, |s| {
                    s.step_finished(run_id, seq, Some(&cause), unix_now())?;
                    s.finish_run(run_id, "failed", unix_now())
                })?;
                return Ok(Report {
                    run_id: Some(run_id),
                    steps: steps.len(),
                    failed: Some((app, description, cause)),
                });
            }
        }
    }
    with_store(store, |s| s.finish_run(run_id, "done", unix_now()))?;
    Ok(Report {
        run_id: Some(run_id),
        steps: steps.len(),
        failed: None,
    })
}

/// Waits for the reconcile lock of this state dir.
async fn lock(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ApplyError> {
    let path = state_dir.join("reconcile.lock");
    let io = |source: std::io::Error| ApplyError::Io {
        what: format!("opening {}", path.display()),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, _)) => {
                file = f;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::CreateSecret(_) => "create_secret",
        Step::CreateNetwork(_) => "create_network",
        Step::CreateVolume(_) => "create_volume",
        Step::PullImage { .. } => "pull_image",
        Step::NameTaken { .. } => "name_taken",
        Step::RemoveContainer { .. } => "remove_container",
        Step::CreateContainer { .. } => "create_container",
        Step::RecreateContainer { .. } => "recreate_container",
        Step::StartContainer { .. } => "start_container",
        Step::WaitReady { .. } => "wait_ready",
        Step::RemoveNetwork { .. } => "remove_network",
        Step::Wire { .. } => "wire",
    }
}

fn step_app(step: &Step, desired: &Desired) -> String {
    let of = |name: &str| {
        desired
            .containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.app.to_string())
            .unwrap_or_default()
    };
    match step {
        Step::CreateVolume(v) => v.app.to_string(),
        Step::CreateContainer { spec } | Step::RecreateContainer { spec, .. } => {
            spec.app.to_string()
        }
        Step::StartContainer { name, .. } | Step::RemoveContainer { name, .. } => of(name),
        Step::WaitReady { app, .. } | Step::Wire { app, .. } | Step::PullImage { app, .. } => {
            app.to_string()
        }
        _ => String::new(),
    }
}

fn read_secret(secrets_dir: &Path, name: &str) -> Result<String, ApplyError> {
    std::fs::read_to_string(secrets_dir.join(name))
        .map(|s| s.trim().to_owned())
        .map_err(|e| ApplyError::Secret {
            name: name.to_owned(),
            message: e.to_string(),
        })
}

fn resolve(secrets_dir: &Path, v: &Value) -> Result<String, ApplyError> {
    match v {
        Value::Plain(s) => Ok(s.clone()),
        Value::Secret(name) => read_secret(secrets_dir, name),
    }
}

/// The container as Docker must create it: secrets read, paths made.
fn new_container(
    spec: &ContainerSpec,
    secrets_dir: &Path,
    state_dir: &Path,
) -> Result<objects::NewContainer, ApplyError> {
    let mut env = Vec::new();
    for (k, v) in &spec.env {
        env.push(format!("{k}={}", resolve(secrets_dir, v)?));
    }
    let mut volumes = Vec::new();
    let mut binds = Vec::new();
    for m in &spec.mounts {
        match &m.source {
            MountSource::Volume(v) => volumes.push((v.clone(), m.target.clone(), m.read_only)),
            MountSource::Secret(name) => binds.push((
                secrets_dir.join(name).display().to_string(),
                m.target.clone(),
                m.read_only,
            )),
            MountSource::State(path) => binds.push((
                state_dir.join(path).display().to_string(),
                m.target.clone(),
                m.read_only,
            )),
        }
    }
    Ok(objects::NewContainer {
        name: spec.name.clone(),
        image: spec.image.clone(),
        env,
        labels: spec.labels().into_iter().collect(),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        user: spec.user.clone(),
        volumes,
        binds,
        networks: spec
            .networks
            .iter()
            .map(|n| (n.clone(), spec.role.clone()))
            .collect(),
        health: spec.health.as_ref().map(|h| {
            (
                h.test.clone(),
                h.interval_s,
                h.timeout_s,
                h.retries,
                h.start_period_s,
            )
        }),
        memory_bytes: i64::try_from(spec.memory_mb).unwrap_or(i64::MAX / 2) * 1024 * 1024,
        restart_unless_stopped: spec.restart == "unless-stopped",
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        publish: spec.publish,
    })
}

async fn create_and_start(
    docker: &Docker,
    spec: &ContainerSpec,
    config: &Config,
) -> Result<(), ApplyError> {
    let c = new_container(spec, &config.paths.secrets_dir, &config.paths.state_dir)?;
    let id = objects::create_container(docker, &c).await?;
    objects::start_container(docker, &id).await?;
    Ok(())
}

async fn apply_step(
    docker: &Docker,
    store: &Mutex<Store>,
    settings: &Settings<'_>,
    desired: &Desired,
    step: &Step,
) -> Result<(), ApplyError> {
    let config = settings.config;
    let secrets_dir: &Path = &config.paths.secrets_dir;
    let instance = &desired.instance;
    match step {
        Step::CreateSecret(s) => {
            crate::directory::secret::load_or_create(&secrets_dir.join(&s.name)).map_err(|e| {
                ApplyError::Secret {
                    name: s.name.clone(),
                    message: e.to_string(),
                }
            })?;
        }
        Step::CreateNetwork(n) => {
            objects::create_network(
                docker,
                &n.name,
                n.internal,
                n.subnet.as_deref(),
                apps::object_labels(instance, None).into_iter().collect(),
            )
            .await?;
        }
        Step::CreateVolume(v) => {
            objects::create_volume(
                docker,
                &v.name,
                apps::object_labels(instance, Some(v.app))
                    .into_iter()
                    .collect(),
            )
            .await?;
        }
        Step::PullImage { image, .. } => {
            let bytes = objects::pull_image(docker, image, |layer, current, total| {
                (settings.progress)(Progress::Pull {
                    image,
                    layer,
                    current,
                    total,
                });
            })
            .await?;
            (settings.progress)(Progress::Pulled { image, bytes });
        }
        Step::NameTaken { .. } => return Err(ApplyError::NameTaken(step.describe())),
        Step::RemoveContainer { id, .. } => objects::remove_container(docker, id).await?,
        Step::CreateContainer { spec } => create_and_start(docker, spec, config).await?,
        Step::RecreateContainer { spec, id, .. } => {
            objects::remove_container(docker, id).await?;
            create_and_start(docker, spec, config).await?;
        }
        Step::StartContainer { id, .. } => objects::start_container(docker, id).await?,
        Step::RemoveNetwork { name } => objects::remove_network(docker, name).await?,
        Step::WaitReady { container, .. } => {
            let spec = desired.containers.iter().find(|c| &c.name == container);
            wait_ready(docker, container, spec, settings.ready_timeout).await?;
        }
        Step::Wire { app, wiring, id } => {
            wire(docker, config, desired, wiring).await?;
            with_store(store, |s| {
                s.wiring_done(id, app.as_str(), &wiring.describe(), unix_now())
            })?;
        }
    }
    Ok(())
}

/// Polls until the container runs and is healthy (or has no health check);
/// Nextcloud must also say installed, not in maintenance and no database
/// upgrade pending.
async fn wait_ready(
    docker: &Docker,
    container: &str,
    spec: Option<&ContainerSpec>,
    timeout: Duration,
) -> Result<(), ApplyError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        // Docker's verdict first, then the app's own (status.php).
        let healthy: Result<(), String> = match objects::inspect(docker, container).await? {
            None => Err("it does not exist".into()),
            Some(s) if !s.running && !s.restarting => {
                return Err(ApplyError::Stopped {
                    container: container.to_owned(),
                    code: s.exit_code,
                    logs: objects::logs_tail(docker, container, 20).await,
                });
            }
            Some(s) if s.health == "healthy" || (s.running && s.health == "none") => Ok(()),
            // Docker checks health only every interval (no start interval
            // before API 1.44): run the check now rather than wait for it.
            Some(s) if s.running && s.health == "starting" => {
                match spec.and_then(|c| c.health.as_ref()) {
                    Some(h) if h.test.first().map(String::as_str) == Some("CMD") => {
                        let out = objects::exec(docker, container, "", None, h.test[1..].to_vec())
                            .await?;
                        if out.exit_code == 0 {
                            Ok(())
                        } else {
                            Err(format!(
                                "its health check fails: {}{}",
                                out.stdout.trim(),
                                out.stderr.trim()
                            ))
                        }
                    }
                    _ => Err("health is starting".into()),
                }
            }
            Some(s) => Err(format!("health is {}", s.health)),
        };
        let ready = match (healthy, spec) {
            (Ok(()), Some(c)) if c.role == "nextcloud" => nextcloud_ready(c).await,
            (r, _) => r,
        };
        let why = match ready {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if started.elapsed() >= timeout {
            return Err(ApplyError::NotReady {
                container: container.to_owned(),
                secs: timeout.as_secs(),
                why,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn published(c: &ContainerSpec) -> Option<SocketAddr> {
    c.publish
        .map(|(port, _)| SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn nextcloud_ready(c: &ContainerSpec) -> Result<(), String> {
    let addr = published(c).ok_or("no published port")?;
    let host = match c.env.get("OVERWRITEHOST") {
        Some(Value::Plain(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let (code, body) = crate::http::request(
        addr,
        "GET",
        &host,
        "/status.php",
        &[],
        None,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    let s: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("status.php answered {code} without JSON"))?;
    if s["installed"] != true {
        return Err("status.php says not installed yet".into());
    }
    if s["maintenance"] != false {
        return Err("status.php says in maintenance".into());
    }
    if s["needsDbUpgrade"] != false {
        return Err("status.php says a database upgrade is pending".into());
    }
    Ok(())
}

async fn occ(
    docker: &Docker,
    container: &str,
    args: &[String],
) -> Result<objects::ExecOutput, ApplyError> {
    let mut cmd = vec!["php".to_owned(), "occ".to_owned()];
    cmd.extend(args.iter().cloned());
    Ok(objects::exec(docker, container, "www-data", Some("/var/www/html"), cmd).await?)
}

fn failed(what: String, out: &objects::ExecOutput) -> ApplyError {
    ApplyError::Wiring {
        what,
        output: format!(
            "exit code {}: {}{}",
            out.exit_code,
            out.stdout.trim(),
            out.stderr.trim()
        ),
    }
}

fn http_failed(what: String, code: u16, body: &[u8]) -> ApplyError {
    ApplyError::Wiring {
        what,
        output: format!("HTTP {code}: {}", String::from_utf8_lossy(body)),
    }
}

/// One call to Discourse's admin API on its published port, as the system
/// user with the appliance's key.
pub(crate) async fn discourse_api(
    desired: &Desired,
    secrets_dir: &Path,
    container: &str,
    what: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, hyper::body::Bytes), ApplyError> {
    let wiring_err = |output: String| ApplyError::Wiring {
        what: what.to_owned(),
        output,
    };
    let spec = desired
        .containers
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| wiring_err("no such container in the plan".into()))?;
    let addr = published(spec).ok_or_else(|| wiring_err("Discourse publishes no port".into()))?;
    let key = read_secret(secrets_dir, "discourse-api-key")?;
    let host = match spec.env.get("DISCOURSE_HOSTNAME") {
        Some(Value::Plain(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let mut headers = vec![("Api-Key", key), ("Api-Username", "system".to_owned())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json".to_owned()));
    }
    crate::http::request(
        addr,
        method,
        &host,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| wiring_err(e.to_string()))
}

/// Runs one wiring step, checking first where running it twice would not
/// be harmless.
async fn wire(
    docker: &Docker,
    config: &Config,
    desired: &Desired,
    wiring: &Wiring,
) -> Result<(), ApplyError> {
    let secrets_dir: &Path = &config.paths.secrets_dir;
    let what = wiring.describe();
    match wiring {
        Wiring::Occ { container, args } => {
            let args: Vec<String> = args
                .iter()
                .map(|a| resolve(secrets_dir, a))
                .collect::<Result<_, _>>()?;
            // A second configuration would be created otherwise.
            if args.first().map(String::as_str) == Some("ldap:create-empty-config") {
                let shown = occ(
                    docker,
                    container,
                    &["ldap:show-config".into(), "s01".into()],
                )
                .await?;
                if shown.exit_code == 0 {
                    return Ok(());
                }
            }
            let out = occ(docker, container, &args).await?;
            if out.exit_code != 0 {
                return Err(failed(what, &out));
            }
            // Older releases exit 0 whatever the outcome: read the verdict.
            if args.first().map(String::as_str) == Some("ldap:test-config")
                && !out.stdout.contains("connection could be established")
            {
                return Err(failed(what, &out));
            }
        }
        Wiring::GroupFolder {
            container,
            folder,
            group,
        } => {
            let list = occ(
                docker,
                container,
                &["groupfolders:list".into(), "--output=json".into()],
            )
            .await?;
            if list.exit_code != 0 {
                return Err(failed(what, &list));
            }
            let listed: serde_json::Value =
                serde_json::from_str(list.stdout.trim()).unwrap_or_default();
            let existing = listed
                .as_array()
                .into_iter()
                .flatten()
                .chain(listed.as_object().into_iter().flat_map(|m| m.values()))
                .find(|f| f["mount_point"] == folder.as_str())
                .and_then(|f| {
                    f["id"]
                        .as_i64()
                        .map(|i| i.to_string())
                        .or_else(|| f["id"].as_str().map(str::to_owned))
                });
            let id = match existing {
                Some(id) => id,
                None => {
                    let out = occ(
                        docker,
                        container,
                        &["groupfolders:create".into(), folder.clone()],
                    )
                    .await?;
                    if out.exit_code != 0 {
                        return Err(failed(what, &out));
                    }
                    out.stdout.trim().to_owned()
                }
            };
            let out = occ(
                docker,
                container,
                &[
                    "groupfolders:group".into(),
                    id,
                    group.clone(),
                    "write".into(),
                    "share".into(),
                    "delete".into(),
                ],
            )
            .await?;
            if out.exit_code != 0 {
                return Err(failed(what, &out));
            }
        }
        Wiring::Exec {
            container,
            user,
            cmd,
        } => {
            let cmd: Vec<String> = cmd
                .iter()
                .map(|a| resolve(secrets_dir, a))
                .collect::<Result<_, _>>()?;
            let out = objects::exec(docker, container, user, None, cmd).await?;
            if out.exit_code != 0 {
                return Err(failed(what, &out));
            }
        }
        Wiring::DiscourseSetting {
            container,
            name,
            value,
        } => {
            let body = serde_json::json!({ name.as_str(): resolve(secrets_dir, value)? });
            let path = format!("/admin/site_settings/{name}");
            let (code, resp) = discourse_api(
                desired,
                secrets_dir,
                container,
                &what,
                "PUT",
                &path,
                Some(body),
            )
            .await?;
            if code != 200 {
                return Err(http_failed(what, code, &resp));
            }
        }
        Wiring::DiscourseGroup {
            container,
            name,
            full_name,
        } => {
            let path = format!("/groups/{name}.json");
            let (code, resp) =
                discourse_api(desired, secrets_dir, container, &what, "GET", &path, None).await?;
            match code {
                200 => return Ok(()),
                404 => {}
                _ => return Err(http_failed(what, code, &resp)),
            }
            let body = serde_json::json!({"group": {
                "name": name,
                "full_name": full_name,
                // Visible to signed-in people only; anyone may mention it.
                "visibility_level": 1,
                "mentionable_level": 3,
                "messageable_level": 3,
            }});
            let (code, resp) = discourse_api(
                desired,
                secrets_dir,
                container,
                &what,
                "POST",
                "/admin/groups.json",
                Some(body),
            )
            .await?;
            if code != 200 {
                return Err(http_failed(what, code, &resp));
            }
        }
    }
    Ok(())
}
