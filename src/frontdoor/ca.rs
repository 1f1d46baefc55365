//! The appliance's own certificate authority, for a box with no public
//! certificate: made once with rcgen, limited by a name constraint to the
//! collective's domain (an admin who installs it in a browser trusts it for
//! nothing else), and a leaf certificate for every configured hostname,
//! renewed well before it expires.
//!
//! Files: the CA key is a secret (0600, only the supervisor signs); the CA
//! certificate and its record are public (the console offers the
//! certificate for download); the leaf's chain and its key are one file,
//! the pair (`<state_dir>/front-door/local.pem`, 0640, for the front door's
//! group), written with one atomic rename and its directory synced: a crash
//! leaves the old pair or the new one, never a key beside another's
//! certificate.
//!
//! Decisions (`needs_new_ca`, `needs_new_leaf`) are pure and take the time.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The CA lives ten years; an admin installs it once.
pub const CA_DAYS: i64 = 3650;
/// Browsers refuse leaves valid for more than 398 days.
pub const LEAF_DAYS: i64 = 397;
/// A leaf is renewed when fewer days than this remain.
pub const RENEW_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "{path} is not a record this release can read ({message}): delete it and the CA files to have a new CA made"
    )]
    Record { path: PathBuf, message: String },
}

/// Where the certificate files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ca_key: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_record: PathBuf,
    /// The leaf's chain (leaf, then the CA) and its key, in one PEM file the
    /// front door reads.
    pub pair: PathBuf,
    /// Where releases before the pair file kept the leaf's chain and its
    /// key, apart; removed once the pair is written.
    pub legacy: [PathBuf; 2],
}

impl Files {
    /// The CA's key in `secrets_dir`, its certificate and record in
    /// `<state_dir>/tls`, the pair among the front door's files.
    pub fn new(state_dir: &Path, secrets_dir: &Path) -> Self {
        let tls = state_dir.join("tls");
        Files {
            ca_key: secrets_dir.join("front-door-ca.key"),
            ca_cert: tls.join("ca.crt"),
            ca_record: tls.join("ca.json"),
            pair: super::Published::new(&state_dir.join(super::PUBLISHED_DIR)).local_pair,
            legacy: [
                tls.join("leaf.crt"),
                secrets_dir.join("front-door-leaf.key"),
            ],
        }
    }
}

/// A chain and its key as the text of one pair file.
pub fn pair_pem(chain_pem: &str, key_pem: &str) -> String {
    let mut pem = String::with_capacity(chain_pem.len() + key_pem.len() + 1);
    pem.push_str(chain_pem);
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(key_pem);
    pem
}

/// Writes a chain and its key as one pair file: 0640, for the front door's
/// group (the directory's, by its set-group-ID bit).
pub fn write_pair(path: &Path, chain_pem: &str, key_pem: &str) -> Result<(), CaError> {
    write_atomic(path, pair_pem(chain_pem, key_pem).as_bytes(), PAIR_MODE)
}

/// The pair file's mode: the key is in it, so only its owner and the front
/// door's group read it.
pub const PAIR_MODE: u32 = 0o640;

/// Whether the pair file exists and loads as the front door loads it (the
/// key matches the leaf).
pub fn pair_loads(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .is_some_and(|pem| super::proxy::server_config(path, &pem).is_ok())
}

/// What was made, kept beside the certificates: the decisions need it and
/// rcgen signs with the CA's subject, which must stay byte for byte the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub common_name: String,
    /// The name constraint: the CA signs for this domain and below only.
    pub domain: String,
    pub ca_not_after: i64,
    /// The leaf's hostnames, sorted, and its end.
    pub leaf_hosts: Vec<String>,
    pub leaf_not_after: i64,
}

/// A new CA is needed when there is none, when it expires within the
/// renewal window, or when it may not sign for the domain.
pub fn needs_new_ca(record: Option<&Record>, domain: &str, now: OffsetDateTime) -> bool {
    match record {
        None => true,
        Some(r) => {
            r.domain != domain || r.ca_not_after - RENEW_DAYS * 86_400 <= now.unix_timestamp()
        }
    }
}

/// A new leaf is needed when its hostnames differ or it nears its end.
pub fn needs_new_leaf(record: &Record, hosts: &[String], now: OffsetDateTime) -> bool {
    let mut want = hosts.to_vec();
    want.sort();
    want.dedup();
    record.leaf_hosts != want || record.leaf_not_after - RENEW_DAYS * 86_400 <= now.unix_timestamp()
}

fn ca_params(common_name: &str, domain: &str, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "CommonsCloud appliance");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(domain.to_owned())],
        excluded_subtrees: Vec::new(),
    });
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(CA_DAYS);
    p
}

/// Makes sure a CA that may sign for `domain` and a leaf for exactly
/// `hosts` exist and are not near their end, making what is missing.
/// `label` tells this appliance's CA apart in a browser's list. Returns
/// what changed: `(new CA, new leaf)`.
pub fn ensure(
    files: &Files,
    label: &str,
    domain: &str,
    hosts: &[String],
    now: OffsetDateTime,
) -> Result<(bool, bool), CaError> {
    let mut record = read_record(&files.ca_record)?;
    let ca_key_ok = files.ca_key.exists() && files.ca_cert.exists();
    let new_ca = !ca_key_ok || needs_new_ca(record.as_ref(), domain, now);
    let key = if new_ca {
        let key = KeyPair::generate()?;
        let common_name = format!("CommonsCloud local CA {label}");
        let cert = ca_params(&common_name, domain, now).self_signed(&key)?;
        write_atomic(&files.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&files.ca_cert, cert.pem().as_bytes(), 0o644)?;
        record = Some(Record {
            common_name,
            domain: domain.to_owned(),
            ca_not_after: (now + Duration::days(CA_DAYS)).unix_timestamp(),
            leaf_hosts: Vec::new(),
            leaf_not_after: 0,
        });
        key
    } else {
        let pem = read(&files.ca_key)?;
        KeyPair::from_pem(&pem)?
    };
    let Some(mut rec) = record else {
        return Err(CaError::Record {
            path: files.ca_record.clone(),
            message: "missing beside an existing CA".into(),
        });
    };
    // A pair that is missing or does not load (damaged, or written by
    // hand) is made again rather than left for the front door to refuse.
    let new_leaf = new_ca || !pair_loads(&files.pair) || needs_new_leaf(&rec, hosts, now);
    if new_leaf {
        let issuer = Issuer::new(ca_params(&rec.common_name, &rec.domain, now), &key);
        let mut sorted = hosts.to_vec();
        sorted.sort();
        sorted.dedup();
        let p = CertificateParams::new(sorted.clone())?;
        let cn = sorted.first().cloned().unwrap_or_default();
        let (chain, key) = sign_leaf(files, &issuer, p, &cn, now)?;
        write_pair(&files.pair, &chain, &key)?;
        rec.leaf_hosts = sorted;
        rec.leaf_not_after = (now + Duration::days(LEAF_DAYS)).unix_timestamp();
    }
    if new_ca || new_leaf {
        let json = serde_json::to_vec_pretty(&rec).map_err(|e| CaError::Record {
            path: files.ca_record.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&files.ca_record, &json, 0o644)?;
    }
    // The files of releases before the pair: unused once it exists.
    if files.pair.exists() {
        for old in &files.legacy {
            remove_if_there(old)?;
        }
    }
    Ok((new_ca, new_leaf))
}

/// A certificate the CA gives one of the appliance's own servers, for an
/// IP address only its clients use: slapd's on the apps' bridge gateway,
/// which Nextcloud reaches over LDAPS. Its key is a secret (0600; slapd
/// runs as the daemon's user), the certificate and its record public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub record: PathBuf,
}

impl ServerFiles {
    /// slapd's pair for the apps: `<state_dir>/tls/directory.crt`,
    /// `<secrets_dir>/directory-tls.key`.
    pub fn directory(state_dir: &Path, secrets_dir: &Path) -> Self {
        let tls = state_dir.join("tls");
        ServerFiles {
            cert: tls.join("directory.crt"),
            key: secrets_dir.join("directory-tls.key"),
            record: tls.join("directory.json"),
        }
    }
}

/// What a server certificate was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub ip: String,
    pub not_after: i64,
    /// The CA's end when it signed: another value means another CA.
    pub ca_not_after: i64,
}

/// A new server certificate is needed when there is none, the address
/// changed, the CA is another one, or it nears its end.
pub fn needs_new_server_leaf(
    record: Option<&ServerRecord>,
    ip: &str,
    ca_not_after: i64,
    now: OffsetDateTime,
) -> bool {
    match record {
        None => true,
        Some(r) => {
            r.ip != ip
                || r.ca_not_after != ca_not_after
                || r.not_after - RENEW_DAYS * 86_400 <= now.unix_timestamp()
        }
    }
}

/// Makes sure `server` holds a certificate for `ip` from the current CA
/// (which must exist: [`ensure`] makes it), not near its end. Returns
/// whether it wrote a new one. `None` when there is no CA yet.
pub fn ensure_server(
    files: &Files,
    server: &ServerFiles,
    ip: std::net::IpAddr,
    now: OffsetDateTime,
) -> Result<Option<bool>, CaError> {
    let Some(ca) = read_record(&files.ca_record)? else {
        return Ok(None);
    };
    if !files.ca_key.exists() || !files.ca_cert.exists() {
        return Ok(None);
    }
    let current = read_server_record(&server.record)?;
    let want = ip.to_string();
    if server.cert.exists()
        && server.key.exists()
        && !needs_new_server_leaf(current.as_ref(), &want, ca.ca_not_after, now)
    {
        return Ok(Some(false));
    }
    let key = KeyPair::from_pem(&read(&files.ca_key)?)?;
    let issuer = Issuer::new(ca_params(&ca.common_name, &ca.domain, now), &key);
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let (chain, leaf_key) = sign_leaf(files, &issuer, p, &want, now)?;
    // Key first: a reader never pairs the new certificate with the old key
    // for long, and slapd, which fails to load a mismatched pair, is given
    // a new pair before each start.
    write_atomic(&server.key, leaf_key.as_bytes(), 0o600)?;
    write_atomic(&server.cert, chain.as_bytes(), 0o644)?;
    let rec = ServerRecord {
        ip: want,
        not_after: (now + Duration::days(LEAF_DAYS)).unix_timestamp(),
        ca_not_after: ca.ca_not_after,
    };
    let json = serde_json::to_vec_pretty(&rec).map_err(|e| CaError::Record {
        path: server.record.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&server.record, &json, 0o644)?;
    Ok(Some(true))
}

fn read_server_record(path: &Path) -> Result<Option<ServerRecord>, CaError> {
    match std::fs::read(path) {
        // An unreadable record only means a new certificate.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Signs a server certificate with `p`'s names for `cn`, valid
/// [`LEAF_DAYS`]: its chain (the leaf, then the CA) and its new key, as PEM.
fn sign_leaf(
    files: &Files,
    issuer: &Issuer<'_, &KeyPair>,
    mut p: CertificateParams,
    cn: &str,
    now: OffsetDateTime,
) -> Result<(String, String), CaError> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(LEAF_DAYS);
    let leaf_key = KeyPair::generate()?;
    let leaf = p.signed_by(&leaf_key, issuer)?;
    let chain = format!("{}{}", leaf.pem(), read(&files.ca_cert)?);
    Ok((chain, leaf_key.serialize_pem()))
}

/// The CA record, if one was written.
pub fn read_record(path: &Path) -> Result<Option<Record>, CaError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CaError::Record {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        what: "reading",
        path: path.to_owned(),
        source,
    })
}

fn remove_if_there(path: &Path) -> Result<(), CaError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CaError::Io {
            what: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// [`crate::sys::write_atomic`], with the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    crate::sys::write_atomic(path, bytes, mode).map_err(|source| CaError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + Duration::days(days)
    }

    fn hosts() -> Vec<String> {
        ["box", "cloud", "office", "forum"]
            .iter()
            .map(|h| format!("{h}.quimper.example.org"))
            .collect()
    }

    #[test]
    fn renewal_decisions() {
        let rec = Record {
            common_name: "x".into(),
            domain: "quimper.example.org".into(),
            ca_not_after: at(CA_DAYS).unix_timestamp(),
            leaf_hosts: {
                let mut h = hosts();
                h.sort();
                h
            },
            leaf_not_after: at(LEAF_DAYS).unix_timestamp(),
        };
        assert!(needs_new_ca(None, "quimper.example.org", at(0)));
        assert!(!needs_new_ca(Some(&rec), "quimper.example.org", at(0)));
        assert!(
            needs_new_ca(Some(&rec), "brest.example.org", at(0)),
            "a new domain"
        );
        assert!(needs_new_ca(
            Some(&rec),
            "quimper.example.org",
            at(CA_DAYS - 10)
        ));
        // Order does not matter; a new host or the renewal window does.
        let mut shuffled = hosts();
        shuffled.reverse();
        assert!(!needs_new_leaf(&rec, &shuffled, at(0)));
        assert!(!needs_new_leaf(
            &rec,
            &shuffled,
            at(LEAF_DAYS - RENEW_DAYS - 1)
        ));
        assert!(needs_new_leaf(&rec, &shuffled, at(LEAF_DAYS - RENEW_DAYS)));
        let mut more = hosts();
        more.push("wiki.quimper.example.org".into());
        assert!(needs_new_leaf(&rec, &more, at(0)));
    }

    /// rustls' own verifier, as a browser would: the chain from the leaf
    /// file to the CA file, for `host`, at `now`.
    fn verifies(files: &Files, host: &str, now: OffsetDateTime) -> Result<(), rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&files.ca_cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(&files.pair)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(host.to_owned()).unwrap(),
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    now.unix_timestamp() as u64
                )),
            )
            .map(drop)
    }

    #[test]
    fn the_leaf_verifies_for_every_hostname_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("state"), &dir.path().join("secrets"));
        let made = ensure(&files, "quimper", "quimper.example.org", &hosts(), at(0)).unwrap();
        assert_eq!(made, (true, true));
        for h in hosts() {
            verifies(&files, &h, at(1)).unwrap_or_else(|e| panic!("{h}: {e}"));
        }
        assert!(verifies(&files, "wiki.quimper.example.org", at(1)).is_err());
        assert!(verifies(&files, "box.quimper.example.org", at(LEAF_DAYS + 1)).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.ca_key), 0o600);
        assert_eq!(mode(&files.pair), 0o640);
        assert_eq!(mode(&files.ca_cert), 0o644);

        // Nothing to do; then a new hostname gets a new leaf from the same CA.
        assert_eq!(
            ensure(&files, "quimper", "quimper.example.org", &hosts(), at(2)).unwrap(),
            (false, false)
        );
        let ca_before = std::fs::read(&files.ca_cert).unwrap();
        let mut more = hosts();
        more.push("wiki.quimper.example.org".into());
        assert_eq!(
            ensure(&files, "quimper", "quimper.example.org", &more, at(3)).unwrap(),
            (false, true)
        );
        assert_eq!(std::fs::read(&files.ca_cert).unwrap(), ca_before);
        verifies(&files, "wiki.quimper.example.org", at(4)).unwrap();
        verifies(&files, "box.quimper.example.org", at(4)).unwrap();
        // Near its end the leaf is renewed, and still verifies after the old
        // one's end.
        let later = at(3 + LEAF_DAYS - RENEW_DAYS + 1);
        assert_eq!(
            ensure(&files, "quimper", "quimper.example.org", &more, later).unwrap(),
            (false, true)
        );
        verifies(&files, "box.quimper.example.org", at(3 + LEAF_DAYS + 5)).unwrap();
    }

    #[test]
    fn the_directory_gets_a_certificate_for_its_bridge_address() {
        let dir = tempfile::tempdir().unwrap();
        let (state, secrets) = (dir.path().join("state"), dir.path().join("secrets"));
        let files = Files::new(&state, &secrets);
        let server = ServerFiles::directory(&state, &secrets);
        let ip: std::net::IpAddr = "10.44.7.1".parse().unwrap();
        // No CA yet: nothing to sign with.
        assert_eq!(ensure_server(&files, &server, ip, at(0)).unwrap(), None);
        ensure(&files, "quimper", "quimper.example.org", &hosts(), at(0)).unwrap();
        assert_eq!(
            ensure_server(&files, &server, ip, at(0)).unwrap(),
            Some(true)
        );
        assert_eq!(
            ensure_server(&files, &server, ip, at(1)).unwrap(),
            Some(false)
        );
        // The chain file alone: `verifies` reads only its certificates.
        let as_leaf = Files {
            pair: server.cert.clone(),
            ..files.clone()
        };
        // A verifier that honours the CA's DNS-only name constraint still
        // takes an IP address (RFC 5280: constraints bind their own name
        // type); and only that address.
        verifies(&as_leaf, "10.44.7.1", at(1)).unwrap();
        assert!(verifies(&as_leaf, "10.44.7.2", at(1)).is_err());
        assert!(verifies(&as_leaf, "box.quimper.example.org", at(1)).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&server.key), 0o600);
        // Another address, the renewal window, or a new CA: a new one.
        let other: std::net::IpAddr = "10.44.8.1".parse().unwrap();
        assert_eq!(
            ensure_server(&files, &server, other, at(2)).unwrap(),
            Some(true)
        );
        verifies(&as_leaf, "10.44.8.1", at(3)).unwrap();
        let late = at(2 + LEAF_DAYS - RENEW_DAYS + 1);
        assert_eq!(
            ensure_server(&files, &server, other, late).unwrap(),
            Some(true)
        );
        ensure(&files, "quimper", "brest.example.org", &[], at(5)).unwrap();
        assert_eq!(
            ensure_server(&files, &server, other, at(6)).unwrap(),
            Some(true)
        );
        verifies(&as_leaf, "10.44.8.1", at(7)).unwrap();
    }

    #[test]
    fn the_name_constraint_stops_a_leaf_outside_the_domain() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("state"), &dir.path().join("secrets"));
        let outside = vec![
            "box.quimper.example.org".to_owned(),
            "bank.example.com".to_owned(),
        ];
        ensure(&files, "quimper", "quimper.example.org", &outside, at(0)).unwrap();
        // Signed, but no verifier accepts it, even for the host inside.
        assert!(verifies(&files, "bank.example.com", at(1)).is_err());
        assert!(verifies(&files, "box.quimper.example.org", at(1)).is_err());
    }

    #[test]
    fn a_pair_that_does_not_load_is_made_again_and_the_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("state"), &dir.path().join("secrets"));
        ensure(&files, "quimper", "quimper.example.org", &hosts(), at(0)).unwrap();
        // What a release before the pair file left, and a pair whose key is
        // another's (as a crash between two renames left them).
        for old in &files.legacy {
            std::fs::create_dir_all(old.parent().unwrap()).unwrap();
            std::fs::write(old, "old").unwrap();
        }
        let pem = std::fs::read_to_string(&files.pair).unwrap();
        let chain_end = pem.find("-----BEGIN PRIVATE KEY-----").unwrap();
        let other = KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(&files.pair, format!("{}{other}", &pem[..chain_end])).unwrap();
        assert!(!pair_loads(&files.pair));
        assert_eq!(
            ensure(&files, "quimper", "quimper.example.org", &hosts(), at(1)).unwrap(),
            (false, true)
        );
        assert!(pair_loads(&files.pair));
        verifies(&files, "box.quimper.example.org", at(2)).unwrap();
        for old in &files.legacy {
            assert!(!old.exists(), "{} is still there", old.display());
        }
    }
}
