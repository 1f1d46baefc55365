//! The console's HTML, rendered on the server with maud (escaped by
//! default). Pure: each function takes what it shows. No JavaScript; the
//! layout is one column that fits a phone, labels are tied to their
//! fields, errors are announced, and colours pass WCAG AA contrast.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::i18n::{LANGUAGES, Msg};
use crate::onboarding::validate::{FieldError, Form, Language};

/// What every page needs: language, who is signed in, the form token.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub lang: Language,
    /// `(uid, shown name, admin)` when signed in.
    pub user: Option<(String, String, bool)>,
    /// The CSRF token every form of the page carries.
    pub csrf: String,
    /// The page's path, for the language links.
    pub path: String,
}

impl Chrome {
    pub fn t(&self, m: Msg) -> &'static str {
        m.text(self.lang)
    }
}

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:1rem/1.5 system-ui,sans-serif;color:#1a1a1a;background:#fff}
a{color:#0b57a4}
a:focus,button:focus,input:focus,select:focus,textarea:focus{outline:3px solid #f5a623;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
header{background:#17324d;color:#fff;padding:.5rem 1rem}
header a,header button.link{color:#fff}
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center}
main{max-width:46rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem}
label{display:block;font-weight:600;margin-top:1rem}
input,select,textarea{font:inherit;width:100%;padding:.5rem;border:1px solid #555;border-radius:4px}
textarea{min-height:5rem}
button{font:inherit;padding:.5rem 1rem;margin-top:1rem;border:0;border-radius:4px;background:#0b57a4;color:#fff;cursor:pointer}
button.danger{background:#a3231f}
button.link{background:none;padding:0;margin:0;text-decoration:underline;color:#0b57a4}
.help{color:#444;font-size:.9rem;margin:.25rem 0 0}
.error{color:#a3231f;font-weight:600}
.notice{border-left:4px solid #0b57a4;background:#eef4fb;padding:.5rem 1rem}
.alert{border-left:4px solid #a3231f;background:#fbeeee;padding:.5rem 1rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ccc;vertical-align:top}
.inline{display:inline}
.hp{position:absolute;left:-9999px}
.tabs{display:flex;flex-wrap:wrap;gap:.5rem 1rem;padding:0;list-style:none}
pre{white-space:pre-wrap;background:#f4f4f4;padding:.5rem;font-size:.85rem}
@media (max-width:30rem){th,td{display:block;border:0}tr{border-bottom:1px solid #ccc;display:block}}
"#;

/// The page around `body`.
pub fn layout(c: &Chrome, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(c.lang.as_str()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (c.t(Msg::Brand)) }
                style { (PreEscaped(CSS)) }
            }
            body {
                a.skip href="#main" { (c.t(Msg::SkipToContent)) }
                header {
                    nav aria-label=(c.t(Msg::Brand)) {
                        ul {
                            li { a href="/" { strong { (c.t(Msg::Brand)) } } }
                            @if let Some((_, _, admin)) = &c.user {
                                li { a href="/" { (c.t(Msg::NavServices)) } }
                                li { a href="/profile" { (c.t(Msg::NavProfile)) } }
                                li { a href="/collectives" { (c.t(Msg::NavCollectives)) } }
                                @if *admin {
                                    li { a href="/console" { (c.t(Msg::NavConsole)) } }
                                }
                                li {
                                    form.inline method="post" action="/logout" {
                                        (csrf(c))
                                        button.link type="submit" { (c.t(Msg::NavSignOut)) }
                                    }
                                }
                            } @else {
                                li { a href="/login" { (c.t(Msg::NavSignIn)) } }
                                li { a href="/register" { (c.t(Msg::NavRegister)) } }
                            }
                            @for (l, name) in LANGUAGES {
                                li {
                                    @if l == c.lang {
                                        span aria-current="true" { (name) }
                                    } @else {
                                        a href=(lang_link(&c.path, l)) lang=(l.as_str()) hreflang=(l.as_str()) { (name) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The same page in language `l`: a query-only reference (`?…&lang=xx`),
/// which a browser resolves against the page's own URL. The request's path
/// is never written into the link: `https://box//evil.example/x` has the
/// path `//evil.example/x`, which as a link's start would name another
/// site (and browsers read `/\evil.example` the same way).
fn lang_link(path: &str, l: Language) -> String {
    let q = path.split_once('?').map_or("", |(_, q)| q);
    let mut out = String::from("?");
    for kv in q
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("lang="))
    {
        out.push_str(kv);
        out.push('&');
    }
    out.push_str("lang=");
    out.push_str(l.as_str());
    out
}

/// The hidden CSRF field.
pub fn csrf(c: &Chrome) -> Markup {
    html! { input type="hidden" name="csrf" value=(c.csrf); }
}

pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

pub fn alert(text: &str) -> Markup {
    html! { p.alert role="alert" { (text) } }
}

/// A page that only says something, with a link onwards.
pub fn message(c: &Chrome, title: &str, text: &str, link: Option<(&str, &str)>) -> Markup {
    layout(
        c,
        title,
        html! {
            (notice(text))
            @if let Some((href, label)) = link {
                p { a href=(href) { (label) } }
            }
        },
    )
}

/// A page that says what went wrong.
pub fn problem(c: &Chrome, title: &str, text: &str) -> Markup {
    layout(c, title, alert(text))
}

fn errors_for<'a>(errors: &'a [FieldError], name: &str) -> Vec<&'a str> {
    errors
        .iter()
        .filter(|e| e.field == name)
        .map(|e| e.message.as_str())
        .collect()
}

/// A labelled input with its help and errors tied to it.
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub help: Option<&'a str>,
    pub autocomplete: &'a str,
    pub required: bool,
}

pub fn field(f: &Field<'_>, errors: &[FieldError]) -> Markup {
    let errs = errors_for(errors, f.name);
    let id = format!("f-{}", f.name);
    let described = match (f.help.is_some(), errs.is_empty()) {
        (true, true) => format!("h-{}", f.name),
        (false, false) => format!("e-{}", f.name),
        (true, false) => format!("h-{} e-{}", f.name, f.name),
        (false, true) => String::new(),
    };
    html! {
        label for=(id) { (f.label) }
        input id=(id) name=(f.name) type=(f.kind) value=(f.value)
            autocomplete=(f.autocomplete) required[f.required]
            aria-invalid=[(!errs.is_empty()).then_some("true")]
            aria-describedby=[(!described.is_empty()).then_some(described.as_str())];
        @if let Some(h) = f.help { p.help id=(format!("h-{}", f.name)) { (h) } }
        @if !errs.is_empty() {
            p.error id=(format!("e-{}", f.name)) { @for e in &errs { (e) " " } }
        }
    }
}

fn general_errors(c: &Chrome, errors: &[FieldError], shown: &[&str]) -> Markup {
    let other: Vec<&FieldError> = errors
        .iter()
        .filter(|e| !shown.contains(&e.field))
        .collect();
    html! {
        @if !errors.is_empty() {
            div.alert role="alert" {
                p { (c.t(Msg::FormErrors)) }
                @if !other.is_empty() {
                    ul { @for e in other { li { (e.message) } } }
                }
            }
        }
    }
}

fn language_select(c: &Chrome, name: &str, selected: &str) -> Markup {
    html! {
        label for=(format!("f-{name}")) { (c.t(Msg::Language)) }
        select id=(format!("f-{name}")) name=(name) {
            @for (l, n) in LANGUAGES {
                option value=(l.as_str()) selected[l.as_str() == selected] { (n) }
            }
        }
    }
}

pub fn login(c: &Chrome, uid: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        c,
        c.t(Msg::LoginTitle),
        html! {
            @if let Some(e) = error { (alert(e)) }
            form method="post" action="/login" {
                (csrf(c))
                input type="hidden" name="next" value=(next);
                (field(&Field { name: "uid", label: c.t(Msg::FieldUser), kind: "text", value: uid,
                    help: None, autocomplete: "username", required: true }, &[]))
                (field(&Field { name: "password", label: c.t(Msg::FieldPassword), kind: "password", value: "",
                    help: None, autocomplete: "current-password", required: true }, &[]))
                button type="submit" { (c.t(Msg::LoginSubmit)) }
            }
            p { a href="/forgot" { (c.t(Msg::LoginForgot)) } }
            p { (c.t(Msg::LoginNoAccount)) " " a href="/register" { (c.t(Msg::NavRegister)) } }
        },
    )
}

pub fn register(
    c: &Chrome,
    f: &Form,
    collectives: &[(String, String)],
    errors: &[FieldError],
) -> Markup {
    let shown = ["uid", "display_name", "email", "collective", "message"];
    let cerrs = errors_for(errors, "collective");
    html! {
        (general_errors(c, errors, &shown))
        p { (c.t(Msg::RegisterIntro)) }
        form method="post" action="/register" {
            (csrf(c))
            input type="hidden" name="invite" value=(f.invite);
            (field(&Field { name: "uid", label: c.t(Msg::FieldUid), kind: "text", value: &f.uid,
                help: Some(c.t(Msg::FieldUidHelp)), autocomplete: "username", required: true }, errors))
            (field(&Field { name: "display_name", label: c.t(Msg::FieldDisplayName), kind: "text",
                value: &f.display_name, help: None, autocomplete: "name", required: true }, errors))
            (field(&Field { name: "email", label: c.t(Msg::FieldEmail), kind: "email", value: &f.email,
                help: None, autocomplete: "email", required: true }, errors))
            label for="f-collective" { (c.t(Msg::FieldCollective)) }
            select #f-collective name="collective" required
                aria-invalid=[(!cerrs.is_empty()).then_some("true")] {
                @for (slug, name) in collectives {
                    option value=(slug) selected[*slug == f.collective] { (name) " (" (slug) ")" }
                }
            }
            @if !cerrs.is_empty() { p.error { @for e in &cerrs { (e) " " } } }
            label for="f-message" { (c.t(Msg::FieldMessage)) }
            textarea #f-message name="message" maxlength="2000" { (f.message) }
            @for e in errors_for(errors, "message") { p.error { (e) } }
            (language_select(c, "language", if f.language.is_empty() { c.lang.as_str() } else { &f.language }))
            // Only bots fill this in; people never see it.
            div.hp aria-hidden="true" {
                label for="f-website" { (c.t(Msg::FieldWebsite)) }
                input #f-website type="text" name="website" tabindex="-1" autocomplete="off";
            }
            button type="submit" { (c.t(Msg::RegisterSubmit)) }
        }
    }
}

/// A form of one button that carries a token (verify, accept).
pub fn token_button(c: &Chrome, action: &str, token: &str, intro: &str, label: &str) -> Markup {
    html! {
        p { (intro) }
        form method="post" action=(action) {
            (csrf(c))
            input type="hidden" name="token" value=(token);
            button type="submit" { (label) }
        }
    }
}

pub fn set_password(c: &Chrome, token: &str, errors: &[FieldError]) -> Markup {
    html! {
        (general_errors(c, errors, &["password", "confirm"]))
        form method="post" action="/set-password" {
            (csrf(c))
            input type="hidden" name="token" value=(token);
            (field(&Field { name: "password", label: c.t(Msg::FieldNewPassword), kind: "password", value: "",
                help: Some(c.t(Msg::PasswordHelp)), autocomplete: "new-password", required: true }, errors))
            (field(&Field { name: "confirm", label: c.t(Msg::FieldConfirm), kind: "password", value: "",
                help: None, autocomplete: "new-password", required: true }, errors))
            button type="submit" { (c.t(Msg::SetPasswordSubmit)) }
        }
    }
}

pub fn choose_uid(c: &Chrome, token: &str, value: &str, errors: &[FieldError]) -> Markup {
    html! {
        (general_errors(c, errors, &["uid"]))
        p { (c.t(Msg::ChooseUidIntro)) }
        form method="post" action="/choose-uid" {
            (csrf(c))
            input type="hidden" name="token" value=(token);
            (field(&Field { name: "uid", label: c.t(Msg::FieldUid), kind: "text", value,
                help: Some(c.t(Msg::FieldUidHelp)), autocomplete: "username", required: true }, errors))
            button type="submit" { (c.t(Msg::ChooseUidSubmit)) }
        }
    }
}

pub fn forgot(c: &Chrome, errors: &[FieldError]) -> Markup {
    html! {
        (general_errors(c, errors, &["login"]))
        p { (c.t(Msg::ForgotIntro)) }
        form method="post" action="/forgot" {
            (csrf(c))
            (field(&Field { name: "login", label: c.t(Msg::FieldLogin), kind: "text", value: "",
                help: None, autocomplete: "username", required: true }, errors))
            button type="submit" { (c.t(Msg::ForgotSubmit)) }
        }
    }
}

/// `(collective, service, url)` a person may open.
pub fn services(c: &Chrome, name: &str, list: &[(String, String, String)]) -> Markup {
    html! {
        p { (Msg::Welcome.with(c.lang, &[("name", name)])) }
        @if list.is_empty() {
            (notice(c.t(Msg::ServicesNone)))
        } @else {
            ul #services {
                @for (collective, service, url) in list {
                    li {
                        @if url.is_empty() {
                            strong { (service) }
                        } @else {
                            a href=(url) { strong { (service) } }
                        }
                        " — " (Msg::ServicesVia.with(c.lang, &[("collective", collective)]))
                    }
                }
            }
        }
    }
}

pub fn profile(
    c: &Chrome,
    display_name: &str,
    language: &str,
    errors: &[FieldError],
    password_errors: &[FieldError],
) -> Markup {
    html! {
        (general_errors(c, errors, &["display_name"]))
        form method="post" action="/profile" {
            (csrf(c))
            (field(&Field { name: "display_name", label: c.t(Msg::FieldDisplayName), kind: "text",
                value: display_name, help: None, autocomplete: "name", required: true }, errors))
            (language_select(c, "language", language))
            button type="submit" { (c.t(Msg::ProfileSave)) }
        }
        h2 { (c.t(Msg::ChangePasswordTitle)) }
        (general_errors(c, password_errors, &["password", "new_password", "confirm"]))
        form method="post" action="/profile/password" {
            (csrf(c))
            (field(&Field { name: "password", label: c.t(Msg::FieldCurrentPassword), kind: "password",
                value: "", help: None, autocomplete: "current-password", required: true }, password_errors))
            (field(&Field { name: "new_password", label: c.t(Msg::FieldNewPassword), kind: "password",
                value: "", help: Some(c.t(Msg::PasswordHelp)), autocomplete: "new-password", required: true }, password_errors))
            (field(&Field { name: "confirm", label: c.t(Msg::FieldConfirm), kind: "password",
                value: "", help: None, autocomplete: "new-password", required: true }, password_errors))
            button type="submit" { (c.t(Msg::ChangePasswordTitle)) }
        }
    }
}

/// `(slug, name)` of the collectives one may ask to join.
pub fn collectives(c: &Chrome, others: &[(String, String)], errors: &[FieldError]) -> Markup {
    html! {
        (general_errors(c, errors, &[]))
        p { (c.t(Msg::JoinIntro)) }
        @if others.is_empty() {
            (notice(c.t(Msg::JoinNone)))
        } @else {
            form method="post" action="/collectives" {
                (csrf(c))
                label for="f-collective" { (c.t(Msg::FieldCollective)) }
                select #f-collective name="collective" {
                    @for (slug, name) in others { option value=(slug) { (name) " (" (slug) ")" } }
                }
                label for="f-message" { (c.t(Msg::FieldMessage)) }
                textarea #f-message name="message" maxlength="2000" {}
                button type="submit" { (c.t(Msg::JoinSubmit)) }
            }
        }
    }
}

// ---- console ------------------------------------------------------------

/// The console's own navigation above each console page.
pub fn console(c: &Chrome, title: &str, flash: Option<&str>, body: Markup) -> Markup {
    let tabs = [
        ("/console", Msg::Dashboard),
        ("/console/requests", Msg::Requests),
        ("/console/people", Msg::Members),
        ("/console/collectives", Msg::GroupsServices),
        ("/console/apps", Msg::Apps),
        ("/console/upgrades", Msg::Upgrades),
        ("/console/backups", Msg::Backups),
        ("/console/settings", Msg::Settings),
        ("/console/audit", Msg::AuditLog),
    ];
    let path = c.path.split('?').next().unwrap_or("");
    layout(
        c,
        title,
        html! {
            nav aria-label=(c.t(Msg::ConsoleTitle)) {
                ul.tabs {
                    @for (href, m) in tabs {
                        li {
                            @if path == href {
                                strong aria-current="page" { (c.t(m)) }
                            } @else {
                                a href=(href) { (c.t(m)) }
                            }
                        }
                    }
                }
            }
            @if let Some(f) = flash { (notice(f)) }
            (body)
        },
    )
}

/// A POST button with the CSRF token and optional extra fields.
pub fn action(c: &Chrome, href: &str, label: &str, danger: bool, extra: Markup) -> Markup {
    html! {
        form.inline method="post" action=(href) {
            (csrf(c))
            (extra)
            @if danger {
                button.danger type="submit" { (label) }
            } @else {
                button type="submit" { (label) }
            }
        }
    }
}

/// A table with a header row.
pub fn table(head: &[&str], rows: Vec<Markup>) -> Markup {
    html! {
        table {
            thead { tr { @for h in head { th scope="col" { (h) } } } }
            tbody { @for r in rows { (r) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome(lang: Language, user: bool) -> Chrome {
        Chrome {
            lang,
            user: user.then(|| ("ana".into(), "Ana <b>".into(), false)),
            csrf: "tok\"en".into(),
            path: "/register?invite=x&lang=en".into(),
        }
    }

    #[test]
    fn pages_escape_what_they_show_and_carry_the_token() {
        let c = chrome(Language::En, true);
        let f = Form {
            uid: "<script>".into(),
            ..Default::default()
        };
        let html = layout(&c, "t", register(&c, &f, &[], &[])).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
        assert!(
            html.contains(r#"name="csrf" value="tok&quot;en""#),
            "{html}"
        );
    }

    #[test]
    fn field_errors_are_tied_to_their_inputs() {
        let c = chrome(Language::Ca, false);
        let errors = vec![FieldError {
            field: "uid",
            message: "taken".into(),
        }];
        let html = register(&c, &Form::default(), &[], &errors).into_string();
        assert!(html.contains(r#"aria-invalid="true""#));
        assert!(html.contains(r#"aria-describedby="h-uid e-uid""#), "{html}");
        assert!(html.contains(r#"id="e-uid""#));
        assert!(html.contains(Msg::FormErrors.text(Language::Ca)));
    }

    #[test]
    fn language_links_keep_the_query() {
        assert_eq!(
            lang_link("/register?invite=x&lang=en", Language::Es),
            "?invite=x&lang=es"
        );
        assert_eq!(lang_link("/", Language::Ca), "?lang=ca");
    }

    #[test]
    fn language_links_never_name_another_site() {
        for path in [
            "//evil.example/x",
            "//evil.example/x?lang=en",
            "///evil.example",
            "/\\evil.example/x",
            "/%2F/evil.example",
            "https://evil.example/",
        ] {
            for (l, _) in LANGUAGES {
                let link = lang_link(path, l);
                assert!(link.starts_with('?'), "{path}: {link}");
                assert!(!link.contains("evil"), "{path}: {link}");
            }
        }
    }

    #[test]
    fn every_page_is_in_the_chosen_language() {
        for (l, _) in LANGUAGES {
            let c = chrome(l, false);
            let html = login(&c, "", "/", None).into_string();
            assert!(html.contains(&format!(r#"<html lang="{}""#, l.as_str())));
            assert!(html.contains(Msg::LoginForgot.text(l)));
        }
    }
}
