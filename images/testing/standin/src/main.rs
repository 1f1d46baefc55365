//! One static multi-call program behind every stand-in image in
//! `images/testing/`: it mimics the upstream images' contracts (see
//! `/work/shared/CONTRACTS.md`) closely enough that a wrong key, a wrong
//! order or a wrong user fails, loudly, with the reason on stderr.
//!
//! It dispatches on the name it was called by (the images symlink each
//! applet to it), or on its first argument when called as `standin`.

mod codec;
mod collabora;
mod curl;
mod discourse;
mod nccore; // Nextcloud's versions, config.php, database records, upgrade
mod net;
mod nextcloud;
mod occ;
mod postgres; // a client login to the real server
mod proxy;
mod redis; // a client PING to the real server
mod state;

use std::path::Path;

/// A failure: the exit code and what goes to stderr.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

pub type R<T> = Result<T, Fail>;

/// Fails with exit code 1.
pub fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(Fail {
        code: 1,
        msg: msg.into(),
    })
}

/// Fails with `code`.
pub fn fail_code<T>(code: i32, msg: impl Into<String>) -> R<T> {
    Err(Fail {
        code,
        msg: msg.into(),
    })
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail {
            code: 1,
            msg: e.to_string(),
        }
    }
}

/// Adds context to an io error.
pub trait Ctx<T> {
    fn ctx(self, what: impl std::fmt::Display) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl std::fmt::Display) -> R<T> {
        self.map_err(|e| Fail {
            code: 1,
            msg: format!("{what}: {e}"),
        })
    }
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

extern "C" fn quit(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// As PID 1 in a container, a process without handlers ignores SIGTERM
/// and SIGINT: `docker stop` would wait for its timeout.
fn exit_on_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls _exit.
        unsafe {
            libc::signal(sig, quit as *const () as libc::sighandler_t);
        }
    }
}

/// An environment variable, `None` when unset (set but empty is `Some("")`).
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The images' `file_env`: `NAME` or the contents of the file `NAME_FILE`
/// (trailing newlines dropped, as `$(cat file)` does). Both set is an
/// error; an unreadable file too.
pub fn file_env(name: &str) -> R<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (env(name), env(&file_var)) {
        (Some(v), Some(f)) if !v.is_empty() && !f.is_empty() => fail(format!(
            "error: both {name} and {file_var} are set (but are exclusive)"
        )),
        (Some(v), _) if !v.is_empty() => Ok(Some(v)),
        (_, Some(f)) if !f.is_empty() => {
            let text = std::fs::read_to_string(&f).map_err(|e| Fail {
                code: 1,
                msg: format!("error: {file_var}={f} cannot be read: {e}"),
            })?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        // Set but empty counts as unset, as in the images' scripts.
        _ => Ok(None),
    }
}

/// Replaces this process with `args` (like the entrypoints' `exec "$@"`),
/// optionally as another uid/gid.
pub fn exec(args: &[String], uid: Option<(u32, u32)>) -> R<()> {
    use std::os::unix::process::CommandExt;
    let Some((prog, rest)) = args.split_first() else {
        return fail("nothing to exec");
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    if let Some((u, g)) = uid {
        // std drops the supplementary groups when root changes uid.
        cmd.gid(g).uid(u);
    }
    let e = cmd.exec();
    fail(format!("exec {prog}: {e}"))
}

/// `chown -R uid:gid path`, like the entrypoints do as root.
pub fn chown_r(path: &Path, uid: u32, gid: u32) -> R<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .ctx(format!("chown {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_r(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Which of `(bit, name)` are not in this process's capability bounding
/// set (`CapBnd` in /proc/self/status), as a comma list; `None` if all are.
pub fn missing_caps(caps: &[(u32, &str)]) -> R<Option<String>> {
    let status = std::fs::read_to_string("/proc/self/status").ctx("reading /proc/self/status")?;
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| Fail {
            code: 1,
            msg: "no CapBnd in /proc/self/status".into(),
        })?;
    let missing: Vec<&str> = caps
        .iter()
        .filter(|(bit, _)| bnd & (1 << bit) == 0)
        .map(|(_, n)| *n)
        .collect();
    Ok((!missing.is_empty()).then(|| missing.join(",")))
}

/// The uid and gid of a user in /etc/passwd.
pub fn user_ids(name: &str) -> R<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ctx("reading /etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            let uid = f[2].parse().ctx("uid in /etc/passwd")?;
            let gid = f[3].parse().ctx("gid in /etc/passwd")?;
            return Ok((uid, gid));
        }
    }
    fail(format!("no user {name} in /etc/passwd"))
}

/// Writes a line to stderr with the applet's name.
pub fn log(applet: &str, msg: impl std::fmt::Display) {
    eprintln!("{applet}: {msg}");
}

fn run(applet: &str, args: &[String]) -> R<i32> {
    match applet {
        // Nextcloud (official apache image).
        "entrypoint.sh" | "nextcloud-entrypoint" => nextcloud::entrypoint(args),
        "apache2-foreground" => nextcloud::serve(args),
        "cron.sh" => nextcloud::cron(args),
        "php" => nextcloud::php(args),
        "occ" => occ::main(Path::new("/var/www/html"), args),
        "nextcloud-version-php" => nextcloud::version_php(args),
        // Collabora Online.
        "start-collabora-online.sh" | "collabora" | "coolwsd" => collabora::main(args),
        // Discourse (web-only).
        "boot" | "discourse" => discourse::boot(args),
        "rails" => discourse::rails(args),
        "discourse-version" => discourse::build_version(args),
        "curl" => curl::main(args),
        other => fail(format!(
            "standin: unknown applet {other:?} (entrypoint.sh, apache2-foreground, cron.sh, php, occ, \
             nextcloud-version-php, start-collabora-online.sh, boot, rails, discourse-version, curl)"
        )),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let called = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let (applet, args) = if called == "standin" {
        match argv.get(1) {
            Some(a) => (a.clone(), &argv[2..]),
            None => {
                eprintln!("usage: standin <applet> [args...]");
                std::process::exit(2);
            }
        }
    } else {
        (called, &argv[1..])
    };
    exit_on_signals();
    let code = match run(&applet, args) {
        Ok(code) => code,
        Err(f) => {
            if !f.msg.is_empty() {
                eprintln!("{}", f.msg);
            }
            f.code
        }
    };
    std::process::exit(code);
}
