//! Typed identifiers and values. Each type can only be constructed valid, so a
//! malformed slug or domain never reaches LDAP, Docker or a file name.
//!
//! Pure: no IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A `String` newtype that can only hold values `$check` accepts; serde goes
/// through the check, so a bad value in a file fails at its own line.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::model::Invalid;
            fn try_from(value: String) -> Result<Self, $crate::model::Invalid> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map_err($crate::model::Invalid)?;
                Ok(Self(value))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::Invalid;
            fn from_str(value: &str) -> Result<Self, $crate::model::Invalid> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

string_newtype!(
    /// A collective's short identifier: `^[a-z][a-z0-9-]{1,31}$`, no trailing
    /// or doubled `-`. Used as an RDN value and in Docker object names.
    CollectiveSlug,
    check_slug
);
string_newtype!(
    /// A group's or a service's name inside a collective: the slug's rule, so
    /// it is safe as an RDN value and in app group names.
    Name,
    check_name
);
string_newtype!(
    /// A DNS name (RFC 1123 labels), lowercase, at least two labels.
    Domain,
    check_domain
);
string_newtype!(
    /// A mail address of the form `local@domain`.
    Email,
    check_email
);

string_newtype!(
    /// A person's login: `^[a-z][a-z0-9._-]{1,31}$` and not a reserved name.
    /// Used as an RDN value and as the username in every app.
    Uid,
    check_uid
);

/// Names no person may take: system and mail roles, the appliance's own
/// accounts and groups, and the apps.
pub const RESERVED_UIDS: &[&str] = &[
    "abuse",
    "admin",
    "administrator",
    "admins",
    "alliance",
    "collabora",
    "commonscloud",
    "daemon",
    "discourse",
    "discourse-sso",
    "everyone",
    "ftp",
    "hostmaster",
    "info",
    "ldap",
    "mail",
    "mailer-daemon",
    "members",
    "nextcloud",
    "noc",
    "nobody",
    "noreply",
    "no-reply",
    "postmaster",
    "root",
    "security",
    "support",
    "sysadmin",
    "system",
    "webmaster",
    "www",
];

fn check_uid(s: &str) -> Result<(), String> {
    let first = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let rest = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if !(2..=32).contains(&s.len()) || !first || !rest {
        return Err(format!(
            "`{s}` is not a valid user name: use 2 to 32 characters, lowercase letters, digits, '.', '_' or '-', starting with a letter"
        ));
    }
    if RESERVED_UIDS.contains(&s) {
        return Err(format!("`{s}` is reserved: choose another user name"));
    }
    Ok(())
}

fn check_slug(s: &str) -> Result<(), String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let first_letter = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !(2..=32).contains(&s.len())
        || !ok_chars
        || !first_letter
        || s.ends_with('-')
        || s.contains("--")
    {
        return Err(format!(
            "`{s}` is not a valid slug: use 2 to 32 lowercase letters, digits and single '-', starting with a letter (e.g. \"quimper\")"
        ));
    }
    Ok(())
}

fn check_name(s: &str) -> Result<(), String> {
    check_slug(s).map_err(|_| {
        format!(
            "`{s}` is not a valid name: use 2 to 32 lowercase letters, digits and single '-', starting with a letter (e.g. \"editors\")"
        )
    })
}

fn check_domain(s: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{s}` is not a valid domain: use lowercase DNS labels (a-z, 0-9, '-') separated by dots, e.g. \"quimper.example.org\""
        )
    };
    if s.len() > 253 || !s.contains('.') {
        return Err(bad());
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_email(s: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{s}` is not a valid mail address: expected local@domain, e.g. \"admin@quimper.example.org\""
        )
    };
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok || check_domain(&domain.to_ascii_lowercase()).is_err() {
        return Err(bad());
    }
    Ok(())
}

/// An app the appliance can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppName {
    Nextcloud,
    Collabora,
    Discourse,
}

impl AppName {
    /// Every app, in the order they are brought up.
    pub const ALL: [AppName; 3] = [AppName::Nextcloud, AppName::Collabora, AppName::Discourse];

    pub fn as_str(self) -> &'static str {
        match self {
            AppName::Nextcloud => "nextcloud",
            AppName::Collabora => "collabora",
            AppName::Discourse => "discourse",
        }
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AppName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        AppName::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown app `{s}`: expected one of nextcloud, collabora, discourse"
                ))
            })
    }
}

/// A release's version, as the app itself writes it: 1 to 5 numbers
/// separated by dots (Nextcloud's `31.0.5.1`, PostgreSQL's `17.2`,
/// Collabora's `25.04.5.1.1`), optionally followed by a pre-release tag
/// (`3.5.0.beta5`, `18-rc1`). The text is kept as written; comparison is
/// numeric, missing trailing numbers count as 0 (`31.0` = `31.0.0.0`), and a
/// pre-release sorts before the release with the same numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    // Boxed: versions travel in refusals and plans, kept small.
    text: Box<str>,
    parts: Box<[u64]>,
    /// The tag's letters and its trailing number (`beta5` → `beta`, 5).
    pre: Option<Box<(String, Option<u64>)>>,
}

impl Version {
    /// The most numbers a version may have (Collabora uses five).
    pub const MAX_PARTS: usize = 5;

    /// The numbers, as written.
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    /// The `n`th number (0 when the version has fewer).
    pub fn part(&self, n: usize) -> u64 {
        self.parts.get(n).copied().unwrap_or(0)
    }

    pub fn major(&self) -> u64 {
        self.part(0)
    }

    /// `major.minor`: the key of Nextcloud's `$OC_VersionCanBeUpgradedFrom`.
    pub fn series(&self) -> Series {
        Series {
            major: self.part(0),
            minor: self.part(1),
        }
    }

    /// Whether it carries a pre-release tag.
    pub fn is_pre_release(&self) -> bool {
        self.pre.is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The numbers without trailing zeros: what equality and hashing see.
    fn significant(&self) -> &[u64] {
        let n = self
            .parts
            .iter()
            .rposition(|&p| p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..n]
    }
}

impl TryFrom<String> for Version {
    type Error = Invalid;
    fn try_from(text: String) -> Result<Self, Invalid> {
        let bad = || {
            Invalid(format!(
                "`{text}` is not a version: expected 1 to 5 numbers separated by dots, optionally followed by a pre-release tag, e.g. \"31.0.5.1\", \"17.2\" or \"3.5.0.beta5\""
            ))
        };
        if text.is_empty() || text.len() > 64 {
            return Err(bad());
        }
        let numeric_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (numbers, rest) = text.split_at(numeric_end);
        // A tag follows its separator: "3.5.0.beta5" leaves "3.5.0." and "beta5".
        let (numbers, tag) = match rest {
            "" => (numbers, None),
            _ => {
                let (numbers, tag) = match (numbers.strip_suffix('.'), rest.strip_prefix('-')) {
                    (Some(n), _) => (n, rest),
                    (None, Some(t)) => (numbers, t),
                    (None, None) => (numbers, rest),
                };
                (numbers, Some(tag))
            }
        };
        let mut parts = Vec::new();
        for p in numbers.split('.') {
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            parts.push(p.parse::<u64>().map_err(|_| bad())?);
        }
        if parts.len() > Self::MAX_PARTS {
            return Err(bad());
        }
        let pre = match tag {
            None => None,
            Some(t) => {
                let letters_end = t.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(t.len());
                let (letters, digits) = t.split_at(letters_end);
                if letters.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                Some(Box::new((letters.to_owned(), digits.parse::<u64>().ok())))
            }
        };
        Ok(Self {
            text: text.into_boxed_str(),
            parts: parts.into_boxed_slice(),
            pre,
        })
    }
}

impl std::str::FromStr for Version {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::try_from(s.to_owned())
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text.into_string()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
        self.pre.hash(state);
    }
}

/// `major.minor`, e.g. `31.0`: a release series, the key of Nextcloud's
/// `$OC_VersionCanBeUpgradedFrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Series {
    pub major: u64,
    pub minor: u64,
}

impl TryFrom<String> for Series {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        let bad = || {
            Invalid(format!(
                "`{s}` is not a release series: expected major.minor, e.g. \"31.0\""
            ))
        };
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let number = |p: &str| {
            (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Series {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl std::str::FromStr for Series {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::try_from(s.to_owned())
    }
}

impl From<Series> for String {
    fn from(s: Series) -> String {
        s.to_string()
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A processor architecture, named as Rust's targets and the hardware
/// profiles name it (`armv7` is the 32-bit Raspberry Pi OS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }
}

impl TryFrom<String> for Arch {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        s.parse()
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.as_str().to_owned()
    }
}

impl std::str::FromStr for Arch {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown architecture `{s}`: expected one of x86_64, aarch64, armv7"
                ))
            })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Derives a slug from a collective's human name ("Les Communs de Quimper" →
/// "les-communs-de-quimper"), for `init` to propose. `None` when nothing usable
/// remains.
pub fn slug_from_name(name: &str) -> Option<CollectiveSlug> {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'à' | 'â' | 'ä' | 'á' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            c => c,
        };
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_end_matches('-').chars().take(32).collect();
    trimmed.trim_end_matches('-').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert!("quimper".parse::<CollectiveSlug>().is_ok());
        assert!("a1-b2".parse::<CollectiveSlug>().is_ok());
        for bad in ["Q", "q", "1abc", "ab-", "a--b", "a_b", "ab c", ""] {
            let err = bad.parse::<CollectiveSlug>().unwrap_err();
            assert!(err.0.contains("not a valid slug"), "{bad}: {err}");
        }
        assert!("a".repeat(33).parse::<CollectiveSlug>().is_err());
    }

    #[test]
    fn domains_and_mail() {
        assert!("quimper.example.org".parse::<Domain>().is_ok());
        for bad in ["localhost", "Quimper.org", "a..b", "-a.b", "a b.org"] {
            assert!(bad.parse::<Domain>().is_err(), "{bad}");
        }
        assert!("admin@quimper.example.org".parse::<Email>().is_ok());
        for bad in ["admin", "@x.org", "a@b", "a..b@x.org", "a b@x.org"] {
            assert!(bad.parse::<Email>().is_err(), "{bad}");
        }
    }

    #[test]
    fn uids() {
        for ok in ["ana", "a1", "jean.dupont", "m_x-2", &"a".repeat(32)] {
            assert!(ok.parse::<Uid>().is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "Ana",
            "1ana",
            "_ana",
            "ana!",
            "ana b",
            "ana@x",
            &"a".repeat(33),
            "é",
        ] {
            let e = bad.parse::<Uid>().unwrap_err();
            assert!(e.0.contains("not a valid user name"), "{bad}: {e}");
        }
        for reserved in ["admin", "root", "postmaster", "nextcloud"] {
            assert!(reserved.parse::<Uid>().unwrap_err().0.contains("reserved"));
        }
    }

    proptest! {
        #[test]
        fn a_valid_uid_never_carries_ldap_metacharacters(s in "\\PC{0,40}") {
            if let Ok(uid) = s.parse::<Uid>() {
                for c in ['*', '(', ')', '\\', '\0', ',', '=', '+', '<', '>', ';', '"', '#', ' '] {
                    prop_assert!(!uid.as_str().contains(c));
                }
            }
        }
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_parse_and_compare() {
        for ok in [
            "31",
            "31.0.5.1",
            "17.2",
            "25.04.5.1.1",
            "3.5.0.beta5",
            "18-rc1",
            "3.5.0beta",
        ] {
            assert_eq!(v(ok).to_string(), ok);
        }
        for bad in [
            "",
            "v31",
            "31.",
            ".31",
            "31..0",
            "1.2.3.4.5.6",
            "31.0-",
            "3.5.0.Beta",
            "3.5.0.beta-1",
            "1234567890",
            "31 .0",
            "31.0.5+build",
        ] {
            let e = bad.parse::<Version>().unwrap_err();
            assert!(e.0.contains("is not a version"), "{bad}: {e}");
        }
        assert!(v("31.0.5.1") > v("31.0.5"));
        assert_eq!(v("31.0"), v("31.0.0.0"));
        assert!(v("25.04.5") > v("25.4.4"));
        assert!(v("3.5.0.beta5") < v("3.5.0"));
        assert!(v("3.5.0.beta5") < v("3.5.0.beta10"));
        assert!(v("3.5.0.beta5") > v("3.4.9"));
        assert!(v("17") < v("17.0.1"));
        assert_eq!(v("31.0.5.1").series(), "31.0".parse().unwrap());
        assert_eq!(v("31").series().to_string(), "31.0");
    }

    #[test]
    fn series_and_arches() {
        assert_eq!("31.0".parse::<Series>().unwrap().major, 31);
        for bad in ["31", "31.0.1", "a.b", "31.", ""] {
            assert!(bad.parse::<Series>().is_err(), "{bad}");
        }
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert!(
            "arm64"
                .parse::<Arch>()
                .unwrap_err()
                .0
                .contains("x86_64, aarch64, armv7")
        );
    }

    proptest! {
        #[test]
        fn version_order_is_total_and_agrees_with_equality(
            a in proptest::collection::vec(0u64..4, 1..=5),
            b in proptest::collection::vec(0u64..4, 1..=5),
            pa in proptest::option::of((prop_oneof!["alpha", "beta", "rc"], proptest::option::of(0u64..3))),
            pb in proptest::option::of((prop_oneof!["alpha", "beta", "rc"], proptest::option::of(0u64..3))),
        ) {
            let text = |parts: &[u64], pre: &Option<(String, Option<u64>)>| {
                let mut t = parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
                if let Some((l, n)) = pre {
                    t.push('.');
                    t.push_str(l);
                    if let Some(n) = n {
                        t.push_str(&n.to_string());
                    }
                }
                t
            };
            let (x, y) = (v(&text(&a, &pa)), v(&text(&b, &pb)));
            prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            prop_assert_eq!(x == y, x.cmp(&y).is_eq());
            if x == y {
                use std::hash::{BuildHasher, RandomState};
                let s = RandomState::new();
                prop_assert_eq!(s.hash_one(&x), s.hash_one(&y));
            }
            // The text round-trips.
            let again = v(x.as_str());
            prop_assert_eq!(again.as_str(), x.as_str());
        }
    }

    #[test]
    fn slug_from_human_names() {
        assert_eq!(
            slug_from_name("Les Communs de Quimper").unwrap().as_str(),
            "les-communs-de-quimper"
        );
        assert_eq!(
            slug_from_name("Café  Équitable!").unwrap().as_str(),
            "cafe-equitable"
        );
        assert!(slug_from_name("!!!").is_none());
        assert!(slug_from_name("42").is_none());
    }

    proptest! {
        #[test]
        fn derived_slugs_are_always_valid(name in "\\PC{0,80}") {
            if let Some(slug) = slug_from_name(&name) {
                prop_assert!(check_slug(slug.as_str()).is_ok());
            }
        }
    }
}
