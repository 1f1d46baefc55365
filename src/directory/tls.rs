//! slapd's TLS for the apps' bridge (adapter). Nextcloud sends people's
//! passwords to slapd when they sign in; on the bridge that is LDAPS only,
//! with a certificate for the bridge's gateway address from the appliance's
//! local CA (`frontdoor::ca::ensure_server`), which Nextcloud trusts through
//! the CA file it is given. There is never a plain `ldap://` listener on the
//! bridge: until the pair exists and slapd serves it, the apps have none.
//!
//! slapd refuses to start at all when its `cn=config` names TLS files that
//! are missing, so the pair is made again (from the CA) before every start
//! whenever `cn=config` names it. A renewed pair is applied over ldapi and
//! slapd is restarted, so the new certificate is the one served.

use std::path::Path;

use super::DirectoryError;
use super::slapd::Paths;
use crate::config::Config;
use crate::frontdoor::ca::{self, ServerFiles};

/// The pair slapd serves on the bridge.
pub fn files(config: &Config) -> ServerFiles {
    ServerFiles::directory(&config.paths.state_dir, &config.paths.secrets_dir)
}

/// The values of a `cn=config` attribute, read from slapd's own
/// `slapd.d/cn=config.ldif` (no connection needed; slapd keeps the file
/// current). Folded lines are joined; base64 values decoded.
fn config_values(paths: &Paths, attr: &str) -> Vec<String> {
    use base64::Engine as _;
    let Ok(text) = std::fs::read_to_string(paths.config_dir.join("cn=config.ldif")) else {
        return Vec::new();
    };
    let mut lines: Vec<String> = Vec::new();
    for l in text.lines() {
        match (l.strip_prefix(' '), lines.last_mut()) {
            (Some(rest), Some(last)) => last.push_str(rest),
            _ => lines.push(l.to_owned()),
        }
    }
    lines
        .iter()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            if !name.eq_ignore_ascii_case(attr) {
                return None;
            }
            match value.strip_prefix(':') {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok()),
                None => Some(value.trim().to_owned()),
            }
        })
        .collect()
}

/// Whether `cn=config` names our pair (slapd loads it when it starts).
pub fn named_in_config(config: &Config, paths: &Paths) -> bool {
    let f = files(config);
    let is = |attr: &str, p: &Path| config_values(paths, attr) == [p.display().to_string()];
    is("olcTLSCertificateFile", &f.cert) && is("olcTLSCertificateKeyFile", &f.key)
}

/// Whether slapd can serve LDAPS on the bridge: the pair exists and
/// `cn=config` names it.
pub fn ready(config: &Config, paths: &Paths) -> bool {
    let f = files(config);
    f.cert.exists() && f.key.exists() && named_in_config(config, paths)
}

/// Makes sure the pair exists and is current for the bridge's gateway,
/// when the apps need it or `cn=config` names it (a slapd configured for
/// missing files would not start). `Some(true)`: a new pair was written;
/// `None`: nothing to do, or no CA yet (the supervisor makes it at start).
pub fn ensure_pair(
    config: &Config,
    paths: &Paths,
    now: time::OffsetDateTime,
) -> Result<Option<bool>, ca::CaError> {
    if config.apps_ldap_url().is_none() && !named_in_config(config, paths) {
        return Ok(None);
    }
    let tls = ca::Files::new(&config.paths.state_dir, &config.paths.secrets_dir);
    let gateway = std::net::IpAddr::V4(config.apps.subnet.gateway());
    ca::ensure_server(&tls, &files(config), gateway, now)
}

/// What [`keep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kept {
    /// `cn=config` was told of the pair (first time, or a new pair).
    pub applied: bool,
    /// A new pair was written while slapd served the old one: restart it.
    pub restart: bool,
}

/// The running slapd's side: the pair made or renewed, and `cn=config`
/// pointed at it (TLS 1.2 at least) when the apps need it. Once applied,
/// [`ready`] is true and `slapd::wanted_urls` asks for the LDAPS listener.
pub async fn keep(config: &Config, paths: &Paths) -> Result<Kept, DirectoryError> {
    let now = time::OffsetDateTime::now_utc();
    let (c, p) = (config.clone(), paths.clone());
    let written = tokio::task::spawn_blocking(move || ensure_pair(&c, &p, now))
        .await
        .map_err(|e| DirectoryError::Io {
            what: "making slapd's certificate".into(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|e| DirectoryError::Io {
            what: "making slapd's certificate for the apps' bridge".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let f = files(config);
    if config.apps_ldap_url().is_none() || !f.cert.exists() || !f.key.exists() {
        return Ok(Kept::default());
    }
    let named = named_in_config(config, paths);
    let renewed = written == Some(true);
    if named && !renewed {
        return Ok(Kept::default());
    }
    super::ldap::set_tls(paths, &f.cert, &f.key).await?;
    Ok(Kept {
        applied: true,
        restart: named && renewed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_read_folded_or_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::testing::config("rpi5-8gb", "");
        let mut paths = Paths::new(&cfg);
        paths.config_dir = dir.path().to_owned();
        std::fs::write(
            dir.path().join("cn=config.ldif"),
            "# AUTO-GENERATED FILE - DO NOT EDIT!!\ndn: cn=config\nobjectClass: olcGlobal\n\
             olcTLSCertificateFile: /var/lib/cc/tls/direc\n tory.crt\n\
             olcTLSCertificateKeyFile:: L2V0Yy9jYy9zZWNyZXRzL2RpcmVjdG9yeS10bHMua2V5\n",
        )
        .unwrap();
        assert_eq!(
            config_values(&paths, "olcTLSCertificateFile"),
            ["/var/lib/cc/tls/directory.crt"]
        );
        assert!(named_in_config(&cfg, &paths));
        std::fs::write(dir.path().join("cn=config.ldif"), "dn: cn=config\n").unwrap();
        assert!(!named_in_config(&cfg, &paths));
    }
}
