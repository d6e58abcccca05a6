//! From a spec to the kernel side a plugin is granted: each `maps` entry
//! opened (from the plugin's own object, from a pin, or from another
//! plugin that exposes it, see [`conductor_kernel::shared`]), the event
//! sources among them, and their kernel-drop counters.

use std::collections::HashMap;
use std::sync::Arc;

use conductor_api::{MapGrant, PluginSpec};
use conductor_kernel::events::EventSource;
use conductor_kernel::maps::{KernelMap, MapKind};
use conductor_kernel::object::{BpfError, LoadedObject};
use conductor_runtime::GrantedMap;

use crate::plugin::LoadError;

/// What a plugin's kernel side is, once opened.
pub(crate) struct Wiring {
    /// The maps the plugin may reach, by name.
    pub granted: HashMap<String, GrantedMap>,
    /// What the plugin's thread drives and holds.
    pub kernel: KernelSide,
}

/// The part of the kernel side the plugin's thread owns.
pub(crate) struct KernelSide {
    /// The ring buffers and perf event arrays delivered to `on-events`.
    pub sources: Vec<EventSource>,
    /// The plugin's own object, if it has one (its programs stay attached
    /// while it is held).
    pub object: Option<LoadedObject>,
    /// The programs bpfman loaded for the plugin (`loader: bpfman`);
    /// dropping it unloads them through bpfman.
    pub bpfman: Option<crate::bpfman::Loaded>,
    /// The bpfman program named by `bpfmanProgram`, watched by the
    /// plugin's thread (see [`crate::follow`]).
    pub follow: Option<crate::follow::Follow>,
}

/// Open every map `spec` grants, from `object` or from its pin. Nothing is
/// left open if one fails.
pub(crate) fn wire(
    spec: &PluginSpec,
    mut object: Option<LoadedObject>,
) -> Result<Wiring, LoadError> {
    let map_err = |map: &str, cause: String| LoadError::Map {
        plugin: spec.name.clone(),
        map: map.to_owned(),
        cause,
    };
    let mut granted = HashMap::new();
    let mut opened = Vec::with_capacity(spec.maps.len());
    for grant in &spec.maps {
        let map = match (&grant.pin, object.as_mut()) {
            _ if let Some(r) = &grant.from => {
                conductor_kernel::shared::open(&r.plugin, &r.map, &grant.name)
                    .map_err(|e| map_err(&grant.name, e.to_string()))?
            }
            (Some(pin), _) => KernelMap::from_pin(&grant.name, pin.as_ref()).map_err(|e| {
                LoadError::Bpf(BpfError::Pin {
                    map: grant.name.clone(),
                    pin: pin.clone(),
                    cause: e.to_string(),
                })
            })?,
            (None, Some(obj)) => {
                let map = obj.open_map(&grant.name)?;
                if grant.expose {
                    let pin = conductor_kernel::shared::expose(&spec.name, &grant.name, &map)
                        .map_err(|e| map_err(&grant.name, e.to_string()))?;
                    tracing::info!(plugin = %spec.name, map = %grant.name, pin = %pin.path().display(), "map exposed to other plugins");
                    obj.keep_exposed(pin);
                }
                map
            }
            // `validate` requires a pin when there is no bytecode.
            (None, None) => return Err(map_err(&grant.name, "no bytecode and no pin".into())),
        };
        opened.push(map);
    }
    let mut sources = Vec::new();
    for (grant, map) in spec.maps.iter().zip(&opened) {
        if let Some(ev) = &grant.events {
            let lost = if map.meta().kind == MapKind::Ringbuf {
                drop_counter(spec, grant, &opened, object.as_mut())?
            } else {
                None
            };
            let mut source = EventSource::open(map, lost, ev.perf_pages, ev.max_batch)
                .map_err(|e| map_err(&grant.name, e.to_string()))?;
            let busy_poll = ev.busy_poll_ms.unwrap_or(0);
            source.set_busy_poll(std::time::Duration::from_millis(u64::from(busy_poll)));
            if !source.counts_kernel_drops() {
                tracing::warn!(
                    plugin = %spec.name,
                    source = %grant.name,
                    "ring buffer has no `{}_lost` map: drops in the kernel cannot be counted (declare it with CONDUCTOR_RINGBUF from conductor.h, grant it, or name the counter in events.dropCounter)",
                    grant.name,
                );
            }
            sources.push(source);
        }
    }
    for (grant, map) in spec.maps.iter().zip(opened) {
        granted.insert(
            grant.name.clone(),
            GrantedMap {
                map: Arc::new(map),
                access: grant.access,
            },
        );
    }
    Ok(Wiring {
        granted,
        kernel: KernelSide {
            sources,
            object,
            bpfman: None,
            follow: None,
        },
    })
}

/// The map counting ring `grant`'s kernel drops, in this order: the
/// grant named by `events.dropCounter`; a granted `<name>_lost` (how a ring
/// pinned by another loader, e.g. bpfman, brings its counter); for a ring
/// of the plugin's own object, the object's `<name>_lost`; for a pinned
/// ring, a pin `<pin>_lost` beside it. The counter is a second descriptor,
/// so the plugin can still be granted the same map.
fn drop_counter(
    spec: &PluginSpec,
    grant: &MapGrant,
    opened: &[KernelMap],
    object: Option<&mut LoadedObject>,
) -> Result<Option<KernelMap>, LoadError> {
    let err = |map: &str, cause: String| LoadError::Map {
        plugin: spec.name.clone(),
        map: map.to_owned(),
        cause,
    };
    let lost_name = format!("{}_lost", grant.name);
    let explicit = grant
        .events
        .as_ref()
        .and_then(|e| e.drop_counter.as_deref());
    let by_grant = explicit.or_else(|| spec.map_grant(&lost_name).map(|g| g.name.as_str()));
    let counter = if let Some(name) = by_grant {
        let Some(map) = opened.iter().find(|m| m.name() == name) else {
            // `validate` checks that dropCounter names a grant.
            return Err(err(
                &grant.name,
                format!("drop counter {name:?} is not granted"),
            ));
        };
        let data = map.try_clone_data().map_err(|e| err(name, e.to_string()))?;
        Some(KernelMap::new(name, data).map_err(|e| err(name, e.to_string()))?)
    } else if let Some(pin) = &grant.pin {
        let sibling = format!("{pin}_lost");
        if std::path::Path::new(&sibling).exists() {
            Some(
                KernelMap::from_pin(&lost_name, sibling.as_ref())
                    .map_err(|e| err(&lost_name, format!("{sibling}: {e}")))?,
            )
        } else {
            None
        }
    } else {
        match object {
            Some(o) => o.open_map_if_present(&lost_name)?,
            None => None,
        }
    };
    if let Some(c) = &counter {
        let meta = c.meta();
        if !matches!(meta.kind, MapKind::Array | MapKind::PercpuArray) || meta.value_size < 8 {
            return Err(err(
                &grant.name,
                format!(
                    "drop counter {:?} is a {:?} map with {}-byte values; it must be an array or per-CPU array holding a u64 at key 0",
                    c.name(),
                    meta.kind,
                    meta.value_size
                ),
            ));
        }
    }
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PluginSpec {
        PluginSpec::from_yaml(yaml).unwrap()
    }

    #[test]
    fn a_spec_without_maps_wires_nothing() {
        let w = wire(&spec("name: p\ncomponent: /p.wasm\n"), None).unwrap();
        assert!(w.granted.is_empty());
        assert!(w.kernel.sources.is_empty());
        assert!(w.kernel.object.is_none());
    }

    #[test]
    fn a_missing_pin_is_refused_naming_the_map_and_the_path() {
        let s = spec(
            "name: p\ncomponent: /p.wasm\nmaps:\n  - name: flows\n    pin: /sys/fs/bpf/conductor-test-no-such-map\n",
        );
        let err = wire(&s, None)
            .err()
            .expect("a missing pin must fail")
            .to_string();
        assert!(
            err.contains("\"flows\"") && err.contains("/sys/fs/bpf/conductor-test-no-such-map"),
            "{err}"
        );
    }
}
