//! Federation against two real slapd: the alliance's (made by
//! provision/alliance/alliance.sh) and the appliance's own.

mod common;

use common::alliance::{Alliance, Federated, NODE, SUFFIX};
use common::flow::T0;

#[tokio::test(flavor = "multi_thread")]
async fn join_pushes_up_then_changes_flow_both_ways_and_strangers_stay_out() {
    let alliance = Alliance::start();
    // At the alliance: bob (homed at Brest) is also a member of Quimper;
    // carl belongs to Brest only.
    alliance
        .person("bob", "brest", "box.brest.example.org", "bob-password-1")
        .await;
    alliance.member("quimper", "bob", true).await;
    alliance
        .person("carl", "brest", "box.brest.example.org", "carl-password-1")
        .await;

    let mut fed = Federated::new(&alliance).await;
    // Before joining, dora registered here (standalone).
    fed.fx
        .active_person("dora", "dora@quimper.example.org", "dora-password-1")
        .await;
    let plan = fed.join().await;
    assert!(plan.add.contains(&Federated::local_dn("dora")), "{plan:?}");
    assert_eq!(plan.rewrite.as_ref().map(|r| r.1.as_str()), Some(SUFFIX));
    fed.start();

    // Up: dora is at the alliance with her password (the {ARGON2} hash).
    let dora = Alliance::person_dn("dora");
    fed.wait("dora at the alliance", || async {
        alliance.bind_rc(&dora, "dora-password-1").await == 0
    })
    .await;
    assert_eq!(alliance.values(&dora, "commonsHomeNode").await, vec![NODE]);
    let members = format!("cn=members,ou=groups,ou=quimper,ou=collectives,{SUFFIX}");
    fed.wait("dora in the alliance's members", || async {
        alliance.values(&members, "member").await.contains(&dora)
    })
    .await;

    // Down: bob (a member) is copied with his password; carl is not.
    let bob = Federated::local_dn("bob");
    fed.wait("bob copied here", || async { fed.exists(&bob).await })
        .await;
    assert_eq!(fed.fx.inst.bind_rc(&bob, "bob-password-1").await, 0);
    assert!(
        !fed.exists(&Federated::local_dn("carl")).await,
        "carl is out of scope"
    );
    // At the alliance, this box's account reads nothing of carl.
    let mut acct = fed.settings.connect().await.unwrap();
    let seen = commonscloud::directory::alliance::read(
        &mut acct,
        &Alliance::person_dn("carl"),
        &["*", "+"],
    )
    .await
    .unwrap();
    assert!(
        seen.as_ref()
            .is_none_or(|(_, a)| !a.contains_key("mail") && !a.contains_key("userpassword")),
        "{seen:?}"
    );

    // Live, down: an edit at the alliance arrives.
    {
        let mut root = alliance.root().await;
        root.modify(
            &Alliance::person_dn("bob"),
            vec![ldap3::Mod::Replace("displayName", ["Bob Le Goff"].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }
    fed.wait("bob's new name here", || async {
        fed.values(&bob, "displayName").await == vec!["Bob Le Goff"]
    })
    .await;

    // Live, down: carl joins Quimper and is copied; leaves and is removed.
    alliance.member("quimper", "carl", true).await;
    let carl = Federated::local_dn("carl");
    fed.wait("carl copied once a member", || async {
        fed.exists(&carl).await
    })
    .await;
    alliance.member("quimper", "carl", false).await;
    fed.wait("carl gone once he left", || async {
        !fed.exists(&carl).await
    })
    .await;

    // Live, up: dora changes her password and her name here.
    fed.svc
        .change_password("dora", "dora-password-1", "dora-password-2", T0 + 100)
        .await
        .unwrap();
    fed.svc
        .update_profile("dora", "Dora Kerjean", "es", T0 + 101)
        .await
        .unwrap();
    fed.wait("dora's new password at the alliance", || async {
        alliance.bind_rc(&dora, "dora-password-2").await == 0
    })
    .await;
    fed.wait("dora's name at the alliance", || async {
        alliance.values(&dora, "displayName").await == vec!["Dora Kerjean"]
    })
    .await;
    let o = fed.outbox();
    assert_eq!((o.pending, o.failed, o.conflicts), (0, 0, 0), "{o:?}");
}

/// A joined, running appliance with dora (homed here) and bob (homed at
/// Brest, a member here), both copied both ways.
async fn running(alliance: &Alliance) -> Federated {
    alliance
        .person("bob", "brest", "box.brest.example.org", "bob-password-1")
        .await;
    alliance.member("quimper", "bob", true).await;
    let mut fed = Federated::new(alliance).await;
    fed.fx
        .active_person("dora", "dora@quimper.example.org", "dora-password-1")
        .await;
    fed.join().await;
    fed.start();
    let dora = Alliance::person_dn("dora");
    fed.wait("dora at the alliance", || async {
        alliance.bind_rc(&dora, "dora-password-1").await == 0
    })
    .await;
    let bob = Federated::local_dn("bob");
    fed.wait("bob here", || async { fed.exists(&bob).await })
        .await;
    fed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_keeps_logins_and_local_work_and_loses_or_doubles_nothing() {
    let alliance = Alliance::start();
    let fed = running(&alliance).await;
    alliance.stop();
    fed.wait("the link seen down", || async { !fed.link.is_up() })
        .await;

    // Offline: eve registers and is approved, dora changes her password.
    fed.active_person(
        "eve",
        "eve@quimper.example.org",
        "eve-password-1",
        T0 + 1000,
    )
    .await;
    fed.svc
        .change_password("dora", "dora-password-1", "dora-password-2", T0 + 1100)
        .await
        .unwrap();
    // Logins keep working from the local directory, for people homed here
    // and elsewhere.
    let inst = &fed.fx.inst;
    assert_eq!(
        inst.bind_rc(&Federated::local_dn("eve"), "eve-password-1")
            .await,
        0
    );
    assert_eq!(
        inst.bind_rc(&Federated::local_dn("dora"), "dora-password-2")
            .await,
        0
    );
    assert_eq!(
        inst.bind_rc(&Federated::local_dn("bob"), "bob-password-1")
            .await,
        0
    );
    // A change that only bob's home may make is refused, saying why.
    let e = fed
        .svc
        .suspend("bob", "admin", "spam", T0 + 1200)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("box.brest.example.org") && msg.contains("try again later"),
        "{msg}"
    );
    let e = fed
        .svc
        .update_profile("bob", "Robert", "en", T0 + 1201)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("try again later"), "{e}");
    assert!(fed.outbox().pending >= 3, "{:?}", fed.outbox());

    // The link returns: everything lands once.
    alliance.restart();
    let eve = Alliance::person_dn("eve");
    fed.wait("eve at the alliance", || async {
        alliance.bind_rc(&eve, "eve-password-1").await == 0
    })
    .await;
    fed.wait("the outbox drained", || async { fed.outbox().pending == 0 })
        .await;
    assert_eq!(
        alliance
            .bind_rc(&Alliance::person_dn("dora"), "dora-password-2")
            .await,
        0,
        "{}",
        fed.debug()
    );
    let members = format!("cn=members,ou=groups,ou=quimper,ou=collectives,{SUFFIX}");
    let listed = alliance.values(&members, "member").await;
    assert_eq!(
        listed.iter().filter(|m| **m == eve).count(),
        1,
        "{listed:?}"
    );
    let mut root = alliance.root().await;
    let found = commonscloud::directory::alliance::search(
        &mut root,
        &format!("ou=people,{SUFFIX}"),
        "(uid=eve)",
        &["1.1"],
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    let o = fed.outbox();
    assert_eq!((o.failed, o.conflicts), (0, 0), "{}", fed.debug());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_settle_by_the_authority_rule() {
    let alliance = Alliance::start();
    let mut fed = running(&alliance).await;
    fed.stop().await;
    // Both sides change dora's password and her name while apart.
    fed.svc
        .change_password("dora", "dora-password-1", "dora-password-here", T0 + 100)
        .await
        .unwrap();
    fed.svc
        .update_profile("dora", "Dora (here)", "ca", T0 + 101)
        .await
        .unwrap();
    let dora = Alliance::person_dn("dora");
    {
        let mut root = alliance.root().await;
        commonscloud::directory::ldap::set_password(&mut root, &dora, "dora-password-there")
            .await
            .unwrap();
        root.modify(
            &dora,
            vec![ldap3::Mod::Replace("displayName", ["Dora (there)"].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }
    fed.start();
    fed.wait("the outbox settled", || async { fed.outbox().pending == 0 })
        .await;
    // The password is dora's home node's (here): ours stays, at both ends.
    assert_eq!(
        alliance.bind_rc(&dora, "dora-password-here").await,
        0,
        "{}",
        fed.debug()
    );
    let here = Federated::local_dn("dora");
    assert_eq!(fed.fx.inst.bind_rc(&here, "dora-password-here").await, 0);
    // Her name is the alliance's: theirs stays, at both ends.
    fed.wait("the alliance's name here", || async {
        fed.values(&here, "displayName").await == vec!["Dora (there)"]
    })
    .await;
    assert_eq!(
        alliance.values(&dora, "displayName").await,
        vec!["Dora (there)"]
    );
    let conflicts = fed.fx.store.lock().unwrap().conflicts(10).unwrap();
    let winner = |attr: &str| {
        conflicts
            .iter()
            .find(|c| c.attr == attr)
            .map(|c| c.winner.clone())
            .unwrap_or_else(|| panic!("no {attr} conflict in {conflicts:?}"))
    };
    assert_eq!(winner("userpassword"), "local");
    assert_eq!(winner("displayname"), "alliance");
    assert!(
        conflicts.iter().all(|c| !c.detail.contains("ARGON2")),
        "hashes never shown: {conflicts:?}"
    );
}

#[test]
fn bench_federation_prints_its_figures_and_ratio() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "bench",
            "federation",
            "--people",
            "300",
            "--changes",
            "50",
            "--outbox",
            "40",
            "--json",
        ])
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["people"], 300);
    assert!(r["baseline_secs"].as_f64().unwrap() > 0.0, "{r}");
    let ratio = r["sync_ratio"].as_f64().unwrap();
    let (sync, base) = (
        r["sync_secs"].as_f64().unwrap(),
        r["baseline_secs"].as_f64().unwrap(),
    );
    assert!((ratio - sync / base).abs() < 1e-9, "{r}");
    assert!(r["propagation_p99_ms"].as_f64().unwrap() >= r["propagation_p50_ms"].as_f64().unwrap());
    assert_eq!(r["outbox"], 40);
    assert!(r["outbox_per_sec"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uid_taken_at_the_alliance_is_never_overwritten_and_its_owner_chooses_another() {
    let alliance = Alliance::start();
    // zoe of Brest: invisible to Quimper's box.
    alliance
        .person(
            "zoe",
            "brest",
            "box.brest.example.org",
            "brest-zoe-password",
        )
        .await;
    let fed = running(&alliance).await;
    fed.active_person(
        "zoe",
        "zoe@quimper.example.org",
        "our-zoe-password",
        T0 + 500,
    )
    .await;
    fed.wait("the collision found on replay", || async {
        fed.fx
            .store
            .lock()
            .unwrap()
            .has_conflict(&Federated::local_dn("zoe"), "uid_taken")
            .unwrap()
    })
    .await;
    // Brest's zoe joins Quimper too: she is not copied over ours.
    alliance.member("quimper", "zoe", true).await;
    fed.wait("the shadowing seen", || async {
        fed.fx
            .store
            .lock()
            .unwrap()
            .has_conflict(&Federated::local_dn("zoe"), "uid_taken_here")
            .unwrap()
    })
    .await;
    let here = Federated::local_dn("zoe");
    assert_eq!(
        fed.values(&here, "mail").await,
        vec!["zoe@quimper.example.org"]
    );
    assert_eq!(
        fed.fx.inst.bind_rc(&here, "our-zoe-password").await,
        0,
        "ours still logs in"
    );
    assert_eq!(
        alliance.values(&Alliance::person_dn("zoe"), "mail").await,
        vec!["zoe@brest.example.org"],
        "theirs untouched"
    );

    // Ours is mailed a link, and chooses another uid.
    let (params, token) = fed.fx.mail("zoe@quimper.example.org", "uid_taken");
    assert_eq!(params["uid"], "zoe");
    // (The replay dated the link by the clock.)
    let now = commonscloud::clock::unix_now();
    let e = fed.svc.choose_uid(&token, "zoe", now).await.unwrap_err();
    assert!(e.to_string().contains("taken"), "{e}");
    assert_eq!(
        fed.svc.choose_uid(&token, "zoe.k", now + 1).await.unwrap(),
        "zoe.k"
    );
    let zk = Alliance::person_dn("zoe.k");
    fed.wait("zoe.k at the alliance with her password", || async {
        alliance.bind_rc(&zk, "our-zoe-password").await == 0
    })
    .await;
    let members = format!("cn=members,ou=groups,ou=quimper,ou=collectives,{SUFFIX}");
    fed.wait("zoe.k in Quimper at the alliance", || async {
        alliance.values(&members, "member").await.contains(&zk)
    })
    .await;
    // The uid is free here now: Brest's zoe is copied in.
    fed.wait("Brest's zoe copied", || async {
        fed.values(&here, "mail").await == vec!["zoe@brest.example.org"]
    })
    .await;
    let reg = fed
        .fx
        .store
        .lock()
        .unwrap()
        .registration_of_account("zoe.k")
        .unwrap();
    assert!(reg.is_some(), "the request follows the new uid");
    // The link was single-use.
    assert!(fed.svc.choose_uid(&token, "zoe.x", now + 2).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_and_deletes_at_the_alliance_follow_by_entry_uuid() {
    let alliance = Alliance::start();
    // An alliance-wide service, open to everyone.
    alliance.service("wiki", "https://wiki.alliance.net").await;
    let fed = running(&alliance).await;
    let local = |cn: &str| format!("cn={cn},ou=services,dc=quimper,dc=example,dc=org");
    fed.wait("the service copied", || async {
        fed.exists(&local("wiki")).await
    })
    .await;
    // Renamed there: renamed here (the same entry, by its UUID).
    {
        let mut root = alliance.root().await;
        root.modifydn(
            &format!("cn=wiki,ou=services,{SUFFIX}"),
            "cn=docs",
            true,
            None,
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }
    fed.wait("the rename followed", || async {
        fed.exists(&local("docs")).await && !fed.exists(&local("wiki")).await
    })
    .await;
    assert_eq!(
        fed.values(&local("docs"), "labeledURI").await,
        vec!["https://wiki.alliance.net"]
    );
    // Deleted there: deleted here.
    {
        let mut root = alliance.root().await;
        root.delete(&format!("cn=docs,ou=services,{SUFFIX}"))
            .await
            .unwrap()
            .success()
            .unwrap();
    }
    fed.wait("the delete followed", || async {
        !fed.exists(&local("docs")).await
    })
    .await;
    // bob (homed at Brest) is deleted at the alliance: gone here too.
    {
        let mut root = alliance.root().await;
        root.delete(&Alliance::person_dn("bob"))
            .await
            .unwrap()
            .success()
            .unwrap();
    }
    fed.wait("bob gone here", || async {
        !fed.exists(&Federated::local_dn("bob")).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_ldaps_the_alliance_certificate_is_checked_against_the_ca_file() {
    let alliance = Alliance::start_tls();
    assert!(alliance.url.starts_with("ldaps://"));
    let mut fed = Federated::new(&alliance).await;
    // Without the alliance's CA, the link check fails and says so.
    let mut untrusting = fed.settings.clone();
    untrusting.ca_file = None;
    let (checks, remote) = commonscloud::federation::join::check(&untrusting).await;
    assert!(remote.is_none());
    assert!(!checks[0].ok && checks[0].name == "link", "{checks:?}");
    // With it, everything works over TLS.
    fed.fx
        .active_person("dora", "dora@quimper.example.org", "dora-password-1")
        .await;
    fed.join().await;
    let enrolled = fed.fx.store.lock().unwrap().enrolment().unwrap().unwrap();
    assert_eq!(
        enrolled.ca_file.as_deref(),
        alliance.ca_file.as_ref().and_then(|p| p.to_str())
    );
    fed.start();
    let dora = Alliance::person_dn("dora");
    fed.wait("dora at the alliance over ldaps", || async {
        alliance.bind_rc(&dora, "dora-password-1").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_ldap_is_refused_without_insecure_naming_the_key() {
    let alliance = Alliance::start();
    assert!(alliance.url.starts_with("ldap://"));
    let mut fed = Federated::new(&alliance).await;
    fed.settings.insecure = false;
    // The join's first check fails before anything is sent.
    let (checks, remote) = commonscloud::federation::join::check(&fed.settings).await;
    assert!(remote.is_none());
    assert_eq!(checks.len(), 1, "{checks:?}");
    let link = &checks[0];
    assert!(!link.ok && link.name == "link", "{checks:?}");
    assert!(
        link.message.contains("plain LDAP")
            && link.message.contains("`insecure = true` under [alliance]")
            && link.message.contains("starttls = true"),
        "{}",
        link.message
    );
    // An enrolment made before (an ldap:// URL stored) is not used either:
    // the task says why and never connects.
    fed.fx
        .active_person("dora", "dora@quimper.example.org", "dora-password-1")
        .await;
    fed.start();
    fed.wait("the link refused", || async {
        fed.link.state().refused.is_some()
    })
    .await;
    let st = fed.link.state();
    assert!(!st.up, "{st:?}");
    assert!(
        st.refused.unwrap().contains("insecure = true"),
        "names the key"
    );
    assert_eq!(fed.fx.store.lock().unwrap().last_contact().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_works_with_the_alliances_ca_and_fails_without_it() {
    let alliance = Alliance::start_starttls();
    assert!(alliance.url.starts_with("ldap://") && alliance.starttls);
    let mut fed = Federated::new(&alliance).await;
    assert!(fed.settings.starttls && !fed.settings.insecure);
    // Without the alliance's CA, the upgrade fails (the certificate is
    // checked), and the box does not fall back to plain LDAP.
    let mut untrusting = fed.settings.clone();
    untrusting.ca_file = None;
    let (checks, remote) = commonscloud::federation::join::check(&untrusting).await;
    assert!(remote.is_none());
    assert!(!checks[0].ok && checks[0].name == "link", "{checks:?}");
    assert!(checks[0].message.contains("StartTLS"), "{checks:?}");
    // Without StartTLS, the same URL is plain LDAP: refused.
    let mut plain = fed.settings.clone();
    plain.starttls = false;
    let (checks, _) = commonscloud::federation::join::check(&plain).await;
    assert!(checks[0].message.contains("insecure = true"), "{checks:?}");
    // A server that offers no StartTLS is not spoken to in clear.
    let bare = Alliance::start();
    let mut no_tls = fed.settings.clone();
    no_tls.url = bare.url.clone();
    no_tls.password = bare.password(NODE);
    let (checks, remote) = commonscloud::federation::join::check(&no_tls).await;
    assert!(remote.is_none() && !checks[0].ok, "{checks:?}");
    assert!(checks[0].message.contains("(StartTLS)"), "{checks:?}");
    // With the CA, everything works over StartTLS, kept with the enrolment.
    fed.fx
        .active_person("dora", "dora@quimper.example.org", "dora-password-1")
        .await;
    let (checks, _) = commonscloud::federation::join::check(&fed.settings).await;
    assert!(checks[0].message.contains("over StartTLS"), "{checks:?}");
    fed.join().await;
    let enrolled = fed.fx.store.lock().unwrap().enrolment().unwrap().unwrap();
    assert!(enrolled.starttls);
    fed.start();
    let dora = Alliance::person_dn("dora");
    fed.wait("dora at the alliance over StartTLS", || async {
        alliance.bind_rc(&dora, "dora-password-1").await == 0
    })
    .await;
    assert_eq!(
        fed.link.state().security,
        Some(commonscloud::federation::guard::LinkSecurity::StartTls)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alliance_deleting_a_person_homed_here_deletes_nothing_here() {
    let alliance = Alliance::start();
    let fed = running(&alliance).await;
    let dora = Federated::local_dn("dora");
    let bob = Federated::local_dn("bob");
    fed.wait("dora linked", || async {
        fed.fx
            .store
            .lock()
            .unwrap()
            .fed_entries()
            .unwrap()
            .iter()
            .any(|(_, d)| *d == dora)
    })
    .await;
    {
        let mut root = alliance.root().await;
        for uid in ["dora", "bob"] {
            root.delete(&Alliance::person_dn(uid))
                .await
                .unwrap()
                .success()
                .unwrap();
        }
    }
    // bob (homed at Brest) goes; dora, homed here, stays and still signs in.
    fed.wait("bob gone here", || async { !fed.exists(&bob).await })
        .await;
    fed.wait("dora kept, recorded", || async {
        fed.fx
            .store
            .lock()
            .unwrap()
            .has_conflict(&dora, "kept_here")
            .unwrap()
    })
    .await;
    assert!(fed.exists(&dora).await);
    assert_eq!(fed.fx.inst.bind_rc(&dora, "dora-password-1").await, 0);
}
