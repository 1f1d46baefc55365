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
