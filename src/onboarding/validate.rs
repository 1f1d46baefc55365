//! Checks a registration form field by field. Pure: which collectives exist
//! is passed in; whether the uid or mail is taken is the service's question.

use serde::{Deserialize, Serialize};

use crate::model::{CollectiveSlug, Email, Uid};

/// Languages the mails are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Ca,
    Es,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ca => "ca",
            Language::Es => "es",
        }
    }

    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "en" => Some(Language::En),
            "ca" => Some(Language::Ca),
            "es" => Some(Language::Es),
            _ => None,
        }
    }
}

/// The registration form as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Form {
    pub uid: String,
    pub display_name: String,
    pub email: String,
    pub collective: String,
    pub message: String,
    pub language: String,
    /// Hidden from people by the page; only bots fill it in.
    pub website: String,
    /// The token of an admin's invitation, when the person came through
    /// one: it preselects the collective (and proves the address if it is
    /// the invited one).
    pub invite: String,
}

/// A form that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub uid: Uid,
    pub display_name: String,
    /// Lowercased: addresses compare case-insensitively (as slapd's unique does).
    pub email: Email,
    pub collective: CollectiveSlug,
    pub message: String,
    pub language: Language,
}

/// Why one field was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

const MAX_NAME: usize = 100;
const MAX_MESSAGE: usize = 2000;

/// Every refusal at once, so a person fixes the form in one go.
/// A name to be shown (registration and profile): what is wrong with it.
pub fn display_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("say how you want to be called".into())
    } else if name.chars().count() > MAX_NAME {
        Err(format!("use at most {MAX_NAME} characters"))
    } else if name.chars().any(char::is_control) {
        Err("control characters are not allowed".into())
    } else {
        Ok(())
    }
}

pub fn validate(
    form: &Form,
    collectives: &[CollectiveSlug],
) -> Result<Registration, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field, message: String| errors.push(FieldError { field, message });
    if !form.website.is_empty() {
        // Say nothing useful to a bot.
        err("form", "the form could not be accepted".into());
    }
    // A login may not be a collective's slug: the forum keeps users and
    // groups in one namespace, and each collective is a group there.
    let uid = match form.uid.trim().parse::<Uid>() {
        Ok(u) if collectives.iter().any(|c| c.as_str() == u.as_str()) => {
            err(
                "uid",
                format!("`{u}` is the name of a collective here: choose another user name"),
            );
            None
        }
        Ok(u) => Some(u),
        Err(e) => {
            err("uid", e.0);
            None
        }
    };
    let name = form.display_name.trim();
    if let Err(m) = display_name(name) {
        err("display_name", m);
    }
    let email = form
        .email
        .trim()
        .to_lowercase()
        .parse::<Email>()
        .map_err(|e| err("email", e.0))
        .ok();
    let collective = match form.collective.trim().parse::<CollectiveSlug>() {
        Ok(c) if collectives.contains(&c) => Some(c),
        _ => {
            let names: Vec<&str> = collectives.iter().map(|c| c.as_str()).collect();
            err(
                "collective",
                format!("choose one of the collectives here: {}", names.join(", ")),
            );
            None
        }
    };
    let message = form.message.trim();
    if message.chars().count() > MAX_MESSAGE {
        err("message", format!("use at most {MAX_MESSAGE} characters"));
    }
    let language = match form.language.trim() {
        "" => Some(Language::En),
        l => Language::parse(l).or_else(|| {
            err("language", "choose en, ca or es".into());
            None
        }),
    };
    match (uid, email, collective, language) {
        (Some(uid), Some(email), Some(collective), Some(language)) if errors.is_empty() => {
            Ok(Registration {
                uid,
                display_name: name.to_owned(),
                email,
                collective,
                message: message.to_owned(),
                language,
            })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Vec<CollectiveSlug> {
        vec!["quimper".parse().unwrap(), "brest".parse().unwrap()]
    }

    fn good() -> Form {
        Form {
            uid: "ana".into(),
            display_name: "Ana Ros".into(),
            email: "Ana.Ros@Example.org".into(),
            collective: "quimper".into(),
            message: "Hello!".into(),
            language: "ca".into(),
            website: String::new(),
            invite: String::new(),
        }
    }

    #[test]
    fn a_good_form_passes_normalised() {
        let r = validate(&good(), &here()).unwrap();
        assert_eq!(r.uid.as_str(), "ana");
        assert_eq!(r.email.as_str(), "ana.ros@example.org");
        assert_eq!(r.language, Language::Ca);
    }

    #[test]
    fn every_bad_field_is_named() {
        let form = Form {
            uid: "Admin!".into(),
            display_name: " ".into(),
            email: "nope".into(),
            collective: "paris".into(),
            message: "x".repeat(MAX_MESSAGE + 1),
            language: "fr".into(),
            website: String::new(),
            invite: String::new(),
        };
        let errors = validate(&form, &here()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "uid",
                "display_name",
                "email",
                "collective",
                "message",
                "language"
            ]
        );
        assert!(errors[3].message.contains("quimper, brest"));
    }

    #[test]
    fn reserved_uid_says_so() {
        let form = Form {
            uid: "postmaster".into(),
            ..good()
        };
        let errors = validate(&form, &here()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("reserved"));
    }

    #[test]
    fn a_collectives_slug_is_not_a_login() {
        let form = Form {
            uid: "quimper".into(),
            ..good()
        };
        let errors = validate(&form, &here()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "uid");
        assert!(errors[0].message.contains("name of a collective"));
    }

    #[test]
    fn the_honeypot_rejects_bots() {
        let form = Form {
            website: "http://spam.example".into(),
            ..good()
        };
        let errors = validate(&form, &here()).unwrap_err();
        assert_eq!(errors[0].field, "form");
    }
}
