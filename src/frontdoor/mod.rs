//! The front door: the data plane. TLS termination, routing by host and a
//! streaming reverse proxy, in a process of its own (`commonscloud
//! front-door`) so restarting the supervisor cuts no upload.
//!
//! The supervisor decides and writes (`publish`: the routes from `routes`,
//! the certificates from `ca`; `renew_acme`: a public certificate from
//! `acme`); the front door only reads what was written (`run`, serving with
//! `proxy`) and reloads when it changes.
//!
//! Which certificate the front door serves: the ACME pair while it exists
//! and has not expired, the local CA's leaf otherwise (before the first
//! ACME certificate, when ACME is not configured, or when the ACME one
//! expired because renewals failed).

pub mod acme;
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
    pub acme: acme::Files,
    /// Where the supervisor serves the console for the front door.
    pub console_socket: PathBuf,
}

impl Paths {
    pub fn new(config: &Config) -> Self {
        Paths {
            routes: config.paths.state_dir.join("front-door/routes.json"),
            tls: ca::Files::new(&config.paths.state_dir, &config.paths.secrets_dir),
            acme: acme::Files::new(&config.paths.state_dir, &config.paths.secrets_dir),
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

/// What the supervisor's ACME step did.
#[derive(Debug)]
pub enum AcmeRun {
    /// `[front_door.acme]` is not configured; `removed` says whether an
    /// ACME certificate was there and was removed.
    Off { removed: bool },
    /// Nothing due: the certificate is good.
    Kept { renew_at: i64 },
    /// An order is due but waits after a failure.
    Waiting { reason: acme::Reason, until: i64 },
    Issued {
        reason: acme::Reason,
        outcome: acme::order::Outcome,
        /// The new certificate is already inside the renewal window
        /// (`renew_before_days` longer than the CA's certificates live): it
        /// will be ordered again at every check.
        renews_at_every_check: bool,
    },
    Failed {
        reason: acme::Reason,
        error: acme::AcmeError,
        retry_at: i64,
    },
    /// Reading or writing ACME's own files failed.
    Broken { error: acme::AcmeError },
}

/// Supervisor side: orders a public certificate by ACME when
/// `[front_door.acme]` is configured and the record says one is due (see
/// [`acme::decide`]), keeping the current one on failure; removes the ACME
/// pair when ACME is not configured. `retry_now` (a reload) skips a
/// backoff. Returns what happened and how many seconds until the next look.
pub async fn renew_acme(config: &Config, retry_now: bool, now: i64) -> (AcmeRun, i64) {
    let paths = Paths::new(config);
    let Some(settings) = &config.front_door.acme else {
        let run = match acme::forget(&paths.acme) {
            Ok(removed) => AcmeRun::Off { removed },
            Err(error) => AcmeRun::Broken { error },
        };
        return (run, acme::CHECK_EVERY_SECS);
    };
    let hosts = routes::Routes::from_config(config, &paths.console_socket).hostnames();
    let wanted = acme::Wanted {
        directory: settings.directory.as_str(),
        hosts: &hosts,
        renew_before_days: settings.renew_before_days.days(),
    };
    let mut record = match acme::read_record(&paths.acme.record) {
        Ok(r) => r,
        Err(error) => return (AcmeRun::Broken { error }, acme::CHECK_EVERY_SECS),
    };
    // An ACME pair whose files are gone (deleted by hand) is ordered again.
    if !paths.acme.cert.exists() || !paths.acme.key.exists() {
        record.issued = None;
    }
    if retry_now {
        record.retry_now();
    }
    let decision = acme::decide(&record, wanted, now);
    let look = acme::next_look(&decision, now);
    let reason = match decision {
        acme::Decision::Keep { renew_at } => return (AcmeRun::Kept { renew_at }, look),
        acme::Decision::Backoff { reason, until } => {
            return (AcmeRun::Waiting { reason, until }, look);
        }
        acme::Decision::Order(reason) => reason,
    };
    let (run, record) = match acme::order::issue(config, settings, &hosts, now).await {
        Ok(outcome) => {
            let record = acme::Record::succeeded(outcome.issued.clone());
            let renews_at_every_check =
                matches!(acme::decide(&record, wanted, now), acme::Decision::Order(_));
            let run = AcmeRun::Issued {
                reason,
                outcome,
                renews_at_every_check,
            };
            (run, record)
        }
        Err(error) => {
            let record = record.failed(now, error.to_string());
            let run = AcmeRun::Failed {
                reason,
                error,
                retry_at: record.retry_at,
            };
            (run, record)
        }
    };
    let look = acme::next_look(&acme::decide(&record, wanted, now), now);
    match acme::write_record(&paths.acme.record, &record) {
        Ok(()) => (run, look),
        // The certificate is in place; without its record the next look
        // orders again, so say so.
        Err(error) => (AcmeRun::Broken { error }, acme::CHECK_EVERY_SECS),
    }
}

/// The modification times of what the front door serves with: a change
/// means a reload.
fn stamps(paths: &Paths) -> Vec<Option<SystemTime>> {
    [
        &paths.routes,
        &paths.tls.leaf_cert,
        &paths.tls.leaf_key,
        &paths.acme.cert,
        &paths.acme.key,
    ]
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

/// The routes and the certificate to serve: the ACME pair when it exists
/// and has not expired (a pair that exists must load: a half-written one is
/// an error that keeps the previous pair serving), the local CA's leaf
/// otherwise.
fn load(paths: &Paths, now: i64) -> Result<(proxy::Loaded, Serving), proxy::ProxyError> {
    match std::fs::read(&paths.acme.cert) {
        Ok(pem) => {
            let not_after = acme::leaf_validity(&pem)
                .map_err(|message| proxy::ProxyError::Invalid {
                    path: paths.acme.cert.clone(),
                    message,
                })?
                .1;
            if not_after > now {
                let loaded = proxy::load(&paths.routes, &paths.acme.cert, &paths.acme.key)?;
                return Ok((loaded, Serving::Acme { not_after }));
            }
            log::warn!(target: "frontdoor", "the ACME certificate {} has expired; serving the local CA's until the supervisor renews it", paths.acme.cert.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(proxy::ProxyError::Io {
                what: "reading",
                path: paths.acme.cert.clone(),
                source,
            });
        }
    }
    let loaded = proxy::load(&paths.routes, &paths.tls.leaf_cert, &paths.tls.leaf_key)?;
    Ok((loaded, Serving::LocalCa))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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
    let (loaded, mut serving) = loop {
        match load(&paths, unix_now()) {
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
    let http_task = tokio::spawn(proxy::serve_http(
        http,
        https_addr.port(),
        paths.acme.challenges.clone(),
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
            Ok((l, s)) => {
                shared.swap(l);
                seen = now;
                serving = s;
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

/// Tells systemd the front door is stopping.
fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
