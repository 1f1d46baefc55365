//! The PostgreSQL stand-in (`postgres:16-alpine`, `pgvector/pgvector:pg16`):
//! the entrypoint's init rules (the password is fixed at init), a server on
//! 5432 that checks logins, `pg_isready`, `psql -U … -d … -c …` for
//! extensions, and `pg_dump`.
//!
//! The wire protocol is the stand-ins' own, one line each way:
//! `STANDIN-PG user=… dbname=… password=…` (URL-encoded values) answered
//! `OK` or `ERROR <message>`; `STANDIN-PG-PING` answered `OK`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::codec;
use crate::state::{self, StateFile};
use crate::{Ctx, R, fail, fail_code, file_env};

const PGDATA_DEFAULT: &str = "/var/lib/postgresql/data";

fn pgdata() -> PathBuf {
    PathBuf::from(crate::env("PGDATA").unwrap_or_else(|| PGDATA_DEFAULT.into()))
}

fn state_file(data: &Path) -> StateFile {
    StateFile::new(data.join("standin.json"), crate::user_ids("postgres").ok())
}

/// Extensions this image has (`plpgsql hstore pg_trgm`, plus `vector` in
/// the pgvector variant), from the build argument `PG_EXTENSIONS`.
fn available_extensions() -> Vec<String> {
    crate::env("STANDIN_PG_EXTENSIONS")
        .unwrap_or_else(|| "plpgsql hstore pg_trgm".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `docker-entrypoint.sh postgres`: init on an empty data dir, then the
/// server as the postgres user.
pub fn entrypoint(args: &[String]) -> R<i32> {
    let mut args = args.to_vec();
    if args.first().is_none_or(|a| a.starts_with('-')) {
        args.insert(0, "postgres".into());
    }
    if args[0] != "postgres" {
        crate::exec(&args, None)?;
    }
    let data = pgdata();
    let (uid, gid) = crate::user_ids("postgres")?;
    let root = crate::euid() == 0;
    std::fs::create_dir_all(&data).ctx(format!("mkdir {}", data.display()))?;
    if data.join("PG_VERSION").exists() {
        println!(
            "\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n"
        );
    } else {
        let nonempty = std::fs::read_dir(&data)?
            .flatten()
            .any(|e| e.file_name() != "lost+found");
        if nonempty {
            return fail(format!(
                "initdb: error: directory \"{}\" exists but is not empty",
                data.display()
            ));
        }
        let password = file_env("POSTGRES_PASSWORD")?;
        let user = file_env("POSTGRES_USER")?.unwrap_or_else(|| "postgres".into());
        let db = file_env("POSTGRES_DB")?.unwrap_or_else(|| user.clone());
        let trust = crate::env("POSTGRES_HOST_AUTH_METHOD").is_some_and(|m| m == "trust");
        let Some(password) = password.or_else(|| trust.then(String::new)) else {
            return fail(
                "Error: Database is uninitialized and superuser password is not specified.\n       You must specify POSTGRES_PASSWORD to a non-empty value for the\n       superuser. For example, \"-e POSTGRES_PASSWORD=password\" on \"docker run\".",
            );
        };
        println!("The files belonging to this database system will be owned by user \"postgres\".");
        std::fs::write(data.join("PG_VERSION"), "16\n")?;
        state_file(&data).update(|st| {
            *st = json!({
                "user": user,
                "password_sha256": codec::sha256_hex(password.as_bytes()),
                "trust": trust,
                "databases": {
                    db.clone(): {"extensions": ["plpgsql"]},
                    "postgres": {"extensions": ["plpgsql"]},
                },
            });
            Ok(())
        })?;
        println!("\nPostgreSQL init process complete; ready for start up.\n");
    }
    if root {
        crate::chown_r(&data, uid, gid)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        crate::exec(&args, Some((uid, gid)))?;
    }
    server(&args[1..])
}

/// `postgres`: refuses root, then serves logins on 5432.
pub fn server(_args: &[String]) -> R<i32> {
    if crate::euid() == 0 {
        return fail(
            "\"root\" execution of the PostgreSQL server is not permitted.\nThe server must be started under an unprivileged user ID to prevent\npossible system security compromise.",
        );
    }
    let data = pgdata();
    if !data.join("PG_VERSION").exists() {
        return fail(format!(
            "postgres: could not find the database system\nExpected to find it in the directory \"{}\"",
            data.display()
        ));
    }
    let listener =
        TcpListener::bind(("0.0.0.0", 5432)).ctx("could not bind IPv4 address \"0.0.0.0\"")?;
    println!(
        "LOG:  listening on IPv4 address \"0.0.0.0\", port 5432\nLOG:  database system is ready to accept connections"
    );
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let data = data.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                return;
            }
            let answer = answer(&data, line.trim());
            let _ = stream.write_all(format!("{answer}\n").as_bytes());
        });
    }
    Ok(1)
}

fn answer(data: &Path, line: &str) -> String {
    if line == "STANDIN-PG-PING" {
        return "OK".into();
    }
    let Some(rest) = line.strip_prefix("STANDIN-PG ") else {
        return "ERROR stand-in postgres speaks only the stand-ins' protocol".into();
    };
    let kv = codec::parse_query(&rest.replace(' ', "&"));
    let get = |k: &str| codec::query_get(&kv, k).unwrap_or("").to_owned();
    let (user, db, password) = (get("user"), get("dbname"), get("password"));
    let st = match state_file(data).read() {
        Ok(s) => s,
        Err(e) => return format!("ERROR {}", e.msg),
    };
    match check_login(&st, &user, &db, Some(&password)) {
        Ok(()) => "OK".into(),
        Err(e) => format!("ERROR {e}"),
    }
}

/// The server's checks: the role, the password fixed at init, the database.
fn check_login(st: &Value, user: &str, db: &str, password: Option<&str>) -> Result<(), String> {
    if user != state::s(st, "user") {
        return Err(format!("FATAL:  role \"{user}\" does not exist"));
    }
    if let Some(p) = password
        && st["trust"] != true
        && codec::sha256_hex(p.as_bytes()) != state::s(st, "password_sha256")
    {
        return Err(format!(
            "FATAL:  password authentication failed for user \"{user}\""
        ));
    }
    if st["databases"].get(db).is_none() {
        return Err(format!("FATAL:  database \"{db}\" does not exist"));
    }
    Ok(())
}

/// A client login (used by the Nextcloud and Discourse stand-ins).
pub fn login(host: &str, port: u16, user: &str, db: &str, password: &str) -> Result<(), String> {
    use std::io::Read;
    let mut s = crate::net::connect(host, port, Duration::from_secs(5))
        .map_err(|e| format!("could not connect to server {host}:{port}: {e}"))?;
    let line = format!(
        "STANDIN-PG {}\n",
        codec::build_query(&[("user", user), ("dbname", db), ("password", password)])
            .replace('&', " ")
    );
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    match answer.trim() {
        "OK" => Ok(()),
        other => Err(other.strip_prefix("ERROR ").unwrap_or(other).to_owned()),
    }
}

fn ping(host: &str, port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = crate::net::connect(host, port, Duration::from_secs(3)) else {
        return false;
    };
    let mut a = String::new();
    s.write_all(b"STANDIN-PG-PING\n").is_ok()
        && s.read_to_string(&mut a).is_ok()
        && a.trim() == "OK"
}

/// Options (short name, value) and positional arguments.
type Parsed = (Vec<(String, String)>, Vec<String>);

/// Options of the client tools: `-X value`, `-Xvalue`, `--long=value`.
fn client_opts(args: &[String], with_value: &[(&str, &str)], flags: &[&str]) -> R<Parsed> {
    let mut opts = Vec::new();
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if flags.contains(&a.as_str()) {
            continue;
        }
        let found = with_value.iter().find_map(|(short, long)| {
            if a == short || a == long {
                Some((short.to_string(), None))
            } else if let Some(v) = a.strip_prefix(&format!("{long}=")) {
                Some((short.to_string(), Some(v.to_owned())))
            } else if a.starts_with(short) && a.len() > 2 && !a.starts_with("--") {
                Some((short.to_string(), Some(a[2..].to_owned())))
            } else {
                None
            }
        });
        match found {
            Some((k, Some(v))) => opts.push((k, v)),
            Some((k, None)) => {
                let Some(v) = args.get(i) else {
                    return fail_code(2, format!("option requires an argument -- '{k}'"));
                };
                i += 1;
                opts.push((k, v.clone()));
            }
            None if a.starts_with('-') => {
                return fail_code(2, format!("stand-in: unsupported option {a}"));
            }
            None => pos.push(a.clone()),
        }
    }
    Ok((opts, pos))
}

fn opt<'a>(opts: &'a [(String, String)], k: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(o, _)| o == k)
        .map(|(_, v)| v.as_str())
}

fn os_user() -> String {
    let me = crate::euid();
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(me)).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| me.to_string())
}

/// `pg_isready [-h host] [-p port] [-U user] [-d db] [-t secs] [-q]`.
pub fn pg_isready(args: &[String]) -> R<i32> {
    let (opts, pos) = match client_opts(
        args,
        &[
            ("-h", "--host"),
            ("-p", "--port"),
            ("-U", "--username"),
            ("-d", "--dbname"),
            ("-t", "--timeout"),
        ],
        &["-q", "--quiet"],
    ) {
        Ok(x) => x,
        Err(f) => return fail_code(3, f.msg),
    };
    if !pos.is_empty() {
        return fail_code(
            3,
            format!(
                "pg_isready: too many command-line arguments (first is \"{}\")",
                pos[0]
            ),
        );
    }
    let host = opt(&opts, "-h").unwrap_or("127.0.0.1");
    let port: u16 = opt(&opts, "-p")
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let shown = if opt(&opts, "-h").is_some() {
        host.to_owned()
    } else {
        "/var/run/postgresql".into()
    };
    if ping(host, port) {
        if !quiet {
            println!("{shown}:{port} - accepting connections");
        }
        Ok(0)
    } else {
        if !quiet {
            println!("{shown}:{port} - no response");
        }
        Ok(2)
    }
}

/// `psql -U user -d db -c 'statement'`: the local socket, trust auth as in
/// the official image; the role and database must exist.
pub fn psql(args: &[String]) -> R<i32> {
    let (opts, pos) = client_opts(
        args,
        &[
            ("-U", "--username"),
            ("-d", "--dbname"),
            ("-c", "--command"),
            ("-h", "--host"),
            ("-p", "--port"),
            ("-v", "--set"),
        ],
        &[
            "-q",
            "--quiet",
            "-t",
            "--tuples-only",
            "-A",
            "--no-align",
            "-X",
            "--no-psqlrc",
            "-tA",
            "-At",
        ],
    )?;
    if let Some(p) = pos.first() {
        return fail_code(
            2,
            format!("stand-in psql: give the database with -d, not {p:?}"),
        );
    }
    let Some(command) = opt(&opts, "-c") else {
        return fail_code(
            2,
            "stand-in psql: only `psql -U <user> -d <db> -c <statement>` is supported (no interactive use, no -f)",
        );
    };
    let user = opt(&opts, "-U").map_or_else(os_user, str::to_owned);
    let db = opt(&opts, "-d").unwrap_or(&user).to_owned();
    if !ping("127.0.0.1", 5432) {
        return fail_code(
            2,
            "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory\n\tIs the server running locally and accepting connections on that socket?",
        );
    }
    let data = pgdata();
    let sf = state_file(&data);
    let st = sf.read()?;
    if let Err(e) = check_login(&st, &user, &db, None) {
        return fail_code(
            2,
            format!(
                "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: {e}"
            ),
        );
    }
    let available = available_extensions();
    for stmt in command.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let words: Vec<String> = stmt.split_whitespace().map(|w| w.to_owned()).collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let u: Vec<&str> = upper.iter().map(String::as_str).collect();
        match u.as_slice() {
            ["CREATE", "EXTENSION", rest @ ..] => {
                let (if_not, name_at) = if rest.starts_with(&["IF", "NOT", "EXISTS"]) {
                    (true, 5)
                } else {
                    (false, 2)
                };
                let Some(name) = words.get(name_at).map(|n| n.trim_matches('"').to_owned()) else {
                    return fail("ERROR:  syntax error at end of input");
                };
                if !available.contains(&name) {
                    return fail(format!(
                        "ERROR:  extension \"{name}\" is not available\nDETAIL:  Could not open extension control file \"/usr/share/postgresql/16/extension/{name}.control\": No such file or directory.\nHINT:  The extension must first be installed on the system where PostgreSQL is running."
                    ));
                }
                let created = sf.update(|st| {
                    let exts = state::arr(&mut st["databases"][db.as_str()], "extensions");
                    if exts.iter().any(|e| e == &json!(name)) {
                        return Ok(false);
                    }
                    exts.push(json!(name));
                    Ok(true)
                })?;
                if !created && !if_not {
                    return fail(format!("ERROR:  extension \"{name}\" already exists"));
                }
                if !created {
                    eprintln!("NOTICE:  extension \"{name}\" already exists, skipping");
                }
                println!("CREATE EXTENSION");
            }
            ["DROP", "EXTENSION", rest @ ..] => {
                let (if_exists, name_at) = if rest.starts_with(&["IF", "EXISTS"]) {
                    (true, 4)
                } else {
                    (false, 2)
                };
                let name = words
                    .get(name_at)
                    .map(|n| n.trim_matches('"').to_owned())
                    .unwrap_or_default();
                let dropped = sf.update(|st| {
                    let exts = state::arr(&mut st["databases"][db.as_str()], "extensions");
                    let before = exts.len();
                    exts.retain(|e| e != &json!(name));
                    Ok(exts.len() != before)
                })?;
                if !dropped && !if_exists {
                    return fail(format!("ERROR:  extension \"{name}\" does not exist"));
                }
                println!("DROP EXTENSION");
            }
            ["SELECT", "1"] => println!("1"),
            ["SELECT", "EXTNAME", "FROM", "PG_EXTENSION"] => {
                let st = sf.read()?;
                for e in st["databases"][db.as_str()]["extensions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    println!("{}", e.as_str().unwrap_or(""));
                }
            }
            _ => {
                return fail(format!(
                    "stand-in psql: unsupported statement {stmt:?} (CREATE EXTENSION, DROP EXTENSION, SELECT 1, SELECT extname FROM pg_extension)"
                ));
            }
        }
    }
    Ok(0)
}

/// `pg_dump [-U user] [-d db | db] [-f file] [-Fp]`: a plain SQL dump of
/// what the stand-in holds.
pub fn pg_dump(args: &[String]) -> R<i32> {
    let (opts, pos) = client_opts(
        args,
        &[
            ("-U", "--username"),
            ("-d", "--dbname"),
            ("-f", "--file"),
            ("-F", "--format"),
            ("-h", "--host"),
            ("-p", "--port"),
        ],
        &[
            "--no-owner",
            "-O",
            "--clean",
            "-c",
            "--if-exists",
            "--no-privileges",
            "-x",
        ],
    )?;
    if let Some(f) = opt(&opts, "-F")
        && !matches!(f, "p" | "plain")
    {
        return fail(format!(
            "stand-in pg_dump: only the plain format, not {f:?}"
        ));
    }
    let user = opt(&opts, "-U").map_or_else(os_user, str::to_owned);
    let db = opt(&opts, "-d")
        .or(pos.first().map(String::as_str))
        .unwrap_or(&user)
        .to_owned();
    if !ping("127.0.0.1", 5432) {
        return fail(
            "pg_dump: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory",
        );
    }
    let st = state_file(&pgdata()).read()?;
    if let Err(e) = check_login(&st, &user, &db, None) {
        return fail(format!("pg_dump: error: connection to server failed: {e}"));
    }
    let exts: Vec<String> = st["databases"][db.as_str()]["extensions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .filter(|e| e != "plpgsql")
        .collect();
    let mut out = String::from(
        "--\n-- PostgreSQL database dump (commonscloud stand-in)\n--\n\n-- Dumped from database version 16.0\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n",
    );
    for e in &exts {
        out.push_str(&format!(
            "CREATE EXTENSION IF NOT EXISTS {e} WITH SCHEMA public;\n"
        ));
    }
    out.push_str(&format!(
        "\n-- standin: {}\n\n--\n-- PostgreSQL database dump complete\n--\n",
        json!({"database": db, "owner": state::s(&st, "user"), "extensions": exts})
    ));
    match opt(&opts, "-f") {
        Some(f) => {
            std::fs::write(f, out).ctx(format!("pg_dump: could not open output file \"{f}\""))?
        }
        None => print!("{out}"),
    }
    Ok(0)
}
