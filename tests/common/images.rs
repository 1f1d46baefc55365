//! The test images of `images/testing/` and a small Docker lab for the
//! tests that run them.
//!
//! Real PostgreSQL and Redis come from Debian's packages ([`debian`],
//! `images/testing/debian-image.sh`); Nextcloud, Collabora and Discourse
//! are stand-ins.
//!
//! Images: each `images/testing/<name>/` holds a `Dockerfile` (`FROM
//! scratch`), a `rootfs/` and a `layout` file. The build context is put
//! together here, in memory: the Dockerfile, `rootfs/` plus the host's
//! static busybox (`apt install busybox-static`) with its applet links in
//! `/bin`, the static `standin` binary (built on demand from
//! `images/testing/standin/`) and the links and directories `layout` lists.
//! Images are tagged by the hash of their context and build arguments, so
//! an unchanged image is built once, across test processes too.
//!
//! Lab: everything a test creates carries `org.commonscloud.test=<run id>`
//! and a unique name; dropping the [`Lab`] removes it all, also when the
//! test fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListImagesOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
    RemoveVolumeOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// On every container, network and volume a test creates: its run id.
pub const LABEL_TEST: &str = "org.commonscloud.test";
/// On the stand-in images: `<name> <hash of its context>` (without build
/// arguments), so stale builds can be pruned. One label: the classic
/// builder commits each label as a step of its own (about a second each).
pub const LABEL_STANDIN: &str = "org.commonscloud.standin";
/// The owner of test secret files: a system uid no image has a user for.
pub const DAEMON_UID: u32 = 64123;

pub fn images_dir() -> PathBuf {
    super::repo().join("images/testing")
}

fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The static `standin` binary, built once per test process with cargo
/// (which serializes concurrent builds in the same target dir itself).
pub fn standin_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = super::target_dir().join("standin");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["build", "--release", "--locked", "--target", &triple()])
            .arg("--manifest-path")
            .arg(images_dir().join("standin/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("run cargo to build the stand-in binary");
        assert!(
            out.status.success(),
            "building images/testing/standin failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join(triple()).join("release/standin")
    })
}

/// The build context of `images/testing/<name>`.
pub fn context(name: &str) -> Vec<u8> {
    commonscloud::docker::context::standin_context(
        &images_dir().join(name),
        Path::new("/bin/busybox"),
        standin_binary(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tag of stand-in image `name` built with `args`, built unless an
/// image with that tag exists. Concurrent test processes wait for each
/// other on a lock file per tag.
pub async fn image(docker: &Docker, name: &str, args: &[(&str, &str)]) -> String {
    let ctx = context(name);
    let source = short_hash(&[&ctx]);
    let mut sorted: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    sorted.sort();
    let tag = format!(
        "commonscloud-standin/{name}:{}",
        short_hash(&[&ctx, sorted.join("\n").as_bytes()])
    );
    if docker.inspect_image(&tag).await.is_ok() {
        return tag;
    }
    let locks = super::target_dir().join("standin/image-locks");
    std::fs::create_dir_all(&locks).expect("lock dir");
    let file = std::fs::File::create(locks.join(tag.replace(['/', ':'], "_"))).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the image build");
    if docker.inspect_image(&tag).await.is_ok() {
        return tag;
    }
    let build_args: HashMap<String, String> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let labels = HashMap::from([(LABEL_STANDIN.to_owned(), format!("{name} {source}"))]);
    commonscloud::docker::build_image(docker, ctx, &tag, &build_args, &labels)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    prune_stale(docker, name, &source).await;
    tag
}

/// A Nextcloud stand-in release: one tag of `images/testing/nextcloud`,
/// built with these arguments, and the upgrade rules its `version.php`
/// carries. The table is the upgrade path an upgrade planner must honour:
/// one major at a time (the entrypoint refuses more), never down (the
/// entrypoint refuses), and into 32 only from 31.0.5 or later (`occ
/// upgrade` refuses an older 31).
#[derive(Debug, Clone, Copy)]
pub struct NextcloudRelease {
    /// `NEXTCLOUD_VERSION`.
    pub version: &'static str,
    /// `$OC_VersionCanBeUpgradedFrom['nextcloud']`: the `major.minor` of
    /// the installed version.
    pub upgrades_from: &'static [&'static str],
    /// `STANDIN_MINIMUM_FROM`: the oldest patch release of the previous
    /// major it upgrades from.
    pub minimum_from: Option<&'static str>,
    /// `STANDIN_BROKEN=1`: migrates (config.php and the database say its
    /// version), then status.php answers 500 and every occ command fails.
    pub broken: bool,
}

impl NextcloudRelease {
    /// The image's build arguments (only those that are set, so that the
    /// catalog's `31.0.0` is the same tag).
    pub fn build_args(&self) -> Vec<(&'static str, &'static str)> {
        let mut args = vec![("NEXTCLOUD_VERSION", self.version)];
        if let Some(m) = self.minimum_from {
            args.push(("STANDIN_MINIMUM_FROM", m));
        }
        if self.broken {
            args.push(("STANDIN_BROKEN", "1"));
        }
        args
    }
}

/// Three consecutive majors, the patch release 32 requires, and a broken
/// 32 (real version numbers: each was a `nextcloud:<version>-apache`).
pub const NEXTCLOUD_RELEASES: [NextcloudRelease; 5] = [
    NextcloudRelease {
        version: "30.0.17",
        upgrades_from: &["29.0", "30.0"],
        minimum_from: None,
        broken: false,
    },
    NextcloudRelease {
        version: "31.0.0",
        upgrades_from: &["30.0", "31.0"],
        minimum_from: None,
        broken: false,
    },
    NextcloudRelease {
        version: "31.0.5",
        upgrades_from: &["30.0", "31.0"],
        minimum_from: None,
        broken: false,
    },
    NextcloudRelease {
        version: "32.0.0",
        upgrades_from: &["31.0", "32.0"],
        minimum_from: Some("31.0.5"),
        broken: false,
    },
    NextcloudRelease {
        version: "32.0.1",
        upgrades_from: &["31.0", "32.0"],
        minimum_from: Some("31.0.5"),
        broken: true,
    },
];

/// The release of [`NEXTCLOUD_RELEASES`] with this version.
pub fn nextcloud_release(version: &str) -> NextcloudRelease {
    *NEXTCLOUD_RELEASES
        .iter()
        .find(|r| r.version == version)
        .unwrap_or_else(|| panic!("no Nextcloud stand-in release {version}"))
}

/// The tag of the Nextcloud stand-in at `version` (of
/// [`NEXTCLOUD_RELEASES`]). All versions share every layer but the last,
/// which writes the release's `/usr/src/nextcloud`.
pub async fn nextcloud(docker: &Docker, version: &str) -> String {
    image(
        docker,
        "nextcloud",
        &nextcloud_release(version).build_args(),
    )
    .await
}

/// The Discourse stand-in releases (`DISCOURSE_VERSION`) and the
/// migrations each carries; 3.5.0 is the catalog's.
pub const DISCOURSE_RELEASES: [(&str, &[&str]); 2] = [
    ("3.4.0", &["20240912000000", "20250121000000"]),
    (
        "3.5.0",
        &[
            "20240912000000",
            "20250121000000",
            "20250610000000",
            "20250722000000",
        ],
    ),
];

/// The tag of the Discourse stand-in at `version` (of
/// [`DISCOURSE_RELEASES`]; 3.5.0 is the Dockerfile's default).
pub async fn discourse(docker: &Docker, version: &str) -> String {
    assert!(
        DISCOURSE_RELEASES.iter().any(|(v, _)| *v == version),
        "no Discourse stand-in release {version}"
    );
    if version == "3.5.0" {
        image(docker, "discourse", &[]).await
    } else {
        image(docker, "discourse", &[("DISCOURSE_VERSION", version)]).await
    }
}

/// The tag of the real image `name` (`postgres:15`, `postgres:17`,
/// `redis`) built from Debian's packages by `images/testing/debian-image.sh`
/// (`provision/test.sh` builds them before the tests; a test building one
/// itself takes about a minute). Looked up once per test process.
pub fn debian(name: &str) -> String {
    static TAGS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut tags = TAGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, tag)) = tags.iter().find(|(n, _)| n == name) {
        return tag.clone();
    }
    let tag = commonscloud::docker::context::debian_image(&images_dir(), name)
        .unwrap_or_else(|e| panic!("{e}"));
    tags.push((name.to_owned(), tag.clone()));
    tag
}

/// The test image of a catalog role (`commonscloud::docker::context::TEST_IMAGES`).
pub async fn test_image(
    docker: &Docker,
    source: commonscloud::docker::context::TestImage,
) -> String {
    use commonscloud::docker::context::TestImage;
    match source {
        TestImage::Standin { dir, args } => image(docker, dir, args).await,
        TestImage::Debian(name) => debian(name),
    }
}

/// Removes images of `name` built from other sources more than an hour ago
/// (best effort: one in use stays; another checkout's fresh build too).
async fn prune_stale(docker: &Docker, name: &str, source: &str) {
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 - 3600);
    let filters = HashMap::from([("label".to_owned(), vec![LABEL_STANDIN.to_owned()])]);
    let Ok(images) = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for i in images {
        let label = i
            .labels
            .get(LABEL_STANDIN)
            .map(String::as_str)
            .unwrap_or("");
        let (of, from) = label.split_once(' ').unwrap_or((label, ""));
        if of == name && from != source && i.created < hour_ago {
            let _ = docker
                .remove_image(&i.id, None::<RemoveImageOptions>, None)
                .await;
        }
    }
}

/// A container to run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Part of its name.
    pub what: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    /// (volume, target)
    pub volumes: Vec<(String, String)>,
    /// (host path, target), read-only.
    pub binds: Vec<(PathBuf, String)>,
    /// (network, aliases); the first is joined at creation. None: the
    /// lab's own network (never Docker's default bridge).
    pub networks: Vec<(String, Vec<String>)>,
    /// A container port to publish on 127.0.0.1.
    pub publish: Option<u16>,
    /// A `CMD` health check, run every second.
    pub health: Option<Vec<String>>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub memory_mb: Option<u64>,
}

impl Run {
    pub fn new(what: &str, image: &str) -> Self {
        Run {
            what: what.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A started container: its name, and the host port when published.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub port: Option<u16>,
}

/// What `docker exec` gave.
#[derive(Debug, Clone)]
pub struct Exec {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    /// The output, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// One test's Docker objects; all removed on drop.
pub struct Lab {
    pub docker: Docker,
    pub run: String,
    n: AtomicU32,
    pub dir: tempfile::TempDir,
    default_net: tokio::sync::OnceCell<String>,
}

impl Lab {
    pub async fn new() -> Lab {
        static N: AtomicU32 = AtomicU32::new(0);
        let docker = commonscloud::docker::connect(
            &commonscloud::docker::socket_path(),
            Duration::from_secs(120),
        )
        .await
        .expect("the Docker Engine");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Lab {
            docker,
            run: format!(
                "cct-{}-{}-{:05x}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                nanos & 0xfffff
            ),
            n: AtomicU32::new(0),
            dir: tempfile::Builder::new()
                .prefix("cct-")
                .tempdir()
                .expect("tempdir"),
            default_net: tokio::sync::OnceCell::new(),
        }
    }

    /// A unique name: `<run>-<n>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!(
            "{}-{}-{what}",
            self.run,
            self.n.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(LABEL_TEST.to_owned(), self.run.clone())])
    }

    /// A file in the lab's temp dir (a secret to bind), with `mode`.
    /// A secret file for a bind mount, `mode` and owned like the daemon's.
    pub fn secret(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.path().join("secrets");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // Owned as on an appliance: by the daemon's system user, which is
        // neither root nor any user inside the images.
        std::os::unix::fs::chown(&path, Some(DAEMON_UID), Some(DAEMON_UID)).unwrap();
        path
    }

    pub async fn network(&self, internal: bool) -> String {
        let name = self.name(if internal { "db" } else { "net" });
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                internal: Some(internal),
                labels: Some(self.labels()),
                ..Default::default()
            })
            .await
            .expect("create network");
        name
    }

    pub async fn volume(&self) -> String {
        let name = self.name("vol");
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(self.labels()),
                ..Default::default()
            })
            .await
            .expect("create volume");
        name
    }

    /// Creates and starts a container.
    pub async fn start(&self, run: &Run) -> Started {
        let name = self.name(&run.what);
        let host_port = run.publish.map(|_| super::free_port());
        let mut endpoints = HashMap::new();
        let mut networks = run.networks.clone();
        if networks.is_empty() {
            let net = self
                .default_net
                .get_or_init(|| self.network(false))
                .await
                .clone();
            networks.push((net, vec![run.what.clone()]));
        }
        if let Some((net, aliases)) = networks.first() {
            endpoints.insert(
                net.clone(),
                EndpointSettings {
                    aliases: Some(aliases.clone()),
                    ..Default::default()
                },
            );
        }
        let mut binds: Vec<String> = run
            .volumes
            .iter()
            .map(|(v, t)| format!("{v}:{t}"))
            .collect();
        binds.extend(
            run.binds
                .iter()
                .map(|(h, t)| format!("{}:{t}:ro", h.display())),
        );
        let port_bindings = run.publish.zip(host_port).map(|(c, h)| {
            HashMap::from([(
                format!("{c}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(h.to_string()),
                }]),
            )])
        });
        let body = ContainerCreateBody {
            image: Some(run.image.clone()),
            env: Some(run.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            entrypoint: run.entrypoint.clone(),
            cmd: run.cmd.clone(),
            user: run.user.clone(),
            labels: Some(self.labels()),
            exposed_ports: run.publish.map(|p| vec![format!("{p}/tcp")]),
            healthcheck: run.health.as_ref().map(|test| HealthConfig {
                test: Some(test.clone()),
                interval: Some(1_000_000_000),
                timeout: Some(5_000_000_000),
                retries: Some(3),
                start_period: Some(60_000_000_000),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings,
                cap_add: (!run.cap_add.is_empty()).then(|| run.cap_add.clone()),
                cap_drop: (!run.cap_drop.is_empty()).then(|| run.cap_drop.clone()),
                memory: run.memory_mb.map(|m| (m * 1024 * 1024) as i64),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("create {name} from {}: {e}", run.image));
        for (net, aliases) in networks.iter().skip(1) {
            self.docker
                .connect_network(
                    net,
                    NetworkConnectRequest {
                        container: name.clone(),
                        endpoint_config: Some(EndpointSettings {
                            aliases: Some(aliases.clone()),
                            ..Default::default()
                        }),
                    },
                )
                .await
                .expect("connect network");
        }
        self.docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Started {
            name,
            port: host_port,
        }
    }

    /// Sends `signal` (`SIGTERM`, …) to the container's main process.
    pub async fn kill(&self, container: &str, signal: &str) {
        self.docker
            .kill_container(
                container,
                Some(bollard::query_parameters::KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("kill -s {signal} {container}: {e}"));
    }

    /// Removes a container (stopping it first).
    pub async fn remove(&self, container: &str) {
        self.docker
            .remove_container(
                container,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("remove {container}: {e}"));
    }

    /// Runs `sh -c <script>` as root in a throwaway container of `image`
    /// with `volumes` mounted, to its end: (exit code, output).
    pub async fn sh(&self, image: &str, volumes: &[(&str, &str)], script: &str) -> (i64, String) {
        let mut r = Run::new("sh", image);
        r.entrypoint = Some(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        r.cmd = Some(vec![]);
        r.user = Some("root".into());
        r.volumes = volumes
            .iter()
            .map(|(v, t)| ((*v).to_owned(), (*t).to_owned()))
            .collect();
        let c = self.start(&r).await;
        let code = self.wait_exit(&c.name, Duration::from_secs(60)).await;
        let out = self.logs(&c.name).await;
        self.remove(&c.name).await;
        (code, out)
    }

    /// Starts a stopped container again.
    pub async fn start_again(&self, container: &str) {
        self.docker
            .start_container(
                container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap_or_else(|e| panic!("start {container}: {e}"));
    }

    /// Polls the container's output until it contains `needle`; the
    /// output (panics after `timeout`).
    pub async fn wait_log(&self, container: &str, needle: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let logs = self.logs(container).await;
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < until,
                "{container} never logged {needle:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `docker exec -u <user> <container> <cmd…>` in the image's workdir.
    pub async fn exec(&self, container: &str, user: &str, cmd: &[&str]) -> Exec {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|c| (*c).to_owned()).collect()),
                    user: Some(user.to_owned()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?} in {container}: {e}"));
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .expect("start exec")
        {
            while let Some(Ok(chunk)) = output.next().await {
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.push_str(&String::from_utf8_lossy(&message));
                    }
                    other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                }
            }
        }
        let code = self
            .docker
            .inspect_exec(&created.id)
            .await
            .expect("inspect exec")
            .exit_code
            .unwrap_or(-1);
        Exec {
            code,
            stdout,
            stderr,
        }
    }

    /// `cat` of a file in the container (as root), which must exist.
    pub async fn cat(&self, container: &str, path: &str) -> String {
        let e = self.exec(container, "root", &["cat", path]).await;
        assert_eq!(e.code, 0, "cat {path} in {container}: {}", e.show());
        e.stdout
    }

    /// The container's output so far.
    pub async fn logs(&self, container: &str) -> String {
        let mut s = self.docker.logs(
            container,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "all".into(),
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out
    }

    /// Waits for the container to exit; its exit code (panics after
    /// `timeout`).
    pub async fn wait_exit(&self, container: &str, timeout: Duration) -> i64 {
        let mut s = self
            .docker
            .wait_container(container, None::<WaitContainerOptions>);
        let r = tokio::time::timeout(timeout, s.next()).await;
        match r {
            Ok(Some(Ok(w))) => w.status_code,
            // bollard reports a non-zero exit as an error.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            other => panic!(
                "{container} did not exit within {timeout:?}: {other:?}\nlogs:\n{}",
                self.logs(container).await
            ),
        }
    }

    /// Waits until Docker says the container is healthy; panics with its
    /// logs if it exits or stays unhealthy.
    pub async fn wait_healthy(&self, container: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            let state = self
                .docker
                .inspect_container(container, None)
                .await
                .expect("inspect")
                .state
                .unwrap_or_default();
            let health = state.health.as_ref().and_then(|h| h.status);
            if health == Some(HealthStatusEnum::HEALTHY) {
                return;
            }
            if state.running != Some(true) || Instant::now() > until {
                panic!(
                    "{container} is not healthy (running: {:?}, health: {:?}, exit: {:?})\nhealth log: {:?}\nlogs:\n{}",
                    state.running,
                    health,
                    state.exit_code,
                    state.health.and_then(|h| h.log),
                    self.logs(container).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Lab {
    /// Removes every container, network and volume labelled with this run.
    fn drop(&mut self) {
        let run = self.run.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(remove_run(&run));
        });
        let _ = cleanup.join();
    }
}

/// Removes what carries `org.commonscloud.test=<run>`.
pub async fn remove_run(run: &str) {
    let Ok(docker) = commonscloud::docker::connect(
        &commonscloud::docker::socket_path(),
        Duration::from_secs(60),
    )
    .await
    else {
        return;
    };
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_TEST}={run}")])]);
    if let Ok(cs) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
    {
        for c in cs {
            if let Some(id) = c.id {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
        }
    }
    if let Ok(ns) = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for n in ns {
            if let Some(id) = n.id {
                let _ = docker.remove_network(&id).await;
            }
        }
    }
    if let Ok(vs) = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
    {
        for v in vs.volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await;
        }
    }
}

/// What an HTTP request gave: status, headers (lower-cased names), body.
pub type HttpAnswer = (u16, Vec<(String, String)>, String);

/// A plain HTTP/1.1 request to 127.0.0.1:`port`.
pub fn try_http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpAnswer, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    // `Host: 127.0.0.1:<port>` unless the caller names one.
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    req.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    ));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status from port {port}: {text:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// [`try_http`] that must get an answer.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    try_http(method, port, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Polls `GET path` until it answers `want`, up to `timeout`; the body.
pub async fn wait_http(port: u16, path: &str, want: u16, timeout: Duration) -> String {
    let until = Instant::now() + timeout;
    loop {
        let got = try_http("GET", port, path, &[], b"");
        if let Ok((status, _, body)) = &got
            && *status == want
        {
            return body.clone();
        }
        assert!(
            Instant::now() < until,
            "GET {path} on {port} never answered {want}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
