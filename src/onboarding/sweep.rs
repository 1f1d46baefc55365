//! The `onboarding-sweep` task: expires requests, keeps records bounded.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::appliance::Appliance;

/// Every minute: expires timed-out requests and prunes old records.
pub async fn run(shared: Arc<Appliance>, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {
                let now = crate::clock::unix_now();
                match shared.onboarding().expire_due(now) {
                    Ok(0) => {}
                    Ok(n) => log::info!(task = "onboarding-sweep"; "{n} registration request(s) expired; their user names are free again"),
                    Err(e) => log::warn!(task = "onboarding-sweep"; "{e}"),
                }
                prune_records(&shared, now);
            }
        }
    }
}

/// Keeps what the box records bounded: the audit log by age and size (as
/// `[log]` says) and the sign-in addresses people stopped using.
fn prune_records(shared: &Appliance, now: i64) {
    let log = shared.config().log.clone();
    let before = now - i64::from(log.audit_keep_days.days()) * 86_400;
    match shared.with_store(|s| s.prune_audit(before, log.audit_max_entries.entries())) {
        Ok(0) => {}
        Ok(n) => {
            log::info!(task = "onboarding-sweep"; "{n} audit entries past [log] audit_keep_days or audit_max_entries removed")
        }
        Err(e) => log::warn!(task = "onboarding-sweep"; "pruning the audit log: {e}"),
    }
    let forgotten = now - crate::web::session::KNOWN_FOR_SECS;
    if let Err(e) = shared.with_store(|s| s.forget_addresses_before(forgotten)) {
        log::warn!(task = "onboarding-sweep"; "forgetting old sign-in addresses: {e}");
    }
}
