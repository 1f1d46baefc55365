//! Redis for an app: on the internal database network only, append-only
//! persistence in `commonscloud-<app>-redis` (Discourse keeps its job queue
//! there).

use super::{ContainerSpec, Ctx, Health, Mount, MountSource};
use crate::model::AppName;

pub fn container(ctx: &Ctx<'_>, app: AppName, image: String, memory_mb: u64) -> ContainerSpec {
    let mut c = ctx.base(app, &format!("{app}-redis"), image, memory_mb);
    c.cmd = Some(vec![
        "redis-server".into(),
        "--appendonly".into(),
        "yes".into(),
        "--maxmemory".into(),
        format!("{}mb", memory_mb.saturating_sub(16).max(16)),
    ]);
    c.mounts = vec![Mount {
        source: MountSource::Volume(ctx.volume(app, "redis").name),
        target: "/data".into(),
        read_only: false,
    }];
    c.networks = vec![ctx.net_db()];
    c.health = Some(Health {
        test: vec!["CMD".into(), "redis-cli".into(), "ping".into()],
        interval_s: 10,
        timeout_s: 5,
        retries: 5,
        start_period_s: 5,
    });
    c
}
