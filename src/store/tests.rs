use super::*;
use crate::event::kafka::KafkaMessage;

fn record(source: &str, id: &str, tenant: &str) -> Record {
    Record {
        appended_ms: now_ms(),
        event_id: id.into(),
        event_source: source.into(),
        event_type: "eventzr.integration-hub.sync.started.v1".into(),
        message: KafkaMessage {
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
        .map(|(_, r)| r.event_id.clone())
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
async fn dedup_window_expires() {
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
async fn park_replay_purge() {
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
    let batch = store.read_batch(8, 100, u64::MAX, |_, _| false).unwrap();
    assert_eq!(
        batch.records.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    // Flip a byte of record 5 behind the store's back.
    let mut value = store.tree.get(keys::event(5)).unwrap().unwrap().to_vec();
    let last = value.len() - 1;
    value[last] ^= 1;
    store.tree.insert(keys::event(5), value).unwrap();
    let batch = store.read_batch(0, 100, u64::MAX, |_, _| false).unwrap();
    assert_eq!(batch.records.len(), 9);
    assert_eq!(batch.corrupt.len(), 1);
    assert_eq!(batch.corrupt[0].0, 5);
    assert!(matches!(batch.corrupt[0].1, RecordError::Checksum { .. }));
}
