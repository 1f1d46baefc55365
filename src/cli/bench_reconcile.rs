//! `commonscloud bench reconcile`: the reconciler with every app on the
//! test images: the stand-ins for Nextcloud, Collabora and Discourse, real
//! PostgreSQL and Redis built from Debian's packages (both from
//! `images/testing`, run from the repository, as root). Builds them, starts
//! `serve` on a scratch appliance and times the cold install until every
//! app is ready and wired; stops it, then runs `commonscloud reconcile`
//! through a counting proxy of the Docker socket: a converged system must
//! make no mutating call. The baseline, measured in the same run, is one
//! bare observation of Docker (the calls no reconcile can do without).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bench::Scratch;
use crate::docker::context::TestImage;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The test image sources (the stand-ins' directories and
    /// `debian-image.sh`, which needs root and mmdebstrap).
    #[arg(long, default_value = "images/testing")]
    images_dir: PathBuf,
    /// The static stand-in program (provision/test.sh builds it).
    #[arg(long)]
    standin: Option<PathBuf>,
    /// The host's static busybox (Debian's busybox-static).
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// How many no-op reconciles to time (the median is shown).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    image_build_s: f64,
    cold_install_s: f64,
    containers: usize,
    noop_ms: f64,
    noop_calls: u64,
    noop_mutating_calls: u64,
    baseline_observe_ms: f64,
    baseline_calls: u64,
    ratio_noop_to_observe: f64,
}

/// Counts requests on their way to Docker, by method.
#[derive(Default)]
struct Counts {
    all: AtomicU64,
    mutating: AtomicU64,
}

async fn proxy(listener: tokio::net::UnixListener, target: PathBuf, counts: Arc<Counts>) {
    while let Ok((mut client, _)) = listener.accept().await {
        let target = target.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let Ok(mut server) = tokio::net::UnixStream::connect(&target).await else {
                return;
            };
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let up = async {
                let mut buf = vec![0u8; 64 * 1024];
                let mut line_start = true;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // A request line starts a line: `METHOD /path HTTP/1.1`.
                    let chunk = &buf[..n];
                    for (i, _) in chunk.iter().enumerate() {
                        if (i == 0 && line_start) || (i > 0 && chunk[i - 1] == b'\n') {
                            let rest = &chunk[i..];
                            for (m, mutates) in [
                                (&b"GET /"[..], false),
                                (b"HEAD /", false),
                                (b"POST /", true),
                                (b"PUT /", true),
                                (b"DELETE /", true),
                            ] {
                                if rest.starts_with(m) {
                                    counts.all.fetch_add(1, Ordering::Relaxed);
                                    if mutates {
                                        counts.mutating.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                    line_start = chunk.last() == Some(&b'\n');
                    if sw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}

fn default_standin() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/commonscloud/target")
        });
    target
        .join("standin")
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release/standin")
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let prefix = format!("ccbench-{}", std::process::id());
    let mut scratch = Scratch {
        dir: super::bench::scratch_dir("rec"),
        children: Vec::new(),
    };
    std::fs::create_dir_all(&scratch.dir)?;
    let cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    let standin = args.standin.clone().unwrap_or_else(default_standin);
    if !standin.exists() {
        bail!(
            "{}: build the stand-in program first (see provision/test.sh: cargo build --release for images/testing/standin), or pass --standin",
            standin.display()
        );
    }
    let docker = rt.block_on(crate::docker::connect(
        &crate::docker::socket_path(),
        Duration::from_secs(120),
    ))?;

    // The images.
    let t = Instant::now();
    let mut tags = HashMap::new();
    for (role, source) in crate::docker::context::TEST_IMAGES {
        let tag = match source {
            TestImage::Standin {
                dir,
                args: build_args,
            } => {
                let ctx = crate::docker::context::standin_context(
                    &args.images_dir.join(dir),
                    &args.busybox,
                    &standin,
                )
                .map_err(|e| anyhow::anyhow!(e))?;
                let tag = format!("commonscloud-bench/{dir}:{}", hash(&ctx, build_args));
                let have = rt.block_on(docker.inspect_image(&tag)).is_ok();
                if !have {
                    let ba: HashMap<String, String> = build_args
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    rt.block_on(crate::docker::build_image(
                        &docker,
                        ctx,
                        &tag,
                        &ba,
                        &HashMap::new(),
                    ))?;
                }
                tag
            }
            TestImage::Debian(name) => {
                crate::docker::context::debian_image(&args.images_dir, name)?
            }
        };
        tags.insert(role, tag);
    }
    let image_build_s = t.elapsed().as_secs_f64();

    // A scratch appliance with every app.
    let free = super::bench::free_port;
    let mut port_base = free()?;
    while !(1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", port_base + i)).is_ok()) {
        port_base = free()?;
    }
    let d = scratch.dir.display();
    let images: String = tags
        .iter()
        .map(|(role, tag)| format!("{role} = \"{tag}\"\n"))
        .collect();
    let text = format!(
        "[collective]\nname = \"Bench\"\nslug = \"bench\"\ndomain = \"bench.example.org\"\nadmin_email = \"admin@bench.example.org\"\n\
         [hardware]\nprofile = \"rpi5-8gb\"\n\
         [directory]\nlisten = [\"ldap://127.0.0.1:{}\"]\n\
         [apps]\nenabled = [\"nextcloud\", \"collabora\", \"discourse\"]\nforce = true\nprefix = \"{prefix}\"\nsubnet = \"10.251.{}.0/24\"\nport_base = {port_base}\n\
         [apps.images]\n{images}\
         [paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\nsecrets_dir = \"{d}/secrets\"\n",
        free()?,
        std::process::id() % 250,
    );
    let config_path = scratch.dir.join("appliance.toml");
    std::fs::write(&config_path, text)?;
    let config = crate::config::load(&config_path)?;
    let containers = crate::apps::desired(&config)?.containers.len();

    // Cold install: serve until every app is ready and wired.
    let t = Instant::now();
    let child = Command::new(&exe)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.dir.join("serve.log"))?)
        .spawn()
        .context("starting serve")?;
    let pid = child.id();
    scratch.children.push(child);
    let socket = config.api_socket();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let converged = rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(600);
        while Instant::now() < until {
            if let Ok((200, body)) = crate::api::client::get(&socket, "/v1/status").await
                && let Ok(s) = serde_json::from_slice::<serde_json::Value>(&body)
            {
                let apps: Vec<&serde_json::Value> = s["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("app:")))
                    .collect();
                if let Some(c) = apps.iter().find(|c| c["state"] != "ok") {
                    bar.set_message(format!(
                        "cold install: {}",
                        c["detail"].as_str().unwrap_or("")
                    ));
                    if c["state"] == "down" {
                        return Err(anyhow::anyhow!("{}", c["detail"]));
                    }
                } else if apps.len() == 3 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(anyhow::anyhow!("not converged within 600 s"))
    });
    bar.finish_and_clear();
    if let Err(e) = converged {
        let log = std::fs::read_to_string(scratch.dir.join("serve.log")).unwrap_or_default();
        bail!("the cold install failed: {e}\n{log}");
    }
    let cold_install_s = t.elapsed().as_secs_f64();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
        nix::sys::signal::Signal::SIGTERM,
    );
    for c in &mut scratch.children {
        let _ = c.wait();
    }
    scratch.children.clear();

    // A counting proxy in front of Docker.
    let proxy_path = scratch.dir.join("docker-proxy.sock");
    let counts = Arc::new(Counts::default());
    let target = PathBuf::from(crate::docker::socket_path());
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&proxy_path) })?;
    rt.spawn(proxy(listener, target, counts.clone()));
    let proxied = format!("unix://{}", proxy_path.display());

    // Baseline: one bare observation through the proxy.
    let (baseline_observe_ms, baseline_calls) = rt.block_on(async {
        let before = counts.all.load(Ordering::Relaxed);
        let t = Instant::now();
        let d = crate::docker::connect(
            proxy_path.to_str().unwrap_or_default(),
            Duration::from_secs(30),
        )
        .await?;
        crate::docker::observe(&d, &prefix).await?;
        Ok::<_, anyhow::Error>((
            t.elapsed().as_secs_f64() * 1000.0,
            counts.all.load(Ordering::Relaxed) - before,
        ))
    })?;

    // No-op reconciles, each a CLI run as an admin would make it.
    let mut times = Vec::new();
    let (mut calls, mut mutating) = (0, 0);
    for _ in 0..args.runs.max(1) {
        let (a0, m0) = (
            counts.all.load(Ordering::Relaxed),
            counts.mutating.load(Ordering::Relaxed),
        );
        let t = Instant::now();
        let out = Command::new(&exe)
            .args(["reconcile", "--json", "--config"])
            .arg(&config_path)
            .env("DOCKER_HOST", &proxied)
            .output()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["steps"] != 0 {
            bail!(
                "a reconcile of a converged system planned work: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        calls = counts.all.load(Ordering::Relaxed) - a0;
        mutating = counts.mutating.load(Ordering::Relaxed) - m0;
    }
    times.sort_by(f64::total_cmp);
    let noop_ms = times[times.len() / 2];
    let f = Figures {
        image_build_s,
        cold_install_s,
        containers,
        noop_ms,
        noop_calls: calls,
        noop_mutating_calls: mutating,
        baseline_observe_ms,
        baseline_calls,
        ratio_noop_to_observe: noop_ms / baseline_observe_ms.max(0.001),
    };
    drop(cleanup);
    drop(scratch);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "reconcile (every app on the test images, {} containers)",
            f.containers
        );
        println!("  test images ready             {:>8.1} s", f.image_build_s);
        println!(
            "  cold install (serve → wired)  {:>8.1} s",
            f.cold_install_s
        );
        println!(
            "  no-op reconcile               {:>8.0} ms   median of {} CLI runs, {:.1}× one bare observation ({:.0} ms)",
            f.noop_ms,
            args.runs.max(1),
            f.ratio_noop_to_observe,
            f.baseline_observe_ms
        );
        println!(
            "  Docker API calls, no-op       {:>8}      {} mutating (target 0: {}); a bare observation makes {}",
            f.noop_calls,
            f.noop_mutating_calls,
            if f.noop_mutating_calls == 0 {
                "met"
            } else {
                "NOT met"
            },
            f.baseline_calls
        );
    }
    Ok(if f.noop_mutating_calls == 0 { 0 } else { 1 })
}

fn hash(ctx: &[u8], args: &[(&str, &str)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(ctx);
    for (k, v) in args {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removes the bench's Docker objects (by instance label), even on error.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let prefix = self.prefix.clone();
        rt.block_on(async move {
            let Ok(docker) =
                crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(60))
                    .await
            else {
                return;
            };
            let Ok(o) = crate::docker::observe(&docker, &prefix).await else {
                return;
            };
            for c in &o.containers {
                let _ = docker
                    .remove_container(
                        &c.id,
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
            for n in o.networks.iter().filter(|n| n.managed) {
                let _ = docker.remove_network(&n.name).await;
            }
            for v in o.volumes.iter().filter(|v| v.managed) {
                let _ = crate::docker::objects::remove_volume(&docker, &v.name).await;
            }
        });
    }
}
