//! A running plugin instance: its store, memory cap, call deadline and the
//! classification of what stopped it.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::compat::v0_1;
use crate::engine::{BatchShape, EPOCH_TICK};
use crate::host::PluginHost;
use crate::host::events::{EventBatch, OnEvents};

/// Per-store state: WASI, the resource table, limits and the plugin's grants.
pub struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// `wasi:http`, linked so default JS builds load; requests are denied.
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_hooks: crate::host::http::DenyOutgoing,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) host: Arc<PluginHost>,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether the cap was what stopped a plugin.
pub(crate) struct MemoryLimiter {
    limit: usize,
    current: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            current: 0,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Components may have several memories; account the growth, not the size.
        let total = self.current - current.min(self.current) + desired;
        if total > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "plugin exceeded its memory limit of {} MiB (wanted {} bytes)",
                self.limit >> 20,
                total
            ));
        }
        self.current = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    Trap,
    /// The call ran past `limits.callTimeoutMs`.
    Timeout,
    /// The guest tried to grow memory past `limits.memoryMib`.
    Memory,
    /// The guest returned an error.
    Error,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

/// Which export to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Init,
    Tick,
    Collect,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Tick => "tick",
            Self::Collect => "collect",
        }
    }
}

/// A running plugin instance.
pub struct Instance {
    pub(crate) store: Store<StoreData>,
    pub(crate) init: CallFunc,
    pub(crate) tick: CallFunc,
    pub(crate) collect: CallFunc,
    /// The `on-events` export, whose type `prepare` checked against `shape`.
    pub(crate) on_events: wasmtime::component::Func,
    pub(crate) shape: BatchShape,
}

/// `init`, `tick` and `collect`: `func() -> result<_, string>`.
pub(crate) type CallFunc = wasmtime::component::TypedFunc<(), (Result<(), String>,)>;

impl Instance {
    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.current
    }

    pub fn call(&mut self, call: Call, timeout: Duration) -> Result<(), Fault> {
        self.arm(timeout);
        let func = match call {
            Call::Init => self.init,
            Call::Tick => self.tick,
            Call::Collect => self.collect,
        };
        let result = func.call(&mut self.store, ()).map(|(r,)| r);
        self.finish(result)
    }

    pub fn on_events(&mut self, batch: EventBatch<'_>, timeout: Duration) -> Result<(), Fault> {
        self.arm(timeout);
        let result = match self.shape {
            BatchShape::Lists => {
                // SAFETY: `prepare` type-checked this function against
                // `OnEvents` (the lifetime does not change the component type).
                let func: OnEvents<'_> =
                    unsafe { wasmtime::component::TypedFunc::new_unchecked(self.on_events) };
                func.call(&mut self.store, (batch,))
            }
            BatchShape::Spans => {
                let spans = v0_1::spans(&batch);
                let legacy = v0_1::SpansBatch {
                    source: batch.source,
                    data: batch.data,
                    spans: &spans,
                    lost: batch.lost,
                };
                // SAFETY: as above, against `OnEventsSpans`.
                let func: v0_1::OnEventsSpans<'_> =
                    unsafe { wasmtime::component::TypedFunc::new_unchecked(self.on_events) };
                func.call(&mut self.store, (legacy,))
            }
        };
        self.finish(result.map(|(r,)| r))
    }

    fn arm(&mut self, timeout: Duration) {
        self.store.set_epoch_deadline(deadline_ticks(timeout));
    }

    fn finish(&mut self, result: wasmtime::Result<Result<(), String>>) -> Result<(), Fault> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Fault {
                kind: FaultKind::Error,
                message,
            }),
            Err(e) => Err(classify(&self.store, e)),
        }
    }
}

pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    // One extra tick: the ticker may advance right after the deadline is set.
    timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1
}

/// Why the guest stopped: the memory cap, the epoch deadline, or a trap.
pub(crate) fn classify(store: &Store<StoreData>, e: wasmtime::Error) -> Fault {
    let kind = if store.data().limiter.hit {
        FaultKind::Memory
    } else if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        FaultKind::Timeout
    } else {
        FaultKind::Trap
    };
    Fault {
        kind,
        message: format!("{e:#}"),
    }
}
