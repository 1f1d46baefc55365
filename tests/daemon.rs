//! `serve` end to end: the real binary, a temp config, its socket and signals.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Appliance, component, directory_ok, get, wait_status};
use nix::sys::signal::Signal;

#[test]
fn serves_status_health_and_metrics_over_its_socket() {
    let app = Appliance::new();
    let _daemon = app.serve();
    let mode = std::fs::metadata(app.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode");

    let out = app.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["running"], true);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["collective"], "quimper");
    assert_eq!(s["appliance_id"].as_str().unwrap().len(), 32);
    let names: Vec<&str> = s["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["daemon", "config", "store", "docker"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let store = component(&s, "store");
    assert_eq!(store["state"], "ok");

    let out = app.cli(&["status"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("collective quimper"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("store") && l.contains("ok")),
        "{table}"
    );

    let (code, body) = get(&app.socket(), "/healthz");
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (code, body) = get(&app.socket(), "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("commonscloud_uptime_seconds"), "{body}");
    assert!(
        body.contains("commonscloud_build_info{version=\""),
        "{body}"
    );
    assert!(
        body.contains("commonscloud_api_requests_total{path=\"/v1/status\",status=\"200\"} 2"),
        "{body}"
    );
    let (code, body) = get(&app.socket(), "/v2/nothing");
    assert_eq!(code, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    let good = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(
        &app.config,
        good.replace("slug = \"quimper\"", "slug = \"quimper\"\nslgu = 1"),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("RELOADING=1", Duration::from_secs(10));
    daemon.wait_for("READY=1", Duration::from_secs(10));

    let s = app.status();
    assert_eq!(s["collective"], "quimper", "old config still in force");
    assert_eq!(s["last_reload"]["applied"], false);
    let why = s["last_reload"]["message"].as_str().unwrap();
    assert!(
        why.contains("collective.slgu") && why.contains(":8:"),
        "{why}"
    );
    let config = component(&s, "config");
    assert_eq!(config["state"], "degraded");
    assert!(
        daemon.log_text().contains("config reload refused"),
        "{}",
        daemon.log_text()
    );
    let (_, metrics) = get(&app.socket(), "/metrics");
    assert!(
        metrics.contains("commonscloud_config_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );

    // A valid change applies.
    std::fs::write(
        &app.config,
        good.replace("Les Communs de Quimper", "Communs de Quimper"),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("RELOADING=1", Duration::from_secs(10));
    daemon.wait_for("READY=1", Duration::from_secs(10));
    let s = app.status();
    assert_eq!(s["last_reload"]["applied"], true);
    let config = component(&s, "config");
    assert_eq!(config["state"], "ok");
}

#[test]
fn sigterm_stops_within_five_seconds_and_tells_systemd() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    let took = start.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running after 5 s:\n{}", daemon.log_text()));
    assert!(status.success(), "exit {status:?}");
    assert!(took < Duration::from_secs(5));
    daemon.wait_for("STOPPING=1", Duration::from_secs(1));
    assert!(!app.socket().exists(), "socket removed on exit");

    // With the daemon gone, status says so and how to start it.
    let out = app.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("systemctl start commonscloud"),
        "{err}"
    );
    let out = app.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false);
}

#[test]
fn sigint_stops_too() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    daemon.signal(Signal::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success());
    assert!(daemon.log_text().contains("SIGINT received"));
}

#[test]
fn second_instance_on_the_same_state_dir_is_refused() {
    let app = Appliance::new();
    let daemon = app.serve();
    let out = app.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs"), "{err}");
    assert!(err.contains(&format!("pid {}", daemon.child.id())), "{err}");
    // The first one still answers.
    assert_eq!(get(&app.socket(), "/healthz").0, 200);
}

#[test]
fn watchdog_is_fed_when_systemd_asks_for_it() {
    let app = Appliance::new();
    let mut daemon = app.serve_with(&[("WATCHDOG_USEC", "200000")]);
    daemon.wait_for("WATCHDOG=1", Duration::from_secs(5));
    daemon.wait_for("WATCHDOG=1", Duration::from_secs(5));
}

#[test]
fn restart_keeps_the_appliance_identity_and_audits() {
    let app = Appliance::new();
    let id = {
        let mut d = app.serve();
        let s = app.status();
        d.signal(Signal::SIGTERM);
        d.wait_exit(Duration::from_secs(5)).expect("stopped");
        s["appliance_id"].as_str().unwrap().to_owned()
    };
    let _d = app.serve();
    let s = app.status();
    assert_eq!(s["appliance_id"], id.as_str());
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    let actions: Vec<String> = store
        .recent_audit(10)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        // Other tasks audit too (the front door's CA, made once).
        .filter(|a| a == "start" || a == "stop")
        .collect();
    assert_eq!(actions[..3], ["start", "stop", "start"]);
}

#[test]
fn a_database_from_the_future_stops_serve_with_a_clear_error() {
    let app = Appliance::new();
    let state = app.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("state.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        c.execute_batch("CREATE TABLE t (x)").unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let out = app.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn events_from_other_crates_reach_the_log() {
    let app = Appliance::new();
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(&app.config, format!("{text}\n[log]\nlevel = \"trace\"\n")).unwrap();
    let mut daemon = app.serve();
    // The docker probe runs at start; wait for its verdict in our own log.
    let until = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("task=docker-probe") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(5)).expect("stopped");
    let log = daemon.log_text();
    let targets: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|t| t.trim_end_matches(':').split("::").next().unwrap())
        .collect();
    for crate_name in ["commonscloud", "rusqlite_migration", "bollard"] {
        assert!(
            targets.contains(crate_name),
            "no {crate_name} in {targets:?}\n{log}"
        );
    }
}

/// Under systemd, stderr is connected to the journal (`JOURNAL_STREAM` names
/// it) and records go to `/run/systemd/journal/socket` as native-protocol
/// datagrams. The daemon runs in a private mount namespace whose
/// `/run/systemd/journal` is this test's directory, so the test is the journal.
#[test]
fn under_systemd_logs_go_to_journald_with_fields() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;
    let app = Appliance::new();
    let journal_dir = app.dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    let stderr_path = app.dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
             mount --bind \"$0\" /run/systemd/journal && exec \"$1\" --config \"$2\" serve",
        )
        .arg(&journal_dir)
        .arg(common::BIN)
        .arg(&app.config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .stderr(stderr)
        .spawn()
        .expect("unshare (util-linux)");
    journal
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut records: Vec<Vec<(String, String)>> = Vec::new();
    let has =
        |r: &[(String, String)], k: &str, v: &str| r.iter().any(|(a, b)| a == k && b.contains(v));
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until both the start line and a record tagged with its task arrived.
    while !(records
        .iter()
        .any(|r| has(r, "MESSAGE", "serving collective quimper"))
        && records.iter().any(|r| has(r, "TASK", "docker-probe")))
    {
        match journal.recv(&mut buf) {
            Ok(n) if Instant::now() < deadline => records.push(journal_fields(&buf[..n])),
            other => {
                let _ = child.kill();
                panic!(
                    "journal incomplete ({other:?}); got {records:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let started = records
        .iter()
        .find(|r| has(r, "MESSAGE", "serving collective quimper"))
        .unwrap();
    for (k, v) in [
        ("PRIORITY", "5"), // systemd-journal-logger maps info to notice
        ("SYSLOG_IDENTIFIER", "commonscloud"),
        ("TARGET", "commonscloud::daemon"),
        ("COMMONSCLOUD_VERSION", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(
            started.iter().any(|(a, b)| a == k && b == v),
            "{k}={v} not in {started:?}"
        );
    }
    // Nothing went to stderr: the journal had it all.
    assert_eq!(std::fs::read_to_string(&stderr_path).unwrap(), "");
}

/// Parses one datagram of the journal's native protocol: `KEY=value\n`, or
/// `KEY\n` + little-endian u64 length + value + `\n` for values that may hold
/// newlines.
fn journal_fields(mut d: &[u8]) -> Vec<(String, String)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    while let Some(nl) = d.iter().position(|&b| b == b'\n') {
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((text(&line[..eq]), text(&line[eq + 1..])));
            d = &d[nl + 1..];
        } else {
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.push((text(line), text(&rest[8..8 + len])));
            d = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

/// Binds in a loop on its own thread until told to stop. Returns the stop
/// flag, the count of good binds so far, and the thread (which yields the
/// failures).
struct BindStream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl BindStream {
    fn start(url: String, dn: String, pw: String) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut failed = Vec::new();
                while !flag.load(Relaxed) {
                    match commonscloud::directory::ldap::check_password(&url, &dn, &pw).await {
                        Ok(true) => {
                            count.fetch_add(1, Relaxed);
                        }
                        Ok(false) => failed.push("wrong credentials".to_owned()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                failed
            })
        });
        BindStream { stop, ok, thread }
    }

    fn count(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more binds have succeeded.
    fn wait_more(&self, n: u64) {
        let target = self.count() + n;
        let until = Instant::now() + Duration::from_secs(30);
        while self.count() < target {
            assert!(Instant::now() < until, "binds stalled at {}", self.count());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn restarting_the_daemon_never_interrupts_binds() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    let s = wait_status(&app, "directory ok", directory_ok);
    let pid = app.slapd_pid().expect("slapd runs");
    assert!(
        component(&s, "directory")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {pid}"))
    );
    let suffix = "dc=quimper,dc=example,dc=org";
    let secret = std::fs::read_to_string(app.dir.path().join("secrets/ldap-nextcloud")).unwrap();
    let binds = BindStream::start(
        app.ldap_url(),
        format!("cn=nextcloud,ou=system,{suffix}"),
        secret,
    );
    binds.wait_more(3);

    daemon.signal(Signal::SIGTERM);
    daemon
        .wait_exit(Duration::from_secs(5))
        .expect("daemon stopped");
    assert!(
        daemon.log_text().contains("keeps serving"),
        "{}",
        daemon.log_text()
    );
    // With no daemon at all, binds go on.
    binds.wait_more(5);
    assert_eq!(app.slapd_pid(), Some(pid), "slapd outlives the daemon");

    let _daemon = app.serve();
    let s = wait_status(&app, "directory adopted", |s| {
        directory_ok(s)
            && component(s, "directory")["detail"]
                .as_str()
                .unwrap()
                .contains("adopted")
    });
    assert!(
        component(&s, "directory")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {pid}"))
    );
    binds.wait_more(3);

    let failures = binds.finish();
    assert!(
        failures.is_empty(),
        "{} failed binds: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn a_killed_slapd_is_started_again() {
    let app = Appliance::new();
    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let first = app.slapd_pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let s = wait_status(&app, "slapd restarted", |s| {
        directory_ok(s)
            && component(s, "directory")["detail"]
                .as_str()
                .unwrap()
                .contains("restarted 1×")
    });
    let second = app.slapd_pid().unwrap();
    assert_ne!(first, second);
    assert!(
        component(&s, "directory")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {second}"))
    );
    let secret =
        std::fs::read_to_string(app.dir.path().join("secrets/ldap-discourse-sso")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(commonscloud::directory::ldap::check_password(
        &app.ldap_url(),
        "cn=discourse-sso,ou=system,dc=quimper,dc=example,dc=org",
        &secret,
    ));
    assert!(ok.unwrap(), "binds work again");
}

/// An appliance upgraded from a release with other slapd settings gets this
/// release's, applied over ldapi to the running (adopted) slapd.
#[test]
fn settings_of_an_older_release_are_brought_up_to_date() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(5)).expect("stopped");

    // What an older release might have left: looser ACLs, another record.
    let config = commonscloud::config::load(&app.config).unwrap();
    let paths = commonscloud::directory::slapd::Paths::new(&config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acl_of = |paths: &commonscloud::directory::slapd::Paths| {
        rt.block_on(async {
            let mut root = commonscloud::directory::ldap::connect_root(paths)
                .await
                .unwrap();
            let e = commonscloud::directory::ldap::read(
                &mut root,
                "olcDatabase={1}mdb,cn=config",
                &["olcAccess"],
            )
            .await
            .unwrap()
            .unwrap();
            e.attrs["olcAccess"].clone()
        })
    };
    rt.block_on(async {
        let old = [commonscloud::directory::tree::ConfigAttr {
            dn: "olcDatabase={1}mdb,cn=config".into(),
            attr: "olcAccess",
            values: vec!["{0}to * by * read".into()],
        }];
        commonscloud::directory::ldap::apply_config(&paths, &old)
            .await
            .unwrap();
    });
    assert_eq!(acl_of(&paths).len(), 1);
    {
        let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
        store
            .set_meta("directory_config", "written by 0.0.9")
            .unwrap();
    }

    let _daemon = app.serve();
    wait_status(&app, "directory adopted", |s| {
        directory_ok(s)
            && component(s, "directory")["detail"]
                .as_str()
                .unwrap()
                .contains("adopted")
    });
    let acls = acl_of(&paths);
    // Every rule, in the code's order (slapd keeps them as they arrive).
    let want: Vec<String> = commonscloud::directory::tree::managed_config(config.suffix().as_str())
        .into_iter()
        .find(|c| c.attr == "olcAccess")
        .unwrap()
        .values;
    assert_eq!(acls, want);
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    assert!(
        store
            .recent_audit(10)
            .unwrap()
            .iter()
            .any(|e| e.action == "directory-config")
    );
    assert_eq!(
        store.meta("directory_config").unwrap().as_deref(),
        Some(commonscloud::directory::tree::managed_config_text(config.suffix().as_str()).as_str())
    );
}

#[test]
fn directory_check_passes_and_catches_a_broken_account() {
    let app = Appliance::new();
    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let out = app.cli(&["directory", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "slapd",
        "schema",
        "modules",
        "overlays",
        "acls",
        "tree",
        "accounts",
        "password acl",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with('✓') && l.contains(name)),
            "{name}: {text}"
        );
    }
    // A service account whose secret no longer matches is caught.
    std::fs::write(
        app.dir.path().join("secrets/ldap-discourse-sso"),
        "not the password",
    )
    .unwrap();
    let out = app.cli(&["directory", "check", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let accounts = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "accounts")
        .unwrap();
    assert_eq!(accounts["level"], "fail");
    assert!(
        accounts["message"]
            .as_str()
            .unwrap()
            .contains("discourse-sso"),
        "{accounts}"
    );
}

#[test]
fn directory_export_writes_private_ldif() {
    let app = Appliance::new();
    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let file = app.dir.path().join("export.ldif");
    let out = app.cli(&["directory", "export", "--output", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ldif = std::fs::read_to_string(&file).unwrap();
    for dn in [
        "dn: dc=quimper,dc=example,dc=org",
        "dn: ou=people,dc=quimper,dc=example,dc=org",
        "dn: cn=members,ou=groups,ou=quimper,ou=collectives,dc=quimper,dc=example,dc=org",
        "dn: cn=nextcloud,ou=system,dc=quimper,dc=example,dc=org",
    ] {
        assert!(ldif.lines().any(|l| l == dn), "{dn}");
    }
    assert!(
        ldif.contains("userPassword:: "),
        "service account hashes are exported"
    );
}

#[test]
fn a_busy_directory_port_is_reported_and_retried() {
    let app = Appliance::new();
    let port: u16 = app.ldap_url().rsplit(':').next().unwrap().parse().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let _daemon = app.serve();
    let s = wait_status(&app, "directory down", |s| {
        component(s, "directory")["state"] == "down"
    });
    let detail = component(&s, "directory")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains(&format!("port {port}")) && detail.contains("directory.listen"),
        "{detail}"
    );
    assert_eq!(
        component(&s, "daemon")["state"],
        "ok",
        "the daemon itself keeps serving"
    );
    // Once the port is free, the retry brings slapd up.
    drop(squatter);
    wait_status(&app, "directory ok", directory_ok);
}

#[test]
fn data_of_an_older_release_is_migrated_and_kept() {
    let app = Appliance::new();
    let mut daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(5)).expect("stopped");

    // An older release's groups had no description, and it kept no tree
    // version; a person it made must survive the upgrade.
    let config = commonscloud::config::load(&app.config).unwrap();
    let paths = commonscloud::directory::slapd::Paths::new(&config);
    let tree = commonscloud::directory::tree::Tree::new(config.suffix().as_str());
    let slug = config.collective.slug.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let description = |cn: &str| {
        rt.block_on(async {
            let mut root = commonscloud::directory::ldap::connect_root(&paths)
                .await
                .unwrap();
            commonscloud::directory::ldap::read(&mut root, &tree.group(&slug, cn), &["description"])
                .await
                .unwrap()
                .unwrap()
                .attrs
                .get("description")
                .cloned()
        })
    };
    rt.block_on(async {
        let mut root = commonscloud::directory::ldap::connect_root(&paths)
            .await
            .unwrap();
        for cn in ["members", "admins"] {
            root.modify(
                &tree.group(&slug, cn),
                vec![ldap3::Mod::Delete("description", Default::default())],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        }
        commonscloud::directory::people::create_person(
            &mut root,
            &tree,
            &commonscloud::directory::people::NewPerson {
                uid: "ana",
                display_name: "Ana",
                mail: "ana@example.org",
                language: "en",
                collective_dn: &tree.collective(&slug),
                home_node: "box",
            },
        )
        .await
        .unwrap();
    });
    assert_eq!(description("members"), None);
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    store
        .connection()
        .execute("DELETE FROM meta WHERE key = 'directory_tree_version'", [])
        .unwrap();
    drop(store);

    let _daemon = app.serve();
    wait_status(&app, "directory ok", directory_ok);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while description("admins").is_none() {
        assert!(std::time::Instant::now() < until, "never migrated");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        description("members"),
        Some(vec!["quimper-members".to_owned()])
    );
    assert_eq!(
        description("admins"),
        Some(vec!["quimper-admins".to_owned()])
    );
    let person = rt.block_on(async {
        let mut root = commonscloud::directory::ldap::connect_root(&paths)
            .await
            .unwrap();
        commonscloud::directory::people::person(&mut root, &tree, "ana")
            .await
            .unwrap()
    });
    assert_eq!(person.map(|p| p.mail), Some("ana@example.org".to_owned()));
    let store = commonscloud::store::Store::open(&app.dir.path().join("state")).unwrap();
    assert_eq!(
        store.meta("directory_tree_version").unwrap().as_deref(),
        Some("1")
    );
}
