//! `commonscloud upgrade plan`, the real binary: from a facts file (the
//! example of `docs/releases.md`), and from a box whose apps run on the
//! real Docker Engine (real PostgreSQL and Redis, the Nextcloud stand-in),
//! read without a daemon.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::images::{self, Lab};
use common::{Appliance, BIN, repo};
use commonscloud::docker::objects::{self, NewContainer};

/// The fenced block after `<!-- example: NAME -->` in `docs/releases.md`.
fn documented(name: &str) -> String {
    let doc = std::fs::read_to_string(repo().join("docs/releases.md")).unwrap();
    let marker = format!("<!-- example: {name} -->\n```");
    let rest = &doc[doc.find(&marker).unwrap() + marker.len()..];
    let body = &rest[rest.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap()].to_owned()
}

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["upgrade", "plan"])
        .args(args)
        .env_remove("COMMONSCLOUD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn upgrade_plan_from_a_facts_file_prints_the_path_or_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "manifest.json", &documented("manifest"));
    let facts_text = documented("facts");
    let facts = write(dir.path(), "facts.json", &facts_text);

    // The documented plan, as documented; no config or Docker needed.
    let (code, out, err) = plan(&["--manifest", &manifest, "--facts", &facts]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim_end(), documented("plan"));
    let (code, out, _) = plan(&["--manifest", &manifest, "--facts", &facts, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["release"], "2026.09.1");
    let hops = v["plan"]["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 7);
    assert_eq!(hops[2]["kind"], "postgres_migration");
    assert_eq!(hops[2]["disk"]["kept_bytes"], 3_u64 << 30);
    assert_eq!(hops[0]["snapshot"]["data"][1]["volume"], "html");
    assert_eq!(v["facts"]["box"]["arch"], "aarch64");
    assert!(v.get("refusal").is_none());

    // A box newer than the release: refused, exit 2, with the code.
    let newer = write(
        dir.path(),
        "newer.json",
        &facts_text.replace("\"30.0.2.1\"", "\"33.0.0.0\""),
    );
    let (code, out, err) = plan(&["--manifest", &manifest, "--facts", &newer]);
    assert_eq!(code, 2, "{out}");
    assert!(err.starts_with("refused (downgrade): "), "{err}");
    assert!(err.contains("Nextcloud 33.0.0.0"), "{err}");
    let (code, out, _) = plan(&["--manifest", &manifest, "--facts", &newer, "--json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["refusal"]["code"], "downgrade");
    assert_eq!(v["refusal"]["component"], "nextcloud");
    assert_eq!(v["refusal"]["from"], "33.0.0.0");
    assert!(v.get("plan").is_none());

    // Too little disk for the PostgreSQL migration.
    let small = write(
        dir.path(),
        "small.json",
        &facts_text.replace("\"free_bytes\": 64424509440", "\"free_bytes\": 8589934592"),
    );
    let (code, _, err) = plan(&["--manifest", &manifest, "--facts", &small]);
    assert_eq!(code, 2);
    assert!(err.starts_with("refused (not_enough_disk): "), "{err}");
    assert!(
        err.contains("Nextcloud's PostgreSQL from 15.10 to 17.6"),
        "{err}"
    );

    // Bad input names the field.
    let bad = write(
        dir.path(),
        "bad.json",
        &documented("manifest").replacen(
            "\"ref\": \"nextcloud@sha256:",
            "\"ref\": \"nextcloud@md5:",
            1,
        ),
    );
    let (code, _, err) = plan(&["--manifest", &bad, "--facts", &facts]);
    assert_eq!(code, 1);
    assert!(err.contains("components.nextcloud.images[0].ref"), "{err}");
    assert!(err.contains("not an image pinned by digest"), "{err}");
    let odd = write(
        dir.path(),
        "odd.json",
        &facts_text.replace("\"arch\": \"aarch64\"", "\"arch\": \"arm64\""),
    );
    let (code, _, err) = plan(&["--manifest", &manifest, "--facts", &odd]);
    assert_eq!(code, 1);
    assert!(
        err.contains("box.arch") && err.contains("x86_64, aarch64, armv7"),
        "{err}"
    );
}

/// Creates and starts (or only creates) a container labelled as one of the
/// appliance's, and as the lab's for the clean-up.
async fn app_container(
    lab: &Lab,
    prefix: &str,
    role: &str,
    mut c: NewContainer,
    start: bool,
) -> String {
    c.name = lab.name(role);
    c.labels = lab.labels();
    c.labels.extend(HashMap::from([
        (
            commonscloud::apps::LABEL_MANAGED.to_owned(),
            "true".to_owned(),
        ),
        (
            commonscloud::apps::LABEL_INSTANCE.to_owned(),
            prefix.to_owned(),
        ),
        (commonscloud::apps::LABEL_ROLE.to_owned(), role.to_owned()),
    ]));
    let id = objects::create_container(&lab.docker, &c).await.unwrap();
    if start {
        objects::start_container(&lab.docker, &id).await.unwrap();
    }
    c.name
}

#[tokio::test]
async fn upgrade_plan_reads_the_box_from_its_apps_without_a_daemon() {
    let lab = Lab::new().await;
    let app = Appliance::new();
    let prefix = app.prefix();
    let net = lab.network(false).await;
    let db_pw = lab.secret("nextcloud-db-password", "db-secret-0123456789", 0o600);
    let admin_pw = lab.secret("nextcloud-admin-password", "admin-secret-0123456789", 0o600);
    let bind = |p: &Path, name: &str| {
        (
            p.to_str().unwrap().to_owned(),
            format!("/run/secrets/{name}"),
            true,
        )
    };

    let db = app_container(
        &lab,
        &prefix,
        "nextcloud-db",
        NewContainer {
            image: images::debian("postgres:15"),
            env: vec![
                "POSTGRES_DB=nextcloud".into(),
                "POSTGRES_USER=nextcloud".into(),
                "POSTGRES_PASSWORD_FILE=/run/secrets/nextcloud-db-password".into(),
            ],
            volumes: vec![(lab.volume().await, "/var/lib/postgresql/data".into(), false)],
            binds: vec![bind(&db_pw, "nextcloud-db-password")],
            networks: vec![(net.clone(), "nextcloud-db".into())],
            health: Some((
                [
                    "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "nextcloud",
                    "-d",
                    "nextcloud",
                ]
                .iter()
                .fold(vec!["CMD".to_owned()], |mut v, s| {
                    v.push((*s).to_owned());
                    v
                }),
                1,
                5,
                3,
                60,
            )),
            ..Default::default()
        },
        true,
    )
    .await;
    let redis = app_container(
        &lab,
        &prefix,
        "nextcloud-redis",
        NewContainer {
            image: images::debian("redis"),
            networks: vec![(net.clone(), "nextcloud-redis".into())],
            ..Default::default()
        },
        true,
    )
    .await;
    lab.wait_healthy(&db, Duration::from_secs(60)).await;
    let nc_image =
        images::image(&lab.docker, "nextcloud", &[("NEXTCLOUD_VERSION", "30.0.0")]).await;
    let nc = app_container(
        &lab,
        &prefix,
        "nextcloud",
        NewContainer {
            image: nc_image,
            env: vec![
                "POSTGRES_HOST=nextcloud-db".into(),
                "POSTGRES_DB=nextcloud".into(),
                "POSTGRES_USER=nextcloud".into(),
                "POSTGRES_PASSWORD_FILE=/run/secrets/nextcloud-db-password".into(),
                "NEXTCLOUD_ADMIN_USER=admin".into(),
                "NEXTCLOUD_ADMIN_PASSWORD_FILE=/run/secrets/nextcloud-admin-password".into(),
                "NEXTCLOUD_TRUSTED_DOMAINS=cloud.example.org".into(),
            ],
            volumes: vec![(lab.volume().await, "/var/www/html".into(), false)],
            binds: vec![
                bind(&db_pw, "nextcloud-db-password"),
                bind(&admin_pw, "nextcloud-admin-password"),
            ],
            networks: vec![(net.clone(), "nextcloud".into())],
            ..Default::default()
        },
        true,
    )
    .await;
    // Installed: the volume carries its version.php.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let e = lab
            .exec(
                &nc,
                "www-data",
                &["curl", "-fsS", "http://localhost/status.php"],
            )
            .await;
        let status: Option<serde_json::Value> = serde_json::from_str(&e.stdout).ok();
        if e.code == 0 && status.is_some_and(|s| s["installed"] == true) {
            break;
        }
        assert!(
            Instant::now() < until,
            "never installed: {}\n{}",
            e.show(),
            lab.logs(&nc).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Discourse that is not running: its version cannot be read.
    let stopped = app_container(
        &lab,
        &prefix,
        "discourse",
        NewContainer {
            image: images::debian("redis"),
            ..Default::default()
        },
        false,
    )
    .await;

    // What the apps say of themselves, to compare with.
    let pg_version = lab
        .exec(&db, "root", &["postgres", "--version"])
        .await
        .stdout;
    let pg_version = pg_version.split_whitespace().nth(2).unwrap().to_owned();
    assert!(pg_version.starts_with("15."), "{pg_version}");
    let redis_version = lab
        .exec(&redis, "root", &["redis-server", "--version"])
        .await
        .stdout;
    let redis_version = redis_version
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let digest = |n: u32| format!("sha256:{n:064x}");
    let manifest = serde_json::json!({
        "schema_version": 1,
        "release": "test.1",
        "channel": "testing",
        "published": "2026-09-01T12:00:00Z",
        "urgent": false,
        "min_appliance_version": "0.1.0",
        "notes": {"en": "Test.", "ca": "Prova.", "es": "Prueba."},
        "components": {
            "nextcloud": {"target": "31.0.0.0", "images": [
                {"version": "31.0.0.0", "ref": format!("nextcloud@{}", digest(1)), "arches": ["aarch64"], "bytes": 1000,
                 "can_be_upgraded_from": {"30.0": "30.0.0.0"}}
            ]},
            "nextcloud-db": {"target": "17.6", "images": [
                {"version": "17.6", "ref": format!("postgres@{}", digest(2)), "arches": ["aarch64"], "bytes": 1000}
            ]},
            "nextcloud-redis": {"target": redis_version, "images": [
                {"version": redis_version, "ref": format!("redis@{}", digest(3)), "arches": ["aarch64"], "bytes": 1000}
            ]},
            "discourse": {"target": "3.5.0", "images": [
                {"version": "3.5.0", "ref": format!("discourse/discourse@{}", digest(4)), "arches": ["aarch64"], "bytes": 1000}
            ]}
        },
        "daemon": {"version": "0.1.0", "binaries": {"aarch64": {"target": "commonscloud-0.1.0-aarch64", "sha256": "ab".repeat(32), "bytes": 1}}}
    });
    let manifest = write(dir.path(), "m.json", &manifest.to_string());
    let cli = |json: bool| {
        let mut args = vec!["upgrade", "plan", "--manifest", manifest.as_str()];
        if json {
            args.push("--json");
        }
        let out = app.cli(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The stopped Discourse stops the plan, saying why.
    let (code, out, err) = cli(true);
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["refusal"]["code"], "unknown_version", "{v}");
    assert!(
        v["facts"]["installed"]["unknown"]["discourse"]
            .as_str()
            .unwrap()
            .contains("is not running"),
        "{v}"
    );
    let installed = &v["facts"]["installed"]["components"];
    assert_eq!(installed["nextcloud"]["version"], "30.0.0.0", "{v}");
    assert!(installed["nextcloud"].get("image_version").is_none(), "{v}");
    assert_eq!(installed["nextcloud-db"]["version"], pg_version.as_str());
    assert_eq!(
        installed["nextcloud-redis"]["version"],
        redis_version.as_str()
    );
    let host = &v["facts"]["box"];
    assert_eq!(host["arch"], "aarch64"); // the rpi4-4gb profile
    assert_eq!(host["appliance_version"], env!("CARGO_PKG_VERSION"));
    assert!(host["free_bytes"].as_u64().unwrap() > 0);
    // An initialised cluster holds tens of MB.
    let db_bytes = host["database_bytes"]["nextcloud"].as_u64().unwrap();
    assert!((10 << 20..1 << 30).contains(&db_bytes), "{db_bytes}");

    // Without it, the path: Nextcloud 30 → 31, then PostgreSQL 15 → 17
    // as a migration needing twice the database; Redis stays.
    lab.docker
        .remove_container(
            &stopped,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let (code, out, err) = cli(false);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1. Nextcloud 30.0.0.0 → 31.0.0.0: Nextcloud upgrade"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "2. Nextcloud's PostgreSQL {pg_version} → 17.6: PostgreSQL major migration"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("unchanged: Nextcloud's Redis {redis_version}")),
        "{out}"
    );
    let (_, out, _) = cli(true);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hop = &v["plan"]["hops"][1];
    assert_eq!(hop["kind"], "postgres_migration");
    assert_eq!(hop["disk"]["scratch_bytes"].as_u64(), Some(db_bytes));
    assert_eq!(hop["disk"]["kept_bytes"].as_u64(), Some(db_bytes));
}
