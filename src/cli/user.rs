//! `commonscloud user …`: people and registration requests, through the
//! daemon.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::client;

#[derive(Subcommand)]
pub enum UserCommand {
    /// List the people in the directory and the requests awaiting a decision
    /// (with --state: the registration requests in that state only).
    List {
        /// Only the members of this collective.
        #[arg(long)]
        collective: Option<String>,
        /// Only registration requests in this state: email_unverified,
        /// awaiting_validation, approved, active, rejected or expired.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a person (by user name) or a registration request (by number).
    Show {
        who: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a registration request: the person's account is created and
    /// they are mailed a link to set their password.
    Approve {
        id: i64,
        /// Who decides (default: the Unix user running this).
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Reject a registration request; the reason is mailed to the person.
    Reject {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Suspend an account: it is locked in the directory, so no login works
    /// anywhere (console, apps, raw LDAP) until it is reactivated. The
    /// person is mailed the reason.
    Suspend {
        uid: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Lift a suspension.
    Reactivate {
        uid: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Take a person out of a collective and all its groups (their account
    /// stays; to stop every login, suspend them).
    Remove {
        uid: String,
        #[arg(long)]
        collective: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Make a member an admin of a collective.
    Promote {
        uid: String,
        #[arg(long)]
        collective: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Make an admin a plain member again.
    Demote {
        uid: String,
        #[arg(long)]
        collective: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Add a member to one of the collective's groups (see `collective
    /// add-group`), or remove them with --remove.
    Group {
        uid: String,
        #[arg(long)]
        collective: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        remove: bool,
        #[arg(long = "as")]
        by: Option<String>,
    },
}

/// Who acts: `--as`, else `cli:<the Unix user>`.
pub fn actor(by: Option<String>) -> String {
    by.unwrap_or_else(|| {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        format!("cli:{user}")
    })
}

/// The daemon's answer as JSON, or its message as the error.
pub fn answer(code: u16, body: &[u8]) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_slice(body).context("reading the daemon's answer")?;
    if !(200..300).contains(&code) {
        anyhow::bail!("{}", v["message"].as_str().unwrap_or("the daemon refused"));
    }
    Ok(v)
}

/// GET, checked.
pub async fn get(socket: &Path, path: &str) -> anyhow::Result<Value> {
    let (code, body) = client::get(socket, path).await?;
    answer(code, &body)
}

/// POST, checked.
pub async fn post(socket: &Path, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (code, resp) = client::post(socket, path, body).await?;
    answer(code, &resp)
}

/// Prints an object's fields one per line.
pub fn print_fields(v: &Value) {
    if let Some(map) = v.as_object() {
        for (k, val) in map {
            let shown = match val {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        Value::Array(pair) => pair
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join("/"),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            println!("{k:<22} {shown}");
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn person_line(p: &Value) -> String {
    let collectives: Vec<String> = p["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g[1] == "members" || g[1] == "admins")
        .map(|g| {
            let c = g[0].as_str().unwrap_or("");
            if g[1] == "admins" {
                format!("{c}(admin)")
            } else {
                c.to_owned()
            }
        })
        .collect();
    let state = if p["suspended"].as_bool() == Some(true) {
        "suspended"
    } else {
        "active"
    };
    format!(
        "{:<20} {:<10} {:<32} {}",
        s(p, "uid"),
        state,
        s(p, "mail"),
        collectives.join(" ")
    )
}

fn print_requests(rows: &[Value]) {
    for r in rows {
        println!(
            "{:>5}  {:<20} {:<16} {:<32} {}",
            r["id"],
            s(r, "state"),
            s(r, "uid"),
            s(r, "email"),
            s(r, "display_name")
        );
    }
}

pub async fn run(config_path: &Path, cmd: UserCommand) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let socket = socket.as_path();
    let group_change = |uid: &str, collective: String, group: &str, add: bool, by| {
        (
            format!("/v1/people/{uid}/groups"),
            json!({"by": actor(by), "collective": collective, "group": group, "add": add}),
        )
    };
    match cmd {
        UserCommand::List {
            collective,
            state: Some(state),
            json,
        } => {
            let _ = collective;
            let v = get(socket, &format!("/v1/registrations?state={state}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no requests in state {state}");
                }
                print_requests(&rows);
            }
        }
        UserCommand::List {
            collective,
            state: None,
            json,
        } => {
            let path = match &collective {
                Some(c) => format!("/v1/people?collective={c}"),
                None => "/v1/people".into(),
            };
            let people = get(socket, &path).await?;
            let waiting = get(socket, "/v1/registrations?state=awaiting_validation").await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"people": people, "awaiting_validation": waiting})
                    )?
                );
            } else {
                let people = people.as_array().cloned().unwrap_or_default();
                println!("{} people", people.len());
                for p in &people {
                    println!("  {}", person_line(p));
                }
                let waiting = waiting.as_array().cloned().unwrap_or_default();
                if !waiting.is_empty() {
                    println!(
                        "{} request(s) await a decision (`commonscloud user approve|reject ID`):",
                        waiting.len()
                    );
                    print_requests(&waiting);
                }
            }
        }
        UserCommand::Show { who, json } => {
            let v = if who.chars().all(|c| c.is_ascii_digit()) {
                get(socket, &format!("/v1/registrations/{who}")).await?
            } else {
                get(socket, &format!("/v1/people/{who}")).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_fields(&v);
            }
        }
        UserCommand::Approve { id, by } => {
            post(
                socket,
                &format!("/v1/registrations/{id}/approve"),
                &json!({"by": actor(by)}),
            )
            .await?;
            println!(
                "request {id} approved: the account exists and a set-password link is on its way"
            );
        }
        UserCommand::Reject { id, reason, by } => {
            post(
                socket,
                &format!("/v1/registrations/{id}/reject"),
                &json!({"by": actor(by), "reason": reason}),
            )
            .await?;
            println!("request {id} rejected; the reason is mailed to the person");
        }
        UserCommand::Suspend { uid, reason, by } => {
            post(
                socket,
                &format!("/v1/people/{uid}/suspend"),
                &json!({"by": actor(by), "reason": reason}),
            )
            .await?;
            println!(
                "{uid} is suspended: no login works until `commonscloud user reactivate {uid}`"
            );
        }
        UserCommand::Reactivate { uid, by } => {
            post(
                socket,
                &format!("/v1/people/{uid}/reactivate"),
                &json!({"by": actor(by)}),
            )
            .await?;
            println!("{uid} is active again");
        }
        UserCommand::Remove {
            uid,
            collective,
            by,
        } => {
            post(
                socket,
                &format!("/v1/people/{uid}/remove"),
                &json!({"by": actor(by), "collective": collective}),
            )
            .await?;
            println!("{uid} is no longer in {collective}");
        }
        UserCommand::Promote {
            uid,
            collective,
            by,
        } => {
            let (path, body) = group_change(&uid, collective.clone(), "admins", true, by);
            post(socket, &path, &body).await?;
            println!("{uid} is now an admin of {collective}");
        }
        UserCommand::Demote {
            uid,
            collective,
            by,
        } => {
            let (path, body) = group_change(&uid, collective.clone(), "admins", false, by);
            post(socket, &path, &body).await?;
            println!("{uid} is no longer an admin of {collective}");
        }
        UserCommand::Group {
            uid,
            collective,
            group,
            remove,
            by,
        } => {
            let (path, body) = group_change(&uid, collective.clone(), &group, !remove, by);
            post(socket, &path, &body).await?;
            if remove {
                println!("{uid} left {collective}/{group}");
            } else {
                println!("{uid} joined {collective}/{group}");
            }
        }
    }
    Ok(0)
}
