#[path = "../../tests/common/files.rs"]
mod files;

use super::config::RotationObserver;
use super::*;
use crate::clock::now_ms;
use crate::message::Message;
pub(crate) use files::copy_dir;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(super) fn record(source: &str, id: &str, tenant: &str) -> Record {
    Record {
        appended_ms: now_ms(),
        event_id: id.into(),
        event_source: source.into(),
        event_type: "eventzr.integration-hub.sync.started.v1".into(),
        message: Message {
            topic: "eventzr.integration-hub.sync.started.v1".into(),
            key: tenant.into(),
            headers: vec![("ce_id".into(), id.as_bytes().to_vec())],
            payload: vec![b'x'; 100],
        },
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig::new(dir)).unwrap()
}

#[tokio::test]
async fn appended_events_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let answers = store
        .append(vec![record("s", "1", "a"), record("s", "2", "b")])
        .await
        .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    store.close().await;
    drop(store);
    let store = open(dir.path());
    let stats = store.stats();
    assert_eq!(stats.backlog_events, 2);
    assert_eq!(stats.next_seq, 3);
    let batch = store.read_batch(0, 10, u64::MAX, |_, _| false).unwrap();
    let ids: Vec<_> = batch
        .records
        .iter()
        .map(|r| r.view().event_id.to_string())
        .collect();
    assert_eq!(ids, vec!["1", "2"]);
    assert_eq!(batch.bytes, stats.backlog_bytes);
}

#[tokio::test]
async fn duplicates_get_the_same_answer_and_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.append(vec![record("s", "1", "a")]).await.unwrap();
    let again = store
        .append(vec![
            record("s", "1", "a"),
            record("s", "2", "a"),
            record("s", "2", "a"),
        ])
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Appended {
            seq: first[0].seq,
            duplicate: true
        }
    );
    assert!(!again[1].duplicate);
    assert_eq!(
        again[2],
        Appended {
            seq: again[1].seq,
            duplicate: true
        }
    );
    assert_eq!(store.stats().backlog_events, 2);
    // Still a duplicate after delivery.
    store.confirm(vec![first[0].seq]).await.unwrap();
    let after = store.append(vec![record("s", "1", "a")]).await.unwrap();
    assert_eq!(
        after[0],
        Appended {
            seq: first[0].seq,
            duplicate: true
        }
    );
    assert_eq!(store.stats().backlog_events, 1);
    // Another source with the same id is another event.
    let other = store.append(vec![record("t", "1", "a")]).await.unwrap();
    assert!(!other[0].duplicate);
}

#[tokio::test]
async fn a_pair_appended_again_after_the_dedup_window_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.dedup_window = Duration::from_millis(1);
    let store = Store::open(config).unwrap();
    let mut old = record("s", "1", "a");
    old.appended_ms -= 10_000;
    let first = store.append(vec![old]).await.unwrap();
    let second = store.append(vec![record("s", "1", "a")]).await.unwrap();
    assert!(!second[0].duplicate);
    assert_ne!(first[0].seq, second[0].seq);
}

#[tokio::test]
async fn backlog_limit_refuses_whole_request_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.max_backlog_events = 3;
    let store = Store::open(config).unwrap();
    store
        .append(vec![record("s", "1", "a"), record("s", "2", "a")])
        .await
        .unwrap();
    let before = store.stats();
    let err = store
        .append(vec![record("s", "3", "a"), record("s", "4", "a")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BacklogFull { events: 2, .. }));
    assert_eq!(store.stats(), before);
    // A duplicate of a stored event is still answered while full.
    store.append(vec![record("s", "3", "a")]).await.unwrap();
    let dup = store.append(vec![record("s", "1", "a")]).await.unwrap();
    assert!(dup[0].duplicate);
    // Draining makes room again.
    store.confirm(vec![1, 2]).await.unwrap();
    store.append(vec![record("s", "4", "a")]).await.unwrap();
    assert_eq!(store.stats().backlog_events, 2);
    assert_eq!(store.stats().cursor, 2);
}

#[tokio::test]
async fn parked_records_can_be_replayed_or_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(vec![record("s", "1", "a"), record("s", "2", "a")])
        .await
        .unwrap();
    store.park(1, "MessageSizeTooLarge".into()).await.unwrap();
    assert_eq!(store.stats().dead_letters, 1);
    assert_eq!(store.stats().backlog_events, 1);
    let dead = store.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "MessageSizeTooLarge");
    assert_eq!(
        store.park(1, "again".into()).await,
        Err(StoreError::NotFound(1))
    );
    let new_seq = store.replay(1).await.unwrap();
    assert_eq!(new_seq, 3);
    assert_eq!(store.record(3).unwrap().unwrap().event_id, "1");
    assert_eq!(store.stats().dead_letters, 0);
    assert_eq!(store.replay(1).await, Err(StoreError::NotFound(1)));
    store.park(2, "x".into()).await.unwrap();
    store.purge(2).await.unwrap();
    assert_eq!(store.purge(2).await, Err(StoreError::NotFound(2)));
    assert!(store.dead_letters(0, 10).unwrap().is_empty());
    assert_eq!(store.stats().backlog_events, 1);
}

#[tokio::test]
async fn concurrent_appenders_share_commits_and_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for client in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let r = record("s", &format!("{client}-{i}"), &format!("t{client}"));
                seqs.push(store.append(vec![r]).await.unwrap()[0].seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-client order");
        all.extend(seqs);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 64 * 20);
    assert_eq!(store.stats().backlog_events, 64 * 20);
}

#[tokio::test]
async fn read_batch_respects_limits_skip_and_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let events: Vec<_> = (0..10).map(|i| record("s", &i.to_string(), "a")).collect();
    store.append(events).await.unwrap();
    let batch = store.read_batch(0, 4, u64::MAX, |_, _| false).unwrap();
    assert_eq!(batch.records.len(), 4);
    let one = batch.bytes / 4;
    let batch = store.read_batch(0, 100, one * 2, |_, _| false).unwrap();
    assert_eq!(batch.records.len(), 2);
    let batch = store
        .read_batch(0, 100, u64::MAX, |seq, _| seq % 2 == 0)
        .unwrap();
    assert_eq!(batch.records.len(), 5);
    assert_eq!(batch.skipped, 5, "what skip left out is counted");
    let batch = store.read_batch(0, 100, u64::MAX, |_, _| true).unwrap();
    assert_eq!((batch.records.len(), batch.skipped), (0, 10));
    let batch = store.read_batch(8, 100, u64::MAX, |_, _| false).unwrap();
    assert_eq!(
        batch.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    // Flip bytes of record 5 behind the store's back.
    store.close().await;
    drop(store);
    flip_record_bytes(dir.path(), 5);
    let store = open(dir.path());
    let batch = store.read_batch(0, 100, u64::MAX, |_, _| false).unwrap();
    assert_eq!(batch.records.len(), 9);
    assert_eq!(batch.corrupt.len(), 1);
    assert_eq!(batch.corrupt[0].0, 5);
    assert!(matches!(batch.corrupt[0].1, RecordError::Checksum { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_a_growing_tail_chunk_never_repeat_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .append(vec![record("s", &i.to_string(), "a")])
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let batch = store.read_batch(0, 1000, u64::MAX, |_, _| false).unwrap();
        let seqs: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        let mut sorted = seqs.clone();
        sorted.dedup();
        assert_eq!(seqs, sorted, "a record was read twice in one batch");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let all = store.read_batch(0, 1000, u64::MAX, |_, _| false).unwrap();
    assert_eq!(all.records.len(), 300);
}

fn sized(source: &str, id: &str, bytes: usize) -> Record {
    let mut r = record(source, id, "a");
    r.message.payload = vec![b'p'; bytes];
    r
}

/// Sequence numbers of everything undelivered, in order.
fn backlog_seqs(store: &Store) -> Vec<u64> {
    store
        .read_batch(0, usize::MAX, u64::MAX, |_, _| false)
        .unwrap()
        .records
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn rotating_config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.rotate_min_bytes = 1024 * 1024;
    config
}

#[tokio::test]
async fn rotation_gives_disk_space_back_after_a_drain_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(rotating_config(dir.path())).unwrap();
    for batch in 0..40 {
        let events = (0..100)
            .map(|i| sized("s", &format!("{batch}-{i}"), 1024))
            .collect();
        store.append(events).await.unwrap();
    }
    store.park(7, "parked by the test".into()).await.unwrap();
    let grown = store.disk_bytes();
    let all = backlog_seqs(&store);
    assert_eq!(all.len(), 3999);
    store.confirm(all[..3000].to_vec()).await.unwrap();
    let seqs = all[3000..].to_vec();
    // Rotation while 999 events wait: they stay in the old generation and drain from there.
    store.maintain().await.unwrap();
    assert_eq!(store.generations(), vec![1, 2]);
    let later = store.append(vec![sized("s", "late", 1024)]).await.unwrap()[0].seq;
    assert_eq!(backlog_seqs(&store), [seqs.clone(), vec![later]].concat());
    store.confirm(seqs).await.unwrap();
    store.maintain().await.unwrap();
    assert_eq!(store.generations(), vec![2]);
    assert_eq!(backlog_seqs(&store), vec![later]);
    let drained = store.disk_bytes();
    assert!(
        drained * 2 < grown,
        "disk use {drained} after the drain, {grown} before"
    );
    // Dead letters, de-duplication and counters came along.
    assert_eq!(
        store.dead_letter(7).unwrap().unwrap().error,
        "parked by the test"
    );
    let again = store.append(vec![sized("s", "0-3", 1024)]).await.unwrap();
    assert_eq!(
        again[0],
        Appended {
            seq: 4,
            duplicate: true
        }
    );
    let stats = store.stats();
    assert_eq!((stats.backlog_events, stats.dead_letters), (1, 1));
    store.close().await;
    drop(store);
    let store = Store::open(rotating_config(dir.path())).unwrap();
    assert_eq!(store.generations(), vec![2]);
    assert_eq!(backlog_seqs(&store), vec![later]);
    assert_eq!(store.stats().next_seq, later + 1);
}

#[tokio::test]
async fn a_crash_at_any_step_of_a_rotation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let images = dir.path().join("images");
    let mut config = rotating_config(&data);
    let images_for_observer = images.clone();
    config.rotation_observer = Some(RotationObserver(Arc::new(move |root, step| {
        copy_dir(root, &images_for_observer.join(format!("{step:?}")));
    })));
    let store = Store::open(config).unwrap();
    for batch in 0..40 {
        let events = (0..100)
            .map(|i| sized("s", &format!("{batch}-{i}"), 1024))
            .collect();
        store.append(events).await.unwrap();
    }
    // Delivered enough that the generation is more than twice the backlog: it rotates.
    store.confirm((1..=3000).collect()).await.unwrap();
    store.park(3100, "parked".into()).await.unwrap();
    let before: Vec<u64> = backlog_seqs(&store);
    store.maintain().await.unwrap();
    let new = store
        .append(
            (0..10)
                .map(|i| sized("s", &format!("new-{i}"), 1024))
                .collect(),
        )
        .await
        .unwrap();
    let new: Vec<u64> = new.iter().map(|a| a.seq).collect();
    store.confirm(before.clone()).await.unwrap();
    store.maintain().await.unwrap();
    store.close().await;

    let steps = [
        (RotationStep::NewGenerationWritten, before.clone()),
        (RotationStep::Switched, before.clone()),
        (RotationStep::OldGenerationDropped, new.clone()),
        (RotationStep::OldGenerationRemoved, new.clone()),
    ];
    for (step, expected) in steps {
        let image = images.join(format!("{step:?}"));
        assert!(image.exists(), "no image taken at {step:?}");
        let store = Store::open(StoreConfig::new(&image)).unwrap();
        assert_eq!(
            backlog_seqs(&store),
            expected,
            "backlog after a crash at {step:?}"
        );
        assert_eq!(store.dead_letters(0, 10).unwrap().len(), 1, "at {step:?}");
        let again = store.append(vec![sized("s", "0-1", 1024)]).await.unwrap();
        assert_eq!(
            again[0],
            Appended {
                seq: 2,
                duplicate: true
            },
            "at {step:?}"
        );
        assert_eq!(
            store.generations().len(),
            1 + usize::from(step == RotationStep::Switched)
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_disk_limit_refuses_appends_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.max_disk_bytes = 1;
    let store = Store::open(config).unwrap();
    let err = store.append(vec![record("s", "1", "a")]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::DiskLimit { limit: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("store.max_disk_bytes"));
    assert_eq!(store.stats().backlog_events, 0);
    assert!(backlog_seqs(&store).is_empty());
}

#[tokio::test]
async fn a_missing_generation_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(vec![record("s", "1", "a")]).await.unwrap();
    store.close().await;
    drop(store);
    std::fs::remove_dir_all(generation::dir_of(dir.path(), 1)).unwrap();
    let err = Store::open(StoreConfig::new(dir.path())).err().unwrap();
    assert!(err.to_string().contains("generation 1"), "{err}");
    assert!(!generation::dir_of(dir.path(), 1).exists());
}

/// The sled writes of appends, gathered while they wait (`writes.rs`), reach sled without any
/// further command: a store left idle after an append has its `log_end` in sled past that
/// append soon after (so that an open restores little from the log).
#[tokio::test]
async fn gathered_sled_writes_are_applied_while_the_store_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = StoreConfig::new(&data);
    config.checkpoint_every = Duration::from_millis(20);
    let store = Store::open(config).unwrap();
    let log_end_in_sled = |n: u32| {
        let image = dir.path().join(format!("image-{n}"));
        copy_dir(&data, &image);
        let (generation, _) = Generation::open(&image, 1, 1 << 20).unwrap();
        let value = generation.tree().get(keys::meta(keys::LOG_END)).unwrap();
        keys::decode_log_end(&value.unwrap()).unwrap()
    };
    let before = log_end_in_sled(0);
    store.append(vec![record("s", "1", "a")]).await.unwrap();
    // Nothing announces a write reaching sled's file: look at copies until one shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for n in 1.. {
        let now = log_end_in_sled(n);
        if now != before {
            assert!(now > before, "{now:?} after {before:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sled never saw the append"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.close().await;
}

/// Confirmations that come in while appends keep the committer busy checkpoint the sled writes
/// of the appends before them, which may still wait gathered (`writes.rs`): a crash image
/// taken right after the last confirmation opens with exactly the undelivered records and
/// counters. (Timing decides which groups meet here; the committer's own test drives the
/// case of a confirmation meeting gathered writes group by group.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_amid_appends_checkpoint_the_gathered_sled_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = StoreConfig::new(&data);
    config.checkpoint_every = Duration::from_secs(3600);
    let store = Store::open(config).unwrap();
    let appending = Arc::new(AtomicBool::new(true));
    let mut appenders = Vec::new();
    for client in 0..64 {
        let store = store.clone();
        appenders.push(tokio::spawn(async move {
            for i in 0..30 {
                let r = record("s", &format!("{client}-{i}"), &format!("t{client}"));
                store.append(vec![r]).await.unwrap();
            }
        }));
    }
    let confirmer = {
        let (store, appending) = (store.clone(), appending.clone());
        tokio::spawn(async move {
            let (mut from, mut confirmed, mut rounds) = (0, 0u64, 0);
            while appending.load(Ordering::SeqCst) {
                let batch = store.read_batch(from, 40, u64::MAX, |_, _| false).unwrap();
                let Some(last) = batch.records.last().map(|r| r.seq) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                // Every other record, so that chunks are left partly delivered.
                let seqs: Vec<u64> = batch
                    .records
                    .iter()
                    .map(|r| r.seq)
                    .filter(|s| s % 2 == 0)
                    .collect();
                confirmed += seqs.len() as u64;
                store.confirm(seqs).await.unwrap();
                from = last + 1;
                rounds += 1;
            }
            (confirmed, rounds)
        })
    };
    for appender in appenders {
        appender.await.unwrap();
    }
    appending.store(false, Ordering::SeqCst);
    let (confirmed, rounds) = confirmer.await.unwrap();
    assert!(
        rounds > 1 && confirmed > 0,
        "{rounds} rounds, {confirmed} confirmed"
    );
    // The last word is a confirmation, so that everything is durable in sled.
    let last = store.read_batch(0, 1, u64::MAX, |_, _| false).unwrap();
    store.confirm(vec![last.records[0].seq]).await.unwrap();
    let expected = backlog_seqs(&store);
    let stats = store.stats();
    assert_eq!(stats.backlog_events, 64 * 30 - confirmed - 1);
    let image = dir.path().join("crash");
    copy_dir(&data, &image);
    store.close().await;
    drop(store);

    let reopened = open(&image);
    assert_eq!(backlog_seqs(&reopened), expected);
    assert_eq!(reopened.stats(), stats);
    reopened.close().await;
}

/// Appends are durable in the segment files before sled is: a crash image taken after
/// acknowledged appends but before any checkpoint opens with every one of them, their
/// de-duplication entries and counters, and a group torn by the crash is ignored.
#[tokio::test]
async fn appends_after_the_last_checkpoint_are_restored_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = StoreConfig::new(&data);
    config.checkpoint_every = Duration::from_secs(3600);
    let store = Store::open(config).unwrap();
    // A confirmation is a checkpoint: the first two events are in sled, the rest only in the log.
    store
        .append(vec![record("s", "0", "a"), record("s", "1", "a")])
        .await
        .unwrap();
    store.confirm(vec![1]).await.unwrap();
    for i in 2..12 {
        let ids = [format!("{i}a"), format!("{i}b")];
        store
            .append(ids.iter().map(|id| record("s", id, "t")).collect())
            .await
            .unwrap();
    }
    let expected = backlog_seqs(&store);
    let stats = store.stats();
    assert_eq!(expected.len(), 21);
    let image = dir.path().join("crash");
    copy_dir(&data, &image);
    store.close().await;

    // The crash also cut a group short at the end of the log: garbage after the last group.
    let segments = generation::segments_dir(&generation::dir_of(&image, 1));
    let newest = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    std::io::Write::write_all(&mut torn, &[0xFE, 0xED, 0x0B, 0x0C, 1, 2, 3]).unwrap();
    drop(torn);

    // Offline inspection sees them too (it reads the log after sled's checkpoint).
    let summary = inspect::Inspector::open(&image).unwrap().summary().unwrap();
    assert_eq!(
        (summary.backlog_events, summary.next_seq),
        (stats.backlog_events, stats.next_seq)
    );

    let store = open(&image);
    assert_eq!(backlog_seqs(&store), expected);
    assert_eq!(store.stats(), stats);
    let again = store.append(vec![record("s", "5b", "t")]).await.unwrap();
    assert_eq!(
        again[0],
        Appended {
            seq: 10,
            duplicate: true
        }
    );
    let new = store.append(vec![record("s", "new", "t")]).await.unwrap();
    assert_eq!(
        new[0],
        Appended {
            seq: stats.next_seq,
            duplicate: false
        }
    );
    let batch = store.read_batch(0, 100, u64::MAX, |_, _| false).unwrap();
    assert!(batch.corrupt.is_empty());
    assert_eq!(batch.records.len(), 22);
    store.close().await;
    drop(store);
    // Restored once, then named in sled: a second open finds the same.
    let store = open(&image);
    assert_eq!(store.stats().backlog_events, 22);
    store.close().await;
}

/// A generation's log is cut into segment files; one whose records are all delivered is
/// deleted (disk comes back without a rotation), and one still holding an undelivered record
/// is kept.
#[tokio::test]
async fn delivered_segment_files_are_deleted_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.segment_bytes = 32 * 1024;
    let store = Store::open(config).unwrap();
    for batch in 0..6 {
        let events = (0..40)
            .map(|i| sized("s", &format!("{batch}-{i}"), 1024))
            .collect();
        store.append(events).await.unwrap();
    }
    let segments = generation::segments_dir(&generation::dir_of(dir.path(), 1));
    let files = || {
        let mut ids = segment::segment_ids(&segments).unwrap();
        ids.sort_unstable();
        ids
    };
    let before = files();
    assert!(before.len() >= 5, "one file per group: {before:?}");
    // Deliver everything but one event of the second group: only its file stays.
    let keep = 41;
    let all = backlog_seqs(&store);
    store
        .confirm(all.iter().copied().filter(|s| *s != keep).collect())
        .await
        .unwrap();
    store.maintain().await.unwrap();
    let after = files();
    // The second group's file and the file being written stay.
    assert_eq!(after, vec![before[1], *before.last().unwrap()]);
    assert_eq!(backlog_seqs(&store), vec![keep]);
    let record = store.record(keep).unwrap().unwrap();
    assert_eq!(record.event_id, "1-0");
    store.close().await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(backlog_seqs(&store), vec![keep]);
}

#[tokio::test]
async fn dead_letters_an_earlier_release_kept_in_the_main_tree_are_moved_to_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seq = store.append(vec![record("s", "1", "a")]).await.unwrap()[0].seq;
    store.close().await;
    drop(store);
    // As the release before wrote a parked record: in the main tree, under `d`.
    {
        let (generation, _) = Generation::open(dir.path(), 1, 1 << 20).unwrap();
        let raw = record::encode(&record("s", "parked", "a"));
        let dead = DeadLetter {
            seq: seq + 1,
            raw,
            error: "refused".into(),
            parked_ms: now_ms(),
        };
        let tree = generation.tree();
        tree.insert(keys::dead(seq + 1), record::encode(&dead))
            .unwrap();
        tree.insert(keys::meta("next_seq"), &(seq + 2).to_be_bytes())
            .unwrap();
        tree.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.stats().dead_letters, 1);
    let letters = store.dead_letters(0, 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "refused");
    assert_eq!(store.replay(seq + 1).await.unwrap(), seq + 2);
    assert_eq!(store.stats().dead_letters, 0);
    assert_eq!(store.stats().backlog_events, 2);
    store.close().await;
    drop(store);
    let (generation, _) = Generation::open(dir.path(), 1, 1 << 20).unwrap();
    assert_eq!(generation.tree().scan_prefix([keys::DEAD]).count(), 0);
    assert_eq!(generation.dead().len(), 0);
}

/// Flips two bytes in the middle of the stored record `seq` of a stopped store.
pub(crate) fn flip_record_bytes(dir: &std::path::Path, seq: u64) {
    let inspector = inspect::Inspector::open(dir).unwrap();
    let at = inspector.locate(seq).unwrap();
    drop(inspector);
    files::flip_bytes(&at.file, at.offset + u64::from(at.len) / 2);
}

mod tenants {
    use super::*;
    use crate::store::TenantShare;

    fn tenant_of(store: &Store, tenant: &str) -> (u64, u64) {
        let largest = store.largest_tenants(usize::MAX);
        largest
            .iter()
            .find(|t| t.tenant == tenant)
            .map_or((0, 0), |t| (t.events, t.bytes))
    }

    #[tokio::test]
    async fn a_tenant_over_its_share_is_refused_while_others_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.max_backlog_events = 10;
        config.max_backlog_events_per_tenant = TenantShare::Fraction(0.3);
        let store = Store::open(config).unwrap();
        let noisy: Vec<Record> = (0..3)
            .map(|i| record("s", &format!("n{i}"), "noisy"))
            .collect();
        store.append(noisy).await.unwrap();
        let before = store.stats();
        let err = store
            .append(vec![record("s", "q1", "quiet"), record("s", "n3", "noisy")])
            .await
            .unwrap_err();
        let StoreError::TenantBacklogFull {
            tenant,
            events,
            limit,
            unit,
            ..
        } = &err
        else {
            panic!("not a tenant refusal: {err:?}");
        };
        assert_eq!(
            (tenant.as_str(), *events, *limit, *unit),
            ("noisy", 3, 3, "events")
        );
        assert!(err
            .to_string()
            .contains("store.max_backlog_events_per_tenant"));
        assert_eq!(store.stats(), before, "the whole request is refused");
        assert_eq!(tenant_of(&store, "quiet"), (0, 0));
        // The others go on up to the global limit; a duplicate of the noisy one is answered.
        store
            .append(vec![record("s", "q1", "quiet")])
            .await
            .unwrap();
        assert!(
            store
                .append(vec![record("s", "n0", "noisy")])
                .await
                .unwrap()[0]
                .duplicate
        );
        // Delivering the noisy tenant's events makes room for it again.
        store.confirm(vec![1]).await.unwrap();
        assert_eq!(tenant_of(&store, "noisy").0, 2);
        store
            .append(vec![record("s", "n3", "noisy")])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_backlog_per_tenant_is_counted_again_on_open_and_through_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut events = Vec::new();
        for i in 0..5 {
            events.push(record("s", &format!("a{i}"), "a"));
        }
        events.push(record("s", "b0", "b"));
        store.append(events).await.unwrap();
        let a = tenant_of(&store, "a");
        assert_eq!(a.0, 5);
        store.confirm(vec![1]).await.unwrap();
        store.park(2, "test".into()).await.unwrap();
        assert_eq!(tenant_of(&store, "a").0, 3);
        store.close().await;
        drop(store);

        let store = open(dir.path());
        assert_eq!(tenant_of(&store, "a"), (3, a.1 / 5 * 3));
        assert_eq!(tenant_of(&store, "b").0, 1);
        assert_eq!(store.tenants_with_backlog(), 2);
        let replayed = store.replay(2).await.unwrap();
        assert_eq!(tenant_of(&store, "a").0, 4);
        store.confirm(vec![3, 4, 5, 6, replayed]).await.unwrap();
        assert_eq!(store.tenants_with_backlog(), 0);
        assert!(store.largest_tenants(10).is_empty());
    }

    #[tokio::test]
    async fn tenants_beyond_the_tracked_ones_share_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.max_tracked_tenants = 2;
        config.max_backlog_events_per_tenant = TenantShare::Amount(2);
        let store = Store::open(config).unwrap();
        for (id, tenant) in [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d")] {
            store.append(vec![record("s", id, tenant)]).await.unwrap();
        }
        let largest = store.largest_tenants(10);
        assert_eq!(largest[0].tenant, "", "c and d share the untracked account");
        assert_eq!(largest[0].events, 2);
        let err = store.append(vec![record("s", "5", "e")]).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::TenantBacklogFull { tenant, .. } if tenant.is_empty()),
            "{err:?}"
        );
        store.append(vec![record("s", "6", "a")]).await.unwrap();
    }

    #[tokio::test]
    async fn a_fair_read_gives_every_tenant_room_and_keeps_each_tenants_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let noisy: Vec<Record> = (0..500)
            .map(|i| record("s", &format!("noisy-{i}"), "noisy"))
            .collect();
        store.append(noisy).await.unwrap();
        for t in 0..10 {
            let quiet: Vec<Record> = (0..10)
                .map(|i| record("s", &format!("q{t}-{i}"), &format!("quiet-{t}")))
                .collect();
            store.append(quiet).await.unwrap();
        }
        let keys = |batch: &ReadBatch| -> Vec<(String, u64)> {
            (batch.records.iter())
                .map(|r| (r.key().to_string(), r.seq))
                .collect()
        };
        let strict = store.read_batch(0, 200, u64::MAX, |_, _| false).unwrap();
        assert!(keys(&strict).iter().all(|(k, _)| k == "noisy"));

        let fair = store
            .read_fair_batch_with(0, 200, u64::MAX, &[], |_, _| Some(()))
            .unwrap();
        let got = keys(&fair);
        assert_eq!(got.len(), 200);
        let noisy: Vec<u64> = (got.iter())
            .filter(|(k, _)| k == "noisy")
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(noisy, (1..=100).collect::<Vec<u64>>(), "a prefix, in order");
        for t in 0..10 {
            let quiet = got.iter().filter(|(k, _)| *k == format!("quiet-{t}"));
            assert_eq!(quiet.count(), 10, "quiet-{t} gets all it holds");
        }
        assert_eq!(fair.deferred, 400);

        // The next batch, read while this one is in flight, goes on with each tenant's next.
        let in_flight: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
        let mut exclude = in_flight.clone();
        exclude.sort_unstable();
        let next = store
            .read_fair_batch_with(0, 200, u64::MAX, &exclude, |_, _| Some(()))
            .unwrap();
        let seqs: Vec<u64> = next.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (101..=300).collect::<Vec<u64>>());
        // Byte shares too: a batch of 20 records' bytes leaves room for the quiet tenants.
        let size = strict.records[0].raw().len() as u64;
        let by_bytes = store
            .read_fair_batch_with(0, 10_000, 110 * size, &[], |_, _| Some(()))
            .unwrap();
        let quiet = (by_bytes.records.iter()).filter(|r| r.key() != "noisy");
        assert_eq!(quiet.count(), 100);
    }
}

/// While appends keep coming, a commit group waits `commit_delay` for the next ones: 40 appends
/// 2 ms apart share a few syncs instead of one each (each is still answered only after its
/// group's sync). Without the delay, each would be its own group here (a sync takes well under
/// 2 ms on the test machines).
#[tokio::test]
async fn appends_that_keep_coming_share_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.commit_delay = Duration::from_millis(100);
    let store = Arc::new(Store::open(config).unwrap());
    let groups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = groups.clone();
    store.set_flush_observer(Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let mut appends = Vec::new();
    for i in 0..40u64 {
        let store = store.clone();
        appends.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2 * i)).await;
            store
                .append(vec![record("s", &i.to_string(), "t")])
                .await
                .unwrap()
        }));
    }
    for append in appends {
        append.await.unwrap();
    }
    let groups = groups.load(Ordering::SeqCst);
    assert!(groups <= 20, "40 appends took {groups} commit groups");
    assert_eq!(store.stats().next_seq, 41);
}
