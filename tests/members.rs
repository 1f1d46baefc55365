//! Membership after registration, against a real slapd: suspension (a raw
//! bind is refused), invitations, requests to join another collective,
//! admins' actions on groups and services, and forgotten passwords.

mod common;

use common::flow::{Fixture, T0, field_of, fixture, form};
use commonscloud::directory::auth::{AuthError, Authenticator};
use commonscloud::directory::{ldap, people};
use commonscloud::onboarding::membership::Refusal;
use commonscloud::onboarding::service::OnboardingError;
use ldap3::{Scope, SearchEntry};

fn refusal(e: OnboardingError) -> Refusal {
    match e {
        OnboardingError::Refused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

impl Fixture {
    fn count_mails(&self, to: &str, template: &str) -> usize {
        let store = self.store.lock().unwrap();
        store
            .due_mail(i64::MAX, 10_000)
            .unwrap()
            .iter()
            .filter(|m| m.recipient == to && m.template == template)
            .count()
    }

    fn audited(&self, action: &str) -> Vec<String> {
        let store = self.store.lock().unwrap();
        store
            .recent_audit(1000)
            .unwrap()
            .into_iter()
            .filter(|a| a.action == action)
            .map(|a| format!("{} {}", a.actor, a.detail))
            .collect()
    }

    async fn collective(&self, slug: &str, name: &str) {
        self.svc
            .create_collective(slug, name, "admin:root", T0)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_refuses_every_bind_and_reactivation_restores_it() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    let dn = f.inst.tree.person("ana");
    let auth = Authenticator::new(f.inst.paths.clone(), f.inst.tree.clone());
    assert_eq!(f.inst.bind_rc(&dn, "correct horse battery").await, 0);
    assert_eq!(
        auth.authenticate("ana", "correct horse battery")
            .await
            .unwrap()
            .uid,
        "ana"
    );

    let p = f
        .svc
        .suspend("ana", "admin:bea", "spam in the forum", T0 + 100)
        .await
        .unwrap();
    assert!(p.suspended);
    // The lock is in the directory itself: a raw bind over TCP, as an app
    // would make it, is refused with invalidCredentials.
    assert_eq!(f.inst.bind_rc(&dn, "correct horse battery").await, 49);
    assert!(matches!(
        auth.authenticate("ana", "correct horse battery").await,
        Err(AuthError::Refused)
    ));
    let mut root = f.inst.root().await;
    let e = ldap::read(
        &mut root,
        &dn,
        &["commonsAccountState", "pwdAccountLockedTime"],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(e.attrs["commonsAccountState"], ["suspended"]);
    assert_eq!(e.attrs["pwdAccountLockedTime"], ["000001010000Z"]);
    // An app's filter on the state also sees it.
    let nc = f.inst.secret("nextcloud");
    let mut app = f
        .inst
        .bind(&f.inst.tree.service_account("nextcloud"), &nc)
        .await;
    let (found, _) = app
        .search(
            &f.inst.tree.people(),
            Scope::OneLevel,
            "(&(uid=ana)(commonsAccountState=active))",
            vec!["uid"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    assert!(found.is_empty());

    // Told once, even when suspended twice; a reset link is not mailed.
    f.svc
        .suspend("ana", "admin:bea", "again", T0 + 101)
        .await
        .unwrap();
    assert_eq!(f.count_mails("ana@example.org", "suspended"), 1);
    let (params, _) = f.mail("ana@example.org", "suspended");
    assert_eq!(params["reason"], "spam in the forum");
    f.svc
        .forgot_password("ana", "192.0.2.7", T0 + 102)
        .await
        .unwrap();
    assert_eq!(f.count_mails("ana@example.org", "reset_password"), 0);

    let p = f
        .svc
        .reactivate("ana", "admin:bea", T0 + 200)
        .await
        .unwrap();
    assert!(!p.suspended);
    assert_eq!(f.inst.bind_rc(&dn, "correct horse battery").await, 0);
    assert!(
        auth.authenticate("ana", "correct horse battery")
            .await
            .is_ok()
    );
    assert_eq!(f.count_mails("ana@example.org", "reactivated"), 1);
    assert_eq!(f.audited("suspend").len(), 2);
    assert_eq!(f.audited("reactivate"), ["admin:bea ana"]);
    // Wrong passwords and unknown people are refused alike.
    assert!(auth.authenticate("ana", "wrong").await.is_err());
    assert!(auth.authenticate("nobody-here", "x").await.is_err());
    assert!(auth.authenticate("ana", "").await.is_err());
    assert!(matches!(
        refusal(f.svc.suspend("ghost", "admin", "", T0).await.unwrap_err()),
        Refusal::NoPerson(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_let_a_person_join_or_preselect_the_collective() {
    let f = fixture().await;
    f.collective("brest", "Brest en Commun").await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;

    // An existing person: the link makes them a member.
    f.svc
        .invite("Ana@Example.org", "brest", "admin:bea", T0 + 100)
        .await
        .unwrap();
    let (params, token) = f.mail("ana@example.org", "invite_existing");
    assert_eq!(params["collective"], "Brest en Commun");
    assert!(params["link"].as_str().unwrap().contains("/join?token="));
    let info = f.svc.invitation_info(&token, T0 + 110).await.unwrap();
    assert!(info.has_account);
    assert_eq!(info.collective, "brest");
    assert_eq!(
        f.svc.accept_invitation(&token, T0 + 120).await.unwrap(),
        "ana"
    );
    let ana = f.svc.person("ana").await.unwrap();
    assert!(ana.is_member(&"brest".parse().unwrap()));
    assert!(ana.is_member(&"quimper".parse().unwrap()));
    assert!(matches!(
        f.svc.accept_invitation(&token, T0 + 130).await,
        Err(OnboardingError::BadLink)
    ));
    // Inviting a member again is refused, saying so.
    let e = refusal(
        f.svc
            .invite("ana@example.org", "brest", "admin:bea", T0 + 140)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, Refusal::AlreadyMember { .. }), "{e}");

    // A new address: the link opens registration with the collective set,
    // and since it proves the address, the request goes to the admins.
    f.svc
        .invite("cy@example.org", "brest", "admin:bea", T0 + 200)
        .await
        .unwrap();
    let store_mail = {
        let store = f.store.lock().unwrap();
        let m = store.due_mail(i64::MAX, 100).unwrap();
        m.into_iter()
            .rev()
            .find(|m| m.recipient == "cy@example.org" && m.template == "invite_new")
            .unwrap()
    };
    let params: serde_json::Value = serde_json::from_str(&store_mail.params).unwrap();
    let link = params["link"].as_str().unwrap();
    assert!(link.contains("/register?invite=") && link.ends_with("&collective=brest"));
    let token = link
        .split("invite=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        !f.svc
            .invitation_info(token, T0 + 210)
            .await
            .unwrap()
            .has_account
    );
    let told = f.count_mails("admin@quimper.example.org", "admins_new_request");
    let mut fm = form("cy", "cy@example.org");
    fm.collective = "quimper".into(); // the invitation decides
    fm.invite = token.to_owned();
    let id = f
        .svc
        .register(&fm, "192.0.2.9", T0 + 220)
        .await
        .unwrap()
        .request()
        .unwrap();
    assert_eq!(f.state(id), "awaiting_validation");
    assert_eq!(f.count_mails("cy@example.org", "verify"), 0);
    assert_eq!(
        f.count_mails("admin@quimper.example.org", "admins_new_request"),
        told + 1
    );
    f.svc.approve(id, "admin:bea", T0 + 230).await.unwrap();
    let cy = f.svc.person("cy").await.unwrap();
    assert_eq!(cy.collectives(), ["brest".parse().unwrap()]);
    assert_eq!(cy.primary_collective, Some("brest".parse().unwrap()));
    // The link was spent by that registration.
    assert!(f.svc.invitation_info(token, T0 + 240).await.is_err());

    // An invitation used by someone at another address only preselects:
    // their address still has to be proven.
    f.svc
        .invite("dee@example.org", "brest", "admin:bea", T0 + 300)
        .await
        .unwrap();
    let token = {
        let store = f.store.lock().unwrap();
        let m = store.due_mail(i64::MAX, 100).unwrap();
        let m = m
            .into_iter()
            .rev()
            .find(|m| m.recipient == "dee@example.org")
            .unwrap();
        let p: serde_json::Value = serde_json::from_str(&m.params).unwrap();
        p["link"]
            .as_str()
            .unwrap()
            .split("invite=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut fm = form("dee", "other@example.org");
    fm.invite = token;
    let id = f
        .svc
        .register(&fm, "192.0.2.9", T0 + 310)
        .await
        .unwrap()
        .request()
        .unwrap();
    assert_eq!(f.state(id), "email_unverified");
    let r = f.store.lock().unwrap().registration(id).unwrap().unwrap();
    assert_eq!(r.collective, "brest");
    assert_eq!(f.svc.invitations(Some("brest")).unwrap().len(), 3);
    assert_eq!(f.audited("invite").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_to_join_another_collective_goes_to_its_admins() {
    let f = fixture().await;
    f.collective("brest", "Brest en Commun").await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    f.active_person("bob", "bob@example.org", "correct horse battery")
        .await;

    let id = f
        .svc
        .ask_to_join("ana", "brest", "I moved to Brest", T0 + 100)
        .await
        .unwrap();
    // Asking twice while pending is refused, naming the field.
    let e = f
        .svc
        .ask_to_join("ana", "brest", "again", T0 + 101)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["collective"]);
    let (params, _) = f.mail("admin@quimper.example.org", "admins_join_request");
    assert_eq!(params["message"], "I moved to Brest");
    f.svc
        .decide_join(id, true, "admin:root", "", T0 + 110)
        .await
        .unwrap();
    assert!(
        f.svc
            .person("ana")
            .await
            .unwrap()
            .is_member(&"brest".parse().unwrap())
    );
    assert_eq!(f.count_mails("ana@example.org", "join_approved"), 1);
    assert!(matches!(
        refusal(
            f.svc
                .decide_join(id, false, "admin:root", "", T0 + 111)
                .await
                .unwrap_err()
        ),
        Refusal::Decided { .. }
    ));
    // Already a member: nothing to ask.
    assert!(matches!(
        refusal(
            f.svc
                .ask_to_join("ana", "brest", "", T0 + 112)
                .await
                .unwrap_err()
        ),
        Refusal::AlreadyMember { .. }
    ));

    // Ana becomes an admin of Brest, so she hears of the next request.
    f.svc
        .set_admin("ana", "brest", true, "admin:root", T0 + 120)
        .await
        .unwrap();
    let id = f
        .svc
        .ask_to_join("bob", "brest", "", T0 + 130)
        .await
        .unwrap();
    assert_eq!(f.count_mails("ana@example.org", "admins_join_request"), 1);
    f.svc
        .decide_join(id, false, "ana", "we are full", T0 + 140)
        .await
        .unwrap();
    let (params, _) = f.mail("bob@example.org", "join_rejected");
    assert_eq!(params["reason"], "we are full");
    assert!(
        !f.svc
            .person("bob")
            .await
            .unwrap()
            .is_member(&"brest".parse().unwrap())
    );
    let rows = f.svc.join_requests(Some("brest"), None).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
        ["rejected", "approved"]
    );
    assert!(matches!(
        refusal(
            f.svc
                .ask_to_join("bob", "nowhere", "", T0)
                .await
                .unwrap_err()
        ),
        Refusal::NoCollective(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_groups_services_and_membership() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    let quimper: commonscloud::model::CollectiveSlug = "quimper".parse().unwrap();

    // Promote and demote.
    assert!(
        f.svc
            .set_admin("ana", "quimper", true, "admin:root", T0)
            .await
            .unwrap()
            .is_admin(&quimper)
    );
    assert!(
        !f.svc
            .set_admin("ana", "quimper", false, "admin:root", T0)
            .await
            .unwrap()
            .is_admin(&quimper)
    );
    assert_eq!(f.audited("promote"), ["admin:root ana in quimper/admins"]);
    assert_eq!(f.audited("demote").len(), 1);

    // ACL groups: built-in names are refused, a new one works once.
    let e = f
        .svc
        .create_group("quimper", "admins", "admin:root", T0)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["group"]);
    f.svc
        .create_group("quimper", "editors", "admin:root", T0)
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            f.svc
                .create_group("quimper", "editors", "admin:root", T0)
                .await
                .unwrap_err()
        ),
        Refusal::Exists(_)
    ));
    f.svc
        .group_member("ana", "quimper", "editors", true, "admin:root", T0)
        .await
        .unwrap();
    // A service for the group, readable by the apps' accounts.
    f.svc
        .grant_service("quimper", "wiki", "editors", true, "admin:root", T0)
        .await
        .unwrap();
    f.svc
        .grant_service("quimper", "wiki", "editors", true, "admin:root", T0)
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            f.svc
                .grant_service("quimper", "wiki", "ghosts", true, "admin:root", T0)
                .await
                .unwrap_err()
        ),
        Refusal::NoGroup { .. }
    ));
    let view = f.svc.collective("quimper").await.unwrap();
    assert_eq!(view.members, ["ana"]);
    assert_eq!(
        view.groups,
        [("editors".to_owned(), vec!["ana".to_owned()])]
    );
    assert_eq!(view.services.len(), 1);
    assert_eq!(view.services[0].groups, ["editors"]);
    let nc = f.inst.secret("nextcloud");
    let mut app = f
        .inst
        .bind(&f.inst.tree.service_account("nextcloud"), &nc)
        .await;
    let (found, _) = app
        .search(
            &f.inst.tree.service(&quimper, "wiki"),
            Scope::Base,
            "(objectClass=commonsService)",
            vec!["commonsAccessGroup"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let e = SearchEntry::construct(found.into_iter().next().unwrap());
    assert_eq!(
        e.attrs["commonsAccessGroup"],
        [f.inst.tree.group(&quimper, "editors")]
    );
    f.svc
        .grant_service("quimper", "wiki", "editors", false, "admin:root", T0)
        .await
        .unwrap();
    assert!(
        f.svc.collective("quimper").await.unwrap().services[0]
            .groups
            .is_empty()
    );

    // Removal: refused from the only collective, then, once she is in
    // another, she leaves every group and her primary collective moves.
    let e = refusal(
        f.svc
            .remove_from_collective("ana", "quimper", "admin:root", T0)
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, Refusal::OnlyCollective { .. }), "{e}");
    f.collective("brest", "Brest").await;
    let id = f.svc.ask_to_join("ana", "brest", "", T0).await.unwrap();
    f.svc
        .decide_join(id, true, "admin:root", "", T0)
        .await
        .unwrap();
    f.svc
        .set_admin("ana", "quimper", true, "admin:root", T0)
        .await
        .unwrap();
    let ana = f
        .svc
        .remove_from_collective("ana", "quimper", "admin:root", T0)
        .await
        .unwrap();
    assert_eq!(
        ana.groups,
        [("brest".parse().unwrap(), "members".to_owned())]
    );
    assert_eq!(ana.primary_collective, Some("brest".parse().unwrap()));
    let view = f.svc.collective("quimper").await.unwrap();
    assert!(view.members.is_empty() && view.admins.is_empty());
    assert_eq!(view.groups, [("editors".to_owned(), vec![])]);
    // The emptied groups still hold their placeholder, so they stay valid.
    let mut root = f.inst.root().await;
    let g = ldap::read(
        &mut root,
        &f.inst.tree.group(&quimper, "editors"),
        &["member"],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(g.attrs["member"], [f.inst.tree.nobody()]);
    // Someone who is not a member cannot be put in a group.
    assert!(matches!(
        refusal(
            f.svc
                .group_member("ana", "quimper", "editors", true, "admin:root", T0)
                .await
                .unwrap_err()
        ),
        Refusal::NotMember { .. }
    ));
    let people = people::people(&mut root, &f.inst.tree, Some(&quimper))
        .await
        .unwrap();
    assert!(people.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_by_a_mailed_link() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    let dn = f.inst.tree.person("ana");
    f.svc
        .forgot_password("ANA@example.org", "192.0.2.1", T0 + 100)
        .await
        .unwrap();
    let (params, token) = f.mail("ana@example.org", "reset_password");
    assert!(
        params["link"]
            .as_str()
            .unwrap()
            .contains("/set-password?token=")
    );
    // Too short is refused, naming the field, and the link still works.
    let e = f
        .svc
        .set_password(&token, "short", T0 + 110)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["password"]);
    f.svc
        .set_password(&token, "a brand new passphrase", T0 + 120)
        .await
        .unwrap();
    assert_eq!(f.inst.bind_rc(&dn, "a brand new passphrase").await, 0);
    assert_eq!(f.inst.bind_rc(&dn, "correct horse battery").await, 49);
    assert!(matches!(
        f.svc
            .set_password(&token, "another passphrase!", T0 + 130)
            .await,
        Err(OnboardingError::BadLink)
    ));
    // A link past its 2 hours is dead.
    f.svc
        .forgot_password("ana", "192.0.2.1", T0 + 200)
        .await
        .unwrap();
    let (_, late) = f.mail("ana@example.org", "reset_password");
    assert!(matches!(
        f.svc
            .set_password(&late, "another passphrase!", T0 + 200 + 2 * 3600)
            .await,
        Err(OnboardingError::BadLink)
    ));
    // Unknown logins get the same answer and no mail.
    f.svc
        .forgot_password("nobody@example.org", "192.0.2.1", T0 + 300)
        .await
        .unwrap();
    assert_eq!(f.count_mails("nobody@example.org", "reset_password"), 0);
    // Limits: three mails per account per hour. Past them the answer is
    // the same and no mail goes (the last hour's links still work): a
    // stranger asking for resets neither floods the mailbox nor keeps the
    // owner from a link.
    f.svc
        .forgot_password("ana", "192.0.2.2", T0 + 301)
        .await
        .unwrap();
    let mailed = f.count_mails("ana@example.org", "reset_password");
    f.svc
        .forgot_password("ana", "192.0.2.3", T0 + 302)
        .await
        .unwrap();
    assert_eq!(f.count_mails("ana@example.org", "reset_password"), mailed);
    assert_eq!(f.audited("reset-password"), ["ana "]);
}
