//! The [`Plugin`] trait and the glue [`export_plugin!`](crate::export_plugin)
//! expands to.

use std::cell::Cell;

use crate::error::Result;
use crate::events::EventBatch;

thread_local! {
    /// Counts calls into the plugin, for caches valid for one call.
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// The number of the current call into the plugin (1 for the first).
pub(crate) fn call_number() -> u64 {
    CALLS.get()
}

/// Marks the start of a call into the plugin.
fn begin_call() {
    CALLS.set(CALLS.get().wrapping_add(1));
}

/// A plugin: state created by [`init`](Self::init) and driven by the host.
///
/// Export the implementing type with
/// [`export_plugin!`](crate::export_plugin). The host calls one method at a
/// time. An error from `init` stops the plugin (the host logs the message and
/// restarts it with backoff); an error from the other methods is logged. A
/// panic traps the component instance; the host restarts it with fresh state.
pub trait Plugin: Sized + 'static {
    /// Creates the plugin's state: declare metrics, open maps, read config.
    /// Called once per instance, also after every restart.
    fn init() -> Result<Self>;

    /// Handles one batch of events from one of the spec's event sources.
    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        let _ = batch;
        Ok(())
    }

    /// Called every `tickInterval` of the spec, for work such as reading maps.
    fn tick(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called when the host's metrics are collected, to refresh gauges just
    /// in time. Runs under a deadline: keep it short.
    fn collect(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Exports `T`, a [`Plugin`], as the component's implementation of the
/// `conductor:plugin` world. Use it once, at the crate root of a `cdylib`.
///
/// ```rust,ignore
/// conductor_sdk::export_plugin!(ExecCounter);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: $crate::__private::State<$plugin> = const { $crate::__private::State::new() };
            }

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|state| state.init())
                }

                fn on_events(
                    batch: $crate::bindings::EventBatch,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|state| state.on_events(batch))
                }

                fn tick() -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|state| state.tick())
                }

                fn collect() -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|state| state.collect())
                }
            }

            $crate::bindings::__export_plugin_world!(Export with_types_in $crate::bindings);
        };
    };
}

/// Implementation details of [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use super::Plugin;
    use crate::bindings;
    use crate::events::EventBatch;

    /// The plugin's state in an instance: `None` until `init` succeeds.
    /// Components are single-threaded, so a thread-local is the whole store.
    pub struct State<T>(RefCell<Option<T>>);

    impl<T: Plugin> State<T> {
        #[expect(
            clippy::new_without_default,
            reason = "const for `thread_local!`, which `Default` cannot be"
        )]
        pub const fn new() -> Self {
            State(RefCell::new(None))
        }

        pub fn init(&self) -> Result<(), String> {
            super::begin_call();
            let plugin = T::init().map_err(|e| e.to_string());
            // Series bound and added to in `init` are exported even if it failed.
            crate::metrics::flush();
            let mut state = self.0.try_borrow_mut().map_err(|_| REENTERED)?;
            *state = Some(plugin?);
            Ok(())
        }

        pub fn on_events(&self, raw: bindings::EventBatch) -> Result<(), String> {
            let batch = EventBatch::new(raw.source, raw.data, raw.offsets, raw.lengths, raw.lost)
                .map_err(|e| e.to_string())?;
            self.with(|plugin| plugin.on_events(&batch))
        }

        pub fn tick(&self) -> Result<(), String> {
            self.with(T::tick)
        }

        pub fn collect(&self) -> Result<(), String> {
            self.with(T::collect)
        }

        pub(super) fn with(
            &self,
            f: impl FnOnce(&mut T) -> crate::Result<()>,
        ) -> Result<(), String> {
            super::begin_call();
            let mut state = self.0.try_borrow_mut().map_err(|_| REENTERED)?;
            let plugin = state
                .as_mut()
                .ok_or("the plugin is not initialised: `init` has not succeeded")?;
            let result = f(plugin).map_err(|e| e.to_string());
            // What the call counted reaches the host whether or not it failed.
            crate::metrics::flush();
            result
        }
    }

    // The component model forbids re-entering an instance, so this is a
    // host bug rather than something a plugin can cause.
    const REENTERED: &str = "the plugin was called while already running";
}

#[cfg(test)]
mod tests {
    use super::__private::State;
    use super::*;
    use crate::bindings;

    struct Fake {
        ticks: u32,
        batches: Vec<(String, usize)>,
    }

    impl Plugin for Fake {
        fn init() -> Result<Self> {
            Ok(Fake {
                ticks: 0,
                batches: Vec::new(),
            })
        }

        fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
            self.batches.push((batch.source().to_owned(), batch.len()));
            Ok(())
        }

        fn tick(&mut self) -> Result<()> {
            self.ticks += 1;
            if self.ticks == 2 {
                return Err("second tick".into());
            }
            Ok(())
        }
    }

    fn raw_batch(spans: &[(u32, u32)]) -> bindings::EventBatch {
        bindings::EventBatch {
            source: "events".into(),
            data: vec![0; 8],
            offsets: spans.iter().map(|s| s.0).collect(),
            lengths: spans.iter().map(|s| s.1).collect(),
            lost: 0,
        }
    }

    #[test]
    fn calls_before_init_are_errors() {
        let state = State::<Fake>::new();
        let err = state.tick().unwrap_err();
        assert!(err.contains("not initialised"), "{err}");
        assert!(state.collect().is_err());
        assert!(state.on_events(raw_batch(&[(0, 8)])).is_err());
    }

    #[test]
    fn routes_calls_to_the_state() {
        let state = State::<Fake>::new();
        state.init().unwrap();
        state.tick().unwrap();
        assert_eq!(state.tick().unwrap_err(), "second tick");
        state.collect().unwrap();
        state.on_events(raw_batch(&[(0, 4), (4, 4)])).unwrap();
        let err = state.on_events(raw_batch(&[(9, 0)])).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
        state
            .with(|fake| {
                assert_eq!(fake.ticks, 2);
                assert_eq!(fake.batches, [("events".to_owned(), 2)]);
                Ok(())
            })
            .unwrap();
    }

    struct Failing;

    impl Plugin for Failing {
        fn init() -> Result<Self> {
            Err(crate::Error::msg("no config").context("init"))
        }
    }

    #[test]
    fn init_error_is_the_message() {
        let state = State::<Failing>::new();
        assert_eq!(state.init().unwrap_err(), "init: no config");
        assert!(state.tick().is_err());
    }
}
