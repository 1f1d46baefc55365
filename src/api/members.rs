//! Handlers for people, collectives, joins, invitations and password
//! resets. Each one hands its body to the onboarding service and turns the
//! answer into JSON; none decides anything.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::server::onboarding_error;
use crate::appliance::Appliance;
use crate::clock::unix_now;
use crate::onboarding::service::OnboardingError;

fn reply<T: Serialize>(r: Result<T, OnboardingError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => onboarding_error(e),
    }
}

fn created<T: Serialize>(r: Result<T, OnboardingError>) -> Response {
    match r {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => onboarding_error(e),
    }
}

#[derive(Deserialize)]
pub struct CollectiveFilter {
    collective: Option<String>,
    state: Option<String>,
}

pub async fn list_people(
    State(shared): State<Arc<Appliance>>,
    Query(q): Query<CollectiveFilter>,
) -> Response {
    let r = shared.onboarding().people(q.collective.as_deref()).await;
    reply(r)
}

pub async fn show_person(
    State(shared): State<Arc<Appliance>>,
    Path(uid): Path<String>,
) -> Response {
    let r = shared.onboarding().person(&uid).await;
    reply(r)
}

/// Who acts, and why (suspensions and refusals).
#[derive(Deserialize)]
pub struct Act {
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    collective: String,
}

pub async fn suspend(
    State(shared): State<Arc<Appliance>>,
    Path(uid): Path<String>,
    Json(a): Json<Act>,
) -> Response {
    let r = shared
        .onboarding()
        .suspend(&uid, &a.by, &a.reason, unix_now())
        .await;
    reply(r)
}

pub async fn reactivate(
    State(shared): State<Arc<Appliance>>,
    Path(uid): Path<String>,
    Json(a): Json<Act>,
) -> Response {
    let r = shared
        .onboarding()
        .reactivate(&uid, &a.by, unix_now())
        .await;
    reply(r)
}

pub async fn remove(
    State(shared): State<Arc<Appliance>>,
    Path(uid): Path<String>,
    Json(a): Json<Act>,
) -> Response {
    let r = shared
        .onboarding()
        .remove_from_collective(&uid, &a.collective, &a.by, unix_now())
        .await;
    reply(r)
}

#[derive(Deserialize)]
pub struct GroupChange {
    by: String,
    collective: String,
    group: String,
    /// `true` adds (promote, for `admins`), `false` removes.
    add: bool,
}

pub async fn group_member(
    State(shared): State<Arc<Appliance>>,
    Path(uid): Path<String>,
    Json(g): Json<GroupChange>,
) -> Response {
    let r = shared
        .onboarding()
        .group_member(&uid, &g.collective, &g.group, g.add, &g.by, unix_now())
        .await;
    reply(r)
}

pub async fn list_collectives(State(shared): State<Arc<Appliance>>) -> Response {
    let r = shared.onboarding().collectives().await;
    reply(r)
}

#[derive(Deserialize)]
pub struct NewCollective {
    slug: String,
    name: String,
    by: String,
}

pub async fn create_collective(
    State(shared): State<Arc<Appliance>>,
    Json(c): Json<NewCollective>,
) -> Response {
    let r = shared
        .onboarding()
        .create_collective(&c.slug, &c.name, &c.by, unix_now())
        .await;
    created(r)
}

pub async fn show_collective(
    State(shared): State<Arc<Appliance>>,
    Path(slug): Path<String>,
) -> Response {
    let r = shared.onboarding().collective(&slug).await;
    reply(r)
}

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    by: String,
}

pub async fn create_group(
    State(shared): State<Arc<Appliance>>,
    Path(slug): Path<String>,
    Json(g): Json<NewGroup>,
) -> Response {
    let r = shared
        .onboarding()
        .create_group(&slug, &g.name, &g.by, unix_now())
        .await
        .map(|()| serde_json::json!({"collective": slug, "group": g.name}));
    created(r)
}

#[derive(Deserialize)]
pub struct Grant {
    service: String,
    group: String,
    /// `false` revokes.
    grant: bool,
    by: String,
}

pub async fn grant_service(
    State(shared): State<Arc<Appliance>>,
    Path(slug): Path<String>,
    Json(g): Json<Grant>,
) -> Response {
    let r = shared
        .onboarding()
        .grant_service(&slug, &g.service, &g.group, g.grant, &g.by, unix_now())
        .await
        .map(|()| serde_json::json!({"collective": slug, "service": g.service, "group": g.group, "granted": g.grant}));
    reply(r)
}

pub async fn list_joins(
    State(shared): State<Arc<Appliance>>,
    Query(q): Query<CollectiveFilter>,
) -> Response {
    let r = shared
        .onboarding()
        .join_requests(q.collective.as_deref(), q.state.as_deref());
    reply(r)
}

#[derive(Deserialize)]
pub struct Join {
    uid: String,
    collective: String,
    #[serde(default)]
    message: String,
}

pub async fn ask_to_join(State(shared): State<Arc<Appliance>>, Json(j): Json<Join>) -> Response {
    let r = shared
        .onboarding()
        .ask_to_join(&j.uid, &j.collective, &j.message, unix_now())
        .await
        .map(|id| serde_json::json!({"id": id}));
    created(r)
}

async fn decide(shared: Arc<Appliance>, id: i64, approve: bool, a: Act) -> Response {
    let r = shared
        .onboarding()
        .decide_join(id, approve, &a.by, &a.reason, unix_now())
        .await
        .map(|()| serde_json::json!({"id": id, "state": if approve { "approved" } else { "rejected" }}));
    reply(r)
}

pub async fn approve_join(
    State(shared): State<Arc<Appliance>>,
    Path(id): Path<i64>,
    Json(a): Json<Act>,
) -> Response {
    decide(shared, id, true, a).await
}

pub async fn reject_join(
    State(shared): State<Arc<Appliance>>,
    Path(id): Path<i64>,
    Json(a): Json<Act>,
) -> Response {
    decide(shared, id, false, a).await
}

pub async fn list_invitations(
    State(shared): State<Arc<Appliance>>,
    Query(q): Query<CollectiveFilter>,
) -> Response {
    let r = shared.onboarding().invitations(q.collective.as_deref());
    reply(r)
}

#[derive(Deserialize)]
pub struct Invite {
    email: String,
    collective: String,
    by: String,
}

pub async fn invite(State(shared): State<Arc<Appliance>>, Json(i): Json<Invite>) -> Response {
    let r = shared
        .onboarding()
        .invite(&i.email, &i.collective, &i.by, unix_now())
        .await
        .map(|id| serde_json::json!({"id": id}));
    created(r)
}

#[derive(Deserialize)]
pub struct Token {
    token: String,
}

pub async fn invitation_info(
    State(shared): State<Arc<Appliance>>,
    Json(t): Json<Token>,
) -> Response {
    let r = shared
        .onboarding()
        .invitation_info(&t.token, unix_now())
        .await;
    reply(r)
}

pub async fn accept_invitation(
    State(shared): State<Arc<Appliance>>,
    Json(t): Json<Token>,
) -> Response {
    let r = shared
        .onboarding()
        .accept_invitation(&t.token, unix_now())
        .await
        .map(|uid| serde_json::json!({"uid": uid}));
    reply(r)
}

#[derive(Deserialize)]
pub struct Forgot {
    login: String,
    /// The client's address, as the front door saw it (rate limits).
    #[serde(default)]
    ip: String,
}

pub async fn forgot_password(
    State(shared): State<Arc<Appliance>>,
    Json(f): Json<Forgot>,
) -> Response {
    let ip = if f.ip.is_empty() {
        "local".to_owned()
    } else {
        f.ip
    };
    let r = shared
        .onboarding()
        .forgot_password(&f.login, &ip, unix_now())
        .await
        .map(|()| serde_json::json!({"message": "if an active account matches, a reset link is on its way"}));
    match r {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => onboarding_error(e),
    }
}
