//! `commonscloud purge APP`: delete a disabled app's data (its volumes),
//! after confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::model::AppName;

pub async fn run(config_path: &Path, app: AppName, yes: bool) -> anyhow::Result<i32> {
    let config = crate::config::load(config_path)?;
    let desired = crate::apps::desired(&config)?;
    let enabled = crate::apps::enabled_apps(&config)?;
    let store = Mutex::new(crate::store::Store::open(&config.paths.state_dir)?);
    let docker =
        crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(30)).await?;
    let observed = crate::reconcile::apply::observe(&docker, &config, &desired, &store).await?;
    let volumes = match crate::reconcile::purge_plan(&desired, &enabled, &observed, app) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    if volumes.is_empty() {
        println!("{app} has no data here: nothing to delete");
        return Ok(0);
    }
    println!("This deletes every file, message and database of {app}:");
    for v in &volumes {
        println!("  volume {v}");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("refusing without a terminal to confirm: pass --yes if you mean it");
            return Ok(2);
        }
        print!("Type `{app}` to delete it all, anything else to keep it: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != app.as_str() {
            println!("kept: nothing was deleted");
            return Ok(1);
        }
    }
    for v in &volumes {
        crate::docker::objects::remove_volume(&docker, v).await?;
        println!("deleted volume {v}");
    }
    {
        let s = store
            .lock()
            .map_err(|_| anyhow::anyhow!("the store lock is poisoned"))?;
        // Enabled again later, the app starts empty and is wired again.
        s.forget_wiring(app.as_str())?;
        let now = crate::clock::unix_now();
        s.audit(
            now,
            "cli",
            "purge",
            &format!("{app}: {}", volumes.join(", ")),
        )?;
    }
    Ok(0)
}
