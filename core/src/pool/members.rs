//! The pool's workers as the coordinator holds them, between jobs and during
//! one: their channels, what each keeps mapped, resync before a job, and
//! reaping.

use std::collections::{HashSet, VecDeque};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use coop_worker::ipc_channel::ipc::{IpcReceiverSet, IpcSelectionResult};
use coop_worker::protocol::{FromWorker, ToWorker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Config;
use super::spawn::{Spawner, Started, Worker};
use super::transport::decode;
use crate::error::{Error, Result, WorkerExit};
use crate::scheduler::{Event, WorkerId};

/// How long a worker asked to exit gets before it is killed.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long a worker whose channel closed gets to finish exiting before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// The coordinator's view of its workers, between jobs and during one.
pub(super) struct State {
    pub(super) members: Vec<Member>,
    /// Every worker's result channel, polled together.
    pub(super) set: IpcReceiverSet,
    pub(super) next_job: u64,
    pub(super) next_worker: u64,
    /// Events read and not yet handed to a job: the rest of a batch that
    /// came in with the event that failed the job (the next job takes them).
    pub(super) pending: VecDeque<(WorkerId, Event)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field(
                "workers",
                &self.members.iter().map(|m| m.worker.pid).collect::<Vec<_>>(),
            )
            .field("next_job", &self.next_job)
            .finish()
    }
}

/// One worker of the pool, and what outlives a job about it.
pub(super) struct Member {
    pub(super) id: WorkerId,
    pub(super) worker: Worker,
    /// Id of the worker's channel in `State::set`.
    pub(super) receiver: u64,
    /// Regions the worker keeps mapped: those of the last job it opened
    /// (the worker's `Mappings`); none believed after a failed job.
    pub(super) held: HashSet<u64>,
    /// Jobs the worker has opened ([`PoolBuilder::max_jobs_per_worker`](super::PoolBuilder::max_jobs_per_worker)).
    pub(super) jobs: u32,
    /// It was sent SIGKILL: it is never given another job, even if its
    /// channel has not closed yet.
    pub(super) killed: bool,
}

impl Member {
    pub(super) fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.worker.pid as i32), Signal::SIGKILL);
        self.killed = true;
    }
}

impl State {
    pub(super) fn new() -> Result<Self> {
        Ok(State {
            members: Vec::new(),
            set: IpcReceiverSet::new().map_err(|source| Error::Os {
                context: "creating the receiver set",
                source,
            })?,
            next_job: 0,
            next_worker: 0,
            pending: VecDeque::new(),
        })
    }

    pub(super) fn add(&mut self, (worker, rx): Started) -> Result<WorkerId> {
        let receiver = self.set.add(rx).map_err(|source| Error::Os {
            context: "polling a worker's channel",
            source,
        })?;
        let id = WorkerId {
            index: self.next_worker,
            pid: worker.pid,
        };
        self.next_worker += 1;
        self.members.push(Member {
            id,
            worker,
            receiver,
            held: HashSet::new(),
            jobs: 0,
            killed: false,
        });
        Ok(id)
    }

    pub(super) fn member(&self, id: WorkerId) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    pub(super) fn member_mut(&mut self, id: WorkerId) -> Option<&mut Member> {
        self.members.iter_mut().find(|member| member.id == id)
    }

    /// Reads what the workers said, waiting up to `wait` (none: not at all),
    /// into `pending`. A closed channel is a worker gone: it is reaped and
    /// removed here, and reported as lost.
    pub(super) fn poll(&mut self, wait: Option<Duration>, memory_limit: Option<u64>) -> Result<()> {
        let events = match wait {
            Some(wait) => self.set.try_select_timeout(wait),
            None => self.set.try_select(),
        };
        let events = match events {
            Ok(events) => events,
            Err(coop_worker::ipc_channel::TrySelectError::Empty) => return Ok(()),
            Err(coop_worker::ipc_channel::TrySelectError::IoError(err)) => {
                return Err(Error::Os {
                    context: "waiting for workers",
                    source: err,
                });
            }
        };
        for event in events {
            match event {
                // Every message is decoded, even one from a worker already
                // removed: decoding is what takes over the shared memory a
                // message may carry (ipc-channel leaks it otherwise).
                IpcSelectionResult::MessageReceived(receiver, message) => {
                    let event = decode(message);
                    if let Some(member) = self.members.iter().find(|m| m.receiver == receiver) {
                        self.pending.push_back((member.id, event));
                    }
                }
                IpcSelectionResult::ChannelClosed(receiver) => {
                    let Some(index) = self.members.iter().position(|m| m.receiver == receiver) else {
                        continue;
                    };
                    let member = self.members.remove(index);
                    let status = reap(member.worker, EXIT_GRACE);
                    self.pending
                        .push_back((member.id, Event::Lost(exit_of(status, memory_limit))));
                }
            }
        }
        Ok(())
    }

    /// Readies the pool for a job: what workers said since the last job is
    /// stale, but a worker gone or gone wrong is replaced (and one that
    /// served its jobs retired), so that every job starts with a full pool.
    pub(super) fn resync(&mut self, spawner: &Spawner, config: &Config) -> Result<()> {
        self.poll(None, config.memory_limit)?;
        while let Some((id, event)) = self.pending.pop_front() {
            let problem = match event {
                Event::Lost(status) => {
                    tracing::warn!(worker = ?id, %status, "worker lost between jobs");
                    continue;
                }
                Event::Message(FromWorker::Bye) => "said goodbye unasked".to_string(),
                Event::Message(_) => continue,
                Event::Garbage(problem) => problem,
            };
            if let Some(member) = self.member_mut(id) {
                tracing::warn!(pid = member.worker.pid, problem, "killing worker between jobs");
                member.kill();
            }
        }
        // Workers killed (in the last job, or just now) whose channel has
        // not closed yet: reaped here, so that no job is sent to them.
        let (killed, live) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|member| member.killed);
        self.members = live;
        let killed: Vec<Member> = killed;
        for member in killed {
            let pid = member.worker.pid;
            let status = reap(member.worker, Duration::from_millis(100));
            tracing::debug!(pid, status = %exit_of(status, None), "killed worker reaped");
        }
        if let Some(max) = config.max_jobs_per_worker {
            let (retired, kept) = std::mem::take(&mut self.members)
                .into_iter()
                .partition(|member| member.jobs >= max);
            self.members = kept;
            let retired: Vec<Member> = retired;
            // Every worker is told first, so that they exit together.
            for member in &retired {
                let _ = member.worker.tx.send(ToWorker::Shutdown);
                tracing::debug!(pid = member.worker.pid, jobs = member.jobs, "worker retired");
            }
            for member in retired {
                reap(member.worker, SHUTDOWN_GRACE);
            }
        }
        let missing = config.workers.saturating_sub(self.members.len());
        if missing > 0 {
            for worker in spawner.spawn(missing) {
                match worker {
                    Ok(worker) => {
                        self.add(worker)?;
                    }
                    Err(err) if self.members.is_empty() => return Err(err),
                    Err(err) => tracing::warn!(%err, "could not replace a worker"),
                }
            }
        }
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        for member in &self.members {
            let _ = member.worker.tx.send(ToWorker::Shutdown);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for member in self.members.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            reap(member.worker, left);
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone, Copy)]
struct Reaped {
    status: Option<ExitStatus>,
    /// It was still running after the grace period and was killed then.
    overstayed: bool,
}

/// Waits up to `grace` for a worker to exit, then kills it; always reaps it.
fn reap(mut worker: Worker, grace: Duration) -> Reaped {
    let deadline = Instant::now() + grace;
    loop {
        match worker.child.try_wait() {
            Ok(Some(status)) => {
                return Reaped {
                    status: Some(status),
                    overstayed: false,
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
                return Reaped {
                    status: worker.child.wait().ok(),
                    overstayed: true,
                };
            }
            Err(_) => {
                return Reaped {
                    status: None,
                    overstayed: false,
                };
            }
        }
    }
}

/// How a worker whose channel closed ended; under a memory limit, a worker
/// that aborted almost surely failed an allocation past it (Rust's
/// allocation-failure handler aborts).
fn exit_of(reaped: Reaped, memory_limit: Option<u64>) -> WorkerExit {
    match reaped {
        Reaped { overstayed: true, .. } => WorkerExit::KeptRunning,
        Reaped { status: None, .. } => WorkerExit::Unknown,
        Reaped {
            status: Some(status), ..
        } => match (WorkerExit::of(status), memory_limit) {
            (WorkerExit::Signaled { signal, .. }, Some(limit)) if signal == Signal::SIGABRT as i32 => {
                WorkerExit::OverMemoryLimit { limit }
            }
            (exit, _) => exit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_described() {
        use std::os::unix::process::ExitStatusExt;
        let ended = |status, overstayed| Reaped { status, overstayed };
        let describe = |reaped, limit| exit_of(reaped, limit).to_string();
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(7 << 8)), false), None),
            "exited with status 7"
        );
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(9)), false), None),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe(ended(None, false), None), "ended (status unknown)");
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(9)), true), None),
            "closed its channel but kept running, and was killed"
        );
        // An abort under a memory limit is the limit; without one, a signal.
        let aborted = || ended(Some(ExitStatus::from_raw(6)), false);
        assert_eq!(
            exit_of(aborted(), Some(1 << 20)),
            WorkerExit::OverMemoryLimit { limit: 1 << 20 }
        );
        assert_eq!(
            describe(aborted(), Some(1 << 20)),
            "exceeded its memory limit of 1048576 bytes (an allocation failed, and it aborted)"
        );
        assert_eq!(describe(aborted(), None), "was killed by signal 6 (SIGABRT)");
    }
}
