use std::path::Path;

use super::*;
use crate::config::parse;

pub(crate) use crate::config::testing::config;

fn names(d: &Desired) -> Vec<&str> {
    d.containers.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn a_big_board_runs_everything_databases_first() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    assert_eq!(
        names(&d),
        [
            "commonscloud-nextcloud-db",
            "commonscloud-nextcloud-redis",
            "commonscloud-nextcloud",
            "commonscloud-nextcloud-cron",
            "commonscloud-collabora",
            "commonscloud-discourse-db",
            "commonscloud-discourse-redis",
            "commonscloud-discourse",
        ]
    );
    for c in &d.containers {
        let labels = c.labels();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_APP], c.app.as_str());
        assert_eq!(labels[LABEL_SPEC], c.spec_hash());
        assert_eq!(c.restart, "unless-stopped");
        assert!(c.memory_mb >= 64, "{}", c.name);
        // Databases live on their app's internal network only.
        if c.role.ends_with("-db") || c.role.ends_with("-redis") {
            assert_eq!(
                c.networks,
                [format!("commonscloud-{}-backend", c.app)],
                "{}",
                c.name
            );
        }
    }
    let vols: Vec<&str> = d.volumes.iter().map(|v| v.name.as_str()).collect();
    assert!(vols.contains(&"commonscloud-nextcloud-html"));
    assert!(vols.iter().all(|v| v.starts_with("commonscloud-")));
    let nets: Vec<(&str, bool)> = d
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.internal))
        .collect();
    assert_eq!(
        nets,
        [
            ("commonscloud", false),
            ("commonscloud-nextcloud-backend", true),
            ("commonscloud-discourse-backend", true),
        ]
    );
}

/// No container shares a network with another app's database or cache:
/// the only network two apps share is the bridge, where no database is.
#[test]
fn each_apps_database_and_cache_are_out_of_the_other_apps_reach() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    for store in d
        .containers
        .iter()
        .filter(|c| c.role.ends_with("-db") || c.role.ends_with("-redis"))
    {
        for other in d.containers.iter().filter(|c| c.app != store.app) {
            let shared: Vec<&String> = other
                .networks
                .iter()
                .filter(|n| store.networks.contains(n))
                .collect();
            assert!(
                shared.is_empty(),
                "{} reaches {} on {shared:?}",
                other.name,
                store.name
            );
        }
        assert!(!store.networks.contains(&"commonscloud".to_owned()));
    }
}

#[test]
fn every_container_drops_what_it_does_not_use() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    for c in &d.containers {
        assert!(c.cap_drop.contains(&"NET_RAW".to_owned()), "{}", c.name);
        assert!(c.cap_drop.contains(&"AUDIT_WRITE".to_owned()), "{}", c.name);
        for added in &c.cap_add {
            assert!(!c.cap_drop.contains(added), "{}: {added}", c.name);
        }
        // Only a web server on port 80 binds below 1024.
        let low_port = matches!(c.publish, Some((_, p)) if p < 1024);
        assert_eq!(
            !c.cap_drop.contains(&"NET_BIND_SERVICE".to_owned()),
            low_port,
            "{}",
            c.name
        );
    }
    let office = d.containers.iter().find(|c| c.role == "collabora").unwrap();
    assert_eq!(office.cap_add, ["MKNOD", "SYS_CHROOT"]);
    assert_eq!(
        office.cap_drop,
        ["AUDIT_WRITE", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP"]
    );
    let db = d
        .containers
        .iter()
        .find(|c| c.role == "nextcloud-db")
        .unwrap();
    assert_eq!(
        db.cap_drop,
        [
            "AUDIT_WRITE",
            "MKNOD",
            "NET_BIND_SERVICE",
            "NET_RAW",
            "SETFCAP",
            "SYS_CHROOT"
        ]
    );
}

/// Each Redis has a password of its own, given to redis-server on stdin
/// (in no argument and no environment), and its clients have it.
#[test]
fn every_redis_has_a_password_its_app_knows() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    for (app, client, var) in [
        ("nextcloud", "commonscloud-nextcloud", "REDIS_HOST_PASSWORD"),
        (
            "nextcloud",
            "commonscloud-nextcloud-cron",
            "REDIS_HOST_PASSWORD",
        ),
        (
            "discourse",
            "commonscloud-discourse",
            "DISCOURSE_REDIS_PASSWORD",
        ),
    ] {
        let secret = format!("{app}-redis-password");
        assert!(d.secrets.iter().any(|s| s.name == secret));
        let c = d.containers.iter().find(|c| c.name == client).unwrap();
        assert_eq!(c.env[var], Value::Secret(secret.clone()), "{client}");
        let redis = d
            .containers
            .iter()
            .find(|c| c.role == format!("{app}-redis"))
            .unwrap();
        let script = &redis.entrypoint.as_ref().unwrap()[2];
        assert!(
            script.contains("redis-server \"$@\" - <<EOF")
                && script.contains(&format!("requirepass $(cat /run/secrets/{secret})")),
            "{script}"
        );
        assert!(
            redis
                .mounts
                .iter()
                .any(|m| m.source == MountSource::Secret(secret.clone()) && m.read_only)
        );
        let shown = serde_json::to_string(&redis.cmd).unwrap()
            + &serde_json::to_string(&redis.env).unwrap();
        assert!(!shown.contains("requirepass"), "{shown}");
        assert!(redis.health.as_ref().unwrap().test[3].contains("REDISCLI_AUTH="));
    }
}

#[test]
fn memory_limits_stay_within_each_apps_share() {
    let c = config("rpi5-8gb", "");
    let d = desired(&c).unwrap();
    let profile = c.profile();
    for app in AppName::ALL {
        let used: u64 = d
            .containers
            .iter()
            .filter(|x| x.app == app)
            .map(|x| x.memory_mb)
            .sum();
        assert!(used <= profile.app_memory_mb[&app], "{app}: {used}");
    }
}

#[test]
fn what_does_not_fit_is_refused_unless_forced() {
    let e = desired(&config("rpi4-4gb", "")).unwrap_err();
    assert!(
        e.to_string().contains("force = true") && e.to_string().contains("rpi4-4gb"),
        "{e}"
    );
    let d = desired(&config("rpi4-4gb", "[apps]\nforce = true\n")).unwrap();
    assert_eq!(d.containers.len(), 8);
    let d = desired(&config("rpi4-4gb", "[apps]\nenabled = [\"nextcloud\"]\n")).unwrap();
    assert!(d.containers.iter().all(|c| c.app == AppName::Nextcloud));
    // No richdocuments without Collabora.
    assert!(
        !d.wiring
            .iter()
            .any(|(_, w)| w.describe().contains("richdocuments"))
    );
}

#[test]
fn images_follow_pins_and_overrides() {
    let d = desired(&config(
        "rpi5-8gb",
        "[apps.images]\nnextcloud = \"cc-test/nextcloud:31\"\n",
    ))
    .unwrap();
    let nc: Vec<&str> = d
        .containers
        .iter()
        .filter(|c| {
            c.role.starts_with("nextcloud")
                && !c.role.ends_with("-db")
                && !c.role.ends_with("-redis")
        })
        .map(|c| c.image.as_str())
        .collect();
    assert_eq!(nc, ["cc-test/nextcloud:31", "cc-test/nextcloud:31"]);
    let e = parse(
        "[collective]\nname = \"Q\"\nslug = \"quimper\"\ndomain = \"q.example.org\"\nadmin_email = \"a@q.example.org\"\n[hardware]\nprofile = \"rpi5-8gb\"\n[apps.images]\nnextclod = \"x:1\"\n",
        Path::new("t.toml"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nextclod"), "{e}");
}

#[test]
fn nextcloud_wiring_uses_the_contract_keys_and_activates_last() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    let lines: Vec<String> = d
        .wiring
        .iter()
        .filter(|(a, _)| *a == AppName::Nextcloud)
        .map(|(_, w)| w.describe())
        .collect();
    let ldap: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ldap:set-config"))
        .collect();
    assert!(ldap.last().unwrap().ends_with("ldapConfigurationActive 1"));
    let allowed = [
        "ldapHost",
        "ldapPort",
        "ldapTLS",
        "ldapAgentName",
        "ldapAgentPassword",
        "ldapBase",
        "ldapBaseUsers",
        "ldapBaseGroups",
        "ldapUserFilterMode",
        "ldapUserFilter",
        "ldapLoginFilterMode",
        "ldapLoginFilter",
        "ldapGroupFilterMode",
        "ldapGroupFilter",
        "ldapGroupMemberAssocAttr",
        "ldapGroupDisplayName",
        "ldapUserDisplayName",
        "ldapEmailAttribute",
        "ldapAttributesForUserSearch",
        "ldapExpertUsernameAttr",
        "ldapExpertUUIDUserAttr",
        "ldapExpertUUIDGroupAttr",
        "hasMemberOfFilterSupport",
        "useMemberOfToDetectMembership",
        "ldapNestedGroups",
        "ldapCacheTTL",
        "ldapConfigurationActive",
    ];
    for l in &ldap {
        let key = l.split_whitespace().nth(4).unwrap();
        assert!(allowed.contains(&key), "{key}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("ldapHost ldaps://172.30.64.1")),
        "LDAPS to the bridge's gateway: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.ends_with("ldapTLS 0")), "{lines:#?}");
    let nc = d.containers.iter().find(|c| c.role == "nextcloud").unwrap();
    assert_eq!(
        nc.env["LDAPTLS_CACERT"],
        Value::plain("/run/commonscloud/tls/ca.crt")
    );
    assert!(
        nc.mounts
            .iter()
            .any(|m| m.source == MountSource::State("tls".into())
                && m.target == "/run/commonscloud/tls"
                && m.read_only)
    );
    assert!(lines.iter().any(|l| l == "commonscloud-nextcloud: occ ldap:set-config s01 ldapAgentPassword '<secret ldap-nextcloud>'"), "{lines:#?}");
    let office: Vec<String> = d
        .wiring
        .iter()
        .filter(|(a, _)| *a == AppName::Collabora)
        .map(|(_, w)| w.describe())
        .collect();
    assert!(
        office
            .last()
            .unwrap()
            .starts_with("commonscloud-nextcloud: occ richdocuments:activate-config")
    );
}

#[test]
fn discourse_connect_is_set_in_the_order_url_secret_enable() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    let order: Vec<String> = d
        .wiring
        .iter()
        .filter_map(|(_, w)| match w {
            Wiring::DiscourseSetting { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("discourse_connect_url") < pos("discourse_connect_secret"));
    assert!(pos("discourse_connect_secret") < pos("enable_discourse_connect"));
    assert!(pos("enforce_second_factor") < pos("enable_discourse_connect"));
    // Discourse refuses a minimum above the maximum: raise the maximum first.
    assert!(pos("max_username_length") < pos("min_username_length"));
    let all = d
        .wiring
        .iter()
        .map(|(_, w)| w.describe())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("discourse_connect_url https://box.quimper.example.org/sso/discourse"));
    assert!(all.contains("'<secret discourse-connect-secret>'"));
}

#[test]
fn a_changed_setting_changes_the_spec_hash() {
    let a = desired(&config("rpi5-8gb", "")).unwrap();
    let b = desired(&config("rpi5-8gb", "[apps]\ndictionaries = [\"en_US\"]\n")).unwrap();
    let hash = |d: &Desired, n: &str| {
        d.containers
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .spec_hash()
    };
    assert_ne!(
        hash(&a, "commonscloud-collabora"),
        hash(&b, "commonscloud-collabora")
    );
    assert_eq!(
        hash(&a, "commonscloud-nextcloud"),
        hash(&b, "commonscloud-nextcloud")
    );
}

#[test]
fn a_prefix_names_every_object_and_labels_the_instance() {
    let d = desired(&config("rpi5-8gb", "[apps]\nprefix = \"cc-t1\"\n")).unwrap();
    assert_eq!(d.instance, "cc-t1");
    assert!(d.containers.iter().all(|c| c.name.starts_with("cc-t1-")
        && c.labels()[LABEL_INSTANCE] == "cc-t1"
        && c.networks.iter().all(|n| n.starts_with("cc-t1"))));
    assert!(d.volumes.iter().all(|v| v.name.starts_with("cc-t1-")));
    assert_eq!(d.networks[0].name, "cc-t1");
    let all: String = d.wiring.iter().map(|(_, w)| w.describe()).collect();
    assert!(!all.contains("commonscloud-"), "{all}");
}

fn two_collectives(c: &Config) -> Desired {
    let brest: crate::model::CollectiveSlug = "brest".parse().unwrap();
    desired_with(
        c,
        &[
            (c.collective.slug.clone(), "Les Communs de Quimper".into()),
            (brest, "Brest en Commun".into()),
        ],
    )
    .unwrap()
}

#[test]
fn every_collective_gets_its_forum_group_once_the_lengths_allow_it() {
    let d = two_collectives(&config("rpi5-8gb", ""));
    let steps: Vec<&Wiring> = d.wiring.iter().map(|(_, w)| w).collect();
    let groups: Vec<(usize, &str, &str)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match w {
            Wiring::DiscourseGroup {
                name, full_name, ..
            } => Some((i, name.as_str(), full_name.as_str())),
            _ => None,
        })
        .collect();
    let names: Vec<(&str, &str)> = groups.iter().map(|(_, n, f)| (*n, *f)).collect();
    assert_eq!(
        names,
        [
            ("quimper", "Les Communs de Quimper"),
            ("brest", "Brest en Commun")
        ]
    );
    // After the API key exists and the 32-character maximum is set (a
    // 21-character slug is a valid collective but not a default Discourse
    // name).
    let at = |f: &dyn Fn(&Wiring) -> bool| steps.iter().position(|w| f(w)).unwrap();
    let key = at(
        &|w| matches!(w, Wiring::Exec { cmd, .. } if cmd.first().is_some_and(|c| c.shown() == "rails")),
    );
    let max = at(
        &|w| matches!(w, Wiring::DiscourseSetting { name, value, .. } if name == "max_username_length" && value.shown() == "32"),
    );
    assert!(groups.iter().all(|(i, _, _)| *i > key && *i > max));
    // The provider's names, and no Discourse without them.
    assert!(
        steps[groups[0].0]
            .describe()
            .contains("POST /admin/groups name=quimper")
    );
    let nc_only = two_collectives(&config(
        "rpi5-8gb",
        "[apps]\nenabled = [\"nextcloud\"]\nforce = true\n",
    ));
    assert!(
        !nc_only
            .wiring
            .iter()
            .any(|(_, w)| matches!(w, Wiring::DiscourseGroup { .. }))
    );
}

#[test]
fn every_collective_gets_its_group_folder() {
    let d = two_collectives(&config("rpi5-8gb", ""));
    let folders: Vec<(String, String)> = d
        .wiring
        .iter()
        .filter_map(|(_, w)| match w {
            Wiring::GroupFolder { folder, group, .. } => Some((folder.clone(), group.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        folders,
        [
            ("Les Communs de Quimper".into(), "quimper-members".into()),
            ("Brest en Commun".into(), "brest-members".into())
        ]
    );
}

/// The plain environment of the container named `name`.
fn env_of(d: &Desired, name: &str) -> BTreeMap<String, String> {
    d.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Plain(v) => Some((k.clone(), v.clone())),
            Value::Secret(_) => None,
        })
        .collect()
}

#[test]
fn the_apps_trust_the_front_door_only_and_build_https_urls() {
    let d = desired(&config("rpi5-8gb", "")).unwrap();
    let cloud = "cloud.quimper.example.org";
    for name in ["commonscloud-nextcloud", "commonscloud-nextcloud-cron"] {
        let nc = env_of(&d, name);
        // The bridge's gateway, where the front door's connections to the
        // published port come from; not the whole subnet.
        assert_eq!(nc["TRUSTED_PROXIES"], "172.30.64.1", "{name}");
        // The header the front door sets, as a PHP lookup string.
        assert_eq!(
            nc["FORWARDED_FOR_HEADERS"], "HTTP_X_FORWARDED_FOR",
            "{name}"
        );
        assert_eq!(nc["APACHE_DISABLE_REWRITE_IP"], "1", "{name}");
        assert_eq!(nc["OVERWRITEHOST"], cloud, "{name}");
        assert_eq!(nc["OVERWRITEPROTOCOL"], "https", "{name}");
        assert_eq!(nc["OVERWRITECLIURL"], format!("https://{cloud}"), "{name}");
        assert!(
            nc["NEXTCLOUD_TRUSTED_DOMAINS"]
                .split_whitespace()
                .any(|h| h == cloud),
            "{name}"
        );
    }
    let steps: Vec<String> = d.wiring.iter().map(|(_, w)| w.describe()).collect();
    assert!(
        steps.contains(&format!(
            "commonscloud-nextcloud: occ config:system:set trusted_domains 0 --value={cloud}"
        )),
        "{steps:#?}"
    );
    // Members' server-side fetches stay off private addresses; Collabora
    // does without (richdocuments asks per request).
    assert!(
        steps.contains(
            &"commonscloud-nextcloud: occ config:system:set allow_local_remote_servers --value=false --type=boolean".to_owned()
        ),
        "{steps:#?}"
    );
    assert!(
        !steps
            .iter()
            .any(|s| s.contains("allow_local_remote_servers --value=true")),
        "{steps:#?}"
    );

    let office = env_of(&d, "commonscloud-collabora");
    assert_eq!(office["aliasgroup1"], format!("https://{cloud}:443"));
    assert_eq!(office["server_name"], "office.quimper.example.org");
    let params: Vec<&str> = office["extra_params"].split_whitespace().collect();
    assert!(params.contains(&"--o:ssl.enable=false"), "{params:?}");
    assert!(params.contains(&"--o:ssl.termination=true"), "{params:?}");

    let forum = env_of(&d, "commonscloud-discourse");
    assert_eq!(forum["DISCOURSE_HOSTNAME"], "forum.quimper.example.org");
    let settings: Vec<(String, String)> = d
        .wiring
        .iter()
        .filter_map(|(_, w)| match w {
            Wiring::DiscourseSetting { name, value, .. } => Some((name.clone(), value.shown())),
            _ => None,
        })
        .collect();
    let at = |n: &str| settings.iter().position(|(x, _)| x == n).unwrap();
    assert_eq!(settings[at("force_https")].1, "true");
    assert!(at("force_https") < at("enable_discourse_connect"));

    // Another subnet, another gateway.
    let d = desired(&config("rpi5-8gb", "[apps]\nsubnet = \"10.99.0.0/24\"\n")).unwrap();
    assert_eq!(
        env_of(&d, "commonscloud-nextcloud")["TRUSTED_PROXIES"],
        "10.99.0.1"
    );
}
