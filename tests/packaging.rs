//! Packaging: the systemd unit, sysusers.d and tmpfiles.d files, the installer
//! (`provision/install.sh`), the Debian maintainer scripts and the `.deb`.
//!
//! Every test works in its own temporary directory and never changes the live
//! system: the installer runs with `--dry-run` or `--root`, and the maintainer
//! scripts run against stand-ins for the tools they call.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, built by cargo for this test run.
const BIN: &str = env!("CARGO_BIN_EXE_commonscloud");

const UNIT: &str = "commonscloud.service";
const FRONT_DOOR: &str = "commonscloud-front-door.service";
const APT_PACKAGES: [&str; 4] = ["docker.io", "slapd", "ldap-utils", "restic"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn install_sh() -> PathBuf {
    repo().join("provision/install.sh")
}

/// A fresh directory per test, readable by everyone so that the installer can
/// also be run as an unprivileged user.
fn tempdir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("commonscloud-packaging-{name}-"))
        .tempdir()
        .expect("create a temporary directory");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", show(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    let out = run_ok(Command::new("id").arg("-u"));
    stdout(&out).trim() == "0"
}

/// A command that runs as an unprivileged user: `nobody` through setpriv when
/// the tests run as root, the current user otherwise.
fn unprivileged(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// `root` joined with an absolute path of the target system.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn host_arch() -> String {
    let out = run_ok(Command::new("dpkg").arg("--print-architecture"));
    stdout(&out).trim().to_owned()
}

// --- the files the installer and the package ship -----------------------------

/// One file the appliance installs: where it goes, where it comes from, its mode.
struct Shipped {
    dest: String,
    src: PathBuf,
    mode: u32,
}

fn sorted_glob(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Everything `install.sh` and the `.deb` put on the system, from the source
/// tree at `src`.
fn shipped(src: &Path, binary: &Path) -> Vec<Shipped> {
    let file = |dest: &str, from: PathBuf, mode: u32| Shipped {
        dest: dest.to_owned(),
        src: from,
        mode,
    };
    let mut files = vec![
        file("/usr/bin/commonscloud", binary.to_owned(), 0o755),
        file(
            "/usr/lib/systemd/system/commonscloud.service",
            src.join("units/commonscloud.service"),
            0o644,
        ),
        file(
            "/usr/lib/systemd/system/commonscloud-front-door.service",
            src.join("units/commonscloud-front-door.service"),
            0o644,
        ),
        file(
            "/usr/lib/sysusers.d/commonscloud.conf",
            src.join("units/commonscloud.sysusers.conf"),
            0o644,
        ),
        file(
            "/usr/lib/tmpfiles.d/commonscloud.conf",
            src.join("units/commonscloud.tmpfiles.conf"),
            0o644,
        ),
        file(
            "/usr/share/commonscloud/appliance.example.toml",
            src.join("provision/appliance.example.toml"),
            0o644,
        ),
    ];
    let profiles = sorted_glob(&src.join("hardware"), "toml");
    assert!(
        !profiles.is_empty(),
        "no hardware/*.toml profiles in {}",
        src.display()
    );
    for profile in profiles {
        let name = profile.file_name().unwrap().to_str().unwrap().to_owned();
        files.push(file(
            &format!("/usr/share/commonscloud/hardware/{name}"),
            profile,
            0o644,
        ));
    }
    if src.join("README.md").is_file() {
        files.push(file(
            "/usr/share/doc/commonscloud/README.md",
            src.join("README.md"),
            0o644,
        ));
    }
    for doc in sorted_glob(&src.join("docs"), "md") {
        let name = doc.file_name().unwrap().to_str().unwrap().to_owned();
        files.push(file(
            &format!("/usr/share/doc/commonscloud/{name}"),
            doc,
            0o644,
        ));
    }
    files
}

/// The directories the tmpfiles.d file declares: path, mode, owner, group.
const DIRECTORIES: [(&str, u32, &str, &str); 4] = [
    ("/etc/commonscloud", 0o750, "root", "commonscloud"),
    (
        "/etc/commonscloud/secrets",
        0o700,
        "commonscloud",
        "commonscloud",
    ),
    (
        "/var/lib/commonscloud",
        0o751,
        "commonscloud",
        "commonscloud",
    ),
    (
        "/var/lib/commonscloud/front-door",
        0o2750,
        "commonscloud",
        "commonscloud-front-door",
    ),
];

/// The front door's own user (and group), from sysusers.d.
const DOOR_USER: &str = "commonscloud-front-door";

/// A copy of the parts of the source tree the installer reads, in a directory
/// of its own, readable by everyone, with no binary in it.
fn staged_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let copy = |rel: &str| {
        let to = src.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(repo().join(rel), &to).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
    };
    copy("provision/install.sh");
    copy("provision/appliance.example.toml");
    copy("units/commonscloud.service");
    copy("units/commonscloud-front-door.service");
    copy("units/commonscloud.sysusers.conf");
    copy("units/commonscloud.tmpfiles.conf");
    for profile in sorted_glob(&repo().join("hardware"), "toml") {
        copy(&format!(
            "hardware/{}",
            profile.file_name().unwrap().to_str().unwrap()
        ));
    }
    if repo().join("README.md").is_file() {
        copy("README.md");
    }
    for doc in sorted_glob(&repo().join("docs"), "md") {
        copy(&format!(
            "docs/{}",
            doc.file_name().unwrap().to_str().unwrap()
        ));
    }
    for sub in ["", "provision", "units", "hardware", "docs"] {
        if src.join(sub).is_dir() {
            fs::set_permissions(src.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    src
}

// --- snapshots of a tree -------------------------------------------------------

/// What can change about one path: kind, mode, owner, size, mtime, content.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i128,
    content: Vec<u8>,
}

fn entry(path: &Path) -> Option<Entry> {
    let meta = fs::symlink_metadata(path).ok()?;
    let (kind, content) = if meta.file_type().is_symlink() {
        (
            "symlink",
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else if meta.is_dir() {
        ("dir", Vec::new())
    } else {
        ("file", fs::read(path).unwrap_or_default())
    };
    Some(Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        content,
    })
}

/// Every path under `root` (included) with its [`Entry`].
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut tree = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(path) = todo.pop() {
        let Some(e) = entry(&path) else { continue };
        if e.kind == "dir" {
            for child in fs::read_dir(&path).unwrap() {
                todo.push(child.unwrap().path());
            }
        }
        tree.insert(path, e);
    }
    tree
}

fn assert_same_tree(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let changed: Vec<String> = paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| {
            let what = |e: Option<&Entry>| match e {
                None => "absent".to_owned(),
                Some(e) => format!(
                    "{} {:o} {}:{} mtime {} {} bytes",
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.mtime_ns,
                    e.content.len()
                ),
            };
            format!(
                "{}: {} -> {}",
                p.display(),
                what(before.get(p)),
                what(after.get(p))
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "the tree changed:\n{}",
        changed.join("\n")
    );
}

// --- installer output ------------------------------------------------------------

/// The action lines of an installer run: everything before "Next steps:",
/// without the `#` notes.
fn actions(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .take_while(|l| !l.is_empty() && !l.starts_with("Next steps"))
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn assert_has_line(lines: &[String], wanted: &[String], out: &Output) {
    assert!(
        lines.iter().any(|l| wanted.contains(l)),
        "no line is one of {wanted:?}: {}",
        show(out)
    );
}

/// Verbs of lines that say the installer changed something.
const CHANGING: [&str; 10] = [
    "installed ",
    "restarted ",
    "created ",
    "updated ",
    "enabled ",
    "disabled ",
    "stopped ",
    "reloaded ",
    "would ",
    "absent ",
];

fn passwd_entry(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(under(root, file)).ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

fn id_in(root: &Path, file: &str, name: &str) -> u32 {
    if name == "root" {
        return 0;
    }
    let fields = passwd_entry(root, file, name)
        .unwrap_or_else(|| panic!("{name} is not in {file} under {}", root.display()));
    fields[2].parse().unwrap()
}

/// The user, its group, its membership of docker and the three directories,
/// as sysusers.d and tmpfiles.d declare them, exist under `root`.
fn assert_user_and_directories(root: &Path) {
    let user = passwd_entry(root, "/etc/passwd", "commonscloud").expect("user commonscloud");
    assert_eq!(user[5], "/var/lib/commonscloud", "home of {user:?}");
    assert!(user[6].ends_with("/nologin"), "shell of {user:?}");
    let uid: u32 = user[2].parse().unwrap();
    assert!(
        uid > 0 && uid < 1000,
        "commonscloud is not a system user: {user:?}"
    );
    let group = passwd_entry(root, "/etc/group", "commonscloud").expect("group commonscloud");
    assert_eq!(user[3], group[2], "primary group of {user:?}");
    let docker = passwd_entry(root, "/etc/group", "docker").expect("group docker");
    assert!(
        docker[3].split(',').any(|m| m == "commonscloud"),
        "commonscloud is not a member of docker: {docker:?}"
    );
    // The front door's user: a system user in no group but its own (not
    // commonscloud's, whose members may use the API socket; not docker).
    let door = passwd_entry(root, "/etc/passwd", DOOR_USER).expect("user commonscloud-front-door");
    assert!(door[6].ends_with("/nologin"), "shell of {door:?}");
    let door_uid: u32 = door[2].parse().unwrap();
    assert!(
        door_uid > 0 && door_uid < 1000,
        "not a system user: {door:?}"
    );
    let door_group = passwd_entry(root, "/etc/group", DOOR_USER).expect("its group");
    assert_eq!(door[3], door_group[2], "primary group of {door:?}");
    for g in ["commonscloud", "docker"] {
        let members = passwd_entry(root, "/etc/group", g).unwrap();
        assert!(
            !members[3].split(',').any(|m| m == DOOR_USER),
            "{DOOR_USER} is a member of {g}: {members:?}"
        );
    }
    for (path, want_mode, owner, group) in DIRECTORIES {
        let dir = under(root, path);
        let meta = fs::symlink_metadata(&dir).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(meta.is_dir(), "{path} is not a directory");
        assert_eq!(meta.mode() & 0o7777, want_mode, "mode of {path}");
        assert_eq!(
            meta.uid(),
            id_in(root, "/etc/passwd", owner),
            "owner of {path}"
        );
        assert_eq!(
            meta.gid(),
            id_in(root, "/etc/group", group),
            "group of {path}"
        );
    }
}

// --- the unit ----------------------------------------------------------------------

/// `[section] key` -> values, in order, from a unit file.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        settings
            .entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    settings
}

/// Runs `systemd-analyze verify` and returns its output and the stderr lines
/// that are about our unit.
fn verify(unit: &Path) -> (Output, Vec<String>) {
    // --recursive-errors=no: the exit status reflects our unit only, not
    // the quality of the host's docker.service or targets. Complaints about
    // our unit are caught from stderr below in any case.
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(unit)
        .current_dir(unit.parent().unwrap()));
    let complaints = stderr(&out)
        .lines()
        .filter(|l| l.contains("commonscloud"))
        .map(str::to_owned)
        .collect();
    (out, complaints)
}

/// `systemd-analyze verify` passes on the unit `name` as shipped, whose
/// `ExecStart=` must be exactly `exec`; and the same check sees a misspelt
/// key in it.
fn assert_unit_verifies(name: &str, exec: &str) {
    let original = fs::read_to_string(repo().join("units").join(name)).unwrap();
    assert_eq!(
        original.lines().filter(|l| *l == exec).count(),
        1,
        "{name} must hold exactly one `{exec}` line"
    );
    // verify refuses an ExecStart= whose binary does not exist, and
    // /usr/bin/commonscloud is not installed where the tests run. The copy
    // starts the binary built for this test run instead. That is the only
    // line that differs (asserted below), so everything else is verified as
    // shipped, including ExecReload='s /bin/kill and the dependencies on the
    // host's real units.
    let copy = original.replace(
        exec,
        &exec.replace(
            "ExecStart=/usr/bin/commonscloud",
            &format!("ExecStart={BIN}"),
        ),
    );
    let differing: Vec<(&str, &str)> = original
        .lines()
        .zip(copy.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(original.lines().count(), copy.lines().count());
    assert_eq!(differing.len(), 1, "{differing:?}");

    let dir = tempdir("verify");
    let unit = dir.path().join(name);
    fs::write(&unit, &copy).unwrap();
    let (out, complaints) = verify(&unit);
    assert!(
        out.status.success(),
        "systemd-analyze verify {name}: {}",
        show(&out)
    );
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains about {name}: {complaints:#?}"
    );

    // The same check must see a mistake: a misspelt key only warns, and
    // still exits 0, so it is the stderr check that catches it.
    let broken = copy.replace("ProtectSystem=strict", "ProtectSytem=strict");
    assert_ne!(broken, copy);
    fs::write(&unit, &broken).unwrap();
    let (out, complaints) = verify(&unit);
    assert!(
        complaints.iter().any(|l| l.contains("ProtectSytem")),
        "a misspelt key in {name} went unnoticed: {}",
        show(&out)
    );
}

#[test]
fn service_unit_passes_systemd_analyze_verify() {
    assert_unit_verifies(UNIT, "ExecStart=/usr/bin/commonscloud serve");
}

#[test]
fn front_door_unit_passes_systemd_analyze_verify() {
    assert_unit_verifies(
        FRONT_DOOR,
        "ExecStart=/usr/bin/commonscloud front-door --dir /var/lib/commonscloud/front-door",
    );
}

#[test]
fn service_unit_has_the_required_settings() {
    let text = fs::read_to_string(repo().join("units/commonscloud.service")).unwrap();
    let unit = parse_unit(&text);
    let values = |section: &str, key: &str| -> Vec<String> {
        unit.get(&(section.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let expect = |section: &str, key: &str, want: &str| {
        assert_eq!(
            values(section, key).last().map(String::as_str),
            Some(want),
            "[{section}] {key}"
        );
    };
    let words = |section: &str, key: &str| -> BTreeSet<String> {
        values(section, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect()
    };

    expect(
        "Unit",
        "Documentation",
        "file:///usr/share/doc/commonscloud/README.md",
    );
    for target in [
        "network-online.target",
        "docker.service",
        "time-sync.target",
    ] {
        assert!(words("Unit", "After").contains(target), "After= {target}");
    }
    for target in ["network-online.target", "docker.service"] {
        assert!(words("Unit", "Wants").contains(target), "Wants= {target}");
    }
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/bin/commonscloud serve"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "30s"),
        ("Restart", "on-failure"),
        ("RestartSec", "5s"),
        ("TimeoutStopSec", "30s"),
        ("User", "commonscloud"),
        ("Group", "commonscloud"),
        ("SupplementaryGroups", "docker"),
        ("StateDirectory", "commonscloud"),
        ("StateDirectoryMode", "0751"),
        ("RuntimeDirectory", "commonscloud"),
        ("RuntimeDirectoryMode", "0750"),
        ("RuntimeDirectoryPreserve", "yes"),
        ("ConfigurationDirectory", "commonscloud"),
        ("ConfigurationDirectoryMode", "0750"),
        (
            "Environment",
            "COMMONSCLOUD_CONFIG=/etc/commonscloud/appliance.toml",
        ),
        ("UMask", "0027"),
        ("LimitNOFILE", "16384"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
        // Empty: no capability at all.
        ("CapabilityBoundingSet", ""),
    ] {
        expect("Service", key, want);
    }
    assert_eq!(
        words("Service", "RestrictAddressFamilies"),
        ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
            .map(str::to_owned)
            .into(),
    );
    expect("Install", "WantedBy", "multi-user.target");
}

/// Every unit in `units/` is an asset of the `.deb`, installed by
/// `install.sh` and handled by the maintainer scripts; checked from the
/// sources, so it holds before any package is built.
#[test]
fn every_service_unit_is_shipped_installed_and_handled() {
    let units: Vec<String> = sorted_glob(&repo().join("units"), "service")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(units, [FRONT_DOOR, UNIT], "units/*.service");
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let install = fs::read_to_string(install_sh()).unwrap();
    let scripts: Vec<(&str, String)> = ["postinst", "prerm", "postrm"]
        .iter()
        .map(|s| {
            (
                *s,
                fs::read_to_string(repo().join("provision/debian").join(s)).unwrap(),
            )
        })
        .collect();
    let shipped: Vec<String> = shipped(repo(), Path::new(BIN))
        .into_iter()
        .map(|f| f.dest)
        .collect();
    for unit in &units {
        assert!(
            cargo.contains(&format!(
                "[\"units/{unit}\", \"usr/lib/systemd/system/\", \"644\"]"
            )),
            "{unit} is not an asset in Cargo.toml's [package.metadata.deb]"
        );
        assert!(
            shipped.contains(&format!("/usr/lib/systemd/system/{unit}")),
            "{unit} is not in this test's list of shipped files"
        );
        assert!(install.contains(unit), "install.sh does not name {unit}");
        for (name, text) in &scripts {
            assert!(text.contains(unit), "{name} does not name {unit}");
        }
    }
}

type UnitSettings = BTreeMap<(String, String), Vec<String>>;

fn read_unit(name: &str) -> UnitSettings {
    parse_unit(&fs::read_to_string(repo().join("units").join(name)).unwrap())
}

/// The last value of `[section] key`, as systemd takes it.
fn last(unit: &UnitSettings, section: &str, key: &str) -> Option<String> {
    unit.get(&(section.to_owned(), key.to_owned()))
        .and_then(|v| v.last().cloned())
}

/// Every word of every `[section] key` line.
fn words_of(unit: &UnitSettings, section: &str, key: &str) -> BTreeSet<String> {
    unit.get(&(section.to_owned(), key.to_owned()))
        .into_iter()
        .flatten()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// Seconds of a systemd time span written as `45s`, `2min` or `1min 30s`.
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|w| {
            let digits: String = w.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span {span:?}"));
            match &w[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                other => panic!("unit {other:?} in {span:?}"),
            }
        })
        .sum()
}

#[test]
fn front_door_unit_binds_low_ports_outlives_the_supervisor_and_is_hardened_alike() {
    let door = read_unit(FRONT_DOOR);
    let supervisor = read_unit(UNIT);
    let expect = |key: &str, want: &str| {
        assert_eq!(
            last(&door, "Service", key).as_deref(),
            Some(want),
            "[Service] {key}"
        );
    };
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/usr/bin/commonscloud front-door --dir /var/lib/commonscloud/front-door",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "always"),
        ("User", DOOR_USER),
        ("Group", DOOR_USER),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("LimitNOFILE", "16384"),
    ] {
        expect(key, want);
    }
    assert_eq!(
        last(&door, "Unit", "Documentation"),
        last(&supervisor, "Unit", "Documentation")
    );
    assert_eq!(
        last(&door, "Install", "WantedBy").as_deref(),
        Some("multi-user.target")
    );

    // systemd waits for the drain before it kills.
    let stop = seconds(&last(&door, "Service", "TimeoutStopSec").expect("TimeoutStopSec"));
    let drain = commonscloud::frontdoor::DRAIN_TIMEOUT.as_secs();
    assert!(
        stop >= drain + 5,
        "TimeoutStopSec={stop}s leaves the {drain} s drain no margin"
    );

    // Neither unit stops, restarts or requires the other: the data plane
    // lives through supervisor restarts and upgrades.
    for (unit, other) in [(&door, UNIT), (&supervisor, FRONT_DOOR)] {
        for key in [
            "PartOf",
            "BindsTo",
            "Requires",
            "Requisite",
            "Upholds",
            "PropagatesStopTo",
            "StopPropagatedFrom",
            "PropagatesReloadTo",
            "ReloadPropagatedFrom",
            "Conflicts",
        ] {
            assert!(
                !words_of(unit, "Unit", key).contains(other),
                "[Unit] {key}= names {other}"
            );
        }
    }

    // It reads the published directory, not the config.
    assert!(
        !door.contains_key(&("Service".to_owned(), "Environment".to_owned())),
        "the front door needs no COMMONSCLOUD_CONFIG"
    );
    let published =
        commonscloud::frontdoor::Published::new(Path::new("/var/lib/commonscloud/front-door"));
    let (paths, _) = front_door_reads();
    assert_eq!(paths.published, published, "the example's state_dir");
    // Its cap of connections fits its descriptors.
    let nofile: u64 = last(&door, "Service", "LimitNOFILE")
        .unwrap()
        .parse()
        .unwrap();
    let limits = commonscloud::frontdoor::limits::Limits::resolve(&Default::default(), nofile);
    assert_eq!(
        limits.connections,
        commonscloud::config::FrontDoorLimits::CONNECTIONS as usize
    );
    assert!(limits.fds_needed() <= nofile);

    // The supervisor's hardening, setting for setting.
    for key in [
        "UMask",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "ProtectProc",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RemoveIPC",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "SystemCallErrorNumber",
    ] {
        let want = last(&supervisor, "Service", key);
        assert!(want.is_some(), "the supervisor has no {key}=");
        assert_eq!(last(&door, "Service", key), want, "[Service] {key}");
    }
    let families = words_of(&door, "Service", "RestrictAddressFamilies");
    assert_eq!(
        families,
        ["AF_UNIX", "AF_INET", "AF_INET6"].map(str::to_owned).into()
    );
    assert!(families.is_subset(&words_of(&supervisor, "Service", "RestrictAddressFamilies")));

    // It only reads. No directory of its own either: a RuntimeDirectory=
    // would be deleted when it stops, under the supervisor's sockets and
    // slapd's.
    for key in [
        "ReadWritePaths",
        "StateDirectory",
        "RuntimeDirectory",
        "ConfigurationDirectory",
        "CacheDirectory",
        "LogsDirectory",
        "SupplementaryGroups",
        "WatchdogSec",
    ] {
        assert!(
            !door.contains_key(&("Service".to_owned(), key.to_owned())),
            "[Service] {key}= in the front door's unit"
        );
    }
    // Hidden as well as barred by their modes: the Docker socket, the
    // configuration and secrets, the runtime directory (API socket, ldapi).
    let hidden = words_of(&door, "Service", "InaccessiblePaths");
    for path in ["/run/docker.sock", "/etc/commonscloud", "/run/commonscloud"] {
        assert!(
            hidden.contains(&format!("-{path}")) || hidden.contains(path),
            "{path} is not in InaccessiblePaths= {hidden:?}"
        );
    }
    assert!(
        !hidden
            .iter()
            .any(|p| published.dir.starts_with(p.trim_start_matches('-'))),
        "the published directory is hidden from the front door: {hidden:?}"
    );
}

/// The paths the front door reads with the shipped example's `[paths]`.
fn front_door_reads() -> (commonscloud::frontdoor::Paths, PathBuf) {
    let example = repo().join("provision/appliance.example.toml");
    let config = commonscloud::config::load(&example).expect("the example configuration");
    (
        commonscloud::frontdoor::Paths::new(&config),
        PathBuf::from("/etc/commonscloud/appliance.toml"),
    )
}

// --- sysusers.d and tmpfiles.d ---------------------------------------------------------

/// Runs systemd-sysusers and systemd-tmpfiles with the shipped files into
/// `root`, checking they do not complain.
fn stage_user_and_directories(root: &Path) {
    // systemd-sysusers needs the target's /etc to take its lock in.
    fs::create_dir_all(root.join("etc")).unwrap();
    for (tool, file, extra) in [
        ("systemd-sysusers", "units/commonscloud.sysusers.conf", None),
        (
            "systemd-tmpfiles",
            "units/commonscloud.tmpfiles.conf",
            Some("--create"),
        ),
    ] {
        // A relative path would be looked up inside --root; an absolute one
        // is read from the host.
        let conf = repo().join(file);
        let out = run_ok(
            Command::new(tool)
                .arg("--root")
                .arg(root)
                .args(extra)
                .arg(&conf),
        );
        let err = stderr(&out);
        let about_conf: Vec<&str> = err.lines().filter(|l| l.contains(".conf")).collect();
        assert!(
            about_conf.is_empty(),
            "{tool} complains about {file}: {about_conf:#?}"
        );
    }
}

#[test]
fn sysusers_and_tmpfiles_create_the_user_and_directories() {
    let dir = tempdir("sysusers");
    stage_user_and_directories(dir.path());
    assert_user_and_directories(dir.path());
}

/// The front door runs as its own user with no capability to bypass file
/// modes: every directory on the way to what it reads, as tmpfiles.d and
/// the supervisor's unit make them, lets that user through; the runtime
/// directory (API socket, ldapi), the configuration and the secrets do not.
#[test]
fn the_front_door_user_reaches_what_it_reads_and_nothing_of_the_supervisors() {
    let dir = tempdir("front-door-reads");
    let root = dir.path();
    stage_user_and_directories(root);
    let door = read_unit(FRONT_DOOR);
    let user = last(&door, "Service", "User").unwrap();
    let uid = id_in(root, "/etc/passwd", &user);
    let gid = id_in(
        root,
        "/etc/group",
        &last(&door, "Service", "Group").unwrap(),
    );
    // Its groups: its own only (systemd adds the user's supplementary ones).
    let groups: Vec<u32> = fs::read_to_string(under(root, "/etc/group"))
        .unwrap()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f[3].split(',').any(|m| m == user))
        .map(|f| f[2].parse().unwrap())
        .chain([gid])
        .collect();
    let searchable = |mode: u32, owner: u32, group: u32| {
        (owner == uid && mode & 0o100 != 0)
            || (groups.contains(&group) && mode & 0o010 != 0)
            || mode & 0o001 != 0
    };
    // The supervisor's runtime directory is made by systemd, not tmpfiles.
    let supervisor = read_unit(UNIT);
    let runtime =
        PathBuf::from("/run").join(last(&supervisor, "Service", "RuntimeDirectory").unwrap());
    let runtime_mode = u32::from_str_radix(
        &last(&supervisor, "Service", "RuntimeDirectoryMode").unwrap(),
        8,
    )
    .unwrap();
    let state_mode = u32::from_str_radix(
        &last(&supervisor, "Service", "StateDirectoryMode").unwrap(),
        8,
    )
    .unwrap();
    assert_eq!(
        last(&supervisor, "Service", "User").as_deref(),
        Some("commonscloud")
    );
    let sup_uid = id_in(root, "/etc/passwd", "commonscloud");
    let sup_gid = id_in(root, "/etc/group", "commonscloud");
    // The unit and tmpfiles.d agree on the state directory.
    let state = under(root, "/var/lib/commonscloud");
    assert_eq!(fs::metadata(&state).unwrap().mode() & 0o7777, state_mode);

    let (paths, _) = front_door_reads();
    let reads = [
        paths.published.settings.clone(),
        paths.published.routes.clone(),
        paths.published.local_pair.clone(),
        paths.published.acme_pair.clone(),
        paths.published.challenges.join("token"),
        paths.published.console_socket.clone(),
    ];
    let mut checked = 0;
    for path in &reads {
        for ancestor in path.ancestors().skip(1) {
            let staged = under(root, ancestor.to_str().unwrap());
            // Directories the appliance does not declare are the system's
            // (/var/lib), or made by the supervisor in the published one.
            let Ok(meta) = fs::symlink_metadata(&staged) else {
                continue;
            };
            if ancestor.components().count() <= 2 {
                continue;
            }
            assert!(
                searchable(meta.mode(), meta.uid(), meta.gid()),
                "{} ({:o} {}:{}) bars the front door from {}",
                ancestor.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                path.display()
            );
            checked += 1;
        }
    }
    // The state directory and the published one, for each file.
    assert!(
        checked >= 2 * reads.len(),
        "only {checked} directories checked"
    );
    // What the supervisor makes in the published directory takes its group.
    let published = fs::metadata(under(root, paths.published.dir.to_str().unwrap())).unwrap();
    assert_ne!(published.mode() & 0o2000, 0, "set-group-ID");
    assert_eq!(published.gid(), gid);
    assert_eq!(published.mode() & 0o040, 0o040, "the group reads");

    // Barred: the runtime directory, the configuration, the secrets.
    assert!(
        !searchable(runtime_mode, sup_uid, sup_gid),
        "{} ({runtime_mode:o}) lets the front door reach the API socket and ldapi",
        runtime.display()
    );
    for barred in ["/etc/commonscloud", "/etc/commonscloud/secrets"] {
        let meta = fs::metadata(under(root, barred)).unwrap();
        assert!(
            !searchable(meta.mode(), meta.uid(), meta.gid()),
            "{barred} ({:o}) lets the front door in",
            meta.mode() & 0o7777
        );
    }
}

// --- install.sh ----------------------------------------------------------------------------

#[test]
fn install_script_is_shellcheck_clean() {
    let out = Command::new("shellcheck")
        .arg(install_sh())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run shellcheck ({e}): install the `shellcheck` package (provision/test.sh does)")
        });
    assert!(
        out.status.success(),
        "shellcheck install.sh: {}",
        show(&out)
    );
    let out = run(Command::new("shellcheck").arg(repo().join("provision/alliance/alliance.sh")));
    assert!(
        out.status.success(),
        "shellcheck alliance.sh: {}",
        show(&out)
    );
    let scripts = ["postinst", "prerm", "postrm"].map(|s| repo().join("provision/debian").join(s));
    let out = run(Command::new("shellcheck")
        .args(["--shell=sh"])
        .args(&scripts));
    assert!(
        out.status.success(),
        "shellcheck maintainer scripts: {}",
        show(&out)
    );
}

/// The paths on the live system that the installer would touch, with the
/// dpkg database and the users, to prove a dry run leaves them alone.
fn live_state() -> Vec<(PathBuf, Option<Entry>)> {
    let mut paths: Vec<PathBuf> = shipped(repo(), Path::new(BIN))
        .into_iter()
        .map(|f| PathBuf::from(f.dest))
        .collect();
    paths.extend(
        [
            "/usr/share/commonscloud",
            "/usr/share/commonscloud/hardware",
            "/usr/share/doc/commonscloud",
            "/etc/commonscloud",
            "/etc/commonscloud/appliance.toml",
            "/etc/commonscloud/secrets",
            "/var/lib/commonscloud",
            "/etc/passwd",
            "/etc/group",
            "/var/lib/dpkg/status",
            "/etc/systemd/system/multi-user.target.wants/commonscloud.service",
            "/etc/rc2.d",
        ]
        .map(PathBuf::from),
    );
    let mut state: Vec<(PathBuf, Option<Entry>)> =
        paths.into_iter().map(|p| (p.clone(), entry(&p))).collect();
    // Which distribution slapd links are there (enablement of slapd.service).
    if let Ok(rc) = fs::read_dir("/etc/rc2.d") {
        let mut links: Vec<PathBuf> = rc.map(|e| e.unwrap().path()).collect();
        links.sort();
        state.extend(links.into_iter().map(|p| (p.clone(), entry(&p))));
    }
    state
}

#[test]
fn install_dry_run_lists_every_action_and_changes_nothing() {
    let dir = tempdir("dry-run");
    let src = staged_source(dir.path());
    let binary = dir.path().join("commonscloud");
    fs::copy(BIN, &binary).unwrap();

    let before = live_state();
    // No root needed: run it unprivileged, against the live system.
    let out = run_ok(
        unprivileged("bash")
            .arg(src.join("provision/install.sh"))
            .arg("--dry-run")
            .arg("--binary")
            .arg(&binary),
    );
    let after = live_state();
    for ((path, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "the dry run changed {}", path.display());
    }
    assert_eq!(before.len(), after.len(), "the dry run changed /etc/rc2.d");

    let lines = actions(&out);
    for pkg in APT_PACKAGES {
        assert_has_line(
            &lines,
            &[
                format!("would install package {pkg}"),
                format!("unchanged package {pkg}"),
                format!("unchanged package {pkg} (docker-ce is installed)"),
            ],
            &out,
        );
    }
    for file in shipped(&src, &binary) {
        assert_has_line(
            &lines,
            &[
                format!("would install {}", file.dest),
                format!("unchanged {}", file.dest),
                format!("would chmod {:o} {}", file.mode, file.dest),
            ],
            &out,
        );
    }
    for verb in [
        "installed ",
        "created ",
        "updated ",
        "enabled ",
        "reloaded ",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(verb)),
            "a dry run claims a change: {}",
            show(&out)
        );
    }
    assert!(stdout(&out).contains("commonscloud init"), "{}", show(&out));
    for unit in [UNIT, FRONT_DOOR] {
        assert_has_line(
            &lines,
            &[
                format!("would enable {unit}"),
                format!("unchanged {unit} (enabled)"),
            ],
            &out,
        );
    }

    // Staged into a directory, a dry run does not even create it.
    let root = dir.path().join("root");
    let out = run_ok(
        unprivileged("bash")
            .arg(src.join("provision/install.sh"))
            .args(["--dry-run", "--root"])
            .arg(&root)
            .arg("--binary")
            .arg(&binary),
    );
    assert!(!root.exists(), "the dry run created {}", root.display());
    let lines = actions(&out);
    for file in shipped(&src, &binary) {
        assert!(
            lines.contains(&format!("would install {}", file.dest)),
            "{}: {}",
            file.dest,
            show(&out)
        );
    }
    for user in ["commonscloud", DOOR_USER] {
        assert!(
            lines.contains(&format!("would create user {user} (systemd-sysusers)")),
            "{}",
            show(&out)
        );
    }
    for (path, ..) in DIRECTORIES {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("would create directory {path} "))),
            "{path}: {}",
            show(&out)
        );
    }
    for pkg in APT_PACKAGES {
        assert!(
            lines.contains(&format!("skipped package {pkg} (--root: apt is not run)")),
            "{pkg}: {}",
            show(&out)
        );
    }
}

/// With both units running, a run that would replace the binary restarts
/// the supervisor, then the front door; with them stopped, neither.
#[test]
fn install_dry_run_would_restart_running_units_the_front_door_last() {
    let dir = tempdir("dry-run-restart");
    let src = staged_source(dir.path());
    let binary = dir.path().join("commonscloud");
    fs::copy(BIN, &binary).unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let systemctl = bin.join("systemctl");
    // Our units are enabled and, when SHIM_ACTIVE=1, running; slapd is
    // neither.
    fs::write(
        &systemctl,
        "#!/bin/sh\ncase \"$*\" in\n*slapd*) exit 1 ;;\nis-enabled*) exit 0 ;;\nis-active*) [ \"$SHIM_ACTIVE\" = 1 ] ;;\n*) echo \"unexpected systemctl $*\" >&2; exit 1 ;;\nesac\n",
    )
    .unwrap();
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let dry_run = |active: bool| {
        run_ok(
            unprivileged("bash")
                .arg(src.join("provision/install.sh"))
                .arg("--dry-run")
                .arg("--binary")
                .arg(&binary)
                .env("PATH", &path)
                .env("SHIM_ACTIVE", if active { "1" } else { "0" }),
        )
    };

    let out = dry_run(true);
    let lines = actions(&out);
    let restarts: Vec<&String> = lines.iter().filter(|l| l.contains("restart")).collect();
    if lines.contains(&"unchanged /usr/bin/commonscloud".to_owned())
        && lines
            .iter()
            .all(|l| !l.starts_with("would install /usr/lib/systemd"))
    {
        // This machine has this very build installed: nothing to restart.
        assert!(restarts.is_empty(), "{}", show(&out));
    } else {
        assert_eq!(
            restarts,
            [
                &format!("would restart {UNIT}"),
                &format!("would restart {FRONT_DOOR}")
            ],
            "{}",
            show(&out)
        );
    }
    for unit in [UNIT, FRONT_DOOR] {
        assert!(
            lines.contains(&format!("unchanged {unit} (enabled)")),
            "{unit}: {}",
            show(&out)
        );
    }

    let out = dry_run(false);
    let lines = actions(&out);
    assert!(
        !lines.iter().any(|l| l.contains("restart")),
        "a stopped unit would be restarted: {}",
        show(&out)
    );
}

#[test]
fn install_refuses_to_run_without_root() {
    let dir = tempdir("no-root");
    let src = staged_source(dir.path());
    let binary = dir.path().join("commonscloud");
    fs::copy(BIN, &binary).unwrap();
    let out = run(unprivileged("bash")
        .arg(src.join("provision/install.sh"))
        .arg("--binary")
        .arg(&binary));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("must run as root"), "{}", show(&out));
    assert!(
        actions(&out).is_empty(),
        "it acted before refusing: {}",
        show(&out)
    );
}

#[test]
fn install_into_a_root_twice_installs_then_changes_nothing() {
    let dir = tempdir("root");
    let root = dir.path().join("root");
    // An administrator's configuration, already there: never touched.
    let config = under(&root, "/etc/commonscloud/appliance.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let config_text = "# hand-written\n[collective]\nname = \"Ours\"\n";
    fs::write(&config, config_text).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).unwrap();
    let config_before = entry(&config).unwrap();

    let install = || {
        run_ok(
            Command::new("bash")
                .arg(install_sh())
                .arg("--root")
                .arg(&root)
                .arg("--binary")
                .arg(BIN),
        )
    };

    let first = install();
    let lines = actions(&first);
    let files = shipped(repo(), Path::new(BIN));
    for file in &files {
        assert!(
            lines.contains(&format!("installed {}", file.dest)),
            "{}: {}",
            file.dest,
            show(&first)
        );
        let target = under(&root, &file.dest);
        assert_eq!(
            fs::read(&target).unwrap_or_else(|e| panic!("{}: {e}", target.display())),
            fs::read(&file.src).unwrap(),
            "content of {}",
            file.dest
        );
        assert_eq!(mode(&target), file.mode, "mode of {}", file.dest);
    }
    assert!(
        lines.contains(&"created user commonscloud (member of docker)".to_owned()),
        "{}",
        show(&first)
    );
    assert!(
        lines.contains(&format!("created user {DOOR_USER}")),
        "{}",
        show(&first)
    );
    for unit in [UNIT, FRONT_DOOR] {
        assert!(
            lines.contains(&format!("skipped systemctl enable {unit} (--root)")),
            "{unit}: {}",
            show(&first)
        );
    }
    assert_user_and_directories(&root);
    assert_eq!(
        entry(&config).unwrap(),
        config_before,
        "appliance.toml was touched"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), config_text);
    assert!(
        lines.contains(
            &"unchanged /etc/commonscloud/appliance.toml (an existing configuration is never overwritten)"
                .to_owned()
        ),
        "{}",
        show(&first)
    );
    // Nothing else: no leftover temporary file, nothing outside the list.
    let mut expected: BTreeSet<PathBuf> = files.iter().map(|f| under(&root, &f.dest)).collect();
    for file in [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/.pwd.lock",
        "/etc/commonscloud/appliance.toml",
    ] {
        expected.insert(under(&root, file));
    }
    let present: BTreeSet<PathBuf> = snapshot(&root)
        .into_iter()
        .filter(|(_, e)| e.kind != "dir")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(present, expected, "files under the staging root");

    let before = snapshot(&root);
    let second = install();
    let after = snapshot(&root);
    assert_same_tree(&before, &after);
    let lines = actions(&second);
    for verb in CHANGING {
        let changing: Vec<&String> = lines.iter().filter(|l| l.starts_with(verb)).collect();
        assert!(
            changing.is_empty(),
            "the second run changed something: {changing:?}\n{}",
            show(&second)
        );
    }
    for file in &files {
        assert!(
            lines.contains(&format!("unchanged {}", file.dest)),
            "{}: {}",
            file.dest,
            show(&second)
        );
    }
    assert!(lines.contains(&"unchanged user commonscloud".to_owned()));
    assert!(lines.contains(&format!("unchanged user {DOOR_USER}")));
    for (path, ..) in DIRECTORIES {
        assert!(
            lines.contains(&format!("unchanged directory {path}")),
            "{path}: {}",
            show(&second)
        );
    }
    let acting: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("unchanged ") && !l.starts_with("skipped "))
        .collect();
    assert!(acting.is_empty(), "the second run did: {acting:?}");

    // A file changed behind the installer's back is put back, and only it.
    let unit = under(&root, "/usr/lib/systemd/system/commonscloud.service");
    fs::write(&unit, "[Unit]\n").unwrap();
    fs::set_permissions(
        under(&root, "/usr/share/commonscloud/appliance.example.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let third = install();
    let lines = actions(&third);
    let changed: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("unchanged ") && !l.starts_with("skipped "))
        .collect();
    assert_eq!(
        changed,
        [
            "installed /usr/lib/systemd/system/commonscloud.service",
            "updated mode 644 /usr/share/commonscloud/appliance.example.toml"
        ],
        "{}",
        show(&third)
    );
    assert_eq!(
        fs::read(&unit).unwrap(),
        fs::read(repo().join("units/commonscloud.service")).unwrap()
    );
}

#[test]
fn install_refuses_other_systems_and_architectures() {
    let dir = tempdir("refuse");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    let refused = |extra_path: Option<&Path>| {
        let path = match extra_path {
            Some(p) => format!("{}:{}", p.display(), std::env::var("PATH").unwrap()),
            None => std::env::var("PATH").unwrap(),
        };
        let out = run(Command::new("bash")
            .arg(install_sh())
            .arg("--root")
            .arg(&root)
            .arg("--binary")
            .arg(BIN)
            .env("PATH", path));
        assert!(!out.status.success(), "not refused: {}", show(&out));
        assert!(
            actions(&out).is_empty(),
            "it acted before refusing: {}",
            show(&out)
        );
        stderr(&out)
    };

    // A staged root is judged by its own os-release.
    fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"Fedora Linux 41\"\nID=fedora\nVERSION_ID=41\n",
    )
    .unwrap();
    let err = refused(None);
    assert!(
        err.contains("ID=fedora") && err.contains("is not Debian"),
        "{err}"
    );
    fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nID=raspbian\nID_LIKE=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();

    // dpkg stands in for a 32-bit Raspberry Pi OS, then for a 64-bit system
    // of the other architecture than the binary's.
    let fake = dir.path().join("fakebin");
    fs::create_dir(&fake).unwrap();
    let fake_dpkg = |arch: &str| {
        let dpkg = fake.join("dpkg");
        fs::write(&dpkg, format!("#!/bin/sh\necho {arch}\n")).unwrap();
        fs::set_permissions(&dpkg, fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake_dpkg("armhf");
    let err = refused(Some(&fake));
    assert!(
        err.contains("unsupported architecture 'armhf'") && err.contains("arm64"),
        "{err}"
    );
    let other = if cfg!(target_arch = "aarch64") {
        "amd64"
    } else {
        "arm64"
    };
    fake_dpkg(other);
    let err = refused(Some(&fake));
    assert!(
        err.contains(&format!("is not a Linux {other} executable")),
        "{err}"
    );
    // Nothing was staged.
    let staged: Vec<PathBuf> = snapshot(&root).into_keys().collect();
    assert_eq!(
        staged,
        [root.clone(), root.join("etc"), root.join("etc/os-release")]
    );

    // The real os-release of a Raspberry Pi OS passes, on the real dpkg.
    let out = run_ok(
        Command::new("bash")
            .arg(install_sh())
            .args(["--dry-run", "--root"])
            .arg(&root)
            .arg("--binary")
            .arg(BIN),
    );
    assert!(
        actions(&out).contains(&"would install /usr/bin/commonscloud".to_owned()),
        "{}",
        show(&out)
    );
}

#[test]
fn install_finds_the_binary_or_says_how_to_get_one() {
    let dir = tempdir("find-binary");
    let src = staged_source(dir.path());
    let script = src.join("provision/install.sh");
    let empty = dir.path().join("elsewhere");
    fs::create_dir(&empty).unwrap();
    let install = |root: &Path, target_dir: &Path| {
        run(Command::new("bash")
            .arg(&script)
            .arg("--root")
            .arg(root)
            .current_dir(&empty)
            .env("CARGO_TARGET_DIR", target_dir))
    };

    // No binary anywhere: a clear error, and nothing done.
    let target_dir = dir.path().join("target");
    let root = dir.path().join("root-none");
    let out = install(&root, &target_dir);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no commonscloud binary found") && err.contains("--binary PATH"),
        "{err}"
    );
    assert!(actions(&out).is_empty(), "{}", show(&out));

    // $CARGO_TARGET_DIR/release/commonscloud is the last resort.
    fs::create_dir_all(target_dir.join("release")).unwrap();
    fs::copy(BIN, target_dir.join("release/commonscloud")).unwrap();
    let root = dir.path().join("root-target");
    let out = install(&root, &target_dir);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        fs::read(under(&root, "/usr/bin/commonscloud")).unwrap(),
        fs::read(BIN).unwrap()
    );

    // A binary next to the script wins over it.
    let next_to = src.join("provision/commonscloud");
    fs::write(&next_to, b"\x7fELF not really").unwrap();
    fs::set_permissions(&next_to, fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("root-next-to");
    let out = install(&root, &target_dir);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains(&format!("{} is not a Linux", next_to.display())),
        "the binary next to the script was not the one chosen: {}",
        show(&out)
    );
    fs::copy(BIN, &next_to).unwrap();
    fs::remove_file(target_dir.join("release/commonscloud")).unwrap();
    let out = install(&root, &target_dir);
    assert!(out.status.success(), "{}", show(&out));
    assert!(under(&root, "/usr/bin/commonscloud").is_file());
}

// --- maintainer scripts ---------------------------------------------------------------

/// Runs a maintainer script with stand-ins for the tools it calls, which log
/// their arguments instead of acting. Returns the output and the log.
fn maintainer_script(
    name: &str,
    args: &[&str],
    slapd_enabled: bool,
    was_enabled: bool,
) -> (Output, Vec<String>) {
    maintainer_script_at(
        &repo().join("provision/debian").join(name),
        args,
        slapd_enabled,
        was_enabled,
    )
}

/// [`maintainer_script`] for a script at `script`.
fn maintainer_script_at(
    script: &Path,
    args: &[&str],
    slapd_enabled: bool,
    was_enabled: bool,
) -> (Output, Vec<String>) {
    let name = script.file_name().unwrap().to_str().unwrap();
    let dir = tempdir(&format!("maint-{name}"));
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    let shim = r#"#!/bin/sh
printf '%s\n' "${0##*/} $*" >>"$SHIM_LOG"
case "${0##*/} $*" in
"systemctl is-enabled"*slapd*) [ "$SHIM_SLAPD_ENABLED" = 1 ] ;;
"systemctl is-active"*slapd*) [ "$SHIM_SLAPD_ENABLED" = 1 ] ;;
"systemctl is-"*) exit 1 ;;
"deb-systemd-helper --quiet was-enabled"*) [ "$SHIM_WAS_ENABLED" = 1 ] ;;
*) exit 0 ;;
esac
"#;
    for tool in [
        "systemd-sysusers",
        "systemd-tmpfiles",
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "rm",
    ] {
        let path = bin.join(tool);
        fs::write(&path, shim).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    // postrm deletes directories with `rm`: make sure the stand-in is the
    // one that runs, before running anything.
    let text = fs::read_to_string(script).unwrap();
    assert!(
        !text.contains("/bin/rm"),
        "{name} must call rm through PATH"
    );
    let which = run_ok(
        Command::new("sh")
            .args(["-c", "command -v rm"])
            .env("PATH", &path),
    );
    assert_eq!(stdout(&which).trim(), bin.join("rm").to_str().unwrap());

    let out = run_ok(
        Command::new("sh")
            .arg(script)
            .args(args)
            .env("PATH", &path)
            .env("SHIM_LOG", &log)
            .env("SHIM_SLAPD_ENABLED", if slapd_enabled { "1" } else { "0" })
            .env("SHIM_WAS_ENABLED", if was_enabled { "1" } else { "0" }),
    );
    let calls = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (out, calls)
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn assert_calls(calls: &[String], wanted: &[&str], unwanted: &[&str]) {
    for w in wanted {
        assert!(calls.iter().any(|c| c == w), "no `{w}` in {calls:#?}");
    }
    for u in unwanted {
        assert!(!calls.iter().any(|c| c.contains(u)), "`{u}` in {calls:#?}");
    }
}

#[test]
fn postinst_creates_the_user_and_enables_without_starting() {
    // A first installation, with the distribution's slapd enabled.
    let (out, calls) = maintainer_script("postinst", &["configure", ""], true, true);
    assert_eq!(
        calls[..2],
        [
            "systemd-sysusers /usr/lib/sysusers.d/commonscloud.conf",
            "systemd-tmpfiles --create /usr/lib/tmpfiles.d/commonscloud.conf",
        ],
        "{calls:#?}"
    );
    assert_calls(
        &calls,
        &[
            "systemctl disable --quiet slapd.service",
            "deb-systemd-helper enable commonscloud.service",
            "deb-systemd-helper unmask commonscloud-front-door.service",
            "deb-systemd-helper enable commonscloud-front-door.service",
        ],
        &[" start", "restart", "rm ", "stop commonscloud"],
    );
    if systemd_running() {
        assert_calls(&calls, &["systemctl stop slapd.service"], &[]);
        assert_calls(&calls, &["systemctl --system daemon-reload"], &[]);
    } else {
        assert_calls(&calls, &[], &["daemon-reload", "systemctl stop"]);
    }
    let text = stdout(&out);
    for step in [
        "commonscloud init",
        "systemctl start commonscloud.service commonscloud-front-door.service",
        "commonscloud doctor",
    ] {
        assert!(text.contains(step), "next step `{step}` missing: {text}");
    }

    // An upgrade: slapd is left as the administrator has it, a disabled unit
    // stays disabled, a running one is restarted on the new binary.
    let (_, calls) = maintainer_script("postinst", &["configure", "0.0.1-1"], true, false);
    assert_calls(
        &calls,
        &[
            "systemd-sysusers /usr/lib/sysusers.d/commonscloud.conf",
            "deb-systemd-helper update-state commonscloud.service",
            "deb-systemd-helper update-state commonscloud-front-door.service",
        ],
        &["slapd", "helper enable", " start", "rm ", "stop"],
    );
    if systemd_running() {
        let supervisor = "deb-systemd-invoke try-restart commonscloud.service";
        let door = "deb-systemd-invoke try-restart commonscloud-front-door.service";
        assert_calls(&calls, &[supervisor, door], &[]);
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
        assert!(
            at(supervisor) < at(door),
            "the front door restarts before the supervisor: {calls:#?}"
        );
    } else {
        assert_calls(&calls, &[], &["restart"]);
    }
}

/// Runs a maintainer script as if systemd ran, whatever the host: the
/// script's own test for /run/systemd/system is pointed at a directory
/// that exists.
fn maintainer_script_under_systemd(name: &str, args: &[&str], was_enabled: bool) -> Vec<String> {
    let dir = tempdir(&format!("maint-systemd-{name}"));
    let systemd = dir.path().join("systemd-system");
    fs::create_dir(&systemd).unwrap();
    let text = fs::read_to_string(repo().join("provision/debian").join(name)).unwrap();
    assert!(
        text.contains("[ -d /run/systemd/system ]"),
        "{name} no longer asks whether systemd runs"
    );
    let copy = dir.path().join(name);
    fs::write(
        &copy,
        text.replace(
            "[ -d /run/systemd/system ]",
            &format!("[ -d {} ]", systemd.display()),
        ),
    )
    .unwrap();
    let (_, calls) = maintainer_script_at(&copy, args, false, was_enabled);
    calls
}

#[test]
fn maintainer_scripts_restart_the_front_door_last_and_stop_it_only_on_removal() {
    // An upgrade: the supervisor moves to the new binary first, then the
    // front door, each only if running; nothing is stopped.
    let calls = maintainer_script_under_systemd("postinst", &["configure", "0.0.1-1"], true);
    let supervisor = "deb-systemd-invoke try-restart commonscloud.service";
    let door = "deb-systemd-invoke try-restart commonscloud-front-door.service";
    assert_calls(
        &calls,
        &["systemctl --system daemon-reload", supervisor, door],
        &["stop", " start", " restart"],
    );
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
    assert!(at(supervisor) < at(door), "{calls:#?}");
    assert_eq!(
        calls.last().map(String::as_str),
        Some(door),
        "the front door is not the last to restart: {calls:#?}"
    );

    // A first installation starts nothing.
    let calls = maintainer_script_under_systemd("postinst", &["configure", ""], true);
    assert_calls(
        &calls,
        &["deb-systemd-helper enable commonscloud-front-door.service"],
        &["restart", "stop commonscloud", " start"],
    );

    // Removal stops both; only the supervisor's unit has slapd to take along.
    let calls = maintainer_script_under_systemd("prerm", &["remove"], true);
    assert_calls(
        &calls,
        &[
            "deb-systemd-invoke stop commonscloud.service",
            "deb-systemd-invoke stop commonscloud-front-door.service",
        ],
        &["kill --kill-whom=all commonscloud-front-door"],
    );
    for args in [
        &["upgrade", "0.2.0-1"][..],
        &["deconfigure"][..],
        &["failed-upgrade", "0.2.0-1"][..],
    ] {
        let calls = maintainer_script_under_systemd("prerm", args, true);
        assert!(calls.is_empty(), "prerm {args:?} acted: {calls:#?}");
    }
}

#[test]
fn prerm_and_postrm_stop_on_remove_and_delete_state_on_purge_only() {
    let (_, calls) = maintainer_script("prerm", &["upgrade", "0.2.0-1"], false, true);
    assert!(calls.is_empty(), "prerm upgrade acted: {calls:#?}");
    let (_, calls) = maintainer_script("prerm", &["remove"], false, true);
    if systemd_running() {
        assert_calls(
            &calls,
            &[
                "deb-systemd-invoke stop commonscloud.service",
                "systemctl kill --kill-whom=all commonscloud.service",
            ],
            &[],
        );
    } else {
        assert!(calls.is_empty(), "prerm remove without systemd: {calls:#?}");
    }

    let (_, calls) = maintainer_script("postrm", &["remove"], false, true);
    assert_calls(
        &calls,
        &[
            "deb-systemd-helper mask commonscloud.service",
            "deb-systemd-helper mask commonscloud-front-door.service",
        ],
        &["rm ", "purge"],
    );
    let (_, calls) = maintainer_script("postrm", &["upgrade", "0.2.0-1"], false, true);
    assert_calls(&calls, &[], &["rm ", "purge", "mask"]);
    let (_, calls) = maintainer_script("postrm", &["purge"], false, true);
    assert_calls(
        &calls,
        &[
            "deb-systemd-helper purge commonscloud.service",
            "deb-systemd-helper purge commonscloud-front-door.service",
            "rm -rf /var/lib/commonscloud",
        ],
        &["/etc/commonscloud"],
    );
}

// --- the .deb -----------------------------------------------------------------------------

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn find_deb(arch: &str) -> PathBuf {
    let dir = target_dir().join("debian");
    let prefix = format!("commonscloud_{}", env!("CARGO_PKG_VERSION"));
    let suffix = format!("_{arch}.deb");
    let mut debs: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(&suffix)
                })
                .collect()
        })
        .unwrap_or_default();
    debs.sort_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no {prefix}*{suffix} in {}: run provision/test.sh, which builds it with `cargo deb --no-build`",
            dir.display()
        )
    })
}

/// The arm64 package: the same files as the host's, with the aarch64 binary.
#[test]
fn arm64_deb_ships_the_aarch64_binary() {
    let deb = find_deb("arm64");
    let host = find_deb(&host_arch());
    let out = run_ok(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .arg("Architecture"),
    );
    assert_eq!(stdout(&out).trim(), "arm64");
    let names = |d: &Path| -> BTreeSet<String> {
        let out = run_ok(Command::new("dpkg-deb").arg("--contents").arg(d));
        stdout(&out)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&deb), names(&host));
    let unpacked = tempdir("deb-arm64");
    run_ok(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&deb)
            .arg(unpacked.path()),
    );
    let shipped = fs::read(unpacked.path().join("usr/bin/commonscloud")).unwrap();
    assert_eq!(
        u16::from_le_bytes([shipped[18], shipped[19]]),
        0xB7,
        "e_machine AArch64"
    );
    let built = target_dir().join("aarch64-unknown-linux-gnu/release/commonscloud");
    assert!(
        shipped == fs::read(&built).unwrap(),
        "the arm64 .deb does not hold {}: rerun provision/test.sh",
        built.display()
    );
}

#[test]
fn deb_package_ships_the_appliance() {
    let deb = find_deb(&host_arch());
    let field = |name: &str| {
        let out = run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name));
        stdout(&out).trim().to_owned()
    };
    assert_eq!(field("Package"), "commonscloud");
    assert_eq!(field("Architecture"), host_arch());
    assert_eq!(
        field("Version").split('-').next(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let depends = field("Depends");
    let names: BTreeSet<&str> = depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    for pkg in APT_PACKAGES.iter().chain(&["systemd"]) {
        assert!(names.contains(pkg), "Depends lacks {pkg}: {depends}");
    }

    let out = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    // "-rwxr-xr-x root/root 123 2024-01-01 00:00 ./usr/bin/commonscloud"
    let contents: BTreeMap<String, (String, String)> = stdout(&out)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| {
                (
                    f[5].trim_start_matches('.').to_owned(),
                    (f[0].to_owned(), f[1].to_owned()),
                )
            })
        })
        .collect();
    let unpacked = tempdir("deb");
    run_ok(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&deb)
            .arg(unpacked.path()),
    );
    let stale = "the .deb is older than the source: rerun provision/test.sh";
    for file in shipped(repo(), Path::new(BIN)) {
        let (perms, owner) = contents
            .get(&file.dest)
            .unwrap_or_else(|| panic!("{} is not in {}", file.dest, deb.display()));
        let want = if file.mode == 0o755 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(perms, want, "mode of {}", file.dest);
        // cargo-deb writes numeric owners.
        assert!(
            owner == "root/root" || owner == "0/0",
            "owner of {}: {owner}",
            file.dest
        );
        // The binary in the package is the release build, not this one.
        if file.dest == "/usr/bin/commonscloud" {
            let release = target_dir().join("release/commonscloud");
            // Compared without printing megabytes of bytes on a mismatch.
            assert!(
                fs::read(under(unpacked.path(), &file.dest)).unwrap()
                    == fs::read(&release).unwrap_or_else(|e| panic!("{}: {e}", release.display())),
                "/usr/bin/commonscloud is not {}: {stale}",
                release.display()
            );
        } else {
            assert!(
                fs::read(under(unpacked.path(), &file.dest)).unwrap()
                    == fs::read(&file.src).unwrap(),
                "{} differs from {}: {stale}",
                file.dest,
                file.src.display()
            );
        }
    }

    for script in ["postinst", "prerm", "postrm"] {
        let out = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb).arg(script));
        assert_eq!(
            out.stdout,
            fs::read(repo().join("provision/debian").join(script)).unwrap(),
            "{script}: {stale}"
        );
    }
}
