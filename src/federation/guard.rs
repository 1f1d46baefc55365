//! The federation's safety rules (pure): how the link to the alliance must
//! be protected, and which deletions the down-sync may make here. No IO;
//! every input is an argument.
//!
//! - [`link_security`]: `ldaps://`, or `ldap://` upgraded by StartTLS; plain
//!   `ldap://` (password hashes in clear) only when the config says
//!   `insecure = true`.
//! - [`Protected`] and [`deletions`]: the sync never deletes this box's
//!   collective (nor anything under it), a person homed here or the local
//!   tree's containers, and the
//!   deletions of one refresh that would delete more than a sane share of the
//!   local copy wait for an admin.

use std::collections::BTreeSet;

use super::rules::normalize_dn;
use crate::directory::tree::Tree;
use crate::model::CollectiveSlug;

// How a link is protected is the LDAP adapter's vocabulary; which one a
// URL gets is decided here (`link_security`).
pub use crate::directory::alliance::LinkSecurity;

/// Why a link to the alliance is refused before it is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkSecurityError {
    #[error(
        "{url} is plain LDAP: the alliance's password hashes and this box's own password would cross the network in clear. Use ldaps://, or StartTLS on ldap:// (`starttls = true` under [alliance] in the config, or `alliance join --starttls`); only on a test network, set `insecure = true` under [alliance] in the config"
    )]
    Plain { url: String },
    #[error(
        "{url} is TLS from its first byte, so StartTLS does not apply: remove `starttls = true` under [alliance] (or `--starttls`)"
    )]
    StartTlsOnLdaps { url: String },
    #[error("`{url}` is not an LDAP URL: expected ldaps://host[:port] or ldap://host[:port]")]
    Scheme { url: String },
}

/// How to protect the link to `url`: `starttls` asks for StartTLS on an
/// `ldap://` URL; `insecure` allows plain `ldap://` and nothing else (it
/// never weakens TLS: certificates are checked the same).
pub fn link_security(
    url: &str,
    starttls: bool,
    insecure: bool,
) -> Result<LinkSecurity, LinkSecurityError> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("ldaps://") {
        if starttls {
            return Err(LinkSecurityError::StartTlsOnLdaps {
                url: url.to_owned(),
            });
        }
        Ok(LinkSecurity::Ldaps)
    } else if lower.starts_with("ldap://") {
        match (starttls, insecure) {
            (true, _) => Ok(LinkSecurity::StartTls),
            (false, true) => Ok(LinkSecurity::Plain),
            (false, false) => Err(LinkSecurityError::Plain {
                url: url.to_owned(),
            }),
        }
    } else {
        Err(LinkSecurityError::Scheme {
            url: url.to_owned(),
        })
    }
}

// The limits are `[alliance]` values (`config`, which fills them); the
// rule that applies them is here.
pub use crate::config::DeletionLimits;

impl DeletionLimits {
    /// Whether deleting `n` of the `local_copy` entries copied here is past
    /// both limits.
    pub fn exceeded(self, n: usize, local_copy: usize) -> bool {
        let copy = local_copy.max(n) as u128;
        n > self.entries as usize && (n as u128) * 100 > u128::from(self.percent) * copy
    }
}

/// What the down-sync never deletes here, whatever the alliance says: this
/// box's collective (its entry and everything under it: its groups and
/// services, which its admins manage here), every person homed here (their
/// home owns their account), and the containers of the local tree (the
/// suffix, `ou=people`, `ou=services`, …), which other entries hang from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    collective: String,
    node: String,
    skeleton: BTreeSet<String>,
}

impl Protected {
    /// `local`: the local tree; `collective`: this box's; `node`: its node
    /// name (its people's `commonsHomeNode`).
    pub fn new(local: &Tree, collective: &CollectiveSlug, node: &str) -> Self {
        let skeleton = [
            local.suffix().to_owned(),
            local.people(),
            local.collectives(),
            local.services(),
            local.system(),
            local.policies(),
        ]
        .iter()
        .map(|d| normalize_dn(d))
        .collect();
        Self {
            collective: normalize_dn(&local.collective(collective)),
            node: node.trim().to_owned(),
            skeleton,
        }
    }

    /// Whether `dn` (local terms), whose `commonsHomeNode` here is
    /// `home_node` ("" when it has none), is protected.
    pub fn covers(&self, dn: &str, home_node: &str) -> bool {
        let d = normalize_dn(dn);
        let c = &self.collective;
        let in_collective = d == *c || d.ends_with(&format!(",{c}"));
        let homed_here =
            !home_node.trim().is_empty() && home_node.trim().eq_ignore_ascii_case(&self.node);
        in_collective || homed_here || self.skeleton.contains(&d)
    }
}

/// What to do with the deletions the sync asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletions<K> {
    /// Delete `delete` here. `keep` are protected: they stay, and only
    /// their link to the alliance's entry is forgotten.
    Apply { delete: Vec<K>, keep: Vec<K> },
    /// Past the limits: nothing is deleted or forgotten until an admin
    /// confirms these very entries.
    Hold,
}

/// Judges the deletions one refresh (or one change) asks for. `candidates`:
/// each entry with whether it is [`Protected`] (counted all the same: a
/// refresh that drops this box's own people is a faulty one);
/// `local_copy`: the entries copied here from the alliance, candidates
/// included; `confirmed`: the entries of a held refresh an admin confirmed.
/// Past the limits, the deletions are held unless every one was confirmed.
pub fn deletions<K: Ord + Clone>(
    candidates: &[(K, bool)],
    local_copy: usize,
    limits: DeletionLimits,
    confirmed: Option<&BTreeSet<K>>,
) -> Deletions<K> {
    let mut seen = BTreeSet::new();
    let unique: Vec<&(K, bool)> = candidates
        .iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    let covered = confirmed.is_some_and(|c| unique.iter().all(|(k, _)| c.contains(k)));
    if limits.exceeded(unique.len(), local_copy) && !covered {
        return Deletions::Hold;
    }
    let (keep, delete): (Vec<_>, Vec<_>) = unique.into_iter().partition(|(_, p)| *p);
    Deletions::Apply {
        delete: delete.into_iter().map(|(k, _)| k.clone()).collect(),
        keep: keep.into_iter().map(|(k, _)| k.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: &str = "box.quimper.example.org";

    fn protected() -> Protected {
        Protected::new(&Tree::new("dc=q,dc=org"), &"quimper".parse().unwrap(), NODE)
    }

    #[test]
    fn plain_ldap_needs_insecure_and_starttls_only_fits_ldap() {
        use LinkSecurity::*;
        assert_eq!(link_security("ldaps://a:636", false, false), Ok(Ldaps));
        assert_eq!(link_security("ldaps://a", false, true), Ok(Ldaps));
        assert_eq!(link_security("ldap://a", true, false), Ok(StartTls));
        assert_eq!(link_security("ldap://a", true, true), Ok(StartTls));
        assert_eq!(link_security("LDAP://a", false, true), Ok(Plain));
        let e = link_security("ldap://dir.alliance.net", false, false).unwrap_err();
        assert!(matches!(e, LinkSecurityError::Plain { .. }));
        let text = e.to_string();
        for key in [
            "insecure = true",
            "starttls = true",
            "[alliance]",
            "ldaps://",
        ] {
            assert!(text.contains(key), "{text} names {key}");
        }
        let e = link_security("ldaps://a", true, false).unwrap_err();
        assert!(e.to_string().contains("remove `starttls = true`"), "{e}");
        assert!(matches!(
            link_security("http://a", false, true),
            Err(LinkSecurityError::Scheme { .. })
        ));
        assert!(!Plain.encrypted() && Ldaps.encrypted() && StartTls.encrypted());
    }

    #[test]
    fn the_collective_people_homed_here_and_the_tree_are_protected() {
        let p = protected();
        assert!(p.covers("ou=quimper,ou=collectives,dc=q,dc=org", ""));
        assert!(p.covers(
            "cn=admins,ou=groups,OU=Quimper, ou=collectives,dc=q,dc=org",
            ""
        ));
        assert!(p.covers("uid=dora,ou=people,dc=q,dc=org", "BOX.quimper.example.org"));
        for skeleton in [
            "dc=q,dc=org",
            "ou=people,dc=q,dc=org",
            "OU=services,dc=q,dc=org",
        ] {
            assert!(p.covers(skeleton, ""), "{skeleton}");
        }
        assert!(!p.covers("uid=bob,ou=people,dc=q,dc=org", "box.brest.example.org"));
        assert!(!p.covers("uid=bob,ou=people,dc=q,dc=org", ""));
        assert!(!p.covers("cn=wiki,ou=services,dc=q,dc=org", ""));
        // Only ends like ours: another collective.
        assert!(!p.covers("ou=xquimper,ou=collectives,dc=q,dc=org", ""));
        assert!(!p.covers(
            "ou=brest,ou=collectives,dc=q,dc=org",
            NODE.trim_end_matches(".org")
        ));
    }

    #[test]
    fn limits_need_both_the_count_and_the_share() {
        let l = DeletionLimits::default();
        // 21 of 1,000 is 2.1 %: normal churn.
        assert!(!l.exceeded(21, 1000));
        // 20 of 20 is everything, but only 20: a tiny copy.
        assert!(!l.exceeded(20, 20));
        assert!(l.exceeded(21, 100));
        assert!(l.exceeded(101, 1000));
        assert!(!l.exceeded(100, 1000), "exactly 10 % is allowed");
        let strict = DeletionLimits {
            entries: 0,
            percent: 0,
        };
        assert!(strict.exceeded(1, 1000));
        assert!(!strict.exceeded(0, 1000));
        let off = DeletionLimits {
            entries: 0,
            percent: 100,
        };
        assert!(!off.exceeded(1000, 1000));
    }

    #[test]
    fn a_faulty_refresh_is_held_and_a_confirmation_applies_only_what_may_go() {
        // The alliance listed nothing: 50 people homed here, the collective
        // (1 + 4 entries), 30 people homed elsewhere.
        let mut c: Vec<(u32, bool)> = (0..55).map(|i| (i, true)).collect();
        c.extend((55..85).map(|i| (i, false)));
        let l = DeletionLimits::default();
        assert_eq!(deletions(&c, 85, l, None), Deletions::Hold);
        let confirmed: BTreeSet<u32> = (0..85).collect();
        let Deletions::Apply { delete, keep } = deletions(&c, 85, l, Some(&confirmed)) else {
            panic!("confirmed");
        };
        assert_eq!(delete, (55..85).collect::<Vec<_>>());
        assert_eq!(keep, (0..55).collect::<Vec<_>>());
        // A confirmation covers those entries only: one more is a new hold.
        c.push((85, false));
        assert_eq!(deletions(&c, 86, l, Some(&confirmed)), Deletions::Hold);
    }

    fn candidates() -> impl Strategy<Value = Vec<(u16, bool)>> {
        proptest::collection::vec((0u16..400, any::<bool>()), 0..200)
    }

    proptest! {
        #[test]
        fn protected_entries_are_never_deleted(
            c in candidates(),
            extra in 0usize..500,
            entries in 0u32..50,
            percent in 0u8..=100,
            confirm in any::<bool>(),
        ) {
            let mut want = std::collections::BTreeMap::new();
            for (k, p) in &c {
                want.entry(*k).or_insert(*p);
            }
            let copy = want.len() + extra;
            let all: BTreeSet<u16> = want.keys().copied().collect();
            let l = DeletionLimits { entries, percent };
            match deletions(&c, copy, l, confirm.then_some(&all)) {
                Deletions::Apply { delete, keep } => {
                    for k in &delete {
                        prop_assert!(!want[k], "protected {} deleted", k);
                    }
                    for k in &keep {
                        prop_assert!(want[k]);
                    }
                    let mut got: Vec<u16> = delete.iter().chain(&keep).copied().collect();
                    got.sort_unstable();
                    prop_assert_eq!(got, all.iter().copied().collect::<Vec<_>>(), "each once");
                    prop_assert!(confirm || !l.exceeded(all.len(), copy));
                }
                Deletions::Hold => {
                    prop_assert!(l.exceeded(all.len(), copy));
                    prop_assert!(!confirm, "a confirmation of them all is never held");
                }
            }
        }

        #[test]
        fn more_deletions_never_turn_a_hold_into_an_apply(
            n in 0usize..300,
            more in 0usize..300,
            copy in 0usize..1000,
            entries in 0u32..50,
            percent in 0u8..=100,
        ) {
            let l = DeletionLimits { entries, percent };
            let copy = copy.max(n + more);
            if l.exceeded(n, copy) {
                prop_assert!(l.exceeded(n + more, copy));
            }
            if n <= entries as usize {
                prop_assert!(!l.exceeded(n, copy));
            }
        }
    }
}
