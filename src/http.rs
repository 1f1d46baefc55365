//! A minimal HTTP/1 client to the apps' published ports on 127.0.0.1
//! (Nextcloud's status.php, Discourse's admin API). Adapter: it sends what
//! it is given and returns what it got.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
#[error("HTTP {method} http://{addr}{path}: {message}")]
pub struct HttpError {
    method: String,
    addr: SocketAddr,
    path: String,
    message: String,
}

/// Sends one request; returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let err = |message: String| HttpError {
        method: method.to_owned(),
        addr,
        path: path.to_owned(),
        message,
    };
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        drop(sender);
        let _ = driver.await;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| err(format!("no answer within {} s", timeout.as_secs())))?
}
