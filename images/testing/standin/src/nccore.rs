//! What Nextcloud's core decides about versions, as the stand-in models it:
//! the code on the volume (`version.php`, copied from the image's
//! `/usr/src/nextcloud`), `config/config.php` (its `version`, `installed`
//! and `maintenance`), the versions the database records (`oc_appconfig`
//! in the real PostgreSQL), and from these `status.php`'s answer and
//! `occ upgrade` (`lib/private/Updater.php`).
//!
//! Sources (nextcloud/server): `version.php` (`$OC_Version`,
//! `$OC_VersionCanBeUpgradedFrom`), `lib/private/legacy/OC_Util.php`
//! `needUpgrade`, `OC_App::shouldUpgrade`, `lib/private/Updater.php`
//! (`isUpgradePossible`, `doUpgrade`), `core/Command/Upgrade.php`,
//! `core/Command/Status.php`, `status.php`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::postgres::{Session, lit};
use crate::state::{self, StateFile};
use crate::{Ctx, Fail, R};

pub const SRC: &str = "/usr/src/nextcloud";
/// www-data in the Debian-based image.
pub const WWW_DATA: (u32, u32) = (33, 33);
/// The marker of the deliberately broken build in `lib/base.php`.
const BROKEN_MARK: &str = "standin-broken-after-migration";

/// A Nextcloud version: `31.0.0` or `31.0.0.0` (the fourth part is the
/// internal patch level, compared too).
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

    /// `31.0`: the key of `$OC_VersionCanBeUpgradedFrom`.
    pub fn major_minor(self) -> String {
        format!("{}.{}", self.0[0], self.0[1])
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
}

/// What a release's `version.php` says, plus the stand-in's own marks.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub version: Version,
    /// `$OC_VersionCanBeUpgradedFrom['nextcloud']`: `major.minor` keys.
    pub upgrades_from: Vec<String>,
    /// The stand-in's minimum patch per `major.minor` it upgrades from
    /// (`$standin_minimum_from`), e.g. `31.0` → `31.0.5`.
    pub minimum_from: BTreeMap<String, Version>,
    /// `$vendor`.
    pub vendor: String,
}

impl Release {
    /// A release as the image's build arguments describe it: upgradable
    /// from the previous major and its own (as every release since 12),
    /// with at most one minimum patch (`31.0.5`).
    pub fn from_build(version: Version, minimum: Option<Version>) -> Release {
        let mut minimum_from = BTreeMap::new();
        if let Some(m) = minimum {
            minimum_from.insert(m.major_minor(), m);
        }
        Release {
            version,
            upgrades_from: vec![
                format!("{}.0", version.major().saturating_sub(1)),
                format!("{}.0", version.major()),
            ],
            minimum_from,
            vendor: "nextcloud".into(),
        }
    }

    /// The text of `version.php`, in the shape of a release tarball's.
    pub fn php(&self) -> String {
        let allowed: Vec<String> = self
            .upgrades_from
            .iter()
            .map(|k| format!("'{k}' => true"))
            .collect();
        let minimum: Vec<String> = self
            .minimum_from
            .iter()
            .map(|(k, v)| format!("'{k}' => '{}'", v.short()))
            .collect();
        format!(
            "<?php\n\
             $OC_Version = array({});\n\
             $OC_VersionString = '{}';\n\
             $OC_Edition = '';\n\
             $OC_Channel = 'stable';\n\
             $OC_VersionCanBeUpgradedFrom = array('nextcloud' => array({}), 'owncloud' => array('10.13' => true));\n\
             $OC_Build = 'commonscloud stand-in';\n\
             $vendor = '{}';\n\
             // Stand-in only (images/testing/README.md): the oldest patch release of a\n\
             // major.minor this release upgrades from, as the update server routes it.\n\
             $standin_minimum_from = array({});\n",
            self.version.0.map(|p| p.to_string()).join(","),
            self.version.short(),
            allowed.join(", "),
            self.vendor,
            minimum.join(", "),
        )
    }

    /// Reads a `version.php`; `None` when there is none.
    pub fn read(php: &Path) -> R<Option<Release>> {
        let text = match std::fs::read_to_string(php) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(format!("reading {}", php.display())),
        };
        let bad = || Fail {
            code: 1,
            msg: format!("{} is not a version.php this stand-in wrote", php.display()),
        };
        let array_after = |marker: &str| -> Option<String> {
            let rest = text.split(marker).nth(1)?;
            Some(rest.split(')').next()?.to_owned())
        };
        let version = array_after("$OC_Version = array(")
            .and_then(|a| Version::parse(&a.replace(',', ".")))
            .ok_or_else(bad)?;
        let quoted_pairs = |list: &str| -> Vec<(String, String)> {
            list.split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=>")?;
                    Some((
                        k.trim().trim_matches('\'').to_owned(),
                        v.trim().trim_matches('\'').to_owned(),
                    ))
                })
                .collect()
        };
        let upgrades_from = array_after("'nextcloud' => array(")
            .map(|l| quoted_pairs(&l).into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default();
        let minimum_from = array_after("$standin_minimum_from = array(")
            .map(|l| {
                quoted_pairs(&l)
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, Version::parse(&v)?)))
                    .collect()
            })
            .unwrap_or_default();
        let vendor = text
            .split("$vendor = '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or("")
            .to_owned();
        Ok(Some(Release {
            version,
            upgrades_from,
            minimum_from,
            vendor,
        }))
    }

    /// `Updater::isUpgradePossible` for an instance of vendor `vendor` at
    /// `old`: the vendor must be Nextcloud, `old`'s `major.minor` must be a
    /// key, and `old` no newer than this release. Then the stand-in's
    /// minimum patch. The refusal names which rule refused.
    pub fn can_upgrade_from(&self, old: Version, vendor: &str) -> Result<(), String> {
        if vendor != "nextcloud" {
            return Err(format!(
                "the database records vendor {vendor:?}, and only \"nextcloud\" instances upgrade"
            ));
        }
        if !self.upgrades_from.contains(&old.major_minor()) {
            return Err(format!(
                "{} upgrades from {} only, not from {}",
                self.version.short(),
                self.upgrades_from.join(" or "),
                old.short()
            ));
        }
        if old > self.version {
            return Err(format!(
                "{} is older than the installed {}",
                self.version.short(),
                old.short()
            ));
        }
        if let Some(min) = self.minimum_from.get(&old.major_minor())
            && old < *min
        {
            return Err(format!(
                "{} upgrades from {} at {} or later, not from {}: upgrade to {} first",
                self.version.short(),
                old.major_minor(),
                min.short(),
                old.short(),
                min.short()
            ));
        }
        Ok(())
    }

    /// The version of app `app` in this code: shipped apps carry the
    /// server's version (upstream's have their own numbers, bumped with
    /// each release), app-store apps their own.
    pub fn app_version(&self, app: &str) -> String {
        if crate::nextcloud::APPSTORE.contains(&app) {
            crate::nextcloud::app_version(app).to_owned()
        } else {
            self.version.short()
        }
    }
}

/// The code on the volume: its release and whether it is the broken build.
#[derive(Debug, Clone)]
pub struct Code {
    pub release: Release,
    pub broken: bool,
}

impl Code {
    /// The code in `dir` (`/var/www/html`, or the image's
    /// `/usr/src/nextcloud`); `None` when there is no `version.php`.
    pub fn read(dir: &Path) -> R<Option<Code>> {
        let Some(release) = Release::read(&dir.join("version.php"))? else {
            return Ok(None);
        };
        let base = std::fs::read_to_string(dir.join("lib/base.php")).unwrap_or_default();
        Ok(Some(Code {
            release,
            broken: base.contains(BROKEN_MARK),
        }))
    }

    /// The code the volume runs: its own, or the image's before the first
    /// copy.
    pub fn of(html: &Path) -> R<Code> {
        if let Some(c) = Code::read(html)? {
            return Ok(c);
        }
        Code::read(Path::new(SRC))?.ok_or_else(|| Fail {
            code: 1,
            msg: format!(
                "{SRC}/version.php is missing: the image was not built with NEXTCLOUD_VERSION"
            ),
        })
    }

    pub fn version(&self) -> Version {
        self.release.version
    }
}

/// Writes the image's code into `dir` at build time: `version.php`, the
/// entry points, `lib/base.php` (which marks the broken build), a file
/// named after the release (so that an upgrade's `rsync --delete` has
/// something to remove), the default `config/*.config.php` and the empty
/// `data`, `custom_apps` and `themes`.
pub fn write_code(dir: &Path, release: &Release, broken: bool) -> R<()> {
    let v = release.version;
    for d in ["lib", "core", "config", "data", "custom_apps", "themes"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("version.php"), release.php())?;
    for entry in [
        "occ",
        "index.php",
        "status.php",
        "cron.php",
        "remote.php",
        "public.php",
    ] {
        std::fs::write(
            dir.join(entry),
            format!(
                "<?php\n// Nextcloud {} stand-in: `{entry}` is served by the standin program\n",
                v.short()
            ),
        )?;
    }
    let mut base = format!("<?php\n// Nextcloud {} stand-in code\n", v.full());
    if broken {
        base.push_str(&format!(
            "// {BROKEN_MARK}: this build migrates, then fails every request and command\n"
        ));
    }
    std::fs::write(dir.join("lib/base.php"), base)?;
    std::fs::write(
        dir.join(format!("core/release-{}.txt", v.short())),
        format!("Nextcloud {}\n", v.short()),
    )?;
    std::fs::write(
        dir.join("config/apps.config.php"),
        "<?php\n$CONFIG = array (\n  'apps_paths' => array (\n    0 => array ('path' => OC::$SERVERROOT.'/apps', 'url' => '/apps', 'writable' => false),\n    1 => array ('path' => OC::$SERVERROOT.'/custom_apps', 'url' => '/custom_apps', 'writable' => true),\n  ),\n);\n",
    )?;
    std::fs::write(
        dir.join("config/upgrade-disable-web.config.php"),
        "<?php\n$CONFIG = array (\n  'upgrade.disable-web' => true,\n);\n",
    )?;
    Ok(())
}

// ---- config.php ---------------------------------------------------------------

/// The state file on the volume, with `config/config.php` kept as its
/// mirror (the `system` values and the database's).
pub fn state_file(html: &Path) -> StateFile {
    let mut f = StateFile::new(html.join("standin-state.json"), Some(WWW_DATA));
    f.after_write = Some(write_config_php);
    f
}

/// A `system` value of config.php.
pub fn system<'a>(st: &'a Value, key: &str) -> &'a Value {
    &st["system"][key]
}

pub fn installed(st: &Value) -> bool {
    system(st, "installed") == true
}

pub fn maintenance(st: &Value) -> bool {
    system(st, "maintenance") == true
}

/// config.php's `version` (`0.0.0` when missing, as upstream reads it).
pub fn config_version(st: &Value) -> Version {
    system(st, "version")
        .as_str()
        .and_then(Version::parse)
        .unwrap_or(Version::NONE)
}

/// PHP's `var_export` of a JSON value, as config.php holds it.
fn php_value(v: &Value, indent: &str, out: &mut String) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('\'');
            out.push_str(&s.replace('\\', "\\\\").replace('\'', "\\'"));
            out.push('\'');
        }
        Value::Array(a) => {
            let m: serde_json::Map<String, Value> = a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect();
            php_value(&Value::Object(m), indent, out);
        }
        Value::Object(m) => {
            out.push('\n');
            out.push_str(indent);
            out.push_str("array (\n");
            let inner = format!("{indent}  ");
            for (k, v) in m {
                out.push_str(&inner);
                if k.parse::<u64>().is_ok() {
                    out.push_str(k);
                } else {
                    php_value(&Value::String(k.clone()), "", out);
                }
                out.push_str(" => ");
                php_value(v, &inner, out);
                out.push_str(",\n");
            }
            out.push_str(indent);
            out.push(')');
        }
    }
}

/// `config/config.php` from the state: the `system` values, with the
/// database's (`dbtype`, `dbhost`, `dbname`, `dbuser`, `dbpassword`).
pub fn config_php(st: &Value) -> String {
    let mut m = serde_json::Map::new();
    let db = &st["db"];
    if db.is_object() {
        for (k, f) in [
            ("dbtype", "type"),
            ("dbhost", "host"),
            ("dbname", "name"),
            ("dbuser", "user"),
            ("dbpassword", "password"),
        ] {
            m.insert(k.into(), db[f].clone());
        }
    }
    if let Some(sys) = st["system"].as_object() {
        for (k, v) in sys {
            m.insert(k.clone(), v.clone());
        }
    }
    let mut body = String::new();
    php_value(&Value::Object(m), "", &mut body);
    format!("<?php\n$CONFIG ={body};\n")
}

/// The state file's hook: rewrites config.php when it changed (only once
/// installed, and atomically; owned by www-data when root writes it).
fn write_config_php(state_path: &Path, st: &Value) -> R<()> {
    if !installed(st) {
        return Ok(());
    }
    let html = state_path.parent().unwrap_or(Path::new("/"));
    let dir = html.join("config");
    let path = dir.join("config.php");
    let text = config_php(st);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).ctx(format!("creating {}", dir.display()))?;
    let tmp = dir.join("config.php.tmp");
    std::fs::write(&tmp, text).ctx(format!("writing {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640));
    if crate::euid() == 0 {
        let _ = std::os::unix::fs::chown(&tmp, Some(WWW_DATA.0), Some(WWW_DATA.1));
    }
    std::fs::rename(&tmp, &path).ctx(format!("renaming to {}", path.display()))
}

// ---- the database -------------------------------------------------------------

/// The database config.php names, logged in to.
pub fn db(st: &Value) -> Result<Session, String> {
    let d = &st["db"];
    let (host, port) = crate::net::split_host_port(state::s(d, "host"), 5432)?;
    Session::open(
        &host,
        port,
        state::s(d, "user"),
        state::s(d, "name"),
        state::s(d, "password"),
    )
    .map_err(|e| format!("Doctrine\\DBAL\\Exception: Failed to connect to the database: {e}"))
}

/// The part of upstream's schema the stand-in keeps (same table and
/// columns as Nextcloud's `oc_appconfig`).
pub fn ensure_schema(s: &mut Session) -> Result<(), String> {
    s.query(
        "CREATE TABLE IF NOT EXISTS oc_appconfig (\
           appid varchar(32) NOT NULL DEFAULT '', \
           configkey varchar(64) NOT NULL DEFAULT '', \
           configvalue text, \
           PRIMARY KEY (appid, configkey))",
    )
    .map(drop)
}

/// Sets `appid`/`key` in `oc_appconfig`.
pub fn set_app_value(s: &mut Session, appid: &str, key: &str, value: &str) -> Result<(), String> {
    s.query(&format!(
        "INSERT INTO oc_appconfig (appid, configkey, configvalue) VALUES ({}, {}, {}) \
         ON CONFLICT (appid, configkey) DO UPDATE SET configvalue = EXCLUDED.configvalue",
        lit(appid),
        lit(key),
        lit(value)
    ))
    .map(drop)
}

/// `oc_appconfig` `key` of every app that has one.
pub fn app_values(s: &mut Session, key: &str) -> Result<BTreeMap<String, String>, String> {
    let rows = s.query(&format!(
        "SELECT appid, configvalue FROM oc_appconfig WHERE configkey = {}",
        lit(key)
    ))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone().unwrap_or_default())))
        .collect())
}

/// The core vendor the database records (`''` when none).
pub fn vendor(s: &mut Session) -> Result<String, String> {
    Ok(s.query(
        "SELECT configvalue FROM oc_appconfig WHERE appid = 'core' AND configkey = 'vendor'",
    )?
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
    .unwrap_or_default())
}

/// Compares two app versions as PHP's `version_compare` does for plain
/// dotted numbers.
fn cmp_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parts(a), parts(b));
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Apps whose recorded `installed_version` differs from the code's
/// (`OC_App::shouldUpgrade`: any difference, older or newer):
/// `(app, in the database, in the code)`.
pub fn apps_out_of_step(
    s: &mut Session,
    code: &Release,
) -> Result<Vec<(String, String, String)>, String> {
    Ok(app_values(s, "installed_version")?
        .into_iter()
        .filter(|(app, _)| app != "core")
        .map(|(app, db)| {
            let want = code.app_version(&app);
            (app, db, want)
        })
        .filter(|(_, db, want)| cmp_versions(db, want).is_ne())
        .collect())
}

// ---- status -------------------------------------------------------------------

/// Why the instance cannot answer: upstream throws, so status.php answers
/// 500 and occ prints the exception and exits 1.
pub fn thrown(msg: impl Into<String>) -> Fail {
    Fail {
        code: 1,
        msg: format!("An unhandled exception has been thrown:\n{}", msg.into()),
    }
}

/// `OC_Util::needUpgrade`: the code newer than config.php's version, or an
/// app's recorded version not the code's; a code older than config.php's
/// version throws ("Downgrading is not supported").
pub fn need_upgrade(st: &Value, code: &Code) -> R<bool> {
    if !installed(st) {
        return Ok(false);
    }
    let installed_version = config_version(st);
    let current = code.version();
    if current > installed_version {
        return Ok(true);
    }
    if current < installed_version {
        return Err(thrown(format!(
            "OCP\\HintException: Downgrading is not supported and is likely to cause unpredictable issues (from {} to {})",
            installed_version.full(),
            current.full()
        )));
    }
    let mut s = db(st).map_err(thrown)?;
    let apps = apps_out_of_step(&mut s, &code.release).map_err(|e| {
        thrown(format!(
            "Doctrine\\DBAL\\Exception\\TableNotFoundException: {e}"
        ))
    })?;
    Ok(!apps.is_empty())
}

/// The broken build's failure, once its migration ran.
pub fn broken_check(st: &Value, code: &Code) -> R<()> {
    if code.broken && installed(st) && config_version(st) == code.version() {
        return Err(thrown(
            "Error: Call to undefined method OC\\AppFramework\\Bootstrap\\Coordinator::runLazyRegistration() \
             (stand-in: this build fails on purpose once its migration ran)",
        ));
    }
    Ok(())
}

/// What status.php and `occ status` say (the fields of Nextcloud 30-32;
/// `database` came later). An error is what upstream throws.
pub fn status(html: &Path) -> R<Value> {
    let st = state_file(html).read()?;
    let code = Code::of(html)?;
    broken_check(&st, &code)?;
    let needs = need_upgrade(&st, &code)?;
    let v = code.version();
    Ok(json!({
        "installed": installed(&st),
        "version": v.full(),
        "versionstring": v.short(),
        "edition": "",
        "maintenance": maintenance(&st),
        "needsDbUpgrade": needs,
        "productname": "Nextcloud",
        "extendedSupport": false,
    }))
}

// ---- occ upgrade --------------------------------------------------------------

/// One `occ upgrade`, as `core/Command/Upgrade.php` and `Updater::upgrade`
/// run it; prints what upstream prints; the exit status (0, 2 in
/// maintenance with nothing to do, 5 on failure).
pub fn occ_upgrade(html: &Path) -> R<i32> {
    let st = state_file(html).read()?;
    let code = Code::of(html)?;
    if !need_upgrade(&st, &code)? {
        if maintenance(&st) {
            println!("Nextcloud is in maintenance mode");
            println!(
                "Maybe an upgrade is already in process. Please check the logfile (data/nextcloud.log). If you want to re-run the upgrade procedure, remove the \"maintenance mode\" from config.php and call this script again."
            );
            return Ok(2);
        }
        println!("Nextcloud is already latest version");
        return Ok(0);
    }
    let from = config_version(&st);
    let to = code.version();
    println!("Setting log level to debug");
    let was_maintenance = maintenance(&st);
    if !was_maintenance {
        state_file(html).update(|st| {
            st["system"]["maintenance"] = json!(true);
            Ok(())
        })?;
        println!("Turned on maintenance mode");
    }
    let result = do_upgrade(html, &code, from);
    let ok = result.is_ok();
    if let Err((failure, why)) = &result {
        println!("{failure}");
        if let Some(why) = why {
            eprintln!("stand-in: {why}");
        }
    }
    println!(
        "{}",
        if ok {
            "Update successful"
        } else {
            "Update failed"
        }
    );
    if !was_maintenance && ok {
        state_file(html).update(|st| {
            st["system"]["maintenance"] = json!(false);
            Ok(())
        })?;
        println!("Turned off maintenance mode");
    } else {
        println!("Maintenance mode is kept active");
    }
    println!("Resetting log level");
    state_file(html).update(|st| {
        state::arr(st, "occ_upgrades").push(json!({
            "from": from.full(),
            "to": to.full(),
            "maintenance_before": was_maintenance,
            "result": if ok { "success" } else { "failure" },
            "failure": result.as_ref().err().map(|(f, w)| json!({"message": f, "why": w})),
            "at": crate::codec::now(),
        }));
        Ok(())
    })?;
    Ok(if ok { 0 } else { 5 })
}

/// `Updater::doUpgrade`: the check, the migrations, the apps, and the
/// version written into config.php last. A failure: (what upstream
/// prints, the stand-in's reason).
fn do_upgrade(html: &Path, code: &Code, from: Version) -> Result<(), (String, Option<String>)> {
    let st = state_file(html).read().map_err(|e| (e.msg, None))?;
    let mut s = db(&st).map_err(|e| (e, None))?;
    let vendor = vendor(&mut s).map_err(|e| (format!("Doctrine\\DBAL\\Exception: {e}"), None))?;
    code.release
        .can_upgrade_from(from, &vendor)
        .map_err(|why| {
            (
            "Exception: Updates between multiple major versions and downgrades are unsupported."
                .to_owned(),
            Some(why),
        )
        })?;
    let apps = apps_out_of_step(&mut s, &code.release)
        .map_err(|e| (format!("Doctrine\\DBAL\\Exception: {e}"), None))?;
    // Upstream would carry on and write the older versions over the newer
    // ones; the stand-in stops, so that a mismatch cannot pass unnoticed.
    if let Some((app, db, want)) = apps
        .iter()
        .find(|(_, db, want)| cmp_versions(db, want).is_gt())
    {
        return Err((
            format!(
                "Exception: the database records {app} {db}, newer than this code's {want}"
            ),
            Some(
                "the database comes from a newer release than the code on the volume: restore the volume and the database together"
                    .into(),
            ),
        ));
    }
    println!("Updating database schema");
    let sql_err = |e: String| (format!("Doctrine\\DBAL\\Exception: {e}"), None);
    ensure_schema(&mut s).map_err(sql_err)?;
    println!("Updated database");
    let enabled: Vec<String> = st["apps"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for app in &enabled {
        let want = code.release.app_version(app);
        let recorded = app_values(&mut s, "installed_version")
            .map_err(sql_err)?
            .remove(app);
        if recorded.as_deref() == Some(want.as_str()) {
            continue;
        }
        println!("Updating <{app}> ...");
        set_app_value(&mut s, app, "installed_version", &want).map_err(sql_err)?;
        println!("Updated <{app}> to {want}");
    }
    set_app_value(&mut s, "core", "lastupdatedat", "0").map_err(sql_err)?;
    set_app_value(&mut s, "core", "vendor", &code.release.vendor).map_err(sql_err)?;
    // "only set the final version if everything went well"
    state_file(html)
        .update(|st| {
            st["system"]["version"] = json!(code.version().full());
            for app in &enabled {
                st["apps"][app.as_str()] = json!(code.release.app_version(app));
            }
            Ok(())
        })
        .map_err(|e| (e.msg, None))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn version_php_round_trips() {
        let r = Release::from_build(v("32.0.0"), Some(v("31.0.5")));
        let dir = tempdir();
        std::fs::write(dir.join("version.php"), r.php()).unwrap();
        assert_eq!(Release::read(&dir.join("version.php")).unwrap(), Some(r));
        let plain = Release::from_build(v("31.0.0.3"), None);
        std::fs::write(dir.join("version.php"), plain.php()).unwrap();
        let back = Release::read(&dir.join("version.php")).unwrap().unwrap();
        assert_eq!(back, plain);
        assert_eq!(back.version.full(), "31.0.0.3");
        assert!(plain.php().contains("$OC_VersionCanBeUpgradedFrom = array('nextcloud' => array('30.0' => true, '31.0' => true)"));
    }

    #[test]
    fn upgrade_paths_follow_the_updater_and_the_minimum_patch() {
        let r32 = Release::from_build(v("32.0.0"), Some(v("31.0.5")));
        assert!(r32.can_upgrade_from(v("31.0.5"), "nextcloud").is_ok());
        assert!(r32.can_upgrade_from(v("31.0.14"), "nextcloud").is_ok());
        assert!(r32.can_upgrade_from(v("32.0.0"), "nextcloud").is_ok());
        let e = r32.can_upgrade_from(v("31.0.0"), "nextcloud").unwrap_err();
        assert!(e.contains("upgrade to 31.0.5 first"), "{e}");
        assert!(r32.can_upgrade_from(v("30.0.17"), "nextcloud").is_err());
        assert!(r32.can_upgrade_from(v("32.0.1"), "nextcloud").is_err());
        assert!(r32.can_upgrade_from(v("31.0.5"), "").is_err());
        let r31 = Release::from_build(v("31.0.5"), None);
        assert!(r31.can_upgrade_from(v("30.0.17"), "nextcloud").is_ok());
        assert!(r31.can_upgrade_from(v("29.0.0"), "nextcloud").is_err());
    }

    #[test]
    fn config_php_is_a_php_array() {
        let st = json!({
            "db": {"type": "pgsql", "host": "db", "name": "nc", "user": "nc", "password": "it's"},
            "system": {"installed": true, "maintenance": false, "version": "31.0.5.0",
                       "trusted_domains": {"0": "localhost", "1": "cloud.example.org"}},
        });
        let php = config_php(&st);
        assert!(php.starts_with("<?php\n$CONFIG =\narray (\n"), "{php}");
        assert!(php.contains("  'dbpassword' => 'it\\'s',\n"), "{php}");
        assert!(php.contains("  'maintenance' => false,\n"), "{php}");
        assert!(php.contains("  'trusted_domains' => \n  array (\n    0 => 'localhost',\n    1 => 'cloud.example.org',\n  ),\n"), "{php}");
        assert!(php.ends_with(");\n"), "{php}");
    }

    #[test]
    fn app_versions_compare_as_php_does() {
        assert!(cmp_versions("31.0.5", "31.0.10").is_lt());
        assert!(cmp_versions("32.0.0", "31.0.14").is_gt());
        assert!(cmp_versions("1.22.0", "1.22").is_eq());
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("nccore-{}", crate::codec::random_hex(6)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
