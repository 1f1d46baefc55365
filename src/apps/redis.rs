//! Redis for an app: on that app's own internal network only, append-only
//! persistence in `commonscloud-<app>-redis` (Discourse keeps its job queue
//! there), and a password (`<app>-redis-password`): nothing else on the
//! network may read or write it.
//!
//! The official image reads no password from the environment or a file,
//! and the secret file is the daemon's (0600), which the `redis` user the
//! entrypoint drops to cannot read. So a shell, as root, reads it and gives
//! it to `redis-server` on its standard input (`-`, its last argument:
//! "read the configuration from stdin"), through the image's own
//! `docker-entrypoint.sh`, which keeps stdin across its drop to `redis`.
//! The password is then in no argument list (`ps`, `docker inspect`) and
//! in no environment variable; only `--appendonly` and `--maxmemory` are.

use super::postgres::{secret_mount, secret_path};
use super::{ContainerSpec, Ctx, Health, Mount, MountSource, SecretSpec, secret};
use crate::model::AppName;

/// The shell that starts redis, with the options as its arguments (`$@`).
/// The entrypoint inserts `--protected-mode no` after `redis-server`, so
/// `-` stays last, where redis-server looks for it.
fn start_script(password_file: &str) -> String {
    format!(
        "exec docker-entrypoint.sh redis-server \"$@\" - <<EOF\nrequirepass $(cat {password_file})\nEOF\n"
    )
}

/// The cache container for `app` and its password's secret.
pub fn container(
    ctx: &Ctx<'_>,
    app: AppName,
    image: String,
    memory_mb: u64,
) -> (ContainerSpec, SecretSpec) {
    let password = secret(&format!("{app}-redis-password"));
    let file = secret_path(&password.name);
    let mut c = ctx.base(app, &format!("{app}-redis"), image, memory_mb);
    c.entrypoint = Some(vec!["sh".into(), "-c".into(), start_script(&file)]);
    c.cmd = Some(vec![
        "redis-server".into(),
        "--appendonly".into(),
        "yes".into(),
        "--maxmemory".into(),
        format!("{}mb", memory_mb.saturating_sub(16).max(16)),
    ]);
    c.mounts = vec![
        Mount {
            source: MountSource::Volume(ctx.volume(app, "redis").name),
            target: "/data".into(),
            read_only: false,
        },
        secret_mount(&password.name),
    ];
    c.networks = vec![ctx.net_backend(app)];
    // redis-cli takes the password from REDISCLI_AUTH, never an argument;
    // an error reply (NOAUTH, WRONGPASS) is not a PONG.
    c.health = Some(Health {
        test: vec![
            "CMD".into(),
            "sh".into(),
            "-c".into(),
            format!("REDISCLI_AUTH=\"$(cat {file})\" redis-cli ping | grep -qx PONG"),
        ],
        interval_s: 10,
        timeout_s: 5,
        retries: 5,
        start_period_s: 5,
    });
    (c, password)
}
