//! From a map's rows (key bytes, `u64` value) to metric series, with
//! ebpf_exporter's rules: per-CPU values summed (or split by a last label
//! named `cpu`), key fields decoded into labels (cached per key), equal
//! label sets summed, histograms grouped by all labels but the bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::config::{Histogram, Label};
use crate::decoder::{Chain, DecodeError, Host};
use crate::histogram::{self, Buckets};

/// How one metric reads its map's key.
#[derive(Debug)]
pub struct KeyLayout {
    pub labels: Vec<(String, u32, u32, Chain)>,
    /// The map is per-CPU and the last label is `cpu`: each CPU's value is
    /// its own row, the CPU number appended to the key as a `u16`.
    pub by_cpu: bool,
    /// The map is per-CPU (for the lone-`cpu`-label key convention).
    pub per_cpu: bool,
    /// Decoded labels per raw key (`None`: skipped by a regexp).
    cache: Mutex<HashMap<Vec<u8>, Option<Vec<String>>>>,
}

/// Cached keys per metric before the cache is emptied (keys come and go
/// with what is traced; this bounds the memory they hold).
const CACHE_LIMIT: usize = 100_000;

impl KeyLayout {
    pub fn new(labels: &[Label], per_cpu: bool) -> Result<Self, String> {
        let chains = labels
            .iter()
            .map(|l| Ok((l.name.clone(), l.size, l.padding, Chain::new(&l.decoders)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            by_cpu: per_cpu && labels.last().is_some_and(|l| l.name == "cpu"),
            per_cpu,
            labels: chains,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn label_names(&self) -> Vec<String> {
        self.labels.iter().map(|(n, ..)| n.clone()).collect()
    }

    /// Bytes the labels cover (sizes and paddings).
    pub fn covered(&self) -> u64 {
        self.labels
            .iter()
            .map(|(_, size, pad, _)| u64::from(*size) + u64::from(*pad))
            .sum()
    }

    /// The map key size these labels read, or why they cannot read it.
    pub fn check_key_size(&self, key_size: u32) -> Result<(), String> {
        let covered = self.covered();
        let key = u64::from(key_size);
        let ok = if self.labels.is_empty() {
            key == 4
        } else if self.by_cpu && self.labels.len() == 1 {
            // A `u32` zero key, split by CPU: only the CPU number is decoded.
            key == 4 && covered == 2
        } else if self.by_cpu {
            covered == key + 2
        } else {
            covered == key
        };
        if ok {
            return Ok(());
        }
        Err(if self.labels.is_empty() {
            format!("no labels read a single u32 key 0, but the map's key is {key} bytes")
        } else if self.by_cpu {
            format!(
                "the labels cover {covered} bytes (sizes + paddings); the map's key is {key} bytes, plus 2 for the cpu label of a per-CPU map"
            )
        } else {
            format!(
                "the labels cover {covered} bytes (sizes + paddings), but the map's key is {key} bytes"
            )
        })
    }

    /// Label values of `raw` (`Ok(None)`: left out by a regexp).
    pub fn decode(&self, raw: &[u8], host: &dyn Host) -> Result<Option<Vec<String>>, String> {
        if self.labels.is_empty() {
            return if raw == [0, 0, 0, 0] {
                Ok(Some(Vec::new()))
            } else {
                Err(format!(
                    "key {raw:?} is not the u32 0 a metric without labels reads"
                ))
            };
        }
        let raw = if self.by_cpu && self.labels.len() == 1 && raw.starts_with(&[0, 0, 0, 0]) {
            &raw[4..]
        } else {
            raw
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(raw) {
            return Ok(hit.clone());
        }
        if self.covered() != raw.len() as u64 {
            return Err(format!(
                "total size of key {raw:?} is {} bytes, but the labels decode {}",
                raw.len(),
                self.covered()
            ));
        }
        let mut values = Vec::with_capacity(self.labels.len());
        let mut cacheable = true;
        let mut off = 0usize;
        for (name, size, pad, chain) in &self.labels {
            let field = &raw[off..off + *size as usize];
            off += (*size + *pad) as usize;
            match chain.decode(field, host) {
                Ok(d) => {
                    cacheable &= d.cacheable;
                    values.push(String::from_utf8_lossy(&d.value).into_owned());
                }
                Err(DecodeError::Skip) => {
                    cache.insert(raw.to_vec(), None);
                    return Ok(None);
                }
                Err(e) => return Err(format!("label {name:?}: {e}")),
            }
        }
        if cacheable {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(raw.to_vec(), Some(values.clone()));
        }
        Ok(Some(values))
    }
}

/// One map row: its key (with the CPU appended when split by CPU) and value.
pub type Row = (Vec<u8>, u64);

/// Counter series: label values → value, equal label sets summed.
pub fn counter_series(
    layout: &KeyLayout,
    rows: &[Row],
    host: &dyn Host,
) -> Result<BTreeMap<Vec<String>, u64>, String> {
    let mut out: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (raw, value) in rows {
        if let Some(labels) = layout.decode(raw, host)? {
            let v = out.entry(labels).or_default();
            *v = v.wrapping_add(*value);
        }
    }
    Ok(out)
}

/// Histogram series: all labels but the bucket → buckets.
pub fn histogram_series(
    h: &Histogram,
    layout: &KeyLayout,
    rows: &[Row],
    host: &dyn Host,
) -> Result<BTreeMap<Vec<String>, Buckets>, String> {
    let mut grouped: BTreeMap<Vec<String>, BTreeMap<u64, u64>> = BTreeMap::new();
    for (mut labels, value) in counter_series(layout, rows, host)? {
        let Some(bucket) = labels.pop() else {
            return Err("a histogram needs a bucket label".into());
        };
        let key = parse_uint(&bucket).ok_or_else(|| {
            format!("bucket label {bucket:?} is not an unsigned integer: decode it with uint")
        })?;
        let counts = grouped.entry(labels).or_default();
        *counts.entry(key).or_default() += value;
    }
    Ok(grouped
        .into_iter()
        .map(|(labels, counts)| (labels, histogram::transform(h, &counts)))
        .collect())
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0x` hex, `0o`/`0` octal, `0b` binary.
fn parse_uint(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        u64::from_str_radix(o, 8).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::decoder::tests::FixedHost;

    fn config(yaml: &str) -> Config {
        Config::parse("t", yaml).unwrap()
    }

    const BY_PROCESS: &str = "
metrics:
  counters:
    - name: calls_total
      help: calls
      labels:
        - name: comm
          size: 8
          decoders: [{name: string}]
        - name: op
          size: 4
          padding: 4
          decoders:
            - name: uint
            - name: static_map
              static_map: {1: read, 2: write}
";

    fn key(comm: &str, op: u32) -> Vec<u8> {
        let mut k = [0u8; 16];
        k[..comm.len()].copy_from_slice(comm.as_bytes());
        k[8..12].copy_from_slice(&op.to_ne_bytes());
        k.to_vec()
    }

    #[test]
    fn counters_decode_keys_and_sum_equal_labels() {
        let c = config(BY_PROCESS);
        let layout = KeyLayout::new(&c.metrics.counters[0].labels, false).unwrap();
        layout.check_key_size(16).unwrap();
        assert!(
            layout
                .check_key_size(12)
                .unwrap_err()
                .contains("cover 16 bytes")
        );
        let mut other = key("bash", 1);
        other[15] = 9; // padding differs: same labels, so summed
        let rows = vec![(key("bash", 1), 3), (other, 4), (key("cat", 2), 1)];
        let s = counter_series(&layout, &rows, &FixedHost).unwrap();
        assert_eq!(
            s,
            BTreeMap::from([
                (vec!["bash".to_owned(), "read".to_owned()], 7),
                (vec!["cat".to_owned(), "write".to_owned()], 1)
            ])
        );
    }

    #[test]
    fn a_label_less_counter_reads_key_zero() {
        let c = config("metrics:\n  counters:\n    - name: x_total\n      help: x\n");
        let layout = KeyLayout::new(&c.metrics.counters[0].labels, false).unwrap();
        layout.check_key_size(4).unwrap();
        let s = counter_series(&layout, &[(vec![0; 4], 9)], &FixedHost).unwrap();
        assert_eq!(s, BTreeMap::from([(vec![], 9)]));
        assert!(counter_series(&layout, &[(vec![1, 0, 0, 0], 9)], &FixedHost).is_err());
    }

    #[test]
    fn per_cpu_rows_split_by_a_cpu_label() {
        let c = config(
            "metrics:\n  counters:\n    - name: x_total\n      help: x\n      labels:\n        - name: cpu\n          size: 2\n          decoders: [{name: uint}]\n",
        );
        let layout = KeyLayout::new(&c.metrics.counters[0].labels, true).unwrap();
        assert!(layout.by_cpu);
        layout.check_key_size(4).unwrap();
        let row = |cpu: u16, v| {
            (
                [0u8, 0, 0, 0]
                    .iter()
                    .copied()
                    .chain(cpu.to_ne_bytes())
                    .collect(),
                v,
            )
        };
        let s = counter_series(&layout, &[row(0, 5), row(1, 6)], &FixedHost).unwrap();
        assert_eq!(s.get(&vec!["1".to_owned()]), Some(&6));
        assert_eq!(s.get(&vec!["0".to_owned()]), Some(&5));
    }

    #[test]
    fn histograms_group_by_all_but_the_bucket() {
        let c = config(
            "
metrics:
  histograms:
    - name: lat_seconds
      help: latency
      bucket_type: exp2
      bucket_min: 0
      bucket_max: 2
      labels:
        - name: op
          size: 4
          decoders: [{name: uint}]
        - name: bucket
          size: 4
          decoders: [{name: uint}]
",
        );
        let h = &c.metrics.histograms[0];
        let layout = KeyLayout::new(&h.labels, false).unwrap();
        let k = |op: u32, b: u32| [op.to_ne_bytes(), b.to_ne_bytes()].concat();
        let rows = vec![(k(1, 0), 2), (k(1, 2), 3), (k(1, 3), 40), (k(2, 1), 1)];
        let s = histogram_series(h, &layout, &rows, &FixedHost).unwrap();
        let one = &s[&vec!["1".to_owned()]];
        assert_eq!(
            one.buckets,
            vec![(1.0, 2), (2.0, 0), (4.0, 3), (f64::INFINITY, 0)]
        );
        assert_eq!((one.count, one.sum), (5, 40.0));
        assert_eq!(s[&vec!["2".to_owned()]].count, 1);
    }

    #[test]
    fn go_style_uint_parsing() {
        assert_eq!(parse_uint("10"), Some(10));
        assert_eq!(parse_uint("0x10"), Some(16));
        assert_eq!(parse_uint("010"), Some(8));
        assert_eq!(parse_uint("0"), Some(0));
        assert_eq!(parse_uint("x"), None);
    }
}
