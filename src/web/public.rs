//! Pages for everyone: sign in and out, register, verify, passwords,
//! invitations; and for signed-in people: their services, profile,
//! joining other collectives, and the forum's sign-in.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;

use super::i18n::Msg;
use super::pages;
use super::{
    Ctx, Failure, LoginRefusal, Web, check_login, csrf_refused, end_session, failure, failure_text,
    minutes, page, see_other, start_session,
};
use crate::clock::unix_now;
use crate::onboarding::validate::{FieldError, Form as RegistrationForm};

use super::{Fields, get_field};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/", get(home))
        .route(
            "/login",
            get(login_page)
                .post(login)
                .layer(axum::extract::DefaultBodyLimit::max(
                    super::SIGN_IN_BODY_LIMIT,
                )),
        )
        .route("/logout", axum::routing::post(logout))
        .route("/register", get(register_page).post(register))
        .route("/verify", get(verify_page).post(verify))
        .route("/set-password", get(set_password_page).post(set_password))
        .route("/choose-uid", get(choose_uid_page).post(choose_uid))
        .route("/forgot", get(forgot_page).post(forgot))
        .route("/join", get(join_page).post(join))
        .route("/profile", get(profile_page).post(profile))
        .route("/profile/password", axum::routing::post(change_password))
        .route("/collectives", get(collectives_page).post(ask_to_join))
        .route("/sso/discourse", get(sso_discourse))
        .route("/ca.pem", get(ca_certificate))
}

/// Sends a signed-out visitor to the sign-in page, coming back here after.
fn sign_in_first(ctx: &Ctx) -> Response {
    let next: String = form_urlencoded::byte_serialize(ctx.path.as_bytes()).collect();
    see_other(ctx, &format!("/login?next={next}"))
}

/// A page that says what went wrong, with the right status.
fn problem(ctx: &mut Ctx, status: StatusCode, text: &str) -> Response {
    let c = ctx.chrome();
    let m = pages::problem(&c, text, text);
    page(ctx, status, m)
}

async fn home(State(web): State<Arc<Web>>, mut ctx: Ctx) -> Response {
    let Some(s) = ctx.session.clone() else {
        if ctx.directory_down {
            let text = ctx.t(Msg::Unavailable);
            return problem(&mut ctx, StatusCode::SERVICE_UNAVAILABLE, text);
        }
        let c = ctx.chrome();
        return page(&ctx, StatusCode::OK, pages::login(&c, "", "/", None));
    };
    let list = match web.shared.onboarding().my_services(&s.person.uid).await {
        Ok(l) => l,
        Err(e) => {
            let f = failure(&ctx, e);
            return problem(&mut ctx, StatusCode::SERVICE_UNAVAILABLE, &failure_text(&f));
        }
    };
    let config = web.shared.config();
    let rows: Vec<(String, String, String)> = list
        .into_iter()
        .map(|m| {
            let url = service_link(&config, &m.name, &m.url).unwrap_or_default();
            (m.collective, m.name, url)
        })
        .collect();
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::ServicesTitle),
        pages::services(&c, &s.person.display_name, &rows),
    );
    page(&ctx, StatusCode::OK, m)
}

/// Where a service opens: the address the directory gives it, else this
/// box's app of that name (`nextcloud`) or of its hostname's first label
/// (`cloud`).
pub fn service_link(config: &crate::config::Config, name: &str, url: &str) -> Option<String> {
    if !url.is_empty() {
        return Some(url.to_owned());
    }
    crate::model::AppName::ALL.iter().find_map(|app| {
        let host = crate::apps::hostname(config, *app);
        let label = host.split('.').next().unwrap_or("");
        (!host.is_empty() && (name == app.as_str() || name == label))
            .then(|| format!("https://{host}/"))
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NextQuery {
    next: String,
}

async fn login_page(mut ctx: Ctx, Query(q): Query<NextQuery>) -> Response {
    // Shown even to a signed-in browser (to switch accounts); signing in
    // replaces whatever session it had.
    let next = super::session::safe_next(&q.next).unwrap_or("/").to_owned();
    let c = ctx.chrome();
    page(&ctx, StatusCode::OK, pages::login(&c, "", &next, None))
}

async fn login(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let uid = get_field(&f, "uid").trim().to_owned();
    let next = super::session::safe_next(get_field(&f, "next"))
        .unwrap_or("/")
        .to_owned();
    let (status, message) = match check_login(&web, &ctx, &uid, get_field(&f, "password")).await {
        Ok(person) => {
            if start_session(&web, &mut ctx, &person).is_none() {
                return problem(
                    &mut ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot store the session; see `commonscloud doctor`",
                );
            }
            // The pre-sign-in form token is of no further use.
            ctx.set_cookies
                .push(super::session::clear(super::session::FORM_COOKIE));
            return see_other(&ctx, &next);
        }
        Err(LoginRefusal::Limited(wait)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Msg::LoginLimited.with(ctx.lang, &[("minutes", &minutes(wait))]),
        ),
        Err(LoginRefusal::Refused) => (
            StatusCode::UNAUTHORIZED,
            ctx.t(Msg::LoginRefused).to_owned(),
        ),
        Err(LoginRefusal::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ctx.t(Msg::Unavailable).to_owned(),
        ),
    };
    let c = ctx.chrome();
    page(&ctx, status, pages::login(&c, &uid, &next, Some(&message)))
}

async fn logout(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if ctx.session.is_some() && !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    end_session(&web, &mut ctx);
    let c = ctx.chrome();
    let m = pages::message(
        &c,
        c.t(Msg::NavSignOut),
        c.t(Msg::SignedOut),
        Some(("/login", c.t(Msg::NavSignIn))),
    );
    page(&ctx, StatusCode::OK, m)
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RegisterQuery {
    invite: String,
    collective: String,
}

/// `(slug, name)` of every collective, for the picker.
async fn collective_choices(web: &Web) -> Vec<(String, String)> {
    match web.shared.onboarding().collectives().await {
        Ok(list) => list
            .into_iter()
            .map(|c| (c.slug.to_string(), c.name))
            .collect(),
        Err(e) => {
            log::warn!(target: "web", "listing collectives: {e}");
            Vec::new()
        }
    }
}

async fn register_page(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Query(q): Query<RegisterQuery>,
) -> Response {
    let form = RegistrationForm {
        collective: if q.collective.is_empty() {
            web.shared.config().collective.slug.to_string()
        } else {
            q.collective
        },
        invite: q.invite,
        ..Default::default()
    };
    render_register(&web, &mut ctx, StatusCode::OK, &form, &[]).await
}

async fn render_register(
    web: &Web,
    ctx: &mut Ctx,
    status: StatusCode,
    form: &RegistrationForm,
    errors: &[FieldError],
) -> Response {
    let choices = collective_choices(web).await;
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::RegisterTitle),
        pages::register(&c, form, &choices, errors),
    );
    page(ctx, status, m)
}

async fn register(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let form = RegistrationForm {
        uid: get_field(&f, "uid").into(),
        display_name: get_field(&f, "display_name").into(),
        email: get_field(&f, "email").into(),
        collective: get_field(&f, "collective").into(),
        message: get_field(&f, "message").into(),
        language: get_field(&f, "language").into(),
        website: get_field(&f, "website").into(),
        invite: get_field(&f, "invite").into(),
    };
    match web
        .shared
        .onboarding()
        .register(&form, &ctx.ip, unix_now())
        .await
    {
        Ok(_) => {
            let c = ctx.chrome();
            let m = pages::message(&c, c.t(Msg::RegisterTitle), c.t(Msg::RegisterSent), None);
            page(&ctx, StatusCode::OK, m)
        }
        Err(e) => match failure(&ctx, e) {
            Failure::Fields(errors) => {
                render_register(
                    &web,
                    &mut ctx,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &form,
                    &errors,
                )
                .await
            }
            Failure::Page(status, text) => {
                let errors = vec![FieldError {
                    field: "form",
                    message: text,
                }];
                render_register(&web, &mut ctx, status, &form, &errors).await
            }
        },
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct TokenQuery {
    token: String,
}

/// A page with one button that posts the link's token: following a link
/// (which mail scanners do) changes nothing by itself.
fn token_page(
    ctx: &mut Ctx,
    title: Msg,
    action: &str,
    token: &str,
    intro: &str,
    label: Msg,
) -> Response {
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(title),
        pages::token_button(&c, action, token, intro, c.t(label)),
    );
    page(ctx, StatusCode::OK, m)
}

async fn verify_page(mut ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    let intro = ctx.t(Msg::VerifyIntro);
    token_page(
        &mut ctx,
        Msg::VerifyTitle,
        "/verify",
        &q.token,
        intro,
        Msg::VerifySubmit,
    )
}

async fn verify(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    match web
        .shared
        .onboarding()
        .verify_email(get_field(&f, "token"), unix_now())
        .await
    {
        Ok(_) => {
            let c = ctx.chrome();
            let m = pages::message(&c, c.t(Msg::VerifyTitle), c.t(Msg::VerifyDone), None);
            page(&ctx, StatusCode::OK, m)
        }
        Err(e) => {
            let f = failure(&ctx, e);
            let status = match &f {
                Failure::Page(s, _) => *s,
                Failure::Fields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            problem(&mut ctx, status, &failure_text(&f))
        }
    }
}

async fn set_password_page(mut ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::SetPasswordTitle),
        pages::set_password(&c, &q.token, &[]),
    );
    page(&ctx, StatusCode::OK, m)
}

async fn set_password(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Form(f): Form<Fields>,
) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let token = get_field(&f, "token").to_owned();
    let errors = if get_field(&f, "password") != get_field(&f, "confirm") {
        vec![FieldError {
            field: "confirm",
            message: ctx.t(Msg::PasswordsDiffer).into(),
        }]
    } else {
        match web
            .shared
            .onboarding()
            .set_password(&token, get_field(&f, "password"), unix_now())
            .await
        {
            Ok(uid) => {
                // Finishing a mailed link proves the mailbox: this address
                // is the person's now, whoever else is hammering the account.
                super::remember_address(&web, &uid, &ctx.ip, unix_now());
                let c = ctx.chrome();
                let m = pages::message(
                    &c,
                    c.t(Msg::SetPasswordTitle),
                    c.t(Msg::PasswordSet),
                    Some(("/login", c.t(Msg::NavSignIn))),
                );
                return page(&ctx, StatusCode::OK, m);
            }
            Err(e) => match failure(&ctx, e) {
                Failure::Fields(v) => v,
                Failure::Page(status, text) => return problem(&mut ctx, status, &text),
            },
        }
    };
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::SetPasswordTitle),
        pages::set_password(&c, &token, &errors),
    );
    page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, m)
}

async fn choose_uid_page(mut ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::ChooseUidTitle),
        pages::choose_uid(&c, &q.token, "", &[]),
    );
    page(&ctx, StatusCode::OK, m)
}

async fn choose_uid(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let token = get_field(&f, "token").to_owned();
    let uid = get_field(&f, "uid").to_owned();
    let errors = match web
        .shared
        .onboarding()
        .choose_uid(&token, &uid, unix_now())
        .await
    {
        Ok(_) => {
            let c = ctx.chrome();
            let m = pages::message(
                &c,
                c.t(Msg::ChooseUidTitle),
                c.t(Msg::UidChosen),
                Some(("/login", c.t(Msg::NavSignIn))),
            );
            return page(&ctx, StatusCode::OK, m);
        }
        Err(e) => match failure(&ctx, e) {
            Failure::Fields(v) => v,
            Failure::Page(status, text) => return problem(&mut ctx, status, &text),
        },
    };
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::ChooseUidTitle),
        pages::choose_uid(&c, &token, &uid, &errors),
    );
    page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, m)
}

async fn forgot_page(mut ctx: Ctx) -> Response {
    let c = ctx.chrome();
    let m = pages::layout(&c, c.t(Msg::ForgotTitle), pages::forgot(&c, &[]));
    page(&ctx, StatusCode::OK, m)
}

async fn forgot(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    match web
        .shared
        .onboarding()
        .forgot_password(get_field(&f, "login"), &ctx.ip, unix_now())
        .await
    {
        Ok(()) => {
            let c = ctx.chrome();
            let m = pages::message(&c, c.t(Msg::ForgotTitle), c.t(Msg::ForgotSent), None);
            page(&ctx, StatusCode::OK, m)
        }
        Err(e) => match failure(&ctx, e) {
            Failure::Fields(errors) => {
                let c = ctx.chrome();
                let m = pages::layout(&c, c.t(Msg::ForgotTitle), pages::forgot(&c, &errors));
                page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, m)
            }
            Failure::Page(status, text) => problem(&mut ctx, status, &text),
        },
    }
}

async fn join_page(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Query(q): Query<TokenQuery>,
) -> Response {
    match web
        .shared
        .onboarding()
        .invitation_info(&q.token, unix_now())
        .await
    {
        Ok(info) if info.has_account => {
            let intro = Msg::InviteIntro.with(ctx.lang, &[("collective", &info.collective_name)]);
            token_page(
                &mut ctx,
                Msg::InviteTitle,
                "/join",
                &q.token,
                &intro,
                Msg::InviteAccept,
            )
        }
        Ok(info) => {
            let to = format!(
                "/register?invite={}&collective={}",
                form_urlencoded::byte_serialize(q.token.as_bytes()).collect::<String>(),
                info.collective
            );
            see_other(&ctx, &to)
        }
        Err(e) => {
            let f = failure(&ctx, e);
            problem(&mut ctx, StatusCode::GONE, &failure_text(&f))
        }
    }
}

async fn join(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let token = get_field(&f, "token");
    let svc = web.shared.onboarding();
    let name = svc
        .invitation_info(token, unix_now())
        .await
        .map(|i| i.collective_name)
        .unwrap_or_default();
    match svc.accept_invitation(token, unix_now()).await {
        Ok(_) => {
            let c = ctx.chrome();
            let text = Msg::InviteAccepted.with(c.lang, &[("collective", &name)]);
            let m = pages::message(
                &c,
                c.t(Msg::InviteTitle),
                &text,
                Some(("/", c.t(Msg::NavServices))),
            );
            page(&ctx, StatusCode::OK, m)
        }
        Err(e) => {
            let f = failure(&ctx, e);
            problem(&mut ctx, StatusCode::CONFLICT, &failure_text(&f))
        }
    }
}

async fn profile_page(mut ctx: Ctx) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::ProfileTitle),
        pages::profile(&c, &s.person.display_name, &s.person.language, &[], &[]),
    );
    page(&ctx, StatusCode::OK, m)
}

async fn profile(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let name = get_field(&f, "display_name");
    let lang = get_field(&f, "language");
    match web
        .shared
        .onboarding()
        .update_profile(&s.person.uid, name, lang, unix_now())
        .await
    {
        Ok(p) => {
            if let Some(l) = crate::onboarding::validate::Language::parse(&p.language) {
                ctx.lang = l;
                ctx.set_cookies.push(format!(
                    "{}={}; Path=/; Secure; SameSite=Lax; Max-Age=31536000",
                    super::session::LANG_COOKIE,
                    l.as_str()
                ));
            }
            if let Some(sess) = ctx.session.as_mut() {
                sess.person = p.clone();
            }
            let c = ctx.chrome();
            let body = html! {
                (pages::notice(c.t(Msg::ProfileSaved)))
                (pages::profile(&c, &p.display_name, &p.language, &[], &[]))
            };
            page(
                &ctx,
                StatusCode::OK,
                pages::layout(&c, c.t(Msg::ProfileTitle), body),
            )
        }
        Err(e) => match failure(&ctx, e) {
            Failure::Fields(errors) => {
                let c = ctx.chrome();
                let m = pages::layout(
                    &c,
                    c.t(Msg::ProfileTitle),
                    pages::profile(&c, name, lang, &errors, &[]),
                );
                page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, m)
            }
            Failure::Page(status, text) => problem(&mut ctx, status, &text),
        },
    }
}

async fn change_password(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Form(f): Form<Fields>,
) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    let errors = if get_field(&f, "new_password") != get_field(&f, "confirm") {
        vec![FieldError {
            field: "confirm",
            message: ctx.t(Msg::PasswordsDiffer).into(),
        }]
    } else {
        match web
            .shared
            .onboarding()
            .change_password(
                &s.person.uid,
                get_field(&f, "password"),
                get_field(&f, "new_password"),
                unix_now(),
            )
            .await
        {
            Ok(()) => {
                // Every session of theirs ended; this browser gets a new one.
                ctx.session = None;
                start_session(&web, &mut ctx, &s.person);
                let c = ctx.chrome();
                let m = pages::message(
                    &c,
                    c.t(Msg::ChangePasswordTitle),
                    c.t(Msg::PasswordChanged),
                    Some(("/", c.t(Msg::NavServices))),
                );
                return page(&ctx, StatusCode::OK, m);
            }
            Err(e) => match failure(&ctx, e) {
                Failure::Fields(v) => v,
                Failure::Page(status, text) => return problem(&mut ctx, status, &text),
            },
        }
    };
    let c = ctx.chrome();
    let m = pages::layout(
        &c,
        c.t(Msg::ProfileTitle),
        pages::profile(&c, &s.person.display_name, &s.person.language, &[], &errors),
    );
    page(&ctx, StatusCode::UNPROCESSABLE_ENTITY, m)
}

async fn render_collectives(
    web: &Web,
    ctx: &mut Ctx,
    uid: &str,
    status: StatusCode,
    flash: Option<&str>,
    errors: &[FieldError],
) -> Response {
    let others: Vec<(String, String)> = match web.shared.onboarding().others(uid).await {
        Ok(l) => l
            .into_iter()
            .map(|c| (c.slug.to_string(), c.name))
            .collect(),
        Err(e) => {
            let f = failure(ctx, e);
            return problem(ctx, StatusCode::SERVICE_UNAVAILABLE, &failure_text(&f));
        }
    };
    let c = ctx.chrome();
    let body = html! {
        @if let Some(f) = flash { (pages::notice(f)) }
        (pages::collectives(&c, &others, errors))
    };
    page(ctx, status, pages::layout(&c, c.t(Msg::JoinTitle), body))
}

async fn collectives_page(State(web): State<Arc<Web>>, mut ctx: Ctx) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    render_collectives(&web, &mut ctx, &s.person.uid, StatusCode::OK, None, &[]).await
}

async fn ask_to_join(State(web): State<Arc<Web>>, mut ctx: Ctx, Form(f): Form<Fields>) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    if !ctx.csrf_ok(get_field(&f, "csrf")) {
        return csrf_refused(&mut ctx);
    }
    match web
        .shared
        .onboarding()
        .ask_to_join(
            &s.person.uid,
            get_field(&f, "collective"),
            get_field(&f, "message"),
            unix_now(),
        )
        .await
    {
        Ok(_) => {
            let text = ctx.t(Msg::JoinAsked);
            render_collectives(
                &web,
                &mut ctx,
                &s.person.uid,
                StatusCode::OK,
                Some(text),
                &[],
            )
            .await
        }
        Err(e) => {
            let errors = match failure(&ctx, e) {
                Failure::Fields(v) => v,
                Failure::Page(_, text) => vec![FieldError {
                    field: "form",
                    message: text,
                }],
            };
            render_collectives(
                &web,
                &mut ctx,
                &s.person.uid,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                &errors,
            )
            .await
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct SsoQuery {
    sso: String,
    sig: String,
}

/// DiscourseConnect: the forum sends the browser here. A signed-in person
/// goes straight back, signed in; anyone else signs in first and returns.
async fn sso_discourse(
    State(web): State<Arc<Web>>,
    mut ctx: Ctx,
    Query(q): Query<SsoQuery>,
) -> Response {
    let Some(s) = ctx.session.clone() else {
        return sign_in_first(&ctx);
    };
    let config = web.shared.config();
    let paths = crate::directory::slapd::Paths::new(&config);
    let tree = crate::directory::tree::Tree::new(config.suffix().as_str());
    let r = crate::sso::service::login_as(
        &web.shared.store,
        &paths,
        &tree,
        &config.paths.secrets_dir,
        &crate::apps::hostname(&config, crate::model::AppName::Discourse),
        &q.sso,
        &q.sig,
        &s.person,
        unix_now(),
    )
    .await;
    match r {
        Ok(url) => {
            let mut resp = see_other(&ctx, &url);
            // The forum is another site: let this one redirect there.
            resp.headers_mut().remove(header::CONTENT_SECURITY_POLICY);
            resp
        }
        Err(e) => {
            let status = match &e {
                crate::sso::service::LoginError::Sso(_) => StatusCode::BAD_REQUEST,
                crate::sso::service::LoginError::Refused => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let text = e.to_string();
            let c = ctx.chrome();
            let m = pages::problem(&c, c.t(Msg::SsoTitle), &text);
            page(&ctx, status, m)
        }
    }
}

/// The local CA's certificate, to install on devices.
async fn ca_certificate(State(web): State<Arc<Web>>) -> Response {
    let config = web.shared.config();
    let files =
        crate::frontdoor::ca::Files::new(&config.paths.state_dir, &config.paths.secrets_dir);
    match std::fs::read(&files.ca_cert) {
        Ok(pem) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"commonscloud-ca.pem\"",
                ),
            ],
            pem,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            "the local CA is not made yet: the supervisor makes it at start",
        )
            .into_response(),
    }
}
