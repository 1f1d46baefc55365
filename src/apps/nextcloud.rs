//! Nextcloud: the official apache image, installed automatically from the
//! environment, a cron sidecar on the same volume, its own postgres and
//! redis. Once `status.php` says installed, not in maintenance and no
//! database upgrade pending, `user_ldap` is configured through occ with the
//! Nextcloud service account, each collective gets a group folder, and
//! `richdocuments` points at Collabora when it runs.

use super::postgres::{secret_mount, secret_path};
use super::{Ctx, Health, Mount, MountSource, Part, Value, Wiring, p, secret};
use crate::config::ImageRole;
use crate::directory::tree::Tree;
use crate::model::AppName;

const APP: AppName = AppName::Nextcloud;

/// Nextcloud's own admin (not a directory person: `admin` is a reserved uid).
pub const ADMIN_USER: &str = "admin";

/// Who Nextcloud knows: active people who are members of one of this
/// box's collectives (their `members` groups, which only this box writes).
/// A suspended person is also locked in slapd; the filter keeps them out
/// of lists and shares. Someone another appliance put in the directory
/// through the alliance, whom no collective here took, is not a user.
pub fn user_filter(tree: &Tree, collectives: &[crate::model::CollectiveSlug]) -> String {
    format!(
        "(&(objectClass=inetOrgPerson)(commonsAccountState=active){})",
        members_of(tree, collectives)
    )
}

/// The same, for the login name typed (uid or mail).
pub fn login_filter(tree: &Tree, collectives: &[crate::model::CollectiveSlug]) -> String {
    format!(
        "(&(objectClass=inetOrgPerson)(commonsAccountState=active){}(|(uid=%uid)(mail=%uid)))",
        members_of(tree, collectives)
    )
}

/// `(|(memberOf=<members of c1>)…)`; with no collective, a filter nobody
/// matches.
fn members_of(tree: &Tree, collectives: &[crate::model::CollectiveSlug]) -> String {
    if collectives.is_empty() {
        return "(!(objectClass=*))".into();
    }
    let any: String = collectives
        .iter()
        .map(|c| {
            format!(
                "(memberOf={})",
                ldap3::ldap_escape(tree.group(c, "members"))
            )
        })
        .collect();
    format!("(|{any})")
}
pub const GROUP_FILTER: &str = "(objectClass=groupOfNames)";

fn occ(ctx: &Ctx<'_>, args: &[&str]) -> Wiring {
    Wiring::Occ {
        container: ctx.name("nextcloud"),
        args: args.iter().map(|a| Value::plain(*a)).collect(),
    }
}

fn set_ldap(ctx: &Ctx<'_>, key: &str, value: Value) -> Wiring {
    Wiring::Occ {
        container: ctx.name("nextcloud"),
        args: vec![
            Value::plain("ldap:set-config"),
            Value::plain("s01"),
            Value::plain(key),
            value,
        ],
    }
}

/// The address Nextcloud sees the front door connect from: the front door
/// reaches the published port on 127.0.0.1, and Docker (its proxy, or its
/// NAT) opens the connection to the container from the host's side of the
/// apps' bridge, its gateway.
///
/// Only that address is trusted, not the bridge's subnet: another container
/// there (Collabora, Discourse) must not be able to claim a client address
/// in `X-Forwarded-For`. For the same reason `APACHE_DISABLE_REWRITE_IP`
/// turns off the image's mod_remoteip, which would take `X-Real-IP` from
/// any private address; Nextcloud itself then reads the client from
/// `X-Forwarded-For` (`forwarded_for_headers`), from the gateway only.
pub fn front_door_address(config: &crate::config::Config) -> String {
    config.apps.subnet.gateway().to_string()
}

pub fn app(ctx: &Ctx<'_>) -> Part {
    let config = ctx.config;
    let host = ctx.host(APP);
    let (db, db_password) =
        super::postgres::container(ctx, APP, ctx.image(ImageRole::NextcloudDb), ctx.share(20));
    let (redis, redis_password) = super::redis::container(
        ctx,
        APP,
        ctx.image(ImageRole::NextcloudRedis),
        ctx.share(10),
    );
    let admin_password = secret("nextcloud-admin-password");
    let html = ctx.volume(APP, "html");

    let mut web = ctx.base(
        APP,
        "nextcloud",
        ctx.image(ImageRole::Nextcloud),
        ctx.share(55),
    );
    let env = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::plain(v.clone())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    web.env = env(&[
        ("POSTGRES_HOST", db.role.clone()),
        ("POSTGRES_DB", "nextcloud".into()),
        ("POSTGRES_USER", "nextcloud".into()),
        ("POSTGRES_PASSWORD_FILE", secret_path(&db_password.name)),
        ("NEXTCLOUD_ADMIN_USER", ADMIN_USER.into()),
        (
            "NEXTCLOUD_ADMIN_PASSWORD_FILE",
            secret_path(&admin_password.name),
        ),
        ("NEXTCLOUD_TRUSTED_DOMAINS", host.clone()),
        ("REDIS_HOST", redis.role.clone()),
        // Behind the front door (see `front_door_address`).
        ("TRUSTED_PROXIES", front_door_address(config)),
        ("FORWARDED_FOR_HEADERS", "HTTP_X_FORWARDED_FOR".into()),
        ("APACHE_DISABLE_REWRITE_IP", "1".into()),
        ("OVERWRITEHOST", host.clone()),
        ("OVERWRITEPROTOCOL", "https".into()),
        ("OVERWRITECLIURL", format!("https://{host}")),
        ("PHP_MEMORY_LIMIT", "512M".into()),
        ("PHP_UPLOAD_LIMIT", "16G".into()),
    ]);
    // PHP reads it at every request, as www-data, which cannot read the
    // daemon's 0600 secret file (the image's `REDIS_HOST_PASSWORD_FILE`
    // would need that): the value goes in at creation, like Discourse's.
    web.env.insert(
        "REDIS_HOST_PASSWORD".into(),
        Value::Secret(redis_password.name.clone()),
    );
    if let Some(smtp) = &config.smtp {
        web.env.extend(env(&[
            ("SMTP_HOST", smtp.host.to_string()),
            ("SMTP_PORT", smtp.port.to_string()),
            (
                "SMTP_SECURE",
                match smtp.security {
                    crate::config::SmtpSecurity::Tls => "ssl",
                    crate::config::SmtpSecurity::Starttls => "tls",
                    crate::config::SmtpSecurity::None => "",
                }
                .into(),
            ),
            ("MAIL_FROM_ADDRESS", "cloud".into()),
            ("MAIL_DOMAIN", config.collective.domain.to_string()),
        ]));
    }
    let html_mount = Mount {
        source: MountSource::Volume(html.name.clone()),
        target: "/var/www/html".into(),
        read_only: false,
    };
    web.mounts = vec![
        html_mount.clone(),
        secret_mount(&db_password.name),
        secret_mount(&admin_password.name),
        ctx.tls_mount(),
    ];
    // php-ldap (libldap) takes its CA from `LDAPTLS_CACERT`: the local CA,
    // which signs slapd's certificate for the bridge (see `wiring`). Only
    // LDAP uses it; the system's roots stay for everything else.
    web.env.insert(
        "LDAPTLS_CACERT".into(),
        p(format!("{}/ca.crt", super::TLS_DIR)),
    );
    web.networks = vec![ctx.net_apps(), ctx.net_backend(APP)];
    web.publish = Some((ctx.port(APP), 80));
    // The image has none; installed and not in maintenance is healthy.
    web.health = Some(Health {
        test: vec![
            "CMD".into(),
            "php".into(),
            "-r".into(),
            "$s = json_decode(@file_get_contents('http://localhost/status.php'), true); exit(($s['installed'] ?? false) && !($s['maintenance'] ?? true) ? 0 : 1);".into(),
        ],
        interval_s: 30,
        timeout_s: 10,
        retries: 3,
        start_period_s: 300,
    });

    let mut cron = ctx.base(
        APP,
        "nextcloud-cron",
        ctx.image(ImageRole::Nextcloud),
        ctx.share(15),
    );
    cron.entrypoint = Some(vec!["/cron.sh".into()]);
    cron.env = web.env.clone();
    cron.mounts = web.mounts.clone();
    cron.networks = vec![ctx.net_backend(APP)];

    Part {
        networks: vec![ctx.backend_network(APP)],
        volumes: vec![html, ctx.volume(APP, "db"), ctx.volume(APP, "redis")],
        secrets: vec![db_password, admin_password, redis_password],
        containers: vec![db, redis, web, cron],
        wiring: wiring(ctx),
    }
}

/// Every occ step, in order. `ldapConfigurationActive` comes last, as
/// user_ldap wants every key set before the first login.
fn wiring(ctx: &Ctx<'_>) -> Vec<Wiring> {
    let config = ctx.config;
    let tree = Tree::new(config.suffix().as_str());
    let host = ctx.host(APP);
    let ldap_url = ctx.ldap_url();
    let (ldap_host, ldap_port) = ldap_url.rsplit_once(':').unwrap_or((&ldap_url, "389"));
    let slugs: Vec<crate::model::CollectiveSlug> =
        ctx.collectives.iter().map(|(s, _)| s.clone()).collect();
    let mut w = vec![
        occ(
            ctx,
            &[
                "config:system:set",
                "trusted_domains",
                "0",
                &format!("--value={host}"),
            ],
        ),
        // Server-side fetches (link previews, external storage, federated
        // shares) that members can aim must not reach private addresses:
        // the bridge's gateway (slapd), other containers, link-local.
        // Older releases turned this on for Collabora; richdocuments asks
        // for its own exception on each of its requests
        // (`allow_local_address`), so nothing else needs it.
        occ(
            ctx,
            &[
                "config:system:set",
                "allow_local_remote_servers",
                "--value=false",
                "--type=boolean",
            ],
        ),
        occ(ctx, &["app:enable", "user_ldap"]),
        occ(ctx, &["ldap:create-empty-config"]),
    ];

    for (key, value) in [
        ("ldapHost", p(ldap_host)),
        ("ldapPort", p(ldap_port)),
        // LDAPS (the host's `ldaps://`), so not StartTLS: user_ldap
        // refuses both at once. The certificate is checked against the
        // local CA (`LDAPTLS_CACERT`) and the gateway's address.
        ("ldapTLS", p("0")),
        ("ldapAgentName", p(tree.service_account("nextcloud"))),
        ("ldapAgentPassword", Value::Secret("ldap-nextcloud".into())),
        ("ldapBase", p(tree.suffix())),
        ("ldapBaseUsers", p(tree.people())),
        ("ldapBaseGroups", p(tree.collectives())),
        ("ldapUserFilterMode", p("1")),
        ("ldapUserFilter", p(user_filter(&tree, &slugs))),
        ("ldapLoginFilterMode", p("1")),
        ("ldapLoginFilter", p(login_filter(&tree, &slugs))),
        ("ldapGroupFilterMode", p("1")),
        ("ldapGroupFilter", p(GROUP_FILTER)),
        ("ldapGroupMemberAssocAttr", p("member")),
        ("ldapGroupDisplayName", p("description")),
        ("ldapUserDisplayName", p("displayName")),
        ("ldapEmailAttribute", p("mail")),
        ("ldapAttributesForUserSearch", p("uid;mail;displayName")),
        ("ldapExpertUsernameAttr", p("uid")),
        ("ldapExpertUUIDUserAttr", p("entryUUID")),
        ("ldapExpertUUIDGroupAttr", p("entryUUID")),
        ("hasMemberOfFilterSupport", p("1")),
        ("useMemberOfToDetectMembership", p("1")),
        ("ldapNestedGroups", p("0")),
        ("ldapCacheTTL", p("600")),
        ("ldapConfigurationActive", p("1")),
    ] {
        w.push(set_ldap(ctx, key, value));
    }
    // Nextcloud binds as its account and searches: the proof that the
    // whole chain (bridge, slapd's listener, ACLs, secret) works.
    w.push(occ(ctx, &["ldap:test-config", "s01"]));
    w.push(occ(ctx, &["app:enable", "groupfolders"]));
    // One group folder per collective, shared with its members.
    for (slug, name) in ctx.collectives {
        w.push(Wiring::GroupFolder {
            container: ctx.name("nextcloud"),
            folder: name.clone(),
            group: crate::directory::tree::group_display_name(slug, "members"),
        });
    }
    w
}
