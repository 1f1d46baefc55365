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
    assert_eq!(
        networks,
        [
            prefix.clone(),
            format!("{prefix}-discourse-backend"),
            format!("{prefix}-nextcloud-backend")
        ]
    );
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
    assert_eq!(s01["ldapHost"], format!("ldaps://{gateway}"));
    assert_eq!(s01["ldapTLS"], "0", "LDAPS is not StartTLS");
    let port = app.ldap_url().rsplit(':').next().unwrap().to_owned();
    assert_eq!(s01["ldapPort"], port);
    assert_eq!(s01["ldapConfigurationActive"], "1");
    // slapd listens on the bridge's gateway for the apps, LDAPS only (and
    // Nextcloud's `ldap:test-config`, a real TLS handshake checked against
    // the local CA and a bind from inside its container, passed).
    let urls = commonscloud::directory::slapd::listen_urls(app.slapd_pid().unwrap()).unwrap();
    assert!(
        urls.contains(&format!("ldaps://{gateway}:{port}")),
        "{urls:?}"
    );
    assert!(
        !urls
            .iter()
            .any(|u| u.starts_with(&format!("ldap://{gateway}"))),
        "no plain LDAP on the bridge: {urls:?}"
    );
    ldaps_is_checked_and_plain_is_refused(&app, &prefix, &gateway.to_string());
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

/// `php occ <args>` in the Nextcloud container, as www-data, with `env`
/// before it (`VAR=value` words) when given.
fn occ(prefix: &str, env: &[&str], args: &[&str]) -> commonscloud::docker::objects::ExecOutput {
    let mut cmd: Vec<String> = Vec::new();
    if !env.is_empty() {
        cmd.push("env".into());
        cmd.extend(env.iter().map(|e| (*e).to_owned()));
    }
    cmd.extend(["php".to_owned(), "occ".to_owned()]);
    cmd.extend(args.iter().map(|a| (*a).to_owned()));
    rt().block_on(async {
        commonscloud::docker::objects::exec(
            &docker().await,
            &format!("{prefix}-nextcloud"),
            "www-data",
            Some("/var/www/html"),
            cmd,
        )
        .await
        .unwrap()
    })
}

/// Nextcloud's LDAP as an attacker on the bridge would meet it: the
/// certificate is checked (a CA other than the appliance's fails the
/// handshake), and plain LDAP to the gateway finds no listener at all.
fn ldaps_is_checked_and_plain_is_refused(app: &Appliance, prefix: &str, gateway: &str) {
    let passes = |out: &commonscloud::docker::objects::ExecOutput| {
        out.exit_code == 0 && out.stdout.contains("connection could be established")
    };
    let ok = occ(prefix, &[], &["ldap:test-config", "s01"]);
    assert!(passes(&ok), "{ok:?}");
    // Another CA, for the same domain: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    commonscloud::frontdoor::ca::ensure(
        &commonscloud::frontdoor::ca::Files::new(other.path(), other.path()),
        "someone else",
        "quimper.example.org",
        &[],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    std::fs::copy(
        other.path().join("tls/ca.crt"),
        app.dir.path().join("state/tls/other-ca.crt"),
    )
    .unwrap();
    let wrong = occ(
        prefix,
        &["LDAPTLS_CACERT=/run/commonscloud/tls/other-ca.crt"],
        &["ldap:test-config", "s01"],
    );
    assert!(!passes(&wrong), "a foreign CA must fail: {wrong:?}");
    assert!(wrong.stderr.contains("TLS"), "{wrong:?}");
    // No CA given at all (the image's default bundle): fails too.
    let none = occ(prefix, &["LDAPTLS_CACERT="], &["ldap:test-config", "s01"]);
    assert!(!passes(&none), "{none:?}");
    // Plain LDAP, even with StartTLS asked: nothing listens on the bridge.
    for tls in ["0", "1"] {
        let set = occ(
            prefix,
            &[],
            &[
                "ldap:set-config",
                "s01",
                "ldapHost",
                &format!("ldap://{gateway}"),
            ],
        );
        assert_eq!(set.exit_code, 0, "{set:?}");
        occ(prefix, &[], &["ldap:set-config", "s01", "ldapTLS", tls]);
        let plain = occ(prefix, &[], &["ldap:test-config", "s01"]);
        assert!(
            !passes(&plain),
            "plain LDAP on the bridge (ldapTLS={tls}): {plain:?}"
        );
    }
    occ(prefix, &[], &["ldap:set-config", "s01", "ldapTLS", "0"]);
    occ(
        prefix,
        &[],
        &[
            "ldap:set-config",
            "s01",
            "ldapHost",
            &format!("ldaps://{gateway}"),
        ],
    );
    assert!(passes(&occ(prefix, &[], &["ldap:test-config", "s01"])));

    // slapd will not start while cn=config names TLS files that are gone:
    // with its pair deleted and slapd killed, the daemon makes the pair
    // again from the CA before starting it, and LDAPS comes back.
    let before = app.slapd_pid().unwrap();
    for f in ["state/tls/directory.crt", "secrets/directory-tls.key"] {
        std::fs::remove_file(app.dir.path().join(f)).unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let back = app.slapd_pid().filter(|p| *p != before).and_then(|p| {
            commonscloud::directory::slapd::listen_urls(p).filter(|u| {
                u.iter()
                    .any(|u| u.starts_with(&format!("ldaps://{gateway}")))
            })
        });
        if back.is_some() && passes(&occ(prefix, &[], &["ldap:test-config", "s01"])) {
            break;
        }
        assert!(Instant::now() < until, "LDAPS never came back");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(app.dir.path().join("secrets/directory-tls.key").exists());
}

#[test]
fn discourse_connect_round_trip_with_groups_and_refusals() {
    let (app, _cleanup) = appliance(&["discourse"]);
    let _daemon = app.serve();
    wait_converged(&app, &["discourse"]);
    let config = commonscloud::config::load(&app.config).unwrap();
    let port = config.apps.port_base + 2;
    // A person to sign in.
    ana_in(&config, &["quimper"]);
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
        [prefix.clone(), format!("{prefix}-nextcloud-backend")],
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

/// A command in a container, as its image's user: its exit code and its
/// output (stdout and stderr).
fn exec_in(container: &str, cmd: &[&str]) -> (i64, String) {
    use futures_util::StreamExt;
    rt().block_on(async {
        let d = docker().await;
        let created = d
            .create_exec(
                container,
                bollard::models::ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.iter().map(|c| (*c).to_owned()).collect()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut text = String::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = d
            .start_exec(&created.id, None::<bollard::exec::StartExecOptions>)
            .await
            .unwrap()
        {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&chunk.to_string());
            }
        }
        let code = d
            .inspect_exec(&created.id)
            .await
            .unwrap()
            .exit_code
            .unwrap_or(-1);
        (code, text)
    })
}

/// Runs `cmd` in a throwaway container of `image` on `network`, with
/// Docker's default capabilities; its exit code and output. It carries the
/// instance's label (so `Cleanup` removes it) but not the managed one (so
/// the daemon leaves it alone).
fn probe_container(prefix: &str, image: &str, network: &str, cmd: &[&str]) -> (i64, String) {
    use futures_util::StreamExt;
    rt().block_on(async {
        let d = docker().await;
        let name = format!("{prefix}-probe");
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec![cmd[0].to_owned()]),
            cmd: Some(cmd[1..].iter().map(|c| (*c).to_owned()).collect()),
            labels: Some(HashMap::from([(
                LABEL_INSTANCE.to_owned(),
                prefix.to_owned(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some(network.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .unwrap();
        d.start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
        let mut waited = d.wait_container(
            &name,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let code = match waited.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            other => panic!("waiting for the probe: {other:?}"),
        };
        let mut logs = d.logs(
            &name,
            Some(bollard::query_parameters::LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        let _ = d
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        (code, text)
    })
}

/// The address of `container` on `network`.
fn address_on(container: &str, network: &str) -> String {
    rt().block_on(async {
        docker()
            .await
            .inspect_container(container, None)
            .await
            .unwrap()
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).cloned())
            .and_then(|e| e.ip_address)
            .unwrap_or_else(|| panic!("{container} is not on {network}"))
    })
}

/// What a compromised app (or a member steering its server-side fetches)
/// could reach: raw sockets on the bridge, another app's database, a
/// cache without a password, private addresses through Nextcloud. Each is
/// tried from inside the containers, and each has its control, so the
/// refusal is the hardening's and not a broken tool.
#[test]
fn the_apps_are_walled_off_from_each_other() {
    let apps = ["nextcloud", "collabora", "discourse"];
    let (app, _cleanup) = appliance(&apps);
    let prefix = app.prefix();
    let _daemon = app.serve();
    wait_converged(&app, &apps);
    let config = commonscloud::config::load(&app.config).unwrap();
    let gateway = config.apps.subnet.gateway().to_string();
    let nextcloud = format!("{prefix}-nextcloud");

    // Capabilities: every container drops NET_RAW (and the rest of the
    // list); Docker says so.
    let (containers, _, _) = objects(&prefix);
    assert_eq!(containers.len(), 8, "{containers:?}");
    for c in &containers {
        let dropped = rt().block_on(async {
            docker()
                .await
                .inspect_container(c, None)
                .await
                .unwrap()
                .host_config
                .and_then(|h| h.cap_drop)
                .unwrap_or_default()
        });
        for cap in ["NET_RAW", "AUDIT_WRITE", "SETFCAP"] {
            assert!(
                dropped.iter().any(|d| d == cap),
                "{c} keeps {cap}: {dropped:?}"
            );
        }
    }
    // A raw (packet) socket, as for ARP spoofing on the bridge: refused;
    // with every capability the same command answers, so it is NET_RAW.
    let arping = [
        "arping",
        "-c",
        "1",
        "-w",
        "3",
        "-I",
        "eth0",
        gateway.as_str(),
    ];
    let (code, out) = exec_in(&nextcloud, &arping);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not permitted"), "{out}");
    let image = rt().block_on(async {
        docker()
            .await
            .inspect_container(&nextcloud, None)
            .await
            .unwrap()
            .config
            .and_then(|c| c.image)
            .unwrap()
    });
    let (code, out) = probe_container(&prefix, &image, &prefix, &arping);
    assert_eq!(
        code, 0,
        "the control: arping works with Docker's default capabilities: {out}"
    );

    // Another app's database: Discourse's postgres, by name or address,
    // from Nextcloud; Discourse itself reaches it.
    let db = address_on(
        &format!("{prefix}-discourse-db"),
        &format!("{prefix}-discourse-backend"),
    );
    let probe = |from: &str, host: &str| {
        exec_in(
            from,
            &[
                "sh",
                "-c",
                &format!("timeout 5 nc -w 3 {host} 5432 </dev/null; echo rc=$?"),
            ],
        )
        .1
    };
    let unreachable = |out: &str| {
        out.contains("rc=1")
            && (out.contains("can't connect")
                || out.contains("timed out")
                || out.contains("bad address"))
    };
    for host in [db.as_str(), "discourse-db"] {
        let out = probe(&nextcloud, host);
        assert!(unreachable(&out), "Nextcloud reaches {host}: {out}");
    }
    let out = probe(&format!("{prefix}-discourse"), "discourse-db");
    assert!(
        !unreachable(&out),
        "the control: Discourse reaches its own database: {out}"
    );

    // Redis: a client without the password gets nothing; Nextcloud's own
    // password (its environment) works.
    let (_, out) = exec_in(
        &nextcloud,
        &[
            "sh",
            "-c",
            "printf 'PING\\r\\nGET x\\r\\nQUIT\\r\\n' | timeout 5 nc nextcloud-redis 6379",
        ],
    );
    assert!(out.contains("NOAUTH"), "{out}");
    assert!(!out.contains("PONG"), "{out}");
    let (_, out) = exec_in(
        &nextcloud,
        &[
            "sh",
            "-c",
            "printf 'AUTH %s\\r\\nPING\\r\\nQUIT\\r\\n' \"$REDIS_HOST_PASSWORD\" | timeout 5 nc nextcloud-redis 6379",
        ],
    );
    assert!(
        out.contains("+PONG"),
        "the control: with the password: {out}"
    );
    let stored =
        std::fs::read_to_string(app.dir.path().join("secrets/nextcloud-redis-password")).unwrap();
    let inspected = rt().block_on(async {
        docker()
            .await
            .inspect_container(&format!("{prefix}-nextcloud-redis"), None)
            .await
            .unwrap()
    });
    let shown = format!("{:?}{:?}", inspected.config, inspected.args);
    assert!(
        !shown.contains(stored.trim()),
        "the password shows in docker inspect"
    );

    // Link previews of private addresses (another container, the gateway,
    // link-local): refused; Collabora still works through richdocuments'
    // own exception.
    let cloud = config.hostnames.cloud.as_ref().unwrap().to_string();
    let resolve = |url: &str| -> serde_json::Value {
        let path = format!(
            "/ocs/v2.php/references/resolve?reference={}",
            form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        );
        let (code, _, body) = images::http(
            "GET",
            config.apps.port_base,
            &path,
            &[("Host", &cloud)],
            b"",
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["ocs"]["data"]["references"][url].clone()
    };
    let office = format!("http://{prefix}-collabora:9980/hosting/discovery");
    for url in [
        office.as_str(),
        &format!("http://{gateway}:{}/", config.apps.port_base),
        "http://169.254.169.254/latest/meta-data/",
    ] {
        assert!(resolve(url).is_null(), "{url} was fetched");
    }
    let set = |v: &str| {
        let out = occ(
            &prefix,
            &[],
            &[
                "config:system:set",
                "allow_local_remote_servers",
                &format!("--value={v}"),
                "--type=boolean",
            ],
        );
        assert_eq!(out.exit_code, 0, "{out:?}");
    };
    set("true");
    let fetched = resolve(&office);
    assert!(
        fetched["openGraphObject"]["name"]
            .as_str()
            .unwrap_or("")
            .contains("wopi-discovery"),
        "the control: with allow_local_remote_servers the same fetch works: {fetched}"
    );
    set("false");
    let activated = occ(&prefix, &[], &["richdocuments:activate-config"]);
    assert_eq!(activated.exit_code, 0, "{activated:?}");
}

/// Signs `uid` in to the forum stand-in through the daemon's
/// DiscourseConnect provider, as a browser would go: the stand-in's answer
/// (status, JSON).
fn forum_sign_in(
    app: &Appliance,
    port: u16,
    uid: &str,
    password: &str,
) -> (u16, serde_json::Value) {
    let (code, headers, _) = images::http("GET", port, "/session/sso?return_path=/", &[], b"");
    assert_eq!(code, 302);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap();
    let q: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let (code, v) = post(
        app,
        "/v1/sso/discourse",
        serde_json::json!({"sso": q["sso"], "sig": q["sig"], "uid": uid, "password": password}),
    );
    if code != 200 {
        return (code, v);
    }
    let back = v["redirect"].as_str().unwrap();
    let path = &back[back.find("/session/sso_login").unwrap()..];
    let (code, _, body) = images::http("GET", port, path, &[], b"");
    (code, serde_json::from_str(&body).unwrap_or_default())
}

/// Ana, with the password "correct horse battery", a member of these
/// collectives (the first her primary), made straight in the directory;
/// her entryUUID.
fn ana_in(config: &commonscloud::config::Config, collectives: &[&str]) -> String {
    rt().block_on(async {
        let paths = commonscloud::directory::slapd::Paths::new(config);
        let tree = commonscloud::directory::tree::Tree::new(config.suffix().as_str());
        let mut root = commonscloud::directory::ldap::connect_root(&paths)
            .await
            .unwrap();
        let slugs: Vec<commonscloud::model::CollectiveSlug> =
            collectives.iter().map(|c| c.parse().unwrap()).collect();
        let dn = commonscloud::directory::people::create_person(
            &mut root,
            &tree,
            &commonscloud::directory::people::NewPerson {
                uid: "ana",
                display_name: "Ana Ros",
                mail: "ana@example.org",
                language: "en",
                collective_dn: &tree.collective(&slugs[0]),
                home_node: "box",
            },
        )
        .await
        .unwrap();
        for slug in &slugs {
            commonscloud::directory::people::add_member(
                &mut root,
                &tree.group(slug, "members"),
                &dn,
            )
            .await
            .unwrap();
        }
        commonscloud::directory::ldap::set_password(&mut root, &dn, "correct horse battery")
            .await
            .unwrap();
        commonscloud::directory::ldap::read(&mut root, &dn, &["entryUUID"])
            .await
            .unwrap()
            .unwrap()
            .attrs["entryUUID"][0]
            .clone()
    })
}

/// The forum stand-in's users, groups and recorded admin calls.
fn forum_state(port: u16) -> serde_json::Value {
    let (_, _, body) = images::http("GET", port, "/standin/users.json", &[], b"");
    serde_json::from_str(&body).unwrap()
}

/// Polls until `f` holds, for up to a minute.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Suspensions and removals reach the apps at once, not at the next
/// sign-in: the forum (its admin API, as recorded by the stand-in) suspends
/// the person, ends their sessions and drops them from the collective's
/// group; Nextcloud deletes their session tokens and app passwords (occ,
/// as recorded); a reactivation lifts the forum's suspension. With the
/// forum down, the change waits in the queue and lands once it is back.
#[test]
fn suspension_and_removal_reach_the_forum_and_nextcloud() {
    let apps = ["nextcloud", "discourse"];
    let (app, _cleanup) = appliance(&apps);
    let prefix = app.prefix();
    let _daemon = app.serve();
    wait_converged(&app, &apps);
    let config = commonscloud::config::load(&app.config).unwrap();
    let port = config.apps.port_base + 2;
    add_brest_and_reconcile(&app);
    // Ana: of quimper and of brest.
    let uuid = ana_in(&config, &["quimper", "brest"]);
    let (code, signed) = forum_sign_in(&app, port, "ana", "correct horse battery");
    assert_eq!(code, 200, "{signed}");
    let user = &signed["user"];
    assert_eq!(user["external_id"], uuid.as_str());
    let mut groups: Vec<&str> = user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    groups.sort();
    assert_eq!(groups, ["brest", "quimper"]);
    assert_eq!(user["sessions"], 1);
    let id = user["id"].as_u64().unwrap();
    let ana = |st: &serde_json::Value| {
        st["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .cloned()
            .unwrap()
    };
    let calls = |st: &serde_json::Value| -> Vec<String> {
        st["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {} {}",
                    c["method"].as_str().unwrap(),
                    c["path"].as_str().unwrap(),
                    c["status"]
                )
            })
            .collect()
    };

    // Out of brest: out of the forum's brest group at once.
    let (code, v) = post(
        &app,
        "/v1/people/ana/remove",
        serde_json::json!({"by": "admin", "collective": "brest"}),
    );
    assert_eq!(code, 200, "{v}");
    let brest_id = forum_state(port)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "brest")
        .unwrap()["id"]
        .clone();
    eventually("the forum drops ana from brest", || {
        ana(&forum_state(port))["groups"] == serde_json::json!(["quimper"])
    });
    assert!(
        calls(&forum_state(port))
            .contains(&format!("DELETE /admin/users/{id}/groups/{brest_id} 200")),
        "{:?}",
        calls(&forum_state(port))
    );

    // Suspended: suspended in the forum, logged out, Nextcloud's tokens gone.
    let (code, v) = post(
        &app,
        "/v1/people/ana/suspend",
        serde_json::json!({"by": "admin", "reason": "kept posting in private categories"}),
    );
    assert_eq!(code, 200, "{v}");
    eventually("the forum suspends ana and ends her sessions", || {
        let u = ana(&forum_state(port));
        u["suspended_till"].is_string() && u["sessions"] == 0
    });
    let st = forum_state(port);
    let made = calls(&st);
    let at = |c: &str| {
        made.iter()
            .position(|m| m == c)
            .unwrap_or_else(|| panic!("no {c} in {made:?}"))
    };
    assert!(
        at(&format!("PUT /admin/users/{id}/suspend 200"))
            < at(&format!("POST /admin/users/{id}/log_out 200"))
    );
    let suspend = st["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == format!("/admin/users/{id}/suspend"))
        .unwrap();
    assert_eq!(
        suspend["body"]["reason"],
        "kept posting in private categories"
    );
    assert_eq!(suspend["body"]["suspend_until"], "3000-01-01T00:00:00Z");
    assert!(
        made.contains(&format!("GET /u/by-external/{uuid}.json 200")),
        "{made:?}"
    );
    let deleted = || {
        let out = rt().block_on(async {
            commonscloud::docker::objects::exec(
                &docker().await,
                &format!("{prefix}-nextcloud"),
                "www-data",
                None,
                vec!["cat".into(), "/var/www/html/standin-state.json".into()],
            )
            .await
            .unwrap()
        });
        let st: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        st["auth_tokens_deleted"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually("Nextcloud deletes ana's tokens", || !deleted().is_empty());
    let d = &deleted()[0];
    assert_eq!(
        (d["uid"].as_str(), d["last_used_before"].as_str()),
        (Some("ana"), Some("2100-01-01"))
    );
    // Signing in again is refused by the provider and by the forum.
    assert_ne!(
        forum_sign_in(&app, port, "ana", "correct horse battery").0,
        200
    );

    // Reactivated: the forum lifts the suspension.
    let (code, v) = post(
        &app,
        "/v1/people/ana/reactivate",
        serde_json::json!({"by": "admin"}),
    );
    assert_eq!(code, 200, "{v}");
    eventually("the forum lifts ana's suspension", || {
        ana(&forum_state(port))["suspended_till"].is_null()
    });
    assert!(calls(&forum_state(port)).contains(&format!("PUT /admin/users/{id}/unsuspend 200")));

    // The stand-ins take the real routes and arguments only.
    let key = std::fs::read_to_string(app.dir.path().join("secrets/discourse-api-key")).unwrap();
    let api = |method: &str, path: &str, body: &str| {
        images::http(
            method,
            port,
            path,
            &[
                ("Api-Key", key.trim()),
                ("Api-Username", "system"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .0
    };
    let suspend = format!("/admin/users/{id}/suspend");
    assert_eq!(api("PUT", &suspend, r#"{"reason": "no end"}"#), 400);
    assert_eq!(
        api(
            "PUT",
            &suspend,
            r#"{"suspend_until": "3000-01-01T00:00:00Z"}"#
        ),
        400
    );
    assert_eq!(
        api(
            "POST",
            &suspend,
            r#"{"suspend_until": "3000-01-01T00:00:00Z", "reason": "x"}"#
        ),
        404
    );
    assert_eq!(api("GET", "/u/by-external/no-such-uuid.json", ""), 404);
    assert_eq!(api("PUT", "/admin/users/99999/unsuspend", ""), 404);
    for args in [
        vec!["user:auth-tokens:delete", "ana"],
        vec![
            "user:auth-tokens:delete",
            "ana",
            "--last-used-before=tomorrow",
        ],
        vec![
            "user:auth-tokens:delete",
            "ana",
            "3",
            "--last-used-before=2100-01-01",
        ],
        vec!["user:auth-tokens:delete", "ana", "--all"],
    ] {
        let out = occ(&prefix, &[], &args);
        assert_ne!(out.exit_code, 0, "{args:?}: {out:?}");
    }

    // The forum down (and kept down: the test holds the reconcile lock, so
    // the daemon cannot start it again): a new suspension waits, tried and
    // retried, and lands once the forum is back.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(app.dir.path().join("state/reconcile.lock"))
        .unwrap();
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    rt().block_on(async {
        docker()
            .await
            .stop_container(
                &format!("{prefix}-discourse"),
                None::<bollard::query_parameters::StopContainerOptions>,
            )
            .await
            .unwrap();
    });
    let (code, v) = post(
        &app,
        "/v1/people/ana/suspend",
        serde_json::json!({"by": "admin", "reason": "again"}),
    );
    assert_eq!(code, 200, "{v}");
    let state = app.dir.path().join("state");
    let pending = || {
        commonscloud::store::Store::open(&state)
            .unwrap()
            .app_actions_pending()
            .unwrap()
            .into_iter()
            .filter(|r| r.app == "discourse")
            .collect::<Vec<_>>()
    };
    eventually("the forum's suspension is tried and kept for later", || {
        pending()
            .first()
            .is_some_and(|r| r.attempts >= 1 && !r.last_error.is_empty())
    });
    assert_eq!(pending().len(), 2, "suspend and log out wait, in order");
    drop(lock);
    eventually("the suspension lands once the forum is back", || {
        pending().is_empty()
            && images::try_http("GET", port, "/standin/users.json", &[], b"").is_ok_and(|a| {
                a.0 == 200
                    && ana(&serde_json::from_str(&a.2).unwrap())["suspended_till"].is_string()
            })
    });
    let made = calls(&forum_state(port));
    assert_eq!(
        made.iter().filter(|c| c.ends_with("/suspend 200")).count(),
        2,
        "{made:?}"
    );
}
