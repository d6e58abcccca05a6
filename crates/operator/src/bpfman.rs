//! bpfman-operator's per-node state of a `ClusterBpfApplication`, for
//! EbpfPlugins that name one (`clusterBpfApplication` in the plugin spec).
//!
//! bpfman-agent writes one `ClusterBpfApplicationState` (`bpfman.io/v1alpha1`,
//! cluster-scoped) per application and node, labelled
//! `bpfman.io/ownedByProgram: <application>` and `kubernetes.io/hostname:
//! <node>`, with `status.node`, `status.appLoadStatus` (`LoadSuccess` once
//! every program is loaded there) and `status.programs[]` (`name`, the
//! function; `programId`, bpfman's id of the loaded program). The node agent
//! reads it as untyped JSON ([`DynamicObject`]): it needs four fields of a
//! large schema that bpfman-operator still changes between releases (the
//! fields moved from `spec` to `status` between releases), and a typed copy would
//! refuse objects of other releases for fields it does not use.

use conductor_api::{ClusterBpfApplicationRef, MapGrant, PluginSpec};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};

/// Where bpfman pins the maps of program `<id>`: `<MAPS_DIR>/<id>/<map>`.
pub const MAPS_DIR: &str = "/run/bpfman/fs/maps";
/// The label bpfman-agent puts the application's name in.
pub const APPLICATION_LABEL: &str = "bpfman.io/ownedByProgram";
/// The label bpfman-agent puts the node's name in.
pub const NODE_LABEL: &str = "kubernetes.io/hostname";
/// `status.appLoadStatus` once every program is loaded on the node.
pub const LOAD_SUCCESS: &str = "LoadSuccess";

/// `bpfman.io/v1alpha1` `ClusterBpfApplicationState`.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "bpfman.io".into(),
        version: "v1alpha1".into(),
        api_version: "bpfman.io/v1alpha1".into(),
        kind: "ClusterBpfApplicationState".into(),
        plural: "clusterbpfapplicationstates".into(),
    }
}

pub fn states(client: kube::Client) -> Api<DynamicObject> {
    Api::all_with(client, &api_resource())
}

/// The label selector of `node`'s states (all applications).
pub fn node_selector(node: &str) -> String {
    format!("{NODE_LABEL}={node}")
}

/// What this node's state of the application says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Loaded: the program's id in bpfman.
    Loaded { program_id: u32 },
    /// Not (yet) loaded on this node; the message says what is missing.
    Waiting(String),
}

/// Read `node`'s state of `app` from the API server.
pub async fn resolve(
    states: &Api<DynamicObject>,
    node: &str,
    app: &ClusterBpfApplicationRef,
) -> Result<Resolved, kube::Error> {
    let lp = ListParams::default().labels(&format!(
        "{APPLICATION_LABEL}={},{}",
        app.name,
        node_selector(node)
    ));
    let list = match states.list(&lp).await {
        Ok(l) => l.items,
        // bpfman-operator is not installed: its CRD is not served.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Ok(Resolved::Waiting(format!(
                "the API server serves no ClusterBpfApplicationState (bpfman.io/v1alpha1): install bpfman-operator, which loads ClusterBpfApplication {:?}",
                app.name
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(from_states(&list, node, app))
}

/// The answer of `states` (this node's states of the application, as
/// listed) for `app`.
pub fn from_states(
    states: &[DynamicObject],
    node: &str,
    app: &ClusterBpfApplicationRef,
) -> Resolved {
    let which = || match &app.program {
        Some(p) => format!("program {p:?} of ClusterBpfApplication {:?}", app.name),
        None => format!("ClusterBpfApplication {:?}", app.name),
    };
    let Some(status) = states
        .iter()
        .map(|s| &s.data["status"])
        .find(|st| st["node"].as_str().is_none_or(|n| n == node))
    else {
        return Resolved::Waiting(format!(
            "waiting for bpfman-operator to load {} on this node: no ClusterBpfApplicationState labelled {APPLICATION_LABEL}={}, {}",
            which(),
            app.name,
            node_selector(node)
        ));
    };
    let load = status["appLoadStatus"].as_str().unwrap_or("");
    if load != LOAD_SUCCESS {
        return Resolved::Waiting(format!(
            "waiting for bpfman-operator to load {} on this node: its ClusterBpfApplicationState says appLoadStatus {load:?}, not {LOAD_SUCCESS}",
            which()
        ));
    }
    let programs = status["programs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let hit = programs.iter().find(|p| {
        app.program
            .as_deref()
            .is_none_or(|want| p["name"].as_str() == Some(want))
    });
    let id = hit
        .and_then(|p| p["programId"].as_u64())
        .and_then(|id| u32::try_from(id).ok());
    match id {
        Some(program_id) => Resolved::Loaded { program_id },
        None => Resolved::Waiting(format!(
            "waiting for bpfman-operator to load {} on this node: its ClusterBpfApplicationState lists {} with no programId",
            which(),
            if hit.is_some() {
                "the program".to_owned()
            } else {
                format!(
                    "only {:?}",
                    programs
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .collect::<Vec<_>>()
                )
            }
        )),
    }
}

/// `spec` with every map grant without `pin` (and not a shared map's
/// reference) pinned at bpfman's pin of the map of that name of program
/// `program_id`: what the host is handed.
pub fn pinned(spec: &PluginSpec, program_id: u32) -> PluginSpec {
    let mut out = spec.clone();
    for MapGrant {
        name, pin, from, ..
    } in &mut out.maps
    {
        if pin.is_none() && from.is_none() {
            *pin = Some(format!("{MAPS_DIR}/{program_id}/{name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(node: &str, load: &str, programs: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new("app-node", &api_resource());
        o.data = json!({"status": {"node": node, "updateCount": 3, "appLoadStatus": load, "programs": programs}});
        o
    }

    #[test]
    fn the_named_programs_id_once_loaded_on_this_node() {
        let app = ClusterBpfApplicationRef {
            name: "execs".into(),
            program: Some("handle_exec".into()),
        };
        let progs =
            json!([{"name": "other", "programId": 5}, {"name": "handle_exec", "programId": 7}]);
        assert_eq!(
            from_states(&[state("n1", "LoadSuccess", progs.clone())], "n1", &app),
            Resolved::Loaded { program_id: 7 }
        );
        let first = ClusterBpfApplicationRef {
            program: None,
            ..app.clone()
        };
        assert_eq!(
            from_states(&[state("n1", "LoadSuccess", progs.clone())], "n1", &first),
            Resolved::Loaded { program_id: 5 }
        );
        let waiting = |r: Resolved| match r {
            Resolved::Waiting(m) => m,
            other => panic!("{other:?}"),
        };
        let m = waiting(from_states(
            &[state("n1", "NotLoaded", progs.clone())],
            "n1",
            &app,
        ));
        assert!(m.contains("NotLoaded"), "{m}");
        let m = waiting(from_states(
            &[state("n2", "LoadSuccess", progs)],
            "n1",
            &app,
        ));
        assert!(m.contains("no ClusterBpfApplicationState"), "{m}");
        let m = waiting(from_states(
            &[state("n1", "LoadSuccess", json!([{"name": "handle_exec"}]))],
            "n1",
            &app,
        ));
        assert!(m.contains("no programId"), "{m}");
    }

    #[test]
    fn grants_without_a_pin_are_pinned_under_the_program_id() {
        let spec = PluginSpec::from_yaml(
            "name: p\ncomponent: /p.wasm\nclusterBpfApplication: {name: a}\nmaps: [{name: events, events: {}}, {name: other, pin: /sys/fs/bpf/x}]\n",
        )
        .unwrap();
        let p = pinned(&spec, 42);
        assert_eq!(
            p.maps[0].pin.as_deref(),
            Some("/run/bpfman/fs/maps/42/events")
        );
        assert_eq!(p.maps[1].pin.as_deref(), Some("/sys/fs/bpf/x"));
        assert_eq!(p.cluster_bpf_application, spec.cluster_bpf_application);
    }
}
