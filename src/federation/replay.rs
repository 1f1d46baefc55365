//! The outbox replay: pushes local changes to the alliance in order, each
//! idempotently (the alliance is read before it is written, so a change
//! that already landed, say before a crash, is not written twice), and
//! settles what both sides changed by the authority rule.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use ldap3::Ldap;

use super::outbox::{self, Change};
use super::rules::{self, AttrChange, Attrs, Settle, Winner, copyable, first, lock_change, settle};
use super::{FederationError, Link, Settings, lock};
use crate::clock::unix_now;
use crate::directory::alliance;
use crate::directory::{DirectoryError, ldap as local_ldap, people, tree::Tree};
use crate::events::{Bus, Event};
use crate::store::{OutboxRow, Store};

/// How one change settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Settled, with a conflict recorded.
    Conflict(String),
    /// The alliance refused it for good (not allowed, invalid).
    Failed(String),
}

/// Whether an error is the link's (try again later) rather than the
/// alliance's answer to this change.
pub fn transient(e: &FederationError) -> bool {
    match e {
        FederationError::Directory(DirectoryError::Ldap { source, .. }) => match &**source {
            // busy, unavailable, other; assertionFailed: the entry changed
            // between our read and our write, so the change is settled again.
            ldap3::LdapError::LdapResult { result } => matches!(result.rc, 51 | 52 | 80 | 122),
            _ => true,
        },
        FederationError::Directory(DirectoryError::Io { .. }) => true,
        _ => false,
    }
}

/// Replays whenever something is queued (or every few seconds, for rows a
/// CLI process queued), until the link breaks.
pub async fn run(
    settings: &Settings,
    store: &Mutex<Store>,
    link: &Link,
    events: &Bus,
    mut remote: Ldap,
) -> Result<(), FederationError> {
    // Before the first drain: a change queued while it drains is heard.
    let mut heard = events.subscribe();
    let mut local = local_ldap::connect_root(&settings.local).await?;
    loop {
        drain(settings, store, link, &mut remote, &mut local).await?;
        tokio::select! {
            _ = heard.next(|e| *e == Event::FederationQueued) => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Replays every pending change, oldest first. Stops at the first error of
/// the link (the change stays pending, its attempt counted).
pub async fn drain(
    settings: &Settings,
    store: &Mutex<Store>,
    link: &Link,
    remote: &mut Ldap,
    local: &mut Ldap,
) -> Result<usize, FederationError> {
    let mut count = 0;
    loop {
        let rows = lock(store)?.outbox_pending(100)?;
        if rows.is_empty() {
            return Ok(count);
        }
        let mut settled: BTreeSet<i64> = BTreeSet::new();
        for row in rows {
            if settled.contains(&row.id) {
                continue;
            }
            // Later changes of the same entry's attributes go with this one:
            // the replay pushes current values, so they are in it already,
            // and only the oldest base tells what the alliance had.
            let (row, merged) = coalesce(store, row)?;
            let outcome = match replay_one(settings, store, remote, local, &row).await {
                Ok(o) => o,
                Err(e) if transient(&e) => {
                    lock(store)?.outbox_retry_later(row.id, &e.to_string())?;
                    return Err(e);
                }
                Err(e) => Outcome::Failed(e.to_string()),
            };
            if let Outcome::Failed(m) = &outcome {
                log::warn!(
                    "federation: the alliance refused change {} ({} {}): {m}",
                    row.id,
                    row.kind,
                    row.dn
                );
            }
            let t = unix_now();
            let s = lock(store)?;
            for id in std::iter::once(row.id).chain(merged.iter().copied()) {
                match &outcome {
                    Outcome::Done => s.outbox_settle(id, "done", None, t)?,
                    Outcome::Conflict(m) => s.outbox_settle(id, "conflict", Some(m), t)?,
                    Outcome::Failed(m) => s.outbox_settle(id, "failed", Some(m), t)?,
                }
                settled.insert(id);
                count += 1;
            }
            s.touch_contact(t)?;
            drop(s);
            link.update(|s| s.replayed += 1 + merged.len() as u64);
            if row.kind == "member" {
                link.scope_check.notify_one();
            }
        }
    }
}

/// An attribute change merged with the later pending ones of the same
/// entry: their attributes joined, each with the oldest base. Returns the
/// merged row and the ids it took in.
fn coalesce(
    store: &Mutex<Store>,
    row: OutboxRow,
) -> Result<(OutboxRow, Vec<i64>), FederationError> {
    let Some(Change::Attrs { dn, mut base }) = outbox::parse(&row) else {
        return Ok((row, Vec::new()));
    };
    let later = lock(store)?.outbox_pending_for(&row.dn)?;
    let mut merged = Vec::new();
    for r in later {
        if r.id <= row.id || r.state != "pending" {
            continue;
        }
        if let Some(Change::Attrs { base: b, .. }) = outbox::parse(&r) {
            for (k, v) in b {
                base.entry(k).or_insert(v);
            }
            merged.push(r.id);
        }
    }
    if merged.is_empty() {
        return Ok((row, merged));
    }
    let detail = serde_json::to_string(&Change::Attrs { dn, base }).unwrap_or_default();
    Ok((OutboxRow { detail, ..row }, merged))
}

/// Replays one change.
pub async fn replay_one(
    settings: &Settings,
    store: &Mutex<Store>,
    remote: &mut Ldap,
    local: &mut Ldap,
    row: &OutboxRow,
) -> Result<Outcome, FederationError> {
    let Some(change) = outbox::parse(row) else {
        return Ok(Outcome::Failed(format!(
            "this release cannot read the change ({})",
            row.kind
        )));
    };
    match change {
        Change::Add { dn } => add(settings, store, remote, local, &dn, row.id).await,
        Change::Attrs { dn, base } => {
            attrs(settings, store, remote, local, &dn, &base, row.id).await
        }
        Change::Member { group, member, .. } => {
            membership(settings, store, remote, local, &group, &member).await
        }
    }
}

async fn add(
    settings: &Settings,
    store: &Mutex<Store>,
    remote: &mut Ldap,
    local: &mut Ldap,
    dn: &str,
    outbox_id: i64,
) -> Result<Outcome, FederationError> {
    let Some((_, here)) = alliance::read(local, dn, &["*", "pwdAccountLockedTime"]).await? else {
        return Ok(Outcome::Done);
    };
    let sx = &settings.suffixes;
    let adn = sx.to_alliance(dn);
    let is_person = here.contains_key("uid") && here.contains_key("commonsaccountstate");
    let there = alliance::read(remote, &adn, &["uid", "mail", "commonsHomeNode"]).await?;
    let uid_taken = format!(
        "the uid \"{}\" registered here is someone else's at the alliance",
        first(&here, "uid")
    );
    let collision = |kind: &str, what: String| -> Result<Outcome, FederationError> {
        let s = lock(store)?;
        s.atomically(|s| {
            s.record_conflict(unix_now(), dn, "", kind, "alliance", &what, Some(outbox_id))?;
            if kind == "uid_taken" {
                ask_for_another_uid(s, settings, &here)?;
            }
            Ok(())
        })?;
        log::warn!("federation: {what}");
        Ok(Outcome::Conflict(what))
    };
    if let Some((_, there)) = there {
        if !is_person {
            return Ok(Outcome::Done);
        }
        let ours = first(&there, "mail").eq_ignore_ascii_case(first(&here, "mail"))
            && first(&there, "commonshomenode").eq_ignore_ascii_case(&settings.node);
        return if ours {
            Ok(Outcome::Done)
        } else {
            collision("uid_taken", uid_taken.clone())
        };
    }
    let mut copy = copyable(&sx.attrs_to_alliance(&here));
    if let Some(AttrChange::Replace(k, v)) = lock_change(&here, &Attrs::new()) {
        copy.insert(k.to_ascii_lowercase(), v);
    }
    let res = alliance::add(remote, &adn, &copy).await?;
    Ok(match res.rc {
        0 => Outcome::Done,
        // Exists, though we could not read it: someone else's uid.
        68 if is_person => {
            return collision("uid_taken", uid_taken.clone());
        }
        68 => Outcome::Done,
        19 if is_person => {
            return collision(
                "mail_taken",
                format!(
                    "the address {} of \"{}\" belongs to another account at the alliance",
                    first(&here, "mail"),
                    first(&here, "uid")
                ),
            );
        }
        50 => Outcome::Failed(format!(
            "the alliance does not let this appliance create {adn}: {}",
            res.text
        )),
        rc => Outcome::Failed(format!(
            "the alliance refused {adn} (rc {rc}): {}",
            res.text
        )),
    })
}

/// How long the link to choose another uid works.
const CHOOSE_UID_TTL_SECS: i64 = 14 * 86_400;

/// A uid registered here is someone else's at the alliance: the person is
/// mailed a link to choose another (their account keeps working here
/// meanwhile, and their request is kept, renamed once they choose).
fn ask_for_another_uid(
    s: &Store,
    settings: &Settings,
    here: &Attrs,
) -> Result<(), crate::store::StoreError> {
    let uid = first(here, "uid");
    let reg = s.registration_of_account(uid)?;
    let (plain, hash) = crate::token::new_token(crate::token::os_random);
    let t = unix_now();
    s.insert_token(
        &hash,
        "choose_uid",
        reg.as_ref().map(|r| r.id),
        uid,
        t + CHOOSE_UID_TTL_SECS,
    )?;
    let link = format!(
        "{}/choose-uid?token={plain}",
        settings.console_url.trim_end_matches('/')
    );
    let name = first(here, "displayname");
    let lang = reg
        .as_ref()
        .map(|r| r.language.clone())
        .unwrap_or_else(|| first(here, "preferredlanguage").to_owned());
    let params = serde_json::json!({"name": name, "uid": uid,
        "collective": settings.collective_name, "link": link});
    s.enqueue_mail(
        first(here, "mail"),
        "uid_taken",
        &lang,
        &params.to_string(),
        t,
    )?;
    s.audit(t, "federation", "uid-taken", uid)
}

fn redact(attr: &str, v: Option<&BTreeSet<String>>) -> String {
    if attr.eq_ignore_ascii_case("userPassword") {
        return "<hash>".into();
    }
    v.map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "(none)".into())
}

async fn attrs(
    settings: &Settings,
    store: &Mutex<Store>,
    remote: &mut Ldap,
    local: &mut Ldap,
    dn: &str,
    base: &std::collections::BTreeMap<String, Vec<String>>,
    outbox_id: i64,
) -> Result<Outcome, FederationError> {
    let Some((_, here)) = alliance::read(local, dn, &["*", "pwdAccountLockedTime"]).await? else {
        return Ok(Outcome::Done);
    };
    let sx = &settings.suffixes;
    let adn = sx.to_alliance(dn);
    let Some((_, there)) = alliance::read(remote, &adn, &["*", "pwdAccountLockedTime"]).await?
    else {
        return Ok(Outcome::Failed(format!(
            "{adn} is not at the alliance (or this appliance may not read it)"
        )));
    };
    let here_a = sx.attrs_to_alliance(&here);
    let base_a = sx.attrs_to_alliance(
        &base
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect(),
    );
    let home_here = first(&here, "commonshomenode").eq_ignore_ascii_case(&settings.node);
    let (mut push, mut pull, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for attr in base.keys() {
        let (h, t) = (here_a.get(attr), there.get(attr));
        let out = settle(attr, home_here, base_a.get(attr), h, t);
        let change = |v: Option<&BTreeSet<String>>| match v {
            Some(v) if !v.is_empty() => AttrChange::Replace(attr.clone(), v.clone()),
            _ => AttrChange::Delete(attr.clone()),
        };
        match out {
            Settle::Same => {}
            Settle::Push => push.push(change(h)),
            Settle::Conflict(w) => {
                let what = format!(
                    "{attr} of {dn} changed both here ({}) and at the alliance ({}); {} kept",
                    redact(attr, h),
                    redact(attr, t),
                    match w {
                        Winner::Local => "this appliance's value (its home node owns it) is",
                        Winner::Alliance => "the alliance's value is",
                    }
                );
                notes.push((attr.clone(), w, what));
                match w {
                    Winner::Local => push.push(change(h)),
                    Winner::Alliance => {
                        let tl = sx.attrs_to_local(&there);
                        pull.push(change(tl.get(attr)));
                    }
                }
            }
        }
    }
    if push
        .iter()
        .any(|c| matches!(c, AttrChange::Replace(k, _) | AttrChange::Delete(k) if k == "commonsaccountstate"))
        && let Some(l) = lock_change(&here, &there)
    {
        push.push(l);
    }
    let assertion = rules::assertion(&there, &push);
    let res = alliance::modify(remote, &adn, &push, assertion.as_deref()).await?;
    if res.rc == 50 {
        return Ok(Outcome::Failed(format!(
            "the alliance does not let this appliance change {adn} (it is homed at another node): {}",
            res.text
        )));
    }
    if res.rc != 0 {
        return Err(FederationError::Directory(DirectoryError::Ldap {
            what: format!("replaying a change of {adn}"),
            source: Box::new(ldap3::LdapError::LdapResult { result: res }),
        }));
    }
    if !pull.is_empty() {
        let tl = sx.attrs_to_local(&there);
        if let Some(l) = lock_change(&tl, &here) {
            pull.push(l);
        }
        alliance::modify(local, dn, &pull, None).await?;
    }
    if notes.is_empty() {
        return Ok(Outcome::Done);
    }
    let s = lock(store)?;
    let t = unix_now();
    for (attr, w, what) in &notes {
        let winner = match w {
            Winner::Local => "local",
            Winner::Alliance => "alliance",
        };
        s.record_conflict(t, dn, attr, "attribute", winner, what, Some(outbox_id))?;
        log::warn!("federation: {what}");
    }
    Ok(Outcome::Conflict(
        notes
            .into_iter()
            .map(|n| n.2)
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

async fn membership(
    settings: &Settings,
    store: &Mutex<Store>,
    remote: &mut Ldap,
    local: &mut Ldap,
    group: &str,
    member: &str,
) -> Result<Outcome, FederationError> {
    let sx = &settings.suffixes;
    // What the group holds here now decides, whatever the row said: a
    // later change of the same member replays the same way.
    let has = match alliance::read(local, group, &["member"]).await? {
        Some((_, a)) => a.get("member").is_some_and(|m| {
            m.iter()
                .any(|d| rules::normalize_dn(d) == rules::normalize_dn(member))
        }),
        None => false,
    };
    let (ga, ma) = (sx.to_alliance(group), sx.to_alliance(member));
    let outcome = if has {
        let res = alliance::modify_value(remote, &ga, "member", &ma, true).await?;
        match res.rc {
            0 | 20 => Outcome::Done,
            32 => Outcome::Failed(format!("the group {ga} is not at the alliance")),
            50 => Outcome::Failed(format!(
                "the alliance does not let this appliance change {ga}: {}",
                res.text
            )),
            rc => Outcome::Failed(format!("the alliance refused {ga} (rc {rc}): {}", res.text)),
        }
    } else {
        let tree = Tree::new(&sx.alliance);
        match people::remove_member(remote, &tree, &ga, &ma).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                let e = FederationError::Directory(e);
                if transient(&e) {
                    return Err(e);
                }
                Outcome::Failed(e.to_string())
            }
        }
    };
    // The down-sync left this group's members alone while the change was
    // pending, the echo of our own write included: with the group's last
    // pending change settled, take the alliance's list, so a member it
    // added meanwhile is not lost (never before: the list would undo our
    // changes still waiting).
    let last = lock(store)?.outbox_pending_for(group)?.len() <= 1;
    if outcome == Outcome::Done
        && last
        && let Some((_, there)) = alliance::read(remote, &ga, &["member"]).await?
    {
        let there = sx.attrs_to_local(&there);
        let here = alliance::read(local, group, &["member"])
            .await?
            .map(|(_, a)| a);
        if let Some(here) = here
            && let Some(m) = there.get("member")
            && here.get("member") != Some(m)
        {
            alliance::modify(
                local,
                group,
                &[AttrChange::Replace("member".into(), m.clone())],
                None,
            )
            .await?;
        }
    }
    Ok(outcome)
}
