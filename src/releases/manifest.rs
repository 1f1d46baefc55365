//! The release manifest: what one release of the appliance runs, and the
//! images a box may pass through on its way there. Typed structs with
//! `deny_unknown_fields`, parsed from JSON and then validated across fields;
//! every error names the field and what is allowed. `docs/releases.md`
//! explains each field and carries the example a test parses.
//!
//! Pure: parses text it is given; no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ImageRole;
use crate::model::{AppName, Arch, Invalid, Series, Version, string_newtype};

/// The schema this appliance reads. A manifest with another number is
/// refused: a newer schema needs a newer daemon.
pub const SCHEMA_VERSION: u32 = 1;

/// The highest seed a box may draw (seeds are `0..=MAX_SEED`; 2048 of them,
/// as Bottlerocket's waves).
pub const MAX_SEED: u16 = 2047;

/// A manifest that could not be read, or that is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the manifest's shape (a wrong type, an unknown field, a
    /// value a typed field refuses).
    #[error("{}line {line}, column {column}: {message}", field_prefix(field))]
    Syntax {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed, but the fields disagree (a target not listed, a
    /// Nextcloud image without its upgrade table, …).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl ManifestError {
    /// The dotted path of the offending field (`components.nextcloud.images[2].ref`).
    pub fn field(&self) -> &str {
        match self {
            ManifestError::Syntax { field, .. } | ManifestError::Invalid { field, .. } => field,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// One release: what every app runs at it, the images on the way, the daemon
/// binaries, notes and the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The release's name, e.g. `2026.09.1`.
    pub release: ReleaseId,
    /// The channel it is published on, e.g. `stable`.
    pub channel: Channel,
    /// When it was published (RFC 3339); the waves count from it.
    pub published: Timestamp,
    /// Urgent releases (security fixes) skip the waves and the deferral.
    pub urgent: bool,
    /// The oldest appliance (daemon) version that may apply it.
    pub min_appliance_version: Version,
    /// What changes, for the admins, in English, Catalan and Spanish.
    pub notes: Notes,
    /// Each container role's images, by digest.
    #[serde(deserialize_with = "role_keyed")]
    pub components: BTreeMap<ImageRole, Component>,
    /// The daemon of this release.
    pub daemon: Daemon,
    /// The staged rollout (empty: every box may start at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
}

/// One container role's images: the one the release runs and the ones a box
/// may pass through on its way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The version this release runs: the highest listed, and the ceiling
    /// of every path (Bottlerocket's `max_version`).
    pub target: Version,
    /// Every image of this role the release carries, the target's included.
    pub images: Vec<Image>,
}

impl Component {
    /// The listed image of exactly this version.
    pub fn image(&self, version: &Version) -> Option<&Image> {
        self.images.iter().find(|i| &i.version == version)
    }

    /// The target's image.
    pub fn target_image(&self) -> Option<&Image> {
        self.image(&self.target)
    }
}

/// One image of a role, with what the planner must know about reaching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The app's own version in this image (Nextcloud: the 4-part
    /// `$OC_Version`).
    pub version: Version,
    /// The image, pinned by digest (a multi-architecture index).
    #[serde(rename = "ref")]
    pub reference: PinnedImage,
    /// The architectures the image exists for.
    pub arches: Vec<Arch>,
    /// Its size unpacked on disk, for the disk check of a pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// From which installed versions this image upgrades, by series
    /// (`major.minor`), each with the oldest version of that series it
    /// accepts: Nextcloud's `$OC_VersionCanBeUpgradedFrom` plus the minimum
    /// patch releases upstream requires. Required for Nextcloud; for other
    /// roles, absent means "from any older version".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_be_upgraded_from: Option<BTreeMap<Series, Version>>,
    /// What the other roles must run while this image runs, e.g. Collabora
    /// needing a Nextcloud whose richdocuments speaks its protocol.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "role_keyed"
    )]
    pub requires: BTreeMap<ImageRole, Bounds>,
    /// The expected downtime of a hop to this image, in seconds, when the
    /// release knows better than the planner's default for its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_s: Option<u64>,
}

impl Image {
    pub fn runs_on(&self, arch: Arch) -> bool {
        self.arches.contains(&arch)
    }

    /// Whether an installed `from` may upgrade straight to this image, by
    /// its table (`None` when it has none).
    pub fn accepts_from(&self, from: &Version) -> Option<bool> {
        self.can_be_upgraded_from
            .as_ref()
            .map(|t| t.get(&from.series()).is_some_and(|min| from >= min))
    }
}

/// A range of versions: `min` included, `below` excluded; either may be
/// absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<Version>,
}

impl Bounds {
    pub fn contains(&self, v: &Version) -> bool {
        self.min.as_ref().is_none_or(|m| v >= m) && self.below.as_ref().is_none_or(|b| v < b)
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.min, &self.below) {
            (Some(m), Some(b)) => write!(f, "at least {m} and below {b}"),
            (Some(m), None) => write!(f, "at least {m}"),
            (None, Some(b)) => write!(f, "below {b}"),
            (None, None) => write!(f, "any version"),
        }
    }
}

/// The daemon of a release (used by the self-update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    pub version: Version,
    /// One binary per architecture.
    pub binaries: BTreeMap<Arch, Binary>,
}

/// A daemon binary, as a target of the signed repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// The target's name in the repository, e.g.
    /// `commonscloud-0.2.0-x86_64`.
    pub target: TargetName,
    pub sha256: Sha256Hex,
    pub bytes: u64,
}

/// One wave of the staged rollout: boxes whose seed is at most `up_to_seed`
/// (and above the previous wave's) may start `start_after_s` seconds after
/// publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    pub up_to_seed: u16,
    pub start_after_s: u64,
}

/// The notes, in the console's three languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Notes {
    pub en: String,
    pub ca: String,
    pub es: String,
}

impl TryFrom<BTreeMap<String, String>> for Notes {
    type Error = Invalid;
    fn try_from(mut m: BTreeMap<String, String>) -> Result<Self, Invalid> {
        if let Some(other) = m.keys().find(|k| !["en", "ca", "es"].contains(&k.as_str())) {
            return Err(Invalid(format!(
                "unknown language `{other}`: notes are in en, ca and es"
            )));
        }
        let mut take = |lang: &str| match m.remove(lang) {
            Some(t) if !t.trim().is_empty() => Ok(t),
            _ => Err(Invalid(format!(
                "the note in `{lang}` is missing or empty: notes need en, ca and es, all present"
            ))),
        };
        Ok(Notes {
            en: take("en")?,
            ca: take("ca")?,
            es: take("es")?,
        })
    }
}

impl From<Notes> for BTreeMap<String, String> {
    fn from(n: Notes) -> Self {
        BTreeMap::from([
            ("en".into(), n.en),
            ("ca".into(), n.ca),
            ("es".into(), n.es),
        ])
    }
}

string_newtype!(
    /// A release's name: 1 to 64 letters, digits, `.`, `_` or `-`, starting
    /// with a letter or digit (`2026.09.1`).
    ReleaseId,
    |s| {
        let ok = (1..=64).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a release name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. \"2026.09.1\""
            ))
        }
    }
);

string_newtype!(
    /// A channel: `^[a-z][a-z0-9-]{0,31}$` (`stable`, `testing`).
    Channel,
    |s| {
        let ok = (1..=32).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a channel: use 1 to 32 lowercase letters, digits or '-', starting with a letter, e.g. \"stable\""
            ))
        }
    }
);

string_newtype!(
    /// An RFC 3339 time, e.g. `2026-09-01T12:00:00Z`.
    Timestamp,
    |s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|_| ())
            .map_err(|_| {
                format!("`{s}` is not an RFC 3339 time: expected e.g. \"2026-09-01T12:00:00Z\"")
            })
    }
);

impl Timestamp {
    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        time::OffsetDateTime::parse(
            self.as_str(),
            &time::format_description::well_known::Rfc3339,
        )
        .map_or(0, |t| t.unix_timestamp())
    }
}

string_newtype!(
    /// An image pinned by digest: `name[:tag]@sha256:<64 lowercase hex>`.
    /// The name is a repository (lowercase, `/`-separated, optionally with a
    /// registry `host[:port]/` in front).
    PinnedImage,
    |s| {
        let bad = || {
            format!(
                "`{s}` is not an image pinned by digest: expected name@sha256:<64 lowercase hex digits>, e.g. \"nextcloud@sha256:{}\"",
                "0123456789abcdef".repeat(4)
            )
        };
        let (name, digest) = s.split_once('@').ok_or_else(bad)?;
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c)
            });
        if name_ok && is_sha256_hex(hex) {
            Ok(())
        } else {
            Err(bad())
        }
    }
);

impl PinnedImage {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        self.as_str().split_once('@').map_or("", |(_, d)| d)
    }

    /// The repository and tag, without the digest.
    pub fn name(&self) -> &str {
        self.as_str().split_once('@').map_or("", |(n, _)| n)
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

string_newtype!(
    /// A SHA-256 as 64 lowercase hex digits.
    Sha256Hex,
    |s| {
        if is_sha256_hex(s) {
            Ok(())
        } else {
            Err(format!("`{s}` is not a SHA-256: expected 64 lowercase hex digits"))
        }
    }
);

string_newtype!(
    /// A target's name in the signed repository: `/`-separated segments of
    /// letters, digits, `.`, `_` or `-`, none of them `.` or `..`.
    TargetName,
    |s| {
        let ok = (1..=200).contains(&s.len())
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a target name: use '/'-separated segments of letters, digits, '.', '_' or '-' (no '.' or '..' segment), e.g. \"commonscloud-0.2.0-x86_64\""
            ))
        }
    }
);

/// What kind of software a container role runs: the planner's rules differ
/// by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Nextcloud,
    Postgres,
    Redis,
    Collabora,
    Discourse,
}

/// Every container role with an image of its own, in the order the planner
/// moves them.
pub const ROLES: [ImageRole; 7] = [
    ImageRole::Nextcloud,
    ImageRole::NextcloudDb,
    ImageRole::NextcloudRedis,
    ImageRole::Collabora,
    ImageRole::Discourse,
    ImageRole::DiscourseDb,
    ImageRole::DiscourseRedis,
];

/// The role a container's `org.commonscloud.role` label names.
pub fn role_named(name: &str) -> Option<ImageRole> {
    ROLES.into_iter().find(|r| r.as_str() == name)
}

/// A map keyed by role names, read with string keys so that an error inside
/// a value names its key (`components.nextcloud.images[0]`).
fn role_keyed<'de, D, V>(d: D) -> Result<BTreeMap<ImageRole, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    use serde::de::Error;
    BTreeMap::<String, V>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| {
            role_named(&k).map(|r| (r, v)).ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown role `{k}`: expected one of {}",
                    ROLES.map(ImageRole::as_str).join(", ")
                ))
            })
        })
        .collect()
}

/// The kind of a role.
pub fn kind(role: ImageRole) -> Kind {
    match role {
        ImageRole::Nextcloud => Kind::Nextcloud,
        ImageRole::NextcloudDb | ImageRole::DiscourseDb => Kind::Postgres,
        ImageRole::NextcloudRedis | ImageRole::DiscourseRedis => Kind::Redis,
        ImageRole::Collabora => Kind::Collabora,
        ImageRole::Discourse => Kind::Discourse,
    }
}

/// The app a role belongs to.
pub fn app(role: ImageRole) -> AppName {
    match role {
        ImageRole::Nextcloud | ImageRole::NextcloudDb | ImageRole::NextcloudRedis => {
            AppName::Nextcloud
        }
        ImageRole::Collabora => AppName::Collabora,
        ImageRole::Discourse | ImageRole::DiscourseDb | ImageRole::DiscourseRedis => {
            AppName::Discourse
        }
    }
}

/// Whether a version has the shape a role's software writes: Nextcloud's
/// `$OC_Version` has 4 numbers; PostgreSQL's has 1 or 2 and no tag; the
/// others 1 to 5, a tag allowed.
pub fn check_shape(k: Kind, v: &Version) -> Result<(), String> {
    match k {
        Kind::Nextcloud if v.parts().len() != 4 || v.is_pre_release() => Err(format!(
            "`{v}` is not a Nextcloud version: expected its 4 numbers ($OC_Version), e.g. \"31.0.5.1\""
        )),
        Kind::Postgres if v.parts().len() > 2 || v.is_pre_release() => Err(format!(
            "`{v}` is not a PostgreSQL release: expected major or major.minor, e.g. \"17.2\""
        )),
        _ => Ok(()),
    }
}

impl Manifest {
    /// Parses and validates a manifest's JSON text.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut field = e.path().to_string();
            if field == "." {
                field.clear();
            }
            let inner = e.inner();
            let (line, column) = (inner.line(), inner.column());
            let full = inner.to_string();
            let suffix = format!(" at line {line} column {column}");
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            ManifestError::Syntax {
                field,
                line,
                column,
                message,
            }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The checks across fields; `from_json` runs them.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(invalid(
                "schema_version",
                format!(
                    "this appliance reads schema {SCHEMA_VERSION}, not {}: a newer schema needs a newer appliance (update the daemon first)",
                    self.schema_version
                ),
            ));
        }
        if self.components.is_empty() {
            return Err(invalid(
                "components",
                "a release lists at least one role (nextcloud, nextcloud-db, nextcloud-redis, collabora, discourse, discourse-db, discourse-redis)",
            ));
        }
        for (role, c) in &self.components {
            self.validate_component(*role, c)?;
        }
        // The targets must be able to run together.
        for (role, c) in &self.components {
            let Some(t) = c.target_image() else { continue };
            for (other, bounds) in &t.requires {
                if let Some(o) = self.components.get(other)
                    && !bounds.contains(&o.target)
                {
                    return Err(invalid(
                        format!(
                            "components.{}.images[target].requires.{}",
                            role.as_str(),
                            other.as_str()
                        ),
                        format!(
                            "{} {} needs {} {bounds}, but the release's {} is {}: the targets must run together",
                            role.as_str(),
                            c.target,
                            other.as_str(),
                            other.as_str(),
                            o.target
                        ),
                    ));
                }
            }
        }
        if self.daemon.binaries.is_empty() {
            return Err(invalid(
                "daemon.binaries",
                "a release carries at least one daemon binary (x86_64, aarch64, armv7)",
            ));
        }
        if self.daemon.version < self.min_appliance_version {
            return Err(invalid(
                "daemon.version",
                format!(
                    "{} is older than min_appliance_version {}: the release's own daemon must be able to apply it",
                    self.daemon.version, self.min_appliance_version
                ),
            ));
        }
        self.validate_waves()
    }

    fn validate_component(&self, role: ImageRole, c: &Component) -> Result<(), ManifestError> {
        let k = kind(role);
        let base = format!("components.{}", role.as_str());
        check_shape(k, &c.target).map_err(|m| invalid(format!("{base}.target"), m))?;
        if c.images.is_empty() {
            return Err(invalid(
                format!("{base}.images"),
                "list at least the target's image",
            ));
        }
        let mut seen_versions = BTreeSet::new();
        let mut seen_refs: BTreeMap<&str, &Version> = BTreeMap::new();
        for (i, img) in c.images.iter().enumerate() {
            let at = format!("{base}.images[{i}]");
            check_shape(k, &img.version).map_err(|m| invalid(format!("{at}.version"), m))?;
            if !seen_versions.insert(&img.version) {
                return Err(invalid(
                    format!("{at}.version"),
                    format!("{} is listed twice: each version once", img.version),
                ));
            }
            if img.version > c.target {
                return Err(invalid(
                    format!("{at}.version"),
                    format!(
                        "{} is above the target {}: the target is the highest version a release lists",
                        img.version, c.target
                    ),
                ));
            }
            if let Some(v) = seen_refs.insert(img.reference.digest(), &img.version) {
                return Err(invalid(
                    format!("{at}.ref"),
                    format!(
                        "digest {} is already listed for {v}: one image, one version",
                        img.reference.digest()
                    ),
                ));
            }
            if img.arches.is_empty() {
                return Err(invalid(
                    format!("{at}.arches"),
                    "list the architectures the image exists for: x86_64, aarch64, armv7",
                ));
            }
            if img.arches.iter().collect::<BTreeSet<_>>().len() != img.arches.len() {
                return Err(invalid(
                    format!("{at}.arches"),
                    "an architecture is listed twice",
                ));
            }
            match (&img.can_be_upgraded_from, k) {
                (None, Kind::Nextcloud) => {
                    return Err(invalid(
                        format!("{at}.can_be_upgraded_from"),
                        "a Nextcloud image needs its table of series it upgrades from ($OC_VersionCanBeUpgradedFrom), each with the oldest release accepted, e.g. {\"30.0\": \"30.0.5.0\", \"31.0\": \"31.0.0.0\"}",
                    ));
                }
                (Some(table), _) => {
                    if table.is_empty() {
                        return Err(invalid(
                            format!("{at}.can_be_upgraded_from"),
                            "an empty table upgrades from nothing: list at least its own series",
                        ));
                    }
                    for (series, min) in table {
                        let field = format!("{at}.can_be_upgraded_from.\"{series}\"");
                        check_shape(k, min).map_err(|m| invalid(&field, m))?;
                        if min.series() != *series {
                            return Err(invalid(
                                field,
                                format!(
                                    "{min} is not in series {series}: the oldest accepted release must belong to it"
                                ),
                            ));
                        }
                        if min >= &img.version {
                            return Err(invalid(
                                field,
                                format!(
                                    "{min} is not older than the image ({}): a table lists what upgrades to it",
                                    img.version
                                ),
                            ));
                        }
                    }
                }
                (None, _) => {}
            }
            for (other, bounds) in &img.requires {
                let field = format!("{at}.requires.{}", other.as_str());
                if *other == role {
                    return Err(invalid(field, "a role cannot require itself"));
                }
                if bounds.min.is_none() && bounds.below.is_none() {
                    return Err(invalid(field, "give `min`, `below` or both"));
                }
                if let (Some(m), Some(b)) = (&bounds.min, &bounds.below)
                    && m >= b
                {
                    return Err(invalid(
                        field,
                        format!("min {m} is not below {b}: the range is empty"),
                    ));
                }
            }
        }
        if c.target_image().is_none() {
            return Err(invalid(
                format!("{base}.target"),
                format!(
                    "{} has no image in {base}.images: list the target's image",
                    c.target
                ),
            ));
        }
        Ok(())
    }

    fn validate_waves(&self) -> Result<(), ManifestError> {
        let mut last: Option<Wave> = None;
        for (i, w) in self.waves.iter().enumerate() {
            let at = format!("waves[{i}]");
            if w.up_to_seed > MAX_SEED {
                return Err(invalid(
                    format!("{at}.up_to_seed"),
                    format!(
                        "{} is past the last seed: seeds run from 0 to {MAX_SEED}",
                        w.up_to_seed
                    ),
                ));
            }
            if let Some(prev) = last {
                if w.up_to_seed <= prev.up_to_seed {
                    return Err(invalid(
                        format!("{at}.up_to_seed"),
                        format!(
                            "{} does not grow: each wave covers seeds above the previous one's ({})",
                            w.up_to_seed, prev.up_to_seed
                        ),
                    ));
                }
                if w.start_after_s < prev.start_after_s {
                    return Err(invalid(
                        format!("{at}.start_after_s"),
                        format!(
                            "{} starts before the previous wave ({} s): waves start in order",
                            w.start_after_s, prev.start_after_s
                        ),
                    ));
                }
            }
            last = Some(*w);
        }
        if let Some(w) = last
            && w.up_to_seed != MAX_SEED
        {
            return Err(invalid(
                format!("waves[{}].up_to_seed", self.waves.len() - 1),
                format!(
                    "the last wave must reach seed {MAX_SEED}, so that every box gets a start time"
                ),
            ));
        }
        Ok(())
    }
}
