//! Runs slapd: bootstrap with `slapadd`, start, re-adopt after a daemon
//! restart, and restart with backoff when it dies.
//!
//! slapd is the data plane: it is started daemonized (its own process, not
//! tied to our stdio or lifetime), tracked through its pidfile, and re-adopted
//! by a restarted daemon through that pidfile and its ldapi socket, so binds
//! go on while the supervisor restarts. Adapter: it runs processes and reports;
//! what to configure comes from [`super::tree`].

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::DirectoryError;
use super::tree::{self, SlapdSettings};
use crate::config::Config;

/// Argon2 cost for stored passwords (OWASP's second recommended setting).
pub const ARGON2_PARAMS: &str = "m=19456 t=2 p=1";

/// Where everything of one slapd instance lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `<state_dir>/ldap`
    pub ldap_dir: PathBuf,
    /// `<state_dir>/ldap/slapd.d`: cn=config.
    pub config_dir: PathBuf,
    /// `<state_dir>/ldap/data`: the mdb database.
    pub data_dir: PathBuf,
    pub pid_file: PathBuf,
    pub ldapi: PathBuf,
    /// slapd's own messages when it fails to start.
    pub log_file: PathBuf,
}

impl Paths {
    pub fn new(config: &Config) -> Self {
        let ldap_dir = config.paths.state_dir.join("ldap");
        Self {
            config_dir: ldap_dir.join("slapd.d"),
            data_dir: ldap_dir.join("data"),
            log_file: ldap_dir.join("slapd.log"),
            ldap_dir,
            pid_file: config.paths.runtime_dir.join("slapd.pid"),
            ldapi: config.paths.runtime_dir.join("ldapi"),
        }
    }

    /// `ldapi://` URL of the socket, percent-encoded as RFC 4516 wants.
    pub fn ldapi_url(&self) -> String {
        let mut url = String::from("ldapi://");
        for b in self.ldapi.as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                url.push(char::from(*b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url
    }
}

fn program(name: &'static str) -> Result<PathBuf, DirectoryError> {
    crate::sys::find_program(name).ok_or(DirectoryError::MissingProgram { name })
}

/// What bootstrap found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// A new instance was created.
    Created,
    /// One existed; nothing was touched.
    Existing,
}

/// Creates the instance unless one exists. Idempotent and crash-safe: the
/// config is built in a temporary directory and renamed into place last, so
/// a crash leaves either no instance (and the next run starts over) or a whole
/// one, never a half-made one mistaken for real.
pub fn bootstrap(config: &Config, paths: &Paths) -> Result<Bootstrap, DirectoryError> {
    if paths.config_dir.join("cn=config.ldif").exists() {
        return Ok(Bootstrap::Existing);
    }
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |source| DirectoryError::Io { what, source }
    };
    std::fs::create_dir_all(&paths.ldap_dir).map_err(io("creating", &paths.ldap_dir))?;
    set_mode(&paths.ldap_dir, 0o700);
    // No config means no instance: whatever data a crashed bootstrap left is
    // not anybody's, so it goes.
    let tmp = paths.ldap_dir.join("slapd.d.bootstrap");
    for dir in [&tmp, &paths.data_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("clearing", dir))?;
        }
    }
    std::fs::create_dir_all(&paths.data_dir).map_err(io("creating", &paths.data_dir))?;
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let settings = SlapdSettings {
        suffix: config.suffix().to_string(),
        data_dir: paths.data_dir.display().to_string(),
        pid_file: paths.pid_file.display().to_string(),
        args_file: paths.pid_file.with_extension("args").display().to_string(),
        root_dn: tree::peercred_dn(uid, gid),
        module_dir: "/usr/lib/ldap".into(),
        schema_dir: "/etc/ldap/schema".into(),
        argon2_params: ARGON2_PARAMS.into(),
    };
    let config_ldif = paths.ldap_dir.join("bootstrap-config.ldif");
    std::fs::write(&config_ldif, tree::config_ldif(&settings))
        .map_err(io("writing", &config_ldif))?;
    let base_ldif = paths.ldap_dir.join("bootstrap-base.ldif");
    let base = tree::base_ldif(
        config.suffix().as_str(),
        &config.collective.slug,
        config.collective.name.as_str(),
        config.console_host().as_str(),
    );
    std::fs::write(&base_ldif, base).map_err(io("writing", &base_ldif))?;
    let slapadd = program("slapadd")?;
    run(Command::new(&slapadd)
        .arg("-n0")
        .arg("-F")
        .arg(&tmp)
        .arg("-l")
        .arg(&config_ldif))?;
    run(Command::new(&slapadd)
        .args(["-n1", "-w", "-q"])
        .arg("-F")
        .arg(&tmp)
        .arg("-l")
        .arg(&base_ldif))?;
    std::fs::rename(&tmp, &paths.config_dir).map_err(io("installing", &paths.config_dir))?;
    let _ = std::fs::remove_file(&config_ldif);
    let _ = std::fs::remove_file(&base_ldif);
    Ok(Bootstrap::Created)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> Result<Vec<u8>, DirectoryError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| DirectoryError::Io {
        what: format!("running {shown}"),
        source,
    })?;
    if !out.status.success() {
        return Err(DirectoryError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// The pid in the pidfile if that process is alive and is a slapd serving
/// this instance's config.
pub fn running_pid(paths: &Paths) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&paths.pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == paths.config_dir.as_os_str().as_encoded_bytes());
    ours.then_some(pid)
}

/// The TCP URLs a running slapd was started with (its `-h` without the
/// ldapi socket), from /proc: compared with [`wanted_urls`]. `None` once the
/// process is gone (a zombie has an empty command line), so a death is never
/// mistaken for a listener change.
pub fn listen_urls(pid: i32) -> Option<Vec<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None;
    }
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(
        args.iter()
            .position(|a| a == "-h")
            .and_then(|i| args.get(i + 1))
            .map(|h| {
                h.split_whitespace()
                    .filter(|u| !u.starts_with("ldapi://"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The TCP URLs slapd should listen on: `directory.listen`, plus LDAPS on
/// the apps' bridge gateway once that address exists on this host and
/// slapd has its certificate for it ([`super::tls::ready`]). Never plain
/// LDAP on the bridge.
pub fn wanted_urls(config: &Config, paths: &Paths) -> Vec<String> {
    let mut urls: Vec<String> = config
        .directory
        .listen
        .iter()
        .map(|u| u.to_string())
        .collect();
    if let Some(url) = config.apps_ldap_url()
        && crate::sys::address_exists(std::net::IpAddr::V4(config.apps.subnet.gateway()))
        && super::tls::ready(config, paths)
        && !urls.contains(&url)
    {
        urls.push(url);
    }
    urls
}

/// Starts slapd unless ours already runs (then it is adopted). Returns its pid
/// once it answers on ldapi.
pub async fn start_or_adopt(config: &Config, paths: &Paths) -> Result<(i32, bool), DirectoryError> {
    if let Some(pid) = running_pid(paths)
        && super::ldap::ping(paths).await.is_ok()
    {
        return Ok((pid, true));
    }
    let busy: Vec<String> = {
        let listening = crate::sys::listening_ports();
        config
            .ports()
            .into_iter()
            .filter(|(key, port)| *key == "directory.listen" && listening.contains(port))
            .map(|(_, p)| p.to_string())
            .collect()
    };
    if !busy.is_empty() {
        return Err(DirectoryError::PortBusy {
            ports: busy.join(", "),
        });
    }
    let _ = std::fs::remove_file(&paths.ldapi);
    let mut urls = vec![paths.ldapi_url()];
    urls.extend(wanted_urls(config, paths));
    let log = std::fs::File::create(&paths.log_file).map_err(|source| DirectoryError::Io {
        what: format!("creating {}", paths.log_file.display()),
        source,
    })?;
    let slapd = program("slapd")?;
    // `-d none` keeps slapd in the foreground and prints fatal errors (a busy
    // port, a bad config) to its log file, so a failed start is seen at once
    // and explained. It runs in a session of its own, so neither a Ctrl-C on
    // the daemon's terminal nor the daemon's exit reaches it: when the daemon
    // goes, slapd is re-parented and keeps serving.
    let mut cmd = tokio::process::Command::new(slapd);
    cmd.args(["-d", "none", "-h"])
        .arg(urls.join(" "))
        .arg("-F")
        .arg(&paths.config_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|source| DirectoryError::Io {
            what: "log file".into(),
            source,
        })?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|source| DirectoryError::Io {
        what: "starting slapd".into(),
        source,
    })?;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&paths.log_file).unwrap_or_default();
            return Err(DirectoryError::StartFailed {
                status: status.to_string(),
                log: log.trim().to_owned(),
            });
        }
        if let Some(pid) = running_pid(paths)
            && super::ldap::ping(paths).await.is_ok()
        {
            // Dropping the handle neither kills nor forgets slapd: tokio
            // reaps it if it ever exits, and `wait_exit` watches it.
            return Ok((pid, false));
        }
        if tokio::time::Instant::now() >= until {
            return Err(DirectoryError::NotAnswering {
                socket: paths.ldapi.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The data as LDIF, through `slapcat` (safe while slapd runs: mdb readers do
/// not block the writer). Holds password hashes: treat it as a secret.
pub fn export(paths: &Paths) -> Result<Vec<u8>, DirectoryError> {
    let slapcat = program("slapcat")?;
    let mut cmd = Command::new(slapcat);
    cmd.args(["-n1", "-o", "ldif-wrap=no", "-F"])
        .arg(&paths.config_dir);
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| DirectoryError::Io {
        what: format!("running {shown}"),
        source,
    })?;
    if !out.status.success() {
        return Err(DirectoryError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Resolves when the process exits. Uses a pidfd, which works for processes
/// that are not our children (an adopted slapd).
pub async fn wait_exit(pid: i32) -> Result<(), DirectoryError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // Already gone.
        return Ok(());
    }
    // SAFETY: the kernel just gave us this fd; we own it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns `owned`, so the fd stays open and the same for
    // its whole lifetime.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
    }
    .map_err(|e| DirectoryError::Io {
        what: "watching slapd".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let _ = afd.readable().await;
    Ok(())
}

/// Stops our slapd (SIGTERM, then waits up to `deadline`). For
/// `commonscloud directory stop` and tests; the daemon itself never stops it
/// on its own shutdown.
pub async fn stop(paths: &Paths, deadline: Duration) -> Result<bool, DirectoryError> {
    let Some(pid) = running_pid(paths) else {
        return Ok(false);
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    if tokio::time::timeout(deadline, wait_exit(pid))
        .await
        .is_err()
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_exit(pid).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead slapd (here a zombie, not yet reaped) has no listeners rather
    /// than "none": the directory task must count it as a death, not plan a
    /// listener restart (a race CI once hit).
    #[test]
    fn a_dead_process_has_no_listen_urls() {
        // `read` is a builtin, so the shell stays (no exec) with these
        // arguments on its command line until it is killed.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "read x",
                "sh",
                "-h",
                "ldapi://%2Fx ldap://127.0.0.1:1389",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let wanted = Some(vec!["ldap://127.0.0.1:1389".to_owned()]);
        // Between fork and exec the command line is the test's own.
        let seen = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            listen_urls(pid) == wanted
        });
        assert!(seen, "{:?}", listen_urls(pid));
        child.kill().unwrap();
        // Not reaped yet: a zombie until `wait`.
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            listen_urls(pid).is_none()
        });
        assert!(gone, "a zombie still shows listeners");
        child.wait().unwrap();
        assert_eq!(listen_urls(pid), None);
    }

    #[test]
    fn ldapi_url_escapes_the_path() {
        let p = Paths {
            ldap_dir: "/s/ldap".into(),
            config_dir: "/s/ldap/slapd.d".into(),
            data_dir: "/s/ldap/data".into(),
            pid_file: "/r/slapd.pid".into(),
            ldapi: "/run/common cloud/ldapi".into(),
            log_file: "/s/ldap/slapd.log".into(),
        };
        assert_eq!(p.ldapi_url(), "ldapi://%2Frun%2Fcommon%20cloud%2Fldapi");
    }
}
