//! The front door: the data plane. TLS termination, routing by host and a
//! streaming reverse proxy, in a process of its own (`commonscloud
//! front-door`) so restarting the supervisor cuts no upload.
//!
//! The supervisor decides and writes (`publish`: the routes from `routes`,
//! the certificates from `ca`); the front door only reads what was written
//! (`run`, serving with `proxy`) and reloads when it changes.

pub mod ca;
pub mod proxy;
pub mod routes;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::Config;

/// How often the front door looks for new routes or certificates (a
/// SIGHUP makes it look at once).
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// On SIGTERM or SIGINT, how long open requests (an upload, a WebSocket
/// session) may go on before the front door exits anyway. The unit's
/// `TimeoutStopSec=` is longer, so systemd never kills a draining front
/// door.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the supervisor and the front door meet. In the state directory,
/// not the runtime one, so the front door serves after a reboot before
/// the supervisor is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub routes: PathBuf,
    pub tls: ca::Files,
    /// Where the supervisor serves the console for the front door.
    pub console_socket: PathBuf,
}

impl Paths {
    pub fn new(config: &Config) -> Self {
        Paths {
            routes: config.paths.state_dir.join("front-door/routes.json"),
            tls: ca::Files::new(&config.paths.state_dir, &config.paths.secrets_dir),
            console_socket: config.paths.runtime_dir.join("console.sock"),
        }
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

/// What `publish` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    pub routes: bool,
    pub new_ca: bool,
    pub new_leaf: bool,
}

/// Supervisor side: writes the routes the config wants (when they
/// changed) and makes sure the certificates cover every hostname and are
/// not near their end. `label` names this appliance's CA.
pub fn publish(
    config: &Config,
    label: &str,
    now: time::OffsetDateTime,
) -> Result<Published, ca::CaError> {
    let paths = Paths::new(config);
    let routes = routes::Routes::from_config(config, &paths.console_socket);
    let json = serde_json::to_vec_pretty(&routes).map_err(|e| ca::CaError::Record {
        path: paths.routes.clone(),
        message: e.to_string(),
    })?;
    let changed = std::fs::read(&paths.routes).ok().as_deref() != Some(json.as_slice());
    if changed {
        ca::write_atomic(&paths.routes, &json, 0o644)?;
    }
    let (new_ca, new_leaf) = ca::ensure(
        &paths.tls,
        label,
        config.collective.domain.as_str(),
        &routes.hostnames(),
        now,
    )?;
    Ok(Published {
        routes: changed,
        new_ca,
        new_leaf,
    })
}

/// The modification times of what the front door serves with: a change
/// means a reload.
fn stamps(paths: &Paths) -> Vec<Option<SystemTime>> {
    [&paths.routes, &paths.tls.leaf_cert, &paths.tls.leaf_key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn load(paths: &Paths) -> Result<proxy::Loaded, proxy::ProxyError> {
    proxy::load(&paths.routes, &paths.tls.leaf_cert, &paths.tls.leaf_key)
}

/// Front door side: serves `front_door.https` and `front_door.http` until
/// SIGTERM or SIGINT, reloading routes and certificates when their files
/// change or on SIGHUP. Waits for the supervisor's first files rather than
/// failing, saying so.
///
/// Stopping drains: the listeners close (new connections are refused),
/// systemd hears `STOPPING=1`, and open requests finish for up to
/// [`DRAIN_TIMEOUT`] (a second SIGTERM or SIGINT cuts that short). Then it
/// returns `Ok`, naming what it had to cut.
pub async fn run(config: &Config) -> Result<(), FrontDoorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let paths = Paths::new(config);
    let handler = |kind, name| signal(kind).map_err(|e| FrontDoorError::Signal(name, e));
    let mut hup = handler(SignalKind::hangup(), "SIGHUP")?;
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut said = false;
    let loaded = loop {
        match load(&paths) {
            Ok(l) => break l,
            Err(e) => {
                if !said {
                    log::warn!(target: "frontdoor", "{e}; waiting for the supervisor (`commonscloud serve`) to write the routes and certificates");
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
    let shared = proxy::Shared::new(loaded);
    let https_addr = config.front_door.https.0;
    let http_addr = config.front_door.http.0;
    let listen = |key, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FrontDoorError::Listen { key, addr, source })
    };
    let https = listen("front_door.https", https_addr).await?;
    let http = listen("front_door.http", http_addr).await?;
    let drain = proxy::Drain::new();
    let https_task = tokio::spawn(proxy::serve_https(https, shared.clone(), drain.clone()));
    let http_task = tokio::spawn(proxy::serve_http(http, https_addr.port(), drain.clone()));
    log::info!(target: "frontdoor", "serving https on {https_addr} and http on {http_addr}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        let forced = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => true,
            _ = tokio::time::sleep(WATCH_EVERY) => false,
        };
        let now = stamps(&paths);
        if !forced && now == seen {
            continue;
        }
        match load(&paths) {
            Ok(l) => {
                shared.swap(l);
                seen = now;
                log::info!(target: "frontdoor", "routes and certificates reloaded");
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

/// Tells systemd the front door is stopping.
fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
