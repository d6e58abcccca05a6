// exec-counter in JavaScript: counts process executions by command name and
// workload, from the same BPF object as plugins/exec-counter (Rust), with
// the same metrics. Built with componentize-js against the current WIT
// (crates/sdk/wit/v0.2.1) by `cargo xtask build`; see docs/src/languages.md.
//
// Metrics: execs{comm, namespace, pod, container}, distinct_commands,
// events_lost. Config: `ignore`, comma-separated command names not counted.

import { Record, SeriesCache, Workloads, cStr, configList, counter, gauge, log } from '../../../sdk/js/index.js';

// struct exec_event of the BPF program.
const ExecEvent = new Record([
  ['cgroupId', 'u64'],
  ['pid', 'u32'],
  ['ppid', 'u32'],
  ['uid', 'u32'],
  ['pad', 'u32'],
  ['comm', 'char[16]'],
]);

let execs;
let distinct;
let lost;
let ignore;
const workloads = new Workloads();
const seen = new Set();

export function init() {
  ignore = new Set(configList('ignore'));
  execs = new SeriesCache(
    counter(
      'execs',
      "Processes executed, by command name and workload (namespace, pod, container; empty for the node's own processes).",
      ['comm', 'namespace', 'pod', 'container'],
    ),
  );
  distinct = gauge('distinct_commands', 'Distinct command names executed.');
  lost = counter('events_lost', 'Exec events dropped before counting.');
  // Export the unlabelled series from the start.
  distinct.set([], 0);
  lost.add([], 0n);
  log.info(`counting execs, ignoring ${ignore.size} command name(s)`);
}

export function onEvents(batch) {
  if (batch.lost > 0n) {
    lost.add([], batch.lost);
  }
  workloads.clear();
  const before = seen.size;
  for (const event of ExecEvent.decode(batch)) {
    const comm = cStr(event.comm);
    if (ignore.has(comm)) {
      continue;
    }
    execs.add(`${comm}\0${event.cgroupId}`, () => [comm, ...workloads.labels(event.cgroupId)]);
    seen.add(comm);
  }
  if (seen.size !== before) {
    distinct.set([], seen.size);
  }
}

export function tick() {}

export function collect() {}
