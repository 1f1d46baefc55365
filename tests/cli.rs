//! The CLI without a daemon: config errors, init, doctor.

mod common;

use std::process::Command;

use common::{Appliance, BIN, repo};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("COMMONSCLOUD_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn example_config_checks_and_redacts() {
    let example = repo().join("provision/appliance.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_secret = dir.path().join("a.toml");
    std::fs::write(
        &with_secret,
        text.replace(
            "password_file = \"/etc/commonscloud/secrets/smtp-password\"",
            "password = \"s3cret-smtp\"",
        ),
    )
    .unwrap();
    let out = run(&["--config", with_secret.to_str().unwrap(), "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("console = \"box.quimper.example.org\""),
        "{shown}"
    );
    assert!(shown.contains("password = \"<redacted>\""), "{shown}");
    assert!(!shown.contains("s3cret-smtp"));
    let out = run(&[
        "--config",
        with_secret.to_str().unwrap(),
        "config",
        "check",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["smtp"]["password"], "<redacted>");
    assert_eq!(v["directory"]["suffix"], "dc=quimper,dc=example,dc=org");
}

#[test]
fn config_env_var_is_honoured() {
    let example = repo().join("provision/appliance.example.toml");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("COMMONSCLOUD_CONFIG", &example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    let text = std::fs::read_to_string(repo().join("provision/appliance.example.toml")).unwrap();
    let cases = [
        (
            "admin_email =",
            "admin_mail =",
            "collective.admin_mail",
            "unknown field",
        ),
        ("port = 587", "port = \"587\"", "smtp.port", "invalid type"),
        (
            "slug = \"quimper\"\n",
            "",
            "collective.slug",
            "missing field",
        ),
    ];
    for (from, to, key, what) in cases {
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let out = run(&["--config", path.to_str().unwrap(), "config", "check"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().next().unwrap();
        assert!(line.contains(&format!("{}:", path.display())), "{line}");
        assert!(line.contains(&format!("key `{key}`")), "{line}");
        assert!(line.contains(what), "{line}");
        // file:LINE:COL
        let after = &line[line.find("appliance.toml:").unwrap() + "appliance.toml:".len()..];
        let n: usize = after
            .split(':')
            .next()
            .unwrap()
            .parse()
            .expect("a line number");
        assert!(n > 1, "{line}");
    }
}

#[test]
fn missing_config_says_how_to_make_one() {
    let out = run(&["--config", "/nonexistent/appliance.toml", "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("commonscloud init"));
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let app = Appliance::new();
    let before = std::fs::read_to_string(&app.config).unwrap();
    let args = [
        "init",
        "--non-interactive",
        "--collective",
        "Other",
        "--domain",
        "other.example.org",
        "--admin-email",
        "a@other.example.org",
        "--profile",
        "rpi5-8gb",
    ];
    let out = app.cli(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&app.config).unwrap(), before);

    let mut forced = args.to_vec();
    forced.push("--force");
    let out = app.cli(&forced);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&app.config).unwrap();
    assert!(after.contains("slug = \"other\""), "{after}");
    let bak = std::fs::read_to_string(format!("{}.bak", app.config.display())).unwrap();
    assert_eq!(bak, before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&app.config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn init_interactive_reads_answers_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("init")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Atelier Paysan\n\natelier.example.org\n\narm64-2gb\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = commonscloud::config::load(&path).unwrap();
    assert_eq!(c.collective.slug.as_str(), "atelier-paysan");
    assert_eq!(
        c.apps.enabled,
        vec![commonscloud::model::AppName::Nextcloud]
    );
}

#[test]
fn init_bad_flag_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    let out = run(&[
        "--config",
        path.to_str().unwrap(),
        "init",
        "--non-interactive",
        "--collective",
        "Q",
        "--slug",
        "Q!",
        "--domain",
        "q.example.org",
        "--admin-email",
        "a@q.example.org",
        "--profile",
        "rpi4-4gb",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slug"));
    assert!(!path.exists());
}

#[test]
fn doctor_fails_on_a_broken_config_and_reports_each_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    std::fs::write(&path, "[collective]\nname = 1\n").unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "doctor"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let config_line = text.lines().find(|l| l.contains(" config ")).unwrap();
    assert!(
        config_line.starts_with('✗') && config_line.contains("fix:"),
        "{text}"
    );
    for name in [
        "docker", "slapd", "disk", "memory", "clock", "ports", "daemon",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name}: {text}"
        );
    }
}

#[test]
fn doctor_exit_code_matches_its_worst_check() {
    let app = Appliance::new();
    let out = app.cli(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let worst = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| match c["level"].as_str().unwrap() {
            "ok" => 0,
            "warn" => 1,
            _ => 2,
        })
        .max()
        .unwrap();
    assert_eq!(out.status.code(), Some(worst));
    assert_eq!(v["exit_code"], worst);
    // With no daemon running, the daemon check warns with the fix.
    let daemon = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "daemon")
        .unwrap();
    assert_eq!(daemon["level"], "warn");
    // The box runs Docker and the test script installs slapd.
    for name in ["docker", "slapd", "config"] {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert_eq!(c["level"], "ok", "{c}");
    }
}

#[test]
fn doctor_sees_a_port_in_use() {
    let app = Appliance::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(
        &app.config,
        format!("{text}\n[front_door]\nhttp = \"127.0.0.1:{port}\"\nhttps = \"127.0.0.1:1\"\n"),
    )
    .unwrap();
    let out = app.cli(&["doctor"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.contains(" ports ")).unwrap();
    assert!(
        line.starts_with('✗') && line.contains(&format!("{port} (front_door.http)")),
        "{line}"
    );
}

#[test]
fn help_explains_each_command() {
    let out = run(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "serve",
        "status",
        "doctor",
        "config",
        "init",
        "demo",
        "bench",
        "user",
        "collective",
        "invite",
        "directory",
    ] {
        assert!(text.contains(cmd), "{cmd}: {text}");
    }
    let out = run(&["--version"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("commonscloud {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bench_directory_measures_both_paths_and_onboards_people() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "directory",
            "--seconds",
            "1",
            "--people",
            "25",
            "--people-for-logins",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &v["logins"];
    assert_eq!(l["baseline_runs_per_sec"].as_array().unwrap().len(), 6);
    assert!(l["baseline_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(l["daemon_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    let ratio = l["ratio"].as_f64().unwrap();
    let expected = l["daemon_per_sec"].as_f64().unwrap() / l["baseline_per_sec"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{v}");
    assert_eq!(v["onboarding"]["people"], 25);
    assert!(v["onboarding"]["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_proxy_measures_the_front_door_and_nginx_alike() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "proxy",
            "--seconds",
            "1",
            "--concurrency",
            "8",
            "--body-mib",
            "8",
            "--console-clients",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["front_door", "nginx"] {
        let f = &v[side];
        assert!(f["requests"].as_u64().unwrap() > 0, "{side}: {v:#}");
        assert_eq!(f["errors"], 0, "{side}: {v:#}");
        for k in [
            "requests_per_sec",
            "p50_us",
            "p99_us",
            "stream_mib_per_sec",
            "rss_peak_bytes",
        ] {
            assert!(f[k].as_f64().unwrap() > 0.0, "{side}.{k}: {v:#}");
        }
        assert!(f["p99_us"].as_u64() >= f["p50_us"].as_u64(), "{v:#}");
        // Twice through each proxy, every byte answered for.
        assert_eq!(f["stream_bytes"], 2 * 8 * 1024 * 1024, "{v:#}");
        assert!(f["tls"].as_str().unwrap().contains("TLS"), "{v:#}");
    }
    // nginx is measured as master and workers.
    assert!(v["nginx"]["processes"].as_u64().unwrap() >= 2, "{v:#}");
    // Then the console dashboard, signed in, through the front door.
    assert_eq!(v["console"]["clients"], 3, "{v:#}");
    assert!(
        v["console"]["dashboard"]["requests"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    let rows = v["rows"].as_array().unwrap();
    let row = |m: &str| rows.iter().find(|r| r["metric"] == m).unwrap();
    assert_eq!(
        row("small GETs")["front_door"],
        v["front_door"]["requests_per_sec"]
    );
    assert_eq!(
        row("streamed POST")["nginx"],
        v["nginx"]["stream_mib_per_sec"]
    );
    for r in rows {
        let (a, b) = (
            r["front_door"].as_f64().unwrap(),
            r["nginx"].as_f64().unwrap(),
        );
        // CPU time is read in clock ticks: a short run may see none.
        let expected = if b > 0.0 { a / b } else { 0.0 };
        assert!(
            (r["ratio"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{r}"
        );
    }
    for m in [
        "small GETs",
        "latency p99",
        "streamed POST",
        "peak RSS under load",
    ] {
        let r = row(m);
        assert!(r["met"].is_boolean(), "{m} has a target: {v:#}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{m}: {v:#}");
    }
}

#[test]
fn plan_lists_every_step_with_secrets_redacted_and_refuses_what_does_not_fit() {
    let app = Appliance::new();
    let prefix = app.prefix();
    app.set_apps(&["nextcloud", "collabora"], "");
    let out = app.cli(&["plan"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("create network {prefix} 172.30.64.0/24")),
        "{stdout}"
    );
    assert!(
        stdout.contains("occ ldap:set-config s01 ldapAgentPassword '<secret ldap-nextcloud>'"),
        "{stdout}"
    );
    assert!(stdout.contains("ldapConfigurationActive 1"), "{stdout}");
    let out = app.cli(&["plan", "--json"]);
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        steps
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["step"].is_string())
    );
    // Without apps there is nothing to do, and Docker is left alone.
    app.set_apps(&[], "");
    let out = app.cli(&["plan"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every app on a 4 GB board does not fit: refused, saying how to go on.
    app.set_apps(&["nextcloud", "collabora", "discourse"], "");
    let out = app.cli(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("force = true") && err.contains("rpi4-4gb"),
        "{err}"
    );
}
