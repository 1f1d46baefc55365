//! DiscourseConnect, the protocol (pure). Discourse sends a Base64
//! payload (`nonce`, `return_sso_url`) and its HMAC-SHA256; the provider
//! checks the signature in constant time, authenticates the person, and
//! answers with a signed payload of who they are. Standard Base64 (`+`,
//! `/`, `=` padding): Discourse rejects the URL-safe alphabet. Replay and
//! staleness are decided here from the times the service records.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Discourse forgets a nonce after 10 minutes.
pub const NONCE_TTL_SECS: i64 = 600;
/// And remembers used ones for 24 hours; so does the provider.
pub const USED_NONCE_KEEP_SECS: i64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsoError {
    #[error("the signature does not match: the request was not made by this appliance's Discourse")]
    BadSignature,
    #[error("the request is malformed: {0}")]
    Malformed(&'static str),
    #[error("this sign-in request is too old: start again from the forum")]
    Stale,
    #[error("this sign-in request was already used: start again from the forum")]
    Replayed,
    /// The answer would go somewhere other than this appliance's forum: a
    /// request signed with the shared secret but naming another site (a
    /// leaked secret, or a forum set up wrongly) must not carry a person's
    /// identity there.
    #[error(
        "the request asks to answer to {0}, which is not https://{1}/: only this appliance's forum may be answered"
    )]
    ForeignReturn(String, String),
}

/// What Discourse asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub nonce: String,
    pub return_sso_url: String,
}

/// Who the person is, as Discourse gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// entryUUID: stable across renames.
    pub external_id: String,
    pub email: String,
    pub username: String,
    pub name: String,
    pub add_groups: Vec<String>,
    pub remove_groups: Vec<String>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `sig` over the Base64 text `sso` (constant time) and reads it.
/// `return_sso_url` must be an https URL on `forum_host` (see
/// [`check_return`]).
pub fn verify(secret: &[u8], sso: &str, sig: &str, forum_host: &str) -> Result<Request, SsoError> {
    let sig = unhex(sig.trim()).ok_or(SsoError::BadSignature)?;
    let mut m = mac(secret);
    m.update(sso.as_bytes());
    m.verify_slice(&sig).map_err(|_| SsoError::BadSignature)?;
    // Discourse wraps long Base64 lines.
    let text: String = sso.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = STANDARD
        .decode(text)
        .map_err(|_| SsoError::Malformed("the payload is not standard Base64"))?;
    let mut nonce = None;
    let mut ret = None;
    for (k, v) in form_urlencoded::parse(&raw) {
        match k.as_ref() {
            "nonce" => nonce = Some(v.into_owned()),
            "return_sso_url" => ret = Some(v.into_owned()),
            _ => {}
        }
    }
    let nonce = nonce
        .filter(|n| !n.is_empty())
        .ok_or(SsoError::Malformed("no nonce"))?;
    let return_sso_url = ret
        .filter(|u| !u.is_empty())
        .ok_or(SsoError::Malformed("no return_sso_url"))?;
    check_return(&return_sso_url, forum_host)?;
    Ok(Request {
        nonce,
        return_sso_url,
    })
}

/// Whether `url` is on this appliance's forum: `https://`, the forum's
/// host exactly (any case, an optional trailing dot, port 443 or none), no
/// user part. Discourse builds it from its own base URL, which
/// `force_https` makes https; plain http would carry the signed identity
/// in clear, and any other host would receive it.
pub fn check_return(url: &str, forum_host: &str) -> Result<(), SsoError> {
    let refuse = || SsoError::ForeignReturn(url.to_owned(), forum_host.to_owned());
    let rest = url
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
        .ok_or_else(refuse)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // A backslash is a path separator to browsers; `@` ends a user part.
    if forum_host.is_empty()
        || authority.contains(['@', '\\', '%'])
        || rest[end..].starts_with("//")
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(refuse());
    }
    let host = match authority.rsplit_once(':') {
        Some((h, "443")) => h,
        Some(_) => return Err(refuse()),
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let want = forum_host.strip_suffix('.').unwrap_or(forum_host);
    if host.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// Whether a nonce first seen at `first_seen` (and perhaps already
/// answered) may be answered at `now`.
pub fn check_nonce(first_seen: i64, answered: bool, now: i64) -> Result<(), SsoError> {
    if answered {
        return Err(SsoError::Replayed);
    }
    if now - first_seen > NONCE_TTL_SECS {
        return Err(SsoError::Stale);
    }
    Ok(())
}

/// The signed answer: `(payload, sig)`.
pub fn answer(secret: &[u8], nonce: &str, who: &Identity) -> (String, String) {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("nonce", nonce)
        .append_pair("external_id", &who.external_id)
        .append_pair("email", &who.email)
        .append_pair("username", &who.username)
        .append_pair("name", &who.name)
        .append_pair("require_activation", "false")
        .append_pair("suppress_welcome_message", "false");
    if !who.add_groups.is_empty() {
        q.append_pair("add_groups", &who.add_groups.join(","));
    }
    if !who.remove_groups.is_empty() {
        q.append_pair("remove_groups", &who.remove_groups.join(","));
    }
    let payload = STANDARD.encode(q.finish());
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    let sig = hex(&m.finalize().into_bytes());
    (payload, sig)
}

/// Where to send the browser: `return_sso_url?sso=…&sig=…`.
pub fn redirect(return_sso_url: &str, payload: &str, sig: &str) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("sso", payload)
        .append_pair("sig", sig)
        .finish();
    let sep = if return_sso_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{return_sso_url}{sep}{q}")
}

/// Signs a request as Discourse would (for tests and the bench).
pub fn sign_request(secret: &[u8], nonce: &str, return_sso_url: &str) -> (String, String) {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("nonce", nonce)
        .append_pair("return_sso_url", return_sso_url)
        .finish();
    let payload = STANDARD.encode(q);
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    (payload.clone(), hex(&m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a long enough shared secret";

    #[test]
    fn a_signed_request_is_read_and_a_tampered_one_refused() {
        let (sso, sig) = sign_request(SECRET, "n+1/=", "https://forum.q.org/session/sso_login");
        let r = verify(SECRET, &sso, &sig, "forum.q.org").unwrap();
        assert_eq!(r.nonce, "n+1/=");
        assert_eq!(r.return_sso_url, "https://forum.q.org/session/sso_login");
        assert_eq!(
            verify(b"another secret", &sso, &sig, "forum.q.org"),
            Err(SsoError::BadSignature)
        );
        let mut bad = sig.clone();
        bad.replace_range(0..1, if bad.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            verify(SECRET, &sso, &bad, "forum.q.org"),
            Err(SsoError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, &sso, "zz", "forum.q.org"),
            Err(SsoError::BadSignature)
        );
        // URL-safe Base64 is not what Discourse sends; its signature would not
        // match either, as the signature covers the exact text.
        let urlsafe = sso.replace('+', "-").replace('/', "_");
        if urlsafe != sso {
            assert!(verify(SECRET, &urlsafe, &sig, "forum.q.org").is_err());
        }
    }

    #[test]
    fn the_answer_carries_who_and_verifies_with_the_secret() {
        let who = Identity {
            external_id: "6f1c-uuid".into(),
            email: "ana@q.org".into(),
            username: "ana".into(),
            name: "Ana Ros & co".into(),
            add_groups: vec!["quimper".into()],
            remove_groups: vec!["brest".into()],
        };
        let (payload, sig) = answer(SECRET, "abc", &who);
        assert!(!payload.contains('-') && !payload.contains('_'));
        let mut m = mac(SECRET);
        m.update(payload.as_bytes());
        assert_eq!(hex(&m.finalize().into_bytes()), sig);
        let raw = STANDARD.decode(&payload).unwrap();
        let fields: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&raw).into_owned().collect();
        assert_eq!(fields["external_id"], "6f1c-uuid");
        assert_eq!(fields["name"], "Ana Ros & co");
        assert_eq!(fields["add_groups"], "quimper");
        assert_eq!(fields["remove_groups"], "brest");
        assert_eq!(fields["nonce"], "abc");
        let url = redirect("https://forum.q.org/session/sso_login", &payload, &sig);
        assert!(url.starts_with("https://forum.q.org/session/sso_login?sso="));
        assert!(url.contains("%2B") || !payload.contains('+'));
    }

    #[test]
    fn the_answer_goes_to_the_forum_only() {
        let forum = "forum.q.org";
        for ok in [
            "https://forum.q.org/session/sso_login",
            "https://FORUM.q.org/session/sso_login",
            "https://forum.q.org./session/sso_login",
            "https://forum.q.org:443/session/sso_login",
            "https://forum.q.org",
            "https://forum.q.org?x=1",
        ] {
            assert_eq!(check_return(ok, forum), Ok(()), "{ok}");
        }
        for bad in [
            "http://forum.q.org/session/sso_login",
            "https://evil.org/session/sso_login",
            "https://forum.q.org.evil.org/session/sso_login",
            "https://evil.org/forum.q.org/session/sso_login",
            "https://forum.q.org@evil.org/session/sso_login",
            "https://evil.org#@forum.q.org/",
            "https://forum.q.org:8443/session/sso_login",
            "https://forum.q.org\\@evil.org/",
            "https://forum.q.org%2f@evil.org/",
            "https://forum.q.org//evil.org",
            "javascript:alert(1)//forum.q.org",
            "//forum.q.org/session/sso_login",
            "https://sub.forum.q.org/session/sso_login",
            "https://forum.q.org /x",
            "",
        ] {
            assert!(
                matches!(check_return(bad, forum), Err(SsoError::ForeignReturn(..))),
                "{bad}"
            );
        }
        // No forum host configured: nothing is answered.
        assert!(check_return("https://forum.q.org/", "").is_err());
        // Signed with the right secret, for another site: refused all the same.
        let (sso, sig) = sign_request(SECRET, "n", "https://evil.org/session/sso_login");
        assert!(matches!(
            verify(SECRET, &sso, &sig, forum),
            Err(SsoError::ForeignReturn(..))
        ));
    }

    proptest::proptest! {
        /// Whatever the URL, one that passes names the forum's host, over https.
        #[test]
        fn whatever_passes_is_the_forum(url in "[a-zA-Z:/@.%#?\\\\0-9 -]{0,40}") {
            if check_return(&url, "forum.q.org").is_ok() {
                let lower = url.to_ascii_lowercase();
                proptest::prop_assert!(lower.starts_with("https://forum.q.org"));
                let after = &lower["https://forum.q.org".len()..];
                proptest::prop_assert!(
                    after.is_empty()
                        || after.starts_with(['/', '?', '#'])
                        || after.starts_with(":443")
                        || after.starts_with('.')
                );
            }
        }
    }

    #[test]
    fn nonces_are_single_use_and_expire() {
        assert_eq!(check_nonce(100, false, 100 + NONCE_TTL_SECS), Ok(()));
        assert_eq!(
            check_nonce(100, false, 101 + NONCE_TTL_SECS),
            Err(SsoError::Stale)
        );
        assert_eq!(check_nonce(100, true, 101), Err(SsoError::Replayed));
    }
}
