//! The console in a real browser: Debian's headless Chromium, driven by
//! chromedriver through fantoccini, at phone width, over the front door's
//! TLS. A newcomer registers, verifies from the mail the SMTP sink got, an
//! admin approves, the newcomer sets a password, a wrong one is refused,
//! and the right one shows their services. Screenshots of each step are
//! kept under `<target>/test-artifacts/browser/`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console::{ConsoleBox, HOST, off_runtime};
use fantoccini::{Client, ClientBuilder, Locator};

/// Kills chromedriver (and with it Chromium) on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = common::target_dir().join("test-artifacts/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client) -> String {
    match c.find(Locator::Css("main")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits for the page (after a click, the next one) to say `needle`.
async fn wait_text(c: &Client, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let t = text(c).await;
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < until,
            "the page never said {needle:?}; it says: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the browser to be at `path`.
async fn wait_path(c: &Client, path: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = c.current_url().await.unwrap();
        if now.path() == path {
            return;
        }
        assert!(Instant::now() < until, "still at {now}, not {path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn submit(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// What a page must be at phone width: nothing wider than the screen, and
/// every field with a label.
async fn phone_friendly(c: &Client, step: &str) {
    let v = c
        .execute(
            "const unlabelled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(e => !e.closest('[aria-hidden=true]') && (!e.labels || e.labels.length === 0))
                 .map(e => e.name);
             return [document.documentElement.scrollWidth, window.innerWidth, unlabelled];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, width) = (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
    assert!(
        scroll <= width,
        "{step}: the page is {scroll}px wide on a {width}px screen"
    );
    assert_eq!(
        v[2],
        serde_json::json!([]),
        "{step}: fields without a label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_registers_is_approved_and_signs_in_in_a_real_browser() {
    let b = ConsoleBox::start().await;
    b.admin("bea", "bea@example.org", "bea's long password");
    // Members may use the cloud; its link is what "my services" shows.
    let (code, v) = off_runtime(|| {
        common::post(
            &b.app,
            "/v1/collectives/quimper/services",
            serde_json::json!({"service": "cloud", "group": "members", "grant": true, "by": "test"}),
        )
    });
    assert_eq!(code, 200, "{v}");

    let port = common::free_port();
    let _driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt install chromium-driver)"),
    );
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=390,844",
                // The box's name reaches the front door on loopback; the URL,
                // the Host header and the certificate's name stay the real ones.
                format!("--host-resolver-rules=MAP {HOST} 127.0.0.1:{}", b.https),
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    // The local CA is not installed in this throwaway profile.
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    let base = format!("https://{HOST}");

    // A newcomer registers.
    c.goto(&format!("{base}/register")).await.unwrap();
    phone_friendly(&c, "register").await;
    fill(&c, "#f-uid", "ana").await;
    fill(&c, "#f-display_name", "Ana Ros").await;
    fill(&c, "#f-email", "ana@example.org").await;
    fill(&c, "#f-message", "I run the food co-op's books.").await;
    shot(&c, "01-register").await;
    submit(&c, "main form button[type=submit]").await;
    wait_text(&c, "Check your mail").await;
    shot(&c, "02-registered").await;

    // The link in the mail, opened and confirmed.
    let mail = off_runtime(|| b.sink.wait_for("ana@example.org", "/verify?token="));
    let link = format!("{base}/verify?token={}", common::token_in(&mail));
    assert!(
        mail.contains(&link),
        "the mail links to the console: {mail}"
    );
    c.goto(&link).await.unwrap();
    submit(&c, "main form button[type=submit]").await;
    wait_text(&c, "your address is confirmed").await;
    shot(&c, "03-verified").await;

    // The admin signs in and approves.
    c.goto(&format!("{base}/console")).await.unwrap();
    wait_path(&c, "/login").await;
    fill(&c, "#f-uid", "bea").await;
    fill(&c, "#f-password", "bea's long password").await;
    submit(&c, "main form button[type=submit]").await;
    wait_path(&c, "/console").await;
    wait_text(&c, "Waiting for a decision").await;
    phone_friendly(&c, "dashboard").await;
    shot(&c, "04-dashboard").await;
    c.goto(&format!("{base}/console/requests")).await.unwrap();
    wait_text(&c, "(ana)").await;
    let request = c
        .find(Locator::XPath("//section[.//h3[contains(., '(ana)')]]"))
        .await
        .expect("ana's request is listed");
    assert!(
        request
            .text()
            .await
            .unwrap()
            .contains("I run the food co-op's books.")
    );
    shot(&c, "05-requests").await;
    request
        .find(Locator::XPath(".//button[normalize-space()='Approve']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let after = wait_text(&c, "Done.").await;
    assert!(!after.contains("(ana)"), "no longer waiting: {after}");
    submit(&c, "header form button").await; // sign out
    wait_text(&c, "You are signed out.").await;

    // The newcomer chooses a password from the approval mail.
    let mail = off_runtime(|| b.sink.wait_for("ana@example.org", "/set-password?token="));
    c.goto(&format!(
        "{base}/set-password?token={}",
        common::token_in(&mail)
    ))
    .await
    .unwrap();
    fill(&c, "#f-password", "ana's own secret").await;
    fill(&c, "#f-confirm", "ana's own secret").await;
    shot(&c, "06-set-password").await;
    submit(&c, "main form button[type=submit]").await;
    wait_text(&c, "Your password is saved").await;

    // A wrong password is refused, saying so.
    c.goto(&format!("{base}/login")).await.unwrap();
    fill(&c, "#f-uid", "ana").await;
    fill(&c, "#f-password", "not the password").await;
    submit(&c, "main form button[type=submit]").await;
    wait_text(&c, "Wrong user name or password").await;
    let refused = c
        .find(Locator::Css("main [role=alert]"))
        .await
        .expect("an alert");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    shot(&c, "07-wrong-password").await;

    // The right one shows the services.
    fill(&c, "#f-uid", "ana").await;
    fill(&c, "#f-password", "ana's own secret").await;
    submit(&c, "main form button[type=submit]").await;
    wait_text(&c, "Hello, Ana Ros.").await;
    wait_path(&c, "/").await;
    let services = c
        .find(Locator::Css("#services"))
        .await
        .expect("a list of services");
    let link = services.find(Locator::Css("a")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("https://cloud.quimper.example.org/")
    );
    phone_friendly(&c, "services").await;
    shot(&c, "08-services").await;
    // A member has no console.
    assert!(c.find(Locator::Css("a[href='/console']")).await.is_err());
    c.close().await.unwrap();
}
