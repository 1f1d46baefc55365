//! `commonscloud collective …` and `commonscloud invite`: collectives, their
//! groups and services, requests to join, and invitations, through the
//! daemon.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::user::{actor, get, post, print_fields};

#[derive(Subcommand)]
pub enum CollectiveCommand {
    /// List the collectives in the directory.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a collective on this appliance, with its members and admins
    /// groups. Make someone its admin with `commonscloud user promote`.
    Create {
        /// Short identifier: lowercase letters, digits and '-' (e.g. "brest").
        slug: String,
        /// Its human name.
        #[arg(long)]
        name: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Show a collective: members, admins, groups, services, pending work.
    Show {
        slug: String,
        #[arg(long)]
        json: bool,
    },
    /// Create an access group in a collective (e.g. "editors"); add people
    /// with `commonscloud user group`.
    AddGroup {
        slug: String,
        group: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Let a group's members use a service of the collective (or stop it
    /// with --revoke).
    Grant {
        slug: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        revoke: bool,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Requests of existing people to join a collective.
    Requests {
        /// Only this collective's.
        slug: Option<String>,
        /// pending (default), approved, rejected, or all.
        #[arg(long, default_value = "pending")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Accept a request to join; the person is told.
    ApproveJoin {
        id: i64,
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Decline a request to join; the reason is mailed to the person.
    RejectJoin {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        by: Option<String>,
    },
}

pub async fn run(config_path: &Path, cmd: CollectiveCommand) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let socket = socket.as_path();
    match cmd {
        CollectiveCommand::List { json } => {
            let v = get(socket, "/v1/collectives").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for c in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<32} {}",
                        c["slug"].as_str().unwrap_or(""),
                        c["name"].as_str().unwrap_or(""),
                        c["home_node"].as_str().unwrap_or("")
                    );
                }
            }
        }
        CollectiveCommand::Create { slug, name, by } => {
            post(
                socket,
                "/v1/collectives",
                &json!({"slug": slug, "name": name, "by": actor(by)}),
            )
            .await?;
            println!(
                "collective {slug} created; make someone its admin with `commonscloud user promote UID --collective {slug}`"
            );
        }
        CollectiveCommand::Show { slug, json } => {
            let v = get(socket, &format!("/v1/collectives/{slug}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_fields(&v);
            }
        }
        CollectiveCommand::AddGroup { slug, group, by } => {
            post(
                socket,
                &format!("/v1/collectives/{slug}/groups"),
                &json!({"name": group, "by": actor(by)}),
            )
            .await?;
            println!("group {group} created in {slug}");
        }
        CollectiveCommand::Grant {
            slug,
            service,
            group,
            revoke,
            by,
        } => {
            post(
                socket,
                &format!("/v1/collectives/{slug}/services"),
                &json!({"service": service, "group": group, "grant": !revoke, "by": actor(by)}),
            )
            .await?;
            if revoke {
                println!("{slug}/{group} may no longer use {service}");
            } else {
                println!("{slug}/{group} may use {service}");
            }
        }
        CollectiveCommand::Requests { slug, state, json } => {
            let mut q = Vec::new();
            if let Some(s) = &slug {
                q.push(format!("collective={s}"));
            }
            if state != "all" {
                q.push(format!("state={state}"));
            }
            let v = get(socket, &format!("/v1/joins?{}", q.join("&"))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no requests");
                }
                for r in rows {
                    println!(
                        "{:>5}  {:<10} {:<20} -> {:<20} {}",
                        r["id"],
                        r["state"].as_str().unwrap_or(""),
                        r["uid"].as_str().unwrap_or(""),
                        r["collective"].as_str().unwrap_or(""),
                        r["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        CollectiveCommand::ApproveJoin { id, by } => {
            post(
                socket,
                &format!("/v1/joins/{id}/approve"),
                &json!({"by": actor(by)}),
            )
            .await?;
            println!("request {id} approved: the person is a member now");
        }
        CollectiveCommand::RejectJoin { id, reason, by } => {
            post(
                socket,
                &format!("/v1/joins/{id}/reject"),
                &json!({"by": actor(by), "reason": reason}),
            )
            .await?;
            println!("request {id} declined; the reason is mailed to the person");
        }
    }
    Ok(0)
}

/// `commonscloud invite`.
pub async fn invite(
    config_path: &Path,
    email: Option<String>,
    collective: Option<String>,
    list: bool,
    by: Option<String>,
) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let socket = socket.as_path();
    // The appliance's own collective unless told otherwise.
    let collective = match collective {
        Some(c) => Some(c),
        None => crate::config::load(config_path)
            .ok()
            .map(|c| c.collective.slug.to_string()),
    };
    if list || email.is_none() {
        let path = match &collective {
            Some(c) => format!("/v1/invitations?collective={c}"),
            None => "/v1/invitations".into(),
        };
        let v = get(socket, &path).await?;
        let rows = v.as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            println!("no invitations");
        }
        for r in rows {
            println!(
                "{:>5}  {:<9} {:<32} {:<20} by {}",
                r["id"],
                r["state"].as_str().unwrap_or(""),
                r["email"].as_str().unwrap_or(""),
                r["collective"].as_str().unwrap_or(""),
                r["invited_by"].as_str().unwrap_or("")
            );
        }
        return Ok(0);
    }
    let Some(collective) = collective else {
        anyhow::bail!("say which collective with --collective (the config could not be read)");
    };
    let email = email.unwrap_or_default();
    post(
        socket,
        "/v1/invitations",
        &json!({"email": email, "collective": collective, "by": actor(by)}),
    )
    .await?;
    println!("{email} is invited to {collective}; the link is valid for 14 days");
    Ok(0)
}
