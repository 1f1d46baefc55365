//! Discourse (web-only image) with its own postgres (hstore, pg_trgm,
//! vector) and redis. The daemon is its DiscourseConnect provider: the site
//! settings go through the admin API in the order URL, secret, enable.

use super::postgres::secret_mount;
use super::{Ctx, Health, Mount, MountSource, Part, Value, Wiring, p, secret};
use crate::config::ImageRole;
use crate::model::AppName;

const APP: AppName = AppName::Discourse;

/// The image needs a developer address (it refuses to start without one);
/// this one is under `.invalid` (RFC 6761), which no mailbox has and the
/// SSO provider never answers for, so nobody becomes an admin by it.
pub const DEVELOPER_EMAIL: &str = "no-developer@commonscloud.invalid";

/// The shortest and longest login or collective slug (`model::Uid`,
/// `model::CollectiveSlug`): Discourse's username length settings.
const MIN_NAME: usize = 2;
const MAX_NAME: usize = 32;

/// Where the daemon answers DiscourseConnect, on the console's host.
pub fn connect_url(console_host: &str) -> String {
    format!("https://{console_host}/sso/discourse")
}

fn setting(ctx: &Ctx<'_>, name: &str, value: Value) -> Wiring {
    Wiring::DiscourseSetting {
        container: ctx.name("discourse"),
        name: name.into(),
        value,
    }
}

pub fn app(ctx: &Ctx<'_>) -> Part {
    let config = ctx.config;
    let (db, db_password) =
        super::postgres::container(ctx, APP, ctx.image(ImageRole::DiscourseDb), ctx.share(20));
    let (redis, redis_password) = super::redis::container(
        ctx,
        APP,
        ctx.image(ImageRole::DiscourseRedis),
        ctx.share(10),
    );
    let connect_secret = secret("discourse-connect-secret");
    let api_key = secret("discourse-api-key");
    let mut web = ctx.base(
        APP,
        "discourse",
        ctx.image(ImageRole::Discourse),
        ctx.share(70),
    );

    let small = ctx.memory_mb < 2048;
    for (k, v) in [
        ("DISCOURSE_HOSTNAME", p(ctx.host(APP))),
        // Discourse makes whoever signs up with one of these addresses an
        // admin. Through DiscourseConnect the address is the directory's,
        // which people outside this box can write (an appliance writes its
        // people's at the alliance): so none that anyone can hold. The SSO
        // provider refuses an address under `.invalid` (`sso::service`).
        ("DISCOURSE_DEVELOPER_EMAILS", p(DEVELOPER_EMAIL)),
        ("DISCOURSE_DB_HOST", p(db.role.clone())),
        ("DISCOURSE_DB_PORT", p("5432")),
        ("DISCOURSE_DB_NAME", p("discourse")),
        ("DISCOURSE_DB_USERNAME", p("discourse")),
        // The image reads no *_FILE variant: the value goes in at creation.
        (
            "DISCOURSE_DB_PASSWORD",
            Value::Secret(db_password.name.clone()),
        ),
        ("DISCOURSE_DB_SOCKET", p("")),
        ("DISCOURSE_REDIS_HOST", p(redis.role.clone())),
        ("DISCOURSE_REDIS_PORT", p("6379")),
        (
            "DISCOURSE_REDIS_PASSWORD",
            Value::Secret(redis_password.name.clone()),
        ),
        ("MIGRATE_ON_BOOT", p("1")),
        ("DISABLE_LETSENCRYPT", p("1")),
        ("UNICORN_WORKERS", p(if small { "2" } else { "3" })),
    ] {
        web.env.insert(k.into(), v);
    }
    if let Some(smtp) = &config.smtp {
        web.env
            .insert("DISCOURSE_SMTP_ADDRESS".into(), p(smtp.host.to_string()));
        web.env
            .insert("DISCOURSE_SMTP_PORT".into(), p(smtp.port.to_string()));
        web.env.insert(
            "DISCOURSE_SMTP_ENABLE_START_TLS".into(),
            p(matches!(smtp.security, crate::config::SmtpSecurity::Starttls).to_string()),
        );
        web.env.insert(
            "DISCOURSE_SMTP_DOMAIN".into(),
            p(config.collective.domain.to_string()),
        );
        web.env.insert(
            "DISCOURSE_NOTIFICATION_EMAIL".into(),
            p(format!("forum@{}", config.collective.domain)),
        );
    }
    web.mounts = vec![
        Mount {
            source: MountSource::Volume(ctx.volume(APP, "shared").name),
            target: "/shared".into(),
            read_only: false,
        },
        Mount {
            source: MountSource::Volume(ctx.volume(APP, "log").name),
            target: "/var/log".into(),
            read_only: false,
        },
        secret_mount(&api_key.name),
    ];
    web.networks = vec![ctx.net_apps(), ctx.net_backend(APP)];
    web.publish = Some((ctx.port(APP), 80));
    web.health = Some(Health {
        test: vec![
            "CMD".into(),
            "curl".into(),
            "-fsS".into(),
            "http://localhost/srv/status".into(),
        ],
        interval_s: 30,
        timeout_s: 10,
        retries: 3,
        start_period_s: 600,
    });

    let db_name = db.name.clone();
    let mut wiring: Vec<Wiring> = ["hstore", "pg_trgm", "vector"]
        .iter()
        .map(|ext| Wiring::Exec {
            container: db_name.clone(),
            user: "postgres".into(),
            cmd: vec![
                p("psql"),
                p("-U"),
                p("discourse"),
                p("-d"),
                p("discourse"),
                p("-c"),
                p(format!("CREATE EXTENSION IF NOT EXISTS {ext}")),
            ],
        })
        .collect();
    // The admin API's key, from the secret mounted in the container. As
    // root: the secret file is the daemon's (0600), which only root reads
    // inside the container.
    wiring.push(Wiring::Exec {
        container: ctx.name("discourse"),
        user: "root".into(),
        cmd: vec![
            p("rails"),
            p("runner"),
            p(format!(
                "k = File.read('{}').strip; ApiKey.exists?(description: 'commonscloud') || ApiKey.create!(description: 'commonscloud', created_by_id: Discourse::SYSTEM_USER_ID, key: k)",
                super::postgres::secret_path(&api_key.name)
            )),
        ],
    });
    let console = config.console_host().to_string();
    wiring.extend([
        // Logins and collective slugs are 2 to 32 characters; Discourse's
        // defaults (3 to 20) would mangle some logins and refuse some
        // groups. The maximum goes first: the minimum may not exceed it.
        setting(ctx, "max_username_length", p(MAX_NAME.to_string())),
        setting(ctx, "min_username_length", p(MIN_NAME.to_string())),
        setting(ctx, "enforce_second_factor", p("no")),
        // TLS ends at the front door: Discourse sees plain HTTP, so without
        // this its absolute URLs (DiscourseConnect's return_sso_url, mails,
        // the canonical links) would say http://. Set before
        // DiscourseConnect is enabled, so the first login already comes
        // back over https. The client's address needs nothing: Rails'
        // ActionDispatch::RemoteIp trusts the private ranges (the bridge's
        // gateway included) and takes the client from X-Forwarded-For.
        setting(ctx, "force_https", p("true")),
        setting(ctx, "discourse_connect_url", p(connect_url(&console))),
        setting(
            ctx,
            "discourse_connect_secret",
            Value::Secret(connect_secret.name.clone()),
        ),
        setting(ctx, "auth_overrides_email", p("true")),
        setting(ctx, "auth_overrides_username", p("true")),
        setting(ctx, "auth_overrides_name", p("true")),
        setting(ctx, "logout_redirect", p(format!("https://{console}/"))),
        setting(ctx, "enable_discourse_connect", p("true")),
    ]);
    // One group per collective, named by its slug: the names the provider
    // sends in `add_groups` and `remove_groups`.
    for (slug, name) in ctx.collectives {
        wiring.push(Wiring::DiscourseGroup {
            container: ctx.name("discourse"),
            name: slug.to_string(),
            full_name: name.clone(),
        });
    }
    Part {
        networks: vec![ctx.backend_network(APP)],
        volumes: vec![
            ctx.volume(APP, "shared"),
            ctx.volume(APP, "log"),
            ctx.volume(APP, "db"),
            ctx.volume(APP, "redis"),
        ],
        secrets: vec![db_password, connect_secret, api_key, redis_password],
        containers: vec![db, redis, web],
        wiring,
    }
}
