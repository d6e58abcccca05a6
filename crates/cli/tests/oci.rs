//! Plugins as OCI artifacts against a real registry (Debian's
//! docker-registry, CNCF distribution 2.8) on loopback: `conductor push` and
//! `pull`, the artifact format on the wire, the cache, every failure the
//! issue lists, and the real exec-counter plugin run from the registry and
//! then from cache with the registry stopped.

use std::time::Duration;

use conductor_test_support::registry::*;
use conductor_test_support::*;
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn push_exec_counter(reg: &Registry, reference: &str) -> std::process::Output {
    let wasm = artifact("exec_counter.wasm");
    let out = conductor(
        &[
            "push",
            wasm.to_str().unwrap(),
            &format!("oci://{}/{reference}", reg.addr),
            "--version",
            "1.0.0",
            "--source",
            "https://github.com/ebpfconductor/ebpfconductor",
        ],
        &[],
    );
    assert!(out.status.success(), "push failed: {}", stderr(&out));
    out
}

fn pull(reference: &str, cache: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "pull",
        reference,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--registry-timeout",
        "5",
        "--registry-connect-timeout",
        "2",
    ];
    args.extend_from_slice(extra);
    conductor(&args, &[])
}

fn assert_failed_cleanly(out: &std::process::Output, reference: &str, cause: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got:\n{}",
        stdout(out)
    );
    let err = stderr(out);
    assert!(
        err.contains(reference),
        "error does not name {reference}:\n{err}"
    );
    assert!(
        err.to_lowercase().contains(&cause.to_lowercase()),
        "error does not say {cause:?}:\n{err}"
    );
}

fn assert_cache_empty(cache: &std::path::Path) {
    let blobs = cached_blobs(cache);
    assert!(blobs.is_empty(), "cache holds {blobs:?}");
    let out = conductor(
        &["cache", "list", "--cache-dir", cache.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn push_writes_the_cncf_wasm_artifact_format_and_pull_verifies_it() {
    let reg = Registry::start();
    let out = push_exec_counter(&reg, "plugins/exec-counter:1.0");
    let wasm = std::fs::read(artifact("exec_counter.wasm")).unwrap();
    let digest = sha256(&wasm);
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));

    // What any OCI tool sees: an OCI image manifest, the wasm config media
    // type, one application/wasm layer, and our annotations.
    let m = reg.manifest("plugins/exec-counter", "1.0");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], digest.as_str());
    let a = &m["annotations"];
    assert_eq!(a["org.opencontainers.image.title"], "exec_counter");
    assert_eq!(a["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(
        a["org.opencontainers.image.source"],
        "https://github.com/ebpfconductor/ebpfconductor"
    );
    assert_eq!(
        a["dev.ebpfconductor.wit.world"],
        format!(
            "{}/plugin@{}",
            conductor_api::wit::PACKAGE,
            conductor_api::wit::CURRENT
        )
    );
    let config: serde_json::Value = serde_json::from_slice(&reg.blob(
        "plugins/exec-counter",
        m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"][0], digest.as_str());
    let imports = config["component"]["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("conductor:plugin/")),
        "{config}"
    );

    // Pull into an empty cache: downloaded, verified, identical bytes.
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/plugins/exec-counter:1.0", reg.addr);
    let output = cache.path().join("out.wasm");
    let out = pull(
        &reference,
        cache.path(),
        &["--output", output.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("layer {digest}")), "{text}");
    assert!(text.contains("downloaded true"), "{text}");
    assert_eq!(std::fs::read(&output).unwrap(), wasm);

    // Same content under another tag: resolved, not downloaded again.
    let out = conductor(
        &[
            "push",
            artifact("exec_counter.wasm").to_str().unwrap(),
            &format!("{}/plugins/exec-counter:latest", reg.addr),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pull(
        &format!("{}/plugins/exec-counter:latest", reg.addr),
        cache.path(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("downloaded false"),
        "{}",
        stdout(&out)
    );

    // List, then prune: nothing referenced goes; --all empties the cache.
    let dir = cache.path().to_str().unwrap();
    let list = stdout(&conductor(&["cache", "list", "--cache-dir", dir], &[]));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(":1.0\tcomponent\t"), "{list}");
    // Compiled forms: one of the cached component (kept), one of a
    // component no longer cached (pruned).
    let blob = cached_blobs(cache.path()).pop().unwrap();
    let kept = cache.path().join(format!("{blob}-0123456789abcdef.cwasm"));
    let stale = cache
        .path()
        .join(format!("{}-0123456789abcdef.cwasm", "0".repeat(64)));
    std::fs::write(&kept, b"compiled").unwrap();
    std::fs::write(&stale, b"compiled").unwrap();
    let out = conductor(&["cache", "prune", "--cache-dir", dir], &[]);
    assert!(stdout(&out).contains("1 removed"), "{}", stdout(&out));
    assert!(kept.exists() && !stale.exists());
    assert_eq!(cached_blobs(cache.path()).len(), 1);
    let out = conductor(&["cache", "prune", "--all", "--cache-dir", dir], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_cache_empty(cache.path());
}

#[test]
fn push_refuses_what_is_not_a_plugin_component() {
    let reg = Registry::start();
    let object = artifact("exec_counter.bpf.o");
    let out = conductor(
        &[
            "push",
            object.to_str().unwrap(),
            &format!("{}/plugins/not-wasm:1", reg.addr),
        ],
        &[],
    );
    assert_failed_cleanly(&out, "plugins/not-wasm:1", "not a WebAssembly component");
}

#[test]
fn unknown_registry_fails_fast_naming_the_reference() {
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("127.0.0.1:{}/plugins/p:1", free_port());
    let out = pull(&reference, cache.path(), &[]);
    assert_failed_cleanly(&out, &reference, "connect");
    assert_cache_empty(cache.path());
}

#[test]
fn missing_tag_and_wrong_media_type_are_named() {
    let reg = Registry::start();
    push_exec_counter(&reg, "plugins/exec-counter:1.0");
    let cache = tempfile::tempdir().unwrap();

    let missing = format!("{}/plugins/exec-counter:2.0", reg.addr);
    let out = pull(&missing, cache.path(), &[]);
    assert_failed_cleanly(&out, &missing, "manifest unknown");

    // A bpfman bytecode image is not a component, and vice versa.
    let image = format!("{}/bytecode/exec-counter:1.0", reg.addr);
    push_bytecode_image(
        &image,
        &artifact("exec_counter.bpf.o"),
        r#"{"handle_exec":"tracepoint"}"#,
        r#"{"events":"ringbuf"}"#,
    );
    let out = pull(&image, cache.path(), &[]);
    assert_failed_cleanly(
        &out,
        &image,
        "config media type is application/vnd.oci.image.config.v1+json, expected application/vnd.wasm.config.v0+json",
    );
    let component = format!("{}/plugins/exec-counter:1.0", reg.addr);
    let out = pull(&component, cache.path(), &["--bytecode"]);
    assert_failed_cleanly(&out, &component, "layer media type is application/wasm");
    assert_cache_empty(cache.path());

    // The bytecode image itself pulls, and yields the object.
    let object = cache.path().join("x.o");
    let out = pull(
        &image,
        cache.path(),
        &["--bytecode", "--output", object.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&object).unwrap(),
        std::fs::read(artifact("exec_counter.bpf.o")).unwrap()
    );
}

#[test]
fn a_layer_that_is_not_a_component_is_refused() {
    let reg = Registry::start();
    let reference = format!("{}/plugins/garbage:1", reg.addr);
    push_raw_wasm_artifact(&reference, b"\0asm\x01\0\0\0 a core module".to_vec());
    let cache = tempfile::tempdir().unwrap();
    let out = pull(&reference, cache.path(), &[]);
    assert_failed_cleanly(&out, &reference, "core wasm module");
    let list = conductor(
        &[
            "cache",
            "list",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(stdout(&list), "", "a refused artifact is not referenced");
}

#[test]
fn a_component_of_another_world_is_refused_naming_the_reference() {
    let reg = Registry::start();
    let reference = format!("oci://{}/plugins/wrong-world:1", reg.addr);
    push_raw_wasm_artifact(
        &reference["oci://".len()..],
        std::fs::read(artifact("testing_wrong_world.wasm")).unwrap(),
    );
    let (status, log) = run_to_exit(&format!("name: x\ncomponent: {reference}\n"));
    assert!(!status.success());
    assert!(log.contains(&format!("(component {reference})")), "{log}");
    let supported = format!("supports {}", conductor_api::wit::supported_ranges());
    assert!(log.contains(&supported), "{log}");
}

#[test]
fn digest_mismatch_is_detected_and_nothing_is_cached() {
    let reg = Registry::start();
    push_exec_counter(&reg, "plugins/exec-counter:1.0");
    let digest = sha256(&std::fs::read(artifact("exec_counter.wasm")).unwrap());
    // Corrupt the blob in the registry's storage, keeping its size.
    let file = reg.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let reference = format!("{}/plugins/exec-counter:1.0", reg.addr);
    let out = pull(&reference, cache.path(), &[]);
    assert_failed_cleanly(&out, &reference, "digest");
    assert_cache_empty(cache.path());
}

#[test]
fn truncated_download_and_stalled_registry_leave_the_cache_consistent() {
    let reg = Registry::start();
    push_exec_counter(&reg, "plugins/exec-counter:1.0");
    let wasm_len = std::fs::metadata(artifact("exec_counter.wasm"))
        .unwrap()
        .len() as usize;
    // Manifest and config responses are a few KiB; the layer is larger.
    assert!(
        wasm_len > 64 * 1024,
        "exec_counter.wasm is only {wasm_len} bytes"
    );
    let cache = tempfile::tempdir().unwrap();

    let cut = Proxy::start(&reg.addr, 32 * 1024, Fault::Cut);
    let reference = format!("{}/plugins/exec-counter:1.0", cut.addr);
    let out = pull(&reference, cache.path(), &[]);
    assert_failed_cleanly(&out, &reference, "download");
    assert_cache_empty(cache.path());

    let stalled = Proxy::start(&reg.addr, 32 * 1024, Fault::Stall);
    let reference = format!("{}/plugins/exec-counter:1.0", stalled.addr);
    let out = pull(&reference, cache.path(), &[]);
    assert_failed_cleanly(&out, &reference, "timed out");
    assert_cache_empty(cache.path());

    // Through a healthy path, the same cache then fills normally.
    let out = pull(
        &format!("{}/plugins/exec-counter:1.0", reg.addr),
        cache.path(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cached_blobs(cache.path()).len(), 1);
}

#[test]
fn registry_auth_from_flags_env_and_docker_config() {
    let reg = Registry::start_with_user("plugin-author", "s3cret");
    let wasm = artifact("exec_counter.wasm");
    let reference = format!("{}/plugins/exec-counter:1.0", reg.addr);

    let out = conductor(&["push", wasm.to_str().unwrap(), &reference], &[]);
    assert_failed_cleanly(&out, &reference, "not authorized");
    let out = conductor(
        &[
            "push",
            wasm.to_str().unwrap(),
            &reference,
            "--username",
            "plugin-author",
            "--password",
            "wrong",
        ],
        &[],
    );
    assert_failed_cleanly(&out, &reference, "not authorized");

    let env = [
        ("CONDUCTOR_REGISTRY_USERNAME", "plugin-author"),
        ("CONDUCTOR_REGISTRY_PASSWORD", "s3cret"),
    ];
    let out = conductor(&["push", wasm.to_str().unwrap(), &reference], &env);
    assert!(out.status.success(), "{}", stderr(&out));

    // docker login's file: auths.<registry>.auth = base64(user:password).
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.addr,
            base64_encode(b"plugin-author:s3cret")
        ),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = conductor(
        &[
            "pull",
            &reference,
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn pull_policy_never_uses_only_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("oci://127.0.0.1:{}/plugins/p:1", free_port());
    let spec = format!("name: p\ncomponent: {reference}\npullPolicy: Never\n");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = conductor(
        &[
            "run",
            spec_path.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_failed_cleanly(&out, "plugins/p:1", "not in the local cache");
}

fn registry_spec(addr: &str) -> String {
    format!(
        r#"
name: exec-counter
component: oci://{addr}/plugins/exec-counter:1.0
bytecode:
  image: oci://{addr}/bytecode/exec-counter:1.0
  programs:
    - name: handle_exec
      tracepoint: sched/sched_process_exec
maps:
  - name: events
    events: {{maxBatch: 64}}
"#
    )
}

fn count_execs(host: &Host, prefix: &str) {
    let bin = UniqueBinary::new(prefix);
    const N: usize = 10;
    bin.run(N);
    let series = format!(
        r#"exec_counter__execs_total{{plugin="exec-counter",comm="{}",namespace="",pod="",container=""}}"#,
        bin.comm
    );
    let count = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(count, N as f64);
}

#[test]
fn runs_the_real_plugin_from_the_registry_then_from_cache_without_it() {
    if !require_root() {
        return;
    }
    let mut reg = Registry::start();
    push_exec_counter(&reg, "plugins/exec-counter:1.0");
    push_bytecode_image(
        &format!("{}/bytecode/exec-counter:1.0", reg.addr),
        &artifact("exec_counter.bpf.o"),
        r#"{"handle_exec":"tracepoint"}"#,
        r#"{"events":"ringbuf","events_lost":"array"}"#,
    );
    let cache = tempfile::tempdir().unwrap();
    let spec = registry_spec(&reg.addr);

    let mut first = Host::start_with_cache(&spec, Some(cache.path()));
    for what in ["component resolved", "bytecode resolved"] {
        let line = first.wait_for_log(what, Duration::from_secs(5)).unwrap();
        assert!(line.contains("from_cache=false"), "{line}");
    }
    count_execs(&first, "cndtroci");
    // The registry going away does not disturb a running plugin.
    reg.stop();
    count_execs(&first, "cndtroc2");
    assert!(first.stop().success());

    // A restart pulls nothing and compiles nothing.
    let mut second = Host::start_with_cache(&spec, Some(cache.path()));
    for what in ["component resolved", "bytecode resolved", "plugin running"] {
        let line = second.wait_for_log(what, Duration::from_secs(5)).unwrap();
        assert!(line.contains("from_cache=true"), "{line}");
    }
    count_execs(&second, "cndtroc3");
    assert!(second.stop().success());
}

#[test]
fn bytecode_image_must_declare_the_attached_programs() {
    let reg = Registry::start();
    push_exec_counter(&reg, "plugins/exec-counter:1.0");
    push_bytecode_image(
        &format!("{}/bytecode/exec-counter:1.0", reg.addr),
        &artifact("exec_counter.bpf.o"),
        r#"{"other_prog":"kprobe"}"#,
        "{}",
    );
    let (status, log) = run_to_exit(&registry_spec(&reg.addr));
    assert!(!status.success());
    assert!(
        log.contains("program \"handle_exec\" is not declared in its io.ebpf.programs label"),
        "{log}"
    );
    assert!(log.contains("bytecode/exec-counter:1.0"), "{log}");
}
