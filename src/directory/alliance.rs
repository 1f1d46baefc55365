//! LDAP for federation (adapter): a bound connection to the alliance's
//! provider with TCP keepalive, entries read and written as attribute maps
//! (on either directory), and the RFC 4533 refreshAndPersist stream as typed
//! events. It decides nothing: `federation` does.
//!
//! ldap3's sync parsers panic on malformed input, so whoever reads a
//! [`SyncStream`] runs in a task that can be restarted.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use ldap3::controls::{
    EntryState, RawControl, RefreshMode, SyncDone, SyncInfo, SyncRequest, SyncState,
};
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapResult, Mod, Scope, SearchEntry, SearchStream,
    StdStream,
};

use super::DirectoryError;

/// An entry's attributes, keyed by lower-case name; values as sets.
pub type Attrs = std::collections::BTreeMap<String, BTreeSet<String>>;

/// One attribute change for the local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrChange {
    Replace(String, BTreeSet<String>),
    Delete(String),
}

/// How the connection to the alliance is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkSecurity {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded by StartTLS before anything else is sent; a server
    /// that refuses the upgrade is not spoken to in clear.
    StartTls,
    /// `ldap://` in clear, allowed by `insecure = true` (test networks).
    Plain,
}

impl LinkSecurity {
    /// Whether the connection is encrypted.
    pub fn encrypted(self) -> bool {
        self != Self::Plain
    }
}

impl std::fmt::Display for LinkSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ldaps => "ldaps",
            Self::StartTls => "StartTLS",
            Self::Plain => "plain LDAP (insecure = true)",
        })
    }
}

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";

fn ldap_err(what: impl Into<String>) -> impl FnOnce(ldap3::LdapError) -> DirectoryError {
    let what = what.into();
    move |source| DirectoryError::Ldap {
        what,
        source: Box::new(source),
    }
}

fn result_err(what: impl Into<String>, result: LdapResult) -> DirectoryError {
    DirectoryError::Ldap {
        what: what.into(),
        source: Box::new(ldap3::LdapError::LdapResult { result }),
    }
}

/// Host and port of an `ldap://` or `ldaps://` URL.
pub fn host_port(url: &str) -> Result<(String, u16, bool), DirectoryError> {
    let bad = || DirectoryError::Io {
        what: format!("alliance URL `{url}`"),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected ldap://host[:port] or ldaps://host[:port]",
        ),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    let default = if tls { 636 } else { 389 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (hostport.to_owned(), default),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port, tls))
}

/// A connection to `url` bound as `bind_dn`, with TCP keepalive (a link
/// that dies silently is noticed within about a minute) and `timeout` on the
/// connect and the bind. `security` is what `federation::guard` decided for
/// this URL: over `ldaps://`, or `ldap://` with StartTLS (the upgrade comes
/// before the bind, and a server that refuses it is not spoken to in
/// clear), the server's certificate is checked against `ca_file` (PEM)
/// only, or the system's roots without one.
pub async fn connect(
    url: &str,
    security: LinkSecurity,
    ca_file: Option<&std::path::Path>,
    bind_dn: &str,
    password: &str,
    timeout: Duration,
) -> Result<Ldap, DirectoryError> {
    let (host, port, tls) = host_port(url)?;
    if tls != (security == LinkSecurity::Ldaps) {
        return Err(DirectoryError::Io {
            what: format!("alliance URL `{url}`"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{security} does not fit this URL's scheme"),
            ),
        });
    }
    let io = |what: String| move |source| DirectoryError::Io { what, source };
    let tcp = tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| DirectoryError::Io {
        what: format!("connecting to the alliance at {url}"),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
    })?
    .map_err(io(format!("connecting to the alliance at {url}")))?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&keepalive)
        .map_err(io("setting TCP keepalive".into()))?;
    let std = tcp.into_std().map_err(io("taking the socket".into()))?;
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_std_stream(StdStream::Tcp(std));
    if security.encrypted() {
        let config = crate::tls::client_config(ca_file).map_err(|m| DirectoryError::Io {
            what: format!(
                "the alliance's CA file {}",
                ca_file.map(|p| p.display().to_string()).unwrap_or_default()
            ),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, m),
        })?;
        settings = settings
            .set_config(std::sync::Arc::new(config))
            .set_starttls(security == LinkSecurity::StartTls);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(ldap_err(format!(
            "connecting to the alliance at {url} ({security})"
        )))?;
    ldap3::drive!(conn);
    let res = ldap
        .with_timeout(timeout)
        .simple_bind(bind_dn, password)
        .await
        .map_err(ldap_err(format!("binding to the alliance as {bind_dn}")))?;
    if res.rc != 0 {
        return Err(result_err(
            format!(
                "the alliance refused the bind as {bind_dn} (check the account and its password file)"
            ),
            res,
        ));
    }
    Ok(ldap)
}

/// A search entry's text attributes as an attribute map (names in lower case).
///
/// slapd's `{ARGON2}` values end in stray bytes after a NUL (CONTRACTS.md);
/// when those are not UTF-8, ldap3 files the value under `bin_attrs`. Such a
/// value is taken up to its NUL; any other binary value is left out (the
/// schema has none).
pub fn attrs_of(e: &SearchEntry) -> Attrs {
    let mut out: Attrs = e
        .attrs
        .iter()
        .map(|(k, vs)| (k.to_ascii_lowercase(), vs.iter().cloned().collect()))
        .collect();
    for (k, vs) in &e.bin_attrs {
        for v in vs {
            let v = v.split(|b| *b == 0).next().unwrap_or_default();
            if let Ok(text) = std::str::from_utf8(v) {
                out.entry(k.to_ascii_lowercase())
                    .or_default()
                    .insert(text.to_owned());
            }
        }
    }
    out
}

/// Reads an entry: its DN as the server spells it and its attributes.
/// `attrs` as in a search (`["*"]` for all user attributes).
pub async fn read(
    ldap: &mut Ldap,
    dn: &str,
    attrs: &[&str],
) -> Result<Option<(String, Attrs)>, DirectoryError> {
    let res = ldap
        .with_timeout(Duration::from_secs(30))
        .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .map_err(ldap_err(format!("reading {dn}")))?;
    if res.1.rc == 32 {
        return Ok(None);
    }
    let (entries, _) = res.success().map_err(ldap_err(format!("reading {dn}")))?;
    Ok(entries.into_iter().next().map(|e| {
        let e = SearchEntry::construct(e);
        let attrs = attrs_of(&e);
        (e.dn, attrs)
    }))
}

/// Every entry under `base` matching `filter`: (DN, attributes).
pub async fn search(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    attrs: &[&str],
) -> Result<Vec<(String, Attrs)>, DirectoryError> {
    let (entries, _) = ldap
        .with_timeout(Duration::from_secs(120))
        .search(base, Scope::Subtree, filter, attrs.to_vec())
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err(format!("searching {base}")))?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let e = SearchEntry::construct(e);
            let a = attrs_of(&e);
            (e.dn, a)
        })
        .collect())
}

/// Adds an entry; the caller reads the result code (68: it exists, 19: a
/// unique value is taken, 50: not allowed).
pub async fn add(ldap: &mut Ldap, dn: &str, attrs: &Attrs) -> Result<LdapResult, DirectoryError> {
    let attrs: Vec<(String, HashSet<String>)> = attrs
        .iter()
        .filter(|(_, vs)| !vs.is_empty())
        .map(|(k, vs)| (k.clone(), vs.iter().cloned().collect()))
        .collect();
    ldap.with_timeout(Duration::from_secs(30))
        .add(dn, attrs)
        .await
        .map_err(ldap_err(format!("adding {dn}")))
}

/// Applies attribute changes, optionally under an RFC 4528 assertion (the
/// write happens only if `assertion` still matches: 122 otherwise).
pub async fn modify(
    ldap: &mut Ldap,
    dn: &str,
    changes: &[AttrChange],
    assertion: Option<&str>,
) -> Result<LdapResult, DirectoryError> {
    let mods: Vec<Mod<String>> = changes
        .iter()
        .map(|c| match c {
            AttrChange::Replace(k, vs) => Mod::Replace(k.clone(), vs.iter().cloned().collect()),
            AttrChange::Delete(k) => Mod::Replace(k.clone(), HashSet::new()),
        })
        .collect();
    if mods.is_empty() {
        return Ok(LdapResult {
            rc: 0,
            matched: String::new(),
            text: String::new(),
            refs: vec![],
            ctrls: vec![],
        });
    }
    let mut op = ldap.with_timeout(Duration::from_secs(30));
    if let Some(filter) = assertion {
        op = op.with_controls(ldap3::controls::Assertion::new(filter));
    }
    op.modify(dn, mods)
        .await
        .map_err(ldap_err(format!("modifying {dn}")))
}

/// Adds or removes one value (a group member); 20 and 16 mean it was
/// already so.
pub async fn modify_value(
    ldap: &mut Ldap,
    dn: &str,
    attr: &str,
    value: &str,
    add: bool,
) -> Result<LdapResult, DirectoryError> {
    let set = HashSet::from([value.to_owned()]);
    let m = if add {
        Mod::Add(attr.to_owned(), set)
    } else {
        Mod::Delete(attr.to_owned(), set)
    };
    ldap.with_timeout(Duration::from_secs(30))
        .modify(dn, vec![m])
        .await
        .map_err(ldap_err(format!("modifying {dn}")))
}

pub async fn delete(ldap: &mut Ldap, dn: &str) -> Result<LdapResult, DirectoryError> {
    ldap.with_timeout(Duration::from_secs(30))
        .delete(dn)
        .await
        .map_err(ldap_err(format!("deleting {dn}")))
}

/// Moves and renames `dn` to `new_dn` (one modDN with a new superior).
pub async fn rename(ldap: &mut Ldap, dn: &str, new_dn: &str) -> Result<LdapResult, DirectoryError> {
    let (rdn, parent) = new_dn.split_once(',').unwrap_or((new_dn, ""));
    let sup = (!parent.is_empty()).then_some(parent);
    ldap.with_timeout(Duration::from_secs(30))
        .modifydn(dn, rdn, true, sup)
        .await
        .map_err(ldap_err(format!("renaming {dn}")))
}

/// What the sync stream says, one item at a time.
#[derive(Debug)]
pub enum SyncEvent {
    /// An entry added or changed (`present` in a refresh: unchanged, and
    /// then it comes without attributes).
    Entry {
        uuid: Vec<u8>,
        dn: String,
        attrs: Attrs,
        present: bool,
        cookie: Option<Vec<u8>>,
    },
    /// An entry deleted, or moved out of scope.
    Delete {
        uuid: Vec<u8>,
        dn: String,
        cookie: Option<Vec<u8>>,
    },
    /// A batch of UUIDs: deleted (`deleted`) or present.
    IdSet {
        uuids: BTreeSet<Vec<u8>>,
        deleted: bool,
        cookie: Option<Vec<u8>>,
    },
    /// The refresh is over (or a phase of it): `present` when it was a
    /// present phase, whose unlisted entries are gone.
    RefreshDone {
        present: bool,
        done: bool,
        cookie: Option<Vec<u8>>,
    },
    NewCookie(Vec<u8>),
    /// The server cannot resume from our cookie: reload from scratch.
    RefreshRequired,
    /// The search ended normally (refreshOnly).
    Done {
        cookie: Option<Vec<u8>>,
    },
}

/// A running refreshAndPersist search.
pub struct SyncStream {
    stream: SearchStream<'static, String, Vec<String>>,
}

/// Starts a refreshAndPersist search from `cookie` (none: a full refresh).
pub async fn sync(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    cookie: Option<Vec<u8>>,
) -> Result<SyncStream, DirectoryError> {
    let request: RawControl = SyncRequest {
        mode: RefreshMode::RefreshAndPersist,
        cookie,
        reload_hint: false,
    }
    .into();
    let stream = ldap
        .with_controls(request)
        .streaming_search(
            base,
            Scope::Subtree,
            filter,
            vec!["*".to_owned(), "memberOf".to_owned()],
        )
        .await
        .map_err(ldap_err("starting the sync search"))?;
    Ok(SyncStream { stream })
}

impl SyncStream {
    /// The next event. An error means the link broke: reconnect with the
    /// stored cookie.
    pub async fn next(&mut self) -> Result<SyncEvent, DirectoryError> {
        loop {
            let item = self
                .stream
                .next()
                .await
                .map_err(ldap_err("reading the sync stream"))?;
            let Some(re) = item else {
                let res = self.stream.finish().await;
                return match res.rc {
                    0 => Ok(SyncEvent::Done {
                        cookie: res
                            .ctrls
                            .iter()
                            .find(|c| c.1.ctype == SYNC_DONE_OID)
                            .and_then(|c| c.1.parse::<SyncDone>().cookie),
                    }),
                    // e-syncRefreshRequired; or, after a provider lost its
                    // state, "consumer state is newer than provider".
                    4096 | 53 => Ok(SyncEvent::RefreshRequired),
                    _ => Err(result_err("the sync search ended", res)),
                };
            };
            if re.is_intermediate() {
                return Ok(match ldap3::controls::parse_syncinfo(re) {
                    SyncInfo::NewCookie(c) => SyncEvent::NewCookie(c),
                    SyncInfo::RefreshDelete {
                        cookie,
                        refresh_done,
                    } => SyncEvent::RefreshDone {
                        present: false,
                        done: refresh_done,
                        cookie,
                    },
                    SyncInfo::RefreshPresent {
                        cookie,
                        refresh_done,
                    } => SyncEvent::RefreshDone {
                        present: true,
                        done: refresh_done,
                        cookie,
                    },
                    SyncInfo::SyncIdSet {
                        cookie,
                        refresh_deletes,
                        sync_uuids,
                    } => SyncEvent::IdSet {
                        uuids: sync_uuids.into_iter().collect(),
                        deleted: refresh_deletes,
                        cookie,
                    },
                });
            }
            if re.is_ref() {
                continue;
            }
            let state =
                re.1.iter()
                    .find(|c| c.1.ctype == SYNC_STATE_OID)
                    .map(|c| c.1.parse::<SyncState>());
            let e = SearchEntry::construct(re);
            let Some(state) = state else {
                continue;
            };
            let attrs = attrs_of(&e);
            return Ok(match state.state {
                EntryState::Delete => SyncEvent::Delete {
                    uuid: state.entry_uuid,
                    dn: e.dn,
                    cookie: state.cookie,
                },
                EntryState::Present => SyncEvent::Entry {
                    uuid: state.entry_uuid,
                    dn: e.dn,
                    attrs,
                    present: true,
                    cookie: state.cookie,
                },
                EntryState::Add | EntryState::Modify => SyncEvent::Entry {
                    uuid: state.entry_uuid,
                    dn: e.dn,
                    attrs,
                    present: false,
                    cookie: state.cookie,
                },
            });
        }
    }

    /// Abandons the search (the connection stays usable).
    pub async fn abandon(mut self) {
        let id = self.stream.ldap_handle().last_id();
        let _ = self.stream.ldap_handle().abandon(id).await;
    }
}

/// entryUUID as the 16 raw bytes the sync controls carry, from its text form.
pub fn uuid_bytes(text: &str) -> Option<Vec<u8>> {
    uuid::Uuid::parse_str(text)
        .ok()
        .map(|u| u.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls() {
        assert_eq!(
            host_port("ldap://127.0.0.1:3890").unwrap(),
            ("127.0.0.1".into(), 3890, false)
        );
        assert_eq!(
            host_port("ldaps://dir.alliance.net").unwrap(),
            ("dir.alliance.net".into(), 636, true)
        );
        assert_eq!(
            host_port("ldap://[::1]:10389/").unwrap(),
            ("::1".into(), 10389, false)
        );
        for bad in ["http://x", "ldap://", "ldap://h:port", "ldap://[::1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hash_with_stray_binary_bytes_is_kept_up_to_its_nul() {
        let mut e = SearchEntry {
            dn: "uid=a".into(),
            attrs: Default::default(),
            bin_attrs: Default::default(),
        };
        e.bin_attrs.insert(
            "userPassword".into(),
            vec![b"{ARGON2}$argon2i$hash\0\xff".to_vec()],
        );
        e.bin_attrs
            .insert("jpegPhoto".into(), vec![vec![0xff, 0xd8]]);
        let a = attrs_of(&e);
        assert_eq!(
            a["userpassword"].iter().next().map(String::as_str),
            Some("{ARGON2}$argon2i$hash")
        );
        assert!(!a.contains_key("jpegphoto"));
    }

    #[test]
    fn uuids_parse_to_raw_bytes() {
        let b = uuid_bytes("a163927c-7dd2-1041-80a2-d1cba09ce0fd").unwrap();
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], 0xa1);
        assert_eq!(uuid_bytes("nope"), None);
    }
}
