//! The task loop every worker runs, pool worker or MPI rank: [`serve`], over
//! a [`Link`] that carries its messages.

use std::panic::{self, AssertUnwindSafe};

use crate::job::{InstanceError, JobEntry, JobInstance, JobKey};
use crate::link::{Link, PayloadKind};
use crate::mappings::Mappings;
use crate::output::Output;
use crate::panic::panic_message;
use crate::protocol::{
    Chunk, Failure, FromWorker, OutputDesc, Payload, Rejection, SegmentDesc, Tile, ToWorker,
};

/// Why [`serve`] stopped before the coordinator said
/// [`ToWorker::Shutdown`] or hung up: the link failed. `E` is the link's
/// error, kept as the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError<E: std::error::Error + 'static> {
    /// A message from the coordinator could not be received.
    #[error("receiving a message from the coordinator")]
    Receive(#[source] E),
    /// The input bytes sent with a task could not be received.
    #[error("receiving the input of task {task} of job {job}")]
    ReceiveChunk {
        /// The job.
        job: u64,
        /// The task.
        task: u32,
        /// Why.
        #[source]
        source: E,
    },
    /// The coordinator's cancellations could not be read.
    #[error("reading the coordinator's cancellations")]
    Cancellations(#[source] E),
    /// A message could not be sent to the coordinator.
    #[error("sending {kind} to the coordinator")]
    Send {
        /// What the message was ([`FromWorker::kind`]).
        kind: &'static str,
        /// Why.
        #[source]
        source: E,
    },
}

/// Serves a coordinator over `link` with the registered `jobs`: opens the
/// jobs it starts, runs their tasks and sends their partials, until it says
/// [`ToWorker::Shutdown`] (answered [`FromWorker::Bye`]) or hangs up
/// (`Ok` both), or the link fails.
///
/// What a job does wrong (a task or a flush that fails or panics, input
/// that does not fit, a tile out of bounds) is answered to the coordinator
/// and fails the job, never the loop; the job's remaining tasks and flushes
/// are then skipped until the coordinator ends it.
///
/// The input and output a job is lent stay mapped after it ends, for the
/// next job to name them by id (see `Mappings`).
pub fn serve<L: Link>(jobs: &[JobEntry], link: &mut L) -> Result<(), ServeError<L::Error>> {
    let mut worker = Worker {
        jobs,
        current: None,
        mappings: Mappings::default(),
        more_input: None,
    };
    while let Some(message) = link.receive().map_err(ServeError::Receive)? {
        match message {
            ToWorker::MoreInput { job, input } => worker.more_input(job, input),
            ToWorker::StartJob {
                job,
                key,
                params,
                input,
                output,
            } => worker.start(link, job, &key, &params, input, output)?,
            ToWorker::Task {
                job,
                task,
                spec,
                chunks,
            } => worker.task(link, job, task, &spec, &chunks)?,
            ToWorker::Flush { job } => worker.flush(link, job)?,
            ToWorker::Cancel { job } => {
                if let Some(open) = worker.current.as_mut().filter(|open| open.id == job) {
                    open.failed = true;
                }
            }
            ToWorker::EndJob { job } => {
                if worker.current.as_ref().is_some_and(|open| open.id == job) {
                    worker.close();
                }
                // Answered whether or not the job was open here (it may have
                // been rejected): the coordinator may wait for it.
                send(link, FromWorker::JobEnded { job })?;
            }
            ToWorker::Shutdown => {
                // The coordinator may be gone already; this is the end anyway.
                let _ = link.send(FromWorker::Bye);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// What the loop keeps between messages.
struct Worker<'a> {
    jobs: &'a [JobEntry],
    current: Option<OpenJob>,
    /// One for the worker's life: it carries mappings from a job to the next.
    mappings: Mappings,
    /// The segments of `MoreInput` messages, for the job they name.
    more_input: Option<(u64, Vec<SegmentDesc>)>,
}

struct OpenJob {
    id: u64,
    instance: Box<dyn JobInstance>,
    /// Set after a task or flush failed, or the coordinator cancelled the
    /// job: the partial may be half-updated, so the rest of the job's tasks
    /// and flushes are skipped until the coordinator ends it.
    failed: bool,
}

impl Worker<'_> {
    fn more_input(&mut self, job: u64, input: Vec<SegmentDesc>) {
        match &mut self.more_input {
            Some((id, segments)) if *id == job => segments.extend(input),
            // A job that never started (its coordinator gave up) leaves its
            // segments here: the next job's replace them.
            _ => self.more_input = Some((job, input)),
        }
    }

    fn start<L: Link>(
        &mut self,
        link: &mut L,
        job: u64,
        key: &JobKey,
        params: &Payload,
        input: Vec<SegmentDesc>,
        output: Option<OutputDesc>,
    ) -> Result<(), ServeError<L::Error>> {
        // Before opening the next: its input may name what this one holds.
        self.close();
        let input = match self.more_input.take() {
            Some((id, mut segments)) if id == job => {
                segments.extend(input);
                segments
            }
            _ => input,
        };
        match open_job(self.jobs, key, params.bytes(), input, output, &mut self.mappings) {
            Ok(instance) => {
                self.current = Some(OpenJob {
                    id: job,
                    instance: link.wrap(instance),
                    failed: false,
                });
                Ok(())
            }
            Err(reason) => send(link, FromWorker::JobRejected { job, reason }),
        }
    }

    /// Closes the open job, if any, taking back the input and output it was lent.
    fn close(&mut self) {
        if let Some(mut open) = self.current.take() {
            self.mappings.reclaim(open.instance.as_mut());
        }
    }

    /// The open job if it is `job` and still runs: a task or flush of
    /// another job, or of a failed one, is stale.
    fn runnable(&mut self, job: u64) -> Option<&mut OpenJob> {
        self.current
            .as_mut()
            .filter(|open| open.id == job && !open.failed)
    }

    /// Fails the open job if the coordinator cancelled it (or a later one).
    fn take_cancelled<L: Link>(&mut self, link: &mut L) -> Result<(), ServeError<L::Error>> {
        let cancelled = link.take_cancelled().map_err(ServeError::Cancellations)?;
        if let (Some(cancelled), Some(open)) = (cancelled, self.current.as_mut())
            && cancelled >= open.id
        {
            open.failed = true;
        }
        Ok(())
    }

    fn task<L: Link>(
        &mut self,
        link: &mut L,
        job: u64,
        task: u32,
        spec: &Payload,
        chunks: &[Chunk],
    ) -> Result<(), ServeError<L::Error>> {
        // The chunks' bytes are read whatever happens next: left unread,
        // they would be taken for the next task's.
        let mut data = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let pieces = (link.receive_chunk(chunk.len)).map_err(|source| ServeError::ReceiveChunk {
                job,
                task,
                source,
            })?;
            data.push((chunk, pieces));
        }
        self.take_cancelled(link)?;
        let Some(open) = self.runnable(job) else {
            return Ok(());
        };
        let reply = match receive_chunks(open.instance.as_mut(), &data) {
            Err(err) => failed(open, task, Failure::Error(err.to_string())),
            Ok(()) => run_task(open, task, spec.bytes(), link),
        };
        send(link, reply)
    }

    fn flush<L: Link>(&mut self, link: &mut L, job: u64) -> Result<(), ServeError<L::Error>> {
        self.take_cancelled(link)?;
        let Some(open) = self.runnable(job) else {
            return Ok(());
        };
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| open.instance.take_partial())) {
            Ok(Ok(bytes)) => FromWorker::Partial {
                job,
                data: link.payload(PayloadKind::Partial, bytes),
            },
            Ok(Err(err)) => flush_failed(open, Failure::Error(err.to_string())),
            Err(payload) => flush_failed(open, Failure::Panic(panic_message(&*payload))),
        };
        send(link, reply)
    }
}

fn send<L: Link>(link: &mut L, message: FromWorker) -> Result<(), ServeError<L::Error>> {
    let kind = message.kind();
    link.send(message)
        .map_err(|source| ServeError::Send { kind, source })
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
/// the tile the task wrote.
fn run_task<L: Link>(open: &mut OpenJob, task: u32, spec: &[u8], link: &mut L) -> FromWorker {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| open.instance.run_task(spec)));
    let tile = match outcome {
        Ok(Ok(range)) => tile_bytes(open.instance.output(), range),
        Ok(Err(err)) => Err(Failure::Error(err.to_string())),
        Err(payload) => Err(Failure::Panic(panic_message(&*payload))),
    };
    match tile {
        Ok(tile) => FromWorker::TaskDone {
            job: open.id,
            task,
            tile: tile.map(|(offset, bytes)| Tile {
                offset,
                bytes: link.payload(PayloadKind::Tile, bytes),
            }),
        },
        Err(failure) => failed(open, task, failure),
    }
}

/// The offset and bytes of the tile a task wrote in `range` of `output`,
/// if the coordinator needs them: only a private output's, and only a
/// non-empty range (the coordinator expects no tile for an empty one).
fn tile_bytes(output: &Output, range: std::ops::Range<usize>) -> Result<Option<(u64, Vec<u8>)>, Failure> {
    if !output.is_private() || range.is_empty() {
        return Ok(None);
    }
    match output.bytes().get(range.clone()) {
        Some(bytes) => Ok(Some((range.start as u64, bytes.to_vec()))),
        None => Err(Failure::Error(InstanceError::OutOfBounds { range }.to_string())),
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
/// a worker does when a job starts ([`serve`] does it on [`ToWorker::StartJob`]).
pub(crate) fn open_job(
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
    use ipc_channel::ipc::IpcSharedMemory;

    use super::*;
    use crate::protocol::new_region_id;
    use crate::testing::{
        CLAIM, ENTRY, ERR, FLUSH_ERR, FLUSH_PANIC, FakeLink, PANIC, TILE, WRITE, private, start, summary,
        task,
    };

    /// Serves `inbox` (then a hang-up) and returns what the worker said.
    fn served(link: &mut FakeLink) -> Vec<String> {
        serve(&[ENTRY], link).expect("the fake link never fails");
        summary(&link.sent)
    }

    fn chunk(segment: u32, offset: u64, len: u64) -> Chunk {
        Chunk { segment, offset, len }
    }

    #[test]
    fn long_failure_messages_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short".to_string()), "short");
        let long = "é".repeat(MESSAGE_MAX); // 2 bytes each
        let sent = cut(long.clone());
        assert!(sent.len() < MESSAGE_MAX + 64, "{} bytes", sent.len());
        assert!(sent.starts_with(&long[..MESSAGE_MAX]));
        assert!(sent.ends_with(&format!("... ({} more bytes not sent)", long.len() - MESSAGE_MAX)));
    }

    #[test]
    fn a_hang_up_ends_the_loop_quietly() {
        assert!(served(&mut FakeLink::new([])).is_empty());
    }

    #[test]
    fn shutdown_is_answered_bye_and_ends_the_loop() {
        let mut link = FakeLink::new([ToWorker::Shutdown, ToWorker::EndJob { job: 1 }]);
        assert_eq!(served(&mut link), ["bye"]);
        assert_eq!(link.inbox.len(), 1, "nothing read after the shutdown");
    }

    #[test]
    fn a_cancelled_jobs_tasks_and_flushes_are_skipped_and_its_end_answered() {
        let mut link = FakeLink::new([
            start(1, 0, vec![], None),
            task(1, 0, [WRITE, 0, 0], vec![]),
            ToWorker::Flush { job: 1 },
            ToWorker::EndJob { job: 1 },
        ]);
        link.cancels.push_back(Some(1));
        assert_eq!(served(&mut link), ["ended 1"]);

        // A cancellation of an earlier job leaves this one running.
        let mut link = FakeLink::new([
            start(2, 0, vec![], None),
            task(2, 0, [WRITE, 0, 0], vec![]),
            ToWorker::EndJob { job: 2 },
        ]);
        link.cancels.push_back(Some(1));
        assert_eq!(served(&mut link), ["done 2/0", "ended 2"]);

        // A cancellation in the stream of messages, too.
        let mut link = FakeLink::new([
            start(3, 0, vec![], None),
            ToWorker::Cancel { job: 3 },
            task(3, 0, [WRITE, 0, 0], vec![]),
            ToWorker::Flush { job: 3 },
        ]);
        assert!(served(&mut link).is_empty());
    }

    #[test]
    fn end_job_is_answered_for_a_job_that_is_not_open() {
        let mut link = FakeLink::new([ToWorker::EndJob { job: 4 }, start(5, 0, vec![], None)]);
        link.inbox.push_back(ToWorker::EndJob { job: 4 });
        assert_eq!(served(&mut link), ["ended 4", "ended 4"]);
    }

    #[test]
    fn tiles_go_back_only_for_a_private_output_and_a_nonempty_range() {
        let shared = Some(OutputDesc::Shared {
            id: new_region_id(),
            region: IpcSharedMemory::from_byte(0, 8),
        });
        let mut link = FakeLink::new([
            start(1, 0, vec![], private(8)),
            task(1, 0, [WRITE, 2, 5], vec![]),
            task(1, 1, [WRITE, 5, 5], vec![]),
            start(2, 0, vec![], shared),
            task(2, 0, [WRITE, 0, 4], vec![]),
            ToWorker::Flush { job: 2 },
            start(3, 0, vec![], None),
            task(3, 0, [CLAIM, 0, 0], vec![]),
        ]);
        let t = TILE;
        assert_eq!(
            served(&mut link),
            [
                format!("done 1/0 tile@2 [{t}, {t}, {t}]"),
                "done 1/1".to_string(),
                "done 2/0".to_string(),
                format!("partial 2 [{t}, {t}, {t}, {t}, 0, 0, 0, 0, 1]"),
                "done 3/0".to_string(),
            ]
        );
    }

    #[test]
    fn a_tile_out_of_bounds_fails_the_task_and_stops_the_job() {
        let mut link = FakeLink::new([
            start(1, 0, vec![], private(4)),
            task(1, 0, [CLAIM, 2, 9], vec![]),
            task(1, 1, [WRITE, 0, 1], vec![]),
            ToWorker::Flush { job: 1 },
            ToWorker::EndJob { job: 1 },
        ]);
        assert_eq!(
            served(&mut link),
            [
                r#"failed 1/0 Error("output range 2..9 is out of bounds")"#,
                "ended 1"
            ]
        );
    }

    #[test]
    fn a_failing_task_is_reported_and_stops_the_job() {
        for (command, failure) in [
            (PANIC, "Panic(\"task asked to panic"),
            (ERR, "Error(\"the job writes output but was given none\")"),
        ] {
            let mut link = FakeLink::new([
                start(1, 0, vec![], None),
                task(1, 0, [command, 0, 0], vec![]),
                task(1, 1, [WRITE, 0, 0], vec![]),
                ToWorker::Flush { job: 1 },
            ]);
            let sent = served(&mut link);
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert!(sent[0].starts_with(&format!("failed 1/0 {failure}")), "{sent:?}");
        }
    }

    #[test]
    fn a_failed_flush_answers_flush_failed_and_stops_the_job() {
        for (flags, failure) in [
            (FLUSH_ERR, "Error(\"the job writes output but was given none\")"),
            (FLUSH_PANIC, "Panic(\"flush asked to panic"),
        ] {
            let mut link = FakeLink::new([
                start(1, flags, vec![], None),
                task(1, 0, [WRITE, 0, 0], vec![]),
                ToWorker::Flush { job: 1 },
                task(1, 1, [WRITE, 0, 0], vec![]),
                ToWorker::Flush { job: 1 },
            ]);
            let sent = served(&mut link);
            assert_eq!(sent.len(), 2, "{sent:?}");
            assert_eq!(sent[0], "done 1/0");
            assert!(
                sent[1].starts_with(&format!("flush failed 1 {failure}")),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn chunks_fill_private_segments_after_more_input() {
        let mut link = FakeLink::new([
            ToWorker::MoreInput {
                job: 1,
                input: vec![SegmentDesc::Private { len: 2 }],
            },
            start(1, 0, vec![SegmentDesc::Private { len: 4 }], None),
            task(1, 0, [WRITE, 0, 0], vec![chunk(0, 1, 1), chunk(1, 1, 3)]),
            ToWorker::Flush { job: 1 },
        ]);
        link.chunks.extend([vec![9], vec![1, 2, 3]]);
        assert_eq!(served(&mut link), ["done 1/0", "partial 1 [0, 9, 0, 1, 2, 3, 1]"]);
    }

    #[test]
    fn a_skipped_tasks_chunks_are_read_all_the_same() {
        let mut link = FakeLink::new([
            start(1, 0, vec![SegmentDesc::Private { len: 1 }], None),
            task(7, 0, [WRITE, 0, 0], vec![chunk(0, 0, 1)]),
            task(1, 0, [WRITE, 0, 0], vec![chunk(0, 0, 1)]),
            ToWorker::Flush { job: 1 },
        ]);
        link.chunks.extend([vec![7], vec![1]]);
        assert_eq!(served(&mut link), ["done 1/0", "partial 1 [1, 1]"]);
    }

    #[test]
    fn a_bad_chunk_fails_the_task() {
        for (chunk, bytes, failure) in [
            (chunk(0, 0, 2), vec![1], "chunk of 2 bytes announced, 1 received"),
            (
                chunk(3, 0, 1),
                vec![1],
                "chunk for segment 3, which does not exist",
            ),
            (
                chunk(0, 1, 2),
                vec![1, 2],
                "segment 0: 2 bytes at offset 1 do not fit the segment",
            ),
        ] {
            let mut link = FakeLink::new([
                start(1, 0, vec![SegmentDesc::Private { len: 2 }], None),
                task(1, 0, [WRITE, 0, 0], vec![chunk]),
            ]);
            link.chunks.push_back(bytes);
            assert_eq!(served(&mut link), [format!("failed 1/0 Error({failure:?})")]);
        }
    }

    #[test]
    fn a_link_that_fails_stops_the_loop_with_its_error() {
        let mut link = FakeLink::new([task(1, 4, [WRITE, 0, 0], vec![chunk(0, 0, 1)])]);
        let err = serve(&[ENTRY], &mut link).unwrap_err();
        assert!(
            matches!(err, ServeError::ReceiveChunk { job: 1, task: 4, .. }),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).expect("the link's error is the source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::UnexpectedEof)
        );
    }

    #[test]
    fn an_unknown_job_is_rejected_and_its_tasks_skipped() {
        let mut link = FakeLink::new([
            ToWorker::StartJob {
                job: 1,
                key: crate::JobKey {
                    type_name: "other".to_string(),
                    type_hash: 1,
                },
                params: Payload::Inline(vec![]),
                input: vec![],
                output: None,
            },
            task(1, 0, [WRITE, 0, 0], vec![]),
            ToWorker::EndJob { job: 1 },
        ]);
        let sent = served(&mut link);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[0].starts_with("rejected 1 UnknownJob"), "{sent:?}");
        assert!(sent[0].contains("coop_worker::testing::TestJob"), "{sent:?}");
        assert_eq!(sent[1], "ended 1");
    }

    #[test]
    fn mappings_are_kept_from_one_job_to_the_next() {
        let id = new_region_id();
        let mut link = FakeLink::new([
            start(
                1,
                0,
                vec![SegmentDesc::Shared {
                    id,
                    region: IpcSharedMemory::from_bytes(&[4, 2]),
                }],
                None,
            ),
            ToWorker::EndJob { job: 1 },
            start(2, 0, vec![SegmentDesc::Held { id }], None),
            ToWorker::Flush { job: 2 },
            // Job 2 is closed by the next start, which names what it held.
            start(3, 0, vec![SegmentDesc::Held { id }], None),
            ToWorker::Flush { job: 3 },
            start(4, 0, vec![SegmentDesc::Held { id: id + 1000 }], None),
        ]);
        let sent = served(&mut link);
        assert_eq!(
            sent[..3],
            ["ended 1", "partial 2 [4, 2, 0]", "partial 3 [4, 2, 0]"]
        );
        assert!(sent[3].starts_with("rejected 4 Setup"), "{sent:?}");
    }
}
