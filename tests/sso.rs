//! DiscourseConnect against a real slapd: a person signs in to the forum
//! with the right identity and groups; a bad signature, a replayed or stale
//! nonce, a wrong password and a suspended account are refused.

mod common;

use base64::Engine as _;
use common::flow::{T0, fixture};
use commonscloud::directory::ldap;
use commonscloud::sso::discourse::{SsoError, sign_request};
use commonscloud::sso::service::{LoginError, login};

const RETURN: &str = "https://forum.quimper.example.org/session/sso_login";

fn payload_of(url: &str) -> std::collections::HashMap<String, String> {
    let query = url.split_once('?').unwrap().1;
    let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&q["sso"])
        .unwrap();
    form_urlencoded::parse(&raw).into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_to_the_forum_once_per_request() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    f.svc
        .create_collective("brest", "Brest", "admin", T0)
        .await
        .unwrap();
    let secrets = &f.inst.config.paths.secrets_dir;
    let secret = "0123456789abcdef-connect";
    std::fs::write(secrets.join("discourse-connect-secret"), secret).unwrap();
    let store = &*f.store;
    let (paths, tree) = (&f.inst.paths, &f.inst.tree);

    let (sso, sig) = sign_request(secret.as_bytes(), "nonce-1", RETURN);
    let url = login(
        store,
        paths,
        tree,
        secrets,
        &sso,
        &sig,
        "ana",
        "correct horse battery",
        T0,
    )
    .await
    .unwrap();
    assert!(url.starts_with(&format!("{RETURN}?sso=")), "{url}");
    let p = payload_of(&url);
    let mut root = ldap::connect_root(paths).await.unwrap();
    let uuid = ldap::read(&mut root, &tree.person("ana"), &["entryUUID"])
        .await
        .unwrap()
        .unwrap()
        .attrs["entryUUID"][0]
        .clone();
    assert_eq!(p["external_id"], uuid);
    assert_eq!(p["email"], "ana@example.org");
    assert_eq!(p["username"], "ana");
    assert_eq!(p["nonce"], "nonce-1");
    assert_eq!(p["add_groups"], "quimper");
    assert_eq!(p["remove_groups"], "brest");

    // The same request again: refused.
    let again = login(
        store,
        paths,
        tree,
        secrets,
        &sso,
        &sig,
        "ana",
        "correct horse battery",
        T0 + 1,
    )
    .await;
    assert!(matches!(again, Err(LoginError::Sso(SsoError::Replayed))));
    // A tampered signature.
    let (sso2, sig2) = sign_request(b"not the secret", "nonce-2", RETURN);
    let bad = login(
        store,
        paths,
        tree,
        secrets,
        &sso2,
        &sig2,
        "ana",
        "correct horse battery",
        T0,
    )
    .await;
    assert!(matches!(bad, Err(LoginError::Sso(SsoError::BadSignature))));
    // A request first seen, answered too late.
    let (sso3, sig3) = sign_request(secret.as_bytes(), "nonce-3", RETURN);
    let wrong = login(
        store, paths, tree, secrets, &sso3, &sig3, "ana", "wrong", T0,
    )
    .await;
    assert!(matches!(wrong, Err(LoginError::Refused)));
    let late = login(
        store,
        paths,
        tree,
        secrets,
        &sso3,
        &sig3,
        "ana",
        "correct horse battery",
        T0 + 601,
    )
    .await;
    assert!(matches!(late, Err(LoginError::Sso(SsoError::Stale))));
    // Suspended: refused, even with the right password.
    f.svc.suspend("ana", "admin", "test", T0).await.unwrap();
    let (sso4, sig4) = sign_request(secret.as_bytes(), "nonce-4", RETURN);
    let suspended = login(
        store,
        paths,
        tree,
        secrets,
        &sso4,
        &sig4,
        "ana",
        "correct horse battery",
        T0,
    )
    .await;
    assert!(matches!(suspended, Err(LoginError::Refused)));
}
