//! The Nextcloud stand-in (`nextcloud:<major>-apache`): the entrypoint's
//! install and upgrade rules, `status.php` on port 80, `php` (for `php occ`
//! and the catalog's `php -r` health check) and `/cron.sh`.
//!
//! Layout, as upstream: the image's code (`version.php`, entry points,
//! `lib/base.php`, default `config/*.config.php`) is in `/usr/src/nextcloud`,
//! copied to the volume `/var/www/html` on install and upgrade the way the
//! entrypoint's rsync does. The volume also holds `config/config.php` (its
//! owner is who may run occ) and `standin-state.json`: everything occ was
//! told, and the log of each install and upgrade, for tests to read. The
//! versions the database records live in the real PostgreSQL
//! (`oc_appconfig`), see [`crate::nccore`].
//!
//! Source of the entrypoint's rules: nextcloud/docker `docker-entrypoint.sh`
//! and `upgrade.exclude` (@4de1eed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::nccore::state_file;
use crate::nccore::{self, Code, Release, Version, WWW_DATA};
use crate::net::{self, Request, Response};
use crate::state;
use crate::{Ctx, R, fail, fail_code, file_env};

pub const SRC: &str = nccore::SRC;
pub const HTML: &str = "/var/www/html";

/// What status.php says (see [`nccore::status`]).
pub fn status(html: &Path) -> R<Value> {
    nccore::status(html)
}

/// `RUN ["standin", "nextcloud-version-php"]` at build time: the image's
/// code in `/usr/src/nextcloud` from the build arguments
/// `NEXTCLOUD_VERSION` (as upstream's Dockerfile), `STANDIN_MINIMUM_FROM`
/// (the oldest patch release of the previous major this one upgrades
/// from; empty for none) and `STANDIN_BROKEN` (`1`: a build that migrates,
/// then fails).
pub fn version_php(_args: &[String]) -> R<i32> {
    let arg = |n: &str| crate::env(n).unwrap_or_default();
    let v = arg("NEXTCLOUD_VERSION");
    let Some(version) = Version::parse(&v) else {
        return fail(format!(
            "build argument NEXTCLOUD_VERSION must look like 31.0.0, not {v:?}"
        ));
    };
    let min = arg("STANDIN_MINIMUM_FROM");
    let minimum = if min.is_empty() {
        None
    } else {
        match Version::parse(&min) {
            Some(m) if m.major() + 1 == version.major() => Some(m),
            _ => {
                return fail(format!(
                    "build argument STANDIN_MINIMUM_FROM must be a release of major {} (like {}.0.5), not {min:?}",
                    version.major().saturating_sub(1),
                    version.major().saturating_sub(1)
                ));
            }
        }
    };
    let broken = match arg("STANDIN_BROKEN").as_str() {
        "" | "0" => false,
        "1" => true,
        other => {
            return fail(format!(
                "build argument STANDIN_BROKEN must be 1 or empty, not {other:?}"
            ));
        }
    };
    let release = Release::from_build(version, minimum);
    nccore::write_code(Path::new(SRC), &release, broken)?;
    println!(
        "Nextcloud stand-in {}{}{}",
        version.full(),
        minimum
            .map(|m| format!(
                ", upgrades from {} at {} or later",
                m.major_minor(),
                m.short()
            ))
            .unwrap_or_default(),
        if broken {
            ", broken after its migration"
        } else {
            ""
        }
    );
    Ok(0)
}

fn say(msg: impl std::fmt::Display) {
    println!("{msg}");
}

/// A child command as upstream's `run_as`: as www-data when root.
fn as_www_data(cmd: &mut std::process::Command, root: bool) {
    use std::os::unix::process::CommandExt;
    if root {
        cmd.gid(WWW_DATA.1).uid(WWW_DATA.0);
    }
}

/// Runs the executable `*.sh` hooks of a stage, as upstream's `run_path`.
fn run_hooks(stage: &str, root: bool) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new("/docker-entrypoint-hooks.d").join(stage);
    say(format!(
        "=> Searching for hook scripts (*.sh) to run, located in the folder \"{}\"",
        dir.display()
    ));
    let mut hooks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sh")))
                .collect()
        })
        .unwrap_or_default();
    if hooks.is_empty() && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()) {
        say(format!(
            "==> Skipped: the \"{stage}\" folder is empty (or does not exist)"
        ));
        return Ok(());
    }
    hooks.sort();
    let mut found = 0;
    for h in hooks {
        let exec = std::fs::metadata(&h).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !exec {
            say(format!(
                "==> The script \"{}\" was skipped, because it lacks the executable flag",
                h.display()
            ));
            continue;
        }
        say(format!(
            "==> Running the script (cwd: {HTML}): \"{}\"",
            h.display()
        ));
        found += 1;
        let mut cmd = std::process::Command::new(&h);
        cmd.current_dir(HTML);
        as_www_data(&mut cmd, root);
        let st = cmd.status().ctx(format!("running {}", h.display()))?;
        if !st.success() {
            say(format!(
                "==> Failed at executing script \"{}\". Exit code: {}",
                h.display(),
                st.code().unwrap_or(1)
            ));
            return fail_code(1, "");
        }
        say(format!(
            "==> Finished executing the script: \"{}\"",
            h.display()
        ));
    }
    if found > 0 {
        say(format!(
            "=> Completed executing scripts in the \"{stage}\" folder"
        ));
    } else {
        say(format!(
            "==> Skipped: the \"{stage}\" folder does not contain any valid scripts"
        ));
    }
    Ok(())
}

/// The seconds between install retries (upstream: 10).
fn retry_seconds() -> u64 {
    crate::env("STANDIN_RETRY_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Apps enabled by a fresh install, and shipped but disabled ones.
pub const DEFAULT_APPS: &[&str] = &[
    "activity",
    "circles",
    "cloud_federation_api",
    "comments",
    "contactsinteraction",
    "dashboard",
    "dav",
    "federatedfilesharing",
    "federation",
    "files",
    "files_downloadlimit",
    "files_pdfviewer",
    "files_reminders",
    "files_sharing",
    "files_trashbin",
    "files_versions",
    "firstrunwizard",
    "logreader",
    "lookup_server_connector",
    "nextcloud_announcements",
    "notifications",
    "oauth2",
    "password_policy",
    "photos",
    "privacy",
    "provisioning_api",
    "recommendations",
    "related_resources",
    "serverinfo",
    "settings",
    "sharebymail",
    "support",
    "survey_client",
    "systemtags",
    "text",
    "theming",
    "twofactor_backupcodes",
    "updatenotification",
    "user_status",
    "viewer",
    "weather_status",
    "webhook_listeners",
    "workflowengine",
];
pub const SHIPPED_DISABLED: &[&str] = &[
    "admin_audit",
    "bruteforcesettings",
    "encryption",
    "files_external",
    "suspicious_login",
    "twofactor_totp",
    "user_ldap",
];
/// From the app store (the real image downloads them on `app:enable`).
pub const APPSTORE: &[&str] = &[
    "groupfolders",
    "richdocuments",
    "calendar",
    "contacts",
    "deck",
    "mail",
    "notes",
    "spreed",
    "tasks",
    "forms",
    "polls",
    "user_oidc",
];

/// The version of an app-store app (shipped apps carry the server's, see
/// [`Release::app_version`]).
pub fn app_version(app: &str) -> &'static str {
    match app {
        "groupfolders" => "19.1.0",
        "richdocuments" => "8.6.0",
        _ => "1.0.0",
    }
}

/// The install's database work: upstream's tables (the part the stand-in
/// keeps) and what a fresh install records: the vendor, and each enabled
/// app's version.
fn install_db(st: &Value, code: &Release) -> Result<(), String> {
    let mut s = nccore::db(st)?;
    nccore::ensure_schema(&mut s)?;
    nccore::set_app_value(&mut s, "core", "vendor", &code.vendor)?;
    nccore::set_app_value(
        &mut s,
        "core",
        "installedat",
        &crate::codec::now().to_string(),
    )?;
    if let Some(apps) = st["apps"].as_object() {
        for app in apps.keys() {
            nccore::set_app_value(&mut s, app, "installed_version", &code.app_version(app))?;
            nccore::set_app_value(&mut s, app, "enabled", "yes")?;
        }
    }
    Ok(())
}

/// Installs from the environment if the admin pair and the complete
/// PostgreSQL group are set; `Ok(false)` when not enough was given.
fn install(html: &Path, image: &Code, root: bool) -> R<bool> {
    let admin_password = file_env("NEXTCLOUD_ADMIN_PASSWORD")?;
    let admin_user = file_env("NEXTCLOUD_ADMIN_USER")?;
    let (Some(admin_user), Some(admin_password)) = (admin_user, admin_password) else {
        return Ok(false);
    };
    for other in ["SQLITE_DATABASE", "MYSQL_DATABASE", "MYSQL_DATABASE_FILE"] {
        if crate::env(other).is_some_and(|v| !v.is_empty()) {
            return fail(format!(
                "stand-in: {other} is set; this stand-in installs with PostgreSQL only"
            ));
        }
    }
    let db = file_env("POSTGRES_DB")?;
    let user = file_env("POSTGRES_USER")?;
    let password = file_env("POSTGRES_PASSWORD")?;
    let host = file_env("POSTGRES_HOST")?;
    let (Some(db), Some(user), Some(password), Some(host)) = (db, user, password, host) else {
        return Ok(false);
    };
    say("Installing with PostgreSQL database");
    run_hooks("pre-installation", root)?;
    say("Starting nextcloud installation");
    let release = &image.release;
    let apps: serde_json::Map<String, Value> = DEFAULT_APPS
        .iter()
        .map(|a| ((*a).to_owned(), json!(release.app_version(a))))
        .collect();
    let planned = json!({
        "db": {"type": "pgsql", "host": host, "name": db, "user": user, "password": password},
        "apps": apps,
    });
    let max_retries = 10;
    let mut tries = 0;
    loop {
        match install_db(&planned, release) {
            Ok(()) => break,
            Err(e) => {
                eprintln!("Error while trying to initialise the database: {e}");
                tries += 1;
                if tries > max_retries {
                    say("Installing of nextcloud failed!");
                    return fail_code(1, "");
                }
                say("Retrying install...");
                std::thread::sleep(Duration::from_secs(retry_seconds()));
            }
        }
    }
    let domains: Vec<String> = crate::env("NEXTCLOUD_TRUSTED_DOMAINS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    state_file(html).update(|st| {
        if !st.is_object() {
            *st = json!({});
        }
        let mut trusted = serde_json::Map::new();
        trusted.insert("0".into(), json!("localhost"));
        for (k, v) in [
            ("admin_user", json!(admin_user)),
            (
                "admin_password_sha256",
                json!(crate::codec::sha256_hex(admin_password.as_bytes())),
            ),
            ("db", planned["db"].clone()),
            ("apps", planned["apps"].clone()),
            (
                "system",
                json!({
                    "installed": true,
                    "version": image.version().full(),
                    "maintenance": false,
                    "trusted_domains": trusted,
                }),
            ),
            ("app_config", json!({})),
            ("ldap", json!({})),
            ("groupfolders", json!([])),
            ("occ_log", json!([])),
        ] {
            st[k] = v;
        }
        if !domains.is_empty() {
            say("Setting trusted domains…");
        }
        for (i, d) in domains.iter().enumerate() {
            st["system"]["trusted_domains"][(i + 1).to_string()] = json!(d);
        }
        Ok(())
    })?;
    if root {
        crate::chown_r(&html.join("config"), WWW_DATA.0, WWW_DATA.1)?;
    }
    say("Nextcloud was successfully installed");
    run_hooks("post-installation", root)?;
    Ok(true)
}

// ---- the entrypoint's copy ------------------------------------------------------

/// The image's `/upgrade.exclude`: top-level names rsync neither copies
/// nor deletes (`/config/`, `/data/`, `/custom_apps/`, `/themes/`,
/// `/version.php`, `/nextcloud-init-sync.lock`; the stand-in adds its
/// state file).
fn excluded() -> R<BTreeSet<String>> {
    let text = std::fs::read_to_string("/upgrade.exclude").ctx("reading /upgrade.exclude")?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_owned())
        .collect())
}

/// Copies `src` over `dst` as `rsync -rlD --delete` does: files and links
/// replaced, what `src` lacks removed; top-level names in `skip` neither
/// copied nor removed. Owned by `owner` when given (`--chown`).
fn sync(src: &Path, dst: &Path, skip: &BTreeSet<String>, owner: Option<(u32, u32)>) -> R<()> {
    std::fs::create_dir_all(dst).ctx(format!("creating {}", dst.display()))?;
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(src).ctx(format!("reading {}", src.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name) {
            continue;
        }
        names.insert(name.clone());
        let (from, to) = (e.path(), dst.join(&name));
        let meta = std::fs::symlink_metadata(&from)?;
        let there = std::fs::symlink_metadata(&to).ok();
        if meta.is_dir() {
            if there.as_ref().is_some_and(|m| !m.is_dir()) {
                std::fs::remove_file(&to)?;
            }
            sync(&from, &to, &BTreeSet::new(), owner)?;
        } else {
            if there.as_ref().is_some_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&to)?;
            } else if there.is_some() {
                std::fs::remove_file(&to)?;
            }
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                std::fs::copy(&from, &to).ctx(format!("copying {}", from.display()))?;
            }
        }
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&to, Some(u), Some(g))?;
        }
    }
    for e in std::fs::read_dir(dst)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if names.contains(&name) || skip.contains(&name) {
            continue;
        }
        let p = e.path();
        if std::fs::symlink_metadata(&p)?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(dst, Some(u), Some(g))?;
    }
    Ok(())
}

fn dir_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

/// The entrypoint's three rsyncs: the code except `upgrade.exclude`; each
/// of config, data, custom_apps and themes when missing or empty; then
/// `version.php`, last.
fn copy_code(html: &Path, owner: Option<(u32, u32)>) -> R<()> {
    let src = Path::new(SRC);
    sync(src, html, &excluded()?, owner)?;
    for dir in ["config", "data", "custom_apps", "themes"] {
        if dir_empty(&html.join(dir)) {
            sync(&src.join(dir), &html.join(dir), &BTreeSet::new(), owner)?;
        }
    }
    step(html, "rsync")?;
    let to = html.join("version.php");
    std::fs::copy(src.join("version.php"), &to).ctx("copying version.php")?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(&to, Some(u), Some(g))?;
    }
    step(html, "version.php")
}

/// Starts an entry in the state's `upgrades` log: (from, to) and the steps
/// as they complete, for tests to check the order.
fn begin(html: &Path, from: Version, to: Version) -> R<()> {
    state_file(html).update(|st| {
        state::arr(st, "upgrades").push(json!({
            "from": from.full(),
            "to": to.full(),
            "at": crate::codec::now(),
            "steps": ["version check"],
        }));
        Ok(())
    })
}

fn step(html: &Path, what: &str) -> R<()> {
    state_file(html).update(|st| {
        if let Some(last) = state::arr(st, "upgrades").last_mut() {
            state::arr(last, "steps").push(json!(what));
        }
        Ok(())
    })
}

/// `php /var/www/html/occ <args>` as upstream's `run_as`; its exit status
/// and, when `capture`, its standard output.
fn run_occ(html: &Path, root: bool, args: &[&str], capture: bool) -> R<(i32, String)> {
    let mut cmd = std::process::Command::new("/usr/local/bin/php");
    cmd.arg(html.join("occ")).args(args).current_dir(html);
    as_www_data(&mut cmd, root);
    if capture {
        let out = cmd
            .stderr(std::process::Stdio::null())
            .output()
            .ctx("running occ")?;
        return Ok((
            out.status.code().unwrap_or(1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    let st = cmd.status().ctx("running occ")?;
    Ok((st.code().unwrap_or(1), String::new()))
}

/// Upstream's `get_enabled_apps`: the names under `Enabled:` in
/// `occ app:list` (none when occ fails: the pipeline hides its status).
fn enabled_apps(html: &Path, root: bool) -> R<BTreeSet<String>> {
    let (_, out) = run_occ(html, root, &["app:list"], true)?;
    Ok(out
        .lines()
        .skip_while(|l| *l != "Enabled:")
        .skip(1)
        .take_while(|l| *l != "Disabled:")
        .filter_map(|l| l.strip_prefix("  - "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect())
}

/// `configure_redis_session`.
fn configure_redis_session() -> R<()> {
    say("=> Configuring PHP session handler...");
    match crate::env("REDIS_HOST").filter(|h| !h.is_empty()) {
        None => say("==> Using default PHP session handler"),
        Some(_) => {
            file_env("REDIS_HOST_PASSWORD")?;
            say("==> Using Redis as PHP session handler...");
        }
    }
    Ok(())
}

/// The entrypoint's locked section: the version checks, then install or
/// upgrade.
fn initialize(html: &Path, root: bool) -> R<()> {
    let image = Code::read(Path::new(SRC))?.ok_or_else(|| crate::Fail {
        code: 1,
        msg: format!(
            "{SRC}/version.php is missing: the image was not built with NEXTCLOUD_VERSION"
        ),
    })?;
    let image_version = image.version();
    let installed = Code::read(html)?.map_or(Version::NONE, |c| c.version());
    if installed > image_version {
        say(format!(
            "Can't start Nextcloud because the version of the data ({}) is higher than the docker image version ({}) and downgrading is not supported. Are you sure you have pulled the newest image version?",
            installed.full(),
            image_version.full()
        ));
        return fail_code(1, "");
    }
    if image_version <= installed {
        return Ok(());
    }
    say(format!(
        "Initializing nextcloud {} ...",
        image_version.full()
    ));
    let owner = root.then_some(WWW_DATA);
    if installed == Version::NONE {
        begin(html, installed, image_version)?;
        copy_code(html, owner)?;
        say("New nextcloud instance");
        if install(html, &image, root)? {
            step(html, "installed")?;
        } else {
            say("Next step: Access your instance to finish the web-based installation!");
            say(
                "Hint: You can specify NEXTCLOUD_ADMIN_USER and NEXTCLOUD_ADMIN_PASSWORD and the database variables _prior to first launch_ to fully automate initial installation.",
            );
        }
    } else {
        if image_version.major() > installed.major() + 1 {
            say(format!(
                "Can't start Nextcloud because upgrading from {} to {} is not supported.",
                installed.full(),
                image_version.full()
            ));
            say(
                "It is only possible to upgrade one major version at a time. For example, if you want to upgrade from version 14 to 16, you will have to upgrade from version 14 to 15, then from 15 to 16.",
            );
            return fail_code(1, "");
        }
        say(format!("Upgrading nextcloud from {} ...", installed.full()));
        begin(html, installed, image_version)?;
        let before = enabled_apps(html, root)?;
        step(html, "enabled apps listed")?;
        copy_code(html, owner)?;
        run_hooks("pre-upgrade", root)?;
        step(html, "pre-upgrade hooks")?;
        let (code, _) = run_occ(html, root, &["upgrade"], false)?;
        step(html, &format!("occ upgrade (exit {code})"))?;
        if code != 0 {
            // `set -eu`: the entrypoint stops with occ's status.
            return fail_code(code, "");
        }
        let after = enabled_apps(html, root)?;
        let disabled: Vec<&String> = before.difference(&after).collect();
        if !disabled.is_empty() {
            say("The following apps have been disabled:");
            for a in &disabled {
                say(a);
            }
        }
        state_file(html).update(|st| {
            if let Some(last) = state::arr(st, "upgrades").last_mut() {
                last["disabled_apps"] = json!(disabled);
            }
            Ok(())
        })?;
        step(html, "disabled apps listed")?;
        run_hooks("post-upgrade", root)?;
        step(html, "post-upgrade hooks")?;
    }
    say("Initializing finished");
    step(html, "initializing finished")
}

/// The image's `config/*.php` that differ on the volume, as upstream warns.
fn config_warnings(html: &Path) {
    let Ok(entries) = std::fs::read_dir(Path::new(SRC).join("config")) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".php") && n != "config.sample.php" && n != "autoconfig.php")
        .collect();
    names.sort();
    for n in names {
        let ours = std::fs::read(Path::new(SRC).join("config").join(&n)).ok();
        if ours != std::fs::read(html.join("config").join(&n)).ok() {
            say(format!(
                "Warning: /var/www/html/config/{n} differs from the latest version of this image at /usr/src/nextcloud/config/{n}"
            ));
        }
    }
}

/// `/entrypoint.sh`: install or upgrade, then `exec "$@"`.
pub fn entrypoint(args: &[String]) -> R<i32> {
    let Some(cmd) = args.first() else {
        return fail("entrypoint.sh: no command (the image's CMD is apache2-foreground)");
    };
    let update = crate::env("NEXTCLOUD_UPDATE").is_some_and(|v| v.trim() == "1");
    if cmd.starts_with("apache") || cmd == "php-fpm" || update {
        let root = crate::euid() == 0;
        let html = Path::new(HTML);
        configure_redis_session()?;
        // `( flock 9 … ) 9> /var/www/html/nextcloud-init-sync.lock`
        let lock_path = html.join("nextcloud-init-sync.lock");
        let lock =
            std::fs::File::create(&lock_path).ctx(format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            say("Another process is initializing Nextcloud. Waiting...");
            lock.lock().ctx("flock")?;
        }
        let init = initialize(html, root);
        drop(lock);
        init?;
        config_warnings(html);
        run_hooks("before-starting", root)?;
    }
    crate::exec(args, None)?;
    Ok(1)
}

/// Whether redis answers, when the config names one.
fn redis_ok() -> Result<(), String> {
    let Some(host) = crate::env("REDIS_HOST") else {
        return Ok(());
    };
    if host.starts_with('/') {
        return Err(format!(
            "stand-in: redis unix socket {host} is not supported"
        ));
    }
    let port = crate::env("REDIS_HOST_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379);
    crate::redis::ping(&host, port, crate::env("REDIS_HOST_PASSWORD").as_deref())
        .map_err(|e| format!("RedisException: {e}"))
}

/// The proxy settings of config.php and the environment, as the web
/// server applies them to a request.
fn proxy_config(html: &Path) -> R<crate::proxy::ProxyConfig> {
    let st = state_file(html).read()?;
    crate::proxy::ProxyConfig::new(&st["system"], &|n| crate::env(n))
        .map_err(|msg| crate::Fail { code: 1, msg })
}

/// How Nextcloud sees `req` (see [`crate::proxy`]).
fn seen(req: &Request, c: &crate::proxy::ProxyConfig) -> crate::proxy::Seen {
    let peer = req
        .peer
        .map(|p| p.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    crate::proxy::seen(peer, &|n| req.header(n).map(str::to_owned), c)
}

/// A server-side HTTP request as Nextcloud's `IClient` makes it: a host
/// that resolves to a private, loopback or link-local address is refused
/// ("violates local access rules") unless the caller asks for an exception
/// (`allow_local_address`, as richdocuments does for Collabora) or
/// `allow_local_remote_servers` is true in config.php.
pub fn remote_get(
    html: &Path,
    url: &str,
    allow_local_address: bool,
) -> Result<net::Answer, String> {
    let st = state_file(html).read().map_err(|e| e.msg)?;
    let allow_all = st["system"]["allow_local_remote_servers"] == true;
    let (host, _, _) = net::split_url(url)?;
    let ip = net::resolve(&host).map_err(|e| e.to_string())?;
    if net::is_local(ip) && !allow_local_address && !allow_all {
        return Err(format!(
            "Host \"{host}\" ({ip}) violates local access rules"
        ));
    }
    net::get(url)
}

/// `GET /ocs/v2.php/references/resolve?reference=<url>`: a link preview,
/// which any member can ask for any URL; Nextcloud fetches it server-side
/// with no exception for local addresses. (The stand-in does not check
/// the member's session, which upstream does.)
fn resolve_reference(html: &Path, req: &Request) -> Response {
    let Some(url) = req.query("reference").map(str::to_owned) else {
        return Response::json(
            400,
            &json!({"ocs": {"meta": {"status": "failure", "statuscode": 400}, "data": []}}),
        );
    };
    let preview = match remote_get(html, &url, false) {
        Ok(a) => {
            let body = String::from_utf8_lossy(&a.body);
            json!({"richObjectType": "open-graph", "openGraphObject": {
                "id": url, "name": body.chars().take(200).collect::<String>(), "status": a.status}})
        }
        Err(e) => {
            eprintln!("stand-in: link preview of {url}: {e}");
            Value::Null
        }
    };
    Response::json(
        200,
        &json!({"ocs": {"meta": {"status": "ok", "statuscode": 200},
            "data": {"references": {url: preview}}}}),
    )
}

/// `apache2-foreground`: the web server on port 80.
pub fn serve(_args: &[String]) -> R<i32> {
    let html = PathBuf::from(HTML);
    // The image's reverse-proxy.config.php reads the environment on every
    // request; a value upstream would silently ignore stops the stand-in
    // here, before it serves.
    crate::proxy::ProxyConfig::new(&Value::Null, &|n| crate::env(n))
        .map_err(|msg| crate::Fail { code: 1, msg })?;
    let handler = Arc::new(move |req: &Request| -> Response {
        let status = match status(&html) {
            Ok(s) => s,
            // Upstream's status.php catches the exception, logs it and
            // answers 500 with no body; other pages show an error page.
            Err(e) => {
                eprintln!(
                    "[php:error] {} {}: {}",
                    req.method,
                    req.path,
                    e.msg.replace('\n', " ")
                );
                return if req.path == "/status.php" {
                    Response::empty(500)
                } else {
                    Response::text(500, "Internal Server Error\n")
                };
            }
        };
        let installed = status["installed"] == true;
        if installed && let Err(e) = redis_ok() {
            return Response::text(500, format!("Internal Server Error\n{e}\n"));
        }
        let proxy = match proxy_config(&html) {
            Ok(c) => c,
            Err(e) => return Response::text(500, e.msg),
        };
        let seen = seen(req, &proxy);
        if installed && !seen.trusted_domain {
            return Response::new(
                400,
                "text/html",
                format!(
                    "<html><body>Access through untrusted domain: {} is not in trusted_domains</body></html>",
                    seen.insecure_host
                ),
            );
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET" | "HEAD", "/status.php") => Response::json(200, &status),
            ("GET", "/ocs/v2.php/references/resolve") if installed => resolve_reference(&html, req),
            // The stand-in's own window on what upstream computes per
            // request (logs, brute-force protection, absolute URLs).
            ("GET", "/standin/request.json") => Response::json(
                200,
                &json!({
                    "peer": req.peer.map(|p| p.ip().to_canonical().to_string()),
                    "remote_addr": seen.remote_addr,
                    "remote_address": seen.remote_address,
                    "protocol": seen.protocol,
                    "host": seen.host,
                    "absolute_url": format!("{}://{}/", seen.protocol, seen.host),
                    "cli_url": proxy.overwrite_cli_url,
                }),
            ),
            (_, "/" | "/index.php" | "/index.php/login" | "/login") => {
                if !installed {
                    Response::new(
                        200,
                        "text/html",
                        "<html><body>Nextcloud stand-in: installation page</body></html>",
                    )
                } else if status["maintenance"] == true || status["needsDbUpgrade"] == true {
                    Response::text(
                        503,
                        "Nextcloud is in maintenance mode or needs an upgrade\n",
                    )
                } else if req.path.ends_with("login") {
                    Response::new(
                        200,
                        "text/html",
                        "<html><body>Nextcloud stand-in: login</body></html>",
                    )
                } else {
                    // Upstream redirects to an absolute URL, built from
                    // what it takes for the protocol and host.
                    Response::redirect(&format!(
                        "{}://{}/index.php/login",
                        seen.protocol, seen.host
                    ))
                }
            }
            _ => Response::text(404, "Not Found\n"),
        }
    });
    say("apache2-foreground (stand-in): listening on port 80");
    net::serve(80, handler).ctx("AH00072: make_sock: could not bind to address [::]:80")?;
    Ok(1)
}

/// Whether `/var/www/html` is a mount (a volume) in this container.
fn html_is_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(HTML))
}

/// One run of cron.php.
fn cron_pass(html: &Path) -> R<()> {
    let st = status(html)?;
    if st["installed"] != true {
        return fail("cron.php: Nextcloud is not installed");
    }
    if st["maintenance"] == true || st["needsDbUpgrade"] == true {
        return fail("cron.php: Nextcloud is in maintenance mode or needs an upgrade");
    }
    state_file(html).update(|s| {
        let runs = s["cron_runs"].as_u64().unwrap_or(0) + 1;
        s["cron_runs"] = json!(runs);
        s["cron_last"] = json!(crate::codec::now());
        Ok(())
    })
}

/// `/cron.sh`: runs cron.php every 5 minutes (`STANDIN_CRON_SECONDS`
/// changes that), on the same volume as the web container.
pub fn cron(_args: &[String]) -> R<i32> {
    if !html_is_mounted() {
        return fail(format!(
            "cron.sh: {HTML} is not a volume: the cron container needs the web container's volume"
        ));
    }
    let every = crate::env("STANDIN_CRON_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    say(format!("crond (stand-in): cron.php every {every} s"));
    loop {
        if let Err(e) = cron_pass(Path::new(HTML)) {
            eprintln!("{}", e.msg);
        }
        std::thread::sleep(Duration::from_secs(every));
    }
}

/// `php`: `php occ …`, `php -f cron.php`, and `php -r '<health check>'`.
pub fn php(args: &[String]) -> R<i32> {
    let mut i = 0;
    while i < args.len() && args[i] == "-d" {
        i += 2;
    }
    let args = &args[i.min(args.len())..];
    match args.first().map(String::as_str) {
        None => fail("stand-in php: no interactive mode"),
        Some("-v" | "--version") => {
            println!("PHP 8.3.0 (cli) (commonscloud stand-in)");
            Ok(0)
        }
        Some("-r") => php_r(args.get(1).map(String::as_str).unwrap_or("")),
        Some("-f") => run_script(
            args.get(1).map(String::as_str).unwrap_or(""),
            &args[2.min(args.len())..],
        ),
        Some(flag) if flag.starts_with('-') => {
            fail(format!("stand-in php: unsupported option {flag}"))
        }
        Some(script) => run_script(script, &args[1..]),
    }
}

fn run_script(script: &str, rest: &[String]) -> R<i32> {
    let path = Path::new(script);
    if !path.is_file() {
        return fail(format!("Could not open input file: {script}"));
    }
    let dir = std::fs::canonicalize(path)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    match path.file_name().and_then(|n| n.to_str()) {
        Some("occ") => crate::occ::main(&dir, rest),
        Some("cron.php") => cron_pass(&dir).map(|()| 0),
        _ => fail(format!(
            "stand-in php runs occ and cron.php only, not {script}"
        )),
    }
}

/// The catalog's health check: `php -r` that fetches status.php and exits
/// 0 when it is installed and not in maintenance.
fn php_r(code: &str) -> R<i32> {
    let url = ["file_get_contents('", "file_get_contents(\""]
        .iter()
        .find_map(|open| {
            let rest = code.split(open).nth(1)?;
            rest.split(['\'', '"']).next()
        });
    let Some(url) = url else {
        return crate::fail_code(
            255,
            format!(
                "stand-in php -r understands only a status.php check with file_get_contents('…'), not: {code}"
            ),
        );
    };
    let s: Value = match net::get(url) {
        Ok(a) if a.status < 400 => serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let mut ok = true;
    if code.contains("'installed'") || code.contains("\"installed\"") {
        ok &= s["installed"] == true;
    }
    if code.contains("'maintenance'") || code.contains("\"maintenance\"") {
        ok &= s["maintenance"] == false;
    }
    if code.contains("needsDbUpgrade") {
        ok &= s["needsDbUpgrade"] == false;
    }
    Ok(if ok && !s.is_null() { 0 } else { 1 })
}
