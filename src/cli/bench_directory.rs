//! `commonscloud bench directory`: logins per second through the daemon's
//! authentication path against raw ldap3 simple binds on the same slapd, in
//! the same run, and the time to create people through the onboarding
//! service. Starts a slapd of its own in a temp dir; touches nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::directory::auth::Authenticator;
use crate::directory::ldap;
use crate::directory::people::{self, NewPerson};
use crate::directory::slapd::{self, Paths};
use crate::directory::tree::Tree;
use crate::onboarding::service::{Onboarding, Settings, os_random};
use crate::onboarding::validate::Form;

/// Daemon-path logins per second over raw binds, at least.
const RATIO_TARGET: f64 = 0.8;

#[derive(clap::Args)]
pub struct DirectoryArgs {
    /// How long each of the two login paths is measured, in seconds (in six
    /// alternating rounds).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent login workers in each run.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// How many people (each with a password) the logins cycle through.
    #[arg(long, default_value_t = 20)]
    people_for_logins: usize,
    /// How many people to create through the onboarding service (register,
    /// verify the mail, approve); 0 skips this part.
    #[arg(long, default_value_t = 10_000)]
    people: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Logins {
    seconds: u64,
    concurrency: usize,
    people: usize,
    baseline: &'static str,
    daemon_path: &'static str,
    /// Per round, in the order measured.
    baseline_runs_per_sec: Vec<f64>,
    daemon_runs_per_sec: Vec<f64>,
    baseline_per_sec: f64,
    daemon_per_sec: f64,
    ratio: f64,
    ratio_target: f64,
    target_met: bool,
}

#[derive(Debug, Serialize)]
struct Creation {
    people: usize,
    seconds: f64,
    people_per_sec: f64,
    ms_per_person: f64,
    register_ms_per_person: f64,
    verify_ms_per_person: f64,
    approve_ms_per_person: f64,
}

#[derive(Debug, Serialize)]
struct DirectoryBench {
    logins: Logins,
    onboarding: Option<Creation>,
}

/// The bench's temp dir and slapd: stopped and removed even on error.
struct Scratch {
    dir: PathBuf,
    paths: Option<Paths>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pid) = self.paths.as_ref().and_then(slapd::running_pid) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            // Let it exit before its files go.
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until && nix::sys::signal::kill(pid, None).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An appliance's slapd (collective quimper) in `dir`, on a free loopback
/// port, with its service accounts; `started` is set as soon as it runs, so
/// the caller stops it whatever happens next.
pub(super) async fn scratch_slapd(
    dir: &std::path::Path,
    started: &mut Option<Paths>,
) -> anyhow::Result<(crate::config::Config, Paths, u16)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = super::bench::free_port()?;
    let text = format!(
        "[collective]\nname = \"Quimper\"\nslug = \"quimper\"\ndomain = \"quimper.example.org\"\nadmin_email = \"admin@quimper.example.org\"\n\
         [hardware]\nprofile = \"rpi4-4gb\"\n[directory]\nlisten = [\"ldap://127.0.0.1:{port}\"]\n\
         [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\nsecrets_dir = \"{0}/secrets\"\n",
        dir.display()
    );
    let config = crate::config::parse(&text, &dir.join("appliance.toml"))?;
    std::fs::create_dir_all(&*config.paths.runtime_dir).context("creating the runtime dir")?;
    let paths = Paths::new(&config);
    slapd::bootstrap(&config, &paths)?;
    *started = Some(paths.clone());
    slapd::start_or_adopt(&config, &paths).await?;
    let tree = Tree::new(config.suffix().as_str());
    ldap::ensure_service_accounts(&paths, &tree, &config.paths.secrets_dir).await?;
    Ok((config, paths, port))
}

pub fn run(args: DirectoryArgs) -> anyhow::Result<i32> {
    if args.concurrency == 0 || args.people_for_logins == 0 || args.seconds == 0 {
        bail!("--seconds, --concurrency and --people-for-logins must be at least 1");
    }
    let mut scratch = Scratch {
        dir: super::bench::scratch_dir("directory"),
        paths: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Ctrl-C ends the bench through the same clean-up as an error.
    let result = rt.block_on(async {
        tokio::select! {
            r = bench(&args, &mut scratch) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    if let Some(paths) = &scratch.paths {
        let _ = rt.block_on(slapd::stop(paths, Duration::from_secs(5)));
    }
    let b = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", report(&b));
    }
    Ok(0)
}

async fn bench(args: &DirectoryArgs, scratch: &mut Scratch) -> anyhow::Result<DirectoryBench> {
    let (config, paths, port) = scratch_slapd(&scratch.dir, &mut scratch.paths).await?;
    let tree = Tree::new(config.suffix().as_str());
    let url = format!("ldap://127.0.0.1:{port}");

    // Part 1: logins.
    let slug = config.collective.slug.clone();
    let collective_dn = tree.collective(&slug);
    let mut root = ldap::connect_root(&paths).await?;
    let mut logins = Vec::with_capacity(args.people_for_logins);
    for i in 0..args.people_for_logins {
        let uid = format!("login{i:04}");
        let mail = format!("{uid}@bench.example.org");
        let dn = people::create_person(
            &mut root,
            &tree,
            &NewPerson {
                uid: &uid,
                display_name: &uid,
                mail: &mail,
                language: "en",
                collective_dn: &collective_dn,
                home_node: "box.quimper.example.org",
            },
        )
        .await?;
        // A member of the collective, as everyone who may sign in is.
        people::add_member(&mut root, &tree.group(&slug, "members"), &dn).await?;
        let pw = format!("pw-{uid}-bench-password");
        ldap::set_password(&mut root, &dn, &pw).await?;
        logins.push(Login { uid, dn, pw });
    }
    let logins = Arc::new(logins);
    let run_for = Duration::from_secs(args.seconds);
    let auth = Arc::new(Authenticator::new(paths.clone(), tree.clone()));

    // Short alternating rounds (B D D B B D …), so that drift in the
    // machine's speed (other load, thermal limits) weighs on both alike.
    let rounds = 6u32;
    let slice = run_for / rounds;
    let (mut base_runs, mut daemon_runs) = (Vec::new(), Vec::new());
    eprintln!(
        "logins: {rounds} alternating rounds of {:.1} s each, raw binds and daemon path…",
        slice.as_secs_f64()
    );
    for r in 0..rounds {
        if r % 2 == 0 {
            base_runs.push(raw_binds(&url, &logins, args.concurrency, slice).await?);
            daemon_runs.push(daemon_logins(&auth, &logins, args.concurrency, slice).await?);
        } else {
            daemon_runs.push(daemon_logins(&auth, &logins, args.concurrency, slice).await?);
            base_runs.push(raw_binds(&url, &logins, args.concurrency, slice).await?);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let baseline = mean(&base_runs);
    let daemon = mean(&daemon_runs);
    let ratio = if baseline > 0.0 {
        daemon / baseline
    } else {
        0.0
    };
    let logins = Logins {
        seconds: args.seconds,
        concurrency: args.concurrency,
        people: args.people_for_logins,
        baseline: "ldap3 simple binds over TCP (ldap://127.0.0.1), one connection per worker",
        daemon_path: "Authenticator::authenticate: uid search on a shared ldapi root connection, \
                      then a simple bind on a new ldapi connection",
        baseline_runs_per_sec: base_runs,
        daemon_runs_per_sec: daemon_runs,
        baseline_per_sec: baseline,
        daemon_per_sec: daemon,
        ratio,
        ratio_target: RATIO_TARGET,
        target_met: ratio >= RATIO_TARGET,
    };

    // Part 2: people through the onboarding service.
    let onboarding = if args.people > 0 {
        Some(create_people(&config, args.people).await?)
    } else {
        None
    };
    Ok(DirectoryBench { logins, onboarding })
}

struct Login {
    uid: String,
    dn: String,
    pw: String,
}

/// Runs `workers` copies of `work` until `run_for` has passed; each returns
/// how many logins it made. Returns logins per second.
async fn per_second<F, Fut>(workers: usize, run_for: Duration, work: F) -> anyhow::Result<f64>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let start = Instant::now();
    let until = start + run_for;
    let handles: Vec<_> = (0..workers).map(|w| tokio::spawn(work(w, until))).collect();
    let mut total = 0u64;
    for h in handles {
        total += h.await.context("a login worker panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn raw_binds(
    url: &str,
    logins: &Arc<Vec<Login>>,
    workers: usize,
    run_for: Duration,
) -> anyhow::Result<f64> {
    per_second(workers, run_for, |w, until| {
        let url = url.to_owned();
        let logins = logins.clone();
        async move {
            let (conn, mut l) = ldap3::LdapConnAsync::new(&url)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            ldap3::drive!(conn);
            let mut n = 0u64;
            let mut i = w;
            while Instant::now() < until {
                let p = &logins[i % logins.len()];
                let res = l.simple_bind(&p.dn, &p.pw).await?;
                if res.rc != 0 {
                    bail!("raw bind as {} failed: {res}", p.dn);
                }
                n += 1;
                i += workers;
            }
            let _ = l.unbind().await;
            Ok(n)
        }
    })
    .await
}

async fn daemon_logins(
    auth: &Arc<Authenticator>,
    logins: &Arc<Vec<Login>>,
    workers: usize,
    run_for: Duration,
) -> anyhow::Result<f64> {
    per_second(workers, run_for, |w, until| {
        let auth = auth.clone();
        let logins = logins.clone();
        async move {
            let mut n = 0u64;
            let mut i = w;
            while Instant::now() < until {
                let p = &logins[i % logins.len()];
                auth.authenticate(&p.uid, &p.pw)
                    .await
                    .with_context(|| format!("daemon-path login as {}", p.uid))?;
                n += 1;
                i += workers;
            }
            Ok(n)
        }
    })
    .await
}

async fn create_people(config: &crate::config::Config, count: usize) -> anyhow::Result<Creation> {
    let store = Arc::new(std::sync::Mutex::new(crate::store::Store::open(
        &config.paths.state_dir,
    )?));
    let svc = Onboarding::new(Settings::from_config(config), store.clone(), os_random);
    let bar = indicatif::ProgressBar::new(count as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "creating people {bar:30} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut register, mut verify, mut approve) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for i in 0..count {
        let now = crate::clock::unix_now();
        let email = format!("p{i}@bench.example.org");
        let form = Form {
            uid: format!("p{i:05}"),
            display_name: format!("Person {i}"),
            email: email.clone(),
            collective: config.collective.slug.to_string(),
            message: String::new(),
            language: "en".into(),
            ..Form::default()
        };
        // One address per registration: the per-IP limit is not measured here.
        let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let t = Instant::now();
        let id = svc
            .register(&form, &ip, now)
            .await
            .with_context(|| format!("registering {}", form.uid))?
            .request()
            .with_context(|| format!("{email} already had an account"))?;
        register += t.elapsed();
        let t = Instant::now();
        // The newest verify mail to this address: scans from the end of the
        // outbox, a few rows at most.
        let params: String = store
            .lock()
            .map_err(|_| anyhow::anyhow!("the store lock is poisoned"))?
            .connection()
            .query_row(
                "SELECT params FROM mail_outbox WHERE recipient = ?1 AND template = 'verify'
                 ORDER BY id DESC LIMIT 1",
                [&email],
                |r| r.get(0),
            )
            .with_context(|| format!("reading the verify mail to {email}"))?;
        let params: serde_json::Value = serde_json::from_str(&params)?;
        let token = params["link"]
            .as_str()
            .and_then(|l| l.split("token=").nth(1))
            .with_context(|| format!("no token in the verify mail to {email}: {params}"))?;
        svc.verify_email(token, now)
            .await
            .with_context(|| format!("verifying {email}"))?;
        verify += t.elapsed();
        let t = Instant::now();
        svc.approve(id, "bench", now)
            .await
            .with_context(|| format!("approving request {id}"))?;
        approve += t.elapsed();
        bar.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / count as f64;
    Ok(Creation {
        people: count,
        seconds,
        people_per_sec: count as f64 / seconds,
        ms_per_person: seconds * 1000.0 / count as f64,
        register_ms_per_person: per(register),
        verify_ms_per_person: per(verify),
        approve_ms_per_person: per(approve),
    })
}

fn report(b: &DirectoryBench) -> String {
    let l = &b.logins;
    let mut out = String::from("directory\n");
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format!(
        "  logins, {} workers, {} s per path in {} alternating rounds, {} people\n",
        l.concurrency,
        l.seconds,
        l.baseline_runs_per_sec.len(),
        l.people
    ));
    out.push_str(&format!(
        "  raw binds (baseline)          {:>9.0}/s   rounds: {}\n",
        l.baseline_per_sec,
        runs(&l.baseline_runs_per_sec)
    ));
    out.push_str(&format!(
        "                                              daemon rounds: {}\n",
        runs(&l.daemon_runs_per_sec)
    ));
    out.push_str(&format!(
        "  daemon authentication path    {:>9.0}/s   {:.2}× baseline, target ≥ {:.2}: {}\n",
        l.daemon_per_sec,
        l.ratio,
        l.ratio_target,
        if l.target_met { "met" } else { "NOT met" }
    ));
    out.push_str(&format!(
        "  baseline: {}\n  daemon path: {}\n",
        l.baseline, l.daemon_path
    ));
    match &b.onboarding {
        Some(c) => {
            out.push_str(&format!(
                "  create {} people (onboarding) {:>8.1} s    {:.0} people/s, {:.2} ms per person\n",
                c.people, c.seconds, c.people_per_sec, c.ms_per_person
            ));
            out.push_str(&format!(
                "    per person: register {:.2} ms, verify mail {:.2} ms, approve {:.2} ms\n",
                c.register_ms_per_person, c.verify_ms_per_person, c.approve_ms_per_person
            ));
        }
        None => out.push_str("  create people (onboarding)    skipped (--people 0)\n"),
    }
    out
}
