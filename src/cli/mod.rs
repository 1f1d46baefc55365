//! The `commonscloud` command line. Parses flags, calls the modules, prints.
//! `anyhow` is allowed here and in `main` only.

mod alliance;
mod bench;
mod bench_console;
mod bench_directory;
mod bench_federation;
mod bench_proxy;
mod bench_reconcile;
mod collective;
mod directory;
mod doctor;
mod init;
mod plan;
mod purge;
mod reconcile;
mod status;
mod upgrade;
mod user;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "commonscloud",
    version,
    about = "CommonsCloud appliance: a cooperative cloud for a collective on a small server",
    long_about = "CommonsCloud turns a small server into a cooperative cloud for a collective: \
a local OpenLDAP directory with one account per person, Nextcloud with Collabora Online, \
and Discourse, run as Docker containers and supervised by this daemon.\n\n\
Start here: `commonscloud init` writes a config, `commonscloud doctor` checks the box, \
`systemctl start commonscloud` runs the daemon, `commonscloud status` shows what it does."
)]
pub struct Cli {
    /// The appliance config file.
    #[arg(long, short = 'c', global = true, env = "COMMONSCLOUD_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the supervisor daemon in the foreground (what systemd starts).
    ///
    /// Serves the local API on <runtime_dir>/api.sock, reloads the config on
    /// SIGHUP, stops cleanly on SIGTERM or SIGINT, and notifies systemd.
    Serve,
    /// Run the front door in the foreground (its own systemd unit): HTTPS
    /// on front_door.https and a redirect on front_door.http, proxying each
    /// hostname to the console or its app.
    ///
    /// It serves what the supervisor publishes in <state_dir>/front-door
    /// (settings, routes, certificates, the console's socket), reloads it
    /// when it changes or on SIGHUP, and keeps serving while the supervisor
    /// restarts. With --dir it reads that directory only, not the config
    /// (under systemd its user may not read the config).
    FrontDoor {
        /// The published directory; <state_dir>/front-door of the config
        /// by default.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Federation with the alliance's directory: join, status, and the
    /// LDIF that sets up the alliance's own provider.
    #[command(subcommand)]
    Alliance(alliance::AllianceCommand),
    /// Show what the running daemon is doing, component by component.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check this box: Docker, slapd, disk, memory, clock, ports, config.
    ///
    /// Exits 0 when all is well, 1 on warnings, 2 on failures.
    Doctor {
        /// Print JSON instead of one line per check.
        #[arg(long)]
        json: bool,
    },
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Look after the local directory (slapd).
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// People and registration requests: list, show, approve, reject,
    /// suspend, reactivate, remove, promote, demote, group membership.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Collectives: list, create, show, their groups and services, and
    /// requests to join them.
    #[command(subcommand)]
    Collective(collective::CollectiveCommand),
    /// Invite someone by mail to a collective (an existing person joins
    /// through the link; anyone else registers with the collective chosen).
    /// Without an address, or with --list, list the invitations.
    Invite {
        /// The address to invite.
        email: Option<String>,
        /// The collective (default: this appliance's).
        #[arg(long)]
        collective: Option<String>,
        /// List invitations instead.
        #[arg(long)]
        list: bool,
        /// Who invites (default: the Unix user running this).
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Show what a reconcile would do to the apps now, in order, without
    /// doing it: every container, network and volume, and each wiring
    /// command with its arguments (secrets redacted).
    Plan {
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the plan now: create, update or remove the apps' containers,
    /// networks and volumes, and wire them to the directory, showing
    /// progress. Each step is journaled; a step that fails stops the run and
    /// is reported with its app and cause, and the next run goes on from
    /// there.
    Reconcile {
        /// How long a container may take to become ready, in seconds.
        #[arg(long, default_value_t = 900)]
        ready_timeout: u64,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a disabled app's data (its Docker volumes), after you confirm.
    ///
    /// Disabling an app (removing it from [apps] enabled) removes its
    /// containers and keeps its data; this is the step that deletes it.
    Purge {
        /// nextcloud, collabora or discourse.
        app: crate::model::AppName,
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Write a first config file, asking questions or from flags.
    Init(init::InitArgs),
    /// Set up a demo appliance in a local directory and run it in the foreground.
    ///
    /// Needs no root: state, sockets and secrets go under --dir, the front door
    /// and directory use high ports on 127.0.0.1.
    Demo {
        /// Where the demo keeps its config and state.
        #[arg(long, default_value = ".commonscloud-demo")]
        dir: PathBuf,
        /// Write the demo config and exit without serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Measure the appliance against its speed and size targets.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Upgrades to a release: `upgrade plan` shows the path this box would
    /// take, hop by hop, with downtime, disk and snapshots.
    #[command(subcommand)]
    Upgrade(upgrade::UpgradeCommand),
}

/// The demo's slapd port for the apps.
const DEMO_LDAP_PORT: u16 = 13389;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the effective values, secrets redacted.
    Check {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Loads the config named by --config / COMMONSCLOUD_CONFIG.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(config::load(path)?)
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve => serve(cli.config),
        Command::FrontDoor { dir } => front_door(cli.config, dir),
        Command::Status { json } => runtime()?.block_on(status::run(&cli.config, json)),
        Command::Doctor { json } => runtime()?.block_on(doctor::run(&cli.config, json)),
        Command::Config(ConfigCommand::Check { json }) => {
            let config = load_config(&cli.config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                eprintln!("{}: valid", cli.config.display());
                if let Some(from) = &config.apps.enabled_from_console {
                    eprintln!(
                        "[apps] enabled was chosen in the console ({}); it overrides the file's list. Delete that file to go back to the file's.",
                        from.display()
                    );
                }
                print!("{}", config.to_redacted_toml());
            }
            Ok(0)
        }
        Command::Init(args) => init::run(&cli.config, args),
        Command::Plan { json } => runtime()?.block_on(plan::run(&cli.config, json)),
        Command::Purge { app, yes } => runtime()?.block_on(purge::run(&cli.config, app, yes)),
        Command::Reconcile {
            ready_timeout,
            json,
        } => runtime()?.block_on(reconcile::run(&cli.config, ready_timeout, json)),
        Command::User(cmd) => runtime()?.block_on(user::run(&cli.config, cmd)),
        Command::Collective(cmd) => runtime()?.block_on(collective::run(&cli.config, cmd)),
        Command::Invite {
            email,
            collective,
            list,
            by,
        } => runtime()?.block_on(collective::invite(&cli.config, email, collective, list, by)),
        Command::Directory(cmd) => runtime()?.block_on(directory::run(&cli.config, cmd)),
        Command::Demo { dir, no_serve } => {
            let path = init::write_demo(&dir, DEMO_LDAP_PORT)?;
            eprintln!("demo config: {}", path.display());
            if no_serve {
                return Ok(0);
            }
            // The front door is its own process, as under systemd; it
            // stops with the demo.
            let exe = std::env::current_exe().context("finding this program")?;
            let door = std::process::Command::new(exe)
                .arg("--config")
                .arg(&path)
                .arg("front-door")
                .spawn()
                .context("starting the front door")?;
            struct Door(std::process::Child);
            impl Drop for Door {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let _door = Door(door);
            let ca = path.parent().unwrap_or(&dir).join("state/tls/ca.crt");
            eprintln!(
                "demo appliance: config {0}\n  in another terminal: COMMONSCLOUD_CONFIG={0} commonscloud status\n  \
                 console: https://box.demo.commonscloud.test:8443/ (the name is not in DNS; the front door is on 127.0.0.1):\n    \
                 chromium --host-resolver-rules='MAP *.demo.commonscloud.test 127.0.0.1' https://box.demo.commonscloud.test:8443/\n    \
                 curl --cacert {1} --resolve box.demo.commonscloud.test:8443:127.0.0.1 https://box.demo.commonscloud.test:8443/login\n  \
                 the first admin: register in the console, then `commonscloud user approve`, `user promote`\n  stop with Ctrl-C",
                path.display(),
                ca.display()
            );
            serve(path)
        }
        Command::Bench(cmd) => bench::run(cmd),
        Command::Upgrade(cmd) => runtime()?.block_on(upgrade::run(&cli.config, cmd)),
        Command::Alliance(cmd) => alliance::run(&cli.config, cmd),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Worker threads of a long-running process's runtime: two are plenty for
/// the control plane and the front door, and keep the footprint small on
/// 2 GB boards. `bench proxy` gives nginx as many worker processes.
pub(crate) const DAEMON_WORKERS: usize = 2;

/// The runtime of a long-running process ([`DAEMON_WORKERS`] threads).
/// Logging starts first, at `level`.
fn daemon_runtime(
    level: crate::config::LogLevel,
    name: &str,
) -> anyhow::Result<tokio::runtime::Runtime> {
    crate::logging::init(level.to_filter());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(DAEMON_WORKERS)
        .thread_name(name)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn front_door(config_path: PathBuf, dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let dir = match dir {
        Some(dir) => dir,
        None => crate::frontdoor::Published::of(&load_config(&config_path)?).dir,
    };
    // The log level is the published settings'; before the supervisor has
    // written them, the default.
    let level = crate::frontdoor::Settings::read(&crate::frontdoor::Published::new(&dir).settings)
        .map(|s| s.log_level)
        .unwrap_or_default();
    daemon_runtime(level, "front-door")?.block_on(crate::frontdoor::run(&dir))?;
    Ok(0)
}

fn serve(config_path: PathBuf) -> anyhow::Result<i32> {
    let config = load_config(&config_path)?;
    let rt = daemon_runtime(config.log.level, "commonscloud")?;
    rt.block_on(crate::daemon::serve(config_path, config))?;
    Ok(0)
}
