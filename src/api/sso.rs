//! `POST /v1/sso/discourse`: the DiscourseConnect answer for a person who
//! gave their password. The front door's sign-in page calls it; tests do
//! directly.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::appliance::Appliance;
use crate::clock::unix_now;
use crate::sso::discourse::SsoError;
use crate::sso::service::{LoginError, login};

#[derive(Deserialize)]
pub struct Body {
    sso: String,
    sig: String,
    uid: String,
    password: String,
}

pub async fn discourse(State(shared): State<Arc<Appliance>>, Json(b): Json<Body>) -> Response {
    let config = shared.config();
    let paths = crate::directory::slapd::Paths::new(&config);
    let tree = crate::directory::tree::Tree::new(config.suffix().as_str());
    let r = login(
        &shared.store,
        &paths,
        &tree,
        &config.paths.secrets_dir,
        &crate::apps::hostname(&config, crate::model::AppName::Discourse),
        &b.sso,
        &b.sig,
        &b.uid,
        &b.password,
        unix_now(),
    )
    .await;
    let (status, code) = match &r {
        Ok(url) => {
            return Json(serde_json::json!({"redirect": url})).into_response();
        }
        Err(LoginError::Sso(SsoError::BadSignature)) => (StatusCode::FORBIDDEN, "bad_signature"),
        Err(LoginError::Sso(SsoError::Malformed(_))) => (StatusCode::BAD_REQUEST, "malformed"),
        Err(LoginError::Sso(SsoError::ForeignReturn(..))) => {
            (StatusCode::BAD_REQUEST, "foreign_return_url")
        }
        Err(LoginError::Sso(SsoError::Stale)) => (StatusCode::GONE, "stale"),
        Err(LoginError::Sso(SsoError::Replayed)) => (StatusCode::CONFLICT, "replayed"),
        Err(LoginError::Refused) => (StatusCode::UNAUTHORIZED, "refused"),
        Err(LoginError::NotSetUp) => (StatusCode::SERVICE_UNAVAILABLE, "not_set_up"),
        Err(LoginError::Store(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        Err(LoginError::Directory(_)) => (StatusCode::SERVICE_UNAVAILABLE, "directory"),
    };
    let message = r.err().map(|e| e.to_string()).unwrap_or_default();
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}
