"""{{name}}: counts process executions by command name (an eBPFConductor
plugin in Python, conductor:plugin@{{wit}}).

The BPF program (bpf/{{crate}}.bpf.c) submits one `struct event` per exec
into the ring buffer `events`; this component counts them in
{{crate}}__execs_total{comm}, skipping the command names listed in the
config key `ignore` (comma-separated). `conductor build` compiles it with
componentize-py against wit/; see README.md.
"""

import wit_world
from componentize_py_types import Err

import conductor_plugin as cp

# `struct event` of the BPF program (Python struct format, little endian)
# and its field names: change both together.
EVENT = cp.Record("<QII16s", ("cgroup_id", "pid", "_pad", "comm"))

# componentize-py makes a new WitWorld for every call into the component:
# keep state at module level, set up by init.
execs = None
ignore = set()


class WitWorld(wit_world.WitWorld):
    def init(self) -> None:
        global execs, ignore
        ignore = set(cp.config_list("ignore"))
        execs = cp.SeriesCache(cp.counter("execs", "Processes executed, by command name.", ["comm"]))
        cp.info(f"counting execs, ignoring {len(ignore)} command name(s)")

    # One call per batch of events, never one per event.
    def on_events(self, batch) -> None:
        try:
            for _cgroup_id, _pid, _pad, raw in EVENT.decode(batch):
                comm = cp.c_str(raw)
                if comm not in ignore:
                    execs.add(comm, lambda: [comm])
        except ValueError as e:
            raise Err(str(e))

    def tick(self) -> None:
        pass

    def collect(self) -> None:
        pass
