//! The upgrade planner: from what a box runs, a release manifest and the
//! box's facts, the ordered hops that bring the box to the release, or the
//! reason it cannot go there.
//!
//! Pure: no IO, no clock. The rules (each documented in `docs/releases.md`):
//! - every hop goes strictly up and never past the release's target;
//!   a box newer than the release is refused (`downgrade`);
//! - Nextcloud climbs one major at a time and only to an image whose
//!   `can_be_upgraded_from` accepts the version it leaves (so through the
//!   required patch releases); of the shortest paths, the one through the
//!   newest releases;
//! - a PostgreSQL major change is a migration (dump, new cluster, restore,
//!   check), never an image swap, and needs twice the database on disk;
//! - roles move in a fixed order (Nextcloud, its database and cache,
//!   Collabora, Discourse, its database and cache) as far as the `requires`
//!   of the images allow; Collabora moves only once Nextcloud is done (its
//!   richdocuments wiring runs in Nextcloud);
//! - each hop says its downtime, its disk need and the snapshot it needs
//!   first; the plan is refused when the disk cannot hold it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::manifest::{self, Image, Kind, Manifest, PinnedImage, ReleaseId};
use crate::config::ImageRole;
use crate::model::{AppName, Arch, Version};

/// Free space left untouched by a plan: Docker, the journal and the
/// databases' own files need room while the hops run (Nextcloud AIO's borg
/// keeps 2 GB aside for the same reason).
pub const DISK_MARGIN_BYTES: u64 = 1 << 30;

/// Expected downtime of a hop, in seconds, when the manifest gives none.
pub mod downtime {
    /// Stop, swap the image, start, ready (Collabora takes the longest).
    pub const IMAGE_SWAP_S: u64 = 60;
    /// The entrypoint's rsync, `occ upgrade` and app updates, on a small
    /// instance; instances with large file caches take hours (nextcloud/server
    /// #6017), which is what the manifest's `downtime_s` is for.
    pub const NEXTCLOUD_S: u64 = 900;
    /// `db:migrate` and asset precompilation on boot, on a small board.
    pub const DISCOURSE_S: u64 = 900;
    /// Starting both clusters, roles, checks; plus the data at
    /// [`POSTGRES_BYTES_PER_S`], once to dump and once to restore.
    pub const POSTGRES_BASE_S: u64 = 120;
    /// Dump and restore speed assumed on a small board's storage.
    pub const POSTGRES_BYTES_PER_S: u64 = 16 << 20;
}

/// What the box runs: the version of each role present, read from the app
/// itself (see `releases::facts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    #[serde(default)]
    pub components: BTreeMap<ImageRole, InstalledComponent>,
    /// Roles present whose version could not be read, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<ImageRole, String>,
}

/// One role's installed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledComponent {
    /// The version the data is at (Nextcloud: the volume's `version.php`;
    /// PostgreSQL: the server's, or the data directory's major when the
    /// server does not run).
    pub version: Version,
    /// The version of the image's code when it differs from the data's
    /// (Nextcloud's `/usr/src/nextcloud/version.php`, PostgreSQL's binaries):
    /// a sign of an upgrade cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_version: Option<Version>,
}

/// What the planner must know about the box itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxFacts {
    pub arch: Arch,
    /// The running daemon's version.
    pub appliance_version: Version,
    /// Free space where Docker keeps images and volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Each app's database size on disk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub database_bytes: BTreeMap<AppName, u64>,
    /// Digests (`sha256:…`) of the images already on the box: no pull needed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images_present: BTreeSet<String>,
}

/// How a hop is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    /// Stop, swap the image, start; whatever migration the software does
    /// on start (Redis' data files) is its own.
    ImageSwap,
    /// Nextcloud and its cron sidecar get the new image; the entrypoint
    /// copies the code over the volume and runs `occ upgrade`.
    NextcloudUpgrade,
    /// A PostgreSQL major change: dump the old cluster, create a new one
    /// in a new volume with the new image, restore, check; the old volume
    /// is kept until the whole upgrade succeeds.
    PostgresMigration,
    /// Discourse's web-only image runs `db:migrate` on every boot.
    DiscourseMigrateOnBoot,
}

impl HopKind {
    pub fn describe(self) -> &'static str {
        match self {
            HopKind::ImageSwap => "image swap",
            HopKind::NextcloudUpgrade => "Nextcloud upgrade (new image, then occ upgrade)",
            HopKind::PostgresMigration => {
                "PostgreSQL major migration (dump, new cluster, restore, check)"
            }
            HopKind::DiscourseMigrateOnBoot => "Discourse upgrade (migrates on boot)",
        }
    }
}

/// The check a hop must pass before the next one starts; the hop's `to`
/// is the version each one expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// `status.php`: installed, not in maintenance, no database upgrade
    /// pending, and the version is the hop's `to`.
    NextcloudStatus,
    /// The new cluster accepts connections, runs the hop's major, and holds
    /// the same tables and row counts as the old one did when dumped.
    PostgresRestored,
    /// `/srv/status` answers and the code is the hop's `to`.
    DiscourseStatus,
    /// The container is ready by the reconcile's rule (its health check,
    /// Collabora's discovery) and runs the hop's `to`.
    Ready,
}

impl Gate {
    pub fn describe(self) -> &'static str {
        match self {
            Gate::NextcloudStatus => {
                "status.php shows the new version, installed, no maintenance, no pending database upgrade"
            }
            Gate::PostgresRestored => {
                "the new cluster answers with the same tables and row counts as the dump"
            }
            Gate::DiscourseStatus => "/srv/status answers and the new version runs",
            Gate::Ready => "the container is ready and runs the new version",
        }
    }
}

/// Data a pre-hop snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Data {
    /// The app's database (a dump).
    Database,
    /// The app's volume of this purpose (`<prefix>-<app>-<purpose>`).
    Volume(String),
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Database => f.write_str("database"),
            Data::Volume(p) => write!(f, "{p} volume"),
        }
    }
}

/// A snapshot to take before a hop, restored as one unit if it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub app: AppName,
    pub data: Vec<Data>,
}

/// The disk a hop needs, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskNeed {
    /// The image to pull: 0 when present; `None` when not present and the
    /// manifest gives no size.
    pub pull_bytes: Option<u64>,
    /// Needed during the hop only (a database dump).
    pub scratch_bytes: u64,
    /// Kept until the whole upgrade succeeds (a new cluster beside the old).
    pub kept_bytes: u64,
    /// This hop's own need: the pull, the scratch and the kept data.
    pub need_bytes: u64,
    /// The most the upgrade holds on disk during this hop: this hop's needs
    /// plus the pulls and kept data of the hops before it.
    pub peak_bytes: u64,
}

/// Where a downtime figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// The manifest's `downtime_s`.
    Manifest,
    /// The planner's default for the kind (see [`downtime`]).
    Default,
}

/// One step of the path: one role from one version to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub app: AppName,
    pub component: ImageRole,
    pub from: Version,
    pub to: Version,
    /// The image of `to`, by digest.
    pub image: PinnedImage,
    pub kind: HopKind,
    /// Expected downtime of the app, in seconds.
    pub downtime_s: u64,
    pub downtime_estimate: Estimate,
    pub disk: DiskNeed,
    /// The snapshot to take first; `None` when the hop changes no data.
    pub snapshot: Option<Snapshot>,
    pub gate: Gate,
}

/// The path to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradePlan {
    pub release: ReleaseId,
    pub hops: Vec<Hop>,
    /// Roles already at the release's version.
    pub unchanged: BTreeMap<ImageRole, Version>,
    /// The sum of the hops' downtimes, in seconds.
    pub downtime_s: u64,
    /// The most the upgrade holds on disk at once.
    pub peak_disk_bytes: u64,
    pub free_bytes: Option<u64>,
    /// What the admin should know but does not stop the plan.
    pub warnings: Vec<String>,
}

/// Why a plan cannot be made, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The daemon is older than the release's `min_appliance_version`.
    ApplianceTooOld,
    /// A role's version could not be read.
    UnknownVersion,
    /// The box runs a role the release does not carry.
    MissingComponent,
    /// A role's data and image disagree: an upgrade was cut short.
    UnfinishedUpgrade,
    /// The box runs a newer version than the release's.
    Downgrade,
    /// A hop the path needs has no image in the manifest (for this box's
    /// architecture).
    MissingImage,
    /// Images exist, but none accepts the version the box would leave.
    NoUpgradePath,
    /// The roles' `requires` allow no order of the hops.
    CoupledOrder,
    /// The disk cannot hold a hop.
    NotEnoughDisk,
    /// A hop needs disk and the free space or database size is not known.
    DiskUnknown,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::ApplianceTooOld => "appliance_too_old",
            RefusalCode::UnknownVersion => "unknown_version",
            RefusalCode::MissingComponent => "missing_component",
            RefusalCode::UnfinishedUpgrade => "unfinished_upgrade",
            RefusalCode::Downgrade => "downgrade",
            RefusalCode::MissingImage => "missing_image",
            RefusalCode::NoUpgradePath => "no_upgrade_path",
            RefusalCode::CoupledOrder => "coupled_order",
            RefusalCode::NotEnoughDisk => "not_enough_disk",
            RefusalCode::DiskUnknown => "disk_unknown",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the box cannot go to the release: which role, which hop, and the
/// reason in words an admin understands (with what to do), plus its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ImageRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppName>,
    /// The hop refused: from and to, when one is at stake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Version>,
    pub message: String,
}

impl Refusal {
    fn new(code: RefusalCode, role: Option<ImageRole>, message: String) -> Self {
        Refusal {
            code,
            component: role,
            app: role.map(manifest::app),
            from: None,
            to: None,
            message,
        }
    }

    fn hop(mut self, from: &Version, to: &Version) -> Self {
        self.from = Some(from.clone());
        self.to = Some(to.clone());
        self
    }
}

/// A human name for a role in messages.
pub fn role_name(role: ImageRole) -> &'static str {
    match role {
        ImageRole::Nextcloud => "Nextcloud",
        ImageRole::NextcloudDb => "Nextcloud's PostgreSQL",
        ImageRole::NextcloudRedis => "Nextcloud's Redis",
        ImageRole::Collabora => "Collabora",
        ImageRole::Discourse => "Discourse",
        ImageRole::DiscourseDb => "Discourse's PostgreSQL",
        ImageRole::DiscourseRedis => "Discourse's Redis",
    }
}

/// Roles that move only once another has reached its target: Collabora's
/// wiring (`richdocuments`) runs in Nextcloud, so Nextcloud changes first.
pub const AFTER: &[(ImageRole, ImageRole)] = &[(ImageRole::Collabora, ImageRole::Nextcloud)];

/// Computes the path from `installed` to `manifest` on a box with `facts`.
pub fn plan(
    installed: &Installed,
    manifest: &Manifest,
    facts: &BoxFacts,
) -> Result<UpgradePlan, Refusal> {
    let release = &manifest.release;
    if facts.appliance_version < manifest.min_appliance_version {
        return Err(Refusal::new(
            RefusalCode::ApplianceTooOld,
            None,
            format!(
                "release {release} needs appliance {} or newer, and this box runs {}: update the appliance first, then plan again",
                manifest.min_appliance_version, facts.appliance_version
            ),
        ));
    }
    if let Some((role, why)) = installed.unknown.iter().next() {
        return Err(Refusal::new(
            RefusalCode::UnknownVersion,
            Some(*role),
            format!(
                "cannot tell which version of {} this box runs ({why}): start it (`commonscloud reconcile`) and plan again",
                role_name(*role)
            ),
        ));
    }
    for (role, ic) in &installed.components {
        if !manifest.components.contains_key(role) {
            return Err(Refusal::new(
                RefusalCode::MissingComponent,
                Some(*role),
                format!(
                    "release {release} carries no image for {} ({}), which this box runs at {}: use a release that carries it, or disable {}",
                    role_name(*role),
                    role.as_str(),
                    ic.version,
                    manifest::app(*role)
                ),
            ));
        }
        if let Some(image) = &ic.image_version
            && unfinished(manifest::kind(*role), &ic.version, image)
        {
            return Err(Refusal::new(
                RefusalCode::UnfinishedUpgrade,
                Some(*role),
                format!(
                    "{}'s data is at {} but its image runs {}: an upgrade was cut short. Finish it or roll it back before planning another",
                    role_name(*role),
                    ic.version,
                    image
                ),
            )
            .hop(&ic.version, image));
        }
    }
    for (role, ic) in &installed.components {
        let target = &manifest.components[role].target;
        if ic.version > *target {
            return Err(Refusal::new(
                RefusalCode::Downgrade,
                Some(*role),
                format!(
                    "this box runs {} {}, newer than release {release}'s {target}: downgrades are refused (the data of a newer version cannot go back). Use a release at least as new",
                    role_name(*role),
                    ic.version
                ),
            )
            .hop(&ic.version, target));
        }
    }

    // Each role's own path.
    let mut ladders: Vec<Ladder<'_>> = Vec::new();
    let mut unchanged = BTreeMap::new();
    for (role, ic) in &installed.components {
        let c = &manifest.components[role];
        if ic.version == c.target {
            unchanged.insert(*role, ic.version.clone());
            continue;
        }
        let steps = path(*role, &ic.version, c, facts.arch, release)?;
        ladders.push(Ladder {
            role: *role,
            from: ic.version.clone(),
            steps,
        });
    }

    // Their order.
    let order = interleave(&ladders, installed, manifest)?;

    // Each hop's kind, downtime, disk and snapshot.
    let mut hops = Vec::new();
    let mut warnings = Vec::new();
    let mut held = 0u64; // pulls and kept data of the hops so far
    let mut pulled: BTreeSet<&str> = BTreeSet::new();
    let mut position = vec![0usize; ladders.len()];
    for li in order {
        let l = &ladders[li];
        let image = l.steps[position[li]];
        let from = if position[li] == 0 {
            l.from.clone()
        } else {
            l.steps[position[li] - 1].version.clone()
        };
        position[li] += 1;
        let role = l.role;
        let app = manifest::app(role);
        let k = hop_kind(role, &from, &image.version);
        let digest = image.reference.digest();
        let pull_bytes = if present(&facts.images_present, digest) || pulled.contains(digest) {
            Some(0)
        } else {
            if image.bytes.is_none() {
                warnings.push(format!(
                    "the manifest gives no size for {}: the disk check counts its pull as 0",
                    image.reference
                ));
            }
            image.bytes
        };
        pulled.insert(digest);
        let (scratch, kept) = if k == HopKind::PostgresMigration {
            let db = facts.database_bytes.get(&app).copied().ok_or_else(|| {
                Refusal::new(
                    RefusalCode::DiskUnknown,
                    Some(role),
                    format!(
                        "moving {} from {from} to {} needs twice its database on disk, and its size is not known: start {app}'s database and plan again",
                        role_name(role),
                        image.version
                    ),
                )
                .hop(&from, &image.version)
            })?;
            (db, db)
        } else {
            (0, 0)
        };
        let (downtime_s, downtime_estimate) = estimate(k, image, scratch);
        let disk = DiskNeed {
            pull_bytes,
            scratch_bytes: scratch,
            kept_bytes: kept,
            need_bytes: pull_bytes.unwrap_or(0) + scratch + kept,
            peak_bytes: held + pull_bytes.unwrap_or(0) + scratch + kept,
        };
        held += pull_bytes.unwrap_or(0) + kept;
        hops.push(Hop {
            app,
            component: role,
            from,
            to: image.version.clone(),
            image: image.reference.clone(),
            kind: k,
            downtime_s,
            downtime_estimate,
            disk,
            snapshot: snapshot(role, k),
            gate: gate(k),
        });
    }

    // The disk must hold every hop, with the margin.
    let needs_disk = hops
        .iter()
        .find(|h| h.disk.need_bytes > 0 || h.disk.pull_bytes.is_none());
    if let Some(h) = needs_disk {
        let Some(free) = facts.free_bytes else {
            return Err(Refusal::new(
                RefusalCode::DiskUnknown,
                Some(h.component),
                format!(
                    "moving {} from {} to {} needs disk space, and the free space on Docker's disk is not known: check that Docker runs and plan again",
                    role_name(h.component),
                    h.from,
                    h.to
                ),
            )
            .hop(&h.from, &h.to));
        };
        for h in &hops {
            if h.disk.peak_bytes.saturating_add(DISK_MARGIN_BYTES) > free {
                return Err(Refusal::new(
                    RefusalCode::NotEnoughDisk,
                    Some(h.component),
                    format!(
                        "moving {} from {} to {} needs {} on disk by then ({} kept free), and Docker's disk has {} free: free {} (e.g. `docker image prune`) or add storage, then plan again",
                        role_name(h.component),
                        h.from,
                        h.to,
                        bytes(h.disk.peak_bytes),
                        bytes(DISK_MARGIN_BYTES),
                        bytes(free),
                        bytes(h.disk.peak_bytes + DISK_MARGIN_BYTES - free)
                    ),
                )
                .hop(&h.from, &h.to));
            }
        }
    }
    let peak_disk_bytes = hops.iter().map(|h| h.disk.peak_bytes).max().unwrap_or(0);
    warnings.dedup();
    Ok(UpgradePlan {
        release: release.clone(),
        downtime_s: hops.iter().map(|h| h.downtime_s).sum(),
        hops,
        unchanged,
        peak_disk_bytes,
        free_bytes: facts.free_bytes,
        warnings,
    })
}

/// Whether data and image disagree: Nextcloud's `version.php` on the volume
/// and in the image; PostgreSQL's data directory and binaries (by major:
/// the data directory records only that).
fn unfinished(k: Kind, data: &Version, image: &Version) -> bool {
    match k {
        Kind::Nextcloud => data != image,
        Kind::Postgres => data.major() != image.major(),
        _ => false,
    }
}

fn present(images: &BTreeSet<String>, digest: &str) -> bool {
    images
        .iter()
        .any(|i| i == digest || i.rsplit_once('@').is_some_and(|(_, d)| d == digest))
}

/// The kind of a hop between two versions of a role.
pub fn hop_kind(role: ImageRole, from: &Version, to: &Version) -> HopKind {
    match manifest::kind(role) {
        Kind::Nextcloud => HopKind::NextcloudUpgrade,
        Kind::Postgres if from.major() != to.major() => HopKind::PostgresMigration,
        Kind::Discourse => HopKind::DiscourseMigrateOnBoot,
        Kind::Postgres | Kind::Redis | Kind::Collabora => HopKind::ImageSwap,
    }
}

fn estimate(k: HopKind, image: &Image, db_bytes: u64) -> (u64, Estimate) {
    let (base, source) = match image.downtime_s {
        Some(s) => (s, Estimate::Manifest),
        None => (
            match k {
                HopKind::ImageSwap => downtime::IMAGE_SWAP_S,
                HopKind::NextcloudUpgrade => downtime::NEXTCLOUD_S,
                HopKind::DiscourseMigrateOnBoot => downtime::DISCOURSE_S,
                HopKind::PostgresMigration => downtime::POSTGRES_BASE_S,
            },
            Estimate::Default,
        ),
    };
    let data = if k == HopKind::PostgresMigration {
        (2 * db_bytes).div_ceil(downtime::POSTGRES_BYTES_PER_S)
    } else {
        0
    };
    (base + data, source)
}

/// What a hop must snapshot first: Nextcloud's html volume (code,
/// `version.php`, config) and database together, since after the
/// entrypoint's copy the old image refuses the volume; a database whose
/// migrations or cluster change; Redis' data files, which an older Redis
/// may not read. Collabora keeps no data.
fn snapshot(role: ImageRole, k: HopKind) -> Option<Snapshot> {
    let app = manifest::app(role);
    let data = match (manifest::kind(role), k) {
        (Kind::Nextcloud, _) => vec![Data::Database, Data::Volume("html".into())],
        (Kind::Postgres, HopKind::PostgresMigration) | (Kind::Discourse, _) => {
            vec![Data::Database]
        }
        (Kind::Redis, _) => vec![Data::Volume("redis".into())],
        (Kind::Postgres, _) | (Kind::Collabora, _) => return None,
    };
    Some(Snapshot { app, data })
}

fn gate(k: HopKind) -> Gate {
    match k {
        HopKind::NextcloudUpgrade => Gate::NextcloudStatus,
        HopKind::PostgresMigration => Gate::PostgresRestored,
        HopKind::DiscourseMigrateOnBoot => Gate::DiscourseStatus,
        HopKind::ImageSwap => Gate::Ready,
    }
}

/// One role's path: the images it passes through, in order.
struct Ladder<'m> {
    role: ImageRole,
    from: Version,
    steps: Vec<&'m Image>,
}

/// Whether `to` may follow `from` directly.
fn edge(k: Kind, from: &Version, to: &Image) -> bool {
    to.version > *from
        && (k != Kind::Nextcloud || to.version.major() <= from.major() + 1)
        && to.accepts_from(from).unwrap_or(k != Kind::Nextcloud)
}

/// The shortest path from `from` to the role's target through images for
/// `arch`; of the shortest, the one through the newest versions.
fn path<'m>(
    role: ImageRole,
    from: &Version,
    c: &'m manifest::Component,
    arch: Arch,
    release: &ReleaseId,
) -> Result<Vec<&'m Image>, Refusal> {
    let k = manifest::kind(role);
    let name = role_name(role);
    let target = &c.target;
    if !c.target_image().is_some_and(|i| i.runs_on(arch)) {
        return Err(Refusal::new(
            RefusalCode::MissingImage,
            Some(role),
            format!(
                "release {release} has no {name} {target} image for {arch}: this box cannot run it. Use a release built for {arch}"
            ),
        )
        .hop(from, target));
    }
    let mut nodes: Vec<&Image> = c
        .images
        .iter()
        .filter(|i| i.runs_on(arch) && i.version > *from && i.version <= *target)
        .collect();
    nodes.sort_by(|a, b| b.version.cmp(&a.version)); // newest first
    // Hops to the target from each node, found backwards from the target.
    let mut dist: Vec<Option<usize>> = nodes
        .iter()
        .map(|n| (n.version == *target).then_some(0))
        .collect();
    for d in 0..nodes.len() {
        let frontier: Vec<usize> = (0..nodes.len()).filter(|&j| dist[j] == Some(d)).collect();
        for i in 0..nodes.len() {
            if dist[i].is_none()
                && frontier
                    .iter()
                    .any(|&j| edge(k, &nodes[i].version, nodes[j]))
            {
                dist[i] = Some(d + 1);
            }
        }
    }
    let first = (0..nodes.len())
        .filter(|&j| edge(k, from, nodes[j]))
        .filter_map(|j| dist[j].map(|d| (d, j)))
        .min_by_key(|&(d, j)| (d, j)); // fewest hops, then newest
    let Some((mut d, mut j)) = first else {
        return Err(no_path(role, from, c, arch, &nodes, release));
    };
    let mut steps = vec![nodes[j]];
    while d > 0 {
        // A node at distance d has a successor at d - 1, by construction.
        let Some(next) = (0..nodes.len())
            .find(|&n| dist[n] == Some(d - 1) && edge(k, &nodes[j].version, nodes[n]))
        else {
            return Err(no_path(role, from, c, arch, &nodes, release));
        };
        steps.push(nodes[next]);
        j = next;
        d -= 1;
    }
    Ok(steps)
}

/// Why the target cannot be reached from `from`: the furthest version the
/// box can reach, and what blocks the next hop from there.
fn no_path(
    role: ImageRole,
    from: &Version,
    c: &manifest::Component,
    arch: Arch,
    nodes: &[&Image],
    release: &ReleaseId,
) -> Refusal {
    let k = manifest::kind(role);
    let name = role_name(role);
    let target = &c.target;
    // Everything reachable from `from`, and the newest of it.
    let mut reach: Vec<&Version> = vec![from];
    let mut grew = true;
    while grew {
        grew = false;
        for n in nodes {
            if !reach.contains(&&n.version) && reach.iter().any(|r| edge(k, r, n)) {
                reach.push(&n.version);
                grew = true;
            }
        }
    }
    let best = reach.iter().copied().max().unwrap_or(from);
    let via = if best == from {
        String::new()
    } else {
        format!(" (it can reach {best})")
    };
    let refusal =
        |code, msg: String, to: &Version| Refusal::new(code, Some(role), msg).hop(best, to);
    if k == Kind::Nextcloud && target.major() > best.major() + 1 {
        let m = best.major() + 1;
        let of_major: Vec<&Image> = c.images.iter().filter(|i| i.version.major() == m).collect();
        if !of_major.iter().any(|i| i.runs_on(arch)) {
            let for_arch = if of_major.is_empty() {
                String::new()
            } else {
                format!(" for {arch}")
            };
            return refusal(
                RefusalCode::MissingImage,
                format!(
                    "{name} climbs one major version at a time, and release {release} has no {name} {m} image{for_arch} to go from {from}{via} towards {target}. Use a release that carries the {m} step"
                ),
                target,
            );
        }
    }
    // The images above `best` that refuse it, and what they accept.
    let above: Vec<&Image> = c
        .images
        .iter()
        .filter(|i| {
            i.version > *best && (k != Kind::Nextcloud || i.version.major() <= best.major() + 1)
        })
        .collect();
    let series = best.series();
    let minimum = above
        .iter()
        .filter_map(|i| {
            i.can_be_upgraded_from
                .as_ref()
                .and_then(|t| t.get(&series))
                .map(|min| (i, min))
        })
        .find(|(_, min)| *best < **min);
    if let Some((i, min)) = minimum {
        return refusal(
            RefusalCode::MissingImage,
            format!(
                "{name} {} upgrades from series {series} only at {min} or later; this box runs {from}{via}, and release {release} carries no {name} image from {min} up to it for {arch}. Use a release that carries that patch release",
                i.version
            ),
            &i.version,
        );
    }
    if let Some(i) = above.iter().find(|i| !i.runs_on(arch)) {
        return refusal(
            RefusalCode::MissingImage,
            format!(
                "the next step for {name} from {from}{via} is {}, and release {release} has no image of it for {arch}",
                i.version
            ),
            &i.version,
        );
    }
    refusal(
        RefusalCode::NoUpgradePath,
        format!(
            "no {name} image in release {release} upgrades from {best} (their can_be_upgraded_from tables do not list series {series}), so this box cannot go from {from} to {target}"
        ),
        target,
    )
}

/// The order of the hops of every role (indexes into `ladders`, one per
/// hop): each role in priority order as far as the `requires` of the
/// versions running after each hop allow, searched depth first with the
/// dead states remembered.
fn interleave(
    ladders: &[Ladder<'_>],
    installed: &Installed,
    manifest: &Manifest,
) -> Result<Vec<usize>, Refusal> {
    let start = vec![0usize; ladders.len()];
    let mut dead: HashSet<Vec<usize>> = HashSet::new();
    let mut order = Vec::new();
    let mut deepest: (usize, Vec<usize>) = (0, start.clone());
    if search(
        ladders,
        installed,
        manifest,
        &start,
        &mut dead,
        &mut order,
        &mut deepest,
    ) {
        return Ok(order);
    }
    // Explain the state where the search got furthest.
    let state = deepest.1;
    let mut reasons = Vec::new();
    for (li, l) in ladders.iter().enumerate() {
        if state[li] < l.steps.len()
            && let Err(why) = may_move(ladders, installed, manifest, &state, li)
        {
            reasons.push(why);
        }
    }
    let mut r = Refusal::new(
        RefusalCode::CoupledOrder,
        None,
        format!(
            "no order of the hops keeps every app's requirements met: {}. Use a release whose images step the coupled apps together",
            reasons.join("; ")
        ),
    );
    if let Some((li, l)) = ladders
        .iter()
        .enumerate()
        .find(|(li, l)| state[*li] < l.steps.len())
    {
        r.component = Some(l.role);
        r.app = Some(manifest::app(l.role));
        r = r.hop(version_at(l, state[li]), &l.steps[state[li]].version);
    }
    Err(r)
}

fn version_at<'a>(l: &'a Ladder<'_>, pos: usize) -> &'a Version {
    if pos == 0 {
        &l.from
    } else {
        &l.steps[pos - 1].version
    }
}

fn search(
    ladders: &[Ladder<'_>],
    installed: &Installed,
    manifest: &Manifest,
    state: &[usize],
    dead: &mut HashSet<Vec<usize>>,
    order: &mut Vec<usize>,
    deepest: &mut (usize, Vec<usize>),
) -> bool {
    let done: usize = state.iter().sum();
    if done > deepest.0 {
        *deepest = (done, state.to_vec());
    }
    if ladders.iter().zip(state).all(|(l, &p)| p == l.steps.len()) {
        return true;
    }
    for li in 0..ladders.len() {
        if state[li] == ladders[li].steps.len()
            || may_move(ladders, installed, manifest, state, li).is_err()
        {
            continue;
        }
        let mut next = state.to_vec();
        next[li] += 1;
        if dead.contains(&next) {
            continue;
        }
        order.push(li);
        if search(ladders, installed, manifest, &next, dead, order, deepest) {
            return true;
        }
        order.pop();
        dead.insert(next);
    }
    false
}

/// Whether role `li` may take its next hop from `state`: Collabora waits for
/// Nextcloud ([`AFTER`]), and after the hop every `requires` between the
/// moved role and the others holds (the moved image's own, and those of the
/// versions the others run, when the manifest lists them).
fn may_move(
    ladders: &[Ladder<'_>],
    installed: &Installed,
    manifest: &Manifest,
    state: &[usize],
    li: usize,
) -> Result<(), String> {
    let l = &ladders[li];
    let role = l.role;
    let moved = l.steps[state[li]];
    for (later, first) in AFTER {
        if *later == role
            && let Some((fi, f)) = ladders.iter().enumerate().find(|(_, f)| f.role == *first)
            && state[fi] < f.steps.len()
        {
            return Err(format!(
                "{} moves only after {} reached {}",
                role_name(role),
                role_name(*first),
                manifest.components[first].target
            ));
        }
    }
    // What each other role runs now.
    let running = |other: ImageRole| -> Option<Version> {
        match ladders.iter().enumerate().find(|(_, o)| o.role == other) {
            Some((oi, o)) => Some(version_at(o, state[oi]).clone()),
            None => installed.components.get(&other).map(|c| c.version.clone()),
        }
    };
    for (other, bounds) in &moved.requires {
        if let Some(v) = running(*other)
            && !bounds.contains(&v)
        {
            return Err(format!(
                "{} {} needs {} {bounds}, which runs {v} until then",
                role_name(role),
                moved.version,
                role_name(*other)
            ));
        }
    }
    for other in installed.components.keys().filter(|o| **o != role) {
        let Some(v) = running(*other) else { continue };
        let Some(entry) = manifest.components.get(other).and_then(|c| c.image(&v)) else {
            continue;
        };
        if let Some(bounds) = entry.requires.get(&role)
            && !bounds.contains(&moved.version)
        {
            return Err(format!(
                "{} {v} needs {} {bounds}, not {}",
                role_name(*other),
                role_name(role),
                moved.version
            ));
        }
    }
    Ok(())
}

/// Bytes in binary units, for people: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds for people: `45 s`, `15 min`, `1 h 20 min`.
pub fn duration(s: u64) -> String {
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s.div_ceil(60))
    } else {
        let m = s.div_ceil(60);
        match m % 60 {
            0 => format!("{} h", m / 60),
            r => format!("{} h {r} min", m / 60),
        }
    }
}

impl UpgradePlan {
    /// The plan for people, one hop after another, then the totals.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.hops.is_empty() {
            let _ = writeln!(
                out,
                "nothing to do: this box already runs release {}",
                self.release
            );
        }
        for (i, h) in self.hops.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>2}. {} {} → {}: {}",
                i + 1,
                role_name(h.component),
                h.from,
                h.to,
                h.kind.describe()
            );
            let pull = match h.disk.pull_bytes {
                Some(0) => "image present".to_owned(),
                Some(b) => format!("pull {}", bytes(b)),
                None => "pull of unknown size".to_owned(),
            };
            let mut disk = format!("disk {} ({pull}", bytes(h.disk.need_bytes));
            if h.disk.scratch_bytes + h.disk.kept_bytes > 0 {
                let _ = write!(
                    disk,
                    ", dump {}, new cluster {}",
                    bytes(h.disk.scratch_bytes),
                    bytes(h.disk.kept_bytes)
                );
            }
            disk.push(')');
            let est = match h.downtime_estimate {
                Estimate::Manifest => "the release's estimate",
                Estimate::Default => "default",
            };
            let _ = writeln!(
                out,
                "    {} down about {} ({est}), {disk}",
                h.app,
                duration(h.downtime_s)
            );
            let _ = writeln!(out, "    image {}", h.image);
            match &h.snapshot {
                Some(s) => {
                    let data: Vec<String> = s.data.iter().map(ToString::to_string).collect();
                    let together = if data.len() > 1 {
                        " (restored as one unit on failure)"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "    before: snapshot of {}: {}{together}",
                        s.app,
                        data.join(" + ")
                    );
                }
                None => {
                    let _ = writeln!(out, "    before: no snapshot (no data changes)");
                }
            }
            let _ = writeln!(out, "    gate: {}", h.gate.describe());
        }
        if !self.unchanged.is_empty() {
            let same: Vec<String> = self
                .unchanged
                .iter()
                .map(|(role, v)| format!("{} {v}", role_name(*role)))
                .collect();
            let _ = writeln!(out, "unchanged: {}", same.join(", "));
        }
        if !self.hops.is_empty() {
            let free = match self.free_bytes {
                Some(f) => format!(
                    ", of {} free ({} kept spare)",
                    bytes(f),
                    bytes(DISK_MARGIN_BYTES)
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{} hops to release {}: about {} of downtime in all; at most {} more on disk at once{free}",
                self.hops.len(),
                self.release,
                duration(self.downtime_s),
                bytes(self.peak_disk_bytes)
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "! {w}");
        }
        out
    }
}
