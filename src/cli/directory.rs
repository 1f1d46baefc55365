//! `commonscloud directory …`: asks the daemon, which owns slapd.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::api::client;
use crate::doctor::Level;

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Self-test the directory: schema, modules, overlays, ACLs, tree, accounts.
    ///
    /// Exits 0 when every check passes, 2 otherwise.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the directory's data as LDIF (slapcat). It holds password hashes.
    Export {
        /// Write to this file (created 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub async fn run(config_path: &Path, cmd: DirectoryCommand) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    match cmd {
        DirectoryCommand::Check { json } => {
            let (code, body) = client::get(&socket, "/v1/directory/check").await?;
            anyhow::ensure!(
                code == 200,
                "the daemon answered {code}: {}",
                String::from_utf8_lossy(&body)
            );
            let v: serde_json::Value =
                serde_json::from_slice(&body).context("reading the check")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for c in v["checks"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let level = match c["level"].as_str() {
                        Some("ok") => Level::Ok,
                        Some("warn") => Level::Warn,
                        _ => Level::Fail,
                    };
                    let fix = c["fix"].as_str().filter(|f| !f.is_empty());
                    println!(
                        "{} {:<12} {}{}",
                        level.symbol(),
                        c["name"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default(),
                        fix.map(|f| format!(" → fix: {f}")).unwrap_or_default()
                    );
                }
            }
            Ok(v["exit_code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(2))
        }
        DirectoryCommand::Export { output } => {
            let (code, body) = client::get(&socket, "/v1/directory/export").await?;
            anyhow::ensure!(
                code == 200,
                "the daemon answered {code}: {}",
                String::from_utf8_lossy(&body)
            );
            match output {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    f.write_all(&body)?;
                    eprintln!("wrote {} ({} bytes)", path.display(), body.len());
                }
                None => std::io::stdout().write_all(&body)?,
            }
            Ok(0)
        }
    }
}
