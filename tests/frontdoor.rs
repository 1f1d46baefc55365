//! The front door's proxy in-process, over real TLS with the local CA, in
//! front of a small upstream of the test's own: forwarding headers are
//! ours only, a down upstream is a 502 naming the app, plain HTTP is
//! redirected, a large upload streams with bounded memory, an upgrade is
//! spliced both ways, a new certificate is served without a restart, and a
//! drain refuses new connections while a spliced upgrade goes on until it
//! ends or the deadline passes.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use commonscloud::frontdoor::ca::{self, Files};
use commonscloud::frontdoor::limits::{Gate, Limits};
use commonscloud::frontdoor::proxy::{self, Shared};
use commonscloud::frontdoor::routes::{Route, Routes};
use commonscloud::model::AppName;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "quimper.example.org";

fn host(h: &str) -> String {
    format!("{h}.{DOMAIN}")
}

/// The upstream: answers with what it received (method, path, headers, the
/// body's length and SHA-256, read as a stream), or switches protocols on
/// `/ws` and echoes.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    if req.uri().path() == "/ws" {
                        let up = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(up.await.unwrap());
                            let mut buf = [0u8; 1024];
                            loop {
                                let n = io.read(&mut buf).await.unwrap_or(0);
                                if n == 0 {
                                    break;
                                }
                                io.write_all(&buf[..n]).await.unwrap();
                            }
                        });
                        let r = Response::builder()
                            .status(101)
                            .header("connection", "upgrade")
                            .header("upgrade", "websocket")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        return Ok::<_, hyper::Error>(r);
                    }
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let path = req.uri().to_string();
                    let method = req.method().to_string();
                    let (len, sha256) = common::length_and_sha256(req.into_body()).await?;
                    let v = serde_json::json!({"method": method, "path": path, "headers": headers,
                        "len": len, "sha256": sha256});
                    Ok(Response::new(Full::new(Bytes::from(v.to_string()))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

struct Door {
    dir: tempfile::TempDir,
    files: Files,
    shared: Shared,
    https: SocketAddr,
    http: SocketAddr,
    up: SocketAddr,
    drain: proxy::Drain,
    /// The accept loops: they end when the drain begins.
    loops: Vec<tokio::task::JoinHandle<()>>,
}

fn routes_file(dir: &Path, up: SocketAddr) -> std::path::PathBuf {
    let mut r = Routes::default();
    r.hosts.insert(
        host("box"),
        Route::Console {
            socket: dir.join("no-console.sock"),
        },
    );
    r.hosts.insert(
        host("cloud"),
        Route::App {
            app: AppName::Nextcloud,
            upstream: up,
        },
    );
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    r.hosts.insert(
        host("forum"),
        Route::App {
            app: AppName::Discourse,
            upstream: dead,
        },
    );
    r.hosts.insert(
        host("office"),
        Route::Disabled {
            app: AppName::Collabora,
        },
    );
    let p = dir.join("routes.json");
    std::fs::write(&p, serde_json::to_vec(&r).unwrap()).unwrap();
    p
}

async fn door() -> Door {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(&dir.path().join("state"), &dir.path().join("secrets"));
    let hosts: Vec<String> = ["box", "cloud", "office", "forum"]
        .iter()
        .map(|h| host(h))
        .collect();
    ca::ensure(
        &files,
        "test",
        DOMAIN,
        &hosts,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let up = upstream().await;
    let routes = routes_file(dir.path(), up);
    let shared = Shared::new(proxy::Loaded::read(&routes, &files.pair).unwrap());
    let https_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (https, http) = (https_l.local_addr().unwrap(), http_l.local_addr().unwrap());
    let drain = proxy::Drain::new();
    let gate = Gate::new(Limits::resolve(&Default::default(), 65536));
    let loops = vec![
        tokio::spawn(proxy::serve_https(
            https_l,
            shared.clone(),
            gate.clone(),
            drain.clone(),
        )),
        tokio::spawn(proxy::serve_http(
            http_l,
            https.port(),
            dir.path().join("challenges"),
            gate,
            drain.clone(),
        )),
    ];
    Door {
        dir,
        files,
        shared,
        https,
        http,
        up,
        drain,
        loops,
    }
}

impl Door {
    async fn tls(&self, name: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.https).await.unwrap();
        let sni = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        common::tls_connector(&self.files.ca_cert)
            .connect(sni, tcp)
            .await
            .unwrap()
    }

    /// One request over a new TLS connection; the body is the whole answer.
    async fn send<B>(&self, name: &str, req: Request<B>) -> (u16, hyper::HeaderMap, Bytes)
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(self.tls(name).await);
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = s.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (
            parts.status.as_u16(),
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }
}

fn get(h: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", h)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn forwarding_headers_are_ours_and_errors_name_the_app() {
    let d = door().await;
    let req = Request::get("/x?y=1")
        .header("host", host("cloud"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (code, headers, body) = d.send(&host("cloud"), req).await;
    assert_eq!(code, 200, "{body:?}");
    assert!(
        headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let h = &v["headers"];
    assert_eq!(v["path"], "/x?y=1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{v}");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], host("cloud"));
    assert!(
        h.get("forwarded").is_none() && h.get("x-hop").is_none(),
        "{v}"
    );

    let (code, _, body) = d.send(&host("forum"), get(&host("forum"), "/")).await;
    assert_eq!(code, 502);
    assert!(String::from_utf8_lossy(&body).contains("The forum (Discourse) is not answering"));
    let (code, _, body) = d.send(&host("box"), get(&host("box"), "/")).await;
    assert_eq!(code, 502, "the console's socket is not there");
    assert!(String::from_utf8_lossy(&body).contains("The console is not answering"));
    let (code, _, body) = d.send(&host("office"), get(&host("office"), "/")).await;
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("Collabora Online is not enabled"));
    let (code, _, _) = d.send(&host("cloud"), get("evil.example.com", "/")).await;
    assert_eq!(code, 421, "a host this box does not serve");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let d = door().await;
    let tcp = TcpStream::connect(d.http).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = s
        .send_request(get(&host("cloud"), "/a/b?c=d"))
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("https://{}:{}/a/b?c=d", host("cloud"), d.https.port()).as_str()
    );
}

/// Sends `head` as raw bytes on plain HTTP (so no client tidies the path)
/// and returns the status code and the body.
async fn raw_http(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn acme_challenges_are_served_over_plain_http_and_nothing_else() {
    let d = door().await;
    let dir = d.dir.path().join("challenges");
    std::fs::create_dir_all(&dir).unwrap();
    let token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
    let answer = format!("{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI");
    std::fs::write(dir.join(token), &answer).unwrap();
    // A file outside the directory that a traversal would reach, and a
    // symlink with a valid token's name pointing at the leaf's key.
    std::fs::write(d.dir.path().join("outside"), "secret").unwrap();
    std::os::unix::fs::symlink(&d.files.pair, dir.join("linkToKey")).unwrap();
    let get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            host("cloud")
        )
    };

    let (code, body) = raw_http(
        d.http,
        &get(&format!("/.well-known/acme-challenge/{token}")),
    )
    .await;
    assert_eq!((code, body.as_str()), (200, answer.as_str()));
    let head = format!(
        "HEAD /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host("cloud")
    );
    assert_eq!(raw_http(d.http, &head).await.0, 200);
    for path in [
        "/.well-known/acme-challenge/absentToken",
        "/.well-known/acme-challenge/../outside",
        "/.well-known/acme-challenge/..%2foutside",
        "/.well-known/acme-challenge/%2e%2e%2foutside",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/linkToKey",
        "/.well-known/acme-challenge/a.b",
    ] {
        let (code, body) = raw_http(d.http, &get(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(
            !body.contains("secret") && !body.contains("PRIVATE"),
            "{path}: {body}"
        );
    }
    let post = format!(
        "POST /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        host("cloud")
    );
    assert_eq!(raw_http(d.http, &post).await.0, 404, "only GET and HEAD");
    // Everything else is still redirected.
    let (code, _) = raw_http(d.http, &get("/.well-known/other")).await;
    assert_eq!(code, 301);
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_with_bounded_memory() {
    let d = door().await;
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096; // 1 GiB
    let mut expected = Sha256::new();
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..CHUNKS {
        expected.update(&chunk);
    }
    let chunk = Bytes::from(chunk);
    let before = rss_kb();
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let req = Request::put("/upload")
        .header("host", host("cloud"))
        .header("content-length", (CHUNK * CHUNKS).to_string())
        .body(StreamBody::new(stream))
        .unwrap();
    let (code, _, body) = d.send(&host("cloud"), req).await;
    let grew_mb = rss_kb().saturating_sub(before) / 1024;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], (CHUNK * CHUNKS) as u64);
    assert_eq!(v["sha256"], format!("{:x}", expected.finalize()));
    assert!(
        grew_mb < 64,
        "1 GiB passed through, but memory grew by {grew_mb} MB"
    );
}

/// Opens a WebSocket through the front door and checks the 101.
async fn websocket(d: &Door) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = d.tls(&host("cloud")).await;
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        host("cloud")
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("upgrade: websocket"), "{text}");
    tls
}

async fn echoes(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut echo = vec![0u8; msg.len()];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(echo, msg);
}

#[tokio::test]
async fn an_upgrade_is_spliced_both_ways() {
    let d = door().await;
    let mut tls = websocket(&d).await;
    for msg in [&b"ping"[..], b"a longer message, twice"] {
        echoes(&mut tls, msg).await;
    }
}

#[tokio::test]
async fn a_drain_refuses_new_connections_and_waits_for_a_websocket_until_its_deadline() {
    let mut d = door().await;
    let mut ws = websocket(&d).await;
    // An idle keep-alive connection: the drain closes it at once.
    let io = TokioIo::new(d.tls(&host("cloud")).await);
    let (mut idle, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let idle_conn = tokio::spawn(conn);
    let r = idle.send_request(get(&host("cloud"), "/")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    d.drain.begin();
    for l in d.loops.drain(..) {
        tokio::time::timeout(std::time::Duration::from_secs(5), l)
            .await
            .expect("the accept loops end when the drain begins")
            .unwrap();
    }
    for addr in [d.https, d.http] {
        let e = TcpStream::connect(addr)
            .await
            .expect_err("a new connection after the drain began");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle connection is closed by the drain")
        .unwrap()
        .unwrap();

    // The WebSocket goes on; the drain waits for it, up to its deadline.
    echoes(&mut ws, b"still here").await;
    assert_eq!(d.drain.open(), 1, "only the splice is left");
    let left = d.drain.finish(std::time::Duration::from_millis(300)).await;
    assert_eq!(left, 1, "the deadline passed with the WebSocket open");
    echoes(&mut ws, b"and after the deadline, until the process exits").await;

    // Once the client ends it, the drain is done.
    ws.shutdown().await.unwrap();
    let left = d.drain.finish(std::time::Duration::from_secs(10)).await;
    assert_eq!(left, 0, "the splice did not end with its client");
}

#[tokio::test]
async fn a_new_certificate_is_served_without_a_restart() {
    let d = door().await;
    // An open connection, kept across the swap.
    let io = TokioIo::new(d.tls(&host("cloud")).await);
    let (mut open, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let wiki = host("wiki");
    let mut hosts: Vec<String> = ["box", "cloud", "office", "forum"]
        .iter()
        .map(|h| host(h))
        .collect();
    hosts.push(wiki.clone());
    let (new_ca, new_leaf) = ca::ensure(
        &d.files,
        "test",
        DOMAIN,
        &hosts,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!((new_ca, new_leaf), (false, true));
    d.shared
        .swap(proxy::Loaded::read(&routes_file(d.dir.path(), d.up), &d.files.pair).unwrap());
    // A new connection for the new name verifies; the old one still works.
    let tls = d.tls(&wiki).await;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let file = CertificateDer::pem_file_iter(&d.files.pair)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(served, file);
    let r = open
        .send_request(get(&host("cloud"), "/still"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
