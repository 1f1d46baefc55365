//! The federation's decisions (pure): which entries are in scope, how DNs
//! map between the alliance's suffix and ours, what a down-synced entry
//! changes here, and how a replayed change settles against the alliance by
//! the authority rule. No IO; every input is an argument.

use std::collections::BTreeSet;

use crate::directory::tree::Tree;
use crate::model::CollectiveSlug;

// Entries and attribute changes as the LDAP adapter reads and writes them.
pub use crate::directory::alliance::{AttrChange, Attrs};

/// Attributes that name entries: their values are rewritten between suffixes.
const DN_ATTRS: [&str; 4] = [
    "member",
    "commonsprimarycollective",
    "commonsaccessgroup",
    "seealso",
];

/// Attributes never copied either way: slapd's own bookkeeping, and the
/// ppolicy lock, which each side derives from `commonsAccountState`.
const NOT_COPIED: [&str; 12] = [
    "entryuuid",
    "entrycsn",
    "entrydn",
    "creatorsname",
    "createtimestamp",
    "modifiersname",
    "modifytimestamp",
    "structuralobjectclass",
    "subschemasubentry",
    "hassubordinates",
    "memberof",
    "pwdaccountlockedtime",
];

/// OpenLDAP's `dnSubtreeMatch` matching rule.
const DN_SUBTREE_MATCH: &str = "1.3.6.1.4.1.4203.666.4.9";

/// ppolicy's "locked until an administrator unlocks" value.
pub const LOCKED: &str = "000001010000Z";

/// Who owns an attribute of a person: their home node owns their password
/// and account state; the alliance owns everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Home,
    Alliance,
}

pub fn owner(attr: &str) -> Owner {
    match attr.to_ascii_lowercase().as_str() {
        "userpassword" | "commonsaccountstate" => Owner::Home,
        _ => Owner::Alliance,
    }
}

/// An attribute's first value ("" when absent): for single-valued
/// attributes such as `uid`, `mail` or `commonsHomeNode`.
pub fn first<'a>(a: &'a Attrs, k: &str) -> &'a str {
    a.get(k)
        .and_then(|v| v.iter().next())
        .map(String::as_str)
        .unwrap_or_default()
}

/// Whether an attribute is copied between the directories at all.
pub fn copied(attr: &str) -> bool {
    !NOT_COPIED.contains(&attr.to_ascii_lowercase().as_str())
}

/// A password hash as slapd returns it may end in stray bytes after a NUL
/// (CONTRACTS.md); the hash is what precedes it.
pub fn clean_value(attr: &str, v: &str) -> String {
    if attr.eq_ignore_ascii_case("userPassword") {
        v.split('\0').next().unwrap_or_default().to_owned()
    } else {
        v.to_owned()
    }
}

/// The two suffixes: a standalone appliance that joins keeps its own, and
/// every DN is rewritten on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suffixes {
    pub local: String,
    pub alliance: String,
}

impl Suffixes {
    pub fn new(local: &str, alliance: &str) -> Self {
        Self {
            local: local.to_owned(),
            alliance: alliance.to_owned(),
        }
    }

    pub fn to_local(&self, dn: &str) -> String {
        rebase(dn, &self.alliance, &self.local)
    }

    pub fn to_alliance(&self, dn: &str) -> String {
        rebase(dn, &self.local, &self.alliance)
    }

    /// An entry's attributes with their DN values moved to our suffix.
    pub fn attrs_to_local(&self, attrs: &Attrs) -> Attrs {
        map_dn_values(attrs, |v| self.to_local(v))
    }

    pub fn attrs_to_alliance(&self, attrs: &Attrs) -> Attrs {
        map_dn_values(attrs, |v| self.to_alliance(v))
    }
}

fn map_dn_values(attrs: &Attrs, f: impl Fn(&str) -> String) -> Attrs {
    attrs
        .iter()
        .map(|(k, vs)| {
            let vs = if DN_ATTRS.contains(&k.as_str()) {
                vs.iter().map(|v| f(v)).collect()
            } else {
                vs.clone()
            };
            (k.clone(), vs)
        })
        .collect()
}

/// `dn` under `from` moved under `to`; a DN outside `from` is kept as is.
fn rebase(dn: &str, from: &str, to: &str) -> String {
    let norm = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let (parts, tail) = (norm(dn), norm(from));
    if parts.len() < tail.len() || parts[parts.len() - tail.len()..] != tail[..] {
        return dn.to_owned();
    }
    let keep = dn.split(',').count() - tail.len();
    let head: Vec<&str> = dn.split(',').take(keep).map(str::trim).collect();
    if head.is_empty() {
        to.to_owned()
    } else {
        format!("{},{to}", head.join(","))
    }
}

/// What this appliance takes from the alliance: its collective's subtree,
/// the alliance-wide services, and the people whose primary collective it
/// is or who are its members. Everything in alliance terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tree: Tree,
    pub collective: CollectiveSlug,
}

impl Scope {
    pub fn new(alliance_suffix: &str, collective: CollectiveSlug) -> Self {
        Self {
            tree: Tree::new(alliance_suffix),
            collective,
        }
    }

    /// The sync search's filter, from the suffix. The values are DNs built by
    /// [`Tree`] and escaped for the filter. (The alliance's memberof overlay
    /// keeps memberOf stored, so the refresh matches on it; a change of
    /// membership alone does not reach syncprov, see [`Scope::admits`].)
    pub fn filter(&self) -> String {
        let e = |dn: String| ldap3::ldap_escape(dn).into_owned();
        // slapd's dnSubtreeMatch by its OID: ldap3's filter parser reads the
        // name's leading "dn" as the `:dn` flag and refuses the filter.
        format!(
            "(|(entryDN:{DN_SUBTREE_MATCH}:={})(entryDN:{DN_SUBTREE_MATCH}:={})(&(objectClass=commonsPerson)(|(commonsPrimaryCollective={})(memberOf={}))))",
            e(self.tree.collective(&self.collective)),
            e(self.tree.services()),
            e(self.tree.collective(&self.collective)),
            e(self.members_group()),
        )
    }

    pub fn members_group(&self) -> String {
        self.tree.group(&self.collective, "members")
    }

    /// Whether an entry (alliance DN, its attributes with `memberOf`, which
    /// the sync asks for by name) belongs here, checked again on our side so
    /// a too-generous alliance ACL copies in no one else.
    pub fn admits(&self, dn: &str, attrs: &Attrs) -> bool {
        let norm = normalize_dn;
        let d = norm(dn);
        let under = |base: String| {
            let b = norm(&base);
            d == b || d.ends_with(&format!(",{b}"))
        };
        if under(self.tree.collective(&self.collective)) || under(self.tree.services()) {
            return true;
        }
        if self.tree.uid_of(dn).is_none() {
            return false;
        }
        let has = |attr: &str, dn: String| {
            attrs
                .get(attr)
                .is_some_and(|v| v.iter().any(|c| norm(c) == norm(&dn)))
        };
        has(
            "commonsprimarycollective",
            self.tree.collective(&self.collective),
        ) || has("memberof", self.members_group())
    }
}

/// A DN compared the way slapd does for our tree: case and spaces after
/// commas do not matter.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// The changes that make a local entry equal to the alliance's (both in
/// local terms), leaving alone the attributes a pending local change holds
/// (`held`, lower-case): the replay settles those. The ppolicy lock follows
/// `commonsAccountState`.
pub fn down_changes(remote: &Attrs, local: &Attrs, held: &BTreeSet<String>) -> Vec<AttrChange> {
    let mut out = Vec::new();
    for (k, vs) in remote {
        if !copied(k) || held.contains(k) {
            continue;
        }
        let vs: BTreeSet<String> = vs.iter().map(|v| clean_value(k, v)).collect();
        let here: Option<BTreeSet<String>> = local
            .get(k)
            .map(|l| l.iter().map(|v| clean_value(k, v)).collect());
        if here.as_ref() != Some(&vs) {
            out.push(AttrChange::Replace(k.clone(), vs));
        }
    }
    for k in local.keys() {
        if copied(k) && !held.contains(k) && !remote.contains_key(k) {
            out.push(AttrChange::Delete(k.clone()));
        }
    }
    if !held.contains("commonsaccountstate") {
        out.extend(lock_change(remote, local));
    }
    out
}

/// The ppolicy lock a person's account state calls for, if it differs from
/// what `local` has.
pub fn lock_change(state_from: &Attrs, local: &Attrs) -> Option<AttrChange> {
    let suspended = state_from
        .get("commonsaccountstate")
        .is_some_and(|v| v.iter().any(|s| s.eq_ignore_ascii_case("suspended")));
    let locked = local
        .get("pwdaccountlockedtime")
        .is_some_and(|v| v.contains(LOCKED));
    let is_person = state_from.contains_key("commonsaccountstate");
    match (is_person && suspended, locked) {
        (true, false) => Some(AttrChange::Replace(
            "pwdAccountLockedTime".into(),
            BTreeSet::from([LOCKED.to_owned()]),
        )),
        (false, true) => Some(AttrChange::Delete("pwdAccountLockedTime".into())),
        _ => None,
    }
}

/// The attributes of an entry worth copying (for an add), cleaned.
pub fn copyable(attrs: &Attrs) -> Attrs {
    attrs
        .iter()
        .filter(|(k, _)| copied(k))
        .map(|(k, vs)| (k.clone(), vs.iter().map(|v| clean_value(k, v)).collect()))
        .collect()
}

/// An RFC 4528 assertion that the alliance still holds what we read of the
/// attributes a replay writes (so a change made in between makes the write
/// fail and the change is settled again). Passwords are left out: their
/// values are not for filters.
pub fn assertion(read: &Attrs, writes: &[AttrChange]) -> Option<String> {
    let mut parts = String::new();
    for c in writes {
        let (AttrChange::Replace(k, _) | AttrChange::Delete(k)) = c;
        let k = k.to_ascii_lowercase();
        if k == "userpassword" || !copied(&k) {
            continue;
        }
        match read.get(&k) {
            Some(vs) if !vs.is_empty() => {
                for v in vs {
                    parts.push_str(&format!("({k}={})", ldap3::ldap_escape(v.as_str())));
                }
            }
            _ => parts.push_str(&format!("(!({k}=*))")),
        }
    }
    (!parts.is_empty()).then(|| format!("(&{parts})"))
}

/// How one attribute of a replayed change settles against the alliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The alliance already has our value: nothing to write.
    Same,
    /// The alliance still has the value ours replaced: write ours.
    Push,
    /// Both sides changed it: the owner's value stays. `Local` means ours is
    /// written over theirs; `Alliance` means theirs is copied here.
    Conflict(Winner),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Local,
    Alliance,
}

/// Settles one attribute: `base` is its value before our change, `local`
/// ours now, `remote` the alliance's now (`None`: absent). `home_here` says
/// whether this appliance is the entry's home node.
pub fn settle(
    attr: &str,
    home_here: bool,
    base: Option<&BTreeSet<String>>,
    local: Option<&BTreeSet<String>>,
    remote: Option<&BTreeSet<String>>,
) -> Settle {
    let clean = |v: Option<&BTreeSet<String>>| -> BTreeSet<String> {
        v.map(|s| s.iter().map(|x| clean_value(attr, x)).collect())
            .unwrap_or_default()
    };
    let (base, local, remote) = (clean(base), clean(local), clean(remote));
    // Equal to its base, ours changed nothing (the write never happened, or
    // a later change undid it): the alliance's value stands.
    if local == remote || local == base {
        Settle::Same
    } else if remote == base {
        Settle::Push
    } else if home_here && owner(attr) == Owner::Home {
        Settle::Conflict(Winner::Local)
    } else {
        Settle::Conflict(Winner::Alliance)
    }
}

/// Whether a change to a person needs the alliance now: one homed at
/// another node, when it is their password or account state (which their
/// home owns) or anything on an entry this appliance does not own.
pub fn needs_alliance(home_node: &str, this_node: &str) -> bool {
    !home_node.is_empty() && !home_node.eq_ignore_ascii_case(this_node)
}

/// Reconnection delay after `failures` consecutive failures: 1 s doubling
/// to 5 min, with up to a quarter of jitter from `jitter` (0..1).
pub fn backoff(failures: u32, jitter: f64) -> std::time::Duration {
    let base = 1u64 << failures.min(9);
    let secs = base.min(300) as f64;
    std::time::Duration::from_secs_f64(secs * (1.0 + 0.25 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &[&str])]) -> Attrs {
        pairs
            .iter()
            .map(|(k, vs)| {
                (
                    k.to_ascii_lowercase(),
                    vs.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn set(vs: &[&str]) -> BTreeSet<String> {
        vs.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn dns_move_between_suffixes_whatever_their_case() {
        let s = Suffixes::new("dc=quimper,dc=org", "dc=alliance,dc=net");
        assert_eq!(
            s.to_alliance("uid=ana,ou=people,DC=Quimper, dc=org"),
            "uid=ana,ou=people,dc=alliance,dc=net"
        );
        assert_eq!(
            s.to_local("uid=ana,ou=people,dc=alliance,dc=net"),
            "uid=ana,ou=people,dc=quimper,dc=org"
        );
        assert_eq!(s.to_local("dc=alliance,dc=net"), "dc=quimper,dc=org");
        assert_eq!(s.to_local("uid=x,dc=other,dc=net"), "uid=x,dc=other,dc=net");
        // A suffix that only ends like ours is not ours.
        assert_eq!(s.to_local("dc=net"), "dc=net");
        let a = attrs(&[
            ("member", &["uid=ana,ou=people,dc=alliance,dc=net"]),
            ("cn", &["dc=alliance,dc=net"]),
        ]);
        let l = s.attrs_to_local(&a);
        assert_eq!(l["member"], set(&["uid=ana,ou=people,dc=quimper,dc=org"]));
        assert_eq!(l["cn"], set(&["dc=alliance,dc=net"]), "not a DN attribute");
    }

    #[test]
    fn the_scope_filter_names_the_collective_services_and_its_people() {
        let s = Scope::new("dc=a,dc=net", "quimper".parse().unwrap());
        assert!(
            ldap3::parse_filter(s.filter()).is_ok(),
            "ldap3 must parse it"
        );
        assert_eq!(
            s.filter(),
            "(|(entryDN:1.3.6.1.4.1.4203.666.4.9:=ou=quimper,ou=collectives,dc=a,dc=net)(entryDN:1.3.6.1.4.1.4203.666.4.9:=ou=services,dc=a,dc=net)(&(objectClass=commonsPerson)(|(commonsPrimaryCollective=ou=quimper,ou=collectives,dc=a,dc=net)(memberOf=cn=members,ou=groups,ou=quimper,ou=collectives,dc=a,dc=net))))"
        );
    }

    #[test]
    fn scope_admits_only_our_collective_services_and_people() {
        let s = Scope::new("dc=a,dc=net", "quimper".parse().unwrap());
        let empty = Attrs::new();
        assert!(s.admits(
            "cn=admins,ou=groups,ou=quimper,ou=collectives,dc=a,dc=net",
            &empty
        ));
        assert!(s.admits("cn=wiki,ou=services,dc=a,dc=net", &empty));
        assert!(!s.admits("ou=brest,ou=collectives,dc=a,dc=net", &empty));
        assert!(!s.admits("cn=x,ou=appliances,dc=a,dc=net", &empty));
        let ana = "uid=ana,ou=people,dc=a,dc=net";
        assert!(!s.admits(ana, &empty), "a stranger");
        let primary = attrs(&[(
            "commonsPrimaryCollective",
            &["OU=quimper,ou=collectives,dc=a,dc=net"],
        )]);
        assert!(s.admits(ana, &primary));
        let member = attrs(&[(
            "memberOf",
            &["cn=members,ou=groups,ou=quimper, ou=collectives,dc=a,dc=net"],
        )]);
        assert!(s.admits("uid=Ana, ou=people,dc=a,dc=net", &member));
        let elsewhere = attrs(&[
            (
                "commonsPrimaryCollective",
                &["ou=brest,ou=collectives,dc=a,dc=net"],
            ),
            (
                "memberOf",
                &["cn=members,ou=groups,ou=brest,ou=collectives,dc=a,dc=net"],
            ),
        ]);
        assert!(!s.admits(ana, &elsewhere));
    }

    #[test]
    fn down_changes_copy_values_but_not_held_or_operational_ones() {
        let remote = attrs(&[
            ("cn", &["Ana B"]),
            ("mail", &["ana@q.org"]),
            ("userPassword", &["{ARGON2}new"]),
            ("entryCSN", &["x"]),
        ]);
        let local = attrs(&[
            ("cn", &["Ana"]),
            ("mail", &["ana@q.org"]),
            ("userPassword", &["{ARGON2}old\0z"]),
            ("description", &["gone at the alliance"]),
        ]);
        let ch = down_changes(&remote, &local, &BTreeSet::new());
        assert!(ch.contains(&AttrChange::Replace("cn".into(), set(&["Ana B"]))));
        assert!(ch.contains(&AttrChange::Replace(
            "userpassword".into(),
            set(&["{ARGON2}new"])
        )));
        assert!(ch.contains(&AttrChange::Delete("description".into())));
        assert_eq!(ch.len(), 3, "{ch:?}");
        let held = BTreeSet::from(["userpassword".to_owned()]);
        let ch = down_changes(&remote, &local, &held);
        assert!(
            !ch.iter()
                .any(|c| matches!(c, AttrChange::Replace(k, _) if k == "userpassword"))
        );
        // The same hash with slapd's stray bytes is no change.
        let same = attrs(&[("userPassword", &["{ARGON2}h\0q"])]);
        let clean = attrs(&[("userPassword", &["{ARGON2}h"])]);
        assert!(down_changes(&clean, &same, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_lock_follows_the_account_state() {
        let suspended = attrs(&[("commonsAccountState", &["suspended"])]);
        let active = attrs(&[("commonsAccountState", &["active"])]);
        let locked = attrs(&[
            ("commonsAccountState", &["suspended"]),
            ("pwdAccountLockedTime", &[LOCKED]),
        ]);
        assert!(
            down_changes(&suspended, &active, &BTreeSet::new()).contains(&AttrChange::Replace(
                "pwdAccountLockedTime".into(),
                set(&[LOCKED])
            ))
        );
        assert!(
            down_changes(&active, &locked, &BTreeSet::new())
                .contains(&AttrChange::Delete("pwdAccountLockedTime".into()))
        );
        assert_eq!(down_changes(&suspended, &locked, &BTreeSet::new()), vec![]);
        // Not a person: no lock either way.
        assert_eq!(lock_change(&Attrs::new(), &Attrs::new()), None);
    }

    #[test]
    fn settling_follows_the_authority_rule() {
        let (a, b, c) = (set(&["a"]), set(&["b"]), set(&["c"]));
        // Already there (a replay after a crash).
        assert_eq!(
            settle("cn", true, Some(&a), Some(&b), Some(&b)),
            Settle::Same
        );
        // Untouched at the alliance since our base: push.
        assert_eq!(
            settle("cn", true, Some(&a), Some(&b), Some(&a)),
            Settle::Push
        );
        assert_eq!(settle("cn", false, None, Some(&b), None), Settle::Push);
        // Nothing changed here after all: whatever the alliance has stays.
        assert_eq!(
            settle("userPassword", true, Some(&a), Some(&a), Some(&c)),
            Settle::Same
        );
        // Both changed: the home node keeps its password and account state…
        for attr in ["userPassword", "commonsAccountState"] {
            assert_eq!(
                settle(attr, true, Some(&a), Some(&b), Some(&c)),
                Settle::Conflict(Winner::Local)
            );
            assert_eq!(
                settle(attr, false, Some(&a), Some(&b), Some(&c)),
                Settle::Conflict(Winner::Alliance)
            );
        }
        // …and the alliance keeps the rest.
        assert_eq!(
            settle("displayName", true, Some(&a), Some(&b), Some(&c)),
            Settle::Conflict(Winner::Alliance)
        );
    }

    #[test]
    fn the_assertion_names_what_was_read_but_not_passwords() {
        let read = attrs(&[("cn", &["A (x)"]), ("userPassword", &["h"])]);
        let writes = [
            AttrChange::Replace("cn".into(), set(&["B"])),
            AttrChange::Replace("userPassword".into(), set(&["h2"])),
            AttrChange::Delete("description".into()),
        ];
        let a = assertion(&read, &writes).unwrap();
        assert_eq!(a, "(&(cn=A \\28x\\29)(!(description=*)))");
        assert!(ldap3::parse_filter(&a).is_ok());
        assert_eq!(assertion(&read, &writes[1..2]), None);
    }

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        assert_eq!(backoff(0, 0.0).as_secs(), 1);
        assert_eq!(backoff(3, 0.0).as_secs(), 8);
        assert_eq!(backoff(20, 0.0).as_secs(), 300);
        assert_eq!(backoff(20, 1.0).as_secs(), 375);
        assert!(backoff(2, 0.5) > backoff(2, 0.0));
    }
}
