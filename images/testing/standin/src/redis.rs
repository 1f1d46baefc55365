//! A Redis client's PING, as the Nextcloud and Discourse stand-ins make it
//! against the real server (the test image built from Debian's packages):
//! AUTH first when a password is given, then PING over RESP.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// One RESP reply, as far as PING needs it.
enum Reply {
    Simple(String),
    Error(String),
    /// An integer, bulk string or array (read whole, then ignored).
    Other,
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("Server closed the connection"));
    }
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Reply::Simple(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Other,
        "$" => {
            if let Ok(len) = rest.parse::<usize>() {
                let mut b = vec![0u8; len + 2];
                r.read_exact(&mut b)?;
            }
            Reply::Other
        }
        "*" => {
            for _ in 0..rest.parse::<usize>().unwrap_or(0) {
                read_reply(r)?;
            }
            Reply::Other
        }
        _ => return Err(std::io::Error::other(format!("bad reply {line:?}"))),
    })
}

/// PING at `host:port`, after AUTH when a password is given.
pub fn ping(host: &str, port: u16, password: Option<&str>) -> Result<(), String> {
    let s = crate::net::connect(host, port, Duration::from_secs(3))
        .map_err(|e| format!("Connection to {host}:{port} failed: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        w.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).as_bytes())
            .map_err(|e| e.to_string())?;
        if let Reply::Error(e) = read_reply(&mut r).map_err(|e| e.to_string())? {
            return Err(e);
        }
    }
    w.write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(|e| e.to_string())?;
    match read_reply(&mut r).map_err(|e| e.to_string())? {
        Reply::Simple(p) if p == "PONG" => Ok(()),
        Reply::Error(e) => Err(e),
        _ => Err("unexpected answer to PING".into()),
    }
}
