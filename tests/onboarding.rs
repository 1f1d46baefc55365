//! Onboarding end to end against a real slapd: register, verify, approve,
//! set a password, bind; rejection, expiry, duplicates and hostile input.
//! Mails are read from the outbox, where the service queues them.

mod common;

use common::flow::{T0, field_of, fixture, form};
use commonscloud::directory::{ldap, people};
use commonscloud::onboarding::machine::LINK_TTL_SECS;
use commonscloud::onboarding::service::{OnboardingError, Registered};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_ends_with_a_bind() {
    let f = fixture().await;
    let id = f
        .svc
        .register(&form("ana", "Ana@Example.org"), "192.0.2.1", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    assert_eq!(f.state(id), "email_unverified");
    let mut root = ldap::connect_root(&f.inst.paths).await.unwrap();
    assert!(
        ldap::read(&mut root, &f.inst.tree.person("ana"), &["uid"])
            .await
            .unwrap()
            .is_none(),
        "a request is not in the directory"
    );
    let (params, token) = f.mail("ana@example.org", "verify");
    assert!(
        params["link"]
            .as_str()
            .unwrap()
            .starts_with("https://box.quimper.example.org/verify?token=")
    );
    assert_eq!(token.len(), 64);
    // The token is stored hashed only.
    let stored: i64 = f
        .store
        .lock()
        .unwrap()
        .connection()
        .query_row(
            "SELECT count(*) FROM tokens WHERE hash = ?1",
            [&token],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);

    f.svc.verify_email(&token, T0 + 60).await.unwrap();
    assert_eq!(f.state(id), "awaiting_validation");
    let (notice, _) = f.mail("admin@quimper.example.org", "admins_new_request");
    assert_eq!(notice["uid"], "ana");
    assert_eq!(notice["message"], "I run the repair café.");
    assert!(
        matches!(
            f.svc.verify_email(&token, T0 + 61).await,
            Err(OnboardingError::BadLink)
        ),
        "single use"
    );

    f.svc.approve(id, "admin", T0 + 120).await.unwrap();
    assert_eq!(f.state(id), "approved");
    let dn = f.inst.tree.person("ana");
    let e = ldap::read(
        &mut root,
        &dn,
        &[
            "mail",
            "preferredLanguage",
            "commonsAccountState",
            "memberOf",
        ],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(e.attrs["mail"], ["ana@example.org"]);
    assert_eq!(e.attrs["preferredLanguage"], ["ca"]);
    assert_eq!(e.attrs["commonsAccountState"], ["active"]);
    assert_eq!(e.attrs["memberOf"], [f.inst.members()]);

    let (welcome, token) = f.mail("ana@example.org", "set_password");
    assert_eq!(welcome["uid"], "ana");
    let short = f
        .svc
        .set_password(&token, "short", T0 + 130)
        .await
        .unwrap_err();
    assert_eq!(field_of(&short), ["password"]);
    assert_eq!(
        f.svc
            .set_password(&token, "a long enough secret", T0 + 140)
            .await
            .unwrap(),
        "ana"
    );
    assert_eq!(f.state(id), "active");
    assert!(
        ldap::check_password(&f.inst.url, &dn, "a long enough secret")
            .await
            .unwrap()
    );
    assert!(matches!(
        f.svc
            .set_password(&token, "another long secret", T0 + 150)
            .await,
        Err(OnboardingError::BadLink)
    ));
    let audit: Vec<String> = f
        .store
        .lock()
        .unwrap()
        .recent_audit(10)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        audit,
        ["set-password", "approve", "verify-email", "register"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_mails_the_reason_and_frees_the_uid() {
    let f = fixture().await;
    let id = f
        .svc
        .register(&form("bob", "bob@example.org"), "192.0.2.1", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    let (_, t) = f.mail("bob@example.org", "verify");
    f.svc.verify_email(&t, T0 + 1).await.unwrap();
    let e = f.svc.reject(id, "admin", "  ", T0 + 2).await.unwrap_err();
    assert!(e.to_string().contains("reason"), "{e}");
    f.svc
        .reject(id, "admin", "We only take people from Quimper.", T0 + 3)
        .await
        .unwrap();
    assert_eq!(f.state(id), "rejected");
    let (m, _) = f.mail("bob@example.org", "rejected");
    assert_eq!(m["reason"], "We only take people from Quimper.");
    assert!(matches!(
        f.svc.approve(id, "admin", T0 + 4).await,
        Err(OnboardingError::Machine(_))
    ));
    // The uid and mail are free again.
    f.svc
        .register(&form("bob", "bob@example.org"), "192.0.2.2", T0 + 5)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_releases_the_uid_and_kills_the_link() {
    let f = fixture().await;
    let id = f
        .svc
        .register(&form("cara", "cara@example.org"), "192.0.2.1", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    let (_, t) = f.mail("cara@example.org", "verify");
    assert_eq!(f.svc.expire_due(T0 + LINK_TTL_SECS - 1).unwrap(), 0);
    assert_eq!(f.svc.expire_due(T0 + LINK_TTL_SECS).unwrap(), 1);
    assert_eq!(f.state(id), "expired");
    assert!(matches!(
        f.svc.verify_email(&t, T0 + LINK_TTL_SECS).await,
        Err(OnboardingError::BadLink)
    ));
    let again = f
        .svc
        .register(
            &form("cara", "cara@example.org"),
            "192.0.2.1",
            T0 + LINK_TTL_SECS + 1,
        )
        .await
        .unwrap()
        .request()
        .unwrap();
    assert_ne!(again, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_uids_are_refused_and_taken_addresses_mail_their_owner() {
    let f = fixture().await;
    f.active_person("dan", "dan@example.org", "dan's long password")
        .await;
    let eva = f
        .svc
        .register(&form("eva", "eva@example.org"), "192.0.2.1", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    // A pending request holds its uid...
    let e = f
        .svc
        .register(&form("eva", "other@example.org"), "192.0.2.9", T0)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["uid"]);
    // ...but not, unverified, its address: a stranger who registered it
    // first does not keep its owner out.
    let eve = f
        .svc
        .register(&form("eve", "EVA@example.org"), "192.0.2.9", T0)
        .await
        .unwrap()
        .request()
        .expect("a request of its own");
    // An existing person holds their uid in the directory.
    let e = f
        .svc
        .register(&form("dan", "new@example.org"), "192.0.2.9", T0)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["uid"]);
    assert!(e.to_string().contains("already taken"));
    // Their address answers as a fresh one would; the owner is mailed
    // what they have, and no request is made.
    let told = f
        .svc
        .register(&form("daniel", "Dan@Example.org"), "192.0.2.9", T0)
        .await
        .unwrap();
    assert_eq!(told, Registered::OwnerTold);
    let (m, _) = f.mail("dan@example.org", "register_existing");
    assert_eq!(m["uid"], "dan");
    assert!(m["link"].as_str().unwrap().ends_with("/forgot"), "{m}");
    assert!(
        f.store
            .lock()
            .unwrap()
            .pending_holder("daniel", "nobody@example.org")
            .unwrap()
            .is_none()
    );
    // The first request verified takes the address; the other then stops
    // at its link, and a new registration mails the owner instead.
    let tokens: Vec<String> = {
        let store = f.store.lock().unwrap();
        store
            .due_mail(i64::MAX, 1000)
            .unwrap()
            .into_iter()
            .filter(|m| m.recipient == "eva@example.org" && m.template == "verify")
            .map(|m| {
                let p: serde_json::Value = serde_json::from_str(&m.params).unwrap();
                p["link"]
                    .as_str()
                    .unwrap()
                    .split("token=")
                    .nth(1)
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(tokens.len(), 2, "one verify mail per request, in order");
    let (t_eva, t_eve) = (&tokens[0], &tokens[1]);
    f.svc.verify_email(t_eve, T0 + 1).await.unwrap();
    assert_eq!(f.state(eve), "awaiting_validation");
    let e = f.svc.verify_email(t_eva, T0 + 2).await.unwrap_err();
    assert_eq!(field_of(&e), ["email"]);
    assert_eq!(f.state(eva), "email_unverified");
    let told = f
        .svc
        .register(&form("evita", "eva@example.org"), "192.0.2.7", T0 + 3)
        .await
        .unwrap();
    assert_eq!(told, Registered::OwnerTold);
    let (m, _) = f.mail("eva@example.org", "register_pending");
    assert_eq!(m["name"], "eve Person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_the_honeypot() {
    let f = fixture().await;
    let mut bot = form("bot", "bot@example.org");
    bot.website = "http://spam.example".into();
    assert_eq!(
        field_of(&f.svc.register(&bot, "198.51.100.1", T0).await.unwrap_err()),
        ["form"]
    );
    for i in 0..9 {
        let _ = f
            .svc
            .register(
                &form(&format!("p{i}x"), &format!("p{i}@example.org")),
                "198.51.100.1",
                T0,
            )
            .await;
    }
    let e = f
        .svc
        .register(&form("late", "late@example.org"), "198.51.100.1", T0)
        .await
        .unwrap_err();
    assert!(matches!(e, OnboardingError::RateLimited { .. }), "{e}");
    // Another address is not affected.
    f.svc
        .register(&form("late", "late@example.org"), "198.51.100.2", T0)
        .await
        .unwrap();
    // An IPv6 client is one address per /64, whichever it picks in it.
    for i in 0..10 {
        f.svc
            .register(
                &form(&format!("v{i}x"), &format!("v{i}@example.org")),
                &format!("2001:db8:7:7::{:x}", i + 1),
                T0,
            )
            .await
            .unwrap();
    }
    let e = f
        .svc
        .register(
            &form("v6late", "v6late@example.org"),
            "2001:db8:7:7:ffff::1",
            T0,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OnboardingError::RateLimited { .. }), "{e}");
    // One mail address gets 3 mails a day per client network and 10 from
    // all of them: a stranger on one network cannot keep its owner out.
    for i in 0..3 {
        f.svc
            .register(&form(&format!("m{i}x"), "m@example.org"), "203.0.113.1", T0)
            .await
            .unwrap();
    }
    let e = f
        .svc
        .register(&form("m3x", "m@example.org"), "203.0.113.1", T0)
        .await
        .unwrap_err();
    assert!(matches!(e, OnboardingError::RateLimited { .. }), "{e}");
    for i in 3..10 {
        f.svc
            .register(
                &form(&format!("m{i}x"), "m@example.org"),
                &format!("203.0.113.{}", i + 10),
                T0,
            )
            .await
            .unwrap();
    }
    let e = f
        .svc
        .register(&form("m10x", "m@example.org"), "203.0.113.99", T0)
        .await
        .unwrap_err();
    assert!(matches!(e, OnboardingError::RateLimited { .. }), "{e}");
}

/// Hostile strings reach LDAP only escaped: a mail address made of filter
/// metacharacters (valid as an address) matches nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_matches_and_touches_nothing_else() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "ana's long password")
        .await;
    let mut root = ldap::connect_root(&f.inst.paths).await.unwrap();
    for (i, hostile) in [
        "*@example.org",
        "a*@example.org",
        "*)(uid=*@example.org",
        "a\\2a@example.org",
        "ana@example.org\0",
    ]
    .iter()
    .enumerate()
    {
        let taken = people::taken(&mut root, &f.inst.tree, &format!("zz{i}"), hostile)
            .await
            .unwrap();
        assert_eq!(taken, None, "{hostile:?} matched someone");
        let taken = people::taken(&mut root, &f.inst.tree, "*", hostile)
            .await
            .unwrap();
        assert_eq!(taken, None, "uid * matched someone");
    }
    // A registration with such an address goes through and touches nobody.
    let id = f
        .svc
        .register(&form("zed", "*@example.org"), "192.0.2.7", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    let (_, t) = f.mail("*@example.org", "verify");
    f.svc.verify_email(&t, T0 + 1).await.unwrap();
    f.svc.approve(id, "admin", T0 + 2).await.unwrap();
    let ana = ldap::read(&mut root, &f.inst.tree.person("ana"), &["mail"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.attrs["mail"], ["ana@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_approval_completes_on_retry() {
    let f = fixture().await;
    let id = f
        .svc
        .register(&form("fay", "fay@example.org"), "192.0.2.1", T0)
        .await
        .unwrap()
        .request()
        .unwrap();
    let (_, t) = f.mail("fay@example.org", "verify");
    f.svc.verify_email(&t, T0 + 1).await.unwrap();
    // As if a crash struck after the entry was made but before the request
    // moved on: the entry is there, the request still awaits.
    let mut root = ldap::connect_root(&f.inst.paths).await.unwrap();
    let slug = f.inst.config.collective.slug.clone();
    people::create_person(
        &mut root,
        &f.inst.tree,
        &people::NewPerson {
            uid: "fay",
            display_name: "fay Person",
            mail: "fay@example.org",
            language: "ca",
            collective_dn: &f.inst.tree.collective(&slug),
            home_node: "box",
        },
    )
    .await
    .unwrap();
    f.svc.approve(id, "admin", T0 + 2).await.unwrap();
    assert_eq!(f.state(id), "approved");
    let e = ldap::read(&mut root, &f.inst.tree.person("fay"), &["memberOf"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.attrs["memberOf"], [f.inst.members()]);
}
