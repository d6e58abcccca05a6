//! Batches of events from ring buffers and perf event arrays.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytemuck::Pod;

use crate::error::{Error, Result};

/// One batch of events from one event source, as passed to
/// [`Plugin::on_events`](crate::Plugin::on_events).
///
/// Records are the exact bytes the BPF program submitted. Iterate them raw
/// with [`iter`](Self::iter) or decode them into a `#[repr(C)]` struct that
/// mirrors the C layout with [`decode`](Self::decode).
///
/// The SDK checks the host's record offsets and lengths before handing a batch to the
/// plugin, so iterating never fails and never panics.
#[derive(Debug, Clone)]
pub struct EventBatch {
    source: String,
    data: Vec<u8>,
    offsets: Vec<u32>,
    lengths: Vec<u32>,
    lost: u64,
}

impl EventBatch {
    /// Builds a batch: record `i` is `data[offsets[i]..][..lengths[i]]`
    /// (the WIT `event-batch` layout). Bytes of `data` outside every record
    /// belong to none.
    ///
    /// Fails if the two lists differ in length or a record reaches past
    /// the end of `data`. Useful to unit-test a plugin's event handling
    /// natively; see also [`from_records`](Self::from_records).
    pub fn new(
        source: impl Into<String>,
        data: Vec<u8>,
        offsets: Vec<u32>,
        lengths: Vec<u32>,
        lost: u64,
    ) -> Result<Self> {
        let source = source.into();
        if offsets.len() != lengths.len() {
            return Err(Error::msg(format!(
                "malformed event batch from {source:?}: {} offsets but {} lengths",
                offsets.len(),
                lengths.len()
            )));
        }
        for (i, (&offset, &len)) in offsets.iter().zip(&lengths).enumerate() {
            if u64::from(offset) + u64::from(len) > data.len() as u64 {
                return Err(Error::msg(format!(
                    "malformed event batch from {source:?}: record {i} ({len} bytes at {offset}) reaches past the end of the data ({} bytes)",
                    data.len()
                )));
            }
        }
        Ok(EventBatch {
            source,
            data,
            offsets,
            lengths,
            lost,
        })
    }

    /// Builds a batch from whole records, for tests.
    ///
    /// # Panics
    ///
    /// If the records add up to 4 GiB or more.
    pub fn from_records<R: AsRef<[u8]>>(
        source: impl Into<String>,
        records: impl IntoIterator<Item = R>,
        lost: u64,
    ) -> Self {
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        let mut lengths = Vec::new();
        for record in records {
            let record = record.as_ref();
            offsets.push(u32::try_from(data.len()).expect("event batch data exceeds 4 GiB"));
            lengths.push(u32::try_from(record.len()).expect("event record exceeds 4 GiB"));
            data.extend_from_slice(record);
        }
        EventBatch {
            source: source.into(),
            data,
            offsets,
            lengths,
            lost,
        }
    }

    /// The name of the event-source map, as in the plugin's spec.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Events lost for this source since the previous batch: dropped by the
    /// kernel (ring full), or by the host while the plugin was down.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True if the batch has no records (it may still report
    /// [`lost`](Self::lost) events).
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Record `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(index)? as usize;
        let len = *self.lengths.get(index)? as usize;
        // `new` checked the records; `get` keeps this panic-free regardless.
        self.data.get(start..start.checked_add(len)?)
    }

    /// The raw records, in the order the kernel committed them.
    pub fn iter(&self) -> Records<'_> {
        Records {
            batch: self,
            next: 0,
        }
    }

    /// Decodes each record as a `T`, a `#[repr(C)]` mirror of the C struct
    /// the BPF program submits.
    ///
    /// Records carry no alignment guarantee, so each is copied out with an
    /// unaligned read. A record shorter than `T` yields a [`DecodeError`];
    /// a longer one decodes from its first `size_of::<T>()` bytes, so a BPF
    /// program may append fields without breaking plugins built against the
    /// older layout.
    ///
    /// ```
    /// use conductor_sdk::{EventBatch, Pod, Zeroable, bytemuck};
    ///
    /// #[repr(C)]
    /// #[derive(Clone, Copy, Pod, Zeroable)]
    /// #[bytemuck(crate = "conductor_sdk::bytemuck")]
    /// struct Event { pid: u32, uid: u32 }
    ///
    /// let record = Event { pid: 42, uid: 1000 };
    /// let batch = EventBatch::from_records("events", [bytemuck::bytes_of(&record)], 0);
    /// for event in batch.decode::<Event>() {
    ///     let event = event?;
    ///     assert_eq!((event.pid, event.uid), (42, 1000));
    /// }
    /// # Ok::<(), conductor_sdk::Error>(())
    /// ```
    pub fn decode<T: Pod>(&self) -> Decode<'_, T> {
        Decode {
            records: self.iter(),
            marker: PhantomData,
        }
    }
}

impl EventBatch {
    /// Every record as a `T` (typically declared with
    /// [`record!`](crate::record!)), or the [`DecodeError`] of the first
    /// record too short for it: [`decode`](Self::decode) with the lengths
    /// checked once up front, so the loop has no error to handle.
    ///
    /// ```
    /// conductor_sdk::record! {
    ///     struct Event { pid: u32, uid: u32 }
    /// }
    /// use conductor_sdk::{EventBatch, bytemuck};
    ///
    /// let record = Event { pid: 42, uid: 1000 };
    /// let batch = EventBatch::from_records("events", [bytemuck::bytes_of(&record)], 0);
    /// for event in batch.records::<Event>()? {
    ///     assert_eq!((event.pid, event.uid), (42, 1000));
    /// }
    /// let short = EventBatch::from_records("events", [[0u8; 4]], 0);
    /// assert!(short.records::<Event>().is_err());
    /// # Ok::<(), conductor_sdk::DecodeError>(())
    /// ```
    pub fn records<T: Pod>(&self) -> Result<impl ExactSizeIterator<Item = T> + '_, DecodeError> {
        let size = size_of::<T>();
        if let Some(index) = self.lengths.iter().position(|&len| (len as usize) < size) {
            return Err(DecodeError {
                source: self.source.clone(),
                index,
                type_name: std::any::type_name::<T>(),
                expected: size,
                actual: self.lengths[index] as usize,
            });
        }
        // Every record is long enough: each read succeeds (the fallback
        // only keeps this free of panics).
        Ok(self.iter().map(move |record| {
            record
                .get(..size)
                .and_then(|bytes| bytemuck::try_pod_read_unaligned(bytes).ok())
                .unwrap_or_else(T::zeroed)
        }))
    }
}

impl<'a> IntoIterator for &'a EventBatch {
    type Item = &'a [u8];
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterator over the raw records of an [`EventBatch`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: &'a EventBatch,
    next: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let record = self.batch.get(self.next)?;
        self.next += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// Iterator returned by [`EventBatch::decode`].
#[derive(Debug, Clone)]
pub struct Decode<'a, T> {
    records: Records<'a>,
    marker: PhantomData<fn() -> T>,
}

impl<T: Pod> Iterator for Decode<'_, T> {
    type Item = Result<T, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.records.next;
        let record = self.records.next()?;
        let size = size_of::<T>();
        Some(
            record
                .get(..size)
                .and_then(|bytes| bytemuck::try_pod_read_unaligned(bytes).ok())
                .ok_or_else(|| DecodeError {
                    source: self.records.batch.source.clone(),
                    index,
                    type_name: std::any::type_name::<T>(),
                    expected: size,
                    actual: record.len(),
                }),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.records.size_hint()
    }
}

impl<T: Pod> ExactSizeIterator for Decode<'_, T> {}

/// A record too short for the type it was decoded as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The event source the batch came from.
    pub source: String,
    /// The record's index in its batch.
    pub index: usize,
    /// The Rust type the record was decoded as.
    pub type_name: &'static str,
    /// The minimum length: `size_of` the type.
    pub expected: usize,
    /// The record's length.
    pub actual: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} from {:?} is {} bytes, too short for {} ({} bytes)",
            self.index, self.source, self.actual, self.type_name, self.expected
        )
    }
}

impl std::error::Error for DecodeError {}

/// A C string field (`char comm[16]` and the like) as text: the bytes up to
/// the first NUL (or all of them), with invalid UTF-8 replaced by U+FFFD.
///
/// ```
/// assert_eq!(conductor_sdk::events::c_str(b"bash\0\0\0\0"), "bash");
/// ```
pub fn c_str(bytes: &[u8]) -> Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
    struct Pair {
        a: u64,
        b: u32,
        c: u32,
    }

    fn pair_bytes(a: u64, b: u32, c: u32) -> Vec<u8> {
        bytemuck::bytes_of(&Pair { a, b, c }).to_vec()
    }

    /// A batch of `data` with records at these (offset, length) pairs.
    fn batch(data: Vec<u8>, spans: &[(u32, u32)], lost: u64) -> Result<EventBatch> {
        let (offsets, lengths) = spans.iter().copied().unzip();
        EventBatch::new("ev", data, offsets, lengths, lost)
    }

    #[test]
    fn splits_records_by_spans_skipping_the_gaps() {
        // As from a ring buffer: a header before each record, padding after.
        let data = b"HHHHaa..HHHHHHHHbbbHHHHc".to_vec();
        let batch = batch(data, &[(4, 2), (8, 0), (16, 3), (23, 1)], 3).unwrap();
        let records: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(records, [&b"aa"[..], b"", b"bbb", b"c"]);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.iter().len(), 4);
        assert_eq!(batch.lost(), 3);
        assert_eq!(batch.source(), "ev");
        assert_eq!(batch.get(4), None);
    }

    #[test]
    fn empty_batch_may_report_losses() {
        let batch = batch(Vec::new(), &[], 7).unwrap();
        assert!(batch.is_empty());
        assert_eq!(batch.iter().next(), None);
        assert_eq!(batch.lost(), 7);
    }

    #[test]
    fn rejects_spans_past_the_data() {
        let past_end = batch(vec![0; 8], &[(0, 4), (6, 3)], 0).unwrap_err();
        assert_eq!(
            past_end.to_string(),
            "malformed event batch from \"ev\": record 1 (3 bytes at 6) reaches past the end of the data (8 bytes)"
        );
        assert!(batch(vec![0; 8], &[(u32::MAX, 2)], 0).is_err());
        let uneven = EventBatch::new("ev", vec![0; 8], vec![0, 1], vec![1], 0).unwrap_err();
        assert_eq!(
            uneven.to_string(),
            "malformed event batch from \"ev\": 2 offsets but 1 lengths"
        );
        // A record may end exactly at the end of the data.
        assert!(batch(vec![0; 8], &[(0, 8), (8, 0)], 0).is_ok());
    }

    #[test]
    fn decodes_unaligned_and_longer_records() {
        // Start the first record at an odd offset so it is not 8-aligned.
        let mut data = vec![0xff];
        data.extend(pair_bytes(1, 2, 3));
        data.extend(pair_bytes(4, 5, 6));
        data.extend([9, 9]); // trailing fields of a newer layout
        let batch = batch(data, &[(1, 16), (17, 18)], 0).unwrap();
        let pairs: Vec<Pair> = batch.decode::<Pair>().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            pairs,
            [Pair { a: 1, b: 2, c: 3 }, Pair { a: 4, b: 5, c: 6 }]
        );
    }

    #[test]
    fn short_record_is_a_typed_error() {
        let batch = EventBatch::from_records("exec", [pair_bytes(1, 2, 3), vec![0; 12]], 0);
        let mut decoded = batch.decode::<Pair>();
        assert!(decoded.next().unwrap().is_ok());
        let err = decoded.next().unwrap().unwrap_err();
        assert_eq!(
            err,
            DecodeError {
                source: "exec".into(),
                index: 1,
                type_name: std::any::type_name::<Pair>(),
                expected: 16,
                actual: 12,
            }
        );
        assert!(
            err.to_string()
                .starts_with("event 1 from \"exec\" is 12 bytes, too short for")
        );
        assert!(decoded.next().is_none());
    }

    #[test]
    fn c_str_stops_at_nul_and_is_lossy() {
        assert_eq!(c_str(b"bash\0junk"), "bash");
        assert_eq!(c_str(b"sixteen-chars-xx"), "sixteen-chars-xx");
        assert_eq!(c_str(b"a\xffb\0"), "a\u{fffd}b");
        assert_eq!(c_str(b""), "");
    }
}
