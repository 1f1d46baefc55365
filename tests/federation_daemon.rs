//! Federation through the real daemon and CLI: `alliance join` (and its
//! dry run), `alliance status`, and `kill -9` in the middle of a replay and
//! of a refresh, after which nothing is lost or doubled and both sides
//! converge.

mod common;

use std::time::{Duration, Instant};

use common::alliance::{Alliance, NODE, SUFFIX};
use common::{Appliance, directory_ok, wait_status};
use commonscloud::directory::{alliance as dir, ldap, people, slapd, tree::Tree};

fn alliance_status(app: &Appliance) -> serde_json::Value {
    let out = app.cli(&["alliance", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `alliance status --json` until `ok` holds.
fn wait_alliance(
    app: &Appliance,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_with_log(app, None, what, ok)
}

/// As [`wait_alliance`], with the daemon's log when it times out.
fn wait_logged(
    app: &Appliance,
    d: &common::Daemon,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_with_log(app, Some(d), what, ok)
}

fn wait_with_log(
    app: &Appliance,
    d: Option<&common::Daemon>,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let s = alliance_status(app);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "never {what}: {s:#}\nlog:\n{}",
            d.map(common::Daemon::log_text).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds `[alliance] insecure = true` (and `extra` keys) to the config and
/// reloads: the test alliances listen on plain ldap:// on loopback.
fn allow_plain_ldap(app: &Appliance, d: &mut common::Daemon, extra: &str) {
    let text = std::fs::read_to_string(&app.config).unwrap();
    // The tests write [alliance] last, when they write it.
    let table = if text.contains("\n[alliance]\n") {
        ""
    } else {
        "\n[alliance]\n"
    };
    std::fs::write(
        &app.config,
        format!("{text}{table}insecure = true\n{extra}"),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for("RELOADING=1", Duration::from_secs(10));
    d.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(app.status()["last_reload"]["applied"], true);
}

fn join(app: &Appliance, alliance: &Alliance, extra: &[&str]) -> std::process::Output {
    let pw = alliance.password_file(NODE);
    let account = alliance.account(NODE);
    let mut args = vec![
        "alliance",
        "join",
        "--url",
        &alliance.url,
        "--bind-dn",
        &account,
        "--password-file",
        pw.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    app.cli(&args)
}

async fn local_root(app: &Appliance) -> (ldap3::Ldap, Tree) {
    let c = commonscloud::config::load(&app.config).unwrap();
    let root = ldap::connect_root(&slapd::Paths::new(&c)).await.unwrap();
    (root, Tree::new(c.suffix().as_str()))
}

/// A person made here (homed here), in Quimper's members.
async fn member_here(root: &mut ldap3::Ldap, tree: &Tree, uid: &str) {
    let slug = "quimper".parse().unwrap();
    let dn = people::create_person(
        root,
        tree,
        &people::NewPerson {
            uid,
            display_name: uid,
            mail: &format!("{uid}@quimper.example.org"),
            language: "en",
            collective_dn: &tree.collective(&slug),
            home_node: NODE,
        },
    )
    .await
    .unwrap();
    people::add_member(root, &tree.group(&slug, "members"), &dn)
        .await
        .unwrap();
}

async fn count(l: &mut ldap3::Ldap, base: &str, filter: &str) -> usize {
    dir::search(l, base, filter, &["1.1"]).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn join_checks_first_and_a_kill_mid_replay_loses_and_doubles_nothing() {
    const N: usize = 600;
    let alliance = Alliance::start();
    let app = Appliance::new();
    let mut d = app.serve();
    wait_status(&app, "directory up", directory_ok);
    let (mut root, tree) = local_root(&app).await;
    for i in 0..N {
        member_here(&mut root, &tree, &format!("p{i:04}")).await;
    }

    // Not federated yet. The test alliance is plain ldap:// (loopback):
    // refused, naming the key that would allow it, and nothing changes.
    let s = alliance_status(&app);
    assert!(s["enrolment"].is_null(), "{s}");
    let out = join(&app, &alliance, &[]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✗ link")
            && text.contains("plain LDAP")
            && text.contains("`insecure = true` under [alliance]")
            && text.contains("--starttls"),
        "{text}"
    );
    assert!(alliance_status(&app)["enrolment"].is_null());
    allow_plain_ldap(&app, &mut d, "");

    // A wrong password changes nothing and says so.
    let bad = app.dir.path().join("bad.pw");
    std::fs::write(&bad, "not-the-password").unwrap();
    let account = alliance.account(NODE);
    let out = app.cli(&[
        "alliance",
        "join",
        "--url",
        &alliance.url,
        "--bind-dn",
        &account,
        "--password-file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✗ link") && text.contains("password"),
        "{text}"
    );
    // A dry run shows the push and changes nothing.
    let out = join(&app, &alliance, &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{} entries to add", N)), "{text}");
    assert!(
        text.contains("DNs are rewritten from dc=quimper,dc=example,dc=org to dc=alliance,dc=net"),
        "{text}"
    );
    assert!(alliance_status(&app)["enrolment"].is_null());

    let out = join(&app, &alliance, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let pw_file = app.dir.path().join("secrets/alliance-password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pw_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Killed in the middle of the replay.
    let s = wait_alliance(&app, "replay under way", |s| {
        s["outbox"]["done"].as_i64() > Some(0)
    });
    assert!(
        s["outbox"]["pending"].as_i64() > Some(0),
        "the replay finished before the kill: {s}"
    );
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    let _d = app.serve();
    let s = wait_alliance(&app, "outbox drained", |s| {
        s["outbox"]["pending"] == 0 && s["link"]["up"] == true
    });
    assert_eq!(s["outbox"]["failed"], 0, "{s:#}");
    assert_eq!(s["outbox"]["conflicts"], 0, "{s:#}");

    let mut a = alliance.root().await;
    assert_eq!(
        count(&mut a, &format!("ou=people,{SUFFIX}"), "(uid=p*)").await,
        N
    );
    let members = format!("cn=members,ou=groups,ou=quimper,ou=collectives,{SUFFIX}");
    let listed = alliance.values(&members, "member").await;
    let ours: std::collections::BTreeSet<&String> =
        listed.iter().filter(|m| m.starts_with("uid=p")).collect();
    assert_eq!(ours.len(), N);
    // The people came back down as the alliance's: mapped, not copied twice.
    let s = wait_alliance(&app, "people in scope", |s| {
        s["entries_in_scope"].as_i64() >= Some(N as i64)
    });
    assert_eq!(count(&mut root, &tree.people(), "(uid=p*)").await, N, "{s}");
    // `status` has a federation component, and metrics the same figures.
    let st = app.status();
    let f = common::component(&st, "federation");
    assert_eq!(f["state"], "ok", "{f}");
    assert!(
        f["detail"].as_str().unwrap().contains("nothing waits"),
        "{f}"
    );
    let (code, metrics) = commonscloud::api::client::get(&app.socket(), "/metrics")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("commonscloud_federation_link_up 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("commonscloud_federation_outbox_pending 0"),
        "{metrics}"
    );
    let scope = s["entries_in_scope"].as_i64().unwrap();
    assert!(
        metrics.contains(&format!("commonscloud_federation_entries_in_scope {scope}")),
        "{metrics}"
    );
    // doctor has its say on the alliance too.
    let out = app.cli(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alliance")
        .cloned()
        .unwrap_or_else(|| panic!("no alliance check in {v}"));
    assert_eq!(check["level"], "ok", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains(&alliance.url),
        "{check}"
    );
    // Human status names the link and the outbox.
    let out = app.cli(&["alliance", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("link       up") && text.contains("outbox     0 pending"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_federated_by_its_config_survives_a_kill_mid_refresh() {
    const N: usize = 3000;
    let alliance = Alliance::start();
    {
        let mut a = alliance.root().await;
        let collective = format!("ou=quimper,ou=collectives,{SUFFIX}");
        let mut dns = std::collections::HashSet::new();
        for i in 0..N {
            let uid = format!("m{i:05}");
            let dn = Alliance::person_dn(&uid);
            a.add(
                &dn,
                vec![
                    ("objectClass", ["inetOrgPerson", "commonsPerson"].into()),
                    ("uid", [uid.as_str()].into()),
                    ("cn", [uid.as_str()].into()),
                    ("sn", [uid.as_str()].into()),
                    (
                        "mail",
                        [format!("{uid}@quimper.example.org").as_str()].into(),
                    ),
                    ("commonsPrimaryCollective", [collective.as_str()].into()),
                    ("commonsAccountState", ["active"].into()),
                    ("commonsHomeNode", [NODE].into()),
                ],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
            dns.insert(dn);
        }
    }
    // This box is federated by its config: the daemon enrols at start.
    // Its alliance is plain ldap://: refused (the box still runs, and
    // status and doctor say what to change) until `insecure = true`.
    let app = Appliance::new();
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(
        &app.config,
        format!(
            "{text}\n[alliance]\ndirectory = \"{}\"\nsuffix = \"{SUFFIX}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\n",
            alliance.url,
            alliance.account(NODE),
            alliance.password_file(NODE).display()
        ),
    )
    .unwrap();
    let mut d = app.serve();
    wait_status(&app, "directory up", directory_ok);
    wait_status(&app, "federation refused", |s| {
        common::component(s, "federation")["state"] == "down"
    });
    says(
        common::component(&app.status(), "federation"),
        "detail",
        "`insecure = true` under [alliance]",
    );
    let check = doctor_alliance(&app);
    assert_eq!(check["level"], "fail", "{check}");
    says(&check, "message", "plain LDAP");
    assert!(alliance_status(&app)["enrolment"].is_null());
    allow_plain_ldap(&app, &mut d, "");
    let (mut root, tree) = local_root(&app).await;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(&mut root, &tree.people(), "(uid=m*)").await;
        if n >= 200 {
            assert!(n < N, "the refresh finished before the kill");
            break;
        }
        assert!(Instant::now() < until, "the refresh never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    let _d = app.serve();
    let s = wait_alliance(&app, "the refresh done", |s| {
        s["link"]["up"] == true
            && s["link"]["refreshing"] == false
            && s["entries_in_scope"].as_i64() >= Some(N as i64)
    });
    assert_eq!(count(&mut root, &tree.people(), "(uid=m*)").await, N, "{s}");
    // Persist mode follows changes after the restart.
    let mut a = alliance.root().await;
    a.modify(
        &Alliance::person_dn("m00042"),
        vec![ldap3::Mod::Replace("displayName", ["Forty-Two"].into())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let local = tree.person("m00042");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let v = dir::read(&mut root, &local, &["displayName"])
            .await
            .unwrap();
        if v.is_some_and(|(_, a)| {
            a.get("displayname")
                .is_some_and(|d| d.contains("Forty-Two"))
        }) {
            break;
        }
        assert!(Instant::now() < until, "the change never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `v[key]` is text containing `needle`.
fn says(v: &serde_json::Value, key: &str, needle: &str) {
    assert!(
        v[key].as_str().is_some_and(|t| t.contains(needle)),
        "{key} should say {needle:?}: {v:#}"
    );
}

fn doctor_alliance(app: &Appliance) -> serde_json::Value {
    let out = app.cli(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alliance")
        .cloned()
        .unwrap_or_else(|| panic!("no alliance check in {v}"))
}

async fn exists(l: &mut ldap3::Ldap, dn: &str) -> bool {
    dir::read(l, dn, &["1.1"]).await.unwrap().is_some()
}

/// Item 14 of the hardening issue: a faulty refresh (the alliance's ACL
/// broken, then a reload, as after the alliance is restored) must not
/// empty this box. It is held with nothing deleted, shown by `status`,
/// `doctor` and `alliance status`, kept across a restart; once an admin
/// confirms, only what is not this box's own goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_that_would_delete_our_people_and_collective_is_held_until_confirmed() {
    const BREST: &str = "box.brest.example.org";
    let alliance = Alliance::start();
    // At the alliance: bob and carl (homed at Brest) are members of
    // Quimper; an alliance-wide service.
    for uid in ["bob", "carl"] {
        alliance
            .person(uid, "brest", BREST, &format!("{uid}-password-1"))
            .await;
        alliance.member("quimper", uid, true).await;
    }
    alliance.service("wiki", "https://wiki.alliance.net").await;
    let app = Appliance::new();
    let mut d = app.serve();
    wait_status(&app, "directory up", directory_ok);
    allow_plain_ldap(&app, &mut d, "max_refresh_deletions = 3\n");
    let (mut root, tree) = local_root(&app).await;
    let slug = "quimper".parse().unwrap();
    let collective = tree.collective(&slug);
    let ours: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    for uid in &ours {
        member_here(&mut root, &tree, uid).await;
    }
    let out = join(&app, &alliance, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let wiki = format!("cn=wiki,{}", tree.services());
    let theirs = [tree.person("bob"), tree.person("carl"), wiki.clone()];
    // Ours are up there and back down (mapped); theirs are copied here.
    let s = wait_alliance(&app, "both ways in step", |s| {
        s["outbox"]["pending"] == 0 && s["entries_in_scope"].as_i64() >= Some(14)
    });
    for dn in &theirs {
        assert!(exists(&mut root, dn).await, "{dn} copied: {s:#}");
    }
    let copy = s["entries_in_scope"].as_i64().unwrap();

    // The alliance goes wrong: this box's account reads nothing any more,
    // and the box reloads (its cookie gone, as after
    // e-syncRefreshRequired).
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    alliance.hide_everything().await;
    {
        let c = commonscloud::config::load(&app.config).unwrap();
        let store = commonscloud::store::Store::open(&c.paths.state_dir).unwrap();
        store.set_sync_cookie(None, 1).unwrap();
    }
    let mut d = app.serve();
    let s = wait_logged(&app, &d, "the refresh held", |s| s["hold"].is_object());
    let hold = &s["hold"];
    assert_eq!(hold["confirmed_at"], serde_json::Value::Null, "{s:#}");
    assert_eq!(hold["local_copy"].as_i64(), Some(copy), "{s:#}");
    // Everything it asked for, this box's own included, is counted.
    assert_eq!(
        hold["delete"].as_i64().unwrap() + hold["keep"].as_i64().unwrap(),
        copy,
        "{s:#}"
    );
    // bob, carl and the wiki; the rest is this box's own (5 people homed
    // here, the collective's 5 entries, the local ou=services).
    assert_eq!(hold["delete"].as_i64(), Some(3), "{s:#}");
    // Nothing was deleted.
    let everything: Vec<String> = ours
        .iter()
        .map(|u| tree.person(u))
        .chain(theirs.iter().cloned())
        .chain([
            collective.clone(),
            tree.group(&slug, "members"),
            tree.group(&slug, "admins"),
            tree.services(),
        ])
        .collect();
    for dn in &everything {
        assert!(exists(&mut root, dn).await, "{dn} deleted while held");
    }
    // status, doctor and `alliance status` say so, and what to run.
    let st = app.status();
    let f = common::component(&st, "federation");
    assert_eq!(f["state"], "degraded", "{f}");
    let detail = f["detail"].as_str().unwrap();
    assert!(
        detail.contains("nothing was deleted")
            && detail.contains(&format!("would delete {copy} of the {copy}"))
            && detail.contains("commonscloud alliance confirm-deletions"),
        "{detail}"
    );
    let (_, metrics) = commonscloud::api::client::get(&app.socket(), "/metrics")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("commonscloud_federation_deletions_held 3"),
        "{metrics}"
    );
    let check = doctor_alliance(&app);
    assert_eq!(check["level"], "warn", "{check}");
    says(&check, "fix", "commonscloud alliance confirm-deletions");
    let text = String::from_utf8_lossy(&app.cli(&["alliance", "status"]).stdout).into_owned();
    assert!(text.contains("held       hold"), "{text}");
    // Without --yes: the list, and nothing confirmed.
    let out = app.cli(&["alliance", "confirm-deletions"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for dn in &theirs {
        assert!(text.contains(&format!("delete {dn}")), "{dn} in {text}");
    }
    for dn in [tree.person("p0"), collective.clone(), tree.services()] {
        assert!(text.contains(&format!("keep   {dn}")), "{dn} in {text}");
    }
    assert!(text.contains("nothing was confirmed"), "{text}");
    assert_eq!(
        alliance_status(&app)["hold"]["confirmed_at"],
        serde_json::Value::Null
    );

    // The hold outlives the daemon: killed and restarted, the same hold,
    // still nothing deleted.
    let id = hold["id"].as_i64().unwrap();
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    let mut d = app.serve();
    let s = wait_logged(&app, &d, "linked again, still held", |s| {
        s["link"]["up"] == true && s["hold"].is_object()
    });
    assert_eq!(s["hold"]["id"].as_i64(), Some(id), "{s:#}");
    assert_eq!(
        common::component(&app.status(), "federation")["state"],
        "degraded"
    );
    for dn in &everything {
        assert!(exists(&mut root, dn).await, "{dn} deleted after a restart");
    }

    // The admin confirms: what is not this box's own goes; the rest stays.
    let out = app.cli(&["alliance", "confirm-deletions", "--yes", "--as", "ana"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("confirmed hold {id}")), "{text}");
    let s = wait_logged(&app, &d, "the hold applied", |s| s["hold"].is_null());
    for dn in &theirs {
        assert!(
            !exists(&mut root, dn).await,
            "{dn} kept after the confirmation"
        );
    }
    for dn in everything.iter().filter(|d| !theirs.contains(d)) {
        assert!(
            exists(&mut root, dn).await,
            "{dn} deleted by a refresh: {s:#}"
        );
    }
    assert!(
        s["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "kept_here"),
        "{s:#}"
    );
    let st = app.status();
    let f = common::component(&st, "federation");
    assert!(
        !f["detail"].as_str().unwrap().contains("confirm-deletions"),
        "{f}"
    );
    // The audit log names who confirmed.
    let c = commonscloud::config::load(&app.config).unwrap();
    let audit = std::process::Command::new("sqlite3")
        .arg(c.paths.state_dir.join("state.db"))
        .arg("SELECT actor || ' ' || action FROM audit WHERE action = 'alliance-confirm-deletions'")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&audit.stdout).trim(),
        "ana alliance-confirm-deletions"
    );
    // Another reload does not hold again: what stays is no longer linked
    // to the alliance's entries.
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    {
        let store = commonscloud::store::Store::open(&c.paths.state_dir).unwrap();
        store.set_sync_cookie(None, 1).unwrap();
    }
    let mut d = app.serve();
    let s = wait_logged(&app, &d, "a whole refresh done", |s| {
        s["cookie_age_secs"].is_i64() && s["link"]["refreshing"] == false
    });
    assert!(s["hold"].is_null(), "{s:#}");
    for dn in everything.iter().filter(|d| !theirs.contains(d)) {
        assert!(exists(&mut root, dn).await, "{dn} deleted by a refresh");
    }

    // Item 15: the enrolment is plain ldap://; once the config no longer
    // allows it, the link is refused, and status and doctor say what to
    // change.
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(&app.config, text.replace("insecure = true\n", "")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for("RELOADING=1", Duration::from_secs(10));
    d.wait_for("READY=1", Duration::from_secs(10));
    let s = wait_logged(&app, &d, "the link refused", |s| {
        s["link"]["refused"].is_string()
    });
    assert_eq!(s["link"]["up"], false, "{s:#}");
    let st = app.status();
    let f = common::component(&st, "federation");
    assert_eq!(f["state"], "down", "{f}");
    says(f, "detail", "`insecure = true` under [alliance]");
    let check = doctor_alliance(&app);
    assert_eq!(check["level"], "fail", "{check}");
    says(&check, "message", "insecure = true");
    let text = String::from_utf8_lossy(&app.cli(&["alliance", "status"]).stdout).into_owned();
    assert!(text.contains("link       refused: "), "{text}");
}
