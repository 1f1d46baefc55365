//! Helpers shared by the end-to-end tests: a throwaway appliance in a temp dir,
//! driven through the real binary.
#![allow(dead_code)]

pub mod alliance;
pub mod console;
pub mod flow;
pub mod images;
pub mod slapd;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_commonscloud");

/// The cargo target dir this test binary was built into.
pub fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/commonscloud")
        .to_owned()
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// An appliance config in its own temp dir; everything it makes lives there.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Appliance {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cc-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("appliance.toml");
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args([
                "init",
                "--non-interactive",
                "--collective",
                "Les Communs de Quimper",
                "--slug",
                "quimper",
                "--domain",
                "quimper.example.org",
                "--admin-email",
                "admin@quimper.example.org",
                "--profile",
                "rpi4-4gb",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("--secrets-dir")
            .arg(dir.path().join("secrets"))
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Each appliance's slapd gets a port of its own, so tests run in
        // parallel. No app runs unless a test asks (`set_apps`), and Docker
        // objects carry a prefix of their own.
        let text: String = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("enabled = ") {
                    format!(
                        "enabled = []\nprefix = \"cc-{}-{}\"\n",
                        std::process::id(),
                        unique()
                    )
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let text = format!(
            "{text}\n[directory]\nlisten = [\"ldap://127.0.0.1:{}\"]\n",
            free_port()
        );
        std::fs::write(&config, text).unwrap();
        Appliance { dir, config }
    }

    /// The Docker name prefix (and instance label) of this appliance.
    pub fn prefix(&self) -> String {
        commonscloud::config::load(&self.config)
            .unwrap()
            .apps
            .prefix
            .to_string()
    }

    /// Sets `[apps] enabled` (and any extra `[apps]` keys, one per line).
    pub fn set_apps(&self, apps: &[&str], extra: &str) {
        let list: Vec<String> = apps.iter().map(|a| format!("\"{a}\"")).collect();
        let text: String = std::fs::read_to_string(&self.config)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("enabled = ") {
                    format!("enabled = [{}]\n{extra}", list.join(", "))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&self.config, text).unwrap();
    }

    /// The LDAP URL the apps would use.
    pub fn ldap_url(&self) -> String {
        let c = commonscloud::config::load(&self.config).unwrap();
        c.directory.listen[0].to_string()
    }

    /// The pid of this appliance's slapd, if it runs.
    pub fn slapd_pid(&self) -> Option<i32> {
        let c = commonscloud::config::load(&self.config).ok()?;
        commonscloud::directory::slapd::running_pid(&commonscloud::directory::slapd::Paths::new(&c))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/api.sock")
    }

    /// Runs a CLI command against this appliance.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run commonscloud")
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Starts `serve` with a notify socket, and waits for READY=1.
    pub fn serve(&self) -> Daemon {
        self.serve_with(&[])
    }

    pub fn serve_with(&self, env: &[(&str, &str)]) -> Daemon {
        let notify_path = self.dir.path().join(format!("notify-{}.sock", unique()));
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        let mut d = Daemon {
            child,
            notify,
            seen: Vec::new(),
            log: self.dir.path().join("serve.log"),
        };
        d.wait_for("READY=1", Duration::from_secs(20));
        d
    }
}

impl Drop for Appliance {
    /// slapd outlives the daemon by design; the test's own must not outlive
    /// the test.
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("run/slapd.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A free TCP port on 127.0.0.1 for a server the test starts later.
///
/// Asking the kernel for port 0 from two test processes at once can give both
/// the same port once each has closed its probe socket, so each process
/// starts from its own pid-derived offset and walks up until a bind works.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id().wrapping_mul(97) % 20_000);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(base + n % 20_000).expect("below 40000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A running `serve`; killed when dropped so a failing test leaves nothing.
pub struct Daemon {
    pub child: Child,
    notify: UnixDatagram,
    /// Every sd_notify message received so far.
    pub seen: Vec<String>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill");
    }

    /// Waits until a notify message containing `line` arrives; panics with the
    /// daemon's log after `timeout`.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no `{line}` from sd_notify within {timeout:?}; got {:?}\nlog:\n{}",
                    self.seen,
                    self.log_text()
                );
            }
            self.notify.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, up to `timeout`; `None` if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the daemon's socket through the library's own client.
pub fn get(socket: &Path, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt
        .block_on(commonscloud::api::client::get(socket, path))
        .expect("GET");
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// POST on the daemon's socket: the status code and the JSON answer.
pub fn post(app: &Appliance, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt
        .block_on(commonscloud::api::client::post(&app.socket(), path, &body))
        .unwrap();
    (code, serde_json::from_slice(&body).unwrap_or_default())
}

/// Polls `status --json` until `ok` holds (for at most 30 s), and returns it.
pub fn wait_status(
    app: &Appliance,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let s = app.status();
        if s["running"] == true && ok(&s) {
            return s;
        }
        assert!(Instant::now() < until, "never {what}: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the daemon runs with its directory up.
pub fn directory_ok(s: &serde_json::Value) -> bool {
    s["running"] == true && component(s, "directory")["state"] == "ok"
}

/// One component of a parsed status.
pub fn component<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {status}"))
}

/// A real SMTP server on loopback (Python's aiosmtpd), storing what it gets
/// in a maildir. Stopped on drop.
pub struct SmtpSink {
    pub port: u16,
    maildir: PathBuf,
    child: Option<Child>,
}

impl SmtpSink {
    /// A sink that will listen on `port` once started.
    pub fn new(dir: &Path) -> Self {
        SmtpSink {
            port: free_port(),
            maildir: dir.join("maildir"),
            child: None,
        }
    }

    pub fn start(&mut self) {
        // Debian's python3, which python3-aiosmtpd installs into; a python3
        // earlier in PATH (pyenv) would not have it.
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (apt install python3-aiosmtpd)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "aiosmtpd did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Raw mails received so far, quoted-printable soft breaks and `=3D`
    /// undone (enough to read links).
    pub fn mails(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) {
            for e in entries.flatten() {
                if let Ok(raw) = std::fs::read_to_string(e.path()) {
                    out.push(
                        raw.replace("=\r\n", "")
                            .replace("=\n", "")
                            .replace("=3D", "="),
                    );
                }
            }
        }
        out
    }

    /// Waits for a mail to `to` whose text contains `needle`; returns it.
    pub fn wait_for(&self, to: &str, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self
                .mails()
                .into_iter()
                .find(|m| m.contains(&format!("To: {to}")) && m.contains(needle))
            {
                return m;
            }
            assert!(
                Instant::now() < until,
                "no mail to {to} with {needle:?}; got {:#?}",
                self.mails()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The 64-hex token after `token=` in a mail.
pub fn token_in(mail: &str) -> String {
    let at = mail.find("token=").expect("a link with a token") + "token=".len();
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}

/// A TLS client that trusts only the CA certificates in `ca` (PEM), as a
/// browser would once an admin installed the appliance's CA.
pub fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Reads a body as a stream, never whole: its length and lowercase hex
/// SHA-256.
pub async fn length_and_sha256(
    mut body: hyper::body::Incoming,
) -> Result<(u64, String), hyper::Error> {
    use http_body_util::BodyExt;
    use sha2::Digest;
    let (mut len, mut h) = (0u64, sha2::Sha256::new());
    while let Some(f) = body.frame().await {
        if let Ok(d) = f?.into_data() {
            len += d.len() as u64;
            h.update(&d);
        }
    }
    Ok((len, format!("{:x}", h.finalize())))
}
