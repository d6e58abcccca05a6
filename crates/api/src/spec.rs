//! `PluginSpec`: what a plugin is and what it may touch.
//!
//! The same type is read from a local run file (`conductor run`), carried by
//! the node API and embedded in the Kubernetes custom resource, so field
//! names follow Kubernetes conventions (camelCase) and every field that has a
//! sensible default may be omitted. Unknown fields are rejected so that a typo
//! never silently turns into a default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::attach::{AttachPoint, ProgramAttach};
use crate::files;

/// One plugin: a wasm component plus the kernel-side object it consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": "!(has(self.bpfmanProgram) && has(self.bytecode))",
        "message": "set at most one of bytecode (the plugin's own programs) and bpfmanProgram (maps of a program someone else loaded through bpfman)"
    }, {
        "rule": "!has(self.clusterBpfApplication) || !(has(self.bytecode) || has(self.bpfmanProgram))",
        "message": "clusterBpfApplication (maps of a program bpfman-operator loaded) excludes bytecode and bpfmanProgram"
    }, {
        "rule": "(has(self.component) && self.component != '') != has(self.exporter)",
        "message": "set exactly one of component (a wasm component) and exporter (the built-in ebpf_exporter)"
    }]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    /// Unique name on the node; a DNS-1035 label (lowercase letters, digits
    /// and `-`, at most 63 characters, starting with a letter). Prefixes the
    /// plugin's metric names, which may not start with a digit.
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub name: String,
    /// The wasm component: a file path (relative paths are resolved against
    /// the directory of the spec file) or an OCI reference
    /// `oci://registry/repository:tag` (or `@sha256:<digest>`) of a
    /// component artifact or of a plugin package. A package brings its
    /// default spec: this spec's `config` is merged over it key by key,
    /// its `bytecode`, `maps`, `tickIntervalMs` and `readOnlyPaths` replace the package's
    /// when set, and each limit replaces the package's when it differs from
    /// the built-in default.
    /// Empty (omitted) exactly when `exporter` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// When OCI references of this spec are pulled from their registry (as
    /// in Kubernetes). Omitted: `Always` for a `:latest` or untagged
    /// reference, `IfNotPresent` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// The kernel-side BPF object to load and attach, if any. A plugin
    /// without one can still open maps pinned by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytecode: Option<Bytecode>,
    /// The maps the plugin may open, with the access it is granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))
    )]
    pub maps: Vec<MapGrant>,
    /// Free-form settings handed to the plugin through the `config` interface.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    /// How a plugin that keeps faulting is restarted.
    #[serde(default, skip_serializing_if = "Restart::is_default")]
    pub restart: Restart,
    /// How often the plugin's `tick` export is called, in milliseconds.
    /// Omitted: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 10)))]
    pub tick_interval_ms: Option<u64>,
    /// Directories of the node the plugin may read (never write), e.g.
    /// `/sys/fs/cgroup` or `/proc`: each is a WASI preopened directory, and
    /// nothing else of the node's filesystem is reachable (`..`, absolute
    /// paths and symlinks that lead out of a granted directory are refused).
    /// Omitted: no files at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(max = 16),
            extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["path"])
        )
    )]
    pub read_only_paths: Vec<ReadOnlyPath>,
    /// Open the maps of a program someone else loaded through bpfman,
    /// found by its bpfman application (and function) name rather than by
    /// a pin path: every map grant without `pin` is opened from that
    /// program's pins (`/run/bpfman/fs/maps/<program id>/<map>`). The host
    /// watches the program: while it is gone the plugin is `Pending` (not
    /// ready), and when bpfman loads it again (a new id) the maps and event
    /// sources are re-opened under the running instance, whose state is
    /// kept. Not together with `bytecode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpfman_program: Option<BpfmanProgram>,
    /// In a cluster (an `EbpfPlugin`): open the maps of a program that
    /// bpfman-operator loaded for a `ClusterBpfApplication`
    /// (`bpfman.io/v1alpha1`). The node agent waits until this node's
    /// `ClusterBpfApplicationState` of that application says
    /// `LoadSuccess`, takes the program id of the named function and hands
    /// the host this spec with every map grant without `pin` pinned at
    /// `/run/bpfman/fs/maps/<programId>/<map>`; when bpfman reloads the
    /// program (a new id) the node agent updates the pins and the host
    /// re-points the maps and event sources under the running instance,
    /// whose state is kept. The host itself never resolves it: with
    /// `conductor run` or the daemon every map grant must then have a
    /// `pin`. Not together with `bytecode` or `bpfmanProgram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_bpf_application: Option<ClusterBpfApplicationRef>,
    /// Instead of a component: the host's built-in ebpf_exporter, reading
    /// the maps of `bytecode`'s object as a cloudflare/ebpf_exporter
    /// configuration says (see "Coming from ebpf_exporter" in the manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
}

/// A directory of the node granted to a plugin for reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadOnlyPath {
    /// An absolute directory on the node (in the host's own mount
    /// namespace: mount the node's directory into the host's container).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub path: String,
    /// Where the plugin sees it (an absolute path). Omitted: at `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub guest_path: Option<String>,
}

impl ReadOnlyPath {
    /// Most directories one plugin may be granted.
    pub const MAX: usize = 16;

    /// The path the plugin opens the directory at.
    pub fn guest_path(&self) -> &str {
        self.guest_path.as_deref().unwrap_or(&self.path)
    }
}

/// A program loaded through bpfman by someone else, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BpfmanProgram {
    /// The bpfman application it was loaded under (`bpfman load ...
    /// --application <name>`; `bpfman list programs --application`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub application: String,
    /// The program's function name, when the application has several (the
    /// maps of the first one listed otherwise); the kernel keeps its first
    /// 15 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

/// A bpfman-operator `ClusterBpfApplication` and one of its programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterBpfApplicationRef {
    /// The `ClusterBpfApplication`'s name (its node states carry it in the
    /// label `bpfman.io/ownedByProgram`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub name: String,
    /// The program's function name (`status.programs[].name` of the node
    /// state), when the application has several; the first one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

/// The built-in ebpf_exporter's part of a spec: one ebpf_exporter
/// configuration, run over `bytecode`'s object (its programs attach from
/// their section names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExporterSpec {
    /// The configuration's YAML text, unchanged (ebpf_exporter's v2
    /// format: `metrics.counters`, `metrics.histograms`, `kaddrs`, ...).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub config: String,
    /// The configuration's name, as ebpf_exporter's `--config.names` gives
    /// it (the `name` label of `ebpf_exporter_enabled_configs`). Omitted:
    /// the plugin's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_name: Option<String>,
}

impl ExporterSpec {
    /// The configuration's name for plugin `plugin`.
    pub fn name<'a>(&'a self, plugin: &'a str) -> &'a str {
        self.config_name.as_deref().unwrap_or(plugin)
    }

    /// Parse and check the configuration (as every entry point does).
    pub fn parse(
        &self,
        plugin: &str,
    ) -> Result<crate::exporter::Config, crate::exporter::ConfigError> {
        crate::exporter::Config::parse(self.name(plugin), &self.config)
    }
}

/// When a registry is asked for an OCI reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PullPolicy {
    /// Resolve the tag on every start; the content is still downloaded only
    /// when its digest is not in the cache.
    Always,
    /// Use the cached artifact if the reference was pulled before.
    IfNotPresent,
    /// Never contact the registry: the artifact must be in the cache.
    Never,
}

/// The scheme of an OCI reference in a spec.
pub const OCI_SCHEME: &str = "oci://";

/// The OCI reference (without `oci://`) if `value` is one.
pub fn oci_reference(value: &str) -> Option<&str> {
    value.strip_prefix(OCI_SCHEME)
}

impl PluginSpec {
    /// The pull policy in effect for `reference` (without `oci://`).
    pub fn effective_pull_policy(&self, reference: &str) -> PullPolicy {
        if let Some(p) = self.pull_policy {
            return p;
        }
        let last = reference.rsplit('/').next().unwrap_or(reference);
        if reference.contains('@') {
            PullPolicy::IfNotPresent
        } else {
            match last.split_once(':') {
                Some((_, "latest")) | None => PullPolicy::Always,
                Some(_) => PullPolicy::IfNotPresent,
            }
        }
    }
}

/// A BPF ELF object and the programs in it to attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": "(has(self.path) && self.path != '') != has(self.image)",
        "message": "set exactly one of path (a BPF object file on the node) and image (an oci:// bytecode image)"
    }]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bytecode {
    /// Path of the object file (relative to the spec file's directory).
    /// Exactly one of `path` and `image` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// A bpfman bytecode image holding the object, as
    /// `oci://registry/repository:tag` (or `@sha256:<digest>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^oci://[^/\s]+/\S+$")))]
    pub image: Option<String>,
    /// Programs to attach. Every program listed is loaded (verified) before
    /// any is attached; programs of the object not listed are not loaded.
    /// Empty: every program whose section name says where it attaches
    /// (`tp_btf/sched_switch`, `uprobe/libc.so.6:malloc`, ...) is attached
    /// as libbpf's auto-attach would.
    #[serde(default)]
    pub programs: Vec<ProgramAttach>,
    /// Values for the object's global variables (`const volatile` ones in
    /// `.rodata`, or `.data`/`.bss`), set before the programs are verified,
    /// so one object serves many configurations. Each value is checked
    /// against the variable's BTF type: an integer (signed or unsigned,
    /// range-checked) for an integer or enum, `true`/`false` for a `bool`,
    /// a string for a `char` array (NUL-padded, with room for the NUL),
    /// a list of integers for an integer array (the rest zeroed). An
    /// object without BTF takes plain integers, sized from its symbol table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("additionalProperties" = {"x-kubernetes-preserve-unknown-fields": true}))
    )]
    pub global_data: BTreeMap<String, GlobalValue>,
    /// Who loads and attaches the programs: the host itself (`host`, the
    /// default) or the node's bpfman (`bpfman`), which then owns them: the
    /// host asks bpfman to load and attach them, tagged with the plugin's
    /// name, opens the maps bpfman pinned and asks bpfman to unload them
    /// when the plugin stops.
    #[serde(default, skip_serializing_if = "Loader::is_host")]
    pub loader: Loader,
}

/// One `bytecode.globalData` value, typed by its YAML form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum GlobalValue {
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    Bool(bool),
    /// Text for a `char` array.
    Text(String),
    /// Integers for an integer array.
    List(Vec<i64>),
}

impl From<u64> for GlobalValue {
    fn from(v: u64) -> Self {
        GlobalValue::Unsigned(v)
    }
}

impl fmt::Display for GlobalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobalValue::Unsigned(v) => write!(f, "{v}"),
            GlobalValue::Signed(v) => write!(f, "{v}"),
            GlobalValue::Bool(v) => write!(f, "{v}"),
            GlobalValue::Text(v) => write!(f, "{v:?}"),
            GlobalValue::List(v) => write!(f, "{v:?}"),
        }
    }
}

/// Who owns a plugin's BPF programs in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Loader {
    /// The host loads, attaches and detaches the programs itself.
    #[default]
    Host,
    /// bpfman (its `bpfman` command, 0.6) loads and attaches them.
    Bpfman,
}

impl Loader {
    pub fn is_host(&self) -> bool {
        *self == Loader::Host
    }
}

/// The attach kinds bpfman 0.6 can attach (`bpfman attach <id> <kind>`).
pub const BPFMAN_ATTACH_KINDS: [&str; 8] = [
    "tracepoint",
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "xdp",
    "tc",
    "tcx",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Access {
    #[default]
    Read,
    ReadWrite,
}

/// A map the plugin may open by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "!(has(self.pin) && has(self.from))",
            "message": "set only one of pin and from"
        },
        {
            "rule": "!(has(self.expose) && self.expose && (has(self.pin) || has(self.from)))",
            "message": "only a map of the plugin's own object can be exposed, not one opened by pin or from"
        }
    ]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapGrant {
    /// The map's name in the bytecode object, or the name the plugin opens a
    /// pinned map under.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub name: String,
    #[serde(default)]
    pub access: Access,
    /// Open a pinned map at this bpffs path (e.g. one pinned by bpfman)
    /// instead of the bytecode object's map of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub pin: Option<String>,
    /// Open the map another plugin on this node exposes (`expose: true`
    /// on its grant) instead of one of this plugin's object; `access` still
    /// decides what this plugin may do with it. The owner must be loaded
    /// first. Exclusive with `pin` and `expose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<MapRef>,
    /// Let other plugins open this map of the plugin's own object by
    /// reference (`from: {plugin, map}`): the host pins it at
    /// `/sys/fs/bpf/conductor/shared/<plugin>/<map>` while the plugin is
    /// loaded and removes the pin when it unloads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expose: bool,
    /// Deliver this ring buffer or perf event array to the plugin's
    /// `on-events` export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventSource>,
}

/// A map another plugin exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapRef {
    /// The owning plugin's name.
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub plugin: String,
    /// The map's name in the owner's spec (its grant with `expose: true`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub map: String,
}

/// How events of one source are batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// The most events handed to the plugin in one call.
    #[serde(default = "EventSource::default_max_batch")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65536)))]
    pub max_batch: u32,
    /// Perf event arrays only: pages of the per-CPU buffer (a power of two).
    #[serde(default = "EventSource::default_perf_pages")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4096)))]
    pub perf_pages: u32,
    /// Drain the source at least this often even without a wakeup. Needed
    /// when the BPF program suppresses wakeups to stay cheap (see
    /// `conductor_ringbuf_wakeup_flags` in `conductor.h`): this bounds the
    /// latency of the events that did not trigger one. Omitted: drain on
    /// wakeups only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 60000)))]
    pub max_latency_ms: Option<u32>,
    /// Ring buffers only: while, at the rate events arrive, the ring would
    /// fill within this many milliseconds, the plugin's thread polls it
    /// between batches instead of sleeping. A sleeping thread's wakeup can
    /// come milliseconds late (on virtual machines, whose idle CPUs must be
    /// woken by the hypervisor), long enough for a fast producer to fill
    /// the ring; polling spends the idle time of the thread's CPU instead,
    /// and only while events arrive that fast. Polling counts against
    /// `limits.cpu`. Omitted or 0: always sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 60000)))]
    pub busy_poll_ms: Option<u32>,
    /// Ring buffers only: the granted map (another entry of `maps`) that
    /// counts this ring's kernel drops: an array or per-CPU array whose
    /// `u64` at key 0 grows with every record the BPF side could not queue,
    /// as `<name>_lost` of CONDUCTOR_RINGBUF. Omitted: a granted map named
    /// `<name>_lost`, else the object's `<name>_lost`, else a pin
    /// `<pin>_lost` beside the ring's pin (bpfman's layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub drop_counter: Option<String>,
}

impl EventSource {
    pub const MAX_BATCH_LIMIT: u32 = 65_536;
    pub const MAX_LATENCY_LIMIT_MS: u32 = 60_000;

    fn default_max_batch() -> u32 {
        1024
    }
    fn default_perf_pages() -> u32 {
        64
    }
}

impl Default for EventSource {
    fn default() -> Self {
        Self {
            max_batch: Self::default_max_batch(),
            perf_pages: Self::default_perf_pages(),
            max_latency_ms: None,
            busy_poll_ms: None,
            drop_counter: None,
        }
    }
}

/// Resource bounds of the plugin's sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory the component may grow to, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4096)))]
    pub memory_mib: u32,
    /// Wall-clock bound on one call into the plugin (a batch, a tick, a
    /// collect), in milliseconds. A call past it is interrupted and the
    /// plugin restarted.
    #[serde(default = "Limits::default_call_timeout_ms")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 600000)))]
    pub call_timeout_ms: u32,
    /// Label sets one metric may hold; samples for new sets past it are dropped.
    #[serde(default = "Limits::default_max_series")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_series_per_metric: u32,
    /// Sustained CPU the plugin's thread may use, in millicores (`100` is
    /// a tenth of one CPU; at most `1000`, one thread uses at most one
    /// CPU). Everything done on the plugin's thread counts: its calls, the
    /// host functions they call (logs, metric series, map access) and the
    /// draining of its event sources. Past the budget the plugin is not
    /// called until its CPU time is paid back; events arriving meanwhile
    /// wait in their buffers (and are counted as lost if those fill).
    /// Omitted: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub cpu: Option<u32>,
}

impl Limits {
    fn default_memory_mib() -> u32 {
        64
    }
    fn default_call_timeout_ms() -> u32 {
        1000
    }
    fn default_max_series() -> u32 {
        10_000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: Self::default_memory_mib(),
            call_timeout_ms: Self::default_call_timeout_ms(),
            max_series_per_metric: Self::default_max_series(),
            cpu: None,
        }
    }
}

/// The restart policy after faults: each fault restarts the plugin after a
/// backoff that doubles from one second up to `maxBackoffSeconds` (back to
/// one second after a minute without fault). From the third fault in a row
/// the plugin is `CrashLoopBackOff`, with its last error and next retry in
/// its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restart {
    /// The longest wait between two restarts, in seconds.
    #[serde(default = "Restart::default_max_backoff_seconds")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 3600)))]
    pub max_backoff_seconds: u32,
    /// Give up after this many faults in a row: the plugin is then
    /// `Failed` (no new instance, its programs stay attached) until updated.
    /// Omitted: never give up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub give_up_after: Option<u32>,
}

impl Restart {
    fn default_max_backoff_seconds() -> u32 {
        60
    }
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            max_backoff_seconds: Self::default_max_backoff_seconds(),
            give_up_after: None,
        }
    }
}

/// One problem with a spec, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `maps[1].access`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {document}: {field}: {message}")]
    Parse {
        path: PathBuf,
        /// 1-based index of the YAML document in the file.
        document: usize,
        field: String,
        message: String,
    },
    #[error("{path}: contains no plugin spec")]
    Empty { path: PathBuf },
    #[error("invalid spec for plugin {plugin:?}:\n  {}", join(.errors))]
    Invalid {
        plugin: String,
        errors: Vec<FieldError>,
    },
    #[error("{path}: plugin name {name:?} is used by more than one spec")]
    DuplicateName { path: PathBuf, name: String },
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl PluginSpec {
    /// The spec's local file paths, each with its field: the component and
    /// the bytecode object unless they are `oci://` references, and map
    /// pins. The one place that decides which fields are paths.
    pub fn local_paths(&self) -> Vec<(String, &str)> {
        let mut paths = Vec::new();
        if !self.component.is_empty() && oci_reference(&self.component).is_none() {
            paths.push(("component".to_owned(), self.component.as_str()));
        }
        if let Some(b) = &self.bytecode
            && !b.path.is_empty()
            && oci_reference(&b.path).is_none()
        {
            paths.push(("bytecode.path".to_owned(), b.path.as_str()));
        }
        for (i, m) in self.maps.iter().enumerate() {
            if let Some(pin) = &m.pin {
                paths.push((format!("maps[{i}].pin"), pin.as_str()));
            }
        }
        paths
    }

    /// The local paths that are relative, with their fields.
    pub fn relative_paths(&self) -> Vec<(String, &str)> {
        self.local_paths()
            .into_iter()
            .filter(|(_, p)| !Path::new(p).is_absolute())
            .collect()
    }

    /// Make every relative local path absolute against `base` (a spec
    /// file's directory); `./` and `..` components are kept as written
    /// except that `.` ones are dropped.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut String| {
            if !p.is_empty() && oci_reference(p).is_none() && !Path::new(p.as_str()).is_absolute() {
                *p = base
                    .join(&*p)
                    .components()
                    .collect::<PathBuf>()
                    .display()
                    .to_string();
            }
        };
        resolve(&mut self.component);
        if let Some(b) = &mut self.bytecode {
            resolve(&mut b.path);
        }
        for m in &mut self.maps {
            if let Some(pin) = &mut m.pin {
                resolve(pin);
            }
        }
    }

    /// Parse one spec from YAML (or JSON, which is YAML) and validate it.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let path = PathBuf::from("<input>");
        check_shape(text, &path)?;
        let spec = parse_document(serde_yaml_ng::Deserializer::from_str(text), &path, 1)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Check every value a type cannot express; reports all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut errors = Vec::new();
        let mut err = |field: String, message: String| errors.push(FieldError { field, message });

        if let Err(m) = check_dns_label(&self.name) {
            err("name".into(), m);
        }
        if let Some(exporter) = &self.exporter {
            self.validate_exporter(exporter, &mut err);
        } else if self.component.trim().is_empty() {
            err(
                "component".into(),
                "must name a wasm component file or an oci:// reference (or set exporter instead, for the built-in ebpf_exporter)".into(),
            );
        } else if let Some(r) = oci_reference(&self.component) {
            if let Err(m) = check_oci_reference(r) {
                err("component".into(), m);
            }
        } else if self.component.contains("://") {
            err(
                "component".into(),
                format!(
                    "{:?} is neither a file path nor an oci:// reference",
                    self.component
                ),
            );
        }

        if let Some(b) = &self.bpfman_program {
            if self.bytecode.is_some() {
                err(
                    "bpfmanProgram".into(),
                    "names maps of a program someone else loaded; remove it or bytecode".into(),
                );
            }
            if b.application.trim().is_empty() {
                err(
                    "bpfmanProgram.application".into(),
                    "must name the bpfman application the program was loaded under".into(),
                );
            }
        }
        if let Some(c) = &self.cluster_bpf_application {
            if self.bytecode.is_some() || self.bpfman_program.is_some() {
                err(
                    "clusterBpfApplication".into(),
                    "names maps of a program bpfman-operator loaded; remove it, or bytecode and bpfmanProgram".into(),
                );
            }
            if c.name.trim().is_empty() {
                err(
                    "clusterBpfApplication.name".into(),
                    "must name the ClusterBpfApplication whose program's maps the plugin opens"
                        .into(),
                );
            }
        }
        if let Some(bytecode) = &self.bytecode {
            match (&bytecode.image, bytecode.path.trim().is_empty()) {
                (None, true) => err(
                    "bytecode".into(),
                    "set path (a BPF object file) or image (an oci:// bytecode image)".into(),
                ),
                (Some(_), false) => err("bytecode".into(), "set only one of path and image".into()),
                (Some(image), true) => match oci_reference(image) {
                    Some(r) => {
                        if let Err(m) = check_oci_reference(r) {
                            err("bytecode.image".into(), m);
                        }
                    }
                    None => err(
                        "bytecode.image".into(),
                        format!("{image:?} must be an oci:// reference"),
                    ),
                },
                (None, false) => {}
            }
            let mut seen = BTreeSet::new();
            for (i, p) in bytecode.programs.iter().enumerate() {
                let at = format!("bytecode.programs[{i}]");
                if p.name.is_empty() {
                    err(format!("{at}.name"), "must not be empty".into());
                } else if !seen.insert(p.name.as_str()) {
                    err(
                        format!("{at}.name"),
                        format!("program {:?} is listed twice", p.name),
                    );
                }
                p.validate(&at, &mut err);
                if bytecode.loader == Loader::Bpfman
                    && let Some(point) = p.attach_point()
                    && point.pattern().is_some()
                {
                    err(
                        format!("{at}.{}", point.kind()),
                        "interfaces and cgroups named by pattern are attached by the host: use `loader: host` for this program".into(),
                    );
                }
                if bytecode.loader == Loader::Bpfman
                    && let Some(u) = p.uprobe.as_ref().or(p.uretprobe.as_ref())
                    && u.pod.is_some()
                {
                    err(
                        format!("{at}.{}.pod", if p.uprobe.is_some() { "uprobe" } else { "uretprobe" }),
                        "targets inside a pod's container are resolved by the host: use `loader: host` for this program".into(),
                    );
                }
                if bytecode.loader == Loader::Bpfman
                    && let Some(point) = p.attach_point()
                    && !BPFMAN_ATTACH_KINDS.contains(&point.kind())
                {
                    err(
                        format!("{at}.{}", point.kind()),
                        format!(
                            "bpfman 0.6 cannot attach {} programs (it attaches {}): use `loader: host` for this program",
                            point.kind(),
                            BPFMAN_ATTACH_KINDS.join(", ")
                        ),
                    );
                }
            }
            if bytecode.loader == Loader::Bpfman {
                if bytecode.programs.is_empty() {
                    err(
                        "bytecode.programs".into(),
                        "with `loader: bpfman` list the programs and their attach points (bpfman does not auto-attach from section names)".into(),
                    );
                }
                if !bytecode.global_data.is_empty() {
                    err(
                        "bytecode.globalData".into(),
                        "is not supported with `loader: bpfman` yet: use `loader: host`".into(),
                    );
                }
            }
        }

        let mut seen = BTreeSet::new();
        for (i, m) in self.maps.iter().enumerate() {
            let at = format!("maps[{i}]");
            if m.name.is_empty() {
                err(format!("{at}.name"), "must not be empty".into());
            } else if !seen.insert(m.name.as_str()) {
                err(
                    format!("{at}.name"),
                    format!("map {:?} is granted twice", m.name),
                );
            }
            match &m.pin {
                Some(pin) if !Path::new(pin).is_absolute() => err(
                    format!("{at}.pin"),
                    format!("{pin:?} must be an absolute path on bpffs (e.g. /sys/fs/bpf/...)"),
                ),
                None if self.bytecode.is_none()
                    && self.bpfman_program.is_none()
                    && self.cluster_bpf_application.is_none()
                    && m.from.is_none() => err(
                    format!("{at}.pin"),
                    "the spec has no bytecode, so the map must be opened from a pin path (or name its bpfman program under bpfmanProgram)".into(),
                ),
                _ => {}
            }
            if let Some(ev) = &m.events {
                if ev.max_batch == 0 || ev.max_batch > EventSource::MAX_BATCH_LIMIT {
                    err(
                        format!("{at}.events.maxBatch"),
                        format!(
                            "{} is out of range 1..={}",
                            ev.max_batch,
                            EventSource::MAX_BATCH_LIMIT
                        ),
                    );
                }
                if !ev.perf_pages.is_power_of_two() || ev.perf_pages > 4096 {
                    err(
                        format!("{at}.events.perfPages"),
                        format!("{} must be a power of two up to 4096", ev.perf_pages),
                    );
                }
                if let Some(ms) = ev.busy_poll_ms
                    && ms > EventSource::MAX_LATENCY_LIMIT_MS
                {
                    err(
                        format!("{at}.events.busyPollMs"),
                        format!(
                            "{ms} is out of range 0..={} (0: never poll)",
                            EventSource::MAX_LATENCY_LIMIT_MS
                        ),
                    );
                }
                if let Some(ms) = ev.max_latency_ms
                    && (ms == 0 || ms > EventSource::MAX_LATENCY_LIMIT_MS)
                {
                    err(
                        format!("{at}.events.maxLatencyMs"),
                        format!(
                            "{ms} is out of range 1..={} (omit it to drain on wakeups only)",
                            EventSource::MAX_LATENCY_LIMIT_MS
                        ),
                    );
                }
            }
        }

        self.validate_drop_counters(&mut err);
        self.validate_global_data(&mut err);
        self.validate_read_only_paths(&mut err);
        self.validate_shared_maps(&mut err);

        for key in self.config.keys() {
            if key.is_empty() {
                err("config".into(), "keys must not be empty".into());
            }
        }

        let l = &self.limits;
        if !(1..=4096).contains(&l.memory_mib) {
            err(
                "limits.memoryMib".into(),
                format!("{} is out of range 1..=4096", l.memory_mib),
            );
        }
        if !(1..=600_000).contains(&l.call_timeout_ms) {
            err(
                "limits.callTimeoutMs".into(),
                format!("{} is out of range 1..=600000", l.call_timeout_ms),
            );
        }
        if let Some(cpu) = l.cpu
            && !(1..=1000).contains(&cpu)
        {
            err(
                "limits.cpu".into(),
                format!(
                    "{cpu} millicores is out of range 1..=1000 (one plugin thread uses at most one CPU; omit the field for no limit)"
                ),
            );
        }
        if !(1..=3600).contains(&self.restart.max_backoff_seconds) {
            err(
                "restart.maxBackoffSeconds".into(),
                format!(
                    "{} is out of range 1..=3600",
                    self.restart.max_backoff_seconds
                ),
            );
        }
        if self.restart.give_up_after == Some(0) {
            err(
                "restart.giveUpAfter".into(),
                "must be at least 1 (omit it to never give up)".into(),
            );
        }
        if l.max_series_per_metric == 0 {
            err(
                "limits.maxSeriesPerMetric".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(t) = self.tick_interval_ms
            && t < 10
        {
            err(
                "tickIntervalMs".into(),
                format!("{t} is below the minimum of 10"),
            );
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid {
                plugin: self.name.clone(),
                errors,
            })
        }
    }

    /// Granted directories are absolute, plain (no `.`/`..`, so what is
    /// granted is what the path says) and seen by the plugin at distinct
    /// places.
    fn validate_read_only_paths(&self, err: &mut dyn FnMut(String, String)) {
        if self.read_only_paths.len() > ReadOnlyPath::MAX {
            err(
                "readOnlyPaths".into(),
                format!(
                    "{} directories granted; at most {} (grant a common parent instead)",
                    self.read_only_paths.len(),
                    ReadOnlyPath::MAX
                ),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.read_only_paths.iter().enumerate() {
            if let Err(m) = check_plain_absolute(&p.path) {
                err(format!("readOnlyPaths[{i}].path"), m);
            }
            if let Some(g) = &p.guest_path
                && let Err(m) = check_plain_absolute(g)
            {
                err(format!("readOnlyPaths[{i}].guestPath"), m);
            }
            if !seen.insert(p.guest_path()) {
                err(
                    format!("readOnlyPaths[{i}]"),
                    format!(
                        "{:?} is granted twice: give each directory its own guestPath",
                        p.guest_path()
                    ),
                );
            }
        }
    }

    /// Global variable names are C identifiers.
    /// A built-in ebpf_exporter spec: a config that parses and checks, an
    /// object to read, and nothing that only a component uses.
    fn validate_exporter(&self, exporter: &ExporterSpec, err: &mut dyn FnMut(String, String)) {
        if !self.component.is_empty() {
            err(
                "component".into(),
                "set either component (a wasm plugin) or exporter (the built-in ebpf_exporter), not both".into(),
            );
        }
        if let Some(n) = &exporter.config_name
            && (n.is_empty() || n.contains(['/', '\0']))
        {
            err(
                "exporter.configName".into(),
                format!("{n:?} is not a config name: non-empty, without '/'"),
            );
        }
        if let Err(e) = exporter.parse(&self.name) {
            let field = match e.field() {
                Some(f) if f != "(top)" => format!("exporter.config.{f}"),
                _ => "exporter.config".to_owned(),
            };
            err(
                field,
                match e {
                    crate::exporter::ConfigError::Parse { problem, .. }
                    | crate::exporter::ConfigError::Invalid { problem, .. } => problem,
                    other => other.to_string(),
                },
            );
        }
        match &self.bytecode {
            None => err(
                "bytecode".into(),
                "the exporter reads the maps of a BPF object: set bytecode.path or bytecode.image"
                    .into(),
            ),
            Some(b) => {
                if b.loader != Loader::Host {
                    err(
                        "bytecode.loader".into(),
                        "the exporter loads its object itself: use `loader: host`".into(),
                    );
                }
                if !b.programs.is_empty() {
                    err(
                        "bytecode.programs".into(),
                        "the exporter attaches every program from its section name, as ebpf_exporter does: leave programs empty".into(),
                    );
                }
            }
        }
        let unused = [
            ("maps", !self.maps.is_empty()),
            ("config", !self.config.is_empty()),
            ("tickIntervalMs", self.tick_interval_ms.is_some()),
            ("readOnlyPaths", !self.read_only_paths.is_empty()),
            ("bpfmanProgram", self.bpfman_program.is_some()),
            (
                "clusterBpfApplication",
                self.cluster_bpf_application.is_some(),
            ),
        ];
        for (field, set) in unused {
            if set {
                err(
                    field.into(),
                    "only a wasm component uses it; the exporter's settings are in exporter.config"
                        .into(),
                );
            }
        }
    }

    fn validate_global_data(&self, err: &mut dyn FnMut(String, String)) {
        let Some(b) = &self.bytecode else { return };
        for name in b.global_data.keys() {
            let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                err(
                    format!("bytecode.globalData.{name}"),
                    format!("{name:?} is not a C variable name"),
                );
            }
        }
    }

    /// `from` names another plugin's map and stands alone; `expose` is
    /// for maps of the plugin's own, host-loaded object.
    fn validate_shared_maps(&self, err: &mut dyn FnMut(String, String)) {
        for (i, m) in self.maps.iter().enumerate() {
            let at = format!("maps[{i}]");
            if let Some(r) = &m.from {
                if let Err(e) = check_dns_label(&r.plugin) {
                    err(format!("{at}.from.plugin"), e);
                } else if r.plugin == self.name {
                    err(
                        format!("{at}.from.plugin"),
                        "names this plugin itself: grant the map of its own object without `from`"
                            .into(),
                    );
                }
                if r.map.is_empty() {
                    err(format!("{at}.from.map"), "must not be empty".into());
                }
                if m.pin.is_some() {
                    err(format!("{at}.from"), "set only one of pin and from".into());
                }
            }
            if m.expose {
                if m.pin.is_some() || m.from.is_some() {
                    err(
                        format!("{at}.expose"),
                        "only a map of the plugin's own object can be exposed, not one opened by pin or from".into(),
                    );
                } else if self
                    .bytecode
                    .as_ref()
                    .is_none_or(|b| b.loader != Loader::Host)
                {
                    err(
                        format!("{at}.expose"),
                        "needs bytecode loaded by the host (`loader: host`); a map pinned by another loader can be granted by its pin instead".into(),
                    );
                }
            }
        }
    }

    /// Each `events.dropCounter` names another granted map.
    fn validate_drop_counters(&self, err: &mut dyn FnMut(String, String)) {
        for (i, m) in self.maps.iter().enumerate() {
            let Some(counter) = m.events.as_ref().and_then(|e| e.drop_counter.as_ref()) else {
                continue;
            };
            let field = format!("maps[{i}].events.dropCounter");
            if counter == &m.name {
                err(
                    field,
                    "must name another map than the ring buffer itself".into(),
                );
            } else if self.map_grant(counter).is_none() {
                err(
                    field,
                    format!(
                        "{counter:?} is not granted: add it to `maps` (with its pin if another loader owns it)"
                    ),
                );
            }
        }
    }

    /// The grant for map `name`, if any.
    /// Whether `other` is this spec with only the `pin` of some map grants
    /// changed (what the node agent sends when bpfman reloaded a
    /// `clusterBpfApplication`'s program under a new id).
    pub fn differs_only_in_pins(&self, other: &PluginSpec) -> bool {
        let unpinned = |s: &PluginSpec| {
            let mut s = s.clone();
            for m in &mut s.maps {
                m.pin = None;
            }
            s
        };
        self != other && unpinned(self) == unpinned(other)
    }

    pub fn map_grant(&self, name: &str) -> Option<&MapGrant> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// A light syntax check of an OCI reference (without `oci://`); the host
/// parses it fully before pulling.
fn check_oci_reference(r: &str) -> Result<(), String> {
    let example =
        "e.g. oci://ghcr.io/org/plugin:1.0 or oci://127.0.0.1:5000/plugin@sha256:<64 hex>";
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    let Some((registry, path)) = name.split_once('/') else {
        return Err(format!(
            "{r:?} must name a registry and a repository ({example})"
        ));
    };
    if registry.is_empty() || path.is_empty() || r.chars().any(char::is_whitespace) {
        return Err(format!("{r:?} is not a valid OCI reference ({example})"));
    }
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(format!(
                "{r:?}: the digest must be sha256:<64 hex digits> ({example})"
            ));
        }
    }
    Ok(())
}

/// Read a spec file: one or more YAML documents separated by `---`, each a
/// [`PluginSpec`]. Every spec is validated and names must be unique.
pub fn load_file(path: &Path) -> Result<Vec<PluginSpec>, SpecError> {
    let text = read_spec_file(path).map_err(|source| SpecError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_shape(&text, path)?;
    let mut specs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let document = i + 1;
        // Parse to a value first so empty documents (a leading or trailing
        // `---`, a file of comments) are skipped rather than rejected.
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| SpecError::Parse {
            path: path.to_owned(),
            document,
            field: "(top level)".into(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let spec = parse_document(value, path, document)?;
        spec.validate()?;
        if specs.iter().any(|s: &PluginSpec| s.name == spec.name) {
            return Err(SpecError::DuplicateName {
                path: path.to_owned(),
                name: spec.name,
            });
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(SpecError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(specs)
}

/// A spec file: a regular file of at most [`files::MAX_SPEC_FILE_BYTES`].
fn read_spec_file(path: &Path) -> std::io::Result<String> {
    files::read_text(path, files::MAX_SPEC_FILE_BYTES, "the spec file limit").map_err(|e| match e {
        files::FileError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    })
}

/// Deepest nesting of flow collections (`[`, `{`) a spec may have; a spec
/// needs a handful.
pub const MAX_SPEC_NESTING: usize = 64;

/// Refuse, before parsing, text the YAML parser would take super-linear
/// time on: larger than [`files::MAX_SPEC_FILE_BYTES`], or flow collections
/// nested deeper than [`MAX_SPEC_NESTING`] (a linear scan that skips quoted
/// strings and comments).
fn check_shape(text: &str, path: &Path) -> Result<(), SpecError> {
    let refuse = |message: String| SpecError::Parse {
        path: path.to_owned(),
        document: 1,
        field: "(top level)".into(),
        message,
    };
    if text.len() as u64 > files::MAX_SPEC_FILE_BYTES {
        return Err(refuse(format!(
            "the spec is {} bytes, more than the {} a spec may have",
            text.len(),
            files::MAX_SPEC_FILE_BYTES
        )));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut prev = b' ';
    for &b in text.as_bytes() {
        if comment {
            comment = b != b'\n';
        } else if let Some(q) = quote {
            // `\"` escapes in double quotes; `''` in single quotes closes
            // and reopens, which this scan treats the same.
            if b == q && !(q == b'"' && prev == b'\\') {
                quote = None;
            }
        } else {
            match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = if prev == b'\\' && b == b'\\' { b' ' } else { b };
    }
    if deepest > MAX_SPEC_NESTING {
        return Err(refuse(format!(
            "collections are nested {deepest} deep, more than the {MAX_SPEC_NESTING} a spec may have"
        )));
    }
    Ok(())
}

fn parse_document<'de>(
    doc: impl serde::Deserializer<'de, Error = serde_yaml_ng::Error>,
    path: &Path,
    document: usize,
) -> Result<PluginSpec, SpecError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        SpecError::Parse {
            path: path.to_owned(),
            document,
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// An absolute path without `.` or `..` components or empty segments.
fn check_plain_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    let trimmed = path.trim_end_matches('/');
    if !trimmed.is_empty()
        && trimmed[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{path:?} has an empty, `.` or `..` component: name the directory plainly"
        ));
    }
    Ok(())
}

/// A DNS-1035 label (as a Kubernetes Service name): a DNS-1123 label that
/// starts with a letter, because the name prefixes the plugin's metric
/// names and a Prometheus metric name cannot start with a digit.
fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1035 label: use 1 to 63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit (the name prefixes the plugin's metric names, which cannot start with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_local_component_bytecode_and_pins_and_resolve_against_a_base() {
        let mut spec = PluginSpec::from_yaml(
            "name: p\ncomponent: ./c.wasm\nbytecode:\n  path: ../o/p.bpf.o\n  programs: []\nmaps:\n  - name: m\n    pin: /sys/fs/bpf/m\n",
        )
        .unwrap();
        let fields = |s: &PluginSpec| -> Vec<String> {
            s.relative_paths().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(fields(&spec), ["component", "bytecode.path"]);
        assert_eq!(spec.local_paths().len(), 3);
        spec.resolve_paths(Path::new("/specs/dir"));
        assert_eq!(spec.component, "/specs/dir/c.wasm");
        assert_eq!(
            spec.bytecode.as_ref().unwrap().path,
            "/specs/dir/../o/p.bpf.o"
        );
        assert!(fields(&spec).is_empty());
        // References are not paths.
        let oci = PluginSpec::from_yaml("name: p\ncomponent: oci://r.example/p:1\n").unwrap();
        assert!(oci.local_paths().is_empty());
    }

    const FULL: &str = r#"
name: exec-counter
component: exec-counter.wasm
bytecode:
  path: exec-counter.bpf.o
  programs:
    - name: handle_exec
      tracepoint: sched/sched_process_exec
maps:
  - name: events
    events: {maxBatch: 256, maxLatencyMs: 5}
  - name: counts
    access: readWrite
config:
  topN: "10"
limits:
  memoryMib: 32
tickIntervalMs: 1000
"#;

    #[test]
    fn parses_a_full_spec_with_defaults() {
        let spec = PluginSpec::from_yaml(FULL).unwrap();
        assert_eq!(spec.name, "exec-counter");
        assert_eq!(spec.maps[0].access, Access::Read);
        assert_eq!(spec.maps[0].events.as_ref().unwrap().max_batch, 256);
        assert_eq!(spec.maps[0].events.as_ref().unwrap().perf_pages, 64);
        assert_eq!(
            spec.maps[0].events.as_ref().unwrap().max_latency_ms,
            Some(5)
        );
        assert_eq!(spec.maps[1].access, Access::ReadWrite);
        assert!(spec.maps[1].events.is_none());
        assert_eq!(spec.limits.memory_mib, 32);
        assert_eq!(spec.limits.call_timeout_ms, 1000);
        assert_eq!(
            spec.bytecode.as_ref().unwrap().programs[0].attach_point(),
            Some(AttachPoint::Tracepoint {
                category: "sched",
                name: "sched_process_exec"
            })
        );
        // Serialising and parsing again gives the same spec.
        let again = yaml_roundtrip(&spec);
        assert_eq!(again, spec);
    }

    fn yaml_roundtrip(spec: &PluginSpec) -> PluginSpec {
        let yaml = serde_yaml_ng::to_string(spec).unwrap();
        PluginSpec::from_yaml(&yaml).unwrap()
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = FULL.replace("memoryMib: 32", "memoryMiB: 32");
        let err = PluginSpec::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains("limits"), "{err}");
        assert!(err.contains("unknown field `memoryMiB`"), "{err}");
    }

    #[test]
    fn bad_enum_value_is_named_with_its_path() {
        let text = FULL.replace("access: readWrite", "access: write");
        let err = PluginSpec::from_yaml(&text).unwrap_err().to_string();
        assert!(err.contains("maps[1].access"), "{err}");
        assert!(err.contains("write"), "{err}");
    }

    #[test]
    fn missing_required_field_is_reported() {
        let err = PluginSpec::from_yaml("name: x\n").unwrap_err().to_string();
        assert!(
            err.contains("component: must name a wasm component file or an oci:// reference"),
            "{err}"
        );
    }

    const EXPORTER_CONFIG: &str = "metrics:\n  counters:\n    - name: calls_total\n      help: Calls\n      labels:\n        - name: syscall\n          size: 8\n          decoders:\n            - name: uint\n            - name: syscall\n";

    fn exporter_yaml(config: &str) -> String {
        format!(
            "name: calls\nexporter:\n  configName: calls_config\n  config: {}\nbytecode:\n  path: /o/calls.bpf.o\n",
            serde_json::to_string(config).unwrap()
        )
    }

    #[test]
    fn an_exporter_spec_needs_no_component_and_keeps_its_config() {
        let spec = PluginSpec::from_yaml(&exporter_yaml(EXPORTER_CONFIG)).unwrap();
        let exporter = spec.exporter.as_ref().unwrap();
        assert_eq!(exporter.name(&spec.name), "calls_config");
        let config = exporter.parse(&spec.name).unwrap();
        assert_eq!(config.metrics.counters[0].name, "calls_total");
        // Round trip through YAML: the component stays absent.
        let text = serde_yaml_ng::to_string(&spec).unwrap();
        assert!(!text.contains("component"), "{text}");
        assert_eq!(PluginSpec::from_yaml(&text).unwrap(), spec);
    }

    #[test]
    fn an_exporter_spec_names_each_problem() {
        let bad = EXPORTER_CONFIG.replace("name: syscall\n", "name: sycsall\n");
        let err = PluginSpec::from_yaml(&exporter_yaml(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "exporter.config.metrics.counters[0].labels[0].decoders[1].name: unknown decoder \"sycsall\""
            ),
            "{err}"
        );
        let text = exporter_yaml(EXPORTER_CONFIG).replace(
            "bytecode:\n  path: /o/calls.bpf.o\n",
            "component: /c.wasm\ntickIntervalMs: 100\n",
        );
        let err = PluginSpec::from_yaml(&text).unwrap_err().to_string();
        for field in [
            "component: set either",
            "bytecode: the exporter reads",
            "tickIntervalMs: only a wasm",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn validation_reports_every_problem_with_its_field() {
        let text = r#"
name: Bad_Name
component: oci://example.com
bytecode:
  path: x.o
  programs:
    - name: a
    - name: b
      tracepoint: nocategory
maps:
  - name: m
    pin: relative/path
    events: {maxBatch: 0, maxLatencyMs: 0}
  - name: m
limits: {memoryMib: 0, callTimeoutMs: 0, cpu: 1001}
tickIntervalMs: 1
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "component",
                "bytecode.programs[0]",
                "bytecode.programs[1].tracepoint",
                "maps[0].pin",
                "maps[0].events.maxBatch",
                "maps[0].events.maxLatencyMs",
                "maps[1].name",
                "limits.memoryMib",
                "limits.callTimeoutMs",
                "limits.cpu",
                "tickIntervalMs",
            ]
        );
    }

    #[test]
    fn oci_references_and_pull_policy() {
        let text = r#"
name: p
component: oci://127.0.0.1:5000/plugins/exec-counter:1.0
pullPolicy: Never
bytecode:
  image: oci://quay.io/bpfman-bytecode/go-tracepoint-counter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
"#;
        let spec = PluginSpec::from_yaml(text).unwrap();
        assert_eq!(
            oci_reference(&spec.component),
            Some("127.0.0.1:5000/plugins/exec-counter:1.0")
        );
        assert_eq!(spec.pull_policy, Some(PullPolicy::Never));
        assert_eq!(yaml_roundtrip(&spec), spec);

        // Kubernetes defaults: `latest` and untagged are re-resolved.
        let mut spec = spec;
        spec.pull_policy = None;
        for (r, want) in [
            ("r.io/p:1.0", PullPolicy::IfNotPresent),
            ("r.io/p:latest", PullPolicy::Always),
            ("r.io:5000/p", PullPolicy::Always),
            ("r.io/p@sha256:00", PullPolicy::IfNotPresent),
        ] {
            assert_eq!(spec.effective_pull_policy(r), want, "{r}");
        }
    }

    #[test]
    fn bad_oci_references_are_named() {
        let text = r#"
name: p
component: oci://no-repository
pullPolicy: Sometimes
"#;
        let err = PluginSpec::from_yaml(text).unwrap_err().to_string();
        assert!(err.contains("pullPolicy"), "{err}");

        let text = r#"
name: p
component: http://example.com/p.wasm
bytecode:
  path: x.o
  image: oci://r.io/b:1
maps: []
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["component", "bytecode"]);

        let text = r#"
name: p
component: oci://r.io/p@sha256:beef
bytecode:
  image: r.io/b:1
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["component", "bytecode.image"]);
        assert!(errors[0].message.contains("sha256:<64 hex digits>"));

        let text = "name: p\ncomponent: p.wasm\nbytecode: {programs: []}\n";
        let err = PluginSpec::from_yaml(text).unwrap_err().to_string();
        assert!(err.contains("bytecode: set path"), "{err}");
    }

    #[test]
    fn file_with_several_documents_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("specs.yaml");
        let second = FULL.replace("name: exec-counter", "name: other");
        std::fs::write(&path, format!("{FULL}\n---\n{second}")).unwrap();
        let specs = load_file(&path).unwrap();
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["exec-counter", "other"]
        );

        std::fs::write(&path, format!("{FULL}\n---\n{FULL}")).unwrap();
        assert!(matches!(
            load_file(&path),
            Err(SpecError::DuplicateName { name, .. }) if name == "exec-counter"
        ));

        std::fs::write(&path, "").unwrap();
        assert!(matches!(load_file(&path), Err(SpecError::Empty { .. })));

        let missing = dir.path().join("nope.yaml");
        let err = load_file(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.yaml"), "{err}");
    }

    /// Issue 19, defect 8: 200k nested flow sequences (400 KB) ran for
    /// minutes before the parser's depth error; a 50 MB spec file was read
    /// whole. Both are refused before parsing.
    #[test]
    fn deep_nesting_and_huge_spec_files_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let err = PluginSpec::from_yaml(&deep).unwrap_err().to_string();
        assert!(err.contains("nested 200000 deep"), "{err}");
        // Brackets in strings and comments are not nesting.
        let text = format!(
            "name: p # {}\ncomponent: \"/{}.wasm\"\nconfig: {{a: '{}'}}\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        PluginSpec::from_yaml(&text).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(files::MAX_SPEC_FILE_BYTES + 1).unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("more than the limit"), "{err}");
        let err = load_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn parse_error_names_document_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("specs.yaml");
        let bad = FULL.replace("maxBatch: 256", "maxBatch: many");
        std::fs::write(&path, format!("{FULL}\n---\n{bad}")).unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("document 2"), "{err}");
        assert!(err.contains("maps[0].events.maxBatch"), "{err}");
    }

    #[test]
    fn the_bpfman_loader_is_parsed_and_what_it_cannot_do_is_named() {
        let text = FULL.replace("bytecode:\n", "bytecode:\n  loader: bpfman\n");
        let spec = PluginSpec::from_yaml(&text).unwrap();
        assert_eq!(spec.bytecode.as_ref().unwrap().loader, Loader::Bpfman);
        assert_eq!(yaml_roundtrip(&spec), spec);
        // The default is not written out.
        let host = PluginSpec::from_yaml(FULL).unwrap();
        assert_eq!(host.bytecode.as_ref().unwrap().loader, Loader::Host);
        assert!(!serde_yaml_ng::to_string(&host).unwrap().contains("loader"));

        let text = r#"
name: p
component: p.wasm
bytecode:
  loader: bpfman
  path: p.o
  globalData: {x: 1}
  programs:
    - name: a
      tpBtf: sched_switch
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["bytecode.programs[0].tpBtf", "bytecode.globalData"]
        );
        assert!(errors[0].message.contains("loader: host"), "{errors:?}");
        let err = PluginSpec::from_yaml(
            "name: p\ncomponent: p.wasm\nbytecode: {loader: bpfman, path: p.o}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bytecode.programs"), "{err}");
    }

    #[test]
    fn a_drop_counter_must_be_another_granted_map() {
        let text = r#"
name: p
component: p.wasm
maps:
  - {name: a, pin: /sys/fs/bpf/a, events: {dropCounter: nope}}
  - {name: b, pin: /sys/fs/bpf/b, events: {dropCounter: b}}
  - {name: c, pin: /sys/fs/bpf/c, events: {dropCounter: a}}
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["maps[0].events.dropCounter", "maps[1].events.dropCounter"]
        );
        assert!(errors[0].message.contains("not granted"), "{errors:?}");
    }

    #[test]
    fn a_bpfman_program_by_name_stands_for_the_pins_but_not_beside_bytecode() {
        let spec = PluginSpec::from_yaml(
            "name: p\ncomponent: p.wasm\nbpfmanProgram: {application: app, program: handle_exec}\nmaps: [{name: events, events: {}}]\n",
        )
        .unwrap();
        let b = spec.bpfman_program.as_ref().unwrap();
        assert_eq!(
            (b.application.as_str(), b.program.as_deref()),
            ("app", Some("handle_exec"))
        );
        let wire = crate::v1::PluginSpec::from(&spec);
        assert_eq!(PluginSpec::try_from(wire).unwrap(), spec);

        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(
            "name: p\ncomponent: p.wasm\nbpfmanProgram: {application: ''}\nbytecode: {path: p.o, programs: []}\n",
        ) else {
            panic!("expected an invalid spec");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["bpfmanProgram", "bpfmanProgram.application"],
            "{errors:?}"
        );
    }

    #[test]
    fn a_cluster_bpf_application_stands_for_the_pins_alone() {
        let yaml = "name: p\ncomponent: p.wasm\nclusterBpfApplication: {name: app, program: handle_exec}\nmaps: [{name: events, events: {}}]\n";
        let spec = PluginSpec::from_yaml(yaml).unwrap();
        let c = spec.cluster_bpf_application.as_ref().unwrap();
        assert_eq!(
            (c.name.as_str(), c.program.as_deref()),
            ("app", Some("handle_exec"))
        );
        let wire = crate::v1::PluginSpec::from(&spec);
        assert_eq!(PluginSpec::try_from(wire).unwrap(), spec);

        // The node agent's re-pinned spec differs only in the pins.
        let mut pinned = spec.clone();
        pinned.maps[0].pin = Some("/run/bpfman/fs/maps/7/events".into());
        let mut repinned = pinned.clone();
        repinned.maps[0].pin = Some("/run/bpfman/fs/maps/9/events".into());
        assert!(pinned.differs_only_in_pins(&repinned));
        assert!(spec.differs_only_in_pins(&pinned));
        assert!(!pinned.differs_only_in_pins(&pinned));
        let mut other = repinned.clone();
        other.config.insert("k".into(), "v".into());
        assert!(!pinned.differs_only_in_pins(&other));

        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(
            "name: p\ncomponent: p.wasm\nclusterBpfApplication: {name: ' '}\nbpfmanProgram: {application: a}\n",
        ) else {
            panic!("expected an invalid spec");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["clusterBpfApplication", "clusterBpfApplication.name"],
            "{errors:?}"
        );
    }

    #[test]
    fn shared_maps_are_exposed_by_their_owner_and_opened_by_reference() {
        let text = r#"
name: reader
component: r.wasm
maps:
  - {name: flows, from: {plugin: owner, map: by_pod}}
"#;
        let spec = PluginSpec::from_yaml(text).unwrap();
        let r = spec.maps[0].from.as_ref().unwrap();
        assert_eq!((r.plugin.as_str(), r.map.as_str()), ("owner", "by_pod"));
        assert_eq!(yaml_roundtrip(&spec), spec);
        let owner = PluginSpec::from_yaml(
            "name: owner\ncomponent: o.wasm\nbytecode: {path: o.o}\nmaps: [{name: by_pod, expose: true}]\n",
        )
        .unwrap();
        assert!(owner.maps[0].expose);
        assert_eq!(yaml_roundtrip(&owner), owner);
        // Not exposing is not written out.
        assert!(!serde_yaml_ng::to_string(&spec).unwrap().contains("expose"));

        let text = r#"
name: p
component: p.wasm
bytecode: {path: p.o, loader: bpfman, programs: [{name: x, tracepoint: a/b}]}
maps:
  - {name: a, from: {plugin: Bad_Name, map: ""}, pin: /sys/fs/bpf/a}
  - {name: b, from: {plugin: p, map: m}}
  - {name: c, expose: true, pin: /sys/fs/bpf/c}
  - {name: d, expose: true}
"#;
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "maps[0].from.plugin",
                "maps[0].from.map",
                "maps[0].from",
                "maps[1].from.plugin",
                "maps[2].expose",
                "maps[3].expose"
            ],
            "{errors:?}"
        );
        assert!(
            errors[3].message.contains("this plugin itself"),
            "{errors:?}"
        );
        assert!(errors[5].message.contains("loader: host"), "{errors:?}");
    }

    #[test]
    fn bpfman_refuses_interface_patterns_and_the_host_takes_them() {
        let text = "name: p\ncomponent: p.wasm\nbytecode: {path: p.o, loader: bpfman, programs: [{name: x, tcx: {interface: \"veth*\", direction: ingress}}, {name: y, tcx: {interface: eth0, direction: ingress}}]}\n";
        let Err(SpecError::Invalid { errors, .. }) = PluginSpec::from_yaml(text) else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["bytecode.programs[0].tcx"], "{errors:?}");
        assert!(errors[0].message.contains("loader: host"), "{errors:?}");
        PluginSpec::from_yaml(&text.replace("loader: bpfman, ", "")).unwrap();
    }

    #[test]
    fn global_data_values_are_typed_by_their_yaml_form() {
        let spec = PluginSpec::from_yaml(
            "name: p\ncomponent: p.wasm\nbytecode:\n  path: p.o\n  globalData: {port: 8080, delta: -3, on: true, comm: cat, digits: '123', ports: [80, 443]}\n",
        )
        .unwrap();
        let g = &spec.bytecode.as_ref().unwrap().global_data;
        assert_eq!(g["port"], GlobalValue::Unsigned(8080));
        assert_eq!(g["delta"], GlobalValue::Signed(-3));
        assert_eq!(g["on"], GlobalValue::Bool(true));
        assert_eq!(g["comm"], GlobalValue::Text("cat".into()));
        assert_eq!(g["digits"], GlobalValue::Text("123".into()));
        assert_eq!(g["ports"], GlobalValue::List(vec![80, 443]));
        assert_eq!(yaml_roundtrip(&spec), spec);
        let wire = crate::v1::PluginSpec::from(&spec);
        assert_eq!(PluginSpec::try_from(wire).unwrap(), spec);
    }
}
