"""A Python eBPFConductor plugin (conductor:plugin@0.2.1). Build:
    componentize-py -d wit -w plugin componentize -p . -p <sdk/python/src> app -o plugin.wasm
See README.md and docs/src/languages.md."""

import wit_world
from componentize_py_types import Err

import conductor_plugin as cp

# The C struct your BPF program submits to its ring buffer (Python struct
# format, little endian) and its field names.
EVENT = cp.Record("<I16s", ("pid", "comm"))


# componentize-py makes a new WitWorld for every call into the component:
# keep state at module level, set up by init.
events = None


class WitWorld(wit_world.WitWorld):
    def init(self) -> None:
        global events
        events = cp.SeriesCache(cp.counter("events", "Events seen, by command name.", ["comm"]))
        cp.info("started")

    def on_events(self, batch) -> None:
        try:
            for _pid, raw in EVENT.decode(batch):
                comm = cp.c_str(raw)
                events.add(comm, lambda: [comm])
        except ValueError as e:
            raise Err(str(e))

    def tick(self) -> None:
        pass

    def collect(self) -> None:
        pass
