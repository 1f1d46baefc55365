//! The front door under attack, as its own process (`commonscloud
//! front-door --dir`), serving what `frontdoor::publisher::publish` wrote:
//!
//! - slow connections from one address beyond its cap are closed at once
//!   while another address is served; beyond the total cap too, and the
//!   slow ones are cut when their handshake times out;
//! - a request body that goes silent is cut (408) while a slow but steady
//!   one goes through; a WebSocket that goes silent is closed while a
//!   chatty one lives on; a client that reads nothing of an answer is cut;
//! - with its descriptors exhausted it waits instead of spinning: its CPU
//!   time over a window is measured from /proc;
//! - run as its own user with the modes tmpfiles.d and the units give, it
//!   cannot connect to slapd's ldapi or the API socket, nor open anything
//!   else of the supervisor's, while the console's socket works;
//! - the 404 page's language links for `//evil.example/x` stay on the box;
//! - a crash between certificate writes (a key beside another's
//!   certificate, half-written temporary files, files of an earlier
//!   release) still leaves it serving a matching pair.

mod common;

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Appliance, BIN};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CLOUD: &str = "cloud.quimper.example.org";

/// Kills its process on drop, also when the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the upstream saw go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A request body ended in an error (the front door gave up on it).
    BodyAborted,
    /// The endless answer of `/big` stopped being read: its connection went.
    BigDropped,
}

/// Says so when dropped: the endless body's stream is dropped when its
/// connection goes.
struct OnDrop(mpsc::UnboundedSender<Event>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Event::BigDropped);
    }
}

/// The app behind the front door: `/ws` switches protocols and echoes,
/// `/big` answers without end, anything else answers with the length of the
/// body it read.
async fn upstream() -> (u16, mpsc::UnboundedReceiver<Event>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        type B = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
                        let full = |s: String| -> B {
                            Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed()
                        };
                        if req.uri().path() == "/ws" {
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let Ok(up) = up.await else { return };
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 1024];
                                loop {
                                    let n = io.read(&mut buf).await.unwrap_or(0);
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            let r = Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(full(String::new()))
                                .unwrap();
                            return Ok::<_, hyper::Error>(r);
                        }
                        if req.uri().path() == "/big" {
                            let guard = OnDrop(tx);
                            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                            let s = futures_util::stream::unfold(guard, move |g| {
                                let chunk = chunk.clone();
                                async move { Some((Ok(Frame::data(chunk)), g)) }
                            });
                            return Ok(Response::new(StreamBody::new(s).boxed()));
                        }
                        match common::length_and_sha256(req.into_body()).await {
                            Ok((len, _)) => Ok(Response::new(full(len.to_string()))),
                            Err(e) => {
                                let _ = tx.send(Event::BodyAborted);
                                Err(e)
                            }
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, rx)
}

/// A front door process on its own appliance's published files.
struct Door {
    app: Appliance,
    https: SocketAddr,
    ca: PathBuf,
    log: PathBuf,
    proc_: Proc,
}

impl Door {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.proc_.0.id()
    }
}

/// The appliance's config with `[front_door.limits]` set to `limits`, its
/// files published as the supervisor does (no supervisor runs).
fn appliance(up_port: u16, limits: &str) -> (Appliance, u16) {
    let app = Appliance::new();
    app.set_apps(
        &["nextcloud"],
        &format!("force = true\nport_base = {up_port}\n"),
    );
    let (https, http) = (common::free_port(), common::free_port());
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(&format!(
        "\n[front_door]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n\n[front_door.limits]\n{limits}\n"
    ));
    std::fs::write(&app.config, text).unwrap();
    (app, https)
}

fn publish(app: &Appliance) -> commonscloud::config::Config {
    let config = commonscloud::config::load(&app.config).unwrap();
    commonscloud::frontdoor::publisher::publish(&config, "test", time::OffsetDateTime::now_utc())
        .unwrap();
    config
}

/// Starts the front door on `app`'s published directory; `nofile` caps its
/// descriptors (soft and hard), as a unit's `LimitNOFILE=` would.
async fn start(app: Appliance, https: u16, nofile: Option<u64>) -> Door {
    let config = commonscloud::config::load(&app.config).unwrap();
    let dir = commonscloud::frontdoor::Published::of(&config).dir;
    let log = app.dir.path().join("front-door.log");
    let mut cmd = Command::new(BIN);
    cmd.arg("front-door")
        .arg("--dir")
        .arg(&dir)
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is a system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let door = Door {
        ca: app.dir.path().join("state/tls/ca.crt"),
        app,
        https: format!("127.0.0.1:{https}").parse().unwrap(),
        log,
        proc_: Proc(cmd.spawn().unwrap()),
    };
    // Serving: a request from an address no test uses otherwise.
    poll(Duration::from_secs(30), "the front door serves", || async {
        get(&door, "127.0.0.9", "/").await.map(drop)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", door.log_text()));
    door
}

/// Retries `f` until it succeeds or `within` passes; the last error then.
async fn poll<F, Fut, T>(within: Duration, what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= until => return Err(format!("{what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8
/// is all local: each is another client address).
async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse().unwrap())?;
    s.connect(to).await
}

async fn tls_from(
    door: &Door,
    from: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = tcp_from(from, door.https)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(CLOUD).unwrap();
    common::tls_connector(&door.ca)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// A GET through the front door from `from`: its status and body.
async fn get(door: &Door, from: &str, path: &str) -> Result<(u16, String), String> {
    let tls = tls_from(door, from).await?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", CLOUD)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the peer closed `s` within `within` (end of stream or reset).
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Whether `s` is still open now: nothing to read, no end, no reset.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_from_one_address_beyond_its_cap_are_closed_while_another_is_served() {
    let (up, _) = upstream().await;
    let (app, https) = appliance(
        up,
        "connections = 64\nconnections_per_address = 8\nhandshake_secs = 60",
    );
    publish(&app);
    let door = start(app, https, None).await;

    // Eight slow connections (not a byte sent) from 127.0.0.1 take its cap.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(tcp_from("127.0.0.1", door.https).await.unwrap());
    }
    // Twelve more are closed at once, without waiting for any timeout.
    let started = Instant::now();
    for i in 0..12 {
        // Reset so fast that connect() itself may see it.
        let closed = match tcp_from("127.0.0.1", door.https).await {
            Ok(mut c) => closed_within(&mut c, Duration::from_secs(10)).await,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed,
            "connection {} beyond the cap was not closed\n{}",
            9 + i,
            door.log_text()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusing took {:?}",
        started.elapsed()
    );
    // The first eight are still held, and 127.0.0.2 is served meanwhile.
    for (i, c) in slow.iter().enumerate() {
        assert!(still_open(c), "slow connection {i} was closed");
    }
    for _ in 0..5 {
        let (status, body) = get(&door, "127.0.0.2", "/").await.expect("127.0.0.2");
        assert_eq!((status, body.as_str()), (200, "0"));
    }
    let log = door.log_text();
    assert!(
        log.contains("127.0.0.1 holds its 8 connections"),
        "the refusal is logged, with its cause: {log}"
    );
    // A slow connection that goes gives its place back to its address.
    slow.truncate(6);
    let (status, _) = poll(Duration::from_secs(10), "127.0.0.1 again", || async {
        get(&door, "127.0.0.1", "/").await
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    for c in &slow {
        assert!(still_open(c));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_total_cap_connections_are_closed_and_silent_handshakes_time_out() {
    let (up, _) = upstream().await;
    let (app, https) = appliance(
        up,
        "connections = 6\nconnections_per_address = 4\nhandshake_secs = 2",
    );
    publish(&app);
    let door = start(app, https, None).await;

    let opened = Instant::now();
    let mut slow = Vec::new();
    for from in ["127.0.0.1"; 4].into_iter().chain(["127.0.0.2"; 2]) {
        slow.push(tcp_from(from, door.https).await.unwrap());
    }
    // Every place taken: a third address is closed at once.
    let closed = match tcp_from("127.0.0.3", door.https).await {
        Ok(mut c) => closed_within(&mut c, Duration::from_secs(1)).await,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "a connection beyond the total cap was held\n{}",
        door.log_text()
    );
    assert!(opened.elapsed() < Duration::from_secs(2));
    assert!(door.log_text().contains("all 6 connections are taken"));
    // The silent ones are cut when their handshake times out (2 s)...
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(20)).await,
            "slow connection {i} outlived its handshake timeout"
        );
    }
    let cut_after = opened.elapsed();
    assert!(
        cut_after >= Duration::from_secs(2),
        "cut after {cut_after:?}"
    );
    // ...and the third address is served.
    let (status, _) = poll(Duration::from_secs(10), "127.0.0.3", || async {
        get(&door, "127.0.0.3", "/").await
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_request_body_is_cut_and_a_slow_steady_one_is_not() {
    let (up, mut events) = upstream().await;
    let (app, https) = appliance(up, "body_idle_secs = 1");
    publish(&app);
    let door = start(app, https, None).await;

    // Eight bytes, one every 300 ms: 2.4 s in all, never silent for 1 s.
    let tls = tls_from(&door, "127.0.0.1").await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let trickle = StreamBody::new(Box::pin(futures_util::stream::unfold(0, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x"))),
            i + 1,
        ))
    })));
    let req = Request::put("/remote.php/dav/files/ana/slow.bin")
        .header("host", CLOUD)
        .header("content-length", "8")
        .body(trickle)
        .unwrap();
    let started = Instant::now();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"8");
    assert!(started.elapsed() >= Duration::from_millis(2400));

    // A body announced as 1 MB that stops after 100 bytes.
    let mut tls = tls_from(&door, "127.0.0.1").await.unwrap();
    let head = format!(
        "PUT /remote.php/dav/files/ana/stalled.bin HTTP/1.1\r\nHost: {CLOUD}\r\nContent-Length: 1000000\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'y'; 100]).await.unwrap();
    tls.flush().await.unwrap();
    let stalled = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the stalled upload was never cut");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "the answer to a silent body: {answer}"
    );
    assert!(stalled.elapsed() >= Duration::from_secs(1));
    // The app saw its request end in an error, not a short file.
    let seen = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(seen.ok().flatten(), Some(Event::BodyAborted));
}

/// A WebSocket through the front door: the handshake, then raw bytes.
async fn websocket(door: &Door) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = tls_from(door, "127.0.0.1").await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {CLOUD}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut byte).await.unwrap(), 1, "{got:?}");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_closed_and_a_chatty_one_is_not() {
    let (up, _) = upstream().await;
    let (app, https) = appliance(up, "websocket_idle_secs = 1");
    publish(&app);
    let door = start(app, https, None).await;

    let mut ws = websocket(&door).await;
    // A message every 300 ms for 2.4 s: the session outlives the limit.
    let started = Instant::now();
    let mut last = started;
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let msg = format!("ping {i}");
        ws.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        ws.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
        last = Instant::now();
    }
    assert!(started.elapsed() >= Duration::from_millis(2400));
    // Then silence: closed after a second of it (the front door counts from
    // the echo it wrote, a moment before it was read here).
    assert!(
        closed_within(&mut ws, Duration::from_secs(20)).await,
        "a silent WebSocket stayed open\n{}",
        door.log_text()
    );
    let silence = last.elapsed();
    assert!(
        silence >= Duration::from_millis(900),
        "closed after {silence:?} of silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_of_an_answer_is_cut() {
    let (up, mut events) = upstream().await;
    let (app, https) = appliance(up, "send_secs = 1");
    publish(&app);
    let door = start(app, https, None).await;

    // Asks for an endless answer and never reads it.
    let mut tls = tls_from(&door, "127.0.0.1").await.unwrap();
    let head = format!("GET /big HTTP/1.1\r\nHost: {CLOUD}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let asked = Instant::now();
    // Once the buffers are full the front door waits 1 s, then lets go of
    // the client and of the app's connection.
    let seen = tokio::time::timeout(Duration::from_secs(30), events.recv()).await;
    assert_eq!(
        seen.ok().flatten(),
        Some(Event::BigDropped),
        "the unread answer was never cut\n{}",
        door.log_text()
    );
    assert!(asked.elapsed() >= Duration::from_secs(1));
    drop(tls);
}

/// The process's CPU time so far (user and system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime, stime
    // are the 14th and 15th of the line, the 12th and 13th after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The process's descriptors numbered below `limit` (one inherited from
/// the test harness may sit above it).
fn open_fds(pid: u32, limit: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|fd| *fd < limit)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_descriptors_exhausted_the_front_door_waits_instead_of_spinning() {
    const NOFILE: u64 = 64;
    let (up, _) = upstream().await;
    // Caps far above what 64 descriptors hold: the descriptors run out
    // first, and accept() fails with EMFILE.
    let (app, https) = appliance(
        up,
        "connections = 1000\nconnections_per_address = 1000\nhandshake_secs = 120",
    );
    publish(&app);
    let door = start(app, https, Some(NOFILE)).await;
    assert!(
        door.log_text().contains("raise LimitNOFILE="),
        "the front door warns that its cap needs more descriptors: {}",
        door.log_text()
    );

    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(tcp_from("127.0.0.1", door.https).await.unwrap());
    }
    poll(Duration::from_secs(20), "accept() failing", || async {
        if door.log_text().contains("accepting a connection failed") {
            Ok(())
        } else {
            Err(door.log_text())
        }
    })
    .await
    .unwrap();
    let fds = open_fds(door.pid(), NOFILE);
    assert_eq!(fds as u64, NOFILE, "every descriptor is taken");
    // Connections keep arriving in the backlog; the process sleeps anyway.
    for _ in 0..50 {
        slow.push(tcp_from("127.0.0.2", door.https).await.unwrap());
    }
    let window = Duration::from_secs(3);
    let before = cpu_time(door.pid());
    tokio::time::sleep(window).await;
    let used = cpu_time(door.pid()) - before;
    let share = used.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "front door with {fds} of {NOFILE} descriptors taken and connections waiting: {:.1} ms of CPU in {} s ({:.2} % of a core)",
        used.as_secs_f64() * 1000.0,
        window.as_secs(),
        share * 100.0
    );
    assert!(
        share < 0.01,
        "the front door used {:.1} % of a core with its descriptors exhausted",
        share * 100.0
    );
    assert_eq!(
        door.log_text()
            .matches("accepting a connection failed")
            .count(),
        1,
        "one line a minute, not one per failure"
    );
    // The slow ones leave: descriptors come back and others are served.
    drop(slow);
    let (status, _) = poll(Duration::from_secs(20), "served again", || async {
        get(&door, "127.0.0.3", "/").await
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}

/// What a process with `uid`, `gid` and no other group gets from
/// `connect()` on each socket and `open()` on each file: 0 or the errno.
enum Probe {
    Connect(PathBuf),
    Open(PathBuf),
}

fn probe_as(uid: u32, gid: u32, probes: &[Probe]) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child uses is made before the fork: it only makes
    // system calls.
    let made: Vec<(bool, CString, libc::sockaddr_un)> = probes
        .iter()
        .map(|p| {
            let (connect, path) = match p {
                Probe::Connect(p) => (true, p),
                Probe::Open(p) => (false, p),
            };
            let bytes = path.as_os_str().as_bytes();
            // SAFETY: a zeroed sockaddr_un is valid.
            let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            assert!(bytes.len() < addr.sun_path.len(), "{}", path.display());
            for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            (connect, CString::new(bytes).unwrap(), addr)
        })
        .collect();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let w = std::os::fd::AsRawFd::as_raw_fd(&write_end);
    let mut cmd = Command::new("/bin/true");
    // SAFETY: between fork and exec the child only makes system calls
    // (setgroups, setgid, setuid, socket, connect, open, close, write).
    unsafe {
        cmd.pre_exec(move || {
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (connect, path, addr) in &made {
                let errno = if *connect {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    let r = libc::connect(
                        fd,
                        addr as *const libc::sockaddr_un as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    );
                    let e = if r == 0 { 0 } else { *libc::__errno_location() };
                    libc::close(fd);
                    e
                } else {
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                    let e = if fd >= 0 {
                        0
                    } else {
                        *libc::__errno_location()
                    };
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    e
                };
                libc::write(w, &errno as *const i32 as *const libc::c_void, 4);
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    assert!(status.success());
    drop(write_end);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(read_end), &mut bytes).unwrap();
    bytes
        .chunks(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// A directory's mode and owner as the shipped tmpfiles.d file says.
fn tmpfiles_line(path: &str) -> (u32, String, String) {
    let text =
        std::fs::read_to_string(common::repo().join("units/commonscloud.tmpfiles.conf")).unwrap();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 5 && f[0] == "d" && f[1] == path)
        .map(|f| {
            (
                u32::from_str_radix(f[2], 8).unwrap(),
                f[3].to_owned(),
                f[4].to_owned(),
            )
        })
        .unwrap_or_else(|| panic!("{path} is not in the tmpfiles.d file"))
}

/// A `[Service]` setting of a shipped unit.
fn unit_setting(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(common::repo().join("units").join(unit)).unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_owned()
}

fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// A `/proc/PID/status` line's values.
fn proc_status(pid: u32, key: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_as_its_own_user_reaches_the_console_and_nothing_else_of_the_supervisors() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test starts the supervisor and the front door as two users: run it as root (provision/test.sh does)"
    );
    // Two users, as sysusers.d makes them: numeric ids of their own, so
    // parallel runs do not share them.
    let base = 3_000_000 + (std::process::id() % 100_000) * 2;
    let (sup, door_id) = (base, base + 1);
    let (up, _) = upstream().await;
    let (app, https) = appliance(up, "");
    let root = app.dir.path();
    let config = commonscloud::config::load(&app.config).unwrap();
    let published = commonscloud::frontdoor::Published::of(&config);
    let state = config.paths.state_dir.to_path_buf();
    let secrets = config.paths.secrets_dir.to_path_buf();
    let runtime = config.paths.runtime_dir.to_path_buf();

    // The modes tmpfiles.d and the units give, on this appliance's paths.
    set_owner_mode(root, 0, 0, 0o755);
    // The binary where both users may run it, as /usr/bin is (the cargo
    // target dir may be under a home directory they cannot enter).
    let bin = root.join("commonscloud");
    std::fs::copy(BIN, &bin).unwrap();
    set_owner_mode(&bin, 0, 0, 0o755);
    set_owner_mode(&app.config, 0, sup, 0o640);
    for (dir, declared) in [
        (&state, "/var/lib/commonscloud"),
        (&published.dir, "/var/lib/commonscloud/front-door"),
        (&secrets, "/etc/commonscloud/secrets"),
    ] {
        let (mode, owner, group) = tmpfiles_line(declared);
        std::fs::create_dir_all(dir).unwrap();
        if dir != &published.dir {
            chown_tree(dir, sup, sup);
        }
        let id = |name: &str| {
            if name == "commonscloud-front-door" {
                door_id
            } else {
                sup
            }
        };
        assert_eq!(owner, "commonscloud");
        set_owner_mode(dir, id(&owner), id(&group), mode);
    }
    let runtime_mode = u32::from_str_radix(
        &unit_setting("commonscloud.service", "RuntimeDirectoryMode"),
        8,
    )
    .unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    set_owner_mode(&runtime, sup, sup, runtime_mode);
    let umask = u32::from_str_radix(&unit_setting("commonscloud.service", "UMask"), 8).unwrap();
    assert_eq!(
        unit_setting("commonscloud-front-door.service", "UMask"),
        format!("{umask:04o}")
    );

    let as_user = |cmd: &mut Command, uid: u32| {
        // SAFETY: system calls only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                let groups = [uid];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    // The supervisor, as its user (no Docker: the console is what matters).
    let serve_log = root.join("serve.log");
    let mut serve = Command::new(&bin);
    serve
        .arg("--config")
        .arg(&app.config)
        .arg("serve")
        .current_dir(root)
        .env_remove("NOTIFY_SOCKET")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stderr(std::fs::File::create(&serve_log).unwrap());
    as_user(&mut serve, sup);
    let _serve = Proc(serve.spawn().unwrap());
    // The front door, as its own, reading the published directory only.
    let door_log = root.join("front-door.log");
    let mut door_cmd = Command::new(&bin);
    door_cmd
        .arg("front-door")
        .arg("--dir")
        .arg(&published.dir)
        .current_dir("/")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(&door_log).unwrap());
    as_user(&mut door_cmd, door_id);
    let door = Proc(door_cmd.spawn().unwrap());
    let logs = || {
        format!(
            "serve:\n{}\nfront door:\n{}",
            std::fs::read_to_string(&serve_log).unwrap_or_default(),
            std::fs::read_to_string(&door_log).unwrap_or_default()
        )
    };

    // The console answers through the front door: it reached console.sock.
    let ca = config.paths.state_dir.join("tls/ca.crt");
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let host = config.console_host().to_string();
    let (status, body) = poll(Duration::from_secs(90), "the console", || async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        if !ca.exists() {
            return Err("no CA yet".into());
        }
        let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
        let mut tls = common::tls_connector(&ca)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        match answer.split_whitespace().nth(1) {
            Some("200") => Ok((200, answer)),
            other => Err(format!("{other:?}: {answer}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(status, 200, "{body}");

    // The front door's process has exactly these credentials.
    let pid = door.0.id();
    assert_eq!(proc_status(pid, "Uid"), [door_id; 4]);
    assert_eq!(proc_status(pid, "Gid"), [door_id; 4]);
    assert_eq!(proc_status(pid, "Groups"), [door_id]);

    let slapd = commonscloud::directory::slapd::Paths::new(&config);
    let api = config.api_socket();
    let mut probes = vec![
        Probe::Connect(slapd.ldapi.clone()),
        Probe::Connect(api.clone()),
        Probe::Connect(published.console_socket.clone()),
        Probe::Open(published.local_pair.clone()),
        Probe::Open(app.config.clone()),
        Probe::Open(config.paths.secrets_dir.join("front-door-ca.key")),
    ];
    // Everything else in the state directory, whatever the supervisor made.
    let mut others = Vec::new();
    for e in std::fs::read_dir(&state).unwrap() {
        let p = e.unwrap().path();
        if p != published.dir {
            others.push(p.clone());
            probes.push(Probe::Open(p));
        }
    }
    assert!(others.len() >= 4, "the supervisor made {others:?}");
    let got = probe_as(door_id, door_id, &probes);
    let eacces = libc::EACCES;
    assert_eq!(got[0], eacces, "connect() to ldapi as the front door");
    assert_eq!(got[1], eacces, "connect() to api.sock as the front door");
    assert_eq!(got[2], 0, "connect() to console.sock as the front door");
    assert_eq!(got[3], 0, "its certificate pair");
    assert_eq!(got[4], eacces, "the config");
    assert_eq!(got[5], eacces, "the CA's key");
    for (p, e) in others.iter().zip(&got[6..]) {
        assert_eq!(
            *e,
            eacces,
            "{} opened by the front door's user",
            p.display()
        );
    }
    // The sockets are live: the supervisor's user reaches them.
    let sup_got = probe_as(
        sup,
        sup,
        &[Probe::Connect(slapd.ldapi.clone()), Probe::Connect(api)],
    );
    assert_eq!(sup_got, [0, 0], "the supervisor's user connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_404_page_links_its_languages_on_the_box_for_a_path_that_looks_like_another_site() {
    let b = common::console::ConsoleBox::start().await;
    let host = common::console::HOST;
    let addr: SocketAddr = format!("127.0.0.1:{}", b.https).parse().unwrap();
    for path in [
        "//evil.example/x",
        "//evil.example/x?lang=es",
        "///evil.example",
    ] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host).unwrap();
        let mut tls = common::tls_connector(&b.ca)
            .connect(name, tcp)
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        let links: Vec<&str> = answer
            .split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        let lang: Vec<&&str> = links.iter().filter(|l| l.contains("lang=")).collect();
        assert_eq!(lang.len(), 2, "{path}: the two other languages: {links:?}");
        for l in &links {
            // A link starting with `//` (or `/\`) names another host; `?`
            // keeps the page's own.
            assert!(
                !l.starts_with("//") && !l.starts_with("/\\") && !l.contains("evil"),
                "{path}: {l}"
            );
        }
        for l in lang {
            assert!(l.starts_with('?'), "{path}: {l}");
        }
    }
}

/// The first certificate of a PEM text, DER.
fn first_cert(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The leaf the front door serves for the cloud's name, trusting `ca`.
async fn served_leaf(https: SocketAddr, ca: &Path) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(https).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(CLOUD).unwrap();
    let tls = common::tls_connector(ca)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// A CA of its own (an "ACME" CA for the test) and a leaf for every
/// hostname: (the CA's PEM, the leaf's PEM, the leaf's key PEM).
fn other_ca_leaf(hosts: &[String]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, &ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(hosts.to_vec())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_between_certificate_writes_the_front_door_serves_a_matching_pair() {
    let (up, _) = upstream().await;
    let (app, https) = appliance(up, "");
    let config = publish(&app);
    let paths = commonscloud::frontdoor::Paths::new(&config);
    let p = &paths.published;
    let local = std::fs::read(&p.local_pair).unwrap();
    let hosts = commonscloud::frontdoor::routes::Routes::from_config(&config, &p.console_socket)
        .hostnames();

    // On disk as a crash leaves it: an ACME certificate beside a key that
    // is not its own (the new certificate renamed in, the new key not),
    // and the temporary files of writes that never finished.
    let (acme_ca, acme_leaf, acme_key) = other_ca_leaf(&hosts);
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&p.acme_pair, format!("{acme_leaf}{other_key}")).unwrap();
    std::fs::write(
        p.local_pair.with_extension("tmp"),
        &local[..local.len() / 2],
    )
    .unwrap();
    std::fs::write(p.acme_pair.with_extension("tmp"), b"-----BEGIN CERT").unwrap();

    // The front door starts and serves the local CA's pair.
    let door = start(app, https, None).await;
    let ca = door.ca.clone();
    let leaf = served_leaf(door.https, &ca).await.unwrap();
    assert_eq!(leaf, first_cert(&local), "the local CA's leaf is served");
    let log = door.log_text();
    assert!(
        log.contains("does not go with the certificate") && log.contains("serving the local CA's"),
        "{log}"
    );

    // The pair written whole (one rename) is taken at the next look.
    let acme_ca_file = door.app.dir.path().join("acme-ca.pem");
    std::fs::write(&acme_ca_file, &acme_ca).unwrap();
    commonscloud::sys::write_atomic(
        &p.acme_pair,
        commonscloud::frontdoor::ca::pair_pem(&acme_leaf, &acme_key).as_bytes(),
        0o640,
    )
    .unwrap();
    let served = poll(Duration::from_secs(20), "the ACME pair", || async {
        served_leaf(door.https, &acme_ca_file).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", door.log_text()));
    assert_eq!(served, first_cert(acme_leaf.as_bytes()));
}

#[test]
fn files_of_a_release_before_the_pair_file_become_a_matching_pair_or_go() {
    let (app, _) = appliance(9, "");
    let config = commonscloud::config::load(&app.config).unwrap();
    let paths = commonscloud::frontdoor::Paths::new(&config);
    commonscloud::frontdoor::publisher::publish(&config, "test", time::OffsetDateTime::now_utc())
        .unwrap();
    let hosts = commonscloud::frontdoor::routes::Routes::from_config(
        &config,
        &paths.published.console_socket,
    )
    .hostnames();
    let acme = &paths.acme;
    let mk = |p: &Path, text: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };

    // The old ACME pair as a crash between its two renames left it: a new
    // key beside the old certificate. Not made into a pair; both go.
    let (_, leaf, key) = other_ca_leaf(&hosts);
    let new_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    mk(&acme.legacy_cert, &leaf);
    mk(&acme.legacy_key, &new_key);
    assert!(!commonscloud::frontdoor::acme::migrate_legacy(acme).unwrap());
    assert!(!acme.pair.exists());
    assert!(!acme.legacy_cert.exists() && !acme.legacy_key.exists());

    // A matching old pair becomes the pair (no new order needed).
    mk(&acme.legacy_cert, &leaf);
    mk(&acme.legacy_key, &key);
    assert!(commonscloud::frontdoor::acme::migrate_legacy(acme).unwrap());
    assert!(commonscloud::frontdoor::ca::pair_loads(&acme.pair));
    assert!(!acme.legacy_cert.exists() && !acme.legacy_key.exists());

    // An answers directory of an earlier release, made before the published
    // directory had the front door's group: its files would be unreadable
    // to the front door, so it goes (made again at the next order).
    use std::os::unix::fs::MetadataExt;
    let published = &paths.published;
    std::fs::create_dir_all(&published.challenges).unwrap();
    let dir_gid = std::fs::metadata(&published.dir).unwrap().gid();
    std::os::unix::fs::chown(&published.challenges, None, Some(dir_gid + 1))
        .expect("chown (run as root)");
    commonscloud::frontdoor::publisher::publish(&config, "test", time::OffsetDateTime::now_utc())
        .unwrap();
    assert!(!published.challenges.exists());

    // The local CA's old files, the same crash: the next publish makes a
    // pair that loads and removes them.
    std::fs::remove_file(&paths.tls.pair).unwrap();
    mk(&paths.tls.legacy[0], &leaf);
    mk(&paths.tls.legacy[1], &new_key);
    let wrote = commonscloud::frontdoor::publisher::publish(
        &config,
        "test",
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert!(wrote.new_leaf);
    assert!(commonscloud::frontdoor::ca::pair_loads(&paths.tls.pair));
    for old in &paths.tls.legacy {
        assert!(!old.exists(), "{}", old.display());
    }
}
