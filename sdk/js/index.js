// Thin helpers for eBPFConductor plugins in JavaScript. The WIT imports
// (`conductor:plugin/*@0.2.1`) are bound by componentize-js when the
// component is built; this module wraps what every plugin repeats.
// See docs/src/languages.md.

import { get as configGet } from 'conductor:plugin/config@0.2.1';
import { log as witLog } from 'conductor:plugin/log@0.2.1';
import { Counter, Gauge, Histogram } from 'conductor:plugin/metrics@0.2.1';
import { byCgroupId, cgroupContainerId } from 'conductor:plugin/k8s@0.2.1';

/** The WIT package version this SDK targets (its own version too). */
export const WIT_VERSION = '0.2.1';

// ---- metrics ----------------------------------------------------------------

/** Declare (or get) a counter; exported as <plugin>_<name>_total. */
export function counter(name, help, labels = []) {
  return Counter.declare({ name, help, labels });
}

export function gauge(name, help, labels = []) {
  return Gauge.declare({ name, help, labels });
}

export function histogram(name, help, buckets, labels = []) {
  return Histogram.declare({ name, help, labels }, buckets);
}

/** Series of one counter bound once per key: counting an event is a Map
 * lookup and one small host call with no strings. */
export class SeriesCache {
  constructor(counter) {
    this.counter = counter;
    this.series = new Map();
  }

  /** Add `delta` (a number or bigint) to the series of `key`; `labels()`
   * gives its label values the first time the key is seen. */
  add(key, labels, delta = 1n) {
    let s = this.series.get(key);
    if (s === undefined) {
      s = this.counter.series(labels());
      this.series.set(key, s);
    }
    s.add(BigInt(delta));
  }
}

// ---- events -----------------------------------------------------------------

const utf8 = new TextDecoder();

/** A fixed-size C char array (a Uint8Array) as text, up to the first NUL. */
export function cStr(bytes) {
  const nul = bytes.indexOf(0);
  return utf8.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

const FIELD = {
  u8: [1, (v, at) => v.getUint8(at)],
  i8: [1, (v, at) => v.getInt8(at)],
  u16: [2, (v, at) => v.getUint16(at, true)],
  i16: [2, (v, at) => v.getInt16(at, true)],
  u32: [4, (v, at) => v.getUint32(at, true)],
  i32: [4, (v, at) => v.getInt32(at, true)],
  u64: [8, (v, at) => v.getBigUint64(at, true)],
  i64: [8, (v, at) => v.getBigInt64(at, true)],
};

/** A fixed-layout C struct, declared once as [name, type] pairs in order,
 * with C alignment: types u8..u64, i8..i64, or `char[N]` / `u8[N]` for byte
 * arrays (decoded to Uint8Array views; `cStr` turns them into text).
 * `decode(batch)` yields one object per record of an event batch. */
export class Record {
  constructor(fields) {
    let offset = 0;
    let align = 1;
    this.fields = fields.map(([name, type]) => {
      const array = /^(?:char|u8)\[(\d+)\]$/.exec(type);
      if (array) {
        const size = Number(array[1]);
        const at = offset;
        offset += size;
        return [name, (_v, base, bytes) => bytes.subarray(base + at, base + at + size)];
      }
      const known = FIELD[type];
      if (!known) {
        throw new Error(`field ${name}: unknown type ${type} (use u8..u64, i8..i64 or char[N])`);
      }
      const [size, read] = known;
      offset = Math.ceil(offset / size) * size;
      align = Math.max(align, size);
      const at = offset;
      offset += size;
      return [name, (v, base) => read(v, base + at)];
    });
    this.size = Math.ceil(offset / align) * align;
  }

  *decode(batch) {
    const bytes = batch.data;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < batch.offsets.length; i++) {
      if (batch.lengths[i] < this.size) {
        throw `event ${i} of ${batch.source} has ${batch.lengths[i]} bytes, the record needs ${this.size}: check the layout against the BPF program's struct`;
      }
      const base = batch.offsets[i];
      const record = {};
      for (const [name, read] of this.fields) {
        record[name] = read(view, base, bytes);
      }
      yield record;
    }
  }
}

// ---- config and logging -------------------------------------------------------

export function config(key, fallback = undefined) {
  const value = configGet(key);
  return value === undefined ? fallback : value;
}

/** A comma-separated config value as a list (blank items dropped). */
export function configList(key) {
  return (configGet(key) ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

function logger(level) {
  return (message, fields = {}) => witLog(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

export const log = {
  trace: logger('trace'),
  debug: logger('debug'),
  info: logger('info'),
  warn: logger('warn'),
  error: logger('error'),
};

// ---- Kubernetes ---------------------------------------------------------------

/** [namespace, pod, container] of a cgroup, as the Rust SDK's WorkloadLabels:
 * a pod's container; empty for the node's own processes; for a container the
 * host knows only from its cgroup, empty namespace and pod and the first 12
 * digits of the container id. Call clear() once per batch. */
export class Workloads {
  constructor() {
    this.cache = new Map();
  }

  clear() {
    this.cache.clear();
  }

  labels(cgroupId) {
    let found = this.cache.get(cgroupId);
    if (found === undefined) {
      found = resolve(cgroupId);
      this.cache.set(cgroupId, found);
    }
    return found;
  }
}

function resolve(cgroupId) {
  const id = byCgroupId(cgroupId);
  if (id.tag === 'workload') {
    return [id.val.pod.namespace, id.val.pod.name, id.val.container ? id.val.container.name : ''];
  }
  if (id.tag === 'unknown') {
    const container = cgroupContainerId(cgroupId);
    return ['', '', container ? container.slice(0, 12) : ''];
  }
  return ['', '', ''];
}
