//! What the real `kubectl` reads besides objects, served as the real API
//! server serves it: aggregated discovery (kubectl 1.32 asks `/api` and
//! `/apis` for `Accept: application/json;g=apidiscovery.k8s.io;v=v2;
//! as=APIGroupDiscoveryList,...;v=v2beta1;...,application/json` first; the
//! answer is the `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList` with
//! every group's versions and resources, in the content type asked for, so
//! kubectl needs no request per group version), legacy discovery (`/api`,
//! `/apis`, each group version's `APIResourceList`, for clients that ask
//! for plain JSON, as kube-rs does, and for per-group-version lookups),
//! OpenAPI v3 (the index
//! and each group version's document, whose PATCH operations declare the
//! `fieldValidation` parameter so that `kubectl apply` leaves validation to
//! the server, and whose schemas are the CRDs' own), and `Table` responses
//! (`Accept: ...;as=Table;g=meta.k8s.io;v=v1`) with a CRD's
//! `additionalPrinterColumns` evaluated by JSONPath as the server's CRD
//! table convertor does.
//!
//! `kubectl auth can-i` is answered from the stored RBAC objects
//! ([`Store::access_review`]).
//!
//! Discovery lists the built-in resources below and every served version of
//! every stored `CustomResourceDefinition`, so a CRD is usable the moment it
//! is created (the real server takes a moment; clients must wait for
//! `Established` there, which the fake sets at once).

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use super::{ApiError, Store, meta};

/// group, version, plural, kind, namespaced, short names
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);

/// The built-in resources the fake serves: what `deploy/` and the tests
/// use.
const BUILTIN: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, &["ns"]),
    ("", "v1", "nodes", "Node", false, &["no"]),
    ("", "v1", "pods", "Pod", true, &["po"]),
    ("", "v1", "configmaps", "ConfigMap", true, &["cm"]),
    ("", "v1", "secrets", "Secret", true, &[]),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"]),
    ("", "v1", "services", "Service", true, &["svc"]),
    ("", "v1", "events", "Event", true, &["ev"]),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"]),
    ("apps", "v1", "deployments", "Deployment", true, &["deploy"]),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, &[]),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
    ),
];

const CRDS: &str = "apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// The content type of aggregated discovery, as the real server answers it.
pub(super) const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2 (any of its
/// media ranges, parameters in any order). The real server prefers it
/// whenever it is acceptable; v2beta1 alone (clients before 1.30) gets the
/// legacy form here, where the real server would answer v2beta1.
pub(super) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| *pk == k && *pv == v);
        media == "application/json"
            && has("g", "apidiscovery.k8s.io")
            && has("v", "v2")
            && has("as", "APIGroupDiscoveryList")
    })
}
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// One served resource of one group version.
struct Resource {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
    /// A CRD's: its status subresource, printer columns and schema.
    status_subresource: bool,
    columns: Vec<Value>,
    schema: Option<Value>,
}

impl Resource {
    /// `api/v1` or `apis/<group>/<version>`.
    fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    /// Every served resource: the built-ins, then each CRD's served versions.
    fn resources(&self) -> Vec<Resource> {
        let mut all: Vec<Resource> = BUILTIN
            .iter()
            .map(
                |&(group, version, plural, kind, namespaced, short)| Resource {
                    group: group.into(),
                    version: version.into(),
                    plural: plural.into(),
                    singular: kind.to_ascii_lowercase(),
                    kind: kind.into(),
                    namespaced,
                    short_names: short.iter().map(|s| s.to_string()).collect(),
                    categories: Vec::new(),
                    status_subresource: false,
                    columns: Vec::new(),
                    schema: None,
                },
            )
            .collect();
        for ((coll, _, _), crd) in &self.objects {
            if coll != CRDS {
                continue;
            }
            let spec = &crd["spec"];
            let names = &spec["names"];
            let (Some(group), Some(plural), Some(kind)) = (
                spec["group"].as_str(),
                names["plural"].as_str(),
                names["kind"].as_str(),
            ) else {
                continue;
            };
            for version in spec["versions"].as_array().into_iter().flatten() {
                if version["served"] == false {
                    continue;
                }
                let Some(name) = version["name"].as_str() else {
                    continue;
                };
                all.push(Resource {
                    group: group.into(),
                    version: name.into(),
                    plural: plural.into(),
                    singular: names["singular"]
                        .as_str()
                        .map_or_else(|| kind.to_ascii_lowercase(), str::to_owned),
                    kind: kind.into(),
                    namespaced: spec["scope"] == "Namespaced",
                    short_names: strings(&names["shortNames"]),
                    categories: strings(&names["categories"]),
                    status_subresource: version["subresources"]["status"].is_object(),
                    columns: version["additionalPrinterColumns"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                    schema: version["schema"]["openAPIV3Schema"]
                        .as_object()
                        .map(|s| Value::Object(s.clone())),
                });
            }
        }
        all
    }

    /// `GET /api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`, `/openapi/v3...`,
    /// `/version`; `None` for any other path.
    pub(super) fn discovery(&self, path: &str, host: &str) -> Option<Result<Value, ApiError>> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let resources = self.resources();
        Some(match segs.as_slice() {
            ["version"] => Ok(json!({
                "major": "1", "minor": "32", "gitVersion": "v1.32.0-fake-apiserver",
                "platform": "linux/amd64",
            })),
            ["api"] => Ok(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            })),
            ["apis"] => {
                let mut groups: Vec<(String, Vec<String>)> = Vec::new();
                for r in resources.iter().filter(|r| !r.group.is_empty()) {
                    match groups.iter_mut().find(|(g, _)| *g == r.group) {
                        Some((_, versions)) if !versions.contains(&r.version) => {
                            versions.push(r.version.clone())
                        }
                        Some(_) => {}
                        None => groups.push((r.group.clone(), vec![r.version.clone()])),
                    }
                }
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(g, versions)| {
                        let gv =
                            |v: &String| json!({"groupVersion": format!("{g}/{v}"), "version": v});
                        json!({
                            "name": g,
                            "versions": versions.iter().map(gv).collect::<Vec<_>>(),
                            "preferredVersion": gv(&versions[0]),
                        })
                    })
                    .collect();
                Ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            ["api", v] => Ok(resource_list(&resources, "", v)),
            ["apis", g, v] => {
                if resources.iter().any(|r| r.group == *g && r.version == *v) {
                    Ok(resource_list(&resources, g, v))
                } else {
                    Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("the server could not find the requested resource ({path})"),
                    ))
                }
            }
            ["openapi", "v3"] => {
                let mut paths = serde_json::Map::new();
                for r in &resources {
                    paths.insert(
                        r.prefix(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={:016X}", r.prefix(), self.crd_version())}),
                    );
                }
                Ok(json!({"paths": paths}))
            }
            ["openapi", "v3", rest @ ..] => {
                let prefix = rest.join("/");
                let served: Vec<&Resource> =
                    resources.iter().filter(|r| r.prefix() == prefix).collect();
                if served.is_empty() {
                    Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("no OpenAPI document for {prefix}"),
                    ))
                } else {
                    Ok(openapi_document(&served))
                }
            }
            _ => return None,
        })
    }

    /// `GET /api` or `/apis` as aggregated discovery
    /// (`apidiscovery.k8s.io/v2`): the core group, or every named group
    /// with its versions (preferred first) and each version's resources and
    /// subresources. `None` for any other path.
    pub(super) fn aggregated_discovery(&self, path: &str) -> Option<Value> {
        let legacy = match path.trim_matches('/') {
            "api" => true,
            "apis" => false,
            _ => return None,
        };
        let resources = self.resources();
        // group → versions in first-seen order (the legacy `/apis` order).
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in resources.iter().filter(|r| r.group.is_empty() == legacy) {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => {
                    versions.push(r.version.clone())
                }
                Some(_) => {}
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        let items: Vec<Value> = groups
            .iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|version| {
                        let list: Vec<Value> = resources
                            .iter()
                            .filter(|r| &r.group == group && &r.version == version)
                            .map(|r| {
                                let kind =
                                    json!({"group": r.group, "version": r.version, "kind": r.kind});
                                let mut d = json!({
                                    "resource": r.plural,
                                    "responseKind": kind,
                                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": r.singular,
                                    "verbs": VERBS,
                                });
                                if !r.short_names.is_empty() {
                                    d["shortNames"] = json!(r.short_names);
                                }
                                if !r.categories.is_empty() {
                                    d["categories"] = json!(r.categories);
                                }
                                if r.status_subresource {
                                    d["subresources"] = json!([{
                                        "subresource": "status",
                                        "responseKind": kind,
                                        "verbs": ["get", "patch", "update"],
                                    }]);
                                }
                                d
                            })
                            .collect();
                        json!({"version": version, "resources": list, "freshness": "Current"})
                    })
                    .collect();
                let metadata = if group.is_empty() {
                    json!({"creationTimestamp": null})
                } else {
                    json!({"name": group, "creationTimestamp": null})
                };
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        Some(json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }))
    }

    /// Changes whenever a CRD does (the OpenAPI index's `hash`).
    fn crd_version(&self) -> u64 {
        self.objects
            .iter()
            .filter(|((c, _, _), _)| c == CRDS)
            .filter_map(|(_, o)| meta(o)["resourceVersion"].as_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// The resource a collection path (`apis/g/v/plural`) serves.
    fn resource_of(&self, collection: &str) -> Option<Resource> {
        self.resources()
            .into_iter()
            .find(|r| format!("{}/{}", r.prefix(), r.plural) == collection)
    }

    /// A list or object as a `meta.k8s.io/v1` `Table`: the CRD's printer
    /// columns (after `Name`), else `Name` and `Created At`, as the server's
    /// default table convertor.
    pub(super) fn table(&self, collection: &str, list_or_object: &Value) -> Value {
        let columns = self
            .resource_of(collection)
            .map(|r| r.columns)
            .unwrap_or_default();
        let mut definitions = vec![json!({
            "name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        })];
        let columns = if columns.is_empty() {
            vec![json!({
                "name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
            })]
        } else {
            columns
        };
        for c in &columns {
            definitions.push(json!({
                "name": c["name"],
                "type": c["type"],
                "format": c["format"].as_str().unwrap_or_default(),
                "description": c["description"].as_str().unwrap_or_default(),
                "priority": c["priority"].as_i64().unwrap_or(0),
            }));
        }
        let objects: Vec<&Value> = match list_or_object["items"].as_array() {
            Some(items) => items.iter().collect(),
            None => vec![list_or_object],
        };
        let rows: Vec<Value> = objects
            .into_iter()
            .map(|o| {
                let mut cells = vec![meta(o)["name"].clone()];
                cells.extend(columns.iter().map(|c| cell(o, c)));
                json!({
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": meta(o),
                    },
                })
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": list_or_object["metadata"]["resourceVersion"]},
            "columnDefinitions": definitions,
            "rows": rows,
        })
    }

    /// `fieldValidation=Strict` on a custom resource: every field must be in
    /// the CRD's schema (`x-kubernetes-preserve-unknown-fields` and
    /// `additionalProperties` open a subtree), as the real server's strict
    /// decoding checks; the error names every unknown field.
    pub(super) fn check_fields(&self, collection: &str, obj: &Value) -> Result<(), ApiError> {
        let Some(schema) = self.resource_of(collection).and_then(|r| r.schema) else {
            return Ok(());
        };
        let mut unknown = Vec::new();
        if let Some(fields) = obj.as_object() {
            for (k, v) in fields {
                if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                unknown_fields(&schema, k, v, k, &mut unknown);
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let list = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ApiError::new(
            400,
            "BadRequest",
            format!("strict decoding error: {list}"),
        ))
    }
}

fn unknown_fields(parent: &Value, key: &str, value: &Value, path: &str, out: &mut Vec<String>) {
    if parent["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    let schema = match parent["properties"].get(key) {
        Some(s) => s,
        None if parent["additionalProperties"].is_object() => &parent["additionalProperties"],
        None if parent["additionalProperties"] == true => return,
        None => return out.push(path.to_owned()),
    };
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                unknown_fields(schema, k, v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            let item_schema = &schema["items"];
            for (i, item) in items.iter().enumerate() {
                if let Value::Object(fields) = item {
                    for (k, v) in fields {
                        unknown_fields(item_schema, k, v, &format!("{path}[{i}].{k}"), out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn resource_list(resources: &[Resource], group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.status_subresource {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

/// The OpenAPI v3 document of one group version: each resource's item path
/// with the operations' `x-kubernetes-group-version-kind` and query
/// parameters, and each CRD's schema as the server publishes it (with
/// `apiVersion`, `kind` and `metadata` added).
fn openapi_document(resources: &[&Resource]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        // The name components use: reversed group (`io.ebpfconductor`).
        let group_name = if r.group.is_empty() {
            "io.k8s.api.core".to_owned()
        } else {
            r.group.split('.').rev().collect::<Vec<_>>().join(".")
        };
        let schema_name = format!("{group_name}.{}.{}", r.version, r.kind);
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let query = |name: &str, description: &str| {
            json!({"name": name, "in": "query", "description": description,
                   "schema": {"type": "string", "uniqueItems": true}})
        };
        let params = vec![
            query(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            query(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
            ),
            query(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
            ),
        ];
        let op = |action: &str, with_params: bool| {
            let mut o = json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK",
                    "content": {"application/json": {"schema": reference}}}},
            });
            if with_params {
                o["parameters"] = json!(params);
                o["requestBody"] = json!({"content": {"application/json": {"schema": reference}}});
            }
            o
        };
        let base = format!("/{}", r.prefix());
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": op("list", false), "post": op("post", true)}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": op("get", false), "put": op("put", true),
                   "patch": op("patch", true), "delete": op("delete", false)}),
        );
        let mut schema = r.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        if let Some(props) = schema["properties"].as_object_mut() {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), json!({"type": "object"}));
        }
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-fake-apiserver"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// One printer column's cell: the first JSONPath result; strings printed,
/// `date` as the age the server computes, numbers and booleans as JSON.
fn cell(obj: &Value, column: &Value) -> Value {
    let Some(path) = column["jsonPath"].as_str() else {
        return Value::Null;
    };
    // Kubernetes JSONPath (`.status.x`, `[?(@.type=="Ready")]`) is RFC 9535
    // JSONPath without the leading `$`.
    let found = obj
        .query(&format!("${path}"))
        .ok()
        .and_then(|v| v.first().map(|v| (*v).clone()));
    let Some(value) = found else {
        return Value::Null;
    };
    match (column["type"].as_str(), &value) {
        (Some("date"), Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => Value::String(human_duration(jiff::Timestamp::now().duration_since(t))),
            Err(_) => Value::Null,
        },
        (Some("string"), Value::String(_)) => value,
        (Some("string"), other) => Value::String(other.to_string()),
        _ => value,
    }
}

/// apimachinery's `duration.HumanDuration`, as `kubectl get` shows ages.
fn human_duration(d: jiff::SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    #[test]
    fn aggregated_discovery_is_recognised_in_any_parameter_order() {
        use super::wants_aggregated;
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(wants_aggregated(
            "application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io"
        ));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(""));
    }

    use super::*;

    #[test]
    fn ages_read_as_kubectl_shows_them() {
        let s = jiff::SignedDuration::from_secs;
        assert_eq!(human_duration(s(5)), "5s");
        assert_eq!(human_duration(s(119)), "119s");
        assert_eq!(human_duration(s(150)), "2m30s");
        assert_eq!(human_duration(s(600)), "10m");
        assert_eq!(human_duration(s(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(s(30 * 3600)), "30h");
        assert_eq!(human_duration(s(3 * 86400 + 3600)), "3d1h");
        assert_eq!(human_duration(s(-5)), "<invalid>");
    }

    #[test]
    fn printer_columns_follow_kubernetes_jsonpath() {
        let obj = json!({
            "metadata": {"name": "p"},
            "spec": {"plugin": {"component": "oci://x"}},
            "status": {"restarts": 3, "conditions": [
                {"type": "Degraded", "status": "False"},
                {"type": "Ready", "status": "True"}]},
        });
        let col = |path: &str, ty: &str| json!({"jsonPath": path, "type": ty});
        assert_eq!(
            cell(&obj, &col(".spec.plugin.component", "string")),
            "oci://x"
        );
        assert_eq!(
            cell(
                &obj,
                &col(r#".status.conditions[?(@.type=="Ready")].status"#, "string")
            ),
            "True"
        );
        assert_eq!(cell(&obj, &col(".status.restarts", "integer")), 3);
        assert_eq!(cell(&obj, &col(".status.missing", "string")), Value::Null);
    }
}

/// Who a request acts as: the `Impersonate-User` / `Impersonate-Group`
/// headers (`kubectl --as`, `--as-group`), with the groups the real server
/// adds for a service account. `None`: the kubeconfig's own user, which the
/// fake treats as a cluster administrator.
pub(super) struct Subject {
    user: String,
    groups: Vec<String>,
}

impl Subject {
    pub(super) fn from_headers(headers: &axum::http::HeaderMap) -> Option<Self> {
        let user = headers.get("impersonate-user")?.to_str().ok()?.to_owned();
        let mut groups: Vec<String> = headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|g| g.to_str().ok().map(str::to_owned))
            .collect();
        if let Some(ns) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split(':').next())
        {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        groups.push("system:authenticated".into());
        Some(Self { user, groups })
    }

    /// Whether a binding's subject (in namespace `binding_ns` for a
    /// RoleBinding) names this user or one of its groups.
    fn matches(&self, subject: &Value, binding_ns: &str) -> bool {
        let name = subject["name"].as_str().unwrap_or_default();
        match subject["kind"].as_str() {
            Some("User") => self.user == name,
            Some("Group") => self.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns = subject["namespace"].as_str().unwrap_or(binding_ns);
                self.user == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    }
}

impl Store {
    /// `POST .../selfsubjectaccessreviews` (`kubectl auth can-i`): the
    /// review with `status.allowed` decided by the stored RBAC objects
    /// (ClusterRoleBindings everywhere, RoleBindings in their namespace;
    /// rules match verb, API group, resource or `resource/subresource`,
    /// and resource names, with `*` wildcards). Aggregated ClusterRoles and
    /// non-resource URLs are not evaluated.
    pub(super) fn access_review(&self, subject: Option<&Subject>, mut review: Value) -> Value {
        let attrs = &review["spec"]["resourceAttributes"];
        let field = |k: &str| attrs[k].as_str().unwrap_or_default().to_owned();
        let (verb, group, resource, sub, name, ns) = (
            field("verb"),
            field("group"),
            field("resource"),
            field("subresource"),
            field("name"),
            field("namespace"),
        );
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        let allows = |rule: &Value| {
            let has = |list: &str, v: &str| {
                rule[list]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "*" || x == v))
            };
            has("verbs", &verb)
                && has("apiGroups", &group)
                && has("resources", &resource)
                && rule["resourceNames"]
                    .as_array()
                    .is_none_or(|n| n.is_empty() || n.iter().any(|x| x == name.as_str()))
        };
        let rbac = "apis/rbac.authorization.k8s.io/v1";
        let role_rules = |kind: &str, role_ns: &str, role: &str| -> Vec<Value> {
            let coll = if kind == "ClusterRole" {
                format!("{rbac}/clusterroles")
            } else {
                format!("{rbac}/roles")
            };
            let key_ns = if kind == "ClusterRole" { "" } else { role_ns };
            self.objects
                .get(&(coll, key_ns.to_owned(), role.to_owned()))
                .and_then(|r| r["rules"].as_array().cloned())
                .unwrap_or_default()
        };
        let decision = match subject {
            None => Some("the fake API server's own user may do anything".to_owned()),
            Some(subject) => self
                .objects
                .iter()
                .filter(|((c, bns, _), _)| {
                    *c == format!("{rbac}/clusterrolebindings")
                        || (*c == format!("{rbac}/rolebindings") && *bns == ns)
                })
                .find_map(|((c, bns, bname), binding)| {
                    let bound = binding["subjects"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| subject.matches(s, bns)));
                    let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
                    let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
                    (bound && role_rules(role_kind, bns, role).iter().any(allows)).then(|| {
                        let kind = if c.ends_with("clusterrolebindings") {
                            "ClusterRoleBinding"
                        } else {
                            "RoleBinding"
                        };
                        format!("RBAC: allowed by {kind} \"{bname}\" of {role_kind} \"{role}\"")
                    })
                }),
        };
        review["status"] = match decision {
            Some(reason) => json!({"allowed": true, "reason": reason}),
            None => json!({"allowed": false}),
        };
        review
    }
}

/// kubectl sends built-in types such as `SelfSubjectAccessReview` as
/// Kubernetes protobuf (`application/vnd.kubernetes.protobuf`: the `k8s\0`
/// magic, then a `runtime.Unknown` wrapping the object); the answer may be
/// JSON, which clients decode by the response's content type. These are the
/// fields of `k8s.io/api/authorization/v1` a review needs.
mod protobuf {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Unknown {
        #[prost(bytes = "vec", tag = "2")]
        pub raw: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelfSubjectAccessReview {
        #[prost(message, optional, tag = "2")]
        pub spec: Option<Spec>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Spec {
        #[prost(message, optional, tag = "1")]
        pub resource_attributes: Option<ResourceAttributes>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceAttributes {
        #[prost(string, tag = "1")]
        pub namespace: String,
        #[prost(string, tag = "2")]
        pub verb: String,
        #[prost(string, tag = "3")]
        pub group: String,
        #[prost(string, tag = "4")]
        pub version: String,
        #[prost(string, tag = "5")]
        pub resource: String,
        #[prost(string, tag = "6")]
        pub subresource: String,
        #[prost(string, tag = "7")]
        pub name: String,
    }
}

/// A `SelfSubjectAccessReview` request body, JSON or Kubernetes protobuf,
/// as JSON.
pub(super) fn decode_review(content_type: &str, body: &[u8]) -> Result<Value, String> {
    use prost::Message;
    if !content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return serde_json::from_slice(body).map_err(|e| e.to_string());
    }
    let wrapped = body
        .strip_prefix(b"k8s\0")
        .ok_or("a protobuf body must start with the k8s\\0 magic")?;
    let unknown = protobuf::Unknown::decode(wrapped).map_err(|e| e.to_string())?;
    let review =
        protobuf::SelfSubjectAccessReview::decode(&unknown.raw[..]).map_err(|e| e.to_string())?;
    let a = review
        .spec
        .and_then(|s| s.resource_attributes)
        .unwrap_or_default();
    Ok(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"resourceAttributes": {
            "namespace": a.namespace, "verb": a.verb, "group": a.group, "version": a.version,
            "resource": a.resource, "subresource": a.subresource, "name": a.name,
        }},
    }))
}
