//! `commonscloud plan`: what a reconcile would do now, as a dry run.

use std::path::Path;
use std::time::Duration;

use crate::reconcile::{self, Observed};

pub async fn run(config_path: &Path, json: bool) -> anyhow::Result<i32> {
    let config = crate::config::load(config_path)?;
    let desired = match crate::reconcile::apply::desired(&config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", config_path.display());
            return Ok(2);
        }
    };
    let store = std::sync::Mutex::new(crate::store::Store::open(&config.paths.state_dir)?);
    let socket = crate::docker::socket_path();
    let observed = match crate::docker::connect(&socket, Duration::from_secs(10)).await {
        Ok(docker) => crate::reconcile::apply::observe(&docker, &config, &desired, &store).await?,
        Err(e) => {
            eprintln!("! {e}\n  showing the plan for a box where no app exists yet");
            let mut o = Observed::default();
            for s in &desired.secrets {
                if config.paths.secrets_dir.join(&s.name).exists() {
                    o.secrets.insert(s.name.clone());
                }
            }
            o
        }
    };
    let steps = reconcile::plan(&desired, &observed);
    if json {
        println!("{}", serde_json::to_string_pretty(&steps)?);
    } else if steps.is_empty() {
        println!("nothing to do: the apps are as the config wants them");
    } else {
        for (i, s) in steps.iter().enumerate() {
            println!("{:>3}. {}", i + 1, s.describe());
        }
    }
    Ok(0)
}
