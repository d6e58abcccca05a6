//! Uprobe targets inside a pod's container: `uprobe.pod` names a container
//! whose root filesystem holds `uprobe.target`. The host finds one of the
//! container's processes on this node through the workload cache (each
//! process's cgroup → container → pod) and rewrites the target to
//! `/proc/<pid>/root/<target>`, which the kernel resolves through that
//! process's mount namespace. The uprobe holds the file's inode, so it
//! keeps firing after that process exits.

use std::borrow::Cow;

use conductor_api::{PodContainer, ProgramAttach};

use crate::k8s::{Identity, Workloads};

/// `programs` with every `uprobe`/`uretprobe` that names a pod pointed at
/// the file inside that pod's container; an error names the program and
/// what could not be found.
pub(crate) fn resolve<'a>(
    programs: &'a [ProgramAttach],
    workloads: &Workloads,
) -> Result<Cow<'a, [ProgramAttach]>, String> {
    if !programs
        .iter()
        .any(|p| probe(p).is_some_and(|u| u.pod.is_some()))
    {
        return Ok(Cow::Borrowed(programs));
    }
    let mut out = programs.to_vec();
    for p in &mut out {
        let name = p.name.clone();
        let Some(u) = p.uprobe.as_mut().or(p.uretprobe.as_mut()) else {
            continue;
        };
        let Some(pod) = u.pod.take() else { continue };
        let pid = process_of(&pod, workloads).map_err(|e| format!("program {name:?}: {e}"))?;
        let inside = u.target.trim_start_matches('/');
        u.target = format!("/proc/{pid}/root/{inside}");
        tracing::info!(program = %name, namespace = %pod.namespace, pod = %pod.name, pid, target = %u.target, "uprobe target inside the pod's container");
    }
    Ok(Cow::Owned(out))
}

fn probe(p: &ProgramAttach) -> Option<&conductor_api::UprobeAttach> {
    p.uprobe.as_ref().or(p.uretprobe.as_ref())
}

/// The lowest pid on this node in `pod`'s container (its first process,
/// usually).
fn process_of(pod: &PodContainer, workloads: &Workloads) -> Result<u32, String> {
    let who = match &pod.container {
        Some(c) => format!("container {c:?} of pod {}/{}", pod.namespace, pod.name),
        None => format!("pod {}/{}", pod.namespace, pod.name),
    };
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("cannot list /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut containers_seen = Vec::new();
    let mut pod_seen = false;
    for pid in pids {
        let Identity::Workload {
            pod: info,
            container,
        } = workloads.by_pid(pid)
        else {
            continue;
        };
        if info.namespace != pod.namespace || info.name != pod.name {
            continue;
        }
        pod_seen = true;
        let Some(c) = container.and_then(|i| info.containers.get(i)) else {
            continue;
        };
        let wanted = match &pod.container {
            Some(name) => *name == c.name,
            // Only if the pod has one container: otherwise which one is
            // meant is the author's to say.
            None => info.containers.len() == 1,
        };
        if wanted {
            // Following another process's root is a ptrace access check: a
            // host without CAP_SYS_PTRACE passes it only for processes
            // whose capabilities are a subset of its own.
            return match std::fs::read_dir(format!("/proc/{pid}/root/")) {
                Ok(_) => Ok(pid),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
                    "{who}: cannot open the root of its process {pid}: {e}: the host needs CAP_SYS_PTRACE for that (e.g. --keep-capabilities bpf,perfmon,net_admin,sys_admin,sys_ptrace: a uprobe on every process of a file also needs CAP_SYS_ADMIN on kernels like 6.18)"
                )),
                Err(e) => Err(format!(
                    "{who}: cannot open the root of its process {pid}: {e}"
                )),
            };
        }
        if !containers_seen.contains(&c.name) {
            containers_seen.push(c.name.clone());
        }
    }
    Err(match (pod_seen, &pod.container) {
        (false, _) => format!(
            "{who}: no process of it runs on this node (is the pod scheduled here and running, and the host started with --node-name and its cgroup root?)"
        ),
        (true, None) => format!(
            "{who}: the pod has several containers ({}): name one in uprobe.pod.container",
            containers_seen.join(", ")
        ),
        (true, Some(_)) => format!(
            "{who}: no process of that container runs on this node (running: {})",
            containers_seen.join(", ")
        ),
    })
}
