//! The `front-door-files` task, the supervisor's side of the front door:
//! the files it serves with, and ACME.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use crate::appliance::Appliance;

/// Writes what the front door serves with: the routes the config wants and
/// certificates for every hostname, at start, on reload and at least every
/// hour (a leaf nearing its end is renewed). With `[front_door.acme]`, a
/// public certificate is ordered when `frontdoor::acme::decide` says so,
/// and the task looks again when the next renewal or retry is due. The
/// front door notices the files.
pub async fn run(shared: Arc<Appliance>, token: CancellationToken) {
    let mut reloaded = false;
    loop {
        let config = shared.config();
        let label = format!(
            "{} {}",
            config.collective.slug,
            shared.appliance_id.chars().take(8).collect::<String>()
        );
        let c = config.clone();
        let done = tokio::task::spawn_blocking(move || {
            crate::frontdoor::publish(&c, &label, OffsetDateTime::now_utc())
        })
        .await;
        match done {
            Ok(Ok(p)) => {
                if p.routes {
                    log::info!(task = "front-door-files"; "wrote the front door's routes");
                }
                if p.new_ca {
                    log::info!(task = "front-door-files"; "made a new local certificate authority: browsers must trust it again");
                    shared.audit("front-door-ca", "made a new local certificate authority");
                }
                if p.new_leaf {
                    log::info!(task = "front-door-files"; "issued the front door's certificate for every hostname");
                }
            }
            Ok(Err(e)) => log::error!(task = "front-door-files"; "{e}"),
            Err(e) => log::error!(task = "front-door-files"; "{e}"),
        }
        let now = crate::clock::unix_now();
        // An order can take minutes (validation): shutdown does not wait
        // for it. Dropping it removes its challenge files and leaves the
        // current certificate in place.
        let (run, look) = tokio::select! {
            _ = token.cancelled() => return,
            r = crate::frontdoor::renew_acme(&config, reloaded, now) => r,
        };
        report_acme(&shared, run);
        reloaded = false;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = shared.front_door_reload.notified() => reloaded = true,
            _ = tokio::time::sleep(Duration::from_secs(look.max(1).unsigned_abs())) => {}
        }
    }
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Logs and audits what the ACME step did; keys are never in it.
fn report_acme(shared: &Appliance, run: crate::frontdoor::AcmeRun) {
    use crate::frontdoor::AcmeRun;
    const TASK: &str = "front-door-files";
    match run {
        AcmeRun::Off { removed: false } => {}
        AcmeRun::Off { removed: true } => {
            log::info!(task = TASK; "[front_door.acme] is no longer configured: removed the ACME certificate; the front door serves the local CA's");
            shared.audit("acme-removed", "ACME no longer configured");
        }
        AcmeRun::Kept { renew_at } => {
            log::debug!(task = TASK; "ACME certificate good; renewal due {}", rfc3339(renew_at));
        }
        AcmeRun::Waiting { reason, until } => {
            log::info!(task = TASK; "ACME order due ({reason}) after a failure: next try {} (a reload tries at once)", rfc3339(until));
        }
        AcmeRun::Issued {
            reason,
            outcome,
            renews_at_every_check,
        } => {
            let i = &outcome.issued;
            let detail = format!(
                "{} from {} ({reason}), valid until {}",
                i.hosts.join(", "),
                i.directory,
                rfc3339(i.not_after)
            );
            log::info!(
                task = TASK;
                "ACME certificate issued for {detail}; HTTP-01 answered by the front door for {} hostname(s){}",
                outcome.answered.len(),
                if outcome.new_account { ", with a new ACME account" } else { "" }
            );
            shared.audit("acme-issued", &detail);
            if renews_at_every_check {
                log::warn!(task = TASK; "front_door.acme.renew_before_days is longer than the certificate lives ({} days): it will be ordered again at every check; lower it (30 suits 90-day certificates)", (i.not_after - i.not_before) / 86_400);
            }
        }
        AcmeRun::Failed {
            reason,
            error,
            retry_at,
        } => {
            log::error!(task = TASK; "ACME order ({reason}) failed, keeping the current certificate: {error}. Next try {} (a reload tries at once)", rfc3339(retry_at));
            shared.audit("acme-failed", &error.to_string());
        }
        AcmeRun::Broken { error } => {
            log::error!(task = TASK; "ACME: {error}");
            shared.audit("acme-failed", &error.to_string());
        }
    }
}
