//! The pool as a [`Transport`]: ipc-channel messages, input and output in
//! shared memory (or copied in messages, [`Ipc::Messages`]), workers killed
//! and replaced.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::Scope;
use std::time::Duration;

use coop_worker::ipc_channel::ipc::{IpcBytesSender, IpcMessage};
use coop_worker::protocol::{
    Chunk, FromWorker, OutputDesc, Payload, SegmentDesc, ToWorker, input_batches, send_chunk,
};

use super::members::State;
use super::spawn::Spawner;
use super::{Config, Ipc};
use crate::error::Result;
use crate::input::Input;
use crate::scheduler::{Carriage, Event, JobEnd, JobStart, Kill, TaskSend, Transport, WorkerId};

/// The pool, for one job.
pub(super) struct PoolTransport<'p, 'scope, 'env> {
    state: &'p mut State,
    spawner: &'p Spawner,
    config: &'p Config,
    scope: &'scope Scope<'scope, 'env>,
    input: &'env Input,
    /// The job value, made once for every worker (a large one is in shared
    /// memory, which each worker maps rather than gets a copy of).
    params: Option<Payload>,
    /// Each worker's feeder of input bytes (message passing). With messages,
    /// a feeder thread streams a task's input to its worker, so that a worker
    /// that stops reading (SIGSTOP) blocks its feeder, never the coordinator.
    /// `None`: no thread could be started; the coordinator streams itself.
    /// Dropped with the transport, which ends the threads (a feeder blocked
    /// on a busy worker of a failed job ends when `end_job` kills it).
    feeders: HashMap<WorkerId, Option<mpsc::Sender<Chunk>>>,
}

impl<'p, 'scope, 'env> PoolTransport<'p, 'scope, 'env> {
    pub(super) fn new(
        state: &'p mut State,
        spawner: &'p Spawner,
        config: &'p Config,
        scope: &'scope Scope<'scope, 'env>,
        input: &'env Input,
    ) -> Self {
        PoolTransport {
            state,
            spawner,
            config,
            scope,
            input,
            params: None,
            feeders: HashMap::new(),
        }
    }

    /// Starts a thread that streams input chunks down a worker's bulk channel.
    fn start_feeder(&self, bulk: IpcBytesSender) -> Option<mpsc::Sender<Chunk>> {
        let input = self.input;
        let (chunks, incoming) = mpsc::channel::<Chunk>();
        let fed = std::thread::Builder::new()
            .name("coop-feeder".into())
            .spawn_scoped(self.scope, move || {
                for chunk in incoming {
                    if send_chunk(&bulk, input.chunk(&chunk)).is_err() {
                        break; // the worker is dead: its death is handled by the scheduler
                    }
                }
            });
        match fed {
            Ok(_) => Some(chunks),
            Err(err) => {
                tracing::warn!(%err, "no feeder thread: the coordinator streams the input itself");
                None
            }
        }
    }
}

/// A worker's message as the scheduler takes it.
pub(super) fn decode(message: IpcMessage) -> Event {
    match message.to::<FromWorker>() {
        Ok(mut message) => {
            let apart = message
                .payloads_mut()
                .any(|p| matches!(p, Payload::Follows { .. }));
            match apart {
                true => Event::Garbage("sent bytes apart from a message, which a pool does not carry".into()),
                false => Event::Message(message),
            }
        }
        Err(err) => Event::Garbage(format!("undecodable message: {err}")),
    }
}

impl Transport for PoolTransport<'_, '_, '_> {
    fn carriage(&self, input: &Input) -> Carriage {
        let messages = self.config.ipc == Ipc::Messages;
        Carriage {
            sent: vec![messages; input.len()],
            tiles: messages,
        }
    }

    fn prepare(&mut self) -> Result<Vec<WorkerId>> {
        self.state.resync(self.spawner, self.config)?;
        Ok(self.state.members.iter().map(|member| member.id).collect())
    }

    // A failed send below means a dead worker, whose death comes as an event
    // when its channel reports closed; the messages after it fail the same way.

    fn start_job(&mut self, worker: WorkerId, job: &JobStart<'_>) -> Result<()> {
        let params = self
            .params
            .get_or_insert_with(|| Payload::new(job.params.to_vec()))
            .clone();
        let ipc = self.config.ipc;
        let Some(member) = self.state.member_mut(worker) else {
            return Ok(());
        };
        let (input, output) = match ipc {
            Ipc::SharedMemory => {
                let held = |id| member.held.contains(&id);
                (job.input.describe(held), job.output.map(|out| out.describe(held)))
            }
            Ipc::Messages => (
                (0..job.input.len())
                    .map(|segment| SegmentDesc::Private {
                        len: job.input.bytes(segment).len() as u64,
                    })
                    .collect(),
                job.output.map(|out| OutputDesc::Private {
                    len: out.len() as u64,
                }),
            ),
        };
        // What the worker keeps mapped once it opened the job.
        member.held = (input.iter().filter_map(SegmentDesc::kept_id))
            .chain(output.iter().filter_map(OutputDesc::kept_id))
            .collect();
        let mut batches = input_batches(input);
        let input = batches.pop().unwrap_or_default();
        for batch in batches {
            let _ = member.worker.tx.send(ToWorker::MoreInput {
                job: job.id,
                input: batch,
            });
        }
        let _ = member.worker.tx.send(ToWorker::StartJob {
            job: job.id,
            key: job.key.clone(),
            params,
            input,
            output,
        });
        Ok(())
    }

    fn send_task(&mut self, worker: WorkerId, send: TaskSend<'_>) -> Result<()> {
        let Some(member) = self.state.member(worker) else {
            return Ok(());
        };
        let sent = (member.worker.tx).send(send.message(Payload::new(send.spec.to_vec())));
        if sent.is_err() || send.chunks.is_empty() {
            return Ok(());
        }
        let bulk = member.worker.bulk.clone();
        if !self.feeders.contains_key(&worker) {
            let feeder = self.start_feeder(bulk.clone());
            self.feeders.insert(worker, feeder);
        }
        for chunk in send.chunks {
            match &self.feeders[&worker] {
                Some(feed) => {
                    let _ = feed.send(*chunk);
                }
                None => {
                    let _ = send_chunk(&bulk, self.input.chunk(chunk));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, worker: WorkerId, job: u64) -> Result<()> {
        if let Some(member) = self.state.member(worker) {
            let _ = member.worker.tx.send(ToWorker::Flush { job });
        }
        Ok(())
    }

    /// After a failure, workers still running tasks of the job are killed
    /// (they are replaced before the next job): their work is wasted, and
    /// they might still be writing the output the caller is about to own
    /// again.
    fn end_job(&mut self, worker: WorkerId, end: JobEnd) -> Result<()> {
        let Some(member) = self.state.member_mut(worker) else {
            return Ok(());
        };
        if end.failed && end.busy {
            tracing::warn!(pid = worker.pid, "killing worker: its job failed");
            member.kill();
        }
        // A worker that could not open the job keeps less than it was named,
        // and its refusal may not have been read: after a failure, every
        // worker is sent its regions again.
        if end.failed {
            member.held.clear();
        }
        if end.opened {
            let _ = member.worker.tx.send(ToWorker::EndJob { job: end.id });
            member.jobs += 1;
        }
        self.feeders.remove(&worker);
        Ok(())
    }

    fn next_event(&mut self, wait: Duration) -> Result<Option<(WorkerId, Event)>> {
        if self.state.pending.is_empty() {
            self.state.poll(Some(wait), self.config.memory_limit)?;
        }
        Ok(self.buffered_event())
    }

    fn buffered_event(&mut self) -> Option<(WorkerId, Event)> {
        let event = self.state.pending.pop_front();
        if let Some((worker, Event::Lost(_))) = &event {
            self.feeders.remove(worker);
        }
        event
    }

    fn kill(&mut self, worker: WorkerId, _why: &Kill) -> Result<()> {
        if let Some(member) = self.state.member_mut(worker) {
            member.kill();
        }
        Ok(())
    }

    fn replace(&mut self) -> Option<Result<WorkerId>> {
        let started = self.spawner.spawn(1).pop()?;
        Some(started.and_then(|started| self.state.add(started)))
    }
}
