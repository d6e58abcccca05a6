//! Scale: many plugins in one daemon (issue 20, goal 5).
//!
//! Starts a real `conductor serve` (the release binary, as test-support's
//! `Daemon` does), warms its compile cache with one `steady` component, then
//! loads `--plugins` idle copies of it concurrently over the gRPC socket and
//! prints, beside the targets: time until all run, the daemon's resident
//! memory (VmRSS and PSS, total and per plugin above the empty daemon), its
//! threads, its idle CPU over `--idle-secs` (utime+stime from
//! /proc/<pid>/stat, % of one core) and its wakeups per second (context
//! switches of all its threads). Then `--series-plugins` copies of the
//! `counter_bench` component create `--series` series in all, and /metrics
//! is scraped `--scrapes` times: wall time, the daemon's CPU time per scrape
//! (which the other load on the machine does not inflate) and the size.
//!
//!   cargo bench --bench scale -- [--plugins N] [--idle-secs S] [--series N] [--json PATH]
//!
//! Figures taken while other work runs on the machine are noisy: prefer the
//! memory figures and the daemon's CPU time to wall times.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use conductor_api::v1;
use conductor_test_support::artifacts;
use conductor_test_support::daemon::{Daemon, load_request};

#[derive(Parser)]
struct Args {
    /// Idle `steady` plugins loaded concurrently.
    #[arg(long, default_value_t = 100)]
    plugins: usize,
    /// Seconds over which idle CPU and wakeups are measured.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Series created for the scrape, in all.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Plugins that share those series (each ≤ 10,000, the default cap per metric).
    #[arg(long, default_value_t = 10)]
    series_plugins: usize,
    /// Scrapes timed (the best and the median are printed).
    #[arg(long, default_value_t = 5)]
    scrapes: usize,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

/// What /proc says about the daemon at one moment.
#[derive(Clone, Copy)]
struct Sample {
    rss: u64,
    pss: u64,
    threads: u64,
    /// utime + stime, in seconds.
    cpu: f64,
    /// Voluntary and involuntary context switches of all threads.
    switches: u64,
    at: Instant,
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
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let pss_kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no Pss in smaps_rollup")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces), counted from 3.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = (f[11].parse::<u64>()? + f[12].parse::<u64>()?) as f64;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(s) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(Sample {
        rss: field("VmRSS:")? * 1024,
        pss: pss_kib * 1024,
        threads: field("Threads:")?,
        cpu: ticks / hz,
        switches,
        at: Instant::now(),
    })
}

/// Idle CPU (% of one core) and wakeups per second over `secs`.
fn idle(pid: i32, secs: u64) -> Result<(f64, f64)> {
    let a = sample(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let b = sample(pid)?;
    let wall = (b.at - a.at).as_secs_f64();
    Ok((
        100.0 * (b.cpu - a.cpu) / wall,
        (b.switches - a.switches) as f64 / wall,
    ))
}

fn running(d: &Daemon, prefix: &str) -> usize {
    d.list()
        .iter()
        .filter(|p| p.name.starts_with(prefix) && p.phase == v1::Phase::Running as i32)
        .count()
}

/// Load `specs` concurrently, each on its own connection as separate
/// clients would, and wait until all run.
fn load_all(d: &Daemon, prefix: &str, specs: Vec<String>) -> Result<Duration> {
    let n = specs.len();
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut tasks = Vec::new();
            for spec in specs {
                let mut c = d.client().await;
                tasks.push(tokio::spawn(
                    async move { c.load(load_request(&spec)).await },
                ));
            }
            for t in tasks {
                t.await?.context("load")?;
            }
            anyhow::Ok(())
        })?;
    while running(d, prefix) < n {
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "not all {n} plugins run after 2 min; log:\n{}",
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started.elapsed())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let steady = artifacts().join("testing_steady.wasm");
    let bench = artifacts().join("testing_counter_bench.wasm");
    let steady_spec = |name: &str| format!("name: {name}\ncomponent: {}\n", steady.display());

    let mut d = Daemon::start();
    let pid = d.pid();
    // Warm the compile cache, then leave the daemon empty.
    load_all(&d, "warm", vec![steady_spec("warm")])?;
    tokio::runtime::Runtime::new()?.block_on(async {
        d.client()
            .await
            .unload(v1::UnloadRequest {
                name: "warm".into(),
            })
            .await
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let empty = sample(pid)?;
    let (empty_cpu, empty_wakeups) = idle(pid, args.idle_secs)?;

    let specs = (0..args.plugins)
        .map(|i| steady_spec(&format!("idle-{i}")))
        .collect();
    let load_time = load_all(&d, "idle-", specs)?;
    std::thread::sleep(Duration::from_secs(1));
    let loaded = sample(pid)?;
    let (idle_cpu, idle_wakeups) = idle(pid, args.idle_secs)?;
    let n = args.plugins.max(1) as f64;

    let per = args.series.div_ceil(args.series_plugins.max(1));
    let specs = (0..args.series_plugins)
        .map(|i| {
            format!(
                "name: series-{i}\ncomponent: {}\nconfig: {{series: \"{per}\"}}\nlimits: {{maxSeriesPerMetric: {}}}\n",
                bench.display(),
                per.max(1)
            )
        })
        .collect();
    load_all(&d, "series-", specs)?;
    let mut times = Vec::new();
    let (mut bytes, mut lines, mut hits) = (0, 0, 0);
    let before = sample(pid)?;
    for _ in 0..args.scrapes.max(1) {
        let t = Instant::now();
        let body = d.scrape();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
        lines = body.lines().filter(|l| !l.starts_with('#')).count();
        hits = body.lines().filter(|l| l.contains("hits_total{")).count();
    }
    let after = sample(pid)?;
    let scrape_cpu_ms = (after.cpu - before.cpu) * 1e3 / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    let with_series = after;
    d.stop();

    let total_mib = loaded.rss as f64 / MIB;
    let figures = serde_json::json!({
        "plugins": args.plugins,
        "load_all_ms": load_time.as_secs_f64() * 1e3,
        "empty": { "rss_bytes": empty.rss, "pss_bytes": empty.pss, "threads": empty.threads,
                   "idle_cpu_pct": empty_cpu, "wakeups_per_s": empty_wakeups },
        "loaded": { "rss_bytes": loaded.rss, "pss_bytes": loaded.pss, "threads": loaded.threads,
                    "idle_cpu_pct": idle_cpu, "wakeups_per_s": idle_wakeups,
                    "rss_per_plugin_bytes": (loaded.rss as f64 - empty.rss as f64) / n,
                    "pss_per_plugin_bytes": (loaded.pss as f64 - empty.pss as f64) / n },
        "scrape": { "series_requested": args.series, "hits_series": hits, "lines": lines,
                    "bytes": bytes, "best_ms": best, "median_ms": median,
                    "daemon_cpu_ms_per_scrape": scrape_cpu_ms,
                    "rss_bytes_with_series": with_series.rss },
        "targets": { "rss_total_mib": 64, "load_all_ms": 2000, "idle_cpu_pct": 1.0,
                     "scrape_100k_ms": 150 },
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "{} idle steady plugins in one daemon (pid {pid})",
        args.plugins
    );
    println!(
        "  load all (warm cache)   {:>9.0} ms     target < 2000 ms   {}",
        load_time.as_secs_f64() * 1e3,
        mark(load_time < Duration::from_secs(2))
    );
    println!(
        "  resident (VmRSS)        {:>9.1} MiB    target < 64 MiB    {}   (empty daemon {:.1} MiB, {:.0} KiB per plugin)",
        total_mib,
        mark(total_mib < 64.0),
        empty.rss as f64 / MIB,
        (loaded.rss as f64 - empty.rss as f64) / n / 1024.0
    );
    println!(
        "  proportional (PSS)      {:>9.1} MiB                          (empty daemon {:.1} MiB, {:.0} KiB per plugin)",
        loaded.pss as f64 / MIB,
        empty.pss as f64 / MIB,
        (loaded.pss as f64 - empty.pss as f64) / n / 1024.0
    );
    println!(
        "  threads                 {:>9}        (empty daemon {})",
        loaded.threads, empty.threads
    );
    println!(
        "  idle CPU ({}s)          {:>9.2} %      target < 1 %       {}   (empty daemon {:.2} %)",
        args.idle_secs,
        idle_cpu,
        mark(idle_cpu < 1.0),
        empty_cpu
    );
    println!(
        "  wakeups (ctx switches)  {:>9.0} /s                           (empty daemon {:.0} /s)",
        idle_wakeups, empty_wakeups
    );
    println!(
        "scrape of {} series ({hits} plugin series, {} lines, {:.1} MiB), {} scrapes",
        lines,
        lines,
        bytes as f64 / MIB,
        times.len()
    );
    println!(
        "  wall time               {:>9.1} ms best, {:.1} ms median   target < 150 ms   {}",
        best,
        median,
        mark(median < 150.0)
    );
    println!("  daemon CPU per scrape   {scrape_cpu_ms:>9.1} ms");
    println!(
        "  daemon VmRSS with them  {:>9.1} MiB",
        with_series.rss as f64 / MIB
    );
    Ok(())
}
