//! The registration state machine (DESIGN §4). Pure: the time comes in as an
//! argument, and a transition returns the new state plus the effects the
//! service must carry out (mails, the LDAP entry), never performing them.
//!
//! ```text
//! register ─► email_unverified ──verify──► awaiting_validation ──approve──► approved ──password set──► active
//!                  │                           │  └──reject──► rejected
//!                  └──────────expire───────────┴──────────────► expired (uid released)
//! ```

use serde::{Deserialize, Serialize};

/// How long a mailed link (verify, set password, reset) stays valid: 48 h.
pub const LINK_TTL_SECS: i64 = 48 * 3600;
/// How long a verified request may wait for the collective's admins before it
/// expires and its uid is released: 30 days.
pub const VALIDATION_TTL_SECS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    EmailUnverified,
    AwaitingValidation,
    Approved,
    Active,
    Rejected,
    Expired,
}

impl State {
    pub const ALL: [State; 6] = [
        State::EmailUnverified,
        State::AwaitingValidation,
        State::Approved,
        State::Active,
        State::Rejected,
        State::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::EmailUnverified => "email_unverified",
            State::AwaitingValidation => "awaiting_validation",
            State::Approved => "approved",
            State::Active => "active",
            State::Rejected => "rejected",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the request still holds its uid and mail (no other request
    /// may take them).
    pub fn holds_uid(self) -> bool {
        matches!(
            self,
            State::EmailUnverified | State::AwaitingValidation | State::Approved
        )
    }

    /// Whether the request can still be expired by time.
    fn can_expire(self) -> bool {
        matches!(self, State::EmailUnverified | State::AwaitingValidation)
    }
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The person opened the mailed verification link.
    VerifyEmail,
    /// One of the collective's admins approved.
    Approve { by: String },
    /// One of the collective's admins rejected, saying why.
    Reject { by: String, reason: String },
    /// The person set their password through the mailed link.
    PasswordSet,
    /// Time ran out.
    Expire,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::VerifyEmail => "verify the email",
            Event::Approve { .. } => "approve",
            Event::Reject { .. } => "reject",
            Event::PasswordSet => "set the password",
            Event::Expire => "expire",
        }
    }
}

/// Work the service must do after a transition, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Mail the person a link to verify their address.
    MailVerifyLink,
    /// Mail the collective's admins that a request awaits them.
    MailAdmins,
    /// Create the person's entry and add them to the collective's members.
    CreateEntry,
    /// Mail the person a link to set their password.
    MailSetPasswordLink,
    /// Mail the person the admins' reason.
    MailRejected { reason: String },
    /// Free the uid and mail for others.
    ReleaseUid,
}

/// The request's timing, as the machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// When the request's current wait ends (Unix seconds), if it can.
    pub expires_at: Option<i64>,
}

/// The outcome of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub expires_at: Option<i64>,
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("cannot {event} a request that is {state}", state = .state.as_str())]
    NotAllowed { state: State, event: &'static str },
    #[error("this request expired: register again")]
    Expired,
    #[error("a rejection needs a reason, which is mailed to the person")]
    ReasonRequired,
}

/// A new registration: it waits for its address to be verified.
pub fn register(now: i64) -> Transition {
    Transition {
        state: State::EmailUnverified,
        expires_at: Some(now + LINK_TTL_SECS),
        effects: vec![Effect::MailVerifyLink],
    }
}

/// A registration through an admin's invitation to the same address: the
/// mailed invitation already proved the address, so the request goes
/// straight to the collective's admins.
pub fn register_invited(now: i64) -> Transition {
    Transition {
        state: State::AwaitingValidation,
        expires_at: Some(now + VALIDATION_TTL_SECS),
        effects: vec![Effect::MailAdmins],
    }
}

/// Applies `event` at time `now` to a request in `state`.
pub fn apply(
    state: State,
    clock: Clock,
    event: &Event,
    now: i64,
) -> Result<Transition, MachineError> {
    let not_allowed = || MachineError::NotAllowed {
        state,
        event: event.name(),
    };
    let timed_out = state.can_expire() && clock.expires_at.is_some_and(|t| now >= t);
    match (state, event) {
        (s, Event::Expire) if s.can_expire() => {
            if !timed_out {
                return Err(not_allowed());
            }
            Ok(Transition {
                state: State::Expired,
                expires_at: None,
                effects: vec![Effect::ReleaseUid],
            })
        }
        _ if timed_out => Err(MachineError::Expired),
        (State::EmailUnverified, Event::VerifyEmail) => Ok(Transition {
            state: State::AwaitingValidation,
            expires_at: Some(now + VALIDATION_TTL_SECS),
            effects: vec![Effect::MailAdmins],
        }),
        (State::AwaitingValidation, Event::Approve { .. }) => Ok(Transition {
            state: State::Approved,
            expires_at: None,
            effects: vec![Effect::CreateEntry, Effect::MailSetPasswordLink],
        }),
        (State::EmailUnverified | State::AwaitingValidation, Event::Reject { reason, .. }) => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(MachineError::ReasonRequired);
            }
            Ok(Transition {
                state: State::Rejected,
                expires_at: None,
                effects: vec![
                    Effect::MailRejected {
                        reason: reason.to_owned(),
                    },
                    Effect::ReleaseUid,
                ],
            })
        }
        (State::Approved, Event::PasswordSet) => Ok(Transition {
            state: State::Active,
            expires_at: None,
            effects: vec![],
        }),
        _ => Err(not_allowed()),
    }
}

/// Which of these requests time has run out for, at `now`.
pub fn due_for_expiry<I: Copy>(requests: &[(I, State, Clock)], now: i64) -> Vec<I> {
    requests
        .iter()
        .filter(|(_, s, c)| s.can_expire() && c.expires_at.is_some_and(|t| now >= t))
        .map(|(id, _, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(t: Option<i64>) -> Clock {
        Clock { expires_at: t }
    }

    #[test]
    fn the_happy_path() {
        let r = register(T0);
        assert_eq!(r.state, State::EmailUnverified);
        assert_eq!(r.expires_at, Some(T0 + LINK_TTL_SECS));
        assert_eq!(r.effects, [Effect::MailVerifyLink]);
        let v = apply(r.state, at(r.expires_at), &Event::VerifyEmail, T0 + 60).unwrap();
        assert_eq!(v.state, State::AwaitingValidation);
        assert_eq!(v.effects, [Effect::MailAdmins]);
        assert_eq!(v.expires_at, Some(T0 + 60 + VALIDATION_TTL_SECS));
        let a = apply(
            v.state,
            at(v.expires_at),
            &Event::Approve { by: "ana".into() },
            T0 + 3600,
        )
        .unwrap();
        assert_eq!(a.state, State::Approved);
        assert_eq!(
            a.effects,
            [Effect::CreateEntry, Effect::MailSetPasswordLink]
        );
        assert_eq!(a.expires_at, None);
        let p = apply(a.state, at(None), &Event::PasswordSet, T0 + 7200).unwrap();
        assert_eq!(p.state, State::Active);
        assert!(p.effects.is_empty());
    }

    #[test]
    fn a_link_used_too_late_is_refused_and_the_request_expires() {
        let r = register(T0);
        let late = T0 + LINK_TTL_SECS;
        assert_eq!(
            apply(r.state, at(r.expires_at), &Event::VerifyEmail, late),
            Err(MachineError::Expired)
        );
        let e = apply(r.state, at(r.expires_at), &Event::Expire, late).unwrap();
        assert_eq!(e.state, State::Expired);
        assert_eq!(e.effects, [Effect::ReleaseUid]);
        // One second earlier, it still worked and could not be expired.
        assert!(apply(r.state, at(r.expires_at), &Event::VerifyEmail, late - 1).is_ok());
        assert!(matches!(
            apply(r.state, at(r.expires_at), &Event::Expire, late - 1),
            Err(MachineError::NotAllowed { .. })
        ));
    }

    #[test]
    fn rejection_needs_a_reason_and_releases_the_uid() {
        let s = State::AwaitingValidation;
        let c = at(Some(T0 + VALIDATION_TTL_SECS));
        let blank = Event::Reject {
            by: "ana".into(),
            reason: "  ".into(),
        };
        assert_eq!(apply(s, c, &blank, T0), Err(MachineError::ReasonRequired));
        let why = Event::Reject {
            by: "ana".into(),
            reason: " Not a member of our collective. ".into(),
        };
        let t = apply(s, c, &why, T0).unwrap();
        assert_eq!(t.state, State::Rejected);
        assert_eq!(
            t.effects,
            [
                Effect::MailRejected {
                    reason: "Not a member of our collective.".into()
                },
                Effect::ReleaseUid
            ]
        );
    }

    #[test]
    fn only_the_listed_transitions_exist() {
        let events = [
            Event::VerifyEmail,
            Event::Approve { by: "a".into() },
            Event::Reject {
                by: "a".into(),
                reason: "r".into(),
            },
            Event::PasswordSet,
            Event::Expire,
        ];
        let allowed = [
            (State::EmailUnverified, 0),
            (State::EmailUnverified, 2),
            (State::AwaitingValidation, 1),
            (State::AwaitingValidation, 2),
            (State::Approved, 3),
        ];
        for s in State::ALL {
            for (i, e) in events.iter().enumerate() {
                if i == 4 {
                    continue; // expiry depends on time, tested above
                }
                let ok = apply(s, at(None), e, T0).is_ok();
                assert_eq!(ok, allowed.contains(&(s, i)), "{s:?} + {e:?}");
            }
        }
        // Terminal states stay terminal, even when old.
        for s in [
            State::Active,
            State::Rejected,
            State::Expired,
            State::Approved,
        ] {
            assert!(
                apply(s, at(Some(T0)), &Event::Expire, T0 + 1).is_err(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn sweep_picks_only_what_timed_out() {
        let reqs = [
            (1, State::EmailUnverified, at(Some(T0))),
            (2, State::EmailUnverified, at(Some(T0 + 1))),
            (3, State::AwaitingValidation, at(Some(T0 - 5))),
            (4, State::Approved, at(Some(T0 - 5))),
            (5, State::Rejected, at(None)),
        ];
        assert_eq!(due_for_expiry(&reqs, T0), vec![1, 3]);
    }

    #[test]
    fn states_round_trip_and_hold_uids_while_pending() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        let holding: Vec<State> = State::ALL.into_iter().filter(|s| s.holds_uid()).collect();
        assert_eq!(
            holding,
            [
                State::EmailUnverified,
                State::AwaitingValidation,
                State::Approved
            ]
        );
    }

    #[test]
    fn an_invited_registration_skips_the_address_check() {
        let t = register_invited(1000);
        assert_eq!(t.state, State::AwaitingValidation);
        assert_eq!(t.expires_at, Some(1000 + VALIDATION_TTL_SECS));
        assert_eq!(t.effects, vec![Effect::MailAdmins]);
        let clock = Clock {
            expires_at: t.expires_at,
        };
        let next = apply(t.state, clock, &Event::Approve { by: "bea".into() }, 2000).unwrap();
        assert_eq!(next.state, State::Approved);
    }
}
