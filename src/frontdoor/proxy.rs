//! The front door's server: TLS termination with the current certificate,
//! HTTP/1.1 to the route of the request's host, bodies streamed both ways,
//! WebSocket upgrades spliced, forwarding headers set by us only, a page
//! naming the app when its upstream is down, and plain HTTP redirected
//! except for ACME HTTP-01 answers.
//!
//! Reloading swaps the routes and the TLS config for new connections; the
//! ones open keep what they started with, so nothing is cut.
//!
//! Stopping is a [`Drain`]: the accept loops end (their listeners close, so
//! new connections are refused), every open connection finishes the request
//! it is in and closes, and spliced upgrades run on until either side ends
//! them, all up to the caller's deadline.
//!
//! What a client may hold is bounded by [`super::limits`]: every accepted
//! connection is admitted (caps in total and per address) or closed at
//! once, and every step has a timeout on the client's silence. An
//! `accept()` that fails (descriptors exhausted) waits before the next.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acme;
use super::limits::{
    AcceptBackoff, Activity, Admission, Gate, Guard, IdleBody, Limits, Refused, Throttled, Watched,
};
use super::routes::{Route, Routes};

/// How long an upstream may take to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (hyper's read buffer).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// An answer's body: an upstream's streamed, or our own pages. Its error
/// is an `io::Error` (a concrete type: a boxed trait object here trips
/// rustc's higher-ranked `Send` checks in the connection tasks).
type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// What a connection is served with: swapped whole on reload.
pub struct Loaded {
    pub routes: Routes,
    pub tls: Arc<rustls::ServerConfig>,
}

impl Loaded {
    /// Reads a routes file and a pair file.
    pub fn read(routes: &Path, pair: &Path) -> Result<Loaded, ProxyError> {
        let pem = std::fs::read(pair).map_err(|source| ProxyError::Io {
            what: "reading",
            path: pair.to_owned(),
            source,
        })?;
        Ok(Loaded {
            routes: read_routes(routes)?,
            tls: Arc::new(server_config(pair, &pem)?),
        })
    }
}

/// The current [`Loaded`], shared by every accept loop.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<Loaded>>>);

impl Shared {
    pub fn new(loaded: Loaded) -> Self {
        Shared(Arc::new(RwLock::new(Arc::new(loaded))))
    }

    pub fn current(&self) -> Arc<Loaded> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// New connections get `loaded`; open ones keep theirs.
    pub fn swap(&self, loaded: Loaded) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(loaded),
            Err(p) => *p.into_inner() = Arc::new(loaded),
        }
    }
}

/// A graceful stop, shared by the accept loops and every connection and
/// spliced upgrade they start. Cloning shares it.
#[derive(Clone, Default)]
pub struct Drain {
    begun: CancellationToken,
    open: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Drain::default()
    }

    /// Stops the accept loops and asks every open connection to close once
    /// its current request is answered. Idempotent.
    pub fn begin(&self) {
        self.begun.cancel();
        self.open.close();
    }

    pub fn has_begun(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Connections and spliced upgrades still open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// After [`Drain::begin`]: waits until everything open has finished,
    /// for at most `deadline`. Returns how many were still open then (0:
    /// all finished).
    pub async fn finish(&self, deadline: Duration) -> usize {
        match tokio::time::timeout(deadline, self.open.wait()).await {
            Ok(()) => 0,
            Err(_) => self.open.len(),
        }
    }

    /// The next connection on `listener`, or `None` once the drain has
    /// begun: the caller then returns and drops the listener, so new
    /// connections are refused. After a failed `accept()` (descriptors or
    /// memory exhausted: the listener stays readable, so an immediate retry
    /// would spin) it waits per [`AcceptBackoff`], or until a connection
    /// closes.
    pub async fn accept(
        &self,
        listener: &TcpListener,
        admission: &Admission,
    ) -> Option<(TcpStream, SocketAddr)> {
        static ERRORS: Throttled = Throttled::new();
        let mut backoff = AcceptBackoff::default();
        loop {
            let error = tokio::select! {
                biased;
                _ = self.begun.cancelled() => return None,
                accepted = listener.accept() => match accepted {
                    Ok(c) => return Some(c),
                    Err(e) => e,
                },
            };
            let wait = backoff.failed();
            if let Some(n) = ERRORS.tick() {
                log::warn!(target: "frontdoor", "accepting a connection failed {n} time(s) in the last minute ({error}); waiting up to {} s between tries. If it says \"too many open files\", raise LimitNOFILE= or lower front_door.limits.connections", AcceptBackoff::MAX.as_secs());
            }
            tokio::select! {
                biased;
                _ = self.begun.cancelled() => return None,
                _ = admission.released() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs `task` (a connection, a splice) so that the drain waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.open.spawn(task);
    }

    /// Drives a hyper server connection; once the drain begins, it answers
    /// the request in progress (an upload keeps streaming) and closes.
    pub async fn serve<C: Graceful>(&self, conn: C) {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = self.begun.cancelled() => {}
        }
        conn.as_mut().finish_then_close();
        let _ = conn.await;
    }
}

/// A server connection that can be told to close after the request it is
/// in: hyper's HTTP/1 connections, with or without upgrades (hyper-util's
/// `GracefulConnection` lacks the latter).
pub trait Graceful: Future {
    fn finish_then_close(self: Pin<&mut Self>);
}

impl<I, B, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn finish_then_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, B, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn finish_then_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Reads the routes file.
pub fn read_routes(path: &Path) -> Result<Routes, ProxyError> {
    let bytes = std::fs::read(path).map_err(|source| ProxyError::Io {
        what: "reading",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ProxyError::Invalid {
        path: path.to_owned(),
        message: format!("not a routes file: {e}"),
    })
}

/// The TLS settings for a pair file's text: its PEM chain (leaf first) and
/// the leaf's PEM key, with `path` for the errors. A key that does not
/// match the leaf is refused.
pub fn server_config(path: &Path, pem: &[u8]) -> Result<rustls::ServerConfig, ProxyError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |message: String| ProxyError::Invalid {
        path: path.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| invalid(format!("holds no PEM private key: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(format!("the key does not go with the certificate ({e})")))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// One admitted client connection, as its requests see it.
struct Conn {
    peer: SocketAddr,
    /// Its place in the caps: a spliced upgrade keeps it.
    guard: Arc<Guard>,
    activity: Activity,
    limits: Limits,
}

/// Admits a connection, or closes it at once (a reset: nothing of it
/// lingers), logging refusals at most once a minute.
fn admit(
    admission: &Admission,
    tcp: &TcpStream,
    peer: SocketAddr,
    limits: &Limits,
) -> Option<Guard> {
    static REFUSED: Throttled = Throttled::new();
    match admission.admit(peer.ip(), limits) {
        Ok(g) => Some(g),
        Err(why) => {
            let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
            if let Some(n) = REFUSED.tick() {
                let cap = match why {
                    Refused::Total => format!("all {} connections are taken", limits.connections),
                    Refused::PerAddress(client) => {
                        format!("{client} holds its {} connections", limits.per_address)
                    }
                };
                log::warn!(target: "frontdoor", "refused {n} connection(s) in the last minute; the latest because {cap} (front_door.limits)");
            }
            None
        }
    }
}

/// Serves HTTPS on `listener` until `drain` begins, then returns (closing
/// the listener); the connections it started are the drain's.
pub async fn serve_https(listener: TcpListener, shared: Shared, gate: Gate, drain: Drain) {
    while let Some((tcp, peer)) = drain.accept(&listener, &gate.admission).await {
        let loaded = shared.current();
        let limits = gate.limits();
        let Some(guard) = admit(&gate.admission, &tcp, peer, &limits) else {
            continue;
        };
        let d = drain.clone();
        drain.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let (tcp, activity) = Watched::new(tcp, limits.send);
            let acceptor = tokio_rustls::TlsAcceptor::from(loaded.tls.clone());
            // A handshake still going when the drain begins is dropped: no
            // request was made on it yet.
            let tls = tokio::select! {
                done = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)) => done,
                _ = d.begun.cancelled() => return,
            };
            let Ok(Ok(tls)) = tls else {
                return;
            };
            let conn = Arc::new(Conn {
                peer,
                guard: Arc::new(guard),
                activity,
                limits,
            });
            let splices = d.clone();
            let service = hyper::service::service_fn(move |req| {
                let (loaded, splices, conn) = (loaded.clone(), splices.clone(), conn.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(req, &conn, &loaded, &splices).await)
                }
            });
            d.serve(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades(),
            )
            .await;
        });
    }
}

/// Serves plain HTTP on `listener`: the ACME HTTP-01 answers found in
/// `challenges` (one file per token, written by the supervisor), and a
/// redirect to HTTPS for everything else. Returns once `drain` begins,
/// like [`serve_https`]; its connections count in the same caps.
pub async fn serve_http(
    listener: TcpListener,
    https_port: u16,
    challenges: PathBuf,
    gate: Gate,
    drain: Drain,
) {
    let challenges = Arc::new(challenges);
    while let Some((tcp, peer)) = drain.accept(&listener, &gate.admission).await {
        let limits = gate.limits();
        let Some(guard) = admit(&gate.admission, &tcp, peer, &limits) else {
            continue;
        };
        let d = drain.clone();
        let challenges = challenges.clone();
        drain.spawn(async move {
            let _guard = guard;
            let (tcp, _) = Watched::new(tcp, limits.send);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let challenges = challenges.clone();
                async move {
                    let resp = match acme::challenge_token(req.uri().path()) {
                        Some(token)
                            if req.method() == Method::GET || req.method() == Method::HEAD =>
                        {
                            challenge(&challenges, token).await
                        }
                        // A malformed token or another method: never a
                        // redirect for the ACME path, never a file.
                        _ if req.uri().path().starts_with(acme::CHALLENGE_PREFIX) => not_found(),
                        _ => redirect(&req, https_port),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            d.serve(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(tcp), service),
            )
            .await;
        });
    }
}

/// The largest challenge answer served (a key authorization is ~90 bytes).
const MAX_CHALLENGE_BYTES: u64 = 4096;

/// The key authorization for `token` (already checked to be a single
/// base64url segment), or 404.
async fn challenge(dir: &Path, token: &str) -> Response<Body> {
    let path = dir.join(token);
    let small = tokio::fs::symlink_metadata(&path)
        .await
        .is_ok_and(|m| m.is_file() && m.len() <= MAX_CHALLENGE_BYTES);
    match tokio::fs::read(&path).await {
        Ok(bytes) if small => {
            let mut r = Response::new(
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(super::routes::normalize_host);
    let Some(host) = host else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown host",
            "This address is not served here.",
        );
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// An upstream's body as the client's answer.
fn streamed(b: Incoming) -> Body {
    b.map_err(std::io::Error::other).boxed()
}

/// A small HTML page, for errors the front door itself answers.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body><main><h1>{title}</h1><p>{text}</p></main></body></html>"
    );
    let mut r = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Headers that describe one hop, never passed on (RFC 9110 §7.6.1), and
/// the forwarding headers only the front door may set.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];
const FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Whether the request asks to switch protocols (a WebSocket).
fn upgrade_of(headers: &hyper::HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in HOP {
        headers.remove(h);
    }
}

async fn handle(
    mut req: Request<Incoming>,
    conn: &Conn,
    loaded: &Loaded,
    drain: &Drain,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut resp = match loaded.routes.route(&host) {
        None => page(
            StatusCode::MISDIRECTED_REQUEST,
            "Unknown host",
            "This address is not served here.",
        ),
        Some(Route::Disabled { app }) => page(
            StatusCode::NOT_FOUND,
            &format!("{} is not enabled", app_title(app.as_str())),
            "An admin of this box can enable it in the console.",
        ),
        Some(route) => {
            let upgrade = upgrade_of(req.headers());
            let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
            let app = match route {
                Route::App { app, .. } => app_title(app.as_str()),
                _ => "The console".to_owned(),
            };
            prepare(&mut req, conn.peer, &host, upgrade.as_ref());
            let (parts, body) = req.into_parts();
            let (body, body_timed_out) = IdleBody::new(body, conn.limits.body_idle);
            let req = Request::from_parts(parts, body);
            match forward(route, req).await {
                Err(_) if body_timed_out.load(std::sync::atomic::Ordering::Relaxed) => {
                    let mut r = page(
                        StatusCode::REQUEST_TIMEOUT,
                        "Request timed out",
                        "Your browser stopped sending. Try again.",
                    );
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
                Err(why) => {
                    log::warn!(target: "frontdoor", "{host}: upstream unreachable: {why}");
                    page(
                        StatusCode::BAD_GATEWAY,
                        &format!("{app} is not answering"),
                        &format!(
                            "{app} on this box is down or starting. Try again in a minute; if it lasts, an admin can look at the console's Apps page."
                        ),
                    )
                }
                Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    if let Some(client) = client_upgrade {
                        let upstream = hyper::upgrade::on(&mut resp);
                        // The splice keeps the connection's place in the
                        // caps, and ends after a silence both ways. The
                        // drain waits for it too.
                        let (guard, activity) = (conn.guard.clone(), conn.activity.clone());
                        let idle = conn.limits.websocket_idle;
                        drain.spawn(async move {
                            let _guard = guard;
                            if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                                    _ = activity.silent_for(idle) => {
                                        log::debug!(target: "frontdoor", "closed an upgraded connection silent for {} s", idle.as_secs());
                                    }
                                }
                            }
                        });
                    }
                    resp.map(streamed)
                }
                Ok(mut resp) => {
                    strip_hop(resp.headers_mut());
                    resp.map(streamed)
                }
            }
        }
    };
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

fn app_title(app: &str) -> String {
    match app {
        "nextcloud" => "Nextcloud".into(),
        "collabora" => "Collabora Online".into(),
        "discourse" => "The forum (Discourse)".into(),
        other => other.to_owned(),
    }
}

/// The request as the upstream gets it: hop-by-hop and client-sent
/// forwarding headers gone, ours set, the upgrade kept when one is asked.
fn prepare<B>(req: &mut Request<B>, peer: SocketAddr, host: &str, upgrade: Option<&HeaderValue>) {
    let h = req.headers_mut();
    strip_hop(h);
    for f in FORWARDING {
        h.remove(f);
    }
    let ip = peer.ip().to_canonical().to_string();
    if let Ok(v) = HeaderValue::from_str(&ip) {
        h.insert("x-forwarded-for", v.clone());
        h.insert("x-real-ip", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert("x-forwarded-host", v);
    }
    if let Some(u) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }
    // Origin-form for the upstream: only the path and query.
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Ok(uri) = pq.parse() {
        *req.uri_mut() = uri;
    }
}

/// Sends the request on a fresh connection to the route's upstream.
async fn forward<B>(route: &Route, req: Request<B>) -> Result<Response<Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match route {
        Route::App { upstream, .. } => {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
                .await
                .map_err(|_| format!("connecting to {upstream} timed out"))?
                .map_err(|e| format!("connecting to {upstream}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            send(TokioIo::new(tcp), req).await
        }
        Route::Console { socket } => {
            let unix = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket))
                .await
                .map_err(|_| format!("connecting to {} timed out", socket.display()))?
                .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
            send(TokioIo::new(unix), req).await
        }
        Route::Disabled { .. } => Err("the app is not enabled".into()),
    }
}

async fn send<T, B>(io: TokioIo<T>, req: Request<B>) -> Result<Response<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending the request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn only_a_connection_upgrade_is_an_upgrade() {
        let mut h = hyper::HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_of(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_of(&h), Some(HeaderValue::from_static("websocket")));
    }
}
