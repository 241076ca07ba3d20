//! The scheduler over an in-memory transport: every decision it makes is
//! recorded and checked against a small model of honest (and dishonest)
//! workers, with no process, channel or real wait.

use std::collections::HashMap;

use coop_worker::protocol::{Failure, Payload, Rejection};
use serde::{Deserialize, Serialize};

use super::*;
use crate::job::TaskError;

/// How the fake's workers die when a test kills them from outside.
const SIGKILLED: WorkerExit = WorkerExit::Signaled {
    signal: 9,
    core_dumped: false,
};

/// The job id every test runs under.
const JOB: u64 = 7;

/// Longest the fake sleeps when it has nothing to report (a real transport
/// would wait up to `POLL`): enough for task timeouts of a few tens of ms.
const IDLE: Duration = Duration::from_millis(2);

/// Replacements the fake starts by default: more than any test needs, few
/// enough that a scheduler replacing workers forever fails instead of hanging.
const SPARES: usize = 100;

/// Calls after which the fake gives up on a scheduler that never finishes.
const MAX_CALLS: usize = 100_000;

/// Idle polls in a row after which the fake gives up: the scheduler waits for
/// an event no worker will ever send (about 4 s at [`IDLE`]).
const MAX_IDLE: u32 = 2000;

// ---------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------

/// Collects the index of every task it runs: a result that is exactly
/// `0..tasks` proves that every task was counted once, none twice.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Collect {
    tasks: u32,
    /// Output bytes each task writes (task `t`: `t * tile..(t + 1) * tile`);
    /// 0 for no output.
    tile: usize,
    /// The input ranges each task reads, by task (tasks past its end read none).
    reads: Vec<Vec<(usize, Range<usize>)>>,
}

impl Collect {
    fn new(tasks: u32) -> Self {
        Collect {
            tasks,
            ..Collect::default()
        }
    }
}

impl Job for Collect {
    const NAME: &'static str = "collect";
    type Task = u32;
    type Partial = Vec<u32>;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<u32>, TaskError> {
        Ok((0..self.tasks).collect())
    }

    fn output_range(&self, task: &u32) -> Range<usize> {
        tile_range(*task, self.tile)
    }

    fn input_ranges(&self, task: &u32, _: &Input) -> Vec<(usize, Range<usize>)> {
        self.reads.get(*task as usize).cloned().unwrap_or_default()
    }

    fn map(&self, _: &u32, _: &Input, _: &mut Vec<u32>) -> Result<(), TaskError> {
        Err("writes its output".into())
    }

    fn map_with_output(
        &self,
        task: &u32,
        _: &Input,
        output: &mut [u8],
        partial: &mut Vec<u32>,
    ) -> Result<(), TaskError> {
        output.fill(tile_byte(*task));
        partial.push(*task);
        Ok(())
    }

    fn merge(&self, into: &mut Vec<u32>, other: Vec<u32>) {
        into.extend(other);
    }
}

fn tile_range(task: u32, tile: usize) -> Range<usize> {
    task as usize * tile..(task as usize + 1) * tile
}

/// What task `task` writes in each byte of its tile.
fn tile_byte(task: u32) -> u8 {
    task as u8 + 1
}

fn encode(partial: &[u32]) -> Payload {
    Payload::Inline(postcard::to_allocvec(partial).unwrap())
}

// ---------------------------------------------------------------------------
// The fake transport
// ---------------------------------------------------------------------------

/// An order the fake worker took, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// `attempt`: how many times the task was sent before (to any worker).
    Task {
        task: u32,
        attempt: u32,
    },
    Flush,
}

/// What a worker is about to answer, for a test's [`Behaviour`] to judge.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// The worker's index (0 and 1 are the first workers, replacements follow).
    worker: u64,
    order: Order,
    /// Orders this worker answered before this one.
    answered: usize,
}

impl Step {
    fn task(&self) -> Option<u32> {
        match self.order {
            Order::Task { task, .. } => Some(task),
            Order::Flush => None,
        }
    }

    fn is_flush(&self) -> bool {
        self.order == Order::Flush
    }
}

/// How a fake worker answers an order.
#[derive(Debug)]
enum Act {
    /// Runs the task (folding it) and reports it, or sends its partial.
    Honest,
    /// Never answers this order or any after it (a task that hangs).
    Hang,
    /// Sends these events instead of the answer; the order is dropped. A
    /// [`Event::Lost`] among them is the worker's death.
    Reply(Vec<Event>),
    /// Sends these events, then answers honestly.
    Prefix(Vec<Event>),
}

impl Act {
    fn dies() -> Act {
        Act::Reply(vec![Event::Lost(SIGKILLED)])
    }

    fn says(message: FromWorker) -> Act {
        Act::Reply(vec![Event::Message(message)])
    }
}

type Behaviour = Box<dyn FnMut(&Step) -> Act>;

/// A call the scheduler made, or an event the fake handed it, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Start {
        worker: u64,
        job: u64,
        params: usize,
    },
    Task {
        worker: u64,
        task: u32,
        spec: usize,
        chunks: Vec<Chunk>,
    },
    Flush {
        worker: u64,
    },
    End {
        worker: u64,
        job: u64,
        failed: bool,
        opened: bool,
        busy: bool,
    },
    Kill {
        worker: u64,
        why: Kill,
    },
    /// The replacement started, or `None` when it could not be.
    Replace {
        worker: Option<u64>,
    },
    /// An event handed to the scheduler: `done` is the task of a
    /// `TaskDone`, `bytes` those of a partial or tile.
    Event {
        worker: u64,
        kind: &'static str,
        done: Option<u32>,
        bytes: usize,
    },
}

/// One simulated worker: the orders it was sent and has not answered, and
/// the tasks folded in its partial.
#[derive(Debug)]
struct Sim {
    id: WorkerId,
    orders: VecDeque<Order>,
    folded: Vec<u32>,
    answered: usize,
    hung: bool,
    dead: bool,
}

/// A transport over simulated workers that run their orders in the order sent
/// (one answer per [`Transport::next_event`], round robin over workers).
/// A [`Behaviour`] decides how each order is answered; by default honestly.
///
/// It models what the scheduler relies on from a real transport: a killed
/// worker is reported [`Event::Lost`], after whatever it had in the pipe (it
/// sends its partial first, unasked: a scheduler that listened would count
/// its tasks twice, invariant 4); sends to a dead worker are dropped; a
/// replacement is a fresh worker. It never blocks: with nothing to report it
/// sleeps [`IDLE`] and returns `None`, and panics if the scheduler waits for
/// good.
struct Fake {
    carriage: Option<Carriage>,
    workers: usize,
    /// Replacements that can still start; `None`: it starts none (MPI).
    spares: Option<usize>,
    /// Output bytes per task that honest workers send back as tiles.
    tile: usize,
    behaviour: Behaviour,
    sims: Vec<Sim>,
    cursor: usize,
    /// Events ready to hand out, before any order is answered.
    outbox: VecDeque<(WorkerId, Event)>,
    /// Times each task was sent.
    sends: HashMap<u32, u32>,
    idle: u32,
    log: Vec<Call>,
}

impl Fake {
    /// `workers` honest workers, replaced when lost, input mapped and
    /// output written in place.
    fn new(workers: usize) -> Self {
        Fake {
            carriage: None,
            workers,
            spares: Some(SPARES),
            tile: 0,
            behaviour: Box::new(|_| Act::Honest),
            sims: Vec::new(),
            cursor: 0,
            outbox: VecDeque::new(),
            sends: HashMap::new(),
            idle: 0,
            log: Vec::new(),
        }
    }

    fn behaving(mut self, behaviour: impl FnMut(&Step) -> Act + 'static) -> Self {
        self.behaviour = Box::new(behaviour);
        self
    }

    fn carrying(mut self, carriage: Carriage) -> Self {
        self.carriage = Some(carriage);
        self
    }

    fn spares(mut self, spares: usize) -> Self {
        self.spares = Some(spares);
        self
    }

    /// Lost workers are not replaced, as with MPI.
    fn never_replacing(mut self) -> Self {
        self.spares = None;
        self
    }

    /// Honest workers send back tiles of `tile` bytes.
    fn tiles(mut self, tile: usize) -> Self {
        self.tile = tile;
        self
    }

    /// An event handed out before any answer.
    fn inject(mut self, worker: WorkerId, event: Event) -> Self {
        self.outbox.push_back((worker, event));
        self
    }

    fn worker_id(index: u64) -> WorkerId {
        WorkerId {
            index,
            pid: 4000 + index as u32,
        }
    }

    fn add_worker(&mut self) -> WorkerId {
        let id = Fake::worker_id(self.sims.len() as u64);
        self.sims.push(Sim {
            id,
            orders: VecDeque::new(),
            folded: Vec::new(),
            answered: 0,
            hung: false,
            dead: false,
        });
        id
    }

    fn sim(&mut self, worker: WorkerId) -> &mut Sim {
        let sim = &mut self.sims[worker.index as usize];
        assert_eq!(sim.id, worker, "a worker id the fake never gave");
        sim
    }

    /// Takes an order, unless the worker is dead (its loss is on its way).
    fn order(&mut self, worker: WorkerId, order: Order) {
        let sim = self.sim(worker);
        if !sim.dead {
            sim.orders.push_back(order);
        }
    }

    /// Answers one order of the next worker that has one; false if none has.
    fn answer_one(&mut self) -> bool {
        let count = self.sims.len();
        for turn in 0..count {
            let index = (self.cursor + turn) % count;
            let sim = &mut self.sims[index];
            if sim.dead || sim.hung || sim.orders.is_empty() {
                continue;
            }
            self.cursor = index + 1;
            let order = sim.orders.pop_front().unwrap();
            let step = Step {
                worker: sim.id.index,
                order,
                answered: sim.answered,
            };
            sim.answered += 1;
            let events = match (self.behaviour)(&step) {
                Act::Honest => vec![self.honest(index, order)],
                Act::Hang => {
                    self.sims[index].hung = true;
                    Vec::new()
                }
                Act::Reply(events) => events,
                Act::Prefix(mut events) => {
                    events.push(self.honest(index, order));
                    events
                }
            };
            let sim = &mut self.sims[index];
            if events.iter().any(|event| matches!(event, Event::Lost(_))) {
                sim.dead = true;
                sim.orders.clear();
            }
            let id = sim.id;
            self.outbox.extend(events.into_iter().map(|event| (id, event)));
            return true;
        }
        false
    }

    fn honest(&mut self, index: usize, order: Order) -> Event {
        let tile = self.tile;
        let sim = &mut self.sims[index];
        Event::Message(match order {
            Order::Task { task, .. } => {
                sim.folded.push(task);
                FromWorker::TaskDone {
                    job: JOB,
                    task,
                    tile: (tile > 0).then(|| Tile {
                        offset: tile_range(task, tile).start as u64,
                        bytes: Payload::Inline(vec![tile_byte(task); tile]),
                    }),
                }
            }
            Order::Flush => FromWorker::Partial {
                job: JOB,
                data: encode(&std::mem::take(&mut sim.folded)),
            },
        })
    }

    // What the log says.

    fn sent(&self) -> Vec<(u64, u32)> {
        (self.log.iter())
            .filter_map(|call| match call {
                Call::Task { worker, task, .. } => Some((*worker, *task)),
                _ => None,
            })
            .collect()
    }

    /// Every task sent, sorted: `0..n` when each was sent once.
    fn sent_tasks(&self) -> Vec<u32> {
        let mut tasks: Vec<u32> = self.sent().into_iter().map(|(_, task)| task).collect();
        tasks.sort_unstable();
        tasks
    }

    fn tasks_sent_to(&self, worker: u64) -> Vec<u32> {
        (self.sent().into_iter())
            .filter(|&(to, _)| to == worker)
            .map(|(_, task)| task)
            .collect()
    }

    fn count(&self, matches: impl Fn(&Call) -> bool) -> usize {
        self.log.iter().filter(|call| matches(call)).count()
    }

    fn position(&self, matches: impl Fn(&Call) -> bool) -> Option<usize> {
        self.log.iter().position(matches)
    }

    fn kills(&self) -> Vec<(u64, Kill)> {
        (self.log.iter())
            .filter_map(|call| match call {
                Call::Kill { worker, why } => Some((*worker, why.clone())),
                _ => None,
            })
            .collect()
    }

    fn replacements(&self) -> Vec<Option<u64>> {
        (self.log.iter())
            .filter_map(|call| match call {
                Call::Replace { worker } => Some(*worker),
                _ => None,
            })
            .collect()
    }

    /// `(worker, failed, opened, busy)` of every `end_job`.
    fn ends(&self) -> Vec<(u64, bool, bool, bool)> {
        (self.log.iter())
            .filter_map(|call| match *call {
                Call::End {
                    worker,
                    failed,
                    opened,
                    busy,
                    ..
                } => Some((worker, failed, opened, busy)),
                _ => None,
            })
            .collect()
    }

    /// Tasks sent to each worker and not reported done, now.
    fn outstanding(&self) -> HashMap<u64, usize> {
        let mut outstanding = HashMap::new();
        for call in &self.log {
            match call {
                Call::Task { worker, .. } => *outstanding.entry(*worker).or_default() += 1,
                Call::Event {
                    worker,
                    done: Some(_),
                    ..
                } => {
                    let count: &mut usize = outstanding.entry(*worker).or_default();
                    *count = count.saturating_sub(1);
                }
                _ => {}
            }
        }
        outstanding
    }

    /// The most tasks any worker had outstanding at once.
    fn deepest(&self) -> usize {
        let mut outstanding: HashMap<u64, usize> = HashMap::new();
        let mut deepest = 0;
        for call in &self.log {
            match call {
                Call::Task { worker, .. } => {
                    let count = outstanding.entry(*worker).or_default();
                    *count += 1;
                    deepest = deepest.max(*count);
                }
                Call::Event {
                    worker,
                    done: Some(_),
                    ..
                } => {
                    let count: &mut usize = outstanding.entry(*worker).or_default();
                    *count = count.saturating_sub(1);
                }
                _ => {}
            }
        }
        deepest
    }

    /// What holds of every run, whatever the workers did: a worker is started
    /// once, before its first task; it is sent nothing once killed, lost or
    /// closed; at most `depth` tasks wait on it, and one flush at a time.
    fn check_protocol(&self, depth: usize) {
        #[derive(Default)]
        struct Seen {
            started: bool,
            gone: bool,
            flushing: bool,
            ended: bool,
        }
        let mut seen: HashMap<u64, Seen> = HashMap::new();
        for (at, call) in self.log.iter().enumerate() {
            let context = || format!("call {at}: {call:?}\n{:#?}", self.log);
            match call {
                Call::Start { worker, job, .. } => {
                    let seen = seen.entry(*worker).or_default();
                    assert_eq!(*job, JOB, "{}", context());
                    assert!(!seen.started && !seen.gone && !seen.ended, "{}", context());
                    seen.started = true;
                }
                Call::Task { worker, .. } => {
                    let seen = seen.entry(*worker).or_default();
                    assert!(seen.started && !seen.gone && !seen.ended, "{}", context());
                }
                Call::Flush { worker } => {
                    let seen = seen.entry(*worker).or_default();
                    assert!(seen.started && !seen.gone && !seen.ended, "{}", context());
                    assert!(!seen.flushing, "a second flush before the partial: {}", context());
                    seen.flushing = true;
                }
                Call::End { worker, job, .. } => {
                    let seen = seen.entry(*worker).or_default();
                    assert_eq!(*job, JOB, "{}", context());
                    assert!(!seen.ended, "end_job twice: {}", context());
                    seen.ended = true;
                }
                Call::Kill { worker, .. } => {
                    let seen = seen.entry(*worker).or_default();
                    assert!(!seen.gone, "killed twice, or after its loss: {}", context());
                    seen.gone = true;
                }
                Call::Event { worker, kind, .. } => {
                    let seen = seen.entry(*worker).or_default();
                    match *kind {
                        "Partial" if !seen.gone => seen.flushing = false,
                        "Lost" => seen.gone = true,
                        _ => {}
                    }
                }
                Call::Replace { .. } => {}
            }
        }
        assert!(
            self.deepest() <= depth,
            "more than {depth} tasks sent ahead:\n{:#?}",
            self.log
        );
    }
}

fn describe(event: &Event) -> (&'static str, Option<u32>, usize) {
    match event {
        Event::Lost(_) => ("Lost", None, 0),
        Event::Garbage(_) => ("Garbage", None, 0),
        Event::Message(message) => match message {
            FromWorker::TaskDone { job, task, tile } if *job == JOB => (
                "TaskDone",
                Some(*task),
                tile.as_ref().map_or(0, |tile| tile.bytes.bytes().len()),
            ),
            FromWorker::Partial { job, data } if *job == JOB => ("Partial", None, data.bytes().len()),
            FromWorker::TaskFailed { job, .. }
            | FromWorker::FlushFailed { job, .. }
            | FromWorker::JobRejected { job, .. }
            | FromWorker::JobEnded { job }
                if *job == JOB =>
            {
                (message.kind(), None, 0)
            }
            FromWorker::Bye => ("Bye", None, 0),
            _ => ("stale", None, 0),
        },
    }
}

impl Transport for Fake {
    fn carriage(&self, input: &Input) -> Carriage {
        self.carriage.clone().unwrap_or(Carriage {
            sent: vec![false; input.len()],
            tiles: false,
        })
    }

    fn prepare(&mut self) -> Result<Vec<WorkerId>> {
        Ok((0..self.workers).map(|_| self.add_worker()).collect())
    }

    fn start_job(&mut self, worker: WorkerId, job: &JobStart<'_>) -> Result<()> {
        self.sim(worker);
        self.log.push(Call::Start {
            worker: worker.index,
            job: job.id,
            params: job.params.len(),
        });
        Ok(())
    }

    fn send_task(&mut self, worker: WorkerId, send: TaskSend<'_>) -> Result<()> {
        let TaskSend {
            job,
            task,
            spec,
            chunks,
        } = send;
        assert_eq!(job, JOB);
        self.log.push(Call::Task {
            worker: worker.index,
            task,
            spec: spec.len(),
            chunks: chunks.to_vec(),
        });
        let sends = self.sends.entry(task).or_default();
        let attempt = *sends;
        *sends += 1;
        self.order(worker, Order::Task { task, attempt });
        Ok(())
    }

    fn flush(&mut self, worker: WorkerId, job: u64) -> Result<()> {
        assert_eq!(job, JOB);
        self.log.push(Call::Flush { worker: worker.index });
        self.order(worker, Order::Flush);
        Ok(())
    }

    fn end_job(&mut self, worker: WorkerId, end: JobEnd) -> Result<()> {
        self.log.push(Call::End {
            worker: worker.index,
            job: end.id,
            failed: end.failed,
            opened: end.opened,
            busy: end.busy,
        });
        Ok(())
    }

    fn next_event(&mut self, wait: Duration) -> Result<Option<(WorkerId, Event)>> {
        assert!(
            self.log.len() < MAX_CALLS,
            "the job never ends:\n{:#?}",
            &self.log[..100]
        );
        while self.outbox.is_empty() && self.answer_one() {}
        if self.outbox.is_empty() {
            self.idle += 1;
            assert!(
                self.idle < MAX_IDLE,
                "the scheduler waits for an event no worker will send:\n{:#?}",
                self.log
            );
            std::thread::sleep(wait.min(IDLE));
            return Ok(None);
        }
        self.idle = 0;
        Ok(self.buffered_event())
    }

    /// The events of one answer (and of a kill) come as one batch.
    fn buffered_event(&mut self) -> Option<(WorkerId, Event)> {
        let (worker, event) = self.outbox.pop_front()?;
        let (kind, done, bytes) = describe(&event);
        self.log.push(Call::Event {
            worker: worker.index,
            kind,
            done,
            bytes,
        });
        Some((worker, event))
    }

    fn kill(&mut self, worker: WorkerId, why: &Kill) -> Result<()> {
        self.log.push(Call::Kill {
            worker: worker.index,
            why: why.clone(),
        });
        let sim = self.sim(worker);
        sim.dead = true;
        sim.orders.clear();
        // What it had in the pipe: a partial nobody asked for, which must be
        // ignored (invariant 4); then its death.
        let partial = encode(&std::mem::take(&mut sim.folded));
        self.outbox.push_back((
            worker,
            Event::Message(FromWorker::Partial {
                job: JOB,
                data: partial,
            }),
        ));
        self.outbox.push_back((worker, Event::Lost(SIGKILLED)));
        Ok(())
    }

    fn replace(&mut self) -> Option<Result<WorkerId>> {
        let Some(spares) = self.spares.as_mut() else {
            self.log.push(Call::Replace { worker: None });
            return None;
        };
        if *spares == 0 {
            self.log.push(Call::Replace { worker: None });
            return Some(Err(Error::Os {
                context: "starting a worker",
                source: std::io::Error::other("the fake has no spare worker"),
            }));
        }
        *spares -= 1;
        let worker = self.add_worker();
        self.log.push(Call::Replace {
            worker: Some(worker.index),
        });
        Some(Ok(worker))
    }
}

// ---------------------------------------------------------------------------
// Running a job
// ---------------------------------------------------------------------------

fn policy(workers: usize, retries: u32) -> Policy {
    Policy {
        workers,
        retries,
        task_timeout: None,
    }
}

/// Runs `job` on `fake` with no input or output; returns the outcome and the
/// job's stats, after checking the protocol with `DEPTH`.
fn run(fake: &mut Fake, policy: Policy, job: &Collect) -> (Result<Vec<u32>>, JobStats) {
    let input = Input::new();
    let mut stats = JobStats::default();
    let outcome = run_job(fake, policy, JOB, Run::new(job, &input).stats(&mut stats));
    fake.check_protocol(DEPTH);
    (outcome, stats)
}

/// Panics unless `outcome` holds each of `0..tasks` exactly once.
fn assert_exact(outcome: Result<Vec<u32>>, tasks: u32) {
    let mut result = outcome.expect("the job failed");
    result.sort_unstable();
    assert_eq!(
        result,
        (0..tasks).collect::<Vec<_>>(),
        "a task counted twice or not at all"
    );
}

fn message(message: FromWorker) -> Event {
    Event::Message(message)
}

// ---------------------------------------------------------------------------
// Jobs that go well
// ---------------------------------------------------------------------------

#[test]
fn two_honest_workers_run_every_task_once_and_flush_at_the_end() {
    let mut fake = Fake::new(2);
    let (outcome, stats) = run(&mut fake, policy(2, 0), &Collect::new(10));
    assert_exact(outcome, 10);

    assert_eq!(
        fake.sent_tasks(),
        (0..10).collect::<Vec<_>>(),
        "each task sent once"
    );
    assert_eq!(fake.count(|c| matches!(c, Call::Start { .. })), 2);
    assert!(!fake.tasks_sent_to(0).is_empty() && !fake.tasks_sent_to(1).is_empty());
    // A second task goes ahead while plenty are left (check_protocol checks
    // the bound).
    assert_eq!(fake.deepest(), DEPTH);

    // One flush per worker, all behind the last task.
    let last_task = fake
        .log
        .iter()
        .rposition(|c| matches!(c, Call::Task { .. }))
        .unwrap();
    let first_flush = fake.position(|c| matches!(c, Call::Flush { .. })).unwrap();
    assert!(last_task < first_flush, "{:#?}", fake.log);
    for worker in [0, 1] {
        assert_eq!(fake.count(|c| *c == Call::Flush { worker }), 1);
    }

    // Closed in both once both partials are in.
    assert_eq!(fake.ends(), [(0, false, true, false), (1, false, true, false)]);
    let last_partial = fake
        .log
        .iter()
        .rposition(|c| matches!(c, Call::Event { kind: "Partial", .. }));
    assert!(last_partial < fake.position(|c| matches!(c, Call::End { .. })));
    assert!(fake.kills().is_empty() && fake.replacements().is_empty());

    assert_eq!((stats.tasks, stats.retries), (10, 0));
    // Bytes each way are those of the messages.
    let to_workers: usize = (fake.log.iter())
        .map(|call| match call {
            Call::Start { params, .. } => *params,
            Call::Task { spec, .. } => *spec,
            _ => 0,
        })
        .sum();
    let from_workers: usize = (fake.log.iter())
        .map(|call| match call {
            Call::Event { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(stats.bytes_to_workers, to_workers as u64);
    assert_eq!(stats.bytes_from_workers, from_workers as u64);
    assert!(from_workers > 0);
}

#[test]
fn a_worker_with_no_task_is_neither_started_nor_flushed() {
    let mut fake = Fake::new(3);
    let (outcome, _) = run(&mut fake, policy(3, 0), &Collect::new(2));
    assert_exact(outcome, 2);
    assert!(fake.tasks_sent_to(2).is_empty());
    assert_eq!(fake.count(|c| matches!(c, Call::Start { worker: 2, .. })), 0);
    assert_eq!(fake.count(|c| *c == Call::Flush { worker: 2 }), 0);
    // It is still told the job ended, as one it never opened.
    assert_eq!(
        fake.ends(),
        [
            (0, false, true, false),
            (1, false, true, false),
            (2, false, false, false)
        ]
    );
}

#[test]
fn a_job_of_no_task_touches_no_worker() {
    let mut fake = Fake::new(2);
    let (outcome, stats) = run(&mut fake, policy(2, 0), &Collect::new(0));
    assert_eq!(outcome.unwrap(), Vec::<u32>::new());
    assert!(fake.log.is_empty(), "{:#?}", fake.log);
    assert_eq!((stats.tasks, stats.retries), (0, 0));
}

#[test]
fn near_the_end_no_task_waits_behind_a_busy_worker() {
    let mut fake = Fake::new(2);
    let (outcome, _) = run(&mut fake, policy(2, 0), &Collect::new(3));
    assert_exact(outcome, 3);
    // Three tasks, two workers: the first round is one each; the third goes
    // only once a worker is idle (one task left for two live workers).
    let sends: Vec<usize> = (fake.log.iter().enumerate())
        .filter(|(_, call)| matches!(call, Call::Task { .. }))
        .map(|(at, _)| at)
        .collect();
    let first_done = fake
        .position(|c| matches!(c, Call::Event { done: Some(_), .. }))
        .unwrap();
    assert!(sends[1] < first_done && first_done < sends[2], "{:#?}", fake.log);
    assert_eq!(fake.deepest(), 1);
}

// ---------------------------------------------------------------------------
// Input carried with tasks, output tiles carried back
// ---------------------------------------------------------------------------

#[test]
fn a_task_carrying_input_never_waits_behind_a_running_one() {
    let mut fake = Fake::new(2).carrying(Carriage {
        sent: vec![true],
        tiles: false,
    });
    let input = Input::from_bytes(&[1; 64]);
    let job = Collect::new(10);
    let outcome = run_job(&mut fake, policy(2, 0), JOB, Run::new(&job, &input));
    fake.check_protocol(1);
    assert_exact(outcome, 10);
    assert_eq!(fake.deepest(), 1);
    assert_eq!(fake.sent_tasks(), (0..10).collect::<Vec<_>>());
}

#[test]
fn input_chunks_go_to_each_worker_once_and_within_their_segment() {
    let mut fake = Fake::new(2).carrying(Carriage {
        sent: vec![true, false],
        tiles: false,
    });
    let mut input = Input::new();
    input.push_bytes(&[1; 100]);
    input.push_bytes(&[2; 50]);
    // Tasks 2k and 2k+1 read the same 30 bytes of segment 0 (the last pair's
    // run past its end), all of segment 1 (mapped, never sent), and task 7
    // a range wholly past the end of segment 0 as well.
    let reads = (0..8u32)
        .map(|task| {
            let start = (task as usize / 2) * 30;
            let mut reads = vec![(0, start..start + 30), (1, 0..50)];
            if task == 7 {
                reads.push((0, 200..300));
            }
            reads
        })
        .collect();
    let job = Collect {
        tasks: 8,
        reads,
        ..Collect::default()
    };
    let mut stats = JobStats::default();
    let outcome = run_job(
        &mut fake,
        policy(2, 0),
        JOB,
        Run::new(&job, &input).stats(&mut stats),
    );
    fake.check_protocol(1);
    assert_exact(outcome, 8);

    let mut held: HashMap<u64, Vec<Chunk>> = HashMap::new();
    let mut bytes = 0;
    for call in &fake.log {
        let Call::Task {
            worker,
            task,
            chunks,
            spec,
        } = call
        else {
            continue;
        };
        bytes += spec;
        let held = held.entry(*worker).or_default();
        for chunk in chunks {
            bytes += chunk.len as usize;
            assert_eq!(chunk.segment, 0, "segment 1 is mapped, not sent");
            assert!(chunk.len > 0 && chunk.offset + chunk.len <= 100, "{chunk:?}");
            assert!(!held.contains(chunk), "{chunk:?} sent twice to worker {worker}");
            held.push(*chunk);
        }
        // The worker holds what its task reads, clamped to the segment.
        let start = (*task as u64 / 2) * 30;
        let wanted = Chunk {
            segment: 0,
            offset: start,
            len: 30.min(100 - start),
        };
        assert!(held.contains(&wanted), "task {task} lacks {wanted:?}");
    }
    let all: Vec<&Chunk> = held.values().flatten().collect();
    assert!(all.contains(&&Chunk {
        segment: 0,
        offset: 90,
        len: 10
    }));
    let starts = fake.count(|c| matches!(c, Call::Start { .. }));
    let params = postcard::to_allocvec(&job).unwrap().len();
    assert_eq!(stats.bytes_to_workers, (bytes + starts * params) as u64);
}

#[test]
fn tiles_sent_back_fill_the_output() {
    let mut fake = Fake::new(2).tiles(4).carrying(Carriage {
        sent: vec![],
        tiles: true,
    });
    let job = Collect {
        tasks: 6,
        tile: 4,
        ..Collect::default()
    };
    let input = Input::new();
    let mut output = SharedOutput::new(24);
    let outcome = run_job(
        &mut fake,
        policy(2, 0),
        JOB,
        Run::new(&job, &input).output(&mut output),
    );
    fake.check_protocol(DEPTH);
    assert_exact(outcome, 6);
    let expected: Vec<u8> = (0..6).flat_map(|task| [tile_byte(task); 4]).collect();
    assert_eq!(output.bytes(), &expected[..]);
}

// ---------------------------------------------------------------------------
// Workers lost
// ---------------------------------------------------------------------------

/// A worker's last report and its death, arriving together, are both taken
/// before the next dispatch: no task goes to a worker already known dead
/// (it would be charged for the death in place of the one it ran).
#[test]
fn a_report_and_a_death_that_arrive_together_are_taken_before_the_next_dispatch() {
    let mut fake = Fake::new(2).behaving(|step| match (step.worker, step.task()) {
        (0, Some(task)) if step.answered == 0 => Act::Reply(vec![
            message(FromWorker::TaskDone {
                job: JOB,
                task,
                tile: None,
            }),
            Event::Lost(SIGKILLED),
        ]),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 1), &Collect::new(8));
    assert_exact(outcome, 8);
    let reported = (fake.position(|c| {
        matches!(
            c,
            Call::Event {
                worker: 0,
                kind: "TaskDone",
                ..
            }
        )
    }))
    .expect("worker 0 reported a task");
    assert!(
        !fake.log[reported..]
            .iter()
            .any(|c| matches!(c, Call::Task { worker: 0, .. })),
        "{:#?}",
        fake.log
    );
}

#[test]
fn a_worker_lost_mid_task_has_its_running_and_folded_tasks_run_again() {
    // Worker 0 dies on its third task, with two folded in its partial.
    let mut fake = Fake::new(2).behaving(|step| match step.worker == 0 && step.answered == 2 {
        true => Act::dies(),
        false => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 1), &Collect::new(8));
    assert_exact(outcome, 8);

    let lost = fake.tasks_sent_to(0);
    assert!(lost.len() >= 3, "{lost:?}");
    let death = fake
        .position(|c| {
            matches!(
                c,
                Call::Event {
                    worker: 0,
                    kind: "Lost",
                    ..
                }
            )
        })
        .unwrap();
    for task in &lost {
        let again = fake.log[death..]
            .iter()
            .any(|c| matches!(c, Call::Task { task: t, worker, .. } if t == task && *worker != 0));
        assert!(
            again,
            "task {task} of the dead worker not run again:\n{:#?}",
            fake.log
        );
    }
    assert_eq!(fake.sent().len(), 8 + lost.len());
    // Only the running task is charged.
    assert_eq!(stats.retries, 1);
    assert_eq!(fake.replacements(), [Some(2)]);
    assert!(!fake.tasks_sent_to(2).is_empty(), "the replacement was not used");
    assert!(fake.position(|c| matches!(c, Call::Replace { .. })) > Some(death));
    assert!(fake.kills().is_empty());
    // The dead worker is not closed; the others are.
    assert_eq!(fake.ends(), [(1, false, true, false), (2, false, true, false)]);
}

#[test]
fn a_worker_lost_while_flushing_charges_every_task_it_folded() {
    let mut died = false;
    let mut fake = Fake::new(2).behaving(move |step| match step.worker == 0 && step.is_flush() && !died {
        true => {
            died = true;
            Act::dies()
        }
        false => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 1), &Collect::new(6));
    assert_exact(outcome, 6);
    let folded = fake.count(|c| {
        matches!(
            c,
            Call::Event {
                worker: 0,
                done: Some(_),
                ..
            }
        )
    });
    assert!(folded > 0);
    assert_eq!(stats.retries as usize, folded);
    assert_eq!(fake.sent().len(), 6 + folded);
}

#[test]
fn a_task_lost_more_often_than_allowed_fails_the_job_naming_it() {
    let mut fake = Fake::new(2).behaving(|step| match step.task() {
        Some(2) => Act::dies(),
        _ => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 2), &Collect::new(6));
    let last = fake
        .sent()
        .into_iter()
        .filter(|&(_, task)| task == 2)
        .collect::<Vec<_>>();
    assert_eq!(last.len(), 3, "sent once, retried twice");
    let pid = Fake::worker_id(last[2].0).pid;
    match outcome {
        Err(Error::TaskLost {
            job: "collect",
            task: 2,
            attempts: 3,
            pid: lost_on,
            status,
        }) => {
            assert_eq!(lost_on, pid);
            assert_eq!(status, SIGKILLED);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stats.retries, 3);
    // No replacement for the last death: the job is over.
    assert_eq!(fake.replacements().len(), 2);
    assert!(fake.ends().iter().all(|&(_, failed, ..)| failed));
}

#[test]
fn a_task_whose_worker_always_breaks_the_protocol_fails_the_job_saying_so() {
    let mut fake = Fake::new(2).behaving(|step| match step.task() {
        Some(1) => Act::Reply(vec![Event::Garbage("undecodable message: junk".into())]),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 1), &Collect::new(4));
    match outcome {
        Err(Error::TaskLost {
            task: 1,
            attempts: 2,
            status,
            ..
        }) => assert_eq!(
            status,
            WorkerExit::BrokeProtocol {
                problem: "undecodable message: junk".into()
            }
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.kills().len(), 2);
}

#[test]
fn a_partial_that_always_kills_its_worker_fails_the_job_instead_of_looping() {
    let mut fake = Fake::new(1).behaving(|step| match step.is_flush() {
        true => Act::dies(),
        false => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(1, 1), &Collect::new(3));
    // The first task folded is the first charged past its retries.
    match outcome {
        Err(Error::TaskLost {
            task: 0,
            attempts: 2,
            pid,
            ..
        }) => assert_eq!(pid, Fake::worker_id(1).pid),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count(|c| matches!(c, Call::Flush { .. })), 2);
}

#[test]
fn a_lost_worker_that_cannot_be_replaced_leaves_the_job_to_the_others() {
    let mut fake = Fake::new(2).spares(0).behaving(|step| match step.worker {
        0 => Act::dies(),
        _ => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 1), &Collect::new(6));
    assert_exact(outcome, 6);
    assert_eq!(fake.replacements(), [None]);
    assert_eq!(stats.retries, 1);
    assert_eq!(fake.ends(), [(1, false, true, false)]);
}

#[test]
fn the_last_worker_lost_and_not_replaced_fails_the_job() {
    let mut fake = Fake::new(1).spares(0).behaving(|_| Act::dies());
    let (outcome, _) = run(&mut fake, policy(1, 3), &Collect::new(4));
    match outcome {
        Err(Error::NoWorkers {
            job: "collect",
            cause,
        }) => {
            assert!(cause.contains("the fake has no spare worker"), "{cause}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.replacements(), [None]);
    assert!(fake.ends().is_empty(), "no worker left to close the job in");
}

#[test]
fn a_transport_that_starts_no_workers_goes_on_with_those_left() {
    let mut fake = Fake::new(2).never_replacing().behaving(|step| match step.worker {
        0 => Act::dies(),
        _ => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 1), &Collect::new(6));
    assert_exact(outcome, 6);
    assert_eq!(fake.replacements(), [None]);
    assert_eq!(stats.retries, 1);

    let mut fake = Fake::new(1).never_replacing().behaving(|_| Act::dies());
    let (outcome, _) = run(&mut fake, policy(1, 1), &Collect::new(2));
    match outcome {
        Err(Error::NoWorkers { cause, .. }) => assert!(cause.contains("starts no others"), "{cause}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn events_of_a_lost_worker_or_of_a_stranger_are_ignored() {
    let stranger = Fake::worker_id(99);
    // Worker 0 dies on its second order, and its last words arrive after its
    // death; a worker of no job says things too, including its death.
    let mut fake = Fake::new(2)
        .inject(
            stranger,
            message(FromWorker::Partial {
                job: JOB,
                data: encode(&[0, 1]),
            }),
        )
        .inject(
            stranger,
            message(FromWorker::TaskFailed {
                job: JOB,
                task: 0,
                failure: Failure::Panic("not mine".into()),
            }),
        )
        .inject(stranger, Event::Garbage("noise".into()))
        .inject(stranger, Event::Lost(WorkerExit::Exited { code: 1 }))
        .behaving(|step| match (step.worker, step.answered, step.task()) {
            (0, 1, Some(task)) => Act::Reply(vec![
                Event::Lost(WorkerExit::Exited { code: 1 }),
                message(FromWorker::TaskDone {
                    job: JOB,
                    task,
                    tile: None,
                }),
                message(FromWorker::Partial {
                    job: JOB,
                    data: encode(&[task]),
                }),
                message(FromWorker::TaskFailed {
                    job: JOB,
                    task,
                    failure: Failure::Error("too late".into()),
                }),
                Event::Lost(WorkerExit::Exited { code: 1 }),
            ]),
            _ => Act::Honest,
        });
    let (outcome, stats) = run(&mut fake, policy(2, 1), &Collect::new(6));
    assert_exact(outcome, 6);
    // One replacement: for worker 0, not for the stranger or a second loss.
    assert_eq!(fake.replacements(), [Some(2)]);
    assert_eq!(stats.retries, 1);
    assert!(fake.kills().is_empty());
}

// ---------------------------------------------------------------------------
// Task timeouts
// ---------------------------------------------------------------------------

fn with_timeout(workers: usize, retries: u32, timeout: Duration) -> Policy {
    Policy {
        task_timeout: Some(timeout),
        ..policy(workers, retries)
    }
}

#[test]
fn a_task_that_hangs_is_killed_and_run_elsewhere() {
    let mut fake = Fake::new(2).behaving(|step| match step.order {
        Order::Task { task: 1, attempt: 0 } => Act::Hang,
        _ => Act::Honest,
    });
    let started = Instant::now();
    let (outcome, stats) = run(
        &mut fake,
        with_timeout(2, 1, Duration::from_millis(30)),
        &Collect::new(6),
    );
    assert_exact(outcome, 6);
    assert!(started.elapsed() >= Duration::from_millis(30));
    let hung_on = fake.sent().into_iter().find(|&(_, task)| task == 1).unwrap().0;
    assert_eq!(fake.kills(), [(hung_on, Kill::Timeout)]);
    let rerun = fake.sent().into_iter().rfind(|&(_, task)| task == 1).unwrap().0;
    assert_ne!(rerun, hung_on);
    // The task runs again only once its worker is reported lost.
    let lost = fake.position(|c| matches!(c, Call::Event { kind: "Lost", worker, .. } if *worker == hung_on));
    let again = fake
        .log
        .iter()
        .rposition(|c| matches!(c, Call::Task { task: 1, .. }));
    assert!(lost < again);
    assert_eq!(stats.retries, 1);
}

#[test]
fn a_task_that_always_hangs_fails_the_job_as_timed_out() {
    let timeout = Duration::from_millis(20);
    let mut fake = Fake::new(2).behaving(|step| match step.task() {
        Some(1) => Act::Hang,
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, with_timeout(2, 1, timeout), &Collect::new(4));
    let last = fake.sent().into_iter().rfind(|&(_, task)| task == 1).unwrap().0;
    match outcome {
        Err(Error::TaskTimedOut {
            job: "collect",
            task: 1,
            timeout: limit,
            attempts: 2,
            pid,
        }) => {
            assert_eq!(limit, timeout);
            assert_eq!(pid, Fake::worker_id(last).pid);
        }
        other => panic!("{other:?}"),
    }
    let kills = fake.kills();
    assert_eq!(kills.len(), 2);
    assert!(kills.iter().all(|(_, why)| *why == Kill::Timeout));
}

#[test]
fn a_worker_that_never_sends_its_partial_is_killed_for_its_timeout() {
    // The flush is timed like a task: a worker that hangs encoding its
    // partial is killed, and its folded tasks run again.
    let mut hung = false;
    let mut fake = Fake::new(2).behaving(move |step| match step.worker == 0 && step.is_flush() && !hung {
        true => {
            hung = true;
            Act::Hang
        }
        false => Act::Honest,
    });
    let (outcome, stats) = run(
        &mut fake,
        with_timeout(2, 1, Duration::from_millis(20)),
        &Collect::new(6),
    );
    assert_exact(outcome, 6);
    assert_eq!(fake.kills(), [(0, Kill::Timeout)]);
    let folded = fake.count(|c| {
        matches!(
            c,
            Call::Event {
                worker: 0,
                done: Some(_),
                ..
            }
        )
    });
    assert_eq!(stats.retries as usize, folded);
}

// ---------------------------------------------------------------------------
// Protocol breaches
// ---------------------------------------------------------------------------

/// Runs 6 tasks on 2 workers, worker 0 misbehaving as `misbehave` says (for
/// the rest honest), with tiles of 4 bytes carried back if `tiles`. Checks
/// that worker 0 alone was killed, for a breach that says `why`, that what it
/// sent after was ignored, and that the job still completed exactly.
fn assert_breach(tiles: bool, why: &str, mut misbehave: impl FnMut(&Step) -> Option<Act> + 'static) -> Fake {
    let tile = if tiles { 4 } else { 0 };
    let mut fake = Fake::new(2)
        .tiles(tile)
        .carrying(Carriage { sent: vec![], tiles })
        .behaving(move |step| match step.worker {
            0 => misbehave(step).unwrap_or(Act::Honest),
            _ => Act::Honest,
        });
    let job = Collect {
        tasks: 6,
        tile,
        ..Collect::default()
    };
    let input = Input::new();
    let mut output = tiles.then(|| SharedOutput::new(6 * tile));
    let mut stats = JobStats::default();
    let mut run = Run::new(&job, &input).stats(&mut stats);
    if let Some(output) = output.as_mut() {
        run = run.output(output);
    }
    let outcome = run_job(&mut fake, policy(2, 1), JOB, run);
    fake.check_protocol(DEPTH);
    assert_exact(outcome, 6);

    let kills = fake.kills();
    assert_eq!(kills.len(), 1, "{kills:?}");
    match &kills[0] {
        (0, Kill::Breach(said)) => assert!(said.contains(why), "{said:?} does not say {why:?}"),
        other => panic!("{other:?}"),
    }
    // Its partial sent after the kill was there to be ignored.
    let killed = fake.position(|c| matches!(c, Call::Kill { .. })).unwrap();
    let after = fake.log[killed..]
        .iter()
        .filter(|c| matches!(c, Call::Event { worker: 0, .. }));
    assert!(after.count() >= 2, "{:#?}", fake.log);
    assert_eq!(fake.replacements(), [Some(2)]);
    assert!(stats.retries >= 1);
    if let Some(output) = output {
        let expected: Vec<u8> = (0..6).flat_map(|task| [tile_byte(task); 4]).collect();
        assert_eq!(output.bytes(), &expected[..]);
    }
    fake
}

#[test]
fn a_report_of_a_task_not_running_is_a_breach() {
    // Worker 0 runs task 0 with task 2 behind it, and reports task 2 first.
    assert_breach(false, "reported task 2, which it was not running", |step| {
        (step.task() == Some(0)).then(|| {
            Act::says(FromWorker::TaskDone {
                job: JOB,
                task: 2,
                tile: None,
            })
        })
    });
}

#[test]
fn a_partial_not_asked_for_is_a_breach() {
    assert_breach(false, "sent a partial it was not asked for", |step| {
        (step.task() == Some(0)).then(|| {
            Act::Prefix(vec![message(FromWorker::Partial {
                job: JOB,
                data: encode(&[0]),
            })])
        })
    });
}

#[test]
fn a_partial_that_does_not_decode_is_a_breach_and_its_tasks_run_again() {
    let fake = assert_breach(false, "sent a partial that does not decode", |step| {
        // A vector of five elements, and none.
        step.is_flush().then(|| {
            Act::says(FromWorker::Partial {
                job: JOB,
                data: Payload::Inline(vec![5]),
            })
        })
    });
    // Every task it reported ran again elsewhere.
    for task in fake.tasks_sent_to(0) {
        assert_eq!(fake.sent().iter().filter(|&&(_, t)| t == task).count(), 2);
    }
}

#[test]
fn garbage_is_a_breach() {
    let fake = assert_breach(false, "undecodable message: junk", |step| {
        (step.answered == 0).then(|| Act::Reply(vec![Event::Garbage("undecodable message: junk".into())]))
    });
    assert_eq!(
        fake.kills()[0].1,
        Kill::Breach("undecodable message: junk".into())
    );
}

#[test]
fn ending_the_job_unasked_is_a_breach() {
    assert_breach(false, "ended the job before it was told to", |step| {
        (step.answered == 1).then(|| Act::says(FromWorker::JobEnded { job: JOB }))
    });
}

#[test]
fn saying_goodbye_during_a_job_is_a_breach() {
    assert_breach(false, "said goodbye during a job", |step| {
        (step.answered == 0).then(|| Act::says(FromWorker::Bye))
    });
}

#[test]
fn a_missing_tile_is_a_breach() {
    assert_breach(true, "sent no output tile for task 0", |step| {
        (step.task() == Some(0)).then(|| {
            Act::says(FromWorker::TaskDone {
                job: JOB,
                task: 0,
                tile: None,
            })
        })
    });
}

#[test]
fn a_tile_of_the_wrong_range_is_a_breach() {
    assert_breach(
        true,
        "sent a tile for task 0 that is not its output range",
        |step| {
            (step.task() == Some(0)).then(|| {
                Act::says(FromWorker::TaskDone {
                    job: JOB,
                    task: 0,
                    tile: Some(Tile {
                        offset: 1,
                        bytes: Payload::Inline(vec![9; 4]),
                    }),
                })
            })
        },
    );
}

#[test]
fn a_tile_where_tiles_are_written_in_place_is_a_breach() {
    assert_breach(
        false,
        "sent a tile for task 0 that is not its output range",
        |step| {
            (step.task() == Some(0)).then(|| {
                Act::says(FromWorker::TaskDone {
                    job: JOB,
                    task: 0,
                    tile: Some(Tile {
                        offset: 0,
                        bytes: Payload::Inline(vec![]),
                    }),
                })
            })
        },
    );
}

#[test]
fn messages_about_another_job_are_ignored() {
    let stale = JOB - 1;
    let mut fake = Fake::new(2).behaving(move |step| match (step.worker, step.answered) {
        (0, 0) => Act::Prefix(vec![
            message(FromWorker::TaskDone {
                job: stale,
                task: 5,
                tile: None,
            }),
            message(FromWorker::Partial {
                job: stale,
                data: encode(&[1, 2, 3]),
            }),
            message(FromWorker::TaskFailed {
                job: stale,
                task: 0,
                failure: Failure::Panic("old".into()),
            }),
            message(FromWorker::FlushFailed {
                job: stale,
                failure: Failure::Error("old".into()),
            }),
            message(FromWorker::JobRejected {
                job: stale,
                reason: Rejection::Setup("old".into()),
            }),
            message(FromWorker::JobEnded { job: stale }),
        ]),
        _ => Act::Honest,
    });
    let (outcome, stats) = run(&mut fake, policy(2, 0), &Collect::new(6));
    assert_exact(outcome, 6);
    assert_eq!(fake.count(|c| matches!(c, Call::Event { kind: "stale", .. })), 6);
    assert!(fake.kills().is_empty() && fake.replacements().is_empty());
    assert_eq!(stats.retries, 0);
}

// ---------------------------------------------------------------------------
// Failures reported by workers, and stops
// ---------------------------------------------------------------------------

/// Checks that the job was closed as failed in every worker, busy where
/// tasks were still outstanding, except in the worker that reported the
/// failure: it skips the rest of the job, so it is idle (a pool need not
/// kill it).
fn assert_closed_as_failed(fake: &Fake, reporter: u64) {
    let outstanding = fake.outstanding();
    let ends = fake.ends();
    assert_eq!(ends.len(), 2, "{ends:?}");
    for (worker, failed, opened, busy) in ends {
        let holds = worker != reporter && outstanding.get(&worker).copied().unwrap_or(0) > 0;
        assert!(failed && opened, "{worker}");
        assert_eq!(busy, holds, "worker {worker}:\n{:#?}", fake.log);
    }
}

#[test]
fn a_task_error_ends_the_job_with_the_reported_error() {
    let mut fake = Fake::new(2).behaving(|step| match step.task() {
        Some(3) => Act::says(FromWorker::TaskFailed {
            job: JOB,
            task: 3,
            failure: Failure::Error("bad record".into()),
        }),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 3), &Collect::new(8));
    let failed_on = fake.sent().into_iter().find(|&(_, task)| task == 3).unwrap().0;
    match outcome {
        Err(Error::TaskFailed {
            job: "collect",
            task: TaskIndex(Some(3)),
            pid,
            message,
        }) => {
            assert_eq!(pid, Fake::worker_id(failed_on).pid);
            assert_eq!(message, "bad record");
        }
        other => panic!("{other:?}"),
    }
    // Not retried, nobody killed.
    assert_eq!(fake.sent().iter().filter(|&&(_, task)| task == 3).count(), 1);
    assert!(fake.kills().is_empty() && fake.replacements().is_empty());
    assert_closed_as_failed(&fake, failed_on);
}

#[test]
fn a_task_panic_ends_the_job_with_the_reported_panic() {
    let mut fake = Fake::new(2).behaving(|step| match step.task() {
        Some(0) => Act::says(FromWorker::TaskFailed {
            job: JOB,
            task: 0,
            failure: Failure::Panic("index out of bounds".into()),
        }),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 0), &Collect::new(8));
    let panicked_on = fake.sent().into_iter().find(|&(_, task)| task == 0).unwrap().0;
    assert!(
        matches!(
            &outcome,
            Err(Error::TaskPanicked { task: TaskIndex(Some(0)), pid: 4000, message, .. })
                if message == "index out of bounds"
        ),
        "{outcome:?}"
    );
    assert_closed_as_failed(&fake, panicked_on);
}

#[test]
fn a_failed_flush_ends_the_job_naming_no_task() {
    let mut fake = Fake::new(2).behaving(|step| match (step.worker, step.is_flush()) {
        (1, true) => Act::says(FromWorker::FlushFailed {
            job: JOB,
            failure: Failure::Panic("cannot encode".into()),
        }),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 0), &Collect::new(4));
    assert!(
        matches!(
            &outcome,
            Err(Error::TaskPanicked { task: TaskIndex(None), pid: 4001, message, .. })
                if message == "cannot encode"
        ),
        "{outcome:?}"
    );
    assert_closed_as_failed(&fake, 1);
}

#[test]
fn a_rejected_job_ends_with_the_reported_rejection() {
    let mut fake = Fake::new(2).behaving(|step| match (step.worker, step.answered) {
        (1, 0) => Act::says(FromWorker::JobRejected {
            job: JOB,
            reason: Rejection::UnknownJob {
                registered: vec!["other".into()],
            },
        }),
        _ => Act::Honest,
    });
    let (outcome, _) = run(&mut fake, policy(2, 0), &Collect::new(6));
    match outcome {
        Err(Error::UnknownJob {
            job: "collect",
            type_name,
            pid: 4001,
            registered,
        }) => {
            assert!(type_name.ends_with("Collect"), "{type_name}");
            assert_eq!(registered, ["other"]);
        }
        other => panic!("{other:?}"),
    }
    assert_closed_as_failed(&fake, 1);
    // Its tasks were still queued there, and are skipped: not busy.
    assert!(fake.ends().contains(&(1, true, true, false)));
}

#[test]
fn a_deadline_ends_the_job_and_closes_it_as_failed() {
    // Worker 0 hangs on its first task; worker 1 does the rest.
    let mut fake = Fake::new(2).behaving(|step| match step.worker {
        0 => Act::Hang,
        _ => Act::Honest,
    });
    let job = Collect::new(8);
    let input = Input::new();
    let run = Run::new(&job, &input).deadline(Instant::now() + Duration::from_millis(30));
    let outcome = run_job(&mut fake, policy(2, 0), JOB, run);
    fake.check_protocol(DEPTH);
    // Worker 0 holds tasks 0 and 2; the other six are done.
    assert_eq!(fake.tasks_sent_to(0), [0, 2]);
    assert!(
        matches!(
            outcome,
            Err(Error::DeadlineExceeded {
                job: "collect",
                done: 6,
                total: 8
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(fake.ends(), [(0, true, true, true), (1, true, true, false)]);
    assert!(fake.kills().is_empty(), "no timeout: nobody killed");
}

#[test]
fn a_deadline_already_past_ends_the_job_at_once() {
    let mut fake = Fake::new(2);
    let job = Collect::new(4);
    let input = Input::new();
    let run = Run::new(&job, &input).deadline(Instant::now());
    let outcome = run_job(&mut fake, policy(2, 0), JOB, run);
    fake.check_protocol(DEPTH);
    assert!(
        matches!(
            outcome,
            Err(Error::DeadlineExceeded {
                done: 0,
                total: 4,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(fake.ends().iter().all(|&(_, failed, ..)| failed));
    assert_eq!(
        fake.count(|c| matches!(c, Call::Event { .. })),
        0,
        "no event awaited"
    );
}

#[test]
fn a_cancelled_job_ends_with_how_far_it_got() {
    let token = crate::stop::CancelToken::new();
    let trip = token.clone();
    // Cancelled as worker 1 reports its second task: three are done by then
    // (worker 0's first two and worker 1's first).
    let mut fake = Fake::new(2).behaving(move |step| {
        if step.worker == 1 && step.answered == 1 {
            trip.cancel();
        }
        Act::Honest
    });
    let job = Collect::new(8);
    let input = Input::new();
    let run = Run::new(&job, &input).cancel_token(&token);
    let outcome = run_job(&mut fake, policy(2, 0), JOB, run);
    fake.check_protocol(DEPTH);
    let done = fake.count(|c| matches!(c, Call::Event { done: Some(_), .. }));
    match outcome {
        Err(Error::Cancelled {
            job: "collect",
            done: reached,
            total: 8,
        }) => assert_eq!(reached, done),
        other => panic!("{other:?}"),
    }
    assert!(done < 8);
    assert!(fake.ends().iter().all(|&(_, failed, opened, _)| failed && opened));
}

#[test]
fn progress_follows_the_tasks_in_hand_and_goes_back_when_results_are_lost() {
    let seen = std::sync::Mutex::new(Vec::new());
    let report = |progress: Progress| seen.lock().unwrap().push((progress.done, progress.total));
    // Worker 0 dies on its third task, losing the two folded in its partial.
    let mut fake = Fake::new(2).behaving(|step| match step.worker == 0 && step.answered == 2 {
        true => Act::dies(),
        false => Act::Honest,
    });
    let job = Collect::new(8);
    let input = Input::new();
    let outcome = run_job(
        &mut fake,
        policy(2, 1),
        JOB,
        Run::new(&job, &input).progress(&report),
    );
    assert_exact(outcome, 8);
    let seen = seen.into_inner().unwrap();
    assert!(seen.iter().all(|&(_, total)| total == 8));
    assert_eq!(seen.last(), Some(&(8, 8)));
    let reports = fake.count(|c| matches!(c, Call::Event { done: Some(_), .. }));
    // One report per task reported, and one for the loss.
    assert_eq!(seen.len(), reports + 1, "{seen:?}");
    assert!(
        seen.windows(2).any(|pair| pair[1].0 < pair[0].0),
        "never went back: {seen:?}"
    );
}

/// A job whose deadline passed (or whose token was cancelled) before it
/// started opens nothing in any worker: a pool would kill busy workers.
#[test]
fn a_job_stopped_before_it_starts_sends_nothing() {
    let mut fake = Fake::new(2);
    let job = Collect::new(4);
    let input = Input::new();
    let outcome = run_job(
        &mut fake,
        policy(2, 0),
        JOB,
        Run::new(&job, &input).deadline(Instant::now()),
    );
    assert!(
        matches!(outcome, Err(Error::DeadlineExceeded { .. })),
        "{outcome:?}"
    );
    assert!(fake.sent().is_empty(), "{:#?}", fake.log);
    assert!(
        fake.ends().iter().all(|&(_, _, _, busy)| !busy),
        "{:?}",
        fake.ends()
    );
}
