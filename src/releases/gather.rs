//! Reads what the planner needs from this box: each role's version from
//! the app itself, the databases' sizes, free space where Docker keeps its
//! data, the images present. `releases::facts` decides what the readings
//! mean.
//!
//! Adapter: IO through `docker` and `sys` only; decides nothing.

use std::collections::BTreeMap;
use std::path::Path;

use bollard::Docker;

use super::facts::{self, Facts, Reading};
use super::manifest::{self, Kind, Manifest};
use super::plan::BoxFacts;
use crate::config::{Config, ImageRole};
use crate::docker::inventory::{self, ContainerInfo};
use crate::docker::{DockerError, objects};
use crate::model::{Arch, Version};

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "hardware profile {profile} names architecture `{arch}`, which releases do not know: expected x86_64, aarch64 or armv7"
    )]
    Arch { profile: String, arch: String },
}

/// Where the official images keep PostgreSQL's data unless `PGDATA` says.
const PGDATA: &str = "/var/lib/postgresql/data";
/// Discourse's code in the web-only image.
const DISCOURSE_HOME: &str = "/var/www/discourse";

/// The facts of this box: its apps' containers (managed by this instance),
/// read one by one. The manifest, when given, names the images its digests
/// stand for (for apps that report no version of their own).
pub async fn gather(
    docker: &Docker,
    config: &Config,
    manifest: Option<&Manifest>,
) -> Result<Facts, GatherError> {
    let profile = config.profile();
    let arch: Arch = profile.arch.parse().map_err(|_| GatherError::Arch {
        profile: profile.name.clone(),
        arch: profile.arch.clone(),
    })?;
    let mut readings = Vec::new();
    let mut database_bytes = BTreeMap::new();
    let ours = [
        (crate::apps::LABEL_MANAGED, "true"),
        (crate::apps::LABEL_INSTANCE, config.apps.prefix.as_str()),
    ];
    for info in inventory::containers(docker, &ours).await? {
        let Some(role) = info
            .labels
            .get(crate::apps::LABEL_ROLE)
            .and_then(|r| manifest::role_named(r))
        else {
            continue; // the cron sidecar and anything else without an image of its own
        };
        let (reading, db) = read(docker, &info, role).await?;
        if let Some(bytes) = db {
            database_bytes.entry(manifest::app(role)).or_insert(bytes);
        }
        readings.push(reading);
    }
    let free_bytes = match inventory::root_dir(docker).await? {
        Some(dir) => crate::sys::disk(Path::new(&dir)).ok().map(|d| d.free_bytes),
        None => None,
    };
    let appliance_version: Version = env!("CARGO_PKG_VERSION")
        .parse()
        .unwrap_or_else(|_| unreachable!("the crate's version is a version"));
    Ok(Facts {
        installed: facts::installed(&readings, manifest),
        host: BoxFacts {
            arch,
            appliance_version,
            free_bytes,
            database_bytes,
            images_present: inventory::image_digests(docker).await?,
        },
    })
}

/// One container's reading for `role`; for a database, its size on disk.
pub async fn read(
    docker: &Docker,
    info: &ContainerInfo,
    role: ImageRole,
) -> Result<(Reading, Option<u64>), DockerError> {
    let mut reading = Reading {
        running: info.running,
        repo_digests: info.repo_digests.clone(),
        labels: info.labels.clone(),
        env: info.env.clone(),
        ..Reading::new(Some(role), &info.image)
    };
    if !info.running {
        let why = format!("container {} is not running", info.name);
        reading.data_report = Err(why.clone());
        reading.code_report = Err(why);
        return Ok((reading, None));
    }
    let name = info.name.as_str();
    let mut db = None;
    match manifest::kind(role) {
        Kind::Nextcloud => {
            reading.data_report = run(docker, name, &["cat", "/var/www/html/version.php"]).await?;
            reading.code_report =
                run(docker, name, &["cat", "/usr/src/nextcloud/version.php"]).await?;
        }
        Kind::Postgres => {
            let pgdata = info.env.get("PGDATA").map_or(PGDATA, String::as_str);
            reading.data_report =
                run(docker, name, &["cat", &format!("{pgdata}/PG_VERSION")]).await?;
            reading.code_report = run(docker, name, &["postgres", "--version"]).await?;
            db = run(docker, name, &["du", "-sk", pgdata])
                .await?
                .ok()
                .and_then(|out| {
                    let kib: u64 = out.split_whitespace().next()?.parse().ok()?;
                    Some(kib * 1024)
                });
        }
        Kind::Redis => {
            reading.code_report = run(docker, name, &["redis-server", "--version"]).await?;
        }
        Kind::Discourse => {
            reading.code_report = run(
                docker,
                name,
                &["cat", &format!("{DISCOURSE_HOME}/lib/version.rb")],
            )
            .await?;
        }
        Kind::Collabora => {}
    }
    Ok((reading, db))
}

/// Runs `cmd` in the container as its image's user: its output, or what
/// went wrong (a command missing, a file absent) as the reason.
async fn run(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
) -> Result<Result<String, String>, DockerError> {
    let out = objects::exec(
        docker,
        container,
        "",
        None,
        cmd.iter().map(|s| (*s).to_owned()).collect(),
    )
    .await?;
    Ok(if out.exit_code == 0 {
        Ok(out.stdout)
    } else {
        let said = out.stderr.lines().next().unwrap_or("").trim().to_owned();
        Err(format!(
            "`{}` in {container} exited {}{}",
            cmd.join(" "),
            out.exit_code,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))
    })
}
