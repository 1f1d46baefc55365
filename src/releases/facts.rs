//! What the planner is told about a box, and how the raw readings become
//! it: each app's own version report (Nextcloud's `version.php`,
//! PostgreSQL's `PG_VERSION` and `postgres --version`, `redis-server
//! --version`, Discourse's `lib/version.rb`), then the image's
//! `org.opencontainers.image.version` label, then the manifest's own list
//! (the running image's digest), then a tag that is a version.
//!
//! Pure: `releases::gather` does the reading; this decides what it means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manifest::{self, Kind, Manifest};
use super::plan::{BoxFacts, Installed, InstalledComponent};
use crate::config::ImageRole;
use crate::model::Version;

/// Everything the planner needs: the `--facts` file of `upgrade plan`, and
/// what `upgrade plan --json` prints under `facts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub installed: Installed,
    #[serde(rename = "box")]
    pub host: BoxFacts,
}

/// The OCI label an image may carry its version in.
pub const LABEL_VERSION: &str = "org.opencontainers.image.version";

/// What was read from one role's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub role: Option<ImageRole>,
    pub running: bool,
    /// The image as the container was created with (`name:tag[@digest]`).
    pub image: String,
    /// The image's `name@sha256:…` digests.
    pub repo_digests: Vec<String>,
    /// The container's labels (the image's included).
    pub labels: BTreeMap<String, String>,
    /// The container's environment (the image's included).
    pub env: BTreeMap<String, String>,
    /// The data's own report: Nextcloud's volume `version.php`,
    /// PostgreSQL's `PG_VERSION` file. `Err` says why there is none.
    pub data_report: Result<String, String>,
    /// The code's report: the image's `version.php`, `postgres --version`,
    /// `redis-server --version`, Discourse's `lib/version.rb`.
    pub code_report: Result<String, String>,
}

impl Reading {
    /// A reading of nothing yet: reports `Err("not read")`.
    pub fn new(role: Option<ImageRole>, image: &str) -> Self {
        Reading {
            role,
            running: false,
            image: image.to_owned(),
            repo_digests: Vec::new(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            data_report: Err("not read".into()),
            code_report: Err("not read".into()),
        }
    }
}

/// `$OC_Version = array(31, 0, 5, 1);` (or `[31, 0, 5, 1]`) in a
/// `version.php`.
pub fn parse_version_php(text: &str) -> Option<Version> {
    let at = text.find("$OC_Version")?;
    let rest = text[at + "$OC_Version".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let inner = rest
        .strip_prefix("array(")
        .map(|r| r.split(')').next())
        .or_else(|| rest.strip_prefix('[').map(|r| r.split(']').next()))??;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    parts.join(".").parse().ok()
}

/// `postgres (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)` → `17.2`.
pub fn parse_postgres_version(text: &str) -> Option<Version> {
    let rest = text.split("(PostgreSQL)").nth(1)?.trim_start();
    numeric_prefix(rest)
}

/// `Redis server v=7.0.15 sha=…` → `7.0.15`.
pub fn parse_redis_version(text: &str) -> Option<Version> {
    let rest = text.split("v=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Discourse's `lib/version.rb`: `STRING = "3.5.0.beta5-dev"` (a `-dev`
/// or `-latest` suffix dropped), or older files' `MAJOR`, `MINOR`,
/// `TINY` and `PRE` constants.
pub fn parse_discourse_version_rb(text: &str) -> Option<Version> {
    let constant = |name: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(name)?.trim_start().strip_prefix('=')?.trim();
            Some(rest.trim_matches(|c| c == '"' || c == '\'').to_owned())
        })
    };
    if let Some(s) = constant("STRING")
        && !s.contains('[')
    {
        let s = s
            .strip_suffix("-dev")
            .or_else(|| s.strip_suffix("-latest"))
            .unwrap_or(&s);
        return s.parse().ok();
    }
    let mut v = [constant("MAJOR")?, constant("MINOR")?, constant("TINY")?].join(".");
    if let Some(pre) = constant("PRE").filter(|p| p != "nil" && !p.is_empty()) {
        v.push('.');
        v.push_str(&pre);
    }
    v.parse().ok()
}

/// The first version-looking word: `17.2-1.pgdg120+1` → `17.2`.
fn numeric_prefix(text: &str) -> Option<Version> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches('.').parse().ok()
}

/// The tag of an image reference, when it is a version:
/// `collabora/code:25.04.5.1.1` → `25.04.5.1.1`; `nextcloud:31-apache` → none.
fn tag_version(image: &str) -> Option<Version> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    // A pre-release tag would be an image variant (`31-apache`), not a version.
    tag.parse().ok().filter(|v: &Version| !v.is_pre_release())
}

/// One role's installed version from its reading, or why it is not known.
pub fn installed_component(
    role: ImageRole,
    r: &Reading,
    manifest: Option<&Manifest>,
) -> Result<InstalledComponent, String> {
    let k = manifest::kind(role);
    let known = |v: Version| InstalledComponent {
        version: v,
        image_version: None,
    };
    match k {
        Kind::Nextcloud => {
            let data = match &r.data_report {
                Ok(t) => parse_version_php(t)
                    .ok_or_else(|| "its volume's version.php has no $OC_Version".to_owned())?,
                Err(why) => return Err(format!("its volume's version.php: {why}")),
            };
            let image = r
                .code_report
                .as_ref()
                .ok()
                .and_then(|t| parse_version_php(t));
            Ok(InstalledComponent {
                image_version: image.filter(|i| *i != data),
                version: data,
            })
        }
        Kind::Postgres => {
            let code = r
                .code_report
                .as_ref()
                .ok()
                .and_then(|t| parse_postgres_version(t))
                .or_else(|| r.env.get("PG_VERSION").and_then(|v| numeric_prefix(v)))
                .or_else(|| r.env.get("PG_MAJOR").and_then(|v| numeric_prefix(v)))
                .or_else(|| fallback(role, r, manifest));
            let data = r
                .data_report
                .as_ref()
                .ok()
                .and_then(|t| numeric_prefix(t.trim()));
            match (data, code) {
                (Some(d), Some(c)) if d.major() != c.major() => Ok(InstalledComponent {
                    version: d,
                    image_version: Some(c),
                }),
                (_, Some(c)) => Ok(known(c)),
                (Some(d), None) => Ok(known(d)),
                (None, None) => Err(why_unknown(r)),
            }
        }
        Kind::Redis => r
            .code_report
            .as_ref()
            .ok()
            .and_then(|t| parse_redis_version(t))
            .or_else(|| r.env.get("REDIS_VERSION").and_then(|v| v.parse().ok()))
            .or_else(|| fallback(role, r, manifest))
            .map(known)
            .ok_or_else(|| why_unknown(r)),
        Kind::Discourse => r
            .code_report
            .as_ref()
            .ok()
            .and_then(|t| parse_discourse_version_rb(t))
            .or_else(|| fallback(role, r, manifest))
            .map(known)
            .ok_or_else(|| why_unknown(r)),
        Kind::Collabora => fallback(role, r, manifest)
            .map(known)
            .ok_or_else(|| why_unknown(r)),
    }
}

/// The label, the manifest's digest, the tag: whichever is a version of the
/// role's shape.
fn fallback(role: ImageRole, r: &Reading, manifest: Option<&Manifest>) -> Option<Version> {
    let k = manifest::kind(role);
    let fits = |v: &Version| manifest::check_shape(k, v).is_ok();
    r.labels
        .get(LABEL_VERSION)
        .and_then(|v| v.parse().ok())
        .filter(fits)
        .or_else(|| {
            let c = manifest?.components.get(&role)?;
            c.images
                .iter()
                .find(|i| {
                    r.repo_digests.iter().any(|d| {
                        d.rsplit_once('@')
                            .is_some_and(|(_, d)| d == i.reference.digest())
                    }) || r.image.ends_with(i.reference.digest())
                })
                .map(|i| i.version.clone())
        })
        .or_else(|| tag_version(&r.image).filter(fits))
}

fn why_unknown(r: &Reading) -> String {
    let mut why = Vec::new();
    if !r.running {
        why.push("its container is not running".to_owned());
    }
    if let Err(e) = &r.code_report {
        why.push(e.clone());
    }
    why.push(format!(
        "image {} carries no {LABEL_VERSION} label, no version tag, and no digest the manifest lists",
        r.image
    ));
    why.join("; ")
}

/// The installed versions from each role's reading; roles read twice (a
/// stray container) keep the first.
pub fn installed(readings: &[Reading], manifest: Option<&Manifest>) -> Installed {
    let mut out = Installed::default();
    for r in readings {
        let Some(role) = r.role else { continue };
        if out.components.contains_key(&role) || out.unknown.contains_key(&role) {
            continue;
        }
        match installed_component(role, r, manifest) {
            Ok(c) => {
                out.components.insert(role, c);
            }
            Err(why) => {
                out.unknown.insert(role, why);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn version_php_as_releases_and_the_stand_in_write_it() {
        let upstream = "<?php\n$OC_Version = array(31,0,5,1);\n$OC_VersionString = '31.0.5';\n$OC_Edition = '';\n$OC_VersionCanBeUpgradedFrom = array (\n  'nextcloud' =>\n  array (\n    '30.0' => true,\n    '31.0' => true,\n  ),\n);\n";
        assert_eq!(parse_version_php(upstream), Some(v("31.0.5.1")));
        assert_eq!(
            parse_version_php("<?php $OC_Version = [32, 0, 0, 11];"),
            Some(v("32.0.0.11"))
        );
        assert_eq!(
            parse_version_php("<?php $OC_VersionString = '31.0.5';"),
            None
        );
        assert_eq!(parse_version_php("$OC_Version = array(31,x,0,0);"), None);
    }

    #[test]
    fn version_reports_of_postgres_redis_and_discourse() {
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)\n"),
            Some(v("17.2"))
        );
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(v("15.14"))
        );
        assert_eq!(
            parse_redis_version(
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4b6b8ee5c1b7e9a"
            ),
            Some(v("7.0.15"))
        );
        assert_eq!(
            parse_discourse_version_rb(
                "# frozen_string_literal: true\n\nmodule Discourse\n  module VERSION\n    STRING = \"3.5.0\"\n  end\nend\n"
            ),
            Some(v("3.5.0"))
        );
        assert_eq!(
            parse_discourse_version_rb(
                "module Discourse\n VERSION_REGEXP = //\n module VERSION\n  STRING = \"3.5.0.beta5-dev\"\n  PARTS = STRING.split(\".\")\n end\nend"
            ),
            Some(v("3.5.0.beta5"))
        );
        assert_eq!(
            parse_discourse_version_rb(
                "    MAJOR = 2\n    MINOR = 8\n    TINY  = 14\n    PRE   = nil\n    STRING = [MAJOR, MINOR, TINY, PRE].compact.join('.')\n"
            ),
            Some(v("2.8.14"))
        );
        assert_eq!(
            tag_version("collabora/code:25.04.5.1.1"),
            Some(v("25.04.5.1.1"))
        );
        assert_eq!(tag_version("localhost:5000/nextcloud:31-apache"), None);
        assert_eq!(tag_version("localhost:5000/redis"), None);
    }

    fn reading(role: ImageRole) -> Reading {
        Reading {
            running: true,
            ..Reading::new(Some(role), "x:latest")
        }
    }

    #[test]
    fn nextcloud_data_and_image_disagreeing_is_reported() {
        let mut r = reading(ImageRole::Nextcloud);
        r.data_report = Ok("$OC_Version = array(30,0,2,1);".into());
        r.code_report = Ok("$OC_Version = array(31,0,0,5);".into());
        let c = installed_component(ImageRole::Nextcloud, &r, None).unwrap();
        assert_eq!(
            (c.version, c.image_version),
            (v("30.0.2.1"), Some(v("31.0.0.5")))
        );
        r.code_report = Ok("$OC_Version = array(30,0,2,1);".into());
        let c = installed_component(ImageRole::Nextcloud, &r, None).unwrap();
        assert_eq!(c.image_version, None);
        r.data_report = Err("no such file".into());
        let why = installed_component(ImageRole::Nextcloud, &r, None).unwrap_err();
        assert!(why.contains("no such file"), "{why}");
    }

    #[test]
    fn postgres_data_major_and_binaries() {
        let mut r = reading(ImageRole::NextcloudDb);
        r.data_report = Ok("15\n".into());
        r.code_report = Ok("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)".into());
        let c = installed_component(ImageRole::NextcloudDb, &r, None).unwrap();
        assert_eq!((c.version, c.image_version), (v("15.14"), None));
        // The image swapped under a 15 data directory: cut short.
        r.code_report = Ok("postgres (PostgreSQL) 17.6".into());
        let c = installed_component(ImageRole::NextcloudDb, &r, None).unwrap();
        assert_eq!((c.version, c.image_version), (v("15"), Some(v("17.6"))));
        // Not running: the image's environment.
        let mut r = reading(ImageRole::DiscourseDb);
        r.running = false;
        r.env.insert("PG_MAJOR".into(), "17".into());
        let c = installed_component(ImageRole::DiscourseDb, &r, None).unwrap();
        assert_eq!(c.version, v("17"));
    }

    #[test]
    fn collabora_by_label_then_manifest_digest_then_tag() {
        let mut r = reading(ImageRole::Collabora);
        let why = installed_component(ImageRole::Collabora, &r, None).unwrap_err();
        assert!(why.contains(LABEL_VERSION), "{why}");
        r.image = "collabora/code:25.04.5.1.1".into();
        assert_eq!(
            installed_component(ImageRole::Collabora, &r, None)
                .unwrap()
                .version,
            v("25.04.5.1.1")
        );
        r.labels.insert(LABEL_VERSION.into(), "25.04.6.2.1".into());
        assert_eq!(
            installed_component(ImageRole::Collabora, &r, None)
                .unwrap()
                .version,
            v("25.04.6.2.1")
        );
    }

    #[test]
    fn a_stray_second_container_of_a_role_does_not_override_the_first() {
        let mut a = reading(ImageRole::NextcloudRedis);
        a.code_report = Ok("Redis server v=7.0.15 sha=0".into());
        let mut b = a.clone();
        b.code_report = Ok("Redis server v=7.4.1 sha=0".into());
        let i = installed(&[a, b], None);
        assert_eq!(
            i.components[&ImageRole::NextcloudRedis].version,
            v("7.0.15")
        );
    }
}
