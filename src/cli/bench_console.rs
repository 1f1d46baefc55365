//! `commonscloud bench console`: the admin dashboard's latency with many
//! signed-in clients at once, through the real front door and TLS, against
//! the sign-in page (no session, no directory) measured in the same run.
//!
//! Starts `serve` and `front-door` on a temporary config (no apps, so the
//! machine's Docker is left alone), makes an admin in the directory, signs
//! every client in through `/api/v1/session`, then each client asks for
//! `/console` (or `/login`) over its own keep-alive connection.
//!
//! Then sign-in under attack: the admin signs in again and again from the
//! address they signed in from (127.0.0.1), alone, then while attackers on
//! other loopback addresses (127.0.0.2…, another machine to the front door)
//! post wrong passwords for the same account as fast as they can; both
//! rates and their ratio are printed, with what the attack got.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::bench::{Scratch, free_port};
use crate::directory::people::{self, NewPerson};
use crate::directory::slapd::Paths;
use crate::directory::tree::Tree;

const HOST_LABEL: &str = "box";
const ADMIN: &str = "benchadmin";
const PASSWORD: &str = "bench password, long enough";

#[derive(clap::Args, Clone)]
pub struct ConsoleArgs {
    /// Concurrent signed-in clients, each on its own TLS connection.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// How long each page is measured, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// How long sign-ins are measured, unattacked and then attacked, in
    /// seconds (0 skips the sign-in measurement).
    #[arg(long, default_value_t = 5)]
    pub attack_seconds: u64,
    /// Attacking connections, each posting wrong passwords in a loop.
    #[arg(long, default_value_t = 32)]
    pub attackers: usize,
    /// Loopback addresses the attackers come from (127.0.0.2 on), 1 to 250.
    #[arg(long, default_value_t = 16)]
    pub attack_addresses: u8,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sign-ins of the legitimate person, alone and under attack.
#[derive(Debug, Clone, Serialize)]
pub struct SignInBench {
    pub seconds: u64,
    /// Successful sign-ins per second from the person's known address.
    pub unattacked_per_sec: f64,
    pub attacked_per_sec: f64,
    /// attacked / unattacked.
    pub ratio: f64,
    pub attackers: usize,
    pub attack_addresses: u8,
    /// Wrong-password posts the attackers got answered.
    pub attack_requests: usize,
    /// Of those, how many reached the password check (401); the rest were
    /// refused by the limits (429).
    pub attack_checked: usize,
    pub attack_limited: usize,
    /// The person's sign-ins that did not succeed (must be 0).
    pub errors: usize,
}

/// Latencies of one page under load.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub page: &'static str,
    pub requests: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleBench {
    pub clients: usize,
    pub seconds: u64,
    /// `/login`: TLS, the front door and the console, no session.
    pub baseline: Load,
    /// `/console`: the session, the admin look-up and the dashboard.
    pub dashboard: Load,
    pub p99_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<SignInBench>,
}

pub fn run(args: ConsoleArgs) -> anyhow::Result<i32> {
    let b = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", report(&b));
    }
    Ok(0)
}

/// Runs the whole measurement (also used by `bench proxy`).
pub fn measure(args: &ConsoleArgs) -> anyhow::Result<ConsoleBench> {
    if args.clients == 0 || args.seconds == 0 {
        bail!("--clients and --seconds must be at least 1");
    }
    if args.attack_seconds > 0
        && (args.attackers == 0 || !(1..=250).contains(&args.attack_addresses))
    {
        bail!("--attackers must be at least 1 and --attack-addresses 1 to 250");
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut scratch = Scratch {
        dir: super::bench::scratch_dir("console"),
        children: Vec::new(),
    };
    let config_path = super::init::write_demo(&scratch.dir, free_port()?)?;
    let (http, https) = (free_port()?, free_port()?);
    let text: String = std::fs::read_to_string(&config_path)?
        .lines()
        .map(|l| {
            if l.starts_with("enabled = ") {
                "enabled = []\n".to_owned()
            } else if l.starts_with("http = ") {
                format!("http = \"127.0.0.1:{http}\"\n")
            } else if l.starts_with("https = ") {
                format!("https = \"127.0.0.1:{https}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config_path, text)?;
    let config = crate::config::load(&config_path)?;
    for (what, log) in [("serve", "serve.log"), ("front-door", "front-door.log")] {
        let log = std::fs::File::create(scratch.dir.join(log))?;
        let child = Command::new(&exe)
            .arg(what)
            .arg("--config")
            .arg(&config_path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            // No apps and no Docker: the console is measured, not the engine.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        scratch.children.push(child);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let dir = scratch.dir.clone();
    let r = rt.block_on(async {
        tokio::select! {
            r = bench(args, &config, https) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    r.map_err(|e| {
        let serve = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
        let door = std::fs::read_to_string(dir.join("front-door.log")).unwrap_or_default();
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        e.context(format!(
            "serve's log ends:\n{}\nthe front door's log ends:\n{}",
            tail(&serve),
            tail(&door)
        ))
    })
}

async fn bench(
    args: &ConsoleArgs,
    config: &crate::config::Config,
    https: u16,
) -> anyhow::Result<ConsoleBench> {
    let host = format!("{HOST_LABEL}.{}", config.collective.domain);
    make_admin(config).await?;
    let ca = config.paths.state_dir.join("tls/ca.crt");
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse()?;
    let until = Instant::now() + Duration::from_secs(30);
    let connector = loop {
        if ca.exists()
            && let Ok(c) = super::bench_proxy::tls_connector(&ca)
            && let Ok(mut conn) = Conn::open(&c, addr, &host).await
            && let Ok((200, _)) = conn.get("/login", None).await
        {
            break c;
        }
        if Instant::now() > until {
            bail!("the console did not answer through the front door within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every client signs in once, on its own connection.
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut conn = Conn::open(&connector, addr, &host).await?;
        let cookie = conn.sign_in().await?;
        clients.push((conn, cookie));
    }
    let run_for = Duration::from_secs(args.seconds);
    let (clients, baseline) = load(clients, "/login", false, run_for).await;
    let (_, dashboard) = load(clients, "/console", true, run_for).await;
    if dashboard.requests == 0 || dashboard.errors > 0 {
        bail!(
            "the dashboard did not answer 200 under load: {} answered, {} errors",
            dashboard.requests,
            dashboard.errors
        );
    }
    let p99_ratio = if baseline.p99_ms > 0.0 {
        dashboard.p99_ms / baseline.p99_ms
    } else {
        0.0
    };
    let sign_in = if args.attack_seconds > 0 {
        Some(sign_in_under_attack(args, &connector, addr, &host).await?)
    } else {
        None
    };
    Ok(ConsoleBench {
        clients: args.clients,
        seconds: args.seconds,
        baseline,
        dashboard,
        p99_ratio,
        sign_in,
    })
}

/// The admin's sign-ins from 127.0.0.1 (where they signed in already), for
/// `attack_seconds` alone and as long again while attackers post wrong
/// passwords for the same account from other addresses.
async fn sign_in_under_attack(
    args: &ConsoleArgs,
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    host: &str,
) -> anyhow::Result<SignInBench> {
    let run_for = Duration::from_secs(args.attack_seconds);
    // As many sign-ins in flight as the box has cores to check passwords.
    let legit = super::DAEMON_WORKERS.max(1);
    let (alone, _) = legit_sign_ins(connector, addr, host, legit, run_for).await?;
    let stop = Instant::now() + run_for;
    let mut attack = Vec::with_capacity(args.attackers);
    for i in 0..args.attackers {
        let from = std::net::IpAddr::from([
            127,
            0,
            0,
            2 + (i % usize::from(args.attack_addresses)) as u8,
        ]);
        let mut conn = Conn::open_from(connector, addr, host, Some(from)).await?;
        attack.push(tokio::spawn(async move {
            let (mut checked, mut limited, mut n) = (0usize, 0usize, 0usize);
            while Instant::now() < stop {
                match conn
                    .post_session(ADMIN, &format!("wrong guess {i}.{n}"))
                    .await
                    .map(|r| r.0)
                {
                    Ok(401) => checked += 1,
                    Ok(429) => limited += 1,
                    Ok(_) | Err(_) => {
                        // A closed connection: open another, as an attacker would.
                        if let Ok(c) =
                            Conn::open_from(&conn.connector, addr, &conn.host, Some(from)).await
                        {
                            conn = c;
                        }
                    }
                }
                n += 1;
            }
            (checked, limited)
        }));
    }
    let (attacked, errors) = legit_sign_ins(connector, addr, host, legit, run_for).await?;
    let (mut checked, mut limited) = (0, 0);
    for t in attack {
        if let Ok((c, l)) = t.await {
            checked += c;
            limited += l;
        }
    }
    if alone == 0.0 {
        bail!("the admin could not sign in at all without an attack");
    }
    Ok(SignInBench {
        seconds: args.attack_seconds,
        unattacked_per_sec: alone,
        attacked_per_sec: attacked,
        ratio: attacked / alone,
        attackers: args.attackers,
        attack_addresses: args.attack_addresses,
        attack_requests: checked + limited,
        attack_checked: checked,
        attack_limited: limited,
        errors,
    })
}

/// `workers` connections from 127.0.0.1 signing the admin in for
/// `run_for`: successful sign-ins per second, and failures.
async fn legit_sign_ins(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    host: &str,
    workers: usize,
    run_for: Duration,
) -> anyhow::Result<(f64, usize)> {
    let end = Instant::now() + run_for;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut conn = Conn::open(connector, addr, host).await?;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            while Instant::now() < end {
                match conn.post_session(ADMIN, PASSWORD).await.map(|r| r.0) {
                    Ok(200) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await?;
        ok += o;
        failed += f;
    }
    Ok((
        ok as f64 / started.elapsed().as_secs_f64().max(1e-9),
        failed,
    ))
}

/// An admin of the box's collective, straight in the directory (the
/// daemon makes the tree; this waits for it).
async fn make_admin(config: &crate::config::Config) -> anyhow::Result<()> {
    let paths = Paths::new(config);
    let tree = Tree::new(config.suffix().as_str());
    let slug = config.collective.slug.clone();
    let until = Instant::now() + Duration::from_secs(30);
    let mut root = loop {
        if let Ok(mut l) = crate::directory::ldap::connect_root(&paths).await
            && let Ok(cs) = people::collectives(&mut l, &tree).await
            && cs.iter().any(|c| c.slug == slug)
        {
            break l;
        }
        if Instant::now() > until {
            bail!("the directory did not come up with the collective within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let collective_dn = tree.collective(&slug);
    let dn = people::create_person(
        &mut root,
        &tree,
        &NewPerson {
            uid: ADMIN,
            display_name: "Bench Admin",
            mail: "bench@demo.commonscloud.test",
            language: "en",
            collective_dn: &collective_dn,
            home_node: "bench",
        },
    )
    .await?;
    for g in ["members", "admins"] {
        people::add_member(&mut root, &tree.group(&slug, g), &dn).await?;
    }
    crate::directory::ldap::set_password(&mut root, &dn, PASSWORD).await?;
    Ok(())
}

/// One client's keep-alive connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    connector: tokio_rustls::TlsConnector,
}

impl Conn {
    async fn open(
        c: &tokio_rustls::TlsConnector,
        addr: SocketAddr,
        host: &str,
    ) -> anyhow::Result<Conn> {
        Self::open_from(c, addr, host, None).await
    }

    /// A connection from a given local address (any of 127.0.0.0/8 on
    /// loopback: another client to the front door).
    async fn open_from(
        c: &tokio_rustls::TlsConnector,
        addr: SocketAddr,
        host: &str,
        from: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Conn> {
        let tcp = match from {
            None => tokio::net::TcpStream::connect(addr).await?,
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await?
            }
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
        let tls = c.connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: host.to_owned(),
            connector: c.clone(),
        })
    }

    /// `POST /api/v1/session`: the status, the session cookie if one was
    /// set, and the body.
    async fn post_session(
        &mut self,
        uid: &str,
        password: &str,
    ) -> anyhow::Result<(u16, Option<String>, Bytes)> {
        let body = serde_json::json!({"uid": uid, "password": password}).to_string();
        let req = hyper::Request::post("/api/v1/session")
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("__Host-cc_session="))
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, cookie, body))
    }

    async fn get(&mut self, path: &str, cookie: Option<&str>) -> anyhow::Result<(u16, Bytes)> {
        let mut req = hyper::Request::get(path).header("host", &self.host);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Signs in as the bench's admin; the session cookie.
    async fn sign_in(&mut self) -> anyhow::Result<String> {
        let (status, cookie, body) = self.post_session(ADMIN, PASSWORD).await?;
        match cookie {
            Some(c) if status == 200 => Ok(c),
            _ => bail!(
                "signing in failed ({status}): {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

/// Every client asks for `page` in a loop for `run_for`.
async fn load(
    clients: Vec<(Conn, String)>,
    page: &'static str,
    with_cookie: bool,
    run_for: Duration,
) -> (Vec<(Conn, String)>, Load) {
    let end = Instant::now() + run_for;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut conn, cookie)| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    match conn.get(page, with_cookie.then_some(cookie.as_str())).await {
                        Ok((200, _)) => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                ((conn, cookie), lat, errors)
            })
        })
        .collect();
    let mut back = Vec::new();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((c, lat, e)) = t.await {
            back.push(c);
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    let l = Load {
        page,
        requests: all.len(),
        per_sec: all.len() as f64 / elapsed.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    };
    (back, l)
}

pub fn report(b: &ConsoleBench) -> String {
    let line = |l: &Load| {
        format!(
            "  {:<9} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} errors)\n",
            l.page, l.per_sec, l.p50_ms, l.p99_ms, l.requests, l.errors
        )
    };
    let mut out = format!(
        "console through the front door, {} signed-in clients, {} s per page:\n{}{}  dashboard p99 / sign-in page p99: {:.2}×\n",
        b.clients,
        b.seconds,
        line(&b.baseline),
        line(&b.dashboard),
        b.p99_ratio
    );
    if let Some(s) = &b.sign_in {
        out.push_str(&format!(
            "sign-in from a known address, {} s each:\n  alone              {:>8.1} /s\n  under attack       {:>8.1} /s  ({} connections from {} other addresses: {} wrong passwords answered, {} checked, {} refused by the limits)\n  attacked / alone:  {:.2}×  ({} failed sign-ins)\n",
            s.seconds,
            s.unattacked_per_sec,
            s.attacked_per_sec,
            s.attackers,
            s.attack_addresses,
            s.attack_requests,
            s.attack_checked,
            s.attack_limited,
            s.ratio,
            s.errors
        ));
    }
    out
}
