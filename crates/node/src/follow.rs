//! Maps of a program someone else loaded through bpfman, named by its
//! bpfman application (`bpfmanProgram` in the spec) rather than by pin
//! paths, which contain bpfman's program id and go stale at every load.
//!
//! At start the host resolves the program to its id and map directory
//! (`bpfman list programs --application`, `bpfman get program`) and opens
//! the maps there. The plugin's thread then checks once per housekeeping
//! round that the directory is still there (a `stat` on bpffs: bpfman
//! removes it when it unloads the program, and a reload has a new id, so
//! a replaced program is noticed the same way). While it is gone the
//! plugin is `Pending` (not ready), `conductor_plugin_maps_source_up` is
//! 0, and bpfman is asked every [`RETRY`] whether the application is back;
//! once it is, the maps are opened from the new pins, the granted maps are
//! re-pointed ([`Repointable`]) and the event sources replaced, under the
//! running instance: its state survives.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use conductor_api::{BpfmanProgram, PluginSpec};
use conductor_kernel::maps::{MapMeta, MapOpError};
use conductor_runtime::host::maps::MapBackend;
use prometheus_client::metrics::gauge::Gauge;

use crate::bpfman::{Bpfman, Found, pinned_spec};
use crate::plugin::LoadError;
use crate::wiring::{self, Wiring};

/// How often bpfman is asked whether a program that went away is back.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// A granted map whose kernel map is replaced when bpfman reloads the
/// program; a `bpf-map` resource the plugin holds follows it.
pub(crate) struct Repointable {
    name: String,
    meta: MapMeta,
    current: RwLock<Arc<dyn MapBackend>>,
}

impl Repointable {
    fn get(&self) -> Arc<dyn MapBackend> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl MapBackend for Repointable {
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &MapMeta {
        &self.meta
    }
    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError> {
        self.get().lookup(key)
    }
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
        self.get().update(key, value, flags)
    }
    fn delete(&self, key: &[u8]) -> Result<bool, MapOpError> {
        self.get().delete(key)
    }
    fn keys(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, MapOpError> {
        self.get().keys(after, max)
    }
}

/// What [`Follow::check`] saw.
pub(crate) enum Change {
    Same,
    /// The program went away; the message says which and what happens.
    Gone(String),
    /// It is back: its maps opened from the new pins (the granted maps are
    /// already re-pointed); the worker swaps in the event sources.
    Back {
        wiring: Box<Wiring>,
        message: String,
    },
}

/// The bpfman program a plugin's maps come from, as the plugin's thread
/// watches it.
pub(crate) struct Follow {
    bpfman: Bpfman,
    selector: BpfmanProgram,
    /// The spec as given (map grants without pins follow the program).
    spec: PluginSpec,
    found: Found,
    maps: HashMap<String, Arc<Repointable>>,
    up: Gauge,
    down: bool,
    next_try: Instant,
}

impl Follow {
    /// Resolve `spec.bpfmanProgram` and open its maps. The program must be
    /// loaded now.
    pub(crate) fn start(
        spec: &PluginSpec,
        selector: &BpfmanProgram,
    ) -> Result<(Self, Wiring), LoadError> {
        let bpfman = Bpfman::from_env();
        let found = bpfman
            .find(selector)?
            .ok_or_else(|| LoadError::Start {
                plugin: spec.name.clone(),
                cause: format!(
                    "bpfman has no program {} (`bpfman list programs --application {}` lists none); load it through bpfman first, or fix bpfmanProgram",
                    describe(selector),
                    selector.application
                ),
            })?;
        let mut wiring = wiring::wire(&pinned_spec(spec, &found.maps), None)?;
        let unpinned = spec.maps.iter().filter(|g| g.pin.is_none());
        let maps = repointable(&mut wiring, unpinned.map(|g| g.name.as_str()));
        tracing::info!(
            plugin = %spec.name,
            program = %describe(selector),
            id = found.id,
            maps = %found.maps.display(),
            "opened the maps of bpfman program"
        );
        Ok((
            Self {
                bpfman,
                selector: selector.clone(),
                spec: spec.clone(),
                found,
                maps,
                up: Gauge::default(),
                down: false,
                next_try: Instant::now(),
            },
            wiring,
        ))
    }

    /// Report through `up` (`conductor_plugin_maps_source_up`).
    pub(crate) fn set_gauge(&mut self, up: Gauge) {
        up.set(1);
        self.up = up;
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down
    }

    /// Called on each housekeeping round of the plugin's thread.
    pub(crate) fn check(&mut self) -> Change {
        if !self.down {
            if self.found.maps.exists() {
                return Change::Same;
            }
            self.down = true;
            self.up.set(0);
            self.next_try = Instant::now();
            return Change::Gone(format!(
                "bpfman program {} (id {}) went away: its maps at {} are gone; waiting for bpfman to load it again",
                describe(&self.selector),
                self.found.id,
                self.found.maps.display()
            ));
        }
        let now = Instant::now();
        if now < self.next_try {
            return Change::Same;
        }
        self.next_try = now + RETRY;
        let found = match self.bpfman.find(&self.selector) {
            Ok(Some(f)) => f,
            Ok(None) => return Change::Same,
            Err(e) => {
                tracing::warn!(plugin = %self.spec.name, "cannot ask bpfman for the program: {e}");
                return Change::Same;
            }
        };
        let wiring = match wiring::wire(&pinned_spec(&self.spec, &found.maps), None) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(plugin = %self.spec.name, id = found.id, "cannot open the maps of the reloaded bpfman program yet: {e}");
                return Change::Same;
            }
        };
        repoint(&self.maps, &wiring, &self.spec.name);
        let message = format!(
            "bpfman program {} is back (id {}, was {}): re-opened its maps at {}",
            describe(&self.selector),
            found.id,
            self.found.id,
            found.maps.display()
        );
        self.found = found;
        self.down = false;
        self.up.set(1);
        Change::Back {
            wiring: Box::new(wiring),
            message,
        }
    }
}

/// Wrap the granted maps `names` of `wiring` so that [`repoint`] can
/// replace their kernel maps under a running instance.
pub(crate) fn repointable<'a>(
    wiring: &mut Wiring,
    names: impl Iterator<Item = &'a str>,
) -> HashMap<String, Arc<Repointable>> {
    let mut maps = HashMap::new();
    for name in names {
        let Some(granted) = wiring.granted.get_mut(name) else {
            continue;
        };
        let r = Arc::new(Repointable {
            name: name.to_owned(),
            meta: granted.map.meta().clone(),
            current: RwLock::new(granted.map.clone()),
        });
        granted.map = r.clone();
        maps.insert(name.to_owned(), r);
    }
    maps
}

/// Point `maps` at the maps of the same names `wiring` opened (a reloaded
/// program's); a `bpf-map` resource the plugin holds reads them from now on.
pub(crate) fn repoint(maps: &HashMap<String, Arc<Repointable>>, wiring: &Wiring, plugin: &str) {
    for (name, r) in maps {
        if let Some(new) = wiring.granted.get(name) {
            if new.map.meta() != &r.meta {
                tracing::warn!(plugin, map = %name, "the reloaded program's map has another layout ({:?}, was {:?})", new.map.meta(), r.meta);
            }
            *r.current.write().unwrap_or_else(|e| e.into_inner()) = new.map.clone();
        }
    }
}

fn describe(s: &BpfmanProgram) -> String {
    match &s.program {
        Some(p) => format!("{p:?} of application {:?}", s.application),
        None => format!("of application {:?}", s.application),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_described_by_application_and_function() {
        let mut s = BpfmanProgram {
            application: "app".into(),
            program: None,
        };
        assert_eq!(describe(&s), "of application \"app\"");
        s.program = Some("handle_exec".into());
        assert_eq!(describe(&s), "\"handle_exec\" of application \"app\"");
    }
}
