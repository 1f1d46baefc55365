//! `commonscloud directory check`: a self-test of the running slapd's
//! schema, modules, overlays, ACLs, tree and service accounts. It reads and
//! binds; it writes nothing.

use ldap3::{Scope, SearchEntry};

use super::slapd::Paths;
use super::tree::{self, SERVICE_ACCOUNTS, Tree};
use super::{DirectoryError, ldap};
use crate::doctor::{Check, Level};

fn check(name: &'static str, ok: bool, message: String, fix: &str) -> Check {
    Check {
        name,
        level: if ok { Level::Ok } else { Level::Fail },
        message,
        fix: if ok { String::new() } else { fix.to_owned() },
    }
}

async fn values(
    root: &mut ldap3::Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attr: &str,
) -> Result<Vec<String>, DirectoryError> {
    let (entries, _) = root
        .search(base, scope, filter, vec![attr])
        .await
        .and_then(|r| r.success())
        .map_err(|e| DirectoryError::Ldap {
            what: format!("searching {base}"),
            source: Box::new(e),
        })?;
    Ok(entries
        .into_iter()
        .map(SearchEntry::construct)
        .flat_map(|e| e.attrs.get(attr).cloned().unwrap_or_default())
        .collect())
}

/// Runs every check; a slapd that does not answer is one failed check.
pub async fn run(paths: &Paths, suffix: &str, secrets_dir: &std::path::Path) -> Vec<Check> {
    let fix_restart = "restart the daemon (`systemctl restart commonscloud`): it re-applies the settings; if this persists, report a bug with `commonscloud directory export`";
    let mut root = match ldap::connect_root(paths).await {
        Ok(r) => r,
        Err(e) => {
            return vec![check(
                "slapd",
                false,
                e.to_string(),
                "start the daemon, which starts slapd; see `commonscloud status`",
            )];
        }
    };
    let mut out = vec![check(
        "slapd",
        true,
        format!("answers on {}", paths.ldapi.display()),
        "",
    )];
    let schema = values(
        &mut root,
        "cn=schema,cn=config",
        Scope::OneLevel,
        "(cn=*commonscloud)",
        "cn",
    )
    .await
    .unwrap_or_default();
    out.push(check(
        "schema",
        !schema.is_empty(),
        if schema.is_empty() {
            "our schema is not loaded".into()
        } else {
            format!("{} loaded (OID arc {})", schema[0], tree::OID_ARC)
        },
        fix_restart,
    ));
    let modules = values(
        &mut root,
        "cn=config",
        Scope::OneLevel,
        "(objectClass=olcModuleList)",
        "olcModuleLoad",
    )
    .await
    .unwrap_or_default();
    let missing: Vec<&str> = [
        "argon2", "ppolicy", "dynlist", "refint", "unique", "syncprov",
    ]
    .into_iter()
    .filter(|m| !modules.iter().any(|l| l.contains(m)))
    .collect();
    out.push(check(
        "modules",
        missing.is_empty(),
        if missing.is_empty() {
            "argon2, ppolicy, dynlist, refint, unique, syncprov".into()
        } else {
            format!("not loaded: {}", missing.join(", "))
        },
        "reinstall slapd (`apt install --reinstall slapd`) and restart the daemon",
    ));
    let overlays = values(
        &mut root,
        "olcDatabase={1}mdb,cn=config",
        Scope::OneLevel,
        "(objectClass=olcOverlayConfig)",
        "olcOverlay",
    )
    .await
    .unwrap_or_default();
    let missing: Vec<&str> = ["ppolicy", "dynlist", "refint", "unique", "syncprov"]
        .into_iter()
        .filter(|o| !overlays.iter().any(|l| l.ends_with(o)))
        .collect();
    out.push(check(
        "overlays",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} on the data", overlays.join(", "))
        } else {
            format!("missing: {}", missing.join(", "))
        },
        fix_restart,
    ));
    let acls = values(
        &mut root,
        "olcDatabase={1}mdb,cn=config",
        Scope::Base,
        "(objectClass=*)",
        "olcAccess",
    )
    .await
    .unwrap_or_default();
    let want = tree::acls(suffix).len();
    let acl_ok = acls.len() == want && acls.first().is_some_and(|a| a.contains("userPassword"));
    out.push(check(
        "acls",
        acl_ok,
        format!("{} rules (this release has {want})", acls.len()),
        fix_restart,
    ));
    let t = Tree::new(suffix);
    let mut absent = Vec::new();
    for dn in [
        t.people(),
        t.collectives(),
        t.services(),
        t.system(),
        t.policies(),
        t.default_policy(),
    ] {
        if !matches!(
            ldap::read(&mut root, &dn, &["objectClass"]).await,
            Ok(Some(_))
        ) {
            absent.push(dn);
        }
    }
    out.push(check(
        "tree",
        absent.is_empty(),
        if absent.is_empty() {
            format!("the base entries under {suffix} are there")
        } else {
            format!("missing: {}", absent.join("; "))
        },
        "restore from a backup (`commonscloud backup restore`), or report a bug",
    ));
    let url = paths.ldapi_url();
    let mut bad = Vec::new();
    for name in SERVICE_ACCOUNTS {
        let secret =
            std::fs::read_to_string(secrets_dir.join(format!("ldap-{name}"))).unwrap_or_default();
        if !matches!(
            ldap::check_password(&url, &t.service_account(name), secret.trim()).await,
            Ok(true)
        ) {
            bad.push(name);
        }
    }
    out.push(check(
        "accounts",
        bad.is_empty(),
        if bad.is_empty() {
            "daemon, nextcloud and discourse-sso bind with their secrets".into()
        } else {
            format!("cannot bind: {}", bad.join(", "))
        },
        "restart the daemon: it resets service account passwords from the secret files",
    ));
    // The most important rule, exercised: an account reads its own entry but
    // not the password in it (write-only, even for itself).
    let secret = std::fs::read_to_string(secrets_dir.join("ldap-nextcloud")).unwrap_or_default();
    let leak = async {
        let fail = |what: &str| {
            let what = what.to_owned();
            move |e: ldap3::LdapError| format!("{what}: {e}")
        };
        let (conn, mut l) = ldap3::LdapConnAsync::new(&url)
            .await
            .map_err(fail("connect"))?;
        ldap3::drive!(conn);
        l.simple_bind(&t.service_account("nextcloud"), secret.trim())
            .await
            .and_then(|r| r.success())
            .map_err(fail("bind"))?;
        let (entries, _) = l
            .search(
                &t.service_account("nextcloud"),
                Scope::Base,
                "(objectClass=*)",
                vec!["userPassword", "cn"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(fail("search"))?;
        let e = SearchEntry::construct(entries.into_iter().next().ok_or("no entry")?);
        Ok::<_, String>(
            e.attrs.contains_key("userPassword") || e.bin_attrs.contains_key("userPassword"),
        )
    }
    .await;
    out.push(check(
        "password acl",
        leak == Ok(false),
        match leak {
            Ok(false) => "an account reads its entry but not its userPassword".into(),
            Ok(true) => "a service account can read userPassword!".into(),
            Err(e) => format!("could not run the test as the nextcloud account: {e}"),
        },
        fix_restart,
    ));
    let _ = root.unbind().await;
    out
}
