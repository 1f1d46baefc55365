//! `commonscloud reconcile`: apply the plan now, with progress.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::reconcile::apply::{self, Progress, Settings, megabytes};

pub async fn run(config_path: &Path, ready_timeout: u64, json: bool) -> anyhow::Result<i32> {
    let config = crate::config::load(config_path)?;
    if let Err(e) = crate::apps::desired(&config) {
        eprintln!("{}: {e}", config_path.display());
        return Ok(2);
    }
    let store = Mutex::new(crate::store::Store::open(&config.paths.state_dir)?);
    let docker =
        crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(30)).await?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // Per layer of the image being pulled: (bytes so far, size).
    let layers: Mutex<HashMap<String, (i64, i64)>> = Mutex::new(HashMap::new());
    let pulled: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());
    let progress = |p: Progress<'_>| match p {
        Progress::Step {
            seq,
            of,
            description,
        } => {
            bar.set_length(of as u64);
            bar.set_position(seq as u64 - 1);
            bar.set_message(description.to_owned());
        }
        Progress::Pull {
            image,
            layer,
            current,
            total,
        } => {
            if let Ok(mut l) = layers.lock() {
                l.insert(layer.to_owned(), (current, total));
                let (done, size) = l.values().fold((0, 0), |(d, s), (c, t)| (d + c, s + t));
                bar.set_message(format!(
                    "pull {image}: {} of {} ({} layer(s))",
                    megabytes(done),
                    megabytes(size),
                    l.len()
                ));
            }
        }
        Progress::Pulled { image, bytes } => {
            if let Ok(mut l) = layers.lock() {
                l.clear();
            }
            if !json {
                bar.suspend(|| eprintln!("pulled {image} ({})", megabytes(bytes)));
            }
            if let Ok(mut p) = pulled.lock() {
                p.push((image.to_owned(), bytes));
            }
        }
    };
    let settings = Settings {
        config: &config,
        ready_timeout: Duration::from_secs(ready_timeout),
        progress: &progress,
    };
    let report = apply::reconcile(&docker, &store, &settings, "cli").await?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "run": report.run_id,
                "steps": report.steps,
                "pulled": pulled.lock().map(|p| p.iter().map(|(image, bytes)| serde_json::json!({"image": image, "bytes": bytes})).collect::<Vec<_>>()).unwrap_or_default(),
                "failed": report.failed.as_ref().map(|(app, step, cause)| serde_json::json!({"app": app, "step": step, "cause": cause})),
            })
        );
    } else if report.steps == 0 {
        println!("nothing to do: the apps are as the config wants them");
    } else if let Some((app, step, cause)) = &report.failed {
        eprintln!("reconcile failed\n  app:   {app}\n  step:  {step}\n  cause: {cause}");
        eprintln!(
            "fix the cause, then run `commonscloud reconcile` again: done steps are not redone"
        );
    } else {
        println!(
            "{} step(s) applied; the apps are as the config wants them",
            report.steps
        );
    }
    Ok(if report.failed.is_some() { 1 } else { 0 })
}
