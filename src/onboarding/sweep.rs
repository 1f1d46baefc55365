//! The `onboarding-sweep` task: every minute it expires timed-out requests
//! (their user names are free again) and keeps what the box records
//! bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::service::Onboarding;
use crate::config::Live;
use crate::store::{Store, with_store};

/// Runs until cancelled. `forget_addresses_after`: how long a sign-in
/// address stays known once unused (the console's rule, in seconds).
pub async fn run(
    onboarding: Arc<Onboarding>,
    config: Live,
    store: Arc<Mutex<Store>>,
    forget_addresses_after: i64,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {
                let now = crate::clock::unix_now();
                match onboarding.expire_due(now) {
                    Ok(0) => {}
                    Ok(n) => log::info!(task = "onboarding-sweep"; "{n} registration request(s) expired; their user names are free again"),
                    Err(e) => log::warn!(task = "onboarding-sweep"; "{e}"),
                }
                prune_records(&config, &store, now, forget_addresses_after);
            }
        }
    }
}

/// Keeps what the box records bounded: the audit log by age and size (as
/// `[log]` says) and the sign-in addresses people stopped using.
fn prune_records(config: &Live, store: &Mutex<Store>, now: i64, forget_addresses_after: i64) {
    let log = config.get().log.clone();
    let before = now - i64::from(log.audit_keep_days.days()) * 86_400;
    match with_store(store, |s| {
        s.prune_audit(before, log.audit_max_entries.entries())
    }) {
        Ok(0) => {}
        Ok(n) => {
            log::info!(task = "onboarding-sweep"; "{n} audit entries past [log] audit_keep_days or audit_max_entries removed")
        }
        Err(e) => log::warn!(task = "onboarding-sweep"; "pruning the audit log: {e}"),
    }
    let forgotten = now - forget_addresses_after;
    if let Err(e) = with_store(store, |s| s.forget_addresses_before(forgotten)) {
        log::warn!(task = "onboarding-sweep"; "forgetting old sign-in addresses: {e}");
    }
}
