//! Tests of the manifest and the planner: cases, properties, and the
//! example of `docs/releases.md`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::manifest::{
    self, Binary, Bounds, Component, Daemon, Image, Manifest, ManifestError, Notes, Wave,
};
use super::plan::{
    self, BoxFacts, DISK_MARGIN_BYTES, Data, Estimate, Gate, HopKind, Installed,
    InstalledComponent, RefusalCode, UpgradePlan, downtime,
};
use crate::config::ImageRole;
use crate::model::{AppName, Arch, Series, Version};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn pinned(n: u64) -> manifest::PinnedImage {
    format!("example.org/app@sha256:{n:064x}").parse().unwrap()
}

fn img(version: &str, n: u64) -> Image {
    Image {
        version: v(version),
        reference: pinned(n),
        arches: Arch::ALL.to_vec(),
        bytes: Some(100 * MIB),
        can_be_upgraded_from: None,
        requires: BTreeMap::new(),
        downtime_s: None,
    }
}

/// A Nextcloud image accepting each `(series, oldest)`.
fn nc(version: &str, n: u64, from: &[(&str, &str)]) -> Image {
    Image {
        can_be_upgraded_from: Some(
            from.iter()
                .map(|(s, m)| (s.parse::<Series>().unwrap(), v(m)))
                .collect(),
        ),
        ..img(version, n)
    }
}

fn at_least(version: &str) -> Bounds {
    Bounds {
        min: Some(v(version)),
        below: None,
    }
}

fn below(version: &str) -> Bounds {
    Bounds {
        min: None,
        below: Some(v(version)),
    }
}

fn component(target: &str, images: Vec<Image>) -> Component {
    Component {
        target: v(target),
        images,
    }
}

fn notes() -> Notes {
    Notes {
        en: "Security fixes.".into(),
        ca: "Correccions de seguretat.".into(),
        es: "Correcciones de seguridad.".into(),
    }
}

fn manifest_of(components: Vec<(ImageRole, Component)>) -> Manifest {
    Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        release: "2026.09.1".parse().unwrap(),
        channel: "stable".parse().unwrap(),
        published: "2026-09-01T12:00:00Z".parse().unwrap(),
        urgent: false,
        min_appliance_version: v("0.1.0"),
        notes: notes(),
        components: components.into_iter().collect(),
        daemon: Daemon {
            version: v("0.2.0"),
            binaries: BTreeMap::from([(
                Arch::X86_64,
                Binary {
                    target: "commonscloud-0.2.0-x86_64".parse().unwrap(),
                    sha256: "ab".repeat(32).parse().unwrap(),
                    bytes: 12 << 20,
                },
            )]),
        },
        waves: Vec::new(),
    }
}

fn installed(roles: &[(ImageRole, &str)]) -> Installed {
    Installed {
        components: roles
            .iter()
            .map(|(r, ver)| {
                (
                    *r,
                    InstalledComponent {
                        version: v(ver),
                        image_version: None,
                    },
                )
            })
            .collect(),
        unknown: BTreeMap::new(),
    }
}

fn host() -> BoxFacts {
    BoxFacts {
        arch: Arch::X86_64,
        appliance_version: v("0.1.0"),
        free_bytes: Some(1 << 40),
        database_bytes: BTreeMap::from([(AppName::Nextcloud, 2 * GIB), (AppName::Discourse, GIB)]),
        images_present: BTreeSet::new(),
    }
}

/// Nextcloud 30 → 32 with 31 needing at least 30.0.14.
fn nextcloud_ladder() -> Component {
    component(
        "32.0.1.2",
        vec![
            nc(
                "30.0.17.2",
                1,
                &[("29.0", "29.0.0.0"), ("30.0", "30.0.0.0")],
            ),
            nc(
                "31.0.9.1",
                2,
                &[("30.0", "30.0.14.0"), ("31.0", "31.0.0.0")],
            ),
            nc("32.0.1.2", 3, &[("31.0", "31.0.0.0"), ("32.0", "32.0.0.0")]),
        ],
    )
}

fn path_of(p: &UpgradePlan) -> Vec<(ImageRole, String, String)> {
    p.hops
        .iter()
        .map(|h| (h.component, h.from.to_string(), h.to.to_string()))
        .collect()
}

// ---- the manifest ---------------------------------------------------------

fn json_of(m: &Manifest) -> serde_json::Value {
    serde_json::to_value(m).unwrap()
}

/// The error of a manifest edited as JSON.
fn error_of(edit: impl FnOnce(&mut serde_json::Value)) -> ManifestError {
    let mut j = json_of(&manifest_of(vec![(
        ImageRole::Nextcloud,
        nextcloud_ladder(),
    )]));
    edit(&mut j);
    Manifest::from_json(&j.to_string()).unwrap_err()
}

#[test]
fn a_manifest_round_trips_through_json() {
    let m = manifest_of(vec![
        (ImageRole::Nextcloud, nextcloud_ladder()),
        (
            ImageRole::NextcloudDb,
            component("17.6", vec![img("17.6", 9)]),
        ),
    ]);
    let text = serde_json::to_string_pretty(&m).unwrap();
    assert_eq!(Manifest::from_json(&text).unwrap(), m);
}

#[test]
fn manifest_errors_name_the_field_and_what_is_allowed() {
    let cases: Vec<(ManifestError, &str, &str)> = vec![
        (
            error_of(|j| j["components"]["nextcloud"]["images"][0]["ref"] = "nextcloud:30".into()),
            "components.nextcloud.images[0].ref",
            "64 lowercase hex",
        ),
        (
            error_of(|j| {
                j["notes"].as_object_mut().unwrap().remove("ca");
            }),
            "notes",
            "en, ca and es",
        ),
        (
            error_of(|j| j["notes"]["fr"] = "Corrections".into()),
            "notes",
            "unknown language `fr`",
        ),
        (
            error_of(|j| j["colour"] = "red".into()),
            "colour",
            "unknown field `colour`",
        ),
        (
            error_of(|j| {
                j["components"]["nextcloud"]["images"][1]["arches"] = serde_json::json!(["arm64"])
            }),
            "components.nextcloud.images[1].arches[0]",
            "x86_64, aarch64, armv7",
        ),
        (
            error_of(|j| {
                j["components"]["nextcloud"]["images"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("can_be_upgraded_from");
            }),
            "components.nextcloud.images[1].can_be_upgraded_from",
            "$OC_VersionCanBeUpgradedFrom",
        ),
        (
            error_of(|j| j["components"]["nextcloud"]["images"][1]["version"] = "31.0.9".into()),
            "components.nextcloud.images[1].version",
            "4 numbers",
        ),
        (
            error_of(|j| j["components"]["nextcloud"]["target"] = "32.0.1.3".into()),
            "components.nextcloud.target",
            "has no image in components.nextcloud.images",
        ),
        (
            error_of(|j| j["components"]["nextcloud"]["target"] = "31.0.9.0".into()),
            "components.nextcloud.images[1].version",
            "above the target",
        ),
        (
            error_of(|j| {
                j["components"]["nextcloud"]["images"][1]["can_be_upgraded_from"]["30.0"] =
                    "29.0.5.0".into();
            }),
            "components.nextcloud.images[1].can_be_upgraded_from.\"30.0\"",
            "not in series 30.0",
        ),
        (
            error_of(|j| {
                j["components"]["nextcloud"]["images"][2]["ref"] =
                    j["components"]["nextcloud"]["images"][0]["ref"].clone()
            }),
            "components.nextcloud.images[2].ref",
            "one image, one version",
        ),
        (
            error_of(|j| j["schema_version"] = 2.into()),
            "schema_version",
            "reads schema 1",
        ),
        (
            error_of(|j| {
                j["waves"] = serde_json::json!([{"up_to_seed": 20, "start_after_s": 3600}])
            }),
            "waves[0].up_to_seed",
            "reach seed 2047",
        ),
        (
            error_of(|j| {
                j["waves"] = serde_json::json!([
                    {"up_to_seed": 20, "start_after_s": 3600},
                    {"up_to_seed": 2047, "start_after_s": 60}
                ]);
            }),
            "waves[1].start_after_s",
            "in order",
        ),
        (
            error_of(|j| j["min_appliance_version"] = "0.3.0".into()),
            "daemon.version",
            "older than min_appliance_version",
        ),
        (
            error_of(|j| j["daemon"]["binaries"]["x86_64"]["sha256"] = "AB".repeat(32).into()),
            "daemon.binaries.x86_64.sha256",
            "64 lowercase hex",
        ),
        (
            error_of(|j| j["daemon"]["binaries"]["x86_64"]["target"] = "../etc/passwd".into()),
            "daemon.binaries.x86_64.target",
            "no '.' or '..' segment",
        ),
        (
            error_of(|j| j["published"] = "yesterday".into()),
            "published",
            "RFC 3339",
        ),
        (
            error_of(|j| {
                j["components"]["nextcloud"]["images"][2]["requires"] =
                    serde_json::json!({"nextcloud": {"min": "1"}})
            }),
            "components.nextcloud.images[2].requires.nextcloud",
            "cannot require itself",
        ),
        (
            error_of(|j| j["components"]["owncloud"] = j["components"]["nextcloud"].clone()),
            "components",
            "unknown role `owncloud`: expected one of nextcloud, nextcloud-db,",
        ),
    ];
    for (e, field, words) in cases {
        assert_eq!(e.field(), field, "{e}");
        assert!(e.to_string().contains(words), "{field}: {e}");
    }
}

#[test]
fn the_targets_of_a_release_must_run_together() {
    let mut m = manifest_of(vec![
        (ImageRole::Nextcloud, nextcloud_ladder()),
        (
            ImageRole::NextcloudDb,
            component("17.6", vec![img("17.6", 9)]),
        ),
    ]);
    m.components.get_mut(&ImageRole::Nextcloud).unwrap().images[2]
        .requires
        .insert(ImageRole::NextcloudDb, below("17"));
    let e = m.validate().unwrap_err();
    assert!(e.to_string().contains("must run together"), "{e}");
}

#[test]
fn a_wave_table_reaching_every_seed_is_accepted() {
    let mut m = manifest_of(vec![(ImageRole::Nextcloud, nextcloud_ladder())]);
    m.waves = vec![
        Wave {
            up_to_seed: 20,
            start_after_s: 3600,
        },
        Wave {
            up_to_seed: 102,
            start_after_s: 4 * 3600,
        },
        Wave {
            up_to_seed: 204,
            start_after_s: 86400,
        },
        Wave {
            up_to_seed: 512,
            start_after_s: 3 * 86400,
        },
        Wave {
            up_to_seed: manifest::MAX_SEED,
            start_after_s: 6 * 86400,
        },
    ];
    m.validate().unwrap();
    let back = Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back.waves, m.waves);
    assert_eq!(back.published.unix(), 1_788_264_000);
}

// ---- the planner: cases ---------------------------------------------------

#[test]
fn nextcloud_climbs_one_major_at_a_time_through_the_required_patch_release() {
    let m = manifest_of(vec![(ImageRole::Nextcloud, nextcloud_ladder())]);
    let p = plan::plan(
        &installed(&[(ImageRole::Nextcloud, "30.0.2.1")]),
        &m,
        &host(),
    )
    .unwrap();
    let nc = ImageRole::Nextcloud;
    assert_eq!(
        path_of(&p),
        vec![
            (nc, "30.0.2.1".into(), "30.0.17.2".into()),
            (nc, "30.0.17.2".into(), "31.0.9.1".into()),
            (nc, "31.0.9.1".into(), "32.0.1.2".into()),
        ]
    );
    for h in &p.hops {
        assert_eq!(h.kind, HopKind::NextcloudUpgrade);
        assert_eq!(h.gate, Gate::NextcloudStatus);
        assert_eq!(h.downtime_s, downtime::NEXTCLOUD_S);
        let s = h.snapshot.as_ref().unwrap();
        assert_eq!(s.app, AppName::Nextcloud);
        assert_eq!(s.data, vec![Data::Database, Data::Volume("html".into())]);
    }
    // Already past the minimum: straight to 31.
    let p = plan::plan(&installed(&[(nc, "30.0.15.0")]), &m, &host()).unwrap();
    assert_eq!(p.hops[0].to, v("31.0.9.1"));
    assert_eq!(p.hops.len(), 2);
}

#[test]
fn a_missing_major_or_patch_release_is_refused_with_the_hop() {
    let nc = ImageRole::Nextcloud;
    let mut c = nextcloud_ladder();
    c.images.remove(1); // no 31
    let m = manifest_of(vec![(nc, c)]);
    let r = plan::plan(&installed(&[(nc, "30.0.2.1")]), &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::MissingImage);
    assert_eq!((r.component, r.app), (Some(nc), Some(AppName::Nextcloud)));
    assert!(r.message.contains("no Nextcloud 31 image"), "{r}");
    assert_eq!(r.from, Some(v("30.0.17.2")));

    let mut c = nextcloud_ladder();
    c.images.remove(0); // no 30.0.x at or above 30.0.14
    let m = manifest_of(vec![(nc, c)]);
    let r = plan::plan(&installed(&[(nc, "30.0.2.1")]), &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::MissingImage);
    assert!(r.message.contains("only at 30.0.14.0 or later"), "{r}");
    assert_eq!((r.from, r.to), (Some(v("30.0.2.1")), Some(v("31.0.9.1"))));

    // The 31 image exists, but not for this box.
    let mut c = nextcloud_ladder();
    c.images[1].arches = vec![Arch::X86_64];
    let m = manifest_of(vec![(nc, c)]);
    let mut arm = host();
    arm.arch = Arch::Aarch64;
    let r = plan::plan(&installed(&[(nc, "30.0.2.1")]), &m, &arm).unwrap_err();
    assert_eq!(r.code, RefusalCode::MissingImage);
    assert!(r.message.contains("for aarch64"), "{r}");

    // The target itself not for this box.
    let mut c = nextcloud_ladder();
    c.images[2].arches = vec![Arch::X86_64];
    let r = plan::plan(
        &installed(&[(nc, "30.0.2.1")]),
        &manifest_of(vec![(nc, c)]),
        &arm,
    )
    .unwrap_err();
    assert_eq!(r.code, RefusalCode::MissingImage);
    assert!(r.message.contains("32.0.1.2 image for aarch64"), "{r}");
}

#[test]
fn a_series_no_image_accepts_has_no_path() {
    let nc = ImageRole::Nextcloud;
    let m = manifest_of(vec![(nc, nextcloud_ladder())]);
    // 30.1 is in no table (the tables list 29.0, 30.0, 31.0, 32.0).
    let r = plan::plan(&installed(&[(nc, "30.1.0.0")]), &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::NoUpgradePath);
    assert!(r.message.contains("series 30.1"), "{r}");
}

#[test]
fn downgrades_are_refused() {
    let nc = ImageRole::Nextcloud;
    let m = manifest_of(vec![(nc, nextcloud_ladder())]);
    let r = plan::plan(&installed(&[(nc, "32.0.2.0")]), &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::Downgrade);
    assert!(r.message.contains("downgrades are refused"), "{r}");
    assert_eq!((r.from, r.to), (Some(v("32.0.2.0")), Some(v("32.0.1.2"))));
}

#[test]
fn a_postgres_major_is_a_migration_with_twice_the_database_on_disk() {
    let db = ImageRole::NextcloudDb;
    let m = manifest_of(vec![(
        db,
        component("17.6", vec![img("15.14", 8), img("17.6", 9)]),
    )]);
    let p = plan::plan(&installed(&[(db, "15.10")]), &m, &host()).unwrap();
    assert_eq!(p.hops.len(), 1);
    let h = &p.hops[0];
    assert_eq!(
        (h.kind, h.gate),
        (HopKind::PostgresMigration, Gate::PostgresRestored)
    );
    assert_eq!(
        (h.disk.scratch_bytes, h.disk.kept_bytes),
        (2 * GIB, 2 * GIB)
    );
    assert_eq!(h.disk.peak_bytes, 100 * MIB + 4 * GIB);
    assert_eq!(
        h.downtime_s,
        downtime::POSTGRES_BASE_S + (4 * GIB).div_ceil(downtime::POSTGRES_BYTES_PER_S)
    );
    assert_eq!(h.snapshot.as_ref().unwrap().data, vec![Data::Database]);
    // A minor release is an image swap, with no snapshot.
    let p = plan::plan(&installed(&[(db, "17.2")]), &m, &host()).unwrap();
    let h = &p.hops[0];
    assert_eq!(
        (h.kind, h.disk.scratch_bytes, &h.snapshot),
        (HopKind::ImageSwap, 0, &None)
    );
    // Without the database's size, the migration cannot be checked.
    let mut f = host();
    f.database_bytes.clear();
    let r = plan::plan(&installed(&[(db, "15.10")]), &m, &f).unwrap_err();
    assert_eq!(r.code, RefusalCode::DiskUnknown);
}

#[test]
fn the_disk_must_hold_every_hop_with_the_margin() {
    let db = ImageRole::NextcloudDb;
    let m = manifest_of(vec![(db, component("17.6", vec![img("17.6", 9)]))]);
    let need = 100 * MIB + 4 * GIB + DISK_MARGIN_BYTES;
    let mut f = host();
    f.free_bytes = Some(need);
    plan::plan(&installed(&[(db, "15.10")]), &m, &f).unwrap();
    f.free_bytes = Some(need - 1);
    let r = plan::plan(&installed(&[(db, "15.10")]), &m, &f).unwrap_err();
    assert_eq!(r.code, RefusalCode::NotEnoughDisk);
    assert!(r.message.contains("free 1 B"), "{r}");
    // An image already present costs nothing to pull.
    f.images_present.insert(pinned(9).digest().to_owned());
    plan::plan(&installed(&[(db, "15.10")]), &m, &f).unwrap();
    f.free_bytes = None;
    let r = plan::plan(&installed(&[(db, "15.10")]), &m, &f).unwrap_err();
    assert_eq!(r.code, RefusalCode::DiskUnknown);
}

#[test]
fn pulls_and_kept_clusters_add_up_over_the_hops() {
    let (nc, db) = (ImageRole::Nextcloud, ImageRole::NextcloudDb);
    let m = manifest_of(vec![
        (nc, nextcloud_ladder()),
        (db, component("17.6", vec![img("17.6", 9)])),
    ]);
    let mut f = host();
    f.images_present
        .insert(format!("example.org/app@{}", pinned(2).digest()));
    let p = plan::plan(&installed(&[(nc, "30.0.2.1"), (db, "15.10")]), &m, &f).unwrap();
    let peaks: Vec<u64> = p.hops.iter().map(|h| h.disk.peak_bytes).collect();
    // 30.0.17.2 pulled; 31 present; 32 pulled; then the cluster (the pulls
    // stay, the dump goes).
    assert_eq!(
        peaks,
        vec![100 * MIB, 100 * MIB, 200 * MIB, 300 * MIB + 4 * GIB]
    );
    assert_eq!(p.peak_disk_bytes, 300 * MIB + 4 * GIB);
}

#[test]
fn downtime_comes_from_the_manifest_when_it_says() {
    let c = ImageRole::Collabora;
    let mut target = img("25.04.6.2.1", 5);
    target.downtime_s = Some(200);
    let m = manifest_of(vec![(c, component("25.04.6.2.1", vec![target]))]);
    let p = plan::plan(&installed(&[(c, "25.04.5.1.1")]), &m, &host()).unwrap();
    let h = &p.hops[0];
    assert_eq!(
        (h.downtime_s, h.downtime_estimate),
        (200, Estimate::Manifest)
    );
    assert_eq!((h.kind, &h.snapshot), (HopKind::ImageSwap, &None));
}

#[test]
fn coupled_apps_move_in_order() {
    let (nc, db, co) = (
        ImageRole::Nextcloud,
        ImageRole::NextcloudDb,
        ImageRole::Collabora,
    );
    let mut ladder = nextcloud_ladder();
    // 30 runs on PostgreSQL below 17; 32 needs 17.
    ladder.images[0].requires.insert(db, below("17"));
    ladder.images[2].requires.insert(db, at_least("17"));
    let mut office = img("25.04.6.2.1", 5);
    office.requires.insert(nc, at_least("31.0.0.0"));
    let m = manifest_of(vec![
        (nc, ladder),
        (db, component("17.6", vec![img("17.6", 9)])),
        (co, component("25.04.6.2.1", vec![office])),
    ]);
    m.validate().unwrap();
    let p = plan::plan(
        &installed(&[(co, "25.04.5.1.1"), (db, "15.10"), (nc, "30.0.2.1")]),
        &m,
        &host(),
    )
    .unwrap();
    assert_eq!(
        path_of(&p),
        vec![
            (nc, "30.0.2.1".into(), "30.0.17.2".into()),
            (nc, "30.0.17.2".into(), "31.0.9.1".into()),
            (db, "15.10".into(), "17.6".into()),
            (nc, "31.0.9.1".into(), "32.0.1.2".into()),
            (co, "25.04.5.1.1".into(), "25.04.6.2.1".into()),
        ]
    );
}

#[test]
fn requirements_no_order_can_meet_are_refused() {
    let (nc, db) = (ImageRole::Nextcloud, ImageRole::NextcloudDb);
    let mut ladder = nextcloud_ladder();
    // 31 runs only below PostgreSQL 17, 32 only on 17: no step between.
    ladder.images[1].requires.insert(db, below("17"));
    ladder.images[2].requires.insert(db, at_least("17"));
    let m = manifest_of(vec![
        (nc, ladder),
        (db, component("17.6", vec![img("17.6", 9)])),
    ]);
    let r = plan::plan(&installed(&[(nc, "30.0.15.0"), (db, "15.10")]), &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::CoupledOrder);
    assert!(
        r.message
            .contains("Nextcloud 32.0.1.2 needs Nextcloud's PostgreSQL at least 17"),
        "{r}"
    );
    assert!(
        r.message
            .contains("Nextcloud 31.0.9.1 needs Nextcloud's PostgreSQL below 17"),
        "{r}"
    );
}

#[test]
fn what_the_box_cannot_tell_or_runs_half_upgraded_is_refused() {
    let (nc, db) = (ImageRole::Nextcloud, ImageRole::NextcloudDb);
    let m = manifest_of(vec![(nc, nextcloud_ladder())]);
    let mut i = installed(&[(nc, "30.0.2.1")]);
    i.unknown.insert(nc, "its container is not running".into());
    let r = plan::plan(&i, &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::UnknownVersion);
    assert!(r.message.contains("not running"), "{r}");

    let mut i = installed(&[(nc, "30.0.2.1")]);
    i.components.get_mut(&nc).unwrap().image_version = Some(v("31.0.9.1"));
    let r = plan::plan(&i, &m, &host()).unwrap_err();
    assert_eq!(r.code, RefusalCode::UnfinishedUpgrade);

    let r = plan::plan(&installed(&[(nc, "30.0.2.1"), (db, "15.10")]), &m, &host()).unwrap_err();
    assert_eq!(
        (r.code, r.component),
        (RefusalCode::MissingComponent, Some(db))
    );

    let mut f = host();
    f.appliance_version = v("0.0.9");
    let r = plan::plan(&installed(&[(nc, "30.0.2.1")]), &m, &f).unwrap_err();
    assert_eq!(r.code, RefusalCode::ApplianceTooOld);
    assert!(r.message.contains("update the appliance first"), "{r}");
}

#[test]
fn a_box_at_the_release_has_nothing_to_do() {
    let nc = ImageRole::Nextcloud;
    let m = manifest_of(vec![(nc, nextcloud_ladder())]);
    let mut f = host();
    f.free_bytes = None; // not needed
    let p = plan::plan(&installed(&[(nc, "32.0.1.2")]), &m, &f).unwrap();
    assert!(p.hops.is_empty());
    assert_eq!(p.unchanged[&nc], v("32.0.1.2"));
    assert!(
        p.describe().starts_with("nothing to do"),
        "{}",
        p.describe()
    );
    // Roles the box does not run are not planned.
    let p = plan::plan(&Installed::default(), &m, &f).unwrap();
    assert!(p.hops.is_empty() && p.unchanged.is_empty());
}

#[test]
fn refusal_codes_are_stable_strings() {
    let all = [
        (RefusalCode::ApplianceTooOld, "appliance_too_old"),
        (RefusalCode::UnknownVersion, "unknown_version"),
        (RefusalCode::MissingComponent, "missing_component"),
        (RefusalCode::UnfinishedUpgrade, "unfinished_upgrade"),
        (RefusalCode::Downgrade, "downgrade"),
        (RefusalCode::MissingImage, "missing_image"),
        (RefusalCode::NoUpgradePath, "no_upgrade_path"),
        (RefusalCode::CoupledOrder, "coupled_order"),
        (RefusalCode::NotEnoughDisk, "not_enough_disk"),
        (RefusalCode::DiskUnknown, "disk_unknown"),
    ];
    for (code, s) in all {
        assert_eq!(code.as_str(), s);
        assert_eq!(serde_json::to_value(code).unwrap(), s);
    }
}

// ---- the planner: properties ----------------------------------------------

/// The rule of a Nextcloud hop, written again from the facts: strictly up,
/// at most one major, and the image's table accepts the version left.
fn nextcloud_hop_ok(from: &Version, to: &Image) -> bool {
    to.version > *from
        && to.version.major() <= from.major() + 1
        && to
            .can_be_upgraded_from
            .as_ref()
            .and_then(|t| {
                t.get(&Series {
                    major: from.major(),
                    minor: from.part(1),
                })
            })
            .is_some_and(|min| from >= min)
}

/// The fewest hops from `from` to `target`, by a forward pass over the
/// images in version order; `None` when there is no path.
fn fewest_hops(from: &Version, c: &Component, arch: Arch) -> Option<usize> {
    let mut nodes: Vec<&Image> = c
        .images
        .iter()
        .filter(|i| i.runs_on(arch) && i.version > *from && i.version <= c.target)
        .collect();
    nodes.sort_by(|a, b| a.version.cmp(&b.version));
    let mut best: Vec<Option<usize>> = vec![None; nodes.len()];
    for i in 0..nodes.len() {
        let mut b = nextcloud_hop_ok(from, nodes[i]).then_some(1);
        for j in 0..i {
            if let Some(bj) = best[j]
                && nextcloud_hop_ok(&nodes[j].version, nodes[i])
            {
                b = Some(b.map_or(bj + 1, |b: usize| b.min(bj + 1)));
            }
        }
        best[i] = b;
    }
    nodes
        .iter()
        .position(|n| n.version == c.target)
        .and_then(|t| best[t])
}

/// A Nextcloud component: majors `base..base+majors`, each with some patch
/// releases (possibly none), each image on some architectures, accepting
/// its own series and (usually) the previous one from some patch release.
fn nextcloud_component() -> impl Strategy<Value = Component> {
    (20u64..24, 1u64..=4)
        .prop_flat_map(|(base, majors)| {
            let image = (
                proptest::sample::subsequence(vec![0u64, 1, 2, 3, 4, 5], 0..=4),
                proptest::collection::vec(
                    (
                        proptest::sample::subsequence(Arch::ALL.to_vec(), 1..=3),
                        prop_oneof![3 => Just(0u64), 2 => 0u64..6],
                        prop::bool::weighted(0.9),
                    ),
                    6,
                ),
            );
            (
                Just(base),
                proptest::collection::vec(image, majors as usize),
            )
        })
        .prop_filter_map("the last major has a release", |(base, per_major)| {
            let mut images = Vec::new();
            let mut n = 0;
            for (mi, (patches, extras)) in per_major.iter().enumerate() {
                let major = base + mi as u64;
                for (pi, p) in patches.iter().enumerate() {
                    let (arches, min_prev, accepts_prev) = &extras[pi];
                    n += 1;
                    let mut table = vec![];
                    if *accepts_prev {
                        table.push((
                            format!("{}.0", major - 1),
                            format!("{}.0.{min_prev}.0", major - 1),
                        ));
                    }
                    if *p > 0 {
                        table.push((format!("{major}.0"), format!("{major}.0.0.0")));
                    }
                    if table.is_empty() {
                        table.push((format!("{}.0", major - 1), format!("{}.0.0.0", major - 1)));
                    }
                    let table: Vec<(&str, &str)> = table
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect();
                    let mut i = nc(&format!("{major}.0.{p}.0"), n, &table);
                    i.arches = arches.clone();
                    images.push(i);
                }
            }
            let target = images.iter().map(|i| i.version.clone()).max()?;
            // The target runs everywhere: the arch rule is tested on the steps.
            for i in &mut images {
                if i.version == target {
                    i.arches = Arch::ALL.to_vec();
                }
            }
            Some(Component { target, images })
        })
}

fn arch() -> impl Strategy<Value = Arch> {
    proptest::sample::select(Arch::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every Nextcloud plan goes strictly up, one major at a time, through
    /// images the manifest lists for this box, honours every
    /// can-be-upgraded-from table, ends at the target in the fewest hops;
    /// otherwise it is refused with a reason, and only when no path exists.
    #[test]
    fn nextcloud_plans_honour_every_rule(
        c in nextcloud_component(),
        from_major in 19u64..27,
        from_patch in 0u64..7,
        arch in arch(),
    ) {
        let nc = ImageRole::Nextcloud;
        let from = v(&format!("{from_major}.0.{from_patch}.1"));
        let m = manifest_of(vec![(nc, c.clone())]);
        prop_assert!(m.validate().is_ok(), "{:?}", m.validate());
        let mut f = host();
        f.arch = arch;
        let result = plan::plan(&installed(&[(nc, from.as_str())]), &m, &f);
        if from > c.target {
            prop_assert_eq!(result.unwrap_err().code, RefusalCode::Downgrade);
            return Ok(());
        }
        let fewest = fewest_hops(&from, &c, arch);
        match result {
            Ok(p) => {
                let mut at = from.clone();
                for h in &p.hops {
                    prop_assert_eq!(&h.from, &at);
                    let image = c.image(&h.to).expect("a listed version");
                    prop_assert!(nextcloud_hop_ok(&h.from, image), "{} → {}", h.from, h.to);
                    prop_assert!(image.runs_on(arch));
                    prop_assert_eq!(&h.image, &image.reference);
                    prop_assert_eq!(h.kind, HopKind::NextcloudUpgrade);
                    prop_assert!(h.snapshot.is_some());
                    at = h.to.clone();
                }
                prop_assert_eq!(&at, &c.target);
                if from == c.target {
                    prop_assert!(p.hops.is_empty());
                } else {
                    prop_assert_eq!(Some(p.hops.len()), fewest, "not the fewest hops");
                }
            }
            Err(r) => {
                prop_assert_eq!(fewest, None, "refused although a path exists: {}", r);
                prop_assert!(from < c.target);
                prop_assert!(matches!(r.code, RefusalCode::MissingImage | RefusalCode::NoUpgradePath), "{:?}", r.code);
                prop_assert_eq!(r.component, Some(nc));
                prop_assert!(r.message.contains("Nextcloud") && r.message.len() > 40, "{}", r.message);
            }
        }
    }
}

/// A multi-role manifest where each role's path is fixed (one image per
/// step), with random `requires` between Nextcloud and its database and
/// from Collabora to Nextcloud.
#[derive(Debug, Clone)]
struct Coupled {
    manifest: Manifest,
    installed: Installed,
}

fn coupled() -> impl Strategy<Value = Coupled> {
    let bound = || {
        proptest::option::of((
            proptest::option::of(13u64..19),
            proptest::option::of(14u64..20),
        ))
    };
    (
        1usize..=3,                                    // Nextcloud majors to climb
        proptest::collection::vec(bound(), 4),         // each NC version's bound on the database
        proptest::sample::select(vec![13u64, 14, 15]), // installed PostgreSQL major
        proptest::sample::select(vec![16u64, 17, 18]), // target PostgreSQL major
        proptest::option::of(30u64..34),               // Collabora needs Nextcloud ≥
        prop::bool::ANY,                               // Discourse present
        proptest::option::of(0u64..5),                 // its database major, above 13
    )
        .prop_map(
            |(climb, db_bounds, pg_from, pg_to, office_needs, discourse, ddb)| {
                let (nc, db, co) = (
                    ImageRole::Nextcloud,
                    ImageRole::NextcloudDb,
                    ImageRole::Collabora,
                );
                let first = 30u64;
                let mut images = Vec::new();
                for (i, major) in (first..=first + climb as u64).enumerate() {
                    let mut image = self::nc(
                        &format!("{major}.0.0.0"),
                        100 + i as u64,
                        &[(&format!("{}.0", major - 1), &format!("{}.0.0.0", major - 1))],
                    );
                    if let Some((min, below)) = db_bounds[i] {
                        let b = Bounds {
                            min: min.map(|m| v(&m.to_string())),
                            below: below.map(|b| v(&b.to_string())),
                        };
                        let empty = matches!((&b.min, &b.below), (Some(m), Some(bl)) if m >= bl);
                        if (b.min.is_some() || b.below.is_some()) && !empty {
                            image.requires.insert(db, b);
                        }
                    }
                    images.push(image);
                }
                let nc_target = images.last().unwrap().version.clone();
                let mut office = img("25.04.6.2.1", 200);
                if let Some(n) = office_needs {
                    office.requires.insert(
                        nc,
                        Bounds {
                            min: Some(v(&format!("{n}.0.0.0"))),
                            below: None,
                        },
                    );
                }
                let mut components = vec![
                    (
                        nc,
                        Component {
                            target: nc_target,
                            images,
                        },
                    ),
                    (
                        db,
                        component(&format!("{pg_to}.2"), vec![img(&format!("{pg_to}.2"), 300)]),
                    ),
                    (co, component("25.04.6.2.1", vec![office])),
                ];
                let mut roles = vec![
                    (nc, "29.0.0.0".to_owned()),
                    (db, format!("{pg_from}.9")),
                    (co, "25.04.5.1.1".to_owned()),
                ];
                if discourse {
                    let (d, dd) = (ImageRole::Discourse, ImageRole::DiscourseDb);
                    components.push((
                        d,
                        component("3.5.0", vec![img("3.4.6", 400), img("3.5.0", 401)]),
                    ));
                    components.push((dd, component("17.6", vec![img("17.6", 402)])));
                    roles.push((d, "3.4.2".to_owned()));
                    roles.push((dd, format!("{}.3", 13 + ddb.unwrap_or(4))));
                }
                let mut manifest = manifest_of(components);
                // Targets that cannot run together make no release: loosen them.
                let db_target = manifest.components[&db].target.clone();
                let nc_target = manifest.components[&nc].target.clone();
                if let Some(t) = manifest.components.get_mut(&nc).unwrap().images.last_mut()
                    && t.requires.get(&db).is_some_and(|b| !b.contains(&db_target))
                {
                    t.requires.remove(&db);
                }
                if let Some(t) = manifest.components.get_mut(&co).unwrap().images.last_mut()
                    && t.requires.get(&nc).is_some_and(|b| !b.contains(&nc_target))
                {
                    t.requires.remove(&nc);
                }
                let refs: Vec<(ImageRole, &str)> =
                    roles.iter().map(|(r, s)| (*r, s.as_str())).collect();
                Coupled {
                    installed: installed(&refs),
                    manifest,
                }
            },
        )
}

/// The versions each role runs after each hop of `p`, from `installed`.
fn replay(installed: &Installed, p: &UpgradePlan) -> Vec<BTreeMap<ImageRole, Version>> {
    let mut now: BTreeMap<ImageRole, Version> = installed
        .components
        .iter()
        .map(|(r, c)| (*r, c.version.clone()))
        .collect();
    p.hops
        .iter()
        .map(|h| {
            now.insert(h.component, h.to.clone());
            now.clone()
        })
        .collect()
}

/// Whether the `requires` between `moved` and every other role hold in `state`.
fn coupling_holds(m: &Manifest, state: &BTreeMap<ImageRole, Version>, moved: ImageRole) -> bool {
    let needs = |role: ImageRole, other: ImageRole| -> bool {
        let Some(image) = m.components.get(&role).and_then(|c| c.image(&state[&role])) else {
            return true;
        };
        image
            .requires
            .get(&other)
            .is_none_or(|b| b.contains(&state[&other]))
    };
    state
        .keys()
        .filter(|o| **o != moved)
        .all(|o| needs(moved, *o) && needs(*o, moved))
}

/// Whether some order of the fixed paths keeps the coupling: a search over
/// every combination of positions, written apart from the planner's.
fn some_order_exists(c: &Coupled) -> bool {
    let paths: Vec<(ImageRole, Vec<Version>)> = c
        .installed
        .components
        .iter()
        .map(|(r, ic)| {
            // Nextcloud through every major listed; the others straight on.
            let comp = &c.manifest.components[r];
            let mut vs: Vec<Version> = comp
                .images
                .iter()
                .map(|i| i.version.clone())
                .filter(|x| *x > ic.version && (*r == ImageRole::Nextcloud || *x == comp.target))
                .collect();
            vs.sort();
            let mut all = vec![ic.version.clone()];
            all.extend(vs);
            (*r, all)
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![0usize; paths.len()]];
    while let Some(pos) = stack.pop() {
        if pos
            .iter()
            .zip(&paths)
            .all(|(p, (_, vs))| *p == vs.len() - 1)
        {
            return true;
        }
        if !seen.insert(pos.clone()) {
            continue;
        }
        for i in 0..paths.len() {
            if pos[i] + 1 >= paths[i].1.len() {
                continue;
            }
            // Collabora after Nextcloud.
            let role = paths[i].0;
            if role == ImageRole::Collabora
                && paths
                    .iter()
                    .enumerate()
                    .any(|(j, (r, vs))| *r == ImageRole::Nextcloud && pos[j] + 1 < vs.len())
            {
                continue;
            }
            let mut next = pos.clone();
            next[i] += 1;
            let state: BTreeMap<ImageRole, Version> = paths
                .iter()
                .zip(&next)
                .map(|((r, vs), p)| (*r, vs[*p].clone()))
                .collect();
            if coupling_holds(&c.manifest, &state, role) {
                stack.push(next);
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Coupled roles: every hop leaves the moved role and the others within
    /// each other's `requires`, Collabora moves after Nextcloud, every
    /// role ends at its target; refused exactly when no order exists.
    #[test]
    fn coupled_apps_are_ordered_correctly(c in coupled()) {
        prop_assert!(c.manifest.validate().is_ok(), "{:?}", c.manifest.validate());
        let result = plan::plan(&c.installed, &c.manifest, &host());
        let exists = some_order_exists(&c);
        match result {
            Ok(p) => {
                prop_assert!(exists, "planned although no order exists");
                let states = replay(&c.installed, &p);
                for (h, state) in p.hops.iter().zip(&states) {
                    prop_assert!(coupling_holds(&c.manifest, state, h.component), "after {:?} {} → {}", h.component, h.from, h.to);
                    prop_assert!(h.to > h.from);
                }
                let last_nc = p.hops.iter().rposition(|h| h.component == ImageRole::Nextcloud);
                let first_office = p.hops.iter().position(|h| h.component == ImageRole::Collabora);
                if let (Some(n), Some(o)) = (last_nc, first_office) {
                    prop_assert!(n < o, "Collabora moved before Nextcloud was done");
                }
                let end = states.last().cloned().unwrap_or_default();
                for (role, ic) in &c.installed.components {
                    let target = &c.manifest.components[role].target;
                    prop_assert_eq!(end.get(role).unwrap_or(&ic.version), target);
                }
            }
            Err(r) => {
                prop_assert!(!exists, "refused although an order exists: {}", r);
                prop_assert_eq!(r.code, RefusalCode::CoupledOrder);
                prop_assert!(r.message.contains("needs") || r.message.contains("moves only after"), "{}", r.message);
            }
        }
    }

    /// A PostgreSQL major change is always a migration with twice the
    /// database on disk and a snapshot of it first; never an image swap.
    #[test]
    fn postgres_majors_are_never_swapped(
        from in (11u64..19, 0u64..20),
        listed in proptest::collection::btree_set((11u64..19, 0u64..20), 1..6),
        db_gib in 1u64..50,
        role in proptest::sample::select(vec![ImageRole::NextcloudDb, ImageRole::DiscourseDb]),
    ) {
        let images: Vec<Image> = listed
            .iter()
            .enumerate()
            .map(|(n, (ma, mi))| img(&format!("{ma}.{mi}"), n as u64 + 1))
            .collect();
        let target = images.iter().map(|i| i.version.clone()).max().unwrap();
        let m = manifest_of(vec![(role, Component { target: target.clone(), images })]);
        prop_assert!(m.validate().is_ok());
        let from = v(&format!("{}.{}", from.0, from.1));
        let mut f = host();
        f.database_bytes.insert(manifest::app(role), db_gib * GIB);
        match plan::plan(&installed(&[(role, from.as_str())]), &m, &f) {
            Ok(p) => {
                prop_assert!(from <= target);
                prop_assert_eq!(p.hops.len(), usize::from(from < target), "one hop, straight to the target");
                for h in &p.hops {
                    if h.from.major() != h.to.major() {
                        prop_assert_eq!(h.kind, HopKind::PostgresMigration);
                        prop_assert_eq!(h.disk.scratch_bytes + h.disk.kept_bytes, 2 * db_gib * GIB);
                        prop_assert_eq!(h.snapshot.as_ref().map(|s| s.data.clone()), Some(vec![Data::Database]));
                    } else {
                        prop_assert_eq!(h.kind, HopKind::ImageSwap);
                    }
                }
            }
            Err(r) => {
                prop_assert!(from > target);
                prop_assert_eq!(r.code, RefusalCode::Downgrade);
            }
        }
    }

    /// Whatever else the release does, a role newer than its target is
    /// always refused as a downgrade.
    #[test]
    fn downgrades_are_always_refused(c in coupled(), which in 0usize..5, by in 1u64..3) {
        let mut c = c;
        let roles: Vec<ImageRole> = c.installed.components.keys().copied().collect();
        let role = roles[which % roles.len()];
        let target = c.manifest.components[&role].target.clone();
        let mut parts: Vec<String> = target.parts().iter().map(u64::to_string).collect();
        parts[0] = (target.major() + by).to_string();
        c.installed.components.get_mut(&role).unwrap().version = v(&parts.join("."));
        let r = plan::plan(&c.installed, &c.manifest, &host()).unwrap_err();
        prop_assert_eq!(r.code, RefusalCode::Downgrade);
        prop_assert!(r.component.is_some());
        let refused = r.component.unwrap();
        prop_assert!(c.installed.components[&refused].version > c.manifest.components[&refused].target);
    }

    /// The plan is made exactly when the disk holds its peak and the margin.
    #[test]
    fn the_disk_check_is_exact(c in coupled(), free_gib in 0u64..12, db_gib in 0u64..4) {
        let mut f = host();
        f.database_bytes = BTreeMap::from([(AppName::Nextcloud, db_gib * GIB), (AppName::Discourse, db_gib * GIB)]);
        let Ok(unbounded) = plan::plan(&c.installed, &c.manifest, &f) else { return Ok(()) };
        f.free_bytes = Some(free_gib * GIB);
        let result = plan::plan(&c.installed, &c.manifest, &f);
        let fits = unbounded.peak_disk_bytes + DISK_MARGIN_BYTES <= free_gib * GIB;
        let nothing = unbounded.hops.iter().all(|h| h.disk.need_bytes == 0 && h.disk.pull_bytes.is_some());
        match result {
            Ok(p) => {
                prop_assert!(fits || nothing);
                prop_assert_eq!(p.hops, unbounded.hops);
            }
            Err(r) => {
                prop_assert!(!fits);
                prop_assert_eq!(r.code, RefusalCode::NotEnoughDisk);
            }
        }
    }
}

// ---- the documented example -----------------------------------------------

const DOC: &str = include_str!("../../docs/releases.md");

/// The fenced block after `<!-- example: NAME -->` in `docs/releases.md`.
fn documented(name: &str) -> &'static str {
    let marker = format!("<!-- example: {name} -->\n```");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} example"));
    let rest = &DOC[start + marker.len()..];
    let body = &rest[rest.find('\n').unwrap() + 1..];
    &body[..body.find("\n```").unwrap()]
}

#[test]
fn the_documented_example_parses_and_plans() {
    let m = Manifest::from_json(documented("manifest")).unwrap();
    let facts: super::Facts = serde_json::from_str(documented("facts")).unwrap();
    let p = plan::plan(&facts.installed, &m, &facts.host).unwrap();
    let (nc, db, redis, co, d) = (
        ImageRole::Nextcloud,
        ImageRole::NextcloudDb,
        ImageRole::NextcloudRedis,
        ImageRole::Collabora,
        ImageRole::Discourse,
    );
    // What the text says: 30.0.17 first (31 needs 30.0.14), PostgreSQL
    // between 31 and 32, Collabora after Nextcloud.
    assert_eq!(
        path_of(&p),
        vec![
            (nc, "30.0.2.1".into(), "30.0.17.2".into()),
            (nc, "30.0.17.2".into(), "31.0.9.1".into()),
            (db, "15.10".into(), "17.6".into()),
            (nc, "31.0.9.1".into(), "32.0.1.2".into()),
            (redis, "7.0.15".into(), "7.4.5".into()),
            (co, "25.04.5.1.1".into(), "25.04.6.2.1".into()),
            (d, "3.4.6".into(), "3.5.0".into()),
        ]
    );
    assert_eq!(p.hops[2].kind, HopKind::PostgresMigration);
    assert_eq!(
        p.hops[2].disk.scratch_bytes + p.hops[2].disk.kept_bytes,
        6 * GIB
    );
    assert_eq!(m.waves.len(), 5);
    // The printed plan in the text is what the planner prints.
    assert_eq!(p.describe().trim_end(), documented("plan"));
    // And the facts round-trip as `--json` prints them.
    let again: super::Facts =
        serde_json::from_str(&serde_json::to_string(&facts).unwrap()).unwrap();
    assert_eq!(again, facts);
}
