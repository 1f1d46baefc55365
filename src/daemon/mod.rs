//! `commonscloud serve`: starts the tasks, handles signals, shuts down.
//! Here live the single-instance lock, the sockets, sd_notify and the
//! watchdog, and the shutdown protocol ([`tasks`]).
//!
//! Each long-running behaviour lives in the module that owns it and is
//! only started here, with the parts it needs. It owns no decisions about
//! the appliance: the reload is [`Appliance::reload`], component states
//! come from [`crate::status`], config validity from [`crate::config`].

pub mod tasks;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sd_notify::NotifyState;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::appliance::Appliance;
use crate::config::Config;
use crate::store::{Store, StoreError};

/// How long tasks get to stop after SIGTERM before they are aborted. systemd
/// waits `TimeoutStopSec` (30 s); tests demand an exit within 5 s.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another `commonscloud serve`{} already runs on state dir {state_dir}; stop it first (`systemctl stop commonscloud`). Two daemons on one state dir would corrupt it",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The single-instance lock on `<state_dir>/serve.lock`; released on drop.
pub struct InstanceLock {
    _lock: Flock<std::fs::File>,
}

impl InstanceLock {
    pub fn acquire(state_dir: &Path) -> Result<Self, DaemonError> {
        let path = state_dir.join("serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| DaemonError::Dir {
                path: path.clone(),
                source,
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(DaemonError::AlreadyRunning {
                    state_dir: state_dir.to_owned(),
                    pid,
                });
            }
            Err((_, source)) => return Err(DaemonError::Lock { path, source }),
        };
        use std::io::{Seek, Write};
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", std::process::id());
        Ok(Self { _lock: lock })
    }
}

/// The state directory's mode, as `StateDirectoryMode=` and tmpfiles.d
/// make it: others (the front door's user) may pass through to its own
/// directory, not list.
pub const STATE_DIR_MODE: u32 = 0o751;
/// The runtime directory's mode (`RuntimeDirectoryMode=`): the API socket
/// and slapd's ldapi are there, for this user and group only.
pub const RUNTIME_DIR_MODE: u32 = 0o750;

fn ensure_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path).map_err(|source| DaemonError::Dir {
        path: path.to_owned(),
        source,
    })?;
    // Best effort: under systemd the directories are already made with the
    // right owner and mode, and we may not own them.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(())
}

/// Binds a socket of ours, 0660, removing a stale one first (we hold the
/// instance lock, so a socket file left there is stale).
fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let listen = |source| DaemonError::Listen {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen)?;
    Ok(listener)
}

/// Binds the console's socket for the front door, among its published
/// files: 0660, in the directory's group (the front door's, by the
/// directory's set-group-ID bit under systemd). Not the API socket's
/// group: `commonscloud` members may run the CLI, the front door may not.
fn bind_console(published: &crate::frontdoor::Published) -> Result<UnixListener, DaemonError> {
    crate::frontdoor::ensure_published_dir(published).map_err(|source| DaemonError::Dir {
        path: published.dir.clone(),
        source,
    })?;
    bind_socket(&published.console_socket)
}

/// Binds the API socket: 0660, group `commonscloud` when that group exists,
/// so its members can run `commonscloud status` without root. It changes
/// the appliance (see `docs/security.md`, "Local API"): that group is
/// root-equivalent.
fn bind_api(path: &Path) -> Result<UnixListener, DaemonError> {
    let listener = bind_socket(path)?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("commonscloud")
        && let Err(e) = nix::unistd::chown(path, None, Some(group.gid))
    {
        log::warn!(
            "cannot give {} to group commonscloud ({e}); only this user can use the CLI",
            path.display()
        );
    }
    Ok(listener)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    let paths = config.paths.clone();
    // Others may pass through the state directory, not list it: the front
    // door's user reaches its own directory there (every other entry has
    // no bits for others). The runtime directory (API socket, ldapi) is
    // closed to it.
    ensure_dir(&paths.state_dir, STATE_DIR_MODE)?;
    ensure_dir(&paths.runtime_dir, RUNTIME_DIR_MODE)?;
    let _lock = InstanceLock::acquire(&paths.state_dir)?;
    let store = Store::open(&paths.state_dir)?;
    let appliance_id = store.appliance_id()?;
    let store = Arc::new(Mutex::new(store));
    let socket_path = config.api_socket();
    let listener = bind_api(&socket_path)?;
    // The console, for the front door only.
    let console_listener = bind_console(&crate::frontdoor::Published::of(&config))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let (report, observed) = crate::appliance::reports();
    let shared = Arc::new(Appliance::new(
        config_path,
        config,
        store,
        appliance_id,
        observed.clone(),
    ));

    // Each task gets the parts it needs, never the handle: the config in
    // force, the store, the bus, where it reports. They hear of a reload,
    // a queued mail, a Docker event… on the bus.
    let mut tasks = tasks::Tasks::new();
    let token = tasks.token();
    let (config, store, events) = (shared.live(), shared.store.clone(), shared.events.clone());
    {
        let token = token.clone();
        let app = crate::api::server::router(shared.clone());
        tasks.spawn("api", async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = res {
                log::error!(task = "api"; "local API stopped: {e}");
            }
        });
    }
    {
        let token = token.clone();
        let app = crate::web::router(crate::web::Web::new(shared.clone()));
        tasks.spawn("console", async move {
            let res = axum::serve(console_listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = res {
                log::error!(task = "console"; "console stopped: {e}");
            }
        });
    }
    tasks.spawn(
        "docker-probe",
        crate::docker::watch::probe(report.docker, events.clone(), token.clone()),
    );
    tasks.spawn(
        "directory",
        crate::directory::supervisor::run(
            config.clone(),
            store.clone(),
            events.clone(),
            report.directory,
            token.clone(),
        ),
    );
    tasks.spawn(
        "mail",
        crate::mail::delivery::run(
            config.clone(),
            store.clone(),
            events.clone(),
            report.mail,
            shared.metrics.clone(),
            token.clone(),
        ),
    );
    tasks.spawn(
        "federation",
        crate::federation::task::run(
            shared.federation_parts(),
            observed.directory.clone(),
            token.clone(),
        ),
    );
    tasks.spawn(
        "reconcile",
        crate::reconcile::task::run(
            config.clone(),
            store.clone(),
            events.clone(),
            report.apps,
            observed.directory.clone(),
            token.clone(),
        ),
    );
    tasks.spawn(
        "front-door-files",
        crate::frontdoor::publisher::run(
            config.clone(),
            store.clone(),
            events.clone(),
            shared.appliance_id().to_owned(),
            token.clone(),
        ),
    );
    tasks.spawn(
        "app-access",
        crate::reconcile::access::run(config.clone(), store.clone(), events.clone(), token.clone()),
    );
    tasks.spawn(
        "docker-events",
        crate::docker::watch::events(config.clone(), events.clone(), token.clone()),
    );
    tasks.spawn(
        "onboarding-sweep",
        crate::onboarding::sweep::run(
            shared.onboarding(),
            config.clone(),
            store.clone(),
            crate::web::session::KNOWN_FOR_SECS,
            token.clone(),
        ),
    );
    if let Some(period) = sd_notify::watchdog_enabled() {
        let token = token.clone();
        let shared = shared.clone();
        tasks.spawn("watchdog", async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        // Ping only while the store answers: a wedged database
                        // should get us restarted.
                        if shared.store_healthy().is_ok() {
                            crate::sys::notify_systemd(&[NotifyState::Watchdog]);
                        } else {
                            log::error!(task = "watchdog"; "store does not answer; withholding the watchdog ping");
                        }
                    }
                }
            }
        });
    }

    shared.audit("start", env!("CARGO_PKG_VERSION"));
    log::info!(
        "commonscloud {} serving collective {} on {}",
        env!("CARGO_PKG_VERSION"),
        shared.config().collective.slug,
        socket_path.display()
    );
    crate::sys::notify_systemd(&[NotifyState::Ready, NotifyState::Status("running")]);

    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => shared.reload(),
        }
    };
    log::info!("{signal_name} received; shutting down");
    crate::sys::notify_systemd(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    let late = tasks.shutdown(SHUTDOWN_DEADLINE).await;
    let detail = if late.is_empty() {
        signal_name.to_owned()
    } else {
        format!("{signal_name}; aborted {}", late.join(", "))
    };
    shared.audit("stop", &detail);
    let _ = std::fs::remove_file(&socket_path);
    log::info!("stopped");
    Ok(())
}
