//! Gathers the facts `crate::doctor` judges, and prints its verdicts.

use std::path::Path;
use std::time::Duration;

use crate::doctor::{self, Facts, Level};
use crate::sys;

pub async fn run(config_path: &Path, json: bool) -> anyhow::Result<i32> {
    let config = crate::config::load(config_path).map_err(|e| e.to_string());
    let defaults = crate::config::Paths::default();
    let paths = config.as_ref().map(|c| c.paths.clone()).unwrap_or(defaults);
    let ports = config
        .as_ref()
        .map(|c| {
            let listening = sys::listening_ports();
            // Our own slapd holds the directory ports: that is no conflict.
            let ours =
                crate::directory::slapd::running_pid(&crate::directory::slapd::Paths::new(c))
                    .is_some();
            c.ports()
                .into_iter()
                .map(|(k, p)| {
                    let busy = listening.contains(&p) && !(ours && k == "directory.listen");
                    (k, p, busy)
                })
                .collect()
        })
        .unwrap_or_default();
    let daemon = match &config {
        Ok(c) => match crate::api::client::get(&c.api_socket(), "/healthz").await {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!(
                "the daemon answers {code}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Err(e.to_string()),
        },
        Err(_) => Err("not checked: no valid config".into()),
    };
    // Federation, as the daemon reports it (nothing when not federated).
    let federation = match (&config, &daemon) {
        (Ok(c), Ok(())) => match crate::api::client::get(&c.api_socket(), "/v1/alliance").await {
            Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                // Enrolled, or refused before it could enrol (by the config).
                .filter(|v| v["enrolment"].is_object() || v["link"]["refused"].is_string())
                .map(|v| doctor::FederationFacts {
                    url: v["enrolment"]["url"]
                        .as_str()
                        .unwrap_or("the alliance")
                        .to_owned(),
                    up: v["link"]["up"].as_bool().unwrap_or(false),
                    last_error: v["link"]["last_error"].as_str().map(str::to_owned),
                    pending: v["outbox"]["pending"].as_i64().unwrap_or(0),
                    oldest_pending_at: v["outbox"]["oldest_pending_at"].as_i64(),
                    failed: v["outbox"]["failed"].as_i64().unwrap_or(0),
                    refused: v["link"]["refused"].as_str().map(str::to_owned),
                    hold: v["hold"]
                        .as_object()
                        .filter(|h| h.get("confirmed_at").is_none_or(|c| c.is_null()))
                        .map(|h| {
                            let n = |k: &str| h.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
                            (n("delete") + n("keep"), n("keep"), n("local_copy"))
                        }),
                }),
            _ => None,
        },
        _ => None,
    };
    let facts = Facts {
        config_path: config_path.display().to_string(),
        docker: crate::docker::probe(&crate::docker::socket_path(), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string()),
        config,
        slapd: sys::find_program("slapd").map(|p| p.display().to_string()),
        slapadd: sys::find_program("slapadd").map(|p| p.display().to_string()),
        disk: sys::disk(&paths.state_dir),
        mem_total_mb: sys::mem_total_mb(),
        swap_total_mb: sys::swap_total_mb(),
        arch: std::env::consts::ARCH,
        now_unix: crate::clock::unix_now(),
        clock_synced: sys::clock_synced(),
        ports,
        daemon,
        federation,
    };
    let checks = doctor::evaluate(&facts);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "checks": checks,
                "exit_code": doctor::exit_code(&checks),
            }))?
        );
    } else {
        for c in &checks {
            let fix = if c.level == Level::Ok || c.fix.is_empty() {
                String::new()
            } else {
                format!(" → fix: {}", c.fix)
            };
            println!("{} {:<7} {}{fix}", c.level.symbol(), c.name, c.message);
        }
    }
    Ok(doctor::exit_code(&checks))
}
