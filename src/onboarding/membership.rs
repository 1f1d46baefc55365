//! Rules for membership after registration: joining another collective,
//! invitations, admin actions. Pure: a person as the directory has them and
//! the action come in; a refusal or what to change comes out.

use crate::directory::people::Person;
use crate::directory::tree::BUILTIN_GROUPS;
use crate::model::{CollectiveSlug, Name};

/// How long an invitation's link stays valid: 14 days.
pub const INVITE_TTL_SECS: i64 = 14 * 86_400;
/// How long a password reset link stays valid: 2 hours (it grants the
/// account, so shorter than the other links).
pub const RESET_TTL_SECS: i64 = 2 * 3600;

/// Why an action cannot be done; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no person `{0}` in the directory: check the user name with `commonscloud user list`")]
    NoPerson(String),
    #[error("no collective `{0}` here: see `commonscloud collective list`")]
    NoCollective(String),
    #[error("no group `{group}` in {collective}: create it first")]
    NoGroup { collective: String, group: String },
    #[error("`{uid}` is suspended: reactivate the account first")]
    Suspended { uid: String },
    #[error("`{uid}` is already a member of {collective}")]
    AlreadyMember { uid: String, collective: String },
    #[error("`{uid}` is not a member of {collective}")]
    NotMember { uid: String, collective: String },
    #[error(
        "{collective} is the only collective of `{uid}`: suspend the account instead, or let them join another collective first"
    )]
    OnlyCollective { uid: String, collective: String },
    #[error("`{0}` is a built-in group of every collective: choose another name")]
    BuiltinGroup(String),
    #[error("`{0}` already exists")]
    Exists(String),
    #[error(
        "`{0}` is a person's user name here (the forum keeps users and groups in one namespace): choose another slug"
    )]
    SlugIsLogin(String),
    #[error("{what} {id} was already {state}")]
    Decided {
        what: &'static str,
        id: i64,
        state: String,
    },
}

/// An active person may ask to join (or be added to) a collective they are
/// not in yet.
pub fn check_join(p: &Person, slug: &CollectiveSlug) -> Result<(), Refusal> {
    if p.suspended {
        return Err(Refusal::Suspended { uid: p.uid.clone() });
    }
    if p.is_member(slug) {
        return Err(Refusal::AlreadyMember {
            uid: p.uid.clone(),
            collective: slug.to_string(),
        });
    }
    Ok(())
}

/// What removing a person from a collective changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Every group of the collective they are in (`members` last, so that a
    /// cut-short removal still shows them as a member and can be retried).
    pub groups: Vec<String>,
    /// Their new primary collective, when it was this one.
    pub new_primary: Option<CollectiveSlug>,
}

pub fn plan_removal(p: &Person, slug: &CollectiveSlug) -> Result<Removal, Refusal> {
    if !p.is_member(slug) {
        return Err(Refusal::NotMember {
            uid: p.uid.clone(),
            collective: slug.to_string(),
        });
    }
    let others: Vec<CollectiveSlug> = p.collectives().into_iter().filter(|c| c != slug).collect();
    let new_primary =
        if p.primary_collective.as_ref() == Some(slug) || p.primary_collective.is_none() {
            Some(
                others
                    .first()
                    .cloned()
                    .ok_or_else(|| Refusal::OnlyCollective {
                        uid: p.uid.clone(),
                        collective: slug.to_string(),
                    })?,
            )
        } else {
            None
        };
    let mut groups: Vec<String> = p
        .groups
        .iter()
        .filter(|(s, g)| s == slug && g != "members")
        .map(|(_, g)| g.clone())
        .collect();
    groups.push("members".into());
    Ok(Removal {
        groups,
        new_primary,
    })
}

/// Promotion, and membership of an ACL group, need an active member.
pub fn check_active_member(p: &Person, slug: &CollectiveSlug) -> Result<(), Refusal> {
    if p.suspended {
        return Err(Refusal::Suspended { uid: p.uid.clone() });
    }
    if !p.is_member(slug) {
        return Err(Refusal::NotMember {
            uid: p.uid.clone(),
            collective: slug.to_string(),
        });
    }
    Ok(())
}

/// A name for a new ACL group: valid, and not a built-in group.
pub fn check_group_name(name: &str) -> Result<Name, String> {
    let n: Name = name
        .trim()
        .parse()
        .map_err(|e: crate::model::Invalid| e.0)?;
    if BUILTIN_GROUPS.contains(&n.as_str()) {
        return Err(Refusal::BuiltinGroup(n.to_string()).to_string());
    }
    Ok(n)
}

/// The states of a join request.
pub const JOIN_PENDING: &str = "pending";
pub const JOIN_APPROVED: &str = "approved";
pub const JOIN_REJECTED: &str = "rejected";

/// A join request may be decided once, while pending.
pub fn check_decidable(what: &'static str, id: i64, state: &str) -> Result<(), Refusal> {
    if state == JOIN_PENDING {
        Ok(())
    } else {
        Err(Refusal::Decided {
            what,
            id,
            state: state.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slug(s: &str) -> CollectiveSlug {
        s.parse().unwrap()
    }

    fn person(groups: &[(&str, &str)], primary: &str) -> Person {
        Person {
            dn: "uid=ana,ou=people,dc=q,dc=org".into(),
            uid: "ana".into(),
            display_name: "Ana".into(),
            mail: "ana@q.org".into(),
            language: "en".into(),
            suspended: false,
            primary_collective: Some(slug(primary)),
            home_node: "box.q.org".into(),
            groups: groups
                .iter()
                .map(|(s, g)| (slug(s), (*g).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn joining_needs_an_active_person_outside_the_collective() {
        let p = person(&[("quimper", "members")], "quimper");
        assert_eq!(check_join(&p, &slug("brest")), Ok(()));
        assert!(matches!(
            check_join(&p, &slug("quimper")),
            Err(Refusal::AlreadyMember { .. })
        ));
        let mut s = p.clone();
        s.suspended = true;
        assert!(matches!(
            check_join(&s, &slug("brest")),
            Err(Refusal::Suspended { .. })
        ));
    }

    #[test]
    fn removal_leaves_every_group_members_last_and_moves_the_primary() {
        let p = person(
            &[
                ("quimper", "admins"),
                ("quimper", "members"),
                ("quimper", "editors"),
                ("brest", "members"),
            ],
            "quimper",
        );
        let r = plan_removal(&p, &slug("quimper")).unwrap();
        assert_eq!(r.groups, ["admins", "editors", "members"]);
        assert_eq!(r.new_primary, Some(slug("brest")));
        // Not the primary: it stays.
        let r = plan_removal(&p, &slug("brest")).unwrap();
        assert_eq!((r.groups, r.new_primary), (vec!["members".into()], None));
        // The only collective: refused, with what to do instead.
        let only = person(&[("quimper", "members")], "quimper");
        let e = plan_removal(&only, &slug("quimper")).unwrap_err();
        assert!(e.to_string().contains("suspend the account instead"), "{e}");
        assert!(matches!(
            plan_removal(&only, &slug("brest")),
            Err(Refusal::NotMember { .. })
        ));
    }

    #[test]
    fn promotion_needs_an_active_member() {
        let p = person(&[("quimper", "members")], "quimper");
        assert_eq!(check_active_member(&p, &slug("quimper")), Ok(()));
        assert!(check_active_member(&p, &slug("brest")).is_err());
        let mut s = p;
        s.suspended = true;
        assert!(check_active_member(&s, &slug("quimper")).is_err());
    }

    #[test]
    fn group_names_are_checked_and_builtins_refused() {
        assert_eq!(check_group_name(" editors ").unwrap().as_str(), "editors");
        for bad in ["members", "admins", "Editors", "a", "x,y", "*)(cn=*", ""] {
            let e = check_group_name(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(check_group_name("admins").unwrap_err().contains("built-in"));
    }

    #[test]
    fn requests_are_decided_once() {
        assert_eq!(check_decidable("join request", 1, JOIN_PENDING), Ok(()));
        let e = check_decidable("join request", 1, JOIN_APPROVED).unwrap_err();
        assert_eq!(e.to_string(), "join request 1 was already approved");
        let _ = JOIN_REJECTED;
    }
}
