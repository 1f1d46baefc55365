use super::*;

const MINIMAL: &str = r#"
[collective]
name = "Quimper"
slug = "quimper"
domain = "quimper.example.org"
admin_email = "admin@quimper.example.org"

[hardware]
profile = "rpi4-4gb"
"#;

fn err(text: &str) -> Located {
    match parse(text, Path::new("/etc/commonscloud/appliance.toml")) {
        Err(ConfigError::Invalid(l)) => *l,
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../provision/appliance.example.toml");
    let c = parse(text, Path::new("appliance.example.toml")).unwrap();
    assert_eq!(c.collective.slug.as_str(), "quimper");
    assert_eq!(c.console_host().as_str(), "box.quimper.example.org");
    assert_eq!(c.suffix().as_str(), "dc=quimper,dc=example,dc=org");
}

/// A commented-out table of the example config, from its `header` line to
/// the first uncommented one, uncommented (its `# #` comments dropped).
fn example_table(header: &str) -> String {
    let text = include_str!("../../provision/appliance.example.toml");
    let start = text.find(header).expect("the documented table");
    text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| !l.starts_with("# #"))
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect()
}

#[test]
fn example_acme_table_is_valid_once_uncommented() {
    let c = parse(
        &format!("{MINIMAL}\n{}", example_table("# [front_door.acme]")),
        Path::new("a.toml"),
    )
    .unwrap();
    let acme = c.front_door.acme.expect("uncommented");
    assert_eq!(
        acme.directory.as_str(),
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(acme.renew_before_days.days(), 30);
}

#[test]
fn example_limits_table_is_valid_once_uncommented_and_says_the_defaults() {
    let c = parse(
        &format!("{MINIMAL}\n{}", example_table("# [front_door.limits]")),
        Path::new("a.toml"),
    )
    .unwrap();
    let defaults = FrontDoorLimits {
        connections: c.front_door.limits.connections,
        ..FrontDoorLimits::default()
    };
    assert_eq!(c.front_door.limits, defaults);
    assert_eq!(
        c.front_door.limits.connections.map(Count::get),
        Some(FrontDoorLimits::CONNECTIONS as usize)
    );
}

#[test]
fn defaults_are_filled() {
    let c = parse(MINIMAL, Path::new("a.toml")).unwrap();
    assert_eq!(
        c.hostnames.cloud.unwrap().as_str(),
        "cloud.quimper.example.org"
    );
    assert_eq!(
        c.hostnames.office.unwrap().as_str(),
        "office.quimper.example.org"
    );
    assert_eq!(
        c.hostnames.forum.unwrap().as_str(),
        "forum.quimper.example.org"
    );
    assert_eq!(c.apps.enabled, AppName::ALL.to_vec());
    assert_eq!(c.paths.state_dir.as_os_str(), "/var/lib/commonscloud");
    assert_eq!(c.log.level, LogLevel::Info);
    assert!(c.smtp.is_none() && c.alliance.is_none());
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = MINIMAL.replace("slug =", "slgu =");
    let e = err(&text);
    assert_eq!(e.line, 4, "{e}");
    assert_eq!(e.key, "collective.slgu", "{e}");
    assert!(e.message.contains("unknown field `slgu`"), "{e}");
    assert!(e.message.contains("slug"), "lists the allowed keys: {e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/commonscloud/appliance.toml:4:"),
        "{shown}"
    );
}

#[test]
fn unknown_table_is_refused() {
    let e = err(&format!("{MINIMAL}\n[frontdoor]\nhttp = \"0.0.0.0:80\"\n"));
    assert_eq!(e.key, "frontdoor", "{e}");
    assert_eq!(e.line, 11, "{e}");
    assert!(e.message.contains("front_door"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let text = format!(
        "{MINIMAL}\n[smtp]\nhost = \"smtp.example.org\"\nport = \"submission\"\nfrom = \"a@example.org\"\n"
    );
    let e = err(&text);
    assert_eq!(e.key, "smtp.port", "{e}");
    assert_eq!(e.line, 13, "{e}");
    assert!(
        e.message.contains("u16") || e.message.contains("integer"),
        "{e}"
    );
}

#[test]
fn missing_required_value_names_key_and_line() {
    let text = MINIMAL.replace("domain = \"quimper.example.org\"\n", "");
    let e = err(&text);
    assert_eq!(e.key, "collective.domain", "{e}");
    assert_eq!(e.line, 2, "the [collective] table: {e}");
    assert!(e.message.contains("missing field `domain`"), "{e}");
}

#[test]
fn missing_table_names_it() {
    let text = MINIMAL.replace("[hardware]\nprofile = \"rpi4-4gb\"\n", "");
    let e = err(&text);
    assert_eq!(e.key, "hardware", "{e}");
}

#[test]
fn invalid_values_say_what_is_allowed() {
    let cases = [
        (
            "slug = \"quimper\"",
            "slug = \"Quimper\"",
            "collective.slug",
            "lowercase",
        ),
        (
            "profile = \"rpi4-4gb\"",
            "profile = \"pi4\"",
            "hardware.profile",
            "rpi5-8gb",
        ),
        (
            "admin_email = \"admin@quimper.example.org\"",
            "admin_email = \"nobody\"",
            "collective.admin_email",
            "local@domain",
        ),
    ];
    for (from, to, key, allowed) in cases {
        let e = err(&MINIMAL.replace(from, to));
        assert_eq!(e.key, key, "{e}");
        assert!(e.line > 0, "{e}");
        assert!(e.message.contains(allowed), "{e}");
    }
    let e = err(&format!(
        "{MINIMAL}\n[apps]\nenabled = [\"nextcloud\", \"wordpress\"]\n"
    ));
    assert_eq!(e.key, "apps.enabled[1]", "{e}");
    assert!(e.message.contains("discourse"), "{e}");
    let e = err(&format!("{MINIMAL}\n[log]\nlevel = \"loud\"\n"));
    assert_eq!((e.key.as_str(), e.line), ("log.level", 12), "{e}");
    let e = err(&format!("{MINIMAL}\n[paths]\nstate_dir = \"var/lib\"\n"));
    assert!(e.message.contains("absolute"), "{e}");
    let e = err(&format!("{MINIMAL}\n[front_door]\nhttps = \"443\"\n"));
    assert!(e.message.contains("ip:port"), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = err(&format!("{MINIMAL}\n[smtp\n"));
    assert_eq!(e.line, 11, "{e}");
    assert!(e.key.is_empty());
}

#[test]
fn two_ways_to_give_a_password_are_refused() {
    let text = format!(
        "{MINIMAL}\n[smtp]\nhost = \"smtp.example.org\"\nfrom = \"a@example.org\"\npassword = \"hunter2\"\npassword_file = \"/etc/commonscloud/secrets/smtp\"\n"
    );
    let e = err(&text);
    assert_eq!((e.key.as_str(), e.line), ("smtp.password_file", 15), "{e}");
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn secrets_are_redacted_everywhere() {
    let text = format!(
        "{MINIMAL}\n[smtp]\nhost = \"smtp.example.org\"\nfrom = \"a@example.org\"\npassword = \"hunter2\"\n"
    );
    let c = parse(&text, Path::new("a.toml")).unwrap();
    assert_eq!(
        c.smtp.as_ref().unwrap().password.as_ref().unwrap().expose(),
        "hunter2"
    );
    let shown = c.to_redacted_toml();
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
}

#[test]
fn effective_config_reparses_to_the_same_values() {
    let c = parse(
        include_str!("../../provision/appliance.example.toml"),
        Path::new("x"),
    )
    .unwrap();
    let again = parse(&c.to_redacted_toml(), Path::new("effective")).unwrap();
    assert_eq!(c, again);
}

#[test]
fn ports_include_every_listener() {
    let c = parse(MINIMAL, Path::new("a.toml")).unwrap();
    let ports: Vec<u16> = c.ports().into_iter().map(|(_, p)| p).collect();
    assert_eq!(ports, vec![80, 443, 3389]);
}

#[test]
fn acme_is_optional_and_its_contact_defaults_to_the_admin() {
    let c = parse(MINIMAL, Path::new("a.toml")).unwrap();
    assert!(c.front_door.acme.is_none());
    let text = format!(
        "{MINIMAL}\n[front_door.acme]\ndirectory = \"https://acme-v02.api.letsencrypt.org/directory\"\n"
    );
    let c = parse(&text, Path::new("a.toml")).unwrap();
    let acme = c.front_door.acme.as_ref().unwrap();
    assert_eq!(
        acme.contact.as_ref().map(|e| e.as_str()),
        Some("admin@quimper.example.org")
    );
    assert_eq!(acme.renew_before_days.days(), 30);
    assert_eq!(acme.ca_file, None);
    // The effective config says the same when read again.
    let again = parse(&c.to_redacted_toml(), Path::new("b.toml")).unwrap();
    assert_eq!(again, c);

    let text = format!(
        "{MINIMAL}\n[front_door.acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\ncontact = \"certs@quimper.example.org\"\nca_file = \"/etc/commonscloud/pebble.pem\"\nrenew_before_days = 3650\n"
    );
    let c = parse(&text, Path::new("a.toml")).unwrap();
    let acme = c.front_door.acme.unwrap();
    assert_eq!(acme.contact.unwrap().as_str(), "certs@quimper.example.org");
    assert_eq!(acme.renew_before_days.days(), 3650);
    assert_eq!(
        acme.ca_file.as_deref(),
        Some(Path::new("/etc/commonscloud/pebble.pem"))
    );
}

#[test]
fn acme_values_say_what_is_allowed() {
    let acme = |body: &str| err(&format!("{MINIMAL}\n[front_door.acme]\n{body}\n"));
    let e = acme("directory = \"http://acme.example.org/dir\"");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("front_door.acme.directory", 12),
        "{e}"
    );
    assert!(e.message.contains("https://"), "{e}");
    let e = acme("directory = \"https://\"");
    assert_eq!(e.key, "front_door.acme.directory", "{e}");
    let e = acme("directory = \"https://a.example/d\"\nrenew_before_days = 0");
    assert_eq!(e.key, "front_door.acme.renew_before_days", "{e}");
    assert!(e.message.contains("1 to 3650"), "{e}");
    let e = acme("directory = \"https://a.example/d\"\nrenew_before_days = 99999");
    assert!(e.message.contains("1 to 3650"), "{e}");
    let e = acme("directory = \"https://a.example/d\"\nca_file = \"pebble.pem\"");
    assert_eq!(e.key, "front_door.acme.ca_file", "{e}");
    assert!(e.message.contains("absolute"), "{e}");
    let e = acme("directory = \"https://a.example/d\"\ncontact = \"nobody\"");
    assert_eq!(e.key, "front_door.acme.contact", "{e}");
    let e = acme("directory = \"https://a.example/d\"\nemail = \"a@b.org\"");
    assert_eq!(e.key, "front_door.acme.email", "{e}");
    assert!(e.message.contains("contact"), "lists the allowed keys: {e}");
    let e = acme("contact = \"a@b.org\"");
    assert_eq!(e.key, "front_door.acme.directory", "{e}");
    assert!(e.message.contains("missing field"), "{e}");
}

#[test]
fn front_door_limits_default_and_say_what_is_allowed() {
    let c = parse(MINIMAL, Path::new("a.toml")).unwrap();
    let l = c.front_door.limits;
    assert_eq!(l, FrontDoorLimits::default());
    assert_eq!(l.connections, None);
    assert_eq!(l.connections_per_address.get(), 256);
    assert_eq!(l.body_idle_secs.duration().as_secs(), 60);
    let text = format!(
        "{MINIMAL}\n[front_door.limits]\nconnections = 100\nconnections_per_address = 10\nwebsocket_idle_secs = 5\n"
    );
    let c = parse(&text, Path::new("a.toml")).unwrap();
    let l = c.front_door.limits;
    assert_eq!(l.connections.map(Count::get), Some(100));
    assert_eq!(l.connections_per_address.get(), 10);
    assert_eq!(l.websocket_idle_secs.duration().as_secs(), 5);
    assert_eq!(
        l.header_secs.duration().as_secs(),
        30,
        "the others keep their defaults"
    );
    let again = parse(&c.to_redacted_toml(), Path::new("b.toml")).unwrap();
    assert_eq!(again, c);

    let limits = |body: &str| err(&format!("{MINIMAL}\n[front_door.limits]\n{body}\n"));
    let e = limits("connections = 0");
    assert_eq!(e.key, "front_door.limits.connections", "{e}");
    assert!(e.message.contains("1 to 1000000"), "{e}");
    let e = limits("body_idle_secs = -1");
    assert_eq!(e.key, "front_door.limits.body_idle_secs", "{e}");
    assert!(e.message.contains("1 to 86400"), "{e}");
    let e = limits("idle = 3");
    assert_eq!(e.key, "front_door.limits.idle", "{e}");
    assert!(
        e.message.contains("websocket_idle_secs"),
        "lists the allowed keys: {e}"
    );
}

#[test]
fn the_consoles_choice_of_apps_overrides_the_file_and_bad_json_names_it() {
    let mut c = parse(MINIMAL, Path::new("appliance.toml")).unwrap();
    let at = Path::new("/var/lib/commonscloud/console/apps.json");
    apply_console_apps(
        &mut c,
        r#"{"enabled": ["nextcloud"], "by": "bea", "at": 1}"#,
        at,
    )
    .unwrap();
    assert_eq!(c.apps.enabled, [AppName::Nextcloud]);
    assert_eq!(c.apps.enabled_from_console.as_deref(), Some(at));
    let e = match apply_console_apps(&mut c, r#"{"enabled": ["wiki"], "by": "", "at": 1}"#, at) {
        Err(ConfigError::Invalid(l)) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!((e.path.as_path(), e.key.as_str()), (at, "enabled"));
    assert!(e.message.contains("delete the file"), "{e}");
    assert_eq!(c.apps.enabled, [AppName::Nextcloud], "unchanged on error");
}

#[test]
fn audit_retention_defaults_and_bounds() {
    let c = parse(MINIMAL, Path::new("a.toml")).unwrap();
    assert_eq!(c.log.audit_keep_days.days(), 365);
    assert_eq!(c.log.audit_max_entries.entries(), 500_000);
    let text = format!("{MINIMAL}\n[log]\naudit_keep_days = 30\naudit_max_entries = 2000\n");
    let c = parse(&text, Path::new("a.toml")).unwrap();
    assert_eq!(c.log.audit_keep_days.days(), 30);
    assert_eq!(c.log.audit_max_entries.entries(), 2000);
    for (key, bad) in [
        ("audit_keep_days", "0"),
        ("audit_keep_days", "4000"),
        ("audit_max_entries", "10"),
    ] {
        let text = format!("{MINIMAL}\n[log]\n{key} = {bad}\n");
        let e = parse(&text, Path::new("a.toml")).unwrap_err().to_string();
        assert!(
            e.contains(&format!("log.{key}")) && e.contains("expected"),
            "{e}"
        );
    }
}

#[test]
fn alliance_tuning_needs_no_enrolment_and_an_enrolment_needs_all_its_keys() {
    // A box joined with `alliance join` sets only how the link is kept safe.
    let c = parse(
        &format!("{MINIMAL}\n[alliance]\ninsecure = true\nmax_refresh_deletions = 5\n"),
        Path::new("a.toml"),
    )
    .unwrap();
    let a = c.alliance.unwrap();
    assert!(a.insecure && !a.starttls && a.enrolment().is_none());
    let l = a.deletion_limits();
    assert_eq!((l.entries, l.percent), (5, 10));
    let e = err(&format!(
        "{MINIMAL}\n[alliance]\ndirectory = \"ldaps://dir.a.net\"\nbind_dn = \"cn=box,dc=a\"\nbind_password_file = \"/etc/cc/a.pw\"\n"
    ));
    assert_eq!(e.key, "alliance.suffix", "{e}");
    assert!(e.message.contains("together"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[alliance]\nmax_refresh_deletions_percent = 150\n"
    ));
    assert_eq!(e.key, "alliance.max_refresh_deletions_percent", "{e}");
    assert!(e.message.contains("0 to 100"), "{e}");
    let c = parse(
        &format!(
            "{MINIMAL}\n[alliance]\ndirectory = \"ldap://dir.a.net\"\nsuffix = \"dc=a\"\nbind_dn = \"cn=box,dc=a\"\nbind_password_file = \"/etc/cc/a.pw\"\nstarttls = true\n"
        ),
        Path::new("a.toml"),
    )
    .unwrap();
    let a = c.alliance.unwrap();
    assert_eq!(
        a.enrolment().unwrap().directory.as_str(),
        "ldap://dir.a.net"
    );
    assert!(a.starttls);
    assert_eq!(a.deletion_limits(), DeletionLimits::default());
}

#[test]
fn example_alliance_table_is_valid_once_uncommented() {
    let c = parse(
        &format!("{MINIMAL}\n{}", example_table("# [alliance]")),
        Path::new("a.toml"),
    )
    .unwrap();
    let a = c.alliance.expect("uncommented");
    assert!(a.enrolment().is_some() && !a.insecure && !a.starttls);
    assert_eq!(a.deletion_limits(), DeletionLimits::default());
}
