//! Just enough networking: a name resolver (/etc/hosts, then DNS over UDP,
//! as a static binary cannot load glibc's NSS modules), a threaded HTTP/1.1
//! server and a client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crate::codec;

/// The IPv4 address of `host`: a literal, `localhost`, /etc/hosts, or the
/// nameservers of /etc/resolv.conf (Docker's embedded DNS on user networks).
pub fn resolve(host: &str) -> std::io::Result<Ipv4Addr> {
    let nf = |m: String| std::io::Error::new(std::io::ErrorKind::NotFound, m);
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    if host == "localhost" {
        return Ok(Ipv4Addr::LOCALHOST);
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            if let Some(ip) = words.next().and_then(|w| w.parse::<Ipv4Addr>().ok())
                && words.any(|w| w.eq_ignore_ascii_case(host))
            {
                return Ok(ip);
            }
        }
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<Ipv4Addr> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for server in servers {
        for _ in 0..2 {
            if let Ok(Some(ip)) = dns_a(server, host) {
                return Ok(ip);
            }
        }
    }
    Err(nf(format!("could not resolve host: {host}")))
}

fn dns_a(server: Ipv4Addr, host: &str) -> std::io::Result<Option<Ipv4Addr>> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let id = u16::from_str_radix(&codec::random_hex(2), 16).unwrap_or(7);
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, (server, 53))?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf)?;
    let r = &buf[..n];
    if n < 12 || r[0..2] != id.to_be_bytes() || r[3] & 0x0f != 0 {
        return Ok(None);
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut i = 12;
    // The question.
    i = skip_name(r, i).ok_or_else(bad_dns)? + 4;
    for _ in 0..answers {
        i = skip_name(r, i).ok_or_else(bad_dns)?;
        if i + 10 > n {
            return Ok(None);
        }
        let kind = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = u16::from_be_bytes([r[i + 8], r[i + 9]]) as usize;
        i += 10;
        if kind == 1 && len == 4 && i + 4 <= n {
            return Ok(Some(Ipv4Addr::new(r[i], r[i + 1], r[i + 2], r[i + 3])));
        }
        i += len;
    }
    Ok(None)
}

fn bad_dns() -> std::io::Error {
    std::io::Error::other("malformed DNS answer")
}

fn skip_name(r: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *r.get(i)? as usize;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + len;
    }
}

/// A TCP connection to `host:port`, resolved as above.
pub fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let ip = resolve(host)?;
    let s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// `host` and `port` of `host:port` (the port is optional).
pub fn split_host_port(s: &str, default: u16) -> Result<(String, u16), String> {
    match s.rsplit_once(':') {
        Some((h, p)) => p
            .parse()
            .map(|p| (h.to_owned(), p))
            .map_err(|_| format!("bad port in {s:?}")),
        None => Ok((s.to_owned(), default)),
    }
}

/// One HTTP request, as the server read it.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Who connected: what the app sees as the TCP peer.
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        codec::query_get(&self.query, key)
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Self::new(status, "application/json; charset=utf-8", v.to_string())
    }

    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Response {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        419 => "Page Expired",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves HTTP/1.1 on all interfaces, one thread per connection, one
/// request per connection. Never returns unless the port is taken.
pub fn serve(port: u16, handler: Handler) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = handle(stream, &handler);
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_owned(),
        path: codec::url_decode(&path.replace('+', "%2B")),
        query: codec::parse_query(query),
        peer: stream.peer_addr().ok(),
        ..Default::default()
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            req.headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        req.body = read_chunked(&mut reader)?;
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        if len > 16 << 20 {
            return write_response(stream, &Response::text(413, "too large"));
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        req.body = body;
    }
    let resp = handler(&req);
    write_response(stream, &resp)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if n == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let mut chunk = vec![0u8; n + 2];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk[..n]);
    }
}

fn write_response(mut stream: TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    stream.flush()
}

/// An HTTP answer, as the client read it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `http://host[:port]/path?query` into its parts.
pub fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "Protocol \"{}\" not supported",
            url.split("://").next().unwrap_or(url)
        )
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(hostport, 80)?;
    Ok((host, port, path.to_owned()))
}

/// One HTTP/1.1 request (plain http only).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    let (host, port, path) = split_url(url)?;
    let mut s = connect(&host, port, timeout)
        .map_err(|e| format!("Failed to connect to {host} port {port}: {e}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}");
    if port != 80 {
        head.push_str(&format!(":{port}"));
    }
    head.push_str("\r\nUser-Agent: standin\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("sending to {host}: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("reading from {host}: {e}"))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer from {host}:{port}: {line:?}"))?;
    let mut answer = Answer {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            answer
                .headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        answer.body = read_chunked(&mut reader).map_err(|e| e.to_string())?;
    } else if let Some(len) = answer
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        answer.body = body;
    } else if method != "HEAD" {
        reader
            .read_to_end(&mut answer.body)
            .map_err(|e| e.to_string())?;
    }
    Ok(answer)
}

pub fn get(url: &str) -> Result<Answer, String> {
    request("GET", url, &[], &[], Duration::from_secs(10))
}

/// Whether an address is private, loopback, link-local or shared
/// (100.64/10): Nextcloud's local-access rule (`IpAddressClassifier`).
pub fn is_local(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || (a == 100 && (64..128).contains(&b))
}
