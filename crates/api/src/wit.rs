//! Which versions of the WIT contract (`conductor:plugin`) this host links.
//!
//! The one place the version is written down in Rust: the runtime's
//! bindings, the OCI artifact checks and the error messages read it from
//! here, and a test in the runtime checks it against the WIT folders.
//! The policy is in docs/src/wit.md.

/// The WIT package name.
pub const PACKAGE: &str = "conductor:plugin";

/// The newest version: what the SDK builds against.
pub const CURRENT: &str = "0.1.0";

/// Every version a component may be built against, newest first. Each
/// stands for its semver-compatible range: for 0.x, the same minor.
pub const SUPPORTED: &[&str] = &[CURRENT];

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

/// `conductor:plugin@0.1.x` (and the others supported), for messages.
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
    }
}
