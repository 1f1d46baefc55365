//! The directory's shape: DNs, the custom schema, slapd's cn=config and the
//! base entries, rendered as LDIF. Pure: every path, id and setting comes in
//! as an argument, and nothing here touches slapd or the disk.
//!
//! `docs/directory.md` explains the tree to humans; keep the two in step.

use std::fmt::Write as _;

use ldap3::dn_escape;

use crate::model::CollectiveSlug;

/// The OID arc of our schema: `2.25.` + a UUID as an integer (RFC 4122 §
/// "UUID URN as OID"), which needs no registration.
pub const OID_ARC: &str = "2.25.299919642270095222596682888516399147215";

/// Service accounts under `ou=system`, each with its secret in
/// `<secrets_dir>/ldap-<name>` (0600).
pub const SERVICE_ACCOUNTS: [&str; 3] = ["daemon", "nextcloud", "discourse-sso"];

/// DNs of the tree under one suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    suffix: String,
}

impl Tree {
    pub fn new(suffix: &str) -> Self {
        Self {
            suffix: suffix.to_owned(),
        }
    }

    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    pub fn people(&self) -> String {
        format!("ou=people,{}", self.suffix)
    }

    /// A person's entry. The uid is escaped, so no value can change the DN's
    /// shape.
    pub fn person(&self, uid: &str) -> String {
        format!("uid={},{}", dn_escape(uid), self.people())
    }

    pub fn collectives(&self) -> String {
        format!("ou=collectives,{}", self.suffix)
    }

    pub fn collective(&self, slug: &CollectiveSlug) -> String {
        format!("ou={},{}", dn_escape(slug.as_str()), self.collectives())
    }

    pub fn groups(&self, slug: &CollectiveSlug) -> String {
        format!("ou=groups,{}", self.collective(slug))
    }

    pub fn group(&self, slug: &CollectiveSlug, cn: &str) -> String {
        format!("cn={},{}", dn_escape(cn), self.groups(slug))
    }

    pub fn collective_services(&self, slug: &CollectiveSlug) -> String {
        format!("ou=services,{}", self.collective(slug))
    }

    /// A service of a collective (its entry lists the groups that may use it).
    pub fn service(&self, slug: &CollectiveSlug, name: &str) -> String {
        format!("cn={},{}", dn_escape(name), self.collective_services(slug))
    }

    /// The collective and group name of a group DN of this tree, if it is
    /// one (DNs from slapd may differ in case and spacing after commas).
    pub fn group_of(&self, dn: &str) -> Option<(CollectiveSlug, String)> {
        let parts = self.under(dn, &self.collectives(), 3)?;
        let cn = parts[0].strip_prefix("cn=")?;
        if parts[1] != "ou=groups" {
            return None;
        }
        let slug = parts[2].strip_prefix("ou=")?.parse().ok()?;
        // cn comes from slapd; ours are validated names with nothing to escape.
        Some((slug, cn.to_owned()))
    }

    /// The slug of a collective's DN of this tree, if it is one.
    pub fn collective_of(&self, dn: &str) -> Option<CollectiveSlug> {
        let parts = self.under(dn, &self.collectives(), 1)?;
        parts[0].strip_prefix("ou=")?.parse().ok()
    }

    /// The uid of a person's DN of this tree, if it is one.
    pub fn uid_of(&self, dn: &str) -> Option<String> {
        let parts = self.under(dn, &self.people(), 1)?;
        // Ours are validated uids with nothing to escape.
        Some(parts[0].strip_prefix("uid=")?.to_owned())
    }

    /// The `depth` leading RDNs of `dn` (lowercased, trimmed) when the rest
    /// is `base`: DNs from slapd may differ in case and spacing after commas.
    fn under(&self, dn: &str, base: &str, depth: usize) -> Option<Vec<String>> {
        let rdns = |s: &str| {
            s.split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let (parts, tail) = (rdns(dn), rdns(base));
        (parts.len() == tail.len() + depth && parts[depth..] == tail[..]).then_some(parts)
    }

    /// Alliance-wide services, open to every active person.
    pub fn services(&self) -> String {
        format!("ou=services,{}", self.suffix)
    }

    pub fn system(&self) -> String {
        format!("ou=system,{}", self.suffix)
    }

    pub fn service_account(&self, name: &str) -> String {
        format!("cn={},{}", dn_escape(name), self.system())
    }

    pub fn policies(&self) -> String {
        format!("ou=policies,{}", self.suffix)
    }

    pub fn default_policy(&self) -> String {
        format!("cn=default,{}", self.policies())
    }

    /// At the alliance: the service accounts of the appliances.
    pub fn appliances(&self) -> String {
        format!("ou=appliances,{}", self.suffix)
    }

    /// At the alliance: the account an appliance binds as, named by its node
    /// (the console hostname, also its people's `commonsHomeNode`).
    pub fn appliance(&self, node: &str) -> String {
        format!("cn={},{}", dn_escape(node), self.appliances())
    }

    /// Put into a group by refint when its last member goes, so that a
    /// groupOfNames never becomes invalid. It need not exist.
    pub fn nobody(&self) -> String {
        format!("cn=nobody,{}", self.system())
    }
}

/// The DN slapd gives a local process that binds with SASL EXTERNAL over
/// ldapi: the daemon's identity as rootdn, with no password to keep.
pub fn peercred_dn(uid: u32, gid: u32) -> String {
    format!("gidNumber={gid}+uidNumber={uid},cn=peercred,cn=external,cn=auth")
}

/// Our schema, as an entry under `cn=schema,cn=config`.
pub fn schema_ldif() -> String {
    let a = |n: u32| format!("{OID_ARC}.1.{n}");
    let o = |n: u32| format!("{OID_ARC}.2.{n}");
    let dn_syntax = "1.3.6.1.4.1.1466.115.121.1.12";
    let string_syntax = "1.3.6.1.4.1.1466.115.121.1.15";
    format!(
        "dn: cn=commonscloud,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: commonscloud
olcAttributeTypes: ( {} NAME 'commonsPrimaryCollective' DESC 'The collective a person registered with' EQUALITY distinguishedNameMatch SYNTAX {dn_syntax} SINGLE-VALUE )
olcAttributeTypes: ( {} NAME 'commonsAccountState' DESC 'active or suspended' EQUALITY caseIgnoreMatch SYNTAX {string_syntax} SINGLE-VALUE )
olcAttributeTypes: ( {} NAME 'commonsHomeNode' DESC 'The appliance (or the alliance) that owns this entry' EQUALITY caseIgnoreMatch SYNTAX {string_syntax} SINGLE-VALUE )
olcAttributeTypes: ( {} NAME 'commonsAccessGroup' DESC 'A group whose members may use a service' EQUALITY distinguishedNameMatch SYNTAX {dn_syntax} )
olcObjectClasses: ( {} NAME 'commonsPerson' DESC 'A person of the alliance' AUXILIARY MAY ( commonsPrimaryCollective $ commonsAccountState $ commonsHomeNode ) )
olcObjectClasses: ( {} NAME 'commonsCollective' DESC 'A collective' AUXILIARY MAY ( displayName $ description $ labeledURI $ commonsHomeNode ) )
olcObjectClasses: ( {} NAME 'commonsService' DESC 'A service some groups may use' STRUCTURAL MUST cn MAY ( labeledURI $ commonsAccessGroup $ description ) )
",
        a(1),
        a(2),
        a(3),
        a(4),
        o(1),
        o(2),
        o(3),
    )
}

/// Everything slapd's cn=config needs, decided by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapdSettings {
    pub suffix: String,
    /// Where mdb keeps the data (must exist before `slapadd -n0`).
    pub data_dir: String,
    pub pid_file: String,
    pub args_file: String,
    /// The daemon's own identity (see [`peercred_dn`]): rootdn of the data and
    /// manager of cn=config.
    pub root_dn: String,
    /// Debian: `/usr/lib/ldap`.
    pub module_dir: String,
    /// Debian: `/etc/ldap/schema`.
    pub schema_dir: String,
    /// Parameters for the argon2 module, e.g. `m=19456 t=2 p=1`.
    pub argon2_params: String,
}

/// The ACLs of the data, in order. Each rule is proven by a test against slapd.
pub fn acls(suffix: &str) -> Vec<String> {
    let tree = Tree::new(suffix);
    let daemon = tree.service_account("daemon");
    let readers = SERVICE_ACCOUNTS
        .iter()
        .filter(|n| **n != "daemon")
        .map(|n| format!("by dn.exact=\"{}\" read", tree.service_account(n)))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        // Passwords: a person may set their own; binds may compare; nobody reads.
        format!(
            "to attrs=userPassword by dn.exact=\"{daemon}\" =w by self =w by anonymous auth by * none"
        ),
        // Lock state and failure counters are the daemon's alone.
        format!(
            "to attrs=pwdAccountLockedTime,pwdFailureTime,pwdReset,commonsAccountState by dn.exact=\"{daemon}\" write by self read {readers} by * none"
        ),
        // Groups: only the daemon writes; services and members read.
        format!(
            "to dn.subtree=\"{}\" filter=(objectClass=groupOfNames) by dn.exact=\"{daemon}\" write {readers} by users read by * none",
            tree.collectives()
        ),
        // The system accounts and policies: daemon only, and binds.
        format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{daemon}\" write by self read by anonymous auth by * none",
            tree.system()
        ),
        format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{daemon}\" write by * none",
            tree.policies()
        ),
        // Everything else: the daemon writes, services and people read,
        // anonymous may only bind.
        format!(
            "to * by dn.exact=\"{daemon}\" write {readers} by self read by users read by anonymous auth by * none"
        ),
    ]
}

/// The alliance provider's own ACLs. Appliance accounts get nothing here:
/// what each may read and write is granted by its own rules, inserted in
/// front of these ([`appliance_acls`]). People read the directory and set
/// their own password, as on an appliance.
pub fn alliance_acls(suffix: &str) -> Vec<String> {
    let tree = Tree::new(suffix);
    let appliances = tree.appliances();
    vec![
        format!("to attrs=userPassword by self =w by anonymous auth by * none"),
        format!(
            "to attrs=pwdAccountLockedTime,pwdFailureTime,pwdReset,commonsAccountState by self read by * none"
        ),
        format!("to dn.subtree=\"{appliances}\" by self read by anonymous auth by * none"),
        format!("to dn.subtree=\"{}\" by * none", tree.policies()),
        // That a person exists (their DN, not one attribute): syncprov
        // tells an appliance of a delete only if it may read the entry,
        // and a deleted entry has no attributes left for the filters of
        // its rules to match. (No attribute: a search still finds nothing.)
        format!(
            "to dn.one=\"{}\" attrs=entry by dn.one=\"{appliances}\" read by * break",
            tree.people()
        ),
        format!(
            "to * by dn.one=\"{appliances}\" none by self read by users read by anonymous auth by * none"
        ),
    ]
}

/// The rules of one appliance at the alliance, to be inserted in front of
/// [`alliance_acls`] (each ends in `break`, so others fall through): it
/// writes its collective's subtree and the people homed at it (password and
/// account state included, and adding them, but only into its own
/// collective and homed at itself), reads the people of its
/// collective (password hashes included, so logins work offline) and the
/// alliance-wide services, and may search from the suffix.
pub fn appliance_acls(suffix: &str, slug: &CollectiveSlug, node: &str) -> Vec<String> {
    let tree = Tree::new(suffix);
    let me = tree.appliance(node);
    let people = tree.people();
    let node = ldap3::ldap_escape(node);
    vec![
        format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{me}\" write by * break",
            tree.collective(slug)
        ),
        format!(
            "to dn.base=\"{}\" attrs=children by dn.exact=\"{me}\" write by * break",
            tree.people()
        ),
        // The people homed at it. Their password it sets as slapd's
        // password admin (`manage`: it replicates hashes, which the policy's
        // quality check would refuse from anyone else). The two attributes
        // that place a person take one value each: its own collective and
        // itself; a replace needs the whole attribute and is refused, so it
        // can neither move a person into another collective (whose
        // appliance would copy them in) nor hand them to another node.
        format!(
            "to dn.one=\"{people}\" filter=(commonsHomeNode={node}) attrs=userPassword by dn.exact=\"{me}\" manage by * break",
        ),
        format!(
            "to dn.one=\"{people}\" filter=(commonsHomeNode={node}) attrs=commonsPrimaryCollective val.base=\"{}\" by dn.exact=\"{me}\" write by * break",
            tree.collective(slug)
        ),
        format!(
            "to dn.one=\"{people}\" filter=(commonsHomeNode={node}) attrs=commonsHomeNode val=\"{node}\" by dn.exact=\"{me}\" write by * break",
        ),
        format!(
            "to dn.one=\"{people}\" filter=(commonsHomeNode={node}) attrs=commonsPrimaryCollective,commonsHomeNode by dn.exact=\"{me}\" read by * break",
        ),
        format!(
            "to dn.one=\"{people}\" filter=(commonsHomeNode={node}) by dn.exact=\"{me}\" write by * break",
        ),
        format!(
            "to dn.one=\"{}\" filter=(|(commonsPrimaryCollective={})(memberOf={})) by dn.exact=\"{me}\" read by * break",
            tree.people(),
            tree.collective(slug),
            tree.group(slug, "members"),
        ),
        format!(
            "to dn.subtree=\"{}\" by dn.exact=\"{me}\" read by * break",
            tree.services()
        ),
        format!("to dn.base=\"{suffix}\" by dn.exact=\"{me}\" read by * break"),
    ]
}

/// The alliance's base entries: the OUs (with `ou=appliances` for the
/// appliances' accounts and no `ou=system`) and the default password policy.
pub fn alliance_base_ldif(suffix: &str, name: &str) -> String {
    let tree = Tree::new(suffix);
    let mut out = top_entry(suffix, name);
    for (ou, what) in [
        (tree.people(), "people"),
        (tree.collectives(), "collectives"),
        (tree.services(), "services"),
        (tree.appliances(), "appliances"),
        (tree.policies(), "policies"),
    ] {
        let _ = write!(
            out,
            "dn: {ou}\nobjectClass: organizationalUnit\nou: {what}\n\n"
        );
    }
    out.push_str(&policy_ldif(&tree));
    out
}

/// What `alliance.sh add-appliance` applies over ldapi, in order: the
/// appliance's rules inserted in front of the alliance's, its account, and
/// its collective's entries homed at it.
pub fn appliance_ldif(suffix: &str, slug: &CollectiveSlug, name: &str, node: &str) -> String {
    let tree = Tree::new(suffix);
    let mut out =
        "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcAccess\n".to_owned();
    for (i, rule) in appliance_acls(suffix, slug, node).iter().enumerate() {
        let _ = writeln!(out, "olcAccess: {{{i}}}{rule}");
    }
    out.push_str("-\n\n");
    let mut entries = vec![appliance_account(&tree, node)];
    entries.extend(collective_entries(&tree, slug, name, node));
    for e in entries {
        let ldif = e.to_ldif();
        let (first, rest) = ldif.split_once('\n').unwrap_or((&ldif, ""));
        let _ = write!(out, "{first}\nchangetype: add\n{rest}");
    }
    out
}

/// What `alliance.sh upgrade` applies over ldapi to an alliance an older
/// release made: every rule written anew from this release's code (each
/// appliance's, `(collective, node)`, in front of the alliance's own),
/// attribute checks on adds, and the default password policy's settings.
pub fn alliance_upgrade_ldif(suffix: &str, appliances: &[(CollectiveSlug, String)]) -> String {
    let tree = Tree::new(suffix);
    let mut rules: Vec<String> = appliances
        .iter()
        .flat_map(|(slug, node)| appliance_acls(suffix, slug, node))
        .collect();
    rules.extend(alliance_acls(suffix));
    let mut out =
        "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcAccess\n".to_owned();
    for (i, rule) in rules.iter().enumerate() {
        let _ = writeln!(out, "olcAccess: {{{i}}}{rule}");
    }
    out.push_str("-\nreplace: olcAddContentAcl\nolcAddContentAcl: TRUE\n-\n\n");
    let _ = writeln!(out, "dn: {}\nchangetype: modify", tree.default_policy());
    for (k, v) in policy_settings() {
        let _ = write!(out, "replace: {k}\n{k}: {v}\n-\n");
    }
    out
}

/// An appliance's account at the alliance (its password is set afterwards
/// with Password Modify, so slapd hashes it).
pub fn appliance_account(tree: &Tree, node: &str) -> Entry {
    Entry {
        dn: tree.appliance(node),
        attrs: vec![
            (
                "objectClass",
                vec!["applicationProcess".into(), "simpleSecurityObject".into()],
            ),
            ("cn", vec![node.to_owned()]),
            ("userPassword", vec!["{CRYPT}!".into()]),
        ],
    }
}

fn top_entry(suffix: &str, name: &str) -> String {
    let first_rdn = suffix.split(',').next().unwrap_or_default();
    let (attr, value) = first_rdn.split_once('=').unwrap_or(("dc", first_rdn));
    let top = if attr.eq_ignore_ascii_case("dc") {
        format!("objectClass: dcObject\nobjectClass: organization\ndc: {value}\no: {name}\n")
    } else {
        format!("objectClass: organization\n{attr}: {value}\n")
    };
    format!("dn: {suffix}\n{top}\n")
}

/// The shortest password slapd accepts from anyone but its root (a person
/// writing their own over LDAP, or Password Modify as themselves); the
/// console asks for as many characters (`onboarding::service::MIN_PASSWORD`).
/// slapd counts bytes, so the console's rule is the stricter of the two
/// for passwords with non-ASCII characters.
pub const MIN_PASSWORD: usize = 10;

/// The default password policy's settings, in the order written. No lockout
/// on failures (`pwdMaxFailure: 0`): slapd cannot tell an attacker's bind
/// from the person's (Nextcloud binds as them from its own address), so any
/// lockout here would be one a stranger could keep on. `pwdLockout: TRUE`
/// stays, because it is what makes slapd honour the admin's lock
/// ([`super::people::PERMANENT_LOCK`]); `pwdLockoutDuration` only ends
/// temporary locks an older release left. `pwdCheckQuality: 2` makes slapd
/// check `pwdMinLength` and refuse a value it cannot check (one already
/// hashed) from anyone but a password admin.
pub fn policy_settings() -> Vec<(&'static str, String)> {
    vec![
        ("pwdLockout", "TRUE".into()),
        ("pwdMaxFailure", "0".into()),
        ("pwdLockoutDuration", "300".into()),
        ("pwdMinLength", MIN_PASSWORD.to_string()),
        ("pwdCheckQuality", "2".into()),
        ("pwdAllowUserChange", "TRUE".into()),
    ]
}

fn policy_ldif(tree: &Tree) -> String {
    let mut out = format!(
        "dn: {}\nobjectClass: organizationalRole\nobjectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\n",
        tree.default_policy()
    );
    for (k, v) in policy_settings() {
        let _ = writeln!(out, "{k}: {v}");
    }
    out.push('\n');
    out
}

/// One cn=config attribute the daemon keeps as the code says, whatever an
/// older release set: replaced over ldapi when the code's version changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAttr {
    pub dn: String,
    pub attr: &'static str,
    pub values: Vec<String>,
}

/// The cn=config settings that may change between releases and apply live,
/// and the default password policy's. (Module parameters and listen
/// addresses need a restart instead.)
pub fn managed_config(suffix: &str) -> Vec<ConfigAttr> {
    let tree = Tree::new(suffix);
    let mdb = "olcDatabase={1}mdb,cn=config".to_owned();
    let mut out = vec![
        ConfigAttr {
            dn: mdb.clone(),
            attr: "olcAccess",
            values: acls(suffix)
                .into_iter()
                .enumerate()
                .map(|(i, a)| format!("{{{i}}}{a}"))
                .collect(),
        },
        ConfigAttr {
            dn: mdb,
            attr: "olcDbIndex",
            values: INDEXES.iter().map(|s| (*s).to_owned()).collect(),
        },
        ConfigAttr {
            dn: "olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config".into(),
            attr: "olcPPolicyDefault",
            values: vec![tree.default_policy()],
        },
        ConfigAttr {
            dn: "olcDatabase={-1}frontend,cn=config".into(),
            attr: "olcPasswordHash",
            values: vec!["{ARGON2}".into()],
        },
    ];
    // The default policy is an entry of the data, not of cn=config, but it
    // is a setting all the same: kept as this release says.
    out.extend(policy_settings().into_iter().map(|(attr, v)| ConfigAttr {
        dn: tree.default_policy(),
        attr,
        values: vec![v],
    }));
    out
}

/// The managed settings as one text, to tell whether they changed.
pub fn managed_config_text(suffix: &str) -> String {
    managed_config(suffix)
        .iter()
        .flat_map(|c| {
            c.values
                .iter()
                .map(move |v| format!("{}\t{}\t{v}\n", c.dn, c.attr))
        })
        .collect()
}

const INDEXES: [&str; 8] = [
    "objectClass eq",
    "uid eq,pres,sub",
    "mail eq,pres",
    "cn eq,sub",
    "member eq",
    "entryUUID eq",
    "entryCSN eq",
    "commonsPrimaryCollective eq",
];

/// slapd's whole cn=config, for `slapadd -n0`.
pub fn config_ldif(s: &SlapdSettings) -> String {
    render_config(s, Role::Appliance, None)
}

/// Which directory a cn=config is for: an appliance's own, or the alliance's
/// provider (`provision/alliance/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Appliance,
    /// The provider every appliance syncs from. Its memberOf is stored by the
    /// memberof overlay rather than computed by dynlist: syncprov matches a
    /// change against the sync filter on the stored entry, so a person who
    /// joins a collective must change for its appliance to be told.
    Alliance,
}

/// The alliance provider's whole cn=config: the appliance's schema, modules
/// and password hashing, its own ACLs ([`alliance_acls`]; each appliance's
/// rules are inserted in front by [`appliance_acls`]), memberof instead of
/// dynlist.
/// `tls`: the certificate (chain) and key files slapd serves `ldaps://`
/// with.
pub fn alliance_config_ldif(s: &SlapdSettings, tls: Option<(&str, &str)>) -> String {
    render_config(s, Role::Alliance, tls)
}

fn render_config(s: &SlapdSettings, role: Role, tls: Option<(&str, &str)>) -> String {
    let tree = Tree::new(&s.suffix);
    let member_of_module = match role {
        Role::Appliance => "dynlist",
        Role::Alliance => "memberof",
    };
    let mut out = format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {pid}
olcArgsFile: {args}
olcLogLevel: stats
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {modules}
olcModuleLoad: back_mdb
olcModuleLoad: argon2 {argon2}
olcModuleLoad: ppolicy
olcModuleLoad: {member_of_module}
olcModuleLoad: refint
olcModuleLoad: unique
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://{schemas}/core.ldif

include: file://{schemas}/cosine.ldif

include: file://{schemas}/inetorgperson.ldif

include: file://{schemas}/dyngroup.ldif

{schema}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcPasswordHash: {{ARGON2}}
olcAccess: {{0}}to dn.base=\"\" by * read
olcAccess: {{1}}to dn.base=\"cn=subschema\" by * read
olcSizeLimit: 5000

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact=\"{root}\" manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {suffix}
olcRootDN: {root}
olcDbDirectory: {data}
olcDbMaxSize: 1073741824
olcLastMod: TRUE
",
        tls = tls
            .map(|(cert, key)| format!(
                "olcTLSCertificateFile: {cert}\nolcTLSCertificateKeyFile: {key}\n"
            ))
            .unwrap_or_default(),
        pid = s.pid_file,
        args = s.args_file,
        modules = s.module_dir,
        argon2 = s.argon2_params,
        schemas = s.schema_dir,
        schema = schema_ldif(),
        root = s.root_dn,
        suffix = s.suffix,
        data = s.data_dir,
    );
    for index in INDEXES {
        let _ = writeln!(out, "olcDbIndex: {index}");
    }
    if role == Role::Alliance {
        // An appliance's sync reads every entry in its scope in one search,
        // past the frontend's size limit.
        let _ = writeln!(
            out,
            "olcLimits: dn.children=\"{}\" size=unlimited time=unlimited",
            tree.appliances()
        );
        // Without it slapd checks only the entry, not its attributes, on an
        // add: an appliance could add a person straight into another
        // collective ([`appliance_acls`] limits the values it may write).
        let _ = writeln!(out, "olcAddContentAcl: TRUE");
    }
    let rules = match role {
        Role::Appliance => acls(&s.suffix),
        Role::Alliance => alliance_acls(&s.suffix),
    };
    for (i, acl) in rules.iter().enumerate() {
        let _ = writeln!(out, "olcAccess: {{{i}}}{acl}");
    }
    let member_of = match role {
        // memberOf without the deprecated memberof overlay: computed from
        // groupOfNames members at search time (filters on memberOf work).
        Role::Appliance => "objectClass: olcDynListConfig\nolcOverlay: {1}dynlist\nolcDynListAttrSet: groupOfURLs memberURL member+memberOf@groupOfNames\n".to_owned(),
        Role::Alliance => "objectClass: olcMemberOfConfig\nolcOverlay: {1}memberof\nolcMemberOfRefInt: TRUE\nolcMemberOfGroupOC: groupOfNames\nolcMemberOfMemberAD: member\nolcMemberOfMemberOfAD: memberOf\n".to_owned(),
    };
    let overlays = [
        format!(
            "objectClass: olcPPolicyConfig\nolcOverlay: {{0}}ppolicy\nolcPPolicyDefault: {}\nolcPPolicyHashCleartext: TRUE\n",
            tree.default_policy()
        ),
        member_of,
        format!(
            "objectClass: olcRefintConfig\nolcOverlay: {{2}}refint\nolcRefintAttribute: member\nolcRefintNothing: {}\n",
            tree.nobody()
        ),
        format!(
            "objectClass: olcUniqueConfig\nolcOverlay: {{3}}unique\nolcUniqueURI: ldap:///{0}?uid?sub?(objectClass=inetOrgPerson)\nolcUniqueURI: ldap:///{0}?mail?sub?(objectClass=inetOrgPerson)\n",
            s.suffix
        ),
        "objectClass: olcSyncProvConfig\nolcOverlay: {4}syncprov\nolcSpCheckpoint: 100 10\nolcSpSessionlog: 1000\n".to_owned(),
    ];
    for body in overlays {
        let name = body
            .lines()
            .find_map(|l| l.strip_prefix("olcOverlay: "))
            .unwrap_or_default();
        let _ = write!(
            out,
            "\ndn: olcOverlay={name},olcDatabase={{1}}mdb,cn=config\nobjectClass: olcOverlayConfig\n{body}"
        );
    }
    out
}

/// An entry to add: its DN and attributes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: Vec<(&'static str, Vec<String>)>,
}

impl Entry {
    /// LDIF for `slapadd`. Values here come from validated config and slugs;
    /// anything else would need base64.
    pub fn to_ldif(&self) -> String {
        let mut out = format!("dn: {}\n", self.dn);
        for (attr, values) in &self.attrs {
            for v in values {
                let _ = writeln!(out, "{attr}: {v}");
            }
        }
        out.push('\n');
        out
    }
}

/// Groups every collective has; they cannot be created or removed by hand.
pub const BUILTIN_GROUPS: [&str; 2] = ["members", "admins"];

/// A collective's entries: its OU, `ou=groups` with the built-in groups
/// (each holding [`Tree::nobody`] so that groupOfNames stays valid), and
/// `ou=services`.
pub fn collective_entries(
    tree: &Tree,
    slug: &CollectiveSlug,
    name: &str,
    home_node: &str,
) -> Vec<Entry> {
    let one = |v: &str| vec![v.to_owned()];
    let mut out = vec![
        Entry {
            dn: tree.collective(slug),
            attrs: vec![
                (
                    "objectClass",
                    vec!["organizationalUnit".into(), "commonsCollective".into()],
                ),
                ("ou", one(slug.as_str())),
                ("displayName", one(name)),
                ("commonsHomeNode", one(home_node)),
            ],
        },
        Entry {
            dn: tree.groups(slug),
            attrs: vec![
                ("objectClass", one("organizationalUnit")),
                ("ou", one("groups")),
            ],
        },
        Entry {
            dn: tree.collective_services(slug),
            attrs: vec![
                ("objectClass", one("organizationalUnit")),
                ("ou", one("services")),
            ],
        },
    ];
    out.extend(BUILTIN_GROUPS.iter().map(|cn| group_entry(tree, slug, cn)));
    out
}

/// A group's name in the apps (Nextcloud shows `description`): unique
/// across collectives, where `cn` (members, admins) is not.
pub fn group_display_name(slug: &CollectiveSlug, cn: &str) -> String {
    format!("{slug}-{cn}")
}

/// Changes to the data of existing directories, in order; the version
/// reached is kept in the store. Append only. 1: groups get the
/// `description` the apps show as their name.
pub const TREE_VERSION: u32 = 1;

/// An empty group (it holds [`Tree::nobody`]).
pub fn group_entry(tree: &Tree, slug: &CollectiveSlug, cn: &str) -> Entry {
    Entry {
        dn: tree.group(slug, cn),
        attrs: vec![
            ("objectClass", vec!["groupOfNames".into()]),
            ("cn", vec![cn.to_owned()]),
            ("description", vec![group_display_name(slug, cn)]),
            ("member", vec![tree.nobody()]),
        ],
    }
}

/// The base entries, for `slapadd -n1` at bootstrap: the OUs, the collective
/// with its groups, the default password policy and the service accounts
/// (without passwords: those are set over ldapi, so slapd hashes them).
pub fn base_ldif(
    suffix: &str,
    slug: &CollectiveSlug,
    collective_name: &str,
    home_node: &str,
) -> String {
    let tree = Tree::new(suffix);
    let mut out = top_entry(suffix, collective_name);
    for (ou, what) in [
        (tree.people(), "people"),
        (tree.collectives(), "collectives"),
        (tree.services(), "services"),
        (tree.system(), "system"),
        (tree.policies(), "policies"),
    ] {
        let _ = write!(
            out,
            "dn: {ou}\nobjectClass: organizationalUnit\nou: {what}\n\n"
        );
    }
    for e in collective_entries(&tree, slug, collective_name, home_node) {
        out.push_str(&e.to_ldif());
    }
    out.push_str(&policy_ldif(&tree));
    for name in SERVICE_ACCOUNTS {
        let _ = write!(
            out,
            "dn: {}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: {name}\nuserPassword: {{CRYPT}}!\n\n",
            tree.service_account(name)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slug() -> CollectiveSlug {
        "quimper".parse().unwrap()
    }

    #[test]
    fn dns_escape_their_values() {
        let t = Tree::new("dc=q,dc=org");
        assert_eq!(t.person("ana"), "uid=ana,ou=people,dc=q,dc=org");
        assert_eq!(
            t.person("a,b=c+d"),
            "uid=a\\2cb\\3dc\\2bd,ou=people,dc=q,dc=org"
        );
        assert_eq!(
            t.group(&slug(), "members"),
            "cn=members,ou=groups,ou=quimper,ou=collectives,dc=q,dc=org"
        );
        assert_eq!(
            t.service_account("nextcloud"),
            "cn=nextcloud,ou=system,dc=q,dc=org"
        );
    }

    #[test]
    fn group_dns_parse_back_to_collective_and_name() {
        let t = Tree::new("dc=q,dc=org");
        let g = t.group(&slug(), "admins");
        assert_eq!(t.group_of(&g), Some((slug(), "admins".into())));
        assert_eq!(
            t.group_of("CN=Members, ou=Groups,OU=quimper,ou=collectives,DC=q,dc=org"),
            Some((slug(), "members".into()))
        );
        for not_a_group in [
            t.person("ana"),
            t.groups(&slug()),
            t.service(&slug(), "cloud"),
            "cn=members,ou=groups,ou=quimper,ou=collectives,dc=other,dc=org".into(),
            "cn=x,ou=groups,ou=Not A Slug,ou=collectives,dc=q,dc=org".into(),
        ] {
            assert_eq!(t.group_of(&not_a_group), None, "{not_a_group}");
        }
    }

    #[test]
    fn person_and_collective_dns_parse_back() {
        let t = Tree::new("dc=q,dc=org");
        assert_eq!(t.uid_of(&t.person("ana")).as_deref(), Some("ana"));
        assert_eq!(
            t.uid_of("uid=ana, ou=People,DC=q,dc=org").as_deref(),
            Some("ana")
        );
        assert_eq!(t.uid_of("uid=ana,ou=people,dc=other,dc=org"), None);
        assert_eq!(t.uid_of(&t.group(&slug(), "members")), None);
        assert_eq!(t.collective_of(&t.collective(&slug())), Some(slug()));
        assert_eq!(t.collective_of(&t.groups(&slug())), None);
        assert_eq!(t.collective_of("ou=x y,ou=collectives,dc=q,dc=org"), None);
    }

    #[test]
    fn collective_entries_hold_the_builtin_groups() {
        let t = Tree::new("dc=q,dc=org");
        let e = collective_entries(&t, &slug(), "Quimper", "box.q.org");
        let dns: Vec<&str> = e.iter().map(|e| e.dn.as_str()).collect();
        assert_eq!(dns[0], t.collective(&slug()));
        assert!(dns.contains(&t.group(&slug(), "admins").as_str()));
        assert!(dns.contains(&t.collective_services(&slug()).as_str()));
        assert!(
            e.iter()
                .all(|e| e.to_ldif().starts_with(&format!("dn: {}\n", e.dn)))
        );
    }

    #[test]
    fn oid_arc_is_a_uuid_integer() {
        let n: u128 = OID_ARC.strip_prefix("2.25.").unwrap().parse().unwrap();
        assert!(n > u128::from(u64::MAX));
        let schema = schema_ldif();
        assert_eq!(schema.matches(OID_ARC).count(), 7);
        for name in [
            "commonsPerson",
            "commonsCollective",
            "commonsService",
            "commonsAccountState",
        ] {
            assert!(schema.contains(&format!("NAME '{name}'")), "{name}");
        }
    }

    #[test]
    fn config_has_every_module_overlay_and_acl() {
        let s = SlapdSettings {
            suffix: "dc=q,dc=org".into(),
            data_dir: "/s/ldap/data".into(),
            pid_file: "/r/slapd.pid".into(),
            args_file: "/r/slapd.args".into(),
            root_dn: peercred_dn(1000, 1000),
            module_dir: "/usr/lib/ldap".into(),
            schema_dir: "/etc/ldap/schema".into(),
            argon2_params: "m=19456 t=2 p=1".into(),
        };
        let ldif = config_ldif(&s);
        for needle in [
            "olcModuleLoad: argon2 m=19456 t=2 p=1",
            "olcPasswordHash: {ARGON2}",
            "olcPPolicyHashCleartext: TRUE",
            "olcDynListAttrSet: groupOfURLs memberURL member+memberOf@groupOfNames",
            "olcRefintNothing: cn=nobody,ou=system,dc=q,dc=org",
            "olcUniqueURI: ldap:///dc=q,dc=org?uid?sub",
            "olcUniqueURI: ldap:///dc=q,dc=org?mail?sub",
            "olcOverlay: {4}syncprov",
            "olcRootDN: gidNumber=1000+uidNumber=1000,cn=peercred,cn=external,cn=auth",
            "olcDbDirectory: /s/ldap/data",
        ] {
            assert!(ldif.contains(needle), "{needle}");
        }
        assert_eq!(
            ldif.matches("olcAccess: {").count(),
            2 + 1 + acls("dc=q,dc=org").len()
        );
        // Entries are separated by exactly one blank line (LDIF).
        assert!(!ldif.contains("\n\n\n"));
    }

    #[test]
    fn the_alliance_has_memberof_and_no_size_limit_for_appliances() {
        let s = SlapdSettings {
            suffix: "dc=a,dc=net".into(),
            data_dir: "/d".into(),
            pid_file: "/p".into(),
            args_file: "/a".into(),
            root_dn: peercred_dn(0, 0),
            module_dir: "/m".into(),
            schema_dir: "/s".into(),
            argon2_params: String::new(),
        };
        let ldif = alliance_config_ldif(&s, Some(("/c.pem", "/k.pem")));
        for needle in [
            "olcModuleLoad: memberof",
            "olcOverlay: {1}memberof",
            "olcLimits: dn.children=\"ou=appliances,dc=a,dc=net\" size=unlimited time=unlimited",
            "olcOverlay: {4}syncprov",
            "olcTLSCertificateFile: /c.pem\nolcTLSCertificateKeyFile: /k.pem\n",
            "olcAddContentAcl: TRUE\n",
        ] {
            assert!(ldif.contains(needle), "{needle}");
        }
        assert!(!ldif.contains("dynlist"));
        assert!(!config_ldif(&s).contains("olcTLS"));
        assert!(!config_ldif(&s).contains("olcLimits"));
        let rules = appliance_acls("dc=a,dc=net", &slug(), "box.q.org");
        assert!(rules.iter().all(|r| r.ends_with("by * break")));
        assert!(rules[2].contains("filter=(commonsHomeNode=box.q.org)"));
        assert!(rules[3].contains(
            "attrs=commonsPrimaryCollective val.base=\"ou=quimper,ou=collectives,dc=a,dc=net\""
        ));
        assert!(rules[4].contains("attrs=commonsHomeNode val=\"box.q.org\""));
    }

    #[test]
    fn an_alliance_upgrade_rewrites_every_rule_and_the_policy() {
        let apps = [
            (slug(), "box.q.org".to_owned()),
            ("brest".parse().unwrap(), "box.b.org".to_owned()),
        ];
        let ldif = alliance_upgrade_ldif("dc=a,dc=net", &apps);
        let rules = ldif.matches("\nolcAccess: {").count();
        assert_eq!(
            rules,
            2 * appliance_acls("dc=a,dc=net", &slug(), "x.org").len()
                + alliance_acls("dc=a,dc=net").len()
        );
        assert!(ldif.starts_with("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcAccess\nolcAccess: {0}"));
        assert!(ldif.contains("val.base=\"ou=brest,ou=collectives,dc=a,dc=net\""));
        assert!(ldif.contains("replace: olcAddContentAcl\nolcAddContentAcl: TRUE\n"));
        assert!(ldif.contains("dn: cn=default,ou=policies,dc=a,dc=net\nchangetype: modify\n"));
        assert!(ldif.contains("replace: pwdMaxFailure\npwdMaxFailure: 0\n-\n"));
        assert!(ldif.ends_with("-\n"));
    }

    #[test]
    fn managed_settings_are_those_bootstrap_writes() {
        let s = SlapdSettings {
            suffix: "dc=q,dc=org".into(),
            data_dir: "/d".into(),
            pid_file: "/p".into(),
            args_file: "/a".into(),
            root_dn: peercred_dn(0, 0),
            module_dir: "/m".into(),
            schema_dir: "/s".into(),
            argon2_params: String::new(),
        };
        let ldif = config_ldif(&s);
        let base = base_ldif("dc=q,dc=org", &slug(), "Quimper", "box.q.org");
        let policy = Tree::new("dc=q,dc=org").default_policy();
        let policy_entry = base
            .split("\n\n")
            .find(|e| e.starts_with(&format!("dn: {policy}\n")))
            .unwrap()
            .to_owned()
            + "\n";
        for c in managed_config("dc=q,dc=org") {
            let written = if c.dn == policy { &policy_entry } else { &ldif };
            for v in &c.values {
                assert!(
                    written.contains(&format!("{}: {v}\n", c.attr)),
                    "{}: {v}",
                    c.attr
                );
            }
        }
        assert!(managed_config_text("dc=q,dc=org").contains("olcAccess\t{0}to attrs=userPassword"));
    }

    #[test]
    fn base_tree_has_the_design_ous() {
        let ldif = base_ldif("dc=q,dc=org", &slug(), "Quimper", "box.q.org");
        for dn in [
            "dn: dc=q,dc=org",
            "dn: ou=people,dc=q,dc=org",
            "dn: ou=collectives,dc=q,dc=org",
            "dn: ou=quimper,ou=collectives,dc=q,dc=org",
            "dn: cn=members,ou=groups,ou=quimper,ou=collectives,dc=q,dc=org",
            "dn: cn=admins,ou=groups,ou=quimper,ou=collectives,dc=q,dc=org",
            "dn: ou=services,ou=quimper,ou=collectives,dc=q,dc=org",
            "dn: ou=services,dc=q,dc=org",
            "dn: cn=default,ou=policies,dc=q,dc=org",
            "dn: cn=daemon,ou=system,dc=q,dc=org",
            "dn: cn=nextcloud,ou=system,dc=q,dc=org",
            "dn: cn=discourse-sso,ou=system,dc=q,dc=org",
        ] {
            assert!(ldif.contains(&format!("{dn}\n")), "{dn}");
        }
        assert!(ldif.contains("pwdLockout: TRUE"));
        // No lockout a stranger could cause; the length is checked.
        assert!(ldif.contains("pwdMaxFailure: 0\n"));
        assert!(ldif.contains("pwdCheckQuality: 2\n"));
        assert!(ldif.contains(&format!("pwdMinLength: {MIN_PASSWORD}\n")));
    }
}
