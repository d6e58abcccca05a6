//! Which versions of the WIT contract (`conductor:plugin`) this host links.
//!
//! The one place the version is written down in Rust: the runtime's
//! bindings, the OCI artifact checks and the error messages read it from
//! here, and a test in the runtime checks it against the WIT folders.
//! The policy is in docs/src/wit.md.

/// The WIT package name.
pub const PACKAGE: &str = "conductor:plugin";

/// The newest version: what the SDK builds against, `crates/sdk/wit/v<CURRENT>/`.
pub const CURRENT: &str = "0.2.1";

/// Every version a component may be built against, newest first, each with
/// its folder `crates/sdk/wit/v<version>/`. Each stands for its
/// semver-compatible range: for 0.x, the same minor. Older patch releases
/// of a listed range keep their frozen folders too (`v0.2.0/`): the host
/// serves them through the newest of their range.
pub const SUPPORTED: &[&str] = &[CURRENT, "0.1.0"];

/// The semver-compatible range of `version` as people read it: `0.1.x`.
pub fn range(version: &str) -> String {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}.x"),
        (Some(major), _) => format!("{major}.x"),
        _ => version.to_owned(),
    }
}

/// True if a component built against `version` links here: its range is
/// one of [`SUPPORTED`]'s.
pub fn is_supported(version: &str) -> bool {
    let r = range(version);
    SUPPORTED.iter().any(|s| range(s) == r)
}

/// The version in an import or export name of the package,
/// `conductor:plugin/log@0.1.0` -> `Some("0.1.0")`; `Some("")` for an
/// unversioned name of the package, `None` for other packages' names.
pub fn version_in_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PACKAGE)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('@')) {
        return None; // `conductor:plugins/...`: another package
    }
    Some(rest.split_once('@').map_or("", |(_, v)| v))
}

/// `conductor:plugin@0.2.x, conductor:plugin@0.1.x`: the supported
/// ranges, newest first, for messages.
pub fn supported_ranges() -> String {
    SUPPORTED
        .iter()
        .map(|v| format!("{PACKAGE}@{}", range(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_semver_for_zero_versions() {
        assert_eq!(range("0.1.0"), "0.1.x");
        assert_eq!(range("0.1.7"), "0.1.x");
        assert_eq!(range("1.2.3"), "1.x");
        assert!(is_supported(CURRENT));
        let (major_minor, _) = CURRENT.rsplit_once('.').unwrap();
        assert!(is_supported(&format!("{major_minor}.42")));
        assert!(!is_supported("0.999.0"));
        assert!(supported_ranges().contains(&format!("{PACKAGE}@{}", range(CURRENT))));
        assert!(is_supported("0.1.3"));
        assert_eq!(
            supported_ranges(),
            "conductor:plugin@0.2.x, conductor:plugin@0.1.x"
        );
    }

    #[test]
    fn versions_are_read_from_import_names() {
        assert_eq!(version_in_name("conductor:plugin/log@0.1.0"), Some("0.1.0"));
        assert_eq!(
            version_in_name("conductor:plugin/plugin@0.2.1"),
            Some("0.2.1")
        );
        assert_eq!(version_in_name("conductor:plugin/log"), Some(""));
        assert_eq!(version_in_name("conductor:plugins/log@1.0.0"), None);
        assert_eq!(version_in_name("wasi:io/streams@0.2.0"), None);
    }

    #[test]
    fn supported_versions_are_distinct_ranges_newest_first() {
        assert_eq!(SUPPORTED.first(), Some(&CURRENT));
        let ranges: Vec<String> = SUPPORTED.iter().map(|v| range(v)).collect();
        let mut dedup = ranges.clone();
        dedup.dedup();
        assert_eq!(ranges, dedup, "two supported versions share a range");
    }
}
