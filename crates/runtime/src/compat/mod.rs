//! Older versions of the WIT contract, still linked: one module per
//! supported version other than [`conductor_api::wit::CURRENT`], each with
//! its own bindings over its frozen folder in `crates/sdk/wit/` and host
//! traits that forward to the current implementation (see docs/src/wit.md).

pub mod v0_1;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use conductor_api::wit;

    fn wit_root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/wit"))
    }

    fn semver(v: &str) -> Vec<u64> {
        v.split('.').map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn supported_versions_are_the_wit_folders_and_their_package_lines() {
        let mut folders = BTreeSet::new();
        for entry in std::fs::read_dir(wit_root()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(
                entry.file_type().unwrap().is_dir(),
                "{name}: crates/sdk/wit/ holds only version folders"
            );
            let version = name
                .strip_prefix('v')
                .unwrap_or_else(|| panic!("folder {name} is not v<version>"));
            let want = format!("package {}@{version};", wit::PACKAGE);
            let mut files = 0;
            for file in std::fs::read_dir(entry.path()).unwrap() {
                let path = file.unwrap().path();
                assert_eq!(path.extension().unwrap(), "wit", "{}", path.display());
                let text = std::fs::read_to_string(&path).unwrap();
                let packages: Vec<&str> =
                    text.lines().filter(|l| l.starts_with("package ")).collect();
                assert_eq!(packages, [want.as_str()], "{}", path.display());
                files += 1;
            }
            assert!(files > 0, "{name} is empty");
            folders.insert(version.to_owned());
        }
        // Each supported version has its folder and is the newest of its
        // range; older patch releases of a range keep frozen folders.
        for folder in &folders {
            assert!(
                wit::is_supported(folder),
                "crates/sdk/wit/v{folder} is of no range in SUPPORTED"
            );
        }
        for supported in wit::SUPPORTED {
            assert!(folders.contains(*supported), "no folder for {supported}");
            let newest_of_range = folders
                .iter()
                .filter(|f| wit::range(f) == wit::range(supported))
                .max_by_key(|v| semver(v))
                .unwrap();
            assert_eq!(
                newest_of_range, supported,
                "SUPPORTED must name the newest folder of each range"
            );
        }
        let newest = folders.iter().max_by_key(|v| semver(v)).unwrap();
        assert_eq!(newest, wit::CURRENT, "CURRENT is not the newest folder");
    }

    #[test]
    fn bindings_are_generated_from_the_current_folder() {
        // `bindgen!`/`generate!` paths must be literals: check them here.
        let folder = format!("wit/v{}\"", wit::CURRENT);
        for src in ["src/lib.rs", "../sdk/src/lib.rs"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&folder),
                "{} is not built from {folder}",
                path.display()
            );
        }
        let v0_1 = include_str!("v0_1.rs");
        assert!(v0_1.contains(&format!("wit/v{}\"", super::v0_1::VERSION)));
        assert!(wit::SUPPORTED.contains(&super::v0_1::VERSION));
    }
}
