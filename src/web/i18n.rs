//! The console's words in English, Catalan and Spanish, and which language
//! a request gets. Pure. Each message is an enum variant with its three
//! texts in one place, so a missing translation does not compile.
//!
//! `{x}` in a text is filled by [`Msg::with`]. Detailed field errors come
//! from the onboarding service and stay in English.

use crate::onboarding::validate::Language;

macro_rules! messages {
    ($($key:ident => [$en:expr, $ca:expr, $es:expr $(,)?],)*) => {
        /// A text of the console.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg { $($key,)* }

        impl Msg {
            /// Every message, for the tests.
            pub const ALL: &'static [Msg] = &[$(Msg::$key,)*];

            pub fn text(self, lang: Language) -> &'static str {
                match self {
                    $(Msg::$key => match lang {
                        Language::En => $en,
                        Language::Ca => $ca,
                        Language::Es => $es,
                    },)*
                }
            }
        }
    };
}

messages! {
    Brand => ["CommonsCloud", "CommonsCloud", "CommonsCloud"],
    SkipToContent => ["Skip to content", "Ves al contingut", "Ir al contenido"],
    NavServices => ["My services", "Els meus serveis", "Mis servicios"],
    NavProfile => ["Profile", "Perfil", "Perfil"],
    NavCollectives => ["Collectives", "Col·lectius", "Colectivos"],
    NavConsole => ["Console", "Consola", "Consola"],
    NavSignIn => ["Sign in", "Inicia la sessió", "Inicia sesión"],
    NavSignOut => ["Sign out", "Tanca la sessió", "Cierra sesión"],
    NavRegister => ["Create an account", "Crea un compte", "Crea una cuenta"],
    Language => ["Language", "Llengua", "Idioma"],
    Done => ["Done.", "Fet.", "Hecho."],
    FormErrors => [
        "Please correct the marked fields.",
        "Corregeix els camps marcats.",
        "Corrige los campos marcados.",
    ],
    CsrfRefused => [
        "This form expired or came from another site. Go back, reload the page and try again.",
        "Aquest formulari ha caducat o venia d'un altre lloc. Torna enrere, recarrega la pàgina i torna-ho a provar.",
        "Este formulario ha caducado o venía de otro sitio. Vuelve atrás, recarga la página e inténtalo de nuevo.",
    ],
    NotAdmin => [
        "Only the admins of this box's collective may open the console.",
        "Només els administradors del col·lectiu d'aquesta caixa poden obrir la consola.",
        "Solo los administradores del colectivo de esta caja pueden abrir la consola.",
    ],
    NotFound => ["There is no such page.", "Aquesta pàgina no existeix.", "Esta página no existe."],
    Unavailable => [
        "The directory does not answer right now. Try again in a minute; if it lasts, an admin can run `commonscloud doctor`.",
        "El directori no respon ara mateix. Torna-ho a provar d'aquí a un minut; si continua, un administrador pot executar `commonscloud doctor`.",
        "El directorio no responde ahora mismo. Inténtalo de nuevo en un minuto; si continúa, un administrador puede ejecutar `commonscloud doctor`.",
    ],
    // Sign in
    LoginTitle => ["Sign in", "Inicia la sessió", "Inicia sesión"],
    FieldUser => ["User name", "Nom d'usuari", "Nombre de usuario"],
    FieldPassword => ["Password", "Contrasenya", "Contraseña"],
    LoginSubmit => ["Sign in", "Entra", "Entra"],
    LoginForgot => ["Forgot your password?", "Has oblidat la contrasenya?", "¿Has olvidado la contraseña?"],
    LoginNoAccount => ["No account yet?", "Encara no tens compte?", "¿Aún no tienes cuenta?"],
    LoginRefused => [
        "Wrong user name or password, or the account is suspended.",
        "Nom d'usuari o contrasenya incorrectes, o el compte està suspès.",
        "Nombre de usuario o contraseña incorrectos, o la cuenta está suspendida.",
    ],
    LoginLimited => [
        "Too many failed sign-ins for this account or from your address. Try again in {minutes} minutes.",
        "Massa intents fallits per a aquest compte o des de la teva adreça. Torna-ho a provar d'aquí a {minutes} minuts.",
        "Demasiados intentos fallidos para esta cuenta o desde tu dirección. Inténtalo de nuevo dentro de {minutes} minutos.",
    ],
    SignedOut => ["You are signed out.", "Has tancat la sessió.", "Has cerrado la sesión."],
    // Register
    RegisterTitle => ["Create an account", "Crea un compte", "Crea una cuenta"],
    RegisterIntro => [
        "Ask to join a collective of this box. Its admins check each request.",
        "Demana entrar en un col·lectiu d'aquesta caixa. Els seus administradors revisen cada sol·licitud.",
        "Pide entrar en un colectivo de esta caja. Sus administradores revisan cada solicitud.",
    ],
    FieldUid => ["User name", "Nom d'usuari", "Nombre de usuario"],
    FieldUidHelp => [
        "2 to 32 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter. It cannot be changed later.",
        "De 2 a 32 caràcters: minúscules, xifres, '.', '_' o '-', començant per una lletra. No es pot canviar després.",
        "De 2 a 32 caracteres: minúsculas, cifras, '.', '_' o '-', empezando por una letra. No se puede cambiar después.",
    ],
    FieldDisplayName => ["Your name", "El teu nom", "Tu nombre"],
    FieldEmail => ["Mail address", "Adreça de correu", "Dirección de correo"],
    FieldCollective => ["Collective", "Col·lectiu", "Colectivo"],
    FieldMessage => [
        "A word for the admins (optional)",
        "Unes paraules per als administradors (opcional)",
        "Unas palabras para los administradores (opcional)",
    ],
    FieldWebsite => ["Leave this empty", "Deixa-ho buit", "Déjalo vacío"],
    RegisterSubmit => ["Send the request", "Envia la sol·licitud", "Envía la solicitud"],
    RegisterSent => [
        "Check your mail: open the link we sent within 48 hours to confirm your address.",
        "Mira el correu: obre l'enllaç que t'hem enviat en 48 hores per confirmar la teva adreça.",
        "Mira tu correo: abre el enlace que te hemos enviado en 48 horas para confirmar tu dirección.",
    ],
    // Verify
    VerifyTitle => ["Confirm your address", "Confirma la teva adreça", "Confirma tu dirección"],
    VerifyIntro => [
        "Press the button to confirm that this mail address is yours.",
        "Prem el botó per confirmar que aquesta adreça és teva.",
        "Pulsa el botón para confirmar que esta dirección es tuya.",
    ],
    VerifySubmit => ["Confirm", "Confirma", "Confirma"],
    VerifyDone => [
        "Thank you: your address is confirmed. An admin will review your request, and you will get a mail when it is decided.",
        "Gràcies: la teva adreça està confirmada. Un administrador revisarà la sol·licitud i rebràs un correu quan es decideixi.",
        "Gracias: tu dirección está confirmada. Un administrador revisará la solicitud y recibirás un correo cuando se decida.",
    ],
    BadLink => [
        "This link does not work any more: it was used already or it expired.",
        "Aquest enllaç ja no funciona: ja s'ha fet servir o ha caducat.",
        "Este enlace ya no funciona: ya se ha usado o ha caducado.",
    ],
    // Passwords
    ChooseUidTitle => ["Choose another user name", "Tria un altre nom d'usuari", "Elige otro nombre de usuario"],
    ChooseUidIntro => [
        "The name you registered with belongs to someone else in the alliance. Choose another: your password, files and groups stay as they are.",
        "El nom amb què et vas registrar és d'una altra persona de l'aliança. Tria'n un altre: la contrasenya, els fitxers i els grups es mantenen.",
        "El nombre con el que te registraste es de otra persona de la alianza. Elige otro: tu contraseña, archivos y grupos se mantienen.",
    ],
    ChooseUidSubmit => ["Use this name", "Fes servir aquest nom", "Usa este nombre"],
    UidChosen => [
        "Done: sign in with your new user name from now on.",
        "Fet: a partir d'ara inicia la sessió amb el nou nom d'usuari.",
        "Hecho: a partir de ahora inicia sesión con tu nuevo nombre de usuario.",
    ],
    SetPasswordTitle => ["Choose your password", "Tria la contrasenya", "Elige tu contraseña"],
    FieldNewPassword => ["New password", "Contrasenya nova", "Contraseña nueva"],
    FieldConfirm => ["Repeat the password", "Repeteix la contrasenya", "Repite la contraseña"],
    PasswordHelp => ["At least 10 characters.", "Almenys 10 caràcters.", "Al menos 10 caracteres."],
    SetPasswordSubmit => ["Save the password", "Desa la contrasenya", "Guarda la contraseña"],
    PasswordsDiffer => [
        "The two passwords differ.",
        "Les dues contrasenyes són diferents.",
        "Las dos contraseñas son distintas.",
    ],
    PasswordSet => [
        "Your password is saved. You can sign in now.",
        "La contrasenya està desada. Ja pots iniciar la sessió.",
        "Tu contraseña está guardada. Ya puedes iniciar sesión.",
    ],
    ForgotTitle => ["Forgotten password", "Contrasenya oblidada", "Contraseña olvidada"],
    ForgotIntro => [
        "Give your user name or your mail address: we send a link to choose a new password.",
        "Escriu el teu nom d'usuari o la teva adreça: t'enviarem un enllaç per triar una contrasenya nova.",
        "Escribe tu nombre de usuario o tu dirección: te enviaremos un enlace para elegir una contraseña nueva.",
    ],
    FieldLogin => ["User name or mail address", "Nom d'usuari o adreça de correu", "Nombre de usuario o dirección de correo"],
    ForgotSubmit => ["Send the link", "Envia l'enllaç", "Envía el enlace"],
    ForgotSent => [
        "If an account matches, a link is on its way. It works for 2 hours.",
        "Si hi ha un compte que hi coincideix, l'enllaç és de camí. Funciona durant 2 hores.",
        "Si hay una cuenta que coincide, el enlace está en camino. Funciona durante 2 horas.",
    ],
    // Invitations
    InviteTitle => ["Invitation", "Invitació", "Invitación"],
    InviteIntro => [
        "You are invited to join {collective}.",
        "Et conviden a entrar a {collective}.",
        "Te invitan a entrar en {collective}.",
    ],
    InviteAccept => ["Accept the invitation", "Accepta la invitació", "Acepta la invitación"],
    InviteAccepted => [
        "Welcome: you are now a member of {collective}.",
        "Benvinguda: ara ets membre de {collective}.",
        "Bienvenida: ahora eres miembro de {collective}.",
    ],
    InviteRegister => ["Create your account", "Crea el teu compte", "Crea tu cuenta"],
    // Services, profile, joining
    ServicesTitle => ["My services", "Els meus serveis", "Mis servicios"],
    ServicesNone => [
        "No service is open to you yet. The admins of your collective decide which groups may use each service.",
        "Encara no tens cap servei obert. Els administradors del teu col·lectiu decideixen quins grups poden fer servir cada servei.",
        "Aún no tienes ningún servicio abierto. Los administradores de tu colectivo deciden qué grupos pueden usar cada servicio.",
    ],
    ServicesVia => ["through {collective}", "a través de {collective}", "a través de {collective}"],
    Welcome => ["Hello, {name}.", "Hola, {name}.", "Hola, {name}."],
    ProfileTitle => ["Profile", "Perfil", "Perfil"],
    ProfileSave => ["Save", "Desa", "Guarda"],
    ProfileSaved => ["Your profile is saved.", "El perfil està desat.", "Tu perfil está guardado."],
    ChangePasswordTitle => ["Change the password", "Canvia la contrasenya", "Cambia la contraseña"],
    FieldCurrentPassword => ["Current password", "Contrasenya actual", "Contraseña actual"],
    PasswordChanged => [
        "Your password is changed, and your other sessions are signed out.",
        "La contrasenya s'ha canviat i s'han tancat les altres sessions.",
        "La contraseña se ha cambiado y se han cerrado tus otras sesiones.",
    ],
    JoinTitle => ["Other collectives", "Altres col·lectius", "Otros colectivos"],
    JoinIntro => [
        "Ask to join another collective of this box. Its admins decide.",
        "Demana entrar en un altre col·lectiu d'aquesta caixa. En decideixen els administradors.",
        "Pide entrar en otro colectivo de esta caja. Deciden sus administradores.",
    ],
    JoinNone => [
        "You are in every collective of this box.",
        "Ja ets a tots els col·lectius d'aquesta caixa.",
        "Ya estás en todos los colectivos de esta caja.",
    ],
    JoinSubmit => ["Ask to join", "Demana entrar", "Pide entrar"],
    JoinAsked => [
        "Your request is sent; you will get a mail when it is decided.",
        "S'ha enviat la sol·licitud; rebràs un correu quan es decideixi.",
        "Se ha enviado la solicitud; recibirás un correo cuando se decida.",
    ],
    // Console
    ConsoleTitle => ["Console", "Consola", "Consola"],
    Dashboard => ["Dashboard", "Tauler", "Panel"],
    Requests => ["Requests", "Sol·licituds", "Solicitudes"],
    Members => ["Members", "Membres", "Miembros"],
    GroupsServices => ["Groups and services", "Grups i serveis", "Grupos y servicios"],
    Apps => ["Apps", "Aplicacions", "Aplicaciones"],
    Upgrades => ["Upgrades", "Actualitzacions", "Actualizaciones"],
    Backups => ["Backups", "Còpies de seguretat", "Copias de seguridad"],
    Settings => ["Settings", "Configuració", "Configuración"],
    AuditLog => ["Audit log", "Registre d'auditoria", "Registro de auditoría"],
    Component => ["Component", "Component", "Componente"],
    State => ["State", "Estat", "Estado"],
    Detail => ["Detail", "Detall", "Detalle"],
    Version => ["Version", "Versió", "Versión"],
    Memory => ["Memory", "Memòria", "Memoria"],
    Disk => ["Disk", "Disc", "Disco"],
    HardwareProfile => ["Hardware profile", "Perfil de maquinari", "Perfil de hardware"],
    PendingValidations => ["Waiting for a decision", "Pendents de decisió", "Pendientes de decisión"],
    None => ["None.", "Cap.", "Ninguna."],
    Approve => ["Approve", "Aprova", "Aprueba"],
    Reject => ["Reject", "Rebutja", "Rechaza"],
    Reason => ["Reason (mailed to the person)", "Motiu (s'envia a la persona)", "Motivo (se envía a la persona)"],
    JoinRequests => ["Requests to join", "Sol·licituds d'entrada", "Solicitudes de entrada"],
    Search => ["Search", "Cerca", "Busca"],
    Suspend => ["Suspend", "Suspèn", "Suspende"],
    Reactivate => ["Reactivate", "Reactiva", "Reactiva"],
    MakeAdmin => ["Make admin", "Fes administrador", "Haz administrador"],
    MakeMember => ["Make plain member", "Fes membre normal", "Haz miembro normal"],
    Suspended => ["suspended", "suspès", "suspendida"],
    Admin => ["admin", "administrador", "administrador"],
    InviteByMail => ["Invite by mail", "Convida per correu", "Invita por correo"],
    InviteSubmit => ["Invite", "Convida", "Invita"],
    CreateGroup => ["Create a group", "Crea un grup", "Crea un grupo"],
    GroupName => ["Group name", "Nom del grup", "Nombre del grupo"],
    Create => ["Create", "Crea", "Crea"],
    Service => ["Service", "Servei", "Servicio"],
    AllowedGroups => ["Groups that may use it", "Grups que el poden fer servir", "Grupos que lo pueden usar"],
    Group => ["Group", "Grup", "Grupo"],
    Allow => ["Allow", "Permet", "Permite"],
    Stop => ["Stop", "Atura", "Para"],
    AddToGroup => ["Add to group", "Afegeix al grup", "Añade al grupo"],
    AppsIntro => [
        "Turning an app on or off here overrides `[apps] enabled` of the config file; the box then reconciles to it. Turning one off keeps its data (`commonscloud purge` deletes it).",
        "Activar o desactivar una aplicació aquí té prioritat sobre `[apps] enabled` del fitxer de configuració; després la caixa s'hi ajusta. Desactivar-ne una en conserva les dades (`commonscloud purge` les esborra).",
        "Activar o desactivar una aplicación aquí tiene prioridad sobre `[apps] enabled` del archivo de configuración; después la caja se ajusta. Desactivar una conserva sus datos (`commonscloud purge` los borra).",
    ],
    Enable => ["Turn on", "Activa", "Activa"],
    Restart => ["Restart", "Reinicia", "Reinicia"],
    Disable => ["Turn off", "Desactiva", "Desactiva"],
    Enabled => ["enabled", "activada", "activada"],
    Disabled => ["disabled", "desactivada", "desactivada"],
    ReconcileNow => ["Reconcile now", "Ajusta ara", "Ajusta ahora"],
    UpgradesNone => [
        "This box follows no upgrade channel of the alliance yet, so no upgrade is offered.",
        "Aquesta caixa encara no segueix cap canal d'actualitzacions de l'aliança, així que no se n'ofereix cap.",
        "Esta caja aún no sigue ningún canal de actualizaciones de la alianza, así que no se ofrece ninguna.",
    ],
    BackupsNone => [
        "No backup is set up on this box yet: nothing has been saved elsewhere.",
        "Encara no hi ha cap còpia de seguretat configurada en aquesta caixa: no s'ha desat res enlloc més.",
        "Aún no hay ninguna copia de seguridad configurada en esta caja: no se ha guardado nada en otro sitio.",
    ],
    Federation => ["Federation", "Federació", "Federación"],
    FederationNone => [
        "This box is not federated with an alliance directory yet: accounts live here only.",
        "Aquesta caixa encara no està federada amb cap directori d'aliança: els comptes només són aquí.",
        "Esta caja aún no está federada con ningún directorio de alianza: las cuentas solo están aquí.",
    ],
    FedLink => ["Link to the alliance", "Enllaç amb l'aliança", "Enlace con la alianza"],
    FedUp => ["up", "actiu", "activo"],
    FedDown => [
        "down: logins and local work go on from this box, changes wait",
        "caigut: els inicis de sessió i la feina local continuen des d'aquesta caixa, els canvis esperen",
        "caído: los inicios de sesión y el trabajo local siguen desde esta caja, los cambios esperan",
    ],
    FedLastContact => ["Last contact", "Últim contacte", "Último contacto"],
    FedSyncAge => ["Age of the copy", "Antiguitat de la còpia", "Antigüedad de la copia"],
    FedInScope => ["Entries copied here", "Entrades copiades aquí", "Entradas copiadas aquí"],
    FedOutbox => [
        "Changes waiting for the alliance",
        "Canvis que esperen l'aliança",
        "Cambios que esperan a la alianza",
    ],
    FedOldest => ["oldest", "el més antic", "el más antiguo"],
    FedRefused => ["refused", "rebutjats", "rechazados"],
    FedConflicts => ["Conflicts settled", "Conflictes resolts", "Conflictos resueltos"],
    FedWinner => ["kept", "es manté", "se mantiene"],
    Never => ["never", "mai", "nunca"],
    SecondsAgo => ["s ago", "s enrere", "s atrás"],
    Domain => ["Domain", "Domini", "Dominio"],
    Hostnames => ["Hostnames", "Noms de màquina", "Nombres de máquina"],
    TestMail => ["Send a test mail", "Envia un correu de prova", "Envía un correo de prueba"],
    TestMailQueued => [
        "A test mail to {email} is queued; the dashboard shows if it cannot be sent.",
        "S'ha posat a la cua un correu de prova per a {email}; el tauler mostra si no es pot enviar.",
        "Se ha puesto en cola un correo de prueba para {email}; el panel muestra si no se puede enviar.",
    ],
    CaDownload => ["Download the CA certificate", "Baixa el certificat de la CA", "Descarga el certificado de la CA"],
    CaHelp => [
        "Install it on your devices to trust this box's own certificates.",
        "Instal·la'l als teus dispositius perquè confiïn en els certificats d'aquesta caixa.",
        "Instálalo en tus dispositivos para que confíen en los certificados de esta caja.",
    ],
    When => ["When", "Quan", "Cuándo"],
    Who => ["Who", "Qui", "Quién"],
    What => ["What", "Què", "Qué"],
    SsoTitle => ["Sign in to the forum", "Entra al fòrum", "Entra en el foro"],
}

impl Msg {
    /// The text with each `{name}` replaced.
    pub fn with(self, lang: Language, args: &[(&str, &str)]) -> String {
        let mut s = self.text(lang).to_owned();
        for (k, v) in args {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }
}

/// The languages offered, with their own names.
pub const LANGUAGES: [(Language, &str); 3] = [
    (Language::En, "English"),
    (Language::Ca, "Català"),
    (Language::Es, "Español"),
];

/// Which language a request gets: an explicit choice (`?lang=`), then the
/// `lang` cookie, then the browser's `Accept-Language` by preference, then
/// English.
pub fn negotiate(query: Option<&str>, cookie: Option<&str>, accept: Option<&str>) -> Language {
    if let Some(l) = query.and_then(Language::parse) {
        return l;
    }
    if let Some(l) = cookie.and_then(Language::parse) {
        return l;
    }
    let mut best: Option<(f32, usize, Language)> = None;
    for (i, part) in accept.unwrap_or("").split(',').enumerate() {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let primary = tag.split('-').next().unwrap_or("");
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if let Some(l) = Language::parse(primary)
            && q > 0.0
            && best.is_none_or(|(bq, bi, _)| q > bq || (q == bq && i < bi))
        {
            best = Some((q, i, l));
        }
    }
    best.map_or(Language::En, |(_, _, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_has_three_texts_with_the_same_placeholders() {
        for m in Msg::ALL {
            let holes = |l| {
                let t = m.text(l);
                assert!(!t.trim().is_empty(), "{m:?} in {l:?} is empty");
                let mut h: Vec<&str> = t
                    .split('{')
                    .skip(1)
                    .filter_map(|s| s.split_once('}').map(|(a, _)| a))
                    .collect();
                h.sort();
                h
            };
            let en = holes(Language::En);
            assert_eq!(holes(Language::Ca), en, "{m:?} in Catalan");
            assert_eq!(holes(Language::Es), en, "{m:?} in Spanish");
        }
    }

    #[test]
    fn translations_differ_from_english_where_the_words_do() {
        assert_ne!(
            Msg::LoginRefused.text(Language::Ca),
            Msg::LoginRefused.text(Language::En)
        );
        assert_eq!(
            Msg::InviteIntro.with(Language::Es, &[("collective", "Brest")]),
            "Te invitan a entrar en Brest."
        );
    }

    #[test]
    fn the_choice_goes_query_then_cookie_then_browser() {
        assert_eq!(negotiate(Some("ca"), Some("es"), Some("en")), Language::Ca);
        assert_eq!(negotiate(Some("xx"), Some("es"), Some("ca")), Language::Es);
        assert_eq!(
            negotiate(None, None, Some("fr-FR, es;q=0.8, ca;q=0.9")),
            Language::Ca
        );
        assert_eq!(negotiate(None, None, Some("es-ES,es;q=0.9")), Language::Es);
        assert_eq!(negotiate(None, None, Some("ca;q=0, fr")), Language::En);
        assert_eq!(negotiate(None, None, None), Language::En);
        assert_eq!(negotiate(None, None, Some(";;;,q=")), Language::En);
    }
}
