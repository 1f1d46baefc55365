//! `commonscloud doctor`: turns observed facts into checks, each with a fix.
//!
//! Pure: the CLI gathers the [`Facts`]; this module only judges them, so every
//! verdict is unit-tested without a machine in a given state.

use serde::Serialize;

use crate::config::Config;
use crate::docker::EngineInfo;
use crate::status::{MIN_DOCKER_API, api_version};
pub use crate::sys::Disk;

/// The earliest date a correct clock can show: this release's date
/// (2026-11-01T00:00:00Z). A box without RTC that boots in 1970 fails here.
pub const RELEASE_UNIX: i64 = 1_793_491_200;

/// Free space below which the state dir is a failure.
const DISK_FAIL_BYTES: u64 = 1 << 30;
/// Free space below which it is a warning.
const DISK_WARN_BYTES: u64 = 5 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn symbol(self) -> &'static str {
        match self {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Fail => "✗",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub message: String,
    /// What to do; empty when nothing needs doing.
    pub fix: String,
}

/// Everything doctor looks at, gathered by the CLI.
#[derive(Debug)]
pub struct Facts {
    pub config_path: String,
    pub config: Result<Config, String>,
    pub docker: Result<EngineInfo, String>,
    /// Paths of slapd and slapadd, if found.
    pub slapd: Option<String>,
    pub slapadd: Option<String>,
    pub disk: Result<Disk, String>,
    pub mem_total_mb: Option<u64>,
    pub swap_total_mb: Option<u64>,
    /// `x86_64` or `aarch64`.
    pub arch: &'static str,
    pub now_unix: i64,
    /// The kernel's view of clock synchronisation, when it could be read.
    pub clock_synced: Option<bool>,
    /// Ports the config needs, each with its key and whether something listens.
    pub ports: Vec<(&'static str, u16, bool)>,
    /// Whether the daemon answered on its socket.
    pub daemon: Result<(), String>,
    /// Federation as the daemon reports it, when the box is federated.
    pub federation: Option<FederationFacts>,
}

/// What `alliance status` says, for the doctor's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationFacts {
    pub url: String,
    pub up: bool,
    pub last_error: Option<String>,
    pub pending: i64,
    /// When the oldest waiting change was made.
    pub oldest_pending_at: Option<i64>,
    pub failed: i64,
    /// Why the daemon will not make the link at all (what to change).
    pub refused: Option<String>,
    /// A held refresh, not yet confirmed: (entries it would delete, of
    /// them kept, the local copy).
    pub hold: Option<(i64, i64, i64)>,
}

fn check(name: &'static str, level: Level, message: String, fix: &str) -> Check {
    Check {
        name,
        level,
        message,
        fix: fix.to_owned(),
    }
}

/// Every check, in a stable order.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    use Level::*;
    let mut out = Vec::new();
    out.push(match &f.config {
        Result::Ok(c) => check(
            "config",
            Ok,
            format!("{} is valid (collective {})", f.config_path, c.collective.slug),
            "",
        ),
        Err(e) => check(
            "config",
            Fail,
            e.clone(),
            "fix the file (`commonscloud config check` shows the effective config), or write one with `commonscloud init`",
        ),
    });
    out.push(match &f.docker {
        Err(e) => check(
            "docker",
            Fail,
            e.clone(),
            "apt install docker.io && systemctl enable --now docker; add the user to the docker group",
        ),
        Result::Ok(info) => match api_version(&info.api_version) {
            Some(v) if v >= MIN_DOCKER_API => check(
                "docker",
                Ok,
                format!(
                    "Docker {} at {}, API {}",
                    info.engine_version, info.socket, info.api_version
                ),
                "",
            ),
            _ => check(
                "docker",
                Fail,
                format!(
                    "Docker {} speaks API {}, older than {}.{}",
                    info.engine_version, info.api_version, MIN_DOCKER_API.0, MIN_DOCKER_API.1
                ),
                "upgrade docker.io (Debian 12 or later)",
            ),
        },
    });
    out.push(match (&f.slapd, &f.slapadd) {
        (Some(d), Some(a)) => check("slapd", Ok, format!("{d}, {a}"), ""),
        (d, _) => check(
            "slapd",
            Fail,
            format!(
                "{} not found",
                if d.is_none() { "slapd" } else { "slapadd" }
            ),
            "apt install slapd ldap-utils (the appliance runs its own instance; `systemctl disable --now slapd` stops Debian's)",
        ),
    });
    let profile = f.config.as_ref().ok().map(Config::profile);
    out.push(match &f.disk {
        Err(e) => check(
            "disk",
            Fail,
            e.clone(),
            "create the state dir or fix paths.state_dir",
        ),
        Result::Ok(d) => {
            let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
            let msg = format!(
                "{:.1} GiB free of {:.1} GiB on {}",
                gib(d.free_bytes),
                gib(d.total_bytes),
                d.path
            );
            let min_total = profile.as_ref().map_or(0, |p| p.min_disk_gb << 30);
            if d.free_bytes < DISK_FAIL_BYTES {
                check(
                    "disk",
                    Fail,
                    msg,
                    "free space on that disk or move paths.state_dir to a larger one",
                )
            } else if d.free_bytes < DISK_WARN_BYTES {
                check(
                    "disk",
                    Warn,
                    msg,
                    "less than 5 GiB free: plan more storage before users upload files",
                )
            } else if d.total_bytes < min_total * 9 / 10 {
                check(
                    "disk",
                    Warn,
                    format!(
                        "{msg}; the hardware profile expects at least {} GB",
                        min_total >> 30
                    ),
                    "use a larger disk or a smaller hardware profile",
                )
            } else {
                check("disk", Ok, msg, "")
            }
        }
    });
    if let (Some(have), Some(p)) = (f.swap_total_mb, &profile) {
        out.push(if have + 64 < p.swap_mb {
            check(
                "swap",
                Warn,
                format!(
                    "{have} MB swap; profile {} advises {} MB. Storage: {}",
                    p.name, p.swap_mb, p.storage
                ),
                &format!(
                    "add a swap file: fallocate -l {}M /swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile, and list it in /etc/fstab",
                    p.swap_mb
                ),
            )
        } else {
            check(
                "swap",
                Ok,
                format!("{have} MB swap. Storage: {}", p.storage),
                "",
            )
        });
    }
    out.push(match (f.mem_total_mb, &profile) {
        (None, _) => check("memory", Warn, "cannot read /proc/meminfo".into(), ""),
        (Some(have), None) => check(
            "memory",
            Ok,
            format!("{have} MB RAM (no valid profile to compare)"),
            "",
        ),
        (Some(have), Some(p)) => {
            let msg = format!("{have} MB RAM; profile {} expects {} MB", p.name, p.ram_mb);
            if have < p.ram_mb / 2 {
                check(
                    "memory",
                    Fail,
                    msg,
                    "choose a hardware profile for this board in [hardware] profile",
                )
            } else if have < p.ram_mb * 85 / 100 {
                check(
                    "memory",
                    Warn,
                    msg,
                    "the apps' memory limits assume more RAM: choose a smaller hardware profile",
                )
            } else if p.arch != f.arch {
                check(
                    "memory",
                    Warn,
                    format!("{msg}, but it is for {} and this is {}", p.arch, f.arch),
                    "choose a profile for this architecture",
                )
            } else if let Err(why) = p.fit(
                &f.config
                    .as_ref()
                    .map(|c| c.apps.enabled.clone())
                    .unwrap_or_default(),
            ) {
                check(
                    "memory",
                    Warn,
                    format!("{msg}; {why}"),
                    "disable an app in [apps] enabled, or use a bigger board",
                )
            } else {
                check("memory", Ok, msg, "")
            }
        }
    });
    out.push(if f.now_unix < RELEASE_UNIX {
        check(
            "clock",
            Fail,
            format!("the clock says {} (Unix seconds), before this release was made", f.now_unix),
            "set the time: enable systemd-timesyncd (`timedatectl set-ntp true`); boards without RTC need network time before the appliance starts",
        )
    } else {
        match f.clock_synced {
            Some(true) => check("clock", Ok, "synchronised".into(), ""),
            Some(false) => check(
                "clock",
                Warn,
                "the kernel says the clock is not synchronised".into(),
                "enable network time: `timedatectl set-ntp true` (TLS, tokens and releases need a right clock)",
            ),
            None => check("clock", Warn, "cannot read the clock's sync state".into(), ""),
        }
    });
    let busy: Vec<String> = f
        .ports
        .iter()
        .filter(|(_, _, used)| *used)
        .map(|(key, port, _)| format!("{port} ({key})"))
        .collect();
    out.push(if f.ports.is_empty() {
        check(
            "ports",
            Warn,
            "no valid config, ports not checked".into(),
            "",
        )
    } else if busy.is_empty() {
        let all: Vec<String> = f.ports.iter().map(|(_, p, _)| p.to_string()).collect();
        check("ports", Ok, format!("{} free", all.join(", ")), "")
    } else {
        check(
            "ports",
            Fail,
            format!("in use: {}", busy.join(", ")),
            "find the owner with `ss -ltnp`, stop it, or change that key in the config",
        )
    });
    out.push(match &f.daemon {
        Result::Ok(()) => check("daemon", Ok, "running and healthy".into(), ""),
        Err(e) => check("daemon", Warn, e.clone(), "systemctl start commonscloud"),
    });
    if let Some(fed) = &f.federation {
        out.push(alliance(fed, f.now_unix));
    }
    out
}

/// Changes that wait longer than this for the alliance are worth a look.
const OUTBOX_STALE_SECS: i64 = 3600;

fn alliance(f: &FederationFacts, now: i64) -> Check {
    use Level::*;
    let waiting = match f.pending {
        0 => "nothing waits".to_owned(),
        n => format!("{n} change(s) wait"),
    };
    if let Some(why) = &f.refused {
        return check(
            "alliance",
            Fail,
            format!("the daemon will not link to {}: {why}", f.url),
            "change [alliance] in the config as the message says (or join again with an ldaps:// URL or --starttls), then `systemctl reload commonscloud`",
        );
    }
    if let Some((asked, kept, copy)) = f.hold {
        return check(
            "alliance",
            Warn,
            format!(
                "the alliance's last refresh would delete {asked} of the {copy} entries copied here ({kept} of them homed here, which stay in any case); nothing was deleted, and the alliance's changes wait"
            ),
            "check the alliance's directory (its ACLs, a restore, the suffix) with its admins; if those deletions are right, `commonscloud alliance confirm-deletions` lists them and `--yes` lets them go",
        );
    }
    if !f.up {
        return check(
            "alliance",
            Warn,
            format!(
                "the alliance at {} cannot be reached{}; logins and local work go on from this box, {waiting}",
                f.url,
                f.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            &format!(
                "check the network path to {} (link, firewall, DNS) and the password file; `commonscloud alliance status` shows the last error",
                f.url
            ),
        );
    }
    if f.failed > 0 {
        return check(
            "alliance",
            Warn,
            format!(
                "linked to {}; the alliance refused {} change(s)",
                f.url, f.failed
            ),
            "`commonscloud alliance status --json` lists them (state \"failed\"); most are changes the alliance leaves to another box, such as a person homed there",
        );
    }
    if let Some(at) = f.oldest_pending_at
        && now - at > OUTBOX_STALE_SECS
    {
        return check(
            "alliance",
            Warn,
            format!(
                "linked to {}, yet a change has waited {} min: the replay is stuck",
                f.url,
                (now - at) / 60
            ),
            "see the daemon's log (journalctl -u commonscloud) for federation errors",
        );
    }
    check(
        "alliance",
        Ok,
        format!("linked to {}; {waiting}", f.url),
        "",
    )
}

/// 0 when all is well, 1 with warnings, 2 with failures.
pub fn exit_code(checks: &[Check]) -> i32 {
    match checks.iter().map(|c| c.level).max() {
        Some(Level::Fail) => 2,
        Some(Level::Warn) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn good() -> Facts {
        let config = crate::config::parse(
            "[collective]\nname='Q'\nslug='quimper'\ndomain='q.example.org'\nadmin_email='a@q.example.org'\n[hardware]\nprofile='minipc-x86-8gb'\n",
            Path::new("a.toml"),
        )
        .unwrap();
        Facts {
            config_path: "a.toml".into(),
            ports: config
                .ports()
                .into_iter()
                .map(|(k, p)| (k, p, false))
                .collect(),
            config: Ok(config),
            docker: Ok(EngineInfo {
                socket: "/var/run/docker.sock".into(),
                engine_version: "28.2.2".into(),
                api_version: "1.50".into(),
            }),
            slapd: Some("/usr/sbin/slapd".into()),
            slapadd: Some("/usr/sbin/slapadd".into()),
            disk: Ok(Disk {
                path: "/var/lib".into(),
                free_bytes: 100 << 30,
                total_bytes: 200 << 30,
            }),
            mem_total_mb: Some(7800),
            swap_total_mb: Some(1024),
            arch: "x86_64",
            now_unix: RELEASE_UNIX + 86_400,
            clock_synced: Some(true),
            daemon: Ok(()),
            federation: None,
        }
    }

    fn level_of(f: &Facts, name: &str) -> Level {
        evaluate(f)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .level
    }

    #[test]
    fn healthy_box_exits_zero() {
        let checks = evaluate(&good());
        assert!(checks.iter().all(|c| c.level == Level::Ok), "{checks:#?}");
        assert_eq!(exit_code(&checks), 0);
        let names: Vec<_> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "config", "docker", "slapd", "disk", "swap", "memory", "clock", "ports", "daemon"
            ]
        );
    }

    #[test]
    fn the_alliance_check_says_what_is_wrong_and_what_goes_on() {
        let mut f = good();
        let linked = FederationFacts {
            url: "ldaps://dir.alliance.net".into(),
            up: true,
            ..Default::default()
        };
        f.federation = Some(linked.clone());
        let c = evaluate(&f).pop().unwrap();
        assert_eq!((c.name, c.level), ("alliance", Level::Ok));
        f.federation = Some(FederationFacts {
            up: false,
            last_error: Some("connection refused".into()),
            pending: 2,
            ..linked.clone()
        });
        let c = evaluate(&f).pop().unwrap();
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.message.contains(
                "(connection refused); logins and local work go on from this box, 2 change(s) wait"
            ),
            "{}",
            c.message
        );
        assert!(c.fix.contains("ldaps://dir.alliance.net"));
        f.federation = Some(FederationFacts {
            failed: 1,
            ..linked.clone()
        });
        assert!(
            evaluate(&f)
                .pop()
                .unwrap()
                .message
                .contains("refused 1 change(s)")
        );
        f.federation = Some(FederationFacts {
            hold: Some((85, 55, 90)),
            ..linked.clone()
        });
        let c = evaluate(&f).pop().unwrap();
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.message.contains("would delete 85 of the 90"),
            "{}",
            c.message
        );
        assert!(
            c.fix.contains("commonscloud alliance confirm-deletions"),
            "{}",
            c.fix
        );
        f.federation = Some(FederationFacts {
            up: false,
            refused: Some("… set `insecure = true` under [alliance] …".into()),
            ..linked.clone()
        });
        let c = evaluate(&f).pop().unwrap();
        assert_eq!(c.level, Level::Fail);
        assert!(c.message.contains("insecure = true"), "{}", c.message);
        f.federation = Some(FederationFacts {
            pending: 1,
            oldest_pending_at: Some(f.now_unix - 7200),
            ..linked
        });
        assert!(
            evaluate(&f)
                .pop()
                .unwrap()
                .message
                .contains("waited 120 min")
        );
    }

    #[test]
    fn too_little_swap_is_a_warning_with_the_commands() {
        let mut f = good();
        f.config = crate::config::parse(
            "[collective]\nname='Q'\nslug='quimper'\ndomain='q.example.org'\nadmin_email='a@q.example.org'\n[hardware]\nprofile='rpi4-4gb'\n",
            std::path::Path::new("t.toml"),
        )
        .map_err(|e| e.to_string());
        f.swap_total_mb = Some(100);
        let checks = evaluate(&f);
        let swap = checks.iter().find(|c| c.name == "swap").unwrap();
        assert_eq!(swap.level, Level::Warn);
        assert!(swap.message.contains("advises 2048 MB") && swap.message.contains("SSD"));
        assert!(swap.fix.contains("mkswap"));
        f.swap_total_mb = Some(2048);
        assert_eq!(level_of(&f, "swap"), Level::Ok);
    }

    #[test]
    fn failures_carry_a_fix_and_exit_two() {
        let mut f = good();
        f.slapd = None;
        let checks = evaluate(&f);
        let slapd = checks.iter().find(|c| c.name == "slapd").unwrap();
        assert_eq!(slapd.level, Level::Fail);
        assert!(slapd.fix.contains("apt install slapd"));
        assert_eq!(exit_code(&checks), 2);
    }

    #[test]
    fn each_check_can_fail_or_warn() {
        let mut f = good();
        f.docker = Err("no socket".into());
        assert_eq!(level_of(&f, "docker"), Level::Fail);
        f = good();
        f.docker.as_mut().unwrap().api_version = "1.40".into();
        assert_eq!(level_of(&f, "docker"), Level::Fail);
        f = good();
        f.disk.as_mut().unwrap().free_bytes = 512 << 20;
        assert_eq!(level_of(&f, "disk"), Level::Fail);
        f.disk.as_mut().unwrap().free_bytes = 3 << 30;
        assert_eq!(level_of(&f, "disk"), Level::Warn);
        f = good();
        f.mem_total_mb = Some(3000);
        assert_eq!(level_of(&f, "memory"), Level::Fail);
        f.mem_total_mb = Some(6000);
        assert_eq!(level_of(&f, "memory"), Level::Warn);
        f = good();
        f.arch = "aarch64";
        assert_eq!(level_of(&f, "memory"), Level::Warn);
        f = good();
        f.now_unix = 86_400;
        assert_eq!(level_of(&f, "clock"), Level::Fail);
        f = good();
        f.clock_synced = Some(false);
        assert_eq!(level_of(&f, "clock"), Level::Warn);
        assert_eq!(exit_code(&evaluate(&f)), 1);
        f = good();
        f.ports[1].2 = true;
        let ports = evaluate(&f)
            .into_iter()
            .find(|c| c.name == "ports")
            .unwrap();
        assert_eq!(ports.level, Level::Fail);
        assert!(
            ports.message.contains("443 (front_door.https)"),
            "{}",
            ports.message
        );
        f = good();
        f.config = Err("a.toml:3:1: key `x`: unknown field".into());
        assert_eq!(level_of(&f, "config"), Level::Fail);
        f = good();
        f.daemon = Err("not running".into());
        assert_eq!(level_of(&f, "daemon"), Level::Warn);
    }
}
