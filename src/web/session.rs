//! Cookies, session lifetimes, CSRF comparison and login limits. Pure: the
//! caller passes the time and the random bytes; the store keeps the rows.

use crate::onboarding::ratelimit::Limiter;

/// The session cookie. `__Host-` makes the browser refuse it unless it is
/// `Secure`, has `Path=/` and no `Domain`, so no other host under the
/// domain (an app) can set or read it.
pub const SESSION_COOKIE: &str = "__Host-cc_session";
/// The CSRF cookie of forms shown before signing in (double submit).
pub const FORM_COOKIE: &str = "__Host-cc_form";
/// The chosen language (not a secret).
pub const LANG_COOKIE: &str = "cc_lang";
/// A session ends after this long unused.
pub const IDLE_SECS: i64 = 12 * 3600;
/// And at the latest this long after signing in.
pub const ABSOLUTE_SECS: i64 = 7 * 86_400;

/// A session's new end when it is used at `now`.
pub fn expiry(created_at: i64, now: i64) -> i64 {
    (now + IDLE_SECS).min(created_at + ABSOLUTE_SECS)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// `Set-Cookie` for a secret cookie of this site (session, form token).
pub fn set_secret(name: &str, value: &str, max_age: i64, same_site: &str) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={max_age}")
}

/// `Set-Cookie` that removes a cookie.
pub fn clear(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether a cookie value looks like one of our tokens (64 hex digits);
/// anything else is not looked up.
pub fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where to go after signing in: only a path of this site (not `//host`
/// or `/\host`, which browsers treat as another site).
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    ok.then_some(next)
}

/// Whether a request's `Origin` (when the browser sent one) is this site.
pub fn same_origin(origin: Option<&str>, host: &str) -> bool {
    match origin {
        None => true,
        Some(o) => o
            .strip_prefix("https://")
            .is_some_and(|h| h.eq_ignore_ascii_case(host)),
    }
}

/// Failed sign-ins allowed per account (from addresses it has not signed
/// in from) and per client address (an IPv4 address, an IPv6 /64) in
/// [`LOGIN_WINDOW`].
pub const PER_ACCOUNT: usize = 5;
pub const PER_IP: usize = 20;
pub const LOGIN_WINDOW: i64 = 15 * 60;
/// An address a person signed in from (or finished a password link at)
/// stays known to their account this long after its last use...
pub const KNOWN_FOR_SECS: i64 = 90 * 86_400;
/// ...and each person keeps at most this many.
pub const KNOWN_PER_PERSON: usize = 20;

/// Sign-in attempts, per account and per client address. An attempt is
/// counted before the password is checked, in one step with the check of
/// the limits, so many attempts in parallel cost as many tries; one that
/// succeeds is taken back ([`LoginLimits::forgive`]), so a person who
/// signs in often is never slowed down. The per-account limit leaves the
/// account's known addresses alone: a stranger hammering an account from
/// elsewhere slows only the addresses it has not seen succeed.
pub struct LoginLimits {
    account: Limiter,
    ip: Limiter,
    pruned_at: i64,
}

/// An attempt counted by [`LoginLimits::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    account: Option<String>,
    ip: String,
    at: i64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            account: Limiter::new(PER_ACCOUNT, LOGIN_WINDOW),
            ip: Limiter::new(PER_IP, LOGIN_WINDOW),
            pruned_at: 0,
        }
    }
}

impl LoginLimits {
    /// Counts an attempt on `account` (a valid uid) from `ip`, or says how
    /// many seconds to wait. `known`: the account signed in from this
    /// address before, so only the address's own limit applies.
    pub fn begin(
        &mut self,
        account: &str,
        ip: &str,
        known: bool,
        now: i64,
    ) -> Result<Attempt, i64> {
        if now - self.pruned_at >= 60 {
            self.account.prune(now);
            self.ip.prune(now);
            self.pruned_at = now;
        }
        let ip = crate::onboarding::ratelimit::address_key(ip);
        self.ip.hit(&ip, now)?;
        let account = if known {
            None
        } else {
            if let Err(wait) = self.account.hit(account, now) {
                self.ip.undo(&ip, now);
                return Err(wait);
            }
            Some(account.to_owned())
        };
        Ok(Attempt {
            account,
            ip,
            at: now,
        })
    }

    /// Takes back an attempt that did not fail: the password was right,
    /// or the directory could not say.
    pub fn forgive(&mut self, a: &Attempt) {
        self.ip.undo(&a.ip, a.at);
        if let Some(acc) = &a.account {
            self.account.undo(acc, a.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; __Host-cc_session=abc; __Host-cc_session_x=no; cc_lang=ca";
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(h, LANG_COOKIE), Some("ca"));
        assert_eq!(cookie(h, FORM_COOKIE), None);
        assert_eq!(cookie("garbage", SESSION_COOKIE), None);
    }

    #[test]
    fn secret_cookies_carry_every_attribute() {
        let c = set_secret(SESSION_COOKIE, "v", 60, "Lax");
        for a in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=60"] {
            assert!(c.contains(a), "{c} lacks {a}");
        }
        assert!(!c.contains("Domain"));
        assert!(clear(SESSION_COOKIE).contains("Max-Age=0"));
    }

    #[test]
    fn sessions_slide_but_not_past_the_absolute_end() {
        assert_eq!(expiry(0, 100), 100 + IDLE_SECS);
        assert_eq!(expiry(0, ABSOLUTE_SECS - 10), ABSOLUTE_SECS);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
        assert!(well_formed(&"a1".repeat(32)));
        assert!(!well_formed("../etc"));
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(
            safe_next("/sso/discourse?sso=x"),
            Some("/sso/discourse?sso=x")
        );
        for bad in ["//evil.org", "/\\evil.org", "https://evil.org", "", "/a\nb"] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origins_must_be_this_host_over_https() {
        assert!(same_origin(None, "box.x.org"));
        assert!(same_origin(Some("https://box.x.org"), "box.x.org"));
        assert!(!same_origin(Some("https://evil.org"), "box.x.org"));
        assert!(!same_origin(Some("http://box.x.org"), "box.x.org"));
        assert!(!same_origin(Some("null"), "box.x.org"));
        assert!(same_origin(
            Some("https://box.x.org:8443"),
            "box.x.org:8443"
        ));
        assert!(!same_origin(Some("https://box.x.org:8443"), "box.x.org"));
    }

    #[test]
    fn failures_block_the_account_and_the_address() {
        let mut l = LoginLimits::default();
        for i in 0..PER_ACCOUNT {
            assert!(
                l.begin("ana", &format!("192.0.2.{i}"), false, 1000).is_ok(),
                "try {i}"
            );
        }
        // The account is blocked from any address it has not signed in
        // from, but not from one it has.
        assert!(l.begin("ana", "198.51.100.7", false, 1001).is_err());
        assert!(l.begin("ana", "198.51.100.8", true, 1001).is_ok());
        assert!(l.begin("bea", "198.51.100.7", false, 1001).is_ok());
        assert!(
            l.begin("ana", "192.0.2.1", false, 1000 + LOGIN_WINDOW)
                .is_ok()
        );
        let mut l = LoginLimits::default();
        for i in 0..PER_IP {
            l.begin(&format!("user{i}"), "203.0.113.9", false, 2000)
                .unwrap();
        }
        assert!(l.begin("someone", "203.0.113.9", false, 2001).is_err());
        assert!(l.begin("someone", "203.0.113.9", true, 2001).is_err());
        // A /64 is one address.
        let mut l = LoginLimits::default();
        for i in 0..PER_IP {
            l.begin(&format!("u{i}"), &format!("2001:db8::{i:x}"), false, 3000)
                .unwrap();
        }
        assert!(l.begin("v", "2001:db8::ffff:1", false, 3001).is_err());
        assert!(l.begin("v", "2001:db8:0:1::1", false, 3001).is_ok());
    }

    #[test]
    fn a_refused_attempt_costs_nothing_and_a_forgiven_one_is_given_back() {
        let mut l = LoginLimits::default();
        let mut attempts = Vec::new();
        for i in 0..PER_ACCOUNT {
            attempts.push(l.begin("ana", &format!("192.0.2.{i}"), false, 10).unwrap());
        }
        // Refused by the account's limit: the address is not charged.
        for _ in 0..PER_IP * 2 {
            assert!(l.begin("ana", "198.51.100.1", false, 11).is_err());
        }
        assert!(l.begin("bea", "198.51.100.1", false, 11).is_ok());
        // The right password gives its attempt back.
        l.forgive(&attempts[0]);
        assert!(l.begin("ana", "198.51.100.2", false, 12).is_ok());
        assert!(l.begin("ana", "198.51.100.2", false, 12).is_err());
    }

    proptest::proptest! {
        /// However attempts interleave, no more than the limit are let
        /// through before any of them is decided.
        #[test]
        fn parallel_attempts_never_pass_the_limit(ips in proptest::collection::vec(0u8..4, 1..60)) {
            let mut l = LoginLimits::default();
            let passed = ips
                .iter()
                .filter(|i| l.begin("ana", &format!("192.0.2.{i}"), false, 5).is_ok())
                .count();
            proptest::prop_assert!(passed <= PER_ACCOUNT);
            proptest::prop_assert_eq!(passed, ips.len().min(PER_ACCOUNT));
        }
    }
}
