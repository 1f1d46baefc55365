//! `commonscloud bench federation`: two slapd on loopback, the alliance's
//! (made by `provision/alliance/alliance.sh`) and an appliance's. Prints
//! the initial sync of --people people against a baseline measured in the
//! same run (a plain ldap3 search of the same entries at the alliance plus
//! the same adds into a fresh local slapd), the propagation of --changes
//! alliance writes to the local slapd (p50, p99), and the outbox's drain
//! rate after --outbox queued local changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ldap3::{Ldap, LdapConnAsync, Mod};
use serde::Serialize;

use crate::clock::unix_now;
use crate::directory::slapd::{self, Paths};
use crate::directory::{alliance as dir, ldap};
use crate::federation::outbox::{self, Change};
use crate::federation::rules::{Suffixes, copyable};
use crate::federation::{Link, Settings, replay, sync};
use crate::store::{Enrolment, Store};

const SUFFIX: &str = "dc=alliance,dc=example,dc=net";
const NODE: &str = "box.quimper.example.org";
/// Initial sync against the plain search-and-add baseline, at most.
const SYNC_RATIO_TARGET: f64 = 1.5;
/// A change's p99 from the alliance's write to the local slapd, at most.
const P99_TARGET_MS: f64 = 50.0;

#[derive(clap::Args)]
pub struct FederationArgs {
    /// People at the alliance in this collective, for the initial sync.
    #[arg(long, default_value_t = 10_000)]
    people: usize,
    /// Alliance writes whose propagation is timed.
    #[arg(long, default_value_t = 1000)]
    changes: usize,
    /// Local changes queued before the outbox is drained.
    #[arg(long, default_value_t = 1000)]
    outbox: usize,
    /// The alliance's setup script.
    #[arg(long, default_value = "provision/alliance/alliance.sh")]
    script: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    people: usize,
    baseline: &'static str,
    baseline_secs: f64,
    sync_secs: f64,
    sync_ratio: f64,
    sync_ratio_target: f64,
    changes: usize,
    propagation_p50_ms: f64,
    propagation_p99_ms: f64,
    propagation_p99_target_ms: f64,
    outbox: usize,
    outbox_drain_secs: f64,
    outbox_per_sec: f64,
}

struct Scratch {
    dir: PathBuf,
    script: PathBuf,
    slapds: Vec<Option<Paths>>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .args(["stop", "--dir"])
            .arg(self.dir.join("alliance"))
            .output();
        for p in self.slapds.iter().flatten() {
            if let Some(pid) = slapd::running_pid(p) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(args: FederationArgs) -> anyhow::Result<i32> {
    if args.people == 0 || args.changes == 0 || args.outbox == 0 {
        bail!("--people, --changes and --outbox must be at least 1");
    }
    if args.outbox > args.people {
        bail!("--outbox may not exceed --people: each queued change edits one person");
    }
    let script = std::fs::canonicalize(&args.script).with_context(|| {
        format!(
            "--script {}: run this from the repository, or give the path of provision/alliance/alliance.sh",
            args.script.display()
        )
    })?;
    let mut scratch = Scratch {
        dir: super::bench::scratch_dir("federation"),
        script,
        slapds: vec![None, None],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        tokio::select! {
            r = bench(&args, &mut scratch) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    let r = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report(&r));
    }
    Ok(0)
}

fn script(s: &Scratch, args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let out = std::process::Command::new(&s.script)
        .args(args)
        .env("COMMONSCLOUD", exe)
        .output()
        .with_context(|| format!("running {}", s.script.display()))?;
    if !out.status.success() {
        bail!(
            "alliance.sh {}: {}{}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn alliance_root(dir: &std::path::Path) -> anyhow::Result<Ldap> {
    let path = dir.join("alliance/run/ldapi");
    let url = format!("ldapi://{}", path.display().to_string().replace('/', "%2F"));
    let (conn, mut l) = LdapConnAsync::new(&url).await?;
    ldap3::drive!(conn);
    l.sasl_external_bind().await?.success()?;
    Ok(l)
}

fn person_attrs(uid: &str, collective: &str) -> Vec<(String, std::collections::HashSet<String>)> {
    let one = |v: &str| std::collections::HashSet::from([v.to_owned()]);
    vec![
        (
            "objectClass".into(),
            ["inetOrgPerson".to_owned(), "commonsPerson".to_owned()].into(),
        ),
        ("uid".into(), one(uid)),
        ("cn".into(), one(uid)),
        ("sn".into(), one(uid)),
        ("mail".into(), one(&format!("{uid}@quimper.example.org"))),
        ("commonsPrimaryCollective".into(), one(collective)),
        ("commonsAccountState".into(), one("active")),
        ("commonsHomeNode".into(), one(NODE)),
        // A hash as slapd stores it: copied as is, never hashed again.
        (
            "userPassword".into(),
            one(
                "{ARGON2}$argon2i$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0$Zm9yIHRoZSBiZW5jaCBvbmx5LCBub3QgcmVhbA",
            ),
        ),
    ]
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench(args: &FederationArgs, s: &mut Scratch) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&s.dir).with_context(|| format!("creating {}", s.dir.display()))?;
    let port = super::bench::free_port()?;
    let url = format!("ldap://127.0.0.1:{port}");
    let home = s.dir.join("alliance");
    let home_s = home.display().to_string();
    script(
        s,
        &[
            "init", "--dir", &home_s, "--suffix", SUFFIX, "--name", "Alliance", "--listen", &url,
        ],
    )?;
    script(s, &["start", "--dir", &home_s])?;
    let pw_file = s.dir.join("box.pw");
    script(
        s,
        &[
            "add-appliance",
            "--dir",
            &home_s,
            "--collective",
            "quimper",
            "--collective-name",
            "Quimper",
            "--node",
            NODE,
            "--password-file",
            &pw_file.display().to_string(),
        ],
    )?;
    let password = std::fs::read_to_string(&pw_file)?.trim().to_owned();
    let bind_dn = format!("cn={NODE},ou=appliances,{SUFFIX}");

    eprintln!("federation: {} people at the alliance…", args.people);
    let mut root = alliance_root(&s.dir).await?;
    let collective = format!("ou=quimper,ou=collectives,{SUFFIX}");
    for i in 0..args.people {
        let uid = format!("f{i:06}");
        root.add(
            &format!("uid={uid},ou=people,{SUFFIX}"),
            person_attrs(&uid, &collective),
        )
        .await?
        .success()?;
    }

    // Baseline: the same entries searched at the alliance, added to a fresh slapd.
    let (base_config, base_paths, _) =
        super::bench_directory::scratch_slapd(&s.dir.join("baseline"), &mut s.slapds[0]).await?;
    let suffixes = Suffixes::new(base_config.suffix().as_str(), SUFFIX);
    let scope = crate::federation::rules::Scope::new(SUFFIX, "quimper".parse()?);
    eprintln!("federation: baseline (search and add)…");
    let t = Instant::now();
    // Both slapd are on loopback: plain LDAP, as `insecure = true` allows.
    let plain = crate::federation::guard::LinkSecurity::Plain;
    let mut remote = dir::connect(
        &url,
        plain,
        None,
        &bind_dn,
        &password,
        Duration::from_secs(10),
    )
    .await?;
    let found = dir::search(&mut remote, SUFFIX, &scope.filter(), &["*"]).await?;
    let mut local = ldap::connect_root(&base_paths).await?;
    for (dn, attrs) in &found {
        let res = dir::add(
            &mut local,
            &suffixes.to_local(dn),
            &copyable(&suffixes.attrs_to_local(attrs)),
        )
        .await?;
        if res.rc != 0 && res.rc != 68 {
            bail!("baseline add of {dn}: {}", res.text);
        }
    }
    let baseline_secs = t.elapsed().as_secs_f64();

    // The sync, into another fresh slapd.
    let (config, paths, _) =
        super::bench_directory::scratch_slapd(&s.dir.join("appliance"), &mut s.slapds[1]).await?;
    let store = Arc::new(Mutex::new(Store::open(&config.paths.state_dir)?));
    store
        .lock()
        .map_err(|_| anyhow::anyhow!("store lock"))?
        .enrol(&Enrolment {
            url: url.clone(),
            bind_dn: bind_dn.clone(),
            suffix: SUFFIX.into(),
            node: NODE.into(),
            joined_at: unix_now(),
            ca_file: None,
            starttls: false,
        })?;
    let settings = Settings {
        url: url.clone(),
        bind_dn: bind_dn.clone(),
        password: password.clone(),
        suffixes: Suffixes::new(config.suffix().as_str(), SUFFIX),
        collective: "quimper".parse()?,
        node: NODE.into(),
        local: paths.clone(),
        connect_timeout: Duration::from_secs(10),
        console_url: format!("https://{NODE}"),
        collective_name: "Quimper".into(),
        ca_file: None,
        starttls: false,
        insecure: true,
        deletion_limits: Default::default(),
    };
    let link = Arc::new(Link::new(true));
    eprintln!("federation: initial sync…");
    let t = Instant::now();
    let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(sync::run(
        settings.clone(),
        store.clone(),
        link.clone(),
        crate::events::Bus::new(),
    )));
    let want = i64::try_from(found.len()).unwrap_or(i64::MAX);
    loop {
        let n = store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock"))?
            .fed_entry_count()?;
        let st = link.state();
        if n >= want && st.up && !st.refreshing {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the initial sync did not end in 10 minutes ({n} of {want}): {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sync_secs = t.elapsed().as_secs_f64();

    // Propagation: each alliance write until the local slapd shows it.
    eprintln!("federation: {} changes at the alliance…", args.changes);
    let mut local = ldap::connect_root(&paths).await?;
    let mut lat = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let uid = format!("f{:06}", i % args.people);
        let value = format!("change {i}");
        root.modify(
            &format!("uid={uid},ou=people,{SUFFIX}"),
            vec![Mod::Replace("displayName", [value.as_str()].into())],
        )
        .await?
        .success()?;
        let written = Instant::now();
        let here = settings
            .suffixes
            .to_local(&format!("uid={uid},ou=people,{SUFFIX}"));
        loop {
            let v = dir::read(&mut local, &here, &["displayName"]).await?;
            if v.is_some_and(|(_, a)| a.get("displayname").is_some_and(|d| d.contains(&value))) {
                break;
            }
            if written.elapsed() > Duration::from_secs(30) {
                bail!("change {i} never reached the local slapd");
            }
        }
        lat.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    // The outbox: local edits queued while the link is down, then drained.
    drop(task);
    eprintln!("federation: draining {} queued local changes…", args.outbox);
    {
        let st = store.lock().map_err(|_| anyhow::anyhow!("store lock"))?;
        for i in 0..args.outbox {
            let dn = settings
                .suffixes
                .to_local(&format!("uid=f{i:06},ou=people,{SUFFIX}"));
            outbox::push(
                &st,
                unix_now(),
                &Change::attrs(&dn, &[("description", Vec::new())]),
            )?;
        }
    }
    for i in 0..args.outbox {
        let dn = settings
            .suffixes
            .to_local(&format!("uid=f{i:06},ou=people,{SUFFIX}"));
        local
            .modify(
                &dn,
                vec![Mod::Replace("description", ["edited here"].into())],
            )
            .await?
            .success()?;
    }
    let mut remote = settings.connect().await?;
    let t = Instant::now();
    let n = replay::drain(&settings, &store, &link, &mut remote, &mut local).await?;
    let drain = t.elapsed().as_secs_f64();
    let st = store
        .lock()
        .map_err(|_| anyhow::anyhow!("store lock"))?
        .outbox_stats()?;
    if n != args.outbox || st.done != i64::try_from(args.outbox).unwrap_or(0) {
        bail!(
            "the drain settled {n} changes ({st:?}), not {}",
            args.outbox
        );
    }
    Ok(Report {
        people: args.people,
        baseline: "ldap3 search at the alliance (same filter, as the appliance's account) plus the same adds into a fresh local slapd",
        baseline_secs,
        sync_secs,
        sync_ratio: sync_secs / baseline_secs,
        sync_ratio_target: SYNC_RATIO_TARGET,
        changes: args.changes,
        propagation_p50_ms: pct(&lat, 0.50),
        propagation_p99_ms: pct(&lat, 0.99),
        propagation_p99_target_ms: P99_TARGET_MS,
        outbox: args.outbox,
        outbox_drain_secs: drain,
        outbox_per_sec: args.outbox as f64 / drain,
    })
}

fn report(r: &Report) -> String {
    let mark = |ok: bool| if ok { "✓" } else { "✗ (target missed)" };
    format!(
        "federation with the alliance, two slapd on loopback\n\
         initial sync of {} people   {:.2} s, baseline {:.2} s ({}): {:.2}× (target ≤ {:.1}×) {}\n\
         change propagation ({} alliance writes to visible here)   p50 {:.2} ms, p99 {:.2} ms (target < {:.0} ms) {}\n\
         outbox drain   {} changes in {:.2} s: {:.0} changes/s\n",
        r.people,
        r.sync_secs,
        r.baseline_secs,
        r.baseline,
        r.sync_ratio,
        r.sync_ratio_target,
        mark(r.sync_ratio <= r.sync_ratio_target),
        r.changes,
        r.propagation_p50_ms,
        r.propagation_p99_ms,
        r.propagation_p99_target_ms,
        mark(r.propagation_p99_ms < r.propagation_p99_target_ms),
        r.outbox,
        r.outbox_drain_secs,
        r.outbox_per_sec,
    )
}
