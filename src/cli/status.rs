//! `commonscloud status`.

use std::path::Path;

use anyhow::Context;

use crate::api::client::{self, ClientError};
use crate::api::{ComponentState, Status};

pub async fn run(config_path: &Path, json: bool) -> anyhow::Result<i32> {
    let (socket, config_error) = crate::config::api_socket_lenient(config_path);
    if let Some(e) = config_error {
        eprintln!(
            "warning: {e}\n  (asking the daemon anyway; it keeps running on its last valid config)\n"
        );
    }
    let (code, body) = match client::get(&socket, "/v1/status").await {
        Ok(r) => r,
        Err(e @ ClientError::DaemonDown { .. }) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"running": false, "message": e.to_string()})
                );
            } else {
                eprintln!("{e}");
            }
            return Ok(3);
        }
        Err(e) => return Err(e.into()),
    };
    if code != 200 {
        anyhow::bail!(
            "the daemon answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let status: Status = serde_json::from_slice(&body).context("reading the daemon's status")?;
    if json {
        let mut v = serde_json::to_value(&status)?;
        v["running"] = serde_json::Value::Bool(true);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&status));
    }
    let bad = status
        .components
        .iter()
        .any(|c| matches!(c.state, ComponentState::Down));
    Ok(if bad { 1 } else { 0 })
}

fn render(s: &Status) -> String {
    let mut out = format!(
        "commonscloud {} · collective {} · up {} · pid {}\n\n",
        s.version,
        s.collective,
        human_duration(s.uptime_seconds),
        s.pid
    );
    let width = s.components.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &s.components {
        out.push_str(&format!(
            "{:<width$}  {:<8}  {}\n",
            c.name,
            c.state.as_str(),
            c.detail
        ));
    }
    if let Some(r) = &s.last_reload {
        out.push_str(&format!(
            "\nlast reload {}: {}\n",
            r.at,
            if r.applied {
                r.message.clone()
            } else {
                format!("refused: {}", r.message)
            }
        ));
    }
    out
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m05s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h01m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d01h");
    }
}
