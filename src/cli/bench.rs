//! `commonscloud bench …`: figures against targets and against a baseline
//! measured in the same run. Benchmarks print; they never fail a build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Serialize;

/// Idle RSS target for `serve`, in bytes.
const RSS_TARGET: u64 = 15 * 1024 * 1024;
/// Stripped binary size target, in bytes.
const SIZE_TARGET: u64 = 20 * 1024 * 1024;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Idle memory of `serve` and the size of the release binaries.
    ///
    /// Starts `serve` on a temporary config, reads its RSS when idle and after
    /// --requests status requests, and compares with a Python http.server
    /// started the same way (a minimal interpreted service).
    Footprint {
        /// How many status requests to send.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// The x86_64 release binary (default: this one).
        #[arg(long)]
        x86_64_binary: Option<PathBuf>,
        /// The aarch64 release binary (default: next to this one's target dir).
        #[arg(long)]
        aarch64_binary: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Logins per second through the daemon's authentication path against
    /// raw LDAP binds, and the time to create people through onboarding.
    ///
    /// Starts a slapd of its own on a free loopback port in a temporary
    /// directory. Measures raw ldap3 simple binds, then the daemon's
    /// authentication path, then raw binds again (the baseline is the mean of
    /// the two), and prints both and their ratio (target ≥ 0.80). Then
    /// creates --people people through the onboarding service (register,
    /// verify the mail, approve) and prints how long that took.
    Directory(super::bench_directory::DirectoryArgs),
    /// Reconcile with every app on the test images (images/testing: the
    /// stand-ins, and real PostgreSQL and Redis built from Debian's
    /// packages, which needs root and mmdebstrap): the cold install time, then the wall time and Docker API calls of a
    /// no-op reconcile (target: zero mutating calls), against the time of
    /// just observing Docker, measured in the same run.
    Reconcile(super::bench_reconcile::ReconcileArgs),
    /// The admin dashboard's latency with many signed-in clients at once
    /// (default 200), through the real front door and TLS, against the
    /// sign-in page measured in the same run.
    Console(super::bench_console::ConsoleArgs),
    /// The front door against Debian's nginx as an equivalent TLS reverse
    /// proxy, on this machine in the same run: requests per second and
    /// p50/p99 latency of small GETs, MiB/s of a streamed POST body, and
    /// peak RSS under load, with their ratios.
    ///
    /// Starts a small upstream, `commonscloud front-door` (certificates
    /// from a scratch local CA) and nginx (the same certificate, the
    /// settings the front door has), all on 127.0.0.1, and drives both
    /// from here over TLS in alternating rounds; also prints each proxy's
    /// CPU time per request and per MiB. Targets: throughput ≥ 0.8×
    /// nginx, p99 ≤ 1.25× nginx, RSS under load ≤ nginx's. A missed target
    /// is printed, not an exit code. Needs nginx (apt-get install nginx);
    /// touches no system nginx.
    Proxy(super::bench_proxy::ProxyArgs),
    /// Federation with the alliance, two slapd on loopback (the alliance's
    /// made by provision/alliance/alliance.sh): the initial sync of
    /// --people people against a plain ldap3 search of the same entries
    /// plus the same adds into a fresh slapd, measured in the same run
    /// (target ≤ 1.5×); the propagation of alliance writes to the local
    /// slapd, p50 and p99 (target p99 < 50 ms); and the outbox's drain rate
    /// after --outbox queued local changes. Run it from the repository.
    Federation(super::bench_federation::FederationArgs),
    /// The upstream of `bench proxy` (run by it).
    #[command(hide = true)]
    ProxyUpstream,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<i32> {
    match cmd {
        BenchCommand::Footprint {
            requests,
            x86_64_binary,
            aarch64_binary,
            json,
        } => footprint(requests, x86_64_binary, aarch64_binary, json),
        BenchCommand::Directory(args) => super::bench_directory::run(args),
        BenchCommand::Reconcile(args) => super::bench_reconcile::run(args),
        BenchCommand::Console(args) => super::bench_console::run(args),
        BenchCommand::Proxy(args) => super::bench_proxy::run(args),
        BenchCommand::Federation(args) => super::bench_federation::run(args),
        BenchCommand::ProxyUpstream => super::bench_proxy::upstream(),
    }
}

#[derive(Debug, Serialize)]
struct Binary {
    arch: &'static str,
    path: String,
    bytes: Option<u64>,
    stripped: Option<bool>,
    note: String,
}

#[derive(Debug, Serialize)]
struct Footprint {
    rss_after_start_bytes: u64,
    rss_idle_bytes: u64,
    rss_after_requests_bytes: u64,
    requests: usize,
    request_p50_us: u64,
    request_p99_us: u64,
    shutdown_ms: u64,
    baseline_name: String,
    baseline_rss_bytes: Option<u64>,
    binaries: Vec<Binary>,
}

/// Removes the bench's temp dir and kills leftover children, even on error.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    pub(super) children: Vec<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The bench's slapd outlives its `serve`, as in production; not ours.
        if let Some(pid) = std::fs::read_to_string(self.dir.join("run/slapd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 for a server a bench starts.
pub(super) fn free_port() -> anyhow::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free port")
}

/// A fresh path under the temp dir for one bench run of `kind`.
pub(super) fn scratch_dir(kind: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "commonscloud-bench-{kind}-{}-{nanos}",
        std::process::id()
    ))
}

pub(super) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

fn footprint(
    requests: usize,
    x86: Option<PathBuf>,
    arm: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut scratch = Scratch {
        dir: scratch_dir("footprint"),
        children: Vec::new(),
    };
    let config_path = super::init::write_demo(&scratch.dir, free_port()?)?;
    // The daemon alone: no app, so the machine's Docker is left alone.
    let text = std::fs::read_to_string(&config_path)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("enabled = ") {
                "enabled = []\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config_path, text)?;
    let config = crate::config::load(&config_path)?;
    let log = std::fs::File::create(scratch.dir.join("serve.log"))?;
    let child = Command::new(&exe)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting serve")?;
    let pid = child.id();
    scratch.children.push(child);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = config.api_socket();
    let ready = rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok((200, _)) = crate::api::client::get(&socket, "/healthz").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    if !ready {
        let log = std::fs::read_to_string(scratch.dir.join("serve.log")).unwrap_or_default();
        bail!("serve did not become ready within 20 s; its log:\n{log}");
    }
    let rss_after_start = rss_bytes(pid)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss_bytes(pid)?;

    let bar = indicatif::ProgressBar::new(requests as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("status requests {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut lat: Vec<u64> = rt.block_on(async {
        let mut lat = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            match crate::api::client::get(&socket, "/v1/status").await {
                Ok((200, _)) => {}
                Ok((code, body)) => {
                    bail!("status answered {code}: {}", String::from_utf8_lossy(&body))
                }
                Err(e) => return Err(e.into()),
            }
            lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            bar.inc(1);
        }
        Ok::<_, anyhow::Error>(lat)
    })?;
    bar.finish_and_clear();
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let rss_after_requests = rss_bytes(pid)?;

    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    if let Some(c) = scratch.children.last_mut() {
        c.wait()?;
    }
    let shutdown_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);

    let (baseline_name, baseline_rss) = python_baseline(&mut scratch);

    let (x86_default, arm_default) = default_binaries(&exe);
    let binaries = vec![
        binary("x86_64", x86.or(x86_default)),
        binary("aarch64", arm.or(arm_default)),
    ];
    let f = Footprint {
        rss_after_start_bytes: rss_after_start,
        rss_idle_bytes: rss_idle,
        rss_after_requests_bytes: rss_after_requests,
        requests,
        request_p50_us: pct(50),
        request_p99_us: pct(99),
        shutdown_ms,
        baseline_name,
        baseline_rss_bytes: baseline_rss,
        binaries,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        print!("{}", report(&f));
    }
    Ok(0)
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_048_576.0)
}

fn verdict(value: u64, target: u64) -> String {
    format!(
        "{:.2}× target {} ({})",
        value as f64 / target as f64,
        mb(target),
        if value <= target { "met" } else { "MISSED" }
    )
}

fn report(f: &Footprint) -> String {
    let mut out = String::from("footprint\n");
    let vs_baseline = |v: u64| match f.baseline_rss_bytes {
        Some(b) if b > 0 => format!(", {:.2}× {}", v as f64 / b as f64, f.baseline_name),
        _ => String::new(),
    };
    out.push_str(&format!(
        "  serve RSS after start         {:>9}\n",
        mb(f.rss_after_start_bytes)
    ));
    out.push_str(&format!(
        "  serve RSS idle (1 s)          {:>9}   {}{}\n",
        mb(f.rss_idle_bytes),
        verdict(f.rss_idle_bytes, RSS_TARGET),
        vs_baseline(f.rss_idle_bytes)
    ));
    out.push_str(&format!(
        "  serve RSS after {:>5} status  {:>9}   {}{}\n",
        f.requests,
        mb(f.rss_after_requests_bytes),
        verdict(f.rss_after_requests_bytes, RSS_TARGET),
        vs_baseline(f.rss_after_requests_bytes)
    ));
    out.push_str(&format!(
        "  status request latency        p50 {} µs, p99 {} µs\n  shutdown after SIGTERM        {} ms\n",
        f.request_p50_us, f.request_p99_us, f.shutdown_ms
    ));
    match f.baseline_rss_bytes {
        Some(b) => out.push_str(&format!(
            "  baseline: {} idle RSS {:>9}\n",
            f.baseline_name,
            mb(b)
        )),
        None => out.push_str(&format!("  baseline: {} not available\n", f.baseline_name)),
    }
    for b in &f.binaries {
        match b.bytes {
            Some(n) => out.push_str(&format!(
                "  binary {:<8} {:>9}   {}  {}{}\n",
                b.arch,
                mb(n),
                verdict(n, SIZE_TARGET),
                b.path,
                if b.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", b.note)
                }
            )),
            None => out.push_str(&format!(
                "  binary {:<8} not measured: {}\n",
                b.arch, b.note
            )),
        }
    }
    out
}

/// Python's http.server, idle: what a minimal interpreted service costs.
fn python_baseline(scratch: &mut Scratch) -> (String, Option<u64>) {
    let name = "python3 http.server".to_owned();
    let Ok(child) = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return (name, None);
    };
    let pid = child.id();
    scratch.children.push(child);
    // Wait for its "Serving HTTP" line, so the interpreter has finished loading.
    if let Some(out) = scratch.children.last_mut().and_then(|c| c.stdout.take()) {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_bytes(pid).ok();
    (name, rss)
}

/// This binary for its own architecture; the other from the cross target dir.
fn default_binaries(exe: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    // <target>/release/commonscloud or <target>/<triple>/release/commonscloud
    let profile_dir = exe.parent();
    let target = profile_dir.and_then(Path::parent).map(|t| {
        if t.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("-linux-"))
        {
            t.parent().unwrap_or(t).to_owned()
        } else {
            t.to_owned()
        }
    });
    let cross = |triple: &str| {
        target
            .as_ref()
            .map(|t| t.join(triple).join("release/commonscloud"))
    };
    let native_release = target.as_ref().map(|t| t.join("release/commonscloud"));
    match std::env::consts::ARCH {
        "aarch64" => (cross("x86_64-unknown-linux-gnu"), Some(exe.to_owned())),
        _ => (
            native_release
                .filter(|p| p.exists())
                .or(Some(exe.to_owned())),
            cross("aarch64-unknown-linux-gnu"),
        ),
    }
}

/// Whether an ELF64 file still has a symbol table section (SHT_SYMTAB).
fn has_symtab(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C))
    else {
        return false;
    };
    let Ok(shoff) = usize::try_from(shoff) else {
        return false;
    };
    (0..usize::from(shnum)).any(|i| u32_at(shoff + i * usize::from(shentsize) + 4) == Some(2))
}

fn binary(arch: &'static str, path: Option<PathBuf>) -> Binary {
    let Some(path) = path else {
        return Binary {
            arch,
            path: String::new(),
            bytes: None,
            stripped: None,
            note: "no path".into(),
        };
    };
    let shown = path.display().to_string();
    let Ok(bytes) = std::fs::read(&path) else {
        return Binary {
            arch,
            path: shown,
            bytes: None,
            stripped: None,
            note: format!(
                "{} not found; build it with `cargo build --release{}`",
                path.display(),
                if arch == "aarch64" {
                    " --target aarch64-unknown-linux-gnu"
                } else {
                    ""
                }
            ),
        };
    };
    // ELF e_machine: 0x3E x86-64, 0xB7 AArch64.
    let machine = bytes.get(18..20).map(|m| u16::from_le_bytes([m[0], m[1]]));
    let want = if arch == "aarch64" { 0xB7 } else { 0x3E };
    let stripped = !has_symtab(&bytes);
    let mut note = String::new();
    if machine != Some(want) {
        note = format!("not an {arch} ELF binary");
    } else if !stripped {
        note = "not stripped: a debug build? use the release profile".into();
    }
    Binary {
        arch,
        path: shown,
        bytes: Some(bytes.len() as u64),
        stripped: Some(stripped),
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symtab_detection_reads_section_headers() {
        // This test binary is built with debug info and symbols.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_symtab(&me));
        // A stripped copy has none.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("stripped");
        std::fs::write(&copy, &me).unwrap();
        let ok = Command::new("strip").arg(&copy).status().unwrap();
        assert!(ok.success());
        assert!(!has_symtab(&std::fs::read(&copy).unwrap()));
        assert!(!has_symtab(b"not an elf"));
    }
}
