// A JavaScript eBPFConductor plugin (conductor:plugin@0.2.1). Build:
//   componentize-js plugin.js --wit <wit dir> --world-name plugin -o plugin.wasm
// See README.md and docs/src/languages.md.

import { Record, SeriesCache, cStr, counter, log } from '@ebpfconductor/plugin';

// The C struct your BPF program submits to its ring buffer, field by field.
const Event = new Record([
  ['pid', 'u32'],
  ['comm', 'char[16]'],
]);

let events;

export function init() {
  events = new SeriesCache(counter('events', 'Events seen, by command name.', ['comm']));
  log.info('started');
}

export function onEvents(batch) {
  for (const e of Event.decode(batch)) {
    const comm = cStr(e.comm);
    events.add(comm, () => [comm]);
  }
}

export function tick() {}

export function collect() {}
