//! The kernel side of a plugin, and the only crate that uses aya.
//!
//! In the order an event meets them: [`object`] loads a plugin's BPF
//! object, verifies its programs and attaches them; [`maps`] opens the maps
//! a plugin is granted; [`ringbuf`] reads a ring buffer in place, one
//! consumer-position update per batch; [`events`] turns ring buffers and
//! perf event arrays into batches for the plugin. [`layout`] checks the
//! plugin's event records against the object's BTF. [`shared`] pins the
//! maps one plugin exposes to others. [`patterns`] follows the interfaces
//! and cgroups a program names by pattern.

pub mod events;
pub mod features;
pub mod globals;
pub mod layout;
pub mod maps;
pub mod object;
pub mod patterns;
pub mod ringbuf;
pub mod sections;
pub mod shared;
