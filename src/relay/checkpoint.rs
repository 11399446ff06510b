//! Exactly-once's checkpoints: what each committed transaction delivered, written in the same
//! transaction to `relay.checkpoint_topic` under the store's instance id, and read back with
//! `read_committed` after a restart or a fence, so that the store is confirmed from Kafka's
//! truth. A local mark (`relay-checkpoint` in the data directory) says up to which offset of
//! the checkpoint topic every checkpoint of this store is confirmed in the store, so that only
//! what follows it is read.

use crate::config::KafkaConfig;
use crate::kafka_client::{client_config, KafkaContext};
use crate::msk_iam::TokenSource;
use crate::store::StoredRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The checkpoint topic's one partition that holds the checkpoints.
pub const PARTITION: i32 = 0;

/// What one committed transaction delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The store's instance id (also the message key).
    pub instance: String,
    /// The store sequence numbers in the transaction, as inclusive ranges in order.
    pub ranges: Vec<(u64, u64)>,
    /// A digest of the records' sequence numbers, sources and ids: tells this store's records
    /// from another store's under the same instance id (a copy of the directory).
    pub digest: String,
}

impl Checkpoint {
    /// The checkpoint of a transaction holding `records`.
    pub fn of(instance: &str, records: &[StoredRecord]) -> Checkpoint {
        let mut sorted: Vec<&StoredRecord> = records.iter().collect();
        sorted.sort_by_key(|r| r.seq);
        let seqs: Vec<u64> = sorted.iter().map(|r| r.seq).collect();
        Checkpoint {
            instance: instance.to_string(),
            ranges: ranges(&seqs),
            digest: digest(sorted.iter().map(|r| {
                let view = r.view();
                (
                    r.seq,
                    view.event_source.to_string(),
                    view.event_id.to_string(),
                )
            })),
        }
    }

    /// Every sequence number the checkpoint names, in order.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(first, last)| first..=last)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint serialises")
    }
}

/// Sorted sequence numbers as inclusive ranges.
pub fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == seq => *last = seq,
            _ => out.push((seq, seq)),
        }
    }
    out
}

/// The digest of `(seq, source, id)` triples, in sequence order.
pub fn digest(records: impl Iterator<Item = (u64, String, String)>) -> String {
    let mut hasher = Sha256::new();
    for (seq, source, id) in records {
        hasher.update(seq.to_le_bytes());
        hasher.update((source.len() as u64).to_le_bytes());
        hasher.update(source.as_bytes());
        hasher.update(id.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

const MARK_FILE: &str = "relay-checkpoint";

/// The offset of the checkpoint topic up to which every checkpoint of this store is confirmed
/// in the store; `None` before the first.
pub fn read_mark(data_dir: &Path) -> Option<i64> {
    std::fs::read_to_string(data_dir.join(MARK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Moves the mark to `offset`, once the checkpoint there is confirmed in the store. Not synced:
/// a mark lost in a crash only means more checkpoints are read, and confirming again changes
/// nothing.
pub fn write_mark(data_dir: &Path, offset: i64) -> std::io::Result<()> {
    let temporary = data_dir.join(format!("{MARK_FILE}.tmp"));
    std::fs::write(&temporary, offset.to_string())?;
    std::fs::rename(temporary, data_dir.join(MARK_FILE))
}

/// The checkpoints of `instance` committed after offset `mark`, with their offsets: read with
/// `read_committed` up to the end of the partition as it is when asked.
pub fn committed_since(
    kafka: &KafkaConfig,
    tokens: Option<Arc<TokenSource>>,
    topic: &str,
    instance: &str,
    mark: Option<i64>,
    timeout: Duration,
) -> Result<Vec<(i64, Checkpoint)>, String> {
    let mut config = client_config(kafka);
    config
        .set("group.id", format!("edge-outbox-checkpoint-{instance}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<KafkaContext> = config
        .create_with_context(KafkaContext::new(tokens))
        .map_err(|e| format!("creating the checkpoint consumer: {e}"))?;
    let deadline = Instant::now() + timeout;
    let (low, high) = consumer
        .fetch_watermarks(topic, PARTITION, timeout)
        .map_err(|e| format!("reading the end of {topic}: {e}"))?;
    let first = mark.map_or(low, |m| (m + 1).max(low));
    if first >= high {
        return Ok(Vec::new());
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, PARTITION, Offset::Offset(first))
        .map_err(|e| e.to_string())?;
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "reading the checkpoints in {topic} did not reach offset {high} within {timeout:?}"
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            // With read_committed the end is the last stable offset: open transactions of other
            // stores, under way at the start, hold it below the end seen then until they finish.
            // The position passes aborted records and transaction markers.
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let position = (consumer.position().ok())
                    .and_then(|p| (p.find_partition(topic, PARTITION))?.offset().to_raw())
                    .unwrap_or(first);
                if position >= high {
                    return Ok(found);
                }
            }
            Some(Err(e)) => return Err(format!("reading the checkpoints in {topic}: {e}")),
            Some(Ok(message)) => {
                if message.key() == Some(instance.as_bytes()) {
                    let offset = message.offset();
                    let checkpoint: Checkpoint =
                        serde_json::from_slice(message.payload().unwrap_or_default())
                            .map_err(|e| format!("checkpoint at offset {offset}: {e}"))?;
                    found.push((offset, checkpoint));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_become_ranges_and_back() {
        let seqs = [1, 2, 3, 7, 9, 10];
        let ranges = ranges(&seqs);
        assert_eq!(ranges, vec![(1, 3), (7, 7), (9, 10)]);
        let checkpoint = Checkpoint {
            instance: "i".into(),
            ranges,
            digest: String::new(),
        };
        assert_eq!(checkpoint.seqs().collect::<Vec<_>>(), seqs);
    }

    #[test]
    fn the_digest_tells_other_records_apart() {
        let a = digest([(1, "s".to_string(), "a".to_string())].into_iter());
        let b = digest([(1, "s".to_string(), "b".to_string())].into_iter());
        let c = digest([(2, "s".to_string(), "a".to_string())].into_iter());
        assert_eq!(a.len(), 24);
        assert!(a != b && a != c);
    }

    #[test]
    fn the_mark_is_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_mark(dir.path()), None);
        write_mark(dir.path(), 41).unwrap();
        assert_eq!(read_mark(dir.path()), Some(41));
    }
}
