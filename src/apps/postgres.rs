//! PostgreSQL for an app: on that app's own internal network only, its data
//! in `commonscloud-<app>-db`, its password from a secret file
//! (`POSTGRES_PASSWORD_FILE`, which the official image reads).

use super::{ContainerSpec, Ctx, Health, Mount, MountSource, SecretSpec, Value, secret};
use crate::model::AppName;

/// Where a secret file appears inside a container.
pub fn secret_path(name: &str) -> String {
    format!("/run/secrets/{name}")
}

/// A read-only bind of a secret file.
pub fn secret_mount(name: &str) -> Mount {
    Mount {
        source: MountSource::Secret(name.into()),
        target: secret_path(name),
        read_only: true,
    }
}

/// The database container for `app`; its database and user are both named
/// after the app. Returns the container and the password's secret.
pub fn container(
    ctx: &Ctx<'_>,
    app: AppName,
    image: String,
    memory_mb: u64,
) -> (ContainerSpec, SecretSpec) {
    let role = format!("{app}-db");
    let password = secret(&format!("{app}-db-password"));
    let mut c = ctx.base(app, &role, image, memory_mb);
    let db = app.to_string();
    c.env.insert("POSTGRES_DB".into(), Value::plain(&db));
    c.env.insert("POSTGRES_USER".into(), Value::plain(&db));
    c.env.insert(
        "POSTGRES_PASSWORD_FILE".into(),
        Value::plain(secret_path(&password.name)),
    );
    c.mounts = vec![
        Mount {
            source: MountSource::Volume(ctx.volume(app, "db").name),
            target: "/var/lib/postgresql/data".into(),
            read_only: false,
        },
        secret_mount(&password.name),
    ];
    c.networks = vec![ctx.net_backend(app)];
    // Over TCP: while the official entrypoint initializes (database not yet
    // created, init scripts running), its temporary server listens on the
    // socket only, and a socket check would already pass.
    c.health = Some(Health {
        test: vec![
            "CMD".into(),
            "pg_isready".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-U".into(),
            db.clone(),
            "-d".into(),
            db,
        ],
        interval_s: 10,
        timeout_s: 5,
        retries: 5,
        start_period_s: 30,
    });
    (c, password)
}
