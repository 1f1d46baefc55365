//! axum router for the local API. Handlers only read shared state; anything
//! that changes the appliance goes through the daemon's own paths.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::clock::unix_now;
use crate::onboarding::membership::Refusal;
use crate::onboarding::service::{OnboardingError, Registered};
use crate::onboarding::validate::Form;
use axum::{Json, Router};

use super::ApiError;
use crate::appliance::Appliance;
use crate::metrics::RequestLabels;

pub fn router(shared: Arc<Appliance>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/directory/check", get(directory_check))
        .route("/v1/alliance", get(alliance_status))
        .route("/v1/alliance/join", post(alliance_join))
        .route("/v1/alliance/hold", get(alliance_hold))
        .route(
            "/v1/alliance/confirm-deletions",
            post(alliance_confirm_deletions),
        )
        .route("/v1/registrations", get(list_registrations).post(register))
        .route("/v1/registrations/verify", post(verify_email))
        .route("/v1/registrations/{id}", get(show_registration))
        .route("/v1/registrations/{id}/approve", post(approve))
        .route("/v1/registrations/{id}/reject", post(reject))
        .route("/v1/password", post(set_password))
        .route("/v1/directory/export", get(directory_export))
        .route("/v1/password/forgot", post(super::members::forgot_password))
        .route("/v1/sso/discourse", post(super::sso::discourse))
        .route("/v1/people", get(super::members::list_people))
        .route("/v1/people/{uid}", get(super::members::show_person))
        .route("/v1/people/{uid}/suspend", post(super::members::suspend))
        .route(
            "/v1/people/{uid}/reactivate",
            post(super::members::reactivate),
        )
        .route("/v1/people/{uid}/remove", post(super::members::remove))
        .route(
            "/v1/people/{uid}/groups",
            post(super::members::group_member),
        )
        .route(
            "/v1/collectives",
            get(super::members::list_collectives).post(super::members::create_collective),
        )
        .route(
            "/v1/collectives/{slug}",
            get(super::members::show_collective),
        )
        .route(
            "/v1/collectives/{slug}/groups",
            post(super::members::create_group),
        )
        .route(
            "/v1/collectives/{slug}/services",
            post(super::members::grant_service),
        )
        .route(
            "/v1/joins",
            get(super::members::list_joins).post(super::members::ask_to_join),
        )
        .route("/v1/joins/{id}/approve", post(super::members::approve_join))
        .route("/v1/joins/{id}/reject", post(super::members::reject_join))
        .route(
            "/v1/invitations",
            get(super::members::list_invitations).post(super::members::invite),
        )
        .route(
            "/v1/invitations/lookup",
            post(super::members::invitation_info),
        )
        .route(
            "/v1/invitations/accept",
            post(super::members::accept_invitation),
        )
        .fallback(not_found)
        // What the CLI sends is small; the console's own limits are in `web`.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Appliance>>) -> Response {
    match shared.store_healthy() {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e),
    }
}

async fn status(State(shared): State<Arc<Appliance>>) -> Response {
    Json(shared.status()).into_response()
}

async fn metrics(State(shared): State<Arc<Appliance>>) -> Response {
    shared.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn alliance_status(State(shared): State<Arc<Appliance>>) -> Response {
    match crate::federation::status(&shared.store, &shared.federation, unix_now()) {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

async fn alliance_join(
    State(shared): State<Arc<Appliance>>,
    Json(req): Json<crate::federation::task::JoinRequest>,
) -> Response {
    match crate::federation::task::join(&shared.federation_parts(), req).await {
        Ok(a) => {
            let code = if a.checks.iter().all(|c| c.ok) {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (code, Json(a)).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "alliance", e.to_string()),
    }
}

/// The held refresh with all its entries.
async fn alliance_hold(State(shared): State<Arc<Appliance>>) -> Response {
    let held = crate::federation::lock(&shared.store)
        .and_then(|s| crate::federation::hold_view(&s, i64::MAX));
    match held {
        Ok(Some(h)) => Json(h).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no_hold",
            "no refresh is held: nothing waits for a confirmation".into(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

#[derive(Deserialize)]
struct ConfirmDeletions {
    /// The hold the admin looked at.
    hold: i64,
    by: String,
}

async fn alliance_confirm_deletions(
    State(shared): State<Arc<Appliance>>,
    Json(req): Json<ConfirmDeletions>,
) -> Response {
    use crate::federation::Confirmation;
    match crate::federation::confirm_deletions(
        &shared.store,
        &shared.events,
        req.hold,
        &req.by,
        unix_now(),
    ) {
        Ok(Confirmation::Confirmed(h)) => Json(h).into_response(),
        Ok(Confirmation::NoHold) => error(
            StatusCode::NOT_FOUND,
            "no_hold",
            "no refresh is held: nothing to confirm".into(),
        ),
        Ok(Confirmation::Changed(h)) => error(
            StatusCode::CONFLICT,
            "hold_changed",
            format!(
                "the held refresh is now hold {} ({} to delete, {} kept), not hold {}: nothing was confirmed; look at it again",
                h.id, h.delete, h.keep, req.hold
            ),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

async fn directory_check(State(shared): State<Arc<Appliance>>) -> Response {
    let config = shared.config();
    let paths = crate::directory::slapd::Paths::new(&config);
    let checks =
        crate::directory::check::run(&paths, config.suffix().as_str(), &config.paths.secrets_dir)
            .await;
    let exit_code = crate::doctor::exit_code(&checks);
    Json(serde_json::json!({"checks": checks, "exit_code": exit_code})).into_response()
}

async fn directory_export(State(shared): State<Arc<Appliance>>) -> Response {
    let config = shared.config();
    let paths = crate::directory::slapd::Paths::new(&config);
    match tokio::task::spawn_blocking(move || crate::directory::slapd::export(&paths)).await {
        Ok(Ok(ldif)) => ([(header::CONTENT_TYPE, "text/x-ldif")], ldif).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "export_failed",
            e.to_string(),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "export_failed",
            e.to_string(),
        ),
    }
}

/// Onboarding errors as answers with stable codes; field errors list each
/// field so a page can mark it. The console's `/api/v1` answers the same.
pub fn onboarding_error(e: OnboardingError) -> Response {
    let (status, code) = match &e {
        OnboardingError::Invalid(fields) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({"code": "invalid", "message": e.to_string(), "fields": fields})),
            )
                .into_response();
        }
        OnboardingError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        OnboardingError::BadLink => (StatusCode::GONE, "bad_link"),
        OnboardingError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        OnboardingError::Conflict => (StatusCode::CONFLICT, "conflict"),
        OnboardingError::Machine(_) => (StatusCode::CONFLICT, "not_allowed"),
        OnboardingError::Refused(r) => match r {
            Refusal::NoPerson(_) | Refusal::NoCollective(_) | Refusal::NoGroup { .. } => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            _ => (StatusCode::CONFLICT, "refused"),
        },
        OnboardingError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        OnboardingError::Directory(_) => (StatusCode::SERVICE_UNAVAILABLE, "directory"),
        OnboardingError::AllianceDown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "alliance_down"),
        OnboardingError::HomedElsewhere { .. } => (StatusCode::CONFLICT, "homed_elsewhere"),
    };
    error(status, code, e.to_string())
}

#[derive(Deserialize)]
struct RegisterBody {
    #[serde(flatten)]
    form: Form,
    /// The client's address, as the front door saw it (rate limits).
    #[serde(default)]
    ip: String,
}

async fn register(State(shared): State<Arc<Appliance>>, Json(b): Json<RegisterBody>) -> Response {
    let ip = if b.ip.is_empty() {
        "local".to_owned()
    } else {
        b.ip
    };
    match shared.onboarding().register(&b.form, &ip, unix_now()).await {
        Ok(Registered::Request(id)) => {
            (StatusCode::CREATED, Json(serde_json::json!({"id": id}))).into_response()
        }
        // The local API is the admins': it may say what happened.
        Ok(Registered::OwnerTold) => (
            StatusCode::OK,
            Json(serde_json::json!({"id": null, "owner_told": true})),
        )
            .into_response(),
        Err(e) => onboarding_error(e),
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
    #[serde(default)]
    password: String,
}

async fn verify_email(State(shared): State<Arc<Appliance>>, Json(b): Json<TokenBody>) -> Response {
    match shared.onboarding().verify_email(&b.token, unix_now()).await {
        Ok(id) => Json(serde_json::json!({"id": id})).into_response(),
        Err(e) => onboarding_error(e),
    }
}

async fn set_password(State(shared): State<Arc<Appliance>>, Json(b): Json<TokenBody>) -> Response {
    match shared
        .onboarding()
        .set_password(&b.token, &b.password, unix_now())
        .await
    {
        Ok(uid) => Json(serde_json::json!({"uid": uid})).into_response(),
        Err(e) => onboarding_error(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn list_registrations(
    State(shared): State<Arc<Appliance>>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(s) = &q.state
        && crate::onboarding::machine::State::parse(s).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "state `{s}`: expected email_unverified, awaiting_validation, approved, active, rejected or expired"
            ),
        );
    }
    match shared.with_store(|s| s.registrations(q.state.as_deref())) {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
    }
}

async fn show_registration(State(shared): State<Arc<Appliance>>, Path(id): Path<i64>) -> Response {
    match shared.with_store(|s| s.registration(id)) {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => onboarding_error(OnboardingError::NotFound(id)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
    }
}

#[derive(Deserialize)]
struct Decision {
    by: String,
    #[serde(default)]
    reason: String,
}

async fn approve(
    State(shared): State<Arc<Appliance>>,
    Path(id): Path<i64>,
    Json(d): Json<Decision>,
) -> Response {
    match shared.onboarding().approve(id, &d.by, unix_now()).await {
        Ok(()) => Json(serde_json::json!({"id": id, "state": "approved"})).into_response(),
        Err(e) => onboarding_error(e),
    }
}

async fn reject(
    State(shared): State<Arc<Appliance>>,
    Path(id): Path<i64>,
    Json(d): Json<Decision>,
) -> Response {
    match shared
        .onboarding()
        .reject(id, &d.by, &d.reason, unix_now())
        .await
    {
        Ok(()) => Json(serde_json::json!({"id": id, "state": "rejected"})).into_response(),
        Err(e) => onboarding_error(e),
    }
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint {}; try /v1/status, /healthz or /metrics",
            req.uri().path()
        ),
    )
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ApiError {
            code: code.into(),
            message,
        }),
    )
        .into_response()
}

/// Counts requests by route (not raw path, so a scanner cannot blow up the
/// label set) and status.
async fn count(State(shared): State<Arc<Appliance>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    shared
        .metrics
        .api_requests
        .get_or_create(&RequestLabels {
            path,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
