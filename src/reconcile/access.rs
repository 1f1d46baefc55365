//! Carries queued access changes to the apps (adapter): the `app-access`
//! task. The onboarding service queues `apps::access` actions in the
//! transaction that records a suspension, a reactivation or a removal from
//! a collective, and announces them ([`Event::AppActionsQueued`]); this
//! drains them in the order they were queued, each app on its own (a forum
//! that is down holds up nothing of Nextcloud's), and an action that fails
//! for a reason that may pass (the app down, starting, its API key not
//! made yet) is tried again with backoff until it lands. What to send and
//! what an answer means are `apps::access`'s decisions; this only talks:
//! HTTP to Discourse's admin API on its published port, `occ` in the
//! Nextcloud container through Docker.
//!
//! Self-contained on purpose: it needs the config, the store and the bus.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::apps::access::{self, Action, Outcome};
use crate::clock::unix_now;
use crate::config::{Config, Live};
use crate::events::{Bus, Event};
use crate::model::AppName;
use crate::store::{Store, StoreError, with_store};

/// The longest the task sleeps without being woken.
const IDLE: Duration = Duration::from_secs(60);

/// Runs until cancelled: drains what is due, then sleeps until the next
/// retry, an announcement (something queued, a reload: then what waits is
/// tried again at once, an app may have been enabled or a key fixed) or
/// [`IDLE`].
pub async fn run(config: Live, store: Arc<Mutex<Store>>, events: Bus, token: CancellationToken) {
    let mut heard = events.subscribe();
    loop {
        let next = match drain(&config.get(), &store, unix_now()).await {
            Ok(next) => next,
            Err(e) => {
                log::error!(task = "app-access"; "{e}");
                Some(unix_now() + 30)
            }
        };
        let sleep = next
            .map(|at| Duration::from_secs(u64::try_from(at - unix_now()).unwrap_or(0)))
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = token.cancelled() => return,
            event = heard.next(|e| matches!(e, Event::AppActionsQueued | Event::ConfigReloaded(_))) => {
                if !matches!(event, Some(Event::AppActionsQueued)) {
                    let now = unix_now();
                    if let Err(e) = with_store(&store, |s| s.app_actions_due_now(now)) {
                        log::warn!(task = "app-access"; "cannot reschedule the apps' pending access changes: {e}");
                    }
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass over the queue at `now`: every due action whose app has
/// nothing older still waiting. Returns when the next one is due.
pub async fn drain(
    config: &Config,
    store: &Mutex<Store>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let rows = with_store(store, Store::app_actions_pending)?;
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut next: Option<i64> = None;
    fn later(at: i64, next: &mut Option<i64>) {
        *next = Some(next.map_or(at, |n| n.min(at)));
    }
    for row in rows {
        if held.contains(&row.app) {
            continue;
        }
        if row.next_attempt_at > now {
            held.insert(row.app.clone());
            later(row.next_attempt_at, &mut next);
            continue;
        }
        let outcome = match serde_json::from_str::<Action>(&row.action) {
            Err(e) => Outcome::Failed(format!("not an action this release knows: {e}")),
            Ok(a) if !config.apps.enabled.contains(&a.app()) => {
                with_store(store, |s| {
                    s.app_action_settle(
                        row.id,
                        "skipped",
                        &format!("{} is not enabled", a.app()),
                        now,
                    )
                })?;
                continue;
            }
            Ok(a) => {
                let outcome = carry_out(config, &a).await;
                log_outcome(&a, &outcome, row.attempts);
                outcome
            }
        };
        match outcome {
            Outcome::Done(note) => with_store(store, |s| {
                s.atomically(|s| {
                    s.app_action_settle(row.id, "done", &note, now)?;
                    s.audit(now, "daemon", "app-access", &describe(&row.action, &note))
                })
            })?,
            Outcome::Failed(why) => with_store(store, |s| {
                s.atomically(|s| {
                    s.app_action_settle(row.id, "failed", &why, now)?;
                    s.audit(
                        now,
                        "daemon",
                        "app-access-failed",
                        &describe(&row.action, &why),
                    )
                })
            })?,
            Outcome::Retry(why) => {
                let at = now + access::backoff(row.attempts);
                with_store(store, |s| s.app_action_retry(row.id, &why, at))?;
                held.insert(row.app.clone());
                later(at, &mut next);
            }
        }
    }
    Ok(next)
}

fn describe(action: &str, note: &str) -> String {
    let what = serde_json::from_str::<Action>(action)
        .map(|a| a.describe())
        .unwrap_or_else(|_| action.to_owned());
    format!("{what}: {note}")
}

fn log_outcome(a: &Action, o: &Outcome, attempts: u32) {
    match o {
        Outcome::Done(note) => log::info!(task = "app-access"; "{}: {note}", a.describe()),
        Outcome::Retry(why) => log::warn!(
            task = "app-access";
            "{}: {why}; trying again in {} s", a.describe(), access::backoff(attempts)
        ),
        Outcome::Failed(why) => {
            log::error!(task = "app-access"; "{}: {why}; given up", a.describe())
        }
    }
}

/// One attempt at one action.
async fn carry_out(config: &Config, a: &Action) -> Outcome {
    match a.app() {
        AppName::Nextcloud => nextcloud(config, a).await,
        _ => discourse(config, a).await,
    }
}

async fn nextcloud(config: &Config, a: &Action) -> Outcome {
    let args = match access::occ_args(a) {
        Ok(args) => args,
        Err(o) => return o,
    };
    let container = format!("{}-nextcloud", config.apps.prefix);
    let run = async {
        let docker =
            crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(60)).await?;
        let mut cmd = vec!["php".to_owned(), "occ".to_owned()];
        cmd.extend(args);
        crate::docker::objects::exec(&docker, &container, "www-data", Some("/var/www/html"), cmd)
            .await
    };
    match run.await {
        Ok(out) => access::occ_outcome(out.exit_code, &format!("{}{}", out.stdout, out.stderr)),
        Err(e) => Outcome::Retry(format!("Docker: {e}")),
    }
}

async fn discourse(config: &Config, a: &Action) -> Outcome {
    let desired = match crate::apps::desired(config) {
        Ok(d) => d,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let container = format!("{}-discourse", config.apps.prefix);
    let secrets = &config.paths.secrets_dir;
    let what = a.describe();
    let call = |c: access::Call| {
        let (desired, container, what) = (&desired, &container, &what);
        async move {
            crate::reconcile::apply::discourse_api(
                desired, secrets, container, what, c.method, &c.path, c.body,
            )
            .await
            .map_err(|e| Outcome::Retry(e.to_string()))
        }
    };
    let inner = async {
        let external_id = match a {
            Action::DiscourseSuspend { external_id, .. }
            | Action::DiscourseLogOut { external_id }
            | Action::DiscourseUnsuspend { external_id }
            | Action::DiscourseLeaveGroup { external_id, .. } => external_id,
            Action::NextcloudEndSessions { .. } => {
                return Err(Outcome::Failed("not a Discourse action".into()));
            }
        };
        let (status, body) = call(access::lookup_user(external_id)?).await?;
        let user = access::looked_up(status, &body, "user")?;
        let group = match a {
            Action::DiscourseLeaveGroup { group, .. } => {
                let (status, body) = call(access::lookup_group(group)?).await?;
                Some(access::looked_up(status, &body, "group")?)
            }
            _ => None,
        };
        let c = access::discourse_call(a, user, group)
            .ok_or_else(|| Outcome::Failed("no call for this action".into()))?;
        let (status, _) = call(c).await?;
        Ok(access::discourse_outcome(a, status))
    };
    match inner.await {
        Ok(o) | Err(o) => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(a: &Action) -> (String, String) {
        (a.app().to_string(), serde_json::to_string(a).unwrap())
    }

    /// Without IO: apps that are not enabled skip their actions, and an
    /// action waiting for its retry holds back the later ones of its app
    /// (never of another).
    #[tokio::test]
    async fn the_queue_keeps_each_apps_order_and_skips_disabled_apps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Mutex::new(Store::open(dir.path()).unwrap());
        let mut config = crate::config::testing::config("rpi5-8gb", "");
        config.apps.enabled = Vec::new();
        let uuid = "6f1c2a3e-0b1d-4c5e-9f00-123456789abc".to_owned();
        let [suspend, log_out, tokens] = access::plan(&access::Event::Suspended {
            uid: "ana".into(),
            external_id: uuid,
            reason: String::new(),
        })
        .try_into()
        .unwrap();
        {
            let s = store.lock().unwrap();
            s.app_actions_enqueue(&[action(&suspend), action(&log_out), action(&tokens)], 100)
                .unwrap();
            let first = s.app_actions_pending().unwrap()[0].id;
            s.app_action_retry(first, "HTTP 502", 200).unwrap();
            s.app_actions_enqueue(&[("discourse".into(), "{\"kind\":\"nope\"}".into())], 100)
                .unwrap();
        }
        let next = drain(&config, &store, 150).await.unwrap();
        assert_eq!(next, Some(200), "the held forum action is due at 200");
        let left: Vec<String> = store
            .lock()
            .unwrap()
            .app_actions_pending()
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        // The forum's three wait behind the first; Nextcloud's went
        // (skipped: not enabled).
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.iter().all(|a| !a.contains("nextcloud_end_sessions")));
        // Once due, the forum's are skipped too (not enabled), and the one
        // this release cannot read fails.
        assert_eq!(drain(&config, &store, 200).await.unwrap(), None);
        let s = store.lock().unwrap();
        assert!(s.app_actions_pending().unwrap().is_empty());
        let st = s.app_action_stats().unwrap();
        assert_eq!(st.failed, 1);
    }
}
