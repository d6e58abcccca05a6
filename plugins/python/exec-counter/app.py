"""exec-counter in Python: counts process executions by command name and
workload, from the same BPF object as plugins/exec-counter (Rust), with the
same metrics. Built with componentize-py against the current WIT
(crates/sdk/wit/v0.2.1) by `cargo xtask build`; see docs/src/languages.md.

Metrics: execs{comm, namespace, pod, container}, distinct_commands,
events_lost. Config: `ignore`, comma-separated command names not counted.
"""

import wit_world
from componentize_py_types import Err

import conductor_plugin as cp

# struct exec_event of the BPF program (40 bytes, little endian).
EXEC_EVENT = cp.Record("<QIIII16s", ("cgroup_id", "pid", "ppid", "uid", "_pad", "comm"))

EXECS_HELP = (
    "Processes executed, by command name and workload (namespace, pod, "
    "container; empty for the node's own processes)."
)


class ExecCounter:
    def __init__(self) -> None:
        self.ignore = set(cp.config_list("ignore"))
        self.execs = cp.SeriesCache(
            cp.counter("execs", EXECS_HELP, ["comm", "namespace", "pod", "container"])
        )
        self.distinct = cp.gauge("distinct_commands", "Distinct command names executed.")
        self.lost = cp.counter("events_lost", "Exec events dropped before counting.")
        self.workloads = cp.Workloads()
        self.seen = set()
        # Export the unlabelled series from the start.
        self.distinct.set([], 0.0)
        self.lost.add([], 0)
        cp.info(f"counting execs, ignoring {len(self.ignore)} command name(s)")

    def on_events(self, batch) -> None:
        if batch.lost > 0:
            self.lost.add([], batch.lost)
        self.workloads.clear()
        before = len(self.seen)
        for cgroup_id, _pid, _ppid, _uid, _pad, raw in EXEC_EVENT.decode(batch):
            comm = cp.c_str(raw)
            if comm in self.ignore:
                continue
            self.execs.add((comm, cgroup_id), lambda: [comm, *self.workloads.labels(cgroup_id)])
            self.seen.add(comm)
        if len(self.seen) != before:
            self.distinct.set([], float(len(self.seen)))


# componentize-py makes a new WitWorld for every call into the component:
# state lives at module level, set up by init.
plugin = None


class WitWorld(wit_world.WitWorld):
    def init(self) -> None:
        global plugin
        plugin = ExecCounter()

    def on_events(self, batch) -> None:
        try:
            plugin.on_events(batch)
        except ValueError as e:
            raise Err(str(e))

    def tick(self) -> None:
        pass

    def collect(self) -> None:
        pass
