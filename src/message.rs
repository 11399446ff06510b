//! The message as it goes to Kafka: topic, key, headers and value, owned or read in place. It
//! knows nothing of CloudEvents (`event::kafka` maps events onto it) nor of librdkafka; the
//! store keeps it inside each record.

use serde::{Deserialize, Serialize};

/// A Kafka message ready to produce: everything the relay needs without re-parsing JSON.
/// Byte fields are (de)serialised as byte strings, not as sequences of numbers: the same
/// bincode bytes, read in one copy instead of one call per byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    pub key: String,
    #[serde(with = "header_bytes")]
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// `(name, value)` header pairs with the values as byte strings.
mod header_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(
        headers: &[(String, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            headers
                .iter()
                .map(|(name, value)| (name, Bytes::new(value))),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let headers = Vec::<(String, ByteBuf)>::deserialize(deserializer)?;
        Ok(headers
            .into_iter()
            .map(|(name, value)| (name, value.into_vec()))
            .collect())
    }
}

impl Message {
    /// Bytes on the wire, roughly: key, headers and payload.
    pub fn size(&self) -> usize {
        wire_size(&self.key, &self.headers, &self.payload)
    }
}

/// Bytes on the wire, roughly: key, headers and payload.
pub fn wire_size<N: AsRef<str>, V: AsRef<[u8]>>(
    key: &str,
    headers: &[(N, V)],
    payload: &[u8],
) -> usize {
    key.len()
        + payload.len()
        + headers
            .iter()
            .map(|(name, value)| name.as_ref().len() + value.as_ref().len())
            .sum::<usize>()
}

/// A [`Message`] read in place, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    #[serde(borrow)]
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub payload: &'a [u8],
}

impl MessageView<'_> {
    /// Bytes on the wire, roughly, as [`Message::size`] counts them.
    pub fn size(&self) -> usize {
        wire_size(self.key, &self.headers, self.payload)
    }
}
