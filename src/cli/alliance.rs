//! `commonscloud alliance …`: federation with the alliance's directory, and
//! the LDIF that sets up the alliance's own slapd (`provision/alliance/`).

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use crate::api::client;
use crate::clock::unix_now;

use crate::directory::tree::{self, SlapdSettings};
use crate::model::CollectiveSlug;

#[derive(Subcommand)]
pub enum AllianceCommand {
    /// Enrol this appliance with the alliance's directory.
    ///
    /// Checks the link, the suffix and the account's rights on this
    /// collective first; changes nothing if one fails. Then stores the
    /// password (0600), queues this box's people and collective for the
    /// alliance (uid or mail collisions are reported, never overwritten) and
    /// starts syncing. Accounts then work at every collective of the
    /// alliance, and logins keep working here while the link is down.
    Join {
        /// The alliance's directory: ldaps://host[:port], or ldap://host[:port]
        /// with --starttls. Plain ldap:// (password hashes in clear) is
        /// refused unless the config says `insecure = true` under
        /// [alliance] (test networks only).
        #[arg(long)]
        url: String,
        /// This appliance's account there, e.g.
        /// cn=box.quimper.example.org,ou=appliances,dc=alliance,dc=net.
        #[arg(long)]
        bind_dn: String,
        /// A file holding that account's password (from `alliance.sh add-appliance`).
        #[arg(long)]
        password_file: std::path::PathBuf,
        /// The alliance's suffix; by default the one its directory serves.
        #[arg(long)]
        suffix: Option<String>,
        /// The CA certificate(s), PEM, that the alliance's certificate
        /// chains to (default: the system's roots).
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Upgrade the ldap:// URL with StartTLS before binding (kept with
        /// the enrolment); a server that refuses it is not used in clear.
        #[arg(long)]
        starttls: bool,
        /// Only check and show what would be pushed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The link to the alliance, the sync's age, the outbox and conflicts.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lets a held refresh delete what it asked to.
    ///
    /// A refresh from the alliance that would delete more than
    /// `max_refresh_deletions` entries and more than
    /// `max_refresh_deletions_percent` % of the local copy is held: nothing
    /// is deleted and the alliance's changes wait. This lists what it would
    /// delete (and what stays: people homed here and this box's collective
    /// are never deleted by a refresh); with --yes, it confirms that very
    /// list, and the next refresh deletes those entries. Check the
    /// alliance first: a broken ACL or a wrong restore there looks the same.
    ConfirmDeletions {
        /// Confirm (without it, only show what would be deleted).
        #[arg(long)]
        yes: bool,
        /// Who confirms, for the audit log (default: cli:$SUDO_USER or $USER).
        #[arg(long = "as")]
        by: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// LDIF for the alliance's provider (used by provision/alliance/alliance.sh).
    #[command(subcommand)]
    Provider(ProviderCommand),
}

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// The provider's whole cn=config, for `slapadd -n0`.
    Config {
        /// The alliance's suffix, e.g. dc=alliance,dc=example,dc=net.
        #[arg(long)]
        suffix: String,
        /// Where mdb keeps the data (must exist).
        #[arg(long)]
        data_dir: String,
        /// Where the pid and args files go.
        #[arg(long)]
        run_dir: String,
        /// The root DN: the SASL EXTERNAL identity of whoever runs slapd.
        #[arg(long)]
        root_dn: String,
        /// The certificate (chain, PEM) slapd serves ldaps:// with.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<String>,
        /// Its private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<String>,
    },
    /// The base entries, for `slapadd -n1`.
    Base {
        #[arg(long)]
        suffix: String,
        /// The alliance's name (the suffix entry's `o`).
        #[arg(long)]
        name: String,
    },
    /// One appliance's rules, account and collective, for `ldapmodify`.
    Appliance {
        #[arg(long)]
        suffix: String,
        /// The appliance's collective (its slug).
        #[arg(long)]
        collective: CollectiveSlug,
        /// The collective's display name.
        #[arg(long)]
        collective_name: String,
        /// The appliance's node name: its console hostname.
        #[arg(long)]
        node: String,
    },
    /// This release's rules and password policy for an alliance an older
    /// release made, for `ldapmodify` (`alliance.sh upgrade`).
    Upgrade {
        #[arg(long)]
        suffix: String,
        /// Every appliance, as `<collective slug>=<node>`: the rules are
        /// written anew, so one left out loses its access.
        #[arg(long = "appliance")]
        appliances: Vec<String>,
    },
}

pub fn run(config_path: &Path, cmd: AllianceCommand) -> anyhow::Result<i32> {
    match cmd {
        AllianceCommand::Provider(p) => {
            print!("{}", provider(p)?);
            Ok(0)
        }
        AllianceCommand::Status { json } => super::runtime()?.block_on(status(config_path, json)),
        AllianceCommand::ConfirmDeletions { yes, by, json } => super::runtime()?.block_on(
            confirm_deletions(config_path, yes, super::user::actor(by), json),
        ),
        AllianceCommand::Join {
            url,
            bind_dn,
            password_file,
            suffix,
            ca_file,
            starttls,
            dry_run,
            json,
        } => {
            let ca_file = match ca_file {
                Some(p) => Some(
                    std::fs::canonicalize(&p)
                        .with_context(|| format!("--ca-file: {}", p.display()))?,
                ),
                None => None,
            };
            let password = std::fs::read_to_string(&password_file)
                .with_context(|| format!("--password-file: reading {}", password_file.display()))?;
            let password = password.trim().to_owned();
            anyhow::ensure!(
                !password.is_empty(),
                "--password-file: {} is empty",
                password_file.display()
            );
            let body = serde_json::json!({
                "url": url, "bind_dn": bind_dn, "password": password,
                "suffix": suffix, "dry_run": dry_run, "ca_file": ca_file,
                "starttls": starttls,
            });
            super::runtime()?.block_on(join(config_path, body, json))
        }
    }
}

async fn join(config_path: &Path, body: serde_json::Value, json: bool) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let (code, answer) = client::post(&socket, "/v1/alliance/join", &body).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer)
        .unwrap_or_else(|_| serde_json::json!({"message": String::from_utf8_lossy(&answer)}));
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(m) = v["message"].as_str() {
            println!("✗ {m}");
        }
        for c in v["checks"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let ok = c["ok"].as_bool().unwrap_or(false);
            println!(
                "{} {:<10} {}",
                if ok { "✓" } else { "✗" },
                c["name"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            );
        }
        let plan = &v["plan"];
        if plan.is_object() {
            let n = |k: &str| plan[k].as_array().map(Vec::len).unwrap_or_default();
            if let Some(r) = plan["rewrite"].as_array() {
                println!(
                    "  DNs are rewritten from {} to {}",
                    r.first().and_then(|x| x.as_str()).unwrap_or_default(),
                    r.get(1).and_then(|x| x.as_str()).unwrap_or_default()
                );
            }
            println!(
                "  {} entries to add, {} already there, {} memberships to push",
                n("add"),
                n("present"),
                plan["memberships"].as_u64().unwrap_or_default()
            );
            for c in plan["collisions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                println!(
                    "  ! {} is someone else's at the alliance: not pushed, reported",
                    c.as_str().unwrap_or_default()
                );
            }
        }
        if v["joined"].as_bool() == Some(true) {
            println!("joined: syncing now; see `commonscloud alliance status`");
        } else if v["dry_run"].as_bool() == Some(true) && code == 200 {
            println!("dry run: nothing was changed");
        }
    }
    Ok(if code == 200 { 0 } else { 2 })
}

fn ago(now: i64, at: Option<i64>) -> String {
    match at {
        Some(t) => format!("{} s ago", (now - t).max(0)),
        None => "never".into(),
    }
}

async fn status(config_path: &Path, json: bool) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let (code, body) = client::get(&socket, "/v1/alliance").await?;
    anyhow::ensure!(
        code == 200,
        "the daemon answered {code}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).context("reading the status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let now = unix_now();
    let Some(e) = v["enrolment"].as_object() else {
        if let Some(refused) = v["link"]["refused"].as_str() {
            println!("link       refused: {refused}");
            return Ok(0);
        }
        println!(
            "not federated: this box's accounts live here only. Join with `commonscloud alliance join`."
        );
        return Ok(0);
    };
    let link = &v["link"];
    let up = link["up"].as_bool().unwrap_or(false);
    println!(
        "alliance   {} as {}",
        e["url"].as_str().unwrap_or_default(),
        e["bind_dn"].as_str().unwrap_or_default()
    );
    if let Some(refused) = link["refused"].as_str() {
        println!("link       refused: {refused}");
    } else {
        println!(
            "link       {}{}{}",
            if up { "up" } else { "down" },
            match link["security"].as_str() {
                Some("ldaps") if up => " (ldaps)",
                Some("start_tls") if up => " (StartTLS)",
                Some("plain") if up => " (plain LDAP: insecure = true)",
                _ => "",
            },
            link["last_error"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    if let Some(h) = v["hold"].as_object() {
        print_hold(h, now);
    }
    println!("contact    {}", ago(now, v["last_contact"].as_i64()));
    println!(
        "sync       cookie {}{}",
        v["cookie_age_secs"]
            .as_i64()
            .map(|a| format!("{a} s old"))
            .unwrap_or_else(|| "none yet (first refresh)".into()),
        if link["refreshing"].as_bool() == Some(true) {
            ", refreshing"
        } else {
            ""
        }
    );
    println!(
        "in scope   {} entries",
        v["entries_in_scope"].as_i64().unwrap_or_default()
    );
    let o = &v["outbox"];
    println!(
        "outbox     {} pending{}, {} done, {} refused",
        o["pending"].as_i64().unwrap_or_default(),
        o["oldest_pending_at"]
            .as_i64()
            .map(|t| format!(" (oldest {})", ago(now, Some(t))))
            .unwrap_or_default(),
        o["done"].as_i64().unwrap_or_default(),
        o["failed"].as_i64().unwrap_or_default()
    );
    let conflicts = v["conflicts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    println!("conflicts  {}", o["conflicts"].as_i64().unwrap_or_default());
    for c in conflicts {
        println!(
            "  {} [{} won] {}",
            ago(now, c["at"].as_i64()),
            c["winner"].as_str().unwrap_or_default(),
            c["detail"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}

/// A held refresh, for people: the figures, then its entries.
fn print_hold(h: &serde_json::Map<String, serde_json::Value>, now: i64) {
    let n = |k: &str| h.get(k).and_then(|v| v.as_i64()).unwrap_or_default();
    let (delete, keep) = (n("delete"), n("keep"));
    match h.get("confirmed_at").and_then(|v| v.as_i64()) {
        None => println!(
            "held       hold {}, {}: the alliance's refresh would delete {} of the {} entries copied here; nothing was deleted and the alliance's changes wait",
            n("id"),
            ago(now, Some(n("at"))),
            delete + keep,
            n("local_copy"),
        ),
        Some(at) => println!(
            "held       hold {} confirmed by {} {}: the next refresh deletes them",
            n("id"),
            h.get("confirmed_by")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
            ago(now, Some(at)),
        ),
    }
    println!(
        "  {delete} would be deleted; {keep} stay (people homed here and this box's collective are never deleted by a refresh)"
    );
    let entries = h
        .get("entries")
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in entries {
        println!(
            "  {} {}",
            if e["kept"].as_bool() == Some(true) {
                "keep  "
            } else {
                "delete"
            },
            e["dn"].as_str().unwrap_or_default()
        );
    }
    let shown = i64::try_from(entries.len()).unwrap_or_default();
    if shown < delete + keep {
        println!(
            "  … and {} more (`commonscloud alliance confirm-deletions` lists them all)",
            delete + keep - shown
        );
    }
}

async fn confirm_deletions(
    config_path: &Path,
    yes: bool,
    by: String,
    json: bool,
) -> anyhow::Result<i32> {
    let (socket, _) = crate::config::api_socket_lenient(config_path);
    let (code, body) = client::get(&socket, "/v1/alliance/hold").await?;
    if code == 404 {
        if json {
            println!("{}", serde_json::json!({"hold": null, "confirmed": false}));
        } else {
            println!("no refresh is held: nothing waits for a confirmation");
        }
        return Ok(0);
    }
    let hold = super::user::answer(code, &body)?;
    let now = unix_now();
    if !json && let Some(h) = hold.as_object() {
        print_hold(h, now);
    }
    let id = hold["id"].as_i64().unwrap_or_default();
    if !yes || hold["confirmed_at"].is_i64() {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"hold": hold, "confirmed": false})
                )?
            );
        } else if !hold["confirmed_at"].is_i64() {
            println!(
                "nothing was confirmed. If the alliance is right, run `commonscloud alliance confirm-deletions --yes` to delete them here"
            );
        }
        return Ok(0);
    }
    let (code, body) = client::post(
        &socket,
        "/v1/alliance/confirm-deletions",
        &serde_json::json!({"hold": id, "by": by}),
    )
    .await?;
    let confirmed = super::user::answer(code, &body)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"hold": confirmed, "confirmed": true})
            )?
        );
    } else {
        println!(
            "confirmed hold {id}: the sync refreshes again now and deletes those entries; see `commonscloud alliance status`"
        );
    }
    Ok(0)
}

fn provider(cmd: ProviderCommand) -> anyhow::Result<String> {
    Ok(match cmd {
        ProviderCommand::Config {
            suffix,
            data_dir,
            run_dir,
            root_dn,
            tls_cert,
            tls_key,
        } => tree::alliance_config_ldif(
            &SlapdSettings {
                suffix: checked_suffix(&suffix)?,
                data_dir,
                pid_file: format!("{run_dir}/slapd.pid"),
                args_file: format!("{run_dir}/slapd.args"),
                root_dn,
                module_dir: "/usr/lib/ldap".into(),
                schema_dir: "/etc/ldap/schema".into(),
                argon2_params: crate::directory::slapd::ARGON2_PARAMS.into(),
            },
            tls_cert.as_deref().zip(tls_key.as_deref()),
        ),
        ProviderCommand::Base { suffix, name } => {
            tree::alliance_base_ldif(&checked_suffix(&suffix)?, &name)
        }
        ProviderCommand::Appliance {
            suffix,
            collective,
            collective_name,
            node,
        } => {
            anyhow::ensure!(
                crate::model::Domain::try_from(node.clone()).is_ok(),
                "--node `{node}` is not a hostname: give the appliance's console hostname, e.g. box.quimper.example.org"
            );
            tree::appliance_ldif(
                &checked_suffix(&suffix)?,
                &collective,
                &collective_name,
                &node,
            )
        }
        ProviderCommand::Upgrade { suffix, appliances } => {
            tree::alliance_upgrade_ldif(&checked_suffix(&suffix)?, &appliance_pairs(&appliances)?)
        }
    })
}

/// `<slug>=<node>` pairs, checked.
fn appliance_pairs(given: &[String]) -> anyhow::Result<Vec<(CollectiveSlug, String)>> {
    given
        .iter()
        .map(|a| {
            let (slug, node) = a.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--appliance `{a}`: give <collective slug>=<node>, e.g. quimper=box.quimper.example.org")
            })?;
            let slug: CollectiveSlug = slug
                .parse()
                .map_err(|e| anyhow::anyhow!("--appliance `{a}`: {e}"))?;
            anyhow::ensure!(
                crate::model::Domain::try_from(node.to_owned()).is_ok(),
                "--appliance `{a}`: `{node}` is not a hostname: give the appliance's console hostname"
            );
            Ok((slug, node.to_owned()))
        })
        .collect()
}

fn checked_suffix(suffix: &str) -> anyhow::Result<String> {
    let dn: crate::config::Dn = suffix
        .to_owned()
        .try_into()
        .map_err(|e| anyhow::anyhow!("--suffix: {e}"))?;
    Ok(dn.as_str().to_owned())
}
