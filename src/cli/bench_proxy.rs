//! `commonscloud bench proxy`: the front door against Debian's nginx set up
//! as an equivalent TLS reverse proxy, on this machine, in the same run.
//!
//! Three processes of our own, all on 127.0.0.1: a small upstream (this
//! binary's hidden `bench proxy-upstream`, a child so that its CPU is not
//! the load generator's), the real `commonscloud front-door` on a scratch
//! config whose routes and local-CA leaf are made by `frontdoor::publisher::publish`,
//! exactly as the supervisor makes them, and nginx with a generated config
//! and the same leaf. The load generator runs here: rustls (aws-lc-rs)
//! trusting the scratch CA, hyper HTTP/1.1 with keep-alive.
//!
//! Equivalence, setting by setting (nginx's side is `nginx_conf`):
//! - workers: the front door's runtime has `cli::DAEMON_WORKERS` threads;
//!   nginx gets as many worker processes;
//! - TLS 1.2 and 1.3, ALPN http/1.1, the same certificate and key;
//! - HTTP/1.1 to the upstream on a new connection per request: the front
//!   door does not pool upstream connections yet, so nginx has no upstream
//!   `keepalive` (it sends `Connection: close`);
//! - bodies streamed both ways (`proxy_request_buffering off`,
//!   `proxy_buffering off`), no body size limit, request bodies read in up
//!   to 64 KiB as the front door's hyper reads them (`MAX_HEAD_BYTES` is
//!   its read buffer's limit; nginx's default 16 KiB would cost it about
//!   40% of its upload rate here);
//! - the same forwarding headers (`X-Forwarded-For/-Proto/-Host`,
//!   `X-Real-IP`; a client's `Forwarded` dropped), the Host passed on, HSTS
//!   added;
//! - no access log (the front door logs no request);
//! - client keep-alive without a request cap (nginx closes a connection
//!   after 1,000 requests by default; the front door never does).
//!
//! `--nginx-upstream-keepalive` breaks the equivalence on purpose, and the
//! output says so: nginx then keeps its upstream connections, which shows
//! what pooling would buy the front door.
//!
//! Order: the small-request load runs in six alternating rounds (front
//! door, nginx, nginx, front door, front door, nginx), the streamed uploads
//! in four, so that drift in the machine's speed weighs on both alike. The
//! CPU time each proxy's processes used per request and per MiB is read
//! from /proc: on a busy machine it varies less than the rates do. Every figure is a
//! figure: a missed target is printed, never an exit code. A proxy that does
//! not answer correctly is an error.

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

/// Front door requests per second (and MiB/s) over nginx's, at least.
const THROUGHPUT_TARGET: f64 = 0.8;
/// Front door p99 latency over nginx's, at most.
const P99_TARGET: f64 = 1.25;
/// Front door peak RSS under load over nginx's (master and workers), at most.
const RSS_TARGET: f64 = 1.0;

/// What the upstream answers a GET with.
const SMALL_BODY: &[u8] = b"small response\n";
/// The streamed body goes in chunks of this size.
const CHUNK: usize = 64 * 1024;
/// Requests each connection sends before the clock starts.
const WARM_UP: usize = 20;
/// How long a proxy (or the upstream) may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// One small request, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the RSS of a proxy under load is read.
const RSS_EVERY: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Seconds of small GETs through each proxy, in three rounds each.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent client connections (keep-alive, one request in flight each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Size of the streamed POST body in MiB (sent twice through each proxy).
    #[arg(long, default_value_t = 1024)]
    body_mib: u64,
    /// The nginx binary (default: `nginx` in PATH, then /usr/sbin/nginx).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Let nginx keep idle upstream connections (one per client connection)
    /// instead of opening one per request as the front door does: not an
    /// equivalent baseline, but it shows what pooling would buy.
    #[arg(long)]
    nginx_upstream_keepalive: bool,
    /// Then the console dashboard's latency with this many signed-in
    /// clients through the front door (`bench console`); 0 skips it.
    #[arg(long, default_value_t = 200)]
    console_clients: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ProxyFigures {
    /// What ran: the program, its version or build, its processes.
    name: String,
    /// Processes measured for RSS (nginx: master and workers).
    processes: usize,
    /// The TLS version and cipher suite the load generator negotiated.
    tls: String,
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    /// Requests per second in each round, in the order measured.
    rounds_per_sec: Vec<f64>,
    p50_us: u64,
    p99_us: u64,
    /// CPU time (user and system, every process of the proxy) per small
    /// request: what the proxy costs, whatever else the machine runs.
    cpu_us_per_request: f64,
    stream_bytes: u64,
    stream_mib_per_sec: f64,
    /// CPU time per MiB streamed.
    cpu_ms_per_mib: f64,
    rss_idle_bytes: u64,
    rss_peak_bytes: u64,
    /// Proportional set size: shared pages divided among the processes that
    /// share them (summed RSS counts nginx's shared text once per process).
    pss_peak_bytes: u64,
}

/// A target for a ratio (front door over nginx); JSON `{"at_least": 0.8}`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtLeast(t) => ratio >= t,
            Goal::AtMost(t) => ratio <= t,
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    metric: &'static str,
    unit: &'static str,
    front_door: f64,
    nginx: f64,
    /// front_door / nginx.
    ratio: f64,
    target: Option<Goal>,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ProxyBench {
    seconds: u64,
    concurrency: usize,
    body_bytes: u64,
    /// Of this binary (and so of the front door measured).
    release_build: bool,
    workers: usize,
    upstream_connections: String,
    front_door: ProxyFigures,
    nginx: ProxyFigures,
    rows: Vec<Row>,
    targets_met: bool,
    /// The console dashboard under load (`--console-clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    console: Option<super::bench_console::ConsoleBench>,
}

/// The bench's children and temp dir: stopped and removed even on error or
/// panic. nginx runs in a process group of its own, so its workers go too.
struct Scratch {
    dir: PathBuf,
    children: Vec<(Child, bool)>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        for (c, group) in &mut self.children {
            let Ok(raw) = i32::try_from(c.id()) else {
                continue;
            };
            let pid = Pid::from_raw(raw);
            if *group {
                // nginx's fast shutdown: the master stops its workers.
                let _ = kill(pid, Signal::SIGTERM);
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops a child when this process dies, however it dies (the thread that
/// spawned it must live as long: here, the main thread). SIGTERM, not
/// SIGKILL: nginx's master then stops its workers, which a killed master
/// would leave behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
}

pub fn run(args: ProxyArgs) -> anyhow::Result<i32> {
    if args.seconds == 0 || args.concurrency == 0 || args.body_mib == 0 {
        bail!("--seconds, --concurrency and --body-mib must be at least 1");
    }
    let nginx = find_nginx(args.nginx.as_deref())?;
    let mut scratch = Scratch {
        dir: super::bench::scratch_dir("proxy"),
        children: Vec::new(),
    };
    std::fs::create_dir(&scratch.dir)
        .with_context(|| format!("creating {}", scratch.dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let keepalive = args.nginx_upstream_keepalive.then_some(args.concurrency);
    let setup = start_all(&mut scratch, &nginx, keepalive, &rt)?;
    // Ctrl-C or SIGTERM end the bench through the same clean-up as an error.
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = bench(&args, &setup) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    drop(rt);
    drop(scratch);
    let mut b = result?;
    if args.console_clients > 0 {
        b.console = Some(super::bench_console::measure(
            &super::bench_console::ConsoleArgs {
                clients: args.console_clients,
                seconds: args.seconds.min(5),
                // Sign-in under attack is `bench console`'s own.
                attack_seconds: 0,
                attackers: 1,
                attack_addresses: 1,
                json: false,
            },
        )?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", report(&b));
        if let Some(c) = &b.console {
            print!("\n{}", super::bench_console::report(c));
        }
    }
    Ok(0)
}

fn find_nginx(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    in_path.context(
        "nginx not found in PATH or /usr/sbin: the baseline is Debian's nginx \
         (apt-get install nginx), or pass --nginx",
    )
}

/// A proxy under test, once it serves.
struct Target {
    name: String,
    addr: SocketAddr,
    host: String,
    connector: tokio_rustls::TlsConnector,
    /// The TLS version and cipher suite the load generator negotiated.
    tls: String,
    /// Every process of the proxy, for RSS.
    pids: Vec<u32>,
    rss_idle: u64,
}

struct Setup {
    front_door: Target,
    nginx: Target,
}

/// Starts the upstream, the front door and nginx, and waits until each
/// serves. Children are spawned from this (the main) thread: see
/// `die_with_parent`.
fn start_all(
    scratch: &mut Scratch,
    nginx: &Path,
    upstream_keepalive: Option<usize>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Setup> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let dir = scratch.dir.clone();

    // The upstream tells its port on its first line.
    let mut cmd = Command::new(&exe);
    cmd.args(["bench", "proxy-upstream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("upstream.log"))?);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("starting the upstream")?;
    let out = child.stdout.take();
    scratch.children.push((child, false));
    let mut line = String::new();
    if let Some(out) = out {
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .context("reading the upstream's port")?;
    }
    let up_port: u16 = line.trim().parse().with_context(|| {
        format!(
            "the upstream did not say its port ({line:?}): {}",
            std::fs::read_to_string(dir.join("upstream.log")).unwrap_or_default()
        )
    })?;

    // The front door, on a config of its own; its files made the
    // supervisor's way.
    let free = super::bench::free_port;
    let (https, http, nginx_port) = (free()?, free()?, free()?);
    let d = dir.display();
    let text = format!(
        "[collective]\nname = \"Bench\"\nslug = \"bench\"\ndomain = \"bench.example.org\"\nadmin_email = \"admin@bench.example.org\"\n\
         [hardware]\nprofile = \"rpi5-8gb\"\n\
         [apps]\nenabled = [\"nextcloud\"]\nforce = true\nport_base = {up_port}\n\
         [front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n\
         [paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\nsecrets_dir = \"{d}/secrets\"\n"
    );
    let config_path = dir.join("appliance.toml");
    std::fs::write(&config_path, &text)?;
    let config = crate::config::parse(&text, &config_path)?;
    crate::frontdoor::publisher::publish(&config, "bench", time::OffsetDateTime::now_utc())
        .context("writing the front door's routes and certificates")?;
    let host = crate::apps::hostname(&config, crate::model::AppName::Nextcloud);
    let files = crate::frontdoor::Paths::new(&config).tls;
    let connector = tls_connector(&files.ca_cert)?;

    let mut cmd = Command::new(&exe);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("front-door")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("front-door.log"))?);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().context("starting the front door")?;
    let fd_pid = child.id();
    scratch.children.push((child, false));
    let fd_addr = SocketAddr::from(([127, 0, 0, 1], https));
    let fd_tls = rt.block_on(wait_serving(
        fd_addr,
        &host,
        &connector,
        fd_pid,
        &dir.join("front-door.log"),
    ))?;
    let front_door = Target {
        name: format!(
            "commonscloud front-door {} ({} build), {} runtime workers",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            super::DAEMON_WORKERS
        ),
        addr: fd_addr,
        host: host.clone(),
        connector: connector.clone(),
        tls: fd_tls,
        pids: vec![fd_pid],
        rss_idle: super::bench::rss_bytes(fd_pid)?,
    };

    // nginx, same certificate, same upstream.
    std::fs::create_dir(dir.join("nginx"))?;
    let conf = dir.join("nginx/nginx.conf");
    let root = nix::unistd::geteuid().is_root();
    std::fs::write(
        &conf,
        nginx_conf(&NginxConf {
            dir: &dir.join("nginx"),
            port: nginx_port,
            upstream: up_port,
            upstream_keepalive,
            host: &host,
            // One file holds both (nginx reads the key out of it).
            cert: &files.pair,
            key: &files.pair,
            workers: super::DAEMON_WORKERS,
            user: root.then(|| {
                // Debian's group for nobody is nogroup; elsewhere nobody.
                let nogroup = nix::unistd::Group::from_name("nogroup").ok().flatten();
                (
                    "nobody",
                    if nogroup.is_some() {
                        "nogroup"
                    } else {
                        "nobody"
                    },
                )
            }),
        }),
    )?;
    let version = Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .with_context(|| format!("running {} -v", nginx.display()))?;
    let error_log = dir.join("nginx/error.log");
    let mut cmd = Command::new(nginx);
    cmd.arg("-e")
        .arg(&error_log)
        .arg("-p")
        .arg(dir.join("nginx"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx/stderr.log"))?)
        .process_group(0);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", nginx.display()))?;
    let master = child.id();
    scratch.children.push((child, true));
    let ng_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let ng_tls = rt.block_on(wait_serving(ng_addr, &host, &connector, master, &error_log))?;
    let mut pids = vec![master];
    pids.extend(children_of(master));
    if pids.len() < 2 {
        bail!("nginx (pid {master}) serves but has no worker process");
    }
    let rss_idle = pids
        .iter()
        .map(|p| super::bench::rss_bytes(*p))
        .sum::<anyhow::Result<u64>>()?;
    let nginx = Target {
        name: format!(
            "{} ({}), master and {} worker processes",
            version.trim_start_matches("nginx version: "),
            nginx.display(),
            pids.len() - 1
        ),
        addr: ng_addr,
        host,
        connector,
        tls: ng_tls,
        pids,
        rss_idle,
    };
    Ok(Setup { front_door, nginx })
}

/// The child processes of `pid` (nginx's workers), from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid …`; comm may hold spaces.
                    let rest = s.get(s.rfind(')')? + 1..)?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

struct NginxConf<'a> {
    dir: &'a Path,
    port: u16,
    upstream: u16,
    /// Idle upstream connections kept per worker; none when `None`, as the
    /// front door keeps none.
    upstream_keepalive: Option<usize>,
    host: &'a str,
    cert: &'a Path,
    key: &'a Path,
    workers: usize,
    /// Workers' user and group when started as root.
    user: Option<(&'a str, &'a str)>,
}

/// nginx as the front door is: see the module's comment for each setting.
fn nginx_conf(c: &NginxConf) -> String {
    let d = c.dir.display();
    let user = c
        .user
        .map(|(u, g)| format!("user {u} {g};\n"))
        .unwrap_or_default();
    // Without keepalive nginx sends `Connection: close` and opens a
    // connection per request; with it, the header must be cleared.
    let (pool, pass, connection) = match c.upstream_keepalive {
        Some(n) => (
            format!(
                "  upstream up {{ server 127.0.0.1:{}; keepalive {n}; }}\n",
                c.upstream
            ),
            "http://up".to_owned(),
            "      proxy_set_header Connection \"\";\n",
        ),
        None => (
            String::new(),
            format!("http://127.0.0.1:{}", c.upstream),
            "",
        ),
    };
    format!(
        "{user}worker_processes {workers};\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/client_body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 keepalive_requests 1000000000;\n\
         \x20 keepalive_timeout 75s;\n\
         {pool}\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port} ssl;\n\
         \x20   server_name {host};\n\
         \x20   ssl_certificate {cert};\n\
         \x20   ssl_certificate_key {key};\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20   client_max_body_size 0;\n\
         \x20   client_body_buffer_size 64k;\n\
         \x20   add_header Strict-Transport-Security \"max-age=31536000\" always;\n\
         \x20   location / {{\n\
         \x20     proxy_pass {pass};\n\
         {connection}\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_connect_timeout 10s;\n\
         \x20     proxy_request_buffering off;\n\
         \x20     proxy_buffering off;\n\
         \x20     proxy_set_header Host $http_host;\n\
         \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
         \x20     proxy_set_header X-Real-IP $remote_addr;\n\
         \x20     proxy_set_header X-Forwarded-Proto https;\n\
         \x20     proxy_set_header X-Forwarded-Host $http_host;\n\
         \x20     proxy_set_header Forwarded \"\";\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        workers = c.workers,
        port = c.port,
        host = c.host,
        cert = c.cert.display(),
        key = c.key.display(),
    )
}

/// A TLS client that trusts the scratch CA only (HTTP/1.1).
pub(super) fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("{}: not a PEM certificate", ca.display()))?)
            .with_context(|| format!("{}: not a CA certificate", ca.display()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(
    addr: SocketAddr,
    host: &str,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a server name"))?;
    connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} as {host}"))
}

/// Waits until `addr` completes a TLS handshake and answers a GET with the
/// upstream's body; returns the TLS version and cipher suite. Gives up at
/// once when the process `pid` has exited, showing its `log`.
async fn wait_serving(
    addr: SocketAddr,
    host: &str,
    connector: &tokio_rustls::TlsConnector,
    pid: u32,
    log: &Path,
) -> anyhow::Result<String> {
    let until = Instant::now() + START_TIMEOUT;
    let log_text = || {
        format!(
            "{}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    };
    loop {
        let last = match tls_connect(addr, host, connector).await {
            Ok(tls) => {
                let (_, c) = tls.get_ref();
                let what = format!(
                    "{} {}",
                    c.protocol_version()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default(),
                    c.negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default()
                );
                match handshake::<Empty<Bytes>>(tls).await {
                    Ok(mut s) => match small_get(&mut s, host).await {
                        Ok(()) => return Ok(what),
                        Err(e) => e,
                    },
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if exited(pid) {
            bail!(
                "process {pid} exited instead of serving {addr}\n{}",
                log_text()
            );
        }
        if Instant::now() >= until {
            bail!(
                "{addr} did not serve within {START_TIMEOUT:?}: {last:#}\n{}",
                log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a child has exited (it is a zombie until the bench reaps it).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.get(s.rfind(')')? + 1..)?
                .split_whitespace()
                .next()
                .map(|state| state == "Z" || state == "X")
        })
        .unwrap_or(true)
}

async fn handshake<B>(tls: Tls) -> anyhow::Result<hyper::client::conn::http1::SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One small GET on an open connection; its answer must be the upstream's.
async fn small_get(
    s: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> anyhow::Result<()> {
    let exchange = async {
        s.ready().await.context("the connection closed")?;
        let req = Request::get("/small")
            .header(hyper::header::HOST, host)
            .body(Empty::new())?;
        let resp = s.send_request(req).await.context("sending a GET")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        if status != StatusCode::OK || body.as_ref() != SMALL_BODY {
            bail!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .context("a GET timed out")?
}

/// The order of the rounds of small GETs (0 the front door, 1 nginx), so
/// that drift in the machine's speed weighs on both alike.
const GET_ROUNDS: [usize; 6] = [0, 1, 1, 0, 0, 1];
/// The order of the streamed POSTs.
const STREAM_ROUNDS: [usize; 4] = [0, 1, 1, 0];

/// What rounds of small GETs through one proxy gave.
#[derive(Default)]
struct Load {
    latencies_us: Vec<u32>,
    errors: u64,
    last_error: Option<String>,
    seconds: f64,
    /// Per round, in the order measured.
    rounds_per_sec: Vec<f64>,
    /// CPU time the proxy's processes used meanwhile.
    cpu_seconds: f64,
    rss_peak: u64,
    pss_peak: u64,
}

async fn bench(args: &ProxyArgs, setup: &Setup) -> anyhow::Result<ProxyBench> {
    let [fd, ng] = [&setup.front_door, &setup.nginx];
    let per_proxy = GET_ROUNDS.len() / 2;
    let round = Duration::from_secs_f64(args.seconds as f64 / per_proxy as f64);
    let mut loads = [Load::default(), Load::default()];
    eprintln!(
        "small GETs: {} connections, {} alternating rounds of {:.1} s…",
        args.concurrency,
        GET_ROUNDS.len(),
        round.as_secs_f64()
    );
    for (i, which) in GET_ROUNDS.into_iter().enumerate() {
        let t = [fd, ng][which];
        let l = load_round(t, args.concurrency, round)
            .await
            .with_context(|| format!("round {} through {}", i + 1, t.name))?;
        let acc = &mut loads[which];
        acc.rounds_per_sec
            .push(l.latencies_us.len() as f64 / l.seconds.max(f64::MIN_POSITIVE));
        acc.latencies_us.extend(l.latencies_us);
        acc.errors += l.errors;
        acc.last_error = l.last_error.or(acc.last_error.take());
        acc.seconds += l.seconds;
        acc.cpu_seconds += l.cpu_seconds;
        acc.rss_peak = acc.rss_peak.max(l.rss_peak);
        acc.pss_peak = acc.pss_peak.max(l.pss_peak);
    }
    for (l, t) in loads.iter().zip([fd, ng]) {
        if l.latencies_us.is_empty() {
            bail!(
                "no request through {} succeeded: {}",
                t.name,
                l.last_error.as_deref().unwrap_or("no error seen")
            );
        }
    }

    let body_bytes = args.body_mib * 1024 * 1024;
    eprintln!(
        "streamed POST: {} MiB, {} alternating uploads…",
        args.body_mib,
        STREAM_ROUNDS.len()
    );
    let mut streams = [Stream::default(), Stream::default()];
    for which in STREAM_ROUNDS {
        let t = [fd, ng][which];
        let sampler = Sampler::start(t.pids.clone());
        let cpu = cpu_seconds(&t.pids);
        let r = stream_once(t, body_bytes).await;
        let cpu = cpu_seconds(&t.pids) - cpu;
        let (rss, pss) = sampler.stop();
        let secs = r.with_context(|| format!("streaming through {}", t.name))?;
        streams[which].bytes += body_bytes;
        streams[which].seconds += secs;
        streams[which].cpu_seconds += cpu;
        loads[which].rss_peak = loads[which].rss_peak.max(rss);
        loads[which].pss_peak = loads[which].pss_peak.max(pss);
    }

    let figures = |t: &Target, l: &mut Load, s: &Stream| {
        l.latencies_us.sort_unstable();
        let pct = |p: usize| {
            let v = &l.latencies_us;
            v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
                .copied()
                .map_or(0, u64::from)
        };
        let requests = l.latencies_us.len() as u64;
        let mib = s.bytes as f64 / 1_048_576.0;
        ProxyFigures {
            name: t.name.clone(),
            processes: t.pids.len(),
            tls: t.tls.clone(),
            requests,
            errors: l.errors,
            requests_per_sec: requests as f64 / l.seconds.max(f64::MIN_POSITIVE),
            rounds_per_sec: l.rounds_per_sec.clone(),
            p50_us: pct(50),
            p99_us: pct(99),
            cpu_us_per_request: l.cpu_seconds * 1e6 / requests.max(1) as f64,
            stream_bytes: s.bytes,
            stream_mib_per_sec: mib / s.seconds.max(f64::MIN_POSITIVE),
            cpu_ms_per_mib: s.cpu_seconds * 1e3 / mib.max(f64::MIN_POSITIVE),
            rss_idle_bytes: t.rss_idle,
            rss_peak_bytes: l.rss_peak,
            pss_peak_bytes: l.pss_peak,
        }
    };
    let [l_fd, l_ng] = &mut loads;
    let f = figures(fd, l_fd, &streams[0]);
    let n = figures(ng, l_ng, &streams[1]);
    let rows = rows(&f, &n);
    Ok(ProxyBench {
        seconds: args.seconds,
        concurrency: args.concurrency,
        body_bytes,
        release_build: !cfg!(debug_assertions),
        workers: super::DAEMON_WORKERS,
        upstream_connections: match args.nginx_upstream_keepalive {
            false => "one new connection per request for both (the front door does not pool \
                      upstream connections yet; nginx has no upstream keepalive)"
                .to_owned(),
            true => format!(
                "NOT EQUIVALENT (--nginx-upstream-keepalive): nginx keeps up to {} idle upstream \
                 connections per worker; the front door opens one per request",
                args.concurrency
            ),
        },
        targets_met: rows.iter().all(|r| r.met != Some(false)),
        front_door: f,
        nginx: n,
        rows,
        console: None,
    })
}

fn rows(f: &ProxyFigures, n: &ProxyFigures) -> Vec<Row> {
    let row = |metric, unit, a: f64, b: f64, target: Option<Goal>| {
        let ratio = if b > 0.0 { a / b } else { 0.0 };
        Row {
            metric,
            unit,
            front_door: a,
            nginx: b,
            ratio,
            target,
            met: target.map(|g| g.met(ratio)),
        }
    };
    vec![
        row(
            "small GETs",
            "req/s",
            f.requests_per_sec,
            n.requests_per_sec,
            Some(Goal::AtLeast(THROUGHPUT_TARGET)),
        ),
        row(
            "latency p50",
            "ms",
            f.p50_us as f64 / 1000.0,
            n.p50_us as f64 / 1000.0,
            None,
        ),
        row(
            "latency p99",
            "ms",
            f.p99_us as f64 / 1000.0,
            n.p99_us as f64 / 1000.0,
            Some(Goal::AtMost(P99_TARGET)),
        ),
        row(
            "CPU per request",
            "µs",
            f.cpu_us_per_request,
            n.cpu_us_per_request,
            None,
        ),
        row(
            "streamed POST",
            "MiB/s",
            f.stream_mib_per_sec,
            n.stream_mib_per_sec,
            Some(Goal::AtLeast(THROUGHPUT_TARGET)),
        ),
        row(
            "CPU per MiB streamed",
            "ms",
            f.cpu_ms_per_mib,
            n.cpu_ms_per_mib,
            None,
        ),
        row(
            "peak RSS under load",
            "MiB",
            f.rss_peak_bytes as f64 / 1_048_576.0,
            n.rss_peak_bytes as f64 / 1_048_576.0,
            Some(Goal::AtMost(RSS_TARGET)),
        ),
        row(
            "peak PSS under load",
            "MiB",
            f.pss_peak_bytes as f64 / 1_048_576.0,
            n.pss_peak_bytes as f64 / 1_048_576.0,
            None,
        ),
        row(
            "idle RSS",
            "MiB",
            f.rss_idle_bytes as f64 / 1_048_576.0,
            n.rss_idle_bytes as f64 / 1_048_576.0,
            None,
        ),
    ]
}

/// `concurrency` connections, each sending small GETs one after another
/// for `run_for`, all starting together once every connection is open and
/// warmed up (handshakes are not timed).
async fn load_round(t: &Target, concurrency: usize, run_for: Duration) -> anyhow::Result<Load> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (addr, host, connector) = (t.addr, t.host.clone(), t.connector.clone());
        opening.spawn(async move {
            let mut s =
                handshake::<Empty<Bytes>>(tls_connect(addr, &host, &connector).await?).await?;
            for _ in 0..WARM_UP {
                small_get(&mut s, &host).await?;
            }
            Ok::<_, anyhow::Error>(s)
        });
    }
    let mut senders = Vec::with_capacity(concurrency);
    while let Some(r) = opening.join_next().await {
        senders.push(r.context("a connection task panicked")??);
    }
    let sampler = Sampler::start(t.pids.clone());
    let cpu = cpu_seconds(&t.pids);
    let start = Instant::now();
    let until = start + run_for;
    let mut workers = tokio::task::JoinSet::new();
    for mut s in senders {
        let (addr, host, connector) = (t.addr, t.host.clone(), t.connector.clone());
        workers.spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let (mut errors, mut last_error) = (0u64, None);
            while Instant::now() < until {
                let t0 = Instant::now();
                match small_get(&mut s, &host).await {
                    Ok(()) => lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        // A closed connection is opened again (not timed).
                        if let Ok(tls) = tls_connect(addr, &host, &connector).await
                            && let Ok(new) = handshake(tls).await
                        {
                            s = new;
                        }
                    }
                }
            }
            (lat, errors, last_error)
        });
    }
    let mut load = Load::default();
    while let Some(r) = workers.join_next().await {
        let (lat, errors, last_error) = r.context("a load task panicked")?;
        load.latencies_us.extend(lat);
        load.errors += errors;
        if last_error.is_some() {
            load.last_error = last_error;
        }
    }
    load.seconds = start.elapsed().as_secs_f64();
    load.cpu_seconds = cpu_seconds(&t.pids) - cpu;
    (load.rss_peak, load.pss_peak) = sampler.stop();
    Ok(load)
}

/// What the streamed POSTs through one proxy gave.
#[derive(Default)]
struct Stream {
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// The CPU time (user and system) some processes have used so far.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // After `pid (comm)`: state is field 3, utime 14, stime 15.
            let mut f = s.get(s.rfind(')')? + 1..)?.split_whitespace().skip(11);
            let user: u64 = f.next()?.parse().ok()?;
            let system: u64 = f.next()?.parse().ok()?;
            Some(user + system)
        })
        .sum();
    ticks as f64 / tick
}

/// A body of `left` bytes made as it is sent, never held whole.
struct Generated {
    left: u64,
    chunk: Bytes,
}

impl hyper::body::Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(this.left).map_or(this.chunk.len(), |l| l.min(this.chunk.len()));
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Streams `bytes` as one POST on a new connection; the upstream answers
/// how many it read, which must be all. Returns the seconds it took, from
/// the request's start to the answer's end.
async fn stream_once(t: &Target, bytes: u64) -> anyhow::Result<f64> {
    let mut s = handshake::<Generated>(tls_connect(t.addr, &t.host, &t.connector).await?).await?;
    s.ready().await.context("the connection closed")?;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let req = Request::post("/upload")
        .header(hyper::header::HOST, &t.host)
        .header(hyper::header::CONTENT_LENGTH, bytes)
        .body(Generated { left: bytes, chunk })?;
    // Generous: 1 MiB/s at the least.
    let limit = Duration::from_secs(60 + bytes / (1024 * 1024));
    let start = Instant::now();
    let exchange = async {
        let resp = s.send_request(req).await.context("sending the POST")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        if status != StatusCode::OK || text.trim().parse::<u64>().ok() != Some(bytes) {
            bail!("answered {status}: {text:.200} (sent {bytes} bytes)");
        }
        Ok(())
    };
    tokio::time::timeout(limit, exchange)
        .await
        .with_context(|| format!("the POST took over {limit:?}"))??;
    Ok(start.elapsed().as_secs_f64())
}

/// Reads the summed RSS and PSS of some processes every `RSS_EVERY` on a
/// thread of its own, keeping the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut pss) = (0u64, 0u64);
            loop {
                let (r, p) = pids.iter().fold((0, 0), |(r, p), pid| {
                    (
                        r + super::bench::rss_bytes(*pid).unwrap_or(0),
                        p + pss_bytes(*pid).unwrap_or(0),
                    )
                });
                rss = rss.max(r);
                pss = pss.max(p);
                if flag.load(Ordering::Relaxed) {
                    return (rss, pss);
                }
                std::thread::sleep(RSS_EVERY);
            }
        });
        Sampler { stop, handle }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn report(b: &ProxyBench) -> String {
    let mut out = format!(
        "proxy: TLS reverse proxy to a local upstream, {} connections, {} s of small GETs and \
         2 × {} MiB streamed POSTs through each, in alternating rounds\n",
        b.concurrency,
        b.seconds,
        b.body_bytes / (1024 * 1024)
    );
    out.push_str(&format!(
        "  front door: {}, {}\n",
        b.front_door.name, b.front_door.tls
    ));
    out.push_str(&format!(
        "  nginx:      {}, {}\n",
        b.nginx.name, b.nginx.tls
    ));
    out.push_str(&format!("  upstream:   {}\n", b.upstream_connections));
    if !b.release_build {
        out.push_str("  (a debug build: these figures say nothing of the release)\n");
    }
    out.push_str(&format!(
        "\n  {:<27} {:>12} {:>12} {:>7}   {:<8} {}\n",
        "metric", "front door", "nginx", "ratio", "target", ""
    ));
    for r in &b.rows {
        let target = match r.target {
            Some(Goal::AtLeast(t)) => format!("≥ {t:.2}"),
            Some(Goal::AtMost(t)) => format!("≤ {t:.2}"),
            None => String::new(),
        };
        let verdict = match r.met {
            None => "",
            Some(true) => "met",
            Some(false) => "MISSED",
        };
        let prec = if r.unit == "ms" { 2 } else { 1 };
        out.push_str(&format!(
            "  {:<27} {:>12} {:>12} {:>6.2}×   {:<8} {}\n",
            format!("{} ({})", r.metric, r.unit),
            format!("{:.*}", prec, r.front_door),
            format!("{:.*}", prec, r.nginx),
            r.ratio,
            target,
            verdict
        ));
    }
    out.push_str(&format!(
        "  {:<27} {:>12} {:>12}\n",
        "requests (errors)",
        format!("{} ({})", b.front_door.requests, b.front_door.errors),
        format!("{} ({})", b.nginx.requests, b.nginx.errors)
    ));
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format!(
        "  req/s by round: front door {}; nginx {}\n",
        runs(&b.front_door.rounds_per_sec),
        runs(&b.nginx.rounds_per_sec)
    ));
    out.push_str(&format!(
        "  targets: {}\n",
        if b.targets_met {
            "all met"
        } else {
            "some MISSED (figures, not a failure)"
        }
    ));
    out
}

/// `commonscloud bench proxy-upstream`: the bench's upstream. Binds a free
/// loopback port and prints it, answers GETs with `SMALL_BODY` and POSTs
/// with the number of body bytes read (as a stream); exits when its stdin
/// closes, i.e. when the bench ends, however it ends.
pub fn upstream() -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    println!("{}", listener.local_addr()?.port());
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    rt.block_on(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.method() == hyper::Method::GET {
        return Ok(Response::new(Full::new(Bytes::from_static(SMALL_BODY))));
    }
    let mut body = req.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(Response::new(Full::new(Bytes::from(format!("{n}\n")))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[test]
    fn nginx_is_set_up_like_the_front_door() {
        let c = nginx_conf(&NginxConf {
            dir: Path::new("/tmp/x/nginx"),
            port: 8443,
            upstream: 18080,
            upstream_keepalive: None,
            host: "cloud.bench.example.org",
            cert: Path::new("/tmp/x/state/tls/leaf.crt"),
            key: Path::new("/tmp/x/secrets/leaf.key"),
            workers: 2,
            user: None,
        });
        for line in [
            "worker_processes 2;",
            "daemon off;",
            "access_log off;",
            "listen 127.0.0.1:8443 ssl;",
            "proxy_pass http://127.0.0.1:18080;",
            "proxy_http_version 1.1;",
            "proxy_request_buffering off;",
            "proxy_buffering off;",
            "client_max_body_size 0;",
            "client_body_buffer_size 64k;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "proxy_set_header X-Real-IP $remote_addr;",
            "proxy_set_header X-Forwarded-Proto https;",
            "proxy_set_header X-Forwarded-Host $http_host;",
            "ssl_certificate /tmp/x/state/tls/leaf.crt;",
        ] {
            assert!(c.lines().any(|l| l.trim() == line), "{line}:\n{c}");
        }
        // No upstream keepalive, as the front door has none.
        assert!(!c.contains("keepalive "), "{c}");
        assert!(!c.contains("user "), "{c}");
        let root = nginx_conf(&NginxConf {
            user: Some(("nobody", "nogroup")),
            ..NginxConf {
                dir: Path::new("/d"),
                port: 1,
                upstream: 2,
                upstream_keepalive: None,
                host: "h",
                cert: Path::new("/c"),
                key: Path::new("/k"),
                workers: 2,
                user: None,
            }
        });
        assert!(root.starts_with("user nobody nogroup;\n"), "{root}");
        let pooled = nginx_conf(&NginxConf {
            upstream_keepalive: Some(64),
            ..NginxConf {
                dir: Path::new("/d"),
                port: 1,
                upstream: 2,
                upstream_keepalive: None,
                host: "h",
                cert: Path::new("/c"),
                key: Path::new("/k"),
                workers: 2,
                user: None,
            }
        });
        for line in [
            "upstream up { server 127.0.0.1:2; keepalive 64; }",
            "proxy_pass http://up;",
            "proxy_set_header Connection \"\";",
        ] {
            assert!(
                pooled.lines().any(|l| l.trim() == line),
                "{line}:\n{pooled}"
            );
        }
    }

    #[test]
    fn ratios_and_verdicts_follow_the_figures() {
        let fig = |rps: f64, p99: u64, rss: u64| ProxyFigures {
            name: String::new(),
            processes: 1,
            tls: String::new(),
            requests: 1,
            errors: 0,
            requests_per_sec: rps,
            rounds_per_sec: vec![rps],
            p50_us: 100,
            p99_us: p99,
            cpu_us_per_request: 10.0,
            stream_bytes: 1,
            stream_mib_per_sec: rps / 10.0,
            cpu_ms_per_mib: 1.0,
            rss_idle_bytes: rss,
            rss_peak_bytes: rss,
            pss_peak_bytes: rss,
        };
        let r = rows(&fig(900.0, 1300, 10), &fig(1000.0, 1000, 20));
        let by = |m: &str| r.iter().find(|r| r.metric == m).unwrap();
        assert!((by("small GETs").ratio - 0.9).abs() < 1e-9);
        assert_eq!(by("small GETs").met, Some(true));
        assert!((by("latency p99").ratio - 1.3).abs() < 1e-9);
        assert_eq!(by("latency p99").met, Some(false));
        assert_eq!(by("latency p50").met, None);
        assert_eq!(by("peak RSS under load").met, Some(true));
        let text = report(&ProxyBench {
            seconds: 1,
            concurrency: 1,
            body_bytes: 1 << 20,
            release_build: true,
            workers: 2,
            upstream_connections: String::new(),
            front_door: fig(900.0, 1300, 10),
            nginx: fig(1000.0, 1000, 20),
            targets_met: false,
            rows: r,
            console: None,
        });
        assert!(text.contains("MISSED"), "{text}");
    }

    #[test]
    fn a_generated_body_is_exactly_as_long_as_asked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = Generated {
            left: 3 * 10 + 7,
            chunk: Bytes::from_static(&[1u8; 10]),
        };
        assert_eq!(body.size_hint().exact(), Some(37));
        let got = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(got.len(), 37);
    }
}
