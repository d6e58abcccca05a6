//! Where a plugin is in its life: the one phase type of the host's
//! manager, the node API, the CLI and the operator's node state.

use crate::v1;

/// The phase of a plugin on a node: the host's phases, plus `Unknown` when
/// the host cannot be reached.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Phase {
    /// Accepted, waiting for its turn; or loaded, waiting for the bpfman
    /// program its maps come from (`bpfmanProgram`) to be loaded again.
    #[default]
    Pending,
    /// Fetching its component or bytecode from a registry.
    Pulling,
    /// Compiling, verifying, attaching, initialising.
    Loading,
    /// Its instance runs on events.
    Running,
    /// Faulted; a new instance starts after a backoff.
    Restarting,
    /// Faulted three times in a row or more, without running well in
    /// between; a new instance starts after a backoff (status: next retry).
    CrashLoopBackOff,
    /// Could not be loaded; the last error says why.
    Failed,
    /// Stopped (being unloaded).
    Stopped,
    /// Not known: the host could not be reached, or answered a phase this
    /// version does not know.
    Unknown,
}

impl Phase {
    /// The name people and the CRD read: `Running`, `Failed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Pulling => "Pulling",
            Self::Loading => "Loading",
            Self::Running => "Running",
            Self::Restarting => "Restarting",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
            Self::Unknown => "Unknown",
        }
    }

    /// The phase of a `conductor.v1` message's `phase` field.
    pub fn from_wire(phase: i32) -> Self {
        v1::Phase::try_from(phase).map_or(Self::Unknown, Self::from)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<v1::Phase> for Phase {
    fn from(p: v1::Phase) -> Self {
        match p {
            v1::Phase::Unspecified => Self::Unknown,
            v1::Phase::Pending => Self::Pending,
            v1::Phase::Pulling => Self::Pulling,
            v1::Phase::Loading => Self::Loading,
            v1::Phase::Running => Self::Running,
            v1::Phase::Restarting => Self::Restarting,
            v1::Phase::CrashLoopBackOff => Self::CrashLoopBackOff,
            v1::Phase::Failed => Self::Failed,
            v1::Phase::Stopped => Self::Stopped,
        }
    }
}

impl From<Phase> for v1::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Unknown => Self::Unspecified,
            Phase::Pending => Self::Pending,
            Phase::Pulling => Self::Pulling,
            Phase::Loading => Self::Loading,
            Phase::Running => Self::Running,
            Phase::Restarting => Self::Restarting,
            Phase::CrashLoopBackOff => Self::CrashLoopBackOff,
            Phase::Failed => Self::Failed,
            Phase::Stopped => Self::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_survives_the_wire_and_unknown_values_read_as_unknown() {
        for p in [
            Phase::Pending,
            Phase::Pulling,
            Phase::Loading,
            Phase::Running,
            Phase::Restarting,
            Phase::CrashLoopBackOff,
            Phase::Failed,
            Phase::Stopped,
            Phase::Unknown,
        ] {
            assert_eq!(Phase::from_wire(v1::Phase::from(p) as i32), p);
            // The name is the variant's, as serde and the CRD spell it.
            assert_eq!(serde_yaml_ng::to_string(&p).unwrap().trim(), p.as_str());
        }
        assert_eq!(Phase::from_wire(99), Phase::Unknown);
    }
}
