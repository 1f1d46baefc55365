//! People and groups in the tree: look-ups, creation and membership. Every
//! filter value goes through `ldap_escape` and every RDN through the tree's
//! `dn_escape`, so no input can change a filter's or a DN's shape.

use std::collections::HashSet;

use ldap3::{Ldap, Mod, Scope, SearchEntry, ldap_escape};

use super::DirectoryError;
use super::tree::Tree;

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
