//! The engine every plugin shares: compiling (or loading from the cache),
//! checking a component against the world, and instantiating it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};

use crate::bindings;
use crate::cache;
use crate::host::PluginHost;
use crate::host::events::EventBatch;
use crate::instance::{Fault, Instance, MemoryLimiter, StoreData, classify, deadline_ticks};
use crate::stdio;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a WebAssembly component ({cause}); build plugins with `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent { path: PathBuf, cause: String },
    #[error(
        "component {path} does not implement the world `plugin` of {package}@{current} (this host supports {supported}): {cause}",
        package = conductor_api::wit::PACKAGE,
        current = conductor_api::wit::CURRENT,
        supported = conductor_api::wit::supported_ranges(),
    )]
    WrongWorld { path: PathBuf, cause: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    cache: cache::CompileCache,
    ticker_stop: Arc<AtomicBool>,
}

/// A compiled component, checked against the world, ready to instantiate
/// any number of times (a restart instantiates again without compiling).
#[derive(Clone)]
pub struct Prepared {
    pre: bindings::PluginPre<StoreData>,
    /// sha256 of the component bytes.
    pub digest: String,
    /// True if the compiled code came from the cache.
    pub from_cache: bool,
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept; `None` disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, RuntimeError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<StoreData>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start epoch ticker: {e}")))?;
        }

        Ok(Arc::new(Self {
            cache: cache::CompileCache::new(cache_dir),
            engine,
            linker,
            ticker_stop,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from cache) and check a component file.
    pub fn prepare(&self, path: &Path) -> Result<Prepared, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.to_owned(),
            source,
        })?;
        if !wasmtime::wasmparser::Parser::is_component(&bytes) {
            let cause = if wasmtime::wasmparser::Parser::is_core_wasm(&bytes) {
                "it is a core wasm module".to_owned()
            } else {
                "it has no wasm header".to_owned()
            };
            return Err(RuntimeError::NotAComponent {
                path: path.to_owned(),
                cause,
            });
        }
        let started = Instant::now();
        let (component, digest, from_cache) =
            self.cache
                .load(&self.engine, &bytes)
                .map_err(|e| RuntimeError::NotAComponent {
                    path: path.to_owned(),
                    cause: format!("{e:#}"),
                })?;
        tracing::debug!(
            component = %path.display(),
            %digest,
            from_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        let pre = self
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::WrongWorld {
                path: path.to_owned(),
                cause: format!("{e:#}"),
            })?;
        Ok(Prepared {
            pre,
            digest,
            from_cache,
        })
    }

    fn instantiate_pre(
        &self,
        component: &Component,
    ) -> wasmtime::Result<bindings::PluginPre<StoreData>> {
        let pre = self.linker.instantiate_pre(component)?;
        bindings::PluginPre::new(pre)
    }

    /// A new sandboxed instance of `prepared` for the plugin `host`. The
    /// component's start-up code runs here, under the same limits as calls.
    pub fn instantiate(
        &self,
        prepared: &Prepared,
        host: Arc<PluginHost>,
        memory_limit: usize,
        timeout: Duration,
    ) -> Result<Instance, Fault> {
        let wasi = stdio::wasi_ctx(host.name());
        let mut store = Store::new(
            &self.engine,
            StoreData {
                wasi,
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(memory_limit),
                host,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(timeout));
        let instantiated = prepared
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let plugin = bindings::Plugin::new(&mut store, &instance)?;
                // `Plugin::new` checked that the export exists; check its
                // type against the borrowing `EventBatch` once, here.
                let on_events = instance
                    .get_func(&mut store, "on-events")
                    .ok_or_else(|| wasmtime::format_err!("the component exports no `on-events`"))?;
                on_events.typed::<(EventBatch<'static>,), (Result<(), String>,)>(&store)?;
                Ok((plugin, on_events))
            });
        match instantiated {
            Ok((plugin, on_events)) => Ok(Instance {
                store,
                plugin,
                on_events,
            }),
            Err(e) => Err(classify(&store, e)),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
