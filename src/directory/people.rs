//! People and groups in the tree: look-ups, creation and membership. Every
//! filter value goes through `ldap_escape` and every RDN through the tree's
//! `dn_escape`, so no input can change a filter's or a DN's shape.

use std::collections::HashSet;

use ldap3::{Ldap, Mod, Scope, SearchEntry, ldap_escape};

use super::DirectoryError;
use super::tree::{Entry, Tree, collective_entries};
use crate::model::CollectiveSlug;

fn ldap_err(what: &'static str) -> impl FnOnce(ldap3::LdapError) -> DirectoryError {
    move |source| DirectoryError::Ldap {
        what: what.to_owned(),
        source: Box::new(source),
    }
}

/// Which of uid and mail an existing person already has (`uid` first).
pub async fn taken(
    ldap: &mut Ldap,
    tree: &Tree,
    uid: &str,
    mail: &str,
) -> Result<Option<&'static str>, DirectoryError> {
    let filter = format!("(|(uid={})(mail={}))", ldap_escape(uid), ldap_escape(mail));
    let (entries, _) = ldap
        .search(
            &tree.people(),
            Scope::OneLevel,
            &filter,
            vec!["uid", "mail"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("looking up uid and mail"))?;
    let entries: Vec<SearchEntry> = entries.into_iter().map(SearchEntry::construct).collect();
    let has = |attr: &str, v: &str| {
        entries.iter().any(|e| {
            e.attrs
                .get(attr)
                .is_some_and(|vals| vals.iter().any(|x| x.eq_ignore_ascii_case(v)))
        })
    };
    Ok(if has("uid", uid) {
        Some("uid")
    } else if has("mail", mail) {
        Some("email")
    } else {
        None
    })
}

/// A person to create.
#[derive(Debug, Clone)]
pub struct NewPerson<'a> {
    pub uid: &'a str,
    pub display_name: &'a str,
    pub mail: &'a str,
    pub language: &'a str,
    /// DN of their primary collective.
    pub collective_dn: &'a str,
    pub home_node: &'a str,
}

/// Creates the entry; an entry already there with the same uid and mail (a
/// retry after a crash) counts as done.
pub async fn create_person(
    ldap: &mut Ldap,
    tree: &Tree,
    p: &NewPerson<'_>,
) -> Result<String, DirectoryError> {
    let dn = tree.person(p.uid);
    let set = |v: &str| HashSet::from([v.to_owned()]);
    let attrs: Vec<(String, HashSet<String>)> = vec![
        (
            "objectClass".into(),
            HashSet::from(["inetOrgPerson".to_owned(), "commonsPerson".to_owned()]),
        ),
        ("uid".into(), set(p.uid)),
        ("cn".into(), set(p.display_name)),
        ("sn".into(), set(p.display_name)),
        ("displayName".into(), set(p.display_name)),
        ("mail".into(), set(p.mail)),
        ("preferredLanguage".into(), set(p.language)),
        ("commonsPrimaryCollective".into(), set(p.collective_dn)),
        ("commonsAccountState".into(), set("active")),
        ("commonsHomeNode".into(), set(p.home_node)),
    ];
    let res = ldap
        .add(&dn, attrs)
        .await
        .map_err(ldap_err("creating a person"))?;
    match res.rc {
        0 => Ok(dn),
        // entryAlreadyExists: ours from an interrupted approval, if it matches.
        68 => {
            let existing = super::ldap::read(ldap, &dn, &["mail"]).await?;
            let same = existing.is_some_and(|e| {
                e.attrs
                    .get("mail")
                    .is_some_and(|m| m.iter().any(|x| x.eq_ignore_ascii_case(p.mail)))
            });
            if same {
                Ok(dn)
            } else {
                Err(DirectoryError::Ldap {
                    what: format!("creating {dn}: another person has this uid"),
                    source: Box::new(ldap3::LdapError::LdapResult { result: res }),
                })
            }
        }
        _ => Err(DirectoryError::Ldap {
            what: format!("creating {dn}"),
            source: Box::new(ldap3::LdapError::LdapResult { result: res }),
        }),
    }
}

/// Adds `member` to `group` unless it is already there.
pub async fn add_member(ldap: &mut Ldap, group: &str, member: &str) -> Result<(), DirectoryError> {
    let res = ldap
        .modify(group, vec![Mod::Add("member", HashSet::from([member]))])
        .await
        .map_err(ldap_err("adding a member"))?;
    // attributeOrValueExists: already a member.
    if res.rc == 0 || res.rc == 20 {
        Ok(())
    } else {
        Err(DirectoryError::Ldap {
            what: format!("adding {member} to {group}"),
            source: Box::new(ldap3::LdapError::LdapResult { result: res }),
        })
    }
}

/// Mail addresses of a group's members (for notices to a collective's admins).
pub async fn member_mails(
    ldap: &mut Ldap,
    tree: &Tree,
    group: &str,
) -> Result<Vec<String>, DirectoryError> {
    let filter = format!(
        "(&(objectClass=inetOrgPerson)(memberOf={}))",
        ldap_escape(group)
    );
    let (entries, _) = ldap
        .search(&tree.people(), Scope::OneLevel, &filter, vec!["mail"])
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("listing a group's mail addresses"))?;
    Ok(entries
        .into_iter()
        .map(SearchEntry::construct)
        .flat_map(|e| e.attrs.get("mail").cloned().unwrap_or_default())
        .collect())
}

fn rc_err(what: String, res: ldap3::LdapResult) -> DirectoryError {
    DirectoryError::Ldap {
        what,
        source: Box::new(ldap3::LdapError::LdapResult { result: res }),
    }
}

/// Adds an entry; `Ok(false)` when it already exists.
pub async fn add_entry(ldap: &mut Ldap, e: &Entry) -> Result<bool, DirectoryError> {
    let attrs: Vec<(String, HashSet<String>)> = e
        .attrs
        .iter()
        .map(|(a, v)| ((*a).to_owned(), v.iter().cloned().collect()))
        .collect();
    let res = ldap
        .add(&e.dn, attrs)
        .await
        .map_err(ldap_err("adding an entry"))?;
    match res.rc {
        0 => Ok(true),
        68 => Ok(false),
        _ => Err(rc_err(format!("adding {}", e.dn), res)),
    }
}

/// A person as the directory has them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Person {
    pub dn: String,
    pub uid: String,
    pub display_name: String,
    pub mail: String,
    pub language: String,
    pub suspended: bool,
    pub primary_collective: Option<CollectiveSlug>,
    pub home_node: String,
    /// `(collective, group)` for every group of this tree they are in.
    pub groups: Vec<(CollectiveSlug, String)>,
}

impl Person {
    pub fn is_member(&self, slug: &CollectiveSlug) -> bool {
        self.in_group(slug, "members")
    }

    pub fn is_admin(&self, slug: &CollectiveSlug) -> bool {
        self.in_group(slug, "admins")
    }

    pub fn in_group(&self, slug: &CollectiveSlug, cn: &str) -> bool {
        self.groups.iter().any(|(s, g)| s == slug && g == cn)
    }

    /// Whether they may sign in to this box (console, forum, Nextcloud):
    /// not suspended, and a member of one of its collectives. Only this
    /// box writes its collectives' `members` groups, so a person another
    /// appliance put in the directory (through the alliance) is not let in
    /// until this collective's admins took them.
    pub fn may_sign_in(&self) -> bool {
        !self.suspended && !self.collectives().is_empty()
    }

    /// Collectives they are a member of.
    pub fn collectives(&self) -> Vec<CollectiveSlug> {
        self.groups
            .iter()
            .filter(|(_, g)| g == "members")
            .map(|(s, _)| s.clone())
            .collect()
    }
}

const PERSON_ATTRS: [&str; 9] = [
    "uid",
    "displayName",
    "mail",
    "preferredLanguage",
    "commonsAccountState",
    "pwdAccountLockedTime",
    "commonsPrimaryCollective",
    "commonsHomeNode",
    "memberOf",
];

fn first(e: &SearchEntry, attr: &str) -> String {
    e.attrs
        .get(attr)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

fn to_person(tree: &Tree, e: SearchEntry) -> Person {
    let primary_collective = tree.collective_of(&first(&e, "commonsPrimaryCollective"));
    let mut groups: Vec<(CollectiveSlug, String)> = e
        .attrs
        .get("memberOf")
        .into_iter()
        .flatten()
        .filter_map(|g| tree.group_of(g))
        .collect();
    groups.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    groups.dedup();
    Person {
        uid: first(&e, "uid"),
        display_name: first(&e, "displayName"),
        mail: first(&e, "mail"),
        language: first(&e, "preferredLanguage"),
        suspended: is_suspension(
            &first(&e, "commonsAccountState"),
            e.attrs.get("pwdAccountLockedTime").map(Vec::as_slice),
        ),
        primary_collective,
        home_node: first(&e, "commonsHomeNode"),
        groups,
        dn: e.dn,
    }
}

async fn search_people(
    ldap: &mut Ldap,
    tree: &Tree,
    filter: &str,
) -> Result<Vec<Person>, DirectoryError> {
    let (entries, _) = ldap
        .search(
            &tree.people(),
            Scope::OneLevel,
            filter,
            PERSON_ATTRS.to_vec(),
        )
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("looking up people"))?;
    let mut people: Vec<Person> = entries
        .into_iter()
        .map(|e| to_person(tree, SearchEntry::construct(e)))
        .collect();
    people.sort_by(|a, b| a.uid.cmp(&b.uid));
    Ok(people)
}

/// The person with this uid, if any.
pub async fn person(
    ldap: &mut Ldap,
    tree: &Tree,
    uid: &str,
) -> Result<Option<Person>, DirectoryError> {
    let filter = format!("(&(objectClass=inetOrgPerson)(uid={}))", ldap_escape(uid));
    Ok(search_people(ldap, tree, &filter)
        .await?
        .into_iter()
        .find(|p| p.uid == uid))
}

/// The person with this mail address (case-insensitive), if any.
pub async fn person_by_mail(
    ldap: &mut Ldap,
    tree: &Tree,
    mail: &str,
) -> Result<Option<Person>, DirectoryError> {
    let filter = format!("(&(objectClass=inetOrgPerson)(mail={}))", ldap_escape(mail));
    Ok(search_people(ldap, tree, &filter)
        .await?
        .into_iter()
        .find(|p| p.mail.eq_ignore_ascii_case(mail)))
}

/// Everyone, or the members of one collective, by uid.
pub async fn people(
    ldap: &mut Ldap,
    tree: &Tree,
    collective: Option<&CollectiveSlug>,
) -> Result<Vec<Person>, DirectoryError> {
    let filter = match collective {
        Some(slug) => format!(
            "(&(objectClass=inetOrgPerson)(memberOf={}))",
            ldap_escape(tree.group(slug, "members"))
        ),
        None => "(objectClass=inetOrgPerson)".to_owned(),
    };
    search_people(ldap, tree, &filter).await
}

/// Locks or unlocks an account in the directory itself: ppolicy's
/// `pwdAccountLockedTime` stops every bind (a state attribute alone would
/// not), and `commonsAccountState` tells the apps' filters.
pub async fn set_suspended(
    ldap: &mut Ldap,
    dn: &str,
    suspended: bool,
) -> Result<(), DirectoryError> {
    let mods = if suspended {
        vec![
            Mod::Replace("pwdAccountLockedTime", HashSet::from([PERMANENT_LOCK])),
            Mod::Replace("commonsAccountState", HashSet::from(["suspended"])),
        ]
    } else {
        vec![
            Mod::Replace("pwdAccountLockedTime", HashSet::new()),
            Mod::Replace("commonsAccountState", HashSet::from(["active"])),
        ]
    };
    let res = ldap
        .modify(dn, mods)
        .await
        .map_err(ldap_err("changing an account's lock"))?;
    if res.rc == 0 {
        Ok(())
    } else {
        Err(rc_err(format!("changing the lock of {dn}"), res))
    }
}

/// Changes what a person may change of themselves: the name shown (cn and
/// sn follow, as at creation) and the language of mails and pages.
pub async fn set_profile(
    ldap: &mut Ldap,
    dn: &str,
    display_name: &str,
    language: &str,
) -> Result<(), DirectoryError> {
    let one = |v: &str| HashSet::from([v.to_owned()]);
    let mods = vec![
        Mod::Replace("displayName".to_owned(), one(display_name)),
        Mod::Replace("cn".to_owned(), one(display_name)),
        Mod::Replace("sn".to_owned(), one(display_name)),
        Mod::Replace("preferredLanguage".to_owned(), one(language)),
    ];
    let res = ldap
        .modify(dn, mods)
        .await
        .map_err(ldap_err("changing a profile"))?;
    if res.rc == 0 {
        Ok(())
    } else {
        Err(rc_err(format!("changing the profile of {dn}"), res))
    }
}

/// ppolicy's value for a lock that only an admin lifts.
pub const PERMANENT_LOCK: &str = "000001010000Z";

/// Whether an account's state and lock say an admin suspended it: the
/// appliance's own state, or slapd's permanent lock. Any other lock time is
/// slapd's temporary lock after failed binds (only an older release's
/// policy made them), which ends by itself and is not a suspension.
pub fn is_suspension(state: &str, locked_time: Option<&[String]>) -> bool {
    state.eq_ignore_ascii_case("suspended")
        || locked_time.is_some_and(|v| v.iter().any(|t| t == PERMANENT_LOCK))
}

/// Members of a group (DNs), without the placeholder.
pub async fn group_members(
    ldap: &mut Ldap,
    tree: &Tree,
    group: &str,
) -> Result<Option<Vec<String>>, DirectoryError> {
    let Some(e) = super::ldap::read(ldap, group, &["member"]).await? else {
        return Ok(None);
    };
    let nobody = tree.nobody();
    Ok(Some(
        e.attrs
            .get("member")
            .into_iter()
            .flatten()
            .filter(|m| !m.eq_ignore_ascii_case(&nobody))
            .cloned()
            .collect(),
    ))
}

/// Removes `member` from `group` if there; the last member is swapped for
/// the placeholder in the same modify, so the group stays valid.
pub async fn remove_member(
    ldap: &mut Ldap,
    tree: &Tree,
    group: &str,
    member: &str,
) -> Result<(), DirectoryError> {
    let Some(members) = group_members(ldap, tree, group).await? else {
        return Ok(());
    };
    let Some(found) = members.iter().find(|m| m.eq_ignore_ascii_case(member)) else {
        return Ok(());
    };
    let mut mods = vec![Mod::Delete("member", HashSet::from([found.as_str()]))];
    let nobody = tree.nobody();
    if members.len() == 1 {
        mods.insert(0, Mod::Add("member", HashSet::from([nobody.as_str()])));
    }
    let res = ldap
        .modify(group, mods)
        .await
        .map_err(ldap_err("removing a member"))?;
    // attributeOrValueExists (the placeholder was still there) or
    // noSuchAttribute (someone removed it meanwhile): try the plain delete.
    match res.rc {
        0 => Ok(()),
        16 | 20 => {
            let res = ldap
                .modify(
                    group,
                    vec![Mod::Delete("member", HashSet::from([found.as_str()]))],
                )
                .await
                .map_err(ldap_err("removing a member"))?;
            if res.rc == 0 || res.rc == 16 {
                Ok(())
            } else {
                Err(rc_err(format!("removing {member} from {group}"), res))
            }
        }
        _ => Err(rc_err(format!("removing {member} from {group}"), res)),
    }
}

/// Changes a person's primary collective.
pub async fn set_primary(
    ldap: &mut Ldap,
    dn: &str,
    collective_dn: &str,
) -> Result<(), DirectoryError> {
    let res = ldap
        .modify(
            dn,
            vec![Mod::Replace(
                "commonsPrimaryCollective",
                HashSet::from([collective_dn]),
            )],
        )
        .await
        .map_err(ldap_err("changing a primary collective"))?;
    if res.rc == 0 {
        Ok(())
    } else {
        Err(rc_err(
            format!("changing the primary collective of {dn}"),
            res,
        ))
    }
}

/// A collective as the directory has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Collective {
    pub slug: CollectiveSlug,
    pub name: String,
    pub description: String,
    pub home_node: String,
}

/// Every collective in the tree, by slug.
pub async fn collectives(ldap: &mut Ldap, tree: &Tree) -> Result<Vec<Collective>, DirectoryError> {
    let (entries, _) = ldap
        .search(
            &tree.collectives(),
            Scope::OneLevel,
            "(objectClass=commonsCollective)",
            vec!["ou", "displayName", "description", "commonsHomeNode"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("listing collectives"))?;
    let mut out: Vec<Collective> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .filter_map(|e| {
            Some(Collective {
                slug: first(&e, "ou").parse().ok()?,
                name: first(&e, "displayName"),
                description: first(&e, "description"),
                home_node: first(&e, "commonsHomeNode"),
            })
        })
        .collect();
    out.sort_by(|a, b| a.slug.as_str().cmp(b.slug.as_str()));
    Ok(out)
}

/// Creates a collective with its built-in groups; `Ok(false)` when it
/// already exists (each missing part is still added, so a creation cut
/// short is completed by the next try).
pub async fn create_collective(
    ldap: &mut Ldap,
    tree: &Tree,
    slug: &CollectiveSlug,
    name: &str,
    home_node: &str,
) -> Result<bool, DirectoryError> {
    let mut created = false;
    for (i, e) in collective_entries(tree, slug, name, home_node)
        .iter()
        .enumerate()
    {
        let added = add_entry(ldap, e).await?;
        if i == 0 {
            created = added;
        }
    }
    Ok(created)
}

/// Names of a collective's groups.
pub async fn groups(
    ldap: &mut Ldap,
    tree: &Tree,
    slug: &CollectiveSlug,
) -> Result<Vec<String>, DirectoryError> {
    let (entries, _) = ldap
        .search(
            &tree.groups(slug),
            Scope::OneLevel,
            "(objectClass=groupOfNames)",
            vec!["cn"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("listing groups"))?;
    let mut out: Vec<String> = entries
        .into_iter()
        .map(|e| first(&SearchEntry::construct(e), "cn"))
        .collect();
    out.sort();
    Ok(out)
}

/// A service of a collective and the groups that may use it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: String,
    pub url: String,
    /// Group names (of this collective).
    pub groups: Vec<String>,
}

/// A collective's services.
pub async fn services(
    ldap: &mut Ldap,
    tree: &Tree,
    slug: &CollectiveSlug,
) -> Result<Vec<Service>, DirectoryError> {
    let (entries, _) = ldap
        .search(
            &tree.collective_services(slug),
            Scope::OneLevel,
            "(objectClass=commonsService)",
            vec!["cn", "labeledURI", "commonsAccessGroup"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(ldap_err("listing services"))?;
    let mut out: Vec<Service> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .map(|e| {
            let mut groups: Vec<String> = e
                .attrs
                .get("commonsAccessGroup")
                .into_iter()
                .flatten()
                .filter_map(|g| tree.group_of(g).map(|(_, cn)| cn))
                .collect();
            groups.sort();
            Service {
                name: first(&e, "cn"),
                url: first(&e, "labeledURI"),
                groups,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Lets a group use a service (creating the service's entry), or stops it.
pub async fn grant_service(
    ldap: &mut Ldap,
    tree: &Tree,
    slug: &CollectiveSlug,
    service: &str,
    group: &str,
    grant: bool,
) -> Result<(), DirectoryError> {
    let dn = tree.service(slug, service);
    let group_dn = tree.group(slug, group);
    if grant {
        let added = add_entry(
            ldap,
            &Entry {
                dn: dn.clone(),
                attrs: vec![
                    ("objectClass", vec!["commonsService".into()]),
                    ("cn", vec![service.to_owned()]),
                    ("commonsAccessGroup", vec![group_dn.clone()]),
                ],
            },
        )
        .await?;
        if added {
            return Ok(());
        }
    }
    let m = if grant {
        Mod::Add("commonsAccessGroup", HashSet::from([group_dn.as_str()]))
    } else {
        Mod::Delete("commonsAccessGroup", HashSet::from([group_dn.as_str()]))
    };
    let res = ldap
        .modify(&dn, vec![m])
        .await
        .map_err(ldap_err("changing a service's groups"))?;
    // Already granted (20), not granted (16) or no such service (32).
    match res.rc {
        0 | 20 => Ok(()),
        16 | 32 if !grant => Ok(()),
        _ => Err(rc_err(format!("changing who may use {dn}"), res)),
    }
}

/// Brings an existing directory's data from tree version `from` to
/// [`super::tree::TREE_VERSION`]; each step only adds what is missing, so
/// running it again changes nothing. Returns the version reached.
pub async fn migrate_tree(ldap: &mut Ldap, tree: &Tree, from: u32) -> Result<u32, DirectoryError> {
    if from < 1 {
        let (entries, _) = ldap
            .search(
                &tree.collectives(),
                Scope::Subtree,
                "(&(objectClass=groupOfNames)(!(description=*)))",
                vec!["cn"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(ldap_err("finding groups without a description"))?;
        for e in entries.into_iter().map(SearchEntry::construct) {
            let Some((slug, cn)) = tree.group_of(&e.dn) else {
                continue;
            };
            let name = super::tree::group_display_name(&slug, &cn);
            let res = ldap
                .modify(
                    &e.dn,
                    vec![Mod::Add("description", HashSet::from([name.as_str()]))],
                )
                .await
                .map_err(ldap_err("describing a group"))?;
            if res.rc != 0 && res.rc != 20 {
                return Err(rc_err(format!("describing {}", e.dn), res));
            }
        }
    }
    Ok(super::tree::TREE_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_admins_lock_is_a_suspension() {
        let temp = ["20260101120000Z".to_owned()];
        let permanent = [PERMANENT_LOCK.to_owned()];
        assert!(!is_suspension("active", None));
        assert!(!is_suspension("active", Some(&temp)), "slapd's own lock");
        assert!(is_suspension("active", Some(&permanent)));
        assert!(is_suspension("Suspended", None));
        assert!(is_suspension("suspended", Some(&temp)));
    }
}
