//! The Redis stand-in (`redis:7-alpine`): the entrypoint, `redis-server`
//! with upstream's option checking, RESP on 6379 (PING, ECHO, GET, SET,
//! DEL, SAVE, INFO…), append-only persistence in /data, and `redis-cli`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{R, fail};

const VERSION: &str = "7.4.0";

/// `docker-entrypoint.sh redis-server …`: as root, owns /data for redis and
/// drops to it.
pub fn entrypoint(args: &[String]) -> R<i32> {
    let mut args = args.to_vec();
    if args
        .first()
        .is_none_or(|a| a.starts_with('-') || a.ends_with(".conf"))
    {
        args.insert(0, "redis-server".into());
    }
    // As upstream: `redis-server [config file] --protected-mode no [the
    // rest]`, unless the file sets protected-mode itself. So a `-` (config
    // on stdin) must come last to stay first-or-last.
    if args[0] == "redis-server" {
        let file = args
            .get(1)
            .filter(|f| Path::new(f.as_str()).is_file())
            .cloned();
        let file_sets_it = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|t| t.lines().any(|l| l.starts_with("protected-mode")));
        if !file_sets_it {
            let at = if file.is_some() { 2 } else { 1 };
            args.splice(at..at, ["--protected-mode".to_owned(), "no".to_owned()]);
        }
    }
    if args[0] == "redis-server" && crate::euid() == 0 {
        let ids = crate::user_ids("redis")?;
        crate::chown_r(Path::new("/data"), ids.0, ids.1)?;
        crate::exec(&args, Some(ids))?;
    }
    crate::exec(&args, None)?;
    Ok(1)
}

struct Config {
    port: u16,
    appendonly: bool,
    requirepass: Option<String>,
    dir: String,
}

fn config_error(line: usize, text: &str, why: &str) -> crate::Fail {
    crate::Fail {
        code: 1,
        msg: format!(
            "\n*** FATAL CONFIG FILE ERROR (Redis {VERSION}) ***\nReading the configuration file, at line {line}\n>>> '{text}'\n{why}"
        ),
    }
}

fn memory(v: &str) -> Option<u64> {
    let l = v.to_ascii_lowercase();
    let digits: String = l.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let mult = match &l[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    Some(n * mult)
}

/// Parses `[config file] [--name value…]… [-]` the way redis-server does:
/// unknown directives and bad values are fatal. A `-` as the first or the
/// last argument reads more configuration from standard input (after the
/// file, before the options: the last one of a name wins); anywhere else
/// it is taken for an option's value, as upstream.
fn parse_config(args: &[String]) -> R<Config> {
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut args = args.to_vec();
    let stdin_at = match args.len() {
        0 => None,
        n if args[n - 1] == "-" => Some(n - 1),
        _ if args[0] == "-" => Some(0),
        _ => None,
    };
    let stdin_text = match stdin_at {
        Some(i) => {
            args.remove(i);
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                crate::Fail {
                    code: 1,
                    msg: format!("Fatal error, can't read config from stdin: {e}"),
                }
            })?;
            Some(text)
        }
        None => None,
    };
    let args = args.as_slice();
    let mut rest = args;
    if let Some(first) = args.first()
        && !first.starts_with('-')
    {
        let text = std::fs::read_to_string(first).map_err(|e| crate::Fail {
            code: 1,
            msg: format!("Fatal error, can't open config file '{first}': {e}"),
        })?;
        for l in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            lines.push(l.split_whitespace().map(str::to_owned).collect());
        }
        rest = &args[1..];
    }
    for l in stdin_text
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        lines.push(l.split_whitespace().map(str::to_owned).collect());
    }
    for a in rest {
        if let Some(name) = a.strip_prefix("--") {
            lines.push(vec![name.to_owned()]);
        } else if let Some(last) = lines.last_mut() {
            last.push(a.clone());
        } else {
            return Err(config_error(
                1,
                a,
                "Bad directive or wrong number of arguments",
            ));
        }
    }
    let mut c = Config {
        port: 6379,
        appendonly: false,
        requirepass: None,
        dir: "/data".into(),
    };
    for (n, l) in lines.iter().enumerate() {
        let text = l.join(" ");
        let err = |why: &str| config_error(n + 1, &text, why);
        let name = l[0].to_ascii_lowercase();
        let vals = &l[1..];
        let one = || -> R<&str> {
            if vals.len() == 1 {
                Ok(vals[0].as_str())
            } else {
                Err(err("wrong number of arguments"))
            }
        };
        let yes_no = || -> R<bool> {
            match one()? {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => Err(err("argument must be 'yes' or 'no'")),
            }
        };
        match name.as_str() {
            "port" => c.port = one()?.parse().map_err(|_| err("Invalid port"))?,
            "appendonly" => c.appendonly = yes_no()?,
            "maxmemory" => {
                memory(one()?).ok_or_else(|| err("argument must be a memory value"))?;
            }
            "maxmemory-policy" => match one()? {
                "volatile-lru" | "allkeys-lru" | "volatile-lfu" | "allkeys-lfu"
                | "volatile-random" | "allkeys-random" | "volatile-ttl" | "noeviction" => {}
                _ => {
                    return Err(err(
                        "argument(s) must be one of the following: volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, volatile-random, allkeys-random, volatile-ttl, noeviction",
                    ));
                }
            },
            "requirepass" => c.requirepass = Some(one()?.to_owned()),
            "dir" => c.dir = one()?.to_owned(),
            "protected-mode" | "appendfsync-no-rewrite" => {
                yes_no()?;
            }
            "daemonize" => {
                if yes_no()? {
                    return Err(err(
                        "stand-in: daemonize yes is not supported in a container",
                    ));
                }
            }
            "appendfsync" => match one()? {
                "always" | "everysec" | "no" => {}
                _ => {
                    return Err(err(
                        "argument(s) must be one of the following: always, everysec, no",
                    ));
                }
            },
            "loglevel" => match one()? {
                "debug" | "verbose" | "notice" | "warning" | "nothing" => {}
                _ => {
                    return Err(err(
                        "argument(s) must be one of the following: debug, verbose, notice, warning, nothing",
                    ));
                }
            },
            "databases" | "timeout" | "tcp-keepalive" => {
                one()?
                    .parse::<u64>()
                    .map_err(|_| err("argument couldn't be parsed into an integer"))?;
            }
            "bind" | "save" => {}
            _ => return Err(err("Bad directive or wrong number of arguments")),
        }
    }
    Ok(c)
}

/// One RESP value.
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => out.extend(format!("+{s}\r\n").bytes()),
            Reply::Error(s) => out.extend(format!("-{s}\r\n").bytes()),
            Reply::Int(n) => out.extend(format!(":{n}\r\n").bytes()),
            Reply::Bulk(None) => out.extend(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend(format!("${}\r\n", b.len()).bytes());
                out.extend(b);
                out.extend(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend(format!("*{}\r\n", items.len()).bytes());
                for i in items {
                    i.encode(out);
                }
            }
        }
    }
}

/// Reads one command: a RESP array of bulk strings, or an inline line.
fn read_command(r: &mut impl BufRead) -> std::io::Result<Option<Vec<Vec<u8>>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end();
    let Some(n) = line.strip_prefix('*') else {
        return Ok(Some(
            line.split_whitespace()
                .map(|w| w.as_bytes().to_vec())
                .collect(),
        ));
    };
    let n: usize = n.parse().map_err(|_| std::io::Error::other("bad array"))?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let len: usize = h
            .trim_end()
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad bulk"))?;
        let mut b = vec![0u8; len + 2];
        r.read_exact(&mut b)?;
        b.truncate(len);
        args.push(b);
    }
    Ok(Some(args))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("Server closed the connection"));
    }
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Reply::Simple(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(rest.parse().unwrap_or(0)),
        "$" => {
            let len: i64 = rest.parse().unwrap_or(-1);
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut b = vec![0u8; len as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(len as usize);
                Reply::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap_or(0);
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(std::io::Error::other(format!("bad reply {line:?}"))),
    })
}

type Store = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// `redis-server [config] [--option value…]`.
pub fn server(args: &[String]) -> R<i32> {
    let c = parse_config(args)?;
    let dir = Path::new(&c.dir).to_path_buf();
    let aof = if c.appendonly {
        let d = dir.join("appendonlydir");
        std::fs::create_dir_all(&d).map_err(|e| crate::Fail {
            code: 1,
            msg: format!(
                "Can't open the append-only file directory {}: {e}",
                d.display()
            ),
        })?;
        let manifest = d.join("appendonly.aof.manifest");
        if !manifest.exists() {
            std::fs::write(
                &manifest,
                "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
            )?;
            std::fs::write(d.join("appendonly.aof.1.base.rdb"), b"REDIS0011")?;
        }
        Some(d.join("appendonly.aof.1.incr.aof"))
    } else {
        None
    };
    let store: Store = Arc::default();
    // Replays the append-only file.
    if let Some(aof) = &aof
        && let Ok(f) = std::fs::File::open(aof)
    {
        let mut r = BufReader::new(f);
        while let Ok(Some(cmd)) = read_command(&mut r) {
            apply(&store, &cmd, None, &dir);
        }
    }
    let listener = TcpListener::bind(("0.0.0.0", c.port)).map_err(|e| crate::Fail {
        code: 1,
        msg: format!(
            "Warning: Could not create server TCP listening socket *:{}: {e}",
            c.port
        ),
    })?;
    println!(
        "1:M * Redis version={VERSION} (commonscloud stand-in)\n1:M * Ready to accept connections tcp"
    );
    let pass = c.requirepass.clone();
    let aof = Arc::new(aof);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (store, pass, aof, dir) = (store.clone(), pass.clone(), aof.clone(), dir.clone());
        std::thread::spawn(move || {
            let _ = client(
                stream,
                &store,
                pass.as_deref(),
                aof.as_ref().as_deref(),
                &dir,
            );
        });
    }
    Ok(1)
}

fn client(
    stream: std::net::TcpStream,
    store: &Store,
    pass: Option<&str>,
    aof: Option<&Path>,
    dir: &Path,
) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut authed = pass.is_none();
    while let Some(cmd) = read_command(&mut r)? {
        if cmd.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
        let reply = if name == "AUTH" {
            let given = cmd.last().map(|p| String::from_utf8_lossy(p).into_owned());
            match pass {
                None => Reply::Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()),
                Some(p) if given.as_deref() == Some(p) => {
                    authed = true;
                    Reply::Simple("OK".into())
                }
                Some(_) => Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into()),
            }
        } else if !authed && name != "QUIT" && name != "HELLO" {
            Reply::Error("NOAUTH Authentication required.".into())
        } else if name == "QUIT" {
            let mut out = Vec::new();
            Reply::Simple("OK".into()).encode(&mut out);
            w.write_all(&out)?;
            return Ok(());
        } else {
            apply(store, &cmd, aof, dir)
        };
        let mut out = Vec::new();
        reply.encode(&mut out);
        w.write_all(&out)?;
    }
    Ok(())
}

fn apply(store: &Store, cmd: &[Vec<u8>], aof: Option<&Path>, dir: &Path) -> Reply {
    let name = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
    let args = &cmd[1..];
    let log = |cmd: &[Vec<u8>]| {
        if let Some(aof) = aof {
            let mut out = Vec::new();
            Reply::Array(cmd.iter().map(|a| Reply::Bulk(Some(a.clone()))).collect())
                .encode(&mut out);
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(aof)
                .and_then(|mut f| f.write_all(&out));
        }
    };
    let wrong = || {
        Reply::Error(format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_lowercase()
        ))
    };
    let mut kv = store.lock().expect("store");
    match name.as_str() {
        "PING" => match args {
            [] => Reply::Simple("PONG".into()),
            [m] => Reply::Bulk(Some(m.clone())),
            _ => wrong(),
        },
        "ECHO" => match args {
            [m] => Reply::Bulk(Some(m.clone())),
            _ => wrong(),
        },
        "GET" => match args {
            [k] => Reply::Bulk(kv.get(k).cloned()),
            _ => wrong(),
        },
        "SET" => match args {
            [k, v, ..] => {
                kv.insert(k.clone(), v.clone());
                log(cmd);
                Reply::Simple("OK".into())
            }
            _ => wrong(),
        },
        "DEL" if !args.is_empty() => {
            let n = args.iter().filter(|k| kv.remove(*k).is_some()).count();
            log(cmd);
            Reply::Int(n as i64)
        }
        "DBSIZE" => Reply::Int(kv.len() as i64),
        "SELECT" => Reply::Simple("OK".into()),
        "FLUSHALL" | "FLUSHDB" => {
            kv.clear();
            log(cmd);
            Reply::Simple("OK".into())
        }
        "SAVE" | "BGSAVE" => {
            let dump: serde_json::Map<String, serde_json::Value> = kv
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), serde_json::json!(String::from_utf8_lossy(v))))
                .collect();
            let mut body = b"REDIS0011".to_vec();
            body.extend(serde_json::Value::Object(dump).to_string().bytes());
            match std::fs::write(dir.join("dump.rdb"), body) {
                Ok(()) if name == "SAVE" => Reply::Simple("OK".into()),
                Ok(()) => Reply::Simple("Background saving started".into()),
                Err(e) => Reply::Error(format!("ERR {e}")),
            }
        }
        "INFO" => Reply::Bulk(Some(format!("# Server\r\nredis_version:{VERSION}\r\nredis_mode:standalone\r\n# Keyspace\r\ndb0:keys={},expires=0\r\n", kv.len()).into_bytes())),
        "CLIENT" | "CONFIG" | "HELLO" => Reply::Simple("OK".into()),
        "COMMAND" => Reply::Array(Vec::new()),
        _ => Reply::Error(format!("ERR unknown command '{}', with args beginning with: ", String::from_utf8_lossy(&cmd[0]))),
    }
}

/// PING over TCP (the Nextcloud stand-in checks its redis with it).
pub fn ping(host: &str, port: u16, password: Option<&str>) -> Result<(), String> {
    let s = crate::net::connect(host, port, Duration::from_secs(3))
        .map_err(|e| format!("Connection to {host}:{port} failed: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        w.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).as_bytes())
            .map_err(|e| e.to_string())?;
        if let Reply::Error(e) = read_reply(&mut r).map_err(|e| e.to_string())? {
            return Err(e);
        }
    }
    w.write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(|e| e.to_string())?;
    match read_reply(&mut r).map_err(|e| e.to_string())? {
        Reply::Simple(p) if p == "PONG" => Ok(()),
        Reply::Error(e) => Err(e),
        _ => Err("unexpected answer to PING".into()),
    }
}

fn print_reply(r: &Reply, out: &mut String) {
    match r {
        Reply::Simple(s) => out.push_str(&format!("{s}\n")),
        Reply::Error(s) => out.push_str(&format!("(error) {s}\n")),
        Reply::Int(n) => out.push_str(&format!("{n}\n")),
        Reply::Bulk(None) => out.push('\n'),
        Reply::Bulk(Some(b)) => out.push_str(&format!("{}\n", String::from_utf8_lossy(b))),
        Reply::Array(items) => items.iter().for_each(|i| print_reply(i, out)),
    }
}

/// `redis-cli [-h host] [-p port] [-a password] [-n db] command args…`.
pub fn cli(args: &[String]) -> R<i32> {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 6379u16;
    let mut pass: Option<String> = crate::env("REDISCLI_AUTH");
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "-h" => host = val,
            "-p" => {
                port = val.parse().map_err(|_| crate::Fail {
                    code: 1,
                    msg: format!("Invalid port {val}"),
                })?
            }
            "-a" => pass = Some(val),
            "-n" => {}
            "--no-auth-warning" | "--raw" => {
                i += 1;
                continue;
            }
            other => {
                return fail(format!(
                    "Unrecognized option or bad number of args for: '{other}'"
                ));
            }
        }
        i += 2;
    }
    let cmd = &args[i.min(args.len())..];
    if cmd.is_empty() {
        return fail("stand-in redis-cli: no interactive mode; give a command");
    }
    let s = crate::net::connect(&host, port, Duration::from_secs(5)).map_err(|e| crate::Fail {
        code: 1,
        msg: format!("Could not connect to Redis at {host}:{port}: {e}"),
    })?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    if let Some(p) = pass.filter(|p| !p.is_empty()) {
        w.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).as_bytes())?;
        if let Reply::Error(e) = read_reply(&mut r)? {
            println!("AUTH failed: {e}");
        }
    }
    let mut req = Vec::new();
    Reply::Array(
        cmd.iter()
            .map(|a| Reply::Bulk(Some(a.as_bytes().to_vec())))
            .collect(),
    )
    .encode(&mut req);
    w.write_all(&req)?;
    let reply = read_reply(&mut r)?;
    print_reply(&reply, &mut out);
    print!("{out}");
    Ok(if matches!(reply, Reply::Error(_)) {
        1
    } else {
        0
    })
}
