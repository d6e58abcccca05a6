//! From a map's bucket counts to a Prometheus histogram, as ebpf_exporter
//! lays it out: every configured bucket present (missing keys are zero),
//! `le` from the bucket type and multiplier, and the value at the key after
//! the last bucket taken as the sum (the `sum` convention).

use std::collections::BTreeMap;

use crate::config::{BucketType, Histogram};

/// One histogram series as exposed.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// `(le, count in this bucket alone)`, ascending, ending with `+Inf`
    /// (whose own count is 0: values above the last bucket are not counted,
    /// as in ebpf_exporter).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// `counts`: bucket key (the last label, as a number) → count.
pub fn transform(h: &Histogram, counts: &BTreeMap<u64, u64>) -> Buckets {
    let multiplier = if h.bucket_multiplier == 0.0 {
        1.0
    } else {
        h.bucket_multiplier
    };
    let ty = h.bucket_type().unwrap_or(BucketType::Linear);
    let keys: Vec<u64> = match ty {
        BucketType::Fixed => h.bucket_keys.iter().map(|k| *k as u64).collect(),
        _ => (h.bucket_min.max(0) as u64..=h.bucket_max.max(0) as u64).collect(),
    };
    let le = |k: u64| -> f64 {
        let k = k as f64;
        match ty {
            BucketType::Exp2 => k.exp2() * multiplier,
            BucketType::Exp2Zero if k == 0.0 => 0.0,
            BucketType::Exp2Zero => (k - 1.0).exp2() * multiplier,
            BucketType::Linear | BucketType::Fixed => k * multiplier,
        }
    };
    let mut out = Buckets {
        buckets: Vec::with_capacity(keys.len() + 1),
        count: 0,
        sum: 0.0,
    };
    for &k in &keys {
        let c = counts.get(&k).copied().unwrap_or(0);
        out.count = out.count.wrapping_add(c);
        out.buckets.push((le(k), c));
    }
    out.buckets.push((f64::INFINITY, 0));
    if let Some(last) = keys.last() {
        out.sum = counts.get(&(last + 1)).copied().unwrap_or(0) as f64 * multiplier;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(ty: &str, min: i64, max: i64, mult: f64, keys: Vec<f64>) -> Histogram {
        Histogram {
            name: "h".into(),
            help: "h".into(),
            bucket_type: Some(ty.into()),
            bucket_multiplier: mult,
            bucket_min: min,
            bucket_max: max,
            bucket_keys: keys,
            labels: Vec::new(),
        }
    }

    #[test]
    fn exp2_backfills_buckets_and_reads_the_sum_key() {
        let counts = BTreeMap::from([(0, 2), (2, 5), (3, 100), (4, 1)]);
        let b = transform(&hist("exp2", 0, 3, 0.000001, vec![]), &counts);
        assert_eq!(
            b.buckets,
            vec![
                (0.000001, 2),
                (0.000002, 0),
                (0.000004, 5),
                (0.000008, 100),
                (f64::INFINITY, 0)
            ]
        );
        assert_eq!(b.count, 107);
        // Key bucket_max + 1 holds the sum.
        assert_eq!(b.sum, 0.000001);
    }

    #[test]
    fn exp2zero_linear_and_fixed() {
        let counts = BTreeMap::from([(0, 1), (1, 1), (2, 1)]);
        let les = |h| {
            transform(&h, &counts)
                .buckets
                .iter()
                .map(|(le, _)| *le)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            les(hist("exp2zero", 0, 3, 0.0, vec![])),
            vec![0.0, 1.0, 2.0, 4.0, f64::INFINITY]
        );
        assert_eq!(
            les(hist("linear", 1, 3, 10.0, vec![])),
            vec![10.0, 20.0, 30.0, f64::INFINITY]
        );
        let fixed = hist("fixed", 0, 0, 0.5, vec![1.0, 5.0]);
        let b = transform(&fixed, &BTreeMap::from([(1, 3), (5, 4), (6, 20)]));
        assert_eq!(b.buckets, vec![(0.5, 3), (2.5, 4), (f64::INFINITY, 0)]);
        assert_eq!((b.count, b.sum), (7, 10.0));
    }
}
