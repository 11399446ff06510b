//! The checkpointer: a thread beside the committer that makes sled durable at least every
//! `checkpoint_every` while only appends come in (a flush plus `fdatasync` takes milliseconds, which
//! every append queued behind it in the committer would wait). sled batches are atomic and applied
//! in order after their records were synced, so any prefix a checkpoint makes durable names only
//! durable records.

use super::durable::Durability;
use super::Shared;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running checkpointer; [`Checkpointer::stop`] ends it.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(shared: Arc<Shared>, every: Duration) -> std::io::Result<Checkpointer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || run(&shared, every, &signal))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread (the committer makes its own final checkpoint).
    pub(super) fn stop(&mut self) {
        *self.stop.0.lock().expect("checkpointer lock") = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, every: Duration, stop: &(Mutex<bool>, Condvar)) {
    // The files synced for the generation last checkpointed (opened again after a rotation).
    let mut synced: Option<(u64, Durability)> = None;
    loop {
        {
            let stopped = stop.0.lock().expect("checkpointer lock");
            let (stopped, _) = stop
                .1
                .wait_timeout_while(stopped, every, |stopped| !*stopped)
                .expect("checkpointer lock");
            if *stopped {
                return;
            }
        }
        if !shared.unsynced.swap(false, Ordering::SeqCst) || shared.broken.load(Ordering::SeqCst) {
            continue;
        }
        let generation = shared.index.read().expect("index lock").active().clone();
        let outcome = (|| {
            if synced.as_ref().is_none_or(|(id, _)| *id != generation.id) {
                synced = Some((generation.id, Durability::open(&generation.dir)?));
            }
            generation.flush().map_err(std::io::Error::other)?;
            synced.as_mut().expect("just opened").1.sync()
        })();
        if let Err(e) = outcome {
            shared.mark_broken(&format!("checkpointing the store failed: {e}"));
        }
    }
}
