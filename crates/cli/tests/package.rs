//! Plugin packages against a real registry (Debian's docker-registry) on
//! loopback: `conductor push --package` writes one OCI artifact; `run`
//! runs it by reference (no spec file, or a spec with overrides) and the
//! real kernel counts real execs; `packages` and `show`; and signatures:
//! keys made here, signed, unsigned, wrong-key, disallowed and tampered
//! packages, each refused naming the reference and the reason, with nothing
//! left in the cache.

use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_test_support::registry::*;
use conductor_test_support::*;

const PACKAGE_YAML: &str = r#"
description: Counts exec() calls by command and workload.
source: https://github.com/ebpfconductor/ebpfconductor
license: Apache-2.0
version: 1.0.0
configKeys:
  - name: ignore
    description: Commands (comm) not counted, comma-separated.
    default: ""
spec:
  name: exec-counter
  component: exec_counter.wasm
  bytecode:
    path: exec_counter.bpf.o
    programs:
      - name: handle_exec
        tracepoint: sched/sched_process_exec
  maps:
    - name: events
      events: {maxBatch: 64}
  limits: {memoryMib: 48}
"#;

/// A package directory of the real exec-counter artifacts.
fn package_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["exec_counter.wasm", "exec_counter.bpf.o"] {
        std::fs::copy(artifact(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("package.yaml"), PACKAGE_YAML).unwrap();
    dir
}

fn push_package(reg: &Registry, repo_tag: &str) -> String {
    let dir = package_dir();
    registry::push_package(reg, dir.path(), repo_tag).1
}

fn cache_arg(cache: &Path) -> [&str; 2] {
    ["--cache-dir", cache.to_str().unwrap()]
}

fn count_execs(host: &Host, plugin: &str, prefix: &str) -> String {
    let bin = UniqueBinary::new(prefix);
    const N: usize = 5;
    bin.run(N);
    let series = format!(
        r#"{}__execs_total{{plugin="{plugin}",comm="{}",namespace="",pod="",container=""}}"#,
        plugin.replace('-', "_"),
        bin.comm
    );
    let count = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(count, N as f64);
    bin.comm.clone()
}

#[test]
fn a_package_is_one_oci_artifact_with_standard_media_types() {
    let reg = Registry::start();
    let digest = push_package(&reg, "pkgs/exec-counter:1.0");
    let m = reg.manifest("pkgs/exec-counter", "1.0");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.ebpfconductor.plugin.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.ebpfconductor.plugin.config.v1+json"
    );
    let layers = m["layers"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = layers
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap(),
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("application/wasm", "exec_counter.wasm"),
            (
                "application/vnd.ebpfconductor.bpf.object.v1",
                "exec_counter.bpf.o"
            )
        ]
    );
    let a = &m["annotations"];
    assert_eq!(a["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(a["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(a["org.opencontainers.image.title"], "exec-counter");
    // The config is the package manifest: default spec and metadata.
    let config: serde_json::Value = serde_json::from_slice(
        &reg.blob("pkgs/exec-counter", m["config"]["digest"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(config["spec"]["component"], "exec_counter.wasm");
    assert_eq!(config["witVersion"], conductor_api::wit::CURRENT);
    assert_eq!(config["configKeys"][0]["name"], "ignore");
    // The printed digest is the manifest's.
    let body = ureq::get(&format!(
        "http://{}/v2/pkgs/exec-counter/manifests/1.0",
        reg.addr
    ))
    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
    .call()
    .unwrap()
    .body_mut()
    .read_to_vec()
    .unwrap();
    assert_eq!(
        digest,
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
        )
    );
}

#[test]
fn packages_and_show_describe_the_cached_package() {
    let reg = Registry::start();
    let digest = push_package(&reg, "pkgs/exec-counter:1.0");
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("oci://{}/pkgs/exec-counter:1.0", reg.addr);
    let out = conductor(
        &[&["pull", &reference][..], &cache_arg(cache.path())].concat(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let no_daemon = cache.path().join("no-daemon.sock");
    let packages = |format: &str| {
        let out = conductor(
            &[
                &[
                    "packages",
                    "-o",
                    format,
                    "--socket",
                    no_daemon.to_str().unwrap(),
                ][..],
                &cache_arg(cache.path()),
            ]
            .concat(),
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let table = packages("table");
    let row = table
        .lines()
        .find(|l| l.contains("pkgs/exec-counter:1.0"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&digest[..19]), "{row}");
    assert!(row.contains("unverified"), "{row}");
    assert!(row.contains("unknown (no daemon)"), "{row}");
    let json: serde_json::Value = serde_json::from_str(&packages("json")).unwrap();
    let p = &json[0];
    assert_eq!(p["digest"], digest.as_str());
    let size = std::fs::metadata(artifact("exec_counter.wasm"))
        .unwrap()
        .len()
        + std::fs::metadata(artifact("exec_counter.bpf.o"))
            .unwrap()
            .len();
    assert_eq!(p["size"], size);
    assert_eq!(p["signature"]["status"], "unverified");
    assert!(p["usedBy"].is_null(), "{p}");

    let out = conductor(
        &[&["show", &reference][..], &cache_arg(cache.path())].concat(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "handle_exec\ttracepoint=sched/sched_process_exec",
        "events\tRead\tevents",
        "ignore\t(default \"\")\tCommands (comm) not counted",
        &format!("WIT version: {}", conductor_api::wit::CURRENT),
        "Source:      https://github.com/ebpfconductor/ebpfconductor",
        "Signature:   unverified",
        "exec_counter.bpf.o\tapplication/vnd.ebpfconductor.bpf.object.v1",
    ] {
        assert!(text.contains(want), "show lacks {want:?}:\n{text}");
    }
    let out = conductor(
        &[
            &["show", &reference, "-o", "json"][..],
            &cache_arg(cache.path()),
        ]
        .concat(),
        &[],
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["package"]["spec"]["maps"][0]["name"], "events");
    assert_eq!(json["digest"], digest.as_str());
}

#[test]
fn runs_a_package_by_reference_then_with_overrides() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    push_package(&reg, "pkgs/exec-counter:1.0");
    let reference = format!("oci://{}/pkgs/exec-counter:1.0", reg.addr);

    // No spec file: the package's default spec, named after the repository.
    let mut host = Host::start_package(&reference, None, &[]);
    let line = host
        .wait_for_log("package resolved", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("from_cache=false"), "{line}");
    count_execs(&host, "exec-counter", "cndtrpk1");
    assert!(host.stop().success());

    // A spec naming the package overrides its config and limits.
    let ignored = UniqueBinary::new("cndtrpkx");
    let spec = format!(
        "name: execs\ncomponent: {reference}\nconfig: {{ignore: {}}}\nlimits: {{memoryMib: 96}}\n",
        ignored.comm
    );
    let host = Host::start(&spec);
    ignored.run(3);
    // Events arrive in order: once the later binary is counted, the
    // ignored one's execs were seen and dropped.
    count_execs(&host, "execs", "cndtrpk2");
    let text = host.scrape();
    assert!(
        !text.contains(&format!("comm=\"{}\"", ignored.comm)),
        "the ignore override was not applied:\n{text}"
    );
    assert!(host.stop().success());
}

struct Keys {
    _dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

/// A cosign-format key pair made by `conductor generate-key-pair`.
fn keys(name: &str) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join(name);
    let out = conductor(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        &[("COSIGN_PASSWORD", "test-password")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    Keys {
        key: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
        _dir: dir,
    }
}

fn sign(reference: &str, keys: &Keys) {
    let out = conductor(
        &["sign", reference, "--key", keys.key.to_str().unwrap()],
        &[("COSIGN_PASSWORD", "test-password")],
    );
    assert!(out.status.success(), "sign failed: {}", stderr(&out));
    assert!(stdout(&out).contains("signed oci://"), "{}", stdout(&out));
}

/// `pull` under policy `required` trusting `trusted`, plus `extra` flags.
fn pull_required(
    reference: &str,
    cache: &Path,
    trusted: &Keys,
    extra: &[&str],
) -> std::process::Output {
    let args = [
        &[
            "pull",
            reference,
            "--signature-policy",
            "required",
            "--trusted-key",
            trusted.public.to_str().unwrap(),
        ][..],
        &cache_arg(cache),
        extra,
    ]
    .concat();
    conductor(&args, &[])
}

fn assert_refused(out: &std::process::Output, reference: &str, reason: &str, cache: &Path) {
    assert!(!out.status.success(), "expected refusal:\n{}", stdout(out));
    let err = stderr(out);
    let reference = reference.trim_start_matches("oci://");
    assert!(
        err.contains(reference),
        "error does not name {reference}:\n{err}"
    );
    assert!(
        err.contains(reason),
        "error does not say {reason:?}:\n{err}"
    );
    let listed = conductor(&[&["cache", "list"][..], &cache_arg(cache)].concat(), &[]);
    assert!(
        !stdout(&listed).contains(reference.trim_start_matches("oci://")),
        "a refused reference is in the cache:\n{}",
        stdout(&listed)
    );
}

#[test]
fn signatures_are_verified_before_anything_is_downloaded() {
    let reg = Registry::start();
    let alice = keys("alice");
    let mallory = keys("mallory");
    let signed = format!("oci://{}/pkgs/signed:1.0", reg.addr);
    let unsigned = format!("oci://{}/pkgs/unsigned:1.0", reg.addr);
    push_package(&reg, "pkgs/signed:1.0");
    push_package(&reg, "pkgs/unsigned:1.0");
    sign(&signed, &alice);

    // Signed by a trusted key: pulled, and the signer is recorded.
    let cache = tempfile::tempdir().unwrap();
    let out = pull_required(&signed, cache.path(), &alice, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = conductor(
        &[
            &["packages", "-o", "json", "--socket", "/nonexistent.sock"][..],
            &cache_arg(cache.path()),
        ]
        .concat(),
        &[],
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["signature"]["status"], "verified", "{json}");
    assert!(
        json[0]["signature"]["signer"]
            .as_str()
            .unwrap()
            .starts_with("alice.pub (sha256:"),
        "{json}"
    );

    // Each refusal names the reference and the reason; nothing is cached.
    let empty = tempfile::tempdir().unwrap();
    let out = pull_required(&signed, empty.path(), &mallory, &[]);
    assert_refused(&out, &signed, "not by any trusted key", empty.path());
    let out = pull_required(&unsigned, empty.path(), &alice, &[]);
    assert_refused(
        &out,
        &unsigned,
        "unsigned: no signature at tag sha256-",
        empty.path(),
    );
    let allowed = format!("{}/pkgs/other/", reg.addr);
    let out = pull_required(
        &signed,
        empty.path(),
        &alice,
        &["--allowed-reference", &allowed],
    );
    assert_refused(&out, &signed, "not on the allowed list", empty.path());
    assert!(
        cached_blobs(empty.path()).is_empty(),
        "{:?}",
        cached_blobs(empty.path())
    );

    // A run under `required` refuses before compiling or loading anything.
    let out = conductor(
        &[
            &[
                "run",
                &unsigned,
                "--metrics-addr",
                "127.0.0.1:0",
                "--signature-policy",
                "required",
                "--trusted-key",
                alice.public.to_str().unwrap(),
            ][..],
            &cache_arg(empty.path()),
        ]
        .concat(),
        &[],
    );
    assert_refused(&out, &unsigned, "refused by the trust policy", empty.path());

    // `required` with no key is a configuration error, said so.
    let out = conductor(
        &[
            &["pull", &signed, "--signature-policy", "required"][..],
            &cache_arg(empty.path()),
        ]
        .concat(),
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--trusted-key"), "{}", stderr(&out));
}

#[test]
fn a_tampered_layer_or_a_moved_tag_is_refused() {
    let reg = Registry::start();
    let alice = keys("alice");
    let reference = format!("oci://{}/pkgs/tampered:1.0", reg.addr);
    push_package(&reg, "pkgs/tampered:1.0");
    sign(&reference, &alice);

    // The registry's copy of the BPF object is changed after signing: the
    // manifest (and its signature) still verify, the layer does not.
    let m = reg.manifest("pkgs/tampered", "1.0");
    let object_digest = m["layers"][1]["digest"].as_str().unwrap().to_owned();
    let file = reg.blob_file(&object_digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = pull_required(&reference, cache.path(), &alice, &[]);
    // oci-client checks the digest as the layer streams in (then so do we).
    assert_refused(&out, "pkgs/tampered:1.0", "Invalid digest", cache.path());
    let bpf = cached_blobs(cache.path());
    assert!(
        !bpf.iter().any(|b| object_digest.ends_with(b.as_str())),
        "the tampered layer was cached: {bpf:?}"
    );

    // The tag is moved to other (unsigned) content: refused as unsigned.
    let dir = package_dir();
    let yaml = PACKAGE_YAML.replace("version: 1.0.0", "version: 6.6.6");
    std::fs::write(dir.path().join("package.yaml"), yaml).unwrap();
    let out = conductor(
        &[
            "push",
            "--package",
            dir.path().to_str().unwrap(),
            &reference,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pull_required(&reference, cache.path(), &alice, &[]);
    assert_refused(&out, "pkgs/tampered:1.0", "unsigned", cache.path());
}
