//! What one client may hold of the front door: connections (all together
//! and per address) and the time it may stay silent at each step (the TLS
//! handshake, a request's head, inside a body, reading an answer, on a
//! WebSocket). Without them a few slow connections hold every descriptor
//! and every app goes down.
//!
//! - [`Limits`] (pure): `[front_door.limits]` resolved against the
//!   process's descriptor limit.
//! - [`Admission`]: the counts; [`Admission::admit`] gives a [`Guard`] per
//!   accepted connection (dropped when the connection and anything it
//!   became, a spliced WebSocket, ends) or refuses. Clients are keyed by
//!   [`client_key`]: an IPv4 address, or an IPv6 /64 (what one subscriber
//!   usually gets, so one household cannot take a cap per address).
//! - [`Watched`]: the client's byte stream, recording when it last moved
//!   and failing a write that cannot go on for `send` (a client that does
//!   not read what it asked for).
//! - [`IdleBody`]: a request body that fails when the client stops sending
//!   it for `body_idle`, while the upstream waits for it.
//! - [`AcceptBackoff`] (pure): how long to wait after `accept()` fails
//!   (descriptors exhausted) instead of spinning on a listener that stays
//!   readable.
//!
//! The same guard, stream and body wrap an HTTP/2 connection or a pooled
//! upstream the day the proxy has them: the caps count client connections,
//! the timeouts watch bytes, neither knows HTTP/1.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::config::FrontDoorLimits;

/// Descriptors kept for the process itself (listeners, the runtime's,
/// files it reads, the journal) when the connection cap is derived from
/// the descriptor limit.
pub const RESERVED_FDS: u64 = 64;
/// Each connection may hold two descriptors: the client's and its
/// upstream's (a request in flight, or a spliced WebSocket).
pub const FDS_PER_CONNECTION: u64 = 2;

/// `[front_door.limits]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    pub per_address: usize,
    pub handshake: Duration,
    pub header: Duration,
    pub body_idle: Duration,
    pub send: Duration,
    pub websocket_idle: Duration,
}

impl Limits {
    /// The limits for a process that may open `nofile` descriptors: an
    /// unset connection cap is what the descriptors allow, at most
    /// [`FrontDoorLimits::CONNECTIONS`].
    pub fn resolve(config: &FrontDoorLimits, nofile: u64) -> Limits {
        let fits = (nofile.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).max(1);
        let connections = match config.connections {
            Some(c) => c.get(),
            None => fits.min(u64::from(FrontDoorLimits::CONNECTIONS)) as usize,
        };
        Limits {
            connections,
            per_address: config.connections_per_address.get().min(connections),
            handshake: config.handshake_secs.duration(),
            header: config.header_secs.duration(),
            body_idle: config.body_idle_secs.duration(),
            send: config.send_secs.duration(),
            websocket_idle: config.websocket_idle_secs.duration(),
        }
    }

    /// The descriptors `connections` may need, for a warning when the
    /// process has fewer.
    pub fn fds_needed(&self) -> u64 {
        self.connections as u64 * FDS_PER_CONNECTION + RESERVED_FDS
    }
}

/// The soft limit on this process's descriptors.
pub fn nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Who a connection counts against: the IPv4 address, or the IPv6 /64
/// (an IPv4-mapped IPv6 address is the IPv4 one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Net([u8; 8]),
}

pub fn client_key(ip: IpAddr) -> ClientKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut net = [0; 8];
            net.copy_from_slice(&o[..8]);
            ClientKey::V6Net(net)
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            ClientKey::V6Net(n) => {
                let mut o = [0; 16];
                o[..8].copy_from_slice(n);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The front door holds its most connections.
    Total,
    /// This address (or /64) holds its most.
    PerAddress(ClientKey),
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// The open connections, shared by every listener. Cloning shares it.
#[derive(Clone)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
    /// Wakes an accept loop that waits after an error: a closed connection
    /// gave back descriptors.
    released: Arc<tokio::sync::Notify>,
    refused: Arc<AtomicU64>,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new()
    }
}

impl Admission {
    pub fn new() -> Self {
        Admission {
            counts: Arc::new(Mutex::new(Counts::default())),
            released: Arc::new(tokio::sync::Notify::new()),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Counts a new connection from `ip`, or refuses it under `limits`.
    pub fn admit(&self, ip: IpAddr, limits: &Limits) -> Result<Guard, Refused> {
        let key = client_key(ip);
        let mut c = self.counts();
        let refused = if c.total >= limits.connections {
            Some(Refused::Total)
        } else if c.by_client.get(&key).copied().unwrap_or(0) >= limits.per_address {
            Some(Refused::PerAddress(key))
        } else {
            None
        };
        if let Some(r) = refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        c.total += 1;
        *c.by_client.entry(key).or_insert(0) += 1;
        Ok(Guard {
            admission: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Connections open now from `ip`'s address or /64.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts()
            .by_client
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Connections refused since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Resolves when a connection closes.
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

/// What every listener checks a new connection against: the current
/// [`Limits`] (swapped on reload) and the [`Admission`] counts. Cloning
/// shares it.
#[derive(Clone)]
pub struct Gate {
    pub admission: Admission,
    limits: Arc<std::sync::RwLock<Limits>>,
}

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Gate {
            admission: Admission::new(),
            limits: Arc::new(std::sync::RwLock::new(limits)),
        }
    }

    pub fn limits(&self) -> Limits {
        match self.limits.read() {
            Ok(l) => *l,
            Err(p) => *p.into_inner(),
        }
    }

    /// New connections get `limits`; open ones keep the timeouts they
    /// started with, and count until they close.
    pub fn set_limits(&self, limits: Limits) {
        match self.limits.write() {
            Ok(mut l) => *l = limits,
            Err(p) => *p.into_inner() = limits,
        }
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct Guard {
    admission: Admission,
    key: ClientKey,
}

impl Drop for Guard {
    fn drop(&mut self) {
        {
            let mut c = self.admission.counts();
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.by_client.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.by_client.remove(&self.key);
                }
            }
        }
        self.admission.released.notify_waiters();
    }
}

/// Milliseconds since the process's first [`Activity`], for an atomic.
fn millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last moved a byte either way. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Activity(Arc<AtomicU64>);

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Activity(Arc::new(AtomicU64::new(millis())))
    }

    fn touch(&self) {
        self.0.store(millis(), Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(millis().saturating_sub(self.0.load(Ordering::Relaxed)))
    }

    /// Resolves once nothing has moved for `limit`.
    pub async fn silent_for(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A stall timer: started when an operation first cannot go on, cleared
/// when it does, an error once it has run for its limit.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Stall { limit, timer: None }
    }

    /// After the operation returned `Pending`: `true` once it has waited
    /// for the limit (the timer, polled here, wakes the task then).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn clear(&mut self) {
        self.timer = None;
    }
}

use std::future::Future;

/// A client's byte stream: records [`Activity`] and fails a write, flush
/// or shutdown that has waited `send` for the client to read.
pub struct Watched<T> {
    inner: T,
    activity: Activity,
    send: Stall,
}

impl<T> Watched<T> {
    pub fn new(inner: T, send: Duration) -> (Self, Activity) {
        let activity = Activity::new();
        let w = Watched {
            inner,
            activity: activity.clone(),
            send: Stall::new(send),
        };
        (w, activity)
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.send.expired(cx) {
            self.send.clear();
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the answer for too long",
            )))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.send.clear();
                if matches!(r, Ok(n) if n > 0) {
                    self.activity.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.send.clear();
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(r) => {
                self.send.clear();
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

/// A request body that fails once the client has sent nothing of it for
/// `limit` while it was asked for more. Time the upstream spends not
/// asking (it reads slowly) does not count.
pub struct IdleBody<B> {
    inner: B,
    idle: Stall,
    timed_out: Arc<std::sync::atomic::AtomicBool>,
}

impl<B> IdleBody<B> {
    /// The body, and a flag that says whether it ended by its timeout.
    pub fn new(inner: B, limit: Duration) -> (Self, Arc<std::sync::atomic::AtomicBool>) {
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let b = IdleBody {
            inner,
            idle: Stall::new(limit),
            timed_out: timed_out.clone(),
        };
        (b, timed_out)
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = B::Data;
    /// A concrete type (see `proxy::Body`): the inner error, or `TimedOut`.
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.idle.clear();
                Poll::Ready(r.map(|f| f.map_err(io::Error::other)))
            }
            Poll::Pending => {
                if self.idle.expired(cx) {
                    let limit = self.idle.limit;
                    self.idle.clear();
                    self.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client sent nothing of the request body for {} s",
                            limit.as_secs()
                        ),
                    ))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The wait after `accept()` fails. Failures there are the process's
/// (descriptors or memory exhausted) and the listener stays readable, so
/// retrying at once spins a core: the wait doubles from [`Self::FIRST`]
/// to [`Self::MAX`], and a success starts over. A closed connection also
/// ends the wait (it gave back a descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    pub const FIRST: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_secs(1);

    /// After a failure: how long to wait before the next `accept()`.
    pub fn failed(&mut self) -> Duration {
        let wait = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Logs at most once a minute what would otherwise be a line per
/// connection (refusals, accept errors): an attacker must not flood the
/// journal either.
pub struct Throttled {
    last: AtomicU64,
    since: AtomicUsize,
}

impl Default for Throttled {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttled {
    pub const EVERY: Duration = Duration::from_secs(60);

    pub const fn new() -> Self {
        Throttled {
            last: AtomicU64::new(0),
            since: AtomicUsize::new(0),
        }
    }

    /// Counts an event; `Some(n)` when it should be logged now (`n`: the
    /// events since the last line, this one included).
    pub fn tick(&self) -> Option<usize> {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        // Plus one: 0 means "never logged".
        let now = millis() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now >= last + Self::EVERY.as_millis() as u64)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            Some(n)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FrontDoorLimits;

    fn limits(connections: usize, per_address: usize) -> Limits {
        Limits {
            connections,
            per_address,
            ..Limits::resolve(&FrontDoorLimits::default(), 65536)
        }
    }

    #[test]
    fn the_cap_follows_the_descriptors_unless_set() {
        let d = FrontDoorLimits::default();
        assert_eq!(Limits::resolve(&d, 65536).connections, 4096);
        assert_eq!(Limits::resolve(&d, 16384).connections, 4096);
        assert_eq!(Limits::resolve(&d, 1024).connections, (1024 - 64) / 2);
        assert_eq!(Limits::resolve(&d, 10).connections, 1);
        assert_eq!(Limits::resolve(&d, 1024).per_address, 256);
        assert_eq!(
            Limits::resolve(&d, 200).per_address,
            68,
            "never above the total"
        );
        let set: FrontDoorLimits =
            toml::from_str("connections = 1000\nconnections_per_address = 10").unwrap();
        let l = Limits::resolve(&set, 64);
        assert_eq!((l.connections, l.per_address), (1000, 10));
        assert!(l.fds_needed() > 64);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(k("192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn caps_refuse_and_a_closed_connection_gives_its_place_back() {
        let a = Admission::new();
        let l = limits(3, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let one = a.admit(ip("192.0.2.1"), &l).unwrap();
        let _two = a.admit(ip("192.0.2.1"), &l).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1"), &l).err(),
            Some(Refused::PerAddress(client_key(ip("192.0.2.1"))))
        );
        let _three = a.admit(ip("2001:db8::1"), &l).unwrap();
        assert_eq!(a.admit(ip("192.0.2.2"), &l).err(), Some(Refused::Total));
        assert_eq!(
            (a.open(), a.open_from(ip("192.0.2.1")), a.refused()),
            (3, 2, 2)
        );
        drop(one);
        assert_eq!(a.open(), 2);
        let _again = a.admit(ip("192.0.2.1"), &l).unwrap();
        assert_eq!(a.open_from(ip("192.0.2.1")), 2);
    }

    #[test]
    fn accept_backoff_doubles_to_its_ceiling_and_starts_over() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.failures(), 9);
        for _ in 0..100 {
            assert_eq!(b.failed(), AcceptBackoff::MAX);
        }
        b.succeeded();
        assert_eq!(b.failed(), AcceptBackoff::FIRST);
    }

    #[test]
    fn throttled_logs_the_first_then_once_a_minute() {
        let t = Throttled::new();
        assert_eq!(t.tick(), Some(1));
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
    }

    #[tokio::test]
    async fn an_idle_body_fails_after_its_limit_and_a_trickle_does_not() {
        use http_body_util::BodyExt;
        let frame =
            || Ok::<_, std::convert::Infallible>(Frame::data(hyper::body::Bytes::from("x")));
        // A frame every 50 ms, 8 times: never silent for the limit (0.4 s),
        // though the whole body takes as long.
        let trickle = http_body_util::StreamBody::new(Box::pin(futures_util::stream::unfold(
            0,
            move |i| async move {
                if i == 8 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((frame(), i + 1))
            },
        )));
        let (body, timed_out) = IdleBody::new(trickle, Duration::from_millis(400));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 8);
        assert!(!timed_out.load(Ordering::Relaxed));

        // One frame, then silence.
        let stalls = http_body_util::StreamBody::new(Box::pin(futures_util::stream::unfold(
            0,
            move |i| async move {
                if i == 1 {
                    std::future::pending::<()>().await;
                }
                Some((frame(), i + 1))
            },
        )));
        let (body, timed_out) = IdleBody::new(stalls, Duration::from_millis(400));
        let start = Instant::now();
        let err = body.collect().await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert!(timed_out.load(Ordering::Relaxed));
    }
}
