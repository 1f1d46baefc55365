//! The down-sync and the federation task: one session per connection to the
//! alliance (the refreshAndPersist stream and the outbox replay side by
//! side), restarted with backoff and jitter when the link breaks or when a
//! malformed message makes ldap3's parser panic (the session is a task of
//! its own, so a panic ends only it).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use ldap3::Ldap;

use super::rules::{self, Attrs, Scope, copyable, down_changes, lock_change, normalize_dn};
use super::{FederationError, Link, Settings, lock, now, outbox};
use crate::directory::alliance::{self, SyncEvent};
use crate::directory::ldap as local_ldap;
use crate::store::Store;

/// Bookkeeping waiting for the next cookie: written with it, in one
/// transaction, after the LDAP changes it describes.
#[derive(Debug, Default)]
struct Pending {
    map: Vec<(Vec<u8>, String)>,
    unmap: Vec<Vec<u8>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.map.len() + self.unmap.len()
    }
}

/// Runs federation until the daemon stops: sessions one after another.
pub async fn run(settings: Settings, store: Arc<Mutex<Store>>, link: Arc<Link>) {
    let mut failures: u32 = 0;
    link.set_remote(Some(super::Remote {
        url: settings.url.clone(),
        suffix: settings.suffixes.alliance.clone(),
        ca_file: settings.ca_file.clone(),
    }));
    if let Ok(s) = store.lock()
        && let Ok(n) = s.outbox_release_all()
        && n > 0
    {
        log::info!("federation: {n} change(s) a crash left half-recorded go to the replay");
    }
    loop {
        // Its own task, so a parser panic ends only it; aborted with us, so a
        // stopped (or restarted) federation leaves no session behind.
        let session = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(session(
            settings.clone(),
            store.clone(),
            link.clone(),
        )));
        let error = match session.await {
            Ok(Ok(())) => {
                failures = 0;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) if e.is_panic() => {
                Some("the sync parser failed on a malformed message; starting again".into())
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = &error {
            if failures == 0 || link.is_up() {
                log::warn!("federation: {e}");
            }
            link.set_up(false, now(), Some(e.clone()));
            failures = failures.saturating_add(1);
        }
        link.update(|s| s.refreshing = false);
        let mut j = [0u8; 1];
        let _ = getrandom::fill(&mut j);
        let delay = if error.is_some() {
            rules::backoff(failures.saturating_sub(1), f64::from(j[0]) / 255.0)
        } else {
            std::time::Duration::from_millis(50)
        };
        tokio::time::sleep(delay).await;
    }
}

/// One connection's life: connect, replay and sync until something breaks.
/// `Ok` means "start again now" (a reload was asked for).
pub async fn session(
    settings: Settings,
    store: Arc<Mutex<Store>>,
    link: Arc<Link>,
) -> Result<(), FederationError> {
    let remote = alliance::connect(
        &settings.url,
        &settings.bind_dn,
        &settings.password,
        settings.connect_timeout,
        settings.ca_file.as_deref(),
    )
    .await?;
    let t = now();
    lock(&store)?.touch_contact(t)?;
    link.set_up(true, t, None);
    log::info!("federation: connected to {}", settings.url);
    let replay = super::replay::run(&settings, &store, &link, remote.clone());
    let down = down(&settings, &store, &link, remote);
    tokio::select! {
        r = replay => r,
        r = down => r,
    }
}

/// The down-sync over one connection.
async fn down(
    settings: &Settings,
    store: &Mutex<Store>,
    link: &Link,
    mut remote: Ldap,
) -> Result<(), FederationError> {
    let mut local = local_ldap::connect_root(&settings.local).await?;
    let scope = settings.scope();
    let cookie = lock(store)?.sync_cookie()?.map(|(c, _)| c);
    let reload = cookie.is_none();
    link.update(|s| s.refreshing = true);
    let mut stream = alliance::sync(
        &mut remote,
        &settings.suffixes.alliance,
        &scope.filter(),
        cookie,
    )
    .await?;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut pending = Pending::default();
    let mut refreshing = true;
    loop {
        // Reading the stream is cancel-safe (a channel receive), so a
        // scope check can come between two events.
        let event = tokio::select! {
            e = stream.next() => e?,
            () = link.scope_check.notified(), if !refreshing => {
                people_in_scope(settings, &scope, store, &mut local, &mut remote, &mut pending).await?;
                commit(store, &mut pending, None)?;
                continue;
            }
        };
        match event {
            SyncEvent::Entry {
                uuid,
                dn,
                attrs,
                present,
                cookie,
            } => {
                if !present {
                    let group = apply_entry(
                        settings,
                        &scope,
                        store,
                        &mut local,
                        &uuid,
                        &dn,
                        &attrs,
                        &mut pending,
                    )
                    .await?;
                    link.update(|s| s.applied += 1);
                    if group && !refreshing {
                        people_in_scope(
                            settings,
                            &scope,
                            store,
                            &mut local,
                            &mut remote,
                            &mut pending,
                        )
                        .await?;
                    }
                }
                seen.insert(uuid);
                if cookie.is_some() || pending.len() >= 1000 {
                    commit(store, &mut pending, cookie)?;
                }
            }
            SyncEvent::Delete { uuid, cookie, .. } => {
                delete_known(store, &mut local, &uuid, &mut pending).await?;
                link.update(|s| s.applied += 1);
                commit(store, &mut pending, cookie)?;
            }
            SyncEvent::IdSet {
                uuids,
                deleted,
                cookie,
            } => {
                if deleted {
                    for u in &uuids {
                        delete_known(store, &mut local, u, &mut pending).await?;
                    }
                } else {
                    seen.extend(uuids);
                }
                commit(store, &mut pending, cookie)?;
            }
            SyncEvent::RefreshDone {
                present,
                done,
                cookie,
            } => {
                if present || reload {
                    // Whatever the alliance did not list is gone from scope.
                    let known = lock(store)?.fed_entries()?;
                    for (u, _) in known {
                        if !seen.contains(&u) {
                            delete_known(store, &mut local, &u, &mut pending).await?;
                        }
                    }
                }
                seen.clear();
                people_in_scope(
                    settings,
                    &scope,
                    store,
                    &mut local,
                    &mut remote,
                    &mut pending,
                )
                .await?;
                commit(store, &mut pending, cookie)?;
                if done {
                    refreshing = false;
                    link.update(|s| s.refreshing = false);
                    log::info!("federation: refresh done, following changes");
                }
            }
            SyncEvent::NewCookie(c) => commit(store, &mut pending, Some(c))?,
            SyncEvent::RefreshRequired => {
                log::warn!("federation: the alliance cannot resume from our cookie; reloading");
                commit(store, &mut pending, None)?;
                lock(store)?.set_sync_cookie(None, now())?;
                stream.abandon().await;
                return Ok(());
            }
            SyncEvent::Done { cookie } => {
                commit(store, &mut pending, cookie)?;
                return Ok(());
            }
        }
    }
}

/// Writes the bookkeeping and, if the server sent one, the new cookie, in
/// one transaction. A cookie the server did not send leaves the old one.
fn commit(
    store: &Mutex<Store>,
    pending: &mut Pending,
    cookie: Option<Vec<u8>>,
) -> Result<(), FederationError> {
    if pending.len() == 0 && cookie.is_none() {
        return Ok(());
    }
    let t = now();
    let s = lock(store)?;
    s.atomically(|s| {
        for (u, dn) in &pending.map {
            s.map_fed_entry(u, dn, t)?;
        }
        for u in &pending.unmap {
            s.unmap_fed_entry(u)?;
        }
        match &cookie {
            Some(c) => s.set_sync_cookie(Some(c), t),
            None => s.touch_contact(t),
        }
    })?;
    *pending = Pending::default();
    Ok(())
}

/// Applies one entry from the alliance to the local slapd. Returns whether
/// it was our collective's `members` group (whose change may bring people
/// in or out of scope).
#[allow(clippy::too_many_arguments)]
async fn apply_entry(
    settings: &Settings,
    scope: &Scope,
    store: &Mutex<Store>,
    local: &mut Ldap,
    uuid: &[u8],
    alliance_dn: &str,
    attrs: &Attrs,
    pending: &mut Pending,
) -> Result<bool, FederationError> {
    let known = lock(store)?.fed_entry(uuid)?;
    if !scope.admits(alliance_dn, attrs) {
        log::warn!(
            "federation: the alliance sent {alliance_dn}, which is outside this appliance's scope; not copied"
        );
        if known.is_some() {
            delete_known(store, local, uuid, pending).await?;
        }
        return Ok(false);
    }
    let dn = settings.suffixes.to_local(alliance_dn);
    let remote = settings.suffixes.attrs_to_local(attrs);
    if let Some(old) = &known
        && normalize_dn(old) != normalize_dn(&dn)
    {
        let res = alliance::rename(local, old, &dn).await?;
        if res.rc != 0 && res.rc != 32 {
            log::warn!(
                "federation: renaming {old} to {dn} here failed: {}",
                res.text
            );
        }
    }
    let held = outbox::held(&lock(store)?.outbox_pending_for(&dn)?);
    let Some(held) = held else {
        // Our own entry, not yet settled at the alliance: the replay will.
        pending.map.push((uuid.to_vec(), dn));
        return Ok(false);
    };
    let members =
        normalize_dn(&dn) == normalize_dn(&settings.suffixes.to_local(&scope.members_group()));
    if known.is_none() {
        // Most entries of a first refresh are new here: try the add first.
        let mut copy = copyable(&remote);
        if let Some(rules::AttrChange::Replace(k, v)) = lock_change(&remote, &Attrs::new()) {
            copy.insert(k.to_ascii_lowercase(), v);
        }
        let res = alliance::add(local, &dn, &copy).await?;
        match res.rc {
            0 => {
                pending.map.push((uuid.to_vec(), dn));
                return Ok(members);
            }
            68 => {}
            _ => {
                record_down_conflict(store, &dn, &res.text, res.rc)?;
                return Ok(false);
            }
        }
    }
    let here = alliance::read(local, &dn, &["*", "pwdAccountLockedTime"]).await?;
    match here {
        None => {
            let res = alliance::add(local, &dn, &copyable(&remote)).await?;
            if res.rc != 0 && res.rc != 68 {
                record_down_conflict(store, &dn, &res.text, res.rc)?;
                return Ok(false);
            }
        }
        Some((_, here)) if known.is_none() && shadows(settings, &here, &remote) => {
            // One of ours holds this uid here, and the alliance's person
            // with it is someone else: ours is never overwritten (the replay
            // asks them to choose another uid); theirs waits.
            let s = lock(store)?;
            if !s.has_conflict(&dn, "uid_taken_here")? {
                s.record_conflict(
                    now(),
                    &dn,
                    "",
                    "uid_taken_here",
                    "local",
                    "the alliance's person with this uid is someone else than the one registered here; not copied until ours has chosen another uid",
                    None,
                )?;
            }
            return Ok(false);
        }
        Some((_, here)) => {
            let changes = down_changes(&remote, &here, &held);
            let res = alliance::modify(local, &dn, &changes, None).await?;
            if res.rc != 0 {
                record_down_conflict(store, &dn, &res.text, res.rc)?;
                return Ok(false);
            }
            // A password set elsewhere ends the person's sessions here, as
            // one set here does.
            let password = changes.iter().any(|c| {
                matches!(c, rules::AttrChange::Replace(k, _) | rules::AttrChange::Delete(k)
                    if k.eq_ignore_ascii_case("userPassword"))
            });
            if password && let Some(uid) = here.get("uid").and_then(|v| v.iter().next()) {
                lock(store)?.delete_sessions_of(uid)?;
            }
        }
    }
    pending.map.push((uuid.to_vec(), dn));
    Ok(members)
}

/// Whether `here` is a person made here who is not the alliance's `remote`
/// (same uid, another mail).
fn shadows(settings: &Settings, here: &Attrs, remote: &Attrs) -> bool {
    here.contains_key("uid")
        && rules::first(here, "commonshomenode").eq_ignore_ascii_case(&settings.node)
        && !rules::first(here, "mail").eq_ignore_ascii_case(rules::first(remote, "mail"))
}

/// An entry the alliance sent that this directory refused (a mail taken
/// here by someone else, say): recorded; the stream goes on.
fn record_down_conflict(
    store: &Mutex<Store>,
    dn: &str,
    text: &str,
    rc: u32,
) -> Result<(), FederationError> {
    log::warn!("federation: the local directory refused {dn} from the alliance (rc {rc}): {text}");
    lock(store)?.record_conflict(
        now(),
        dn,
        "",
        "refused_here",
        "local",
        &format!("the local directory refused the alliance's entry (rc {rc}): {text}"),
        None,
    )?;
    Ok(())
}

/// Deletes here the entry the alliance knows by `uuid` (and anything under
/// it), if we have it.
async fn delete_known(
    store: &Mutex<Store>,
    local: &mut Ldap,
    uuid: &[u8],
    pending: &mut Pending,
) -> Result<(), FederationError> {
    let Some(dn) = lock(store)?.fed_entry(uuid)? else {
        return Ok(());
    };
    delete_tree(local, &dn).await?;
    pending.unmap.push(uuid.to_vec());
    Ok(())
}

async fn delete_tree(local: &mut Ldap, dn: &str) -> Result<(), FederationError> {
    let mut under = alliance::search(local, dn, "(objectClass=*)", &["1.1"])
        .await
        .unwrap_or_default();
    // Deepest first.
    under.sort_by_key(|(d, _)| std::cmp::Reverse(d.split(',').count()));
    for (d, _) in under {
        let res = alliance::delete(local, &d).await?;
        if res.rc != 0 && res.rc != 32 {
            log::warn!("federation: deleting {d} here failed: {}", res.text);
        }
    }
    Ok(())
}

/// Keeps the people in step with our collective's `members` group: a change
/// of membership alone does not reach syncprov (the memberof overlay writes
/// memberOf without replicating it), so people who joined are fetched and
/// people who left are removed here.
async fn people_in_scope(
    settings: &Settings,
    scope: &Scope,
    store: &Mutex<Store>,
    local: &mut Ldap,
    remote: &mut Ldap,
    pending: &mut Pending,
) -> Result<(), FederationError> {
    let sx = &settings.suffixes;
    let group = sx.to_local(&scope.members_group());
    let members: BTreeSet<String> = match alliance::read(local, &group, &["member"]).await? {
        Some((_, a)) => a
            .get("member")
            .map(|m| m.iter().map(|d| normalize_dn(d)).collect())
            .unwrap_or_default(),
        None => BTreeSet::new(),
    };
    let tree = crate::directory::tree::Tree::new(&sx.local);
    let known = lock(store)?.fed_entries()?;
    let known_dns: HashSet<String> = known.iter().map(|(_, d)| normalize_dn(d)).collect();
    // Joined: members we do not have yet.
    for m in &members {
        if known_dns.contains(m) || tree.uid_of(m).is_none() {
            continue;
        }
        if alliance::read(local, m, &["1.1"]).await?.is_some()
            && lock(store)?.outbox_pending_for(m)?.is_empty()
        {
            // Ours, made here: the replay owns it.
            continue;
        }
        if let Some((dn, attrs)) =
            alliance::read(remote, &sx.to_alliance(m), &["*", "memberOf", "entryUUID"]).await?
            && let Some(uuid) = attrs
                .get("entryuuid")
                .and_then(|u| u.iter().next())
                .and_then(|u| alliance::uuid_bytes(u))
        {
            apply_entry(settings, scope, store, local, &uuid, &dn, &attrs, pending).await?;
        }
    }
    // Left: people copied here who are neither members nor primary here.
    for (uuid, dn) in known {
        let n = normalize_dn(&dn);
        if tree.uid_of(&dn).is_none() || members.contains(&n) {
            continue;
        }
        let still = match alliance::read(remote, &sx.to_alliance(&dn), &["*", "memberOf"]).await? {
            Some((adn, attrs)) => scope.admits(&adn, &attrs),
            None => false,
        };
        if !still {
            delete_tree(local, &dn).await?;
            pending.unmap.push(uuid);
        }
    }
    Ok(())
}
