//! Public certificates by ACME (RFC 8555) with the HTTP-01 challenge, for a
//! box whose hostnames resolve to it from the internet.
//!
//! - The core here is pure: [`decide`] says whether to order now, given the
//!   [`Record`] of what was issued, what the config wants and the time;
//!   [`Record::failed`] backs off after a failure (1 min doubling to 6 h).
//!   Also pure: [`validity`] reads a certificate's dates from its DER, and
//!   [`is_token`] says whether a challenge token may name a file.
//! - [`order`] is the adapter (the supervisor's side): account, order,
//!   challenge files for the front door, CSR, certificate, files.
//! - [`http`] is the HTTP client it talks to the ACME server with: HTTP/1
//!   over tokio-rustls, aws-lc-rs, the system's roots or `ca_file`.
//!
//! Files: the issued chain and its key are one pair file among the front
//! door's (`<state_dir>/front-door/acme.pem`, 0640, written with one
//! rename); the front door prefers that pair to the local CA's while it is
//! present, loads and has not expired. The record
//! (`<state_dir>/tls/acme.json`) keeps the hostnames, dates and the
//! backoff; the account (`<secrets_dir>/acme-account.json`, 0600) is made
//! once per ACME directory.

pub mod http;
pub mod order;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The first wait after a failed order; it doubles with each failure.
pub const FIRST_RETRY_SECS: i64 = 60;
/// The longest wait between two failed orders.
pub const MAX_RETRY_SECS: i64 = 6 * 3600;
/// The supervisor looks at least this often (an hourly check is cheap: it
/// reads one file).
pub const CHECK_EVERY_SECS: i64 = 3600;
/// Where the front door serves HTTP-01 answers from.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

const DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a file this release can read ({message}); delete it to start afresh")]
    Record { path: PathBuf, message: String },
    #[error("front_door.acme.ca_file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("ACME server {directory}, {step}: {source}")]
    Server {
        directory: String,
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error("ACME server {directory} offers no HTTP-01 challenge for {host}")]
    NoHttp01 { directory: String, host: String },
    #[error("ACME server {directory} sent a challenge token that cannot name a file: {token:?}")]
    BadToken { directory: String, token: String },
    #[error(
        "the front door does not serve the HTTP-01 answer for {host} on {addr} ({message}): is `commonscloud front-door` running and listening on front_door.http?"
    )]
    NotServed {
        host: String,
        addr: std::net::SocketAddr,
        message: String,
    },
    #[error(
        "ACME server {directory} could not validate {details}. Port 80 must reach this box for HTTP-01: the DNS names must point to its public address and the router must forward port 80 to front_door.http"
    )]
    Validation { directory: String, details: String },
    #[error("ACME server {directory} issued a certificate this box cannot use: {message}")]
    Certificate { directory: String, message: String },
    #[error("making the certificate request: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Where the ACME files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The issued chain, leaf first, and its key: one file.
    pub pair: PathBuf,
    /// [`Record`], beside the local CA's `ca.json`.
    pub record: PathBuf,
    /// The ACME account's key and URL (secret, 0600).
    pub account: PathBuf,
    /// HTTP-01 answers, one file per token, served by the front door.
    pub challenges: PathBuf,
    /// Where releases before the pair file kept the chain and its key:
    /// joined into the pair once (when they match), then removed.
    pub legacy_cert: PathBuf,
    pub legacy_key: PathBuf,
}

impl Files {
    pub fn new(state_dir: &Path, secrets_dir: &Path) -> Self {
        let tls = state_dir.join("tls");
        let published =
            crate::frontdoor::Published::new(&state_dir.join(crate::frontdoor::PUBLISHED_DIR));
        Files {
            pair: published.acme_pair,
            record: tls.join("acme.json"),
            account: secrets_dir.join("acme-account.json"),
            challenges: published.challenges,
            legacy_cert: tls.join("acme.crt"),
            legacy_key: secrets_dir.join("front-door-acme.key"),
        }
    }
}

/// Moves a certificate of a release before the pair file into the pair:
/// when the old chain and key are both there and match, they become the
/// pair (no new order); a chain beside another's key (a crash between the
/// old two renames) is dropped, so the certificate is ordered again. The
/// old files go either way. Returns whether a pair was made.
pub fn migrate_legacy(files: &Files) -> Result<bool, AcmeError> {
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AcmeError::Io {
            what: "reading",
            path: p.to_owned(),
            source,
        }),
    };
    let (cert, key) = (read(&files.legacy_cert)?, read(&files.legacy_key)?);
    let mut made = false;
    if let (Some(cert), Some(key)) = (&cert, &key)
        && !files.pair.exists()
    {
        let pem = crate::frontdoor::ca::pair_pem(cert, key);
        if crate::frontdoor::proxy::server_config(&files.legacy_cert, pem.as_bytes()).is_ok() {
            write_atomic(&files.pair, pem.as_bytes(), crate::frontdoor::ca::PAIR_MODE)?;
            made = true;
        }
    }
    for path in [&files.legacy_cert, &files.legacy_key] {
        remove(path)?;
    }
    Ok(made)
}

/// Removes a file; whether it was there.
fn remove(path: &Path) -> Result<bool, AcmeError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(AcmeError::Io {
            what: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// A certificate an ACME server issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The ACME directory that issued it.
    pub directory: String,
    /// Its hostnames, sorted.
    pub hosts: Vec<String>,
    /// Its validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// When it was written.
    pub issued_at: i64,
}

/// What the supervisor knows about ACME, kept between runs so that a
/// restart neither orders again nor forgets a backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The certificate the front door serves, once one was issued.
    pub issued: Option<Issued>,
    /// Failed orders in a row since the last success.
    pub failures: u32,
    /// No order before this (Unix seconds) after a failure.
    pub retry_at: i64,
    /// What the last failure said, for `status` and the operator.
    pub last_error: Option<String>,
}

/// What the config wants a certificate for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub directory: &'a str,
    /// The hostnames, in any order.
    pub hosts: &'a [String],
    pub renew_before_days: u16,
}

/// Why a certificate is ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    NoCertificate,
    /// Another ACME directory (staging to production, say).
    NewDirectory,
    HostnamesChanged,
    /// Fewer than `renew_before_days` left (negative once expired).
    Renewal {
        days_left: i64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoCertificate => f.write_str("no ACME certificate yet"),
            Reason::NewDirectory => f.write_str("the ACME directory changed"),
            Reason::HostnamesChanged => f.write_str("the hostnames changed"),
            Reason::Renewal { days_left } if *days_left < 0 => {
                f.write_str("the certificate has expired")
            }
            Reason::Renewal { days_left } => write!(f, "{days_left} days left"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Order now.
    Order(Reason),
    /// An order is due, but the last one failed: not before `until`.
    Backoff { reason: Reason, until: i64 },
    /// The certificate is good until `renew_at`.
    Keep { renew_at: i64 },
}

fn sorted(hosts: &[String]) -> Vec<String> {
    let mut h = hosts.to_vec();
    h.sort();
    h.dedup();
    h
}

/// Whether to order a certificate at `now` (Unix seconds).
pub fn decide(record: &Record, wanted: Wanted<'_>, now: i64) -> Decision {
    let reason = match &record.issued {
        None => Reason::NoCertificate,
        Some(i) if i.directory != wanted.directory => Reason::NewDirectory,
        Some(i) if i.hosts != sorted(wanted.hosts) => Reason::HostnamesChanged,
        Some(i) => {
            let renew_at = i.not_after - i64::from(wanted.renew_before_days) * DAY;
            if now < renew_at {
                return Decision::Keep { renew_at };
            }
            Reason::Renewal {
                days_left: (i.not_after - now).div_euclid(DAY),
            }
        }
    };
    if record.failures > 0 && now < record.retry_at {
        Decision::Backoff {
            reason,
            until: record.retry_at,
        }
    } else {
        Decision::Order(reason)
    }
}

/// The wait after `failures` failed orders in a row (at least one).
pub fn retry_delay(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(30);
    (FIRST_RETRY_SECS << doublings).min(MAX_RETRY_SECS)
}

/// How long to sleep before looking again, after acting on `decision`
/// (an order that is still due right after one was made waits for the
/// hourly check rather than ordering in a loop).
pub fn next_look(decision: &Decision, now: i64) -> i64 {
    let at = match decision {
        Decision::Keep { renew_at } => *renew_at,
        Decision::Backoff { until, .. } => *until,
        Decision::Order(_) => now + CHECK_EVERY_SECS,
    };
    (at - now).clamp(1, CHECK_EVERY_SECS)
}

impl Record {
    /// After a failed order at `now`.
    pub fn failed(&self, now: i64, error: String) -> Record {
        let failures = self.failures.saturating_add(1);
        Record {
            issued: self.issued.clone(),
            failures,
            retry_at: now + retry_delay(failures),
            last_error: Some(error),
        }
    }

    /// After a certificate was issued and written.
    pub fn succeeded(issued: Issued) -> Record {
        Record {
            issued: Some(issued),
            ..Record::default()
        }
    }

    /// The operator asked (a reload): the next decision may order at once.
    /// The count stays, so a second failure still waits longer.
    pub fn retry_now(&mut self) {
        self.retry_at = 0;
    }
}

/// Whether an ACME challenge token may be a file name and a URL path
/// segment: the base64url alphabet only (RFC 8555 §8.3), so no `/`, `.`
/// or `%` can lead out of the challenge directory.
pub fn is_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token a request path asks for, if it is an HTTP-01 path with a
/// token that may name a file.
pub fn challenge_token(path: &str) -> Option<&str> {
    path.strip_prefix(CHALLENGE_PREFIX).filter(|t| is_token(t))
}

/// Reads the record; a missing file is an empty record.
pub fn read_record(path: &Path) -> Result<Record, AcmeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AcmeError::Record {
            path: path.to_owned(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(source) => Err(AcmeError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

pub fn write_record(path: &Path, record: &Record) -> Result<(), AcmeError> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| AcmeError::Record {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    write_atomic(path, &json, 0o644)
}

/// [`crate::sys::write_atomic`], with the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeError> {
    crate::sys::write_atomic(path, bytes, mode).map_err(|source| AcmeError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    })
}

/// Removes the issued pair and its record (ACME is no longer configured),
/// and any files of a release before the pair. Returns whether there was a
/// certificate.
pub fn forget(files: &Files) -> Result<bool, AcmeError> {
    let mut had = false;
    for path in [
        &files.pair,
        &files.record,
        &files.legacy_cert,
        &files.legacy_key,
    ] {
        let was = remove(path)?;
        had |= was && (path == &files.pair || path == &files.legacy_cert);
    }
    Ok(had)
}

/// The validity of a DER certificate, `(not_before, not_after)` in Unix
/// seconds. Reads only the path to the two dates (RFC 5280 §4.1): enough
/// to know when to renew, without an X.509 parser for one field.
pub fn validity(der: &[u8]) -> Result<(i64, i64), String> {
    const SEQUENCE: u8 = 0x30;
    let (cert, _) = expect(der, SEQUENCE, "certificate")?;
    let (mut tbs, _) = expect(cert, SEQUENCE, "tbsCertificate")?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // [0] version
    }
    let rest = tlv(tbs)?.2; // serialNumber
    let rest = tlv(rest)?.2; // signature
    let rest = tlv(rest)?.2; // issuer
    let (dates, _) = expect(rest, SEQUENCE, "validity")?;
    let (tag, not_before, rest) = tlv(dates)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Ok((not_before, der_time(tag, not_after)?))
}

/// One DER element: its tag, its content and what follows it.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated DER: no tag")?;
    if tag & 0x1f == 0x1f {
        return Err("unexpected multi-byte DER tag".into());
    }
    let (&first, rest) = rest.split_first().ok_or("truncated DER: no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".into());
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return Err("truncated DER: content shorter than its length".into());
    }
    let (content, rest) = rest.split_at(len);
    Ok((tag, content, rest))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    match tlv(input)? {
        (t, content, rest) if t == tag => Ok((content, rest)),
        (t, _, _) => Err(format!(
            "{what}: expected DER tag {tag:#04x}, found {t:#04x}"
        )),
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, bytes: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "a date that is not text")?;
    let digits = text
        .strip_suffix('Z')
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("date {text:?} is not digits then Z"))?;
    let num = |range: std::ops::Range<usize>| -> Result<i32, String> {
        digits
            .get(range)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("date {text:?} is cut short"))
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (0x18, 14) => (num(0..4)?, 4),
        _ => return Err(format!("date {text:?} with DER tag {tag:#04x}")),
    };
    let field = |i: usize| num(rest + 2 * i..rest + 2 * i + 2);
    let bad = |e: time::error::ComponentRange| format!("date {text:?}: {e}");
    let month = u8::try_from(field(0)?)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(|| format!("date {text:?}: no such month"))?;
    let small = |i: usize| -> Result<u8, String> {
        u8::try_from(field(i)?).map_err(|_| format!("date {text:?} out of range"))
    };
    let date = time::Date::from_calendar_date(year, month, small(1)?).map_err(bad)?;
    let at = time::Time::from_hms(small(2)?, small(3)?, small(4)?).map_err(bad)?;
    Ok(time::PrimitiveDateTime::new(date, at)
        .assume_utc()
        .unix_timestamp())
}

/// The validity of the first certificate of a PEM chain.
pub fn leaf_validity(pem: &[u8]) -> Result<(i64, i64), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("holds no certificate")?
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    validity(&leaf)
}

#[cfg(test)]
mod tests;
