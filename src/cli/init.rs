//! `commonscloud init` and the demo config.

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::config::{self, hardware};
use crate::model::{AppName, CollectiveSlug, Domain, Email, slug_from_name};

#[derive(Args, Debug, Default)]
pub struct InitArgs {
    /// Take every answer from flags; never prompt.
    #[arg(long)]
    pub non_interactive: bool,
    /// The collective's name, e.g. "Les Communs de Quimper".
    #[arg(long)]
    pub collective: Option<String>,
    /// Short identifier; derived from the name when not given.
    #[arg(long)]
    pub slug: Option<String>,
    /// DNS domain for box., cloud., office. and forum.
    #[arg(long)]
    pub domain: Option<String>,
    /// Where the appliance mails its admins.
    #[arg(long)]
    pub admin_email: Option<String>,
    /// Hardware profile; proposed from this machine's architecture and RAM.
    #[arg(long)]
    pub profile: Option<String>,
    /// Apps to enable, comma-separated; defaults to those that fit the profile.
    #[arg(long, value_delimiter = ',')]
    pub apps: Option<Vec<String>>,
    /// State directory (default /var/lib/commonscloud).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Runtime directory (default /run/commonscloud).
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
    /// Secrets directory (default /etc/commonscloud/secrets).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// Overwrite an existing config (the old one is kept as <file>.bak).
    #[arg(long)]
    pub force: bool,
}

/// Validated answers, ready to render.
#[derive(Debug, Clone)]
pub struct Answers {
    pub name: String,
    pub slug: CollectiveSlug,
    pub domain: Domain,
    pub admin_email: Email,
    pub profile: String,
    pub apps: Vec<AppName>,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    /// Extra TOML appended verbatim (the demo's ports).
    pub extra: String,
}

pub fn run(path: &Path, args: InitArgs) -> anyhow::Result<i32> {
    if path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it (the old file is kept as {}.bak), or edit it and run `commonscloud config check`",
            path.display(),
            path.display()
        );
    }
    let answers = if args.non_interactive {
        from_flags(&args)?
    } else {
        let stdin = std::io::stdin();
        ask(&args, &mut stdin.lock(), &mut std::io::stderr())?
    };
    write_config(path, &render(&answers), args.force)?;
    eprintln!(
        "wrote {}\nnext: `commonscloud doctor`, then `systemctl start commonscloud` (or `commonscloud serve`)",
        path.display()
    );
    Ok(0)
}

fn local_profile() -> Option<hardware::Profile> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })?;
    hardware::suggest(std::env::consts::ARCH, ram / 1024)
}

/// The apps that fit the profile, taken greedily in bring-up order.
fn fitting_apps(profile: &hardware::Profile) -> Vec<AppName> {
    let mut apps = Vec::new();
    for app in AppName::ALL {
        apps.push(app);
        if profile.fit(&apps).is_err() {
            apps.pop();
        }
    }
    apps
}

fn parse_field<T: std::str::FromStr<Err = crate::model::Invalid>>(
    flag: &str,
    value: &str,
) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|e: crate::model::Invalid| anyhow::anyhow!("--{flag}: {e}"))
}

fn check_profile(name: &str) -> anyhow::Result<hardware::Profile> {
    hardware::profile(name).ok_or_else(|| {
        anyhow::anyhow!(
            "--profile: unknown hardware profile `{name}`: expected one of {}",
            hardware::names().collect::<Vec<_>>().join(", ")
        )
    })
}

fn parse_apps(list: &[String]) -> anyhow::Result<Vec<AppName>> {
    list.iter()
        .map(|a| parse_field::<AppName>("apps", a.trim()))
        .collect()
}

fn from_flags(a: &InitArgs) -> anyhow::Result<Answers> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("--{flag} is required with --non-interactive"))
    };
    let name = need(&a.collective, "collective")?;
    let slug = match &a.slug {
        Some(s) => parse_field("slug", s)?,
        None => slug_from_name(&name).ok_or_else(|| {
            anyhow::anyhow!("cannot derive a slug from --collective {name:?}: pass --slug")
        })?,
    };
    let profile = match &a.profile {
        Some(p) => check_profile(p)?,
        None => local_profile().ok_or_else(|| {
            anyhow::anyhow!("no hardware profile fits this machine: pass --profile")
        })?,
    };
    let apps = match &a.apps {
        Some(list) => parse_apps(list)?,
        None => fitting_apps(&profile),
    };
    Ok(Answers {
        slug,
        domain: parse_field("domain", &need(&a.domain, "domain")?)?,
        admin_email: parse_field("admin-email", &need(&a.admin_email, "admin-email")?)?,
        name,
        profile: profile.name,
        apps,
        state_dir: a.state_dir.clone(),
        runtime_dir: a.runtime_dir.clone(),
        secrets_dir: a.secrets_dir.clone(),
        extra: String::new(),
    })
}

/// Asks until each answer is valid; flags given on the command line are used
/// as they are.
fn ask(a: &InitArgs, input: &mut dyn BufRead, out: &mut dyn Write) -> anyhow::Result<Answers> {
    fn prompt<T>(
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        question: &str,
        default: Option<String>,
        parse: &dyn Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        loop {
            match &default {
                Some(d) => write!(out, "{question} [{d}]: ")?,
                None => write!(out, "{question}: ")?,
            }
            out.flush()?;
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                bail!("input ended before `{question}` was answered");
            }
            let answer = match (line.trim(), &default) {
                ("", Some(d)) => d.clone(),
                (s, _) => s.to_owned(),
            };
            match parse(&answer) {
                Ok(v) => return Ok(v),
                Err(e) => writeln!(out, "  {e}")?,
            }
        }
    }
    let text = |s: &str| -> Result<String, String> {
        if s.is_empty() {
            Err("please answer".into())
        } else {
            Ok(s.to_owned())
        }
    };
    writeln!(
        out,
        "Setting up a CommonsCloud appliance. Press Enter to take the [default]."
    )?;
    let name = match &a.collective {
        Some(n) => n.clone(),
        None => prompt(input, out, "Collective name", None, &text)?,
    };
    let slug = match &a.slug {
        Some(s) => parse_field("slug", s)?,
        None => prompt(
            input,
            out,
            "Short id (slug)",
            slug_from_name(&name).map(|s| s.to_string()),
            &|s| s.parse::<CollectiveSlug>().map_err(|e| e.0),
        )?,
    };
    let domain: Domain = match &a.domain {
        Some(d) => parse_field("domain", d)?,
        None => prompt(input, out, "Domain", None, &|s| {
            s.parse::<Domain>().map_err(|e| e.0)
        })?,
    };
    let admin_email = match &a.admin_email {
        Some(m) => parse_field("admin-email", m)?,
        None => prompt(
            input,
            out,
            "Admin email",
            Some(format!("admin@{domain}")),
            &|s| s.parse::<Email>().map_err(|e| e.0),
        )?,
    };
    let profile = match &a.profile {
        Some(p) => check_profile(p)?,
        None => {
            writeln!(out, "Hardware profiles:")?;
            for n in hardware::names() {
                if let Some(p) = hardware::profile(n) {
                    writeln!(out, "  {n:<16} {}", p.description)?;
                }
            }
            prompt(
                input,
                out,
                "Hardware profile",
                local_profile().map(|p| p.name),
                &|s| {
                    hardware::profile(s).ok_or_else(|| {
                        format!(
                            "unknown profile; expected one of {}",
                            hardware::names().collect::<Vec<_>>().join(", ")
                        )
                    })
                },
            )?
        }
    };
    let apps = match &a.apps {
        Some(list) => parse_apps(list)?,
        None => {
            let fit: Vec<&str> = fitting_apps(&profile).iter().map(|a| a.as_str()).collect();
            prompt(
                input,
                out,
                "Apps (comma-separated)",
                Some(fit.join(",")),
                &|s| {
                    s.split(',')
                        .map(|a| a.trim().parse::<AppName>().map_err(|e| e.0))
                        .collect()
                },
            )?
        }
    };
    Ok(Answers {
        name,
        slug,
        domain,
        admin_email,
        profile: profile.name,
        apps,
        state_dir: a.state_dir.clone(),
        runtime_dir: a.runtime_dir.clone(),
        secrets_dir: a.secrets_dir.clone(),
        extra: String::new(),
    })
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The config text for the answers, commented like the shipped example.
pub fn render(a: &Answers) -> String {
    let apps: Vec<String> = a.apps.iter().map(|x| quote(x.as_str())).collect();
    let mut out = format!(
        "# CommonsCloud appliance configuration, written by `commonscloud init`.\n\
         # The documented example is /usr/share/commonscloud/appliance.example.toml;\n\
         # `commonscloud config check` validates this file.\n\n\
         [collective]\nname = {}\nslug = {}\ndomain = {}\nadmin_email = {}\n\n\
         # Apps to run: any of \"nextcloud\", \"collabora\", \"discourse\".\n\
         [apps]\nenabled = [{}]\n\n\
         [hardware]\nprofile = {}\n",
        quote(&a.name),
        quote(a.slug.as_str()),
        quote(a.domain.as_str()),
        quote(a.admin_email.as_str()),
        apps.join(", "),
        quote(&a.profile),
    );
    if a.state_dir.is_some() || a.runtime_dir.is_some() || a.secrets_dir.is_some() {
        out.push_str("\n[paths]\n");
        for (key, v) in [
            ("state_dir", &a.state_dir),
            ("runtime_dir", &a.runtime_dir),
            ("secrets_dir", &a.secrets_dir),
        ] {
            if let Some(p) = v {
                out.push_str(&format!("{key} = {}\n", quote(&p.display().to_string())));
            }
        }
    }
    out.push_str(&a.extra);
    out
}

/// Validates `text` as a config, then writes it atomically with mode 0640.
fn write_config(path: &Path, text: &str, keep_backup: bool) -> anyhow::Result<()> {
    config::parse(text, path)
        .context("the generated config does not validate (a bug: please report it)")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if keep_backup && path.exists() {
        let bak = PathBuf::from(format!("{}.bak", path.display()));
        std::fs::copy(path, &bak).with_context(|| format!("keeping {}", bak.display()))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    give_to_daemon_group(path);
    Ok(())
}

/// The daemon runs as `commonscloud` and reads the config through its group:
/// when root writes the file, hand the group over (owner stays root, so the
/// daemon can read but never change it).
fn give_to_daemon_group(path: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    match nix::unistd::Group::from_name("commonscloud") {
        Ok(Some(g)) => {
            if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                eprintln!(
                    "warning: cannot give {} to group commonscloud: {e}; the daemon may not read it",
                    path.display()
                );
            }
        }
        _ => eprintln!(
            "note: no group `commonscloud` yet (provision/install.sh or the .deb creates it); \
             run `chgrp commonscloud {}` once it exists",
            path.display()
        ),
    }
}

/// Writes `<dir>/appliance.toml` for a rootless demo unless it exists; returns
/// its path.
pub fn write_demo(dir: &Path, ldap_port: u16) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let path = dir.join("appliance.toml");
    if path.exists() {
        config::load(&path)?;
        return Ok(path);
    }
    let profile = local_profile()
        .or_else(|| hardware::profile("minipc-x86-8gb"))
        .context("no hardware profile")?;
    let answers = Answers {
        name: "Demo Collective".into(),
        slug: parse_field("slug", "demo")?,
        domain: parse_field("domain", "demo.commonscloud.test")?,
        admin_email: parse_field("admin-email", "admin@demo.commonscloud.test")?,
        apps: fitting_apps(&profile),
        profile: profile.name,
        state_dir: Some(dir.join("state")),
        runtime_dir: Some(dir.join("run")),
        secrets_dir: Some(dir.join("secrets")),
        extra: format!(
            "\n# High ports on loopback, so the demo needs no root.\n\
             [front_door]\nhttp = \"127.0.0.1:8080\"\nhttps = \"127.0.0.1:8443\"\n\n\
             [directory]\nlisten = [\"ldap://127.0.0.1:{ldap_port}\"]\n"
        ),
    };
    write_config(&path, &render(&answers), false)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactive_answers_with_retries_and_defaults() {
        let args = InitArgs::default();
        // Bad slug once, then default slug; bad domain once; default mail,
        // explicit profile, default apps.
        let mut input: &[u8] = b"Les Communs de Quimper\nBad Slug\n\nnot a domain\nquimper.example.org\n\nrpi4-4gb\n\n";
        let mut out = Vec::new();
        let a = ask(&args, &mut input, &mut out).unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("not a valid slug"), "{shown}");
        assert!(shown.contains("not a valid domain"), "{shown}");
        assert_eq!(a.slug.as_str(), "les-communs-de-quimper");
        assert_eq!(a.admin_email.as_str(), "admin@quimper.example.org");
        assert_eq!(a.apps, vec![AppName::Nextcloud, AppName::Collabora]);
        let text = render(&a);
        let c = config::parse(&text, Path::new("t")).unwrap();
        assert_eq!(c.collective.name.as_str(), "Les Communs de Quimper");
        assert_eq!(c.hardware.profile.as_str(), "rpi4-4gb");
    }

    #[test]
    fn interactive_input_that_ends_early_is_an_error() {
        let mut input: &[u8] = b"Quimper\n";
        let err = ask(&InitArgs::default(), &mut input, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("input ended"), "{err}");
    }

    #[test]
    fn names_with_quotes_render_safely() {
        let args = InitArgs {
            non_interactive: true,
            collective: Some("The \"Quoted\" \\ Collective".into()),
            domain: Some("q.example.org".into()),
            admin_email: Some("a@q.example.org".into()),
            profile: Some("arm64-2gb".into()),
            ..Default::default()
        };
        let a = from_flags(&args).unwrap();
        assert_eq!(a.apps, vec![AppName::Nextcloud]);
        let c = config::parse(&render(&a), Path::new("t")).unwrap();
        assert_eq!(c.collective.name.as_str(), "The \"Quoted\" \\ Collective");
        assert_eq!(c.collective.slug.as_str(), "the-quoted-collective");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let mut args = InitArgs {
            non_interactive: true,
            collective: Some("Q".into()),
            domain: Some("nodots".into()),
            admin_email: Some("a@q.example.org".into()),
            slug: Some("quimper".into()),
            profile: Some("rpi4-4gb".into()),
            ..Default::default()
        };
        assert!(
            from_flags(&args)
                .unwrap_err()
                .to_string()
                .starts_with("--domain:")
        );
        args.domain = Some("q.example.org".into());
        args.apps = Some(vec!["nextcloud".into(), "wiki".into()]);
        assert!(
            from_flags(&args)
                .unwrap_err()
                .to_string()
                .starts_with("--apps:")
        );
        args.apps = None;
        args.admin_email = None;
        assert!(
            from_flags(&args)
                .unwrap_err()
                .to_string()
                .contains("--admin-email is required")
        );
    }
}
