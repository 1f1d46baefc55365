//! `commonscloud upgrade plan`: the path from what this box runs to a
//! release, as a dry run. Reads the box (through `releases::gather`) or a
//! facts file, and works without a running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use crate::releases::{self, Facts, Manifest, Refusal, UpgradePlan};

#[derive(Subcommand)]
pub enum UpgradeCommand {
    /// Show the path from what this box runs to a release, hop by hop,
    /// without changing anything.
    ///
    /// Each hop moves one app's container role one step: Nextcloud one
    /// major version at a time and through the patch releases its
    /// can-be-upgraded-from table requires, a PostgreSQL major as a dump and
    /// restore into a new cluster, Collabora after Nextcloud. For each hop it
    /// prints the expected downtime, the disk it needs, the snapshot taken
    /// before it and the check it must pass. A release this box cannot
    /// reach (a downgrade, an image the path needs but the release lacks,
    /// too little disk) is refused with the reason and a stable code.
    ///
    /// The box's versions are read from the apps themselves (Nextcloud's
    /// version.php, PostgreSQL's data directory and binaries, Redis and
    /// Discourse's own reports, then image labels), with free space on
    /// Docker's disk and the databases' sizes; this needs Docker, not the
    /// daemon. With --facts the box is described by a file instead.
    ///
    /// Exit status: 0 with a plan (or nothing to do), 2 when the release
    /// is refused, 1 when the manifest, the facts or Docker cannot be read.
    Plan {
        /// The release manifest, a JSON file (its schema and an example:
        /// docs/releases.md). Until the signed release channel exists, a
        /// file is the only source.
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Plan for the box this file describes (the "facts" object that
        /// --json prints) instead of reading this one: no Docker or
        /// config needed.
        #[arg(long, value_name = "FILE")]
        facts: Option<PathBuf>,
        /// Print JSON: {release, facts, plan} or {release, facts, refusal}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Output<'a> {
    release: &'a str,
    facts: &'a Facts,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a UpgradePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a Refusal>,
}

pub async fn run(config_path: &Path, cmd: UpgradeCommand) -> anyhow::Result<i32> {
    let UpgradeCommand::Plan {
        manifest,
        facts,
        json,
    } = cmd;
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading the manifest {}", manifest.display()))?;
    let m = Manifest::from_json(&text).with_context(|| format!("{}", manifest.display()))?;
    let facts = match facts {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the facts {}", path.display()))?;
            let de = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize::<_, Facts>(de)
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?
        }
        None => {
            let config = crate::config::load(config_path)?;
            let docker =
                crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(10))
                    .await
                    .context("reading this box's versions needs Docker (or give --facts FILE)")?;
            releases::gather::gather(&docker, &config, Some(&m)).await?
        }
    };
    let result = releases::plan(&facts.installed, &m, &facts.host);
    if json {
        let out = Output {
            release: m.release.as_str(),
            facts: &facts,
            plan: result.as_ref().ok(),
            refusal: result.as_ref().err(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match &result {
            Ok(p) => print!("{}", p.describe()),
            Err(r) => eprintln!("refused ({}): {r}", r.code),
        }
    }
    Ok(if result.is_ok() { 0 } else { 2 })
}
