//! What the apps must be told when someone's access changes (pure). The
//! directory is the truth, but the apps keep their own sessions and copies:
//! Discourse its sessions (60 days by default) and group memberships until
//! the next forum sign-in, Nextcloud its sessions and app passwords. So a
//! suspension, a reactivation or a removal from a collective becomes a list
//! of [`Action`]s, queued durably with the change that caused it
//! (`store::app_actions`) and carried out by `app_access`, which retries
//! until each lands.
//!
//! Everything here decides without IO: which actions an event needs, the
//! HTTP call or occ command each one is, what an answer means, and how long
//! to wait before trying again.

use serde::{Deserialize, Serialize};

use crate::model::AppName;

/// A change of someone's access, as the onboarding service made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Locked in the directory.
    Suspended {
        uid: String,
        /// Their entryUUID: DiscourseConnect's `external_id`.
        external_id: String,
        reason: String,
    },
    /// The lock lifted.
    Reactivated { uid: String, external_id: String },
    /// Out of a collective (and so of all its groups).
    LeftCollective {
        uid: String,
        external_id: String,
        collective: String,
    },
}

/// One thing to tell one app, serialised as the queue stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// `PUT /admin/users/{id}/suspend`: no sign-in, no posting.
    DiscourseSuspend { external_id: String, reason: String },
    /// `POST /admin/users/{id}/log_out`: every session ends now.
    DiscourseLogOut { external_id: String },
    /// `PUT /admin/users/{id}/unsuspend`.
    DiscourseUnsuspend { external_id: String },
    /// `DELETE /admin/users/{id}/groups/{group id}`: the collective's forum
    /// group, named by its slug.
    DiscourseLeaveGroup { external_id: String, group: String },
    /// `occ user:auth-tokens:delete <uid> --last-used-before=<far future>`:
    /// every session token and app password of theirs.
    NextcloudEndSessions { uid: String },
}

impl Action {
    pub fn app(&self) -> AppName {
        match self {
            Action::NextcloudEndSessions { .. } => AppName::Nextcloud,
            _ => AppName::Discourse,
        }
    }

    /// What it does, for the log and status.
    pub fn describe(&self) -> String {
        match self {
            Action::DiscourseSuspend { external_id, .. } => {
                format!("suspend forum user {external_id}")
            }
            Action::DiscourseLogOut { external_id } => {
                format!("log forum user {external_id} out")
            }
            Action::DiscourseUnsuspend { external_id } => {
                format!("lift the suspension of forum user {external_id}")
            }
            Action::DiscourseLeaveGroup { external_id, group } => {
                format!("remove forum user {external_id} from group {group}")
            }
            Action::NextcloudEndSessions { uid } => {
                format!("end {uid}'s Nextcloud sessions and app passwords")
            }
        }
    }
}

/// The actions an event needs, in the order they must land. Suspending
/// before logging out: a session that signs in again in between meets the
/// suspension. Apps that are not enabled skip theirs when they are carried
/// out (`app_access`), so the queue does not depend on the config of the
/// moment.
pub fn plan(event: &Event) -> Vec<Action> {
    match event {
        Event::Suspended {
            uid,
            external_id,
            reason,
        } => vec![
            Action::DiscourseSuspend {
                external_id: external_id.clone(),
                reason: reason.clone(),
            },
            Action::DiscourseLogOut {
                external_id: external_id.clone(),
            },
            Action::NextcloudEndSessions { uid: uid.clone() },
        ],
        Event::Reactivated { external_id, .. } => vec![Action::DiscourseUnsuspend {
            external_id: external_id.clone(),
        }],
        Event::LeftCollective {
            external_id,
            collective,
            ..
        } => vec![Action::DiscourseLeaveGroup {
            external_id: external_id.clone(),
            group: collective.clone(),
        }],
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(String),
    /// Try again later (the app is down, starting, or not set up yet).
    Retry(String),
    /// It will never work: shown, not retried.
    Failed(String),
}

/// One admin API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<serde_json::Value>,
}

/// Discourse suspends until a date: "forever", as its own interface does,
/// is far in the future. Lifted by an unsuspend.
pub const SUSPEND_UNTIL: &str = "3000-01-01T00:00:00Z";
/// Discourse's limit on a suspension's reason.
const REASON_MAX: usize = 300;

/// An entryUUID: hex digits and dashes. Anything else never reaches a URL.
fn uuid_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Finding the forum user: `GET /u/by-external/{external_id}.json`.
pub fn lookup_user(external_id: &str) -> Result<Call, Outcome> {
    if !uuid_ok(external_id) {
        return Err(Outcome::Failed(format!(
            "{external_id:?} is not an entryUUID"
        )));
    }
    Ok(Call {
        method: "GET",
        path: format!("/u/by-external/{external_id}.json"),
        body: None,
    })
}

/// Finding a group's id: `GET /groups/{name}.json`.
pub fn lookup_group(group: &str) -> Result<Call, Outcome> {
    let slug: crate::model::CollectiveSlug = group
        .parse()
        .map_err(|e: crate::model::Invalid| Outcome::Failed(e.0))?;
    Ok(Call {
        method: "GET",
        path: format!("/groups/{slug}.json"),
        body: None,
    })
}

/// What a lookup answered: the id, or that there is nothing to do (the
/// person never signed in to the forum, the group does not exist).
pub fn looked_up(status: u16, body: &[u8], key: &str) -> Result<u64, Outcome> {
    match status {
        200 => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v[key]["id"].as_u64())
            .ok_or_else(|| Outcome::Retry(format!("no {key} id in the answer"))),
        404 => Err(Outcome::Done(format!("no such {key} in the forum"))),
        _ => Err(answer(status, "looking up")),
    }
}

/// The request that carries out a Discourse action once the ids are known.
pub fn discourse_call(action: &Action, user_id: u64, group_id: Option<u64>) -> Option<Call> {
    let call = |method, path: String, body| Call { method, path, body };
    Some(match action {
        Action::DiscourseSuspend { reason, .. } => {
            let reason = if reason.trim().is_empty() {
                "Suspended by the collective's admins".to_owned()
            } else {
                reason.trim().chars().take(REASON_MAX).collect()
            };
            call(
                "PUT",
                format!("/admin/users/{user_id}/suspend"),
                Some(serde_json::json!({"suspend_until": SUSPEND_UNTIL, "reason": reason})),
            )
        }
        Action::DiscourseLogOut { .. } => {
            call("POST", format!("/admin/users/{user_id}/log_out"), None)
        }
        Action::DiscourseUnsuspend { .. } => {
            call("PUT", format!("/admin/users/{user_id}/unsuspend"), None)
        }
        Action::DiscourseLeaveGroup { .. } => call(
            "DELETE",
            format!("/admin/users/{user_id}/groups/{}", group_id?),
            None,
        ),
        Action::NextcloudEndSessions { .. } => return None,
    })
}

/// What Discourse's answer to an action means.
pub fn discourse_outcome(action: &Action, status: u16) -> Outcome {
    match (action, status) {
        (_, 200 | 204) => Outcome::Done(format!("HTTP {status}")),
        // Suspending someone already suspended: what we wanted.
        (Action::DiscourseSuspend { .. }, 409) => Outcome::Done("already suspended".into()),
        // The user or the group went meanwhile: nothing left to end.
        (_, 404) => Outcome::Done("gone from the forum".into()),
        _ => answer(status, "answering"),
    }
}

/// Any other status: the app's trouble is temporary (down, overloaded,
/// its API key not made yet) or it refused for good.
fn answer(status: u16, what: &str) -> Outcome {
    match status {
        403 | 429 | 500..=599 => Outcome::Retry(format!("Discourse answered HTTP {status} {what}")),
        _ => Outcome::Failed(format!("Discourse answered HTTP {status} {what}")),
    }
}

/// Every token Nextcloud has for them was last used before this.
pub const TOKENS_BEFORE: &str = "2100-01-01";

/// The occ arguments for a Nextcloud action. Nextcloud 31's
/// `user:auth-tokens:delete` takes a token id or `--last-used-before`
/// (`--all` came later); a date far ahead covers every session token and
/// app password. The command works on the token table directly, so it
/// also works for a person the LDAP backend no longer shows (suspended
/// people are out of its user filter).
pub fn occ_args(action: &Action) -> Result<Vec<String>, Outcome> {
    match action {
        Action::NextcloudEndSessions { uid } => {
            let uid: crate::model::Uid = uid
                .parse()
                .map_err(|e: crate::model::Invalid| Outcome::Failed(e.0))?;
            Ok(vec![
                "user:auth-tokens:delete".into(),
                uid.to_string(),
                format!("--last-used-before={TOKENS_BEFORE}"),
            ])
        }
        _ => Err(Outcome::Failed("not a Nextcloud action".into())),
    }
}

/// What occ's exit status means: anything but success is worth another
/// try (the container restarting, maintenance mode).
pub fn occ_outcome(exit_code: i64, output: &str) -> Outcome {
    if exit_code == 0 {
        Outcome::Done("occ succeeded".into())
    } else {
        Outcome::Retry(format!("occ exited {exit_code}: {}", output.trim()))
    }
}

/// Seconds before attempt `attempts + 1`: 5 s doubling to 10 minutes.
pub fn backoff(attempts: u32) -> i64 {
    5i64.saturating_mul(1 << attempts.min(10)).min(600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6f1c2a3e-0b1d-4c5e-9f00-123456789abc";

    fn suspended() -> Event {
        Event::Suspended {
            uid: "ana".into(),
            external_id: UUID.into(),
            reason: "spam".into(),
        }
    }

    #[test]
    fn a_suspension_suspends_and_logs_out_of_the_forum_and_ends_nextcloud_sessions() {
        let a = plan(&suspended());
        assert_eq!(
            a,
            [
                Action::DiscourseSuspend {
                    external_id: UUID.into(),
                    reason: "spam".into()
                },
                Action::DiscourseLogOut {
                    external_id: UUID.into()
                },
                Action::NextcloudEndSessions { uid: "ana".into() },
            ]
        );
        let apps: Vec<AppName> = a.iter().map(Action::app).collect();
        assert_eq!(
            apps,
            [AppName::Discourse, AppName::Discourse, AppName::Nextcloud]
        );
        assert_eq!(
            plan(&Event::Reactivated {
                uid: "ana".into(),
                external_id: UUID.into()
            }),
            [Action::DiscourseUnsuspend {
                external_id: UUID.into()
            }]
        );
        assert_eq!(
            plan(&Event::LeftCollective {
                uid: "ana".into(),
                external_id: UUID.into(),
                collective: "brest".into()
            }),
            [Action::DiscourseLeaveGroup {
                external_id: UUID.into(),
                group: "brest".into()
            }]
        );
    }

    #[test]
    fn actions_survive_the_queue() {
        for a in plan(&suspended()) {
            let text = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Action>(&text).unwrap(), a);
        }
    }

    #[test]
    fn the_calls_are_discourses_admin_routes() {
        assert_eq!(
            lookup_user(UUID).unwrap().path,
            format!("/u/by-external/{UUID}.json")
        );
        assert!(matches!(lookup_user("../admin"), Err(Outcome::Failed(_))));
        assert!(matches!(lookup_user(""), Err(Outcome::Failed(_))));
        assert_eq!(lookup_group("brest").unwrap().path, "/groups/brest.json");
        assert!(matches!(lookup_group("a/../b"), Err(Outcome::Failed(_))));
        let [s, l, _] = plan(&suspended()).try_into().unwrap();
        let call = discourse_call(&s, 7, None).unwrap();
        assert_eq!(
            (call.method, call.path.as_str()),
            ("PUT", "/admin/users/7/suspend")
        );
        let body = call.body.unwrap();
        assert_eq!(body["suspend_until"], SUSPEND_UNTIL);
        assert_eq!(body["reason"], "spam");
        let call = discourse_call(&l, 7, None).unwrap();
        assert_eq!(
            (call.method, call.path.as_str()),
            ("POST", "/admin/users/7/log_out")
        );
        let unsuspend = Action::DiscourseUnsuspend {
            external_id: UUID.into(),
        };
        assert_eq!(
            discourse_call(&unsuspend, 7, None).unwrap().path,
            "/admin/users/7/unsuspend"
        );
        let leave = Action::DiscourseLeaveGroup {
            external_id: UUID.into(),
            group: "brest".into(),
        };
        assert_eq!(discourse_call(&leave, 7, None), None);
        let call = discourse_call(&leave, 7, Some(41)).unwrap();
        assert_eq!(
            (call.method, call.path.as_str()),
            ("DELETE", "/admin/users/7/groups/41")
        );
        // Discourse wants a reason, of at most 300 characters.
        let blank = Action::DiscourseSuspend {
            external_id: UUID.into(),
            reason: " ".into(),
        };
        assert!(
            !discourse_call(&blank, 1, None).unwrap().body.unwrap()["reason"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        let long = Action::DiscourseSuspend {
            external_id: UUID.into(),
            reason: "x".repeat(1000),
        };
        let reason = discourse_call(&long, 1, None).unwrap().body.unwrap()["reason"]
            .as_str()
            .unwrap()
            .chars()
            .count();
        assert_eq!(reason, 300);
    }

    #[test]
    fn answers_are_done_retried_or_failed() {
        let [s, l, _] = plan(&suspended()).try_into().unwrap();
        assert!(matches!(discourse_outcome(&s, 200), Outcome::Done(_)));
        assert!(matches!(discourse_outcome(&s, 409), Outcome::Done(_)));
        assert!(matches!(discourse_outcome(&l, 409), Outcome::Failed(_)));
        assert!(matches!(discourse_outcome(&l, 404), Outcome::Done(_)));
        for retry in [403, 429, 500, 502, 503] {
            assert!(
                matches!(discourse_outcome(&s, retry), Outcome::Retry(_)),
                "{retry}"
            );
        }
        assert!(matches!(discourse_outcome(&s, 400), Outcome::Failed(_)));
        assert_eq!(looked_up(200, br#"{"user":{"id":12}}"#, "user"), Ok(12));
        assert!(matches!(looked_up(404, b"", "user"), Err(Outcome::Done(_))));
        assert!(matches!(
            looked_up(200, b"{}", "user"),
            Err(Outcome::Retry(_))
        ));
        assert!(matches!(
            looked_up(502, b"", "group"),
            Err(Outcome::Retry(_))
        ));
    }

    #[test]
    fn nextcloud_gets_the_tokens_deleted_for_a_valid_uid_only() {
        let a = Action::NextcloudEndSessions { uid: "ana".into() };
        assert_eq!(
            occ_args(&a).unwrap(),
            [
                "user:auth-tokens:delete",
                "ana",
                "--last-used-before=2100-01-01"
            ]
        );
        let bad = Action::NextcloudEndSessions {
            uid: "--all".into(),
        };
        assert!(matches!(occ_args(&bad), Err(Outcome::Failed(_))));
        assert!(matches!(occ_outcome(0, ""), Outcome::Done(_)));
        assert!(matches!(occ_outcome(1, "maintenance"), Outcome::Retry(_)));
    }

    #[test]
    fn retries_back_off_to_ten_minutes() {
        assert_eq!(backoff(0), 5);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(6), 320);
        assert_eq!(backoff(7), 600);
        assert_eq!(backoff(u32::MAX), 600);
    }
}
