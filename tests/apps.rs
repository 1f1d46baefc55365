//! The apps on the real Docker Engine, with the test images (stand-ins for
//! Nextcloud, Collabora and Discourse; real PostgreSQL and Redis): the
//! daemon's reconcile installs and wires everything and then changes
//! nothing; a container removed by hand comes back; a daemon killed in the
//! middle converges without duplicates; the Nextcloud stand-in's recorded
//! LDAP settings find active people only, and through the real front door
//! it sees the client's address and builds https URLs for its public host;
//! DiscourseConnect round trip;
//! disabling keeps data and `purge` deletes it; an image that cannot be
//! pulled is a clear state.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use common::images;
use common::{Appliance, component, post, wait_status};
use commonscloud::apps::LABEL_INSTANCE;

/// Removes every container, network and volume of an instance, also when
/// the test fails.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let docker = docker().await;
            let f = || {
                HashMap::from([(
                    "label".to_owned(),
                    vec![format!("{LABEL_INSTANCE}={prefix}")],
                )])
            };
            for c in docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(f()),
                    ..Default::default()
                }))
                .await
                .unwrap_or_default()
            {
                let _ = docker
                    .remove_container(
                        c.id.as_deref().unwrap_or_default(),
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
            for n in docker
                .list_networks(Some(ListNetworksOptions { filters: Some(f()) }))
                .await
                .unwrap_or_default()
            {
                let _ = docker
                    .remove_network(n.id.as_deref().unwrap_or_default())
                    .await;
            }
            for v in docker
                .list_volumes(Some(ListVolumesOptions { filters: Some(f()) }))
                .await
                .ok()
                .and_then(|r| r.volumes)
                .unwrap_or_default()
            {
                let _ = docker
                    .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                    .await;
            }
        });
    }
}

async fn docker() -> bollard::Docker {
    commonscloud::docker::connect(
        &commonscloud::docker::socket_path(),
        Duration::from_secs(120),
    )
    .await
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Three free consecutive loopback ports, all three taken from
/// `common::free_port`'s sequence so that no later call in this process
/// (another test's) hands one out again.
fn port_base() -> u16 {
    for _ in 0..200 {
        let base = common::free_port();
        let (a, b) = (common::free_port(), common::free_port());
        if base < 65_000 && a == base + 1 && b == base + 2 {
            return base;
        }
    }
    panic!("no three free consecutive ports");
}

/// A private /24 of its own for each appliance in this process.
fn subnet() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "10.{}.{}.0/24",
        40 + std::process::id() % 200,
        N.fetch_add(1, Ordering::Relaxed) % 250
    )
}

/// An appliance running the given apps on the test images.
fn appliance(apps: &[&str]) -> (Appliance, Cleanup) {
    let app = Appliance::new();
    let cleanup = Cleanup {
        prefix: app.prefix(),
    };
    let tags: Vec<(&str, String)> = rt().block_on(async {
        let d = docker().await;
        let mut out = Vec::new();
        for (role, source) in commonscloud::docker::context::TEST_IMAGES {
            out.push((role, images::test_image(&d, source).await));
        }
        out
    });
    let images: String = tags
        .iter()
        .map(|(role, tag)| format!("{role} = \"{tag}\"\n"))
        .collect();
    app.set_apps(
        apps,
        &format!(
            "force = true\nsubnet = \"{}\"\nport_base = {}\n",
            subnet(),
            port_base()
        ),
    );
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(&format!("\n[apps.images]\n{images}"));
    std::fs::write(&app.config, text).unwrap();
    (app, cleanup)
}

fn converged(s: &serde_json::Value, apps: &[&str]) -> bool {
    apps.iter()
        .all(|a| component(s, &format!("app:{a}"))["state"] == "ok")
}

fn wait_converged(app: &Appliance, apps: &[&str]) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let s = app.status();
        if s["running"] == true && converged(&s, apps) {
            return s;
        }
        if let Some(bad) = s["components"].as_array().and_then(|cs| {
            cs.iter().find(|c| {
                c["name"].as_str().is_some_and(|n| n.starts_with("app:")) && c["state"] == "down"
            })
        }) {
            panic!("reconcile failed: {bad}");
        }
        assert!(Instant::now() < until, "never converged: {s:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Creates a second collective through the API, then reconciles at once;
/// returns the reconcile's JSON.
fn add_brest_and_reconcile(app: &Appliance) -> String {
    let (code, v) = post(
        app,
        "/v1/collectives",
        serde_json::json!({"slug": "brest", "name": "Brest en Commun", "by": "admin"}),
    );
    assert_eq!(code, 201, "{v}");
    stdout(&app.cli(&["reconcile", "--json"]))
}

/// Our objects, by kind: `(containers, networks, volumes)` names.
fn objects(prefix: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    rt().block_on(async {
        let d = docker().await;
        let o = commonscloud::docker::observe(&d, prefix).await.unwrap();
        let mut c: Vec<String> = o.containers.into_iter().map(|c| c.name).collect();
        let mut n: Vec<String> = o.networks.into_iter().map(|n| n.name).collect();
        let mut v: Vec<String> = o.volumes.into_iter().map(|v| v.name).collect();
        c.sort();
        n.sort();
        v.sort();
        (c, n, v)
    })
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_fresh_install_converges_then_nothing_changes_and_a_removed_container_returns() {
    let apps = ["nextcloud", "collabora", "discourse"];
    let (app, _cleanup) = appliance(&apps);
    let prefix = app.prefix();
    let _daemon = app.serve();
    wait_converged(&app, &apps);
    let plan = stdout(&app.cli(&["plan"]));
    assert!(plan.contains("nothing to do"), "{plan}");
    let again = stdout(&app.cli(&["reconcile", "--json"]));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["steps"], 0, "{again}");
    let (containers, networks, volumes) = objects(&prefix);
    assert_eq!(containers.len(), 8, "{containers:?}");
    assert_eq!(networks, [prefix.clone(), format!("{prefix}-db")]);
    assert_eq!(volumes.len(), 7, "{volumes:?}");

    // Someone removes a container by hand: Docker tells the daemon, which
    // puts it back.
    let victim = format!("{prefix}-collabora");
    rt().block_on(async {
        docker()
            .await
            .remove_container(
                &victim,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    });
    let until = Instant::now() + Duration::from_secs(120);
    while !objects(&prefix).0.contains(&victim) {
        assert!(Instant::now() < until, "{victim} never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_converged(&app, &apps);
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    let last = store.last_run().unwrap().unwrap();
    assert_eq!(last.outcome, "done");
    assert!(store.run_steps(last.id).unwrap().iter().any(|s| {
        s.description
            .contains(&format!("create and start container {victim}"))
    }),);
}

/// The front door as a process; killed on drop.
struct FrontDoor(std::process::Child);

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `host` through the front door at 127.0.0.1:`https`, from
/// the client address 127.0.0.2: the status, the Location and the body.
fn through_front_door(
    app: &Appliance,
    https: u16,
    host: &str,
    path: &str,
) -> (u16, String, String) {
    use http_body_util::{BodyExt, Empty};
    let ca = app.dir.path().join("state/tls/ca.crt");
    rt().block_on(async {
        let until = Instant::now() + Duration::from_secs(30);
        let tls = loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if ca.exists()
                && let Ok(tcp) = socket.connect(([127, 0, 0, 1], https).into()).await
            {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
                break common::tls_connector(&ca).connect(name, tcp).await.unwrap();
            }
            assert!(
                Instant::now() < until,
                "the front door never served: {}",
                std::fs::read_to_string(app.dir.path().join("front-door.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

#[test]
fn the_nextcloud_standin_records_settings_that_find_active_people_only() {
    let (app, _cleanup) = appliance(&["nextcloud"]);
    let prefix = app.prefix();
    let (https, http) = (common::free_port(), common::free_port());
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(&format!(
        "\n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n"
    ));
    std::fs::write(&app.config, text).unwrap();
    let _daemon = app.serve();
    wait_converged(&app, &["nextcloud"]);

    // Through the real front door, from 127.0.0.2: Nextcloud sees the
    // front door connect from the bridge's gateway, trusts it, takes the
    // client from X-Forwarded-For, and builds https URLs for its host.
    let _door = FrontDoor(
        std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&app.config)
            .arg("front-door")
            .env_remove("NOTIFY_SOCKET")
            .stderr(std::fs::File::create(app.dir.path().join("front-door.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let config = commonscloud::config::load(&app.config).unwrap();
    let cloud = config.hostnames.cloud.as_ref().unwrap().to_string();
    let (code, _, body) = through_front_door(&app, https, &cloud, "/standin/request.json");
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["peer"],
        config.apps.subnet.gateway().to_string(),
        "where Nextcloud sees the front door connect from: {seen}"
    );
    assert_eq!(seen["remote_address"], "127.0.0.2", "the client: {seen}");
    assert_eq!(seen["absolute_url"], format!("https://{cloud}/"), "{seen}");
    assert_eq!(seen["cli_url"], format!("https://{cloud}"), "{seen}");
    let (code, location, body) = through_front_door(&app, https, &cloud, "/");
    assert_eq!(code, 302, "{body}");
    assert_eq!(location, format!("https://{cloud}/index.php/login"));
    let state = rt().block_on(async {
        let d = docker().await;
        commonscloud::docker::objects::exec(
            &d,
            &format!("{prefix}-nextcloud"),
            "www-data",
            None,
            vec!["cat".into(), "/var/www/html/standin-state.json".into()],
        )
        .await
        .unwrap()
    });
    assert_eq!(state.exit_code, 0, "{state:?}");
    let state: serde_json::Value = serde_json::from_str(&state.stdout).unwrap();
    let s01 = state["ldap"]["s01"].clone();
    let s01 = if s01.is_null() {
        state["ldap_configs"]["s01"].clone()
    } else {
        s01
    };
    assert!(s01.is_object(), "no s01 in {state:#}");
    let config = commonscloud::config::load(&app.config).unwrap();
    let gateway = config.apps.subnet.gateway();
    assert_eq!(s01["ldapHost"], format!("ldap://{gateway}"));
    let port = app.ldap_url().rsplit(':').next().unwrap().to_owned();
    assert_eq!(s01["ldapPort"], port);
    assert_eq!(s01["ldapConfigurationActive"], "1");
    // slapd listens on the bridge's gateway for the apps (and Nextcloud's
    // `ldap:test-config`, a real bind from inside its container, passed).
    let urls = commonscloud::directory::slapd::listen_urls(app.slapd_pid().unwrap()).unwrap();
    assert!(
        urls.contains(&format!("ldap://{gateway}:{port}")),
        "{urls:?}"
    );
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    let tested: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM wiring_done WHERE description LIKE '%ldap:test-config s01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tested, 1);
    // A new collective gets its group folder at the next reconcile.
    let out = add_brest_and_reconcile(&app);
    let folders = rt().block_on(async {
        let d = docker().await;
        commonscloud::docker::objects::exec(
            &d,
            &format!("{prefix}-nextcloud"),
            "www-data",
            Some("/var/www/html"),
            vec![
                "php".into(),
                "occ".into(),
                "groupfolders:list".into(),
                "--output=json".into(),
            ],
        )
        .await
        .unwrap()
    });
    assert!(
        folders.stdout.contains("Brest en Commun") && folders.stdout.contains("brest-members"),
        "{out}: {folders:?}"
    );

    // Two people; one suspended.
    for uid in ["ana", "bob"] {
        let form = serde_json::json!({"uid": uid, "display_name": uid, "email": format!("{uid}@example.org"),
            "collective": "quimper", "language": "en", "ip": format!("192.0.2.{}", uid.len() + uid.as_bytes()[0] as usize % 100)});
        let (code, v) = post(&app, "/v1/registrations", form);
        assert_eq!(code, 201, "{v}");
        let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
        let mail = store
            .due_mail(i64::MAX, 100)
            .unwrap()
            .into_iter()
            .rev()
            .find(|m| m.recipient == format!("{uid}@example.org"))
            .unwrap();
        let p: serde_json::Value = serde_json::from_str(&mail.params).unwrap();
        let token = p["link"].as_str().unwrap().split("token=").nth(1).unwrap();
        let (code, _) = post(
            &app,
            "/v1/registrations/verify",
            serde_json::json!({"token": token}),
        );
        assert_eq!(code, 200);
        let (code, _) = post(
            &app,
            &format!("/v1/registrations/{}/approve", v["id"]),
            serde_json::json!({"by": "admin"}),
        );
        assert_eq!(code, 200);
    }
    let (code, _) = post(
        &app,
        "/v1/people/bob/suspend",
        serde_json::json!({"by": "admin", "reason": "test"}),
    );
    assert_eq!(code, 200);

    // Bind as Nextcloud would, with what it recorded, on the loopback URL.
    let found = |uid: &str| {
        let filter = s01["ldapLoginFilter"]
            .as_str()
            .unwrap()
            .replace("%uid", &ldap3::ldap_escape(uid));
        rt().block_on(async {
            let (conn, mut l) = ldap3::LdapConnAsync::new(&app.ldap_url()).await.unwrap();
            ldap3::drive!(conn);
            l.simple_bind(
                s01["ldapAgentName"].as_str().unwrap(),
                s01["ldapAgentPassword"].as_str().unwrap(),
            )
            .await
            .unwrap()
            .success()
            .unwrap();
            let (entries, _) = l
                .search(
                    s01["ldapBaseUsers"].as_str().unwrap(),
                    ldap3::Scope::Subtree,
                    &filter,
                    vec!["uid"],
                )
                .await
                .unwrap()
                .success()
                .unwrap();
            entries.len()
        })
    };
    assert_eq!(found("ana"), 1);
    assert_eq!(found("ana@example.org"), 1);
    assert_eq!(found("bob"), 0, "a suspended person is not found");
}

#[test]
fn discourse_connect_round_trip_with_groups_and_refusals() {
    let (app, _cleanup) = appliance(&["discourse"]);
    let _daemon = app.serve();
    wait_converged(&app, &["discourse"]);
    let config = commonscloud::config::load(&app.config).unwrap();
    let port = config.apps.port_base + 2;
    // A person to sign in.
    let rt = rt();
    rt.block_on(async {
        let paths = commonscloud::directory::slapd::Paths::new(&config);
        let tree = commonscloud::directory::tree::Tree::new(config.suffix().as_str());
        let mut root = commonscloud::directory::ldap::connect_root(&paths)
            .await
            .unwrap();
        let dn = commonscloud::directory::people::create_person(
            &mut root,
            &tree,
            &commonscloud::directory::people::NewPerson {
                uid: "ana",
                display_name: "Ana Ros",
                mail: "ana@example.org",
                language: "en",
                collective_dn: &tree.collective(&config.collective.slug),
                home_node: "box",
            },
        )
        .await
        .unwrap();
        commonscloud::directory::people::add_member(
            &mut root,
            &tree.group(&config.collective.slug, "members"),
            &dn,
        )
        .await
        .unwrap();
        commonscloud::directory::ldap::set_password(&mut root, &dn, "correct horse battery")
            .await
            .unwrap();
    });
    // A second collective: the reconcile it triggers gives it its forum
    // group too (DiscourseConnect's add_groups only fills groups that exist).
    let out = add_brest_and_reconcile(&app);
    let (_, _, listed) = images::http("GET", port, "/standin/users.json", &[], b"");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let groups: Vec<(&str, &str)> = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap(),
                g["full_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("quimper", "Les Communs de Quimper"),
            ("brest", "Brest en Commun")
        ],
        "{out}"
    );

    // Discourse sends the browser to the daemon.
    let (code, headers, _) = images::http("GET", port, "/session/sso?return_path=/", &[], b"");
    assert_eq!(code, 302);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(location.contains("/sso/discourse?"), "{location}");
    let q: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let ask = |sig: &str| {
        post(
            &app,
            "/v1/sso/discourse",
            serde_json::json!({"sso": q["sso"], "sig": sig, "uid": "ana", "password": "correct horse battery"}),
        )
    };
    let mut bad = q["sig"].clone();
    bad.replace_range(0..1, if bad.starts_with('0') { "1" } else { "0" });
    assert_eq!(ask(&bad).0, 403, "a bad signature is refused");
    let (code, v) = ask(&q["sig"]);
    assert_eq!(code, 200, "{v}");
    let back = v["redirect"].as_str().unwrap();
    // force_https: the answer comes back over https, through the front door.
    let forum = commonscloud::config::load(&app.config)
        .unwrap()
        .hostnames
        .forum
        .unwrap()
        .to_string();
    assert!(
        back.starts_with(&format!("https://{forum}/session/sso_login?")),
        "{back}"
    );
    let path = &back[back.find("/session/sso_login").unwrap()..];
    let (code, _, body) = images::http("GET", port, path, &[], b"");
    assert_eq!(code, 200, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    let user = &got["user"];
    assert_eq!(user["username"], "ana", "{got}");
    assert_eq!(user["email"], "ana@example.org", "{got}");
    assert_eq!(user["groups"], serde_json::json!(["quimper"]), "{got}");
    assert!(!user["external_id"].as_str().unwrap().is_empty());
    // Replays: the daemon and Discourse both refuse.
    assert_eq!(ask(&q["sig"]).0, 409);
    let (code, _, _) = images::http("GET", port, path, &[], b"");
    assert_ne!(code, 200, "Discourse refuses a used nonce");
}

#[test]
fn disabling_keeps_the_data_and_purge_deletes_it() {
    let (app, _cleanup) = appliance(&["nextcloud", "collabora"]);
    let prefix = app.prefix();
    {
        let _daemon = app.serve();
        wait_converged(&app, &["nextcloud", "collabora"]);
    }
    let extra = std::fs::read_to_string(&app.config).unwrap();
    let extra = extra.replace(
        "enabled = [\"nextcloud\", \"collabora\"]",
        "enabled = [\"collabora\"]",
    );
    std::fs::write(&app.config, extra).unwrap();
    let out = stdout(&app.cli(&["reconcile"]));
    assert!(out.contains("applied"), "{out}");
    let (containers, _, volumes) = objects(&prefix);
    assert!(
        !containers.iter().any(|c| c.contains("-nextcloud")),
        "{containers:?}"
    );
    assert!(
        volumes.contains(&format!("{prefix}-nextcloud-html")),
        "data kept: {volumes:?}"
    );
    // Without a terminal, purge wants --yes.
    let out = app.cli(&["purge", "nextcloud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = app.cli(&["purge", "collabora"]);
    assert_eq!(out.status.code(), Some(2), "an enabled app is refused");
    let out = stdout(&app.cli(&["purge", "nextcloud", "--yes"]));
    assert!(
        out.contains(&format!("deleted volume {prefix}-nextcloud-html")),
        "{out}"
    );
    let (_, _, volumes) = objects(&prefix);
    assert!(
        !volumes.iter().any(|v| v.contains("-nextcloud-")),
        "{volumes:?}"
    );
}

#[test]
fn an_image_that_cannot_be_pulled_is_a_clear_state() {
    let (app, _cleanup) = appliance(&["collabora"]);
    let text = std::fs::read_to_string(&app.config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("collabora = ") {
                "collabora = \"commonscloud-missing/collabora:0\"\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&app.config, text).unwrap();
    let mut daemon = app.serve();
    let s = wait_status(&app, "collabora down", |s| {
        component(s, "app:collabora")["state"] == "down"
    });
    let detail = component(&s, "app:collabora")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("commonscloud-missing/collabora:0") && detail.contains("cannot be pulled"),
        "{detail}"
    );
    // Not a crash loop: the daemon keeps serving, the run is failed once.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(daemon.wait_exit(Duration::from_millis(10)).is_none());
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    let last = store.last_run().unwrap().unwrap();
    assert_eq!(last.outcome, "failed");
    assert!(
        last.id <= 2,
        "retried with backoff, not in a loop: run {}",
        last.id
    );
}

#[test]
fn a_daemon_killed_mid_plan_converges_on_restart_without_duplicates() {
    let apps = ["nextcloud", "collabora"];
    let (app, _cleanup) = appliance(&apps);
    let prefix = app.prefix();
    let state = app.dir.path().join("state");
    let daemon = app.serve();
    // Wait until the first run is under way with some steps done, then kill
    // the daemon without warning.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let store = commonscloud::store::Store::open(&state).unwrap();
        if let Some(run) = store.last_run().unwrap() {
            let done = store
                .run_steps(run.id)
                .unwrap()
                .iter()
                .filter(|s| s.state == "done")
                .count();
            if run.outcome == "running" && done >= 12 {
                break;
            }
            assert!(
                run.outcome == "running",
                "the run ended before the kill: {run:?}"
            );
        }
        assert!(Instant::now() < until, "the first run never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    drop(daemon);
    let _daemon = app.serve();
    wait_converged(&app, &apps);
    let store = commonscloud::store::Store::open(&state).unwrap();
    assert_eq!(
        store.last_run().unwrap().unwrap().outcome,
        "done",
        "the restart finished the work"
    );
    let interrupted: i64 = store
        .connection()
        .query_row(
            "SELECT count(*) FROM reconcile_runs WHERE outcome = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(interrupted, 1, "the killed run is journaled as interrupted");
    let (containers, networks, volumes) = objects(&prefix);
    assert_eq!(containers.len(), 5, "{containers:?}");
    let mut unique = containers.clone();
    unique.dedup();
    assert_eq!(unique, containers);
    // Docker allows two networks of one name: there must be one each.
    assert_eq!(
        networks,
        [prefix.clone(), format!("{prefix}-db")],
        "{networks:?}"
    );
    assert_eq!(volumes.len(), 3, "{volumes:?}");
    let plan = stdout(&app.cli(&["plan"]));
    assert!(plan.contains("nothing to do"), "{plan}");
}

#[test]
fn bench_reconcile_reports_a_noop_without_mutating_calls() {
    let out = std::process::Command::new(common::BIN)
        .args(["bench", "reconcile", "--json", "--runs", "1", "--standin"])
        .arg(images::standin_binary())
        .arg("--images-dir")
        .arg(images::images_dir())
        .output()
        .unwrap();
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["containers"], 8, "{v}");
    assert_eq!(v["noop_mutating_calls"], 0, "{v}");
    assert!(v["noop_calls"].as_u64().unwrap() >= v["baseline_calls"].as_u64().unwrap());
    assert!(v["cold_install_s"].as_f64().unwrap() > 0.0);
    let ratio = v["noop_ms"].as_f64().unwrap() / v["baseline_observe_ms"].as_f64().unwrap();
    assert!((ratio - v["ratio_noop_to_observe"].as_f64().unwrap()).abs() < 1e-6);
}

/// A registry of the test's own (Debian's `docker-registry`) on a loopback
/// port, which Docker trusts without TLS. Killed on drop.
struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            port: common::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn start(&mut self) {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{}\n",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
            .spawn()
            .expect("docker-registry (apt: docker-registry)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        let up = |port| {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && images::http("GET", port, "/v2/", &[], b"").0 == 200
        };
        while !up(self.port) {
            assert!(Instant::now() < until, "the registry never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes an image on drop, also when the test fails.
struct ImageGone(Vec<String>);

impl Drop for ImageGone {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        rt().block_on(async {
            let d = docker().await;
            for n in names {
                let _ = d
                    .remove_image(
                        &n,
                        Some(bollard::query_parameters::RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        }),
                        None,
                    )
                    .await;
            }
        });
    }
}

/// The whole pull path on a flaky link: while the registry is down the app
/// is a clear failed state; once it is up the image is pulled (the CLI
/// reports it) by the digest the config pins, and the next plan is empty.
#[test]
fn an_image_pinned_by_digest_is_pulled_once_the_registry_answers() {
    let mut registry = Registry::new();
    registry.start();
    let (app, _cleanup) = appliance(&["collabora"]);
    let repo = format!("127.0.0.1:{}/{}/collabora", registry.port, app.prefix());
    let mut gone = ImageGone(vec![format!("{repo}:1")]);
    // An image no one has here: the stand-in plus a 3 MB layer of its own.
    let digest = rt().block_on(async {
        use futures_util::StreamExt;
        let d = docker().await;
        let base = images::image(&d, "collabora", &[]).await;
        // Incompressible (xorshift), so the layer costs its 3 MB.
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
        let blob: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [
            (
                "Dockerfile",
                format!("FROM {base}\nCOPY blob /blob\n").into_bytes(),
            ),
            ("blob", blob),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let labels = HashMap::from([(images::LABEL_TEST.to_owned(), app.prefix())]);
        commonscloud::docker::build_image(
            &d,
            tar.into_inner().unwrap(),
            &format!("{repo}:1"),
            &HashMap::new(),
            &labels,
        )
        .await
        .unwrap();
        let mut push = d.push_image(
            &repo,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some("1".into()),
                ..Default::default()
            }),
            None,
        );
        while let Some(item) = push.next().await {
            item.unwrap();
        }
        let digest = d
            .inspect_image(&format!("{repo}:1"))
            .await
            .unwrap()
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.starts_with(&repo))
            .expect("a digest after the push");
        d.remove_image(
            &format!("{repo}:1"),
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
        assert!(d.inspect_image(&digest).await.is_err(), "gone locally");
        digest
    });
    gone.0.push(digest.clone());
    let text: String = std::fs::read_to_string(&app.config)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("collabora = ") {
                format!("collabora = \"{digest}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&app.config, text).unwrap();

    // The link is down: a clear failure naming the image, nothing created.
    if let Some(mut c) = registry.child.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let out = app.cli(&["reconcile"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be pulled") && err.contains(&digest),
        "{err}"
    );
    assert!(objects(&app.prefix()).0.is_empty());

    // The link is back: pulled, with what it cost, then everything runs.
    registry.start();
    let out = app.cli(&["reconcile"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("pulled {digest} (")))
        .unwrap_or_else(|| panic!("no pull reported: {err}"));
    let mb: f64 = line
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(" MB)")
        .parse()
        .unwrap();
    assert!(
        (3.0..4.0).contains(&mb),
        "the 3 MB layer, not the layers already here: {line}"
    );
    let (containers, _, _) = objects(&app.prefix());
    assert_eq!(containers, [format!("{}-collabora", app.prefix())]);
    // The pinned digest is the image that runs, and a converged plan pulls
    // nothing again.
    let plan: serde_json::Value =
        serde_json::from_str(&stdout(&app.cli(&["plan", "--json"]))).unwrap();
    assert_eq!(plan, serde_json::json!([]), "{plan}");
}
