//! A whole box for the console's tests: the supervisor, its slapd, a real
//! SMTP sink and the front door process, reached over real TLS; and a
//! client that keeps cookies like a browser does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{Appliance, BIN, Daemon, SmtpSink, component, post, token_in, wait_status};

pub const HOST: &str = "box.quimper.example.org";

/// Runs blocking test helpers (which start runtimes of their own) from
/// async tests, on a thread outside the test's runtime.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("helper thread"))
}

/// Kills the front door on drop, also when the test fails.
pub struct FrontDoor(pub std::process::Child);

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct ConsoleBox {
    pub app: Appliance,
    pub sink: SmtpSink,
    pub daemon: Daemon,
    pub door: FrontDoor,
    pub https: u16,
    pub ca: PathBuf,
}

impl ConsoleBox {
    /// Starts everything and waits until the console answers through the
    /// front door.
    pub async fn start() -> ConsoleBox {
        let app = Appliance::new();
        let mut sink = SmtpSink::new(app.dir.path());
        sink.start();
        let (https, http) = (super::free_port(), super::free_port());
        let text = std::fs::read_to_string(&app.config).unwrap();
        std::fs::write(
            &app.config,
            format!(
                "{text}\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"CommonsCloud <box@quimper.example.org>\"\n\
                 \n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n",
                sink.port
            ),
        )
        .unwrap();
        // No Docker: the console is what is tested here.
        let daemon = app.serve_with(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
        wait_status(&app, "directory ok", |s| {
            component(s, "directory")["state"] == "ok"
        });
        let log = std::fs::File::create(app.dir.path().join("front-door.log")).unwrap();
        let door = FrontDoor(
            std::process::Command::new(BIN)
                .arg("--config")
                .arg(&app.config)
                .arg("front-door")
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let ca = app.dir.path().join("state/tls/ca.crt");
        let b = ConsoleBox {
            app,
            sink,
            daemon,
            door,
            https,
            ca,
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if b.ca.exists() {
                let mut c = b.client();
                if let Ok(a) = c.try_request("GET", "/login", &[], None).await
                    && a.status == 200
                {
                    break;
                }
            }
            assert!(
                Instant::now() < until,
                "the console never answered through the front door: {}",
                std::fs::read_to_string(b.app.dir.path().join("front-door.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b
    }

    pub fn client(&self) -> Client {
        Client {
            connector: super::tls_connector(&self.ca),
            addr: format!("127.0.0.1:{}", self.https).parse().unwrap(),
            from: None,
            cookies: BTreeMap::new(),
        }
    }

    /// A client whose connections come from another loopback address
    /// (`127.0.0.2`…): to the front door, another machine.
    pub fn client_from(&self, ip: &str) -> Client {
        Client {
            from: Some(ip.parse().unwrap()),
            ..self.client()
        }
    }

    /// An active person with a password, made through the local API, with
    /// the links read from the mails the sink received.
    pub fn person(&self, uid: &str, email: &str, password: &str) {
        off_runtime(|| self.person_blocking(uid, email, password));
    }

    fn person_blocking(&self, uid: &str, email: &str, password: &str) {
        let form = serde_json::json!({"uid": uid, "display_name": format!("Person {uid}"), "email": email,
            "collective": "quimper", "language": "en", "ip": "192.0.2.50"});
        let (code, created) = post(&self.app, "/v1/registrations", form);
        assert_eq!(code, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let t = token_in(&self.sink.wait_for(email, "/verify?token="));
        let (code, v) = post(
            &self.app,
            "/v1/registrations/verify",
            serde_json::json!({"token": t}),
        );
        assert_eq!(code, 200, "{v}");
        let (code, v) = post(
            &self.app,
            &format!("/v1/registrations/{id}/approve"),
            serde_json::json!({"by": "test"}),
        );
        assert_eq!(code, 200, "{v}");
        let t = token_in(&self.sink.wait_for(email, "/set-password?token="));
        let (code, v) = post(
            &self.app,
            "/v1/password",
            serde_json::json!({"token": t, "password": password}),
        );
        assert_eq!(code, 200, "{v}");
    }

    /// The same, then an admin of the box's collective.
    pub fn admin(&self, uid: &str, email: &str, password: &str) {
        self.person(uid, email, password);
        let (code, v) = off_runtime(|| {
            post(
                &self.app,
                &format!("/v1/people/{uid}/groups"),
                serde_json::json!({"collective": "quimper", "group": "admins", "add": true, "by": "test"}),
            )
        });
        assert_eq!(code, 200, "{v}");
    }

    /// Audit actions, oldest first, from the state database.
    pub fn audited(&self, action: &str) -> Vec<String> {
        let db = rusqlite::Connection::open(self.app.dir.path().join("state/state.db")).unwrap();
        let mut st = db
            .prepare("SELECT actor || ' ' || detail FROM audit WHERE action = ?1 ORDER BY id")
            .unwrap();
        st.query_map([action], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// A response, its body read whole (console pages are small).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The CSRF token the page's forms carry.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + r#"name="csrf" value=""#.len();
        self.body[at..].chars().take_while(|c| *c != '"').collect()
    }
}

/// An HTTPS client for `box.` that keeps cookies, one connection per
/// request.
pub struct Client {
    connector: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    /// The local address connections come from (any loopback one).
    from: Option<std::net::IpAddr>,
    pub cookies: BTreeMap<String, String>,
}

impl Client {
    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let tcp = match self.from {
            None => tokio::net::TcpStream::connect(self.addr).await,
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
                sock.bind(SocketAddr::new(ip, 0))
                    .map_err(|e| e.to_string())?;
                sock.connect(self.addr).await
            }
        }
        .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST);
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", c.join("; "));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                b
            }
            None => Vec::new(),
        };
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let a = Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for c in a.set_cookies() {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok(a)
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        self.try_request(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.request("GET", path, &[], None).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            "POST",
            path,
            &[],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        v: serde_json::Value,
        csrf: Option<&str>,
    ) -> Answer {
        let h: Vec<(&str, &str)> = csrf.map(|t| ("x-csrf-token", t)).into_iter().collect();
        self.request(
            "POST",
            path,
            &h,
            Some(("application/json", v.to_string().into_bytes())),
        )
        .await
    }

    /// Signs in through the form; returns the answer to the POST.
    pub async fn sign_in(&mut self, uid: &str, password: &str) -> Answer {
        let page = self.get("/login").await;
        let csrf = page.csrf();
        self.post_form(
            "/login",
            &[
                ("csrf", &csrf),
                ("uid", uid),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }

    pub fn session(&self) -> Option<String> {
        self.cookies.get("__Host-cc_session").cloned()
    }
}
