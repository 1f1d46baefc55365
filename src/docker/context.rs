//! Build contexts for images made from scratch: a directory with a
//! `Dockerfile`, a `rootfs/` and a `layout` file (`link <path>` for a link
//! to the multi-call program, `dir <path> <octal mode>`), plus the host's
//! static busybox with its applet links and one static program. Used for
//! the stand-in images of `images/testing/` (tests and `bench reconcile`),
//! beside the real PostgreSQL and Redis built from Debian's packages
//! ([`debian_image`]).
//! The tar is deterministic (mtime 0, root-owned), so an unchanged context
//! hashes the same.

use std::collections::BTreeSet;

/// `(name, value)` build arguments.
pub type BuildArgs = &'static [(&'static str, &'static str)];

/// Where the test image of a catalog role comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestImage {
    /// A stand-in, built from `images/testing/<dir>` with these build
    /// arguments ([`standin_context`]).
    Standin { dir: &'static str, args: BuildArgs },
    /// The real program, built from Debian's packages by
    /// `images/testing/debian-image.sh <name>` ([`debian_image`]).
    Debian(&'static str),
}

/// The test image for each image role of the catalog. PostgreSQL 15 is
/// bookworm's (no pgvector there), 17 trixie's with pgvector, which
/// Discourse needs.
pub const TEST_IMAGES: [(&str, TestImage); 7] = [
    (
        "nextcloud",
        TestImage::Standin {
            dir: "nextcloud",
            args: &[("NEXTCLOUD_VERSION", "31.0.0")],
        },
    ),
    ("nextcloud-db", TestImage::Debian("postgres:15")),
    ("nextcloud-redis", TestImage::Debian("redis")),
    (
        "collabora",
        TestImage::Standin {
            dir: "collabora",
            args: &[],
        },
    ),
    (
        "discourse",
        TestImage::Standin {
            dir: "discourse",
            args: &[],
        },
    ),
    ("discourse-db", TestImage::Debian("postgres:17")),
    ("discourse-redis", TestImage::Debian("redis")),
];

/// The images `images/testing/debian-image.sh` builds.
pub const DEBIAN_IMAGES: [&str; 3] = ["postgres:15", "postgres:17", "redis"];

/// The tag of Debian test image `name` (one of [`DEBIAN_IMAGES`]), built
/// by `<images_dir>/debian-image.sh` unless an image of the same build
/// inputs (the script, the entrypoint) exists. The script keeps concurrent
/// callers from building the same image twice. Blocking: a cold build
/// takes about a minute.
pub fn debian_image(images_dir: &Path, name: &str) -> Result<String, super::DockerError> {
    let script = images_dir.join("debian-image.sh");
    let failed = |message: String| super::DockerError::Build {
        tag: name.to_owned(),
        message,
    };
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(name)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("running {}: {e}", script.display())))?;
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || tag.is_empty() {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        return Err(failed(format!(
            "{} {name} failed ({}):\n{}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(tag)
}

use std::path::Path;

/// The tar of a context, or what went wrong, naming the file.
pub fn standin_context(dir: &Path, busybox: &Path, program: &Path) -> Result<Vec<u8>, String> {
    let mut c = Context {
        tar: tar::Builder::new(Vec::new()),
        dirs: BTreeSet::new(),
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    c.file("Dockerfile", 0o644, &read(&dir.join("Dockerfile"))?)?;
    c.dir("rootfs", 0o755)?;
    let layout = std::fs::read_to_string(dir.join("layout")).unwrap_or_default();
    let mut links = Vec::new();
    for line in layout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["link", path] => links.push(format!("rootfs{path}")),
            ["dir", path, mode] => {
                let mode = u32::from_str_radix(mode, 8).map_err(|_| {
                    format!("{}/layout: `{mode}` is not an octal mode", dir.display())
                })?;
                c.dir(&format!("rootfs{path}"), mode)?;
            }
            _ => return Err(format!("{}/layout: cannot read {line:?}", dir.display())),
        }
    }
    if dir.join("rootfs").is_dir() {
        c.tree(&dir.join("rootfs"), "rootfs")?;
    }
    let bb = read(busybox).map_err(|e| {
        format!("{e}: install Debian's busybox-static (apt install busybox-static)")
    })?;
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("{} --list: {e}", busybox.display()))?;
    c.file("rootfs/bin/busybox", 0o755, &bb)?;
    for a in String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        c.link(&format!("rootfs/bin/{a}"), "busybox")?;
    }
    c.file("rootfs/usr/local/bin/standin", 0o755, &read(program)?)?;
    for l in links {
        c.link(&l, "/usr/local/bin/standin")?;
    }
    c.tar.into_inner().map_err(|e| e.to_string())
}

struct Context {
    tar: tar::Builder<Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl Context {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), String> {
        let path = path.trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        self.dirs.insert(path.to_owned());
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .map_err(|e| format!("{path}: {e}"))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .map_err(|e| format!("{path}: {e}"))
    }

    fn link(&mut self, path: &str, target: &str) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .map_err(|e| format!("{path}: {e}"))
    }

    fn tree(&mut self, src: &Path, dst: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| format!("{}: {e}", src.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{dst}/{}", e.file_name().to_string_lossy());
            let meta = e.metadata().map_err(|e| e.to_string())?;
            if meta.is_dir() {
                self.dir(&name, meta.permissions().mode() & 0o7777)?;
                self.tree(&e.path(), &name)?;
            } else {
                let data = std::fs::read(e.path()).map_err(|e| e.to_string())?;
                self.file(&name, meta.permissions().mode() & 0o7777, &data)?;
            }
        }
        Ok(())
    }
}
