//! The life of a worker process: handshake, the task loop, and exit.

use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::{env, process};

use ipc_channel::IpcError;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcReceiver, IpcSender};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::{Pid, getppid};

use crate::fault::{self, Aftermath, Fault, Garbage, Point};
use crate::job::{InstanceError, JobEntry, JobInstance, JobKey};
use crate::mappings::Mappings;
use crate::panic::{capture_panics, panic_message};
use crate::protocol::{
    Chunk, ENV_PARENT, ENV_SERVER, ENV_TOKEN, Failure, FromWorker, Hello, Outbox, OutputDesc, Payload,
    Rejection, SegmentDesc, Tile, ToWorker,
};

/// Exit status of a worker whose coordinator went away or broke the protocol.
const EXIT_PROTOCOL: i32 = 3;

/// Whether this process was started as a worker (by a coordinator's pool).
pub fn is_worker() -> bool {
    env::var_os(ENV_SERVER).is_some()
}

/// If this process was started as a worker, serves its coordinator and exits;
/// otherwise returns at once. Call it first in `main`, before any thread starts.
pub fn run_if_worker(jobs: &[JobEntry]) {
    let Some(server) = env::var_os(ENV_SERVER) else {
        return;
    };
    let parent = env::var(ENV_PARENT).ok().and_then(|p| p.parse::<i32>().ok());
    let token = env::var(ENV_TOKEN).unwrap_or_default();
    let faults = Faults(Fault::from_env());
    // SAFETY: we are at the top of `main` (documented contract of `coop::init`),
    // so no other thread reads the environment concurrently. The variables are
    // removed so that programs the job itself starts are not taken for workers.
    unsafe {
        env::remove_var(ENV_SERVER);
        env::remove_var(ENV_PARENT);
        env::remove_var(ENV_TOKEN);
        env::remove_var(fault::ENV_FAULT);
    }
    let code = match serve(server, parent, token, jobs, &faults) {
        Ok(()) => 0,
        // The coordinator hung up on this worker (it is dropping it, or is
        // gone): nothing went wrong here worth a line on the terminal.
        Err(err) if is_hangup(&*err) => EXIT_PROTOCOL,
        Err(err) => {
            eprintln!("coop worker {}: {err}", process::id());
            EXIT_PROTOCOL
        }
    };
    process::exit(code);
}

type WorkerError = Box<dyn std::error::Error>;

/// Whether `err` says the coordinator's end of a channel is closed.
fn is_hangup(err: &(dyn std::error::Error + 'static)) -> bool {
    let io = match err.downcast_ref::<IpcError>() {
        Some(IpcError::Disconnected) => return true,
        Some(IpcError::Io(io)) => Some(io),
        _ => err.downcast_ref::<std::io::Error>(),
    };
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    })
}

/// The fault this worker was started with, if any (tests only).
struct Faults(Option<Fault>);

impl Faults {
    /// Strikes if the fault fires here; returns what is left to do with the channel.
    fn at(&self, point: Point, task: Option<u32>) -> Option<Aftermath> {
        let fault = self.0.as_ref()?;
        fault
            .fires(point, task)
            .then(|| fault::strike(point, fault.behaviour))
    }
}

fn serve(
    server: OsString,
    parent: Option<i32>,
    token: String,
    jobs: &[JobEntry],
    faults: &Faults,
) -> Result<(), WorkerError> {
    die_with_parent(parent)?;
    // Ctrl-C reaches the whole foreground process group; the coordinator
    // decides what happens to its workers (they die with it in any case).
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety concern.
    unsafe { signal::signal(Signal::SIGINT, SigHandler::SigIgn) }?;
    capture_panics();

    let server = server.into_string().map_err(|_| "rendezvous name is not UTF-8")?;
    let early = faults.at(Point::BeforeConnect, None);
    let rendezvous = IpcSender::<Hello>::connect(server)?;
    let (to_coordinator, from_worker) = ipc::channel::<FromWorker>()?;
    if let Some(aftermath) = early.or_else(|| faults.at(Point::Handshake, None)) {
        match aftermath {
            Aftermath::SendGarbage => {
                rendezvous.to_opaque().to::<Garbage>().send(Garbage::new())?;
                fault::idle()
            }
            Aftermath::CloseChannel => {
                drop(rendezvous);
                fault::idle()
            }
        }
    }
    let (to_worker, from_coordinator) = ipc::channel::<ToWorker>()?;
    let (bulk, bulk_in) = ipc::bytes_channel()?;
    rendezvous.send(Hello {
        pid: process::id(),
        token,
        to_worker,
        bulk,
        from_worker,
    })?;
    let channels = Channels {
        rx: from_coordinator,
        bulk: bulk_in,
        tx: to_coordinator,
    };
    task_loop(jobs, channels, faults)
}

/// The rest of a fault that leaves the worker running: garbage on the channel
/// (then the worker goes on, until the coordinator kills it), or a closed
/// channel and an idle process.
fn carry_out(aftermath: Aftermath, tx: IpcSender<FromWorker>) -> Result<IpcSender<FromWorker>, WorkerError> {
    match aftermath {
        Aftermath::SendGarbage => {
            tx.clone().to_opaque().to::<Garbage>().send(Garbage::new())?;
            Ok(tx)
        }
        Aftermath::CloseChannel => {
            drop(tx);
            fault::idle()
        }
    }
}

/// Makes the kernel kill this process when the thread that spawned it exits,
/// and exits now if that already happened (the window between fork and prctl).
fn die_with_parent(parent: Option<i32>) -> Result<(), WorkerError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if let Some(parent) = parent
        && getppid() != Pid::from_raw(parent)
    {
        return Err(format!("coordinator (pid {parent}) exited before this worker started").into());
    }
    Ok(())
}

struct OpenJob {
    id: u64,
    instance: Box<dyn JobInstance>,
    /// Set after a task failed: the partial may be half-updated, so the rest of
    /// the job's tasks are ignored until the coordinator ends it.
    failed: bool,
}

/// Closes the open job, if any, taking back the input and output it was lent.
fn close(current: &mut Option<OpenJob>, mappings: &mut Mappings) {
    if let Some(mut open) = current.take() {
        mappings.reclaim(open.instance.as_mut());
    }
}

/// A worker's three channels to its coordinator.
struct Channels {
    /// Control messages and tasks.
    rx: IpcReceiver<ToWorker>,
    /// The bytes of input chunks sent with tasks.
    bulk: IpcBytesReceiver,
    /// Everything the worker says.
    tx: IpcSender<FromWorker>,
}

fn task_loop(jobs: &[JobEntry], channels: Channels, faults: &Faults) -> Result<(), WorkerError> {
    let Channels { rx, bulk, mut tx } = channels;
    let mut current: Option<OpenJob> = None;
    let mut mappings = Mappings::default();
    let mut outbox = Outbox::default();
    // The segments of `MoreInput` messages, for the job they name.
    let mut more_input: Option<(u64, Vec<SegmentDesc>)> = None;
    loop {
        let message = match rx.recv() {
            Ok(message) => message,
            // The coordinator is gone: nothing left to do.
            Err(IpcError::Disconnected) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        match message {
            ToWorker::MoreInput { job, input } => match &mut more_input {
                Some((id, segments)) if *id == job => segments.extend(input),
                // A job that never started (its coordinator gave up) leaves
                // its segments here: the next job's replace them.
                _ => more_input = Some((job, input)),
            },
            ToWorker::StartJob {
                job,
                key,
                params,
                input,
                output,
            } => {
                close(&mut current, &mut mappings);
                let input = match more_input.take() {
                    Some((id, mut segments)) if id == job => {
                        segments.extend(input);
                        segments
                    }
                    _ => input,
                };
                match open_job(jobs, &key, params.bytes(), input, output, &mut mappings) {
                    Ok(instance) => {
                        current = Some(OpenJob {
                            id: job,
                            instance,
                            failed: false,
                        })
                    }
                    Err(reason) => tx.send(FromWorker::JobRejected { job, reason })?,
                }
            }
            ToWorker::Task {
                job,
                task,
                spec,
                chunks,
            } => {
                // The chunks' bytes are read whatever happens next: left unread,
                // they would be taken for the next task's.
                let mut data = Vec::with_capacity(chunks.len());
                for chunk in &chunks {
                    data.push((chunk, receive_chunk(&bulk, chunk.len)?));
                }
                // A task of a job that was ended or failed is stale: skip it.
                let Some(open) = current.as_mut().filter(|o| o.id == job && !o.failed) else {
                    continue;
                };
                let (reply, aftermath) = match receive_chunks(open.instance.as_mut(), &data) {
                    Err(err) => (failed(open, task, Failure::Error(err.to_string())), None),
                    Ok(()) => run_task(open, task, spec.bytes(), faults),
                };
                match aftermath {
                    Some(aftermath) => tx = carry_out(aftermath, tx)?,
                    None => tx.send(reply)?,
                }
            }
            ToWorker::Flush { job } => {
                let Some(open) = current.as_mut().filter(|o| o.id == job && !o.failed) else {
                    continue;
                };
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    let bytes = open.instance.take_partial()?;
                    Ok::<_, InstanceError>((bytes, faults.at(Point::Partial, None)))
                }));
                let reply = match outcome {
                    Ok(Ok((bytes, aftermath))) => {
                        let bytes = match aftermath {
                            Some(Aftermath::SendGarbage) => fault::GARBAGE_PARTIAL.to_vec(),
                            Some(Aftermath::CloseChannel) => {
                                drop(tx);
                                fault::idle()
                            }
                            None => bytes,
                        };
                        FromWorker::Partial {
                            job,
                            data: outbox.payload(bytes),
                        }
                    }
                    Ok(Err(err)) => flush_failed(open, Failure::Error(err.to_string())),
                    Err(payload) => flush_failed(open, Failure::Panic(panic_message(&*payload))),
                };
                let sent_partial = matches!(reply, FromWorker::Partial { .. });
                tx.send(reply)?;
                if sent_partial && let Some(aftermath) = faults.at(Point::AfterPartial, None) {
                    tx = carry_out(aftermath, tx)?;
                }
            }
            ToWorker::Cancel { job } => {
                if let Some(open) = current.as_mut().filter(|o| o.id == job) {
                    open.failed = true;
                }
            }
            ToWorker::EndJob { job } => {
                if current.as_ref().is_some_and(|o| o.id == job) {
                    close(&mut current, &mut mappings);
                }
                tx.send(FromWorker::JobEnded { job })?;
            }
            ToWorker::Shutdown => {
                let _ = tx.send(FromWorker::Bye);
                return Ok(());
            }
        }
    }
}

/// The pieces of one chunk of `len` bytes from the bulk channel (see
/// [`send_chunk`](crate::protocol::send_chunk)): messages until `len` bytes
/// came, or one that is empty or goes past them.
fn receive_chunk(bulk: &IpcBytesReceiver, len: u64) -> Result<Vec<Vec<u8>>, WorkerError> {
    let (mut pieces, mut received) = (Vec::new(), 0u64);
    while received < len {
        let piece = bulk.recv()?;
        received += piece.len() as u64;
        let wrong = piece.is_empty() || received > len;
        pieces.push(piece);
        if wrong {
            break; // `receive_chunks` reports the mismatch
        }
    }
    Ok(pieces)
}

/// Why the input bytes sent with a task could not be taken: the task fails.
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("chunk of {announced} bytes announced, {received} received")]
    Length { announced: u64, received: u64 },
    #[error("chunk for segment {segment}, which does not exist")]
    NoSegment { segment: u32 },
    #[error("segment {segment}: {source}")]
    Write { segment: u32, source: std::io::Error },
}

/// Copies the input bytes sent with a task into the job's private segments.
fn receive_chunks(instance: &mut dyn JobInstance, data: &[(&Chunk, Vec<Vec<u8>>)]) -> Result<(), ChunkError> {
    for (chunk, pieces) in data {
        let received: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
        if received != chunk.len {
            return Err(ChunkError::Length {
                announced: chunk.len,
                received,
            });
        }
        let segment = chunk.segment;
        let region =
            (instance.regions_mut().get_mut(segment as usize)).ok_or(ChunkError::NoSegment { segment })?;
        let mut offset = chunk.offset as usize;
        for piece in pieces {
            region
                .write(offset, piece)
                .map_err(|source| ChunkError::Write { segment, source })?;
            offset += piece.len();
        }
    }
    Ok(())
}

/// Runs one task, catching panics; with a private output, the reply carries
/// the tile the task wrote. An injected fault in the task leaves the rest of
/// it to the caller.
fn run_task(open: &mut OpenJob, task: u32, spec: &[u8], faults: &Faults) -> (FromWorker, Option<Aftermath>) {
    let mut aftermath = None;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let range = open.instance.run_task(spec)?;
        aftermath = faults.at(Point::Task, Some(task));
        if let Some(fault) = &faults.0
            && fault.fires(Point::Tile, Some(task))
        {
            scribble(open.instance.as_mut(), range.clone());
            aftermath = Some(fault::strike(Point::Tile, fault.behaviour));
        }
        Ok::<_, InstanceError>(range)
    }));
    let reply = match outcome {
        Ok(Ok(range)) => {
            let output = open.instance.output();
            let tile = output.is_private().then(|| Tile {
                offset: range.start as u64,
                bytes: Payload::new(output.bytes()[range].to_vec()),
            });
            FromWorker::TaskDone {
                job: open.id,
                task,
                tile,
            }
        }
        Ok(Err(err)) => failed(open, task, Failure::Error(err.to_string())),
        Err(payload) => failed(open, task, Failure::Panic(panic_message(&*payload))),
    };
    (reply, aftermath)
}

/// A worker dying while writing a tile: the first half of the task's tile is
/// overwritten with garbage, as if the worker died halfway through it.
fn scribble(instance: &mut dyn JobInstance, range: std::ops::Range<usize>) {
    // SAFETY: `range` is this task's own output range, which the coordinator
    // checked is disjoint from every other task's; the task has just written
    // it and nothing else touches it until the task is reported done.
    let bytes = unsafe { instance.output_mut().bytes_mut() };
    if let Some(tile) = bytes.get_mut(range) {
        let half = tile.len() / 2;
        tile[..half].fill(0xEE);
    }
}

fn failed(open: &mut OpenJob, task: u32, failure: Failure) -> FromWorker {
    open.failed = true;
    FromWorker::TaskFailed {
        job: open.id,
        task,
        failure: cut_failure(failure),
    }
}

fn flush_failed(open: &mut OpenJob, failure: Failure) -> FromWorker {
    open.failed = true;
    FromWorker::FlushFailed {
        job: open.id,
        failure: cut_failure(failure),
    }
}

fn cut_failure(failure: Failure) -> Failure {
    match failure {
        Failure::Panic(message) => Failure::Panic(cut(message)),
        Failure::Error(message) => Failure::Error(cut(message)),
    }
}

/// Longest failure message sent whole: the message carrying it must stay
/// small enough not to be fragmented (see [`Payload`]).
const MESSAGE_MAX: usize = 16 * 1024;

/// `message`, cut at [`MESSAGE_MAX`] bytes (on a character boundary) with a
/// note of how much was left out.
fn cut(mut message: String) -> String {
    if message.len() > MESSAGE_MAX {
        let total = message.len();
        let end = (0..=MESSAGE_MAX)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        message.truncate(end);
        message.push_str(&format!("... ({} more bytes not sent)", total - end));
    }
    message
}

/// Opens the job `key` names from the registered `jobs` with its encoded parameters,
/// input segments and output, those kept from the last job from `mappings`: what
/// a worker does when a job starts, whatever carries its messages
/// (ipc-channel here, MPI in `coop`).
pub fn open_job(
    jobs: &[JobEntry],
    key: &JobKey,
    params: &[u8],
    input: Vec<SegmentDesc>,
    output: Option<OutputDesc>,
    mappings: &mut Mappings,
) -> Result<Box<dyn JobInstance>, Rejection> {
    let Some(entry) = jobs.iter().find(|entry| entry.is(key)) else {
        return Err(Rejection::UnknownJob {
            registered: jobs.iter().map(JobEntry::describe).collect(),
        });
    };
    let (regions, output) = mappings
        .open(input, output)
        .map_err(|err| Rejection::Setup(err.to_string()))?;
    match panic::catch_unwind(AssertUnwindSafe(|| (entry.open)(params, regions, output))) {
        Ok(result) => result.map_err(|err| Rejection::Setup(err.to_string())),
        Err(payload) => Err(Rejection::Setup(format!(
            "opening the job panicked: {}",
            panic_message(&*payload)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_failure_messages_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short".to_string()), "short");
        let long = "é".repeat(MESSAGE_MAX); // 2 bytes each
        let sent = cut(long.clone());
        assert!(sent.len() < MESSAGE_MAX + 64, "{} bytes", sent.len());
        assert!(sent.starts_with(&long[..MESSAGE_MAX]));
        assert!(sent.ends_with(&format!("... ({} more bytes not sent)", long.len() - MESSAGE_MAX)));
    }
}
