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

/// Failed sign-ins allowed per account and per address in [`LOGIN_WINDOW`].
pub const PER_ACCOUNT: usize = 5;
pub const PER_IP: usize = 20;
pub const LOGIN_WINDOW: i64 = 15 * 60;

/// Failed sign-ins, per account and per client address. Only failures
/// count, so a person who signs in often is never slowed down.
pub struct LoginLimits {
    account: Limiter,
    ip: Limiter,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            account: Limiter::new(PER_ACCOUNT, LOGIN_WINDOW),
            ip: Limiter::new(PER_IP, LOGIN_WINDOW),
        }
    }
}

impl LoginLimits {
    /// Seconds to wait, if either limit is reached.
    pub fn blocked(&self, account: &str, ip: &str, now: i64) -> Option<i64> {
        let a = self.account.blocked(&account.to_lowercase(), now);
        let i = self.ip.blocked(ip, now);
        a.max(i)
    }

    /// Counts a failure.
    pub fn failed(&mut self, account: &str, ip: &str, now: i64) {
        let _ = self.account.hit(&account.to_lowercase(), now);
        let _ = self.ip.hit(ip, now);
        self.account.prune(now);
        self.ip.prune(now);
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
            assert_eq!(l.blocked("Ana", "192.0.2.1", 1000), None, "try {i}");
            l.failed("ana", &format!("192.0.2.{i}"), 1000);
        }
        // The account is blocked from any address, in any case.
        assert!(l.blocked("ANA", "198.51.100.7", 1001).is_some());
        assert_eq!(l.blocked("bea", "198.51.100.7", 1001), None);
        assert_eq!(l.blocked("ana", "192.0.2.1", 1000 + LOGIN_WINDOW), None);
        let mut l = LoginLimits::default();
        for i in 0..PER_IP {
            l.failed(&format!("user{i}"), "203.0.113.9", 2000);
        }
        assert!(l.blocked("someone", "203.0.113.9", 2001).is_some());
    }
}
