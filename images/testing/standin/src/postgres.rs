//! A PostgreSQL client login, as the Nextcloud and Discourse stand-ins make
//! it against the real server (the test image built from Debian's
//! packages): the frontend/backend protocol 3.0 startup, then the
//! authentication the server asks for (SCRAM-SHA-256, as the official
//! image's `pg_hba.conf` has it for the network, or a cleartext password),
//! until the server is ready for queries; then simple queries (the
//! stand-ins keep their schema versions in the real database: Nextcloud's
//! `oc_appconfig`, Discourse's `schema_migrations`). Its errors read like
//! libpq's (`FATAL:  password authentication failed for user "…"`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::codec;

/// Protocol version 3.0.
const PROTOCOL: i32 = 196_608;

/// One backend message: its type byte and body.
struct Message {
    kind: u8,
    body: Vec<u8>,
}

fn read_message(s: &mut TcpStream) -> Result<Message, String> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .map_err(|e| format!("server closed the connection unexpectedly: {e}"))?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if !(4..=1 << 20).contains(&len) {
        return Err(format!("invalid message length {len}"));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Message {
        kind: head[0],
        body,
    })
}

fn send(s: &mut TcpStream, kind: Option<u8>, body: &[u8]) -> Result<(), String> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend(kind);
    out.extend(((body.len() + 4) as i32).to_be_bytes());
    out.extend(body);
    s.write_all(&out).map_err(|e| e.to_string())
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes());
    out.push(0);
}

/// An ErrorResponse as libpq prints it: `FATAL:  <message>`.
fn error_text(body: &[u8]) -> String {
    let mut severity = "ERROR".to_owned();
    let mut message = String::new();
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'V' => severity = text,
            b'M' => message = text,
            _ => {}
        }
    }
    format!("{severity}:  {message}")
}

fn int_at(body: &[u8], at: usize) -> Result<i32, String> {
    body.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "truncated message".to_owned())
}

/// PBKDF2-HMAC-SHA256 with one output block (SCRAM's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut msg = salt.to_vec();
    msg.extend(1u32.to_be_bytes());
    let mut u = codec::hmac_sha256(password, &msg);
    let mut out = u;
    for _ in 1..iterations {
        u = codec::hmac_sha256(password, &u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// The client's side of SCRAM-SHA-256 (RFC 5802, RFC 7677), without
/// channel binding. The user name travels in the startup message, so the
/// SCRAM one stays empty, as libpq sends it.
fn scram(s: &mut TcpStream, password: &str) -> Result<(), String> {
    let nonce = codec::b64_encode(codec::random_hex(18).as_bytes());
    let first_bare = format!("n=,r={nonce}");
    let first = format!("n,,{first_bare}");
    let mut body = Vec::new();
    cstr(&mut body, "SCRAM-SHA-256");
    body.extend((first.len() as i32).to_be_bytes());
    body.extend(first.as_bytes());
    send(s, Some(b'p'), &body)?;

    let m = read_message(s)?;
    if m.kind == b'E' {
        return Err(error_text(&m.body));
    }
    if m.kind != b'R' || int_at(&m.body, 0)? != 11 {
        return Err("expected a SASL challenge".into());
    }
    let server_first = String::from_utf8_lossy(&m.body[4..]).into_owned();
    let attr = |k: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
            .ok_or_else(|| format!("SCRAM: no {k}= in the server's first message"))
    };
    let server_nonce = attr("r")?;
    if !server_nonce.starts_with(&nonce) {
        return Err("SCRAM: the server's nonce does not extend ours".into());
    }
    let salt = codec::b64_decode(&attr("s")?)?;
    let iterations: u32 = attr("i")?
        .parse()
        .map_err(|_| "SCRAM: bad iteration count".to_owned())?;

    let salted = hi(password.as_bytes(), &salt, iterations);
    let client_key = codec::hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let without_proof = format!("c=biws,r={server_nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = codec::hmac_sha256(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let last = format!("{without_proof},p={}", codec::b64_encode(&proof));
    send(s, Some(b'p'), last.as_bytes())?;

    let m = read_message(s)?;
    if m.kind == b'E' {
        return Err(error_text(&m.body));
    }
    if m.kind != b'R' || int_at(&m.body, 0)? != 12 {
        return Err("expected the SASL outcome".into());
    }
    let server_key = codec::hmac_sha256(&salted, b"Server Key");
    let want = format!(
        "v={}",
        codec::b64_encode(&codec::hmac_sha256(&server_key, auth_message.as_bytes()))
    );
    if !codec::ct_eq(&m.body[4..], want.as_bytes()) {
        return Err("SCRAM: the server's signature is wrong".into());
    }
    Ok(())
}

/// An open session, ready for queries.
pub struct Session {
    s: TcpStream,
    host: String,
    port: u16,
}

/// A simple query's rows: each column as text, `None` for NULL.
pub type Rows = Vec<Vec<Option<String>>>;

impl Session {
    /// Logs in as `user` to database `db`; the session is ready for queries.
    pub fn open(
        host: &str,
        port: u16,
        user: &str,
        db: &str,
        password: &str,
    ) -> Result<Session, String> {
        let mut s = crate::net::connect(host, port, Duration::from_secs(5))
            .map_err(|e| format!("connection to server at \"{host}\", port {port} failed: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let failed =
            |e: String| format!("connection to server at \"{host}\", port {port} failed: {e}");
        let mut body = Vec::new();
        body.extend(PROTOCOL.to_be_bytes());
        for (k, v) in [
            ("user", user),
            ("database", db),
            ("application_name", "standin"),
        ] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        send(&mut s, None, &body).map_err(failed)?;
        loop {
            let m = read_message(&mut s).map_err(failed)?;
            match m.kind {
                b'E' => return Err(failed(error_text(&m.body))),
                b'R' => match int_at(&m.body, 0).map_err(failed)? {
                    0 => {}
                    3 => {
                        let mut p = Vec::new();
                        cstr(&mut p, password);
                        send(&mut s, Some(b'p'), &p).map_err(failed)?;
                    }
                    10 => {
                        let offered = String::from_utf8_lossy(&m.body[4..]).into_owned();
                        if !offered.split('\0').any(|m| m == "SCRAM-SHA-256") {
                            return Err(failed(format!("no SCRAM-SHA-256 among {offered:?}")));
                        }
                        scram(&mut s, password).map_err(failed)?;
                    }
                    other => {
                        return Err(failed(format!(
                            "authentication method {other} is not supported by the stand-in"
                        )));
                    }
                },
                b'Z' => {
                    return Ok(Session {
                        s,
                        host: host.to_owned(),
                        port,
                    });
                }
                // ParameterStatus, BackendKeyData, notices.
                _ => {}
            }
        }
    }

    /// Runs `sql` (one or more statements, as one implicit transaction)
    /// with the simple query protocol; the rows of every statement, in
    /// order. An error reads like psql's (`ERROR:  relation "x" does not
    /// exist`).
    pub fn query(&mut self, sql: &str) -> Result<Rows, String> {
        let mut q = Vec::new();
        cstr(&mut q, sql);
        let lost = |e: String| {
            format!(
                "server at \"{}\", port {} closed the connection: {e}",
                self.host, self.port
            )
        };
        send(&mut self.s, Some(b'Q'), &q).map_err(lost)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let m = read_message(&mut self.s).map_err(lost)?;
            match m.kind {
                b'D' => rows.push(data_row(&m.body)?),
                b'E' => error = Some(error_text(&m.body)),
                b'Z' => break,
                // RowDescription, CommandComplete, EmptyQueryResponse,
                // notices, parameter changes.
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Terminate.
        let _ = send(&mut self.s, Some(b'X'), &[]);
    }
}

/// A DataRow's columns.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let n = body
        .get(0..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("truncated DataRow")?;
    let mut at = 2;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = int_at(body, at)?;
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let end = at + len as usize;
        let v = body.get(at..end).ok_or("truncated DataRow")?;
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
        at = end;
    }
    Ok(out)
}

/// `s` as an SQL string literal (standard_conforming_strings, the
/// default since PostgreSQL 9.1: only quotes are special).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil".
    #[test]
    fn scram_sha_256_matches_the_rfc_example() {
        let salt = codec::b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = codec::hmac_sha256(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = codec::hmac_sha256(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        assert_eq!(
            codec::b64_encode(&proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_key = codec::hmac_sha256(&salted, b"Server Key");
        assert_eq!(
            codec::b64_encode(&codec::hmac_sha256(&server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn data_rows_and_literals() {
        let mut body = vec![0, 2];
        body.extend(3i32.to_be_bytes());
        body.extend(b"abc");
        body.extend((-1i32).to_be_bytes());
        assert_eq!(data_row(&body).unwrap(), vec![Some("abc".into()), None]);
        assert!(data_row(&body[..5]).is_err());
        assert_eq!(lit("it's"), "'it''s'");
    }

    #[test]
    fn errors_read_like_libpq() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0\0";
        assert_eq!(
            error_text(body),
            "FATAL:  password authentication failed for user \"x\""
        );
    }
}
