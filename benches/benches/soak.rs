//! Soak: many plugins under a steady event load with continuous churn, for
//! a long time (issue 19).
//!
//! Starts a real `conductor serve` (the release binary, as test-support's
//! `Daemon` does) and loads `--plugins` copies of the real exec-counter
//! plugin (BPF program on `sched/sched_process_exec`, ring buffer, component),
//! of which `--churn` are slots that cycle for the whole run: load → update
//! (config only: the component is swapped at a batch boundary) → unload.
//! The other plugins stay loaded from start to end. A generator thread execs
//! a copy of /bin/true named `soakexec` `--exec-rate` times per second, so
//! every stable plugin must count exactly the generator's execs under
//! `comm="soakexec"`, apart from drops the host and kernel counted.
//!
//! Every `--sample-secs` one line: the daemon's resident memory, open
//! descriptors, threads, BPF programs and maps it holds (from
//! /proc/<pid>/fdinfo, no bpftool), churn cycles done and execs generated.
//! At the end: events lost beyond counted drops per stable plugin (must be
//! 0), and what the daemon still holds after everything is unloaded
//! (programs and maps must be 0, descriptors back to the empty daemon's).
//!
//!   cargo bench --bench soak -- [--duration-secs 1800] [--plugins 50] [--churn 10]
//!       [--exec-rate 50] [--sample-secs 60] [--json PATH]
//!
//! Run as root. Exits non-zero if events were lost beyond counted drops or
//! if programs or maps were left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use conductor_api::v1;
use conductor_test_support::daemon::{Daemon, load_request, wire_spec};
use conductor_test_support::{artifact, exec_counter_spec, value};

#[derive(Parser)]
struct Args {
    /// How long the churn and the event load run, in seconds.
    #[arg(long, default_value_t = 1800)]
    duration_secs: u64,
    /// Plugins loaded at any time (stable ones plus churn slots).
    #[arg(long, default_value_t = 50)]
    plugins: usize,
    /// Of those, slots that cycle load → update → unload all the time.
    #[arg(long, default_value_t = 10)]
    churn: usize,
    /// Execs per second of the event generator.
    #[arg(long, default_value_t = 50)]
    exec_rate: u64,
    /// Pause between two churn operations, in milliseconds.
    #[arg(long, default_value_t = 100)]
    churn_pause_ms: u64,
    /// Seconds between two printed samples.
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Also write the samples and the outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

const MIB: f64 = 1024.0 * 1024.0;
const COMM: &str = "soakexec";

/// What /proc says about the daemon at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss: u64,
    fds: u64,
    threads: u64,
    progs: u64,
    maps: u64,
}

fn sample(pid: i32) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let (mut fds, mut progs, mut maps) = (0, 0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        fds += 1;
        // A program or link descriptor names its program; a map its map.
        if info.lines().any(|l| l.starts_with("prog_id:")) {
            progs += 1;
        }
        if info.lines().any(|l| l.starts_with("map_id:")) {
            maps += 1;
        }
    }
    Ok(Sample {
        rss: field("VmRSS:")? * 1024,
        fds,
        threads: field("Threads:")?,
        progs,
        maps,
    })
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// exec-counter under `name`, with `generation` in its config so an update
/// changes only the component's config (swapped in place, kernel side kept).
fn spec(name: &str, generation: u64) -> String {
    format!(
        "{}config: {{ignore: \"gen{generation}\"}}\n",
        exec_counter_spec(name)
    )
}

fn running(d: &Daemon, prefix: &str) -> usize {
    d.list()
        .iter()
        .filter(|p| p.name.starts_with(prefix) && p.phase == v1::Phase::Running as i32)
        .count()
}

/// Execs `exe` `rate` times per second until `stop`, counting the ones that
/// ran.
fn generate(exe: &Path, rate: u64, stop: &AtomicBool, done: &AtomicU64) -> Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let status = std::process::Command::new(exe)
            .status()
            .with_context(|| format!("cannot exec {}", exe.display()))?;
        if !status.success() {
            bail!("{} failed: {status}", exe.display());
        }
        done.fetch_add(1, Ordering::Relaxed);
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // behind (a loaded machine): do not burst
        }
    }
    Ok(())
}

/// Cycle every churn slot through load → update → unload until `stop`.
fn churn(d: &Daemon, slots: usize, pause: Duration, stop: &AtomicBool, cycles: &AtomicU64) {
    block_on(async {
        let mut c = d.client().await;
        let mut generation = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for slot in 0..slots {
                generation += 1;
                let name = format!("churn-{slot}");
                if let Err(e) = c.load(load_request(&spec(&name, generation))).await {
                    eprintln!("churn: load {name}: {}", e.message());
                }
                tokio::time::sleep(pause).await;
                let update = v1::UpdateRequest {
                    spec: Some(wire_spec(&spec(&name, generation + 1_000_000))),
                    annotations: Default::default(),
                };
                if let Err(e) = c.update(update).await {
                    eprintln!("churn: update {name}: {}", e.message());
                }
                tokio::time::sleep(pause).await;
                if let Err(e) = c.unload(v1::UnloadRequest { name: name.clone() }).await {
                    eprintln!("churn: unload {name}: {}", e.message());
                }
                cycles.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !nix_is_root() {
        bail!("the soak loads BPF programs: run it as root");
    }
    let stable = args.plugins.saturating_sub(args.churn);
    let work = tempfile::tempdir()?;
    let exe = work.path().join(COMM);
    std::fs::copy("/bin/true", &exe).context("cannot copy /bin/true")?;
    // Touch the artifacts so a missing build fails here, not in the daemon.
    artifact("exec_counter.wasm");

    let mut d = Daemon::start();
    let pid = d.pid();
    std::thread::sleep(Duration::from_secs(1));
    let empty = sample(pid)?;

    block_on(async {
        let mut c = d.client().await;
        for i in 0..stable {
            c.load(load_request(&spec(&format!("stable-{i}"), 0)))
                .await
                .with_context(|| format!("load stable-{i}"))?;
        }
        anyhow::Ok(())
    })?;
    let until = Instant::now() + Duration::from_secs(120);
    while running(&d, "stable-") < stable {
        if Instant::now() > until {
            bail!(
                "not all {stable} stable plugins run; log:\n{}",
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let loaded = sample(pid)?;
    println!(
        "soak: {} plugins ({stable} stable, {} churn slots), {} execs/s, {} s; daemon pid {pid}",
        args.plugins, args.churn, args.exec_rate, args.duration_secs
    );
    println!(
        "  empty daemon: {:.1} MiB, {} fds; {stable} loaded: {:.1} MiB, {} fds, {} progs, {} maps",
        empty.rss as f64 / MIB,
        empty.fds,
        loaded.rss as f64 / MIB,
        loaded.fds,
        loaded.progs,
        loaded.maps
    );
    println!(
        "  {:>7} {:>9} {:>6} {:>8} {:>6} {:>6} {:>8} {:>9}",
        "t (s)", "RSS MiB", "fds", "threads", "progs", "maps", "cycles", "execs"
    );

    let stop = AtomicBool::new(false);
    let execs = AtomicU64::new(0);
    let cycles = AtomicU64::new(0);
    let started = Instant::now();
    let mut samples = Vec::new();
    let end = started + Duration::from_secs(args.duration_secs);
    let outcome = std::thread::scope(|s| -> Result<()> {
        let generator = s.spawn(|| generate(&exe, args.exec_rate, &stop, &execs));
        let churner = s.spawn(|| {
            churn(
                &d,
                args.churn,
                Duration::from_millis(args.churn_pause_ms),
                &stop,
                &cycles,
            )
        });
        let result = (|| {
            loop {
                let now = Instant::now();
                let s = sample(pid)?;
                let t = (now - started).as_secs();
                println!(
                    "  {t:>7} {:>9.1} {:>6} {:>8} {:>6} {:>6} {:>8} {:>9}",
                    s.rss as f64 / MIB,
                    s.fds,
                    s.threads,
                    s.progs,
                    s.maps,
                    cycles.load(Ordering::Relaxed),
                    execs.load(Ordering::Relaxed)
                );
                let _ = std::io::stdout().flush();
                samples.push((t, s));
                if now >= end {
                    return Ok(());
                }
                if generator.is_finished() {
                    bail!("the event generator stopped early");
                }
                std::thread::sleep(Duration::from_secs(args.sample_secs).min(end - now));
            }
        })();
        stop.store(true, Ordering::Relaxed);
        generator
            .join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))??;
        churner
            .join()
            .map_err(|_| anyhow::anyhow!("churn panicked"))?;
        result
    });
    outcome?;
    let generated = execs.load(Ordering::Relaxed);
    let cycles = cycles.load(Ordering::Relaxed);

    // Let the stable plugins drain their rings, then count.
    let series = |name: &str| {
        format!(
            r#"{}__execs_total{{plugin="{name}",comm="{COMM}",namespace="",pod="",container=""}}"#,
            name.replace('-', "_")
        )
    };
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let text = d.scrape();
        let all = (0..stable).all(|i| {
            value(&text, &series(&format!("stable-{i}"))).unwrap_or(0.0) as u64 >= generated
        });
        if all || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = d.scrape();
    let mut worst_unexplained = 0i64;
    let mut counted_drops = 0u64;
    for i in 0..stable {
        let name = format!("stable-{i}");
        let seen = value(&text, &series(&name)).unwrap_or(0.0) as u64;
        let lost: u64 = ["kernel", "host"]
            .iter()
            .map(|r| {
                value(
                    &text,
                    &format!(
                        r#"conductor_events_lost_total{{plugin="{name}",source="events",reason="{r}"}}"#
                    ),
                )
                .unwrap_or(0.0) as u64
            })
            .sum();
        counted_drops += lost;
        let unexplained = generated as i64 - seen as i64 - lost as i64;
        if unexplained.abs() > worst_unexplained.abs() {
            worst_unexplained = unexplained;
        }
    }

    // Unload everything: nothing may stay behind.
    // `Daemon::list` runs its own runtime: list before entering this one.
    let names: Vec<String> = d.list().into_iter().map(|p| p.name).collect();
    block_on(async {
        let mut c = d.client().await;
        for name in names {
            c.unload(v1::UnloadRequest { name }).await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let after = sample(pid)?;
    let peak = samples.iter().map(|(_, s)| s.rss).max().unwrap_or(0);
    let first = samples.first().map(|(_, s)| s.rss).unwrap_or(0);
    let last = samples.last().map(|(_, s)| s.rss).unwrap_or(0);
    d.stop();

    println!(
        "  {cycles} churn cycles (load+update+unload), {generated} execs generated, {stable} stable plugins"
    );
    println!(
        "  RSS: first sample {:.1} MiB, last {:.1} MiB, peak {:.1} MiB",
        first as f64 / MIB,
        last as f64 / MIB,
        peak as f64 / MIB
    );
    println!(
        "  events lost beyond counted drops: worst plugin {worst_unexplained} (counted drops, all stable plugins: {counted_drops})"
    );
    println!(
        "  after unloading all: {:.1} MiB, {} fds (empty daemon {}), {} progs, {} maps held",
        after.rss as f64 / MIB,
        after.fds,
        empty.fds,
        after.progs,
        after.maps
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "duration_secs": args.duration_secs, "plugins": args.plugins, "churn": args.churn,
            "exec_rate": args.exec_rate, "cycles": cycles, "execs": generated,
            "unexplained_loss_worst": worst_unexplained, "counted_drops": counted_drops,
            "empty": {"rss": empty.rss, "fds": empty.fds},
            "after_unload": {"rss": after.rss, "fds": after.fds, "progs": after.progs, "maps": after.maps},
            "samples": samples.iter().map(|(t, s)| serde_json::json!({
                "t": t, "rss": s.rss, "fds": s.fds, "threads": s.threads, "progs": s.progs, "maps": s.maps,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if worst_unexplained != 0 {
        bail!("events were lost beyond counted drops: {worst_unexplained}");
    }
    if after.progs != 0 || after.maps != 0 {
        bail!(
            "after unloading everything the daemon still holds {} programs and {} maps",
            after.progs,
            after.maps
        );
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
