//! The front door as its own process beside the supervisor: it serves what
//! the supervisor wrote (routes, the local CA's certificate), and an upload
//! streaming through it completes intact while the supervisor restarts.

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
