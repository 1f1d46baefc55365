//! The directory against a real slapd (Debian's, installed by the test
//! script): bootstrap, the tree, passwords, locks and every ACL rule.

use std::time::Duration;

mod common;

use common::slapd::Instance;
use commonscloud::directory::ldap;
use commonscloud::directory::slapd::{self, Bootstrap};
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, Mod, Scope, SearchEntry};

async fn search(
    l: &mut Ldap,
    base: &str,
    filter: &str,
    attrs: Vec<&str>,
) -> (u32, Vec<SearchEntry>) {
    let res = l.search(base, Scope::Subtree, filter, attrs).await.unwrap();
    (
        res.1.rc,
        res.0.into_iter().map(SearchEntry::construct).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_is_idempotent_and_keeps_data() {
    let inst = Instance::start().await;
    inst.person("ana", "ana@example.org", "correct horse battery")
        .await;
    assert!(
        slapd::stop(&inst.paths, Duration::from_secs(10))
            .await
            .unwrap()
    );
    assert!(slapd::running_pid(&inst.paths).is_none());
    assert_eq!(
        slapd::bootstrap(&inst.config, &inst.paths).unwrap(),
        Bootstrap::Existing
    );
    let (pid, adopted) = slapd::start_or_adopt(&inst.config, &inst.paths)
        .await
        .unwrap();
    assert!(!adopted);
    // A second start finds it running and adopts it.
    let (again, adopted) = slapd::start_or_adopt(&inst.config, &inst.paths)
        .await
        .unwrap();
    assert_eq!((again, adopted), (pid, true));
    let mut root = inst.root().await;
    let ana = ldap::read(&mut root, &inst.tree.person("ana"), &["mail"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.attrs["mail"], ["ana@example.org"]);
    // Service account secrets are stable across restarts and still bind.
    ldap::ensure_service_accounts(&inst.paths, &inst.tree, &inst.config.paths.secrets_dir)
        .await
        .unwrap();
    inst.bind(
        &inst.tree.service_account("nextcloud"),
        &inst.secret("nextcloud"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_matches_the_design() {
    let inst = Instance::start().await;
    let mut root = inst.root().await;
    let s = inst.tree.suffix().to_owned();
    for dn in [
        format!("ou=people,{s}"),
        format!("ou=collectives,{s}"),
        format!("ou=quimper,ou=collectives,{s}"),
        format!("ou=groups,ou=quimper,ou=collectives,{s}"),
        format!("ou=services,ou=quimper,ou=collectives,{s}"),
        format!("cn=members,ou=groups,ou=quimper,ou=collectives,{s}"),
        format!("cn=admins,ou=groups,ou=quimper,ou=collectives,{s}"),
        format!("ou=services,{s}"),
        format!("ou=system,{s}"),
        format!("ou=policies,{s}"),
        format!("cn=default,ou=policies,{s}"),
        format!("cn=daemon,ou=system,{s}"),
        format!("cn=nextcloud,ou=system,{s}"),
        format!("cn=discourse-sso,ou=system,{s}"),
    ] {
        assert!(
            ldap::read(&mut root, &dn, &["objectClass"])
                .await
                .unwrap()
                .is_some(),
            "{dn}"
        );
    }
    let c = ldap::read(
        &mut root,
        &inst.tree.collective(&inst.config.collective.slug),
        &["objectClass", "displayName"],
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        c.attrs["objectClass"]
            .iter()
            .any(|o| o == "commonsCollective")
    );
    // Secrets are private.
    use std::os::unix::fs::PermissionsExt;
    for a in ["daemon", "nextcloud", "discourse-sso"] {
        let m = std::fs::metadata(inst.config.paths.secrets_dir.join(format!("ldap-{a}"))).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_hashed_with_argon2_and_unique_holds() {
    let inst = Instance::start().await;
    let dn = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    let mut root = inst.root().await;
    let e = ldap::read(&mut root, &dn, &["userPassword"])
        .await
        .unwrap()
        .unwrap();
    let stored = String::from_utf8_lossy(
        &e.bin_attrs
            .get("userPassword")
            .map(|v| v[0].clone())
            .unwrap_or_else(|| e.attrs["userPassword"][0].clone().into_bytes()),
    )
    .into_owned();
    assert!(stored.starts_with("{ARGON2}$argon2"), "{stored}");
    assert!(
        ldap::check_password(&inst.url, &dn, "correct horse battery")
            .await
            .unwrap()
    );
    assert!(!ldap::check_password(&inst.url, &dn, "wrong").await.unwrap());
    // Same mail in another case: refused by the unique overlay.
    let other = inst.tree.person("bob");
    let rc = root
        .add(
            &other,
            vec![
                ("objectClass", ["inetOrgPerson"].into()),
                ("uid", ["bob"].into()),
                ("cn", ["bob"].into()),
                ("sn", ["bob"].into()),
                ("mail", ["ANA@example.org"].into()),
            ],
        )
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 19, "constraintViolation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_read_people_and_groups_but_never_passwords() {
    let inst = Instance::start().await;
    let ana = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    for account in ["nextcloud", "discourse-sso"] {
        let mut svc = inst
            .bind(&inst.tree.service_account(account), &inst.secret(account))
            .await;
        let (rc, found) = search(
            &mut svc,
            &inst.tree.people(),
            "(uid=ana)",
            vec!["*", "userPassword"],
        )
        .await;
        assert_eq!(rc, 0);
        assert_eq!(found.len(), 1, "{account}");
        assert_eq!(found[0].attrs["mail"], ["ana@example.org"]);
        assert!(
            !found[0].attrs.contains_key("userPassword")
                && !found[0].bin_attrs.contains_key("userPassword"),
            "{account} read a password"
        );
        // The filter Nextcloud uses for members of a collective (memberOf via dynlist).
        let filter = format!(
            "(&(objectClass=inetOrgPerson)(memberOf={}))",
            inst.members()
        );
        let (_, members) = search(
            &mut svc,
            inst.tree.suffix(),
            &filter,
            vec!["uid", "memberOf"],
        )
        .await;
        assert_eq!(
            members.iter().map(|e| e.dn.as_str()).collect::<Vec<_>>(),
            [ana.as_str()],
            "{account}"
        );
        let (_, groups) = search(
            &mut svc,
            &inst.tree.collectives(),
            "(objectClass=groupOfNames)",
            vec!["member"],
        )
        .await;
        assert!(
            groups
                .iter()
                .any(|g| g.attrs.get("member").is_some_and(|m| m.contains(&ana))),
            "{account}"
        );
        // Comparing a password is reading it: refused.
        let cmp = svc
            .compare(&ana, "userPassword", "correct horse battery")
            .await
            .unwrap();
        assert_eq!(cmp.0.rc, 50, "{account} compared a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_changes_only_their_own_password() {
    let inst = Instance::start().await;
    let ana = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    let bob = inst
        .person("bob", "bob@example.org", "bob's old password")
        .await;
    let mut as_ana = inst.bind(&ana, "correct horse battery").await;
    as_ana
        .extended(PasswordModify {
            user_id: None,
            old_pass: None,
            new_pass: Some("a brand new secret"),
        })
        .await
        .unwrap()
        .success()
        .unwrap();
    assert!(
        ldap::check_password(&inst.url, &ana, "a brand new secret")
            .await
            .unwrap()
    );
    assert!(
        !ldap::check_password(&inst.url, &ana, "correct horse battery")
            .await
            .unwrap()
    );
    // Bob's password stays out of Ana's reach, by extended op and by modify.
    let denied = as_ana
        .extended(PasswordModify {
            user_id: Some(&bob),
            old_pass: None,
            new_pass: Some("hijacked!!"),
        })
        .await
        .unwrap()
        .1;
    assert_eq!(denied.rc, 50, "{denied:?}");
    let rc = as_ana
        .modify(
            &bob,
            vec![Mod::Replace("userPassword", ["hijacked!!"].into())],
        )
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 50);
    assert!(
        ldap::check_password(&inst.url, &bob, "bob's old password")
            .await
            .unwrap()
    );
    // Nor may she unlock or re-state her own account.
    let rc = as_ana
        .modify(
            &ana,
            vec![Mod::Replace("commonsAccountState", ["active"].into())],
        )
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_can_only_bind() {
    let inst = Instance::start().await;
    let ana = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    let mut anon = inst.anonymous().await;
    let (_, found) = search(&mut anon, inst.tree.suffix(), "(objectClass=*)", vec!["*"]).await;
    assert!(
        found.is_empty(),
        "anonymous saw {:?}",
        found.iter().map(|e| &e.dn).collect::<Vec<_>>()
    );
    let rc = anon
        .compare(&ana, "mail", "ana@example.org")
        .await
        .unwrap()
        .0
        .rc;
    assert_ne!(rc, 6, "compareTrue would leak the value");
    assert_ne!(rc, 5);
    let rc = anon
        .modify(&ana, vec![Mod::Replace("mail", ["x@example.org"].into())])
        .await
        .unwrap()
        .rc;
    // strongerAuthRequired: slapd refuses anonymous writes before any ACL.
    assert!(rc == 8 || rc == 50, "{rc}");
    let mut root = inst.root().await;
    let e = ldap::read(&mut root, &ana, &["mail"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.attrs["mail"], ["ana@example.org"]);
    // ...but binding works.
    assert_eq!(inst.bind_rc(&ana, "correct horse battery").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_daemon_writes_groups() {
    let inst = Instance::start().await;
    let ana = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    let bob = inst
        .person("bob", "bob@example.org", "bob's password!")
        .await;
    let admins = inst.tree.group(&inst.config.collective.slug, "admins");
    let add_bob = || vec![Mod::Add("member", [bob.as_str()].into())];
    let mut as_ana = inst.bind(&ana, "correct horse battery").await;
    assert_eq!(
        as_ana.modify(&admins, add_bob()).await.unwrap().rc,
        50,
        "a person"
    );
    for account in ["nextcloud", "discourse-sso"] {
        let mut svc = inst
            .bind(&inst.tree.service_account(account), &inst.secret(account))
            .await;
        assert_eq!(
            svc.modify(&admins, add_bob()).await.unwrap().rc,
            50,
            "{account}"
        );
    }
    let mut daemon = inst
        .bind(&inst.tree.service_account("daemon"), &inst.secret("daemon"))
        .await;
    assert_eq!(
        daemon.modify(&admins, add_bob()).await.unwrap().rc,
        0,
        "the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_cannot_bind_until_unlocked() {
    let inst = Instance::start().await;
    let ana = inst
        .person("ana", "ana@example.org", "correct horse battery")
        .await;
    let mut root = inst.root().await;
    root.modify(
        &ana,
        vec![Mod::Replace(
            "pwdAccountLockedTime",
            ["000001010000Z"].into(),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    assert_eq!(inst.bind_rc(&ana, "correct horse battery").await, 49);
    root.modify(
        &ana,
        vec![Mod::Delete("pwdAccountLockedTime", Default::default())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    assert_eq!(inst.bind_rc(&ana, "correct horse battery").await, 0);
}
