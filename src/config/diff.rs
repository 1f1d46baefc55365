//! What a reload changed (pure). [`ConfigDiff::new`] compares two complete
//! configs section by section; the reload announces the diff and each part
//! of the appliance acts only on the sections it reads, so nothing is
//! rebuilt that did not change.

use super::Config;

/// Which sections of `appliance.toml` differ between two configs. Defaults
/// are filled before the comparison ([`super::parse`]), so a changed
/// `collective.domain` shows as changed hostnames and directory too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub collective: bool,
    pub hostnames: bool,
    pub directory: bool,
    /// `[apps]`, including the choice the console made
    /// (`enabled_from_console`).
    pub apps: bool,
    pub hardware: bool,
    pub front_door: bool,
    pub smtp: bool,
    pub alliance: bool,
    /// `[paths]`: a running daemon cannot move its directories, so the
    /// reload keeps the old ones and says a restart is needed.
    pub paths: bool,
    pub log: bool,
}

impl ConfigDiff {
    pub fn new(old: &Config, new: &Config) -> Self {
        Self {
            collective: old.collective != new.collective,
            hostnames: old.hostnames != new.hostnames,
            directory: old.directory != new.directory,
            apps: old.apps != new.apps,
            hardware: old.hardware != new.hardware,
            front_door: old.front_door != new.front_door,
            smtp: old.smtp != new.smtp,
            alliance: old.alliance != new.alliance,
            paths: old.paths != new.paths,
            log: old.log != new.log,
        }
    }

    /// The names of the sections that changed, in the file's order.
    pub fn changed(&self) -> Vec<&'static str> {
        [
            (self.collective, "collective"),
            (self.hostnames, "hostnames"),
            (self.directory, "directory"),
            (self.apps, "apps"),
            (self.hardware, "hardware"),
            (self.front_door, "front_door"),
            (self.smtp, "smtp"),
            (self.alliance, "alliance"),
            (self.paths, "paths"),
            (self.log, "log"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changed().is_empty()
    }

    /// Whether the onboarding service's settings may differ: they come from
    /// the collective (name, admin address), the hostnames (links), the
    /// directory (suffix) and the paths (ldapi).
    pub fn onboarding(&self) -> bool {
        self.collective || self.hostnames || self.directory || self.paths
    }

    /// Whether slapd's listeners may differ: `directory.listen`, and LDAPS
    /// on the apps' bridge, which follows `[apps]` (and the paths of its
    /// certificate).
    pub fn slapd_listeners(&self) -> bool {
        self.directory || self.apps || self.paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::config;

    #[test]
    fn the_same_config_differs_in_nothing() {
        let c = config("rpi5-8gb", "");
        let d = ConfigDiff::new(&c, &c.clone());
        assert!(d.is_empty(), "{d:?}");
        assert!(!d.onboarding() && !d.slapd_listeners());
    }

    #[test]
    fn each_section_is_told_apart() {
        let old = config("rpi5-8gb", "");
        let cases: [(&str, &str); 6] = [
            ("[apps]\nenabled = [\"nextcloud\"]\n", "apps"),
            ("[log]\nlevel = \"debug\"\n", "log"),
            (
                "[smtp]\nhost = \"mail.example.org\"\nsecurity = \"none\"\nport = 25\nfrom = \"Box <box@quimper.example.org>\"\n",
                "smtp",
            ),
            (
                "[directory]\nlisten = [\"ldap://127.0.0.1:10389\"]\n",
                "directory",
            ),
            ("[front_door]\nhttps = \"127.0.0.1:8443\"\n", "front_door"),
            (
                "[hostnames]\nforum = \"agora.quimper.example.org\"\n",
                "hostnames",
            ),
        ];
        for (extra, section) in cases {
            let new = config("rpi5-8gb", extra);
            let d = ConfigDiff::new(&old, &new);
            assert_eq!(d.changed(), [section], "{extra}");
        }
        // A board change is the hardware's alone.
        let d = ConfigDiff::new(&old, &config("rpi4-4gb", ""));
        assert_eq!(d.changed(), ["hardware"]);
        assert!(!d.onboarding());
    }

    #[test]
    fn what_each_part_reads() {
        let old = config("rpi5-8gb", "");
        let mut renamed = old.clone();
        renamed.collective.name = "Communs".parse().unwrap();
        let d = ConfigDiff::new(&old, &renamed);
        assert_eq!(d.changed(), ["collective"]);
        assert!(d.onboarding(), "mails carry the collective's name");
        assert!(!d.slapd_listeners());

        let apps = config("rpi5-8gb", "[apps]\nenabled = [\"discourse\"]\n");
        let d = ConfigDiff::new(&old, &apps);
        assert!(d.slapd_listeners(), "LDAPS on the bridge follows the apps");
        assert!(!d.onboarding(), "the apps are not the onboarding's");

        let mut moved = old.clone();
        moved.paths.runtime_dir =
            crate::config::AbsPath::try_from(std::path::PathBuf::from("/run/elsewhere")).unwrap();
        let d = ConfigDiff::new(&old, &moved);
        assert_eq!(d.changed(), ["paths"]);
        assert!(d.onboarding() && d.slapd_listeners());
    }
}
