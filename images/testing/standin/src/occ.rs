//! `occ`: Nextcloud's console, as far as the appliance drives it. Only real
//! command names, real options (parsed the way Symfony Console does), real
//! `user_ldap` keys; app commands only once their app is enabled; nothing
//! before install; run only by the owner of `config/config.php`.
//! Everything it is told lands in `standin-state.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::nccore::{self, Code};
use crate::nextcloud::{self, APPSTORE, DEFAULT_APPS, SHIPPED_DISABLED, state_file};
use crate::state;
use crate::{R, fail};

/// A command's arguments: `name`, `name?` (optional), `name...` (one or
/// more), `name*` (zero or more).
struct Spec {
    args: &'static [&'static str],
    /// Options that take a value: (long, short or ' ').
    values: &'static [(&'static str, char)],
    flags: &'static [(&'static str, char)],
}

#[derive(Default, Debug)]
struct Input {
    args: BTreeMap<String, Vec<String>>,
    opts: BTreeMap<String, String>,
    flags: BTreeSet<String>,
}

impl Input {
    fn arg(&self, name: &str) -> &str {
        self.args
            .get(name)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }
    fn list(&self, name: &str) -> &[String] {
        self.args.get(name).map_or(&[], Vec::as_slice)
    }
    fn opt(&self, name: &str) -> Option<&str> {
        self.opts.get(name).map(String::as_str)
    }
    fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }
}

const GLOBAL_FLAGS: &[&str] = &[
    "-n",
    "--no-interaction",
    "-q",
    "--quiet",
    "-v",
    "-vv",
    "-vvv",
    "--verbose",
    "--no-ansi",
    "--ansi",
    "--no-warnings",
];

fn parse(command: &str, spec: &Spec, tokens: &[String]) -> R<Input> {
    let mut input = Input::default();
    let mut pos: Vec<String> = Vec::new();
    let mut i = 0;
    let mut only_args = false;
    let takes_value = |long: &str| spec.values.iter().any(|(l, _)| *l == long);
    let is_flag = |long: &str| spec.flags.iter().any(|(l, _)| *l == long);
    while i < tokens.len() {
        let t = &tokens[i];
        i += 1;
        if only_args || t == "-" || !t.starts_with('-') {
            pos.push(t.clone());
            continue;
        }
        if t == "--" {
            only_args = true;
            continue;
        }
        let (long, inline) = if let Some(l) = t.strip_prefix("--") {
            match l.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (l.to_owned(), None),
            }
        } else {
            let c = t.chars().nth(1).unwrap_or(' ');
            let long = spec
                .values
                .iter()
                .chain(spec.flags)
                .find(|(_, s)| *s == c && c != ' ')
                .map(|(l, _)| (*l).to_owned());
            let Some(long) = long else {
                return fail(format!("The \"-{c}\" option does not exist."));
            };
            let rest: String = t.chars().skip(2).collect();
            (long, (!rest.is_empty()).then_some(rest))
        };
        if takes_value(&long) {
            let value = match inline {
                Some(v) => v,
                None => match tokens.get(i) {
                    Some(next) if !next.starts_with('-') || next.is_empty() => {
                        i += 1;
                        next.clone()
                    }
                    _ => return fail(format!("The \"--{long}\" option requires a value.")),
                },
            };
            input.opts.insert(long, value);
        } else if is_flag(&long) {
            if inline.is_some() && t.starts_with("--") {
                return fail(format!("The \"--{long}\" option does not accept a value."));
            }
            input.flags.insert(long);
        } else {
            return fail(format!("The \"--{long}\" option does not exist."));
        }
    }
    let mut pos = pos.into_iter().peekable();
    let mut missing = Vec::new();
    for a in spec.args {
        let (name, kind) = match a.chars().last() {
            Some('?') | Some('*') => (&a[..a.len() - 1], a.chars().last().unwrap_or(' ')),
            _ if a.ends_with("...") => (&a[..a.len() - 3], '+'),
            _ => (*a, '1'),
        };
        let vals: Vec<String> = match kind {
            '+' | '*' => pos.by_ref().collect(),
            _ => pos.next().into_iter().collect(),
        };
        if vals.is_empty() && (kind == '1' || kind == '+') {
            missing.push(name.to_owned());
        }
        input.args.insert(name.to_owned(), vals);
    }
    if !missing.is_empty() {
        return fail(format!(
            "Not enough arguments (missing: \"{}\").",
            missing.join(", ")
        ));
    }
    if let Some(extra) = pos.next() {
        if spec.args.is_empty() {
            return fail(format!(
                "No arguments expected for \"{command}\" command, got \"{extra}\"."
            ));
        }
        let expected: Vec<String> = std::iter::once("command")
            .chain(
                spec.args
                    .iter()
                    .map(|a| a.trim_end_matches(['?', '*', '.'])),
            )
            .map(|a| format!("\"{a}\""))
            .collect();
        return fail(format!(
            "Too many arguments, expected arguments {}.",
            expected.join(" ")
        ));
    }
    Ok(input)
}

type Handler = fn(&Path, &Input) -> R<i32>;

/// (name, app that provides it, spec, handler)
const COMMANDS: &[(&str, Option<&str>, Spec, Handler)] = &[
    (
        "status",
        None,
        Spec {
            args: &[],
            values: &[("output", ' ')],
            flags: &[("exit-code", 'e')],
        },
        cmd_status,
    ),
    (
        "app:enable",
        None,
        Spec {
            args: &["app-id..."],
            values: &[("groups", 'g')],
            flags: &[("force", 'f')],
        },
        cmd_app_enable,
    ),
    (
        "app:disable",
        None,
        Spec {
            args: &["app-id..."],
            values: &[],
            flags: &[],
        },
        cmd_app_disable,
    ),
    (
        "app:list",
        None,
        Spec {
            args: &[],
            values: &[("output", ' '), ("shipped", ' ')],
            flags: &[],
        },
        cmd_app_list,
    ),
    (
        "config:system:set",
        None,
        Spec {
            args: &["name..."],
            values: &[("value", ' '), ("type", ' ')],
            flags: &[("update-only", ' ')],
        },
        cmd_system_set,
    ),
    (
        "config:system:get",
        None,
        Spec {
            args: &["name..."],
            values: &[("output", ' '), ("default-value", ' ')],
            flags: &[],
        },
        cmd_system_get,
    ),
    (
        "config:system:delete",
        None,
        Spec {
            args: &["name..."],
            values: &[],
            flags: &[("error-if-not-exists", ' ')],
        },
        cmd_system_delete,
    ),
    (
        "config:app:set",
        None,
        Spec {
            args: &["app", "name"],
            values: &[("value", ' '), ("type", ' ')],
            flags: &[
                ("lazy", ' '),
                ("sensitive", ' '),
                ("update-only", ' '),
                ("keep-type", ' '),
            ],
        },
        cmd_app_set,
    ),
    (
        "config:app:get",
        None,
        Spec {
            args: &["app", "name"],
            values: &[("output", ' '), ("default-value", ' ')],
            flags: &[("details", ' ')],
        },
        cmd_app_get,
    ),
    (
        "config:app:delete",
        None,
        Spec {
            args: &["app", "name"],
            values: &[],
            flags: &[("error-if-not-exists", ' ')],
        },
        cmd_app_delete,
    ),
    (
        "config:list",
        None,
        Spec {
            args: &["app?"],
            values: &[("output", ' ')],
            flags: &[("private", ' ')],
        },
        cmd_config_list,
    ),
    (
        "maintenance:mode",
        None,
        Spec {
            args: &[],
            values: &[],
            flags: &[("on", ' '), ("off", ' '), ("check-if-disabled", ' ')],
        },
        cmd_maintenance,
    ),
    (
        "upgrade",
        None,
        Spec {
            args: &[],
            values: &[],
            flags: &[],
        },
        cmd_upgrade,
    ),
    (
        "background:cron",
        None,
        Spec {
            args: &[],
            values: &[],
            flags: &[],
        },
        cmd_background_cron,
    ),
    (
        "ldap:create-empty-config",
        Some("user_ldap"),
        Spec {
            args: &[],
            values: &[],
            flags: &[("only-print-prefix", 'p')],
        },
        cmd_ldap_create,
    ),
    (
        "ldap:set-config",
        Some("user_ldap"),
        Spec {
            args: &["configID", "configKey", "configValue"],
            values: &[],
            flags: &[],
        },
        cmd_ldap_set,
    ),
    (
        "ldap:show-config",
        Some("user_ldap"),
        Spec {
            args: &["configID?"],
            values: &[("output", ' ')],
            flags: &[("show-password", ' ')],
        },
        cmd_ldap_show,
    ),
    (
        "ldap:test-config",
        Some("user_ldap"),
        Spec {
            args: &["configID"],
            values: &[],
            flags: &[],
        },
        cmd_ldap_test,
    ),
    (
        "ldap:delete-config",
        Some("user_ldap"),
        Spec {
            args: &["configID"],
            values: &[],
            flags: &[],
        },
        cmd_ldap_delete,
    ),
    (
        "groupfolders:create",
        Some("groupfolders"),
        Spec {
            args: &["name"],
            values: &[],
            flags: &[],
        },
        cmd_gf_create,
    ),
    (
        "groupfolders:list",
        Some("groupfolders"),
        Spec {
            args: &[],
            values: &[("output", ' '), ("user", 'u')],
            flags: &[],
        },
        cmd_gf_list,
    ),
    (
        "groupfolders:group",
        Some("groupfolders"),
        Spec {
            args: &["folder_id", "group?", "permissions*"],
            values: &[],
            flags: &[("delete", 'd')],
        },
        cmd_gf_group,
    ),
    (
        "groupfolders:quota",
        Some("groupfolders"),
        Spec {
            args: &["folder_id", "quota"],
            values: &[],
            flags: &[],
        },
        cmd_gf_quota,
    ),
    (
        "groupfolders:rename",
        Some("groupfolders"),
        Spec {
            args: &["folder_id", "name"],
            values: &[],
            flags: &[],
        },
        cmd_gf_rename,
    ),
    (
        "groupfolders:delete",
        Some("groupfolders"),
        Spec {
            args: &["folder_id"],
            values: &[],
            flags: &[("force", 'f')],
        },
        cmd_gf_delete,
    ),
    (
        "user:auth-tokens:delete",
        None,
        Spec {
            args: &["uid", "id?"],
            values: &[("last-used-before", ' ')],
            flags: &[],
        },
        cmd_tokens_delete,
    ),
    (
        "richdocuments:activate-config",
        Some("richdocuments"),
        Spec {
            args: &[],
            values: &[],
            flags: &[],
        },
        cmd_rd_activate,
    ),
];

/// Real commands this stand-in does not implement: they fail saying so.
const REAL_UNIMPLEMENTED: &[(&str, Option<&str>)] = &[
    ("maintenance:install", None),
    ("maintenance:repair", None),
    ("maintenance:update:htaccess", None),
    ("maintenance:data-fingerprint", None),
    ("user:list", None),
    ("user:add", None),
    ("user:info", None),
    ("user:delete", None),
    ("user:disable", None),
    ("user:enable", None),
    ("user:resetpassword", None),
    ("user:setting", None),
    ("user:auth-tokens:add", None),
    ("user:auth-tokens:list", None),
    ("group:list", None),
    ("group:add", None),
    ("group:adduser", None),
    ("files:scan", None),
    ("files:cleanup", None),
    ("db:add-missing-indices", None),
    ("db:add-missing-columns", None),
    ("db:add-missing-primary-keys", None),
    ("db:convert-filecache-bigint", None),
    ("integrity:check-core", None),
    ("background-job:list", None),
    ("background:ajax", None),
    ("background:webcron", None),
    ("log:manage", None),
    ("app:update", None),
    ("app:install", None),
    ("app:remove", None),
    ("encryption:status", None),
    ("twofactorauth:state", None),
    ("ldap:check-user", Some("user_ldap")),
    ("ldap:search", Some("user_ldap")),
    ("ldap:check-group", Some("user_ldap")),
    ("ldap:show-remnants", Some("user_ldap")),
    ("ldap:promote-group", Some("user_ldap")),
    ("ldap:reset-user", Some("user_ldap")),
    ("ldap:reset-group", Some("user_ldap")),
    ("groupfolders:acl", Some("groupfolders")),
    ("groupfolders:expire", Some("groupfolders")),
    ("groupfolders:scan", Some("groupfolders")),
    ("groupfolders:trashbin:cleanup", Some("groupfolders")),
    (
        "richdocuments:update-empty-templates",
        Some("richdocuments"),
    ),
    ("richdocuments:install-fonts", Some("richdocuments")),
];

/// Commands that run before install.
const BEFORE_INSTALL: &[&str] = &["status", "maintenance:install", "list", "help"];

/// Whether `-v`, `-vv`, `-vvv` or `--verbose` was given.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn main(html: &Path, argv: &[String]) -> R<i32> {
    VERBOSE.store(
        argv.iter()
            .any(|a| matches!(a.as_str(), "-v" | "-vv" | "-vvv" | "--verbose")),
        std::sync::atomic::Ordering::Relaxed,
    );
    let tokens: Vec<String> = argv
        .iter()
        .filter(|a| !GLOBAL_FLAGS.contains(&a.as_str()))
        .cloned()
        .collect();
    let Some(ci) = tokens.iter().position(|t| !t.starts_with('-')) else {
        println!(
            "Nextcloud {} (stand-in)\n\nUsage:\n  command [options] [arguments]",
            status_of(html)?["versionstring"].as_str().unwrap_or("")
        );
        return Ok(0);
    };
    let name = tokens[ci].clone();
    let rest: Vec<String> = tokens[..ci]
        .iter()
        .chain(&tokens[ci + 1..])
        .cloned()
        .collect();

    // Upstream's console.php: only the owner of config.php may run occ.
    if let Ok(meta) = std::fs::metadata(html.join("config/config.php")) {
        let me = crate::euid();
        if meta.uid() != me {
            return fail(format!(
                "Console has to be executed with the user that owns the file config/config.php\nCurrent user id: {me}\nOwner id of config.php: {owner}\nTry adding 'sudo -u #{owner}' to the beginning of the command (without the single quotes)\nIf running with 'docker exec' try adding the option '-u {owner}' to the docker command (without the single quotes)",
                owner = meta.uid()
            ));
        }
    }
    // Upstream's console.php prints what the bootstrap throws (a
    // downgrade, an unreachable database, the broken build) on stdout and
    // exits 1, whatever the command.
    let status = match status_of(html) {
        Ok(s) => s,
        Err(e) => {
            println!("{}", e.msg);
            return Ok(e.code);
        }
    };
    let installed = status["installed"] == true;
    let maintenance = status["maintenance"] == true;
    let needs_upgrade = status["needsDbUpgrade"] == true;

    let known = COMMANDS.iter().find(|c| c.0 == name);
    let unimplemented = REAL_UNIMPLEMENTED.iter().find(|c| c.0 == name);
    let app = known.map(|c| c.1).or(unimplemented.map(|c| c.1)).flatten();
    if known.is_none() && unimplemented.is_none() {
        let near: Vec<&str> = COMMANDS
            .iter()
            .map(|c| c.0)
            .chain(REAL_UNIMPLEMENTED.iter().map(|c| c.0))
            .filter(|c| distance(c, &name) <= 3)
            .collect();
        let hint = if near.is_empty() {
            String::new()
        } else {
            format!(
                "\n\nDid you mean one of these?\n    {}",
                near.join("\n    ")
            )
        };
        return fail(format!("Command \"{name}\" is not defined.{hint}"));
    }
    if !installed && !BEFORE_INSTALL.contains(&name.as_str()) {
        return fail(format!(
            "Nextcloud is not installed - only a limited number of commands are available\nCommand \"{name}\" is not defined."
        ));
    }
    // lib/private/Console/Application.php: an upgrade need first, else
    // maintenance (not said for maintenance:mode and status).
    if needs_upgrade {
        eprintln!(
            "Nextcloud or one of the apps require upgrade - only a limited number of commands are available\nYou may use your browser or the occ upgrade command to do the upgrade"
        );
    } else if maintenance && name != "maintenance:mode" && name != "status" {
        eprintln!(
            "Nextcloud is in maintenance mode, no apps are loaded.\nCommands provided by apps are unavailable."
        );
    }
    if let Some(app) = app {
        let enabled = app_enabled(html, app)?;
        if !enabled || maintenance || needs_upgrade {
            let ns = name.split(':').next().unwrap_or("");
            return fail(format!(
                "There are no commands defined in the \"{ns}\" namespace.{}",
                if enabled {
                    String::new()
                } else {
                    format!("\n(stand-in: `occ app:enable {app}` first)")
                }
            ));
        }
    }
    let Some((_, _, spec, handler)) = known else {
        return fail(format!(
            "stand-in: occ {name} is a real command that this stand-in does not implement"
        ));
    };
    let input = parse(&name, spec, &rest)?;
    let result = handler(html, &input);
    let code = match &result {
        Ok(c) => *c,
        Err(f) => f.code,
    };
    // Every call, for the tests (best effort: a read-only volume loses it).
    let _ = state_file(html).update(|st| {
        let mut call = vec![json!(name)];
        call.extend(rest.iter().map(|a| json!(a)));
        state::arr(st, "occ_log").push(json!({"args": call, "exit": code}));
        Ok(())
    });
    result
}

fn status_of(html: &Path) -> R<Value> {
    nextcloud::status(html)
}

fn app_enabled(html: &Path, app: &str) -> R<bool> {
    let st = state_file(html).read()?;
    Ok(st["apps"].get(app).is_some())
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn output_format(input: &Input) -> R<&str> {
    match input.opt("output").unwrap_or("plain") {
        f @ ("plain" | "json" | "json_pretty") => Ok(f),
        other => fail(format!(
            "stand-in: unknown --output format {other:?} (plain, json, json_pretty)"
        )),
    }
}

fn print_value(input: &Input, v: &Value) -> R<()> {
    match output_format(input)? {
        "json" => println!("{v}"),
        "json_pretty" => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        _ => print_plain(v, ""),
    }
    Ok(())
}

fn print_plain(v: &Value, indent: &str) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if v.is_object() {
                    println!("{indent}  - {k}:");
                    print_plain(v, &format!("{indent}  "));
                } else {
                    println!("{indent}  - {k}: {}", scalar(v));
                }
            }
        }
        other => println!("{}", scalar(other)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `core/Command/Status.php` (Nextcloud 30-32): the values unless `-e`
/// is given without `-v`; with `-e`, exit 1 in maintenance, 2 when `occ
/// upgrade` is needed.
fn cmd_status(html: &Path, input: &Input) -> R<i32> {
    let s = status_of(html)?;
    let exit_code = input.flag("exit-code");
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) || !exit_code {
        print_value(input, &s)?;
    }
    if exit_code {
        if s["maintenance"] == true {
            return Ok(1);
        }
        if s["needsDbUpgrade"] == true {
            return Ok(2);
        }
    }
    Ok(0)
}

/// The version of `app` in the volume's code.
fn app_version(html: &Path, app: &str) -> R<String> {
    Ok(Code::of(html)?.release.app_version(app))
}

/// Records an app's state in the database, as upstream's app manager does
/// (`oc_appconfig`: `installed_version`, `enabled`).
fn record_app(html: &Path, app: &str, version: Option<&str>, enabled: bool) -> R<()> {
    let st = state_file(html).read()?;
    let mut s = nccore::db(&st).map_err(nccore::thrown)?;
    let sql = |e: String| nccore::thrown(format!("Doctrine\\DBAL\\Exception: {e}"));
    if let Some(v) = version {
        nccore::set_app_value(&mut s, app, "installed_version", v).map_err(sql)?;
    }
    nccore::set_app_value(&mut s, app, "enabled", if enabled { "yes" } else { "no" }).map_err(sql)
}

fn cmd_app_enable(html: &Path, input: &Input) -> R<i32> {
    let mut code = 0;
    for app in input.list("app-id") {
        let known = DEFAULT_APPS.contains(&app.as_str())
            || SHIPPED_DISABLED.contains(&app.as_str())
            || APPSTORE.contains(&app.as_str());
        if !known {
            eprintln!("Could not download app {app}, it was not found on the appstore");
            code = 1;
            continue;
        }
        let version = app_version(html, app)?;
        let newly = state_file(html).update(|st| {
            let apps = state::obj(st, "apps");
            if apps.contains_key(app) {
                return Ok(false);
            }
            apps.insert(app.clone(), json!(version));
            if let Some(groups) = input.opt("groups") {
                st["app_groups"][app] = json!(groups);
            }
            Ok(true)
        })?;
        if newly {
            record_app(html, app, Some(&version), true)?;
            println!("{app} {version} enabled");
        } else {
            println!("{app} already enabled");
        }
    }
    Ok(code)
}

fn cmd_app_disable(html: &Path, input: &Input) -> R<i32> {
    let mut code = 0;
    for app in input.list("app-id") {
        let was = state_file(html).update(|st| Ok(state::obj(st, "apps").remove(app)))?;
        if let Some(v) = was {
            record_app(html, app, None, false)?;
            println!("{app} {} disabled", scalar(&v));
        } else {
            println!("No such app enabled: {app}");
            code = 0;
        }
    }
    Ok(code)
}

fn cmd_app_list(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    let enabled = st["apps"].as_object().cloned().unwrap_or_default();
    let code = Code::of(html)?;
    let disabled: Map<String, Value> = DEFAULT_APPS
        .iter()
        .chain(SHIPPED_DISABLED)
        .filter(|a| !enabled.contains_key(**a))
        .map(|a| ((*a).to_owned(), json!(code.release.app_version(a))))
        .collect();
    match output_format(input)? {
        "plain" => {
            println!("Enabled:");
            for (a, v) in &enabled {
                println!("  - {a}: {}", scalar(v));
            }
            println!("Disabled:");
            for (a, v) in &disabled {
                println!("  - {a}: {}", scalar(v));
            }
        }
        _ => print_value(input, &json!({"enabled": enabled, "disabled": disabled}))?,
    }
    Ok(0)
}

/// Upstream's `castValue` for `config:system:set` and `config:app:set`.
fn cast(value: Option<&str>, kind: &str) -> R<(Value, String)> {
    let need = || -> R<&str> {
        value.ok_or_else(|| crate::Fail {
            code: 1,
            msg: "Value not specified (--value)".into(),
        })
    };
    match kind {
        "string" => {
            let v = need()?;
            Ok((json!(v), format!("string {v}")))
        }
        "integer" | "int" => {
            let v = need()?;
            match v.parse::<i64>() {
                Ok(n) => Ok((json!(n), format!("integer {n}"))),
                Err(_) => fail("Non-numeric value specified"),
            }
        }
        "double" | "float" => {
            let v = need()?;
            match v.parse::<f64>() {
                Ok(n) => Ok((json!(n), format!("double {n}"))),
                Err(_) => fail("Non-numeric value specified"),
            }
        }
        "boolean" | "bool" => match need()?.to_ascii_lowercase().as_str() {
            "true" => Ok((json!(true), "boolean true".into())),
            "false" => Ok((json!(false), "boolean false".into())),
            _ => fail("Unable to parse value as boolean"),
        },
        "null" => Ok((Value::Null, "null".into())),
        "json" => {
            let v = need()?;
            match serde_json::from_str::<Value>(v) {
                Ok(j) => Ok((j, format!("json {v}"))),
                Err(_) => fail("Unable to parse value as json"),
            }
        }
        other => fail(format!("Invalid type {other:?}")),
    }
}

fn cmd_system_set(html: &Path, input: &Input) -> R<i32> {
    let names = input.list("name");
    let (value, readable) = cast(input.opt("value"), input.opt("type").unwrap_or("string"))?;
    state_file(html).update(|st| {
        let mut cur = state::obj(st, "system");
        for (i, n) in names.iter().enumerate() {
            if i + 1 == names.len() {
                if input.flag("update-only") && !cur.contains_key(n) {
                    return fail("Config parameter does not exist");
                }
                cur.insert(n.clone(), value.clone());
            } else {
                let next = cur.entry(n.clone()).or_insert_with(|| json!({}));
                if !next.is_object() {
                    *next = json!({});
                }
                cur = next.as_object_mut().expect("object");
            }
        }
        Ok(())
    })?;
    println!(
        "System config value {} set to {readable}",
        names.join(" => ")
    );
    Ok(0)
}

fn lookup<'a>(root: &'a Value, names: &[String]) -> Option<&'a Value> {
    names.iter().try_fold(root, |v, n| v.get(n))
}

fn cmd_system_get(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    match lookup(&st["system"], input.list("name")) {
        Some(v) => {
            match (v, output_format(input)?) {
                (Value::Object(m), "plain") => m.values().for_each(|v| println!("{}", scalar(v))),
                (v, "plain") => println!("{}", scalar(v)),
                (v, _) => print_value(input, v)?,
            }
            Ok(0)
        }
        None => match input.opt("default-value") {
            Some(d) => {
                println!("{d}");
                Ok(0)
            }
            None => Ok(1),
        },
    }
}

fn cmd_system_delete(html: &Path, input: &Input) -> R<i32> {
    let names = input.list("name");
    let removed = state_file(html).update(|st| {
        let mut cur = &mut st["system"];
        for n in &names[..names.len() - 1] {
            cur = &mut cur[n.as_str()];
        }
        Ok(cur
            .as_object_mut()
            .and_then(|m| m.remove(&names[names.len() - 1]))
            .is_some())
    })?;
    if !removed && input.flag("error-if-not-exists") {
        return fail(format!(
            "System config {} could not be deleted because it did not exist",
            names.join(" => ")
        ));
    }
    println!("System config value {} deleted", names.join(" => "));
    Ok(0)
}

fn cmd_app_set(html: &Path, input: &Input) -> R<i32> {
    let (app, name) = (input.arg("app"), input.arg("name"));
    let kind = input.opt("type").unwrap_or("string");
    let (value, _) = cast(input.opt("value"), kind)?;
    let text = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    state_file(html).update(|st| {
        let cfg = state::obj(&mut st["app_config"], app);
        if input.flag("update-only") && !cfg.contains_key(name) {
            return fail(format!(
                "Value for key '{name}' of app '{app}' does not exist"
            ));
        }
        cfg.insert(name.to_owned(), json!(text));
        Ok(())
    })?;
    println!(
        "Config value '{name}' for app '{app}' is now set to '{text}', stored as {} in {} cache",
        if kind == "string" { "mixed" } else { kind },
        if input.flag("lazy") { "lazy" } else { "fast" }
    );
    Ok(0)
}

fn cmd_app_get(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    match st["app_config"][input.arg("app")].get(input.arg("name")) {
        Some(v) => {
            print_value(input, v)?;
            Ok(0)
        }
        None => match input.opt("default-value") {
            Some(d) => {
                println!("{d}");
                Ok(0)
            }
            None => Ok(1),
        },
    }
}

fn cmd_app_delete(html: &Path, input: &Input) -> R<i32> {
    let (app, name) = (input.arg("app"), input.arg("name"));
    let removed = state_file(html).update(|st| {
        Ok(state::obj(&mut st["app_config"], app)
            .remove(name)
            .is_some())
    })?;
    if !removed && input.flag("error-if-not-exists") {
        return fail(format!(
            "Config {name} of app {app} could not be deleted because it did not exist"
        ));
    }
    println!("Config value '{name}' of app '{app}' deleted");
    Ok(0)
}

fn cmd_config_list(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    let v = match input.arg("app") {
        "" | "all" => json!({"system": st["system"], "apps": st["app_config"]}),
        "system" => json!({"system": st["system"]}),
        app => json!({"apps": {app: st["app_config"][app]}}),
    };
    let fmt = input.opt("output").unwrap_or("json_pretty");
    if fmt == "json" {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(0)
}

/// `core/Command/Maintenance/Mode.php`: flips `maintenance` in
/// config.php.
fn cmd_maintenance(html: &Path, input: &Input) -> R<i32> {
    let want = if input.flag("on") {
        Some(true)
    } else if input.flag("off") {
        Some(false)
    } else if input.flag("check-if-disabled") {
        let on = nccore::maintenance(&state_file(html).read()?);
        return Ok(i32::from(on));
    } else {
        None
    };
    let before = state_file(html).update(|st| {
        let before = nccore::maintenance(st);
        if let Some(w) = want {
            st["system"]["maintenance"] = json!(w);
        }
        Ok(before)
    })?;
    match want {
        Some(true) if before => println!("Maintenance mode already enabled"),
        Some(true) => println!("Maintenance mode enabled"),
        Some(false) if !before => println!("Maintenance mode already disabled"),
        Some(false) => println!("Maintenance mode disabled"),
        None => println!(
            "Maintenance mode is currently {}",
            if before { "enabled" } else { "disabled" }
        ),
    }
    Ok(0)
}

fn cmd_upgrade(html: &Path, _input: &Input) -> R<i32> {
    nccore::occ_upgrade(html)
}

fn cmd_background_cron(html: &Path, _input: &Input) -> R<i32> {
    state_file(html).update(|st| {
        st["app_config"]["core"]["backgroundjobs_mode"] = json!("cron");
        Ok(())
    })?;
    println!("Set mode for background jobs to 'cron'");
    Ok(0)
}

// ---- user_ldap ------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Any,
    Bool01,
    Mode01,
    Port,
    UInt,
    Assoc,
    Filter,
    LoginFilter,
    Dn,
    Host,
}

/// The keys of `apps/user_ldap/lib/Configuration.php`, their defaults,
/// and what the stand-in accepts as a value.
const LDAP_KEYS: &[(&str, &str, Kind)] = &[
    ("ldapHost", "", Kind::Host),
    ("ldapPort", "", Kind::Port),
    ("ldapBackupHost", "", Kind::Host),
    ("ldapBackupPort", "", Kind::Port),
    ("ldapBackgroundHost", "", Kind::Host),
    ("ldapBackgroundPort", "", Kind::Port),
    ("ldapOverrideMainServer", "", Kind::Bool01),
    ("ldapTLS", "0", Kind::Bool01),
    ("turnOffCertCheck", "0", Kind::Bool01),
    ("ldapIgnoreNamingRules", "", Kind::Bool01),
    ("ldapAgentName", "", Kind::Dn),
    ("ldapAgentPassword", "", Kind::Any),
    ("ldapBase", "", Kind::Dn),
    ("ldapBaseUsers", "", Kind::Dn),
    ("ldapBaseGroups", "", Kind::Dn),
    ("ldapUserFilter", "", Kind::Filter),
    ("ldapUserFilterObjectclass", "", Kind::Any),
    ("ldapUserFilterGroups", "", Kind::Any),
    ("ldapUserFilterMode", "0", Kind::Mode01),
    ("ldapLoginFilter", "", Kind::LoginFilter),
    ("ldapLoginFilterMode", "0", Kind::Mode01),
    ("ldapLoginFilterUsername", "1", Kind::Bool01),
    ("ldapLoginFilterEmail", "0", Kind::Bool01),
    ("ldapLoginFilterAttributes", "", Kind::Any),
    ("ldapGroupFilter", "", Kind::Filter),
    ("ldapGroupFilterObjectclass", "", Kind::Any),
    ("ldapGroupFilterGroups", "", Kind::Any),
    ("ldapGroupFilterMode", "0", Kind::Mode01),
    ("ldapGroupMemberAssocAttr", "", Kind::Assoc),
    ("ldapGroupDisplayName", "cn", Kind::Any),
    ("ldapUserDisplayName", "displayName", Kind::Any),
    ("ldapUserDisplayName2", "", Kind::Any),
    ("ldapGidNumber", "gidNumber", Kind::Any),
    ("ldapEmailAttribute", "", Kind::Any),
    ("ldapQuotaAttribute", "", Kind::Any),
    ("ldapQuotaDefault", "", Kind::Any),
    ("ldapAttributesForUserSearch", "", Kind::Any),
    ("ldapAttributesForGroupSearch", "", Kind::Any),
    ("ldapExpertUsernameAttr", "", Kind::Any),
    ("ldapExpertUUIDUserAttr", "", Kind::Any),
    ("ldapExpertUUIDGroupAttr", "", Kind::Any),
    ("ldapUuidUserAttribute", "auto", Kind::Any),
    ("ldapUuidGroupAttribute", "auto", Kind::Any),
    ("hasMemberOfFilterSupport", "0", Kind::Bool01),
    ("useMemberOfToDetectMembership", "1", Kind::Bool01),
    ("ldapNestedGroups", "0", Kind::Bool01),
    ("ldapCacheTTL", "600", Kind::UInt),
    ("ldapPagingSize", "500", Kind::UInt),
    ("ldapConnectionTimeout", "15", Kind::UInt),
    ("ldapExperiencedAdmin", "0", Kind::Bool01),
    ("homeFolderNamingRule", "", Kind::Any),
    ("turnOnPasswordChange", "0", Kind::Bool01),
    ("ldapDynamicGroupMemberURL", "", Kind::Any),
    ("ldapDefaultPPolicyDN", "", Kind::Any),
    ("ldapExtStorageHomeAttribute", "", Kind::Any),
    ("ldapMatchingRuleInChainState", "unknown", Kind::Any),
    ("ldapAdminGroup", "", Kind::Any),
    ("markRemnantsAsDisabled", "0", Kind::Bool01),
    ("ldapAttributePhone", "", Kind::Any),
    ("ldapAttributeWebsite", "", Kind::Any),
    ("ldapAttributeAddress", "", Kind::Any),
    ("ldapAttributeTwitter", "", Kind::Any),
    ("ldapAttributeFediverse", "", Kind::Any),
    ("ldapAttributeOrganisation", "", Kind::Any),
    ("ldapAttributeRole", "", Kind::Any),
    ("ldapAttributeHeadline", "", Kind::Any),
    ("ldapAttributeBiography", "", Kind::Any),
    ("ldapAttributeBirthDate", "", Kind::Any),
    ("ldapAttributePronouns", "", Kind::Any),
    ("ldapConfigurationActive", "0", Kind::Bool01),
];

fn balanced(f: &str) -> bool {
    let mut depth = 0i32;
    for c in f.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

fn check_ldap_value(key: &str, kind: Kind, v: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("stand-in: invalid value {v:?} for {key}: {why}"));
    match kind {
        Kind::Any => Ok(()),
        Kind::Bool01 | Kind::Mode01
            if v == "0" || v == "1" || (v.is_empty() && kind == Kind::Bool01) =>
        {
            Ok(())
        }
        Kind::Bool01 | Kind::Mode01 => bad("must be 0 or 1"),
        Kind::Port if v.is_empty() || v.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        Kind::Port => bad("must be a port number"),
        Kind::UInt if v.parse::<u32>().is_ok() => Ok(()),
        Kind::UInt => bad("must be a number"),
        Kind::Assoc => match v {
            "member"
            | "uniqueMember"
            | "memberUid"
            | "gidNumber"
            | "zimbraMailForwardingAddress" => Ok(()),
            _ => bad(
                "must be one of member, uniqueMember, memberUid, gidNumber, zimbraMailForwardingAddress",
            ),
        },
        Kind::Filter | Kind::LoginFilter if v.is_empty() => Ok(()),
        Kind::Filter | Kind::LoginFilter if !v.starts_with('(') || !balanced(v) => {
            bad("an LDAP filter is enclosed in balanced parentheses")
        }
        Kind::LoginFilter if !v.contains("%uid") => bad("the login filter must use %uid"),
        Kind::Filter | Kind::LoginFilter => Ok(()),
        Kind::Dn => {
            for dn in v.split([';', '\n']).filter(|d| !d.trim().is_empty()) {
                if !dn.split(',').all(|rdn| rdn.contains('=')) {
                    return bad("not a DN");
                }
            }
            Ok(())
        }
        Kind::Host if v.contains(char::is_whitespace) => bad("a host has no spaces"),
        Kind::Host => match v.split_once("://") {
            Some(("ldap" | "ldaps", h)) if !h.is_empty() => Ok(()),
            Some(_) => bad("use ldap://host or ldaps://host"),
            None => Ok(()),
        },
    }
}

fn ldap_ids(st: &Value) -> Vec<String> {
    st["ldap"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn cmd_ldap_create(html: &Path, input: &Input) -> R<i32> {
    let id = state_file(html).update(|st| {
        let mut ids = ldap_ids(st);
        ids.sort();
        let next = ids
            .last()
            .and_then(|l| l.trim_start_matches('s').parse::<u32>().ok())
            .map_or(1, |n| n + 1);
        let id = format!("s{next:02}");
        let cfg: Map<String, Value> = LDAP_KEYS
            .iter()
            .map(|(k, d, _)| ((*k).to_owned(), json!(d)))
            .collect();
        state::obj(st, "ldap").insert(id.clone(), Value::Object(cfg));
        Ok(id)
    })?;
    if input.flag("only-print-prefix") {
        println!("{id}");
    } else {
        println!("Created new configuration with configID {id}");
    }
    Ok(0)
}

fn cmd_ldap_set(html: &Path, input: &Input) -> R<i32> {
    let (id, key, value) = (
        input.arg("configID"),
        input.arg("configKey"),
        input.arg("configValue"),
    );
    let Some((_, _, kind)) = LDAP_KEYS.iter().find(|(k, _, _)| *k == key) else {
        let near = LDAP_KEYS
            .iter()
            .map(|(k, _, _)| *k)
            .min_by_key(|k| distance(k, key))
            .unwrap_or("");
        return fail(format!(
            "stand-in: {key:?} is not a user_ldap configuration key (apps/user_ldap/lib/Configuration.php); did you mean {near}? (the real occ ignores it silently)"
        ));
    };
    check_ldap_value(key, *kind, value).map_err(|msg| crate::Fail { code: 1, msg })?;
    state_file(html).update(|st| {
        let Some(cfg) = st["ldap"].get_mut(id).and_then(Value::as_object_mut) else {
            return fail("Invalid configID");
        };
        cfg.insert(key.to_owned(), json!(value));
        Ok(())
    })?;
    Ok(0)
}

fn cmd_ldap_show(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    let ids = match input.arg("configID") {
        "" => ldap_ids(&st),
        id if st["ldap"].get(id).is_some() => vec![id.to_owned()],
        _ => {
            println!("Invalid configID");
            return Ok(1);
        }
    };
    let mut out = Map::new();
    for id in ids {
        let mut cfg = st["ldap"][&id].clone();
        if !input.flag("show-password") && cfg["ldapAgentPassword"] != "" {
            cfg["ldapAgentPassword"] = json!("***");
        }
        out.insert(id, cfg);
    }
    match output_format(input)? {
        "plain" => {
            for (id, cfg) in &out {
                println!("+-------------------------------+------------------+");
                println!("| Configuration                 | {id:<16} |");
                println!("+-------------------------------+------------------+");
                for (k, v) in cfg.as_object().into_iter().flatten() {
                    println!("| {k:<29} | {} |", scalar(v));
                }
            }
        }
        _ => print_value(input, &Value::Object(out))?,
    }
    Ok(0)
}

fn cmd_ldap_delete(html: &Path, input: &Input) -> R<i32> {
    let id = input.arg("configID");
    let ok = state_file(html).update(|st| Ok(state::obj(st, "ldap").remove(id).is_some()))?;
    if ok {
        println!("Deleted configuration with configID '{id}'");
        Ok(0)
    } else {
        println!("Cannot delete configuration with configID '{id}'");
        Ok(1)
    }
}

/// Appends a BER length.
fn ber_len(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

fn ber(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    ber_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Reads one BER element's tag and content from `r` at `i`; returns the
/// index after it.
fn ber_read(r: &[u8], i: usize) -> Option<(u8, &[u8], usize)> {
    let tag = *r.get(i)?;
    let first = *r.get(i + 1)? as usize;
    let (len, start) = if first < 128 {
        (first, i + 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for k in 0..n {
            len = (len << 8) | *r.get(i + 2 + k)? as usize;
        }
        (len, i + 2 + n)
    };
    Some((tag, r.get(start..start + len)?, start + len))
}

/// A connection to the directory: plain, or TLS (LDAPS, or after StartTLS).
enum LdapStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl std::io::Read for LdapStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            LdapStream::Plain(s) => s.read(buf),
            LdapStream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for LdapStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LdapStream::Plain(s) => s.write(buf),
            LdapStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LdapStream::Plain(s) => s.flush(),
            LdapStream::Tls(s) => s.flush(),
        }
    }
}

/// Where libldap (php-ldap) finds its CA: `LDAPTLS_CACERT`, else
/// `TLS_CACERT` in /etc/ldap/ldap.conf, else Debian's default bundle.
fn ldap_ca_file() -> String {
    if let Some(f) = crate::env("LDAPTLS_CACERT").filter(|f| !f.is_empty()) {
        return f;
    }
    std::fs::read_to_string("/etc/ldap/ldap.conf")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("TLS_CACERT")).then(|| w.next().map(str::to_owned))?
            })
        })
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into())
}

/// A TLS client over `tcp`, checking the certificate as libldap does by
/// default (`TLS_REQCERT demand`): the chain to the CA file, and the host
/// (a name, or an address the certificate names).
fn tls_wrap(tcp: std::net::TcpStream, host: &str) -> Result<LdapStream, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let ca = ldap_ca_file();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca)
        .map_err(|e| format!("TLS: could not load CA file {ca}: {e}"))?;
    for c in certs {
        let c = c.map_err(|e| format!("TLS: bad certificate in {ca}: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("TLS: bad certificate in {ca}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("TLS: no CA certificate in {ca}"));
    }
    // ring builds with nothing but cc, statically; slapd (GnuTLS) needs
    // no post-quantum key exchange, which is all this deprecation is about.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("TLS: {host}: {e}"))?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS: peer certificate verification or handshake failed: {e}"))?;
    }
    Ok(LdapStream::Tls(Box::new(tls)))
}

/// Sends one LDAP message (`id`, protocol op) and reads the answer's op:
/// its tag and content.
fn ldap_exchange(s: &mut LdapStream, id: u8, op: &[u8]) -> Result<(u8, Vec<u8>), String> {
    use std::io::{Read, Write};
    let mut msg = ber(0x02, &[id]);
    msg.extend_from_slice(op);
    s.write_all(&ber(0x30, &msg)).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf[got..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        got += n;
        if let Some((0x30, body, _)) = ber_read(&buf[..got], 0) {
            let (_, _, next) = ber_read(body, 0).ok_or("bad LDAP message")?;
            let (tag, resp, _) = ber_read(body, next).ok_or("bad LDAP message")?;
            return Ok((tag, resp.to_vec()));
        }
        if got == buf.len() {
            return Err("LDAP answer too long".into());
        }
    }
}

/// The result code at the start of an LDAPResult.
fn result_code(resp: &[u8]) -> u8 {
    ber_read(resp, 0)
        .and_then(|(_, code, _)| code.first().copied())
        .unwrap_or(80)
}

/// Connects as user_ldap does: `ldaps://` is TLS from the start; with
/// `start_tls` (`ldapTLS=1`) a plain connection asks for StartTLS first.
fn ldap_connect(
    scheme: &str,
    host: &str,
    port: u16,
    start_tls: bool,
) -> Result<LdapStream, String> {
    let tcp = crate::net::connect(host, port, Duration::from_secs(5))
        .map_err(|e| format!("Cannot connect to {host}:{port}: {e}"))?;
    if scheme == "ldaps" {
        return tls_wrap(tcp, host);
    }
    if !start_tls {
        return Ok(LdapStream::Plain(tcp));
    }
    let mut plain = LdapStream::Plain(tcp);
    let op = ber(0x77, &ber(0x80, b"1.3.6.1.4.1.1466.20037"));
    let (tag, resp) = ldap_exchange(&mut plain, 1, &op)?;
    if tag != 0x78 || result_code(&resp) != 0 {
        return Err(format!(
            "Start TLS failed (LDAP result code {})",
            result_code(&resp)
        ));
    }
    let LdapStream::Plain(tcp) = plain else {
        unreachable!()
    };
    tls_wrap(tcp, host)
}

/// A simple bind on an open connection: the LDAP result code.
fn ldap_bind(s: &mut LdapStream, dn: &str, password: &str) -> Result<u8, String> {
    let mut op = ber(0x02, &[3]);
    op.extend(ber(0x04, dn.as_bytes()));
    op.extend(ber(0x80, password.as_bytes()));
    let (tag, resp) = ldap_exchange(s, 2, &ber(0x60, &op))?;
    if tag != 0x61 {
        return Err(format!("unexpected LDAP answer (tag {tag:#x})"));
    }
    Ok(result_code(&resp))
}

fn cmd_ldap_test(html: &Path, input: &Input) -> R<i32> {
    let id = input.arg("configID");
    let st = state_file(html).read()?;
    let Some(cfg) = st["ldap"].get(id) else {
        println!("Invalid configID");
        return Ok(1);
    };
    let invalid = |why: &str| {
        println!(
            "The configuration is invalid. Please have a look at the logs for further details."
        );
        eprintln!("stand-in: {why}");
        Ok(1)
    };
    let host = state::s(cfg, "ldapHost");
    if host.is_empty() || state::s(cfg, "ldapBase").is_empty() {
        return invalid("ldapHost and ldapBase are required");
    }
    let (scheme, rest) = host.split_once("://").unwrap_or(("ldap", host));
    // As user_ldap's Connection: LDAPS already is TLS; StartTLS on top is
    // switched off.
    let start_tls = state::s(cfg, "ldapTLS") == "1" && scheme != "ldaps";
    let (h, port_in_url) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()),
        None => (rest, None),
    };
    let port = state::s(cfg, "ldapPort")
        .parse::<u16>()
        .ok()
        .or(port_in_url)
        .unwrap_or(389);
    let (dn, pw) = (
        state::s(cfg, "ldapAgentName"),
        state::s(cfg, "ldapAgentPassword"),
    );
    if dn.is_empty() != pw.is_empty() {
        return invalid("ldapAgentName and ldapAgentPassword go together");
    }
    let bound =
        ldap_connect(scheme, h, port, start_tls).and_then(|mut s| ldap_bind(&mut s, dn, pw));
    match bound {
        Ok(0) => {
            println!("The configuration is valid and the connection could be established!");
            Ok(0)
        }
        Ok(code) => {
            println!(
                "The configuration is valid, but the Bind failed. Please check the server settings and credentials."
            );
            eprintln!("stand-in: LDAP result code {code}");
            Ok(1)
        }
        Err(e) => invalid(&e),
    }
}

// ---- groupfolders -----------------------------------------------------------

fn folder_id(input: &Input) -> R<u64> {
    input.arg("folder_id").parse().map_err(|_| crate::Fail {
        code: 1,
        msg: format!("Folder not found: {}", input.arg("folder_id")),
    })
}

/// Runs `f` on the folder, failing when there is none with that id.
fn with_folder<T>(html: &Path, id: u64, f: impl FnOnce(&mut Value) -> R<T>) -> R<T> {
    state_file(html).update(|st| {
        match state::arr(st, "groupfolders")
            .iter_mut()
            .find(|g| g["id"] == json!(id))
        {
            Some(folder) => f(folder),
            None => fail(format!("Folder not found: {id}")),
        }
    })
}

fn cmd_gf_create(html: &Path, input: &Input) -> R<i32> {
    let name = input.arg("name").to_owned();
    let id = state_file(html).update(|st| {
        let folders = state::arr(st, "groupfolders");
        let id = folders.iter().filter_map(|f| f["id"].as_u64()).max().unwrap_or(0) + 1;
        folders.push(json!({"id": id, "mount_point": name, "groups": {}, "quota": -3, "size": 0, "acl": false, "manage": []}));
        Ok(id)
    })?;
    println!("{id}");
    Ok(0)
}

fn cmd_gf_list(html: &Path, input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    let folders = st["groupfolders"].clone();
    match output_format(input)? {
        "plain" => {
            println!("+----+--------------------+--------------------+");
            println!("| Id | Name               | Groups             |");
            for f in folders.as_array().into_iter().flatten() {
                let groups: Vec<String> = f["groups"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(g, p)| format!("{g}: {}", perms_text(p.as_u64().unwrap_or(0))))
                    .collect();
                println!(
                    "| {} | {} | {} |",
                    f["id"],
                    scalar(&f["mount_point"]),
                    groups.join(", ")
                );
            }
        }
        _ => print_value(input, &folders)?,
    }
    Ok(0)
}

const P_READ: u64 = 1;
const P_UPDATE: u64 = 2;
const P_CREATE: u64 = 4;
const P_DELETE: u64 = 8;
const P_SHARE: u64 = 16;
const P_ALL: u64 = 31;

fn perms_text(p: u64) -> String {
    let mut out = vec![];
    if p & P_READ != 0 {
        out.push("Read");
    }
    if p & (P_UPDATE | P_CREATE) != 0 {
        out.push("Write");
    }
    if p & P_SHARE != 0 {
        out.push("Share");
    }
    if p & P_DELETE != 0 {
        out.push("Delete");
    }
    out.join(", ")
}

fn cmd_gf_group(html: &Path, input: &Input) -> R<i32> {
    let id = folder_id(input)?;
    let group = input.arg("group").to_owned();
    if group.is_empty() {
        return fail("Not enough arguments (missing: \"group\").");
    }
    let mut perms = P_READ;
    for p in input.list("permissions") {
        perms |= match p.as_str() {
            "read" => P_READ,
            "write" => P_UPDATE | P_CREATE,
            "share" => P_SHARE,
            "delete" => P_DELETE,
            other => {
                return fail(format!(
                    "Unable to parse permissions input: {other} (read, write, share, delete)"
                ));
            }
        };
    }
    if input.list("permissions").is_empty() {
        perms = P_ALL;
    }
    let delete = input.flag("delete");
    with_folder(html, id, |f| {
        let groups = state::obj(f, "groups");
        if delete {
            groups.remove(&group);
        } else {
            groups.insert(group.clone(), json!(perms));
        }
        Ok(())
    })?;
    Ok(0)
}

fn cmd_gf_quota(html: &Path, input: &Input) -> R<i32> {
    let id = folder_id(input)?;
    let q = input.arg("quota").trim().to_ascii_lowercase();
    let bytes: i64 = if q == "unlimited" || q == "none" || q == "default" {
        -3
    } else {
        let num: String = q
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let unit = q[num.len()..].trim().trim_end_matches('b');
        let mult: f64 = match unit {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024.0_f64.powi(4),
            _ => return fail(format!("Unable to parse quota input: {q}")),
        };
        match num.parse::<f64>() {
            Ok(n) => (n * mult) as i64,
            Err(_) => return fail(format!("Unable to parse quota input: {q}")),
        }
    };
    with_folder(html, id, |f| {
        f["quota"] = json!(bytes);
        Ok(())
    })?;
    Ok(0)
}

fn cmd_gf_rename(html: &Path, input: &Input) -> R<i32> {
    let id = folder_id(input)?;
    let name = input.arg("name").to_owned();
    with_folder(html, id, |f| {
        f["mount_point"] = json!(name);
        Ok(())
    })?;
    Ok(0)
}

fn cmd_gf_delete(html: &Path, input: &Input) -> R<i32> {
    let id = folder_id(input)?;
    with_folder(html, id, |_| Ok(()))?;
    if !input.flag("force") {
        println!(
            "Are you sure you want to delete the group folder {id} and all files within, this cannot be undone (y/N). (not deleted: -n answers no; use --force)"
        );
        return Ok(0);
    }
    state_file(html).update(|st| {
        state::arr(st, "groupfolders").retain(|f| f["id"] != json!(id));
        Ok(())
    })?;
    Ok(0)
}

// ---- auth tokens --------------------------------------------------------------

/// Nextcloud 31's `parseDateOption`: Unix seconds, ISO 8601 without
/// fractions (`DateTime::ATOM`), or `YYYY-MM-DD`.
fn token_date_ok(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let ymd = |s: &str| {
        let p: Vec<&str> = s.split('-').collect();
        p.len() == 3
            && p[0].len() == 4
            && p[1].len() == 2
            && p[2].len() == 2
            && p.iter().all(|x| digits(x))
    };
    if digits(v) && v != "0" {
        return true;
    }
    if ymd(v) {
        return true;
    }
    // 2025-01-01T00:00:00+00:00
    v.len() == 25
        && ymd(&v[..10])
        && &v[10..11] == "T"
        && v[11..19].split(':').count() == 3
        && (v[19..20] == *"+" || v[19..20] == *"-")
}

/// `user:auth-tokens:delete <uid> [<id>] [--last-used-before=<date>]`:
/// ends sessions and app passwords. Upstream works on the token table, so
/// a user the backends no longer show is no error. Recorded in
/// `auth_tokens_deleted`.
fn cmd_tokens_delete(html: &Path, input: &Input) -> R<i32> {
    let uid = input.arg("uid").to_owned();
    let id = input.arg("id").to_owned();
    let before = input.opt("last-used-before").map(str::to_owned);
    match &before {
        Some(_) if !id.is_empty() => {
            return fail("Option --last-used-before cannot be used with [<id>]");
        }
        Some(b) if !token_date_ok(b) => {
            return fail(
                "Invalid date format. Acceptable formats are: ISO8601 (w/o fractions), \"YYYY-MM-DD\" and Unix time in seconds.",
            );
        }
        None if id.parse::<u64>().unwrap_or(0) == 0 => {
            return fail(
                "Not enough arguments. Specify the token <id> or use the --last-used-before option.",
            );
        }
        _ => {}
    }
    state_file(html).update(|st| {
        state::arr(st, "auth_tokens_deleted").push(json!({
            "uid": uid, "id": id, "last_used_before": before, "at": crate::codec::now()}));
        Ok(())
    })?;
    Ok(0)
}

// ---- richdocuments ----------------------------------------------------------

fn cmd_rd_activate(html: &Path, _input: &Input) -> R<i32> {
    let st = state_file(html).read()?;
    let wopi = state::s(&st["app_config"]["richdocuments"], "wopi_url")
        .trim_end_matches('/')
        .to_owned();
    let result = (|| -> Result<String, String> {
        if wopi.is_empty() {
            return Err("No WOPI URL configured: set config:app richdocuments wopi_url".into());
        }
        // richdocuments (8.x, `RemoteOptionsService`) asks for
        // `allow_local_address` on its own requests to Collabora: it needs
        // no `allow_local_remote_servers`.
        let d = crate::nextcloud::remote_get(html, &format!("{wopi}/hosting/discovery"), true)?;
        let body = String::from_utf8_lossy(&d.body).into_owned();
        if d.status != 200 || !body.contains("<wopi-discovery") {
            return Err(format!(
                "Failed to fetch discovery endpoint from {wopi} (HTTP {})",
                d.status
            ));
        }
        let urlsrc = body
            .split("urlsrc=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("no urlsrc in the discovery")?;
        let c = crate::nextcloud::remote_get(html, &format!("{wopi}/hosting/capabilities"), true)?;
        let caps: Value = serde_json::from_slice(&c.body)
            .map_err(|_| format!("Failed to fetch capabilities endpoint from {wopi}"))?;
        if caps.get("productName").is_none() {
            return Err("invalid capabilities".into());
        }
        let (scheme, rest) = urlsrc.split_once("://").ok_or("bad urlsrc")?;
        let origin = format!("{scheme}://{}", rest.split('/').next().unwrap_or(""));
        Ok(origin)
    })();
    match result {
        Ok(public) => {
            state_file(html).update(|st| {
                st["app_config"]["richdocuments"]["public_wopi_url"] = json!(public);
                Ok(())
            })?;
            println!(
                "✓ Reset callback url autodetect\n✓ Fetched /hosting/discovery endpoint\n✓ Valid mimetype response\n✓ Valid capabilities entry\n✓ Fetched /hosting/capabilities endpoint\n✓ Detected WOPI server: Collabora Online Development Edition 25.04.5.1\n\nCollabora URL (used for Nextcloud to contact the Collabora server):\n  {wopi}\nURL used by the browser:\n  {public}\n\nActivated any config changes"
            );
            Ok(0)
        }
        Err(e) => {
            println!("Failed to activate any config changes");
            println!("{e}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            args: &["configID", "configKey", "configValue"],
            values: &[("output", ' ')],
            flags: &[("force", 'f')],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn symfony_style_parsing() {
        let i = parse(
            "x",
            &spec(),
            &s(&["s01", "ldapHost", "ldap://h", "--output", "json", "-f"]),
        )
        .unwrap();
        assert_eq!(i.arg("configValue"), "ldap://h");
        assert_eq!(i.opt("output"), Some("json"));
        assert!(i.flag("force"));
        assert!(
            parse("x", &spec(), &s(&["s01", "k"]))
                .unwrap_err()
                .msg
                .contains("missing: \"configValue\"")
        );
        assert!(
            parse("x", &spec(), &s(&["a", "b", "c", "d"]))
                .unwrap_err()
                .msg
                .contains("Too many arguments")
        );
        assert!(
            parse("x", &spec(), &s(&["a", "b", "c", "--nope"]))
                .unwrap_err()
                .msg
                .contains("does not exist")
        );
        assert!(
            parse("x", &spec(), &s(&["a", "b", "c", "--output"]))
                .unwrap_err()
                .msg
                .contains("requires a value")
        );
    }

    #[test]
    fn ldap_values() {
        assert!(check_ldap_value("ldapTLS", Kind::Bool01, "true").is_err());
        assert!(check_ldap_value("ldapGroupMemberAssocAttr", Kind::Assoc, "members").is_err());
        assert!(check_ldap_value("ldapLoginFilter", Kind::LoginFilter, "(uid=%uid)").is_ok());
        assert!(check_ldap_value("ldapLoginFilter", Kind::LoginFilter, "(uid=x)").is_err());
        assert!(check_ldap_value("ldapUserFilter", Kind::Filter, "(&(a=b)").is_err());
        assert!(check_ldap_value("ldapBase", Kind::Dn, "dc=example,dc=org").is_ok());
        assert!(check_ldap_value("ldapBase", Kind::Dn, "example.org").is_err());
    }
}
