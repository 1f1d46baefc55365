//! Hardware profiles: what a board has and which apps fit on it.
//!
//! The profiles ship in `hardware/*.toml` and are embedded in the binary, so a
//! box never depends on files outside the package to know its limits. Pure: the
//! texts are compiled in; parsing does no IO.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::AppName;

/// The embedded profiles, by name (the file stem).
const EMBEDDED: &[(&str, &str)] = &[
    ("arm64-2gb", include_str!("../../hardware/arm64-2gb.toml")),
    ("rpi4-4gb", include_str!("../../hardware/rpi4-4gb.toml")),
    ("rpi5-8gb", include_str!("../../hardware/rpi5-8gb.toml")),
    (
        "minipc-x86-8gb",
        include_str!("../../hardware/minipc-x86-8gb.toml"),
    ),
    (
        "community-node",
        include_str!("../../hardware/community-node.toml"),
    ),
];

/// One board's resources and per-app memory needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    /// `x86_64` or `aarch64`, as in Rust's target names.
    pub arch: String,
    pub ram_mb: u64,
    pub min_disk_gb: u64,
    /// Where Docker's data and the state dir should live on this board.
    pub storage: String,
    /// Swap to set up (Discourse wants 2 GB on boards of 4 GB or less).
    pub swap_mb: u64,
    /// Memory all enabled apps may use together.
    pub app_budget_mb: u64,
    /// Memory limit of each app with its databases and sidecars.
    pub app_memory_mb: BTreeMap<AppName, u64>,
}

impl Profile {
    /// Memory the given apps need together on this board.
    pub fn apps_memory_mb(&self, apps: &[AppName]) -> u64 {
        apps.iter()
            .map(|a| self.app_memory_mb.get(a).copied().unwrap_or(0))
            .sum()
    }

    /// `Err` with the reason when the apps together exceed the budget.
    pub fn fit(&self, apps: &[AppName]) -> Result<(), String> {
        let need = self.apps_memory_mb(apps);
        if need > self.app_budget_mb {
            let list: Vec<&str> = apps.iter().map(|a| a.as_str()).collect();
            return Err(format!(
                "{} need {need} MB together, but profile `{}` leaves {} MB for apps",
                list.join(" + "),
                self.name,
                self.app_budget_mb
            ));
        }
        Ok(())
    }
}

/// Names of all embedded profiles.
pub fn names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(n, _)| *n)
}

/// The embedded profile called `name`.
pub fn profile(name: &str) -> Option<Profile> {
    let (n, text) = EMBEDDED.iter().find(|(n, _)| *n == name)?;
    // The texts are compiled in and checked by `every_profile_parses`.
    let mut p: Profile = toml::from_str(text).ok()?;
    p.name = (*n).to_owned();
    Some(p)
}

/// The smallest profile whose architecture matches and whose RAM the box has,
/// for `init` to propose.
pub fn suggest(arch: &str, ram_mb: u64) -> Option<Profile> {
    names()
        .filter_map(profile)
        .filter(|p| p.arch == arch && p.ram_mb * 85 / 100 <= ram_mb)
        .max_by_key(|p| p.ram_mb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses_and_lists_every_app() {
        for (name, text) in EMBEDDED {
            let p: Profile =
                toml::from_str(text).unwrap_or_else(|e| panic!("hardware/{name}.toml: {e}"));
            for app in AppName::ALL {
                assert!(p.app_memory_mb.contains_key(&app), "{name} lacks {app}");
            }
            assert!(p.app_budget_mb < p.ram_mb, "{name}");
        }
    }

    #[test]
    fn board_sizes_follow_the_design() {
        use AppName::*;
        let small = profile("arm64-2gb").unwrap();
        assert!(small.fit(&[Nextcloud]).is_ok());
        assert!(small.fit(&[Nextcloud, Collabora]).is_err());
        let pi4 = profile("rpi4-4gb").unwrap();
        assert!(pi4.fit(&[Nextcloud, Collabora]).is_ok());
        assert!(pi4.fit(&[Nextcloud, Discourse]).is_ok());
        let err = pi4.fit(&[Nextcloud, Collabora, Discourse]).unwrap_err();
        assert!(err.contains("rpi4-4gb") && err.contains("3072"), "{err}");
        for big in ["rpi5-8gb", "minipc-x86-8gb"] {
            assert!(profile(big).unwrap().fit(&AppName::ALL).is_ok(), "{big}");
        }
    }

    #[test]
    fn suggestion_matches_arch_and_ram() {
        assert_eq!(suggest("aarch64", 3800).unwrap().name, "rpi4-4gb");
        assert_eq!(suggest("aarch64", 7900).unwrap().name, "rpi5-8gb");
        assert_eq!(suggest("x86_64", 15000).unwrap().name, "minipc-x86-8gb");
        assert!(suggest("riscv64", 8000).is_none());
    }
}
