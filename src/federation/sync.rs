//! The down-sync and the federation task: one session per connection to the
//! alliance (the refreshAndPersist stream and the outbox replay side by
//! side), restarted with backoff and jitter when the link breaks or when a
//! malformed message makes ldap3's parser panic (the session is a task of
//! its own, so a panic ends only it).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::Ldap;

use super::guard::{self, Deletions};
use super::rules::{self, Attrs, Scope, copyable, down_changes, lock_change, normalize_dn};
use super::{FederationError, Link, Settings, lock, outbox};
use crate::clock::unix_now;
use crate::directory::alliance::{self, SyncEvent};
use crate::directory::ldap as local_ldap;
use crate::directory::tree::Tree;
use crate::events::{Bus, Event, Subscriber};
use crate::store::{HeldEntry, Store};

/// How long a held refresh waits for an admin before it is tried again
/// (the alliance may have been put right meanwhile).
const HOLD_RETRY: Duration = Duration::from_secs(600);

/// Bookkeeping waiting for the next cookie: written with it, in one
/// transaction, after the LDAP changes it describes.
#[derive(Debug, Default)]
struct Pending {
    map: Vec<(Vec<u8>, String)>,
    unmap: Vec<Vec<u8>>,
    /// The refresh went past any hold: drop it with the next write.
    clear_hold: bool,
    /// Entries the alliance no longer gives us, gathered (over a whole
    /// refresh) until [`judge`] decides what happens to them. Not written:
    /// a session that ends first leaves them to the next refresh.
    remove: BTreeSet<Vec<u8>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.map.len() + self.unmap.len() + usize::from(self.clear_hold)
    }
}

/// Runs federation until the daemon stops: sessions one after another.
pub async fn run(settings: Settings, store: Arc<Mutex<Store>>, link: Arc<Link>, events: Bus) {
    let mut failures: u32 = 0;
    let security = match settings.security() {
        Ok(s) => s,
        Err(e) => {
            // Nothing to retry: only a change of settings (which starts
            // federation again) can allow this link.
            log::warn!("federation: {e}");
            link.update(|s| {
                s.up = false;
                s.refused = Some(e.to_string());
                s.last_error = Some(e.to_string());
            });
            return std::future::pending().await;
        }
    };
    link.update(|s| s.refused = None);
    link.set_remote(Some(super::Remote {
        url: settings.url.clone(),
        suffix: settings.suffixes.alliance.clone(),
        ca_file: settings.ca_file.clone(),
        security,
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
            events.clone(),
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
            link.set_up(false, unix_now(), Some(e.clone()));
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
    events: Bus,
) -> Result<(), FederationError> {
    let remote = settings.connect().await?;
    let t = unix_now();
    lock(&store)?.touch_contact(t)?;
    link.set_up(true, t, None);
    let security = settings.security().ok();
    link.update(|s| s.security = security);
    log::info!(
        "federation: connected to {} ({})",
        settings.url,
        security.map(|s| s.to_string()).unwrap_or_default()
    );
    let replay = super::replay::run(&settings, &store, &link, &events, remote.clone());
    let down = down(&settings, &store, &link, events.subscribe(), remote);
    tokio::select! {
        r = replay => r,
        r = down => r,
    }
}

/// The down-sync over one connection. The deletions a refresh asks for
/// (listed deletes and whatever a present phase did not list) are gathered
/// and judged together when it ends, and its cookie is written only then:
/// a refresh that is held, or cut short, is gone through again.
///
/// `heard` is subscribed before the session's first read, so a
/// confirmation of the hold this session makes is not missed.
async fn down(
    settings: &Settings,
    store: &Mutex<Store>,
    link: &Link,
    mut heard: Subscriber,
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
    let mut refresh_cookie: Option<Vec<u8>> = None;
    loop {
        // Reading the stream is cancel-safe (a channel receive), so a
        // scope check can come between two events.
        let event = tokio::select! {
            e = stream.next() => e?,
            () = link.scope_check.notified(), if !refreshing => {
                people_in_scope(settings, &scope, store, &mut local, &mut remote, &mut pending).await?;
                if judge(settings, store, &mut local, &mut pending).await? {
                    return park(store, link, &mut heard, &mut pending).await;
                }
                commit(store, &mut pending, None)?;
                continue;
            }
        };
        // The event's cookie, and whether it ends the refresh (or the search).
        let (cookie, refresh_over, search_over) = match event {
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
                (cookie, false, false)
            }
            SyncEvent::Delete { uuid, cookie, .. } => {
                pending.remove.insert(uuid);
                link.update(|s| s.applied += 1);
                (cookie, false, false)
            }
            SyncEvent::IdSet {
                uuids,
                deleted,
                cookie,
            } => {
                if deleted {
                    pending.remove.extend(uuids);
                } else {
                    seen.extend(uuids);
                }
                (cookie, false, false)
            }
            SyncEvent::RefreshDone {
                present,
                done,
                cookie,
            } => {
                if present || reload {
                    // Whatever the alliance did not list is gone from scope.
                    let known = lock(store)?.fed_entries()?;
                    pending.remove.extend(
                        known
                            .into_iter()
                            .map(|(u, _)| u)
                            .filter(|u| !seen.contains(u)),
                    );
                }
                seen.clear();
                if done {
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
                (cookie, done, false)
            }
            SyncEvent::NewCookie(c) => (Some(c), false, false),
            SyncEvent::RefreshRequired => {
                log::warn!("federation: the alliance cannot resume from our cookie; reloading");
                commit(store, &mut pending, None)?;
                lock(store)?.set_sync_cookie(None, unix_now())?;
                stream.abandon().await;
                return Ok(());
            }
            SyncEvent::Done { cookie } => (cookie, refreshing, true),
        };
        if refreshing && !refresh_over {
            if cookie.is_some() {
                refresh_cookie = cookie;
            }
            if pending.len() >= 1000 {
                commit(store, &mut pending, None)?;
            }
            continue;
        }
        if judge(settings, store, &mut local, &mut pending).await? {
            return park(store, link, &mut heard, &mut pending).await;
        }
        if refreshing {
            pending.clear_hold = true;
            commit(store, &mut pending, cookie.or(refresh_cookie.take()))?;
            refreshing = false;
            link.update(|s| s.refreshing = false);
            log::info!("federation: refresh done, following changes");
        } else if cookie.is_some() || pending.len() > 0 {
            commit(store, &mut pending, cookie)?;
        }
        if search_over {
            return Ok(());
        }
    }
}

/// Judges the deletions gathered in `pending.remove` by
/// [`guard::deletions`]. Within the limits (or confirmed by an admin):
/// deletes here what may go, keeps what is protected (forgetting only its
/// link to the alliance's entry, recorded as a `kept_here` conflict), and
/// returns false. Past them: records the hold, changes nothing here, and
/// returns true.
async fn judge(
    settings: &Settings,
    store: &Mutex<Store>,
    local: &mut Ldap,
    pending: &mut Pending,
) -> Result<bool, FederationError> {
    if pending.remove.is_empty() {
        return Ok(false);
    }
    let tree = Tree::new(&settings.suffixes.local);
    let protected = guard::Protected::new(&tree, &settings.collective, &settings.node);
    let mut entries: Vec<HeldEntry> = Vec::new();
    for uuid in std::mem::take(&mut pending.remove) {
        let Some(dn) = lock(store)?.fed_entry(&uuid)? else {
            continue;
        };
        let home = if tree.uid_of(&dn).is_some() {
            alliance::read(local, &dn, &["commonsHomeNode"])
                .await?
                .map(|(_, a)| rules::first(&a, "commonshomenode").to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let kept = protected.covers(&dn, &home);
        entries.push(HeldEntry { uuid, dn, kept });
    }
    let (copy, confirmed) = {
        let s = lock(store)?;
        (s.fed_entry_count()?, s.fed_hold_confirmed()?)
    };
    let keys: Vec<(Vec<u8>, bool)> = entries.iter().map(|e| (e.uuid.clone(), e.kept)).collect();
    let decision = guard::deletions(
        &keys,
        usize::try_from(copy).unwrap_or_default(),
        settings.deletion_limits,
        confirmed.as_ref(),
    );
    let (delete, keep) = match decision {
        Deletions::Hold => {
            let kept = entries.iter().filter(|e| e.kept).count();
            let id = lock(store)?.hold_fed_deletions(unix_now(), copy, &entries)?;
            log::warn!(
                "federation: the alliance's refresh would delete {} of the {copy} entries copied here ({kept} of them this box's own: people homed here, its collective, its directory's containers, which stay in any case); nothing was deleted (hold {id}). `commonscloud alliance status` lists them; once the alliance is known to be right, `commonscloud alliance confirm-deletions` lets them go",
                entries.len()
            );
            return Ok(true);
        }
        Deletions::Apply { delete, keep } => (delete, keep),
    };
    let dn_of: BTreeMap<&[u8], &str> = entries
        .iter()
        .map(|e| (e.uuid.as_slice(), e.dn.as_str()))
        .collect();
    for uuid in delete {
        if let Some(dn) = dn_of.get(uuid.as_slice()) {
            delete_tree(local, dn).await?;
        }
        pending.unmap.push(uuid);
    }
    for uuid in keep {
        if let Some(dn) = dn_of.get(uuid.as_slice()) {
            let s = lock(store)?;
            if !s.has_conflict(dn, "kept_here")? {
                log::warn!(
                    "federation: the alliance no longer gives {dn} to this box; it is this box's own, so it stays"
                );
                s.record_conflict(
                    unix_now(),
                    dn,
                    "",
                    "kept_here",
                    "local",
                    "the alliance no longer gives this entry to this box; it is this box's own (a person homed here, its collective, or a container of its directory), so it stays, and only its link to the alliance's entry is forgotten",
                    None,
                )?;
            }
        }
        pending.unmap.push(uuid);
    }
    Ok(false)
}

/// A held refresh: the down-sync waits (the replay goes on) until an admin
/// confirms or [`HOLD_RETRY`] passes, then ends the session, so the next
/// one refreshes again from the last cookie written.
async fn park(
    store: &Mutex<Store>,
    link: &Link,
    heard: &mut Subscriber,
    pending: &mut Pending,
) -> Result<(), FederationError> {
    commit(store, pending, None)?;
    link.update(|s| s.refreshing = false);
    let until = tokio::time::Instant::now() + HOLD_RETRY;
    loop {
        tokio::select! {
            confirmed = heard.next(|e| *e == Event::DeletionsConfirmed) => {
                // Events missed: the store says whether one was this.
                let confirmed = confirmed.is_some()
                    || lock(store)?.fed_hold()?.is_some_and(|h| h.confirmed_at.is_some());
                if confirmed {
                    log::info!("federation: the held deletions were confirmed; refreshing again");
                    break;
                }
            }
            () = tokio::time::sleep_until(until) => break,
        }
    }
    Ok(())
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
    let t = unix_now();
    let s = lock(store)?;
    s.atomically(|s| {
        for (u, dn) in &pending.map {
            s.map_fed_entry(u, dn, t)?;
        }
        for u in &pending.unmap {
            s.unmap_fed_entry(u)?;
        }
        if pending.clear_hold {
            s.clear_fed_hold()?;
        }
        match &cookie {
            Some(c) => s.set_sync_cookie(Some(c), t),
            None => s.touch_contact(t),
        }
    })?;
    pending.map.clear();
    pending.unmap.clear();
    pending.clear_hold = false;
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
            pending.remove.insert(uuid.to_vec());
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
                    unix_now(),
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
        unix_now(),
        dn,
        "",
        "refused_here",
        "local",
        &format!("the local directory refused the alliance's entry (rc {rc}): {text}"),
        None,
    )?;
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
/// people who left are handed to [`judge`].
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
            pending.remove.insert(uuid);
        }
    }
    Ok(())
}
