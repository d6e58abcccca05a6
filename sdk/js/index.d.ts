// Types of @ebpfconductor/plugin (targets conductor:plugin@0.2.1).

export const WIT_VERSION: '0.2.1';

export interface EventBatch {
  source: string;
  data: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
  lost: bigint;
}

export interface CounterSeries { add(delta: bigint): void }
export interface Counter {
  add(labelValues: string[], delta: bigint): void;
  series(labelValues: string[]): CounterSeries;
}
export interface Gauge {
  set(labelValues: string[], value: number): void;
  add(labelValues: string[], delta: number): void;
}
export interface Histogram { observe(labelValues: string[], value: number): void }

export function counter(name: string, help: string, labels?: string[]): Counter;
export function gauge(name: string, help: string, labels?: string[]): Gauge;
export function histogram(name: string, help: string, buckets: number[], labels?: string[]): Histogram;

export class SeriesCache<K> {
  constructor(counter: Counter);
  add(key: K, labels: () => string[], delta?: bigint | number): void;
}

export type FieldType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'u64' | 'i64' | `char[${number}]` | `u8[${number}]`;
export class Record<T = Record<string, number | bigint | Uint8Array>> {
  constructor(fields: [string, FieldType][]);
  readonly size: number;
  decode(batch: EventBatch): Generator<T>;
}
export function cStr(bytes: Uint8Array): string;

export function config(key: string, fallback?: string): string | undefined;
export function configList(key: string): string[];

type LogFn = (message: string, fields?: Record<string, unknown>) => void;
export const log: { trace: LogFn; debug: LogFn; info: LogFn; warn: LogFn; error: LogFn };

export class Workloads {
  clear(): void;
  labels(cgroupId: bigint): [namespace: string, pod: string, container: string];
}
