//! A slapd instance of the appliance's own making, for tests of the
//! directory and of what builds on it.

use commonscloud::config::{self, Config};
use commonscloud::directory::slapd::{self, Bootstrap, Paths};
use commonscloud::directory::{ldap, tree::Tree};
use ldap3::{Ldap, LdapConnAsync, Mod};

use super::free_port;

/// A slapd instance of its own, on a free port, stopped on drop.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub paths: Paths,
    pub url: String,
    pub tree: Tree,
}

impl Instance {
    pub async fn start() -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("cc-dir-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let text = format!(
            "[collective]\nname = \"Quimper\"\nslug = \"quimper\"\ndomain = \"quimper.example.org\"\nadmin_email = \"admin@quimper.example.org\"\n\
             [hardware]\nprofile = \"rpi4-4gb\"\n[directory]\nlisten = [\"ldap://127.0.0.1:{port}\"]\n\
             [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\nsecrets_dir = \"{0}/secrets\"\n",
            dir.path().display()
        );
        let config = config::parse(&text, std::path::Path::new("test.toml")).unwrap();
        std::fs::create_dir_all(&*config.paths.runtime_dir).unwrap();
        let paths = Paths::new(&config);
        assert_eq!(
            slapd::bootstrap(&config, &paths).unwrap(),
            Bootstrap::Created
        );
        let (_, adopted) = slapd::start_or_adopt(&config, &paths).await.unwrap();
        assert!(!adopted);
        let url = format!("ldap://127.0.0.1:{port}");
        let tree = Tree::new(config.suffix().as_str());
        ldap::ensure_service_accounts(&paths, &tree, &config.paths.secrets_dir)
            .await
            .unwrap();
        Instance {
            dir,
            config,
            paths,
            url,
            tree,
        }
    }

    pub fn secret(&self, account: &str) -> String {
        std::fs::read_to_string(
            self.config
                .paths
                .secrets_dir
                .join(format!("ldap-{account}")),
        )
        .unwrap()
    }

    pub async fn root(&self) -> Ldap {
        ldap::connect_root(&self.paths).await.unwrap()
    }

    /// A connection bound as `dn`; panics if the bind fails.
    pub async fn bind(&self, dn: &str, pw: &str) -> Ldap {
        let (conn, mut l) = LdapConnAsync::new(&self.url).await.unwrap();
        ldap3::drive!(conn);
        l.simple_bind(dn, pw)
            .await
            .unwrap()
            .success()
            .unwrap_or_else(|e| panic!("bind {dn}: {e}"));
        l
    }

    pub async fn bind_rc(&self, dn: &str, pw: &str) -> u32 {
        let (conn, mut l) = LdapConnAsync::new(&self.url).await.unwrap();
        ldap3::drive!(conn);
        l.simple_bind(dn, pw).await.unwrap().rc
    }

    pub async fn anonymous(&self) -> Ldap {
        let (conn, l) = LdapConnAsync::new(&self.url).await.unwrap();
        ldap3::drive!(conn);
        l
    }

    /// Adds a person in the collective's members group, password set by slapd.
    pub async fn person(&self, uid: &str, mail: &str, pw: &str) -> String {
        let mut root = self.root().await;
        let dn = self.tree.person(uid);
        let slug = self.config.collective.slug.clone();
        let collective = self.tree.collective(&slug);
        root.add(
            &dn,
            vec![
                ("objectClass", ["inetOrgPerson", "commonsPerson"].into()),
                ("uid", [uid].into()),
                ("cn", [uid].into()),
                ("sn", [uid].into()),
                ("mail", [mail].into()),
                ("commonsPrimaryCollective", [collective.as_str()].into()),
                ("commonsAccountState", ["active"].into()),
            ]
            .into_iter()
            .map(|(k, v): (&str, std::collections::HashSet<&str>)| (k, v))
            .collect(),
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        ldap::set_password(&mut root, &dn, pw).await.unwrap();
        root.modify(
            &self.tree.group(&slug, "members"),
            vec![Mod::Add("member", [dn.as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        dn
    }

    pub fn members(&self) -> String {
        self.tree.group(&self.config.collective.slug, "members")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(pid) = slapd::running_pid(&self.paths) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = &self.dir;
    }
}
