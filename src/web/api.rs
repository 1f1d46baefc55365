//! `/api/v1`: what the pages do, as JSON (see `docs/api.md`). Same
//! session cookie and the same rules: a request that changes something
//! must be JSON (which a cross-site form cannot send), from this site when
//! the browser says where from, and, with a session, carry the session's
//! token in `X-CSRF-Token`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, LoginRefusal, Session, Web, check_login, end_session, start_session};
use crate::clock::unix_now;
use crate::onboarding::service::OnboardingError;
use crate::onboarding::validate::Form as RegistrationForm;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route(
            "/session",
            get(whoami)
                .post(login)
                .delete(logout)
                .layer(axum::extract::DefaultBodyLimit::max(
                    super::SIGN_IN_BODY_LIMIT,
                )),
        )
        .route("/me/services", get(my_services))
        .route("/me/profile", post(profile))
        .route("/me/password", post(change_password))
        .route("/me/joins", post(ask_to_join))
        .route("/registrations", get(registrations).post(register))
        .route("/registrations/verify", post(verify))
        .route("/registrations/{id}/{decision}", post(decide_registration))
        .route("/password", post(set_password))
        .route("/password/forgot", post(forgot))
        .route("/dashboard", get(dashboard))
        .route("/people", get(people))
        .route("/people/{uid}/{act}", post(person_action))
        .route("/invitations", post(invite))
        .route("/collectives", get(collectives).post(create_collective))
        .route("/collectives/{slug}/groups", post(create_group))
        .route("/collectives/{slug}/services", post(grant_service))
        .route("/joins", get(joins))
        .route("/joins/{id}/{decision}", post(decide_join))
        .route("/audit", get(audit))
        .route("/apps", get(apps))
        .route("/apps/{container}/logs", get(app_logs))
        .route("/apps/{container}/restart", post(restart_app))
        .route("/apps/{container}/{act}", post(switch_app))
        .route("/reconcile", post(reconcile))
        .route("/settings/test-mail", post(test_mail))
}

/// `{"code": …, "message": …}` with a status.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({"code": code, "message": message}))).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn reply(ctx: &Ctx, status: StatusCode, v: Value) -> Response {
    let mut r = (status, Json(v)).into_response();
    for c in &ctx.set_cookies {
        if let Ok(v) = header::HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn answer<T: serde::Serialize>(ctx: &Ctx, r: Result<T, OnboardingError>) -> Response {
    match r {
        Ok(v) => reply(ctx, StatusCode::OK, json!(v)),
        Err(e) => crate::api::server::onboarding_error(e),
    }
}

/// The checks every changing request passes: JSON, from this site, and
/// with a session its token.
fn writable(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Box<Response>> {
    json_only(headers)?;
    this_site(ctx)?;
    session_token(ctx, headers)
}

/// A JSON body, which a cross-site form cannot send.
fn json_only(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_only",
            "send the body as JSON with Content-Type: application/json",
        )))
    }
}

/// Not from another site, when the browser says where from.
fn this_site(ctx: &Ctx) -> Result<(), Box<Response>> {
    if super::session::same_origin(ctx.origin.as_deref(), &ctx.host) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "csrf",
            "the request came from another site",
        )))
    }
}

/// With a session, its token in `X-CSRF-Token`.
fn session_token(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(s) = &ctx.session else {
        return Ok(());
    };
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if super::session::same_token(sent, &s.csrf) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token: use the csrf value of GET /api/v1/session",
        )))
    }
}

fn signed_in(ctx: &Ctx) -> Result<Session, Box<Response>> {
    ctx.session.clone().ok_or_else(|| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: POST /api/v1/session",
        ))
    })
}

fn admin(ctx: &Ctx) -> Result<Session, Box<Response>> {
    let s = signed_in(ctx)?;
    if s.admin {
        Ok(s)
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "not_admin",
            "only the admins of this box's collective may do this",
        )))
    }
}

/// A changing request by an admin.
fn admin_write(ctx: &Ctx, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    let s = admin(ctx)?;
    writable(ctx, headers)?;
    Ok(s)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
}

fn session_json(s: &Session) -> Value {
    json!({"uid": s.person.uid, "display_name": s.person.display_name, "mail": s.person.mail,
           "language": s.person.language, "admin": s.admin, "csrf": s.csrf})
}

async fn whoami(ctx: Ctx) -> Response {
    let s = tri!(signed_in(&ctx));
    reply(&ctx, StatusCode::OK, session_json(&s))
}

#[derive(Deserialize)]
struct Credentials {
    uid: String,
    password: String,
}

async fn login(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    headers: HeaderMap,
    body: Json<Credentials>,
) -> Response {
    // Signing in needs no token (a session the client brought is
    // replaced), but still JSON from this site.
    tri!(json_only(&headers));
    tri!(this_site(&ctx));
    match check_login(&web, &ctx, &body.uid, &body.password).await {
        Ok(person) => {
            if start_session(&web, &mut ctx, &person).is_none() {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "cannot store the session",
                );
            }
            let s = ctx.session.clone();
            match s {
                Some(s) => reply(&ctx, StatusCode::OK, session_json(&s)),
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "cannot store the session",
                ),
            }
        }
        Err(LoginRefusal::Limited(wait)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!(
                    "too many failed sign-ins for this account or from this address; try again in {} minutes",
                    super::minutes(wait)
                ),
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(LoginRefusal::Refused) => error(
            StatusCode::UNAUTHORIZED,
            "refused",
            "wrong user name or password, or the account is suspended",
        ),
        Err(LoginRefusal::Unavailable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "directory",
            "the directory does not answer; try again in a minute",
        ),
    }
}

async fn logout(State(web): State<Arc<Web>>, mut ctx: Ctx, headers: HeaderMap) -> Response {
    let _ = tri!(signed_in(&ctx));
    // DELETE has no body; the site and the token are still required.
    tri!(this_site(&ctx));
    tri!(session_token(&ctx, &headers));
    end_session(&web, &mut ctx);
    reply(&ctx, StatusCode::OK, json!({"signed_out": true}))
}

async fn my_services(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    let s = tri!(signed_in(&ctx));
    let r = web.shared.onboarding().my_services(&s.person.uid).await;
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct Profile {
    display_name: String,
    language: String,
}

async fn profile(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Profile>,
) -> Response {
    let s = tri!(signed_in(&ctx));
    tri!(writable(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .update_profile(&s.person.uid, &b.display_name, &b.language, unix_now())
        .await
        .map(|p| json!({"uid": p.uid, "display_name": p.display_name, "language": p.language}));
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct PasswordChange {
    password: String,
    new_password: String,
}

async fn change_password(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<PasswordChange>,
) -> Response {
    let s = tri!(signed_in(&ctx));
    tri!(writable(&ctx, &headers));
    match web
        .shared
        .onboarding()
        .change_password(&s.person.uid, &b.password, &b.new_password, unix_now())
        .await
    {
        Ok(()) => {
            ctx.session = None;
            start_session(&web, &mut ctx, &s.person);
            match ctx.session.clone() {
                Some(n) => reply(&ctx, StatusCode::OK, session_json(&n)),
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "cannot store the session",
                ),
            }
        }
        Err(e) => crate::api::server::onboarding_error(e),
    }
}

#[derive(Deserialize)]
struct Join {
    collective: String,
    #[serde(default)]
    message: String,
}

async fn ask_to_join(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Join>,
) -> Response {
    let s = tri!(signed_in(&ctx));
    tri!(writable(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .ask_to_join(&s.person.uid, &b.collective, &b.message, unix_now())
        .await
        .map(|id| json!({"id": id}));
    answer(&ctx, r)
}

async fn register(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(form): Json<RegistrationForm>,
) -> Response {
    tri!(writable(&ctx, &headers));
    match web
        .shared
        .onboarding()
        .register(&form, &ctx.ip, unix_now())
        .await
    {
        // The same answer whether or not the address had an account.
        Ok(_) => reply(
            &ctx,
            StatusCode::ACCEPTED,
            json!({"sent": true, "message": "look in your mailbox: the next step is in a mail to the address you gave"}),
        ),
        Err(e) => crate::api::server::onboarding_error(e),
    }
}

#[derive(Deserialize)]
struct Token {
    token: String,
    #[serde(default)]
    password: String,
}

async fn verify(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Token>,
) -> Response {
    tri!(writable(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .verify_email(&b.token, unix_now())
        .await
        .map(|id| json!({"id": id}));
    answer(&ctx, r)
}

async fn set_password(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Token>,
) -> Response {
    tri!(writable(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .set_password(&b.token, &b.password, unix_now())
        .await
        .inspect(|uid| super::remember_address(&web, uid, &ctx.ip, unix_now()))
        .map(|uid| json!({"uid": uid}));
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct Forgot {
    login: String,
}

async fn forgot(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Forgot>,
) -> Response {
    tri!(writable(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .forgot_password(&b.login, &ctx.ip, unix_now())
        .await
        .map(|()| json!({"sent_if_known": true}));
    answer(&ctx, r)
}

async fn dashboard(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    tri!(admin(&ctx));
    let (pending, joins) = super::pending_counts(&web);
    let config = web.shared.config();
    let profile = config.profile();
    reply(
        &ctx,
        StatusCode::OK,
        json!({
            "status": web.shared.status(),
            "pending_registrations": pending,
            "pending_join_requests": joins,
            "hardware": {"profile": profile.name, "ram_mb": profile.ram_mb,
                         "app_budget_mb": profile.app_budget_mb, "min_disk_gb": profile.min_disk_gb},
            "upgrades": {"offered": [], "note": "this box follows no upgrade channel yet"},
            "backups": {"configured": false},
        }),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StateQuery {
    state: Option<String>,
    collective: Option<String>,
}

async fn registrations(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Query(q): Query<StateQuery>,
) -> Response {
    tri!(admin(&ctx));
    if let Some(s) = &q.state
        && crate::onboarding::machine::State::parse(s).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!(
                "state `{s}`: expected email_unverified, awaiting_validation, approved, active, rejected or expired"
            ),
        );
    }
    match web
        .shared
        .with_store(|s| s.registrations(q.state.as_deref()))
    {
        Ok(rows) => reply(&ctx, StatusCode::OK, json!(rows)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", &e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Reason {
    reason: String,
}

async fn decide_registration(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((id, decision)): Path<(i64, String)>,
    Json(b): Json<Reason>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let svc = web.shared.onboarding();
    let r = match decision.as_str() {
        "approve" => svc.approve(id, &s.person.uid, unix_now()).await,
        "reject" => svc.reject(id, &s.person.uid, &b.reason, unix_now()).await,
        _ => return error(StatusCode::NOT_FOUND, "not_found", "use approve or reject"),
    };
    answer(&ctx, r.map(|()| json!({"id": id, "decision": decision})))
}

async fn people(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<StateQuery>) -> Response {
    tri!(admin(&ctx));
    let r = web
        .shared
        .onboarding()
        .people(q.collective.as_deref())
        .await;
    answer(&ctx, r)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PersonAct {
    reason: String,
    group: String,
    collective: String,
    remove: bool,
}

async fn person_action(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((uid, act)): Path<(String, String)>,
    Json(b): Json<PersonAct>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let svc = web.shared.onboarding();
    let home = web.shared.config().collective.slug.to_string();
    let collective = if b.collective.is_empty() {
        home.as_str()
    } else {
        b.collective.as_str()
    };
    let by = s.person.uid.as_str();
    let r = match act.as_str() {
        "suspend" => svc.suspend(&uid, by, &b.reason, unix_now()).await,
        "reactivate" => svc.reactivate(&uid, by, unix_now()).await,
        "promote" => svc.set_admin(&uid, collective, true, by, unix_now()).await,
        "demote" => svc.set_admin(&uid, collective, false, by, unix_now()).await,
        "group" => {
            svc.group_member(&uid, collective, &b.group, !b.remove, by, unix_now())
                .await
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "use suspend, reactivate, promote, demote or group",
            );
        }
    };
    if act == "suspend" && r.is_ok() {
        let _ = web.shared.with_store(|st| st.delete_sessions_of(&uid));
    }
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct Invite {
    email: String,
    #[serde(default)]
    collective: String,
}

async fn invite(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<Invite>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let home = web.shared.config().collective.slug.to_string();
    let collective = if b.collective.is_empty() {
        home
    } else {
        b.collective
    };
    let r = web
        .shared
        .onboarding()
        .invite(&b.email, &collective, &s.person.uid, unix_now())
        .await
        .map(|id| json!({"id": id}));
    answer(&ctx, r)
}

async fn collectives(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    tri!(admin(&ctx));
    let svc = web.shared.onboarding();
    let list = match svc.collectives().await {
        Ok(l) => l,
        Err(e) => return crate::api::server::onboarding_error(e),
    };
    let mut out = Vec::new();
    for c in list {
        match svc.collective(c.slug.as_str()).await {
            Ok(v) => out.push(v),
            Err(e) => return crate::api::server::onboarding_error(e),
        }
    }
    reply(&ctx, StatusCode::OK, json!(out))
}

#[derive(Deserialize)]
struct NewCollective {
    slug: String,
    name: String,
}

async fn create_collective(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Json(b): Json<NewCollective>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .create_collective(&b.slug, &b.name, &s.person.uid, unix_now())
        .await;
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct Group {
    group: String,
}

async fn create_group(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Json(b): Json<Group>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .create_group(&slug, &b.group, &s.person.uid, unix_now())
        .await
        .map(|()| json!({"collective": slug, "group": b.group}));
    answer(&ctx, r)
}

#[derive(Deserialize)]
struct Grant {
    service: String,
    group: String,
    #[serde(default = "yes")]
    grant: bool,
}

fn yes() -> bool {
    true
}

async fn grant_service(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Json(b): Json<Grant>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let r = web
        .shared
        .onboarding()
        .grant_service(&slug, &b.service, &b.group, b.grant, &s.person.uid, unix_now())
        .await
        .map(|()| json!({"collective": slug, "service": b.service, "group": b.group, "grant": b.grant}));
    answer(&ctx, r)
}

async fn joins(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<StateQuery>) -> Response {
    tri!(admin(&ctx));
    let r = web
        .shared
        .onboarding()
        .join_requests(q.collective.as_deref(), q.state.as_deref());
    answer(&ctx, r)
}

async fn decide_join(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((id, decision)): Path<(i64, String)>,
    Json(b): Json<Reason>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return error(StatusCode::NOT_FOUND, "not_found", "use approve or reject"),
    };
    let r = web
        .shared
        .onboarding()
        .decide_join(id, approve, &s.person.uid, &b.reason, unix_now())
        .await
        .map(|()| json!({"id": id, "decision": decision}));
    answer(&ctx, r)
}

async fn audit(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    tri!(admin(&ctx));
    match web.shared.with_store(|s| s.recent_audit(200)) {
        Ok(rows) => reply(&ctx, StatusCode::OK, json!(rows)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", &e),
    }
}

fn refused(e: super::ops::Refused) -> Response {
    let code = match e.status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::BAD_GATEWAY => "docker",
        _ => "failed",
    };
    error(e.status, code, &e.message)
}

async fn apps(State(web): State<Arc<Web>>, ctx: Ctx) -> Response {
    tri!(admin(&ctx));
    let config = web.shared.config();
    let enabled = &config.apps.enabled;
    let chosen_in_console = config.apps.enabled_from_console.is_some();
    let containers = super::ops::app_rows(&web).await;
    reply(
        &ctx,
        StatusCode::OK,
        json!({"enabled": enabled, "chosen_in_console": chosen_in_console, "containers": containers}),
    )
}

async fn app_logs(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(container): Path<String>,
) -> Response {
    tri!(admin(&ctx));
    match super::ops::logs(&web, &container).await {
        Ok(text) => reply(
            &ctx,
            StatusCode::OK,
            json!({"container": container, "logs": text}),
        ),
        Err(e) => refused(e),
    }
}

async fn restart_app(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(container): Path<String>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    match super::ops::restart(&web, &s.person.uid, &container).await {
        Ok(()) => reply(&ctx, StatusCode::OK, json!({"restarted": container})),
        Err(e) => refused(e),
    }
}

async fn switch_app(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((app, act)): Path<(String, String)>,
) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    match super::ops::set_app(&web, &s.person.uid, &app, &act) {
        Ok(enabled) => reply(&ctx, StatusCode::OK, json!({"enabled": enabled})),
        Err(e) => refused(e),
    }
}

async fn reconcile(State(web): State<Arc<Web>>, ctx: Ctx, headers: HeaderMap) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    super::ops::reconcile(&web, &s.person.uid);
    reply(&ctx, StatusCode::ACCEPTED, json!({"reconcile": "asked"}))
}

async fn test_mail(State(web): State<Arc<Web>>, ctx: Ctx, headers: HeaderMap) -> Response {
    let s = tri!(admin_write(&ctx, &headers));
    match super::ops::test_mail(&web, &s.person) {
        Ok(()) => reply(
            &ctx,
            StatusCode::ACCEPTED,
            json!({"queued_to": s.person.mail}),
        ),
        Err(e) => refused(e),
    }
}
