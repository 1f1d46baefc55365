//! A minimal HTTP/1 client over the daemon's unix socket, for the CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
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
    let timeout = Duration::from_secs(10);
    tokio::time::timeout(timeout, get_inner(socket, path))
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
            secs: timeout.as_secs(),
        })?
}

async fn get_inner(socket: &Path, path: &str) -> Result<(u16, Bytes), ClientError> {
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
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "commonscloud")
        .body(Empty::<Bytes>::new())
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
