//! axum router for the local API. Handlers only read shared state; anything
//! that changes the appliance goes through the daemon's own paths.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use crate::daemon::Shared;
use crate::metrics::RequestLabels;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/directory/check", get(directory_check))
        .route("/v1/directory/export", get(directory_export))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store_healthy() {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e),
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
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

async fn directory_check(State(shared): State<Arc<Shared>>) -> Response {
    let config = shared.config();
    let paths = crate::directory::slapd::Paths::new(&config);
    let checks =
        crate::directory::check::run(&paths, config.suffix().as_str(), &config.paths.secrets_dir)
            .await;
    let exit_code = crate::doctor::exit_code(&checks);
    Json(serde_json::json!({"checks": checks, "exit_code": exit_code})).into_response()
}

async fn directory_export(State(shared): State<Arc<Shared>>) -> Response {
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
async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
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
