//! How long a component's first compile takes under wasmtime's options,
//! and how long loading the compiled code from the cache takes:
//!
//! ```text
//! cargo run -p conductor-runtime --example compile_options -- target/plugins/exec_counter_py.wasm
//! ```
//!
//! Also wasmtime's baseline compiler (Winch), which the host uses for a
//! quick first start of large components.
//!
//! Prints one line per configuration (the host's own first), each the
//! best of three compiles, and the ratio to the host's. Figures for the
//! record are in docs/src/languages.md.

use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Config, Engine, OptLevel};

fn config(opt: OptLevel, parallel: bool, winch: bool) -> Config {
    // As conductor_runtime::Runtime::new, but for the varied options.
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(opt);
    c.parallel_compilation(parallel);
    if winch {
        c.strategy(wasmtime::Strategy::Winch);
    }
    c
}

/// The best of three runs (`RUNS=N` for another number).
fn best_of_three(mut f: impl FnMut() -> Duration) -> Duration {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    (0..runs.max(1)).map(|_| f()).min().unwrap_or_default()
}

fn main() -> wasmtime::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| wasmtime::format_err!("usage: compile_options <component.wasm>"))?;
    let bytes = std::fs::read(&path)?;
    println!(
        "{path}: {:.1} MB, {} cores",
        bytes.len() as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut host = None;
    let mut rows = vec![
        (
            "host: cranelift speed, parallel",
            OptLevel::Speed,
            true,
            false,
        ),
        ("cranelift speed, one thread", OptLevel::Speed, false, false),
        ("cranelift none, parallel", OptLevel::None, true, false),
    ];
    rows.push(("winch, parallel", OptLevel::Speed, true, true));
    rows.push(("winch, one thread", OptLevel::Speed, false, true));
    for (name, opt, parallel, winch) in rows {
        let engine = match Engine::new(&config(opt, parallel, winch)) {
            Ok(e) => e,
            Err(e) => {
                println!("{name:<34} not available: {e:#}");
                continue;
            }
        };
        let mut failed = None;
        let took = best_of_three(|| {
            let started = Instant::now();
            if let Err(e) = Component::new(&engine, &bytes) {
                failed = Some(format!("{e:#}"));
            }
            started.elapsed()
        });
        if let Some(e) = failed {
            println!("{name:<34} cannot compile it: {e}");
            continue;
        }
        let base = *host.get_or_insert(took);
        println!(
            "{name:<34} first compile {:>7.2} s  ({:.2}x the host's)",
            took.as_secs_f64(),
            took.as_secs_f64() / base.as_secs_f64()
        );
        if name.starts_with("host") {
            // A warm cache: the serialized code, loaded without compiling.
            let compiled = Component::new(&engine, &bytes)?.serialize()?;
            let took = best_of_three(|| {
                let started = Instant::now();
                // SAFETY: bytes this engine serialized a moment ago.
                unsafe { Component::deserialize(&engine, &compiled) }.expect("deserializes");
                started.elapsed()
            });
            println!(
                "{:<34} from the cache {:>6.3} s  ({:.1} MB compiled)",
                "host: warm cache",
                took.as_secs_f64(),
                compiled.len() as f64 / 1e6
            );
        }
    }
    Ok(())
}
