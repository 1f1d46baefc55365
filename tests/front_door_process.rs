//! The front door as its own process beside the supervisor: it serves what
//! the supervisor wrote (routes, the local CA's certificate), an upload
//! streaming through it completes intact while the supervisor restarts, and
//! on SIGTERM it refuses new connections, lets an upload in flight finish
//! and exits 0.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Appliance, BIN};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers with the length and SHA-256 of what it read.
async fn upstream(l: TcpListener) {
    loop {
        let (tcp, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let (len, sha256) = common::length_and_sha256(req.into_body()).await?;
                let v = serde_json::json!({"len": len, "sha256": sha256});
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(v.to_string()))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Kills the front door on drop, also when the test fails.
struct FrontDoor(std::process::Child);

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_the_front_door_survives_a_supervisor_restart() {
    let app = Appliance::new();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(upstream(up));
    let (https, http) = (common::free_port(), common::free_port());
    app.set_apps(
        &["nextcloud"],
        &format!("force = true\nport_base = {up_port}\n"),
    );
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(&format!(
        "\n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n"
    ));
    std::fs::write(&app.config, text).unwrap();
    // No Docker for this supervisor: the route matters here, not the app.
    let no_docker = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let mut supervisor = app.serve_with(&no_docker);
    let log = std::fs::File::create(app.dir.path().join("front-door.log")).unwrap();
    let _door = FrontDoor(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&app.config)
            .arg("front-door")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ca = app.dir.path().join("state/tls/ca.crt");
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let cloud = "cloud.quimper.example.org";
    let until = Instant::now() + Duration::from_secs(30);
    let tls = loop {
        if ca.exists()
            && let Ok(tcp) = TcpStream::connect(addr).await
        {
            let name = rustls::pki_types::ServerName::try_from(cloud).unwrap();
            break common::tls_connector(&ca)
                .connect(name, tcp)
                .await
                .expect("the local CA's leaf verifies");
        }
        assert!(
            Instant::now() < until,
            "the front door never served: {}",
            std::fs::read_to_string(app.dir.path().join("front-door.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // 64 MiB in 1 MiB chunks; halfway, the stream waits for the restart.
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    let mut expected = Sha256::new();
    for _ in 0..CHUNKS {
        expected.update(&chunk);
    }
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel::<()>();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = Arc::new(tokio::sync::Mutex::new((Some(halfway_tx), Some(resume_rx))));
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let (chunk, gates) = (chunk.clone(), gates.clone());
        async move {
            if i == CHUNKS {
                return None;
            }
            if i == CHUNKS / 2 {
                let mut g = gates.lock().await;
                if let Some(tx) = g.0.take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = g.1.take() {
                    let _ = rx.await;
                }
            }
            Some((Ok::<_, std::io::Error>(Frame::data(chunk)), i + 1))
        }
    });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::put("/remote.php/dav/files/ana/big.bin")
        .header("host", cloud)
        .header("content-length", (CHUNK * CHUNKS).to_string())
        .body(StreamBody::new(stream))
        .unwrap();
    let upload = tokio::spawn(async move { sender.send_request(req).await });

    halfway_rx.await.unwrap();
    supervisor.signal(Signal::SIGTERM);
    assert!(
        supervisor.wait_exit(Duration::from_secs(10)).is_some(),
        "the supervisor stopped"
    );
    let supervisor = app.serve_with(&no_docker);
    resume_tx.send(()).unwrap();

    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], (CHUNK * CHUNKS) as u64, "{v}");
    assert_eq!(v["sha256"], format!("{:x}", expected.finalize()));
    drop(supervisor);
}

/// The upload body: `CHUNKS` chunks of `CHUNK` bytes; at the halfway
/// mark it tells `halfway` and waits for `resume`. Returns the body and
/// the SHA-256 of the whole.
fn gated_upload(
    halfway: tokio::sync::oneshot::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
) -> (
    StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>>,
    String,
) {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 32;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut expected = Sha256::new();
    for _ in 0..CHUNKS {
        expected.update(&chunk);
    }
    let gates = Arc::new(tokio::sync::Mutex::new((Some(halfway), Some(resume))));
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let (chunk, gates) = (chunk.clone(), gates.clone());
        async move {
            if i == CHUNKS {
                return None;
            }
            if i == CHUNKS / 2 {
                let mut g = gates.lock().await;
                if let Some(tx) = g.0.take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = g.1.take() {
                    let _ = rx.await;
                }
            }
            Some((Ok::<_, std::io::Error>(Frame::data(chunk)), i + 1))
        }
    });
    (
        StreamBody::new(stream),
        format!("{:x}", expected.finalize()),
    )
}

/// The messages a process sends to its `NOTIFY_SOCKET`.
struct Notify {
    socket: std::os::unix::net::UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &std::path::Path) -> Self {
        Notify {
            socket: std::os::unix::net::UnixDatagram::bind(path).unwrap(),
            seen: Vec::new(),
        }
    }

    /// Waits for a message holding the line `line`, for at most `timeout`.
    fn wait_for(&mut self, line: &str, timeout: Duration, log: &std::path::Path) {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line} within {timeout:?}, got {:?}; log:\n{}",
                self.seen,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_front_door_refuses_new_connections_finishes_an_upload_and_exits_0() {
    let app = Appliance::new();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(upstream(up));
    let (https, http) = (common::free_port(), common::free_port());
    app.set_apps(
        &["nextcloud"],
        &format!("force = true\nport_base = {up_port}\n"),
    );
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(&format!(
        "\n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n"
    ));
    std::fs::write(&app.config, text).unwrap();
    // What the supervisor would publish; no supervisor runs in this test.
    let config = commonscloud::config::load(&app.config).unwrap();
    commonscloud::frontdoor::publisher::publish(&config, "test", time::OffsetDateTime::now_utc())
        .unwrap();

    let log_path = app.dir.path().join("front-door.log");
    let mut notify = Notify::bind(&app.dir.path().join("front-door-notify.sock"));
    let mut door = FrontDoor(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&app.config)
            .arg("front-door")
            .env(
                "NOTIFY_SOCKET",
                app.dir.path().join("front-door-notify.sock"),
            )
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    notify.wait_for("READY=1", Duration::from_secs(20), &log_path);

    let ca = app.dir.path().join("state/tls/ca.crt");
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let cloud = "cloud.quimper.example.org";
    let name = rustls::pki_types::ServerName::try_from(cloud).unwrap();
    let tls = common::tls_connector(&ca)
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .expect("the local CA's leaf verifies");
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel::<()>();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let (body, sha256) = gated_upload(halfway_tx, resume_rx);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::put("/remote.php/dav/files/ana/drain.bin")
        .header("host", cloud)
        .header("content-length", (32usize << 20).to_string())
        .body(body)
        .unwrap();
    let upload = tokio::spawn(async move { sender.send_request(req).await });
    halfway_rx.await.unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(door.0.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    // STOPPING=1 comes once the listeners are closed.
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &log_path);
    for port in [https, http] {
        let e = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect_err("a new connection while draining");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "port {port}"
        );
    }
    assert!(
        door.0.try_wait().unwrap().is_none(),
        "the front door exited with an upload in flight: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    resume_tx.send(()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the upload finished")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close"),
        "the drained connection announces its end"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], 32u64 << 20, "{v}");
    assert_eq!(v["sha256"], sha256);
    // The front door closes the connection after its answer...
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the connection closes after the answer")
        .unwrap()
        .unwrap();
    // ...and, with nothing left open, exits 0 well before the deadline.
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = door.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the front door did not exit after the drain: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
