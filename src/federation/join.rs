//! Joining the alliance: the checks made before anything changes (the link,
//! the suffix, the account's rights on this collective), what a standalone
//! appliance would push up (`--dry-run` shows it), and the enrolment: the
//! password file (0600), the store's record, and the push queued in the
//! outbox, where the replay reports each collision instead of overwriting.

use std::path::Path;

use ldap3::Ldap;

use super::outbox::{self, Change};
use super::rules::{Suffixes, normalize_dn};
use super::{FederationError, Settings};
use crate::directory::alliance;
use crate::directory::tree::Tree;
use crate::store::{Enrolment, Store};

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub message: String,
}

/// What joining pushes up.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushPlan {
    /// Entries the alliance does not show us: they will be added (a uid or
    /// mail held by someone outside this collective is only found then, and
    /// reported as a conflict).
    pub add: Vec<String>,
    /// Entries already at the alliance, as ours.
    pub present: Vec<String>,
    /// People whose uid is someone else's at the alliance: never
    /// overwritten, reported.
    pub collisions: Vec<String>,
    /// Group memberships to push.
    pub memberships: usize,
    /// The suffix is rewritten from ours to the alliance's.
    pub rewrite: Option<(String, String)>,
}

/// The checks, in order; the first that fails ends them. Returns the
/// connection when every one passed.
pub async fn check(settings: &Settings) -> (Vec<Check>, Option<Ldap>) {
    let mut out = Vec::new();
    let mut remote = match settings.connect().await {
        Ok(l) => {
            out.push(Check {
                name: "link",
                ok: true,
                message: format!(
                    "{} answers over {} and accepts {}",
                    settings.url,
                    settings
                        .security()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    settings.bind_dn
                ),
            });
            l
        }
        Err(FederationError::Security(e)) => {
            out.push(Check {
                name: "link",
                ok: false,
                message: e.to_string(),
            });
            return (out, None);
        }
        Err(e) => {
            out.push(Check {
                name: "link",
                ok: false,
                message: format!(
                    "{e}; check the URL, that port's firewall, the CA file (for TLS), the bind DN and the password file"
                ),
            });
            return (out, None);
        }
    };
    let suffix = &settings.suffixes.alliance;
    let contexts = match alliance::read(&mut remote, "", &["namingContexts"]).await {
        Ok(Some((_, a))) => a.get("namingcontexts").cloned().unwrap_or_default(),
        _ => Default::default(),
    };
    let found = contexts
        .iter()
        .any(|c| normalize_dn(c) == normalize_dn(suffix));
    out.push(Check {
        name: "suffix",
        ok: found,
        message: if found {
            format!("the alliance serves {suffix}")
        } else {
            format!(
                "the alliance serves {} but not {suffix}: give the alliance's suffix (--suffix or alliance.suffix)",
                contexts.into_iter().collect::<Vec<_>>().join(", ")
            )
        },
    });
    if !found {
        return (out, None);
    }
    let tree = Tree::new(suffix);
    let dn = tree.collective(&settings.collective);
    let entry = alliance::read(&mut remote, &dn, &["commonsHomeNode"]).await;
    let home = match entry {
        Ok(Some((_, a))) => a
            .get("commonshomenode")
            .and_then(|v| v.iter().next().cloned())
            .unwrap_or_default(),
        _ => {
            out.push(Check {
                name: "collective",
                ok: false,
                message: format!(
                    "{} cannot read {dn}: at the alliance, run `alliance.sh add-appliance --collective {} --node {} …`",
                    settings.bind_dn, settings.collective, settings.node
                ),
            });
            return (out, None);
        }
    };
    if !home.eq_ignore_ascii_case(&settings.node) {
        out.push(Check {
            name: "collective",
            ok: false,
            message: format!(
                "the alliance says {} is homed at \"{home}\", not at this appliance (\"{}\"): the node name is the console hostname",
                settings.collective, settings.node
            ),
        });
        return (out, None);
    }
    out.push(Check {
        name: "collective",
        ok: true,
        message: format!("{dn} is homed here"),
    });
    // Rewriting a value with itself proves the right to write, changing nothing.
    let write = alliance::modify(
        &mut remote,
        &dn,
        &[super::rules::AttrChange::Replace(
            "commonsHomeNode".into(),
            [home.clone()].into(),
        )],
        None,
    )
    .await;
    let ok = matches!(&write, Ok(r) if r.rc == 0);
    out.push(Check {
        name: "acl",
        ok,
        message: if ok {
            format!("{} may write {dn}", settings.bind_dn)
        } else {
            format!(
                "{} may not write {dn} ({}): at the alliance, add the appliance with `alliance.sh add-appliance`",
                settings.bind_dn,
                match &write {
                    Ok(r) => r.text.clone(),
                    Err(e) => e.to_string(),
                }
            )
        },
    });
    (out, ok.then_some(remote))
}

/// What joining would push, from the local directory and what the alliance
/// shows this account.
pub async fn plan_push(
    settings: &Settings,
    local: &mut Ldap,
    remote: &mut Ldap,
) -> Result<PushPlan, FederationError> {
    let sx = &settings.suffixes;
    let local_tree = Tree::new(&sx.local);
    let mut plan = PushPlan {
        rewrite: (normalize_dn(&sx.local) != normalize_dn(&sx.alliance))
            .then(|| (sx.local.clone(), sx.alliance.clone())),
        ..PushPlan::default()
    };
    let mut entries = alliance::search(
        local,
        &local_tree.collective(&settings.collective),
        "(objectClass=*)",
        &["member"],
    )
    .await?;
    entries.sort_by_key(|(d, _)| d.split(',').count());
    for (dn, a) in &entries {
        plan.memberships += a
            .get("member")
            .map(|m| m.iter().filter(|d| **d != local_tree.nobody()).count())
            .unwrap_or_default();
        match alliance::read(remote, &sx.to_alliance(dn), &["1.1"]).await? {
            Some(_) => plan.present.push(dn.clone()),
            None => plan.add.push(dn.clone()),
        }
    }
    let people = alliance::search(
        local,
        &local_tree.people(),
        "(objectClass=commonsPerson)",
        &["uid", "mail", "commonsHomeNode"],
    )
    .await?;
    for (dn, here) in people {
        let there =
            alliance::read(remote, &sx.to_alliance(&dn), &["mail", "commonsHomeNode"]).await?;
        match there {
            None => plan.add.push(dn),
            Some((_, there)) => {
                let mail = |a| super::rules::first(a, "mail");
                if mail(&here).eq_ignore_ascii_case(mail(&there)) {
                    plan.present.push(dn);
                } else {
                    plan.collisions.push(dn);
                }
            }
        }
    }
    Ok(plan)
}

/// Records the enrolment and queues the push, in one transaction; writes
/// the password file (0600) first.
pub fn enrol(
    store: &Store,
    settings: &Settings,
    plan: &PushPlan,
    members: &[(String, Vec<String>)],
    password_file: &Path,
    now: i64,
) -> Result<(), FederationError> {
    crate::sys::write_atomic(password_file, settings.password.as_bytes(), 0o600).map_err(
        |source| FederationError::Password {
            path: password_file.to_owned(),
            source,
        },
    )?;
    store.atomically(|s| {
        s.enrol(&Enrolment {
            url: settings.url.clone(),
            bind_dn: settings.bind_dn.clone(),
            suffix: settings.suffixes.alliance.clone(),
            node: settings.node.clone(),
            joined_at: now,
            ca_file: settings.ca_file.as_ref().map(|p| p.display().to_string()),
            starttls: settings.starttls,
        })?;
        for dn in &plan.add {
            outbox::push(s, now, &Change::Add { dn: dn.clone() })?;
        }
        for (group, ms) in members {
            for m in ms {
                outbox::push(
                    s,
                    now,
                    &Change::Member {
                        group: group.clone(),
                        member: m.clone(),
                        added: true,
                    },
                )?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// The group memberships of our collective (member DNs but the placeholder).
pub async fn memberships(
    local: &mut Ldap,
    suffixes: &Suffixes,
    settings: &Settings,
) -> Result<Vec<(String, Vec<String>)>, FederationError> {
    let tree = Tree::new(&suffixes.local);
    let groups = alliance::search(
        local,
        &tree.groups(&settings.collective),
        "(objectClass=groupOfNames)",
        &["member"],
    )
    .await?;
    Ok(groups
        .into_iter()
        .map(|(dn, a)| {
            let ms = a
                .get("member")
                .map(|m| {
                    m.iter()
                        .filter(|d| normalize_dn(d) != normalize_dn(&tree.nobody()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (dn, ms)
        })
        .collect())
}
