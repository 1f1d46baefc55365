//! The app catalog and the desired state (pure). From the config, the
//! hardware profile and the release's image pins it computes every network,
//! volume and container the apps need, and the wiring steps that connect
//! them to the directory and to each other. Nothing here talks to Docker:
//! `reconcile` compares this with what Docker has and plans the changes.
//!
//! One file per app: [`postgres`], [`redis`], [`nextcloud`], [`collabora`],
//! [`discourse`].

pub mod access;
pub mod collabora;
pub mod discourse;
pub mod nextcloud;
pub mod postgres;
pub mod redis;

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, ImageRole};
use crate::model::AppName;

/// Docker's labels on every object the daemon manages (`docker` owns them:
/// it touches nothing without them).
pub use crate::docker::{LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED, LABEL_ROLE, LABEL_SPEC};

/// A value that may be secret: secrets are named, read from `secrets_dir`
/// only when applied, and shown redacted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Plain(String),
    /// The contents of `<secrets_dir>/<name>`.
    Secret(String),
}

impl Value {
    pub fn plain(s: impl Into<String>) -> Self {
        Value::Plain(s.into())
    }

    /// How a plan shows it.
    pub fn shown(&self) -> String {
        match self {
            Value::Plain(v) => v.clone(),
            Value::Secret(name) => format!("<secret {name}>"),
        }
    }
}

/// A plain value (short, for the catalog files).
pub fn p(s: impl Into<String>) -> Value {
    Value::Plain(s.into())
}

/// A secret the apps need, generated once in `secrets_dir` (0600).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SecretSpec {
    pub name: String,
    /// Random bytes, hex-encoded in the file.
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    pub name: String,
    /// No route out: for databases.
    pub internal: bool,
    /// For the apps' bridge: fixed, so slapd can listen on its gateway.
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    /// `commonscloud-<app>-<purpose>`.
    pub name: String,
    pub app: AppName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    Volume(String),
    /// `<secrets_dir>/<name>`, bound read-only.
    Secret(String),
    /// `<state_dir>/<path>`: public files of the appliance's (certificates),
    /// bound read-only.
    State(String),
}

/// Where [`Ctx::tls_mount`] puts `<state_dir>/tls` in a container.
pub const TLS_DIR: &str = "/run/commonscloud/tls";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Health {
    /// Docker's `CMD` form.
    pub test: Vec<String>,
    pub interval_s: u32,
    pub timeout_s: u32,
    pub retries: u32,
    pub start_period_s: u32,
}

/// One container, fully decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerSpec {
    /// `<prefix>-<role>`.
    pub name: String,
    /// The appliance's `apps.prefix`.
    pub instance: String,
    pub app: AppName,
    /// e.g. `nextcloud`, `nextcloud-cron`, `nextcloud-db`.
    pub role: String,
    pub image: String,
    pub env: BTreeMap<String, Value>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub mounts: Vec<Mount>,
    /// Networks, each with the container's alias there (its role).
    pub networks: Vec<String>,
    pub health: Option<Health>,
    pub memory_mb: u64,
    /// `unless-stopped`: Docker restarts it, also after a reboot.
    pub restart: String,
    pub cap_add: Vec<String>,
    /// Docker's default capabilities this container does without (see
    /// [`harden`]).
    pub cap_drop: Vec<String>,
    /// `(host port on 127.0.0.1, container port)` for the front door.
    pub publish: Option<(u16, u16)>,
}

impl ContainerSpec {
    /// A short, stable hash of everything above: a container whose label
    /// differs has drifted and is recreated.
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED.into(), "true".into()),
            (LABEL_INSTANCE.into(), self.instance.clone()),
            (LABEL_APP.into(), self.app.to_string()),
            (LABEL_ROLE.into(), self.role.clone()),
            (LABEL_SPEC.into(), self.spec_hash()),
        ])
    }
}

/// A step that connects an app to the directory or to another app, run
/// once the app is ready. Each checks before it changes, so running it
/// again is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Wiring {
    /// `php occ <args>` as www-data in the container.
    Occ { container: String, args: Vec<Value> },
    /// A Nextcloud group folder for a collective, shared with its members
    /// group: created unless a folder of that name exists, then granted.
    GroupFolder {
        container: String,
        folder: String,
        group: String,
    },
    /// A command in the container, as `user`.
    Exec {
        container: String,
        user: String,
        cmd: Vec<Value>,
    },
    /// A Discourse site setting through the admin API.
    DiscourseSetting {
        container: String,
        name: String,
        value: Value,
    },
    /// A Discourse group for a collective, created through the admin API
    /// unless one of that name exists: DiscourseConnect's `add_groups` only
    /// fills groups that exist.
    DiscourseGroup {
        container: String,
        name: String,
        full_name: String,
    },
}

impl Wiring {
    /// The step as an admin reads it, secrets redacted.
    pub fn describe(&self) -> String {
        match self {
            Wiring::Occ { container, args } => format!("{container}: occ {}", words(args)),
            Wiring::GroupFolder {
                container,
                folder,
                group,
            } => format!(
                "{container}: occ groupfolders:create {} (unless it exists), then occ groupfolders:group <its id> {} write share delete",
                shell_word(folder),
                shell_word(group)
            ),
            Wiring::Exec {
                container,
                user,
                cmd,
            } => format!("{container}: exec as {user}: {}", words(cmd)),
            Wiring::DiscourseSetting {
                container,
                name,
                value,
            } => format!(
                "{container}: PUT /admin/site_settings/{name} {}",
                shell_word(&value.shown())
            ),
            Wiring::DiscourseGroup {
                container,
                name,
                full_name,
            } => format!(
                "{container}: POST /admin/groups name={} full_name={} (unless GET /groups/{name}.json finds it)",
                shell_word(name),
                shell_word(full_name)
            ),
        }
    }

    /// The container the step runs in (or talks to).
    pub fn container(&self) -> &str {
        match self {
            Wiring::Occ { container, .. }
            | Wiring::GroupFolder { container, .. }
            | Wiring::Exec { container, .. }
            | Wiring::DiscourseSetting { container, .. }
            | Wiring::DiscourseGroup { container, .. } => container,
        }
    }

    /// Identity for the journal: changes when the step's content does.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A command line for display, secrets redacted.
fn words(args: &[Value]) -> String {
    args.iter()
        .map(|a| shell_word(&a.shown()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word the way a shell would need it, for display only.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%,+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Everything the apps need, in bring-up order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// `apps.prefix`: the instance label every object carries.
    pub instance: String,
    pub networks: Vec<NetworkSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub secrets: Vec<SecretSpec>,
    /// Databases before the apps that use them.
    pub containers: Vec<ContainerSpec>,
    /// Per app, in order.
    pub wiring: Vec<(AppName, Wiring)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppsError {
    #[error(
        "{reason}: set [apps] enabled to fewer apps, choose a bigger hardware profile, or set [apps] force = true to run them anyway"
    )]
    DoesNotFit { reason: String },
    #[error("{app} has no image for {arch}: disable it in [apps] enabled")]
    NoImageForArch { app: AppName, arch: String },
}

/// Labels for a network or volume of this instance.
pub fn object_labels(instance: &str, app: Option<AppName>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
    ]);
    if let Some(app) = app {
        l.insert(LABEL_APP.into(), app.to_string());
    }
    l
}

/// Release pins: the image of each role, by digest when known.
pub fn release_image(role: ImageRole) -> &'static str {
    match role {
        ImageRole::Nextcloud => "nextcloud:31-apache",
        ImageRole::NextcloudDb => "postgres:16-alpine",
        ImageRole::NextcloudRedis | ImageRole::DiscourseRedis => "redis:7-alpine",
        ImageRole::Collabora => "collabora/code:25.04.5.1.1",
        ImageRole::Discourse => "discourse/discourse:3.5.0",
        ImageRole::DiscourseDb => "pgvector/pgvector:pg16",
    }
}

/// What every app's catalog file gets.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub config: &'a Config,
    /// The collectives in the directory: `(slug, human name)`.
    pub collectives: &'a [(crate::model::CollectiveSlug, String)],
    pub enabled: &'a [AppName],
    /// Memory for this app and its databases and sidecars (MB).
    pub memory_mb: u64,
}

impl Ctx<'_> {
    pub fn image(&self, role: ImageRole) -> String {
        self.config
            .apps
            .images
            .get(&role)
            .map_or_else(|| release_image(role).to_owned(), |i| i.to_string())
    }

    pub fn enabled(&self, app: AppName) -> bool {
        self.enabled.contains(&app)
    }

    pub fn host(&self, app: AppName) -> String {
        hostname(self.config, app)
    }

    /// The loopback port an app's web container publishes on.
    pub fn port(&self, app: AppName) -> u16 {
        published_port(self.config, app)
    }

    /// Where the apps reach slapd: LDAPS on the bridge's gateway, on the
    /// port of the first `directory.listen` URL.
    pub fn ldap_url(&self) -> String {
        self.config
            .apps_ldap_url()
            .unwrap_or_else(|| format!("ldaps://{}:636", self.config.apps.subnet.gateway()))
    }

    /// Where a container finds the appliance's public TLS files (the local
    /// CA's certificate among them), bound read-only: the directory, not the
    /// file, so a CA made anew later is seen without recreating anything.
    pub fn tls_mount(&self) -> Mount {
        Mount {
            source: MountSource::State("tls".into()),
            target: TLS_DIR.into(),
            read_only: true,
        }
    }

    /// `<prefix>-<role>`: a container's name.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.config.apps.prefix)
    }

    /// `<prefix>-<app>-<purpose>`.
    pub fn volume(&self, app: AppName, purpose: &str) -> VolumeSpec {
        VolumeSpec {
            name: format!("{}-{app}-{purpose}", self.config.apps.prefix),
            app,
        }
    }

    /// The apps' bridge: `<prefix>`.
    pub fn net_apps(&self) -> String {
        self.config.apps.prefix.to_string()
    }

    /// An app's own internal network, for its database and cache:
    /// `<prefix>-<app>-backend`. One per app, so that no app's container
    /// can reach another app's database or cache.
    pub fn net_backend(&self, app: AppName) -> String {
        format!("{}-{app}-backend", self.config.apps.prefix)
    }

    /// That network, as the desired state lists it: internal (no route
    /// out, no gateway to other networks).
    pub fn backend_network(&self, app: AppName) -> NetworkSpec {
        NetworkSpec {
            name: self.net_backend(app),
            internal: true,
            subnet: None,
        }
    }

    /// A container with the defaults every one shares.
    pub fn base(&self, app: AppName, role: &str, image: String, memory_mb: u64) -> ContainerSpec {
        ContainerSpec {
            name: self.name(role),
            instance: self.config.apps.prefix.to_string(),
            app,
            role: role.into(),
            image,
            env: BTreeMap::new(),
            entrypoint: None,
            cmd: None,
            user: None,
            mounts: Vec::new(),
            networks: Vec::new(),
            health: None,
            memory_mb,
            restart: "unless-stopped".into(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            publish: None,
        }
    }

    /// A share of the app's memory (percent), at least 64 MB.
    pub fn share(&self, percent: u64) -> u64 {
        (self.memory_mb * percent / 100).max(64)
    }
}

/// The apps this config runs, refused with the reason when they do not fit
/// the board (unless forced).
pub fn enabled_apps(config: &Config) -> Result<Vec<AppName>, AppsError> {
    let profile = config.profile();
    let apps = config.apps.enabled.clone();
    if !config.apps.force
        && let Err(reason) = profile.fit(&apps)
    {
        return Err(AppsError::DoesNotFit { reason });
    }
    for app in &apps {
        if !image_exists_for(*app, &profile.arch) {
            return Err(AppsError::NoImageForArch {
                app: *app,
                arch: profile.arch.clone(),
            });
        }
    }
    Ok(apps)
}

/// Upstream publishes Nextcloud for amd64, arm64 and armv7; Collabora and
/// Discourse for amd64 and arm64 only.
fn image_exists_for(app: AppName, arch: &str) -> bool {
    match app {
        AppName::Nextcloud => ["x86_64", "aarch64", "armv7"].contains(&arch),
        AppName::Collabora | AppName::Discourse => ["x86_64", "aarch64"].contains(&arch),
    }
}

/// The whole desired state for a config, with the appliance's own
/// collective only (see [`desired_with`]).
pub fn desired(config: &Config) -> Result<Desired, AppsError> {
    desired_with(
        config,
        &[(
            config.collective.slug.clone(),
            config.collective.name.to_string(),
        )],
    )
}

/// The public hostname of an app (`cloud.`, `office.`, `forum.`).
pub fn hostname(config: &Config, app: AppName) -> String {
    config.app_hostname(app)
}

/// The loopback port an app's web container publishes on, where the front
/// door sends its traffic.
pub fn published_port(config: &Config, app: AppName) -> u16 {
    config.app_port(app)
}

/// The whole desired state for a config and the collectives the directory
/// holds (`(slug, name)`): each gets its Nextcloud group folder.
pub fn desired_with(
    config: &Config,
    collectives: &[(crate::model::CollectiveSlug, String)],
) -> Result<Desired, AppsError> {
    let enabled = enabled_apps(config)?;
    let profile = config.profile();
    let names = Ctx {
        config,
        collectives,
        enabled: &enabled,
        memory_mb: 0,
    };
    let mut d = Desired {
        instance: config.apps.prefix.to_string(),
        // No app, no networks: an appliance without apps leaves Docker alone.
        networks: if enabled.is_empty() {
            Vec::new()
        } else {
            vec![NetworkSpec {
                name: names.net_apps(),
                internal: false,
                subnet: Some(config.apps.subnet.to_string()),
            }]
        },
        volumes: Vec::new(),
        secrets: Vec::new(),
        containers: Vec::new(),
        wiring: Vec::new(),
    };
    for app in AppName::ALL {
        if !enabled.contains(&app) {
            continue;
        }
        let ctx = Ctx {
            config,
            collectives,
            enabled: &enabled,
            memory_mb: profile.app_memory_mb.get(&app).copied().unwrap_or(512),
        };
        let part = match app {
            AppName::Nextcloud => nextcloud::app(&ctx),
            AppName::Collabora => collabora::app(&ctx),
            AppName::Discourse => discourse::app(&ctx),
        };
        d.networks.extend(part.networks);
        d.volumes.extend(part.volumes);
        d.secrets.extend(part.secrets);
        d.containers.extend(part.containers.into_iter().map(harden));
        d.wiring.extend(part.wiring.into_iter().map(|w| (app, w)));
    }
    d.secrets.sort();
    d.secrets.dedup();
    Ok(d)
}

/// Capabilities Docker grants every container by default that no app
/// here uses: raw sockets (`NET_RAW`: ARP and ICMP spoofing on the apps'
/// bridge, packet capture), device nodes (`MKNOD`), writing to the host's
/// audit log (`AUDIT_WRITE`), setting file capabilities (`SETFCAP`) and
/// `chroot` (`SYS_CHROOT`). A container that needs one asks for it in
/// `cap_add` (Collabora: `MKNOD` and `SYS_CHROOT` for its jails).
pub const DROPPED_CAPS: [&str; 5] = ["AUDIT_WRITE", "MKNOD", "NET_RAW", "SETFCAP", "SYS_CHROOT"];

/// The container with every default capability it has no use for dropped:
/// [`DROPPED_CAPS`] but what it adds back, and `NET_BIND_SERVICE` unless it
/// serves a port below 1024 (the web servers on 80). The rest (`CHOWN`,
/// `DAC_OVERRIDE`, `FOWNER`, `FSETID`, `KILL`, `SETGID`, `SETUID`,
/// `SETPCAP`) the official images' entrypoints use as root: owning data
/// directories, reading the daemon's 0600 secret files, dropping to their
/// user, and a root parent signalling its workers.
pub fn harden(mut c: ContainerSpec) -> ContainerSpec {
    let mut drop: Vec<String> = DROPPED_CAPS
        .iter()
        .filter(|cap| !c.cap_add.iter().any(|a| a == *cap))
        .map(|cap| (*cap).to_owned())
        .collect();
    if c.publish.is_none_or(|(_, inner)| inner >= 1024) {
        drop.push("NET_BIND_SERVICE".into());
    }
    drop.sort();
    c.cap_drop = drop;
    c
}

/// One app's share of the desired state.
#[derive(Debug, Default)]
pub struct Part {
    /// Its own networks (its backend), after the shared apps' bridge.
    pub networks: Vec<NetworkSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub secrets: Vec<SecretSpec>,
    pub containers: Vec<ContainerSpec>,
    pub wiring: Vec<Wiring>,
}

/// A secret of 32 random bytes.
pub fn secret(name: &str) -> SecretSpec {
    SecretSpec {
        name: name.into(),
        bytes: 32,
    }
}

#[cfg(test)]
pub(crate) mod tests;
