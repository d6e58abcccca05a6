//! The SDK packages on its own: the WIT it is built from is inside the
//! crate. (`cargo package --list` reads the manifest only: no build.)

use std::process::Command;

#[test]
fn the_package_carries_its_wit() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "package",
            "--allow-dirty",
            "--no-verify",
            "--list",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("cannot run cargo package");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo package failed:\n{stderr}");
    let files: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let wit_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/wit");
    let mut expected = Vec::new();
    for version in std::fs::read_dir(wit_dir).unwrap() {
        let version = version.unwrap();
        for file in std::fs::read_dir(version.path()).unwrap() {
            expected.push(format!(
                "wit/{}/{}",
                version.file_name().to_string_lossy(),
                file.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    assert!(
        expected.iter().any(|f| f.ends_with("/world.wit")),
        "{expected:?}"
    );
    for file in expected
        .iter()
        .map(String::as_str)
        .chain(["README.md", "src/lib.rs"])
    {
        assert!(files.contains(&file), "{file} is not packaged: {files:?}");
    }
    // Nothing from outside the crate: it would not be in the package.
    assert!(
        !include_str!("../src/lib.rs").contains("path: \"../"),
        "the bindings must be generated from inside the crate"
    );
}
