//! For unit tests of the task loop: an in-memory [`Link`] and a tiny job.

use std::collections::VecDeque;
use std::ops::Range;

use crate::job::{InstanceError, JobEntry, JobInstance};
use crate::link::{Link, PayloadKind};
use crate::output::Output;
use crate::protocol::{Chunk, FromWorker, OutputDesc, Payload, SegmentDesc, ToWorker};
use crate::region::Region;

/// A link whose coordinator is a queue of messages, and whose replies go
/// into a list.
#[derive(Debug, Default)]
pub(crate) struct FakeLink {
    /// What the coordinator says, in order; once empty, it hung up.
    pub(crate) inbox: VecDeque<ToWorker>,
    /// The bytes of the chunks that follow tasks, one entry a chunk.
    pub(crate) chunks: VecDeque<Vec<u8>>,
    /// What `take_cancelled` answers, one entry a call; then `None`.
    pub(crate) cancels: VecDeque<Option<u64>>,
    /// What the worker said.
    pub(crate) sent: Vec<FromWorker>,
    /// Undecodable messages sent (fault injection).
    pub(crate) garbage: usize,
}

impl FakeLink {
    pub(crate) fn new(inbox: impl IntoIterator<Item = ToWorker>) -> Self {
        FakeLink {
            inbox: inbox.into_iter().collect(),
            ..FakeLink::default()
        }
    }
}

impl Link for FakeLink {
    type Error = std::io::Error;

    fn receive(&mut self) -> Result<Option<ToWorker>, Self::Error> {
        Ok(self.inbox.pop_front())
    }

    fn receive_chunk(&mut self, _len: u64) -> Result<Vec<Vec<u8>>, Self::Error> {
        let chunk = self.chunks.pop_front();
        chunk
            .map(|bytes| vec![bytes])
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }

    fn take_cancelled(&mut self) -> Result<Option<u64>, Self::Error> {
        Ok(self.cancels.pop_front().flatten())
    }

    fn payload(&mut self, _kind: PayloadKind, bytes: Vec<u8>) -> Payload {
        Payload::Inline(bytes)
    }

    fn send(&mut self, message: FromWorker) -> Result<(), Self::Error> {
        self.sent.push(message);
        Ok(())
    }
}

/// The one registered job of the tests.
pub(crate) const ENTRY: JobEntry = JobEntry {
    name: "test",
    type_name: "coop_worker::testing::TestJob",
    type_hash: 7,
    open: TestJob::open,
};

/// Parameter flag: the flush returns an error.
pub(crate) const FLUSH_ERR: u8 = 1;
/// Parameter flag: the flush panics.
pub(crate) const FLUSH_PANIC: u8 = 2;

/// Task command: writes `TILE` over the range, returns it.
pub(crate) const WRITE: u8 = 0;
/// Task command: panics.
pub(crate) const PANIC: u8 = 1;
/// Task command: returns an error.
pub(crate) const ERR: u8 = 2;
/// Task command: returns the range without writing it (may be out of bounds).
pub(crate) const CLAIM: u8 = 3;

/// What `WRITE` writes.
pub(crate) const TILE: u8 = 0xAB;

/// A job whose tasks, `[command, start, end]`, write or claim an output
/// range, and whose partial is its input's bytes, its output's, and the
/// number of tasks it ran.
pub(crate) struct TestJob {
    flags: u8,
    regions: Vec<Region>,
    output: Output,
    tasks: u8,
}

impl TestJob {
    fn open(
        params: &[u8],
        regions: Vec<Region>,
        output: Output,
    ) -> Result<Box<dyn JobInstance>, InstanceError> {
        Ok(Box::new(TestJob {
            flags: params.first().copied().unwrap_or(0),
            regions,
            output,
            tasks: 0,
        }))
    }
}

impl JobInstance for TestJob {
    fn run_task(&mut self, spec: &[u8]) -> Result<Range<usize>, InstanceError> {
        let [command, start, end] = *spec else {
            panic!("bad spec {spec:?}");
        };
        let range = usize::from(start)..usize::from(end);
        self.tasks += 1;
        match command {
            WRITE => {
                // SAFETY: a test in one process, nothing else reads or writes
                // the output now.
                let output = unsafe { self.output.bytes_mut() };
                output[range.clone()].fill(TILE);
                Ok(range)
            }
            PANIC => panic!("task asked to panic"),
            ERR => Err(InstanceError::NoOutput),
            _ => Ok(range),
        }
    }

    fn regions_mut(&mut self) -> &mut [Region] {
        &mut self.regions
    }

    fn output(&self) -> &Output {
        &self.output
    }

    fn output_mut(&mut self) -> &mut Output {
        &mut self.output
    }

    fn take_partial(&mut self) -> Result<Vec<u8>, InstanceError> {
        if self.flags & FLUSH_PANIC != 0 {
            panic!("flush asked to panic");
        }
        if self.flags & FLUSH_ERR != 0 {
            return Err(InstanceError::NoOutput);
        }
        let mut partial: Vec<u8> = self.regions.iter().flat_map(|r| r.bytes().to_vec()).collect();
        partial.extend_from_slice(self.output.bytes());
        partial.push(std::mem::take(&mut self.tasks));
        Ok(partial)
    }
}

/// Starts job `job` of [`TestJob`] with parameter `flags`.
pub(crate) fn start(job: u64, flags: u8, input: Vec<SegmentDesc>, output: Option<OutputDesc>) -> ToWorker {
    ToWorker::StartJob {
        job,
        key: ENTRY.key(),
        params: Payload::Inline(vec![flags]),
        input,
        output,
    }
}

/// Task `task` of job `job`: `[command, start, end]`, with input chunks.
pub(crate) fn task(job: u64, task: u32, spec: [u8; 3], chunks: Vec<Chunk>) -> ToWorker {
    ToWorker::Task {
        job,
        task,
        spec: Payload::Inline(spec.to_vec()),
        chunks,
    }
}

/// A private output of `len` bytes.
pub(crate) fn private(len: u64) -> Option<OutputDesc> {
    Some(OutputDesc::Private { len })
}

/// What `sent` says, in short, for assertions: kind, job, task, tile and
/// partial bytes, failure text.
pub(crate) fn summary(sent: &[FromWorker]) -> Vec<String> {
    sent.iter()
        .map(|message| match message {
            FromWorker::TaskDone { job, task, tile } => match tile {
                None => format!("done {job}/{task}"),
                Some(tile) => format!("done {job}/{task} tile@{} {:?}", tile.offset, tile.bytes.bytes()),
            },
            FromWorker::TaskFailed { job, task, failure } => format!("failed {job}/{task} {failure:?}"),
            FromWorker::FlushFailed { job, failure } => format!("flush failed {job} {failure:?}"),
            FromWorker::Partial { job, data } => format!("partial {job} {:?}", data.bytes()),
            FromWorker::JobRejected { job, reason } => format!("rejected {job} {reason:?}"),
            FromWorker::JobEnded { job } => format!("ended {job}"),
            FromWorker::Bye => "bye".to_string(),
        })
        .collect()
}
