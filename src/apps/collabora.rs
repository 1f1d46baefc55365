//! Collabora Online (`collabora/code`): documents open from Nextcloud. TLS
//! ends at the front door; Collabora accepts WOPI hosts from `cloud.` only.

use super::{Ctx, Health, Part, Value, Wiring, p, secret};
use crate::config::ImageRole;
use crate::model::AppName;

const APP: AppName = AppName::Collabora;

pub fn app(ctx: &Ctx<'_>) -> Part {
    let admin_password = secret("collabora-admin-password");
    let mut c = ctx.base(
        APP,
        "collabora",
        ctx.image(ImageRole::Collabora),
        ctx.memory_mb,
    );

    c.env.insert(
        "aliasgroup1".into(),
        p(format!("https://{}:443", ctx.host(AppName::Nextcloud))),
    );
    c.env.insert("server_name".into(), p(ctx.host(APP)));
    c.env.insert(
        "extra_params".into(),
        p("--o:ssl.enable=false --o:ssl.termination=true"),
    );
    c.env.insert(
        "dictionaries".into(),
        p(ctx.config.apps.dictionaries.join(" ")),
    );
    c.env.insert("DONT_GEN_SSL_CERT".into(), p("1"));
    c.env.insert("username".into(), p("admin"));
    // The image reads no *_FILE variant: the value goes in at creation.
    c.env.insert(
        "password".into(),
        Value::Secret(admin_password.name.clone()),
    );
    // Its jails: device nodes (the minimum) and chroot (faster); the rest
    // of `apps::DROPPED_CAPS` goes.
    c.cap_add = vec!["MKNOD".into(), "SYS_CHROOT".into()];
    c.networks = vec![ctx.net_apps()];
    c.publish = Some((ctx.port(APP), 9980));
    c.health = Some(Health {
        test: vec![
            "CMD".into(),
            "curl".into(),
            "-fsS".into(),
            "-o".into(),
            "/dev/null".into(),
            "http://localhost:9980/hosting/discovery".into(),
        ],
        interval_s: 30,
        timeout_s: 10,
        retries: 3,
        start_period_s: 60,
    });
    Part {
        networks: Vec::new(),
        volumes: Vec::new(),
        secrets: vec![admin_password],
        containers: vec![c],
        wiring: richdocuments(ctx),
    }
}

/// Nextcloud's `richdocuments` pointed at this Collabora: run in the
/// Nextcloud container once both are ready.
fn richdocuments(ctx: &Ctx<'_>) -> Vec<Wiring> {
    if !ctx.enabled(AppName::Nextcloud) {
        return Vec::new();
    }
    let occ = |args: &[&str]| Wiring::Occ {
        container: ctx.name("nextcloud"),
        args: args.iter().map(|a| p(*a)).collect(),
    };
    let office = format!("http://{}:9980", ctx.name("collabora"));
    vec![
        occ(&["app:enable", "richdocuments"]),
        occ(&[
            "config:app:set",
            "richdocuments",
            "wopi_url",
            &format!("--value={office}"),
        ]),
        // Collabora calls back from the apps' bridge.
        occ(&[
            "config:app:set",
            "richdocuments",
            "wopi_allowlist",
            &format!("--value={}", ctx.config.apps.subnet),
        ]),
        occ(&["richdocuments:activate-config"]),
    ]
}
