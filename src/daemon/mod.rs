//! `commonscloud serve`: wires the tasks together. Signals, sd_notify,
//! watchdog, the single-instance lock, config reload and shutdown live here.
//!
//! It owns no decisions about the appliance itself: component states come from
//! [`crate::status`], config validity from [`crate::config`].

pub mod tasks;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use sd_notify::NotifyState;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::appliance::{Appliance, onboarding_for, reload};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::status::{self, DirectoryObservation, DockerObservation};
use crate::store::{Store, StoreError};

/// How long tasks get to stop after SIGTERM before they are aborted. systemd
/// waits `TimeoutStopSec` (30 s); tests demand an exit within 5 s.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);
/// The directory data's version (see `directory::tree::TREE_VERSION`).
const TREE_VERSION_KEY: &str = "directory_tree_version";
/// How often Docker is probed when nothing else asks.
const DOCKER_PROBE_EVERY: Duration = Duration::from_secs(30);
/// How often the directory task checks slapd's listen addresses against
/// what they should be (the apps' bridge may have appeared).
const LISTEN_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the apps are reconciled when nothing else asks.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

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
    let started = Instant::now();
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

    let link = Arc::new(crate::federation::Link::new(false));
    let app_access = Arc::new(Notify::new());
    let shared = Arc::new(Appliance {
        started,
        started_at: OffsetDateTime::now_utc(),
        config_path: config_path.clone(),
        onboarding: RwLock::new(Arc::new(onboarding_for(
            &config,
            store.clone(),
            link.clone(),
            app_access.clone(),
        ))),
        config: RwLock::new(Arc::new(config)),
        last_reload: Mutex::new(None),
        docker: RwLock::new(DockerObservation::NotYetProbed),
        directory: RwLock::new(DirectoryObservation::Starting),
        store,
        mail: RwLock::new(status::MailObservation::default()),
        mail_wakeup: Notify::new(),
        appliance_id,
        metrics: Metrics::new(),
        docker_wakeup: Notify::new(),
        directory_reload: Notify::new(),
        apps: RwLock::new(status::AppsObservation::Pending),
        reconcile_wakeup: Notify::new(),
        front_door_reload: Notify::new(),
        federation: link,
        federation_restart: Notify::new(),
        app_access,
    });

    let mut tasks = tasks::Tasks::new();
    {
        let token = tasks.token();
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
        let token = tasks.token();
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
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("docker-probe", async move {
            loop {
                let socket = crate::docker::socket_path();
                let obs = match crate::docker::probe(&socket, Duration::from_secs(5)).await {
                    Ok(info) => DockerObservation::Reachable(info),
                    Err(e) => DockerObservation::Unreachable(e.to_string()),
                };
                let changed = shared.docker.read().map(|d| *d != obs).unwrap_or(true);
                if changed {
                    match &obs {
                        DockerObservation::Reachable(i) => log::info!(
                            task = "docker-probe";
                            "Docker {} reachable, API {}", i.engine_version, i.api_version
                        ),
                        DockerObservation::Unreachable(e) => {
                            log::warn!(task = "docker-probe"; "{e}")
                        }
                        DockerObservation::NotYetProbed => {}
                    }
                }
                if let Ok(mut d) = shared.docker.write() {
                    *d = obs;
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = shared.docker_wakeup.notified() => {}
                    _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
                }
            }
        });
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("directory", run_directory(shared, token));
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("mail", run_mail(shared, token));
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("federation", crate::federation::task::run(shared, token));
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("reconcile", run_reconcile(shared, token));
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("front-door-files", run_front_door_files(shared, token));
    }
    {
        let token = tasks.token();
        let (store, wakeup) = (shared.store.clone(), shared.app_access.clone());
        let shared = shared.clone();
        tasks.spawn(
            "app-access",
            crate::app_access::run(move || shared.config(), store, wakeup, token),
        );
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("docker-events", async move {
            loop {
                let prefix = shared.config().apps.prefix.to_string();
                let wait = async {
                    // A long request timeout: the event stream stays open.
                    let docker = crate::docker::connect(
                        &crate::docker::socket_path(),
                        Duration::from_secs(86_400),
                    )
                    .await?;
                    crate::docker::next_container_event(&docker, &prefix).await
                };
                tokio::select! {
                    _ = token.cancelled() => break,
                    r = wait => match r {
                        Ok(action) => {
                            log::info!(task = "docker-events"; "a container of ours had `{action}`: reconciling");
                            shared.reconcile_wakeup.notify_one();
                        }
                        Err(_) => tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(DOCKER_PROBE_EVERY) => {}
                        },
                    },
                }
            }
        });
    }
    {
        let token = tasks.token();
        let shared = shared.clone();
        tasks.spawn("onboarding-sweep", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        let now = crate::clock::unix_now();
                        match shared.onboarding().expire_due(now) {
                            Ok(0) => {}
                            Ok(n) => log::info!(task = "onboarding-sweep"; "{n} registration request(s) expired; their user names are free again"),
                            Err(e) => log::warn!(task = "onboarding-sweep"; "{e}"),
                        }
                        prune_records(&shared, now);
                    }
                }
            }
        });
    }
    if let Some(period) = sd_notify::watchdog_enabled() {
        let token = tasks.token();
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
            _ = sighup.recv() => reload(&shared),
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

/// Reconciles the apps on start, every [`RECONCILE_EVERY`], on a reload and
/// when Docker reports one of ours dying or going away. A failure is a
/// state in `status`, retried with backoff, never a crash loop.
async fn run_reconcile(shared: Arc<Appliance>, token: tokio_util::sync::CancellationToken) {
    let set = |o: status::AppsObservation| {
        if let Ok(mut a) = shared.apps.write() {
            *a = o;
        }
    };
    let mut failures: u32 = 0;
    let mut trigger = "start";
    // The apps are wired to the directory: let it come up first (its
    // service account secrets are made then), for a minute at most.
    for _ in 0..240 {
        let up = matches!(
            shared.directory.read().as_deref(),
            Ok(DirectoryObservation::Running { .. })
        );
        if up {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    loop {
        let config = shared.config();
        let delay = match crate::apps::desired(&config) {
            Err(e) => {
                set(status::AppsObservation::Refused(e.to_string()));
                RECONCILE_EVERY
            }
            Ok(_) => {
                match crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(10))
                    .await
                {
                    Err(e) => {
                        log::debug!(task = "reconcile"; "Docker unreachable: {e}");
                        status::restart_delay(failures.saturating_add(1))
                            .max(Duration::from_secs(5))
                    }
                    Ok(docker) => {
                        let progress = |p: crate::reconcile::apply::Progress<'_>| match p {
                            crate::reconcile::apply::Progress::Step {
                                seq,
                                of,
                                description,
                            } => {
                                log::info!(task = "reconcile"; "step {seq}/{of}: {description}");
                                set(status::AppsObservation::Reconciling {
                                    step: description.to_owned(),
                                });
                            }
                            crate::reconcile::apply::Progress::Pulled { image, bytes } => {
                                log::info!(task = "reconcile"; "pulled {image} ({})", crate::reconcile::apply::megabytes(bytes));
                            }
                            crate::reconcile::apply::Progress::Pull { .. } => {}
                        };
                        let settings = crate::reconcile::apply::Settings {
                            config: &config,
                            ready_timeout: Duration::from_secs(900),
                            progress: &progress,
                        };
                        let run = crate::reconcile::apply::reconcile(
                            &docker,
                            &shared.store,
                            &settings,
                            trigger,
                        );
                        let outcome = tokio::select! {
                            _ = token.cancelled() => break,
                            r = run => r,
                        };
                        match outcome {
                            Ok(report) => match report.failed {
                                None => {
                                    failures = 0;
                                    if report.steps > 0 {
                                        log::info!(task = "reconcile"; "{} step(s) applied; the apps are as the config wants them", report.steps);
                                    }
                                    // A new bridge means slapd must listen on its
                                    // gateway too: not converged until it does.
                                    shared.directory_reload.notify_one();
                                    wait_for_listeners(&shared, &config).await;
                                    set(status::AppsObservation::Converged);
                                    RECONCILE_EVERY
                                }
                                Some((app, step, cause)) => {
                                    failures = failures.saturating_add(1);
                                    set(status::AppsObservation::Failed { app, step, cause });
                                    status::restart_delay(failures + 4)
                                }
                            },
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                log::warn!(task = "reconcile"; "{e}");
                                set(status::AppsObservation::Failed {
                                    app: String::new(),
                                    step: "observe".into(),
                                    cause: e.to_string(),
                                });
                                status::restart_delay(failures + 4)
                            }
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = token.cancelled() => break,
            _ = shared.reconcile_wakeup.notified() => trigger = "event",
            _ = tokio::time::sleep(delay) => trigger = "timer",
        }
    }
}

/// Waits (15 s at most) until slapd listens where the config and the
/// apps' bridge want it.
async fn wait_for_listeners(shared: &Appliance, config: &Config) {
    let paths = crate::directory::slapd::Paths::new(config);
    let wanted = crate::directory::slapd::wanted_urls(config, &paths);
    for _ in 0..150 {
        if let Some(pid) = crate::directory::slapd::running_pid(&paths) {
            let have = crate::directory::slapd::listen_urls(pid).unwrap_or_default();
            let up = matches!(
                shared.directory.read().as_deref(),
                Ok(DirectoryObservation::Running { pid: p, .. }) if *p == pid
            );
            if have == wanted && up {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes what the front door serves with: the routes the config wants and
/// certificates for every hostname, at start, on reload and at least every
/// hour (a leaf nearing its end is renewed). With `[front_door.acme]`, a
/// public certificate is ordered when `frontdoor::acme::decide` says so,
/// and the task looks again when the next renewal or retry is due. The
/// front door notices the files.
async fn run_front_door_files(shared: Arc<Appliance>, token: tokio_util::sync::CancellationToken) {
    let mut reloaded = false;
    loop {
        let config = shared.config();
        let label = format!(
            "{} {}",
            config.collective.slug,
            shared.appliance_id.chars().take(8).collect::<String>()
        );
        let c = config.clone();
        let done = tokio::task::spawn_blocking(move || {
            crate::frontdoor::publish(&c, &label, OffsetDateTime::now_utc())
        })
        .await;
        match done {
            Ok(Ok(p)) => {
                if p.routes {
                    log::info!(task = "front-door-files"; "wrote the front door's routes");
                }
                if p.new_ca {
                    log::info!(task = "front-door-files"; "made a new local certificate authority: browsers must trust it again");
                    shared.audit("front-door-ca", "made a new local certificate authority");
                }
                if p.new_leaf {
                    log::info!(task = "front-door-files"; "issued the front door's certificate for every hostname");
                }
            }
            Ok(Err(e)) => log::error!(task = "front-door-files"; "{e}"),
            Err(e) => log::error!(task = "front-door-files"; "{e}"),
        }
        let now = crate::clock::unix_now();
        // An order can take minutes (validation): shutdown does not wait
        // for it. Dropping it removes its challenge files and leaves the
        // current certificate in place.
        let (run, look) = tokio::select! {
            _ = token.cancelled() => return,
            r = crate::frontdoor::renew_acme(&config, reloaded, now) => r,
        };
        report_acme(&shared, run);
        reloaded = false;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = shared.front_door_reload.notified() => reloaded = true,
            _ = tokio::time::sleep(Duration::from_secs(look.max(1).unsigned_abs())) => {}
        }
    }
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Logs and audits what the ACME step did; keys are never in it.
fn report_acme(shared: &Appliance, run: crate::frontdoor::AcmeRun) {
    use crate::frontdoor::AcmeRun;
    const TASK: &str = "front-door-files";
    match run {
        AcmeRun::Off { removed: false } => {}
        AcmeRun::Off { removed: true } => {
            log::info!(task = TASK; "[front_door.acme] is no longer configured: removed the ACME certificate; the front door serves the local CA's");
            shared.audit("acme-removed", "ACME no longer configured");
        }
        AcmeRun::Kept { renew_at } => {
            log::debug!(task = TASK; "ACME certificate good; renewal due {}", rfc3339(renew_at));
        }
        AcmeRun::Waiting { reason, until } => {
            log::info!(task = TASK; "ACME order due ({reason}) after a failure: next try {} (a reload tries at once)", rfc3339(until));
        }
        AcmeRun::Issued {
            reason,
            outcome,
            renews_at_every_check,
        } => {
            let i = &outcome.issued;
            let detail = format!(
                "{} from {} ({reason}), valid until {}",
                i.hosts.join(", "),
                i.directory,
                rfc3339(i.not_after)
            );
            log::info!(
                task = TASK;
                "ACME certificate issued for {detail}; HTTP-01 answered by the front door for {} hostname(s){}",
                outcome.answered.len(),
                if outcome.new_account { ", with a new ACME account" } else { "" }
            );
            shared.audit("acme-issued", &detail);
            if renews_at_every_check {
                log::warn!(task = TASK; "front_door.acme.renew_before_days is longer than the certificate lives ({} days): it will be ordered again at every check; lower it (30 suits 90-day certificates)", (i.not_after - i.not_before) / 86_400);
            }
        }
        AcmeRun::Failed {
            reason,
            error,
            retry_at,
        } => {
            log::error!(task = TASK; "ACME order ({reason}) failed, keeping the current certificate: {error}. Next try {} (a reload tries at once)", rfc3339(retry_at));
            shared.audit("acme-failed", &error.to_string());
        }
        AcmeRun::Broken { error } => {
            log::error!(task = TASK; "ACME: {error}");
            shared.audit("acme-failed", &error.to_string());
        }
    }
}

/// Keeps what the box records bounded: the audit log by age and size (as
/// `[log]` says) and the sign-in addresses people stopped using.
fn prune_records(shared: &Appliance, now: i64) {
    let log = shared.config().log.clone();
    let before = now - i64::from(log.audit_keep_days.days()) * 86_400;
    match shared.with_store(|s| s.prune_audit(before, log.audit_max_entries.entries())) {
        Ok(0) => {}
        Ok(n) => {
            log::info!(task = "onboarding-sweep"; "{n} audit entries past [log] audit_keep_days or audit_max_entries removed")
        }
        Err(e) => log::warn!(task = "onboarding-sweep"; "pruning the audit log: {e}"),
    }
    let forgotten = now - crate::web::session::KNOWN_FOR_SECS;
    if let Err(e) = shared.with_store(|s| s.forget_addresses_before(forgotten)) {
        log::warn!(task = "onboarding-sweep"; "forgetting old sign-in addresses: {e}");
    }
}

/// Keeps our slapd running: bootstrap once, start or adopt, make sure the
/// service accounts bind, then watch the process and start it again with
/// backoff when it dies. On shutdown slapd is left running on purpose: it is
/// the data plane, and the next daemon adopts it.
async fn run_directory(shared: Arc<Appliance>, token: tokio_util::sync::CancellationToken) {
    use crate::directory::tree::{self, Tree};
    use crate::directory::{ldap, slapd};
    let set = |obs: DirectoryObservation| {
        if let Ok(mut d) = shared.directory.write() {
            *d = obs;
        }
    };
    let mut failures = 0u32;
    let mut restarts = 0u32;
    loop {
        let config = shared.config();
        let paths = slapd::Paths::new(&config);
        let starting = async {
            let (c, p) = ((*config).clone(), paths.clone());
            let made = tokio::task::spawn_blocking(move || slapd::bootstrap(&c, &p))
                .await
                .map_err(|e| crate::directory::DirectoryError::Io {
                    what: "bootstrap task".into(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            let suffix = config.suffix().as_str();
            let wanted = tree::managed_config_text(suffix);
            if made == slapd::Bootstrap::Created {
                log::info!(task = "directory"; "created the directory for {suffix}");
                shared.remember_directory_config(&wanted);
            }
            // A cn=config naming a missing certificate would stop slapd
            // from starting: the pair is made (again) first.
            let (c, p) = ((*config).clone(), paths.clone());
            let now = OffsetDateTime::now_utc();
            match tokio::task::spawn_blocking(move || {
                crate::directory::tls::ensure_pair(&c, &p, now)
            })
            .await
            {
                Ok(Ok(Some(true))) => {
                    log::info!(task = "directory"; "issued slapd's certificate for the apps' bridge")
                }
                Ok(Err(e)) => {
                    log::warn!(task = "directory"; "slapd's certificate for the apps' bridge: {e}")
                }
                _ => {}
            }
            let (pid, adopted) = slapd::start_or_adopt(&config, &paths).await?;
            // Settings an older release wrote are brought up to this one's.
            let applied = shared
                .with_store(|s| s.meta(crate::appliance::DIRECTORY_CONFIG_KEY))
                .ok()
                .flatten();
            if applied.as_deref() != Some(wanted.as_str()) {
                ldap::apply_config(&paths, &tree::managed_config(suffix)).await?;
                log::info!(task = "directory"; "applied this release's slapd settings over ldapi");
                shared.audit("directory-config", "applied this release's slapd settings");
                shared.remember_directory_config(&wanted);
            }
            let tree = Tree::new(suffix);
            ldap::ensure_service_accounts(&paths, &tree, &config.paths.secrets_dir).await?;
            // Data an older release wrote is brought up to this one's tree.
            let at: u32 = shared
                .with_store(|s| s.meta(TREE_VERSION_KEY))
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if made == slapd::Bootstrap::Created {
                    tree::TREE_VERSION
                } else {
                    0
                });
            if at < tree::TREE_VERSION {
                let mut root = ldap::connect_root(&paths).await?;
                let now = crate::directory::people::migrate_tree(&mut root, &tree, at).await?;
                log::info!(task = "directory"; "directory data migrated from tree version {at} to {now}");
                shared.audit("directory-migrate", &format!("tree version {at} to {now}"));
            }
            if let Err(e) =
                shared.with_store(|s| s.set_meta(TREE_VERSION_KEY, &tree::TREE_VERSION.to_string()))
            {
                log::warn!(task = "directory"; "cannot record the tree version: {e}");
            }
            Ok::<_, crate::directory::DirectoryError>((pid, adopted))
        };
        // Startup must not hold up a shutdown; bootstrap is crash-safe and a
        // slapd already forked is adopted next time.
        let started = tokio::select! {
            _ = token.cancelled() => return,
            r = starting => r,
        };
        match started {
            Ok((pid, adopted)) => {
                failures = 0;
                log::info!(task = "directory", pid = pid; "slapd {} (pid {pid})", if adopted { "adopted" } else { "started" });
                set(DirectoryObservation::Running {
                    pid,
                    adopted,
                    restarts,
                });
                let up_since = tokio::time::Instant::now();
                let mut listen_check = tokio::time::interval(LISTEN_CHECK_EVERY);
                listen_check.tick().await;
                // Listeners are slapd's command line: a change needs a
                // restart, which is planned and not counted. A slapd found
                // gone while checking died, whichever branch saw it first.
                let replan = |reason: &str| -> Option<bool> {
                    let now = shared.config();
                    let have = slapd::listen_urls(pid)?;
                    let wanted = slapd::wanted_urls(&now, &paths);
                    if slapd::Paths::new(&now) == paths && wanted == have {
                        return Some(false);
                    }
                    log::info!(task = "directory"; "{reason}: slapd should listen on {wanted:?} (it listens on {have:?}); restarting it");
                    Some(true)
                };
                // LDAPS for the apps: the certificate made, renewed and
                // handed to slapd; a renewal needs a restart to be served.
                let keep_tls = || async {
                    match crate::directory::tls::keep(&shared.config(), &paths).await {
                        Ok(k) => {
                            if k.applied {
                                log::info!(task = "directory"; "slapd serves its certificate for the apps' bridge");
                                shared.audit(
                                    "directory-tls",
                                    "slapd's certificate for the apps' bridge applied",
                                );
                            }
                            k.restart
                        }
                        Err(e) => {
                            log::warn!(task = "directory"; "LDAPS for the apps: {e}");
                            false
                        }
                    }
                };
                let died = loop {
                    let planned = tokio::select! {
                        biased;
                        _ = token.cancelled() => {
                            log::info!(task = "directory"; "slapd (pid {pid}) keeps serving while the daemon is down");
                            return;
                        }
                        _ = slapd::wait_exit(pid) => None,
                        // The apps' bridge appears (or goes) with the apps.
                        _ = listen_check.tick() => {
                            if keep_tls().await {
                                log::info!(task = "directory"; "slapd's certificate for the apps' bridge was renewed; restarting slapd to serve it");
                                Some(true)
                            } else {
                                replan("the apps' bridge changed")
                            }
                        }
                        _ = shared.directory_reload.notified() => replan("directory.listen changed"),
                    };
                    match planned {
                        None => break true,
                        Some(false) => continue,
                        Some(true) => break false,
                    }
                };
                if died {
                    restarts += 1;
                    log::warn!(task = "directory", pid = pid; "slapd (pid {pid}) exited; starting it again");
                    // A slapd that dies right after starting is a crash
                    // loop: back off as for a failed start.
                    if up_since.elapsed() < Duration::from_secs(10) {
                        failures += 1;
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(status::restart_delay(failures)) => {}
                        }
                    }
                } else if let Err(e) = slapd::stop(&paths, Duration::from_secs(10)).await {
                    log::warn!(task = "directory"; "stopping slapd: {e}");
                }
            }
            Err(e) => {
                failures += 1;
                let delay = status::restart_delay(failures);
                log::error!(task = "directory"; "{e}; retrying in {delay:?}");
                set(DirectoryObservation::Failed {
                    error: e.to_string(),
                    restarts,
                    retry_in_secs: delay.as_secs().max(1),
                });
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Sends queued mail whenever there is some and SMTP is configured; failed
/// mails are retried with backoff (`mail::sender::retry_delay_secs`). Nothing
/// is dropped: a mail leaves the outbox only once the server took it.
async fn run_mail(shared: Arc<Appliance>, token: tokio_util::sync::CancellationToken) {
    use crate::mail::sender::{Sender, retry_delay_secs};
    use crate::onboarding::validate::Language;
    let set = |f: &dyn Fn(&mut status::MailObservation)| {
        if let Ok(mut m) = shared.mail.write() {
            f(&mut m);
        }
    };
    loop {
        let config = shared.config();
        let sender = match &config.smtp {
            None => {
                set(&|m| m.configured = false);
                None
            }
            Some(smtp) => match Sender::new(smtp) {
                Ok(s) => {
                    set(&|m| m.configured = true);
                    Some(s)
                }
                Err(e) => {
                    let msg = e.to_string();
                    set(&|m| {
                        m.configured = true;
                        m.last_error = Some(msg.clone());
                    });
                    None
                }
            },
        };
        if let Some(sender) = &sender {
            let now = crate::clock::unix_now();
            let due = shared
                .with_store(|s| s.due_mail(now, 50))
                .unwrap_or_default();
            for m in due {
                let params: serde_json::Value = serde_json::from_str(&m.params).unwrap_or_default();
                let lang = Language::parse(&m.language).unwrap_or_default();
                let Some(rendered) = crate::mail::templates::render(&m.template, lang, &params)
                else {
                    log::error!(task = "mail"; "mail {} has unknown template {}; dropping it", m.id, m.template);
                    let _ = shared.with_store(|s| s.mail_sent(m.id, now));
                    continue;
                };
                match sender.send(&m.recipient, &rendered).await {
                    Ok(()) => {
                        let _ = shared.with_store(|s| s.mail_sent(m.id, now));
                        set(&|o| {
                            o.sent += 1;
                            o.last_error = None;
                        });
                        shared.metrics.mail_sent.inc();
                        log::info!(task = "mail"; "sent {} to {}", m.template, m.recipient);
                    }
                    Err(e) => {
                        let retry = now + retry_delay_secs(m.attempts);
                        let msg = e.to_string();
                        let _ = shared.with_store(|s| s.mail_failed(m.id, &msg, retry));
                        log::warn!(task = "mail"; "{msg}; retrying in {} s", retry - now);
                        set(&|o| o.last_error = Some(msg.clone()));
                        shared.metrics.mail_send_failures.inc();
                        // The server is likely down for the rest too.
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = shared.mail_wakeup.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
