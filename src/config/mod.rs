//! `appliance.toml`: typed, validated, with errors that name the file, the
//! line, the key and what is allowed.
//!
//! Reads files only; never writes, never touches the network. Everything the
//! daemon does starts from a [`Config`] this module accepted.

pub mod diff;
pub mod hardware;

pub use diff::ConfigDiff;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{AppName, CollectiveSlug, Domain, Email, Invalid, string_newtype};

/// Where the config lives unless `--config` or `COMMONSCLOUD_CONFIG` say otherwise.
pub const DEFAULT_PATH: &str = "/etc/commonscloud/appliance.toml";

/// Errors from loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read {path}: {source}. Write one with `commonscloud init`, or point --config / COMMONSCLOUD_CONFIG at another file"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A value, key or syntax error at a known place in the file.
    #[error("{}", .0)]
    Invalid(Box<Located>),
}

/// A config error pinned to a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// 1-based; 0 when the error has no place (a table missing from the file).
    pub line: usize,
    pub column: usize,
    /// Dotted key, e.g. `collective.slug`; empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A secret value: never printed, never logged, redacted when serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The config in force, as the tasks read it: a reload replaces it (the
/// sender is the appliance's), readers take the current one with
/// [`Live::get`] and never hold it across a reload.
#[derive(Debug, Clone)]
pub struct Live(tokio::sync::watch::Receiver<std::sync::Arc<Config>>);

impl Live {
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.0.borrow().clone()
    }
}

impl From<tokio::sync::watch::Receiver<std::sync::Arc<Config>>> for Live {
    fn from(rx: tokio::sync::watch::Receiver<std::sync::Arc<Config>>) -> Self {
        Self(rx)
    }
}

/// The whole configuration, with defaults filled in by [`parse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub collective: Collective,
    #[serde(default)]
    pub hostnames: Hostnames,
    #[serde(default)]
    pub directory: Directory,
    #[serde(default)]
    pub apps: Apps,
    pub hardware: Hardware,
    #[serde(default)]
    pub front_door: FrontDoor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alliance: Option<Alliance>,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collective {
    pub name: NonEmpty,
    pub slug: CollectiveSlug,
    pub domain: Domain,
    pub admin_email: Email,
}

/// The four public hostnames; each defaults to a prefix of the domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostnames {
    pub console: Option<Domain>,
    pub cloud: Option<Domain>,
    pub office: Option<Domain>,
    pub forum: Option<Domain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Base DN; defaults to the domain's components.
    pub suffix: Option<Dn>,
    /// Where slapd listens for the apps. The daemon uses ldapi:// itself.
    #[serde(default = "default_ldap_listen")]
    pub listen: Vec<LdapUrl>,
}

impl Default for Directory {
    fn default() -> Self {
        Self {
            suffix: None,
            listen: default_ldap_listen(),
        }
    }
}

fn default_ldap_listen() -> Vec<LdapUrl> {
    vec![LdapUrl("ldap://127.0.0.1:3389".into())]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    #[serde(default = "all_apps")]
    pub enabled: Vec<AppName>,
    /// Where `enabled` came from when an admin chose it in the console
    /// (`<state_dir>/console/apps.json`), overriding the file's list.
    #[serde(skip)]
    pub enabled_from_console: Option<PathBuf>,
    /// Run the enabled apps even when the hardware profile says they do not
    /// fit (memory) on this board.
    #[serde(default)]
    pub force: bool,
    /// Image overrides, by container role; the release's pins otherwise.
    #[serde(default)]
    pub images: BTreeMap<ImageRole, ImageRef>,
    /// The apps' private bridge. Its first address is the host's side, where
    /// slapd listens for the apps.
    #[serde(default = "default_subnet")]
    pub subnet: Subnet,
    /// The apps' web containers publish on 127.0.0.1 from this port up
    /// (nextcloud, collabora, discourse), for the front door.
    #[serde(default = "default_port_base")]
    pub port_base: u16,
    /// Spell-check dictionaries for Collabora.
    #[serde(default = "default_dictionaries")]
    pub dictionaries: Vec<String>,
    /// Names of this appliance's Docker objects start with it (and its
    /// label says it): `commonscloud` unless several appliances (or test
    /// runs) share one engine.
    #[serde(default = "default_prefix")]
    pub prefix: CollectiveSlug,
}

impl Default for Apps {
    fn default() -> Self {
        Self {
            enabled: all_apps(),
            enabled_from_console: None,
            force: false,
            images: BTreeMap::new(),
            subnet: default_subnet(),
            port_base: default_port_base(),
            dictionaries: default_dictionaries(),
            prefix: default_prefix(),
        }
    }
}

fn default_subnet() -> Subnet {
    Subnet("172.30.64.0/24".into())
}

fn default_prefix() -> CollectiveSlug {
    "commonscloud".parse().expect("a valid slug")
}

fn default_port_base() -> u16 {
    18080
}

fn default_dictionaries() -> Vec<String> {
    vec!["en_US".into(), "ca".into(), "es_ES".into()]
}

/// A container whose image can be overridden in `[apps.images]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageRole {
    Nextcloud,
    NextcloudDb,
    NextcloudRedis,
    Collabora,
    Discourse,
    DiscourseDb,
    DiscourseRedis,
}

impl ImageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageRole::Nextcloud => "nextcloud",
            ImageRole::NextcloudDb => "nextcloud-db",
            ImageRole::NextcloudRedis => "nextcloud-redis",
            ImageRole::Collabora => "collabora",
            ImageRole::Discourse => "discourse",
            ImageRole::DiscourseDb => "discourse-db",
            ImageRole::DiscourseRedis => "discourse-redis",
        }
    }
}

fn all_apps() -> Vec<AppName> {
    AppName::ALL.to_vec()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub profile: ProfileName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontDoor {
    #[serde(default = "default_http")]
    pub http: ListenAddr,
    #[serde(default = "default_https")]
    pub https: ListenAddr,
    /// Public certificates by ACME (HTTP-01); the local CA's otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
    /// Connection caps and timeouts; the defaults suit every board.
    #[serde(default)]
    pub limits: FrontDoorLimits,
}

impl Default for FrontDoor {
    fn default() -> Self {
        Self {
            http: default_http(),
            https: default_https(),
            acme: None,
            limits: FrontDoorLimits::default(),
        }
    }
}

/// `[front_door.limits]`: how many connections the front door holds and
/// how long a client may stay silent. Why each default is what it is:
/// `docs/security.md`, "Slow clients".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontDoorLimits {
    /// Connections open at once, every client together. Unset: as many as
    /// the front door's descriptor limit allows (two each), at most
    /// [`FrontDoorLimits::CONNECTIONS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Count>,
    /// Connections open at once from one IPv4 address or one IPv6 /64.
    #[serde(default = "default_per_address")]
    pub connections_per_address: Count,
    /// The TLS handshake, from the connection's first byte.
    #[serde(default = "default_handshake_secs")]
    pub handshake_secs: Secs,
    /// A request's head; also how long an idle kept-alive connection stays.
    #[serde(default = "default_header_secs")]
    pub header_secs: Secs,
    /// The longest silence inside a request body (an upload).
    #[serde(default = "default_body_idle_secs")]
    pub body_idle_secs: Secs,
    /// The longest a client may leave an answer unread (a slow reader).
    #[serde(default = "default_send_secs")]
    pub send_secs: Secs,
    /// The longest silence, both ways, on an upgraded connection (a
    /// WebSocket).
    #[serde(default = "default_websocket_idle_secs")]
    pub websocket_idle_secs: Secs,
}

impl FrontDoorLimits {
    /// The most connections the front door holds by default.
    pub const CONNECTIONS: u32 = 4096;
}

impl Default for FrontDoorLimits {
    fn default() -> Self {
        Self {
            connections: None,
            connections_per_address: default_per_address(),
            handshake_secs: default_handshake_secs(),
            header_secs: default_header_secs(),
            body_idle_secs: default_body_idle_secs(),
            send_secs: default_send_secs(),
            websocket_idle_secs: default_websocket_idle_secs(),
        }
    }
}

fn default_per_address() -> Count {
    Count(256)
}
fn default_handshake_secs() -> Secs {
    Secs(15)
}
fn default_header_secs() -> Secs {
    Secs(30)
}
fn default_body_idle_secs() -> Secs {
    Secs(60)
}
fn default_send_secs() -> Secs {
    Secs(60)
}
fn default_websocket_idle_secs() -> Secs {
    Secs(120)
}

/// A count of connections: 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Count(u32);

impl Count {
    pub const MAX: u32 = 1_000_000;

    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<i64> for Count {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        u32::try_from(n)
            .ok()
            .filter(|c| (1..=Self::MAX).contains(c))
            .map(Count)
            .ok_or_else(|| {
                Invalid(format!(
                    "{n} connections is out of range: expected 1 to {}",
                    Self::MAX
                ))
            })
    }
}

impl From<Count> for i64 {
    fn from(c: Count) -> i64 {
        i64::from(c.0)
    }
}

/// A timeout in seconds: 1 to 86,400 (a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Secs(u32);

impl Secs {
    pub const MAX: u32 = 86_400;

    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.0))
    }
}

impl TryFrom<i64> for Secs {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        u32::try_from(n)
            .ok()
            .filter(|s| (1..=Self::MAX).contains(s))
            .map(Secs)
            .ok_or_else(|| {
                Invalid(format!(
                    "{n} seconds is out of range: expected 1 to {} (a day)",
                    Self::MAX
                ))
            })
    }
}

impl From<Secs> for i64 {
    fn from(s: Secs) -> i64 {
        i64::from(s.0)
    }
}

/// `[front_door.acme]`: where to order the front door's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The ACME directory, e.g. Let's Encrypt's.
    pub directory: HttpsUrl,
    /// The account's contact; `collective.admin_email` unless set (filled
    /// by [`parse`]).
    pub contact: Option<Email>,
    /// PEM certificates to trust for the ACME server's own TLS (a test
    /// server's); the system's roots otherwise.
    pub ca_file: Option<AbsPath>,
    /// Order a new certificate when fewer days than this remain.
    #[serde(default = "default_renew_before_days")]
    pub renew_before_days: RenewDays,
}

fn default_renew_before_days() -> RenewDays {
    RenewDays(30)
}

/// Days before a certificate's end to renew it: 1 to 3650.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct RenewDays(u16);

impl RenewDays {
    pub const MAX: u16 = 3650;

    pub fn days(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for RenewDays {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        u16::try_from(n)
            .ok()
            .filter(|d| (1..=Self::MAX).contains(d))
            .map(RenewDays)
            .ok_or_else(|| {
                Invalid(format!(
                    "{n} days is out of range: expected 1 to {} (30 suits certificates of 90 days)",
                    Self::MAX
                ))
            })
    }
}

impl From<RenewDays> for i64 {
    fn from(d: RenewDays) -> i64 {
        i64::from(d.0)
    }
}

fn default_http() -> ListenAddr {
    ListenAddr(SocketAddr::from(([0, 0, 0, 0], 80)))
}
fn default_https() -> ListenAddr {
    ListenAddr(SocketAddr::from(([0, 0, 0, 0], 443)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: Host,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_security")]
    pub security: SmtpSecurity,
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub password_file: Option<AbsPath>,
    pub from: Mailbox,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

/// `[alliance]`: the enrolment (`directory`, `suffix`, `bind_dn` and a
/// password, all or none: a box joined with `alliance join` has none) and
/// how the link is kept safe, which applies to either kind of enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alliance {
    /// The alliance's LDAP provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<LdapUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<Dn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<Dn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<AbsPath>,
    /// The CA certificate(s), PEM, that the directory's certificate
    /// (`ldaps://` or StartTLS) must chain to; the system's roots without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<AbsPath>,
    /// Upgrade an `ldap://` link with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// Allow plain `ldap://` (password hashes in clear): test networks only.
    #[serde(default)]
    pub insecure: bool,
    /// A refresh that would delete more than this many entries here…
    #[serde(default = "default_max_refresh_deletions")]
    pub max_refresh_deletions: u32,
    /// …and more than this share (%) of the local copy waits for an admin
    /// (`alliance confirm-deletions`).
    #[serde(default = "default_max_refresh_deletions_percent")]
    pub max_refresh_deletions_percent: u8,
    /// Base URL of the alliance's TUF release repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<HttpUrl>,
}

fn default_max_refresh_deletions() -> u32 {
    DeletionLimits::default().entries
}
fn default_max_refresh_deletions_percent() -> u8 {
    DeletionLimits::default().percent
}

/// How many deletions one refresh may make before an admin must confirm
/// them (`federation::guard` applies them): a refresh that would delete more than `entries` entries *and*
/// more than `percent` % of the local copy is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeletionLimits {
    pub entries: u32,
    pub percent: u8,
}

impl Default for DeletionLimits {
    /// 20 entries and 10 %: see docs/federation.md ("A refresh that would
    /// delete too much") for why.
    fn default() -> Self {
        Self {
            entries: 20,
            percent: 10,
        }
    }
}

/// The enrolment `[alliance]` names, when it names one.
#[derive(Debug, Clone, Copy)]
pub struct AllianceEnrolment<'a> {
    pub directory: &'a LdapUrl,
    pub suffix: &'a Dn,
    pub bind_dn: &'a Dn,
}

impl Alliance {
    /// The enrolment, when `directory` (with `suffix` and `bind_dn`, which
    /// [`parse`] requires with it) is set.
    pub fn enrolment(&self) -> Option<AllianceEnrolment<'_>> {
        Some(AllianceEnrolment {
            directory: self.directory.as_ref()?,
            suffix: self.suffix.as_ref()?,
            bind_dn: self.bind_dn.as_ref()?,
        })
    }

    pub fn deletion_limits(&self) -> DeletionLimits {
        DeletionLimits {
            entries: self.max_refresh_deletions,
            percent: self.max_refresh_deletions_percent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    #[serde(default = "default_state_dir")]
    pub state_dir: AbsPath,
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: AbsPath,
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: AbsPath,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            runtime_dir: default_runtime_dir(),
            secrets_dir: default_secrets_dir(),
        }
    }
}

fn default_state_dir() -> AbsPath {
    AbsPath("/var/lib/commonscloud".into())
}
fn default_runtime_dir() -> AbsPath {
    AbsPath("/run/commonscloud".into())
}
fn default_secrets_dir() -> AbsPath {
    AbsPath("/etc/commonscloud/secrets".into())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default)]
    pub level: LogLevel,
    /// The audit log keeps entries this many days...
    #[serde(default)]
    pub audit_keep_days: AuditDays,
    /// ...and at most this many (the oldest go first).
    #[serde(default)]
    pub audit_max_entries: AuditEntries,
}

/// Days the audit log keeps an entry: 1 to 3650 (default 365).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct AuditDays(u16);

impl AuditDays {
    pub fn days(self) -> u16 {
        self.0
    }
}

impl Default for AuditDays {
    fn default() -> Self {
        AuditDays(365)
    }
}

impl TryFrom<i64> for AuditDays {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        u16::try_from(n)
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .map(AuditDays)
            .ok_or_else(|| {
                Invalid(format!(
                    "{n} days is out of range: expected 1 to 3650 (365 keeps a year)"
                ))
            })
    }
}

impl From<AuditDays> for i64 {
    fn from(d: AuditDays) -> i64 {
        i64::from(d.0)
    }
}

/// Entries the audit log keeps at most: 1,000 to 100,000,000 (default
/// 500,000, some 100 MB at worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct AuditEntries(u64);

impl AuditEntries {
    pub fn entries(self) -> u64 {
        self.0
    }
}

impl Default for AuditEntries {
    fn default() -> Self {
        AuditEntries(500_000)
    }
}

impl TryFrom<i64> for AuditEntries {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        u64::try_from(n)
            .ok()
            .filter(|d| (1_000..=100_000_000).contains(d))
            .map(AuditEntries)
            .ok_or_else(|| {
                Invalid(format!(
                    "{n} entries is out of range: expected 1000 to 100000000 (500000 suits most boxes)"
                ))
            })
    }
}

impl From<AuditEntries> for i64 {
    fn from(d: AuditEntries) -> i64 {
        i64::try_from(d.0).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

string_newtype!(
    /// Text that is not blank.
    NonEmpty,
    |s| {
        if s.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(())
        }
    }
);
string_newtype!(
    /// A distinguished name such as `dc=example,dc=org`.
    Dn,
    |s| {
        let ok = !s.is_empty()
            && s.split(',').all(|rdn| {
                rdn.split_once('=').is_some_and(|(a, v)| {
                    !a.is_empty()
                        && a.trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !v.trim().is_empty()
                })
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a distinguished name: expected attr=value pairs separated by commas, e.g. \"dc=quimper,dc=example,dc=org\""
            ))
        }
    }
);
string_newtype!(
    /// An `ldap://` or `ldaps://` URL with a host and a port.
    LdapUrl,
    |s| {
        let rest = s
            .strip_prefix("ldap://")
            .or_else(|| s.strip_prefix("ldaps://"));
        let ok = rest.is_some_and(|r| {
            let hostport = r.trim_end_matches('/');
            !hostport.is_empty() && !hostport.contains('/') && !hostport.contains(' ')
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not an LDAP URL: expected ldap://host:port or ldaps://host:port, e.g. \"ldap://127.0.0.1:3389\""
            ))
        }
    }
);
string_newtype!(
    /// An image reference: `name:tag`, `name@sha256:…` or both.
    ImageRef,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && (s.contains(':') || s.contains('@'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not an image reference: expected name:tag or name@sha256:digest, e.g. \"nextcloud:31-apache\""
            ))
        }
    }
);
string_newtype!(
    /// An IPv4 subnet `a.b.c.d/n` with n from 16 to 28.
    Subnet,
    |s| {
        let ok = s.split_once('/').is_some_and(|(ip, n)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_private())
                && n.parse::<u8>().is_ok_and(|n| (16..=28).contains(&n))
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a private IPv4 subnet: expected a.b.c.d/n with n from 16 to 28, e.g. \"172.30.64.0/24\""
            ))
        }
    }
);

impl Subnet {
    /// The first host address: the bridge's gateway, the host's side.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        let (ip, n) = self.0.split_once('/').unwrap_or(("172.30.64.0", "24"));
        let ip: std::net::Ipv4Addr = ip
            .parse()
            .unwrap_or(std::net::Ipv4Addr::new(172, 30, 64, 0));
        let bits: u32 = n.parse().unwrap_or(24);
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        std::net::Ipv4Addr::from((u32::from(ip) & mask) + 1)
    }
}

string_newtype!(
    /// An `http://` or `https://` URL.
    HttpUrl,
    |s| {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        if rest.is_some_and(|r| !r.is_empty() && !r.contains(' ')) {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not an HTTP URL: expected https://host/path, e.g. \"https://releases.alliance.example.net/\""
            ))
        }
    }
);
string_newtype!(
    /// An `https://` URL with a host.
    HttpsUrl,
    |s| {
        let ok = s.strip_prefix("https://").is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not an https URL: expected https://host/path, e.g. \"https://acme-v02.api.letsencrypt.org/directory\""
            ))
        }
    }
);
string_newtype!(
    /// A host name or IP address.
    Host,
    |s| {
        let ok = s.parse::<std::net::IpAddr>().is_ok()
            || s == "localhost"
            || s.parse::<Domain>().is_ok();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a host: expected a DNS name or an IP address, e.g. \"smtp.example.org\""
            ))
        }
    }
);
string_newtype!(
    /// A sender: `addr@domain` or `Name <addr@domain>`.
    Mailbox,
    |s| {
        let addr = match (s.rfind('<'), s.ends_with('>')) {
            (Some(i), true) => &s[i + 1..s.len() - 1],
            _ => s,
        };
        if addr.parse::<Email>().is_ok() {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a sender: expected \"addr@domain\" or \"Name <addr@domain>\""
            ))
        }
    }
);
string_newtype!(
    /// The name of an embedded hardware profile.
    ProfileName,
    |s| {
        if hardware::names().any(|n| n == s) {
            Ok(())
        } else {
            let all: Vec<&str> = hardware::names().collect();
            Err(format!(
                "unknown hardware profile `{s}`: expected one of {}",
                all.join(", ")
            ))
        }
    }
);

/// An absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathBuf")]
pub struct AbsPath(PathBuf);

impl TryFrom<PathBuf> for AbsPath {
    type Error = Invalid;
    fn try_from(p: PathBuf) -> Result<Self, Invalid> {
        if p.is_absolute() {
            Ok(Self(p))
        } else {
            Err(Invalid(format!(
                "`{}` is not an absolute path: start it with '/'",
                p.display()
            )))
        }
    }
}

impl std::ops::Deref for AbsPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AbsPath {
    pub fn new(p: impl Into<PathBuf>) -> Result<Self, Invalid> {
        Self::try_from(p.into())
    }
}

/// A socket address to listen on, e.g. `0.0.0.0:443` or `[::]:443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenAddr(pub SocketAddr);

impl TryFrom<String> for ListenAddr {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        s.parse().map(ListenAddr).map_err(|_| {
            Invalid(format!(
                "`{s}` is not a listen address: expected ip:port, e.g. \"0.0.0.0:443\" or \"[::]:443\""
            ))
        })
    }
}

impl From<ListenAddr> for String {
    fn from(a: ListenAddr) -> String {
        a.0.to_string()
    }
}

impl Config {
    /// The public hostname of an app (`cloud.`, `office.`, `forum.`).
    pub fn app_hostname(&self, app: AppName) -> String {
        let h = &self.hostnames;
        match app {
            AppName::Nextcloud => h.cloud.as_ref(),
            AppName::Collabora => h.office.as_ref(),
            AppName::Discourse => h.forum.as_ref(),
        }
        .map(ToString::to_string)
        .unwrap_or_default()
    }

    /// The loopback port an app's web container publishes on, where the
    /// front door sends its traffic.
    pub fn app_port(&self, app: AppName) -> u16 {
        let offset = AppName::ALL.iter().position(|a| *a == app).unwrap_or(0) as u16;
        self.apps.port_base.saturating_add(offset)
    }

    /// The console hostname (`box.` by default).
    pub fn console_host(&self) -> &Domain {
        self.hostnames.console.as_ref().expect("filled by parse")
    }

    /// `https://<console host>`: where mailed links point.
    pub fn console_url(&self) -> String {
        format!("https://{}", self.console_host())
    }

    /// The directory suffix (derived from the domain by default).
    pub fn suffix(&self) -> &Dn {
        self.directory.suffix.as_ref().expect("filled by parse")
    }

    /// The hardware profile this config names.
    pub fn profile(&self) -> hardware::Profile {
        hardware::profile(self.hardware.profile.as_str()).expect("checked by ProfileName")
    }

    /// Where slapd listens for the apps inside Docker: LDAPS on the apps'
    /// bridge gateway, on the port of the first `directory.listen` URL.
    /// `None` without apps.
    pub fn apps_ldap_url(&self) -> Option<String> {
        if self.apps.enabled.is_empty() {
            return None;
        }
        let port = self
            .ports()
            .into_iter()
            .find(|(k, _)| *k == "directory.listen")
            .map_or(389, |(_, p)| p);
        Some(format!("ldaps://{}:{port}", self.apps.subnet.gateway()))
    }

    /// Local ports the appliance needs free, with the key that sets each.
    pub fn ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![
            ("front_door.http", self.front_door.http.0.port()),
            ("front_door.https", self.front_door.https.0.port()),
        ];
        for url in &self.directory.listen {
            if let Some(port) = url
                .as_str()
                .rsplit_once(':')
                .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
            {
                ports.push(("directory.listen", port));
            }
        }
        ports
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Where the daemon's socket is.
    pub fn api_socket(&self) -> PathBuf {
        self.paths.runtime_dir.join("api.sock")
    }
}

/// The API socket named by a config file, even when the file has errors
/// elsewhere: `status` must still reach a daemon running on the previous,
/// valid config. Returns the load error alongside, if any.
pub fn api_socket_lenient(path: &Path) -> (PathBuf, Option<ConfigError>) {
    match load(path) {
        Ok(c) => (c.api_socket(), None),
        Err(e) => {
            let runtime_dir = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| {
                    t.get("paths")?
                        .get("runtime_dir")?
                        .as_str()
                        .map(PathBuf::from)
                })
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| default_runtime_dir().0);
            (runtime_dir.join("api.sock"), Some(e))
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut config = parse(&text, path)?;
    let choice = console_apps_path(&config);
    match std::fs::read_to_string(&choice) {
        Ok(json) => apply_console_apps(&mut config, &json, &choice)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: choice,
                source,
            });
        }
    }
    Ok(config)
}

/// Where the console keeps the admins' choice of apps. Every reader of the
/// config (`serve`, `plan`, `reconcile`, `config check`) goes through
/// [`load`], so they all see the same list; the config file itself stays
/// the admin's (and read-only to the daemon under systemd).
pub fn console_apps_path(config: &Config) -> PathBuf {
    config.paths.state_dir.join("console/apps.json")
}

/// The console's choice of apps, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleApps {
    pub enabled: Vec<AppName>,
    /// Who chose, and when (Unix seconds).
    pub by: String,
    pub at: i64,
}

/// Applies the console's choice (JSON text read from `path`). Pure.
pub fn apply_console_apps(config: &mut Config, json: &str, path: &Path) -> Result<(), ConfigError> {
    let choice: ConsoleApps = serde_json::from_str(json).map_err(|e| {
        ConfigError::Invalid(Box::new(Located {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            key: "enabled".into(),
            message: format!(
                "{e}; expected {{\"enabled\": [\"nextcloud\", \"collabora\", \"discourse\"], \"by\": …, \"at\": …}}: fix or delete the file to go back to [apps] enabled"
            ),
        }))
    })?;
    config.apps.enabled = choice.enabled;
    config.apps.enabled_from_console = Some(path.to_owned());
    Ok(())
}

/// Validates config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
        ConfigError::Invalid(Box::new(Located {
            path: path.to_owned(),
            line,
            column,
            key,
            message,
        }))
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| located(e.span(), String::new(), e.message().trim().to_owned()))?;
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        if key == "." {
            key.clear();
        }
        let inner = e.inner();
        let message = inner.message().trim().to_owned();
        // A missing key is reported on its table; name the key itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            key = if key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
        }
        located(inner.span(), key, message)
    })?;
    // Checks that span two keys: name the second one's line.
    let both = |table: &str, a: &str, b: &str| {
        let span = key_span(text, &[table, b]);
        located(
            span,
            format!("{table}.{b}"),
            format!("set either `{a}` or `{b}`, not both"),
        )
    };
    if let Some(smtp) = &config.smtp
        && smtp.password.is_some()
        && smtp.password_file.is_some()
    {
        return Err(both("smtp", "password", "password_file"));
    }
    if let Some(alliance) = &config.alliance {
        if alliance.bind_password.is_some() && alliance.bind_password_file.is_some() {
            return Err(both("alliance", "bind_password", "bind_password_file"));
        }
        if let Some((key, message)) = alliance_keys(alliance) {
            return Err(located(
                key_span(text, &["alliance", key]).or_else(|| key_span(text, &["alliance"])),
                format!("alliance.{key}"),
                message,
            ));
        }
    }
    if config.directory.listen.is_empty() {
        return Err(located(
            key_span(text, &["directory", "listen"]),
            "directory.listen".into(),
            "must list at least one ldap:// URL for the apps, e.g. [\"ldap://127.0.0.1:3389\"]"
                .into(),
        ));
    }
    fill_defaults(&mut config);
    Ok(config)
}

/// The `[alliance]` keys that only make sense together: the key at fault
/// and what to do.
fn alliance_keys(a: &Alliance) -> Option<(&'static str, String)> {
    let enrolment = [
        ("directory", a.directory.is_some()),
        ("suffix", a.suffix.is_some()),
        ("bind_dn", a.bind_dn.is_some()),
    ];
    let any = enrolment.iter().any(|(_, set)| *set)
        || a.bind_password.is_some()
        || a.bind_password_file.is_some();
    if any && let Some((missing, _)) = enrolment.iter().find(|(_, set)| !*set) {
        return Some((
            missing,
            "required with the rest of the enrolment: set directory, suffix, bind_dn and bind_password_file together (or none of them, for a box joined with `commonscloud alliance join`)".into(),
        ));
    }
    if a.max_refresh_deletions_percent > 100 {
        return Some((
            "max_refresh_deletions_percent",
            format!(
                "{} is not a share: give a percentage from 0 to 100 (100 never holds a refresh)",
                a.max_refresh_deletions_percent
            ),
        ));
    }
    // Whether the link may be made (plain ldap:// needs `insecure`) is the
    // federation task's to say, in status and doctor: a box whose config
    // predates that rule keeps starting, its federation refused.
    None
}

fn fill_defaults(c: &mut Config) {
    let domain = c.collective.domain.as_str().to_owned();
    let host = |prefix: &str| -> Option<Domain> { format!("{prefix}.{domain}").parse().ok() };
    let h = &mut c.hostnames;
    h.console = h.console.take().or_else(|| host("box"));
    h.cloud = h.cloud.take().or_else(|| host("cloud"));
    h.office = h.office.take().or_else(|| host("office"));
    h.forum = h.forum.take().or_else(|| host("forum"));
    if c.directory.suffix.is_none() {
        let dn = domain
            .split('.')
            .map(|l| format!("dc={l}"))
            .collect::<Vec<_>>()
            .join(",");
        c.directory.suffix = Dn::try_from(dn).ok();
    }
    if let Some(acme) = &mut c.front_door.acme
        && acme.contact.is_none()
    {
        acme.contact = Some(c.collective.admin_email.clone());
    }
    let mut seen = Vec::new();
    c.apps.enabled.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// The span of a key given by its table path, if the file has it.
fn key_span(text: &str, keys: &[&str]) -> Option<std::ops::Range<usize>> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let (last, parents) = keys.split_last()?;
    for k in parents {
        match table.get(*k)?.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    let (key, _) = table.get_key_value(*last)?;
    Some(key.span())
}

#[cfg(test)]
mod tests;

/// A complete config for unit tests anywhere in the crate: a collective,
/// a board profile and fixed paths, plus `extra` TOML.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Config, parse};
    use std::path::Path;

    pub(crate) fn config(profile: &str, extra: &str) -> Config {
        let text = format!(
            "[collective]\nname = \"Les Communs de Quimper\"\nslug = \"quimper\"\ndomain = \"quimper.example.org\"\nadmin_email = \"admin@quimper.example.org\"\n\
             [hardware]\nprofile = \"{profile}\"\n[paths]\nstate_dir = \"/var/lib/cc\"\nruntime_dir = \"/run/cc\"\nsecrets_dir = \"/etc/cc/secrets\"\n{extra}"
        );
        parse(&text, Path::new("test.toml")).unwrap()
    }
}
