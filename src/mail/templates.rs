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
pub const TEMPLATES: [&str; 16] = [
    "test",
    "verify",
    "admins_new_request",
    "set_password",
    "rejected",
    "reset_password",
    "invite_existing",
    "invite_new",
    "admins_join_request",
    "join_approved",
    "join_rejected",
    "suspended",
    "reactivated",
    "uid_taken",
    "register_existing",
    "register_pending",
];

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
        ("test", En) => (
            "Test mail from {collective}",
            &[
                "Hello,",
                "{by} sent this test from the console of {collective}: mail from this box reaches you.",
            ],
        ),
        ("test", Ca) => (
            "Correu de prova de {collective}",
            &[
                "Hola,",
                "{by} ha enviat aquesta prova des de la consola de {collective}: el correu d'aquesta caixa t'arriba.",
            ],
        ),
        ("test", Es) => (
            "Correo de prueba de {collective}",
            &[
                "Hola:",
                "{by} ha enviado esta prueba desde la consola de {collective}: el correo de esta caja te llega.",
            ],
        ),
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
        ("uid_taken", En) => (
            "Choose another user name for {collective}",
            &[
                "Hello {name},",
                "You registered at {collective} as \"{uid}\" while the box could not reach the alliance. The alliance now says someone else already has that name, and names are shared across all its collectives.",
                "Your account keeps working at {collective} meanwhile. Open this link to choose another name; your files, groups and password stay as they are:",
                "{link}",
            ],
        ),
        ("uid_taken", Ca) => (
            "Tria un altre nom d'usuari per a {collective}",
            &[
                "Hola {name},",
                "Et vas registrar a {collective} com a \"{uid}\" mentre la caixa no podia arribar a l'aliança. Ara l'aliança diu que aquest nom ja és d'una altra persona, i els noms es comparteixen entre tots els seus col·lectius.",
                "Mentrestant el teu compte continua funcionant a {collective}. Obre aquest enllaç per triar un altre nom; els teus fitxers, grups i contrasenya es mantenen:",
                "{link}",
            ],
        ),
        ("uid_taken", Es) => (
            "Elige otro nombre de usuario para {collective}",
            &[
                "Hola {name}:",
                "Te registraste en {collective} como \"{uid}\" mientras la caja no podía llegar a la alianza. Ahora la alianza dice que ese nombre ya es de otra persona, y los nombres se comparten entre todos sus colectivos.",
                "Mientras tanto tu cuenta sigue funcionando en {collective}. Abre este enlace para elegir otro nombre; tus archivos, grupos y contraseña se mantienen:",
                "{link}",
            ],
        ),
        ("reset_password", En) => (
            "Reset your password for {collective}",
            &[
                "Hello {name},",
                "Someone (hopefully you) asked to reset the password of \"{uid}\" at {collective}. Open this link within 2 hours to choose a new one:",
                "{link}",
                "If it was not you, ignore this mail: your password stays as it is.",
            ],
        ),
        ("reset_password", Ca) => (
            "Restableix la teva contrasenya de {collective}",
            &[
                "Hola {name},",
                "Algú (esperem que tu) ha demanat restablir la contrasenya de \"{uid}\" a {collective}. Obre aquest enllaç en les properes 2 hores per triar-ne una de nova:",
                "{link}",
                "Si no has estat tu, ignora aquest correu: la teva contrasenya es manté igual.",
            ],
        ),
        ("reset_password", Es) => (
            "Restablece tu contraseña de {collective}",
            &[
                "Hola {name}:",
                "Alguien (esperamos que tú) ha pedido restablecer la contraseña de \"{uid}\" en {collective}. Abre este enlace en las próximas 2 horas para elegir una nueva:",
                "{link}",
                "Si no has sido tú, ignora este correo: tu contraseña sigue igual.",
            ],
        ),
        ("invite_existing", En) => (
            "{by} invites you to join {collective}",
            &[
                "Hello {name},",
                "{by}, an admin of {collective}, invites you to join the collective with the account you already have. Open this link within 14 days to accept:",
                "{link}",
                "If you do not want to join, ignore this mail.",
            ],
        ),
        ("invite_existing", Ca) => (
            "{by} et convida a unir-te a {collective}",
            &[
                "Hola {name},",
                "{by}, de l'equip d'administració de {collective}, et convida a unir-te al col·lectiu amb el compte que ja tens. Obre aquest enllaç en els propers 14 dies per acceptar:",
                "{link}",
                "Si no t'hi vols unir, ignora aquest correu.",
            ],
        ),
        ("invite_existing", Es) => (
            "{by} te invita a unirte a {collective}",
            &[
                "Hola {name}:",
                "{by}, del equipo de administración de {collective}, te invita a unirte al colectivo con la cuenta que ya tienes. Abre este enlace en los próximos 14 días para aceptar:",
                "{link}",
                "Si no quieres unirte, ignora este correo.",
            ],
        ),
        ("invite_new", En) => (
            "{by} invites you to {collective}",
            &[
                "Hello,",
                "{by} invites you to join {collective}. Open this link within 14 days to create your account:",
                "{link}",
                "The collective is already selected for you. If you do not want to join, ignore this mail.",
            ],
        ),
        ("invite_new", Ca) => (
            "{by} et convida a {collective}",
            &[
                "Hola,",
                "{by} et convida a unir-te a {collective}. Obre aquest enllaç en els propers 14 dies per crear el teu compte:",
                "{link}",
                "El col·lectiu ja hi estarà seleccionat. Si no t'hi vols unir, ignora aquest correu.",
            ],
        ),
        ("invite_new", Es) => (
            "{by} te invita a {collective}",
            &[
                "Hola:",
                "{by} te invita a unirte a {collective}. Abre este enlace en los próximos 14 días para crear tu cuenta:",
                "{link}",
                "El colectivo ya estará seleccionado. Si no quieres unirte, ignora este correo.",
            ],
        ),
        ("admins_join_request", En) => (
            "{name} asks to join {collective}",
            &[
                "{name} ({email}) already has an account in the alliance as \"{uid}\" and asks to join {collective}.",
                "Their message: {message}",
                "Approve or reject the request in the console: {link}",
            ],
        ),
        ("admins_join_request", Ca) => (
            "{name} demana unir-se a {collective}",
            &[
                "{name} ({email}) ja té un compte a l'aliança com a \"{uid}\" i demana unir-se a {collective}.",
                "El seu missatge: {message}",
                "Aprova o rebutja la sol·licitud a la consola: {link}",
            ],
        ),
        ("admins_join_request", Es) => (
            "{name} pide unirse a {collective}",
            &[
                "{name} ({email}) ya tiene una cuenta en la alianza como \"{uid}\" y pide unirse a {collective}.",
                "Su mensaje: {message}",
                "Aprueba o rechaza la solicitud en la consola: {link}",
            ],
        ),
        ("join_approved", En) => (
            "You are now part of {collective}",
            &[
                "Hello {name},",
                "The admins of {collective} accepted your request: you are now a member of the collective.",
                "Your account opens its services from now on.",
            ],
        ),
        ("join_approved", Ca) => (
            "Ja formes part de {collective}",
            &[
                "Hola {name},",
                "Les persones administradores de {collective} han acceptat la teva sol·licitud: ja formes part del col·lectiu.",
                "A partir d'ara, el teu compte obre els seus serveis.",
            ],
        ),
        ("join_approved", Es) => (
            "Ya formas parte de {collective}",
            &[
                "Hola {name}:",
                "Las personas administradoras de {collective} han aceptado tu solicitud: ya formas parte del colectivo.",
                "A partir de ahora, tu cuenta abre sus servicios.",
            ],
        ),
        ("join_rejected", En) => (
            "Your request to join {collective}",
            &[
                "Hello {name},",
                "The admins of {collective} declined your request to join. Their reason:",
                "{reason}",
            ],
        ),
        ("join_rejected", Ca) => (
            "La teva sol·licitud per unir-te a {collective}",
            &[
                "Hola {name},",
                "Les persones administradores de {collective} han declinat la teva sol·licitud per unir-t'hi. El motiu:",
                "{reason}",
            ],
        ),
        ("join_rejected", Es) => (
            "Tu solicitud para unirte a {collective}",
            &[
                "Hola {name}:",
                "Las personas administradoras de {collective} han declinado tu solicitud para unirte. El motivo:",
                "{reason}",
            ],
        ),
        ("suspended", En) => (
            "Your account at {collective} is suspended",
            &[
                "Hello {name},",
                "The admins of {collective} suspended your account. Their reason:",
                "{reason}",
                "While it is suspended you cannot log in. To talk about it, contact the admins of the collective.",
            ],
        ),
        ("suspended", Ca) => (
            "El teu compte a {collective} està suspès",
            &[
                "Hola {name},",
                "Les persones administradores de {collective} han suspès el teu compte. El motiu:",
                "{reason}",
                "Mentre estigui suspès no podràs iniciar sessió. Per parlar-ne, contacta amb les persones administradores del col·lectiu.",
            ],
        ),
        ("suspended", Es) => (
            "Tu cuenta en {collective} está suspendida",
            &[
                "Hola {name}:",
                "Las personas administradoras de {collective} han suspendido tu cuenta. El motivo:",
                "{reason}",
                "Mientras esté suspendida no podrás iniciar sesión. Para hablarlo, contacta con las personas administradoras del colectivo.",
            ],
        ),
        ("reactivated", En) => (
            "Your account at {collective} is active again",
            &[
                "Hello {name},",
                "Your account at {collective} is active again: you can log in and use the collective's services as before.",
            ],
        ),
        ("reactivated", Ca) => (
            "El teu compte a {collective} torna a estar actiu",
            &[
                "Hola {name},",
                "El teu compte a {collective} torna a estar actiu: pots iniciar sessió i fer servir els serveis del col·lectiu com abans.",
            ],
        ),
        ("reactivated", Es) => (
            "Tu cuenta en {collective} vuelve a estar activa",
            &[
                "Hola {name}:",
                "Tu cuenta en {collective} vuelve a estar activa: puedes iniciar sesión y usar los servicios del colectivo como antes.",
            ],
        ),
        ("register_existing", En) => (
            "You already have an account at {collective}",
            &[
                "Hello {name},",
                "Someone (hopefully you) asked for a new account at {collective} with this address. It already has one: your user name is \"{uid}\", and no new account was made.",
                "If you forgot your password, ask for a new one here:",
                "{link}",
                "If it was not you, ignore this mail: nothing changed.",
            ],
        ),
        ("register_existing", Ca) => (
            "Ja tens un compte a {collective}",
            &[
                "Hola {name},",
                "Algú (esperem que tu) ha demanat un compte nou a {collective} amb aquesta adreça. Ja en té un: el teu nom d'usuari és \"{uid}\", i no s'ha creat cap compte nou.",
                "Si has oblidat la contrasenya, demana'n una de nova aquí:",
                "{link}",
                "Si no has estat tu, ignora aquest correu: no ha canviat res.",
            ],
        ),
        ("register_existing", Es) => (
            "Ya tienes una cuenta en {collective}",
            &[
                "Hola {name}:",
                "Alguien (esperamos que tú) ha pedido una cuenta nueva en {collective} con esta dirección. Ya tiene una: tu nombre de usuario es \"{uid}\", y no se ha creado ninguna cuenta nueva.",
                "Si has olvidado la contraseña, pide una nueva aquí:",
                "{link}",
                "Si no has sido tú, ignora este correo: no ha cambiado nada.",
            ],
        ),
        ("register_pending", En) => (
            "Your request to join {collective} is waiting",
            &[
                "Hello {name},",
                "Someone (hopefully you) asked again for an account at {collective} with this address. A request with it is already waiting for the collective's admins, so no new one was made: you will get a mail when they decide.",
                "Once you have your account, sign in here: {link}",
                "If it was not you, ignore this mail: nothing changed.",
            ],
        ),
        ("register_pending", Ca) => (
            "La teva sol·licitud per unir-te a {collective} està pendent",
            &[
                "Hola {name},",
                "Algú (esperem que tu) ha tornat a demanar un compte a {collective} amb aquesta adreça. Ja hi ha una sol·licitud amb aquesta adreça esperant les persones administradores del col·lectiu, així que no se n'ha creat cap de nova: rebràs un correu quan decideixin.",
                "Quan tinguis el compte, inicia la sessió aquí: {link}",
                "Si no has estat tu, ignora aquest correu: no ha canviat res.",
            ],
        ),
        ("register_pending", Es) => (
            "Tu solicitud para unirte a {collective} está pendiente",
            &[
                "Hola {name}:",
                "Alguien (esperamos que tú) ha vuelto a pedir una cuenta en {collective} con esta dirección. Ya hay una solicitud con esta dirección esperando a las personas administradoras del colectivo, así que no se ha creado ninguna nueva: recibirás un correo cuando decidan.",
                "Cuando tengas la cuenta, inicia sesión aquí: {link}",
                "Si no has sido tú, ignora este correo: no ha cambiado nada.",
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
                       "message": "hi", "link": "https://box.q.org/l?t=1", "reason": "no",
                       "by": "Bea"});
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
