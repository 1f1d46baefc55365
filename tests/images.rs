//! The test images of `images/testing/`, built and run on the real Docker
//! Engine: the stand-ins accept exactly what the catalog (`src/apps`)
//! gives them and refuse what upstream refuses (a wrong key, a skipped
//! major version, a downgrade, a skipped required patch release, settings
//! out of order, a forged DiscourseConnect payload); their releases
//! upgrade as upstream's do (Nextcloud's entrypoint and `occ upgrade`,
//! maintenance mode, a broken release, a volume and a database restored
//! apart; Discourse's migrations on boot); the real PostgreSQL and Redis, built from Debian's packages,
//! keep the official images' contract (secrets from files, init scripts
//! once, data across containers, dump and restore, passwords).
//!
//! Each test labels what it creates with its own run id and removes it when
//! it ends, failed or not (`common::images::Lab`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::images::{self, Lab, Run, http, wait_http};
use commonscloud::apps::{ContainerSpec, MountSource, Value, Wiring};
use serde_json::json;
use sha2::{Digest, Sha256};

const SECS: fn(u64) -> Duration = Duration::from_secs;

// ---- small codecs for playing the DiscourseConnect provider ---------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in text.bytes().filter(|b| *b != b'=') {
        let v = B64.iter().position(|c| *c == b).expect("standard base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (dec(k), dec(v)))
        .collect()
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- the catalog on the test images -----------------------------------------

/// The test image for a catalog image reference: a stand-in, or real
/// PostgreSQL and Redis built from Debian's packages.
async fn test_image_for(lab: &Lab, image: &str) -> String {
    let (name, args): (&str, Vec<(&str, String)>) =
        if let Some(tag) = image.strip_prefix("nextcloud:") {
            let major = tag.split(['-', '.']).next().unwrap_or("31");
            (
                "nextcloud",
                vec![("NEXTCLOUD_VERSION", format!("{major}.0.0"))],
            )
        } else if image.starts_with("pgvector/") {
            // Debian has pgvector for 17 (trixie), not for 15 (bookworm).
            return images::debian("postgres:17");
        } else if image.starts_with("postgres:") {
            return images::debian("postgres:15");
        } else if image.starts_with("redis:") {
            return images::debian("redis");
        } else if image.starts_with("collabora/") {
            ("collabora", vec![])
        } else if image.starts_with("discourse/") {
            ("discourse", vec![])
        } else {
            panic!("no stand-in image for {image}")
        };
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    images::image(&lab.docker, name, &args).await
}

/// Secret files as the daemon makes them (random hex, 0600), on demand.
struct Secrets<'a> {
    lab: &'a Lab,
    made: Mutex<HashMap<String, String>>,
}

impl Secrets<'_> {
    fn get(&self, name: &str) -> (PathBuf, String) {
        let mut made = self.made.lock().unwrap();
        let content = made
            .entry(name.to_owned())
            .or_insert_with(|| {
                let v = random_hex(32);
                self.lab.secret(name, &v, 0o600);
                v
            })
            .clone();
        (self.lab.dir.path().join("secrets").join(name), content)
    }

    fn value(&self, v: &Value) -> String {
        #[allow(unreachable_patterns)]
        match v {
            Value::Plain(s) => s.clone(),
            Value::Secret(name) => self.get(name).1,
            other => panic!("unknown catalog value {other:?}"),
        }
    }
}

fn run_for(
    spec: &ContainerSpec,
    image: String,
    nets: &HashMap<String, String>,
    vols: &HashMap<String, String>,
    secrets: &Secrets<'_>,
) -> Run {
    let mut run = Run::new(&spec.role, &image);
    run.env = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), secrets.value(v)))
        .collect();
    run.entrypoint = spec.entrypoint.clone();
    run.cmd = spec.cmd.clone();
    run.user = spec.user.clone();
    for m in &spec.mounts {
        #[allow(unreachable_patterns)]
        match &m.source {
            MountSource::Volume(v) => run.volumes.push((vols[v].clone(), m.target.clone())),
            MountSource::Secret(s) => run.binds.push((secrets.get(s).0, m.target.clone())),
            // The appliance's public files (the local CA): an empty
            // directory here, as no CA signs this lab's directory anyway.
            MountSource::State(path) => {
                let dir = secrets.lab.dir.path().join("state").join(path);
                std::fs::create_dir_all(&dir).unwrap();
                run.binds.push((dir, m.target.clone()));
            }
            other => panic!("unknown mount source {other:?}"),
        }
    }
    // Docker resolves a container by its name too: the catalog's own name
    // (its wiring uses it, e.g. richdocuments' wopi_url) becomes an alias.
    run.networks = spec
        .networks
        .iter()
        .map(|n| (nets[n].clone(), vec![spec.role.clone(), spec.name.clone()]))
        .collect();
    run.publish = spec.publish.map(|(_, c)| c);
    run.health = spec.health.as_ref().map(|h| h.test.clone());
    run.cap_add = spec.cap_add.clone();
    run.cap_drop = spec.cap_drop.clone();
    run.memory_mb = Some(spec.memory_mb.max(64));
    run
}

#[tokio::test]
async fn the_catalog_runs_and_wires_on_the_test_images() {
    let app = common::Appliance::new();
    let mut config = commonscloud::config::load(&app.config).unwrap();
    config.apps.enabled = commonscloud::model::AppName::ALL.to_vec();
    config.apps.force = true;
    let desired = commonscloud::apps::desired(&config).unwrap();
    let lab = Lab::new().await;
    let secrets = Secrets {
        lab: &lab,
        made: Mutex::default(),
    };
    for s in &desired.secrets {
        secrets.get(&s.name);
    }
    let mut nets = HashMap::new();
    for n in &desired.networks {
        nets.insert(n.name.clone(), lab.network(n.internal).await);
    }
    let mut vols = HashMap::new();
    for v in &desired.volumes {
        vols.insert(v.name.clone(), lab.volume().await);
    }

    // Databases first, then the apps, then the sidecars without a health
    // check (cron), each phase waited for.
    let mut started: HashMap<String, images::Started> = HashMap::new();
    let phases: [&dyn Fn(&ContainerSpec) -> bool; 3] = [
        &|c| c.role.ends_with("-db") || c.role.ends_with("-redis"),
        &|c| c.health.is_some(),
        &|_| true,
    ];
    for phase in phases {
        let mut now = Vec::new();
        for spec in &desired.containers {
            if started.contains_key(&spec.name) || !phase(spec) {
                continue;
            }
            let image = test_image_for(&lab, &spec.image).await;
            let s = lab
                .start(&run_for(spec, image, &nets, &vols, &secrets))
                .await;
            now.push((spec.clone(), s.clone()));
            started.insert(spec.name.clone(), s);
        }
        for (spec, s) in now {
            if spec.health.is_some() {
                lab.wait_healthy(&s.name, SECS(60)).await;
            }
        }
    }
    let by_role = |role: &str| -> images::Started {
        let spec = desired
            .containers
            .iter()
            .find(|c| c.role == role)
            .unwrap_or_else(|| panic!("no {role} in the catalog"));
        started[&spec.name].clone()
    };
    let c = |name: &str| -> String {
        started
            .get(name)
            .unwrap_or_else(|| panic!("the wiring names container {name}, which the catalog lacks"))
            .name
            .clone()
    };

    // Every wiring step, in the catalog's order.
    for (app_name, w) in &desired.wiring {
        #[allow(unreachable_patterns)]
        match w {
            Wiring::Occ { container, args } => {
                let args: Vec<String> = args.iter().map(|a| secrets.value(a)).collect();
                let mut cmd = vec!["php", "occ"];
                cmd.extend(args.iter().map(String::as_str));
                let e = lab.exec(&c(container), "www-data", &cmd).await;
                if args.first().map(String::as_str) == Some("ldap:test-config") {
                    // No directory listens on this lab's network (tests/apps.rs
                    // runs it with the daemon's slapd): the real command, a
                    // real bind attempt, and an honest verdict.
                    assert!(
                        e.stdout.contains("The configuration is invalid") && e.code != 0,
                        "{app_name}: occ {args:?}: {}",
                        e.show()
                    );
                    continue;
                }
                assert_eq!(e.code, 0, "{app_name}: occ {args:?}: {}", e.show());
            }
            Wiring::GroupFolder {
                container,
                folder,
                group,
            } => {
                let nc = c(container);
                let list = lab
                    .exec(
                        &nc,
                        "www-data",
                        &["php", "occ", "groupfolders:list", "--output=json"],
                    )
                    .await;
                assert_eq!(list.code, 0, "{}", list.show());
                let folders: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
                let existing = folders
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["mount_point"] == folder.as_str())
                    .map(|f| f["id"].to_string());
                let id = match existing {
                    Some(id) => id,
                    None => {
                        let e = lab
                            .exec(
                                &nc,
                                "www-data",
                                &["php", "occ", "groupfolders:create", folder],
                            )
                            .await;
                        assert_eq!(e.code, 0, "{}", e.show());
                        e.stdout.trim().to_owned()
                    }
                };
                let e = lab
                    .exec(
                        &nc,
                        "www-data",
                        &[
                            "php",
                            "occ",
                            "groupfolders:group",
                            &id,
                            group,
                            "write",
                            "share",
                            "delete",
                        ],
                    )
                    .await;
                assert_eq!(e.code, 0, "{}", e.show());
            }
            Wiring::Exec {
                container,
                user,
                cmd,
            } => {
                let cmd: Vec<String> = cmd.iter().map(|a| secrets.value(a)).collect();
                let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
                // Secrets are 0600 and the daemon's: an exec that reads one
                // runs as root in the catalog, or this fails.
                let e = lab.exec(&c(container), user, &argv).await;
                assert_eq!(
                    e.code,
                    0,
                    "{app_name}: exec {argv:?} as {user}: {}",
                    e.show()
                );
            }
            Wiring::DiscourseSetting {
                container,
                name,
                value,
            } => {
                let port = started[container].port.expect("discourse publishes a port");
                let key = secrets.get("discourse-api-key").1;
                let body = json!({ name: secrets.value(value) }).to_string();
                let (status, _, text) = http(
                    "PUT",
                    port,
                    &format!("/admin/site_settings/{name}"),
                    &[
                        ("Api-Key", &key),
                        ("Api-Username", "system"),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                );
                assert_eq!(status, 200, "{app_name}: setting {name}: {text}");
            }
            Wiring::DiscourseGroup {
                container,
                name,
                full_name,
            } => {
                let port = started[container].port.expect("discourse publishes a port");
                let key = secrets.get("discourse-api-key").1;
                let auth = [("Api-Key", key.as_str()), ("Api-Username", "system")];
                let (status, _, _) = http("GET", port, &format!("/groups/{name}.json"), &auth, b"");
                assert_eq!(status, 404, "no group {name} before the step");
                let body = json!({"group": {"name": name, "full_name": full_name}}).to_string();
                let mut headers = auth.to_vec();
                headers.push(("Content-Type", "application/json"));
                let (status, _, text) = http(
                    "POST",
                    port,
                    "/admin/groups.json",
                    &headers,
                    body.as_bytes(),
                );
                assert_eq!(status, 200, "{app_name}: group {name}: {text}");
                let (status, _, text) =
                    http("GET", port, &format!("/groups/{name}.json"), &auth, b"");
                assert_eq!(status, 200, "{text}");
                assert!(text.contains(full_name.as_str()), "{text}");
            }
            other => panic!("unknown wiring step {other:?}"),
        }
    }

    // Nextcloud: status.php on the published port, and what occ recorded.
    let nc = by_role("nextcloud").name;
    let nc_port = by_role("nextcloud").port.unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&wait_http(nc_port, "/status.php", 200, SECS(10)).await).unwrap();
    assert_eq!(status["installed"], true, "{status}");
    assert_eq!(status["maintenance"], false, "{status}");
    assert_eq!(status["needsDbUpgrade"], false, "{status}");
    assert_eq!(status["version"], "31.0.0.0", "{status}");
    assert_eq!(status["productname"], "Nextcloud", "{status}");
    // This lab's network is not the catalog's bridge: its gateway is no
    // trusted proxy, so a forwarded client address is ignored, while the
    // overwrite settings still make every URL https on the public host.
    let forged = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
    ];
    let (code, _, body) = http("GET", nc_port, "/standin/request.json", &forged, b"");
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let peer = seen["peer"].as_str().unwrap().to_owned();
    let trusted = commonscloud::apps::nextcloud::front_door_address(&config);
    assert_ne!(peer, trusted, "the lab's gateway is the catalog's: {seen}");
    assert_eq!(
        seen["remote_address"],
        peer.as_str(),
        "an untrusted peer's X-Forwarded-For counted: {seen}"
    );
    let cloud = config.hostnames.cloud.as_ref().unwrap().to_string();
    assert_eq!(seen["absolute_url"], format!("https://{cloud}/"), "{seen}");
    // A host Nextcloud was not told about is refused, as upstream does.
    let (code, _, body) = http("GET", nc_port, "/", &[("Host", "evil.example.com")], b"");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("untrusted domain"), "{body}");

    let state: serde_json::Value =
        serde_json::from_str(&lab.cat(&nc, "/var/www/html/standin-state.json").await).unwrap();
    let s01 = &state["ldap"]["s01"];
    let mut set_keys = 0;
    for (_, w) in &desired.wiring {
        if let Wiring::Occ { args, .. } = w
            && args.first() == Some(&Value::plain("ldap:set-config"))
        {
            let key = secrets.value(&args[2]);
            assert_eq!(
                s01[&key].as_str(),
                Some(secrets.value(&args[3]).as_str()),
                "{key} in {s01:#}"
            );
            set_keys += 1;
        }
    }
    assert!(set_keys >= 20, "only {set_keys} ldap keys set");
    assert_eq!(s01["ldapAgentPassword"], secrets.get("ldap-nextcloud").1);
    assert_eq!(s01["ldapConfigurationActive"], "1");
    for a in ["user_ldap", "groupfolders", "richdocuments"] {
        assert!(
            state["apps"].get(a).is_some(),
            "{a} not enabled: {}",
            state["apps"]
        );
    }
    let host = |h: &Option<commonscloud::model::Domain>| h.as_ref().unwrap().to_string();
    assert_eq!(
        state["system"]["trusted_domains"]["0"],
        host(&config.hostnames.cloud)
    );
    assert_eq!(
        state["app_config"]["richdocuments"]["public_wopi_url"],
        format!("https://{}", host(&config.hostnames.office))
    );
    let folders = state["groupfolders"].as_array().unwrap();
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert_eq!(
        folders[0]["mount_point"],
        config.collective.name.to_string()
    );
    assert_eq!(
        folders[0]["groups"][format!("{}-members", config.collective.slug)],
        31,
        "write share delete (and read) = 31"
    );

    // occ refuses what the real one would not do, and wrong keys.
    let occ = |args: &'static [&'static str]| {
        let mut cmd = vec!["php", "occ"];
        cmd.extend(args);
        cmd
    };
    let e = lab
        .exec(
            &nc,
            "www-data",
            &occ(&["ldap:set-config", "s01", "ldapHots", "ldap://x"]),
        )
        .await;
    assert_ne!(e.code, 0, "{}", e.show());
    assert!(
        e.stderr.contains("ldapHots") && e.stderr.contains("ldapHost"),
        "{}",
        e.show()
    );
    for (args, why) in [
        (
            &["ldap:set-config", "s07", "ldapHost", "ldap://x"][..],
            "Invalid configID",
        ),
        (
            &[
                "ldap:set-config",
                "s01",
                "ldapGroupMemberAssocAttr",
                "members",
            ][..],
            "member",
        ),
        (&["ldap:set-config", "s01", "ldapTLS", "true"][..], "0 or 1"),
        (&["app:enabel", "user_ldap"][..], "is not defined"),
        (
            &["app:enable", "no_such_app"][..],
            "not found on the appstore",
        ),
        (
            &["config:system:set", "x", "--value=1", "--type=bolean"][..],
            "Invalid type",
        ),
        (&["ldap:show-config", "--nope"][..], "does not exist"),
        (
            &["groupfolders:group", "99", "g", "write"][..],
            "Folder not found",
        ),
    ] {
        let e = lab.exec(&nc, "www-data", &occ(args)).await;
        assert_ne!(e.code, 0, "occ {args:?} succeeded: {}", e.show());
        assert!(
            format!("{}{}", e.stdout, e.stderr).contains(why),
            "occ {args:?} failed without saying {why:?}: {}",
            e.show()
        );
    }
    let e = lab.exec(&nc, "root", &["php", "occ", "status"]).await;
    assert_ne!(e.code, 0, "occ as root ran: {}", e.show());
    assert!(e.stderr.contains("-u 33"), "{}", e.show());
    let e = lab
        .exec(
            &nc,
            "www-data",
            &occ(&["ldap:show-config", "s01", "--output=json"]),
        )
        .await;
    assert_eq!(e.code, 0, "{}", e.show());
    let shown: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(shown["s01"]["ldapAgentPassword"], "***");
    assert_eq!(shown["s01"]["ldapHost"], s01["ldapHost"]);

    // The cron sidecar runs cron.php on the same volume.
    let until = std::time::Instant::now() + SECS(20);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&lab.cat(&nc, "/var/www/html/standin-state.json").await).unwrap();
        if st["cron_runs"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < until, "cron never ran: {st}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Collabora: discovery on the published port names the public host.
    let office = by_role("collabora").port.unwrap();
    let (code, _, xml) = http("GET", office, "/hosting/discovery", &[], b"");
    assert_eq!(code, 200);
    assert!(
        xml.contains(&format!(
            "urlsrc=\"https://{}/",
            host(&config.hostnames.office)
        )),
        "{xml}"
    );

    // Discourse: the settings landed, and the database has its extensions.
    let forum = by_role("discourse").port.unwrap();
    let key = secrets.get("discourse-api-key").1;
    let (code, _, body) = http(
        "GET",
        forum,
        "/admin/site_settings.json",
        &[("Api-Key", &key), ("Api-Username", "system")],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let settings: serde_json::Value = serde_json::from_str(&body).unwrap();
    let setting = |n: &str| {
        settings["site_settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["setting"] == n)
            .map(|s| s["value"].clone())
            .unwrap()
    };
    assert_eq!(setting("enable_discourse_connect"), "true");
    assert_eq!(
        setting("discourse_connect_url"),
        commonscloud::apps::discourse::connect_url(&config.console_host().to_string())
    );
    let ddb = by_role("discourse-db").name;
    let dump = lab
        .exec(
            &ddb,
            "postgres",
            &["pg_dump", "-U", "discourse", "discourse"],
        )
        .await;
    assert_eq!(dump.code, 0, "{}", dump.show());
    for ext in ["hstore", "pg_trgm", "vector"] {
        assert!(
            dump.stdout
                .contains(&format!("CREATE EXTENSION IF NOT EXISTS {ext} ")),
            "{}",
            dump.stdout
        );
    }
}

// ---- Nextcloud: install and upgrade rules -------------------------------------

const NC_DB_SECRET: &str = "/run/secrets/nextcloud-db-password";
const NC_ADMIN_SECRET: &str = "/run/secrets/nextcloud-admin-password";

fn nextcloud_env(run: Run) -> Run {
    run.env("POSTGRES_HOST", "nextcloud-db")
        .env("POSTGRES_DB", "nextcloud")
        .env("POSTGRES_USER", "nextcloud")
        .env("POSTGRES_PASSWORD_FILE", NC_DB_SECRET)
        .env("NEXTCLOUD_ADMIN_USER", "admin")
        .env("NEXTCLOUD_ADMIN_PASSWORD_FILE", NC_ADMIN_SECRET)
        .env("NEXTCLOUD_TRUSTED_DOMAINS", "cloud.example.org")
}

/// The health check the catalog gives a container of `role`.
fn catalog_health(role: &str) -> Vec<String> {
    let app = common::Appliance::new();
    let mut config = commonscloud::config::load(&app.config).unwrap();
    config.apps.enabled = commonscloud::model::AppName::ALL.to_vec();
    config.apps.force = true;
    let desired = commonscloud::apps::desired(&config).unwrap();
    let spec = desired
        .containers
        .iter()
        .find(|c| c.role == role)
        .unwrap_or_else(|| panic!("no {role} in the catalog"));
    let test = spec.health.as_ref().expect("a health check").test.clone();
    assert_eq!(test[0], "CMD", "{test:?}");
    test[1..].to_vec()
}

/// What the entrypoint records for an upgrade that went through, in
/// upstream's order.
const UPGRADE_STEPS: [&str; 9] = [
    "version check",
    "enabled apps listed",
    "rsync",
    "version.php",
    "pre-upgrade hooks",
    "occ upgrade (exit 0)",
    "disabled apps listed",
    "post-upgrade hooks",
    "initializing finished",
];

/// A Nextcloud lab: the real PostgreSQL 15 with its database, and what a
/// stand-in needs to install on it.
struct Nc<'a> {
    lab: &'a Lab,
    net: String,
    db: String,
    db_pw: PathBuf,
    admin_pw: PathBuf,
    /// Hooks bound into `/docker-entrypoint-hooks.d` (stage, host dir).
    hooks: Vec<(String, PathBuf)>,
}

impl<'a> Nc<'a> {
    async fn new(lab: &'a Lab) -> Nc<'a> {
        let pg = images::debian("postgres:15");
        let db_pw = lab.secret("nextcloud-db-password", &random_hex(32), 0o600);
        let admin_pw = lab.secret("nextcloud-admin-password", &random_hex(32), 0o600);
        let net = lab.network(false).await;
        let mut db = pg_run(&pg, "db")
            .env("POSTGRES_DB", "nextcloud")
            .env("POSTGRES_USER", "nextcloud")
            .env("POSTGRES_PASSWORD_FILE", NC_DB_SECRET);
        db.binds = vec![(db_pw.clone(), NC_DB_SECRET.into())];
        db.networks = vec![(net.clone(), vec!["nextcloud-db".into()])];
        db.volumes = vec![(lab.volume().await, "/var/lib/postgresql/data".into())];
        let db = lab.start(&db).await;
        lab.wait_healthy(&db.name, SECS(60)).await;
        Nc {
            lab,
            net,
            db: db.name,
            db_pw,
            admin_pw,
            hooks: Vec::new(),
        }
    }

    /// Hooks that record, for each upgrade, what the volume's code and
    /// config.php say when they run (in `data/hooks.log`).
    fn with_recording_hooks(mut self) -> Self {
        use std::os::unix::fs::PermissionsExt;
        for stage in ["pre-upgrade", "post-upgrade"] {
            let dir = self.lab.dir.path().join("hooks").join(stage);
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join("10-record.sh");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nset -e\ncd /var/www/html\n\
                     code=$(grep -o \"OC_VersionString = '[0-9.]*'\" version.php | cut -d\"'\" -f2)\n\
                     conf=$(grep -o \"'version' => '[0-9.]*'\" config/config.php | cut -d\"'\" -f4)\n\
                     echo \"{stage} code=$code config=$conf user=$(id -u)\" >> data/hooks.log\n"
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            self.hooks.push((stage.into(), dir));
        }
        self
    }

    fn web(&self, image: &str, volume: &str) -> Run {
        let mut r = nextcloud_env(Run::new("nextcloud", image));
        r.binds = vec![
            (self.db_pw.clone(), NC_DB_SECRET.into()),
            (self.admin_pw.clone(), NC_ADMIN_SECRET.into()),
        ];
        for (stage, dir) in &self.hooks {
            r.binds
                .push((dir.clone(), format!("/docker-entrypoint-hooks.d/{stage}")));
        }
        r.networks = vec![(self.net.clone(), vec!["nextcloud".into()])];
        r.volumes = vec![(volume.to_owned(), "/var/www/html".into())];
        r
    }

    /// Starts release `version` on `volume`: the container's name.
    async fn start(&self, version: &str, volume: &str) -> String {
        let image = images::nextcloud(&self.lab.docker, version).await;
        self.lab.start(&self.web(&image, volume)).await.name
    }

    /// `GET /<path>` from inside the container: (status, body), `None`
    /// while nothing listens.
    async fn get(&self, c: &str, path: &str) -> Option<(u16, String)> {
        let url = format!("http://localhost{path}");
        let e = self.lab.exec(c, "www-data", &["curl", "-si", &url]).await;
        if e.code != 0 {
            return None;
        }
        let (head, body) = e.stdout.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    /// Polls status.php until `ok` holds for its status and JSON (`null`
    /// when the body is none); what it answered.
    async fn wait_status(
        &self,
        c: &str,
        what: &str,
        ok: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let until = std::time::Instant::now() + SECS(60);
        loop {
            let got = self.get(c, "/status.php").await;
            if let Some((code, body)) = &got {
                let v = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
                if ok(*code, &v) {
                    return v;
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "status.php never said {what}: {got:?}\nlogs:\n{}",
                self.lab.logs(c).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until status.php answers 200 with `key` true.
    async fn wait_true(&self, c: &str, key: &str) -> serde_json::Value {
        self.wait_status(c, key, |code, s| code == 200 && s[key] == true)
            .await
    }

    /// Waits until status.php says installed at `version`, healthy.
    async fn wait_ready(&self, c: &str, version: &str) -> serde_json::Value {
        let full = format!("{version}.0");
        self.wait_status(c, &format!("{full}, ready"), |code, s| {
            code == 200
                && s["installed"] == true
                && s["version"] == full.as_str()
                && s["maintenance"] == false
                && s["needsDbUpgrade"] == false
        })
        .await
    }

    async fn occ(&self, c: &str, args: &[&str]) -> images::Exec {
        let mut cmd = vec!["php", "occ"];
        cmd.extend(args);
        self.lab.exec(c, "www-data", &cmd).await
    }

    async fn occ_ok(&self, c: &str, args: &[&str]) -> String {
        let e = self.occ(c, args).await;
        assert_eq!(e.code, 0, "occ {args:?}: {}", e.show());
        e.stdout
    }

    async fn state(&self, c: &str) -> serde_json::Value {
        serde_json::from_str(&self.lab.cat(c, "/var/www/html/standin-state.json").await).unwrap()
    }

    /// The catalog's health check, run in the container: its exit code.
    async fn health(&self, c: &str) -> i64 {
        let test = catalog_health("nextcloud");
        let cmd: Vec<&str> = test.iter().map(String::as_str).collect();
        self.lab.exec(c, "www-data", &cmd).await.code
    }

    /// The version the database records for `app`.
    async fn app_version(&self, app: &str) -> String {
        sql_ok(
            self.lab,
            &self.db,
            "nextcloud",
            "nextcloud",
            &format!(
                "SELECT configvalue FROM oc_appconfig WHERE appid = '{app}' AND configkey = 'installed_version'"
            ),
        )
        .await
    }

    /// A PostgreSQL tool run in the database's container, which must
    /// succeed.
    async fn pg_tool(&self, cmd: &[&str]) {
        let e = self.lab.exec(&self.db, "postgres", cmd).await;
        assert_eq!(e.code, 0, "{cmd:?}: {}", e.show());
    }

    /// `pg_dump -Fc` of the database to `/tmp/<name>` in its container.
    async fn dump(&self, name: &str) {
        let path = format!("/tmp/{name}");
        self.pg_tool(&[
            "pg_dump",
            "-Fc",
            "-U",
            "nextcloud",
            "-d",
            "nextcloud",
            "-f",
            &path,
        ])
        .await;
    }

    /// Restores the dump `name` over the database.
    async fn restore(&self, name: &str) {
        let path = format!("/tmp/{name}");
        self.pg_tool(&[
            "pg_restore",
            "--clean",
            "--if-exists",
            "-U",
            "nextcloud",
            "-d",
            "nextcloud",
            &path,
        ])
        .await;
    }

    /// A shell script run as root on `volumes`, to its end; its output.
    async fn sh(&self, volumes: &[(&str, &str)], script: &str) -> String {
        let image = images::nextcloud(&self.lab.docker, "31.0.5").await;
        let (code, out) = self.lab.sh(&image, volumes, script).await;
        assert_eq!(code, 0, "{script}: {out}");
        out
    }

    /// Every entry of the volume: its path, mode, owner, and for files the
    /// size and SHA-256.
    async fn digest(&self, volume: &str) -> String {
        self.sh(
            &[(volume, "/v")],
            "cd /v && find . | sort | while read -r f; do \
               if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then \
                 echo \"$(stat -c '%n %a %u:%g %s' \"$f\") $(sha256sum < \"$f\" | cut -d' ' -f1)\"; \
               else stat -c '%n %a %u:%g %F' \"$f\"; fi; done",
        )
        .await
    }

    /// A copy of the volume (a backup taken while no container runs).
    async fn copy(&self, volume: &str) -> String {
        let to = self.lab.volume().await;
        self.sh(&[(volume, "/from"), (&to, "/to")], "cp -a /from/. /to/")
            .await;
        to
    }

    /// A file of the volume (empty when missing).
    async fn read(&self, volume: &str, path: &str) -> String {
        self.sh(
            &[(volume, "/v")],
            &format!("cat /v/{path} 2>/dev/null || true"),
        )
        .await
    }
}

/// The (from, to) of each install and upgrade the entrypoint logged, and
/// the steps of the last.
fn upgrade_log(st: &serde_json::Value) -> (Vec<(String, String)>, Vec<String>) {
    let all = st["upgrades"].as_array().cloned().unwrap_or_default();
    let pairs = all
        .iter()
        .map(|u| {
            (
                u["from"].as_str().unwrap_or("").to_owned(),
                u["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let steps = all
        .last()
        .and_then(|u| u["steps"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_owned())
        .collect();
    (pairs, steps)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn nextcloud_climbs_one_major_at_a_time_through_the_required_patch_keeping_its_data() {
    let lab = Lab::new().await;
    let nc = Nc::new(&lab).await.with_recording_hooks();
    let html = lab.volume().await;

    // 30 installs; some data, a setting, an app.
    let c = nc.start("30.0.17", &html).await;
    nc.wait_ready(&c, "30.0.17").await;
    let (_, steps) = upgrade_log(&nc.state(&c).await);
    assert_eq!(
        steps,
        [
            "version check",
            "rsync",
            "version.php",
            "installed",
            "initializing finished"
        ]
    );
    let e = lab
        .exec(
            &c,
            "www-data",
            &[
                "sh",
                "-c",
                "mkdir -p data/admin/files && echo kept > data/admin/files/hello.txt",
            ],
        )
        .await;
    assert_eq!(e.code, 0, "{}", e.show());
    nc.occ_ok(
        &c,
        &["config:system:set", "default_phone_region", "--value=ES"],
    )
    .await;
    nc.occ_ok(&c, &["app:enable", "user_ldap"]).await;
    assert_eq!(nc.app_version("files").await, "30.0.17");
    assert_eq!(nc.app_version("user_ldap").await, "30.0.17");
    lab.remove(&c).await;

    // 32 on 30: the entrypoint refuses before it changes a byte.
    let before = nc.digest(&html).await;
    let c = nc.start("32.0.0", &html).await;
    assert_eq!(lab.wait_exit(&c, SECS(30)).await, 1);
    let logs = lab.logs(&c).await;
    assert!(
        logs.contains(
            "Can't start Nextcloud because upgrading from 30.0.17.0 to 32.0.0.0 is not supported."
        ) && logs.contains("It is only possible to upgrade one major version at a time."),
        "{logs}"
    );
    assert_eq!(
        nc.digest(&html).await,
        before,
        "the refused 32 changed the volume"
    );
    assert_eq!(nc.app_version("files").await, "30.0.17");
    lab.remove(&c).await;

    // 31.0.0 upgrades it in upstream's order: the code and version.php
    // first, then the pre-upgrade hooks, occ upgrade, the post-upgrade
    // hooks.
    let c = nc.start("31.0.0", &html).await;
    nc.wait_ready(&c, "31.0.0").await;
    lab.wait_log(&c, "Upgrading nextcloud from 30.0.17.0 ...", SECS(5))
        .await;
    let (log, steps) = upgrade_log(&nc.state(&c).await);
    assert_eq!(
        log,
        pairs(&[("0.0.0.0", "30.0.17.0"), ("30.0.17.0", "31.0.0.0")])
    );
    assert_eq!(steps, UPGRADE_STEPS);
    assert_eq!(
        lab.cat(&c, "/var/www/html/data/hooks.log").await,
        "pre-upgrade code=31.0.0 config=30.0.17.0 user=33\npost-upgrade code=31.0.0 config=31.0.0.0 user=33\n"
    );
    // The data, the settings and the apps stay; the old code goes.
    assert_eq!(
        lab.cat(&c, "/var/www/html/data/admin/files/hello.txt")
            .await,
        "kept\n"
    );
    assert_eq!(
        nc.occ_ok(&c, &["config:system:get", "default_phone_region"])
            .await
            .trim(),
        "ES"
    );
    assert!(
        nc.occ_ok(&c, &["app:list"])
            .await
            .contains("  - user_ldap: 31.0.0")
    );
    let files = lab
        .exec(&c, "root", &["ls", "/var/www/html/core"])
        .await
        .stdout;
    assert_eq!(files.trim(), "release-31.0.0.txt", "rsync --delete");
    assert_eq!(nc.app_version("files").await, "31.0.0");
    assert_eq!(nc.app_version("user_ldap").await, "31.0.0");
    lab.remove(&c).await;

    // 32.0.0 on 31.0.0: one major, so the entrypoint copies it, but occ
    // upgrade refuses (32 needs 31.0.5) and keeps maintenance on; the
    // entrypoint stops with occ's status. A backup first, as an upgrade
    // executor takes it: the volume (no container running) and the
    // database.
    let backup = nc.copy(&html).await;
    nc.dump("before-32").await;
    let c = nc.start("32.0.0", &html).await;
    assert_eq!(lab.wait_exit(&c, SECS(60)).await, 5);
    let logs = lab.logs(&c).await;
    for line in [
        "Exception: Updates between multiple major versions and downgrades are unsupported.",
        "Update failed",
        "Maintenance mode is kept active",
        "upgrade to 31.0.5 first",
    ] {
        assert!(logs.contains(line), "{line:?} in:\n{logs}");
    }
    assert!(!logs.contains("Initializing finished"), "{logs}");
    let config = nc.read(&html, "config/config.php").await;
    assert!(
        config.contains("'version' => '31.0.0.0',") && config.contains("'maintenance' => true,"),
        "config.php keeps the old version, in maintenance:\n{config}"
    );
    assert!(
        nc.read(&html, "version.php")
            .await
            .contains("$OC_VersionString = '32.0.0';")
    );
    let st: serde_json::Value =
        serde_json::from_str(&nc.read(&html, "standin-state.json").await).unwrap();
    let (_, steps) = upgrade_log(&st);
    assert_eq!(
        steps.last().map(String::as_str),
        Some("occ upgrade (exit 5)")
    );
    assert_eq!(nc.app_version("files").await, "31.0.0");
    lab.remove(&c).await;

    // Stuck, as upstream: 32.0.0 again starts without upgrading, in
    // maintenance; 31.0.5 refuses the newer code on the volume.
    let c = nc.start("32.0.0", &html).await;
    let s = nc.wait_true(&c, "maintenance").await;
    assert_eq!(s["needsDbUpgrade"], true, "{s}");
    assert_eq!(nc.occ(&c, &["status", "-e"]).await.code, 1);
    assert_eq!(nc.health(&c).await, 1);
    lab.remove(&c).await;
    let c = nc.start("31.0.5", &html).await;
    assert_eq!(lab.wait_exit(&c, SECS(30)).await, 1);
    lab.wait_log(&c, "the version of the data (32.0.0.0) is higher than the docker image version (31.0.5.0) and downgrading is not supported", SECS(5)).await;
    lab.remove(&c).await;

    // Restored together (the volume's copy and the dump), the path goes
    // through the required patch.
    nc.restore("before-32").await;
    let html = backup;
    for v in ["31.0.5", "32.0.0"] {
        let c = nc.start(v, &html).await;
        nc.wait_ready(&c, v).await;
        lab.remove(&c).await;
    }
    let c = nc.start("32.0.0", &html).await;
    nc.wait_ready(&c, "32.0.0").await;
    let (log, steps) = upgrade_log(&nc.state(&c).await);
    assert_eq!(
        log,
        pairs(&[
            ("0.0.0.0", "30.0.17.0"),
            ("30.0.17.0", "31.0.0.0"),
            ("31.0.0.0", "31.0.5.0"),
            ("31.0.5.0", "32.0.0.0")
        ])
    );
    assert_eq!(steps, UPGRADE_STEPS);
    assert_eq!(
        lab.cat(&c, "/var/www/html/data/admin/files/hello.txt")
            .await,
        "kept\n"
    );
    assert_eq!(nc.app_version("files").await, "32.0.0");
    assert_eq!(nc.app_version("user_ldap").await, "32.0.0");
    assert_eq!(nc.health(&c).await, 0);
}

#[tokio::test]
async fn nextcloud_entrypoints_serialise_and_only_the_web_server_upgrades() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new().await;
    let mut nc = Nc::new(&lab).await;
    // A slow pre-installation hook holds the first entrypoint in its
    // locked section while the second starts.
    let dir = lab.dir.path().join("hooks/pre-installation");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10-slow.sh"), "#!/bin/sh\nsleep 3\n").unwrap();
    std::fs::set_permissions(
        dir.join("10-slow.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    nc.hooks.push(("pre-installation".into(), dir));
    let html = lab.volume().await;
    let a = nc.start("31.0.5", &html).await;
    lab.wait_log(&a, "Searching for hook scripts", SECS(30))
        .await;
    let b = nc.start("31.0.5", &html).await;
    nc.wait_ready(&a, "31.0.5").await;
    nc.wait_ready(&b, "31.0.5").await;
    lab.wait_log(
        &b,
        "Another process is initializing Nextcloud. Waiting...",
        SECS(5),
    )
    .await;
    let (log, _) = upgrade_log(&nc.state(&a).await);
    assert_eq!(log, pairs(&[("0.0.0.0", "31.0.5.0")]), "one install");
    lab.remove(&a).await;
    lab.remove(&b).await;
    nc.hooks.clear();

    // The cron sidecar (entrypoint /cron.sh) and any command but the web
    // server's leave the code alone; NEXTCLOUD_UPDATE=1 upgrades anyway.
    let image = images::nextcloud(&lab.docker, "32.0.0").await;
    let mut cron = nc.web(&image, &html).env("STANDIN_CRON_SECONDS", "3600");
    cron.entrypoint = Some(vec!["/cron.sh".into()]);
    let cron = lab.start(&cron).await.name;
    lab.wait_log(&cron, "crond (stand-in)", SECS(30)).await;
    let mut other = nc.web(&image, &html);
    other.cmd = Some(vec!["true".into()]);
    let other = lab.start(&other).await.name;
    assert_eq!(lab.wait_exit(&other, SECS(30)).await, 0);
    assert!(
        nc.read(&html, "version.php")
            .await
            .contains("$OC_VersionString = '31.0.5';")
    );
    let mut update = nc.web(&image, &html).env("NEXTCLOUD_UPDATE", "1");
    update.cmd = Some(vec!["true".into()]);
    let update = lab.start(&update).await.name;
    assert_eq!(lab.wait_exit(&update, SECS(60)).await, 0);
    assert!(
        nc.read(&html, "version.php")
            .await
            .contains("$OC_VersionString = '32.0.0';")
    );
    assert!(
        nc.read(&html, "config/config.php")
            .await
            .contains("'version' => '32.0.0.0',")
    );
    assert_eq!(nc.app_version("files").await, "32.0.0");
}

#[tokio::test]
async fn nextcloud_broken_release_migrates_then_fails_its_health() {
    let lab = Lab::new().await;
    let nc = Nc::new(&lab).await;
    let html = lab.volume().await;
    let c = nc.start("31.0.5", &html).await;
    nc.wait_ready(&c, "31.0.5").await;
    assert_eq!(nc.health(&c).await, 0);
    lab.remove(&c).await;

    let c = nc.start("32.0.1", &html).await;
    let s = nc.wait_status(&c, "500", |code, _| code == 500).await;
    assert!(s.is_null(), "status.php answers 500 with no body: {s}");
    let logs = lab.logs(&c).await;
    assert!(
        logs.contains("Update successful") && logs.contains("Initializing finished"),
        "{logs}"
    );
    // Its own app list fails after the migration: upstream's entrypoint
    // then lists every app as disabled.
    assert!(
        logs.contains("The following apps have been disabled:\nactivity\n"),
        "{logs}"
    );
    assert_eq!(nc.health(&c).await, 1);
    let e = nc.occ(&c, &["status", "--output=json"]).await;
    assert_eq!(e.code, 1, "{}", e.show());
    assert!(
        e.stdout
            .starts_with("An unhandled exception has been thrown:"),
        "{}",
        e.show()
    );
    let (code, _) = nc.get(&c, "/index.php/login").await.unwrap();
    assert_eq!(code, 500);
    // It migrated: config.php and the database say 32.0.1.
    assert!(
        lab.cat(&c, "/var/www/html/config/config.php")
            .await
            .contains("'version' => '32.0.1.0',")
    );
    assert_eq!(nc.app_version("files").await, "32.0.1");
    lab.remove(&c).await;

    // No way back by image: 32.0.0 and 31.0.5 both refuse the data.
    for v in ["32.0.0", "31.0.5"] {
        let c = nc.start(v, &html).await;
        assert_eq!(lab.wait_exit(&c, SECS(30)).await, 1, "{v}");
        lab.wait_log(&c, "the version of the data (32.0.1.0) is higher", SECS(5))
            .await;
        lab.remove(&c).await;
    }
}

#[tokio::test]
async fn nextcloud_maintenance_mode_through_occ_shows_in_status_and_upgrades() {
    let lab = Lab::new().await;
    let nc = Nc::new(&lab).await;
    let html = lab.volume().await;
    let c = nc.start("31.0.5", &html).await;
    nc.wait_ready(&c, "31.0.5").await;

    assert_eq!(
        nc.occ_ok(&c, &["maintenance:mode", "--on"]).await.trim(),
        "Maintenance mode enabled"
    );
    let s = nc.wait_true(&c, "maintenance").await;
    assert_eq!(s["needsDbUpgrade"], false, "{s}");
    assert_eq!(nc.get(&c, "/index.php/login").await.unwrap().0, 503);
    assert!(
        lab.cat(&c, "/var/www/html/config/config.php")
            .await
            .contains("  'maintenance' => true,\n")
    );
    // -e alone prints nothing; -v shows the values too.
    let e = nc.occ(&c, &["status", "-e"]).await;
    assert_eq!((e.code, e.stdout.as_str()), (1, ""), "{}", e.show());
    let e = nc.occ(&c, &["status", "-e", "-v", "--output=json"]).await;
    assert_eq!(e.code, 1, "{}", e.show());
    let v: serde_json::Value = serde_json::from_str(e.stdout.trim()).unwrap();
    for key in [
        "installed",
        "version",
        "versionstring",
        "edition",
        "maintenance",
        "needsDbUpgrade",
        "productname",
        "extendedSupport",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert_eq!(
        (v["version"].as_str(), v["versionstring"].as_str()),
        (Some("31.0.5.0"), Some("31.0.5"))
    );
    assert_eq!(
        nc.occ(&c, &["maintenance:mode", "--check-if-disabled"])
            .await
            .code,
        1
    );
    assert_eq!(nc.health(&c).await, 1);
    // Nothing to upgrade, but in maintenance: occ upgrade says so, exit 2.
    let e = nc.occ(&c, &["upgrade"]).await;
    assert_eq!(e.code, 2, "{}", e.show());
    assert!(e.stdout.contains("Nextcloud is in maintenance mode"));

    assert_eq!(
        nc.occ_ok(&c, &["maintenance:mode", "--off"]).await.trim(),
        "Maintenance mode disabled"
    );
    nc.wait_ready(&c, "31.0.5").await;
    assert_eq!(nc.occ(&c, &["status", "-e"]).await.code, 0);
    assert_eq!(
        nc.occ(&c, &["maintenance:mode", "--check-if-disabled"])
            .await
            .code,
        0
    );
    assert_eq!(nc.health(&c).await, 0);

    // A new release started while in maintenance upgrades, and stays in
    // maintenance (the Updater keeps the mode it found).
    nc.occ_ok(&c, &["maintenance:mode", "--on"]).await;
    lab.remove(&c).await;
    let c = nc.start("32.0.0", &html).await;
    let s = nc
        .wait_status(&c, "32.0.0.0", |code, s| {
            code == 200 && s["version"] == "32.0.0.0" && s["needsDbUpgrade"] == false
        })
        .await;
    assert_eq!(s["maintenance"], true, "{s}");
    let logs = lab.logs(&c).await;
    assert!(
        logs.contains("Update successful\nMaintenance mode is kept active"),
        "{logs}"
    );
    assert_eq!(nc.health(&c).await, 1);
    nc.occ_ok(&c, &["maintenance:mode", "--off"]).await;
    nc.wait_ready(&c, "32.0.0").await;
    assert_eq!(nc.health(&c).await, 0);
}

#[tokio::test]
async fn nextcloud_notices_a_volume_and_a_database_restored_apart() {
    let lab = Lab::new().await;
    let nc = Nc::new(&lab).await;
    let html = lab.volume().await;
    let c = nc.start("31.0.5", &html).await;
    nc.wait_ready(&c, "31.0.5").await;
    lab.remove(&c).await;
    let html31 = nc.copy(&html).await;
    nc.dump("at-31").await;
    let c = nc.start("32.0.0", &html).await;
    nc.wait_ready(&c, "32.0.0").await;

    // The database alone goes back to 31: the code on the volume is newer
    // than what the database records, so an upgrade is pending (and occ
    // upgrade, as upstream, migrates the database forward again).
    nc.restore("at-31").await;
    let s = nc.wait_true(&c, "needsDbUpgrade").await;
    assert_eq!(
        (s["version"].as_str(), &s["maintenance"]),
        (Some("32.0.0.0"), &json!(false)),
        "{s}"
    );
    assert_eq!(nc.occ(&c, &["status", "-e"]).await.code, 2);
    assert_eq!(nc.get(&c, "/index.php/login").await.unwrap().0, 503);
    assert!(
        nc.occ(&c, &["config:system:get", "version"])
            .await
            .stderr
            .contains("require upgrade")
    );
    let out = nc.occ_ok(&c, &["upgrade"]).await;
    assert!(out.contains("Updated <files> to 32.0.0"), "{out}");
    nc.wait_ready(&c, "32.0.0").await;
    lab.remove(&c).await;

    // The volume alone goes back to 31 while the database stays at 32:
    // 31.0.5 starts without an upgrade of its own, but the database
    // records newer apps than its code, and occ upgrade refuses.
    let c = nc.start("31.0.5", &html31).await;
    let s = nc.wait_true(&c, "needsDbUpgrade").await;
    assert_eq!(s["version"], "31.0.5.0", "{s}");
    assert_eq!(nc.occ(&c, &["status", "-e"]).await.code, 2);
    let e = nc.occ(&c, &["upgrade"]).await;
    assert_eq!(e.code, 5, "{}", e.show());
    assert!(
        e.stdout.contains("32.0.0, newer than this code's 31.0.5")
            && e.stdout.contains("Maintenance mode is kept active"),
        "{}",
        e.show()
    );
    assert_eq!(nc.app_version("files").await, "32.0.0", "left alone");
}

// ---- Collabora ------------------------------------------------------------------

#[tokio::test]
async fn collabora_refuses_to_start_without_tls_ending_at_the_proxy() {
    let lab = Lab::new().await;
    let image = images::image(&lab.docker, "collabora", &[]).await;
    let base = Run::new("collabora", &image)
        .env("aliasgroup1", "https://cloud.example.org:443")
        .env("server_name", "office.example.org")
        .env("DONT_GEN_SSL_CERT", "1");
    let bad = lab
        .start(&base.clone().env("extra_params", "--o:ssl.enable=false"))
        .await;
    assert_eq!(lab.wait_exit(&bad.name, SECS(20)).await, 1);
    assert!(
        lab.logs(&bad.name)
            .await
            .contains("--o:ssl.termination=true")
    );
    let mut root = base.clone().env(
        "extra_params",
        "--o:ssl.enable=false --o:ssl.termination=true",
    );
    root.user = Some("root".into());
    let root = lab.start(&root).await;
    assert_eq!(lab.wait_exit(&root.name, SECS(20)).await, 1);
    // Its jails need device nodes: without MKNOD it stops and says so.
    let mut no_mknod = base.clone().env(
        "extra_params",
        "--o:ssl.enable=false --o:ssl.termination=true",
    );
    no_mknod.cap_drop = vec!["MKNOD".into()];
    let no_mknod = lab.start(&no_mknod).await;
    assert_eq!(lab.wait_exit(&no_mknod.name, SECS(20)).await, 1);
    assert!(lab.logs(&no_mknod.name).await.contains("--cap-add MKNOD"));

    let mut good = base.env(
        "extra_params",
        "--o:ssl.enable=false --o:ssl.termination=true",
    );
    good.publish = Some(9980);
    good.health = Some(
        [
            "CMD",
            "curl",
            "-fsS",
            "-o",
            "/dev/null",
            "http://localhost:9980/hosting/discovery",
        ]
        .map(String::from)
        .to_vec(),
    );
    let good = lab.start(&good).await;
    lab.wait_healthy(&good.name, SECS(30)).await;
    let caps = wait_http(good.port.unwrap(), "/hosting/capabilities", 200, SECS(5)).await;
    let caps: serde_json::Value = serde_json::from_str(&caps).unwrap();
    assert!(caps["productName"].is_string());
}

// ---- Discourse --------------------------------------------------------------------

/// A Discourse stand-in with its database and redis, and the API key
/// created by `rails runner`: (container, published port, API key).
/// Discourse's backends: the real PostgreSQL 17 and Redis on a network of
/// their own; (the network, the database's container, its password).
async fn discourse_backends(lab: &Lab) -> (String, String, String) {
    let pg = images::debian("postgres:17");
    let redis = images::debian("redis");
    let net = lab.network(false).await;
    let db_pw = random_hex(32);
    let db_pw_file = lab.secret("discourse-db-password", &db_pw, 0o600);
    let mut db = pg_run(&pg, "db")
        .env("POSTGRES_DB", "discourse")
        .env("POSTGRES_USER", "discourse")
        .env(
            "POSTGRES_PASSWORD_FILE",
            "/run/secrets/discourse-db-password",
        );
    db.binds = vec![(db_pw_file, "/run/secrets/discourse-db-password".into())];
    db.networks = vec![(net.clone(), vec!["discourse-db".into()])];
    let mut r = Run::new("redis", &redis);
    r.cmd = Some(
        ["redis-server", "--appendonly", "yes", "--maxmemory", "64mb"]
            .map(String::from)
            .to_vec(),
    );
    r.networks = vec![(net.clone(), vec!["discourse-redis".into()])];
    let db = lab.start(&db).await.name;
    lab.start(&r).await;
    lab.wait_healthy(&db, SECS(60)).await;
    (net, db, db_pw)
}

/// A Discourse stand-in container on [`discourse_backends`].
fn discourse_run(image: &str, net: &str, db_pw: &str) -> Run {
    let mut d = Run::new("discourse", image)
        .env("DISCOURSE_HOSTNAME", "forum.example.org")
        .env("DISCOURSE_DEVELOPER_EMAILS", "admin@example.org")
        .env("DISCOURSE_DB_HOST", "discourse-db")
        .env("DISCOURSE_DB_PORT", "5432")
        .env("DISCOURSE_DB_NAME", "discourse")
        .env("DISCOURSE_DB_USERNAME", "discourse")
        .env("DISCOURSE_DB_PASSWORD", db_pw)
        .env("DISCOURSE_DB_SOCKET", "")
        .env("DISCOURSE_REDIS_HOST", "discourse-redis");
    d.networks = vec![(net.to_owned(), vec!["discourse".into()])];
    d
}

/// A Discourse stand-in with its database and redis, and the API key
/// created by `rails runner`: (container, published port, API key).
async fn discourse(lab: &Lab) -> (String, u16, String) {
    let web = images::discourse(&lab.docker, "3.5.0").await;
    let (net, _, db_pw) = discourse_backends(lab).await;
    let key = random_hex(32);
    // Readable by the container's discourse user (see the catalog test).
    let key_file = lab.secret("discourse-api-key", &key, 0o644);
    let mut d = discourse_run(&web, &net, &db_pw).env("MIGRATE_ON_BOOT", "1");
    d.binds = vec![(key_file, "/run/secrets/discourse-api-key".into())];
    d.publish = Some(80);
    d.volumes = vec![(lab.volume().await, "/shared".into())];
    d.health = Some(
        ["CMD", "curl", "-fsS", "http://localhost/srv/status"]
            .map(String::from)
            .to_vec(),
    );
    let d = lab.start(&d).await;
    lab.wait_healthy(&d.name, SECS(60)).await;
    let script = "k = File.read('/run/secrets/discourse-api-key').strip; ApiKey.exists?(description: 'commonscloud') || ApiKey.create!(description: 'commonscloud', created_by_id: Discourse::SYSTEM_USER_ID, key: k)";
    let e = lab
        .exec(&d.name, "discourse", &["rails", "runner", script])
        .await;
    assert_eq!(e.code, 0, "{}", e.show());
    (d.name, d.port.unwrap(), key)
}

fn put(port: u16, key: &str, name: &str, ct: &str, body: &str) -> (u16, String) {
    let (code, _, text) = http(
        "PUT",
        port,
        &format!("/admin/site_settings/{name}"),
        &[
            ("Api-Key", key),
            ("Api-Username", "system"),
            ("Content-Type", ct),
        ],
        body.as_bytes(),
    );
    (code, text)
}

/// `POST /admin/groups` with the admin headers.
fn post_group(port: u16, key: &str, ct: &str, body: &str) -> (u16, String) {
    let (code, _, text) = http(
        "POST",
        port,
        "/admin/groups.json",
        &[
            ("Api-Key", key),
            ("Api-Username", "system"),
            ("Content-Type", ct),
        ],
        body.as_bytes(),
    );
    (code, text)
}

fn signed(secret: &str, payload: &str) -> (String, String) {
    let b = b64(payload.as_bytes());
    let sig = hmac_hex(secret.as_bytes(), b.as_bytes());
    (b, sig)
}

#[tokio::test]
async fn discourse_takes_settings_in_order_and_checks_discourse_connect() {
    let lab = Lab::new().await;
    let (name, port, key) = discourse(&lab).await;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";

    // The API key from rails runner, and nothing else.
    let (code, _) = put(port, "wrong", "title", json, r#"{"title":"x"}"#);
    assert_eq!(code, 403);
    let (code, _, _) = http(
        "PUT",
        port,
        &format!("/admin/site_settings/title?api_key={key}&api_username=system"),
        &[],
        b"title=x",
    );
    assert_eq!(code, 403, "credentials in the query string");
    let (code, text) = put(
        port,
        &key,
        "no_such_setting",
        json,
        r#"{"no_such_setting":"1"}"#,
    );
    assert_eq!(code, 404, "{text}");
    let (code, text) = put(port, &key, "title", json, r#"{"other":"1"}"#);
    assert_eq!(code, 400, "{text}");

    // Out of order: refused.
    let secret = random_hex(16);
    let (code, text) = put(
        port,
        &key,
        "discourse_connect_secret",
        form,
        &format!("discourse_connect_secret={secret}"),
    );
    assert_eq!(code, 422, "secret before url: {text}");
    let (code, text) = put(
        port,
        &key,
        "enable_discourse_connect",
        json,
        r#"{"enable_discourse_connect":"true"}"#,
    );
    assert_eq!(code, 422, "enable before url and secret: {text}");
    let provider = "https://console.example.org/sso/discourse";
    let (code, text) = put(
        port,
        &key,
        "discourse_connect_url",
        form,
        &format!("discourse_connect_url={}", enc(provider)),
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = put(
        port,
        &key,
        "discourse_connect_secret",
        json,
        r#"{"discourse_connect_secret":"short"}"#,
    );
    assert_eq!(code, 422, "a secret under 10 characters: {text}");
    let (code, _) = put(
        port,
        &key,
        "discourse_connect_secret",
        json,
        &json!({"discourse_connect_secret": secret}).to_string(),
    );
    assert_eq!(code, 200);
    let (code, _) = put(
        port,
        &key,
        "enforce_second_factor",
        json,
        r#"{"enforce_second_factor":"all"}"#,
    );
    assert_eq!(code, 200);
    let (code, text) = put(
        port,
        &key,
        "enable_discourse_connect",
        json,
        r#"{"enable_discourse_connect":"true"}"#,
    );
    assert_eq!(code, 422, "enable while 2FA is enforced: {text}");
    for (n, v) in [
        ("enforce_second_factor", "no"),
        ("auth_overrides_email", "true"),
        ("enable_discourse_connect", "true"),
    ] {
        let (code, text) = put(port, &key, n, json, &json!({ n: v }).to_string());
        assert_eq!(code, 200, "{n}: {text}");
    }

    // Groups: a name follows the username rules and lengths, is unique,
    // and is found by name.
    let (code, text) = post_group(port, &key, json, r#"{"group":{"name":"quimper-members"}}"#);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("basic_group"), "{text}");
    let (code, text) = post_group(port, &key, form, "group%5Bname%5D=editors");
    assert_eq!(code, 200, "a form body: {text}");
    let (code, text) = post_group(port, &key, json, r#"{"group":{"name":"Editors"}}"#);
    assert_eq!(code, 422, "taken, whatever the case: {text}");
    let long = r#"{"group":{"name":"a-twenty-one-chars-xx"}}"#;
    let (code, text) = post_group(port, &key, json, long);
    assert_eq!(code, 422, "over the default 20 characters: {text}");
    let (code, text) = post_group(port, &key, json, r#"{"name":"flat"}"#);
    assert_eq!(code, 400, "the fields go under `group`: {text}");
    let (code, _, text) = http(
        "GET",
        port,
        "/groups/editors.json",
        &[("Api-Key", &key), ("Api-Username", "system")],
        b"",
    );
    assert_eq!(code, 200, "{text}");
    let (code, _, _) = http(
        "GET",
        port,
        "/groups/ghosts.json",
        &[("Api-Key", &key), ("Api-Username", "system")],
        b"",
    );
    assert_eq!(code, 404);
    let (code, text) = put(
        port,
        &key,
        "min_username_length",
        json,
        r#"{"min_username_length":"40"}"#,
    );
    assert_eq!(code, 422, "a minimum over the maximum: {text}");
    for (n, v) in [("max_username_length", "32"), ("min_username_length", "2")] {
        let (code, text) = put(port, &key, n, json, &json!({ n: v }).to_string());
        assert_eq!(code, 200, "{n}: {text}");
    }
    let (code, text) = post_group(port, &key, json, long);
    assert_eq!(code, 200, "within the raised maximum: {text}");

    // DiscourseConnect: Discourse's redirect to the provider.
    let (code, headers, _) = http("GET", port, "/session/sso?return_path=/t/1", &[], b"");
    assert_eq!(code, 302);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap();
    let (base, q) = location.split_once('?').unwrap();
    assert_eq!(base, provider);
    let q = query(q);
    assert_eq!(q["sig"], hmac_hex(secret.as_bytes(), q["sso"].as_bytes()));
    let asked = query(&String::from_utf8(unb64(&q["sso"])).unwrap());
    assert_eq!(
        asked["return_sso_url"],
        "http://forum.example.org/session/sso_login"
    );
    let nonce = asked["nonce"].clone();

    // The provider's answer, standard Base64, signed, URL-encoded.
    let mut payload = format!(
        "nonce={nonce}&external_id=6f1c&email={}&username=alice&name={}&add_groups=Quimper-Members,editors,ghosts,admins",
        enc("alice@example.org"),
        enc("Alice Martin")
    );
    // '~' as the third byte of a group encodes as '+'.
    payload.push_str("&pad=");
    while !b64(payload.as_bytes()).contains('+') {
        payload.push('~');
    }
    let (sso, sig) = signed(&secret, &payload);
    let login = |sso: &str, sig: &str| {
        http(
            "GET",
            port,
            &format!("/session/sso_login?sso={sso}&sig={sig}"),
            &[],
            b"",
        )
    };
    // URL-safe Base64, or a '+' left unencoded, is refused.
    let url_safe = sso.replace('+', "-").replace('/', "_");
    let (code, _, text) = login(
        &enc(&url_safe),
        &hmac_hex(secret.as_bytes(), url_safe.as_bytes()),
    );
    assert_eq!(code, 422, "URL-safe Base64: {text}");
    if sso.contains('+') {
        let (code, _, text) = login(&sso, &sig);
        assert_eq!(code, 422, "an unencoded '+': {text}");
    }
    let (code, _, text) = login(&enc(&sso), &hmac_hex(b"another secret", sso.as_bytes()));
    assert_eq!(code, 422, "a wrong signature: {text}");
    let (code, _, text) = login(&enc(&sso), &sig);
    assert_eq!(code, 200, "{text}");
    let user: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(user["user"]["username"], "alice");
    // Only groups that exist, matched whatever the case; an automatic group
    // such as admins is never joined this way.
    assert_eq!(
        user["user"]["groups"],
        json!(["quimper-members", "editors"])
    );
    assert_eq!(user["return_path"], "/t/1");
    let (code, _, text) = login(&enc(&sso), &sig);
    assert_eq!(code, 403, "a replayed nonce: {text}");
    let (forged, forged_sig) = signed(
        &secret,
        "nonce=never-issued&external_id=x&email=x%40y&username=x",
    );
    let (code, _, _) = login(&enc(&forged), &forged_sig);
    assert_eq!(code, 403, "a nonce Discourse never issued");

    // sync_sso: same signature, no nonce; removes a group.
    let (sso, sig) = signed(
        &secret,
        "external_id=6f1c&email=alice%40example.org&username=alice&remove_groups=editors",
    );
    let (code, _, text) = http(
        "POST",
        port,
        "/admin/users/sync_sso",
        &[
            ("Api-Key", &key),
            ("Api-Username", "system"),
            ("Content-Type", form),
        ],
        format!("sso={}&sig={sig}", enc(&sso)).as_bytes(),
    );
    assert_eq!(code, 200, "{text}");
    let (_, _, users) = http("GET", port, "/standin/users.json", &[], b"");
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    assert_eq!(users["users"][0]["groups"], json!(["quimper-members"]));

    // rails runner again: the key exists, nothing changes.
    let state = lab.cat(&name, "/shared/standin-state.json").await;
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["api_keys"].as_array().unwrap().len(), 1);
}

// ---- Discourse: migrations on boot, two releases --------------------------------

#[tokio::test]
async fn discourse_migrates_on_boot_and_an_older_release_boots_on_a_newer_schema() {
    let lab = Lab::new().await;
    let (net, db, db_pw) = discourse_backends(&lab).await;
    let shared = lab.volume().await;
    let web = |image: &str, migrate: bool| {
        let mut d = discourse_run(image, &net, &db_pw);
        if migrate {
            d = d.env("MIGRATE_ON_BOOT", "1");
        }
        d.volumes = vec![(shared.clone(), "/shared".into())];
        d
    };
    let migrations = || async {
        sql_ok(
            &lab,
            &db,
            "discourse",
            "discourse",
            "SELECT string_agg(version, ' ' ORDER BY version) FROM schema_migrations",
        )
        .await
    };
    let get = |c: String, path: &'static str| {
        let lab = &lab;
        async move {
            let until = std::time::Instant::now() + SECS(60);
            loop {
                let url = format!("http://localhost{path}");
                let e = lab.exec(&c, "root", &["curl", "-fsS", &url]).await;
                if e.code == 0 {
                    return e.stdout;
                }
                assert!(
                    std::time::Instant::now() < until,
                    "GET {path}: {}\nlogs:\n{}",
                    e.show(),
                    lab.logs(&c).await
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let releases: HashMap<&str, &[&str]> = images::DISCOURSE_RELEASES.into_iter().collect();
    let (v34, v35) = (
        images::discourse(&lab.docker, "3.4.0").await,
        images::discourse(&lab.docker, "3.5.0").await,
    );

    // A new database needs MIGRATE_ON_BOOT.
    let c = lab.start(&web(&v34, false)).await.name;
    assert_eq!(lab.wait_exit(&c, SECS(60)).await, 1);
    lab.wait_log(&c, "ActiveRecord::PendingMigrationError", SECS(5))
        .await;
    lab.remove(&c).await;

    // 3.4.0 migrates and serves.
    let c = lab.start(&web(&v34, true)).await.name;
    assert_eq!(get(c.clone(), "/srv/status").await, "ok");
    assert_eq!(migrations().await, releases["3.4.0"].join(" "));
    let logs = lab.logs(&c).await;
    assert!(
        logs.contains("== 20240912000000 CreateStandinTopics: migrating"),
        "{logs}"
    );
    lab.remove(&c).await;

    // 3.5.0 without MIGRATE_ON_BOOT on 3.4's database: pending, refused.
    let c = lab.start(&web(&v35, false)).await.name;
    assert_eq!(lab.wait_exit(&c, SECS(60)).await, 1);
    lab.remove(&c).await;
    // 3.5.0 migrates on boot, before it serves: only its new migrations.
    let c = lab.start(&web(&v35, true)).await.name;
    assert_eq!(get(c.clone(), "/srv/status").await, "ok");
    assert_eq!(migrations().await, releases["3.5.0"].join(" "));
    let logs = lab.logs(&c).await;
    assert!(
        logs.contains("== 20250610000000 AddClosedToStandinTopics: migrated")
            && !logs.contains("CreateStandinTopics: migrating"),
        "{logs}"
    );
    assert_eq!(
        sql_ok(
            &lab,
            &db,
            "discourse",
            "discourse",
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'standin_topics' AND column_name = 'closed'",
        )
        .await,
        "closed"
    );
    assert!(
        get(c.clone(), "/")
            .await
            .contains("content=\"Discourse 3.5.0 - https://github.com/discourse/discourse")
    );
    lab.remove(&c).await;

    // 3.4.0 again, on 3.5's schema: as upstream, db:migrate has nothing to
    // do, the unknown versions stay, and /srv/status says ok. Only the
    // versions tell: the page's generator and the migrations it lacks.
    let c = lab.start(&web(&v34, true)).await.name;
    assert_eq!(get(c.clone(), "/srv/status").await, "ok");
    assert_eq!(migrations().await, releases["3.5.0"].join(" "));
    let schema: serde_json::Value =
        serde_json::from_str(&get(c.clone(), "/standin/schema.json").await).unwrap();
    assert_eq!(schema["version"], "3.4.0");
    assert_eq!(schema["pending"], json!([]));
    assert_eq!(
        schema["unknown"],
        json!(["20250610000000", "20250722000000"])
    );
    assert!(
        get(c.clone(), "/")
            .await
            .contains("content=\"Discourse 3.4.0 - ")
    );
    let st: serde_json::Value =
        serde_json::from_str(&lab.cat(&c, "/shared/standin-state.json").await).unwrap();
    let boots: Vec<(String, usize, usize)> = st["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["version"].as_str().unwrap().to_owned(),
                b["migrated"].as_array().unwrap().len(),
                b["unknown_migrations"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        boots,
        [
            ("3.4.0".to_owned(), 2, 0),
            ("3.5.0".to_owned(), 2, 0),
            ("3.4.0".to_owned(), 0, 2)
        ]
    );
}

// ---- the stand-in releases are one build -----------------------------------------

#[tokio::test]
async fn stand_in_releases_share_every_layer_but_their_own_and_say_their_version() {
    let lab = Lab::new().await;
    let docker = &lab.docker;
    let layers = |tag: String| async move {
        docker
            .inspect_image(&tag)
            .await
            .unwrap()
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default()
    };
    let mut nextcloud = Vec::new();
    for r in images::NEXTCLOUD_RELEASES {
        let tag = images::nextcloud(docker, r.version).await;
        // The image's version.php says what the table says.
        let (code, php) = lab
            .sh(&tag, &[], "cat /usr/src/nextcloud/version.php")
            .await;
        assert_eq!(code, 0, "{php}");
        assert!(
            php.contains(&format!("$OC_VersionString = '{}';", r.version)),
            "{php}"
        );
        let keys: Vec<String> = r
            .upgrades_from
            .iter()
            .map(|k| format!("'{k}' => true"))
            .collect();
        assert!(
            php.contains(&format!("'nextcloud' => array({})", keys.join(", "))),
            "{php}"
        );
        let minimum = r
            .minimum_from
            .map(|m| format!("'{}' => '{m}'", &m[..m.rfind('.').unwrap()]))
            .unwrap_or_default();
        assert!(
            php.contains(&format!("$standin_minimum_from = array({minimum});")),
            "{php}"
        );
        let (_, base) = lab
            .sh(&tag, &[], "cat /usr/src/nextcloud/lib/base.php")
            .await;
        assert_eq!(base.contains("standin-broken"), r.broken, "{base}");
        nextcloud.push(layers(tag).await);
    }
    let discourse = [
        layers(images::discourse(docker, "3.4.0").await).await,
        layers(images::discourse(docker, "3.5.0").await).await,
    ];
    for set in [&nextcloud[..], &discourse[..]] {
        let first = &set[0];
        for other in set {
            assert_eq!(other.len(), first.len());
            assert_eq!(
                other[..other.len() - 1],
                first[..first.len() - 1],
                "every layer but the release's own is shared"
            );
        }
        let own: std::collections::HashSet<&String> =
            set.iter().map(|l| l.last().unwrap()).collect();
        assert_eq!(own.len(), set.len(), "each release has its own last layer");
    }
}

// ---- PostgreSQL and Redis: the real programs, from Debian's packages ----------

/// A PostgreSQL container checked by `pg_isready` over TCP, as the catalog
/// does (during the init, the temporary server listens on the socket only).
fn pg_run(image: &str, what: &str) -> Run {
    let mut r = Run::new(what, image);
    r.health = Some(
        ["CMD", "pg_isready", "-q", "-h", "127.0.0.1"]
            .map(String::from)
            .to_vec(),
    );
    r
}

/// `psql -tA -c <sql>` as the postgres OS user over the local socket (trust
/// there, as upstream); `-v ON_ERROR_STOP=1` makes an SQL error exit 1.
async fn sql(lab: &Lab, container: &str, role: &str, db: &str, query: &str) -> images::Exec {
    lab.exec(
        container,
        "postgres",
        &[
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            role,
            "-d",
            db,
            "-tAc",
            query,
        ],
    )
    .await
}

/// [`sql`] that must succeed; its trimmed output.
async fn sql_ok(lab: &Lab, container: &str, role: &str, db: &str, query: &str) -> String {
    let e = sql(lab, container, role, db, query).await;
    assert_eq!(e.code, 0, "{query}: {}", e.show());
    e.stdout.trim().to_owned()
}

/// The user the container's main process runs as.
async fn main_process_user(lab: &Lab, container: &str) -> String {
    let e = lab
        .exec(container, "root", &["stat", "-c", "%U", "/proc/1"])
        .await;
    assert_eq!(e.code, 0, "{}", e.show());
    e.stdout.trim().to_owned()
}

/// A directory of init scripts for `/docker-entrypoint-initdb.d`, readable
/// by the container's postgres user.
fn init_scripts(lab: &Lab) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.dir.path().join("initdb.d");
    std::fs::create_dir_all(&dir).unwrap();
    let files: [(&str, &str, u32); 4] = [
        (
            "10-schema.sql",
            "CREATE TABLE init_runs (what text);\nINSERT INTO init_runs VALUES ('sql');\n",
            0o644,
        ),
        (
            // Not executable: sourced by the entrypoint, with its variables.
            "20-sourced.sh",
            "psql -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"INSERT INTO init_runs VALUES ('sourced')\"\n",
            0o644,
        ),
        (
            "30-executed.sh",
            "#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"INSERT INTO init_runs VALUES ('executed')\"\n",
            0o755,
        ),
        ("40-notes.txt", "ignored\n", 0o644),
    ];
    for (name, text, mode) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn postgres_initializes_once_from_file_secrets_and_keeps_its_data() {
    let lab = Lab::new().await;
    let image = images::debian("postgres:15");
    let password = random_hex(32);
    // Secret files as the daemon makes them: 0600 and owned by a uid no
    // image knows, so only the entrypoint's root part can read them.
    let pw_file = lab.secret("db-password", &password, 0o600);
    let user_file = lab.secret("db-user", "cloudadmin\n", 0o600);
    let scripts = init_scripts(&lab);
    let volume = lab.volume().await;
    let net = lab.network(false).await;
    let db_run = |what: &str| {
        let mut r = pg_run(&image, what)
            .env("POSTGRES_PASSWORD_FILE", "/run/secrets/db-password")
            .env("POSTGRES_USER_FILE", "/run/secrets/db-user")
            .env("POSTGRES_DB", "cloud")
            .env("POSTGRES_INITDB_ARGS", "--data-checksums");
        r.binds = vec![
            (pw_file.clone(), "/run/secrets/db-password".into()),
            (user_file.clone(), "/run/secrets/db-user".into()),
            (scripts.clone(), "/docker-entrypoint-initdb.d".into()),
        ];
        r.volumes = vec![(volume.clone(), "/var/lib/postgresql/data".into())];
        r.networks = vec![(net.clone(), vec!["db".into()])];
        r
    };
    let db = lab.start(&db_run("db")).await;
    lab.wait_healthy(&db.name, SECS(90)).await;

    // The scripts ran once, in order: .sql, a sourced .sh, an executable
    // .sh; anything else is ignored.
    let q = |query: &'static str| sql_ok(&lab, &db.name, "cloudadmin", "cloud", query);
    assert_eq!(
        q("SELECT string_agg(what, ',') FROM init_runs").await,
        "sql,sourced,executed"
    );
    let logs = lab.logs(&db.name).await;
    assert!(
        logs.contains("ignoring /docker-entrypoint-initdb.d/40-notes.txt"),
        "{logs}"
    );
    assert!(logs.contains("PostgreSQL init process complete"), "{logs}");
    // The user came from its _FILE (trailing newline dropped) and is the
    // superuser; POSTGRES_INITDB_ARGS reached initdb.
    assert_eq!(
        q("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").await,
        "t"
    );
    assert_eq!(q("SHOW data_checksums").await, "on");
    assert_eq!(q("SHOW server_version_num").await.get(..2), Some("15"));
    // Network logins need the password, stored as SCRAM.
    let hba = lab
        .cat(&db.name, "/var/lib/postgresql/data/pg_hba.conf")
        .await;
    assert!(
        hba.trim_end().ends_with("host all all all scram-sha-256"),
        "{hba}"
    );
    assert_eq!(
        q("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = current_user")
            .await,
        "t"
    );
    // The server runs as postgres, listening on every address.
    assert_eq!(main_process_user(&lab, &db.name).await, "postgres");
    assert_eq!(q("SHOW listen_addresses").await, "*");

    let mut client = Run::new("client", &image);
    client.cmd = Some(["sleep", "infinity"].map(String::from).to_vec());
    client.networks = vec![(net.clone(), vec!["client".into()])];
    let client = lab.start(&client).await;
    let remote = |pw: String| {
        let lab = &lab;
        let client = client.name.clone();
        async move {
            let url = format!("postgresql://cloudadmin:{pw}@db/cloud");
            lab.exec(&client, "postgres", &["psql", &url, "-tAc", "SELECT 42"])
                .await
        }
    };
    let e = remote(password.clone()).await;
    assert_eq!((e.code, e.stdout.trim()), (0, "42"), "{}", e.show());
    let e = remote(random_hex(32)).await;
    assert_ne!(e.code, 0, "{}", e.show());
    assert!(
        e.stderr
            .contains("password authentication failed for user \"cloudadmin\""),
        "{}",
        e.show()
    );

    q("CREATE TABLE notes (t text); INSERT INTO notes VALUES ('kept')").await;
    // SIGTERM (smart shutdown) stops it cleanly; `docker stop` sends
    // SIGINT (fast shutdown), as upstream.
    let config = lab
        .docker
        .inspect_container(&db.name, None)
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
    lab.kill(&db.name, "SIGTERM").await;
    assert_eq!(lab.wait_exit(&db.name, SECS(30)).await, 0);
    let logs = lab.logs(&db.name).await;
    assert!(logs.contains("received smart shutdown request"), "{logs}");
    assert!(logs.contains("database system is shut down"), "{logs}");

    // A new container on the same volume: no second init, the scripts do
    // not run again, the row is there, and the last shutdown was clean.
    let again = lab.start(&db_run("db-again")).await;
    lab.wait_healthy(&again.name, SECS(60)).await;
    let logs = lab.logs(&again.name).await;
    assert!(logs.contains("Skipping initialization"), "{logs}");
    assert!(logs.contains("database system was shut down at"), "{logs}");
    assert!(!logs.contains("not properly shut down"), "{logs}");
    let q = |query: &'static str| sql_ok(&lab, &again.name, "cloudadmin", "cloud", query);
    assert_eq!(q("SELECT count(*) FROM init_runs").await, "3");
    assert_eq!(q("SELECT t FROM notes").await, "kept");
}

#[tokio::test]
async fn postgres_refuses_both_forms_of_a_variable_and_a_missing_password() {
    let lab = Lab::new().await;
    let image = images::debian("postgres:17");
    let pw_file = lab.secret("db-password", &random_hex(32), 0o600);
    let with_file = |r: Run| {
        let mut r = r.env("POSTGRES_PASSWORD_FILE", "/run/secrets/db-password");
        r.binds = vec![(pw_file.clone(), "/run/secrets/db-password".into())];
        r
    };
    let cases = [
        (
            with_file(Run::new("both-pw", &image).env("POSTGRES_PASSWORD", "plain")),
            "error: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set (but are exclusive)",
        ),
        (
            with_file(
                Run::new("both-user", &image)
                    .env("POSTGRES_USER", "a")
                    .env("POSTGRES_USER_FILE", "/run/secrets/db-password"),
            ),
            "error: both POSTGRES_USER and POSTGRES_USER_FILE are set (but are exclusive)",
        ),
        (
            Run::new("no-pw", &image),
            "Database is uninitialized and superuser password is not specified",
        ),
        (
            Run::new("missing-file", &image).env("POSTGRES_PASSWORD_FILE", "/run/secrets/nope"),
            "/run/secrets/nope: No such file or directory",
        ),
    ];
    let mut started = Vec::new();
    for (run, _) in &cases {
        started.push(lab.start(run).await);
    }
    for ((_, want), s) in cases.iter().zip(&started) {
        assert_eq!(
            lab.wait_exit(&s.name, SECS(30)).await,
            1,
            "{}",
            lab.logs(&s.name).await
        );
        let logs = lab.logs(&s.name).await;
        assert!(logs.contains(want), "{}: {logs}", s.name);
        assert!(!logs.contains("initdb"), "nothing is initialized: {logs}");
    }
}

#[tokio::test]
async fn pg_dump_piped_into_pg_restore_moves_a_database_to_a_second_container() {
    let lab = Lab::new().await;
    let image = images::debian("postgres:17");
    let net = lab.network(false).await;
    let password = random_hex(32);
    let db = |what: &str| {
        let mut r = pg_run(&image, what)
            .env("POSTGRES_USER", "discourse")
            .env("POSTGRES_PASSWORD", &password);
        r.networks = vec![(net.clone(), vec![what.to_owned()])];
        r
    };
    let src = lab.start(&db("src")).await;
    let dst = lab.start(&db("dst")).await;
    lab.wait_healthy(&src.name, SECS(90)).await;
    lab.wait_healthy(&dst.name, SECS(90)).await;

    // Discourse's extensions, and data that needs them.
    for ext in ["hstore", "pg_trgm", "vector"] {
        sql_ok(
            &lab,
            &src.name,
            "discourse",
            "discourse",
            &format!("CREATE EXTENSION IF NOT EXISTS {ext}"),
        )
        .await;
    }
    sql_ok(
        &lab,
        &src.name,
        "discourse",
        "discourse",
        "CREATE TABLE topics (id serial PRIMARY KEY, title text, tags hstore, embedding vector(3));
         INSERT INTO topics (title, tags, embedding) VALUES
           ('hello world', 'lang=>en', '[1,0,0]'),
           ('bon dia', 'lang=>ca', '[0,1,0]'),
           ('buenos dias', 'lang=>es', '[0,0,1]');
         CREATE INDEX ON topics USING gin (title gin_trgm_ops);",
    )
    .await;

    // The dump travels over the network (a SCRAM login) in the custom
    // format, straight into pg_restore on the other server.
    let pipeline = format!(
        "set -o pipefail; pg_dump --format=custom 'postgresql://discourse:{password}@src/discourse' \
         | pg_restore --exit-on-error --no-owner -U discourse -d discourse"
    );
    let e = lab
        .exec(&dst.name, "postgres", &["bash", "-c", &pipeline])
        .await;
    assert_eq!(e.code, 0, "{}", e.show());

    let q = |query: &'static str| sql_ok(&lab, &dst.name, "discourse", "discourse", query);
    assert_eq!(q("SELECT count(*) FROM topics").await, "3");
    assert_eq!(
        q("SELECT title FROM topics ORDER BY embedding <-> '[0.1,0.9,0]' LIMIT 1").await,
        "bon dia"
    );
    assert_eq!(
        q("SELECT tags -> 'lang' FROM topics WHERE title % 'helo wrld'").await,
        "en"
    );
    assert_eq!(
        q("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension").await,
        "hstore,pg_trgm,plpgsql,vector"
    );
    // The sequence came along: the next id follows the copied rows.
    assert_eq!(
        q("INSERT INTO topics (title) VALUES ('new') RETURNING id")
            .await
            .lines()
            .next(),
        Some("4")
    );
}

#[tokio::test]
async fn postgres_15_and_17_each_bring_their_own_server_and_tools() {
    let lab = Lab::new().await;
    let mut started = Vec::new();
    for major in ["15", "17"] {
        let image = images::debian(&format!("postgres:{major}"));
        let run = pg_run(&image, &format!("pg{major}")).env("POSTGRES_PASSWORD", &random_hex(16));
        started.push((major, image, lab.start(&run).await));
    }
    for (major, image, s) in &started {
        lab.wait_healthy(&s.name, SECS(90)).await;
        let version = sql_ok(&lab, &s.name, "postgres", "postgres", "SHOW server_version").await;
        assert!(version.starts_with(&format!("{major}.")), "{version}");
        for tool in ["psql", "pg_dump", "pg_restore", "pg_isready"] {
            let e = lab.exec(&s.name, "postgres", &[tool, "--version"]).await;
            assert!(
                e.code == 0 && e.stdout.contains(&format!(") {major}.")),
                "{tool} in {image}: {}",
                e.show()
            );
        }
        for ext in ["hstore", "pg_trgm"] {
            sql_ok(
                &lab,
                &s.name,
                "postgres",
                "postgres",
                &format!("CREATE EXTENSION {ext}"),
            )
            .await;
        }
        // pgvector: Debian packages it for 17 (trixie), not for 15.
        let e = sql(
            &lab,
            &s.name,
            "postgres",
            "postgres",
            "CREATE EXTENSION vector",
        )
        .await;
        if *major == "17" {
            assert_eq!(e.code, 0, "{}", e.show());
        } else {
            assert_ne!(e.code, 0, "{}", e.show());
            assert!(
                e.stderr.contains("extension \"vector\" is not available"),
                "{}",
                e.show()
            );
        }
    }
}

#[tokio::test]
async fn redis_requires_its_password_and_keeps_its_data_in_data() {
    let lab = Lab::new().await;
    let image = images::debian("redis");
    let net = lab.network(false).await;
    let volume = lab.volume().await;
    let password = random_hex(16);
    let on_net = |mut r: Run, alias: &str| {
        r.networks = vec![(net.clone(), vec![alias.to_owned()])];
        r
    };
    // Options as the first argument mean `redis-server <options>`.
    let mut first = on_net(Run::new("redis", &image), "redis");
    first.cmd = Some(
        ["--requirepass", &password, "--appendonly", "yes"]
            .map(String::from)
            .to_vec(),
    );
    first.volumes = vec![(volume.clone(), "/data".into())];
    let first = lab.start(&first).await;
    let mut client = on_net(Run::new("client", &image), "client");
    client.cmd = Some(["sleep", "infinity"].map(String::from).to_vec());
    let client = lab.start(&client).await;
    let cli = |args: Vec<String>| {
        let lab = &lab;
        let client = client.name.clone();
        async move {
            let mut argv = vec!["redis-cli".to_owned(), "--no-auth-warning".to_owned()];
            argv.extend(args);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            lab.exec(&client, "root", &argv).await
        }
    };
    let with_pw = |pw: &str, cmd: &[&str]| {
        let mut v: Vec<String> = ["-h", "redis", "-a", pw].map(String::from).to_vec();
        v.extend(cmd.iter().map(|c| (*c).to_owned()));
        v
    };
    lab.wait_log(&first.name, "Ready to accept connections", SECS(30))
        .await;

    // Without the password, or with a wrong one, nothing; with it, all.
    let e = cli(["-h", "redis", "ping"].map(String::from).to_vec()).await;
    assert!(
        e.stdout.contains("NOAUTH Authentication required"),
        "{}",
        e.show()
    );
    let e = cli(with_pw("wrong", &["ping"])).await;
    assert!(e.stderr.contains("WRONGPASS"), "{}", e.show());
    assert!(e.stdout.contains("NOAUTH"), "{}", e.show());
    let e = cli(with_pw(&password, &["set", "kept", "yes"])).await;
    assert_eq!(e.stdout.trim(), "OK", "{}", e.show());

    // The server runs as redis, in /data, which it keeps private.
    assert_eq!(main_process_user(&lab, &first.name).await, "redis");
    let e = lab
        // As redis: root in the container may not look into another
        // user's process (no CAP_SYS_PTRACE).
        .exec(&first.name, "redis", &["readlink", "/proc/1/cwd"])
        .await;
    assert_eq!(e.stdout.trim(), "/data", "{}", e.show());
    let e = lab
        .exec(
            &first.name,
            "root",
            &["stat", "-c", "%U %a", "/data/appendonlydir"],
        )
        .await;
    assert_eq!(e.stdout.trim(), "redis 700", "{}", e.show());

    lab.kill(&first.name, "SIGTERM").await;
    assert_eq!(lab.wait_exit(&first.name, SECS(30)).await, 0);
    assert!(
        lab.logs(&first.name)
            .await
            .contains("ready to exit, bye bye")
    );

    // A config file as the first argument, on the same volume: the data
    // is back, behind the file's password.
    let conf = lab.secret(
        "redis.conf",
        "appendonly yes\nrequirepass fromfile\n",
        0o644,
    );
    let mut second = on_net(Run::new("redis-again", &image), "redis-again");
    second.cmd = Some(vec!["/etc/redis/redis.conf".into()]);
    second.binds = vec![(conf, "/etc/redis/redis.conf".into())];
    second.volumes = vec![(volume.clone(), "/data".into())];
    let second = lab.start(&second).await;
    lab.wait_log(&second.name, "Ready to accept connections", SECS(30))
        .await;
    let mut args = with_pw("fromfile", &["get", "kept"]);
    args[1] = "redis-again".into();
    let e = cli(args).await;
    assert_eq!(e.stdout.trim(), "yes", "{}", e.show());

    // No password configured: other containers get in (protected mode is
    // off, as in the official image).
    let open = lab.start(&on_net(Run::new("open", &image), "open")).await;
    lab.wait_log(&open.name, "Ready to accept connections", SECS(30))
        .await;
    let e = cli(["-h", "open", "ping"].map(String::from).to_vec()).await;
    assert_eq!(e.stdout.trim(), "PONG", "{}", e.show());

    // A bad option fails at start, as upstream.
    let mut bad = Run::new("bad", &image);
    bad.cmd = Some(
        ["redis-server", "--maxmemory", "lots"]
            .map(String::from)
            .to_vec(),
    );
    let bad = lab.start(&bad).await;
    assert_eq!(lab.wait_exit(&bad.name, SECS(20)).await, 1);
    assert!(
        lab.logs(&bad.name)
            .await
            .contains("FATAL CONFIG FILE ERROR")
    );
}

// ---- DiscourseConnect through the daemon's provider ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discourse_connect_round_trip_through_the_daemons_provider() {
    let f = common::flow::fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    let lab = Lab::new().await;
    let (_, port, key) = discourse(&lab).await;
    let secrets = &f.inst.config.paths.secrets_dir;
    let secret = random_hex(24);
    std::fs::write(secrets.join("discourse-connect-secret"), &secret).unwrap();
    let provider = commonscloud::apps::discourse::connect_url("box.quimper.example.org");
    for (n, v) in [
        ("enforce_second_factor", "no"),
        // The provider answers https://<forum>/ only, as the catalog sets.
        ("force_https", "true"),
        ("discourse_connect_url", provider.as_str()),
        ("discourse_connect_secret", secret.as_str()),
        ("enable_discourse_connect", "true"),
    ] {
        let (code, text) = put(
            port,
            &key,
            n,
            "application/json",
            &json!({ n: v }).to_string(),
        );
        assert_eq!(code, 200, "{n}: {text}");
    }

    // The collective's group, as the reconciler creates it.
    let (code, text) = post_group(
        port,
        &key,
        "application/json",
        r#"{"group":{"name":"quimper","full_name":"Les Communs de Quimper"}}"#,
    );
    assert_eq!(code, 200, "{text}");

    // Discourse sends the browser to the daemon…
    let (code, headers, _) = http("GET", port, "/session/sso?return_path=/latest", &[], b"");
    assert_eq!(code, 302);
    let location = &headers.iter().find(|(k, _)| k == "location").unwrap().1;
    let (base, q) = location.split_once('?').unwrap();
    assert_eq!(base, provider);
    let q = query(q);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // …which signs the person in and answers…
    let answer = commonscloud::sso::service::login(
        &f.store,
        &f.inst.paths,
        &f.inst.tree,
        secrets,
        "forum.example.org",
        &q["sso"],
        &q["sig"],
        "ana",
        "correct horse battery",
        now,
    )
    .await
    .unwrap();
    // …and Discourse accepts the answer: signature, nonce, fields.
    let path = answer
        .strip_prefix("https://forum.example.org")
        .unwrap_or_else(|| panic!("the answer goes to return_sso_url: {answer}"));
    let (code, _, body) = http("GET", port, path, &[], b"");
    assert_eq!(code, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["user"]["username"], "ana", "{user}");
    assert_eq!(user["user"]["email"], "ana@example.org", "{user}");
    assert!(
        user["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("quimper")),
        "{user}"
    );
    assert_eq!(user["return_path"], "/latest");
    // The same answer twice: Discourse refuses the used nonce.
    let (code, _, body) = http("GET", port, path, &[], b"");
    assert_eq!(code, 403, "{body}");
}

#[test]
fn the_image_scripts_are_shellcheck_clean() {
    let dir = images::images_dir();
    let out = std::process::Command::new("shellcheck")
        .arg(dir.join("debian-image.sh"))
        .arg(dir.join("postgres/docker-entrypoint.sh"))
        .arg(dir.join("redis/docker-entrypoint.sh"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run shellcheck ({e}): install the `shellcheck` package (provision/test.sh does)")
        });
    assert!(
        out.status.success(),
        "shellcheck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
