//! The `conductor.v1` node API (see `proto/conductor/v1/conductor.proto`):
//! generated messages, client and server, and lossless conversions between
//! the wire `PluginSpec` and the one [`crate::PluginSpec`].

use std::collections::BTreeMap;

use crate::spec::{self, FieldError, SpecError};

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("conductor.v1");
}
pub use generated::*;

/// The encoded descriptors of `conductor.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("conductor_v1_descriptor");

/// The daemon's socket when none is given.
pub const DEFAULT_SOCKET: &str = "/run/conductor/conductor.sock";

#[cfg(feature = "client")]
pub use client::{ConnectError, connect};

#[cfg(feature = "client")]
mod client {
    use std::path::{Path, PathBuf};

    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint};

    use super::conductor_client::ConductorClient;

    #[derive(Debug, thiserror::Error)]
    #[error(
        "cannot connect to the conductor daemon at {}: {cause} (is `conductor serve` running, \
         and may this user open the socket? pass --socket if it listens elsewhere)",
        path.display()
    )]
    pub struct ConnectError {
        pub path: PathBuf,
        pub cause: String,
        /// The socket exists but this process may not open it.
        pub permission_denied: bool,
    }

    /// A client of the daemon listening on the Unix socket `path`. Connects
    /// eagerly, so that a missing daemon is reported here and not on the
    /// first call.
    pub async fn connect(path: &Path) -> Result<ConductorClient<Channel>, ConnectError> {
        let socket = path.to_path_buf();
        // The URI is required by the API but never resolved: the connector
        // below always dials the socket.
        let endpoint = Endpoint::from_static("http://conductor.sock");
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| {
                // The io::Error is a few sources down tonic's error chain.
                let mut source = std::error::Error::source(&e);
                let mut io = None;
                while let Some(s) = source {
                    if let Some(err) = s.downcast_ref::<std::io::Error>() {
                        io = Some((err.kind(), err.to_string()));
                        break;
                    }
                    source = s.source();
                }
                let (permission_denied, cause) = match io {
                    Some((kind, msg)) => (kind == std::io::ErrorKind::PermissionDenied, msg),
                    None => (false, e.to_string()),
                };
                ConnectError {
                    path: path.to_path_buf(),
                    cause,
                    permission_denied,
                }
            })?;
        Ok(ConductorClient::new(channel))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn a_missing_daemon_is_named_with_its_socket() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("absent.sock");
            let err = connect(&path).await.unwrap_err();
            assert!(!err.permission_denied);
            let msg = err.to_string();
            assert!(msg.contains("absent.sock"), "{msg}");
            assert!(msg.contains("No such file"), "{msg}");
        }
    }
}

impl From<&spec::PluginSpec> for PluginSpec {
    fn from(s: &spec::PluginSpec) -> Self {
        Self {
            name: s.name.clone(),
            component: s.component.clone(),
            pull_policy: s.pull_policy.map(|p| PullPolicy::from(p) as i32),
            bytecode: s.bytecode.as_ref().map(|b| Bytecode {
                path: b.path.clone(),
                image: b.image.clone(),
                programs: b.programs.iter().map(ProgramAttach::from).collect(),
                global_data: b
                    .global_data
                    .iter()
                    .filter_map(|(k, v)| match v {
                        spec::GlobalValue::Unsigned(v) => Some((k.clone(), *v)),
                        _ => None,
                    })
                    .collect(),
                typed_global_data: b
                    .global_data
                    .iter()
                    .filter_map(|(k, v)| {
                        use global_value::Value;
                        let value = match v {
                            spec::GlobalValue::Unsigned(_) => return None,
                            spec::GlobalValue::Signed(v) => Value::Signed(*v),
                            spec::GlobalValue::Bool(v) => Value::Flag(*v),
                            spec::GlobalValue::Text(v) => Value::Text(v.clone()),
                            spec::GlobalValue::List(v) => {
                                Value::List(IntList { values: v.clone() })
                            }
                        };
                        Some((k.clone(), GlobalValue { value: Some(value) }))
                    })
                    .collect(),
                loader: match b.loader {
                    spec::Loader::Host => String::new(),
                    spec::Loader::Bpfman => "bpfman".into(),
                },
            }),
            maps: s
                .maps
                .iter()
                .map(|m| MapGrant {
                    name: m.name.clone(),
                    access: Access::from(m.access) as i32,
                    pin: m.pin.clone(),
                    from: m.from.as_ref().map(|r| MapRef {
                        plugin: r.plugin.clone(),
                        map: r.map.clone(),
                    }),
                    expose: m.expose,
                    events: m.events.as_ref().map(|e| EventSource {
                        max_batch: e.max_batch,
                        perf_pages: e.perf_pages,
                        max_latency_ms: e.max_latency_ms,
                        drop_counter: e.drop_counter.clone(),
                        busy_poll_ms: e.busy_poll_ms,
                    }),
                })
                .collect(),
            config: s
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            limits: Some(Limits {
                memory_mib: s.limits.memory_mib,
                call_timeout_ms: s.limits.call_timeout_ms,
                max_series_per_metric: s.limits.max_series_per_metric,
                cpu: s.limits.cpu,
            }),
            tick_interval_ms: s.tick_interval_ms,
            exporter: s.exporter.as_ref().map(|e| Exporter {
                config: e.config.clone(),
                config_name: e.config_name.clone(),
            }),
            restart: Some(Restart {
                max_backoff_seconds: s.restart.max_backoff_seconds,
                give_up_after: s.restart.give_up_after,
            }),
            read_only_paths: s
                .read_only_paths
                .iter()
                .map(|p| ReadOnlyPath {
                    path: p.path.clone(),
                    guest_path: p.guest_path.clone(),
                })
                .collect(),
            bpfman_program: s.bpfman_program.as_ref().map(|b| BpfmanProgram {
                application: b.application.clone(),
                program: b.program.clone(),
            }),
            cluster_bpf_application: s.cluster_bpf_application.as_ref().map(|c| {
                ClusterBpfApplication {
                    name: c.name.clone(),
                    program: c.program.clone(),
                }
            }),
        }
    }
}

impl From<spec::PullPolicy> for PullPolicy {
    fn from(p: spec::PullPolicy) -> Self {
        match p {
            spec::PullPolicy::Always => Self::Always,
            spec::PullPolicy::IfNotPresent => Self::IfNotPresent,
            spec::PullPolicy::Never => Self::Never,
        }
    }
}

impl From<spec::Access> for Access {
    fn from(a: spec::Access) -> Self {
        match a {
            spec::Access::Read => Self::Read,
            spec::Access::ReadWrite => Self::ReadWrite,
        }
    }
}

/// Zero on the wire means "the default", as omitting a field in a run file does.
fn or_default(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

impl TryFrom<PluginSpec> for spec::PluginSpec {
    type Error = SpecError;

    /// Converts and validates: the result is a spec `conductor run` would
    /// accept, or every problem with its field path.
    fn try_from(w: PluginSpec) -> Result<Self, SpecError> {
        let mut errors = Vec::new();
        let loader = match w.bytecode.as_ref().map(|b| b.loader.as_str()) {
            None | Some("" | "host") => spec::Loader::Host,
            Some("bpfman") => spec::Loader::Bpfman,
            Some(other) => {
                errors.push(FieldError {
                    field: "bytecode.loader".into(),
                    message: format!("unknown loader {other:?}: use \"host\" or \"bpfman\""),
                });
                spec::Loader::Host
            }
        };
        let mut bad_enum = |field: String, value: i32| {
            errors.push(FieldError {
                field,
                message: format!("unknown enum value {value}"),
            })
        };

        let pull_policy = match w.pull_policy {
            None => None,
            Some(v) => match PullPolicy::try_from(v) {
                Ok(PullPolicy::Unspecified) => None,
                Ok(PullPolicy::Always) => Some(spec::PullPolicy::Always),
                Ok(PullPolicy::IfNotPresent) => Some(spec::PullPolicy::IfNotPresent),
                Ok(PullPolicy::Never) => Some(spec::PullPolicy::Never),
                Err(_) => {
                    bad_enum("pullPolicy".into(), v);
                    None
                }
            },
        };
        let mut maps = Vec::with_capacity(w.maps.len());
        for (i, m) in w.maps.into_iter().enumerate() {
            let access = match Access::try_from(m.access) {
                Ok(Access::Unspecified | Access::Read) => spec::Access::Read,
                Ok(Access::ReadWrite) => spec::Access::ReadWrite,
                Err(_) => {
                    bad_enum(format!("maps[{i}].access"), m.access);
                    spec::Access::Read
                }
            };
            let defaults = spec::EventSource::default();
            maps.push(spec::MapGrant {
                name: m.name,
                access,
                pin: m.pin,
                from: m.from.map(|r| spec::MapRef {
                    plugin: r.plugin,
                    map: r.map,
                }),
                expose: m.expose,
                events: m.events.map(|e| spec::EventSource {
                    max_batch: or_default(e.max_batch, defaults.max_batch),
                    perf_pages: or_default(e.perf_pages, defaults.perf_pages),
                    max_latency_ms: e.max_latency_ms,
                    busy_poll_ms: e.busy_poll_ms,
                    drop_counter: e.drop_counter,
                }),
            });
        }
        let defaults = spec::Limits::default();
        let limits = match w.limits {
            None => defaults,
            Some(l) => spec::Limits {
                memory_mib: or_default(l.memory_mib, defaults.memory_mib),
                call_timeout_ms: or_default(l.call_timeout_ms, defaults.call_timeout_ms),
                max_series_per_metric: or_default(
                    l.max_series_per_metric,
                    defaults.max_series_per_metric,
                ),
                cpu: l.cpu,
            },
        };
        let spec = spec::PluginSpec {
            name: w.name,
            component: w.component,
            pull_policy,
            bytecode: w.bytecode.map(|b| spec::Bytecode {
                path: b.path,
                image: b.image,
                programs: b
                    .programs
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        attach_from_wire(p, &format!("bytecode.programs[{i}]"), &mut errors)
                    })
                    .collect(),
                global_data: b
                    .global_data
                    .into_iter()
                    .map(|(k, v)| (k, spec::GlobalValue::Unsigned(v)))
                    .chain(b.typed_global_data.into_iter().filter_map(|(k, v)| {
                        use global_value::Value;
                        let value = match v.value {
                            Some(Value::Signed(v)) if v >= 0 => {
                                spec::GlobalValue::Unsigned(v as u64)
                            }
                            Some(Value::Signed(v)) => spec::GlobalValue::Signed(v),
                            Some(Value::Flag(v)) => spec::GlobalValue::Bool(v),
                            Some(Value::Text(v)) => spec::GlobalValue::Text(v),
                            Some(Value::List(l)) => spec::GlobalValue::List(l.values),
                            None => {
                                errors.push(FieldError {
                                    field: format!("bytecode.globalData.{k}"),
                                    message: "has no value".into(),
                                });
                                return None;
                            }
                        };
                        Some((k, value))
                    }))
                    .collect(),
                loader,
            }),
            maps,
            config: w.config.into_iter().collect::<BTreeMap<_, _>>(),
            limits,
            tick_interval_ms: w.tick_interval_ms,
            exporter: w.exporter.map(|e| spec::ExporterSpec {
                config: e.config,
                config_name: e.config_name,
            }),
            restart: match w.restart {
                None => spec::Restart::default(),
                Some(r) => spec::Restart {
                    max_backoff_seconds: or_default(
                        r.max_backoff_seconds,
                        spec::Restart::default().max_backoff_seconds,
                    ),
                    give_up_after: r.give_up_after,
                },
            },
            read_only_paths: w
                .read_only_paths
                .into_iter()
                .map(|p| spec::ReadOnlyPath {
                    path: p.path,
                    guest_path: p.guest_path,
                })
                .collect(),
            bpfman_program: w.bpfman_program.map(|b| spec::BpfmanProgram {
                application: b.application,
                program: b.program,
            }),
            cluster_bpf_application: w.cluster_bpf_application.map(|c| {
                spec::ClusterBpfApplicationRef {
                    name: c.name,
                    program: c.program,
                }
            }),
        };
        if !errors.is_empty() {
            // Report the wire problems together with the spec's own.
            if let Err(SpecError::Invalid { errors: more, .. }) = spec.validate() {
                errors.extend(more);
            }
            return Err(SpecError::Invalid {
                plugin: spec.name,
                errors,
            });
        }
        spec.validate()?;
        Ok(spec)
    }
}

// ---- attach points ---------------------------------------------------------

impl From<&crate::attach::ProgramAttach> for ProgramAttach {
    fn from(p: &crate::attach::ProgramAttach) -> Self {
        use crate::attach as a;
        let uprobe = |u: &a::UprobeAttach| UprobeAttach {
            target: u.target.clone(),
            symbol: u.symbol.clone(),
            offset: u.offset,
            pid: u.pid,
            pod: u.pod.as_ref().map(|p| PodContainer {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                container: p.container.clone(),
            }),
        };
        let kprobe = |k: &a::KprobeAttach| KprobeAttach {
            function: k.function.clone(),
            offset: k.offset,
        };
        let cgroup = |c: &a::CgroupAttach| CgroupAttach {
            cgroup_path: c.cgroup_path.clone(),
        };
        Self {
            name: p.name.clone(),
            tracepoint: p.tracepoint.clone(),
            raw_tracepoint: p.raw_tracepoint.clone(),
            tp_btf: p.tp_btf.clone(),
            uprobe: p.uprobe.as_ref().map(uprobe),
            uretprobe: p.uretprobe.as_ref().map(uprobe),
            kprobe: p.kprobe.as_ref().map(kprobe),
            kretprobe: p.kretprobe.as_ref().map(kprobe),
            fentry: p.fentry.clone(),
            fexit: p.fexit.clone(),
            lsm: p.lsm.clone(),
            xdp: p.xdp.as_ref().map(|x| XdpAttach {
                interface: x.interface.clone(),
                mode: enum_name(&x.mode),
            }),
            tc: p.tc.as_ref().map(|t| TcAttach {
                interface: t.interface.clone(),
                direction: enum_name(&t.direction),
                priority: t.priority,
            }),
            tcx: p.tcx.as_ref().map(|t| TcxAttach {
                interface: t.interface.clone(),
                direction: enum_name(&t.direction),
            }),
            cgroup_skb: p.cgroup_skb.as_ref().map(|c| CgroupSkbAttach {
                cgroup_path: c.cgroup_path.clone(),
                direction: enum_name(&c.direction),
            }),
            cgroup_sock: p.cgroup_sock.as_ref().map(cgroup),
            cgroup_sock_addr: p.cgroup_sock_addr.as_ref().map(cgroup),
            cgroup_sockopt: p.cgroup_sockopt.as_ref().map(cgroup),
            perf_event: p.perf_event.as_ref().map(|e| PerfEventAttach {
                software: e.software.as_ref().map(enum_name),
                hardware: e.hardware.as_ref().map(enum_name),
                frequency: e.frequency,
                period: e.period,
                pid: e.pid,
                cpu: e.cpu,
            }),
        }
    }
}

/// The run file's spelling of a unit enum value (e.g. `skb`).
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    match serde_yaml_ng::to_value(v) {
        Ok(serde_yaml_ng::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Parse the run file's spelling of an enum value; empty means the default.
fn parse_enum<T: serde::de::DeserializeOwned + Default>(
    value: &str,
    field: String,
    errors: &mut Vec<FieldError>,
) -> T {
    if value.is_empty() {
        return T::default();
    }
    parse_required(value, field, errors).unwrap_or_default()
}

fn parse_required<T: serde::de::DeserializeOwned>(
    value: &str,
    field: String,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match serde_yaml_ng::from_value(serde_yaml_ng::Value::String(value.to_owned())) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(FieldError {
                field,
                message: e.to_string(),
            });
            None
        }
    }
}

fn attach_from_wire(
    p: ProgramAttach,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> crate::attach::ProgramAttach {
    use crate::attach as a;
    let uprobe = |u: UprobeAttach| a::UprobeAttach {
        target: u.target,
        symbol: u.symbol,
        offset: u.offset,
        pid: u.pid,
        pod: u.pod.map(|p| a::PodContainer {
            namespace: p.namespace,
            name: p.name,
            container: p.container,
        }),
    };
    let kprobe = |k: KprobeAttach| a::KprobeAttach {
        function: k.function,
        offset: k.offset,
    };
    let cgroup = |c: CgroupAttach| a::CgroupAttach {
        cgroup_path: c.cgroup_path,
    };
    let xdp = p.xdp.map(|x| a::XdpAttach {
        mode: parse_enum(&x.mode, format!("{at}.xdp.mode"), errors),
        interface: x.interface,
    });
    let tc = p.tc.map(|t| a::TcAttach {
        direction: parse_enum(&t.direction, format!("{at}.tc.direction"), errors),
        interface: t.interface,
        priority: t.priority,
    });
    let tcx = p.tcx.map(|t| a::TcxAttach {
        direction: parse_enum(&t.direction, format!("{at}.tcx.direction"), errors),
        interface: t.interface,
    });
    let cgroup_skb = p.cgroup_skb.map(|c| a::CgroupSkbAttach {
        direction: parse_enum(&c.direction, format!("{at}.cgroupSkb.direction"), errors),
        cgroup_path: c.cgroup_path,
    });
    let perf_event = p.perf_event.map(|e| a::PerfEventAttach {
        software: e
            .software
            .and_then(|s| parse_required(&s, format!("{at}.perfEvent.software"), errors)),
        hardware: e
            .hardware
            .and_then(|s| parse_required(&s, format!("{at}.perfEvent.hardware"), errors)),
        frequency: e.frequency,
        period: e.period,
        pid: e.pid,
        cpu: e.cpu,
    });
    a::ProgramAttach {
        name: p.name,
        tracepoint: p.tracepoint,
        raw_tracepoint: p.raw_tracepoint,
        tp_btf: p.tp_btf,
        uprobe: p.uprobe.map(uprobe),
        uretprobe: p.uretprobe.map(uprobe),
        kprobe: p.kprobe.map(kprobe),
        kretprobe: p.kretprobe.map(kprobe),
        fentry: p.fentry,
        fexit: p.fexit,
        lsm: p.lsm,
        xdp,
        tc,
        tcx,
        cgroup_skb,
        cgroup_sock: p.cgroup_sock.map(cgroup),
        cgroup_sock_addr: p.cgroup_sock_addr.map(cgroup),
        cgroup_sockopt: p.cgroup_sockopt.map(cgroup),
        perf_event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_crosses_the_wire_and_an_unknown_one_is_named() {
        let s = spec::PluginSpec::from_yaml(
            "name: p\ncomponent: /p.wasm\nbytecode:\n  loader: bpfman\n  path: /p.o\n  programs:\n    - {name: a, tracepoint: sched/x}\n",
        )
        .unwrap();
        let w = PluginSpec::from(&s);
        assert_eq!(w.bytecode.as_ref().unwrap().loader, "bpfman");
        assert_eq!(spec::PluginSpec::try_from(w.clone()).unwrap(), s);
        let mut bad = w;
        bad.bytecode.as_mut().unwrap().loader = "kernel".into();
        let Err(SpecError::Invalid { errors, .. }) = spec::PluginSpec::try_from(bad) else {
            panic!("an unknown loader must be refused");
        };
        assert_eq!(errors[0].field, "bytecode.loader");
    }

    const FULL: &str = r#"
name: demo
component: oci://registry.example/plugins/demo:1.0
pullPolicy: Never
bytecode:
  path: /opt/demo.bpf.o
  globalData: { target_port: 8080, sample_rate: 100 }
  programs:
    - name: on_exec
      tracepoint: sched/sched_process_exec
    - name: on_switch
      rawTracepoint: sched_switch
    - name: on_btf
      tpBtf: sched_switch
    - name: on_malloc
      uretprobe: { target: libc.so.6, symbol: malloc, offset: 4, pid: 7 }
    - name: on_unlink
      kprobe: { function: do_unlinkat }
    - name: on_open
      fexit: do_sys_openat2
    - name: on_file
      lsm: file_open
    - name: on_rx
      xdp: { interface: eth0, mode: driver }
    - name: on_tc
      tc: { interface: eth0, direction: egress, priority: 3 }
    - name: on_tcx
      tcx: { interface: eth1, direction: ingress }
    - name: on_skb
      cgroupSkb: { cgroupPath: /sys/fs/cgroup/pods, direction: egress }
    - name: on_sock
      cgroupSockAddr: {}
    - name: on_cpu
      perfEvent: { hardware: instructions, period: 100000, cpu: 0 }
maps:
  - name: events
    events: { maxBatch: 256, perfPages: 16, maxLatencyMs: 50, dropCounter: counts }
  - name: counts
    access: readWrite
  - name: shared
    pin: /sys/fs/bpf/shared
config: { a: "1", b: two }
limits: { memoryMib: 32, callTimeoutMs: 200, maxSeriesPerMetric: 100, cpu: 250 }
tickIntervalMs: 500
restart: { maxBackoffSeconds: 5, giveUpAfter: 4 }
"#;

    #[test]
    fn spec_survives_the_wire() {
        let spec = spec::PluginSpec::from_yaml(FULL).unwrap();
        let wire = PluginSpec::from(&spec);
        let back = spec::PluginSpec::try_from(wire).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn zero_values_on_the_wire_mean_defaults() {
        let wire = PluginSpec {
            name: "minimal".into(),
            component: "/opt/minimal.wasm".into(),
            maps: vec![MapGrant {
                name: "events".into(),
                pin: Some("/sys/fs/bpf/events".into()),
                events: Some(EventSource::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spec = spec::PluginSpec::try_from(wire).unwrap();
        let from_yaml = spec::PluginSpec::from_yaml(
            "name: minimal\ncomponent: /opt/minimal.wasm\nmaps: [{name: events, pin: /sys/fs/bpf/events, events: {}}]",
        )
        .unwrap();
        assert_eq!(spec, from_yaml);
    }

    #[test]
    fn bad_wire_values_are_named_with_the_spec_errors() {
        let wire = PluginSpec {
            name: "Bad Name".into(),
            component: "/opt/x.wasm".into(),
            pull_policy: Some(42),
            maps: vec![MapGrant {
                name: "m".into(),
                access: 9,
                pin: Some("/sys/fs/bpf/m".into()),
                events: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        let Err(SpecError::Invalid { errors, .. }) = spec::PluginSpec::try_from(wire) else {
            panic!("expected an invalid spec");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["pullPolicy", "maps[0].access", "name"],
            "{errors:?}"
        );
    }

    #[test]
    fn bad_attach_enum_strings_on_the_wire_are_named() {
        let wire = PluginSpec {
            name: "p".into(),
            component: "/opt/p.wasm".into(),
            bytecode: Some(Bytecode {
                path: "/opt/p.o".into(),
                image: None,
                programs: vec![ProgramAttach {
                    name: "x".into(),
                    xdp: Some(XdpAttach {
                        interface: "eth0".into(),
                        mode: "turbo".into(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let Err(SpecError::Invalid { errors, .. }) = spec::PluginSpec::try_from(wire) else {
            panic!("expected an invalid spec");
        };
        assert_eq!(
            errors[0].field, "bytecode.programs[0].xdp.mode",
            "{errors:?}"
        );
        assert!(errors[0].message.contains("turbo"), "{errors:?}");
    }
}
