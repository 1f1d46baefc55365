//! Public certificates by ACME against a real ACME server on loopback:
//! Debian's `pebble`, with `pebble-challtestsrv` as its DNS (every name
//! resolves to 127.0.0.1), validating HTTP-01 on the front door's own
//! plain-HTTP port.
//!
//! - The supervisor (`commonscloud serve`) orders one certificate for every
//!   hostname, the front door (`commonscloud front-door`) answers the
//!   challenges and serves the certificate, which verifies against pebble's
//!   root; a renewal (a longer `renew_before_days`, then SIGHUP) is served
//!   without a restart while a connection opened before keeps working.
//! - A validation that cannot reach the front door keeps the current
//!   certificate, says what to do, backs off, and a reload retries at once.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Appliance, BIN};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "quimper.example.org";

fn hosts() -> Vec<String> {
    ["box", "cloud", "forum", "office"]
        .iter()
        .map(|h| format!("{h}.{DOMAIN}"))
        .collect()
}

/// A child process killed on drop, also when the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1 (the DNS server takes
/// both).
fn free_dns_port() -> u16 {
    loop {
        let p = common::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn wait_listening(port: u16, what: &str, log: &Path) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "{what} never listened on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// pebble and its DNS, in `dir`, validating HTTP-01 on `http_port`; every
/// name resolves to `answer_ip`.
struct Pebble {
    directory: String,
    management: u16,
    /// The CA of pebble's own TLS certificate: `front_door.acme.ca_file`.
    tls_ca: PathBuf,
    log: PathBuf,
    _dns: Proc,
    _pebble: Proc,
}

impl Pebble {
    fn start(dir: &Path, http_port: u16, answer_ip: &str) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        // pebble's TLS: a CA of the test's own and a leaf for loopback.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble TLS test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let tls_ca = dir.join("tls-ca.pem");
        std::fs::write(&tls_ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();

        let (acme, management, dns) = (common::free_port(), common::free_port(), free_dns_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            // No TLS-ALPN-01 here; a port nobody uses.
            "tlsPort": common::free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        let dns_log = dir.join("challtestsrv.log");
        let dns_proc = Proc(
            Command::new("pebble-challtestsrv")
                .arg("-dns01")
                .arg(format!("127.0.0.1:{dns}"))
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .arg("-management")
                .arg(format!("127.0.0.1:{}", common::free_port()))
                .args(["-defaultIPv4", answer_ip, "-defaultIPv6", ""])
                .stdout(std::fs::File::create(&dns_log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv (apt install pebble)"),
        );
        wait_listening(dns, "pebble-challtestsrv", &dns_log);
        let log = dir.join("pebble.log");
        let pebble = Proc(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns}"))
                // No random sleeps before validating; every nonce good (so
                // no test hangs on chance); a new authorization (and so a
                // new challenge) for every order.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(dir.join("pebble.err")).unwrap())
                .spawn()
                .expect("pebble (apt install pebble)"),
        );
        wait_listening(acme, "pebble", &log);
        wait_listening(management, "pebble's management", &log);
        Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            tls_ca,
            log,
            _dns: dns_proc,
            _pebble: pebble,
        }
    }

    /// pebble's issuing root (made anew at each start), from its
    /// management interface, written as PEM in `dir`.
    async fn root(&self, dir: &Path) -> PathBuf {
        let tcp = TcpStream::connect(("127.0.0.1", self.management))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = common::tls_connector(&self.tls_ca)
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/roots/0")
            .header("host", format!("127.0.0.1:{}", self.management))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let pem = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, &pem).unwrap();
        path
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An upstream for Nextcloud's route that answers 200 with the path.
async fn upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(path))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

/// The leaf the front door serves for `host`, if the chain verifies
/// against `root` (as a browser trusting pebble would check it).
async fn served_leaf(addr: SocketAddr, host: &str, root: &Path) -> Option<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let tls = common::tls_connector(root).connect(name, tcp).await.ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

/// Waits until every host gets a leaf that verifies against `root` and is
/// not `old`; returns it (one certificate covers them all).
async fn wait_for_leaf(
    addr: SocketAddr,
    root: &Path,
    old: Option<&CertificateDer<'static>>,
    logs: &dyn Fn() -> String,
) -> CertificateDer<'static> {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let mut leaves = Vec::new();
        for h in hosts() {
            match served_leaf(addr, &h, root).await {
                Some(l) if Some(&l) != old => leaves.push(l),
                _ => break,
            }
        }
        if leaves.len() == hosts().len() {
            assert!(
                leaves.windows(2).all(|w| w[0] == w[1]),
                "one certificate for all"
            );
            return leaves.remove(0);
        }
        assert!(
            Instant::now() < until,
            "no certificate from pebble served for every hostname\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn audit_actions(app: &Appliance) -> Vec<(String, String)> {
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    store
        .recent_audit(100)
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_acme_is_served_for_every_hostname_and_renewed_without_a_restart() {
    let app = Appliance::new();
    let (https, http) = (common::free_port(), common::free_port());
    let pebble = Pebble::start(app.dir.path(), http, "127.0.0.1");
    let up = upstream().await;
    app.set_apps(&["nextcloud"], &format!("force = true\nport_base = {up}\n"));
    let base = std::fs::read_to_string(&app.config).unwrap();
    let with_acme = |renew_before_days: u32| {
        format!(
            "{base}\n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n\n[front_door.acme]\ndirectory = \"{}\"\ncontact = \"certs@{DOMAIN}\"\nca_file = \"{}\"\nrenew_before_days = {renew_before_days}\n",
            pebble.directory,
            pebble.tls_ca.display()
        )
    };
    std::fs::write(&app.config, with_acme(30)).unwrap();
    let no_docker = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let supervisor = app.serve_with(&no_docker);
    let door_log = app.dir.path().join("front-door.log");
    let mut door = Proc(
        Command::new(BIN)
            .arg("--config")
            .arg(&app.config)
            .arg("front-door")
            .stderr(std::fs::File::create(&door_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let root = pebble.root(app.dir.path()).await;
    let serve_log = app.dir.path().join("serve.log");
    let logs = || {
        format!(
            "serve:\n{}\nfront door:\n{}\npebble:\n{}",
            std::fs::read_to_string(&serve_log).unwrap_or_default(),
            std::fs::read_to_string(&door_log).unwrap_or_default(),
            pebble.log_text()
        )
    };
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();

    // Issued by pebble, served for every hostname.
    let first = wait_for_leaf(addr, &root, None, &logs).await;
    let files = commonscloud::frontdoor::acme::Files::new(
        &app.dir.path().join("state"),
        &app.dir.path().join("secrets"),
    );
    let record = commonscloud::frontdoor::acme::read_record(&files.record).unwrap();
    let issued = record.issued.expect("the record names the certificate");
    assert_eq!(issued.hosts, hosts());
    assert_eq!(issued.directory, pebble.directory);
    let (_, not_after) = commonscloud::frontdoor::acme::validity(&first).unwrap();
    assert_eq!(
        issued.not_after, not_after,
        "the record has the served one's end"
    );
    // The chain and its key: one file, for the front door's group.
    assert_eq!(mode(&files.pair), 0o640);
    assert_eq!(mode(&files.account), 0o600);
    // The local CA stays (its certificate can still be downloaded).
    assert!(app.dir.path().join("state/tls/ca.crt").exists());
    // pebble validated each challenge over HTTP on the front door's port,
    // and the answers were removed after.
    let log = pebble.log_text();
    for h in hosts() {
        assert!(
            log.contains(&format!("http://{h}:{http}/.well-known/acme-challenge/")),
            "pebble fetched {h}'s answer from the front door:\n{log}"
        );
    }
    assert_eq!(
        log.matches("set VALID by completed challenge").count(),
        hosts().len(),
        "one HTTP-01 challenge validated per hostname:\n{log}"
    );
    assert_eq!(
        std::fs::read_dir(&files.challenges).unwrap().count(),
        0,
        "the challenge files are removed"
    );
    let audit = audit_actions(&app);
    assert!(
        audit
            .iter()
            .any(|(a, d)| a == "acme-issued" && d.contains(&format!("cloud.{DOMAIN}"))),
        "{audit:?}"
    );
    let serve = std::fs::read_to_string(&serve_log).unwrap();
    assert!(serve.contains("ACME certificate issued"), "{serve}");
    assert!(!serve.contains("PRIVATE KEY"), "no key in the log");

    // A connection opened before the renewal, with a request done on it.
    let cloud = format!("cloud.{DOMAIN}");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = common::tls_connector(&root)
        .connect(
            rustls::pki_types::ServerName::try_from(cloud.clone()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(path)
            .header("host", cloud.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = open.send_request(get("/before")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    // pebble's certificates live five years: a window of ten renews now.
    std::fs::write(&app.config, with_acme(3650)).unwrap();
    supervisor.signal(Signal::SIGHUP);
    let second = wait_for_leaf(addr, &root, Some(&first), &logs).await;
    assert_ne!(second, first);
    let record = commonscloud::frontdoor::acme::read_record(&files.record).unwrap();
    assert_eq!(
        record.issued.unwrap().not_after,
        commonscloud::frontdoor::acme::validity(&second).unwrap().1
    );
    let r = open.send_request(get("/after")).await.unwrap();
    assert_eq!(r.status(), 200, "the connection from before still works");
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/after");
    assert!(
        door.0.try_wait().unwrap().is_none(),
        "the front door was not restarted"
    );
    let served = std::fs::read_to_string(&door_log).unwrap();
    assert!(served.contains("serving the ACME certificate"), "{served}");
    let audit = audit_actions(&app);
    assert_eq!(
        audit.iter().filter(|(a, _)| a == "acme-issued").count(),
        2,
        "{audit:?}"
    );
    drop(supervisor);
}

/// A config for the library's own calls: state in `dir`, the front door's
/// plain HTTP on `http`.
fn config(dir: &Path, http: u16, pebble: &Pebble) -> commonscloud::config::Config {
    let text = format!(
        r#"
[collective]
name = "Quimper"
slug = "quimper"
domain = "{DOMAIN}"
admin_email = "admin@{DOMAIN}"

[hardware]
profile = "rpi4-4gb"

[apps]
enabled = []

[front_door]
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"

[front_door.acme]
directory = "{directory}"
ca_file = "{ca}"

[paths]
state_dir = "{state}"
runtime_dir = "{run}"
secrets_dir = "{secrets}"
"#,
        https = common::free_port(),
        directory = pebble.directory,
        ca = pebble.tls_ca.display(),
        state = dir.join("state").display(),
        run = dir.join("run").display(),
        secrets = dir.join("secrets").display(),
    );
    commonscloud::config::parse(&text, Path::new("acme-test.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_that_cannot_reach_the_box_keeps_the_certificate_and_backs_off() {
    use commonscloud::frontdoor::acme;
    use commonscloud::frontdoor::publisher::{AcmeRun, renew_acme};
    let dir = tempfile::Builder::new()
        .prefix("cc-acme-")
        .tempdir()
        .unwrap();
    // The front door answers on 127.0.0.1, but pebble's DNS sends it to
    // 127.0.0.2, where nothing listens: a box port 80 does not reach.
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_l.local_addr().unwrap().port();
    let pebble = Pebble::start(dir.path(), http, "127.0.0.2");
    let c = config(dir.path(), http, &pebble);
    let files = acme::Files::new(&c.paths.state_dir, &c.paths.secrets_dir);
    use commonscloud::frontdoor::limits::{Gate, Limits};
    tokio::spawn(commonscloud::frontdoor::proxy::serve_http(
        http_l,
        443,
        files.challenges.clone(),
        Gate::new(Limits::resolve(&Default::default(), 65536)),
        commonscloud::frontdoor::proxy::Drain::new(),
    ));
    // A certificate in place before, which must stay.
    let before = b"-----BEGIN CERTIFICATE-----\nnot replaced\n-----END CERTIFICATE-----\n";
    std::fs::create_dir_all(files.pair.parent().unwrap()).unwrap();
    std::fs::write(&files.pair, before).unwrap();

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (run, look) = renew_acme(&c, false, now).await;
    let AcmeRun::Failed {
        reason,
        error,
        retry_at,
    } = run
    else {
        panic!("expected a failure, got {run:?}\n{}", pebble.log_text());
    };
    assert_eq!(reason, acme::Reason::NoCertificate);
    let said = error.to_string();
    assert!(
        matches!(error, acme::AcmeError::Validation { .. }),
        "{said}"
    );
    assert!(said.contains("Port 80 must reach this box"), "{said}");
    assert!(said.contains(&format!("cloud.{DOMAIN}")), "{said}");
    assert_eq!((retry_at, look), (now + 60, 60));
    assert_eq!(std::fs::read(&files.pair).unwrap(), before);
    assert_eq!(std::fs::read_dir(&files.challenges).unwrap().count(), 0);
    let record = acme::read_record(&files.record).unwrap();
    assert_eq!((record.failures, record.retry_at), (1, now + 60));
    assert!(record.last_error.unwrap().contains("Port 80"));
    // The account is kept for the next try.
    assert_eq!(mode(&files.account), 0o600);
    let account = std::fs::read(&files.account).unwrap();

    // Within the backoff nothing is ordered; a reload tries at once, and
    // the next failure waits twice as long.
    let (run, look) = renew_acme(&c, false, now + 30).await;
    assert!(
        matches!(run, AcmeRun::Waiting { until, .. } if until == now + 60),
        "{run:?}"
    );
    assert_eq!(look, 30);
    let (run, _) = renew_acme(&c, true, now + 31).await;
    assert!(
        matches!(run, AcmeRun::Failed { retry_at, .. } if retry_at == now + 31 + 120),
        "{run:?}"
    );
    assert_eq!(acme::read_record(&files.record).unwrap().failures, 2);
    assert_eq!(std::fs::read(&files.account).unwrap(), account, "made once");
}
