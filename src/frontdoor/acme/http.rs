//! The HTTP client instant-acme talks to the ACME server with: one HTTP/1.1
//! connection per request over tokio-rustls, with the aws-lc-rs provider
//! every other TLS user here has, trusting the system's roots or only
//! `front_door.acme.ca_file`. An ACME order is a dozen requests a few
//! times a year: no pool, no HTTP/2.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::AcmeError;

/// How long one request may take, connection and TLS included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a certificate chain is a few KiB).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// A client trusting the certificates in `ca_file` (PEM) only, or the
    /// system's roots without one.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, AcmeError> {
        let config = crate::tls::client_config(ca_file).map_err(|message| AcmeError::CaFile {
            path: ca_file.map(Path::to_owned).unwrap_or_default(),
            message,
        })?;
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = req.uri().to_string();
            tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req))
                .await
                .map_err(|_| other(format!("{uri}: no answer within {REQUEST_TIMEOUT:?}")))?
        })
    }
}

fn other(message: String) -> instant_acme::Error {
    instant_acme::Error::Other(message.into())
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    mut req: hyper::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(other(format!("{uri}: only https is used for ACME")));
    }
    let host = uri
        .host()
        .ok_or_else(|| other(format!("{uri}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| other(format!("{uri}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| other(format!("connecting to {host}:{port}: {e}")))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("TLS with {host}:{port}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| other(format!("HTTP with {host}:{port}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Origin-form with a Host header, as HTTP/1.1 servers expect.
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or(host);
    let host_header =
        HeaderValue::from_str(&authority).map_err(|e| other(format!("{uri}: {e}")))?;
    req.headers_mut().insert(header::HOST, host_header);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| other(format!("{uri}: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| other(format!("{uri}: {e}")))?;
    // The body is read here, within the request's timeout.
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| other(format!("{uri}: reading the answer: {e}")))?
        .to_bytes();
    Ok(BytesResponse::from(hyper::Response::from_parts(
        parts,
        http_body_util::Full::new(body),
    )))
}
