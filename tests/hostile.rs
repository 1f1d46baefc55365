//! Hostile strings against every operation that takes one, on a real slapd:
//! filter metacharacters (`*)(uid=*`), DN specials (`,`, `+`, `#`, `\`),
//! NUL, spaces, case and unicode near-misses of existing names. Each value
//! goes in every identifying argument of every operation; none may match or
//! touch anything: the whole directory, the outbox, the requests and the
//! audit log are the same after each case as before it. A directory (LDAP)
//! error counts as a failure too: it means a value reached slapd unescaped
//! or unvalidated.
//!
//! One slapd serves the whole run (starting one costs ~0.3 s); the runtime
//! is built by hand so that proptest drives the cases.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};

use common::flow::{Fixture, T0, fixture, form};
use commonscloud::directory::auth::{AuthError, Authenticator};
use commonscloud::directory::people;
use commonscloud::model::{CollectiveSlug, Email, Name, Uid};
use commonscloud::onboarding::service::OnboardingError;
use commonscloud::onboarding::validate::Form;
use ldap3::{Scope, SearchEntry};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const PW: &str = "correct horse battery";
const UIDS: [&str; 4] = ["ana", "bob", "cy", "dee"];
const MAILS: [&str; 4] = [
    "ana@example.org",
    "bob@example.org",
    "cy@example.org",
    "dee@example.org",
];
/// Whom wrong passwords are tried on: ppolicy records (then clears) each
/// failure, which bumps the entry's CSN, so only that stamp is not compared.
const BIND_TARGET: &str = "dee";
const COLLECTIVES: [&str; 2] = ["quimper", "brest"];
/// Groups of quimper (brest has only the built-in ones).
const GROUPS: [&str; 3] = ["members", "admins", "editors"];
const SERVICES: [&str; 1] = ["wiki"];

/// Values known to be awkward for filters, DNs or normalisation.
const FIXED: &[&str] = &[
    "",
    " ",
    "*",
    "**",
    "*)(uid=*",
    "*)(|(uid=*",
    "*)(|(uid=*))",
    "ana*",
    "*ana",
    "a*a",
    "ana)(objectClass=*",
    "ana)(|(uid=*",
    "(uid=ana)",
    "(&)",
    "(|)",
    "\\",
    "\\2a",
    "\\2A",
    "ana\\2a",
    "\\00",
    "\0",
    "ana\0",
    "\0ana",
    "a,b=c",
    "uid=ana,ou=people",
    "uid=ana",
    "ana,ou=people",
    "cn=admins,ou=groups,ou=quimper,ou=collectives",
    "quimper,ou=collectives",
    "ÀNA",
    "ANA",
    "Ana",
    "ana ",
    " ana",
    "an a",
    "ana\n",
    "ana\t",
    "#ana",
    "ana+cn=x",
    "ana+uid=bob",
    "\"",
    "\"ana\"",
    "<>",
    "ana;",
    "=",
    "ana=",
    "ana@example.org*",
    "*@example.org",
    "ANA@EXAMPLE.ORG ",
    "ana@example.org)(mail=*",
    "ana@example.org\0",
    "quimper*",
    "QUIMPER",
    "quimper ",
    "quimper,brest",
    "members)(cn=*",
    "admins*",
    "wiki*",
    "ｑｕｉｍｐｅｒ",
    "ａｎａ",
    "аna",
    "ana\u{200b}",
    "ana\u{301}",
    "🦀",
    "ana🦀",
    "\u{feff}ana",
    "\u{202e}ana",
    "%2a",
    "$(id)",
    "../../etc/passwd",
];

fn hostile() -> impl Strategy<Value = String> {
    let mut fixed: Vec<String> = FIXED.iter().map(|s| (*s).to_owned()).collect();
    fixed.push("a".repeat(300));
    fixed.push("*)(".repeat(100));
    fixed.push("\\".repeat(255));
    fixed.push(format!("ana{}", "\0".repeat(40)));
    fixed.push("é".repeat(128));
    let special = proptest::sample::select(
        "*()\\,=+<>#;\"'@. -_\0\n\r\t|&!~:/"
            .chars()
            .collect::<Vec<_>>(),
    );
    let ch = prop_oneof![
        4 => special,
        4 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('\0', '\x7f'),
        2 => proptest::char::range('\u{80}', '\u{2fff}'),
        1 => proptest::char::range('\u{1f300}', '\u{1f64f}'),
    ];
    let random = proptest::collection::vec(ch, 0..40).prop_map(String::from_iter);
    let near = (
        proptest::sample::select(
            UIDS.iter()
                .chain(&MAILS)
                .chain(&COLLECTIVES)
                .chain(&GROUPS)
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        ),
        r"[*()\\,=+<>#; \x00A-Z]{0,6}",
        r"[*()\\,=+<>#; \x00A-Z]{0,6}",
    )
        .prop_map(|(name, pre, post)| format!("{pre}{name}{post}"));
    prop_oneof![
        3 => proptest::sample::select(fixed),
        4 => random,
        2 => r"[\x00-\x7f\x{80}-\x{2FFF}*()\\,=+<>#; ]{0,40}",
        2 => near,
    ]
}

/// Every entry under the suffix: user attributes, the (dynamic) memberOf,
/// the ppolicy lock, and the stamps any write would change.
type Snapshot = BTreeMap<String, BTreeMap<String, Vec<String>>>;

async fn snapshot(f: &Fixture) -> Snapshot {
    let mut root = f.inst.root().await;
    let (entries, _) = root
        .search(
            f.inst.tree.suffix(),
            Scope::Subtree,
            "(objectClass=*)",
            vec![
                "*",
                "memberOf",
                "pwdAccountLockedTime",
                "modifyTimestamp",
                "entryCSN",
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    entries
        .into_iter()
        .map(SearchEntry::construct)
        .map(|e| {
            let stamped = e.dn != f.inst.tree.person(BIND_TARGET);
            let mut attrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, mut v) in e.attrs {
                if !stamped && ["entryCSN", "modifyTimestamp"].contains(&k.as_str()) {
                    continue;
                }
                v.sort();
                attrs.insert(k.to_ascii_lowercase(), v);
            }
            for (k, v) in e.bin_attrs {
                let mut v: Vec<String> = v.iter().map(|b| format!("{b:02x?}")).collect();
                v.sort();
                attrs.insert(k.to_ascii_lowercase(), v);
            }
            (e.dn.to_ascii_lowercase(), attrs)
        })
        .collect()
}

/// What the store holds that an operation could add to.
#[derive(Debug, PartialEq, Eq)]
struct StoreCounts {
    mails: usize,
    registrations: usize,
    join_requests: usize,
    invitations: usize,
    audit: usize,
}

fn store_counts(f: &Fixture) -> StoreCounts {
    let s = f.store.lock().unwrap();
    StoreCounts {
        mails: s.due_mail(i64::MAX, 100_000).unwrap().len(),
        registrations: s.registrations(None).unwrap().len(),
        join_requests: s.join_requests(None, None).unwrap().len(),
        invitations: s.invitations(None).unwrap().len(),
        audit: s.recent_audit(1_000_000).unwrap().len(),
    }
}

static SEQ: AtomicU32 = AtomicU32::new(1);

fn next() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A fresh source address per call: the limits are per IP.
fn ip() -> String {
    let i = next();
    format!("198.51.{}.{}", (i / 256) % 256, i % 256)
}

/// A valid uid and address nobody has, so that only the hostile field can
/// make a registration fail.
fn fresh() -> (String, String) {
    let i = next();
    (format!("fresh{i}"), format!("fresh{i}@example.net"))
}

fn form_with(uid: &str, email: &str, edit: impl FnOnce(&mut Form)) -> Form {
    let mut f = form(uid, email);
    edit(&mut f);
    f
}

/// The failures of one case, each naming the operation.
struct Case {
    fails: Vec<String>,
}

impl Case {
    fn fail(&mut self, op: String, what: String) {
        self.fails.push(format!("{op}: {what}"));
    }

    /// The service refused: a field error, a refusal, a bad link or a limit.
    /// Anything else (Ok, a directory or store error) is a failure.
    fn refused<T: Debug>(&mut self, op: String, r: Result<T, OnboardingError>) {
        match r {
            Ok(v) => self.fail(op, format!("Ok({v:?}), expected a refusal")),
            Err(
                OnboardingError::Invalid(_)
                | OnboardingError::Refused(_)
                | OnboardingError::BadLink
                | OnboardingError::RateLimited { .. },
            ) => {}
            Err(e @ OnboardingError::Directory(_)) => {
                self.fail(op, format!("directory error (the value reached LDAP): {e}"))
            }
            Err(e) => self.fail(op, format!("unexpected error: {e:?}")),
        }
    }

    /// A token: no such link (or a field error), never anything else.
    fn bad_link<T: Debug>(&mut self, op: String, r: Result<T, OnboardingError>) {
        match r {
            Err(OnboardingError::BadLink | OnboardingError::Invalid(_)) => {}
            Ok(v) => self.fail(op, format!("Ok({v:?}), expected BadLink")),
            Err(e) => self.fail(op, format!("expected BadLink, got {e:?}")),
        }
    }

    /// A look-up that must find nothing.
    fn none<T: Debug, E: std::fmt::Display>(&mut self, op: String, r: Result<Option<T>, E>) {
        match r {
            Ok(None) => {}
            Ok(Some(v)) => self.fail(op, format!("matched {v:?}")),
            Err(e) => self.fail(op, format!("directory error (the value reached LDAP): {e}")),
        }
    }

    fn auth_refused(&mut self, op: String, r: Result<people::Person, AuthError>) {
        match r {
            Err(AuthError::Refused) => {}
            Ok(p) => self.fail(op, format!("logged in as {}", p.uid)),
            Err(e) => self.fail(op, format!("directory error (the value reached LDAP): {e}")),
        }
    }
}

/// Throws `h` at every operation, in every identifying argument. Calls that
/// would legitimately succeed with this exact value (it names an existing
/// person or collective, or is a valid new name) are left out.
async fn attack(f: &Fixture, auth: &Authenticator, h: &str) -> Vec<String> {
    let mut c = Case { fails: Vec::new() };
    let svc = &f.svc;
    let tree = &f.inst.tree;
    let now = T0 + 10_000 + i64::from(next());
    let by = "admin:hostile";
    let t = h.trim();
    let lower = t.to_lowercase();
    let is_uid = UIDS.contains(&t);
    let is_collective = COLLECTIVES.contains(&t);
    let is_group = GROUPS.contains(&t);
    let is_login = UIDS.contains(&lower.as_str()) || MAILS.contains(&lower.as_str());
    let valid_uid = t.parse::<Uid>().is_ok();
    let valid_slug = t.parse::<CollectiveSlug>().is_ok();
    let valid_name = t.parse::<Name>().is_ok();
    let valid_email = lower.parse::<Email>().is_ok();

    // ---- directory look-ups, straight ----------------------------------
    let mut root = f.inst.root().await;
    if !UIDS.contains(&h) {
        c.none(
            format!("people::person({h:?})"),
            people::person(&mut root, tree, h).await,
        );
    }
    let mail_like = MAILS.iter().any(|m| m.eq_ignore_ascii_case(h));
    let uid_like = UIDS.iter().any(|u| u.eq_ignore_ascii_case(h));
    if !mail_like {
        c.none(
            format!("people::person_by_mail({h:?})"),
            people::person_by_mail(&mut root, tree, h).await,
        );
    }
    if !mail_like && !uid_like {
        c.none(
            format!("people::taken({h:?}, {h:?})"),
            people::taken(&mut root, tree, h, h).await,
        );
    }

    // ---- authentication ------------------------------------------------
    if !UIDS.contains(&h) {
        c.auth_refused(
            format!("authenticate({h:?}, <right password>)"),
            auth.authenticate(h, PW).await,
        );
    }
    if h != PW {
        c.auth_refused(
            format!("authenticate({BIND_TARGET:?}, {h:?})"),
            auth.authenticate(BIND_TARGET, h).await,
        );
        // Clears the failure count (ppolicy locks after 10), and shows the
        // account still works.
        if let Err(e) = auth.authenticate(BIND_TARGET, PW).await {
            c.fail(
                format!("after {h:?}: authenticate({BIND_TARGET:?}, <right>)"),
                e.to_string(),
            );
        }
    }

    // ---- people --------------------------------------------------------
    if !is_uid {
        c.refused(format!("person({h:?})"), svc.person(h).await);
        c.refused(
            format!("suspend({h:?})"),
            svc.suspend(h, by, "x", now).await,
        );
        c.refused(
            format!("reactivate({h:?})"),
            svc.reactivate(h, by, now).await,
        );
        c.refused(
            format!("set_admin({h:?}, quimper, true)"),
            svc.set_admin(h, "quimper", true, by, now).await,
        );
        c.refused(
            format!("set_admin({h:?}, quimper, false)"),
            svc.set_admin(h, "quimper", false, by, now).await,
        );
        c.refused(
            format!("group_member({h:?}, quimper, editors, true)"),
            svc.group_member(h, "quimper", "editors", true, by, now)
                .await,
        );
        c.refused(
            format!("group_member({h:?}, quimper, editors, false)"),
            svc.group_member(h, "quimper", "editors", false, by, now)
                .await,
        );
        c.refused(
            format!("remove_from_collective({h:?}, quimper)"),
            svc.remove_from_collective(h, "quimper", by, now).await,
        );
        c.refused(
            format!("ask_to_join({h:?}, brest)"),
            svc.ask_to_join(h, "brest", "hello", now).await,
        );
    }
    if !is_login {
        let before = store_counts(f).mails;
        match svc.forgot_password(h, &ip(), now).await {
            Ok(())
            | Err(OnboardingError::Invalid(_))
            | Err(OnboardingError::RateLimited { .. }) => {}
            Err(e) => c.fail(format!("forgot_password({h:?})"), format!("{e:?}")),
        }
        let after = store_counts(f).mails;
        if after != before {
            c.fail(
                format!("forgot_password({h:?})"),
                format!("mailed someone ({before} -> {after} mails)"),
            );
        }
    }

    // ---- collectives, groups, services ---------------------------------
    if !is_collective {
        c.refused(format!("people(Some({h:?}))"), svc.people(Some(h)).await);
        c.refused(format!("collective({h:?})"), svc.collective(h).await);
        c.refused(
            format!("set_admin(ana, {h:?}, true)"),
            svc.set_admin("ana", h, true, by, now).await,
        );
        c.refused(
            format!("set_admin(ana, {h:?}, false)"),
            svc.set_admin("ana", h, false, by, now).await,
        );
        c.refused(
            format!("group_member(bob, {h:?}, editors, false)"),
            svc.group_member("bob", h, "editors", false, by, now).await,
        );
        c.refused(
            format!("remove_from_collective(ana, {h:?})"),
            svc.remove_from_collective("ana", h, by, now).await,
        );
        c.refused(
            format!("ask_to_join(bob, {h:?})"),
            svc.ask_to_join("bob", h, "hello", now).await,
        );
        c.refused(
            format!("create_group({h:?}, editors2)"),
            svc.create_group(h, "editors2", by, now).await,
        );
        c.refused(
            format!("grant_service({h:?}, wiki, editors, true)"),
            svc.grant_service(h, "wiki", "editors", true, by, now).await,
        );
        c.refused(
            format!("grant_service({h:?}, wiki, editors, false)"),
            svc.grant_service(h, "wiki", "editors", false, by, now)
                .await,
        );
        c.refused(
            format!("invite(zed@example.net, {h:?})"),
            svc.invite("zed@example.net", h, by, now).await,
        );
    }
    if !valid_slug || is_collective {
        c.refused(
            format!("create_collective({h:?}, {h:?})"),
            svc.create_collective(h, h, by, now).await,
        );
    }
    if !is_group {
        // A valid name that is not a group is refused as NoGroup.
        c.refused(
            format!("group_member(ana, quimper, {h:?}, true)"),
            svc.group_member("ana", "quimper", h, true, by, now).await,
        );
        c.refused(
            format!("group_member(bob, quimper, {h:?}, false)"),
            svc.group_member("bob", "quimper", h, false, by, now).await,
        );
        c.refused(
            format!("grant_service(quimper, wiki, {h:?}, true)"),
            svc.grant_service("quimper", "wiki", h, true, by, now).await,
        );
        c.refused(
            format!("grant_service(quimper, wiki, {h:?}, false)"),
            svc.grant_service("quimper", "wiki", h, false, by, now)
                .await,
        );
    }
    if !valid_name || is_group {
        c.refused(
            format!("create_group(quimper, {h:?})"),
            svc.create_group("quimper", h, by, now).await,
        );
    }
    if !valid_name || SERVICES.contains(&t) {
        c.refused(
            format!("grant_service(quimper, {h:?}, members, true)"),
            svc.grant_service("quimper", h, "members", true, by, now)
                .await,
        );
    }
    if !valid_name {
        c.refused(
            format!("grant_service(quimper, {h:?}, editors, false)"),
            svc.grant_service("quimper", h, "editors", false, by, now)
                .await,
        );
    }

    // ---- invitations and links -----------------------------------------
    if !valid_email {
        c.refused(
            format!("invite({h:?}, brest)"),
            svc.invite(h, "brest", by, now).await,
        );
    }
    c.bad_link(
        format!("invitation_info({h:?})"),
        svc.invitation_info(h, now).await,
    );
    c.bad_link(
        format!("accept_invitation({h:?})"),
        svc.accept_invitation(h, now).await,
    );
    c.bad_link(
        format!("set_password({h:?})"),
        svc.set_password(h, "long enough password", now).await,
    );
    c.bad_link(
        format!("verify_email({h:?})"),
        svc.verify_email(h, now).await,
    );
    match svc.join_requests(Some(h), None) {
        Ok(v) if v.is_empty() => {}
        other => c.fail(format!("join_requests({h:?})"), format!("{other:?}")),
    }
    match svc.invitations(Some(h)) {
        Ok(v) if v.is_empty() => {}
        other => c.fail(format!("invitations({h:?})"), format!("{other:?}")),
    }

    // ---- registration ----------------------------------------------------
    if !valid_uid || is_uid {
        let (_, mail) = fresh();
        let fm = form_with(h, &mail, |_| {});
        c.refused(
            format!("register(uid: {h:?})"),
            svc.register(&fm, &ip(), now).await,
        );
    }
    // (A person's own address is answered as a fresh one, its owner mailed:
    // `registration_answers_the_same_for_a_taken_and_a_fresh_address`.)
    if !valid_email {
        let (uid, _) = fresh();
        let fm = form_with(&uid, h, |_| {});
        c.refused(
            format!("register(email: {h:?})"),
            svc.register(&fm, &ip(), now).await,
        );
    }
    if !is_collective {
        let (uid, mail) = fresh();
        let fm = form_with(&uid, &mail, |fm| fm.collective = h.to_owned());
        c.refused(
            format!("register(collective: {h:?})"),
            svc.register(&fm, &ip(), now).await,
        );
    }
    if !t.is_empty() {
        let (uid, mail) = fresh();
        let fm = form_with(&uid, &mail, |fm| fm.invite = h.to_owned());
        c.bad_link(
            format!("register(invite: {h:?})"),
            svc.register(&fm, &ip(), now).await,
        );
    }
    // Free-text fields, with a taken uid so that nothing is registered:
    // the answer must still be a field error.
    for (field, edit) in [
        (
            "display_name",
            (|fm: &mut Form, h: &str| fm.display_name = h.to_owned()) as fn(&mut Form, &str),
        ),
        ("message", |fm, h| fm.message = h.to_owned()),
        ("language", |fm, h| fm.language = h.to_owned()),
        ("website", |fm, h| fm.website = h.to_owned()),
    ] {
        let (_, mail) = fresh();
        let fm = form_with("ana", &mail, |fm| edit(fm, h));
        c.refused(
            format!("register(uid: ana, {field}: {h:?})"),
            svc.register(&fm, &ip(), now).await,
        );
    }
    c.fails
}

#[test]
fn hostile_strings_match_and_touch_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(async {
        let f = fixture().await;
        f.active_person("ana", "ana@example.org", PW).await;
        f.active_person("bob", "bob@example.org", PW).await;
        f.active_person("cy", "cy@example.org", PW).await;
        f.active_person("dee", "dee@example.org", PW).await;
        let s = &f.svc;
        s.create_collective("brest", "Brest", "t", T0)
            .await
            .unwrap();
        s.set_admin("ana", "quimper", true, "t", T0).await.unwrap();
        s.create_group("quimper", "editors", "t", T0).await.unwrap();
        s.group_member("bob", "quimper", "editors", true, "t", T0)
            .await
            .unwrap();
        s.grant_service("quimper", "wiki", "editors", true, "t", T0)
            .await
            .unwrap();
        s.suspend("cy", "t", "test", T0).await.unwrap();
        f
    });
    let auth = Authenticator::new(f.inst.paths.clone(), f.inst.tree.clone());
    let start = rt.block_on(snapshot(&f));
    assert!(
        start.len() > 20 && start.contains_key(&f.inst.tree.person("ana").to_ascii_lowercase()),
        "{start:#?}"
    );

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let result = runner.run(&hostile(), |h| {
        rt.block_on(async {
            let before = snapshot(&f).await;
            let counts = store_counts(&f);
            let mut fails = attack(&f, &auth, &h).await;
            let after = snapshot(&f).await;
            for (dn, attrs) in &after {
                match before.get(dn) {
                    None => fails.push(format!("entry added: {dn} {attrs:?}")),
                    Some(b) if b != attrs => fails.push(format!(
                        "entry changed: {dn}\n  before {b:?}\n  after  {attrs:?}"
                    )),
                    Some(_) => {}
                }
            }
            for dn in before.keys().filter(|dn| !after.contains_key(*dn)) {
                fails.push(format!("entry removed: {dn}"));
            }
            let now = store_counts(&f);
            // Only the anonymous "no account matched" of forgot_password
            // may be audited.
            let added = now.audit.saturating_sub(counts.audit);
            let audit = f.store.lock().unwrap().recent_audit(added).unwrap();
            for a in audit.iter().filter(|a| {
                !(a.actor == "anonymous"
                    && a.action == "forgot-password"
                    && a.detail == "no active account matched")
            }) {
                fails.push(format!("audited: {a:?}"));
            }
            let counts_now = StoreCounts {
                audit: counts.audit,
                ..now
            };
            if counts_now != counts {
                fails.push(format!("store changed: {counts:?} -> {counts_now:?}"));
            }
            if fails.is_empty() {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "hostile value {h:?}:\n{}",
                    fails.join("\n")
                )))
            }
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The run as a whole changed nothing either.
    assert_eq!(rt.block_on(snapshot(&f)), start);
}

// ---- issue 14: nobody locks people out, exhausts the box, or reaches what
// is not theirs. Each test attacks as a stranger would: over the real front
// door and TLS, with straight LDAP binds to the appliance's slapd, or with
// another appliance's account at a real alliance.

use common::console::{Client, ConsoleBox};

const VICTIM_PW: &str = "the victim's own passphrase";

/// `POST /api/v1/session` as JSON; the status.
async fn api_sign_in(c: &mut Client, uid: &str, password: &str) -> u16 {
    c.post_json(
        "/api/v1/session",
        serde_json::json!({"uid": uid, "password": password}),
        None,
    )
    .await
    .status
}

/// A stranger hammers a member's account with wrong passwords: in parallel
/// through the console (forms and API, from ten addresses), and with straight
/// binds to slapd as Nextcloud's login form would make them. Only as many
/// attempts as the per-account limit allows reach slapd; slapd locks nothing;
/// the member still signs in at once from where they signed in before, and
/// from a new address as soon as they finished a mailed reset link there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_strangers_cannot_keep_a_member_out() {
    let b = ConsoleBox::start().await;
    b.person("vic", "vic@example.org", VICTIM_PW);
    let mut home = b.client();
    assert_eq!(api_sign_in(&mut home, "vic", VICTIM_PW).await, 200);

    // 60 wrong passwords at once, half as forms and half as JSON, from
    // 127.0.0.3 to 127.0.0.12.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let mut c = b.client_from(&format!("127.0.0.{}", 3 + i % 10));
        tasks.spawn(async move {
            let pw = format!("guess number {i}");
            if i % 2 == 0 {
                api_sign_in(&mut c, "vic", &pw).await
            } else {
                let csrf = c.get("/login").await.csrf();
                c.post_form(
                    "/login",
                    &[("csrf", &csrf), ("uid", "vic"), ("password", &pw)],
                )
                .await
                .status
            }
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    let tried = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (tried, limited),
        (5, 55),
        "60 parallel attempts must cost 60 tries: {statuses:?}"
    );
    let failures: Vec<String> = b
        .audited("login-failed")
        .into_iter()
        .filter(|a| a.contains(" vic from "))
        .collect();
    assert_eq!(failures.len(), 5, "{failures:?}");

    // Nextcloud binds to slapd as the person: 30 wrong binds in parallel,
    // three times what the old policy locked the account after.
    let url = b.app.ldap_url();
    let dn = "uid=vic,ou=people,dc=quimper,dc=example,dc=org";
    let bind = |pw: String| {
        let url = url.clone();
        async move {
            let (conn, mut l) = ldap3::LdapConnAsync::new(&url).await.unwrap();
            ldap3::drive!(conn);
            l.simple_bind(dn, &pw).await.unwrap().rc
        }
    };
    let mut binds = tokio::task::JoinSet::new();
    for i in 0..30 {
        binds.spawn(bind(format!("ldap guess {i}")));
    }
    while let Some(rc) = binds.join_next().await {
        assert_eq!(rc.unwrap(), 49);
    }
    assert_eq!(bind(VICTIM_PW.into()).await, 0, "slapd locked the account");

    // From where she signed in before: at once, through the attack.
    let mut home = b.client();
    assert_eq!(api_sign_in(&mut home, "vic", VICTIM_PW).await, 200);
    // From a new address the account is held for now...
    let mut away = b.client_from("127.0.0.20");
    assert_eq!(api_sign_in(&mut away, "vic", VICTIM_PW).await, 429);
    // ...until she follows a mailed reset link there.
    let forgot = away
        .post_json(
            "/api/v1/password/forgot",
            serde_json::json!({"login": "vic"}),
            None,
        )
        .await;
    assert_eq!(forgot.status, 200, "{}", forgot.body);
    let mail = common::console::off_runtime(|| {
        b.sink
            .wait_for("vic@example.org", "asked to reset the password")
    });
    let token = common::token_in(&mail);
    let set = away
        .post_json(
            "/api/v1/password",
            serde_json::json!({"token": token, "password": "a new passphrase for vic"}),
            None,
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        api_sign_in(&mut away, "vic", "a new passphrase for vic").await,
        200
    );
}

/// A user name that cannot exist costs nothing: a megabyte is refused at
/// the body limit, and one under it is answered without counting against
/// the address or writing the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_user_names_are_refused_before_limits_and_the_audit_log() {
    let b = ConsoleBox::start().await;
    b.person("ana", "ana@example.org", VICTIM_PW);
    let audit_before = b.audited("login-failed").len();
    let huge = "a".repeat(1024 * 1024);
    let mut c = b.client_from("127.0.0.5");
    let csrf = c.get("/login").await.csrf();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf.as_str()), ("uid", &huge), ("password", "x")])
        .finish();
    let json = serde_json::json!({"uid": huge, "password": "x"}).to_string();
    for (path, kind, body) in [
        ("/login", "application/x-www-form-urlencoded", form),
        ("/api/v1/session", "application/json", json),
    ] {
        refused_at_the_body_limit(&mut c, path, kind, body.into_bytes()).await;
    }
    // Under the limit, but no user name: refused, never limited.
    let junk = "Ü*)(uid=*".repeat(300);
    for _ in 0..30 {
        assert_eq!(api_sign_in(&mut c, &junk, "x").await, 401);
    }
    assert_eq!(b.audited("login-failed").len(), audit_before);
    // The address was not charged: a real failure still counts, and the
    // right password still works from it.
    assert_eq!(api_sign_in(&mut c, "ana", "wrong").await, 401);
    assert_eq!(b.audited("login-failed").len(), audit_before + 1);
    assert_eq!(api_sign_in(&mut c, "ana", VICTIM_PW).await, 200);
    // Every other form has its limit too.
    let big: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf.as_str()), ("message", &"x".repeat(64 * 1024))])
        .finish();
    refused_at_the_body_limit(
        &mut c,
        "/register",
        "application/x-www-form-urlencoded",
        big.into_bytes(),
    )
    .await;
}

/// A body over the limit is refused before any handler: 413 from the
/// console; or, when the front door was still streaming the upload as the
/// console closed, a 502 or the connection closed under the client's write.
async fn refused_at_the_body_limit(c: &mut Client, path: &str, kind: &str, body: Vec<u8>) {
    match c.try_request("POST", path, &[], Some((kind, body))).await {
        Ok(a) => assert!(
            matches!(a.status, 413 | 502),
            "{path} {}: {}",
            a.status,
            a.body
        ),
        Err(e) => assert!(e.contains("writing a body"), "{path}: {e}"),
    }
}

/// The audit log is pruned as `[log]` says: entries past `audit_keep_days`
/// and the oldest beyond `audit_max_entries`, by the daemon at start and
/// every minute.
#[test]
fn the_audit_log_is_pruned_by_age_and_by_size() {
    let app = common::Appliance::new();
    let text = std::fs::read_to_string(&app.config).unwrap();
    assert!(!text.contains("[log]"), "{text}");
    std::fs::write(
        &app.config,
        format!("{text}\n[log]\naudit_keep_days = 30\naudit_max_entries = 1000\n"),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    {
        let state = app.dir.path().join("state");
        let store = commonscloud::store::Store::open(&state).unwrap();
        store.audit(now - 40 * 86_400, "t", "too-old", "").unwrap();
        for i in 0..1500 {
            store
                .audit(now - 86_400, "t", "planted", &i.to_string())
                .unwrap();
        }
    }
    let daemon = app.serve_with(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let db = app.dir.path().join("state/state.db");
    let count = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count("SELECT count(*) FROM audit WHERE action = 'too-old'") > 0 {
        assert!(
            std::time::Instant::now() < until,
            "the audit log was not pruned: {}",
            daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Both rules ran in the one sweep: at most 1000 entries were left (the
    // daemon may have audited its own start since).
    let started = count("SELECT count(*) FROM audit WHERE actor <> 't'");
    let total = count("SELECT count(*) FROM audit");
    assert!(total <= 1000 + started, "{total} entries");
    // The oldest planted went, the newest stayed.
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'planted' AND detail = '0'"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'planted' AND detail = '1499'"),
        1
    );
}

/// A reset link ends every session of the person: whoever had their old
/// password (and a browser signed in with it) is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_another_browsers_session() {
    let b = ConsoleBox::start().await;
    b.person("ana", "ana@example.org", VICTIM_PW);
    let mut thief = b.client_from("127.0.0.7");
    assert_eq!(thief.sign_in("ana", VICTIM_PW).await.status, 303);
    assert_eq!(thief.get("/api/v1/session").await.status, 200);
    let mut ana = b.client();
    let csrf = ana.get("/forgot").await.csrf();
    let sent = ana
        .post_form("/forgot", &[("csrf", &csrf), ("login", "ana")])
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let mail = common::console::off_runtime(|| {
        b.sink
            .wait_for("ana@example.org", "asked to reset the password")
    });
    let token = common::token_in(&mail);
    let page = ana.get(&format!("/set-password?token={token}")).await;
    let done = ana
        .post_form(
            "/set-password",
            &[
                ("csrf", &page.csrf()),
                ("token", &token),
                ("password", "a brand new passphrase"),
                ("confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(thief.get("/api/v1/session").await.status, 401);
    assert!(thief.get("/").await.body.contains("name=\"password\""));
}

/// Registering with someone's address tells the stranger nothing and
/// blocks nobody: the answer is the same as for a fresh address, and the
/// owner is mailed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_the_same_for_a_taken_and_a_fresh_address() {
    let b = ConsoleBox::start().await;
    b.person("ana", "ana@example.org", VICTIM_PW);
    let strip = |body: &str| {
        // The page's own form token differs from browser to browser.
        let mut out = body.to_owned();
        while let Some(at) = out.find(r#"name="csrf" value=""#) {
            let start = at + r#"name="csrf" value=""#.len();
            let end = start + out[start..].find('"').unwrap();
            out.replace_range(at..end, "CSRF");
        }
        out
    };
    let register = |uid: &'static str, mail: &'static str| {
        let mut c = b.client_from("127.0.0.9");
        async move {
            let csrf = c.get("/register").await.csrf();
            c.post_form(
                "/register",
                &[
                    ("csrf", &csrf),
                    ("uid", uid),
                    ("display_name", "Someone"),
                    ("email", mail),
                    ("collective", "quimper"),
                    ("language", "en"),
                ],
            )
            .await
        }
    };
    let fresh = register("newbie", "newbie@example.org").await;
    let taken = register("impostor", "ana@example.org").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(taken.status, fresh.status);
    assert_eq!(strip(&taken.body), strip(&fresh.body));
    // The JSON API answers alike too.
    let mut c = b.client_from("127.0.0.9");
    let form = |uid: &str, mail: &str| {
        serde_json::json!({"uid": uid, "display_name": "Someone", "email": mail,
            "collective": "quimper", "language": "en"})
    };
    let a = c
        .post_json(
            "/api/v1/registrations",
            form("newbie2", "n2@example.org"),
            None,
        )
        .await;
    let t = c
        .post_json(
            "/api/v1/registrations",
            form("impostor2", "ANA@example.org"),
            None,
        )
        .await;
    assert_eq!((a.status, &a.body), (t.status, &t.body));
    assert_eq!(a.status, 202, "{}", a.body);
    // The fresh address got its link; the owner got a note, twice.
    common::console::off_runtime(|| {
        b.sink.wait_for("newbie@example.org", "/verify?token=");
        let note = b.sink.wait_for("ana@example.org", "already has one");
        assert!(note.contains("\"ana\""), "{note}");
        assert!(!note.contains("/verify?token="), "{note}");
    });
    // No request was made with her address: nothing waits in her name.
    assert!(
        b.audited("register")
            .iter()
            .all(|a| !a.starts_with("impostor")),
        "no request was made for the impostor"
    );
}

/// An alliance appliance account may place the people homed at it only in
/// its own collective and at itself: what would put someone in another
/// appliance's collective (whose sync would copy them in) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_appliance_cannot_place_people_in_another_collective() {
    use commonscloud::directory::alliance as remote;
    use commonscloud::federation::rules::AttrChange;
    let alliance = common::alliance::Alliance::start();
    const BREST: &str = "box.brest.example.org";
    let suffix = common::alliance::SUFFIX;
    let (conn, mut brest) = ldap3::LdapConnAsync::new(&alliance.url).await.unwrap();
    ldap3::drive!(conn);
    brest
        .simple_bind(&alliance.account(BREST), &alliance.password(BREST))
        .await
        .unwrap()
        .success()
        .unwrap();
    let collective = |slug: &str| format!("ou={slug},ou=collectives,{suffix}");
    let person = |uid: &str, primary: &str, home: &str| {
        let mut a = commonscloud::federation::rules::Attrs::new();
        for (k, v) in [
            ("objectclass", vec!["inetOrgPerson", "commonsPerson"]),
            ("uid", vec![uid]),
            ("cn", vec![uid]),
            ("sn", vec![uid]),
            ("mail", vec![&*format!("{uid}@brest.example.org")]),
            ("commonsprimarycollective", vec![primary]),
            ("commonsaccountstate", vec!["active"]),
            ("commonshomenode", vec![home]),
        ] {
            a.insert(k.into(), v.into_iter().map(str::to_owned).collect());
        }
        a
    };
    let dn = |uid: &str| common::alliance::Alliance::person_dn(uid);
    // Into another collective, or homed at another node: refused.
    let rc = remote::add(
        &mut brest,
        &dn("mal"),
        &person("mal", &collective("quimper"), BREST),
    )
    .await
    .unwrap()
    .rc;
    assert_eq!(rc, 50, "an add into quimper");
    let rc = remote::add(
        &mut brest,
        &dn("mal"),
        &person("mal", &collective("brest"), common::alliance::NODE),
    )
    .await
    .unwrap()
    .rc;
    assert_eq!(rc, 50, "an add homed at quimper's box");
    // Its own person, in its own collective: fine, and so are their name,
    // mail and (replicated, already hashed) password.
    let rc = remote::add(
        &mut brest,
        &dn("bo"),
        &person("bo", &collective("brest"), BREST),
    )
    .await
    .unwrap()
    .rc;
    assert_eq!(rc, 0);
    let set = |k: &str, v: &str| AttrChange::Replace(k.into(), [v.to_owned()].into());
    for ok in [
        set("mail", "bo2@brest.example.org"),
        set("displayName", "Bo"),
        set("userPassword", "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQNTIxMg=="),
    ] {
        let res = remote::modify(&mut brest, &dn("bo"), std::slice::from_ref(&ok), None)
            .await
            .unwrap();
        assert_eq!(res.rc, 0, "{ok:?}: {}", res.text);
    }
    // Moving them into quimper, or handing them to quimper's box: refused.
    for bad in [
        set("commonsPrimaryCollective", &collective("quimper")),
        set("commonsHomeNode", common::alliance::NODE),
        AttrChange::Delete("commonsPrimaryCollective".into()),
    ] {
        let res = remote::modify(&mut brest, &dn("bo"), std::slice::from_ref(&bad), None)
            .await
            .unwrap();
        assert_eq!(res.rc, 50, "{bad:?}");
    }
    assert_eq!(
        alliance.values(&dn("bo"), "commonsPrimaryCollective").await,
        [collective("brest")]
    );
    // Nor may it write quimper's groups.
    let res = remote::modify_value(
        &mut brest,
        &format!("cn=members,ou=groups,{}", collective("quimper")),
        "member",
        &dn("bo"),
        true,
    )
    .await
    .unwrap();
    assert_eq!(res.rc, 50);
}

/// Someone another appliance put in this box's directory (here by an
/// alliance whose rules were not yet fixed) is not let in: not to the
/// console, not to the forum, not by Nextcloud's filters, all against the
/// real slapd the federation task copied them into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_person_copied_in_cannot_sign_in_here() {
    use commonscloud::directory::auth::{AuthError, Authenticator};
    let alliance = common::alliance::Alliance::start();
    let mut fed = common::alliance::Federated::new(&alliance).await;
    fed.active_person("ana", "ana@example.org", VICTIM_PW, common::flow::T0)
        .await;
    fed.join().await;
    fed.start();
    // Brest's person, moved into quimper at the alliance by its root.
    let mal = alliance
        .person("mal", "brest", "box.brest.example.org", VICTIM_PW)
        .await;
    let mut root = alliance.root().await;
    let quimper = format!("ou=quimper,ou=collectives,{}", common::alliance::SUFFIX);
    root.modify(
        &mal,
        vec![ldap3::Mod::Replace(
            "commonsPrimaryCollective",
            [quimper.as_str()].into(),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let here = common::alliance::Federated::local_dn("mal");
    fed.wait("mal copied in by the sync", || fed.exists(&here))
        .await;

    let inst = &fed.fx.inst;
    let auth = Authenticator::new(inst.paths.clone(), inst.tree.clone());
    assert!(matches!(
        auth.authenticate("mal", VICTIM_PW).await,
        Err(AuthError::Refused)
    ));
    assert!(auth.authenticate("ana", VICTIM_PW).await.is_ok());
    // The forum's sign-in.
    let secrets = &inst.config.paths.secrets_dir;
    let secret = "0123456789abcdef-connect";
    std::fs::write(secrets.join("discourse-connect-secret"), secret).unwrap();
    for (uid, nonce, ok) in [("mal", "n-mal", false), ("ana", "n-ana", true)] {
        let (sso, sig) = commonscloud::sso::discourse::sign_request(
            secret.as_bytes(),
            nonce,
            "https://forum.quimper.example.org/session/sso_login",
        );
        let r = commonscloud::sso::service::login(
            &fed.fx.store,
            &inst.paths,
            &inst.tree,
            secrets,
            "forum.quimper.example.org",
            &sso,
            &sig,
            uid,
            VICTIM_PW,
            common::flow::T0 + 100,
        )
        .await;
        assert_eq!(r.is_ok(), ok, "{uid}: {r:?}");
    }
    // Nextcloud's filters, searched as Nextcloud's account.
    let slugs = ["quimper".parse().unwrap()];
    let nc = inst
        .bind(
            &inst.tree.service_account("nextcloud"),
            inst.secret("nextcloud").trim(),
        )
        .await;
    let found = |filter: String| {
        let mut nc = nc.clone();
        let base = inst.tree.people();
        async move {
            let (rs, _) = nc
                .search(&base, ldap3::Scope::OneLevel, &filter, vec!["uid"])
                .await
                .unwrap()
                .success()
                .unwrap();
            let mut uids: Vec<String> = rs
                .into_iter()
                .map(|e| ldap3::SearchEntry::construct(e).attrs["uid"][0].clone())
                .collect();
            uids.sort();
            uids
        }
    };
    let users = commonscloud::apps::nextcloud::user_filter(&inst.tree, &slugs);
    assert_eq!(found(users).await, ["ana"]);
    let login = commonscloud::apps::nextcloud::login_filter(&inst.tree, &slugs);
    assert!(found(login.replace("%uid", "mal")).await.is_empty());
    assert_eq!(found(login.replace("%uid", "ana")).await, ["ana"]);
    // Without the membership rule the old filter would have let them in.
    assert_eq!(
        found("(&(objectClass=inetOrgPerson)(commonsAccountState=active))".into()).await,
        ["ana", "mal"]
    );
}

/// The directory itself holds the console's password rule: a person
/// writing their own password over LDAP, or with Password Modify, gets a
/// short one refused by slapd, and cannot slip one past it pre-hashed. An
/// upgraded directory gets the rule from the managed settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slapd_refuses_a_short_password_from_the_person() {
    use commonscloud::directory::{ldap as dl, tree};
    use ldap3::exop::PasswordModify;
    let inst = common::slapd::Instance::start().await;
    let ana = inst.person("ana", "ana@example.org", VICTIM_PW).await;
    let policy = inst.tree.default_policy();
    // As an older release left it: quality unchecked, lockout after 10.
    let mut root = inst.root().await;
    root.modify(
        &policy,
        vec![
            ldap3::Mod::Replace("pwdCheckQuality", ["0"].into()),
            ldap3::Mod::Replace("pwdMaxFailure", ["10"].into()),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let mut me = inst.bind(&ana, VICTIM_PW).await;
    let short = "9 chars!!";
    assert_eq!(short.len(), tree::MIN_PASSWORD - 1);
    let rc = me
        .modify(
            &ana,
            vec![ldap3::Mod::Replace("userPassword", [short].into())],
        )
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 0, "the old policy let it through");
    // The upgrade applies this release's settings.
    dl::apply_config(&inst.paths, &tree::managed_config(inst.tree.suffix()))
        .await
        .unwrap();
    let mut me = inst.bind(&ana, short).await;
    let modify = |v: &'static str| ldap3::Mod::Replace("userPassword", [v].into());
    for bad in ["tiny", "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQNTIxMg=="] {
        let res = me.modify(&ana, vec![modify(bad)]).await.unwrap();
        assert_eq!(res.rc, 19, "{bad}: {res:?}");
    }
    let res = me
        .extended(PasswordModify {
            user_id: None,
            old_pass: None,
            new_pass: Some("tiny"),
        })
        .await
        .unwrap()
        .1;
    assert_eq!(res.rc, 19, "{res:?}");
    assert_eq!(inst.bind_rc(&ana, short).await, 0, "unchanged");
    let res = me
        .extended(PasswordModify {
            user_id: None,
            old_pass: None,
            new_pass: Some("ten chars!"),
        })
        .await
        .unwrap()
        .1;
    assert_eq!(res.rc, 0, "{res:?}");
    assert_eq!(inst.bind_rc(&ana, "ten chars!").await, 0);
    let e = dl::read(&mut root, &policy, &["pwdMaxFailure", "pwdCheckQuality"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.attrs["pwdMaxFailure"], ["0"]);
    assert_eq!(e.attrs["pwdCheckQuality"], ["2"]);
}

/// An alliance an older release made (per-appliance rules that let an
/// appliance write any attribute of its people, no attribute checks on
/// adds, lockout on failed binds) is brought to this release's rules by
/// `alliance.sh upgrade`, and every appliance keeps its rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_alliance_is_upgraded_to_the_new_rules() {
    use commonscloud::directory::alliance as remote;
    use commonscloud::directory::tree::{Tree, alliance_acls};
    let alliance = common::alliance::Alliance::start();
    const BREST: &str = "box.brest.example.org";
    let suffix = common::alliance::SUFFIX;
    let tree = Tree::new(suffix);
    // The rules as the previous release wrote them.
    let mut old = Vec::new();
    for (slug, node) in [("quimper", common::alliance::NODE), ("brest", BREST)] {
        let me = tree.appliance(node);
        let slug: commonscloud::model::CollectiveSlug = slug.parse().unwrap();
        old.push(format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{me}\" write by * break",
            tree.collective(&slug)
        ));
        old.push(format!(
            "to dn.base=\"{}\" attrs=children by dn.exact=\"{me}\" write by * break",
            tree.people()
        ));
        old.push(format!("to dn.one=\"{}\" filter=(commonsHomeNode={node}) by dn.exact=\"{me}\" write by * break", tree.people()));
        old.push(format!(
            "to dn.one=\"{}\" filter=(|(commonsPrimaryCollective={})(memberOf={})) by dn.exact=\"{me}\" read by * break",
            tree.people(),
            tree.collective(&slug),
            tree.group(&slug, "members")
        ));
        old.push(format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{me}\" read by * break",
            tree.services()
        ));
        old.push(format!(
            "to dn.base=\"{suffix}\" by dn.exact=\"{me}\" read by * break"
        ));
    }
    old.extend(alliance_acls(suffix));
    let old: Vec<String> = old
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{{{i}}}{r}"))
        .collect();
    let mut root = alliance.root().await;
    // One value at a time: slapd keeps ordered values in arrival order.
    let mut mods = vec![ldap3::Mod::Replace("olcAddContentAcl", ["FALSE"].into())];
    mods.extend(old.iter().enumerate().map(|(i, r)| {
        if i == 0 {
            ldap3::Mod::Replace("olcAccess", [r.as_str()].into())
        } else {
            ldap3::Mod::Add("olcAccess", [r.as_str()].into())
        }
    }));
    root.modify("olcDatabase={1}mdb,cn=config", mods)
        .await
        .unwrap()
        .success()
        .unwrap();
    root.modify(
        &tree.default_policy(),
        vec![ldap3::Mod::Replace("pwdMaxFailure", ["10"].into())],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let (conn, mut brest) = ldap3::LdapConnAsync::new(&alliance.url).await.unwrap();
    ldap3::drive!(conn);
    brest
        .simple_bind(&alliance.account(BREST), &alliance.password(BREST))
        .await
        .unwrap()
        .success()
        .unwrap();
    let quimper = format!("ou=quimper,ou=collectives,{suffix}");
    let brest_c = format!("ou=brest,ou=collectives,{suffix}");
    let person = |uid: &str, primary: &str| {
        let mut a = commonscloud::federation::rules::Attrs::new();
        for (k, v) in [
            ("objectclass", vec!["inetOrgPerson", "commonsPerson"]),
            ("uid", vec![uid]),
            ("cn", vec![uid]),
            ("sn", vec![uid]),
            ("commonsprimarycollective", vec![primary]),
            ("commonsaccountstate", vec!["active"]),
            ("commonshomenode", vec![BREST]),
        ] {
            a.insert(k.into(), v.into_iter().map(str::to_owned).collect());
        }
        a
    };
    let dn = common::alliance::Alliance::person_dn;
    // The hole, before.
    let res = remote::add(&mut brest, &dn("mal"), &person("mal", &quimper))
        .await
        .unwrap();
    assert_eq!(
        res.rc, 0,
        "the old rules let an appliance add into another collective: {}",
        res.text
    );
    root.delete(&dn("mal")).await.unwrap().success().unwrap();

    let out = std::process::Command::new(common::repo().join("provision/alliance/alliance.sh"))
        .args(["upgrade", "--dir", &alliance.home()])
        .env("COMMONSCLOUD", common::BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 appliance(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rc = remote::add(&mut brest, &dn("mal"), &person("mal", &quimper))
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 50, "closed after the upgrade");
    let rc = remote::add(&mut brest, &dn("bo"), &person("bo", &brest_c))
        .await
        .unwrap()
        .rc;
    assert_eq!(rc, 0, "brest still adds its own people");
    assert_eq!(
        alliance
            .values(&tree.default_policy(), "pwdMaxFailure")
            .await,
        ["0"]
    );
    // Quimper's account still writes its collective.
    let (conn, mut q) = ldap3::LdapConnAsync::new(&alliance.url).await.unwrap();
    ldap3::drive!(conn);
    q.simple_bind(
        &alliance.account(common::alliance::NODE),
        &alliance.password(common::alliance::NODE),
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let res = remote::modify_value(&mut q, &quimper, "description", "upgraded", true)
        .await
        .unwrap();
    assert_eq!(res.rc, 0, "{}", res.text);
}
