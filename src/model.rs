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
