//! Admin work through the running daemon: the CLI for people, collectives
//! and invitations, and approvals while slapd is killed (each is either
//! done or reported failed, never half-written, and a retry finishes it).

mod common;

use std::collections::HashMap;

use common::{Appliance, directory_ok, post, wait_status};
use commonscloud::store::Store;
use nix::sys::signal::Signal;
use serde_json::json;

const SUFFIX: &str = "dc=quimper,dc=example,dc=org";

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

/// Queued mails (nothing is configured to send them): (recipient, template,
/// params) in order.
fn outbox(app: &Appliance) -> Vec<(String, String, serde_json::Value)> {
    let store = Store::open(&app.dir.path().join("state")).unwrap();
    store
        .due_mail(i64::MAX, 100_000)
        .unwrap()
        .into_iter()
        .map(|m| {
            let p = serde_json::from_str(&m.params).unwrap();
            (m.recipient, m.template, p)
        })
        .collect()
}

fn token(app: &Appliance, to: &str, template: &str) -> String {
    outbox(app)
        .into_iter()
        .rev()
        .find(|(r, t, _)| r == to && t == template)
        .and_then(|(_, _, p)| {
            p["link"]
                .as_str()
                .and_then(|l| l.split("token=").nth(1))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {template} mail to {to}"))
}

/// Registers and verifies; returns the request id.
fn request(app: &Appliance, uid: &str) -> i64 {
    let mail = format!("{uid}@example.org");
    let (code, v) = post(
        app,
        "/v1/registrations",
        json!({"uid": uid, "display_name": uid, "email": mail, "collective": "quimper",
               "language": "en", "ip": format!("198.51.100.{}", uid.bytes().map(u32::from).sum::<u32>() % 250)}),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = post(
        app,
        "/v1/registrations/verify",
        json!({"token": token(app, &mail, "verify")}),
    );
    assert_eq!(code, 200, "{v}");
    v["id"].as_i64().unwrap()
}

fn bind_rc(app: &Appliance, dn: &str, pw: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(commonscloud::directory::ldap::check_password(
        &app.ldap_url(),
        dn,
        pw,
    ))
    .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn the_cli_manages_people_collectives_and_invitations() {
    let app = Appliance::new();
    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let id = request(&app, "ana");
    ok(&app.cli(&["user", "approve", &id.to_string(), "--as", "admin:marie"]));
    let (code, v) = post(
        &app,
        "/v1/password",
        json!({"token": token(&app, "ana@example.org", "set_password"), "password": "ana's first password"}),
    );
    assert_eq!(code, 200, "{v}");
    assert!(bind_rc(&app, &dn("ana"), "ana's first password"));

    // Suspend: the raw bind an app would make is refused; reactivate.
    ok(&app.cli(&[
        "user",
        "suspend",
        "ana",
        "--reason",
        "spam",
        "--as",
        "admin:marie",
    ]));
    assert!(!bind_rc(&app, &dn("ana"), "ana's first password"));
    let shown = json_of(&app.cli(&["user", "show", "ana", "--json"]));
    assert_eq!(shown["suspended"], true, "{shown}");
    ok(&app.cli(&["user", "reactivate", "ana"]));
    assert!(bind_rc(&app, &dn("ana"), "ana's first password"));

    // A second collective, an invitation to it, promotion, a group, a grant.
    ok(&app.cli(&["collective", "create", "brest", "--name", "Brest en Commun"]));
    let listed = json_of(&app.cli(&["collective", "list", "--json"]));
    let slugs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["brest", "quimper"]);
    ok(&app.cli(&["invite", "ana@example.org", "--collective", "brest"]));
    let (code, v) = post(
        &app,
        "/v1/invitations/accept",
        json!({"token": token(&app, "ana@example.org", "invite_existing")}),
    );
    assert_eq!((code, v["uid"].as_str()), (200, Some("ana")), "{v}");
    ok(&app.cli(&["user", "promote", "ana", "--collective", "quimper"]));
    ok(&app.cli(&["collective", "add-group", "quimper", "editors"]));
    ok(&app.cli(&[
        "user",
        "group",
        "ana",
        "--collective",
        "quimper",
        "--group",
        "editors",
    ]));
    ok(&app.cli(&[
        "collective",
        "grant",
        "quimper",
        "--service",
        "wiki",
        "--group",
        "editors",
    ]));
    let q = json_of(&app.cli(&["collective", "show", "quimper", "--json"]));
    assert_eq!(q["admins"], json!(["ana"]), "{q}");
    assert_eq!(q["groups"], json!([["editors", ["ana"]]]), "{q}");
    assert_eq!(q["services"][0]["groups"], json!(["editors"]), "{q}");
    let people = json_of(&app.cli(&["user", "list", "--json"]));
    let groups = &people["people"][0]["groups"];
    assert!(
        groups
            .as_array()
            .unwrap()
            .contains(&json!(["brest", "members"])),
        "{people}"
    );
    let human = ok(&app.cli(&["user", "list"]));
    assert!(
        human.contains("ana") && human.contains("quimper(admin)"),
        "{human}"
    );
    // Errors name what is wrong and what to do.
    let out = app.cli(&["user", "suspend", "ghost", "--reason", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no person `ghost`"), "{err}");
    let out = app.cli(&["collective", "create", "Not A Slug", "--name", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid slug"));
    // A collective is a forum group, and the forum keeps groups and users
    // in one namespace: a slug that is someone's login is refused.
    let out = app.cli(&["collective", "create", "ana", "--name", "Ana's"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`ana` is a person's user name"), "{err}");
    // Every change is in the audit log, with who did it.
    let store = Store::open(&app.dir.path().join("state")).unwrap();
    let audit: Vec<(String, String)> = store
        .recent_audit(100)
        .unwrap()
        .into_iter()
        .map(|a| (a.actor, a.action))
        .collect();
    for action in [
        "approve",
        "suspend",
        "reactivate",
        "create-collective",
        "invite",
        "accept-invitation",
        "promote",
        "create-group",
        "add-to-group",
        "grant-service",
    ] {
        assert!(
            audit.iter().any(|(_, a)| a == action),
            "{action}: {audit:?}"
        );
    }
    assert!(audit.contains(&("admin:marie".into(), "suspend".into())));
}

#[test]
fn approvals_while_slapd_is_killed_are_done_or_failed_never_half_written() {
    let app = Appliance::new();
    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let uids: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    let ids: Vec<(String, i64)> = uids.iter().map(|u| (u.clone(), request(&app, u))).collect();

    // Approvals stream from another thread; slapd is killed after the
    // second one went through.
    let (tx, rx) = std::sync::mpsc::channel();
    let stream = {
        let ids = ids.clone();
        let config = app.config.clone();
        let socket = app.socket();
        std::thread::spawn(move || {
            let _ = config;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut answers = HashMap::new();
            for (uid, id) in ids {
                let (code, _) = rt
                    .block_on(commonscloud::api::client::post(
                        &socket,
                        &format!("/v1/registrations/{id}/approve"),
                        &json!({"by": "admin:stream"}),
                    ))
                    .unwrap();
                answers.insert(uid, code);
                let _ = tx.send(code);
            }
            answers
        })
    };
    let mut done = 0;
    while done < 2 {
        if rx.recv().unwrap() == 200 {
            done += 1;
        }
    }
    let pid = app.slapd_pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let answers = stream.join().unwrap();
    let failed: Vec<&String> = uids.iter().filter(|u| answers[*u] != 200).collect();
    assert!(!failed.is_empty(), "slapd was down for some: {answers:?}");
    for u in &failed {
        assert_eq!(
            answers[*u], 503,
            "reported as a directory failure: {answers:?}"
        );
    }
    wait_status(&app, "slapd restarted", |s| {
        directory_ok(s)
            && common::component(s, "directory")["detail"]
                .as_str()
                .unwrap()
                .contains("restarted 1×")
    });

    // Nothing half-written: each request is approved with its entry, its
    // membership and one mail, or still awaits a decision with no mail.
    let check = |settled: bool| {
        let store = Store::open(&app.dir.path().join("state")).unwrap();
        let mails = outbox(&app);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = commonscloud::config::load(&app.config).unwrap();
        let paths = commonscloud::directory::slapd::Paths::new(&c);
        let tree = commonscloud::directory::tree::Tree::new(c.suffix().as_str());
        for (uid, id) in &ids {
            let state = store.registration(*id).unwrap().unwrap().state;
            let sent = mails
                .iter()
                .filter(|(r, t, _)| *r == format!("{uid}@example.org") && t == "set_password")
                .count();
            let person = rt.block_on(async {
                let mut root = commonscloud::directory::ldap::connect_root(&paths)
                    .await
                    .unwrap();
                commonscloud::directory::people::person(&mut root, &tree, uid)
                    .await
                    .unwrap()
            });
            match state.as_str() {
                "approved" => {
                    let p = person.unwrap_or_else(|| panic!("{uid} approved without an entry"));
                    assert!(
                        p.is_member(&c.collective.slug),
                        "{uid} approved, not a member"
                    );
                    assert_eq!(sent, 1, "{uid}: one welcome mail");
                }
                "awaiting_validation" => {
                    assert!(!settled, "{uid} still waits after the retry");
                    assert_eq!(sent, 0, "{uid}: no mail for an undone approval");
                }
                other => panic!("{uid} is {other}"),
            }
        }
    };
    check(false);
    for u in &failed {
        let id = ids.iter().find(|(x, _)| x == *u).unwrap().1;
        ok(&app.cli(&["user", "approve", &id.to_string()]));
    }
    check(true);
}
