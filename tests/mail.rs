//! Onboarding through the running daemon with a real SMTP server: the mails
//! are read where they arrive, and the path ends with an LDAP bind. The SMTP
//! server is down at first: the mail waits in the outbox and goes out once
//! the server is back.

mod common;

use common::{Appliance, SmtpSink, component, post, token_in, wait_status};
use nix::sys::signal::Signal;

#[test]
fn registration_to_first_bind_with_real_mail_surviving_an_smtp_outage() {
    let app = Appliance::new();
    let mut sink = SmtpSink::new(app.dir.path());
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(
        &app.config,
        format!(
            "{text}\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"CommonsCloud <box@quimper.example.org>\"\n",
            sink.port
        ),
    )
    .unwrap();
    let daemon = app.serve();
    wait_status(&app, "directory ok", |s| {
        component(s, "directory")["state"] == "ok"
    });

    let form = serde_json::json!({"uid": "ana", "display_name": "Ana Ros", "email": "ana@example.org",
        "collective": "quimper", "message": "Hello", "language": "en", "ip": "192.0.2.10"});
    let (code, created) = post(&app, "/v1/registrations", form.clone());
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    // A second one for the same uid is refused, naming the field.
    let (code, refused) = post(&app, "/v1/registrations", form);
    assert_eq!(
        (code, refused["fields"][0]["field"].as_str()),
        (422, Some("uid")),
        "{refused}"
    );

    // SMTP is down: the mail waits, and status says so.
    let s = wait_status(&app, "mail failing", |s| {
        component(s, "mail")["state"] == "degraded"
    });
    assert!(
        component(&s, "mail")["detail"]
            .as_str()
            .unwrap()
            .contains("1 mail(s) queued"),
        "{s:#}"
    );

    let (_, metrics) = common::get(&app.socket(), "/metrics");
    assert!(
        metrics.contains("commonscloud_mail_queued 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("commonscloud_mail_send_failures_total 0\n"),
        "{metrics}"
    );

    sink.start();
    daemon.signal(Signal::SIGHUP); // a reload also retries the outbox now
    let verify = sink.wait_for("ana@example.org", "/verify?token=");
    assert!(
        verify.contains("Subject: Confirm your address for Les Communs de Quimper"),
        "{verify}"
    );
    let (code, v) = post(
        &app,
        "/v1/registrations/verify",
        serde_json::json!({"token": token_in(&verify)}),
    );
    assert_eq!((code, v["id"].as_i64()), (200, Some(id)), "{v}");
    let notice = sink.wait_for("admin@quimper.example.org", "asks to join");
    assert!(notice.contains("Hello"), "{notice}");

    let out = app.cli(&["user", "list", "--state", "awaiting_validation", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["uid"], "ana", "{listed}");
    let out = app.cli(&["user", "approve", &id.to_string(), "--as", "admin:marie"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let welcome = sink.wait_for("ana@example.org", "/set-password?token=");
    let (code, v) = post(
        &app,
        "/v1/password",
        serde_json::json!({"token": token_in(&welcome), "password": "ana's first password"}),
    );
    assert_eq!((code, v["uid"].as_str()), (200, Some("ana")), "{v}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bound = rt.block_on(commonscloud::directory::ldap::check_password(
        &app.ldap_url(),
        "uid=ana,ou=people,dc=quimper,dc=example,dc=org",
        "ana's first password",
    ));
    assert!(bound.unwrap(), "Ana binds with the password she chose");
    let s = wait_status(&app, "outbox drained", |s| {
        component(s, "mail")["state"] == "ok"
            && component(s, "mail")["detail"]
                .as_str()
                .unwrap()
                .ends_with("0 queued")
    });
    assert!(
        component(&s, "mail")["detail"]
            .as_str()
            .unwrap()
            .starts_with("3 sent"),
        "{s:#}"
    );
    let (_, metrics) = common::get(&app.socket(), "/metrics");
    for line in [
        "commonscloud_mail_sent_total 3\n",
        "commonscloud_mail_queued 0\n",
        "commonscloud_mail_oldest_queued_age_seconds 0\n",
        "commonscloud_registrations_awaiting_validation 0\n",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    let out = app.cli(&["user", "show", &id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["decided_by"].as_str()),
        (Some("active"), Some("admin:marie"))
    );
}
