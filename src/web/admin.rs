//! The admins' pages under `/console`: dashboard, requests, members,
//! groups and services, apps, upgrades, backups, settings and the audit
//! log. Only admins of the box's own collective get in; every action is a
//! CSRF-checked POST, done by the onboarding service (which audits it)
//! and answered with a redirect.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};

use super::i18n::Msg;
use super::pages::{self, Chrome};
use super::{Ctx, Session, Web, csrf_refused, failure, failure_text, ops, page, see_other};
use crate::api::ComponentState;
use crate::clock::unix_now;

use super::{Fields, get_field};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/requests", get(requests))
        .route("/console/requests/{id}", get(request_anchor))
        .route("/console/requests/{id}/{decision}", post(decide_request))
        .route("/console/joins/{id}", get(join_anchor))
        .route("/console/joins/{id}/{decision}", post(decide_join))
        .route("/console/people", get(people))
        .route("/console/people/{uid}/{act}", post(person_action))
        .route("/console/invite", post(invite))
        .route(
            "/console/collectives",
            get(collectives).post(create_collective),
        )
        .route("/console/collectives/{slug}/groups", post(create_group))
        .route("/console/collectives/{slug}/services", post(grant_service))
        .route("/console/apps", get(apps))
        .route("/console/apps/{container}/logs", get(app_logs))
        .route("/console/apps/{container}/{act}", post(switch_app))
        .route("/console/apps/{container}/restart", post(restart_app))
        .route("/console/reconcile", post(reconcile))
        .route("/console/upgrades", get(upgrades))
        .route("/console/backups", get(backups))
        .route("/console/settings", get(settings))
        .route("/console/settings/test-mail", post(test_mail))
        .route("/console/audit", get(audit))
}

/// The admin's session, or the answer for anyone else.
fn admin(ctx: &mut Ctx) -> Result<Session, Box<Response>> {
    match ctx.session.clone() {
        Some(s) if s.admin => Ok(s),
        Some(_) => {
            let c = ctx.chrome();
            let m = pages::problem(&c, c.t(Msg::NavConsole), c.t(Msg::NotAdmin));
            Err(Box::new(page(ctx, StatusCode::FORBIDDEN, m)))
        }
        None => {
            let next: String = form_urlencoded::byte_serialize(ctx.path.as_bytes()).collect();
            Err(Box::new(see_other(ctx, &format!("/login?next={next}"))))
        }
    }
}

/// An admin's form: signed in as admin and carrying the session's token.
fn admin_form(ctx: &mut Ctx, f: &Fields) -> Result<Session, Box<Response>> {
    let s = admin(ctx)?;
    if !ctx.csrf_ok(get_field(f, "csrf")) {
        return Err(Box::new(csrf_refused(ctx)));
    }
    Ok(s)
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Flash {
    done: Option<String>,
    q: String,
}

fn flash(ctx: &Ctx, q: &Flash) -> Option<&'static str> {
    q.done.as_ref().map(|_| ctx.t(Msg::Done))
}

fn show(
    ctx: &mut Ctx,
    title: Msg,
    flash: Option<&str>,
    status: StatusCode,
    body: impl FnOnce(&Chrome) -> Markup,
) -> Response {
    let c = ctx.chrome();
    let b = body(&c);
    let m = pages::console(&c, c.t(title), flash, b);
    page(ctx, status, m)
}

/// After an action: back to `to` with a confirmation, or the error shown
/// on the console's page.
fn after(
    ctx: &mut Ctx,
    to: &str,
    r: Result<(), crate::onboarding::service::OnboardingError>,
) -> Response {
    match r {
        Ok(()) => {
            let sep = if to.contains('?') { '&' } else { '?' };
            see_other(ctx, &format!("{to}{sep}done=1"))
        }
        Err(e) => {
            let f = failure(ctx, e);
            let status = match &f {
                super::Failure::Page(s, _) => *s,
                super::Failure::Fields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let text = failure_text(&f);
            let back = to.to_owned();
            show(ctx, Msg::ConsoleTitle, None, status, |c| {
                html! {
                    (pages::alert(&text))
                    p { a href=(back) { (c.t(Msg::ConsoleTitle)) } }
                }
            })
        }
    }
}

fn state_word(s: &ComponentState) -> &'static str {
    s.as_str()
}

/// `(total, available)` MiB of RAM, from /proc/meminfo.
fn memory_mb() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((kb("MemTotal:")? / 1024, kb("MemAvailable:")? / 1024))
}

/// `(total, free)` GiB of the file system holding `path`.
fn disk_gb(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let block = s.fragment_size() as u64;
    let gib = 1024 * 1024 * 1024;
    Some((
        s.blocks() as u64 * block / gib,
        s.blocks_available() as u64 * block / gib,
    ))
}

/// The dashboard's federation section: the link, the copy's age, the
/// outbox and the latest conflicts.
fn federation(c: &pages::Chrome, f: Option<&crate::federation::Status>, now: i64) -> maud::Markup {
    let Some(f) = f.filter(|f| f.enrolment.is_some()) else {
        return html! { p #federation { (c.t(Msg::FederationNone)) } };
    };
    let ago = |t: Option<i64>| match t {
        Some(t) => format!("{} {}", (now - t).max(0), c.t(Msg::SecondsAgo)),
        None => c.t(Msg::Never).to_owned(),
    };
    let url = f
        .enrolment
        .as_ref()
        .map(|e| e.url.clone())
        .unwrap_or_default();
    html! {
        dl #federation {
            dt { (c.t(Msg::FedLink)) }
            dd { code { (url) } " · "
                @if f.link.up { strong { (c.t(Msg::FedUp)) } } @else { strong { (c.t(Msg::FedDown)) } }
                @if let Some(e) = &f.link.last_error { br; small { (e) } }
            }
            dt { (c.t(Msg::FedLastContact)) } dd { (ago(f.last_contact)) }
            dt { (c.t(Msg::FedSyncAge)) } dd { (ago(f.cookie_age_secs.map(|a| now - a))) }
            dt { (c.t(Msg::FedInScope)) } dd { (f.entries_in_scope) }
            dt { (c.t(Msg::FedOutbox)) }
            dd { (f.outbox.pending)
                @if let Some(t) = f.outbox.oldest_pending_at { " (" (c.t(Msg::FedOldest)) ": " (ago(Some(t))) ")" }
                @if f.outbox.failed > 0 { " · " (f.outbox.failed) " " (c.t(Msg::FedRefused)) }
            }
            dt { (c.t(Msg::FedConflicts)) } dd { (f.outbox.conflicts) }
        }
        @if !f.conflicts.is_empty() {
            ul #conflicts {
                @for k in f.conflicts.iter().take(10) {
                    li { (ago(Some(k.at))) " · " code { (k.dn) } " · " (k.detail) }
                }
            }
        }
    }
}

async fn dashboard(State(web): State<Arc<Web>>, mut ctx: Ctx, Query(q): Query<Flash>) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let status = web.shared.status();
    let config = web.shared.config();
    let profile = config.profile();
    let (pending, joins) = super::pending_counts(&web);
    let mem = memory_mb();
    let disk = disk_gb(&config.paths.state_dir);
    let apps = ops::app_rows(&web).await;
    let now = unix_now();
    let fed = crate::federation::status(&web.shared.store, &web.shared.federation, now).ok();
    let fl = flash(&ctx, &q);
    show(&mut ctx, Msg::Dashboard, fl, StatusCode::OK, |c| {
        html! {
            p { (c.t(Msg::Version)) ": " (status.version) " · " (status.collective) }
            h2 { (c.t(Msg::PendingValidations)) }
            p #pending {
                a href="/console/requests" { (pending) " · " (c.t(Msg::Requests)) }
                " · " (joins) " · " (c.t(Msg::JoinRequests))
            }
            (pages::table(&[c.t(Msg::Component), c.t(Msg::State), c.t(Msg::Detail)],
                status.components.iter().map(|comp| html! {
                    tr {
                        td { (comp.name) }
                        td { (state_word(&comp.state)) }
                        td { (comp.detail) }
                    }
                }).collect()))
            @if !apps.is_empty() {
                h2 { (c.t(Msg::Apps)) }
                (pages::table(&[c.t(Msg::Apps), c.t(Msg::Version), c.t(Msg::Memory), c.t(Msg::State)],
                    apps.iter().map(|r| html! {
                        tr { td { (r.app) br; small { (r.container) } } td { code { (r.image) } } td { (r.memory_mb) " MiB" } td { (r.state) } }
                    }).collect()))
            }
            h2 { (c.t(Msg::Federation)) }
            (federation(c, fed.as_ref(), now))
            h2 { (c.t(Msg::HardwareProfile)) ": " (profile.name) }
            ul {
                @if let Some((total, avail)) = mem {
                    li { (c.t(Msg::Memory)) ": " (total - avail) " / " (total) " MiB; "
                        (profile.app_budget_mb) " MiB · " (c.t(Msg::Apps)) " (" (profile.ram_mb) " MiB)" }
                }
                @if let Some((total, free)) = disk {
                    li { (c.t(Msg::Disk)) ": " (total - free) " / " (total) " GiB (min " (profile.min_disk_gb) " GiB)" }
                }
            }
            h2 { (c.t(Msg::Upgrades)) }
            p { (c.t(Msg::UpgradesNone)) }
            h2 { (c.t(Msg::Backups)) }
            p { (c.t(Msg::BackupsNone)) }
        }
    })
}

async fn requests(State(web): State<Arc<Web>>, mut ctx: Ctx, Query(q): Query<Flash>) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let regs = web
        .shared
        .with_store(|s| s.registrations(Some("awaiting_validation")))
        .unwrap_or_default();
    let joins = web
        .shared
        .onboarding()
        .join_requests(None, Some("pending"))
        .unwrap_or_default();
    let fl = flash(&ctx, &q);
    show(&mut ctx, Msg::Requests, fl, StatusCode::OK, |c| {
        let reason = html! {
            label for="reason" { (c.t(Msg::Reason)) }
            input #reason type="text" name="reason" maxlength="500";
        };
        html! {
            h2 { (c.t(Msg::PendingValidations)) }
            @if regs.is_empty() { p { (c.t(Msg::None)) } }
            @for r in &regs {
                section id=(format!("request-{}", r.id)) aria-labelledby=(format!("rq-{}", r.id)) {
                    h3 id=(format!("rq-{}", r.id)) { (r.display_name) " (" (r.uid) ")" }
                    p { (r.email) " → " (r.collective) }
                    @if !r.message.is_empty() { blockquote { (r.message) } }
                    (pages::action(c, &format!("/console/requests/{}/approve", r.id), c.t(Msg::Approve), false, html!{}))
                    details {
                        summary { (c.t(Msg::Reject)) }
                        (pages::action(c, &format!("/console/requests/{}/reject", r.id), c.t(Msg::Reject), true, reason.clone()))
                    }
                }
            }
            h2 { (c.t(Msg::JoinRequests)) }
            @if joins.is_empty() { p { (c.t(Msg::None)) } }
            @for j in &joins {
                section id=(format!("join-{}", j.id)) {
                    h3 { (j.uid) " → " (j.collective) }
                    @if !j.message.is_empty() { blockquote { (j.message) } }
                    (pages::action(c, &format!("/console/joins/{}/approve", j.id), c.t(Msg::Approve), false, html!{}))
                    details {
                        summary { (c.t(Msg::Reject)) }
                        (pages::action(c, &format!("/console/joins/{}/reject", j.id), c.t(Msg::Reject), true, reason.clone()))
                    }
                }
            }
        }
    })
}

/// The link in the admins' mail leads to the request on the list.
async fn request_anchor(ctx: Ctx, Path(id): Path<i64>) -> Response {
    see_other(&ctx, &format!("/console/requests#request-{id}"))
}

async fn join_anchor(ctx: Ctx, Path(id): Path<i64>) -> Response {
    see_other(&ctx, &format!("/console/requests#join-{id}"))
}

async fn decide_request(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path((id, decision)): Path<(i64, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let svc = web.shared.onboarding();
    let by = s.person.uid.as_str();
    let r = match decision.as_str() {
        "approve" => svc.approve(id, by, unix_now()).await,
        "reject" => {
            svc.reject(id, by, get_field(&f, "reason"), unix_now())
                .await
        }
        _ => return super::not_found(ctx).await,
    };
    after(&mut ctx, "/console/requests", r)
}

async fn decide_join(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path((id, decision)): Path<(i64, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return super::not_found(ctx).await,
    };
    let r = web
        .shared
        .onboarding()
        .decide_join(
            id,
            approve,
            &s.person.uid,
            get_field(&f, "reason"),
            unix_now(),
        )
        .await;
    after(&mut ctx, "/console/requests", r)
}

async fn people(State(web): State<Arc<Web>>, mut ctx: Ctx, Query(q): Query<Flash>) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let home = web.shared.config().collective.slug.clone();
    let all = match web.shared.onboarding().people(None).await {
        Ok(p) => p,
        Err(e) => {
            let f = failure(&ctx, e);
            let text = failure_text(&f);
            return show(
                &mut ctx,
                Msg::Members,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                |_| pages::alert(&text),
            );
        }
    };
    let needle = q.q.trim().to_lowercase();
    let shown: Vec<_> = all
        .into_iter()
        .filter(|p| {
            needle.is_empty()
                || p.uid.contains(&needle)
                || p.mail.to_lowercase().contains(&needle)
                || p.display_name.to_lowercase().contains(&needle)
        })
        .collect();
    let fl = flash(&ctx, &q);
    let query = q.q.clone();
    show(&mut ctx, Msg::Members, fl, StatusCode::OK, |c| {
        html! {
            form method="get" action="/console/people" role="search" {
                label for="q" { (c.t(Msg::Search)) }
                input #q type="search" name="q" value=(query);
                button type="submit" { (c.t(Msg::Search)) }
            }
            (pages::table(&[c.t(Msg::FieldUid), c.t(Msg::FieldEmail), c.t(Msg::NavCollectives), ""],
                shown.iter().map(|p| {
                    let base = format!("/console/people/{}", p.uid);
                    let admin = p.is_admin(&home);
                    html! {
                        tr {
                            td { strong { (p.uid) } br; (p.display_name)
                                @if p.suspended { " · " em { (c.t(Msg::Suspended)) } }
                                @if admin { " · " em { (c.t(Msg::Admin)) } } }
                            td { (p.mail) }
                            td { @for s in p.collectives() { (s) " " } }
                            td {
                                @if p.suspended {
                                    (pages::action(c, &format!("{base}/reactivate"), c.t(Msg::Reactivate), false, html!{}))
                                } @else {
                                    details {
                                        summary { (c.t(Msg::Suspend)) }
                                        (pages::action(c, &format!("{base}/suspend"), c.t(Msg::Suspend), true, html! {
                                            label for=(format!("r-{}", p.uid)) { (c.t(Msg::Reason)) }
                                            input id=(format!("r-{}", p.uid)) type="text" name="reason" maxlength="500";
                                        }))
                                    }
                                }
                                @if admin {
                                    (pages::action(c, &format!("{base}/demote"), c.t(Msg::MakeMember), false, html!{}))
                                } @else if p.is_member(&home) {
                                    (pages::action(c, &format!("{base}/promote"), c.t(Msg::MakeAdmin), false, html!{}))
                                }
                            }
                        }
                    }
                }).collect()))
            h2 { (c.t(Msg::InviteByMail)) }
            form method="post" action="/console/invite" {
                (pages::csrf(c))
                label for="invite-email" { (c.t(Msg::FieldEmail)) }
                input #invite-email type="email" name="email" required autocomplete="off";
                input type="hidden" name="collective" value=(home.as_str());
                button type="submit" { (c.t(Msg::InviteSubmit)) }
            }
        }
    })
}

async fn person_action(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path((uid, act)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let svc = web.shared.onboarding();
    let home = web.shared.config().collective.slug.to_string();
    let by = s.person.uid.as_str();
    // The group form names the person in a field (`/console/people/-/group`).
    let uid = if uid == "-" {
        get_field(&f, "uid").trim().to_owned()
    } else {
        uid
    };
    let r = match act.as_str() {
        "suspend" => svc
            .suspend(&uid, by, get_field(&f, "reason"), unix_now())
            .await
            .map(drop),
        "reactivate" => svc.reactivate(&uid, by, unix_now()).await.map(drop),
        "promote" => svc
            .set_admin(&uid, &home, true, by, unix_now())
            .await
            .map(drop),
        "demote" => svc
            .set_admin(&uid, &home, false, by, unix_now())
            .await
            .map(drop),
        "group" => {
            let add = get_field(&f, "remove").is_empty();
            let collective = match get_field(&f, "collective") {
                "" => home.as_str(),
                c => c,
            };
            svc.group_member(
                &uid,
                collective,
                get_field(&f, "group"),
                add,
                by,
                unix_now(),
            )
            .await
            .map(drop)
        }
        _ => return super::not_found(ctx).await,
    };
    if act == "suspend" && r.is_ok() {
        // A suspended person's sessions end now, not at their next request.
        let _ = web.shared.with_store(|st| st.delete_sessions_of(&uid));
    }
    let back = if act == "group" {
        "/console/collectives"
    } else {
        "/console/people"
    };
    after(&mut ctx, back, r)
}

async fn invite(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = web
        .shared
        .onboarding()
        .invite(
            get_field(&f, "email"),
            get_field(&f, "collective"),
            &s.person.uid,
            unix_now(),
        )
        .await
        .map(drop);
    after(&mut ctx, "/console/people", r)
}

async fn collectives(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Query(q): Query<Flash>,
) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let svc = web.shared.onboarding();
    let mut views = Vec::new();
    match svc.collectives().await {
        Ok(list) => {
            for c in list {
                if let Ok(v) = svc.collective(c.slug.as_str()).await {
                    views.push(v);
                }
            }
        }
        Err(e) => {
            let f = failure(&ctx, e);
            let text = failure_text(&f);
            return show(
                &mut ctx,
                Msg::GroupsServices,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                |_| pages::alert(&text),
            );
        }
    }
    let fl = flash(&ctx, &q);
    show(&mut ctx, Msg::GroupsServices, fl, StatusCode::OK, |c| {
        html! {
            @for v in &views {
                @let slug = v.collective.slug.as_str();
                @let groups: Vec<String> = v.groups.iter().map(|(g, _)| g.clone()).collect();
                @let grantable = crate::onboarding::profile::grantable(&groups);
                section aria-labelledby=(format!("c-{slug}")) {
                    h2 id=(format!("c-{slug}")) { (v.collective.name) " (" (slug) ")" }
                    p { (c.t(Msg::Members)) ": " (v.members.join(", ")) }
                    p { (c.t(Msg::Admin)) ": " (v.admins.join(", ")) }
                    @for (g, members) in &v.groups {
                        p { strong { (g) } ": " (members.join(", ")) }
                    }
                    h3 { (c.t(Msg::Service)) }
                    (pages::table(&[c.t(Msg::Service), c.t(Msg::AllowedGroups)],
                        v.services.iter().map(|s| html! {
                            tr { td { a href=(s.url) { (s.name) } } td { (s.groups.join(", ")) } }
                        }).collect()))
                    form method="post" action=(format!("/console/collectives/{slug}/services")) {
                        (pages::csrf(c))
                        label for=(format!("svc-{slug}")) { (c.t(Msg::Service)) }
                        input id=(format!("svc-{slug}")) type="text" name="service" required;
                        label for=(format!("grp-{slug}")) { (c.t(Msg::Group)) }
                        select id=(format!("grp-{slug}")) name="group" {
                            @for g in &grantable { option value=(g) { (g) } }
                        }
                        button type="submit" name="grant" value="1" { (c.t(Msg::Allow)) }
                        " "
                        button.danger type="submit" name="grant" value="0" { (c.t(Msg::Stop)) }
                    }
                    h3 { (c.t(Msg::CreateGroup)) }
                    form method="post" action=(format!("/console/collectives/{slug}/groups")) {
                        (pages::csrf(c))
                        label for=(format!("ng-{slug}")) { (c.t(Msg::GroupName)) }
                        input id=(format!("ng-{slug}")) type="text" name="group" required;
                        button type="submit" { (c.t(Msg::Create)) }
                    }
                    h3 { (c.t(Msg::AddToGroup)) }
                    form method="post" action="/console/people/-/group" {
                        (pages::csrf(c))
                        input type="hidden" name="collective" value=(slug);
                        label for=(format!("gm-u-{slug}")) { (c.t(Msg::FieldUid)) }
                        input id=(format!("gm-u-{slug}")) type="text" name="uid" required;
                        label for=(format!("gm-g-{slug}")) { (c.t(Msg::Group)) }
                        select id=(format!("gm-g-{slug}")) name="group" {
                            @for g in &grantable { option value=(g) { (g) } }
                        }
                        button type="submit" { (c.t(Msg::AddToGroup)) }
                    }
                }
            }
            h2 { (c.t(Msg::NavCollectives)) ": " (c.t(Msg::Create)) }
            form method="post" action="/console/collectives" {
                (pages::csrf(c))
                label for="new-slug" { "slug" }
                input #new-slug type="text" name="slug" required;
                label for="new-name" { (c.t(Msg::FieldDisplayName)) }
                input #new-name type="text" name="name" required;
                button type="submit" { (c.t(Msg::Create)) }
            }
        }
    })
}

async fn create_collective(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = web
        .shared
        .onboarding()
        .create_collective(
            get_field(&f, "slug"),
            get_field(&f, "name"),
            &s.person.uid,
            unix_now(),
        )
        .await
        .map(drop);
    after(&mut ctx, "/console/collectives", r)
}

async fn create_group(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path(slug): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = web
        .shared
        .onboarding()
        .create_group(&slug, get_field(&f, "group"), &s.person.uid, unix_now())
        .await;
    after(&mut ctx, "/console/collectives", r)
}

async fn grant_service(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path(slug): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let grant = get_field(&f, "grant") != "0";
    let r = web
        .shared
        .onboarding()
        .grant_service(
            &slug,
            get_field(&f, "service"),
            get_field(&f, "group"),
            grant,
            &s.person.uid,
            unix_now(),
        )
        .await;
    after(&mut ctx, "/console/collectives", r)
}

async fn apps(State(web): State<Arc<Web>>, mut ctx: Ctx, Query(q): Query<Flash>) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let config = web.shared.config();
    let enabled: Vec<(String, bool, String)> = crate::model::AppName::ALL
        .iter()
        .map(|a| {
            (
                a.to_string(),
                config.apps.enabled.contains(a),
                crate::apps::hostname(&config, *a),
            )
        })
        .collect();
    let rows = ops::app_rows(&web).await;
    let apps_state = web
        .shared
        .status()
        .components
        .into_iter()
        .find(|c| c.name == "apps")
        .map(|c| format!("{}: {}", state_word(&c.state), c.detail))
        .unwrap_or_default();
    let fl = flash(&ctx, &q);
    show(&mut ctx, Msg::Apps, fl, StatusCode::OK, |c| {
        html! {
            p { (c.t(Msg::AppsIntro)) }
            ul {
                @for (name, on, host) in &enabled {
                    li { strong { (name) } " — " (if *on { c.t(Msg::Enabled) } else { c.t(Msg::Disabled) })
                        @if *on && !host.is_empty() { " · " a href=(format!("https://{host}/")) { (host) } }
                        " "
                        @if *on {
                            (pages::action(c, &format!("/console/apps/{name}/disable"), c.t(Msg::Disable), true, html!{}))
                        } @else {
                            (pages::action(c, &format!("/console/apps/{name}/enable"), c.t(Msg::Enable), false, html!{}))
                        }
                    }
                }
            }
            p { (apps_state) }
            (pages::action(c, "/console/reconcile", c.t(Msg::ReconcileNow), false, html!{}))
            (pages::table(&[c.t(Msg::Apps), c.t(Msg::Component), c.t(Msg::Version), c.t(Msg::Memory), c.t(Msg::State), ""],
                rows.iter().map(|r| html! {
                    tr {
                        td { (r.app) }
                        td { a href=(format!("/console/apps/{}/logs", r.container)) { (r.container) } }
                        td { code { (r.image) } }
                        td { (r.memory_mb) " MiB" }
                        td { (r.state) }
                        td { (pages::action(c, &format!("/console/apps/{}/restart", r.container), c.t(Msg::Restart), false, html!{})) }
                    }
                }).collect()))
        }
    })
}

async fn switch_app(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path((app, act)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = ops::set_app(&web, &s.person.uid, &app, &act).map(drop);
    done_or(&mut ctx, Msg::Apps, "/console/apps?done=1", r)
}

/// A redirect after a done action, or its refusal on the page.
fn done_or(ctx: &mut Ctx, title: Msg, to: &str, r: Result<(), ops::Refused>) -> Response {
    match r {
        Ok(()) => see_other(ctx, to),
        Err(e) => show(ctx, title, None, e.status, |_| pages::alert(&e.message)),
    }
}

async fn app_logs(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path(container): Path<String>,
) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    match ops::logs(&web, &container).await {
        Ok(text) => show(&mut ctx, Msg::Apps, None, StatusCode::OK, |_| {
            html! { h2 { (container) } pre { (text) } }
        }),
        Err(e) => show(&mut ctx, Msg::Apps, None, e.status, |_| {
            pages::alert(&e.message)
        }),
    }
}

async fn restart_app(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Path(container): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = ops::restart(&web, &s.person.uid, &container).await;
    done_or(&mut ctx, Msg::Apps, "/console/apps?done=1", r)
}

async fn reconcile(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    ops::reconcile(&web, &s.person.uid);
    see_other(&ctx, "/console/apps?done=1")
}

async fn upgrades(mut ctx: Ctx) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    show(
        &mut ctx,
        Msg::Upgrades,
        None,
        StatusCode::OK,
        |c| html! { p { (c.t(Msg::UpgradesNone)) } },
    )
}

async fn backups(mut ctx: Ctx) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    show(
        &mut ctx,
        Msg::Backups,
        None,
        StatusCode::OK,
        |c| html! { p { (c.t(Msg::BackupsNone)) } },
    )
}

async fn settings(State(web): State<Arc<Web>>, mut ctx: Ctx, Query(q): Query<Flash>) -> Response {
    let s = match admin(&mut ctx) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let config = web.shared.config();
    let routes = crate::frontdoor::routes::Routes::from_config(&config, std::path::Path::new(""));
    let hosts = routes.hostnames();
    let done = q
        .done
        .as_ref()
        .map(|_| Msg::TestMailQueued.with(ctx.lang, &[("email", &s.person.mail)]));
    show(
        &mut ctx,
        Msg::Settings,
        done.as_deref(),
        StatusCode::OK,
        |c| {
            html! {
                dl {
                    dt { (c.t(Msg::Domain)) } dd { (config.collective.domain) }
                    dt { (c.t(Msg::Hostnames)) } dd { @for h in &hosts { code { (h) } " " } }
                }
                h2 { (c.t(Msg::TestMail)) }
                (pages::action(c, "/console/settings/test-mail", c.t(Msg::TestMail), false, html!{}))
                h2 { (c.t(Msg::CaDownload)) }
                p { (c.t(Msg::CaHelp)) }
                p { a href="/ca.pem" download="commonscloud-ca.pem" { (c.t(Msg::CaDownload)) } }
            }
        },
    )
}

async fn test_mail(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    let s = match admin_form(&mut ctx, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = ops::test_mail(&web, &s.person);
    done_or(&mut ctx, Msg::Settings, "/console/settings?done=1", r)
}

async fn audit(State(web): State<Arc<Web>>, mut ctx: Ctx) -> Response {
    if let Err(r) = admin(&mut ctx) {
        return *r;
    }
    let rows = web
        .shared
        .with_store(|s| s.recent_audit(200))
        .unwrap_or_default();
    show(&mut ctx, Msg::AuditLog, None, StatusCode::OK, |c| {
        pages::table(&[c.t(Msg::When), c.t(Msg::Who), c.t(Msg::What), c.t(Msg::Detail)],
            rows.iter().map(|r| {
                let when = time::OffsetDateTime::from_unix_timestamp(r.at)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                html! { tr { td { (when) } td { (r.actor) } td { (r.action) } td { (r.detail) } } }
            }).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onboarding::validate::Language;

    fn chrome(lang: Language) -> pages::Chrome {
        pages::Chrome {
            lang,
            user: None,
            csrf: String::new(),
            path: "/console".into(),
        }
    }

    #[test]
    fn the_federation_section_shows_link_outbox_and_conflicts() {
        let c = chrome(Language::En);
        let none = federation(&c, None, 100).into_string();
        assert!(none.contains("not federated"), "{none}");
        let status = crate::federation::Status {
            enrolment: Some(crate::store::Enrolment {
                url: "ldaps://dir.alliance.net".into(),
                bind_dn: "cn=box".into(),
                suffix: "dc=a".into(),
                node: "box.q.org".into(),
                joined_at: 1,
                ca_file: None,
                starttls: false,
            }),
            link: crate::federation::LinkState {
                enabled: true,
                last_error: Some("connection refused".into()),
                ..Default::default()
            },
            last_contact: Some(40),
            cookie_age_secs: Some(70),
            entries_in_scope: 12,
            outbox: crate::store::OutboxStats {
                pending: 3,
                oldest_pending_at: Some(90),
                done: 5,
                failed: 1,
                conflicts: 1,
            },
            conflicts: vec![crate::store::ConflictRow {
                id: 1,
                at: 95,
                dn: "uid=ana,ou=people,dc=q".into(),
                attr: "displayname".into(),
                kind: "attribute".into(),
                winner: "alliance".into(),
                detail: "displayname of uid=ana changed both here (<A>) and at the alliance".into(),
                outbox_id: Some(2),
            }],
            recent: vec![],
            hold: None,
        };
        let html = federation(&c, Some(&status), 100).into_string();
        for needle in [
            "ldaps://dir.alliance.net",
            "down: logins and local work go on",
            "connection refused",
            "60 s ago",
            "12",
            "3 (oldest: 10 s ago) · 1 refused",
            "uid=ana,ou=people,dc=q",
            "(&lt;A&gt;)",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        let ca = federation(&chrome(Language::Ca), Some(&status), 100).into_string();
        assert!(
            ca.contains("Canvis que esperen l'aliança")
                || ca.contains("Canvis que esperen l&#39;aliança"),
            "{ca}"
        );
    }
}
