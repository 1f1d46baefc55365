//! The console's security through the real front door and TLS: forms
//! without their token are refused, a planted session never gets signed
//! in, a session is dead after logout, failed sign-ins are limited; and the
//! JSON API keeps the same rules.

mod common;

use common::console::{ConsoleBox, HOST, off_runtime};

const ADMIN_PW: &str = "correct horse battery";

/// A request awaiting validation, made through the local API; its id.
fn pending(b: &ConsoleBox, uid: &str) -> i64 {
    off_runtime(|| pending_blocking(b, uid))
}

fn pending_blocking(b: &ConsoleBox, uid: &str) -> i64 {
    let email = format!("{uid}@example.org");
    let form = serde_json::json!({"uid": uid, "display_name": "Newcomer", "email": email,
        "collective": "quimper", "language": "en", "ip": "192.0.2.60"});
    let (code, created) = common::post(&b.app, "/v1/registrations", form);
    assert_eq!(code, 201, "{created}");
    let t = common::token_in(&b.sink.wait_for(&email, "/verify?token="));
    let (code, v) = common::post(
        &b.app,
        "/v1/registrations/verify",
        serde_json::json!({"token": t}),
    );
    assert_eq!(code, 200, "{v}");
    created["id"].as_i64().unwrap()
}

fn state_of(b: &ConsoleBox, id: i64) -> String {
    let (_, body) =
        off_runtime(|| common::get(&b.app.socket(), &format!("/v1/registrations/{id}")));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_security_csrf_fixation_logout_and_rate_limits() {
    let b = ConsoleBox::start().await;
    b.admin("bea", "bea@example.org", ADMIN_PW);
    let id = pending(&b, "cy");

    // ---- session fixation --------------------------------------------
    // Mallory signs in as himself and plants his session in Bea's browser.
    b.person("mallory", "mallory@example.org", "mallory's own password");
    let mut mallory = b.client();
    assert_eq!(
        mallory
            .sign_in("mallory", "mallory's own password")
            .await
            .status,
        303
    );
    let planted = mallory.session().expect("mallory has a session");
    let mut bea = b.client();
    bea.cookies
        .insert("__Host-cc_session".into(), planted.clone());
    let signed = bea.sign_in("bea", ADMIN_PW).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-cc_session="))
        .expect("a new session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let session = bea.session().unwrap();
    assert_ne!(session, planted, "the session id rotates at sign-in");
    // The planted session is gone: Mallory's cookie opens nothing.
    let who = mallory.get("/api/v1/session").await;
    assert_eq!(who.status, 401, "{}", who.body);
    // A made-up id planted before sign-in is not adopted either.
    let mut eve = b.client();
    let made_up = "ab".repeat(32);
    eve.cookies
        .insert("__Host-cc_session".into(), made_up.clone());
    assert_eq!(eve.sign_in("bea", ADMIN_PW).await.status, 303);
    assert_ne!(eve.session().unwrap(), made_up);

    // ---- CSRF --------------------------------------------------------
    let page = bea.get("/console/requests").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Newcomer"), "{}", page.body);
    let csrf = page.csrf();
    let approve = format!("/console/requests/{id}/approve");
    let no_token = bea.post_form(&approve, &[]).await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = bea.post_form(&approve, &[("csrf", &"0".repeat(64))]).await;
    assert_eq!(wrong.status, 403);
    // Eve's session is Bea's too, but its token is not this session's.
    let other = eve.get("/console/requests").await.csrf();
    assert_ne!(other, csrf);
    assert_eq!(
        bea.post_form(&approve, &[("csrf", &other)]).await.status,
        403
    );
    // The right token from another site is refused too.
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .finish();
    let cross = bea
        .request(
            "POST",
            &approve,
            &[("origin", "https://evil.example.net")],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await;
    assert_eq!(cross.status, 403);
    assert_eq!(
        state_of(&b, id),
        "awaiting_validation",
        "nothing was decided"
    );
    let ok = bea
        .request(
            "POST",
            &approve,
            &[("origin", &format!("https://{HOST}"))],
            Some((
                "application/x-www-form-urlencoded",
                format!("csrf={csrf}").into_bytes(),
            )),
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(state_of(&b, id), "approved");
    assert!(
        b.audited("approve").iter().any(|a| a.starts_with("bea ")),
        "{:?}",
        b.audited("approve")
    );

    // The API: JSON only, and the session's token in X-CSRF-Token.
    let id2 = pending(&b, "dee");
    let path = format!("/api/v1/registrations/{id2}/approve");
    let no_header = bea.post_json(&path, serde_json::json!({}), None).await;
    assert_eq!(no_header.status, 403, "{}", no_header.body);
    assert_eq!(no_header.json()["code"], "csrf");
    let as_form = bea
        .request(
            "POST",
            &path,
            &[("x-csrf-token", &csrf)],
            Some(("application/x-www-form-urlencoded", b"reason=x".to_vec())),
        )
        .await;
    assert_eq!(as_form.status, 415);
    assert_eq!(state_of(&b, id2), "awaiting_validation");
    let me = bea.get("/api/v1/session").await.json();
    assert_eq!(
        (me["uid"].as_str(), me["admin"].as_bool()),
        (Some("bea"), Some(true))
    );
    assert_eq!(me["csrf"].as_str(), Some(csrf.as_str()));
    let ok = bea
        .post_json(&path, serde_json::json!({}), Some(&csrf))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(state_of(&b, id2), "approved");
    // A member is not an admin.
    let mut m = b.client();
    m.sign_in("mallory", "mallory's own password").await;
    assert_eq!(m.get("/console").await.status, 403);
    assert_eq!(m.get("/api/v1/dashboard").await.status, 403);

    // ---- logout ------------------------------------------------------
    let copied = bea.session().unwrap();
    let page = bea.get("/").await;
    let out = bea.post_form("/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(bea.session(), None, "the browser's cookie is cleared");
    let mut thief = b.client();
    thief.cookies.insert("__Host-cc_session".into(), copied);
    assert_eq!(thief.get("/api/v1/session").await.status, 401);
    let console = thief.get("/console").await;
    assert_eq!(console.status, 303);
    assert!(
        console.location().starts_with("/login"),
        "{}",
        console.location()
    );

    // ---- rate limits -------------------------------------------------
    // From an address Bea never signed in from.
    let mut guess = b.client_from("127.0.0.2");
    for i in 0..5 {
        let a = guess.sign_in("bea", &format!("guess {i}")).await;
        assert_eq!(a.status, 401, "try {i}: {}", a.body);
        assert!(a.body.contains("Wrong user name or password"));
    }
    // Now even the right password waits, and the page says for how long.
    let limited = guess.sign_in("bea", ADMIN_PW).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited.body.contains("Too many failed sign-ins") && limited.body.contains("15 minutes"),
        "{}",
        limited.body
    );
    assert_eq!(guess.session(), None);
    // In Catalan too, and the API says it with Retry-After.
    let ca = guess.get("/login?lang=ca").await;
    let limited = guess
        .post_form(
            "/login",
            &[("csrf", &ca.csrf()), ("uid", "bea"), ("password", ADMIN_PW)],
        )
        .await;
    assert!(
        limited.body.contains("Massa intents fallits"),
        "{}",
        limited.body
    );
    let api = guess
        .post_json(
            "/api/v1/session",
            serde_json::json!({"uid": "bea", "password": ADMIN_PW}),
            None,
        )
        .await;
    assert_eq!(api.status, 429);
    assert!(api.headers.contains_key("retry-after"));
    // Another account from the same address still signs in.
    let mut other = b.client_from("127.0.0.2");
    assert_eq!(
        other
            .sign_in("mallory", "mallory's own password")
            .await
            .status,
        303
    );
    // And Bea, from where she signed in before, is not held up.
    let mut home = b.client();
    assert_eq!(home.sign_in("bea", ADMIN_PW).await.status, 303);
    assert_eq!(b.audited("login-failed").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_hardened_and_in_three_languages() {
    let b = ConsoleBox::start().await;
    let mut c = b.client();
    let page = c
        .request(
            "GET",
            "/login",
            &[("accept-language", "es-ES,es;q=0.9")],
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<html lang="es""#), "{}", page.body);
    assert!(page.body.contains("¿Has olvidado la contraseña?"));
    for (h, want) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            page.headers.get(h).and_then(|v| v.to_str().ok()),
            Some(want),
            "{h}"
        );
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        page.headers.contains_key("strict-transport-security"),
        "the front door sets HSTS"
    );
    // A form cookie for signing in, strict and secret.
    let form = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-cc_form="))
        .expect("a form cookie");
    assert!(
        form.contains("SameSite=Strict") && form.contains("HttpOnly") && form.contains("Secure")
    );
    // Choosing a language sticks.
    let ca = c.get("/register?lang=ca").await;
    assert!(ca.body.contains("Crea un compte"), "{}", ca.body);
    let again = c.get("/forgot").await;
    assert!(
        again.body.contains("Contrasenya oblidada"),
        "{}",
        again.body
    );
    // The collective picker lists the box's collective.
    assert!(
        ca.body.contains(r#"<option value="quimper" selected>"#),
        "{}",
        ca.body
    );
    // A registration with mistakes names each field, and keeps what was typed.
    let r = c
        .post_form(
            "/register",
            &[
                ("csrf", &ca.csrf()),
                ("uid", "X"),
                ("display_name", "Ana"),
                ("email", "not-an-address"),
                ("collective", "quimper"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains(r#"id="e-uid""#) && r.body.contains(r#"id="e-email""#),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"value="not-an-address""#));
    // The CA certificate is there to download.
    let pem = c.get("/ca.pem").await;
    assert_eq!(pem.status, 200);
    assert_eq!(pem.body, std::fs::read_to_string(&b.ca).unwrap());
    // Unknown pages say so in the page's language.
    let missing = c.get("/nope").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("Aquesta pàgina no existeix"),
        "{}",
        missing.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forum_sign_in_reuses_the_console_session() {
    use base64::Engine;
    let b = ConsoleBox::start().await;
    b.person("ana", "ana@example.org", "ana's own secret");
    let secret = "forum-connect-secret-for-this-test";
    let path = b.app.dir.path().join("secrets/discourse-connect-secret");
    std::fs::write(&path, secret).unwrap();
    let ret = "https://forum.quimper.example.org/session/sso_login";
    let ask = |nonce: &str| {
        let (sso, sig) = commonscloud::sso::discourse::sign_request(secret.as_bytes(), nonce, ret);
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("sso", &sso)
            .append_pair("sig", &sig)
            .finish();
        format!("/sso/discourse?{q}")
    };
    let mut c = b.client();
    // Signed out: sign in first, then back to the same request.
    let first = ask("nonce-one");
    let a = c.get(&first).await;
    assert_eq!(a.status, 303);
    let login = a.location().to_owned();
    assert!(
        login.starts_with("/login?next=%2Fsso%2Fdiscourse"),
        "{login}"
    );
    let page = c.get(&login).await;
    let next = form_urlencoded::parse(login.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "next")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(next, first);
    let signed = c
        .post_form(
            "/login",
            &[
                ("csrf", &page.csrf()),
                ("uid", "ana"),
                ("password", "ana's own secret"),
                ("next", &next),
            ],
        )
        .await;
    assert_eq!((signed.status, signed.location()), (303, first.as_str()));
    let back = c.get(&first).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let to = back.location();
    assert!(to.starts_with(ret), "{to}");
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(to.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&q["sso"])
        .unwrap();
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&payload).into_owned().collect();
    assert_eq!(fields["username"], "ana");
    assert_eq!(fields["nonce"], "nonce-one");
    assert_eq!(fields["add_groups"], "quimper");
    // With the session, a new request needs no password at all.
    let again = c.get(&ask("nonce-two")).await;
    assert_eq!(again.status, 303);
    assert!(again.location().starts_with(ret));
    // A replayed request is refused; a forged one too.
    assert_eq!(c.get(&ask("nonce-two")).await.status, 400);
    let forged = ask("nonce-three").replace("sig=", "sig=00");
    assert_eq!(c.get(&forged).await.status, 400);
    assert_eq!(b.audited("sso-discourse").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_page_answers_and_its_forms_act() {
    let b = ConsoleBox::start().await;
    b.admin("bea", "bea@example.org", ADMIN_PW);
    let mut c = b.client();
    assert_eq!(c.sign_in("bea", ADMIN_PW).await.status, 303);
    for (path, needle) in [
        ("/console", "Waiting for a decision"),
        ("/console/requests", "Requests to join"),
        ("/console/people", "Invite by mail"),
        ("/console/collectives", "Create a group"),
        ("/console/apps", "overrides `[apps] enabled`"),
        ("/console/upgrades", "no upgrade is offered"),
        ("/console/backups", "No backup is set up"),
        ("/console/settings", "quimper.example.org"),
        ("/console/audit", "login"),
    ] {
        let p = c.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(
            p.body.contains(needle),
            "{path} lacks {needle:?}: {}",
            p.body
        );
    }
    let csrf = c.get("/console").await.csrf();
    // A test mail reaches the admin.
    let sent = c
        .post_form("/console/settings/test-mail", &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (sent.status, sent.location()),
        (303, "/console/settings?done=1")
    );
    off_runtime(|| {
        b.sink
            .wait_for("bea@example.org", "sent this test from the console")
    });
    // A group, a service for it, and a member in it.
    b.person("cy", "cy@example.org", "cy's long password");
    let made = c
        .post_form(
            "/console/collectives/quimper/groups",
            &[("csrf", &csrf), ("group", "editors")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let granted = c
        .post_form(
            "/console/collectives/quimper/services",
            &[
                ("csrf", &csrf),
                ("service", "office"),
                ("group", "editors"),
                ("grant", "1"),
            ],
        )
        .await;
    assert_eq!(granted.status, 303, "{}", granted.body);
    let joined = c
        .post_form(
            "/console/people/-/group",
            &[
                ("csrf", &csrf),
                ("uid", "cy"),
                ("collective", "quimper"),
                ("group", "editors"),
            ],
        )
        .await;
    assert_eq!(joined.status, 303, "{}", joined.body);
    let mut cy = b.client();
    cy.sign_in("cy", "cy's long password").await;
    let services = cy.get("/api/v1/me/services").await.json();
    assert_eq!(
        services,
        serde_json::json!([{"collective": "quimper", "name": "office", "url": ""}]),
        "the service comes through the group"
    );
    let home = cy.get("/").await;
    assert!(
        home.body.contains(
            r#"<a href="https://office.quimper.example.org/"><strong>office</strong></a>"#
        ),
        "{}",
        home.body
    );
    // A bad group name is refused, naming what is allowed.
    let bad = c
        .post_form(
            "/console/collectives/quimper/groups",
            &[("csrf", &csrf), ("group", "Bad Name")],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("not a valid"), "{}", bad.body);
    // Suspending from the console ends the person's session at once.
    let s = c
        .post_form(
            "/console/people/cy/suspend",
            &[("csrf", &csrf), ("reason", "test")],
        )
        .await;
    assert_eq!(s.status, 303, "{}", s.body);
    assert_eq!(cy.get("/api/v1/session").await.status, 401);
    // Apps are turned on and off here, within what the board can hold.
    for (app, act, want) in [
        ("nextcloud", "enable", 303),
        ("collabora", "enable", 303),
        ("discourse", "enable", 422),
        ("collabora", "disable", 303),
    ] {
        let a = c
            .post_form(&format!("/console/apps/{app}/{act}"), &[("csrf", &csrf)])
            .await;
        assert_eq!(a.status, want, "{act} {app}: {}", a.body);
        if want == 422 {
            assert!(a.body.contains("need 3456 MB together"), "{}", a.body);
        }
    }
    let chosen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(b.app.dir.path().join("state/console/apps.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(chosen["enabled"], serde_json::json!(["nextcloud"]));
    assert_eq!(chosen["by"], "bea");
    // Every reader of the config sees the choice, and is told where it is.
    let check = off_runtime(|| b.app.cli(&["config", "check", "--json"]));
    let effective: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(
        effective["apps"]["enabled"],
        serde_json::json!(["nextcloud"])
    );
    let check = off_runtime(|| b.app.cli(&["config", "check"]));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("chosen in the console"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The daemon reloaded with it.
    let apps = c.get("/console/apps").await.body;
    assert!(apps.contains("/console/apps/nextcloud/disable"), "{apps}");
    assert!(apps.contains("/console/apps/collabora/enable"), "{apps}");
    // The same through the API.
    let off = c
        .post_json(
            "/api/v1/apps/nextcloud/disable",
            serde_json::json!({}),
            Some(&csrf),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.json()["enabled"], serde_json::json!([]));
    let listed = c.get("/api/v1/apps").await.json();
    assert_eq!(listed["chosen_in_console"], true, "{listed}");
    assert_eq!(listed["enabled"], serde_json::json!([]), "{listed}");
    let unknown = c.get("/api/v1/apps/not-ours/logs").await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let mail = c
        .post_json(
            "/api/v1/settings/test-mail",
            serde_json::json!({}),
            Some(&csrf),
        )
        .await;
    assert_eq!(mail.status, 202, "{}", mail.body);
    // Every action is in the audit log, by the admin.
    let audit = c.get("/console/audit").await.body;
    for action in [
        "test-mail",
        "create-group",
        "grant-service",
        "suspend",
        "enable-app",
        "disable-app",
    ] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
    assert_eq!(b.audited("suspend"), ["bea cy: test"]);
}

/// What a reload changes is only what the new config changes: the
/// onboarding service keeps its rate limits (reset links and registrations
/// per address) and the console its sign-in limits, across a SIGHUP that
/// changed the onboarding's settings (the collective's name, in its mails)
/// and across an app turned on from the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_survive_a_reload() {
    let mut b = ConsoleBox::start().await;
    b.admin("bea", "bea@example.org", ADMIN_PW);
    b.person("ana", "ana@example.org", "ana's own passphrase");
    let forgot = |i: usize| serde_json::json!({"login": format!("nobody{i}")});
    let form = |i: usize| {
        serde_json::json!({"uid": format!("newcomer{i}"), "display_name": "Newcomer",
            "email": format!("newcomer{i}@example.org"), "collective": "quimper", "language": "en"})
    };
    // One address spends its limits: ten reset links, ten registrations,
    // and five wrong passwords for Ana, who never signed in from there.
    let mut x = b.client_from("127.0.0.40");
    for i in 0..10 {
        let a = x
            .post_json("/api/v1/password/forgot", forgot(i), None)
            .await;
        assert_eq!(a.status, 200, "reset {i}: {}", a.body);
        let a = x.post_json("/api/v1/registrations", form(i), None).await;
        assert_eq!(a.status, 202, "registration {i}: {}", a.body);
    }
    for _ in 0..5 {
        assert_eq!(ana_signs_in(&mut x, "wrong").await, 401);
    }
    let mut next = 100;
    let mut still_limited = async |x: &mut common::console::Client, when: &str| {
        next += 1;
        let a = x
            .post_json("/api/v1/password/forgot", forgot(next), None)
            .await;
        assert_eq!(a.status, 429, "reset link {when}: {}", a.body);
        assert_eq!(a.json()["code"], "rate_limited", "{when}");
        let a = x.post_json("/api/v1/registrations", form(next), None).await;
        assert_eq!(a.status, 429, "registration {when}: {}", a.body);
        assert_eq!(
            ana_signs_in(x, "ana's own passphrase").await,
            429,
            "Ana's sign-in from there {when}"
        );
    };
    still_limited(&mut x, "before any reload").await;

    // A reload that changes what the onboarding service is told.
    let text = std::fs::read_to_string(&b.app.config).unwrap();
    std::fs::write(
        &b.app.config,
        text.replace("Les Communs de Quimper", "Communs de Quimper"),
    )
    .unwrap();
    let daemon = &mut b.daemon;
    off_runtime(|| {
        daemon.signal(nix::sys::signal::Signal::SIGHUP);
        daemon.wait_for("RELOADING=1", std::time::Duration::from_secs(10));
        daemon.wait_for("READY=1", std::time::Duration::from_secs(10));
    });
    let s = off_runtime(|| b.app.status());
    assert_eq!(s["last_reload"]["applied"], true, "{s}");
    still_limited(&mut x, "after a SIGHUP").await;

    // An app turned on from the console reloads the config too.
    let mut bea = b.client_from("127.0.0.41");
    assert_eq!(bea.sign_in("bea", ADMIN_PW).await.status, 303);
    let csrf = bea.get("/console/apps").await.csrf();
    let on = bea
        .post_json(
            "/api/v1/apps/nextcloud/enable",
            serde_json::json!({}),
            Some(&csrf),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(on.json()["enabled"], serde_json::json!(["nextcloud"]));
    assert_eq!(b.audited("reload").len(), 2, "both reloads happened");
    still_limited(&mut x, "after an app was turned on").await;
}

async fn ana_signs_in(c: &mut common::console::Client, password: &str) -> u16 {
    c.post_json(
        "/api/v1/session",
        serde_json::json!({"uid": "ana", "password": password}),
        None,
    )
    .await
    .status
}
