//! A minimal HTTP/1 client over the daemon's unix socket, for the CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the commonscloud daemon is not running (nothing answers on {socket}). Start it with `systemctl start commonscloud`, or run `commonscloud serve` in a terminal; `commonscloud doctor` says what may stop it"
    )]
    DaemonDown { socket: PathBuf },
    #[error(
        "permission denied on {socket}: run as root or as a member of the `commonscloud` group"
    )]
    PermissionDenied { socket: PathBuf },
    #[error("talking to the daemon on {socket}: {message}")]
    Protocol { socket: PathBuf, message: String },
    #[error("the daemon on {socket} did not answer within {secs} s")]
    Timeout { socket: PathBuf, secs: u64 },
}

/// `GET path` on the socket; returns the status code and body.
pub async fn get(socket: &Path, path: &str) -> Result<(u16, Bytes), ClientError> {
    request(socket, "GET", path, None).await
}

/// `POST path` with a JSON body.
pub async fn post(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, Bytes), ClientError> {
    request(socket, "POST", path, Some(body.to_string().into_bytes())).await
}

async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ClientError> {
    let timeout = Duration::from_secs(30);
    tokio::time::timeout(timeout, request_inner(socket, method, path, body))
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
            secs: timeout.as_secs(),
        })?
}

async fn request_inner(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ClientError> {
    let protocol = |e: &dyn std::fmt::Display| ClientError::Protocol {
        socket: socket.to_owned(),
        message: e.to_string(),
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                socket: socket.to_owned(),
            },
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::DaemonDown {
                    socket: socket.to_owned(),
                }
            }
            _ => protocol(&e),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(&e))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "commonscloud")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| protocol(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| protocol(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| protocol(&e))?
        .to_bytes();
    drop(sender);
    let _ = driver.await;
    Ok((status, body))
}
