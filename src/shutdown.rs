//! The way down, as one value that every task watches (after mini-redis's `Shutdown`, with a
//! drain phase): running; draining, where the relay sends the whole backlog at once and
//! intake stays open for a grace period, until a deadline; stopping, where everything ends now
//! and what is still stored stays stored.

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the process is on its way down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Deliver everything stored before `deadline`; once `intake_closed`, nothing new comes
    /// in, so an empty store is the end.
    Draining {
        deadline: Instant,
        intake_closed: bool,
    },
    Stopping,
}

/// Moves the phase on; held by whoever handles the signals.
#[derive(Debug)]
pub struct ShutdownSender {
    phase: watch::Sender<Phase>,
}

/// A task's view of the phase; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    phase: watch::Receiver<Phase>,
}

/// A new pair, in `Running`.
pub fn channel() -> (ShutdownSender, Shutdown) {
    let (phase, watcher) = watch::channel(Phase::Running);
    (ShutdownSender { phase }, Shutdown { phase: watcher })
}

impl ShutdownSender {
    /// Starts draining with this deadline (intake still open).
    pub fn drain(&self, deadline: Instant) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Running => {
                *phase = Phase::Draining {
                    deadline,
                    intake_closed: false,
                };
                true
            }
            _ => false,
        });
    }

    /// Tells the drain that nothing new will be appended.
    pub fn intake_closed(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Draining {
                intake_closed: closed @ false,
                ..
            } => {
                *closed = true;
                true
            }
            _ => false,
        });
    }

    /// Stops everything now.
    pub fn stop(&self) {
        self.phase.send_replace(Phase::Stopping);
    }
}

impl Shutdown {
    /// A view that is already draining with intake closed and no deadline to speak of: the
    /// adopter's relays, which deliver a store left behind and then end.
    pub fn drain_only() -> (ShutdownSender, Shutdown) {
        let (sender, shutdown) = channel();
        sender.drain(Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600));
        sender.intake_closed();
        (sender, shutdown)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Draining or stopping: the signal came.
    pub fn is_shutting_down(&self) -> bool {
        self.phase() != Phase::Running
    }

    /// Resolves once the phase is `Stopping` (at once if it is).
    pub async fn stopping(&mut self) {
        let _ = self.phase.wait_for(|p| *p == Phase::Stopping).await;
    }

    /// Resolves at the next change of phase.
    pub async fn changed(&mut self) {
        if self.phase.changed().await.is_err() {
            // The sender is gone: nothing will change any more.
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_phases_only_move_forward() {
        let (sender, mut shutdown) = channel();
        assert_eq!(shutdown.phase(), Phase::Running);
        sender.intake_closed();
        assert_eq!(
            shutdown.phase(),
            Phase::Running,
            "no drain, nothing to close"
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        sender.drain(deadline);
        assert!(shutdown.is_shutting_down() && shutdown.phase() != Phase::Stopping);
        sender.intake_closed();
        assert_eq!(
            shutdown.phase(),
            Phase::Draining {
                deadline,
                intake_closed: true
            }
        );
        sender.stop();
        shutdown.stopping().await;
        sender.drain(deadline);
        assert_eq!(shutdown.phase(), Phase::Stopping, "a stop is not undone");
    }
}
