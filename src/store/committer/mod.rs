//! The single writer of the store: it takes every queued command at once (a commit group),
//! plans what the group changes (`plan.rs`), writes it (the log first, then sled; see the
//! durability protocol in [`super`]) and only then answers each command and publishes the new
//! counters and index. Between groups it does the upkeep (`upkeep.rs`): expiring
//! de-duplication entries, deleting delivered segment files, rotating generations. One writer
//! also sidesteps sled's `flush_async` deadlock with many concurrent callers (sled #1308).

mod pacing;
mod plan;
mod upkeep;

use super::checkpointer::Checkpointer;
use super::commands::{answer, Answer, Command, Reply};
use super::config::StoreConfig;
use super::dedup::{self, DedupIndex};
use super::error::StoreError;
use super::keys;
use super::live::{apply_to, Live};
use super::recovery::Recovered;
use super::shared::{ChunkEntry, Shared, Stats};
use super::writes::Writes;
use pacing::Pacer;
use plan::Group;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most commands in one commit group.
const MAX_GROUP: usize = 4096;
/// The sled writes of appends wait, gathered (see [`super::writes`]), until the committer has
/// nothing queued and they are this old...
const APPLY_IDLE: Duration = Duration::from_millis(10);
/// ...or, while commit groups keep coming, until they are this old.
const APPLY_EVERY: Duration = Duration::from_millis(50);

pub(super) struct Committer {
    config: StoreConfig,
    active: Live,
    /// The previous generation while it still holds undelivered chunks.
    draining: Option<Live>,
    stats: Stats,
    shared: Arc<Shared>,
    dedup: DedupIndex,
    last_rotation_check: Instant,
    /// `maintain` callers waiting for the next generation check.
    maintain_requests: Vec<Reply<()>>,
    /// Bytes written to the active generation since it was opened.
    written_since_open: u64,
    /// sled writes of committed appends not yet applied to the active generation, and since
    /// when they wait.
    deferred: Writes,
    deferred_since: Option<Instant>,
    /// How long a group of appends waits for more before its sync.
    pacer: Pacer,
}

impl Committer {
    /// The committer of a store opened as `recovered`, with the state it shares with readers.
    pub(super) fn new(config: StoreConfig, recovered: Recovered) -> (Committer, Arc<Shared>) {
        let shared = Arc::new(Shared::new(
            recovered.stats,
            recovered.index,
            recovered.tenants,
        ));
        let committer = Committer {
            active: recovered.active,
            draining: recovered.draining,
            stats: recovered.stats,
            shared: shared.clone(),
            dedup: recovered.dedup,
            last_rotation_check: Instant::now(),
            maintain_requests: Vec::new(),
            written_since_open: 0,
            deferred: Writes::default(),
            deferred_since: None,
            pacer: Pacer::new(config.commit_delay),
            config,
        };
        (committer, shared)
    }

    pub(super) fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut checkpointer =
            match Checkpointer::start(self.shared.clone(), self.config.checkpoint_every) {
                Ok(checkpointer) => Some(checkpointer),
                Err(e) => {
                    // Appends still make sled durable whenever anything else is committed.
                    tracing::error!(error = %e, "starting the checkpoint thread failed");
                    None
                }
            };
        loop {
            let first = match self.deferred_since {
                None => match commands.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
                // Gathered sled writes wait. Applied while nothing is queued, they delay no one:
                // the first moment without commands once they are APPLY_IDLE old applies them
                // (groups that keep coming apply them at APPLY_EVERY, in `write_group`).
                Some(since) => match commands.try_recv() {
                    Ok(command) => command,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        match commands.recv_timeout(APPLY_IDLE.saturating_sub(since.elapsed())) {
                            Ok(command) => command,
                            Err(RecvTimeoutError::Timeout) => {
                                // A failure breaks the store; what was acknowledged is in the log.
                                if let Err(reason) = self.apply_deferred(false) {
                                    self.shared.mark_broken(&reason);
                                }
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            };
            let group = self.gather(first, &commands);
            if self.commit(group) {
                break;
            }
            if !self.shared.is_broken() {
                let forced = !self.maintain_requests.is_empty();
                self.maintain_generations(forced);
            }
            let outcome = match self.shared.is_broken() {
                false => Ok(()),
                true => Err(StoreError::Unavailable(self.shared.broken_reason())),
            };
            for reply in self.maintain_requests.drain(..) {
                let _ = reply.send(outcome.clone());
            }
        }
        if let Some(checkpointer) = &mut checkpointer {
            checkpointer.stop();
        }
        // The last checkpoint, whatever state the store is in (errors only mean that the next
        // open restores more from the log).
        let _ = self.apply_deferred(true);
    }

    /// The commit group that starts with `first`: the commands queued behind it, and while
    /// appends arrive often, those that arrive within `store.commit_delay` of its oldest append
    /// (see [`Pacer`]).
    fn gather(&mut self, first: Command, commands: &mpsc::Receiver<Command>) -> Vec<Command> {
        let mut group = Vec::new();
        self.add(&mut group, first);
        self.add_queued(&mut group, commands);
        let oldest = (group.iter())
            .filter_map(|command| match command {
                Command::Append { queued, .. } => Some(*queued),
                _ => None,
            })
            .min();
        let Some(until) = oldest.and_then(|oldest| self.pacer.gather_until(oldest)) else {
            return group;
        };
        // Asleep rather than waiting on the queue: the appends that come meanwhile wake no one.
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let gathered = self.add_queued(&mut group, commands);
        self.pacer.waited(gathered);
        group
    }

    /// Adds what is queued to `group` (up to [`MAX_GROUP`]); returns how many appends it added.
    fn add_queued(
        &mut self,
        group: &mut Vec<Command>,
        commands: &mpsc::Receiver<Command>,
    ) -> usize {
        let mut appends = 0;
        while group.len() < MAX_GROUP {
            let Ok(command) = commands.try_recv() else {
                break;
            };
            appends += usize::from(self.add(group, command));
        }
        appends
    }

    /// Adds `command` to `group`, telling the pacer when it is an append (and returning true).
    fn add(&mut self, group: &mut Vec<Command>, command: Command) -> bool {
        let append = match &command {
            Command::Append { queued, .. } => {
                self.pacer.arrived(*queued);
                true
            }
            _ => false,
        };
        group.push(command);
        append
    }

    /// Applies the gathered sled writes of appends to the active generation as one batch; with
    /// `durable`, flushes sled and syncs it (a checkpoint). Without, the checkpointer makes
    /// them durable.
    fn apply_deferred(&mut self, durable: bool) -> Result<(), String> {
        self.deferred_since = None;
        if self.deferred.is_empty() && !durable {
            return Ok(());
        }
        self.active
            .write(std::mem::take(&mut self.deferred), durable)?;
        if !durable {
            self.shared.unsynced.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Commits one group; true when it held a stop command.
    fn commit(&mut self, commands: Vec<Command>) -> bool {
        let stop = commands.iter().any(|c| matches!(c, Command::Stop { .. }));
        if self.shared.is_broken() {
            let reason = self.shared.broken_reason();
            for command in commands {
                command.refuse(&reason)(Ok(()));
            }
            return stop;
        }
        let mut group = Group::new(self.stats);
        // Expire before looking anything up, so that the window is exact.
        if let Err(e) = self.sweep_dedup(&mut group) {
            tracing::warn!(error = %e, "sweeping expired de-duplication entries failed");
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(commands.len());
        for command in commands {
            group.checkpoint |= command.needs_checkpoint();
            answers.push(match command {
                Command::Append { events, reply, .. } => {
                    answer(reply, self.append(&mut group, events))
                }
                Command::Confirm { seqs, reply } => answer(reply, self.confirm(&mut group, &seqs)),
                Command::Park { seq, error, reply } => {
                    answer(reply, self.park(&mut group, seq, error))
                }
                Command::Replay { seq, reply } => answer(reply, self.replay(&mut group, seq)),
                Command::Purge { seq, reply } => answer(reply, self.purge(&mut group, seq)),
                Command::Maintain { reply } => {
                    // Answered once the check after this commit has run.
                    self.maintain_requests.push(reply);
                    Box::new(|_| ())
                }
                Command::Stop { reply } => answer(reply, Ok(())),
            });
        }
        let appended = group.appends();
        match self.write_group(&mut group) {
            Ok(flush_time) => {
                let observer = self.shared.flush_observer.lock().expect("lock").clone();
                if let Some(observe) = observer {
                    observe(flush_time);
                }
                self.written_since_open += group.bytes_written;
                self.publish(group);
                for a in answers {
                    a(Ok(()));
                }
                if appended {
                    self.shared.appended.notify_one();
                }
            }
            Err(reason) => {
                self.shared.mark_broken(&reason);
                for a in answers {
                    a(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
        stop
    }

    /// Turns the group into batches and makes them durable: the new records in the log first,
    /// then the active generation's sled (new chunks, dead letters, counters), then the
    /// draining one (delivered bits). Returns the time spent writing and syncing.
    fn write_group(&mut self, group: &mut Group) -> Result<Duration, String> {
        if group.appends() {
            self.roll_segment()
                .map_err(|e| format!("starting a segment file failed: {e}"))?;
        }
        self.build_chunks(group);
        for (first, entry) in &group.touched {
            let batch = if entry.generation.id == self.active.generation.id {
                &mut group.active
            } else {
                group.draining_touched = true;
                &mut group.draining
            };
            if entry.meta.undelivered().0 == 0 {
                batch.remove(&keys::chunk(*first));
                batch.remove(&keys::chunk_meta(*first));
            } else {
                let meta = super::record::encode(&entry.meta);
                group.bytes_written += meta.len() as u64;
                batch.insert(&keys::chunk_meta(*first), meta);
            }
        }
        if !group.new_dedup.entries.is_empty() {
            let pack = dedup::encode_pack(std::slice::from_ref(&group.new_dedup));
            group.bytes_written += pack.len() as u64;
            group
                .active
                .insert(&keys::dedup(group.new_dedup.first_seq()), pack);
        }
        let stats = group.stats;
        for (name, value) in [
            ("next_seq", stats.next_seq),
            ("cursor", stats.cursor),
            ("dead_letters", stats.dead_letters),
        ] {
            group.active.insert(keys::meta(name), &value.to_be_bytes());
        }
        let started = Instant::now();
        // The records first: the segment file is the log that makes an append durable.
        if !group.frames.is_empty() {
            let writer = self.active.writer();
            writer
                .append(&group.frames)
                .and_then(|_| writer.sync())
                .map_err(|e| format!("writing a segment file failed: {e}"))?;
        }
        // Appends alone are durable in the log: their sled writes wait, gathered with those of
        // the groups before, and the checkpointer makes them durable. A group that needs sled
        // durable applies them all with its own.
        self.deferred.absorb(std::mem::take(&mut group.active));
        let waiting = self.deferred_since.get_or_insert_with(Instant::now);
        if group.checkpoint {
            // One sled log for all trees, one flush: parked letters before, replayed or purged
            // ones after the main tree's writes, in the log's order.
            let dead = self.active.generation.dead();
            apply_to(&dead, std::mem::take(&mut group.dead_inserts))?;
            self.apply_deferred(false)?;
            let removed = !group.dead_removes.is_empty();
            apply_to(&dead, std::mem::take(&mut group.dead_removes))?;
            drop(dead);
            if removed && group.stats.dead_letters == 0 {
                self.active
                    .generation
                    .drop_dead_tree_if_empty()
                    .map_err(|e| format!("dropping the emptied dead-letter tree failed: {e}"))?;
            }
            self.apply_deferred(true)?;
        } else if waiting.elapsed() >= APPLY_EVERY {
            self.apply_deferred(false)?;
        }
        if group.draining_touched {
            if let Some(draining) = &mut self.draining {
                draining.write(std::mem::take(&mut group.draining), true)?;
            }
        }
        Ok(started.elapsed())
    }

    /// Makes a committed group visible: counters, index, de-duplication entries.
    fn publish(&mut self, group: Group) {
        self.stats = group.stats;
        *self.shared.stats.lock().expect("stats lock") = group.stats;
        {
            let mut index = self.shared.index.write().expect("index lock");
            for (first, entry) in group.touched {
                if entry.meta.undelivered().0 == 0 {
                    index.chunks.remove(&first);
                } else {
                    index.chunks.insert(first, entry);
                }
            }
            for (first, meta, location, accounts) in group.written {
                index.chunks.insert(
                    first,
                    ChunkEntry {
                        generation: self.active.generation.clone(),
                        meta,
                        location,
                        accounts,
                    },
                );
            }
        }
        if !group.new_dedup.entries.is_empty() {
            self.dedup
                .insert_group(group.new_dedup.first_seq(), &group.new_dedup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::commands::Prepared;
    use crate::store::recovery;
    use crate::store::tests::{copy_dir, record};
    use tokio::sync::oneshot;

    /// A confirmation that comes while the sled writes of earlier appends still wait
    /// (gathered, not yet applied) makes them durable together with its own, in order: a crash
    /// right after it opens with the confirmed record gone and the others there. Driven group
    /// by group, without the run loop, so that no idle moment applies the writes in between.
    #[test]
    fn a_confirmation_applies_the_gathered_writes_before_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = StoreConfig::new(&data);
        let (mut committer, _shared) =
            Committer::new(config.clone(), recovery::open(&config).unwrap());
        let (reply, mut appended) = oneshot::channel();
        let events = ["1", "2", "3"]
            .iter()
            .map(|id| Prepared::new(&record("s", id, "t")))
            .collect();
        committer.commit(vec![Command::Append {
            events,
            queued: Instant::now(),
            reply,
        }]);
        let seqs: Vec<u64> = appended
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(
            !committer.deferred.is_empty(),
            "the append's sled writes wait"
        );
        let (reply, mut confirmed) = oneshot::channel();
        committer.commit(vec![Command::Confirm {
            seqs: vec![2],
            reply,
        }]);
        confirmed.try_recv().unwrap().unwrap();
        assert!(committer.deferred.is_empty());

        // A crash now: the image holds what is on disk, and nothing more is written.
        let image = dir.path().join("crash");
        copy_dir(&data, &image);
        let store = crate::store::Store::open(StoreConfig::new(&image)).unwrap();
        let batch = store.read_batch(0, 10, u64::MAX, |_, _| false).unwrap();
        let left: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        assert_eq!(left, vec![1, 3]);
        assert_eq!(store.stats().next_seq, 4);
    }
}
