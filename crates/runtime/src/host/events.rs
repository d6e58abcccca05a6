//! `conductor:plugin/events`: the batch handed to a plugin's `on-events`.
//! (The interface only defines types; the host calls the export, see
//! [`crate::Instance::on_events`].)

use crate::StoreData;
use crate::bindings::conductor::plugin::events;

/// The WIT `event-batch`, borrowing its lists: they are lowered into the
/// plugin's memory straight from where the host holds them (for ring
/// buffers, the kernel's ring), which the generated, owning `EventBatch`
/// cannot do without an extra copy.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct EventBatch<'a> {
    pub source: &'a str,
    pub data: &'a [u8],
    pub offsets: &'a [u32],
    pub lengths: &'a [u32],
    pub lost: u64,
}

pub(crate) type OnEvents<'a> =
    wasmtime::component::TypedFunc<(EventBatch<'a>,), (Result<(), String>,)>;

impl events::Host for StoreData {}
