//! The alliance's directory as `provision/alliance/alliance.sh` makes it (the
//! script is what is under test too), and an appliance federated with it,
//! in process: a local slapd, the store, the onboarding service and the
//! federation task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commonscloud::directory::{alliance as remote, ldap as local_ldap};
use commonscloud::federation::{self, Link, Settings, join, rules::Suffixes};
use commonscloud::onboarding::service::Onboarding;
use commonscloud::store::Store;
use ldap3::{Ldap, LdapConnAsync};

use super::flow::{self, Fixture};
use super::{BIN, free_port, repo};

pub const SUFFIX: &str = "dc=alliance,dc=net";
pub const NODE: &str = "box.quimper.example.org";

/// An alliance provider on a free loopback port, stopped on drop.
pub struct Alliance {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    /// With `start_tls` or `start_starttls`: the CA that signed the
    /// alliance's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// An `ldap://` URL on which slapd serves StartTLS.
    pub starttls: bool,
}

/// How the test alliance listens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listen {
    Plain,
    Ldaps,
    StartTls,
}

fn script(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(repo().join("provision/alliance/alliance.sh"))
        .args(args)
        .env("COMMONSCLOUD", BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "alliance.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Alliance {
    /// The alliance on plain `ldap://` (loopback: appliances need
    /// `insecure = true`).
    pub fn start() -> Alliance {
        Self::start_with(Listen::Plain)
    }

    /// The alliance on `ldaps://`, with a certificate for 127.0.0.1 from a
    /// CA of the test's own (`ca_file`).
    pub fn start_tls() -> Alliance {
        Self::start_with(Listen::Ldaps)
    }

    /// The alliance on `ldap://` with a certificate (as `start_tls`), so
    /// slapd offers StartTLS there.
    pub fn start_starttls() -> Alliance {
        Self::start_with(Listen::StartTls)
    }

    fn start_with(listen: Listen) -> Alliance {
        let tls = listen != Listen::Plain;
        let dir = tempfile::Builder::new()
            .prefix("cc-alliance-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let scheme = if listen == Listen::Ldaps {
            "ldaps"
        } else {
            "ldap"
        };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let d = dir.path().join("a");
        let d = d.to_str().unwrap();
        let mut args: Vec<String> = [
            "init", "--dir", d, "--suffix", SUFFIX, "--name", "Alliance", "--listen", &url,
        ]
        .map(String::from)
        .to_vec();
        let mut ca_file = None;
        if tls {
            let (ca, cert, key) = test_pki(dir.path());
            args.extend(["--tls-cert".into(), cert, "--tls-key".into(), key]);
            ca_file = Some(ca);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        script(&args);
        script(&["start", "--dir", d]);
        let a = Alliance {
            dir,
            url,
            port,
            ca_file,
            starttls: listen == Listen::StartTls,
        };
        a.add_appliance("quimper", "Quimper", NODE);
        a.add_appliance("brest", "Brest", "box.brest.example.org");
        a
    }

    pub fn home(&self) -> String {
        self.dir.path().join("a").to_str().unwrap().to_owned()
    }

    pub fn add_appliance(&self, slug: &str, name: &str, node: &str) {
        let pw = self.password_file(node);
        script(&[
            "add-appliance",
            "--dir",
            &self.home(),
            "--collective",
            slug,
            "--collective-name",
            name,
            "--node",
            node,
            "--password-file",
            pw.to_str().unwrap(),
        ]);
    }

    pub fn password_file(&self, node: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{node}.pw"))
    }

    pub fn password(&self, node: &str) -> String {
        std::fs::read_to_string(self.password_file(node))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn account(&self, node: &str) -> String {
        format!("cn={node},ou=appliances,{SUFFIX}")
    }

    pub fn stop(&self) {
        script(&["stop", "--dir", &self.home()]);
    }

    pub fn restart(&self) {
        script(&["start", "--dir", &self.home()]);
    }

    /// The alliance's root over ldapi.
    pub async fn root(&self) -> Ldap {
        let path = self.dir.path().join("a/run/ldapi");
        let url = format!("ldapi://{}", path.to_str().unwrap().replace('/', "%2F"));
        let (conn, mut l) = LdapConnAsync::new(&url).await.unwrap();
        ldap3::drive!(conn);
        l.sasl_external_bind().await.unwrap().success().unwrap();
        l
    }

    /// Breaks the alliance's ACL as a bad edit would: appliances still bind
    /// and search from the suffix, but read nothing else, so a refresh
    /// lists nothing.
    pub async fn hide_everything(&self) {
        let mut root = self.root().await;
        // In order, one value per change: slapd places a value by its {n}
        // among those already there, so a set in any order could misplace.
        let rules = [
            "{0}to attrs=userPassword by anonymous auth by * none".to_owned(),
            format!("{{1}}to dn.base=\"{SUFFIX}\" by * read"),
            "{2}to * by * none".to_owned(),
        ];
        let attr = || "olcAccess".to_owned();
        let one = |r: &String| std::collections::HashSet::from([r.clone()]);
        root.modify(
            "olcDatabase={1}mdb,cn=config",
            vec![
                ldap3::Mod::Replace(attr(), one(&rules[0])),
                ldap3::Mod::Add(attr(), one(&rules[1])),
                ldap3::Mod::Add(attr(), one(&rules[2])),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }

    pub fn person_dn(uid: &str) -> String {
        format!("uid={uid},ou=people,{SUFFIX}")
    }

    /// A person made at the alliance (as its root), homed at `node`, in
    /// `collective`'s members, with a password set by Password Modify.
    pub async fn person(&self, uid: &str, collective: &str, node: &str, pw: &str) -> String {
        let mut root = self.root().await;
        let dn = Self::person_dn(uid);
        let c = format!("ou={collective},ou=collectives,{SUFFIX}");
        root.add(
            &dn,
            vec![
                ("objectClass", ["inetOrgPerson", "commonsPerson"].into()),
                ("uid", [uid].into()),
                ("cn", [uid].into()),
                ("sn", [uid].into()),
                (
                    "mail",
                    [format!("{uid}@{collective}.example.org").as_str()].into(),
                ),
                ("commonsPrimaryCollective", [c.as_str()].into()),
                ("commonsAccountState", ["active"].into()),
                ("commonsHomeNode", [node].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        local_ldap::set_password(&mut root, &dn, pw).await.unwrap();
        self.member(collective, uid, true).await;
        dn
    }

    /// An alliance-wide service (`ou=services`), made as the alliance's root.
    pub async fn service(&self, cn: &str, url: &str) {
        let mut root = self.root().await;
        root.add(
            &format!("cn={cn},ou=services,{SUFFIX}"),
            vec![
                ("objectClass", ["commonsService"].into()),
                ("cn", [cn].into()),
                ("labeledURI", [url].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }

    pub async fn member(&self, collective: &str, uid: &str, add: bool) {
        let mut root = self.root().await;
        let group = format!("cn=members,ou=groups,ou={collective},ou=collectives,{SUFFIX}");
        let res = remote::modify_value(&mut root, &group, "member", &Self::person_dn(uid), add)
            .await
            .unwrap();
        assert!(matches!(res.rc, 0 | 16 | 20), "{res:?}");
    }

    /// One attribute's values at the alliance (empty: absent or no entry).
    pub async fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let mut root = self.root().await;
        values_in(&mut root, dn, attr).await
    }

    pub async fn bind_rc(&self, dn: &str, pw: &str) -> u32 {
        let url = format!("ldap://127.0.0.1:{}", self.port);
        let url = if self.ca_file.is_some() {
            // Checked over ldapi: the test's TLS is the appliance's to prove.
            format!(
                "ldapi://{}",
                self.dir
                    .path()
                    .join("a/run/ldapi")
                    .to_str()
                    .unwrap()
                    .replace('/', "%2F")
            )
        } else {
            url
        };
        let (conn, mut l) = LdapConnAsync::new(&url).await.unwrap();
        ldap3::drive!(conn);
        l.simple_bind(dn, pw).await.unwrap().rc
    }
}

/// A CA and a leaf for 127.0.0.1 signed by it, as PEM files in `dir`:
/// (CA file, certificate chain, key).
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Alliance test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (
        ca_file,
        cert.display().to_string(),
        key.display().to_string(),
    )
}

/// One attribute's values of `dn` (empty: absent, or no such entry).
async fn values_in(l: &mut Ldap, dn: &str, attr: &str) -> Vec<String> {
    remote::read(l, dn, &[attr])
        .await
        .unwrap()
        .and_then(|(_, a)| a.get(&attr.to_ascii_lowercase()).cloned())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

impl Drop for Alliance {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("provision/alliance/alliance.sh"))
            .args(["stop", "--dir", &self.home()])
            .env("COMMONSCLOUD", BIN)
            .output();
    }
}

/// An appliance (the onboarding fixture) federated with an alliance.
pub struct Federated {
    pub fx: Fixture,
    pub link: Arc<Link>,
    /// Shared by the onboarding service and the sync, as in the daemon.
    pub events: commonscloud::events::Bus,
    pub svc: Onboarding,
    pub settings: Settings,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Federated {
    /// A standalone appliance, not yet joined.
    pub async fn new(alliance: &Alliance) -> Federated {
        let fx = flow::fixture().await;
        let link = Arc::new(Link::new(true));
        let events = commonscloud::events::Bus::new();
        let svc = Onboarding::new(
            commonscloud::onboarding::service::Settings {
                tree: fx.inst.tree.clone(),
                ldap: fx.inst.paths.clone(),
                collective_name: "Les Communs de Quimper".into(),
                console_url: "https://box.quimper.example.org".into(),
                admin_email: "admin@quimper.example.org".into(),
                home_node: NODE.into(),
            },
            fx.store.clone(),
            commonscloud::onboarding::service::os_random,
        )
        .with_federation(link.clone())
        .with_events(events.clone());
        let settings = Settings {
            url: alliance.url.clone(),
            bind_dn: alliance.account(NODE),
            password: alliance.password(NODE),
            suffixes: Suffixes::new(fx.inst.config.suffix().as_str(), SUFFIX),
            collective: "quimper".parse().unwrap(),
            node: NODE.into(),
            local: fx.inst.paths.clone(),
            connect_timeout: Duration::from_secs(5),
            console_url: "https://box.quimper.example.org".into(),
            collective_name: "Les Communs de Quimper".into(),
            ca_file: alliance.ca_file.clone(),
            starttls: alliance.starttls,
            // The plain test alliances run on loopback.
            insecure: alliance.ca_file.is_none(),
            deletion_limits: Default::default(),
        };
        Federated {
            fx,
            link,
            events,
            svc,
            settings,
            task: None,
        }
    }

    /// A person registered, verified, approved and with a password, through
    /// the federated service.
    pub async fn active_person(&self, uid: &str, email: &str, password: &str, at: i64) {
        let id = self
            .svc
            .register(&flow::form(uid, email), "192.0.2.1", at)
            .await
            .unwrap()
            .request()
            .unwrap();
        let (_, t) = self.fx.mail(email, "verify");
        self.svc.verify_email(&t, at + 10).await.unwrap();
        self.svc.approve(id, "admin", at + 20).await.unwrap();
        let (_, t) = self.fx.mail(email, "set_password");
        self.svc.set_password(&t, password, at + 30).await.unwrap();
    }

    pub fn store(&self) -> Arc<Mutex<Store>> {
        self.fx.store.clone()
    }

    /// Joins: the checks, the push plan, the enrolment.
    pub async fn join(&self) -> join::PushPlan {
        let (checks, remote) = join::check(&self.settings).await;
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        let mut remote = remote.unwrap();
        let mut local = self.fx.inst.root().await;
        let plan = join::plan_push(&self.settings, &mut local, &mut remote)
            .await
            .unwrap();
        let members = join::memberships(&mut local, &self.settings.suffixes, &self.settings)
            .await
            .unwrap();
        let pw = self.fx.inst.dir.path().join("secrets/alliance-password");
        join::enrol(
            &self.fx.store.lock().unwrap(),
            &self.settings,
            &plan,
            &members,
            &pw,
            flow::T0,
        )
        .unwrap();
        plan
    }

    /// Starts the federation task (as the daemon does).
    pub fn start(&mut self) {
        let t = tokio::spawn(federation::sync::run(
            self.settings.clone(),
            self.fx.store.clone(),
            self.link.clone(),
            self.events.clone(),
        ));
        self.task = Some(t);
    }

    /// Stops it (as a daemon that is killed).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.link.set_up(false, 0, None);
    }

    pub fn local_dn(uid: &str) -> String {
        format!("uid={uid},ou=people,dc=quimper,dc=example,dc=org")
    }

    /// One attribute's values here.
    pub async fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let mut root = self.fx.inst.root().await;
        values_in(&mut root, dn, attr).await
    }

    pub async fn exists(&self, dn: &str) -> bool {
        let mut root = self.fx.inst.root().await;
        remote::read(&mut root, dn, &["1.1"])
            .await
            .unwrap()
            .is_some()
    }

    /// What the federation side knows, for a failing test's message.
    pub fn debug(&self) -> String {
        let s = self.fx.store.lock().unwrap();
        format!(
            "link: {:?}\noutbox: {:#?}\nconflicts: {:#?}",
            self.link.state(),
            s.outbox_recent(20).unwrap(),
            s.conflicts(20).unwrap()
        )
    }

    /// Polls `check` until it holds; on a timeout, says what and what the
    /// federation side knows.
    pub async fn wait<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for: {what}\n{}",
                self.debug()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn outbox(&self) -> commonscloud::store::OutboxStats {
        self.fx.store.lock().unwrap().outbox_stats().unwrap()
    }
}

impl Drop for Federated {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Polls `check` until it holds, or panics after `timeout` saying `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
