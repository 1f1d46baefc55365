//! The Discourse stand-in (web-only image): boots only with its database
//! and redis reachable, takes its first API key from `rails runner`, serves
//! the admin API's site settings (refusing DiscourseConnect settings out of
//! order) and DiscourseConnect itself (`/session/sso`, `/session/sso_login`,
//! `/admin/users/sync_sso`), strictly as Discourse parses it.
//!
//! Versions (build argument `DISCOURSE_VERSION`, e.g. `3.4.0`, `3.5.0`):
//! the image carries `lib/version.rb` and the migrations of its release in
//! `db/migrate`; on boot with `MIGRATE_ON_BOOT=1` it applies the pending
//! ones to the real PostgreSQL and records them in `schema_migrations`, as
//! `rake db:migrate` does, before serving (`templates/web.template.yml`:
//! `db:migrate || exit 1`).
//!
//! State lives in `/shared/standin-state.json`; `GET /standin/users.json`
//! dumps the users DiscourseConnect created, `GET /standin/schema.json` the
//! code's and the database's migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::codec;
use crate::net::{self, Request, Response};
use crate::state::{self, StateFile};
use crate::{Ctx, R, fail};

const SHARED: &str = "/shared";
/// Nonces expire after 10 minutes, as `discourse_connect_nonce_expiry`.
const NONCE_TTL: u64 = 600;

fn state_file() -> StateFile {
    StateFile::new(
        Path::new(SHARED).join("standin-state.json"),
        crate::user_ids("discourse").ok(),
    )
}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Str,
    Url,
    Email,
    Enum(&'static [&'static str]),
    Int(u32, u32),
}

/// The site settings the stand-in knows, with their defaults.
const SETTINGS: &[(&str, Kind, &str)] = &[
    ("title", Kind::Str, "Discourse"),
    ("contact_email", Kind::Email, ""),
    (
        "enforce_second_factor",
        Kind::Enum(&["no", "staff", "all"]),
        "no",
    ),
    ("discourse_connect_url", Kind::Url, ""),
    ("discourse_connect_secret", Kind::Str, ""),
    ("enable_discourse_connect", Kind::Bool, "false"),
    ("auth_overrides_email", Kind::Bool, "false"),
    ("auth_overrides_username", Kind::Bool, "false"),
    ("auth_overrides_name", Kind::Bool, "false"),
    ("auth_overrides_avatar", Kind::Bool, "false"),
    ("discourse_connect_overrides_groups", Kind::Bool, "false"),
    ("discourse_connect_overrides_avatar", Kind::Bool, "false"),
    (
        "discourse_connect_allows_all_return_paths",
        Kind::Bool,
        "false",
    ),
    ("logout_redirect", Kind::Str, ""),
    ("login_required", Kind::Bool, "false"),
    ("enable_local_logins", Kind::Bool, "true"),
    ("invite_only", Kind::Bool, "false"),
    ("must_approve_users", Kind::Bool, "false"),
    ("force_https", Kind::Bool, "false"),
    ("min_username_length", Kind::Int(1, 60), "3"),
    ("max_username_length", Kind::Int(8, 60), "20"),
];

fn required_env() -> R<Map<String, Value>> {
    let mut missing = Vec::new();
    let mut env = Map::new();
    for k in [
        "DISCOURSE_HOSTNAME",
        "DISCOURSE_DEVELOPER_EMAILS",
        "DISCOURSE_DB_HOST",
        "DISCOURSE_DB_NAME",
        "DISCOURSE_DB_USERNAME",
        "DISCOURSE_DB_PASSWORD",
        "DISCOURSE_REDIS_HOST",
    ] {
        match crate::env(k).filter(|v| !v.is_empty()) {
            Some(v) => {
                env.insert(k.into(), json!(v));
            }
            None => missing.push(k),
        }
    }
    if !missing.is_empty() {
        return fail(format!(
            "stand-in discourse: missing environment: {}",
            missing.join(", ")
        ));
    }
    Ok(env)
}

/// The database the environment names, logged in to.
fn db_session() -> Result<crate::postgres::Session, String> {
    if crate::env("DISCOURSE_DB_SOCKET").is_some_and(|s| !s.is_empty()) {
        return Err(format!(
            "PG::ConnectionBad: connection to server on socket \"{}/.s.PGSQL.5432\" failed: No such file or directory (set DISCOURSE_DB_SOCKET='' for TCP)",
            crate::env("DISCOURSE_DB_SOCKET").unwrap_or_default()
        ));
    }
    let port = crate::env("DISCOURSE_DB_PORT")
        .filter(|p| !p.is_empty())
        .map_or(Ok(5432), |p| p.parse::<u16>())
        .map_err(|_| "DISCOURSE_DB_PORT is not a port".to_owned())?;
    crate::postgres::Session::open(
        &crate::env("DISCOURSE_DB_HOST").unwrap_or_default(),
        port,
        &crate::env("DISCOURSE_DB_USERNAME").unwrap_or_default(),
        &crate::env("DISCOURSE_DB_NAME").unwrap_or_default(),
        &crate::env("DISCOURSE_DB_PASSWORD").unwrap_or_default(),
    )
    .map_err(|e| format!("PG::ConnectionBad: {e}"))
}

fn redis_ping() -> Result<(), String> {
    let port = crate::env("DISCOURSE_REDIS_PORT")
        .filter(|p| !p.is_empty())
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379);
    crate::redis::ping(
        &crate::env("DISCOURSE_REDIS_HOST").unwrap_or_default(),
        port,
        crate::env("DISCOURSE_REDIS_PASSWORD").as_deref(),
    )
    .map_err(|e| format!("Redis::CannotConnectError: {e}"))
}

fn retry(what: &str, mut f: impl FnMut() -> Result<(), String>) -> R<()> {
    let mut last = String::new();
    for _ in 0..30 {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("{what}: {e}; retrying");
                last = e;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    fail(last)
}

fn db_login() -> Result<(), String> {
    db_session().map(drop)
}

// ---- versions and migrations ------------------------------------------------------

const HOME: &str = "/var/www/discourse";

/// The stand-in's migrations: (the first release that has it, version,
/// class name, SQL). Each release carries those of its own and earlier
/// releases, as `db/migrate` does.
const MIGRATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "3.4.0",
        "20240912000000",
        "CreateStandinTopics",
        "CREATE TABLE standin_topics (id serial PRIMARY KEY, title text NOT NULL)",
    ),
    (
        "3.4.0",
        "20250121000000",
        "AddStandinTopicsTitleIndex",
        "CREATE INDEX index_standin_topics_on_title ON standin_topics (title)",
    ),
    (
        "3.5.0",
        "20250610000000",
        "AddClosedToStandinTopics",
        "ALTER TABLE standin_topics ADD COLUMN closed boolean NOT NULL DEFAULT false",
    ),
    (
        "3.5.0",
        "20250722000000",
        "CreateStandinReactions",
        "CREATE TABLE standin_reactions (id serial PRIMARY KEY, topic_id integer NOT NULL, emoji text NOT NULL)",
    ),
];

/// `3.5.0` as numbers, for ordering releases.
fn release_key(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| p.len() == 3)
}

/// `RUN ["standin", "discourse-version"]` at build time: `lib/version.rb`
/// and `db/migrate/<version>_<name>.rb` for `DISCOURSE_VERSION`.
pub fn build_version(_args: &[String]) -> R<i32> {
    let v = crate::env("DISCOURSE_VERSION").unwrap_or_default();
    let Some(key) = release_key(&v) else {
        return fail(format!(
            "build argument DISCOURSE_VERSION must look like 3.5.0, not {v:?}"
        ));
    };
    let known: Vec<&str> = MIGRATIONS.iter().map(|m| m.0).collect();
    if !known
        .iter()
        .any(|r| release_key(r).is_some_and(|k| k <= key))
    {
        return fail(format!(
            "stand-in discourse: no migrations for {v} (the stand-in knows releases {})",
            known.join(", ")
        ));
    }
    let home = Path::new(HOME);
    std::fs::create_dir_all(home.join("lib"))?;
    std::fs::create_dir_all(home.join("db/migrate"))?;
    std::fs::write(
        home.join("lib/version.rb"),
        format!(
            "# frozen_string_literal: true\n\nmodule Discourse\n  module VERSION\n    STRING = \"{v}\"\n  end\nend\n"
        ),
    )?;
    let mut n = 0;
    for (release, version, name, sql) in MIGRATIONS {
        if release_key(release).is_some_and(|k| k <= key) {
            std::fs::write(
                home.join(format!("db/migrate/{version}_{}.rb", snake(name))),
                format!(
                    "# frozen_string_literal: true\n\nclass {name} < ActiveRecord::Migration[7.2]\n  def up\n    execute \"{sql}\"\n  end\nend\n"
                ),
            )?;
            n += 1;
        }
    }
    println!("Discourse stand-in {v}: {n} migrations");
    Ok(0)
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A migration of the code: (version, class name, SQL).
type Migration = (String, String, String);

/// The code's version (`lib/version.rb`) and migrations (`db/migrate`).
fn code() -> R<(String, Vec<Migration>)> {
    let home = Path::new(HOME);
    let rb = std::fs::read_to_string(home.join("lib/version.rb")).ctx("reading lib/version.rb")?;
    let version = rb
        .split("STRING = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned();
    let mut files: Vec<String> = std::fs::read_dir(home.join("db/migrate"))
        .ctx("reading db/migrate")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rb"))
        .collect();
    files.sort();
    let mut migrations = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(home.join("db/migrate").join(&f))?;
        let ts = f.split('_').next().unwrap_or("").to_owned();
        let class = text
            .split("class ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_owned();
        let sql = text
            .split("execute \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned();
        migrations.push((ts, class, sql));
    }
    Ok((version, migrations))
}

/// The versions in `schema_migrations` (none before the first migration).
fn applied(s: &mut crate::postgres::Session) -> Result<Vec<String>, String> {
    let exists = s.query("SELECT to_regclass('public.schema_migrations') IS NOT NULL")?;
    if exists
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        != Some("t")
    {
        return Ok(Vec::new());
    }
    Ok(
        s.query("SELECT version FROM schema_migrations ORDER BY version")?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect(),
    )
}

/// `rake db:migrate`: each pending migration in its own transaction with
/// its `schema_migrations` row, printed as Rails prints it. Versions the
/// database has and the code lacks are left alone (ActiveRecord ignores
/// them; `db:migrate:status` shows them as `NO FILE`).
fn migrate(s: &mut crate::postgres::Session, code: &[Migration]) -> Result<Vec<String>, String> {
    s.query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version character varying NOT NULL PRIMARY KEY); \
         CREATE TABLE IF NOT EXISTS ar_internal_metadata (key character varying NOT NULL PRIMARY KEY, \
           value character varying, created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL); \
         INSERT INTO ar_internal_metadata VALUES ('environment', 'production', now(), now()) \
           ON CONFLICT (key) DO NOTHING",
    )?;
    let done = applied(s)?;
    let mut ran = Vec::new();
    for (version, class, sql) in code {
        if done.contains(version) {
            continue;
        }
        println!("== {version} {class}: migrating {}", "=".repeat(20));
        let started = std::time::Instant::now();
        s.query(&format!(
            "{sql}; INSERT INTO schema_migrations (version) VALUES ({})",
            crate::postgres::lit(version)
        ))
        .map_err(|e| {
            format!(
                "StandardError: An error has occurred, this and all later migrations canceled:\n\n{e}"
            )
        })?;
        println!(
            "== {version} {class}: migrated ({:.4}s) {}",
            started.elapsed().as_secs_f64(),
            "=".repeat(20)
        );
        ran.push(version.clone());
    }
    Ok(ran)
}

/// What `GET /standin/schema.json` shows: the code's and the database's
/// migrations, the pending ones and those the code does not know.
fn schema() -> Result<Value, String> {
    let (version, code) = code().map_err(|e| e.msg)?;
    let mut s = db_session()?;
    let db = applied(&mut s)?;
    let ours: Vec<&String> = code.iter().map(|m| &m.0).collect();
    let pending: Vec<&&String> = ours.iter().filter(|v| !db.contains(v)).collect();
    let unknown: Vec<&String> = db.iter().filter(|v| !ours.contains(v)).collect();
    Ok(json!({
        "version": version,
        "code_migrations": ours,
        "db_migrations": db,
        "pending": pending,
        "unknown": unknown,
    }))
}

/// `/sbin/boot`: checks, migrates, serves on port 80.
pub fn boot(_args: &[String]) -> R<i32> {
    let env = required_env()?;
    if let Some(w) = crate::env("UNICORN_WORKERS")
        && w.parse::<u32>().is_err()
    {
        return fail(format!("UNICORN_WORKERS must be a number, not {w:?}"));
    }
    retry("database", db_login)?;
    retry("redis", redis_ping)?;
    let migrate_on_boot = crate::env("MIGRATE_ON_BOOT").is_some_and(|m| m == "1");
    let ids = crate::user_ids("discourse")?;
    if crate::euid() == 0 {
        std::os::unix::fs::chown(SHARED, Some(ids.0), Some(ids.1)).ctx("chown /shared")?;
    }
    let (version, code) = code()?;
    println!("Discourse {version} (stand-in)");
    let mut s = db_session().map_err(|msg| crate::Fail { code: 1, msg })?;
    let ran = if migrate_on_boot {
        // `su discourse -c 'bundle exec rake db:migrate' || exit 1`
        migrate(&mut s, &code).map_err(|msg| crate::Fail { code: 1, msg })?
    } else {
        let done = applied(&mut s).map_err(|msg| crate::Fail { code: 1, msg })?;
        if code.iter().any(|m| !done.contains(&m.0)) {
            return fail(
                "ActiveRecord::PendingMigrationError: migrations are pending; set MIGRATE_ON_BOOT=1",
            );
        }
        Vec::new()
    };
    let in_db = applied(&mut s).map_err(|msg| crate::Fail { code: 1, msg })?;
    drop(s);
    let unknown: Vec<&String> = in_db
        .iter()
        .filter(|v| !code.iter().any(|m| &m.0 == *v))
        .collect();
    state_file().update(|st| {
        state::arr(st, "boots").push(json!({
            "version": version,
            "migrated": ran,
            "unknown_migrations": unknown,
            "at": codec::now(),
        }));
        let settings = state::obj(st, "settings");
        for (name, _, default) in SETTINGS {
            settings.entry(*name).or_insert_with(|| json!(default));
        }
        st["env"] = Value::Object(env.clone());
        state::arr(st, "api_keys");
        state::arr(st, "users");
        state::arr(st, "groups");
        state::arr(st, "calls");
        state::obj(st, "nonces");
        Ok(())
    })?;
    let handler = Arc::new(|req: &Request| -> Response {
        match handle(req) {
            Ok(r) | Err(r) => r,
        }
    });
    println!("discourse (stand-in): unicorn listening on port 80");
    net::serve(80, handler).ctx("cannot listen on port 80")?;
    Ok(1)
}

fn errors(status: u16, msg: impl Into<String>) -> Response {
    Response::json(status, &json!({"errors": [msg.into()]}))
}

fn not_found() -> Response {
    Response::json(
        404,
        &json!({"errors": ["The requested URL or resource could not be found."], "error_type": "not_found"}),
    )
}

fn server_error(e: crate::Fail) -> Response {
    Response::text(500, e.msg)
}

type Resp = Result<Response, Response>;

fn handle(req: &Request) -> Resp {
    let path = req.path.as_str();
    match (req.method.as_str(), path) {
        // ForumsController#status: "ok" while not shutting down, whatever
        // the schema (it does not look at the database).
        ("GET", "/srv/status") => Ok(Response::text(200, "ok")),
        ("GET", "/standin/schema.json") => match schema() {
            Ok(v) => Ok(Response::json(200, &v)),
            Err(e) => Err(Response::text(500, e)),
        },
        ("GET", "/") => {
            let version = code().map(|c| c.0).map_err(server_error)?;
            Ok(Response::new(
                200,
                "text/html",
                format!(
                    "<html><head><meta name=\"generator\" content=\"Discourse {version} - https://github.com/discourse/discourse version standin\"></head><body>Discourse stand-in</body></html>"
                ),
            ))
        }
        ("GET", "/standin/users.json") => {
            let st = state_file().read().map_err(server_error)?;
            Ok(Response::json(
                200,
                &json!({"users": st["users"], "groups": st["groups"], "calls": st["calls"]}),
            ))
        }
        ("GET", "/admin/site_settings.json") => {
            let st = authorize(req)?;
            let list: Vec<Value> = SETTINGS
                .iter()
                .map(|(n, _, _)| json!({"setting": n, "value": st["settings"][*n]}))
                .collect();
            Ok(Response::json(200, &json!({"site_settings": list})))
        }
        ("PUT", p) if p.starts_with("/admin/site_settings/") => {
            authorize(req)?;
            put_setting(req, p.trim_start_matches("/admin/site_settings/"))
        }
        ("POST", "/admin/groups" | "/admin/groups.json") => {
            authorize(req)?;
            create_group(req)
        }
        ("GET", p) if p.starts_with("/groups/") && p.ends_with(".json") => {
            authorize(req)?;
            let name = &p["/groups/".len()..p.len() - ".json".len()];
            let st = state_file().read().map_err(server_error)?;
            match find_group(&st, name) {
                Some(g) => Ok(Response::json(200, &json!({"group": g}))),
                None => Err(not_found()),
            }
        }
        ("GET", "/session/sso") => sso_start(req),
        ("GET", "/session/sso_login") => sso_login(req),
        ("POST", "/admin/users/sync_sso") => {
            authorize(req)?;
            sync_sso(req)
        }
        ("GET", p) if p.starts_with("/u/by-external/") => {
            authorize(req)?;
            recorded(req, by_external(p))
        }
        (_, p) if p.starts_with("/admin/users/") => {
            authorize(req)?;
            recorded(req, admin_user(req))
        }
        _ => Err(not_found()),
    }
}

/// Records an admin call on users (method, path, body, status) in `calls`.
fn recorded(req: &Request, r: Resp) -> Resp {
    let status = match &r {
        Ok(x) | Err(x) => x.status,
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_else(|_| {
        Value::Object(
            codec::parse_query(&String::from_utf8_lossy(&req.body))
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect(),
        )
    });
    state_file()
        .update(|st| {
            state::arr(st, "calls").push(json!({
                "method": req.method, "path": req.path, "body": body, "status": status}));
            Ok(())
        })
        .map_err(server_error)?;
    r
}

/// `GET /u/by-external/{external_id}.json`: the user DiscourseConnect
/// made with that `external_id`.
fn by_external(path: &str) -> Resp {
    let id = path["/u/by-external/".len()..].trim_end_matches(".json");
    let st = state_file().read().map_err(server_error)?;
    st["users"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["external_id"] == id)
        .map(|u| Response::json(200, &json!({"user": u})))
        .ok_or_else(not_found)
}

/// A suspension's end in the future: suspended now.
fn suspended(u: &Value) -> bool {
    u["suspended_till"].as_str().is_some_and(|t| !t.is_empty())
}

/// `PUT /admin/users/{id}/suspend` (`suspend_until` and `reason`, both
/// required; 409 when already suspended), `PUT …/unsuspend`, `POST
/// …/log_out` (every session ends), `DELETE …/groups/{group_id}`, as
/// Discourse's `Admin::UsersController` routes them.
fn admin_user(req: &Request) -> Resp {
    let rest = req.path["/admin/users/".len()..].trim_end_matches(".json");
    let parts: Vec<&str> = rest.split('/').collect();
    let Some(Ok(id)) = parts.first().map(|p| p.parse::<u64>()) else {
        return Err(not_found());
    };
    let route = (req.method.as_str(), &parts[1..]);
    let field = |name: &str| body_value(req, name).ok().filter(|v| !v.trim().is_empty());
    state_file()
        .update(|st| {
            let groups = st["groups"].clone();
            let users = state::arr(st, "users");
            let Some(u) = users.iter_mut().find(|u| u["id"] == id) else {
                return Ok(Err(not_found()));
            };
            Ok(match route {
                ("PUT", ["suspend"]) => {
                    let (Some(until), Some(reason)) = (field("suspend_until"), field("reason")) else {
                        return Ok(Err(Response::json(
                            400,
                            &json!({"failed": "FAILED", "errors": ["Reason can't be blank", "Suspend until can't be blank"]}),
                        )));
                    };
                    if reason.chars().count() > 300 {
                        return Ok(Err(errors(400, "Reason is too long (maximum is 300 characters)")));
                    }
                    if until.len() < 10 || !until[..4].chars().all(|c| c.is_ascii_digit()) {
                        return Ok(Err(errors(400, "Suspend until is not a date")));
                    }
                    if suspended(u) {
                        return Ok(Err(Response::json(409, &json!({"failed": "FAILED", "message": "User is already suspended"}))));
                    }
                    u["suspended_till"] = json!(until);
                    u["suspend_reason"] = json!(reason);
                    Ok(Response::json(200, &json!({"suspension": {"suspend_reason": reason, "suspended_till": until}})))
                }
                ("PUT", ["unsuspend"]) => {
                    u["suspended_till"] = Value::Null;
                    u["suspend_reason"] = Value::Null;
                    Ok(Response::json(200, &json!({"suspension": {"suspended_till": null, "suspended_at": null}})))
                }
                ("POST", ["log_out"]) => {
                    u["sessions"] = json!(0);
                    Ok(Response::json(200, &json!({"success": "OK"})))
                }
                ("DELETE", ["groups", gid]) => {
                    let Some(g) = groups
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|g| gid.parse::<u64>().is_ok_and(|n| g["id"] == n))
                    else {
                        return Ok(Err(not_found()));
                    };
                    if g["automatic"] == true {
                        return Ok(Err(errors(422, "You cannot modify an automatic group")));
                    }
                    let name = state::s(g, "name").to_owned();
                    if let Some(list) = u["groups"].as_array_mut() {
                        list.retain(|x| x.as_str() != Some(name.as_str()));
                    }
                    Ok(Response::empty(200))
                }
                _ => Err(not_found()),
            })
        })
        .map_err(server_error)?
}

/// The admin API's headers: a key created by `rails runner`, and the
/// system user (or an admin).
fn authorize(req: &Request) -> Result<Value, Response> {
    let denied = |why: &str| {
        Response::json(
            403,
            &json!({"errors": [format!("You are not permitted to view the requested resource. The API username or key is invalid. ({why})")], "error_type": "invalid_access"}),
        )
    };
    if req.query("api_key").is_some() || req.query("api_username").is_some() {
        return Err(denied(
            "API credentials in the query string are not accepted; use the Api-Key and Api-Username headers",
        ));
    }
    let st = state_file().read().map_err(server_error)?;
    let key = req.header("api-key").unwrap_or("");
    let known = st["api_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| codec::ct_eq(state::s(k, "key").as_bytes(), key.as_bytes()));
    if key.is_empty() || !known {
        return Err(denied("no such Api-Key"));
    }
    let user = req.header("api-username").unwrap_or("");
    let admin = user == "system"
        || st["users"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|u| u["username"] == user && u["admin"] == true);
    if !admin {
        return Err(denied("Api-Username must be system or an admin"));
    }
    Ok(st)
}

/// The value of `name` from a form or JSON body.
fn body_value(req: &Request, name: &str) -> Result<String, Response> {
    let missing = || {
        errors(
            400,
            format!("param is missing or the value is empty: {name}"),
        )
    };
    let ct = req.header("content-type").unwrap_or("");
    if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&req.body)
            .map_err(|e| errors(400, format!("invalid JSON body: {e}")))?;
        return match v.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) => Ok(String::new()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(errors(422, format!("{name}: value must be a string"))),
            None => Err(missing()),
        };
    }
    let form = codec::parse_query(&String::from_utf8_lossy(&req.body));
    codec::query_get(&form, name)
        .map(str::to_owned)
        .ok_or_else(missing)
}

fn validate(name: &str, kind: Kind, value: &str, settings: &Value) -> Result<String, String> {
    let cur = |n: &str| state::s(settings, n).to_owned();
    let v = match kind {
        Kind::Bool => match value {
            "true" | "t" => "true".to_owned(),
            "false" | "f" => "false".to_owned(),
            _ => {
                return Err(format!(
                    "Invalid value {value:?} for {name}: must be true or false"
                ));
            }
        },
        Kind::Enum(opts) if opts.contains(&value) => value.to_owned(),
        Kind::Enum(opts) => {
            return Err(format!(
                "Invalid value {value:?} for {name}: one of {}",
                opts.join(", ")
            ));
        }
        Kind::Url
            if value.is_empty()
                || value.starts_with("https://")
                || value.starts_with("http://") =>
        {
            value.to_owned()
        }
        Kind::Url => {
            return Err(format!(
                "Invalid value for {name}: must be a URL (http:// or https://)"
            ));
        }
        Kind::Email if value.is_empty() || (value.contains('@') && !value.contains(' ')) => {
            value.to_owned()
        }
        Kind::Email => {
            return Err(format!(
                "Invalid value for {name}: must be an email address"
            ));
        }
        Kind::Int(lo, hi) => match value.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => n.to_string(),
            _ => {
                return Err(format!(
                    "Invalid value {value:?} for {name}: a number from {lo} to {hi}"
                ));
            }
        },
        Kind::Str => value.to_owned(),
    };
    let num = |n: &str| cur(n).parse::<u32>().unwrap_or(0);
    match name {
        "discourse_connect_url" | "discourse_connect_secret"
            if v.is_empty() && cur("enable_discourse_connect") == "true" =>
        {
            return Err("You cannot clear this while DiscourseConnect is enabled.".into());
        }
        "discourse_connect_url" | "discourse_connect_secret" if v.is_empty() => {}
        "discourse_connect_secret" => {
            if cur("discourse_connect_url").is_empty() {
                return Err("You must set 'discourse connect url' before setting 'discourse connect secret'.".into());
            }
            if v.chars().count() < 10 || v.contains(char::is_whitespace) {
                return Err(
                    "The discourse connect secret must be at least 10 characters, without spaces."
                        .into(),
                );
            }
        }
        "enable_discourse_connect" if v == "true" => {
            if cur("discourse_connect_url").is_empty() {
                return Err(
                    "You must set 'discourse connect url' before enabling this setting.".into(),
                );
            }
            if cur("discourse_connect_secret").is_empty() {
                return Err(
                    "You must set 'discourse connect secret' before enabling this setting.".into(),
                );
            }
            if cur("enforce_second_factor") != "no" {
                return Err("You cannot enable DiscourseConnect while 2FA is enforced (enforce_second_factor must be 'no').".into());
            }
        }
        "min_username_length" if v.parse::<u32>().unwrap_or(0) > num("max_username_length") => {
            return Err("The minimum username length cannot be more than the maximum.".into());
        }
        "max_username_length" if v.parse::<u32>().unwrap_or(0) < num("min_username_length") => {
            return Err("The maximum username length cannot be less than the minimum.".into());
        }
        "enforce_second_factor" if v != "no" && cur("enable_discourse_connect") == "true" => {
            return Err("You cannot enforce 2FA while DiscourseConnect is enabled.".into());
        }
        _ => {}
    }
    Ok(v)
}

fn put_setting(req: &Request, name: &str) -> Resp {
    let Some((_, kind, _)) = SETTINGS.iter().find(|(n, _, _)| *n == name) else {
        return Err(not_found());
    };
    let value = body_value(req, name)?;
    state_file()
        .update(|st| match validate(name, *kind, &value, &st["settings"]) {
            Ok(v) => {
                st["settings"][name] = json!(v);
                Ok(Response::empty(200))
            }
            Err(e) => Ok(errors(422, e)),
        })
        .map_err(server_error)
}

fn find_group<'a>(st: &'a Value, name: &str) -> Option<&'a Value> {
    st["groups"]
        .as_array()?
        .iter()
        .find(|g| state::s(g, "name").eq_ignore_ascii_case(name))
}

/// `UsernameValidator`, which Discourse applies to group names too, with
/// the lengths from the site settings.
fn name_problem(name: &str, settings: &Value) -> Option<String> {
    let len = |n: &str| state::s(settings, n).parse::<usize>().unwrap_or(0);
    let (min, max) = (len("min_username_length"), len("max_username_length"));
    let n = name.chars().count();
    if n < min {
        return Some(format!("Name must be at least {min} characters"));
    }
    if n > max {
        return Some(format!("Name must be no more than {max} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Some(
            "Name must only include numbers, letters, dashes, dots, and underscores".into(),
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Some("Name must begin with a letter, a number or an underscore".into());
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("Name must end with a letter or a number".into());
    }
    if ["--", "__", "..", "-_", "_-", ".-", "-.", "._", "_."]
        .iter()
        .any(|d| name.contains(d))
    {
        return Some("Name must not contain a sequence of 2 or more special chars (.-_)".into());
    }
    None
}

/// `POST /admin/groups`: `{"group": {...}}` as JSON, or `group[name]=` as a
/// form. Names are unique among groups and users, case-insensitively.
fn create_group(req: &Request) -> Resp {
    let ct = req.header("content-type").unwrap_or("");
    let fields: Map<String, Value> = if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&req.body)
            .map_err(|e| errors(400, format!("invalid JSON body: {e}")))?;
        match v.get("group") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(errors(400, "param is missing or the value is empty: group")),
        }
    } else {
        codec::parse_query(&String::from_utf8_lossy(&req.body))
            .into_iter()
            .filter_map(|(k, v)| {
                let k = k.strip_prefix("group[")?.strip_suffix(']')?.to_owned();
                Some((k, json!(v)))
            })
            .collect()
    };
    let name = fields
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(errors(422, "Name can't be blank"));
    }
    state_file()
        .update(|st| {
            if let Some(p) = name_problem(&name, &st["settings"]) {
                return Ok(errors(422, p));
            }
            let user_has_it = st["users"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|u| state::s(u, "username").eq_ignore_ascii_case(&name));
            if find_group(st, &name).is_some() || user_has_it {
                return Ok(errors(422, "Name has already been taken"));
            }
            let groups = state::arr(st, "groups");
            let id = 40 + groups.len() as u64;
            let group = json!({
                "id": id,
                "name": name,
                "full_name": fields.get("full_name").cloned().unwrap_or(Value::Null),
                "visibility_level": fields.get("visibility_level").cloned().unwrap_or(json!(0)),
                "automatic": false,
            });
            groups.push(group.clone());
            Ok(Response::json(200, &json!({"basic_group": group})))
        })
        .map_err(server_error)
}

fn base_url(st: &Value) -> String {
    let host = state::s(&st["env"], "DISCOURSE_HOSTNAME");
    let scheme = if st["settings"]["force_https"] == "true" {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

fn sso_start(req: &Request) -> Resp {
    let return_path = req.query("return_path").unwrap_or("/").to_owned();
    state_file()
        .update(|st| {
            let s = &st["settings"];
            if s["enable_discourse_connect"] != "true" {
                return Ok(errors(404, "DiscourseConnect is not enabled"));
            }
            let url = state::s(s, "discourse_connect_url").to_owned();
            let secret = state::s(s, "discourse_connect_secret").to_owned();
            let nonce = codec::random_hex(16);
            let payload = codec::build_query(&[
                ("nonce", &nonce),
                (
                    "return_sso_url",
                    &format!("{}/session/sso_login", base_url(st)),
                ),
            ]);
            let b64 = codec::b64_encode(payload.as_bytes());
            let sig = codec::hex(&codec::hmac_sha256(secret.as_bytes(), b64.as_bytes()));
            state::obj(st, "nonces").insert(
                nonce,
                json!({"issued": codec::now(), "used": false, "return_path": return_path}),
            );
            let sep = if url.contains('?') { '&' } else { '?' };
            Ok(Response::redirect(&format!(
                "{url}{sep}sso={}&sig={sig}",
                codec::url_encode(&b64)
            )))
        })
        .map_err(server_error)
}

/// Verifies a signed payload (as `DiscourseConnectBase.parse`) and returns
/// its fields.
fn verify(
    st: &Value,
    sso: Option<&str>,
    sig: Option<&str>,
) -> Result<Vec<(String, String)>, Response> {
    let (Some(sso), Some(sig)) = (sso, sig) else {
        return Err(errors(422, "sso and sig are required"));
    };
    let raw = codec::b64_decode(sso).map_err(|e| errors(422, e))?;
    let secret = state::s(&st["settings"], "discourse_connect_secret");
    let expected = codec::hex(&codec::hmac_sha256(secret.as_bytes(), sso.as_bytes()));
    if !codec::ct_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(errors(
            422,
            "Bad signature for payload (sig must be the lowercase hex HMAC-SHA256 of the Base64 text with discourse_connect_secret)",
        ));
    }
    let text = String::from_utf8(raw).map_err(|_| errors(422, "payload is not UTF-8"))?;
    Ok(codec::parse_query(&text))
}

/// Creates or updates the user a payload describes.
fn upsert_user(st: &mut Value, f: &[(String, String)]) -> Result<Value, Response> {
    let get = |k: &str| codec::query_get(f, k).unwrap_or("").trim().to_owned();
    let (external_id, email, username) = (get("external_id"), get("email"), get("username"));
    for (k, v) in [
        ("external_id", &external_id),
        ("email", &email),
        ("username", &username),
    ] {
        if v.is_empty() {
            return Err(errors(
                422,
                format!("{k} is blank in the DiscourseConnect payload"),
            ));
        }
    }
    if !email.contains('@') || email.contains(char::is_whitespace) {
        return Err(errors(422, format!("email {email:?} is not valid")));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(errors(
            422,
            format!("username {username:?} has characters Discourse does not allow"),
        ));
    }
    for k in [
        "admin",
        "moderator",
        "suppress_welcome_message",
        "require_activation",
    ] {
        let v = get(k);
        if !v.is_empty() && v != "true" && v != "false" {
            return Err(errors(
                422,
                format!("{k} must be the string true or false, not {v:?}"),
            ));
        }
    }
    let settings = st["settings"].clone();
    // `UserNameSuggester.fix_username`: cut to the maximum length, pad a
    // short one with digits.
    let username = {
        let len = |n: &str| state::s(&settings, n).parse::<usize>().unwrap_or(0);
        let mut u: String = username.chars().take(len("max_username_length")).collect();
        while u.chars().count() < len("min_username_length") {
            u.push('1');
        }
        u
    };
    let st_groups: Vec<Value> = st["groups"].as_array().cloned().unwrap_or_default();
    let on = |n: &str| settings[n] == "true";
    let developers: Vec<String> = state::s(&st["env"], "DISCOURSE_DEVELOPER_EMAILS")
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .collect();
    let users = state::arr(st, "users");
    let next_id = users
        .iter()
        .filter_map(|u| u["id"].as_u64())
        .max()
        .unwrap_or(0)
        + 1;
    let idx = users
        .iter()
        .position(|u| u["external_id"] == external_id.as_str())
        .or_else(|| {
            users
                .iter()
                .position(|u| state::s(u, "email").eq_ignore_ascii_case(&email))
        });
    let taken = |users: &Vec<Value>, name: &str, except: Option<usize>| {
        users
            .iter()
            .enumerate()
            .any(|(i, u)| Some(i) != except && state::s(u, "username").eq_ignore_ascii_case(name))
    };
    let idx = match idx {
        Some(i) => {
            let u = &mut users[i];
            u["external_id"] = json!(external_id);
            if on("auth_overrides_email") {
                u["email"] = json!(email);
            }
            if on("auth_overrides_name") && !get("name").is_empty() {
                u["name"] = json!(get("name"));
            }
            if on("auth_overrides_username") && !taken(users, &username, Some(i)) {
                users[i]["username"] = json!(username);
            }
            i
        }
        None => {
            let mut name = username.clone();
            let mut n = 1;
            while taken(users, &name, None) {
                name = format!("{username}{n}");
                n += 1;
            }
            users.push(json!({
                "id": next_id,
                "external_id": external_id,
                "username": name,
                "email": email,
                "name": get("name"),
                "groups": [],
                "admin": developers.contains(&email.to_ascii_lowercase()),
                "moderator": false,
            }));
            users.len() - 1
        }
    };
    let u = &mut users[idx];
    let list = |k: &str| -> Vec<String> {
        get(k)
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect()
    };
    let mut groups: Vec<String> = u["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    // As `apply_group_rules`: names are matched case-insensitively against
    // groups that exist; any other name is ignored.
    let existing: Vec<String> = st_groups
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    let known = |g: &str| existing.iter().find(|e| e.eq_ignore_ascii_case(g)).cloned();
    if on("discourse_connect_overrides_groups") && codec::query_get(f, "groups").is_some() {
        groups = list("groups").iter().filter_map(|g| known(g)).collect();
    }
    for g in list("add_groups").iter().filter_map(|g| known(g)) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let remove: Vec<String> = list("remove_groups")
        .iter()
        .filter_map(|g| known(g))
        .collect();
    groups.retain(|g| !remove.contains(g));
    u["groups"] = json!(groups);
    for k in ["admin", "moderator"] {
        match get(k).as_str() {
            "true" => u[k] = json!(true),
            "false" => u[k] = json!(false),
            _ => {}
        }
    }
    Ok(u.clone())
}

fn sso_login(req: &Request) -> Resp {
    state_file()
        .update(|st| {
            if st["settings"]["enable_discourse_connect"] != "true" {
                return Ok(errors(404, "DiscourseConnect is not enabled"));
            }
            let fields = match verify(st, req.query("sso"), req.query("sig")) {
                Ok(f) => f,
                Err(r) => return Ok(r),
            };
            let nonce = codec::query_get(&fields, "nonce").unwrap_or("").to_owned();
            let entry = st["nonces"].get(&nonce).cloned();
            let problem = match &entry {
                None => Some("the nonce was never issued (or is blank)"),
                Some(n) if n["used"] == true => Some("the nonce was already used (replay)"),
                Some(n) if codec::now() > n["issued"].as_u64().unwrap_or(0) + NONCE_TTL => {
                    Some("the nonce expired (10 minutes)")
                }
                Some(_) => None,
            };
            if let Some(p) = problem {
                return Ok(errors(
                    403,
                    format!("Account login timed out, please try logging in again: {p}"),
                ));
            }
            st["nonces"][nonce.as_str()]["used"] = json!(true);
            let user = match upsert_user(st, &fields) {
                Ok(u) => u,
                Err(r) => return Ok(r),
            };
            // As `SessionController#sso_login`: a suspended user gets no
            // session.
            if suspended(&user) {
                return Ok(errors(403, "Your account has been suspended."));
            }
            if let Some(u) = state::arr(st, "users")
                .iter_mut()
                .find(|u| u["id"] == user["id"])
            {
                u["sessions"] = json!(u["sessions"].as_u64().unwrap_or(0) + 1);
            }
            let user = state::arr(st, "users")
                .iter()
                .find(|u| u["id"] == user["id"])
                .cloned()
                .unwrap_or(user);
            let return_path = entry
                .map(|e| e["return_path"].clone())
                .unwrap_or(json!("/"));
            Ok(Response::json(
                200,
                &json!({"user": user, "return_path": return_path}),
            ))
        })
        .map_err(server_error)
}

fn sync_sso(req: &Request) -> Resp {
    let ct = req.header("content-type").unwrap_or("");
    let (sso, sig) = if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&req.body).map_err(|e| errors(400, e.to_string()))?;
        (
            v["sso"].as_str().map(str::to_owned),
            v["sig"].as_str().map(str::to_owned),
        )
    } else {
        let form = codec::parse_query(&String::from_utf8_lossy(&req.body));
        (
            codec::query_get(&form, "sso").map(str::to_owned),
            codec::query_get(&form, "sig").map(str::to_owned),
        )
    };
    state_file()
        .update(|st| {
            if st["settings"]["enable_discourse_connect"] != "true" {
                return Ok(errors(403, "DiscourseConnect is not enabled"));
            }
            let fields = match verify(st, sso.as_deref(), sig.as_deref()) {
                Ok(f) => f,
                Err(r) => return Ok(r),
            };
            Ok(match upsert_user(st, &fields) {
                Ok(u) => Response::json(200, &u),
                Err(r) => r,
            })
        })
        .map_err(server_error)
}

/// `rails runner '<script>'`: only the catalog's script, which creates the
/// first API key from a key file unless one with that description exists.
pub fn rails(args: &[String]) -> R<i32> {
    let mut args: Vec<&String> = args.iter().collect();
    if args.first().is_none_or(|a| *a != "runner" && *a != "r") {
        return fail("stand-in rails: only `rails runner '<script>'` is supported");
    }
    args.remove(0);
    if args.first().is_some_and(|a| *a == "-e") {
        args.drain(..2.min(args.len()));
    }
    let [script] = args.as_slice() else {
        return fail("stand-in rails runner: give exactly one script");
    };
    let quoted = |after: &str| -> Option<String> {
        let rest = script.split(after).nth(1)?;
        let q = rest.chars().next()?;
        if q != '\'' && q != '"' {
            return None;
        }
        rest[1..].split(q).next().map(str::to_owned)
    };
    let (Some(path), true) = (quoted("File.read("), script.contains("ApiKey.create!(")) else {
        return fail(format!(
            "stand-in rails runner understands only `k = File.read('<key file>').strip; ApiKey.exists?(description: '…') || ApiKey.create!(description: '…', created_by_id: Discourse::SYSTEM_USER_ID, key: k)`, not: {script}"
        ));
    };
    if !script.contains("key: k") && !script.contains("key:k") {
        return fail(
            "stand-in rails runner: ApiKey.create! must be given key: k (the key read from the file)",
        );
    }
    let description = quoted("description: ").unwrap_or_default();
    required_env()?;
    db_login().map_err(|e| crate::Fail { code: 1, msg: e })?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "Errno::EACCES: Permission denied",
            std::io::ErrorKind::NotFound => "Errno::ENOENT: No such file or directory",
            _ => "Errno::EIO",
        };
        crate::Fail {
            code: 1,
            msg: format!(
                "{kind} @ rb_sysopen - {path} (running as uid {})",
                crate::euid()
            ),
        }
    })?;
    let key = if script.contains(".strip") {
        text.trim()
    } else {
        text.as_str()
    }
    .to_owned();
    if key.is_empty() {
        return fail("ActiveRecord::RecordInvalid: Validation failed: Key can't be blank");
    }
    let guarded = script.contains("ApiKey.exists?(");
    state_file().update(|st| {
        let keys = state::arr(st, "api_keys");
        if guarded
            && keys
                .iter()
                .any(|k| k["description"] == description.as_str())
        {
            return Ok(());
        }
        keys.push(json!({"description": description, "key": key, "created_at": codec::now()}));
        Ok(())
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_username_rules_and_lengths() {
        let defaults = json!({"min_username_length": "3", "max_username_length": "20"});
        assert_eq!(name_problem("quimper", &defaults), None);
        assert!(
            name_problem("ab", &defaults)
                .unwrap()
                .contains("at least 3")
        );
        let long = "a-very-long-collective-name";
        assert!(
            name_problem(long, &defaults)
                .unwrap()
                .contains("no more than 20")
        );
        let wide = json!({"min_username_length": "2", "max_username_length": "32"});
        assert_eq!(name_problem("ab", &wide), None);
        assert_eq!(name_problem(long, &wide), None);
        assert!(name_problem("a b", &wide).is_some());
        assert!(name_problem("ab-", &wide).is_some());
        assert!(name_problem("a--b", &wide).is_some());
    }
}
