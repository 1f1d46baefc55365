//! The front door: the data plane. TLS termination, routing by host and a
//! streaming reverse proxy, in a process of its own (`commonscloud
//! front-door`) so restarting the supervisor cuts no upload.
//!
//! The supervisor decides and writes ([`publisher`], its `front-door-files`
//! task: the routes from `routes`, the certificates from `ca`, a public
//! certificate from `acme`); the front door only reads what was written
//! (`run`, serving with `proxy`) and reloads when it changes.
//!
//! Which certificate the front door serves: the ACME pair while it exists,
//! loads (its key matches) and has not expired, the local CA's pair
//! otherwise (before the first ACME certificate, when ACME is not
//! configured, when the ACME one expired because renewals failed, or when
//! it does not load).
//!
//! Everything the front door reads is in one directory, [`Published`]
//! (`<state_dir>/front-door`): its settings, the routes, the two pairs, the
//! ACME answers and the console's socket. Under systemd it runs as its own
//! user, whose group owns that directory and nothing else of the
//! appliance's (see `docs/security.md`).

pub mod acme;
pub mod ca;
pub mod limits;
pub mod proxy;
pub mod publisher;
pub mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::config::{Config, FrontDoorLimits, LogLevel};

/// How often the front door looks for new routes or certificates (a
/// SIGHUP makes it look at once).
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// On SIGTERM or SIGINT, how long open requests (an upload, a WebSocket
/// session) may go on before the front door exits anyway. The unit's
/// `TimeoutStopSec=` is longer, so systemd never kills a draining front
/// door.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory of the front door's files, under the state directory.
pub const PUBLISHED_DIR: &str = "front-door";

/// What the supervisor writes for the front door, and all the front door
/// reads: one directory. In the state directory, not the runtime one, so
/// the front door serves after a reboot before the supervisor is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub dir: PathBuf,
    /// [`Settings`]: where to listen, the log level, the limits.
    pub settings: PathBuf,
    pub routes: PathBuf,
    /// The local CA's leaf chain and its key, one file.
    pub local_pair: PathBuf,
    /// The ACME chain and its key, one file, while ACME is configured.
    pub acme_pair: PathBuf,
    /// HTTP-01 answers, one file per token.
    pub challenges: PathBuf,
    /// Where the supervisor serves the console for the front door.
    pub console_socket: PathBuf,
}

impl Published {
    pub fn new(dir: &Path) -> Self {
        Published {
            dir: dir.to_owned(),
            settings: dir.join("settings.json"),
            routes: dir.join("routes.json"),
            local_pair: dir.join("local.pem"),
            acme_pair: dir.join("acme.pem"),
            challenges: dir.join("acme-challenge"),
            console_socket: dir.join("console.sock"),
        }
    }

    /// `<state_dir>/front-door` of a config.
    pub fn of(config: &Config) -> Self {
        Published::new(&config.paths.state_dir.join(PUBLISHED_DIR))
    }
}

/// Where the supervisor and the front door meet: the published files, and
/// the supervisor's own (the CA, ACME's record and account) beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub published: Published,
    pub tls: ca::Files,
    pub acme: acme::Files,
}

impl Paths {
    pub fn new(config: &Config) -> Self {
        Paths {
            published: Published::of(config),
            tls: ca::Files::new(&config.paths.state_dir, &config.paths.secrets_dir),
            acme: acme::Files::new(&config.paths.state_dir, &config.paths.secrets_dir),
        }
    }
}

/// The front door's part of the config, published beside the routes: the
/// front door does not read `appliance.toml` (it may hold secrets, and the
/// front door's user may not read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub https: SocketAddr,
    pub http: SocketAddr,
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default)]
    pub limits: FrontDoorLimits,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            https: config.front_door.https.0,
            http: config.front_door.http.0,
            log_level: config.log.level,
            limits: config.front_door.limits,
        }
    }

    pub fn read(path: &Path) -> Result<Settings, proxy::ProxyError> {
        let bytes = std::fs::read(path).map_err(|source| proxy::ProxyError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| proxy::ProxyError::Invalid {
            path: path.to_owned(),
            message: format!("not the front door's settings: {e}"),
        })
    }
}

/// The mode of the published files other than the pairs: the front door's
/// group reads them, nobody else.
pub const PUBLISHED_MODE: u32 = 0o640;

/// Makes the published directory when it is missing (demo, tests; under
/// systemd tmpfiles.d made it, set-group-ID and the front door's group, and
/// it is left as it is: a chmod by the supervisor, not in that group, would
/// clear the set-group-ID bit).
pub fn ensure_published_dir(published: &Published) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&published.dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    #[error("installing the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
    #[error("cannot listen on {addr} ({key}): {source}; is another web server using that port?")]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The modification times of what the front door serves with: a change
/// means a reload.
fn stamps(p: &Published) -> Vec<Option<SystemTime>> {
    [&p.settings, &p.routes, &p.local_pair, &p.acme_pair]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Which certificate a load chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    /// The ACME pair, until its end (Unix seconds).
    Acme {
        not_after: i64,
    },
    LocalCa,
}

/// The ACME pair's TLS settings and end, when it is there, has not expired
/// and loads; why not otherwise (`None` when there is none).
fn acme_pair(path: &Path, now: i64) -> Result<(rustls::ServerConfig, i64), Option<String>> {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) => return Err(Some(format!("cannot be read: {e}"))),
    };
    let (_, not_after) = acme::leaf_validity(&pem).map_err(Some)?;
    if not_after <= now {
        return Err(Some("has expired".into()));
    }
    let tls = proxy::server_config(path, &pem).map_err(|e| Some(e.to_string()))?;
    Ok((tls, not_after))
}

/// The settings, routes and certificate to serve: the ACME pair when it is
/// there, has not expired and loads (its key matches its certificate), the
/// local CA's pair otherwise, which must load.
fn load(
    p: &Published,
    now: i64,
) -> Result<(proxy::Loaded, Serving, Settings, limits::Limits), proxy::ProxyError> {
    let settings = Settings::read(&p.settings)?;
    let routes = proxy::read_routes(&p.routes)?;
    let limits = limits::Limits::resolve(&settings.limits, limits::nofile());
    let (tls, serving) = match acme_pair(&p.acme_pair, now) {
        Ok((tls, not_after)) => (tls, Serving::Acme { not_after }),
        Err(why) => {
            if let Some(why) = why {
                log::warn!(target: "frontdoor", "the ACME certificate {} {why}; serving the local CA's until the supervisor orders a new one", p.acme_pair.display());
            }
            let pem = std::fs::read(&p.local_pair).map_err(|source| proxy::ProxyError::Io {
                what: "reading",
                path: p.local_pair.clone(),
                source,
            })?;
            (proxy::server_config(&p.local_pair, &pem)?, Serving::LocalCa)
        }
    };
    let loaded = proxy::Loaded {
        routes,
        tls: std::sync::Arc::new(tls),
    };
    Ok((loaded, serving, settings, limits))
}

fn describe(serving: Serving) -> String {
    match serving {
        Serving::Acme { not_after } => {
            let end = time::OffsetDateTime::from_unix_timestamp(not_after)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| not_after.to_string());
            format!("the ACME certificate (until {end})")
        }
        Serving::LocalCa => "the local CA's certificate".into(),
    }
}

/// Front door side: serves the published directory `dir` (its settings'
/// `https` and `http` addresses) until SIGTERM or SIGINT, reloading
/// settings, routes and certificates when their files change or on SIGHUP.
/// Waits for the supervisor's first files rather than failing, saying so.
/// Reads nothing outside `dir`.
///
/// Stopping drains: the listeners close (new connections are refused),
/// systemd hears `STOPPING=1`, and open requests finish for up to
/// [`DRAIN_TIMEOUT`] (a second SIGTERM or SIGINT cuts that short). Then it
/// returns `Ok`, naming what it had to cut.
pub async fn run(dir: &Path) -> Result<(), FrontDoorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let paths = Published::new(dir);
    let handler = |kind, name| signal(kind).map_err(|e| FrontDoorError::Signal(name, e));
    let mut hup = handler(SignalKind::hangup(), "SIGHUP")?;
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut said = false;
    let (loaded, mut serving, settings, limits) = loop {
        match load(&paths, unix_now()) {
            Ok(l) => break l,
            Err(e) => {
                if !said {
                    log::warn!(target: "frontdoor", "{e}; waiting for the supervisor (`commonscloud serve`) to write the front door's files in {}", paths.dir.display());
                    said = true;
                }
                let stop = tokio::select! {
                    _ = term.recv() => true,
                    _ = int.recv() => true,
                    _ = hup.recv() => false,
                    _ = tokio::time::sleep(WATCH_EVERY) => false,
                };
                if stop {
                    stopping();
                    return Ok(());
                }
            }
        }
    };
    let mut seen = stamps(&paths);
    say_limits(&limits);
    let shared = proxy::Shared::new(loaded);
    let gate = limits::Gate::new(limits);
    let (https_addr, http_addr) = (settings.https, settings.http);
    let listen = |key, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FrontDoorError::Listen { key, addr, source })
    };
    let https = listen("front_door.https", https_addr).await?;
    let http = listen("front_door.http", http_addr).await?;
    let drain = proxy::Drain::new();
    let https_task = tokio::spawn(proxy::serve_https(
        https,
        shared.clone(),
        gate.clone(),
        drain.clone(),
    ));
    let http_task = tokio::spawn(proxy::serve_http(
        http,
        https_addr.port(),
        paths.challenges.clone(),
        gate.clone(),
        drain.clone(),
    ));
    log::info!(target: "frontdoor", "serving https on {https_addr} and http on {http_addr}, with {}", describe(serving));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        let forced = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => true,
            _ = tokio::time::sleep(WATCH_EVERY) => false,
        };
        let now = stamps(&paths);
        let expired = matches!(serving, Serving::Acme { not_after } if not_after <= unix_now());
        if !forced && now == seen && !expired {
            continue;
        }
        match load(&paths, unix_now()) {
            Ok((l, s, new, limits)) => {
                if limits != gate.limits() {
                    say_limits(&limits);
                    gate.set_limits(limits);
                }
                shared.swap(l);
                seen = now;
                serving = s;
                if (new.https, new.http) != (https_addr, http_addr) {
                    log::warn!(target: "frontdoor", "front_door.https or front_door.http changed (to {} and {}): restart the front door to listen there; it still listens on {https_addr} and {http_addr}", new.https, new.http);
                }
                log::info!(target: "frontdoor", "routes and certificates reloaded, serving {}", describe(serving));
            }
            // A half-written pair is retried at the next look; the old one
            // keeps serving meanwhile.
            Err(e) => {
                log::warn!(target: "frontdoor", "not reloaded, still serving the previous routes and certificates: {e}")
            }
        }
    }
    // The accept loops end at once and drop their listeners: once they
    // have, a new connection is refused rather than left to hang.
    drain.begin();
    let _ = https_task.await;
    let _ = http_task.await;
    stopping();
    let open = drain.open();
    if open > 0 {
        log::info!(target: "frontdoor", "draining: {open} open connection(s) may finish their requests for up to {} s", DRAIN_TIMEOUT.as_secs());
    }
    let cut = tokio::select! {
        left = drain.finish(DRAIN_TIMEOUT) => left,
        _ = term.recv() => drain.open(),
        _ = int.recv() => drain.open(),
    };
    if cut > 0 {
        log::warn!(target: "frontdoor", "stopped with {cut} connection(s) still open, cut short (uploads or WebSocket sessions that did not end in time)");
    } else {
        log::info!(target: "frontdoor", "stopped");
    }
    Ok(())
}

/// Logs the caps and timeouts in force, and warns when the descriptor
/// limit is too low for the connection cap.
fn say_limits(l: &limits::Limits) {
    log::info!(target: "frontdoor", "at most {} connections, {} per address (IPv6: per /64); timeouts: handshake {} s, request head and idle keep-alive {} s, silence in a body {} s, an answer left unread {} s, a silent WebSocket {} s", l.connections, l.per_address, l.handshake.as_secs(), l.header.as_secs(), l.body_idle.as_secs(), l.send.as_secs(), l.websocket_idle.as_secs());
    let nofile = limits::nofile();
    if l.fds_needed() > nofile {
        log::warn!(target: "frontdoor", "front_door.limits.connections = {} may need {} descriptors but this process may open {nofile}: raise LimitNOFILE= or lower the cap (past it, new connections wait until others close)", l.connections, l.fds_needed());
    }
}

/// Tells systemd the front door is stopping.
fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
