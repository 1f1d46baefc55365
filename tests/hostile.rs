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
    if !valid_email || MAILS.contains(&lower.as_str()) {
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
