// {{name}}: counts process executions by command name (an eBPFConductor
// plugin in JavaScript, conductor:plugin@{{wit}}).
//
// The BPF program (bpf/{{crate}}.bpf.c) submits one `struct event` per exec
// into the ring buffer `events`; this component counts them in
// {{crate}}__execs_total{comm}, skipping the command names listed in the
// config key `ignore` (comma-separated). `conductor build` compiles it with
// componentize-js against wit/; see README.md.

import { Record, SeriesCache, cStr, configList, counter, log } from './conductor/index.js';

// `struct event` of the BPF program, field by field (C layout): change both
// together.
const Event = new Record([
  ['cgroupId', 'u64'],
  ['pid', 'u32'],
  ['pad', 'u32'],
  ['comm', 'char[16]'],
]);

let execs;
let ignore;

export function init() {
  ignore = new Set(configList('ignore'));
  execs = new SeriesCache(counter('execs', 'Processes executed, by command name.', ['comm']));
  log.info(`counting execs, ignoring ${ignore.size} command name(s)`);
}

// One call per batch of events, never one per event.
export function onEvents(batch) {
  for (const event of Event.decode(batch)) {
    const comm = cStr(event.comm);
    if (!ignore.has(comm)) {
      execs.add(comm, () => [comm]);
    }
  }
}

export function tick() {}

export function collect() {}
