//! Property tests of the spec's front doors (issue 19, fuzzing): run-file
//! text (YAML and JSON) and the gRPC `v1.PluginSpec`, from arbitrary and
//! from mutated valid input. Each case must give a spec that validates or a
//! typed `SpecError` that names what is wrong; never a panic, and an
//! accepted spec survives the round trips unchanged.
//!
//! Bounded for CI (proptest's default 256 cases per property, seconds in
//! all); a longer run: `PROPTEST_CASES=100000 cargo test -p conductor-api
//! --test properties --release`.

use std::collections::HashMap;

use conductor_api::v1;
use conductor_api::{PluginSpec, SpecError};
use proptest::prelude::*;
use prost::Message;

/// A wire spec that uses most fields, including several attach kinds.
fn seed() -> v1::PluginSpec {
    let program = |name: &str| v1::ProgramAttach {
        name: name.into(),
        ..Default::default()
    };
    v1::PluginSpec {
        name: "seed".into(),
        component: "/plugins/seed.wasm".into(),
        pull_policy: Some(v1::PullPolicy::IfNotPresent as i32),
        bytecode: Some(v1::Bytecode {
            path: "/plugins/seed.bpf.o".into(),
            image: None,
            programs: vec![
                v1::ProgramAttach {
                    tracepoint: Some("sched/sched_process_exec".into()),
                    ..program("tp")
                },
                v1::ProgramAttach {
                    kprobe: Some(v1::KprobeAttach {
                        function: "do_sys_openat2".into(),
                        offset: Some(0),
                    }),
                    ..program("kp")
                },
                v1::ProgramAttach {
                    xdp: Some(v1::XdpAttach {
                        interface: "eth0".into(),
                        mode: "skb".into(),
                    }),
                    ..program("xd")
                },
                v1::ProgramAttach {
                    uprobe: Some(v1::UprobeAttach {
                        target: "/usr/bin/true".into(),
                        symbol: Some("main".into()),
                        offset: None,
                        pid: Some(1),
                        pod: None,
                    }),
                    ..program("up")
                },
            ],
            global_data: HashMap::from([("target_tid".into(), 7)]),
            typed_global_data: HashMap::from([
                (
                    "comm".into(),
                    v1::GlobalValue {
                        value: Some(v1::global_value::Value::Text("cat".into())),
                    },
                ),
                (
                    "offset".into(),
                    v1::GlobalValue {
                        value: Some(v1::global_value::Value::Signed(-3)),
                    },
                ),
            ]),
            loader: String::new(),
        }),
        maps: vec![v1::MapGrant {
            name: "events".into(),
            access: v1::Access::ReadWrite as i32,
            pin: None,
            events: Some(v1::EventSource {
                max_batch: 64,
                perf_pages: 0,
                max_latency_ms: Some(5),
                drop_counter: None,
                busy_poll_ms: Some(0),
            }),
            ..Default::default()
        }],
        config: HashMap::from([("greeting".into(), "hi".into())]),
        limits: Some(v1::Limits {
            memory_mib: 32,
            call_timeout_ms: 1000,
            max_series_per_metric: 100,
            cpu: Some(250),
        }),
        tick_interval_ms: Some(1000),
        restart: Some(v1::Restart {
            max_backoff_seconds: 30,
            give_up_after: Some(5),
        }),
        read_only_paths: vec![v1::ReadOnlyPath {
            path: "/sys/fs/cgroup".into(),
            guest_path: Some("/cgroup".into()),
        }],
        bpfman_program: None,
        exporter: None,
        cluster_bpf_application: None,
    }
}

/// The problems of an invalid spec are each named.
fn assert_typed(e: &SpecError) {
    match e {
        SpecError::Invalid { errors, .. } => {
            assert!(!errors.is_empty(), "Invalid without problems");
            for f in errors {
                assert!(!f.message.is_empty(), "a problem without a message: {e}");
            }
        }
        SpecError::Parse { message, .. } => assert!(!message.is_empty(), "{e}"),
        _ => {}
    }
    assert!(!e.to_string().is_empty());
}

/// Parse text; an accepted spec validates and reads back the same from
/// its own YAML and from the wire.
fn check_text(text: &str) {
    match PluginSpec::from_yaml(text) {
        Ok(spec) => {
            spec.validate().expect("an accepted spec validates");
            let yaml = serde_yaml_ng::to_string(&spec).unwrap();
            let again = PluginSpec::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("its own YAML is refused: {e}\n{yaml}"));
            assert_eq!(again, spec, "YAML round trip");
            let wire = v1::PluginSpec::from(&spec);
            let back = PluginSpec::try_from(wire).expect("its wire form is accepted");
            assert_eq!(back, spec, "wire round trip");
        }
        Err(e) => assert_typed(&e),
    }
}

fn check_wire(wire: v1::PluginSpec) {
    match PluginSpec::try_from(wire) {
        Ok(spec) => {
            spec.validate().expect("an accepted spec validates");
            let back = PluginSpec::try_from(v1::PluginSpec::from(&spec))
                .expect("a converted spec converts back");
            assert_eq!(back, spec);
        }
        Err(e) => assert_typed(&e),
    }
}

/// Byte-level mutations: overwrite, insert, delete.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 3 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

/// Text made of the tokens a spec is made of, in any order.
fn spec_like_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("name: ".to_owned()),
        Just("component: ".to_owned()),
        Just("bytecode:\n  path: ".to_owned()),
        Just("programs: [{name: p, tracepoint: a/b}]".to_owned()),
        Just("maps:\n  - name: events\n    events: {maxBatch: ".to_owned()),
        Just("config: {".to_owned()),
        Just("limits: {memoryMib: ".to_owned()),
        Just("tickIntervalMs: ".to_owned()),
        Just("{\"name\": \"x\", \"component\": \"/c.wasm\"".to_owned()),
        Just("\n".to_owned()),
        Just("  ".to_owned()),
        Just("- ".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(", ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("!!binary ".to_owned()),
        Just("---\n".to_owned()),
        "[a-z0-9/.:-]{0,12}",
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,6}",
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn arbitrary_text_is_a_spec_or_a_typed_error(text in "\\PC{0,300}") {
        check_text(&text);
    }

    #[test]
    fn spec_like_text_is_a_spec_or_a_typed_error(text in spec_like_text()) {
        check_text(&text);
    }

    /// The seed's YAML and JSON forms, mutated byte by byte.
    #[test]
    fn mutated_yaml_and_json_are_specs_or_typed_errors(edits in edits(), json in any::<bool>()) {
        let spec = PluginSpec::try_from(seed()).expect("the seed is valid");
        let text = if json {
            serde_json::to_string(&spec).unwrap()
        } else {
            serde_yaml_ng::to_string(&spec).unwrap()
        };
        let bytes = mutate(text.into_bytes(), &edits);
        check_text(&String::from_utf8_lossy(&bytes));
    }

    /// The seed's protobuf encoding, mutated: whatever decodes converts to
    /// a valid spec or a typed error.
    #[test]
    fn mutated_wire_specs_are_specs_or_typed_errors(edits in edits()) {
        let bytes = mutate(seed().encode_to_vec(), &edits);
        if let Ok(wire) = v1::PluginSpec::decode(bytes.as_slice()) {
            check_wire(wire);
        }
    }

    /// Wire specs with arbitrary scalars where the seed has valid ones
    /// (names, paths, enums out of range, zero and huge limits).
    #[test]
    fn wire_specs_with_arbitrary_fields_are_specs_or_typed_errors(
        name in "\\PC{0,70}",
        component in prop_oneof!["/[a-z/]{0,20}\\.wasm", "oci://\\PC{0,40}", "\\PC{0,20}"],
        pull in proptest::option::of(any::<i32>()),
        access in any::<i32>(),
        map_name in "\\PC{0,20}",
        max_batch in any::<u32>(),
        limits in proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>())),
        tick in proptest::option::of(any::<u64>()),
        config in proptest::collection::hash_map("\\PC{0,10}", "\\PC{0,10}", 0..4),
        program in "\\PC{0,20}",
        tracepoint in proptest::option::of("\\PC{0,30}"),
    ) {
        let mut w = seed();
        w.name = name;
        w.component = component;
        w.pull_policy = pull;
        w.maps[0].access = access;
        w.maps[0].name = map_name;
        if let Some(e) = &mut w.maps[0].events {
            e.max_batch = max_batch;
        }
        w.limits = limits.map(|(m, c, s)| v1::Limits {
            memory_mib: m,
            call_timeout_ms: c,
            max_series_per_metric: s,
            cpu: None,
        });
        w.tick_interval_ms = tick;
        w.config = config;
        if let Some(b) = &mut w.bytecode {
            b.programs[0].name = program;
            b.programs[0].tracepoint = tracepoint;
        }
        check_wire(w);
    }
}

#[test]
fn the_seed_is_valid() {
    let spec = PluginSpec::try_from(seed()).unwrap();
    check_text(&serde_yaml_ng::to_string(&spec).unwrap());
}
