//! The console: pages for people (sign in, register, verify, passwords,
//! profile, services, joining), pages for admins (`/console/…`), the
//! DiscourseConnect sign-in that reuses the session, and the same actions
//! as JSON under `/api/v1`.
//!
//! Served by the supervisor on `<state_dir>/front-door/console.sock`, which
//! only the front door reaches; the front door sets `X-Real-IP` and drops any the
//! client sent, so the address used for rate limits is the real one.
//!
//! Adapter: every decision is made by the onboarding service, the SSO
//! provider or the pure `session`/`i18n` modules; handlers turn requests
//! into their calls and answers into pages.

pub mod admin;
pub mod api;
pub mod i18n;
pub mod ops;
pub mod pages;
pub mod public;
pub mod session;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use crate::appliance::Appliance;
use crate::clock::unix_now;
use crate::directory::auth::Authenticator;
use crate::directory::people::Person;
use crate::onboarding::service::{OnboardingError, hash_token, new_token, os_random};
use crate::onboarding::validate::{FieldError, Language};
use i18n::Msg;
use pages::Chrome;
use session::{FORM_COOKIE, LANG_COOKIE, LoginLimits, SESSION_COOKIE};

/// What the console's handlers share.
pub struct Web {
    pub shared: Arc<Appliance>,
    limits: Mutex<LoginLimits>,
    /// The authenticator for the directory suffix in force.
    auth: Mutex<Option<(String, Arc<Authenticator>)>>,
}

impl Web {
    pub fn new(shared: Arc<Appliance>) -> Arc<Web> {
        Arc::new(Web {
            shared,
            limits: Mutex::new(LoginLimits::default()),
            auth: Mutex::new(None),
        })
    }

    /// The authenticator (with its shared look-up connection) for the
    /// current config; a reload that changed the suffix gets a new one.
    pub fn auth(&self) -> Arc<Authenticator> {
        let config = self.shared.config();
        let suffix = config.suffix().as_str().to_owned();
        let mut guard = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, a)) = guard.as_ref()
            && *s == suffix
        {
            return a.clone();
        }
        let a = Arc::new(Authenticator::new(
            crate::directory::slapd::Paths::new(&config),
            crate::directory::tree::Tree::new(&suffix),
        ));
        *guard = Some((suffix, a.clone()));
        a
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, LoginLimits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The largest body any console form or API call takes: the longest
/// field is a 2,000-character message (up to 8,000 bytes of UTF-8, three
/// times that URL-encoded), with room for the rest.
pub const BODY_LIMIT: usize = 32 * 1024;
/// Signing in takes a user name and a password.
pub const SIGN_IN_BODY_LIMIT: usize = 4 * 1024;

/// The router served on the console socket. Bodies over the limits are
/// refused (413) before a handler sees them.
pub fn router(web: Arc<Web>) -> Router {
    public::routes()
        .merge(admin::routes())
        .nest("/api/v1", api::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(web)
}

/// A signed-in person's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub hash: String,
    pub csrf: String,
    pub person: Person,
    pub admin: bool,
}

/// What the console knows about a request before its handler runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Language,
    /// The client's address as the front door saw it.
    pub ip: String,
    /// The `Host` header (with a port when not 443).
    pub host: String,
    pub origin: Option<String>,
    pub session: Option<Session>,
    /// The double-submit token of forms shown before signing in.
    pub form_token: Option<String>,
    pub path: String,
    /// Cookies to set with the answer.
    pub set_cookies: Vec<String>,
    /// Whether the directory could not be asked about the session.
    pub directory_down: bool,
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn random_token() -> String {
    new_token(os_random).0
}

impl FromRequestParts<Arc<Web>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Ctx, Self::Rejection> {
        let h = &parts.headers;
        let cookies = header_str(h, header::COOKIE).unwrap_or("").to_owned();
        let query_lang = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "lang")
                .map(|(_, v)| v.into_owned())
        });
        let lang = i18n::negotiate(
            query_lang.as_deref(),
            session::cookie(&cookies, LANG_COOKIE),
            header_str(h, header::ACCEPT_LANGUAGE),
        );
        let mut ctx = Ctx {
            lang,
            // The front door always sets it to the peer's address.
            ip: h
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<std::net::IpAddr>().ok())
                .map_or_else(|| "local".to_owned(), |a| a.to_string()),
            // With its port, as the browser's `Origin` has it.
            host: header_str(h, header::HOST)
                .unwrap_or("")
                .to_ascii_lowercase(),
            origin: header_str(h, header::ORIGIN).map(str::to_owned),
            session: None,
            form_token: session::cookie(&cookies, FORM_COOKIE)
                .filter(|t| session::well_formed(t))
                .map(str::to_owned),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            set_cookies: Vec::new(),
            directory_down: false,
        };
        if query_lang.as_deref().and_then(Language::parse).is_some() {
            ctx.set_cookies.push(format!(
                "{LANG_COOKIE}={}; Path=/; Secure; SameSite=Lax; Max-Age=31536000",
                lang.as_str()
            ));
        }
        if let Some(token) =
            session::cookie(&cookies, SESSION_COOKIE).filter(|t| session::well_formed(t))
        {
            ctx.session = load_session(web, &mut ctx, token).await;
        }
        Ok(ctx)
    }
}

/// The session behind a cookie, if it is live and its person may still
/// sign in (a suspension, a removal or leaving the last collective ends it
/// at once).
async fn load_session(web: &Web, ctx: &mut Ctx, token: &str) -> Option<Session> {
    let hash = hash_token(token);
    let now = unix_now();
    let row = web.shared.with_store(|s| s.session(&hash, now)).ok()??;
    let person = match web.auth().find(&row.uid).await {
        Ok(p) => p,
        Err(e) => {
            log::warn!(target: "web", "cannot look up the session's person: {e}");
            ctx.directory_down = true;
            return None;
        }
    };
    let Some(person) = person.filter(|p| p.may_sign_in()) else {
        let _ = web.shared.with_store(|s| s.delete_session(&hash));
        return None;
    };
    // Slide the idle end, at most once a minute per session.
    if now - row.last_seen >= 60 {
        let end = session::expiry(row.created_at, now);
        let _ = web.shared.with_store(|s| s.touch_session(&hash, now, end));
    }
    let home = web.shared.config().collective.slug.clone();
    Some(Session {
        hash,
        csrf: row.csrf,
        admin: person.is_admin(&home),
        person,
    })
}

impl Ctx {
    /// The page chrome; gives a pre-sign-in form token when there is none.
    pub fn chrome(&mut self) -> Chrome {
        let csrf = match &self.session {
            Some(s) => s.csrf.clone(),
            None => match &self.form_token {
                Some(t) => t.clone(),
                None => {
                    let t = random_token();
                    self.set_cookies.push(session::set_secret(
                        FORM_COOKIE,
                        &t,
                        session::IDLE_SECS,
                        "Strict",
                    ));
                    self.form_token = Some(t.clone());
                    t
                }
            },
        };
        Chrome {
            lang: self.lang,
            user: self
                .session
                .as_ref()
                .map(|s| (s.person.uid.clone(), s.person.display_name.clone(), s.admin)),
            csrf,
            path: self.path.clone(),
        }
    }

    /// Whether a submitted form may act: it comes from this site and
    /// carries the token of this session (or, signed out, of this browser).
    pub fn csrf_ok(&self, submitted: &str) -> bool {
        if !session::same_origin(self.origin.as_deref(), &self.host) {
            return false;
        }
        match (&self.session, &self.form_token) {
            (Some(s), _) => session::same_token(submitted, &s.csrf),
            (None, Some(t)) => session::same_token(submitted, t),
            (None, None) => false,
        }
    }

    pub fn t(&self, m: Msg) -> &'static str {
        m.text(self.lang)
    }

    pub fn uid(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.person.uid.as_str())
    }
}

/// Headers every console answer carries.
fn harden(resp: &mut Response, cookies: &[String]) {
    let h = resp.headers_mut();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Links carry one-time tokens: never hand them to another site.
        // (Not `no-referrer`: with it browsers send `Origin: null` on form
        // posts, and the origin check would refuse every form.)
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// An HTML page with the context's cookies and the security headers.
pub fn page(ctx: &Ctx, status: StatusCode, markup: Markup) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    harden(&mut resp, &ctx.set_cookies);
    resp
}

/// A redirect after a POST (303), with the context's cookies.
pub fn see_other(ctx: &Ctx, to: &str) -> Response {
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, to.to_owned())],
        String::new(),
    )
        .into_response();
    harden(&mut resp, &ctx.set_cookies);
    resp
}

/// The answer to a form whose CSRF check failed.
pub fn csrf_refused(ctx: &mut Ctx) -> Response {
    let c = ctx.chrome();
    let m = pages::problem(&c, c.t(Msg::CsrfRefused), c.t(Msg::CsrfRefused));
    page(ctx, StatusCode::FORBIDDEN, m)
}

/// Field errors for a form, or a page-level problem for anything else.
pub enum Failure {
    Fields(Vec<FieldError>),
    Page(StatusCode, String),
}

/// What a person is told when the service says no.
pub fn failure(ctx: &Ctx, e: OnboardingError) -> Failure {
    match e {
        OnboardingError::Invalid(fields) => Failure::Fields(fields),
        OnboardingError::BadLink => Failure::Page(StatusCode::GONE, ctx.t(Msg::BadLink).into()),
        OnboardingError::Directory(e) => {
            log::warn!(target: "web", "directory: {e}");
            Failure::Page(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx.t(Msg::Unavailable).into(),
            )
        }
        OnboardingError::Store(e) => {
            log::error!(target: "web", "store: {e}");
            Failure::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        OnboardingError::RateLimited { .. } => {
            Failure::Page(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        OnboardingError::NotFound(_) => Failure::Page(StatusCode::NOT_FOUND, e.to_string()),
        OnboardingError::AllianceDown { .. } => {
            Failure::Page(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        e => Failure::Page(StatusCode::CONFLICT, e.to_string()),
    }
}

/// `Failure::Fields` as a flat list, for pages that show one message.
pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Fields(v) => v
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Failure::Page(_, m) => m.clone(),
    }
}

async fn not_found(mut ctx: Ctx) -> Response {
    if ctx.path.starts_with("/api/") {
        return api::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    let c = ctx.chrome();
    let m = pages::problem(&c, c.t(Msg::NotFound), c.t(Msg::NotFound));
    page(&ctx, StatusCode::NOT_FOUND, m)
}

/// Starts a session for `person`: always a new id and a new CSRF token,
/// and the session the browser brought (if any) ends, so a cookie planted
/// before sign-in never becomes a signed-in one. Returns the cookie value.
pub fn start_session(web: &Web, ctx: &mut Ctx, person: &Person) -> Option<String> {
    let now = unix_now();
    let (plain, hash) = new_token(os_random);
    let csrf = random_token();
    let end = session::expiry(now, now);
    let old = ctx.session.take().map(|s| s.hash);
    let stored = web.shared.with_store(|s| {
        if let Some(old) = &old {
            s.delete_session(old)?;
        }
        s.prune_sessions(now)?;
        s.insert_session(&hash, &person.uid, &csrf, &ctx.ip, now, end)?;
        s.audit(now, &person.uid, "login", &format!("from {}", ctx.ip))
    });
    if let Err(e) = stored {
        log::error!(target: "web", "cannot store a session: {e}");
        return None;
    }
    ctx.set_cookies.push(session::set_secret(
        SESSION_COOKIE,
        &plain,
        session::ABSOLUTE_SECS,
        "Lax",
    ));
    let home = web.shared.config().collective.slug.clone();
    ctx.session = Some(Session {
        hash,
        csrf,
        admin: person.is_admin(&home),
        person: person.clone(),
    });
    Some(plain)
}

/// Why a sign-in did not open a session.
pub enum LoginRefusal {
    /// Wait this many seconds.
    Limited(i64),
    Refused,
    Unavailable,
}

/// Checks the limits and the password; counts and audits a failure.
///
/// A user name that cannot exist is refused before anything: it is not
/// counted, kept or audited, so junk costs the box nothing. Otherwise the
/// attempt is counted before the password is checked, in one step with
/// the limits (see [`session::LoginLimits`]); a success gives it back and
/// makes this address known to the account.
pub async fn check_login(
    web: &Web,
    ctx: &Ctx,
    uid: &str,
    password: &str,
) -> Result<Person, LoginRefusal> {
    let now = unix_now();
    let uid = uid.trim().to_ascii_lowercase();
    if uid.parse::<crate::model::Uid>().is_err() || password.is_empty() {
        return Err(LoginRefusal::Refused);
    }
    let net = crate::onboarding::ratelimit::address_key(&ctx.ip);
    let known = web
        .shared
        .with_store(|s| s.is_known_address(&uid, &net, now - session::KNOWN_FOR_SECS))
        .unwrap_or(false);
    let attempt = match web.limits().begin(&uid, &ctx.ip, known, now) {
        Ok(a) => a,
        Err(wait) => return Err(LoginRefusal::Limited(wait)),
    };
    match web.auth().authenticate(&uid, password).await {
        Ok(p) => {
            web.limits().forgive(&attempt);
            remember_address(web, &p.uid, &ctx.ip, now);
            Ok(p)
        }
        Err(crate::directory::auth::AuthError::Refused) => {
            let _ = web.shared.with_store(|s| {
                s.audit(
                    now,
                    "console",
                    "login-failed",
                    &format!("{uid} from {}", ctx.ip),
                )
            });
            Err(LoginRefusal::Refused)
        }
        Err(crate::directory::auth::AuthError::Directory(e)) => {
            web.limits().forgive(&attempt);
            log::warn!(target: "web", "sign-in: {e}");
            Err(LoginRefusal::Unavailable)
        }
    }
}

/// Makes `ip`'s network known to `uid`'s account: they signed in from it,
/// or finished a mailed password link there (which proves the mailbox).
pub fn remember_address(web: &Web, uid: &str, ip: &str, now: i64) {
    let net = crate::onboarding::ratelimit::address_key(ip);
    if let Err(e) = web
        .shared
        .with_store(|s| s.remember_address(uid, &net, now, session::KNOWN_PER_PERSON))
    {
        log::warn!(target: "web", "cannot remember a sign-in address: {e}");
    }
}

/// Ends the browser's session.
pub fn end_session(web: &Web, ctx: &mut Ctx) {
    if let Some(s) = ctx.session.take() {
        let now = unix_now();
        let _ = web.shared.with_store(|st| {
            st.delete_session(&s.hash)?;
            st.audit(now, &s.person.uid, "logout", "")
        });
    }
    ctx.set_cookies.push(session::clear(SESSION_COOKIE));
}

/// Registrations awaiting validation and pending join requests, for the
/// dashboard (page and API).
pub fn pending_counts(web: &Web) -> (i64, usize) {
    let registrations = web
        .shared
        .with_store(|s| s.count_registrations("awaiting_validation"))
        .unwrap_or(0);
    let joins = web
        .shared
        .onboarding()
        .join_requests(None, Some("pending"))
        .map(|v| v.len())
        .unwrap_or(0);
    (registrations, joins)
}

/// The fields of a submitted form.
pub type Fields = std::collections::HashMap<String, String>;

/// A form field, empty when absent.
pub fn get_field<'a>(f: &'a Fields, k: &str) -> &'a str {
    f.get(k).map_or("", String::as_str)
}

/// Minutes to wait, rounded up, for the rate-limit message.
pub fn minutes(secs: i64) -> String {
    ((secs.max(1) + 59) / 60).to_string()
}
