//! The on-disk record format. Every stored value is `[format version: u8][crc32: u32 LE][body]`
//! where the body is bincode with explicit, size-limited options. The version lets a later
//! release read older stores; the checksum turns a flipped bit into a quarantined record
//! instead of a wrong event in Kafka.

use crate::message::{Message, MessageView};
use bincode::Options;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The current record format.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the body: version and checksum.
const HEADER_LEN: usize = 5;
/// The largest body the decoder accepts; anything bigger is corrupt by definition.
pub const MAX_DECODE_BYTES: u64 = 64 * 1024 * 1024;

/// An outbox entry: the Kafka message plus what the sidecar needs to report on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the Unix epoch when the sidecar accepted the event.
    pub appended_ms: u64,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub message: Message,
}

/// A stored record read in place: every string and byte string borrows from the stored
/// bytes, so the relay decodes a batch without an allocation per field (with owned strings,
/// decoding and dropping records was about a sixth of the relay's CPU). Same layout as
/// [`Record`], which bincode writes field by field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordView<'a> {
    pub appended_ms: u64,
    pub event_id: &'a str,
    pub event_source: &'a str,
    pub event_type: &'a str,
    #[serde(borrow)]
    pub message: MessageView<'a>,
}

#[cfg(test)]
impl Record {
    /// This record as a view borrowing from it (for tests of code that works on views).
    pub(crate) fn view(&self) -> RecordView<'_> {
        RecordView {
            appended_ms: self.appended_ms,
            event_id: &self.event_id,
            event_source: &self.event_source,
            event_type: &self.event_type,
            message: MessageView {
                topic: &self.message.topic,
                key: &self.message.key,
                headers: self
                    .message
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice()))
                    .collect(),
                payload: &self.message.payload,
            },
        }
    }
}

/// A parked record: the raw stored bytes (which may be corrupt) and why it was parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    pub error: String,
    pub parked_ms: u64,
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("record has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record body does not decode: {0}")]
    Decode(String),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_DECODE_BYTES)
        .with_little_endian()
        .with_varint_encoding()
        .reject_trailing_bytes()
}

/// Encodes a value with version and checksum.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = options()
        .serialize(value)
        .expect("records serialise within the size limit");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a value written by [`encode`], checking version, checksum and size.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    decode_in_place(bytes)
}

/// Like [`decode`], for a value that borrows from `bytes` (a [`RecordView`]).
pub fn decode_in_place<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(RecordError::UnknownVersion(bytes[0]));
    }
    let stored = u32::from_le_bytes(bytes[1..5].try_into().expect("four bytes"));
    let body = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    decode_body(body)
}

/// Decodes bytes that [`decode_in_place`] has already accepted, without checking version and
/// checksum again: the relay decodes each record once to read the batch and once more, in
/// place, to produce it.
pub fn decode_accepted<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RecordError> {
    decode_body(
        bytes
            .get(HEADER_LEN..)
            .ok_or(RecordError::Truncated(bytes.len()))?,
    )
}

fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RecordError> {
    options()
        .deserialize(body)
        .map_err(|e| RecordError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            appended_ms: 1_772_000_000_000,
            event_id: "evt-1".into(),
            event_source: "integration-hub-svc".into(),
            event_type: "eventzr.integration-hub.sync.started.v1".into(),
            message: Message {
                topic: "eventzr.integration-hub.sync.started.v1".into(),
                key: "tenant-1".into(),
                headers: vec![("ce_id".into(), b"evt-1".to_vec())],
                payload: br#"{"tenantId":"tenant-1"}"#.to_vec(),
            },
        }
    }

    #[test]
    fn a_record_survives_encoding_and_decoding() {
        let r = record();
        let bytes = encode(&r);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Record>(&bytes).unwrap(), r);
        let dead = DeadLetter {
            seq: 7,
            raw: bytes.clone(),
            error: "too large".into(),
            parked_ms: 3,
        };
        assert_eq!(decode::<DeadLetter>(&encode(&dead)).unwrap(), dead);
    }

    #[test]
    fn a_view_reads_the_same_fields_in_place() {
        let mut r = record();
        r.message
            .headers
            .push(("ce_type".into(), vec![0, 159, 146, 150]));
        let bytes = encode(&r);
        let view = decode_in_place::<RecordView>(&bytes).unwrap();
        assert_eq!(view, r.view());
        assert_eq!(decode_accepted::<RecordView>(&bytes).unwrap(), view);
        assert_eq!(view.message.size(), r.message.size());
        assert!(matches!(
            decode_in_place::<RecordView>(&bytes[..bytes.len() - 1]),
            Err(RecordError::Checksum { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode(&record());
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x40;
            assert!(
                decode::<Record>(&corrupt).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_truncated_record_or_an_unknown_version_is_refused() {
        let bytes = encode(&record());
        assert_eq!(
            decode::<Record>(&bytes[..3]),
            Err(RecordError::Truncated(3))
        );
        assert!(matches!(
            decode::<Record>(&bytes[..bytes.len() - 1]),
            Err(RecordError::Checksum { .. })
        ));
        let mut future = bytes.clone();
        future[0] = 9;
        assert_eq!(
            decode::<Record>(&future),
            Err(RecordError::UnknownVersion(9))
        );
    }

    #[test]
    fn oversized_length_prefix_is_refused_not_allocated() {
        // A body claiming a 2^60-byte string, with a valid checksum: the limit stops it.
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(
            decode::<Record>(&bytes),
            Err(RecordError::Decode(_))
        ));
    }
}
