//! Mail texts in English, Catalan and Spanish, as plain text and HTML.
//! Pure: a template name, a language and parameters in, a mail out.

use crate::onboarding::validate::Language;

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Templates the appliance sends.
pub const TEMPLATES: [&str; 4] = ["verify", "admins_new_request", "set_password", "rejected"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Subject and paragraphs for each template and language. `{name}` marks a
/// parameter; `{link}` becomes a link in HTML.
fn texts(template: &str, lang: Language) -> Option<(&'static str, &'static [&'static str])> {
    use Language::*;
    Some(match (template, lang) {
        ("verify", En) => (
            "Confirm your address for {collective}",
            &[
                "Hello {name},",
                "You asked to join {collective} as \"{uid}\". Confirm that this address is yours by opening this link within 48 hours:",
                "{link}",
                "Then the collective's admins will look at your request. If you did not ask for this, ignore this mail.",
            ],
        ),
        ("verify", Ca) => (
            "Confirma la teva adreça per a {collective}",
            &[
                "Hola {name},",
                "Has demanat unir-te a {collective} com a \"{uid}\". Confirma que aquesta adreça és teva obrint aquest enllaç en les properes 48 hores:",
                "{link}",
                "Després, les persones administradores del col·lectiu revisaran la teva sol·licitud. Si no ho has demanat tu, ignora aquest correu.",
            ],
        ),
        ("verify", Es) => (
            "Confirma tu dirección para {collective}",
            &[
                "Hola {name}:",
                "Has pedido unirte a {collective} como \"{uid}\". Confirma que esta dirección es tuya abriendo este enlace en las próximas 48 horas:",
                "{link}",
                "Después, las personas administradoras del colectivo revisarán tu solicitud. Si no lo has pedido tú, ignora este correo.",
            ],
        ),
        ("admins_new_request", En) => (
            "{name} asks to join {collective}",
            &[
                "{name} ({email}) asks to join {collective} as \"{uid}\".",
                "Their message: {message}",
                "Approve or reject the request in the console: {link}",
            ],
        ),
        ("admins_new_request", Ca) => (
            "{name} demana unir-se a {collective}",
            &[
                "{name} ({email}) demana unir-se a {collective} com a \"{uid}\".",
                "El seu missatge: {message}",
                "Aprova o rebutja la sol·licitud a la consola: {link}",
            ],
        ),
        ("admins_new_request", Es) => (
            "{name} pide unirse a {collective}",
            &[
                "{name} ({email}) pide unirse a {collective} como \"{uid}\".",
                "Su mensaje: {message}",
                "Aprueba o rechaza la solicitud en la consola: {link}",
            ],
        ),
        ("set_password", En) => (
            "Welcome to {collective}: choose your password",
            &[
                "Hello {name},",
                "Your account \"{uid}\" is ready. Choose your password within 48 hours here:",
                "{link}",
                "The same account opens every service of the collective.",
            ],
        ),
        ("set_password", Ca) => (
            "Benvinguda a {collective}: tria la teva contrasenya",
            &[
                "Hola {name},",
                "El teu compte \"{uid}\" ja està a punt. Tria la contrasenya en les properes 48 hores aquí:",
                "{link}",
                "El mateix compte obre tots els serveis del col·lectiu.",
            ],
        ),
        ("set_password", Es) => (
            "Bienvenida a {collective}: elige tu contraseña",
            &[
                "Hola {name}:",
                "Tu cuenta \"{uid}\" está lista. Elige tu contraseña en las próximas 48 horas aquí:",
                "{link}",
                "La misma cuenta abre todos los servicios del colectivo.",
            ],
        ),
        ("rejected", En) => (
            "Your request to join {collective}",
            &[
                "Hello {name},",
                "The admins of {collective} did not accept your request. Their reason:",
                "{reason}",
            ],
        ),
        ("rejected", Ca) => (
            "La teva sol·licitud per unir-te a {collective}",
            &[
                "Hola {name},",
                "Les persones administradores de {collective} no han acceptat la teva sol·licitud. El motiu:",
                "{reason}",
            ],
        ),
        ("rejected", Es) => (
            "Tu solicitud para unirte a {collective}",
            &[
                "Hola {name}:",
                "Las personas administradoras de {collective} no han aceptado tu solicitud. El motivo:",
                "{reason}",
            ],
        ),
        _ => return None,
    })
}

fn fill(s: &str, params: &serde_json::Value, html: bool) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let key = &rest[start + 1..start + len];
        out.push_str(&if html {
            escape(&rest[..start])
        } else {
            rest[..start].to_owned()
        });
        let value = params.get(key).and_then(|v| v.as_str()).unwrap_or("");
        if html && key == "link" {
            let v = escape(value);
            out.push_str(&format!("<a href=\"{v}\">{v}</a>"));
        } else if html {
            out.push_str(&escape(value));
        } else {
            out.push_str(value);
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(&if html { escape(rest) } else { rest.to_owned() });
    out
}

/// Renders `template` in `lang`; `None` for an unknown template.
pub fn render(template: &str, lang: Language, params: &serde_json::Value) -> Option<Rendered> {
    let (subject, paragraphs) = texts(template, lang)?;
    let text = paragraphs
        .iter()
        .map(|p| fill(p, params, false))
        .collect::<Vec<_>>()
        .join("\n\n");
    let html = format!(
        "<!doctype html><html lang=\"{}\"><body>{}</body></html>",
        lang.as_str(),
        paragraphs
            .iter()
            .map(|p| format!("<p>{}</p>", fill(p, params, true)))
            .collect::<String>()
    );
    Some(Rendered {
        subject: fill(subject, params, false),
        text,
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_exists_in_every_language_and_uses_its_parameters() {
        let p = json!({"name": "Ana", "uid": "ana", "collective": "Quimper", "email": "a@x.org",
                       "message": "hi", "link": "https://box.q.org/l?t=1", "reason": "no"});
        for t in TEMPLATES {
            for lang in [Language::En, Language::Ca, Language::Es] {
                let r = render(t, lang, &p).unwrap_or_else(|| panic!("{t} {lang:?}"));
                assert!(!r.text.contains('{'), "{t} {lang:?}: {}", r.text);
                assert!(
                    r.subject.contains("Quimper") || r.subject.contains("Ana"),
                    "{t} {lang:?}"
                );
                assert!(r.html.contains(&format!("lang=\"{}\"", lang.as_str())));
            }
        }
        assert!(render("nope", Language::En, &p).is_none());
    }

    #[test]
    fn html_is_escaped_and_links_are_anchors() {
        let p = json!({"name": "<script>x</script>", "uid": "a", "collective": "Q&A",
                       "link": "https://box/v?t=1&u=\"2\""});
        let r = render("verify", Language::En, &p).unwrap();
        assert!(r.html.contains("&lt;script&gt;") && !r.html.contains("<script>"));
        assert!(
            r.html
                .contains("<a href=\"https://box/v?t=1&amp;u=&quot;2&quot;\">")
        );
        assert!(
            r.text.contains("<script>x</script>"),
            "plain text is not escaped"
        );
        assert_eq!(r.subject, "Confirm your address for Q&A");
    }
}
