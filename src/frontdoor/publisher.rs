//! The supervisor's side of the front door: the `front-door-files` task.
//! It writes what the front door serves with (its settings, the routes,
//! the local CA's pair: [`publish`]) and orders public certificates by
//! ACME ([`renew_acme`]), then logs and audits what happened. The front
//! door's own process (`frontdoor::run`) never runs any of it: it only
//! reads the files.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use super::{PUBLISHED_MODE, Paths, Published, Settings, acme, ca, ensure_published_dir, routes};
use crate::config::{Config, Live};
use crate::events::{Bus, Event};
use crate::store::{Store, audit_daemon};

/// Writes what the front door serves with: the routes the config wants and
/// certificates for every hostname, at start, on reload and at least every
/// hour (a leaf nearing its end is renewed). With `[front_door.acme]`, a
/// public certificate is ordered when `frontdoor::acme::decide` says so,
/// and the task looks again when the next renewal or retry is due. The
/// front door notices the files.
///
/// `appliance_id` names this appliance's CA (with the collective).
pub async fn run(
    config: Live,
    store: Arc<Mutex<Store>>,
    events: Bus,
    appliance_id: String,
    token: CancellationToken,
) {
    let mut heard = events.subscribe();
    let mut reloaded = false;
    loop {
        let config = config.get();
        let label = format!(
            "{} {}",
            config.collective.slug,
            appliance_id.chars().take(8).collect::<String>()
        );
        let c = config.clone();
        let done =
            tokio::task::spawn_blocking(move || publish(&c, &label, OffsetDateTime::now_utc()))
                .await;
        match done {
            Ok(Ok(p)) => {
                if p.routes {
                    log::info!(task = "front-door-files"; "wrote the front door's routes");
                }
                if p.new_ca {
                    log::info!(task = "front-door-files"; "made a new local certificate authority: browsers must trust it again");
                    audit_daemon(
                        &store,
                        "front-door-ca",
                        "made a new local certificate authority",
                    );
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
            r = renew_acme(&config, reloaded, now) => r,
        };
        report_acme(&store, run);
        reloaded = false;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = heard.next(|e| matches!(e, Event::ConfigReloaded(_))) => reloaded = true,
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
fn report_acme(store: &Mutex<Store>, run: AcmeRun) {
    const TASK: &str = "front-door-files";
    match run {
        AcmeRun::Off { removed: false } => {}
        AcmeRun::Off { removed: true } => {
            log::info!(task = TASK; "[front_door.acme] is no longer configured: removed the ACME certificate; the front door serves the local CA's");
            audit_daemon(store, "acme-removed", "ACME no longer configured");
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
            audit_daemon(store, "acme-issued", &detail);
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
            audit_daemon(store, "acme-failed", &error.to_string());
        }
        AcmeRun::Broken { error } => {
            log::error!(task = TASK; "ACME: {error}");
            audit_daemon(store, "acme-failed", &error.to_string());
        }
    }
}

/// What `publish` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wrote {
    /// The routes or the settings.
    pub routes: bool,
    pub new_ca: bool,
    pub new_leaf: bool,
}

/// Supervisor side: writes the front door's settings and the routes the
/// config wants (when they changed) and makes sure the certificates cover
/// every hostname and are not near their end. `label` names this
/// appliance's CA.
pub fn publish(
    config: &Config,
    label: &str,
    now: time::OffsetDateTime,
) -> Result<Wrote, ca::CaError> {
    let paths = Paths::new(config);
    let p = &paths.published;
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| ca::CaError::Io { what, path, source }
    };
    ensure_published_dir(p).map_err(io("creating", &p.dir))?;
    regroup_challenges(p).map_err(io("removing", &p.challenges))?;
    let routes = routes::Routes::from_config(config, &p.console_socket);
    let json = |value: serde_json::Result<Vec<u8>>, path: &Path| {
        value.map_err(|e| ca::CaError::Record {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let routes_json = json(serde_json::to_vec_pretty(&routes), &p.routes)?;
    let settings_json = json(
        serde_json::to_vec_pretty(&Settings::from_config(config)),
        &p.settings,
    )?;
    let mut changed = false;
    for (path, bytes) in [(&p.settings, &settings_json), (&p.routes, &routes_json)] {
        if std::fs::read(path).ok().as_deref() != Some(bytes.as_slice()) {
            ca::write_atomic(path, bytes, PUBLISHED_MODE)?;
            changed = true;
        }
    }
    let (new_ca, new_leaf) = ca::ensure(
        &paths.tls,
        label,
        config.collective.domain.as_str(),
        &routes.hostnames(),
        now,
    )?;
    Ok(Wrote {
        routes: changed,
        new_ca,
        new_leaf,
    })
}

/// What the supervisor's ACME step did.
#[derive(Debug)]
pub enum AcmeRun {
    /// `[front_door.acme]` is not configured; `removed` says whether an
    /// ACME certificate was there and was removed.
    Off { removed: bool },
    /// Nothing due: the certificate is good.
    Kept { renew_at: i64 },
    /// An order is due but waits after a failure.
    Waiting { reason: acme::Reason, until: i64 },
    Issued {
        reason: acme::Reason,
        outcome: acme::order::Outcome,
        /// The new certificate is already inside the renewal window
        /// (`renew_before_days` longer than the CA's certificates live): it
        /// will be ordered again at every check.
        renews_at_every_check: bool,
    },
    Failed {
        reason: acme::Reason,
        error: acme::AcmeError,
        retry_at: i64,
    },
    /// Reading or writing ACME's own files failed.
    Broken { error: acme::AcmeError },
}

/// Supervisor side: orders a public certificate by ACME when
/// `[front_door.acme]` is configured and the record says one is due (see
/// [`acme::decide`]), keeping the current one on failure; removes the ACME
/// pair when ACME is not configured. `retry_now` (a reload) skips a
/// backoff. Returns what happened and how many seconds until the next look.
pub async fn renew_acme(config: &Config, retry_now: bool, now: i64) -> (AcmeRun, i64) {
    let paths = Paths::new(config);
    let Some(settings) = &config.front_door.acme else {
        let run = match acme::forget(&paths.acme) {
            Ok(removed) => AcmeRun::Off { removed },
            Err(error) => AcmeRun::Broken { error },
        };
        return (run, acme::CHECK_EVERY_SECS);
    };
    let hosts = routes::Routes::from_config(config, &paths.published.console_socket).hostnames();
    let wanted = acme::Wanted {
        directory: settings.directory.as_str(),
        hosts: &hosts,
        renew_before_days: settings.renew_before_days.days(),
    };
    let mut record = match acme::read_record(&paths.acme.record) {
        Ok(r) => r,
        Err(error) => return (AcmeRun::Broken { error }, acme::CHECK_EVERY_SECS),
    };
    // A certificate of a release before the pair file becomes the pair.
    if let Err(error) = acme::migrate_legacy(&paths.acme) {
        return (AcmeRun::Broken { error }, acme::CHECK_EVERY_SECS);
    }
    // An ACME pair that is gone (deleted by hand) or does not load is
    // ordered again; the front door serves the local CA's meanwhile.
    if !ca::pair_loads(&paths.acme.pair) {
        record.issued = None;
    }
    if retry_now {
        record.retry_now();
    }
    let decision = acme::decide(&record, wanted, now);
    let look = acme::next_look(&decision, now);
    let reason = match decision {
        acme::Decision::Keep { renew_at } => return (AcmeRun::Kept { renew_at }, look),
        acme::Decision::Backoff { reason, until } => {
            return (AcmeRun::Waiting { reason, until }, look);
        }
        acme::Decision::Order(reason) => reason,
    };
    let (run, record) = match acme::order::issue(config, settings, &hosts, now).await {
        Ok(outcome) => {
            let record = acme::Record::succeeded(outcome.issued.clone());
            let renews_at_every_check =
                matches!(acme::decide(&record, wanted, now), acme::Decision::Order(_));
            let run = AcmeRun::Issued {
                reason,
                outcome,
                renews_at_every_check,
            };
            (run, record)
        }
        Err(error) => {
            let record = record.failed(now, error.to_string());
            let run = AcmeRun::Failed {
                reason,
                error,
                retry_at: record.retry_at,
            };
            (run, record)
        }
    };
    let look = acme::next_look(&acme::decide(&record, wanted, now), now);
    match acme::write_record(&paths.acme.record, &record) {
        Ok(()) => (run, look),
        // The certificate is in place; without its record the next look
        // orders again, so say so.
        Err(error) => (AcmeRun::Broken { error }, acme::CHECK_EVERY_SECS),
    }
}

/// An answers directory made before the published directory had the front
/// door's group (an older release) keeps its own group, and its files
/// would be unreadable to the front door: it holds nothing that lasts, so
/// it goes and is made again, inheriting the group.
fn regroup_challenges(published: &Published) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(dir), Ok(answers)) = (
        std::fs::metadata(&published.dir),
        std::fs::symlink_metadata(&published.challenges),
    ) else {
        return Ok(());
    };
    if answers.gid() != dir.gid() {
        std::fs::remove_dir_all(&published.challenges)?;
    }
    Ok(())
}
