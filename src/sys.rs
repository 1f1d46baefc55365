//! Facts about the host: programs, disk, memory, clock, listening ports;
//! and the one way files are replaced (`write_atomic`).
//! Adapter: reads /proc and asks the kernel; judges nothing (see `doctor`).

use std::path::{Path, PathBuf};

/// Looks in PATH and in the sbin directories, which a normal user's PATH
/// often lacks although slapd lives there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Free and total bytes of the filesystem holding the state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Free space on the state dir, or on its nearest existing parent before the
/// first start has created it.
pub fn disk(state_dir: &Path) -> Result<Disk, String> {
    let existing = state_dir
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| format!("no existing parent of {}", state_dir.display()))?;
    let st = nix::sys::statvfs::statvfs(existing)
        .map_err(|e| format!("statvfs {}: {e}", existing.display()))?;
    let frag = st.fragment_size() as u64;
    Ok(Disk {
        path: existing.display().to_string(),
        free_bytes: st.blocks_available() as u64 * frag,
        total_bytes: st.blocks() as u64 * frag,
    })
}

pub fn mem_total_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// `adjtimex` in read-only mode: TIME_ERROR means the kernel has no sync source.
/// Swap configured, from /proc/meminfo.
pub fn swap_total_mb() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

pub fn clock_synced() -> Option<bool> {
    // SAFETY: a zeroed timex with modes = 0 only reads the kernel's state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    match state {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}

/// TCP ports something listens on, from /proc/net/tcp and tcp6.
/// Whether `ip` is an address of this host (a bridge's gateway once Docker
/// made the bridge): binding a socket to it works only then.
pub fn address_exists(ip: std::net::IpAddr) -> bool {
    std::net::TcpListener::bind((ip, 0)).is_ok()
}

pub fn listening_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            ports.extend(parse_listening(&text));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Lines look like `0: 0100007F:0CB9 00000000:0000 0A …`; state 0A is LISTEN.
fn parse_listening(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Replaces `path` through a temporary file in the same directory and a
/// rename, so a reader sees the old content or the new, never half; the
/// file is synced before the rename and the directory after it, so after a
/// crash the name holds the old content or the new, whole. Makes a
/// missing directory: 0700 when the file is private (`mode` gives nothing to
/// group or others), 0755 otherwise. The error names the step that failed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let step = |what: &'static str| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(if mode & 0o077 == 0 { 0o700 } else { 0o755 })
            .create(dir)
            .map_err(step("creating its directory"))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(step("creating the temporary file"))?;
    f.write_all(bytes).map_err(step("writing"))?;
    f.sync_all().map_err(step("syncing"))?;
    std::fs::rename(&tmp, path).map_err(step("renaming into place"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        // A file system that cannot sync a directory has nothing to sync.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r.map_err(step("syncing its directory")),
    }
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`); a failure is
/// logged, never fatal.
pub fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listeners() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n   0: 0100007F:0CB9 00000000:0000 0A 00000000:00000000\n   1: 0100007F:A1B2 0100007F:0CB9 01 00000000:00000000\n";
        assert_eq!(parse_listening(text), vec![3257]);
    }

    #[test]
    fn finds_a_listener_we_open() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_ports().contains(&port));
        drop(l);
    }
}
