//! LDAP to our own slapd, through ldap3: over ldapi with SASL EXTERNAL as the
//! instance's root (no password to keep), or over a listen URL with a simple
//! bind as anyone else. Adapter: it reads and writes entries, decides nothing.

use std::path::Path;
use std::time::Duration;

use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::DirectoryError;
use super::slapd::Paths;
use super::tree::{ConfigAttr, SERVICE_ACCOUNTS, Tree};

/// How long any single LDAP operation may take here.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

fn ldap_err(what: &str) -> impl FnOnce(ldap3::LdapError) -> DirectoryError + '_ {
    move |source| DirectoryError::Ldap {
        what: what.to_owned(),
        source: Box::new(source),
    }
}

async fn open(url: &str) -> Result<Ldap, DirectoryError> {
    let settings = LdapConnSettings::new().set_conn_timeout(OP_TIMEOUT);
    let (conn, ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(ldap_err("connecting"))?;
    ldap3::drive!(conn);
    Ok(ldap)
}

/// A connection bound as the instance's root over ldapi.
pub async fn connect_root(paths: &Paths) -> Result<Ldap, DirectoryError> {
    let mut ldap = open(&paths.ldapi_url()).await?;
    ldap.with_timeout(OP_TIMEOUT)
        .sasl_external_bind()
        .await
        .map_err(ldap_err("SASL EXTERNAL bind"))?
        .success()
        .map_err(ldap_err("SASL EXTERNAL bind"))?;
    Ok(ldap)
}

/// Whether slapd answers on ldapi (a root bind and a read of the root DSE),
/// within a second: a connection slapd drops while it starts up leaves
/// ldap3 waiting, so a ping gives up fast and the caller tries again.
pub async fn ping(paths: &Paths) -> Result<(), DirectoryError> {
    let timeout = Duration::from_secs(1);
    tokio::time::timeout(timeout, ping_inner(paths))
        .await
        .map_err(|_| DirectoryError::NotAnswering {
            socket: paths.ldapi.clone(),
        })?
}

async fn ping_inner(paths: &Paths) -> Result<(), DirectoryError> {
    let mut ldap = connect_root(paths).await?;
    ldap.with_timeout(OP_TIMEOUT)
        .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
        .await
        .map_err(ldap_err("reading the root DSE"))?
        .success()
        .map_err(ldap_err("reading the root DSE"))?;
    let _ = ldap.unbind().await;
    Ok(())
}

/// A simple bind on `url`; `Ok(false)` for wrong credentials or a locked
/// account, `Err` when the server cannot be reached.
pub async fn check_password(url: &str, dn: &str, password: &str) -> Result<bool, DirectoryError> {
    let mut ldap = open(url).await?;
    let res = ldap
        .with_timeout(OP_TIMEOUT)
        .simple_bind(dn, password)
        .await
        .map_err(ldap_err("simple bind"))?;
    let _ = ldap.unbind().await;
    Ok(res.rc == 0)
}

/// Sets a password with the Password Modify extended operation, so slapd
/// hashes it with the configured scheme.
pub async fn set_password(ldap: &mut Ldap, dn: &str, password: &str) -> Result<(), DirectoryError> {
    ldap.with_timeout(OP_TIMEOUT)
        .extended(PasswordModify {
            user_id: Some(dn),
            old_pass: None,
            new_pass: Some(password),
        })
        .await
        .map_err(ldap_err("Password Modify"))?
        .success()
        .map_err(ldap_err("Password Modify"))?;
    Ok(())
}

/// One entry's attributes, or `None` if it does not exist.
pub async fn read(
    ldap: &mut Ldap,
    dn: &str,
    attrs: &[&str],
) -> Result<Option<SearchEntry>, DirectoryError> {
    let res = ldap
        .with_timeout(OP_TIMEOUT)
        .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .map_err(ldap_err("reading an entry"))?;
    if res.1.rc == 32 {
        return Ok(None);
    }
    let (entries, _) = res.success().map_err(ldap_err("reading an entry"))?;
    Ok(entries.into_iter().next().map(SearchEntry::construct))
}

/// Makes sure each service account has a secret in `secrets_dir`
/// (`ldap-<name>`, 0600) and that it is the account's password. Idempotent:
/// an existing secret that binds is left alone.
pub async fn ensure_service_accounts(
    paths: &Paths,
    tree: &Tree,
    secrets_dir: &Path,
) -> Result<(), DirectoryError> {
    let bind_url = paths.ldapi_url();
    let bind_url = bind_url.as_str();
    std::fs::create_dir_all(secrets_dir).map_err(|source| DirectoryError::Io {
        what: format!("creating {}", secrets_dir.display()),
        source,
    })?;
    let mut root = None;
    for name in SERVICE_ACCOUNTS {
        let secret = super::secret::load_or_create(&secrets_dir.join(format!("ldap-{name}")))?;
        let dn = tree.service_account(name);
        if check_password(bind_url, &dn, &secret).await? {
            continue;
        }
        if root.is_none() {
            root = Some(connect_root(paths).await?);
        }
        if let Some(ldap) = root.as_mut() {
            set_password(ldap, &dn, &secret).await?;
            log::info!(account = name; "service account password set");
        }
    }
    Ok(())
}

/// Points `cn=config` at a certificate and key (in one modify: slapd
/// loads the pair when the operation ends and refuses one that does not
/// load), TLS 1.2 at least.
pub async fn set_tls(paths: &Paths, cert: &Path, key: &Path) -> Result<(), DirectoryError> {
    let mut ldap = connect_root(paths).await?;
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    fn one(v: &str) -> std::collections::HashSet<&str> {
        std::collections::HashSet::from([v])
    }
    ldap.with_timeout(OP_TIMEOUT)
        .modify(
            "cn=config",
            vec![
                ldap3::Mod::Replace("olcTLSCertificateFile", one(&cert)),
                ldap3::Mod::Replace("olcTLSCertificateKeyFile", one(&key)),
                // 3.3 is TLS 1.2 in slapd's numbering.
                ldap3::Mod::Replace("olcTLSProtocolMin", one("3.3")),
            ],
        )
        .await
        .map_err(ldap_err("setting slapd's TLS certificate"))?
        .success()
        .map_err(ldap_err("setting slapd's TLS certificate"))?;
    let _ = ldap.unbind().await;
    Ok(())
}

/// Replaces each managed cn=config attribute with the code's values, as
/// `ldapmodify` over ldapi would, in one modify per attribute. The values
/// go in their order: the first replaces, each next one is added after it
/// (one set of values would reach slapd in a hash set's order, and slapd
/// keeps ordered values such as `olcAccess` in the order they arrive,
/// whatever their `{n}`).
pub async fn apply_config(paths: &Paths, attrs: &[ConfigAttr]) -> Result<(), DirectoryError> {
    let mut ldap = connect_root(paths).await?;
    for a in attrs {
        fn one(v: &str) -> std::collections::HashSet<&str> {
            std::collections::HashSet::from([v])
        }
        let mut mods: Vec<ldap3::Mod<&str>> = Vec::with_capacity(a.values.len());
        match a.values.split_first() {
            Some((first, rest)) => {
                mods.push(ldap3::Mod::Replace(a.attr, one(first)));
                mods.extend(rest.iter().map(|v| ldap3::Mod::Add(a.attr, one(v))));
            }
            None => mods.push(ldap3::Mod::Replace(a.attr, Default::default())),
        }
        ldap.with_timeout(OP_TIMEOUT)
            .modify(&a.dn, mods)
            .await
            .map_err(ldap_err("changing cn=config"))?
            .success()
            .map_err(ldap_err("changing cn=config"))?;
    }
    let _ = ldap.unbind().await;
    Ok(())
}
