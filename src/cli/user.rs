//! `commonscloud user …`: registration requests and people, through the
//! daemon.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use crate::api::client;

#[derive(Subcommand)]
pub enum UserCommand {
    /// List registration requests, newest first.
    List {
        /// Only requests in this state: email_unverified, awaiting_validation,
        /// approved, active, rejected or expired.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one registration request.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: the person's account is created and they are
    /// mailed a link to set their password.
    Approve {
        id: i64,
        /// Who decides (default: the Unix user running this).
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Reject a request; the reason is mailed to the person.
    Reject {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
}

fn actor(by: Option<String>) -> String {
    by.unwrap_or_else(|| {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        format!("cli:{user}")
    })
}

fn answer(code: u16, body: &[u8]) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(body).context("reading the daemon's answer")?;
    if !(200..300).contains(&code) {
        anyhow::bail!("{}", v["message"].as_str().unwrap_or("the daemon refused"));
    }
    Ok(v)
}

pub async fn run(config_path: &Path, cmd: UserCommand) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    match cmd {
        UserCommand::List { state, json } => {
            let path = match &state {
                Some(s) => format!("/v1/registrations?state={s}"),
                None => "/v1/registrations".into(),
            };
            let (code, body) = client::get(&socket, &path).await?;
            let v = answer(code, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no requests");
                }
                for r in rows {
                    println!(
                        "{:>5}  {:<20} {:<16} {:<32} {}",
                        r["id"],
                        r["state"].as_str().unwrap_or(""),
                        r["uid"].as_str().unwrap_or(""),
                        r["email"].as_str().unwrap_or(""),
                        r["display_name"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        UserCommand::Show { id, json } => {
            let (code, body) = client::get(&socket, &format!("/v1/registrations/{id}")).await?;
            let v = answer(code, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(map) = v.as_object() {
                for (k, val) in map {
                    println!(
                        "{k:<14} {}",
                        val.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| val.to_string())
                    );
                }
            }
            Ok(0)
        }
        UserCommand::Approve { id, by } => {
            let body = serde_json::json!({"by": actor(by)});
            let (code, resp) =
                client::post(&socket, &format!("/v1/registrations/{id}/approve"), &body).await?;
            answer(code, &resp)?;
            println!(
                "request {id} approved: the account exists and a set-password link is on its way"
            );
            Ok(0)
        }
        UserCommand::Reject { id, reason, by } => {
            let body = serde_json::json!({"by": actor(by), "reason": reason});
            let (code, resp) =
                client::post(&socket, &format!("/v1/registrations/{id}/reject"), &body).await?;
            answer(code, &resp)?;
            println!("request {id} rejected; the reason is mailed to the person");
            Ok(0)
        }
    }
}
