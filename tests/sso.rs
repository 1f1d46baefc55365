//! DiscourseConnect against a real slapd: a person signs in to the forum
//! with the right identity and groups; a bad signature, a replayed or stale
//! nonce, a wrong password and a suspended account are refused; an answer
//! is only ever sent to the forum's own host, over https, also from a
//! signed-in console session through the real front door.

mod common;

use base64::Engine as _;
use common::flow::{T0, fixture};
use commonscloud::directory::ldap;
use commonscloud::sso::discourse::{SsoError, sign_request};
use commonscloud::sso::service::{LoginError, login};

const FORUM: &str = "forum.quimper.example.org";
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
        FORUM,
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
        FORUM,
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
        FORUM,
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
        store, paths, tree, secrets, FORUM, &sso3, &sig3, "ana", "wrong", T0,
    )
    .await;
    assert!(matches!(wrong, Err(LoginError::Refused)));
    let late = login(
        store,
        paths,
        tree,
        secrets,
        FORUM,
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
        FORUM,
        &sso4,
        &sig4,
        "ana",
        "correct horse battery",
        T0,
    )
    .await;
    assert!(matches!(suspended, Err(LoginError::Refused)));
}

/// Whoever holds the shared secret (an old backup, a forum set up by
/// mistake) signs requests that name their own site as `return_sso_url`:
/// the provider would hand them a signed identity to replay at the forum.
/// Every such request is refused before the password is even checked, and
/// its nonce is left unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_another_site_is_refused() {
    let f = fixture().await;
    f.active_person("ana", "ana@example.org", "correct horse battery")
        .await;
    let secrets = &f.inst.config.paths.secrets_dir;
    let secret = "0123456789abcdef-connect";
    std::fs::write(secrets.join("discourse-connect-secret"), secret).unwrap();
    let store = &*f.store;
    let (paths, tree) = (&f.inst.paths, &f.inst.tree);
    for (i, foreign) in [
        "https://evil.example.net/session/sso_login",
        "http://forum.quimper.example.org/session/sso_login",
        "https://forum.quimper.example.org@evil.example.net/session/sso_login",
        "https://forum.quimper.example.org.evil.example.net/session/sso_login",
        "https://forum.quimper.example.org:8443/session/sso_login",
        "https://box.quimper.example.org/session/sso_login",
    ]
    .iter()
    .enumerate()
    {
        let nonce = format!("foreign-{i}");
        let (sso, sig) = sign_request(secret.as_bytes(), &nonce, foreign);
        let r = login(
            store,
            paths,
            tree,
            secrets,
            FORUM,
            &sso,
            &sig,
            "ana",
            "correct horse battery",
            T0,
        )
        .await;
        assert!(
            matches!(r, Err(LoginError::Sso(SsoError::ForeignReturn(..)))),
            "{foreign}: {r:?}"
        );
    }
    let answered: i64 = f
        .store
        .lock()
        .unwrap()
        .connection()
        .query_row(
            "SELECT count(*) FROM sso_nonces WHERE answered_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(answered, 0);
    // The forum's own address, any case, still works.
    let (sso, sig) = sign_request(
        secret.as_bytes(),
        "ours",
        "https://Forum.Quimper.Example.org/session/sso_login",
    );
    let url = login(
        store,
        paths,
        tree,
        secrets,
        FORUM,
        &sso,
        &sig,
        "ana",
        "correct horse battery",
        T0,
    )
    .await
    .unwrap();
    assert!(url.starts_with("https://Forum.Quimper.Example.org/session/sso_login?sso="));
}

/// The same attack as a link sent to a person signed in to the console:
/// opening it through the real front door must not send them, with their
/// signed identity, anywhere but the forum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_is_never_sent_to_another_site() {
    use common::console::ConsoleBox;
    let b = ConsoleBox::start().await;
    b.person("ana", "ana@example.org", "ana's own secret");
    let secret = "forum-connect-secret-for-this-test";
    std::fs::write(
        b.app.dir.path().join("secrets/discourse-connect-secret"),
        secret,
    )
    .unwrap();
    let link = |nonce: &str, ret: &str| {
        let (sso, sig) = sign_request(secret.as_bytes(), nonce, ret);
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("sso", &sso)
            .append_pair("sig", &sig)
            .finish();
        format!("/sso/discourse?{q}")
    };
    let mut c = b.client();
    let signed = c.sign_in("ana", "ana's own secret").await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let evil = c
        .get(&link(
            "n-evil",
            "https://evil.example.net/session/sso_login",
        ))
        .await;
    assert_eq!(evil.status, 400, "{}", evil.body);
    assert!(evil.location().is_empty(), "{}", evil.location());
    assert!(
        !evil.body.contains("sso_login?sso=") && evil.body.contains("evil.example.net"),
        "the page says why, and carries no answer: {}",
        evil.body
    );
    let plain = c
        .get(&link(
            "n-http",
            "http://forum.quimper.example.org/session/sso_login",
        ))
        .await;
    assert_eq!(plain.status, 400, "{}", plain.body);
    // The forum's own request is answered, to the forum.
    let ok = c.get(&link("n-ok", RETURN)).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(ok.location().starts_with(&format!("{RETURN}?sso=")));
}
