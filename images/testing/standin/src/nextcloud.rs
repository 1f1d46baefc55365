//! The Nextcloud stand-in (`nextcloud:<major>-apache`): the entrypoint's
//! install and upgrade rules, `status.php` on port 80, `php` (for `php occ`
//! and the catalog's `php -r` health check) and `/cron.sh`.
//!
//! Layout, as upstream: the image's code (here just `version.php` and an
//! `occ` marker) is in `/usr/src/nextcloud`, copied to the volume
//! `/var/www/html` on install and upgrade. The volume also holds
//! `config/config.php` (its owner is who may run occ) and
//! `standin-state.json`: everything occ was told, for tests to read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::net::{self, Request, Response};
use crate::state::{self, StateFile};
use crate::{Ctx, R, fail, file_env};

pub const SRC: &str = "/usr/src/nextcloud";
pub const HTML: &str = "/var/www/html";
/// www-data in the Debian-based image.
pub const WWW_DATA: (u32, u32) = (33, 33);

/// A Nextcloud version: `31.0.0` or `31.0.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub [u32; 4]);

impl Version {
    pub const NONE: Version = Version([0, 0, 0, 0]);

    pub fn parse(s: &str) -> Option<Version> {
        let parts: Vec<u32> = s
            .trim()
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if !(3..=4).contains(&parts.len()) {
            return None;
        }
        let mut v = [0; 4];
        v[..parts.len()].copy_from_slice(&parts);
        Some(Version(v))
    }

    pub fn major(self) -> u32 {
        self.0[0]
    }

    /// `31.0.0.0`
    pub fn full(self) -> String {
        self.0.map(|p| p.to_string()).join(".")
    }

    /// `31.0.0`
    pub fn short(self) -> String {
        self.0[..3]
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    pub fn php(self) -> String {
        format!(
            "<?php\n$OC_Version = array({});\n$OC_VersionString = '{}';\n$OC_Edition = '';\n$OC_Channel = 'stable';\n$OC_VersionCanBeUpgradedFrom = array (\n  'nextcloud' => array ('{}.0' => true, '{}.0' => true),\n);\n$vendor = 'nextcloud';\n",
            self.0.map(|p| p.to_string()).join(","),
            self.short(),
            self.major().saturating_sub(1),
            self.major(),
        )
    }

    /// The version in a `version.php`, `None` if there is none.
    pub fn read(php: &Path) -> R<Option<Version>> {
        let text = match std::fs::read_to_string(php) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(format!("reading {}", php.display())),
        };
        let v = text
            .split("$OC_Version = array(")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|a| Version::parse(&a.replace(',', ".")));
        match v {
            Some(v) => Ok(Some(v)),
            None => fail(format!("{} has no $OC_Version", php.display())),
        }
    }
}

/// The state file on the volume.
pub fn state_file(html: &Path) -> StateFile {
    StateFile::new(html.join("standin-state.json"), Some(WWW_DATA))
}

/// What status.php says.
pub fn status(html: &Path) -> R<Value> {
    let st = state_file(html).read()?;
    let code = Version::read(&html.join("version.php"))?
        .or(Version::read(&Path::new(SRC).join("version.php"))?)
        .unwrap_or(Version::NONE);
    let installed = st["installed"].as_bool().unwrap_or(false);
    let db = Version::parse(state::s(&st, "dbVersion")).unwrap_or(code);
    Ok(json!({
        "installed": installed,
        "maintenance": st["maintenance"].as_bool().unwrap_or(false),
        "needsDbUpgrade": installed && db != code,
        "version": code.full(),
        "versionstring": code.short(),
        "edition": "",
        "productname": "Nextcloud",
        "extendedSupport": false,
    }))
}

/// `RUN ["standin", "nextcloud-version-php"]` at build time: the image's
/// version from the `NEXTCLOUD_VERSION` build argument.
pub fn version_php(_args: &[String]) -> R<i32> {
    let v = crate::env("NEXTCLOUD_VERSION").unwrap_or_default();
    let Some(version) = Version::parse(&v) else {
        return fail(format!(
            "build argument NEXTCLOUD_VERSION must look like 31.0.0, not {v:?}"
        ));
    };
    std::fs::create_dir_all(SRC)?;
    std::fs::write(Path::new(SRC).join("version.php"), version.php())?;
    std::fs::write(
        Path::new(SRC).join("occ"),
        "<?php\n// stand-in: `php occ` runs the standin's occ\n",
    )?;
    println!("Nextcloud stand-in {}", version.full());
    Ok(0)
}

fn say(msg: impl std::fmt::Display) {
    println!("{msg}");
}

/// Runs the executable `*.sh` hooks of a stage, as upstream's `run_path`.
fn run_hooks(stage: &str, as_user: Option<(u32, u32)>) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = Path::new("/docker-entrypoint-hooks.d").join(stage);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut hooks: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    hooks.sort();
    say(format!(
        "=> Searching for hook scripts (*.sh) to run, located in the folder \"{}\"",
        dir.display()
    ));
    for h in hooks {
        let exec = std::fs::metadata(&h).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !exec {
            say(format!(
                "==> Skipping the script \"{}\", due to lack of permissions to execute it.",
                h.display()
            ));
            continue;
        }
        say(format!(
            "==> Running the script (cwd: {HTML}): \"{}\"",
            h.display()
        ));
        let mut cmd = std::process::Command::new(&h);
        cmd.current_dir(HTML);
        if let Some((u, g)) = as_user {
            cmd.gid(g).uid(u);
        }
        let st = cmd.status().ctx(format!("running {}", h.display()))?;
        if !st.success() {
            return fail(format!(
                "==> Failed at executing \"{}\". Exit code: {}",
                h.display(),
                st.code().unwrap_or(1)
            ));
        }
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

pub fn app_version(app: &str) -> &'static str {
    match app {
        "user_ldap" => "1.22.0",
        "groupfolders" => "19.1.0",
        "richdocuments" => "8.6.0",
        _ => "1.0.0",
    }
}

/// Checks the database the way the install does: a login to PostgreSQL
/// with these credentials.
pub fn check_db(host: &str, user: &str, db: &str, password: &str) -> Result<(), String> {
    let (h, port) = net::split_host_port(host, 5432)?;
    crate::postgres::login(&h, port, user, db, password)
}

/// Installs from the environment if the admin pair and the complete
/// PostgreSQL group are set; `Ok(false)` when not enough was given.
fn install(html: &Path, image: Version, root: bool) -> R<bool> {
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
    run_hooks("pre-installation", root.then_some(WWW_DATA))?;
    say("Starting nextcloud installation");
    let max_retries = 10;
    let mut tries = 0;
    loop {
        match check_db(&host, &user, &db, &password) {
            Ok(()) => break,
            Err(e) => {
                eprintln!("Error while trying to initialise the database: {e}");
                tries += 1;
                if tries > max_retries {
                    return fail("Installing of nextcloud failed!");
                }
                say("Retrying install...");
                std::thread::sleep(Duration::from_secs(retry_seconds()));
            }
        }
    }
    std::fs::create_dir_all(html.join("config"))?;
    std::fs::write(
        html.join("config/config.php"),
        format!(
            "<?php\n$CONFIG = array (\n  'installed' => true,\n  'dbtype' => 'pgsql',\n  'dbhost' => '{host}',\n  'dbname' => '{db}',\n  'dbuser' => '{user}',\n  'version' => '{}',\n);\n",
            image.full()
        ),
    )?;
    if root {
        let _ = std::os::unix::fs::chown(
            html.join("config/config.php"),
            Some(WWW_DATA.0),
            Some(WWW_DATA.1),
        );
    }
    let domains: Vec<String> = crate::env("NEXTCLOUD_TRUSTED_DOMAINS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    state_file(html).update(|st| {
        let apps: serde_json::Map<String, Value> = DEFAULT_APPS
            .iter()
            .map(|a| ((*a).to_owned(), json!(app_version(a))))
            .collect();
        let mut trusted = serde_json::Map::new();
        trusted.insert("0".into(), json!("localhost"));
        *st = json!({
            "installed": true,
            "maintenance": false,
            "dbVersion": image.full(),
            "admin_user": admin_user,
            "admin_password_sha256": crate::codec::sha256_hex(admin_password.as_bytes()),
            "db": {"type": "pgsql", "host": host, "name": db, "user": user, "password": password},
            "apps": apps,
            "system": {"trusted_domains": trusted},
            "app_config": {},
            "ldap": {},
            "groupfolders": [],
            "occ_log": [],
        });
        if !domains.is_empty() {
            say("Setting trusted domains…");
        }
        for (i, d) in domains.iter().enumerate() {
            st["system"]["trusted_domains"][(i + 1).to_string()] = json!(d);
        }
        Ok(())
    })?;
    say("Nextcloud was successfully installed");
    run_hooks("post-installation", root.then_some(WWW_DATA))?;
    Ok(true)
}

/// `occ upgrade`: the database schema follows the code (needs the database).
pub fn upgrade(html: &Path) -> R<bool> {
    let code = Version::read(&html.join("version.php"))?.unwrap_or(Version::NONE);
    state_file(html).update(|st| {
        let db = Version::parse(state::s(st, "dbVersion")).unwrap_or(code);
        if db == code {
            return Ok(false);
        }
        let d = &st["db"];
        check_db(
            state::s(d, "host"),
            state::s(d, "user"),
            state::s(d, "name"),
            state::s(d, "password"),
        )
        .map_err(|e| crate::Fail {
            code: 1,
            msg: format!("Exception: Database error when running migration: {e}\nUpdate failed"),
        })?;
        st["dbVersion"] = json!(code.full());
        st["maintenance"] = json!(false);
        Ok(true)
    })
}

/// `/entrypoint.sh`: install or upgrade, then `exec "$@"`.
pub fn entrypoint(args: &[String]) -> R<i32> {
    let Some(cmd) = args.first() else {
        return fail("entrypoint.sh: no command (the image's CMD is apache2-foreground)");
    };
    let update = crate::env("NEXTCLOUD_UPDATE").is_some_and(|v| v == "1");
    if cmd.starts_with("apache") || cmd == "php-fpm" || update {
        let root = crate::euid() == 0;
        let html = Path::new(HTML);
        if let Some(redis) = crate::env("REDIS_HOST") {
            say(format!("Configuring Redis as session handler ({redis})"));
            file_env("REDIS_HOST_PASSWORD")?;
        }
        let image =
            Version::read(&Path::new(SRC).join("version.php"))?.ok_or_else(|| crate::Fail {
                code: 1,
                msg: format!(
                    "{SRC}/version.php is missing: the image was not built with NEXTCLOUD_VERSION"
                ),
            })?;
        let installed = Version::read(&html.join("version.php"))?.unwrap_or(Version::NONE);
        if installed > image {
            return fail(format!(
                "Can't start Nextcloud because the version of the data ({}) is higher than the docker image version ({}) and downgrading is not supported. Are you sure you have pulled the newest image version?",
                installed.full(),
                image.full()
            ));
        }
        if installed != Version::NONE && image.major() > installed.major() + 1 {
            return fail(format!(
                "Can't start Nextcloud because upgrading from {} to {} is not supported.\nIt is only possible to upgrade one major version at a time. For example, if you want to upgrade from version {} to {}, you will have to upgrade from version {} to {}, then from {} to {}.",
                installed.full(),
                image.full(),
                installed.major(),
                image.major(),
                installed.major(),
                installed.major() + 1,
                installed.major() + 1,
                image.major()
            ));
        }
        if image > installed {
            say(format!("Initializing nextcloud {} ...", image.full()));
            if installed != Version::NONE {
                run_hooks("pre-upgrade", root.then_some(WWW_DATA))?;
                say(format!("Upgrading nextcloud from {} ...", installed.full()));
            }
            for d in ["config", "data", "custom_apps", "themes"] {
                std::fs::create_dir_all(html.join(d))?;
            }
            // Like upstream's rsync: version.php comes with the code,
            // before occ upgrade.
            std::fs::copy(Path::new(SRC).join("occ"), html.join("occ"))?;
            std::fs::copy(Path::new(SRC).join("version.php"), html.join("version.php"))?;
            if root {
                crate::chown_r(html, WWW_DATA.0, WWW_DATA.1)?;
            }
            say("Initializing finished");
            if installed == Version::NONE {
                say("New nextcloud instance");
                if !install(html, image, root)? {
                    say("Next step: Access your instance to finish the web-based installation!");
                    say(
                        "Hint: You can specify NEXTCLOUD_ADMIN_USER and NEXTCLOUD_ADMIN_PASSWORD and the database variables _prior to the initial installation_ to have Nextcloud automatically installed.",
                    );
                }
            } else {
                upgrade(html)?;
                say("Nextcloud was successfully upgraded");
                run_hooks("post-upgrade", root.then_some(WWW_DATA))?;
            }
            if root {
                crate::chown_r(html, WWW_DATA.0, WWW_DATA.1)?;
            }
        }
        run_hooks("before-starting", root.then_some(WWW_DATA))?;
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
            Err(e) => return Response::text(500, e.msg),
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
