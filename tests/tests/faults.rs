//! The fault matrix: every fault point × behaviour of `coop::fault`, once (a
//! retry must succeed) and always (retries run out), and faults from outside:
//! `kill -9` of random workers at random (seeded) moments, and `SIGSTOP`.
//!
//! Every trial asserts the outcome (the exact result, or an error naming the
//! task, the worker's pid and the cause), runs under a hard deadline, checks
//! that nothing is left behind (processes, zombies, fds, memfds, /dev/shm,
//! rendezvous directories), and that the pool still runs the next job.
//!
//! Trials run one at a time (leak checks are process-wide). With
//! `COOP_FAULT_REPORT=FILE`, the matrix is also written to FILE as Markdown.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coop::fault::{Behaviour, Fault, Point};
use coop::partial::WordRule;
use coop::prelude::*;
use coop::{Error, Ipc, JobStats, Sequential, TaskIndex};
use coop_examples::wordcount::WordCount;
use coop_tests::leaks;
use coop_tests::{Sleepy, Squares, Sum};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The task a fault in a task or tile strikes.
const VICTIM: u32 = 3;
/// The per-task timeout of every pool here.
const TASK_TIMEOUT: Duration = Duration::from_millis(1000);
/// The handshake timeout of every pool here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(2000);
/// Retries of every pool here: a task runs at most this + 1 times.
const RETRIES: u32 = 2;
/// No trial may take longer than this.
const DEADLINE: Duration = Duration::from_secs(60);
/// Values summed or squared by the matrix's jobs.
const VALUES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The first worker to reach the point misbehaves; the retry succeeds.
    Once,
    /// Every worker misbehaves every time: retries run out.
    Always,
}

/// One row of the report: what was injected and what came of it.
static REPORT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn main() {
    coop_tests::fake_worker::serve_if_fake();
    coop_tests::init();
    // SAFETY: first thing in main, before any other thread exists.
    let temp = unsafe { leaks::isolate_temp_dir() }.expect("creating a private temp dir");
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);

    let mut trials = Vec::new();
    for point in Point::ALL {
        for behaviour in Behaviour::ALL {
            if point == Point::BeforeConnect
                && matches!(behaviour, Behaviour::Garbage | Behaviour::CloseChannel)
            {
                continue; // there is no channel yet to send garbage on or close
            }
            for mode in [Mode::Once, Mode::Always] {
                let name = format!("matrix::{point}::{behaviour}::{}", mode_name(mode));
                trials.push(Trial::test(name.clone(), move || {
                    guarded(&name, move || matrix_cell(point, behaviour, mode))
                }));
            }
        }
    }
    for seed in 1..=6 {
        let name = format!("outside::random_sigkill::seed_{seed}");
        trials.push(Trial::test(name.clone(), move || {
            guarded(&name, move || random_sigkills(seed))
        }));
    }
    for ipc in [Ipc::SharedMemory, Ipc::Messages] {
        let name = format!("outside::sigstop::{ipc:?}");
        trials.push(Trial::test(name.clone(), move || {
            guarded(&name, move || stopped_worker_times_out(ipc))
        }));
    }

    let cases: u64 = std::env::var("COOP_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    for ipc in [Ipc::SharedMemory, Ipc::Messages] {
        let name = format!("fuzz::lying_workers::{ipc:?}");
        trials.push(Trial::test(name.clone(), move || {
            // A seed takes well under a second; a hang takes forever.
            let deadline = DEADLINE + Duration::from_secs(2 * cases);
            guarded_for(&name, deadline, move || lying_workers(ipc, cases))
        }));
    }

    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(path) = std::env::var_os("COOP_FAULT_REPORT") {
        write_report(Path::new(&path)).expect("writing the fault report");
    }
    let _ = leaks::remove_isolated_temp_dir(&temp);
    conclusion.exit();
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Once => "once",
        Mode::Always => "always",
    }
}

/// Runs a trial with a hard deadline and a leak check around it, and records
/// its outcome for the report.
fn guarded(
    name: &str,
    trial: impl FnOnce() -> Result<String, Failed> + Send + 'static,
) -> Result<(), Failed> {
    guarded_for(name, DEADLINE, trial)
}

/// [`guarded`], with another deadline.
fn guarded_for(
    name: &str,
    deadline: Duration,
    trial: impl FnOnce() -> Result<String, Failed> + Send + 'static,
) -> Result<(), Failed> {
    let before = leaks::snapshot();
    let (done, outcome) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = done.send(trial());
    });
    let summary = match outcome.recv_timeout(deadline) {
        Ok(result) => result?,
        Err(_) => return Err(format!("{name}: no outcome within {deadline:?} (hang)").into()),
    };
    leaks::check_no_leaks(&before)?;
    let summary = format!("{summary} [{:.1} s]", started.elapsed().as_secs_f64());
    REPORT.lock().unwrap().push((name.to_string(), summary));
    Ok(())
}

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

/// What a cell of the matrix must end in.
#[derive(Debug, PartialEq)]
enum Expect {
    /// The exact result (retries, if any, succeeded).
    Exact,
    /// `TaskPanicked`, not retried, naming the task (if in one).
    Panicked(Option<usize>),
    /// `TaskLost` after every attempt, naming the task (if in one) and the cause.
    Lost(Option<usize>),
    /// `TaskTimedOut` after every attempt.
    TimedOut,
    /// The pool cannot start: `Handshake`, naming the worker and the cause.
    NoPool,
}

fn expected(point: Point, behaviour: Behaviour, mode: Mode) -> Expect {
    let victim = matches!(point, Point::Task | Point::Tile).then_some(VICTIM as usize);
    match (point, mode, behaviour) {
        (Point::BeforeConnect | Point::Handshake, Mode::Once, _) => Expect::Exact,
        (Point::BeforeConnect | Point::Handshake, Mode::Always, _) => Expect::NoPool,
        // After the partial was sent, nothing of the job is lost.
        (Point::AfterPartial, _, _) => Expect::Exact,
        // A panic is the job's own bug: deterministic, never retried.
        (_, _, Behaviour::Panic) => Expect::Panicked(victim),
        (_, Mode::Once, _) => Expect::Exact,
        (_, Mode::Always, Behaviour::Hang) => Expect::TimedOut,
        (_, Mode::Always, _) => Expect::Lost(victim),
    }
}

/// What the cause in an error must say, for each behaviour.
fn cause_words(behaviour: Behaviour) -> &'static [&'static str] {
    match behaviour {
        Behaviour::Exit => &["exited with status 1"],
        Behaviour::Kill => &["signal 9"],
        Behaviour::Abort | Behaviour::Oom => &["signal 6"],
        Behaviour::Panic => &["status 101", "panic"],
        Behaviour::Hang => &["timed out", "did not connect within"],
        Behaviour::Garbage => &["breaking the protocol", "unreadable hello"],
        Behaviour::CloseChannel => &["closed its channel", "hung up without a hello"],
    }
}

fn start_pool(fault: Option<(Option<usize>, Fault)>) -> coop::Result<Pool> {
    let builder = Pool::builder()
        .workers(2)
        .retries(RETRIES)
        .task_timeout(TASK_TIMEOUT)
        .handshake_timeout(HANDSHAKE_TIMEOUT);
    match fault {
        Some((worker, fault)) => builder.inject_fault(worker, fault).build(),
        None => builder.build(),
    }
}

/// The matrix's job: `Squares` (which writes output tiles) for the tile
/// point, `Sum` otherwise, over `values` numbers in `tasks` tasks per worker;
/// returns the retries it took, or the error.
fn run_checked(pool: &Pool, point: Point, values: u64, tasks: usize) -> Result<Result<u32, Error>, Failed> {
    let data: Vec<u64> = (0..values).collect();
    let mut input = Input::new();
    input.push_slice(&data);
    let mut stats = JobStats::default();
    if point == Point::Tile {
        let mut out = SharedOutput::zeroed::<u64>(data.len());
        let run = Run::new(&Squares, &input)
            .output(&mut out)
            .tasks_per_worker(tasks)
            .stats(&mut stats)
            .on(pool);
        return Ok(match run {
            Ok(count) => {
                check(count == values, format!("squared {count} values of {values}"))?;
                let wrong = out
                    .as_slice::<u64>()
                    .iter()
                    .zip(&data)
                    .position(|(s, x)| *s != x * x);
                check(wrong.is_none(), format!("output wrong at index {wrong:?}"))?;
                Ok(stats.retries)
            }
            Err(err) => Err(err),
        });
    }
    let run = Run::new(&Sum, &input)
        .tasks_per_worker(tasks)
        .stats(&mut stats)
        .on(pool);
    Ok(match run {
        Ok(sum) => {
            let exact = values * values.saturating_sub(1) / 2;
            check(sum == exact, format!("sum {sum}, expected {exact}"))?;
            Ok(stats.retries)
        }
        Err(err) => Err(err),
    })
}

fn check(condition: bool, message: String) -> Result<(), Failed> {
    if condition { Ok(()) } else { Err(message.into()) }
}

fn matrix_cell(point: Point, behaviour: Behaviour, mode: Mode) -> Result<String, Failed> {
    let markers = tempfile::Builder::new().prefix("markers-").tempdir()?;
    let mut fault = Fault::new(point, behaviour);
    if matches!(point, Point::Task | Point::Tile) {
        fault = fault.in_task(VICTIM);
    }
    // Once: the second worker to start misbehaves at start-up (its
    // replacement does not); later points strike in the first worker to
    // reach them (a marker file). Always: every worker, every time.
    let target = match (mode, point) {
        (Mode::Once, Point::BeforeConnect | Point::Handshake) => (Some(1), fault),
        (Mode::Once, _) => (None, fault.once(markers.path().join("struck"))),
        (Mode::Always, _) => (None, fault),
    };
    let expect = expected(point, behaviour, mode);
    let pool = match start_pool(Some(target)) {
        Ok(pool) => pool,
        Err(err) => {
            check(
                expect == Expect::NoPool,
                format!("expected {expect:?}, the pool failed: {err}"),
            )?;
            let Error::Handshake { pid, cause } = &err else {
                return Err(format!("expected a handshake error, got: {err}").into());
            };
            check(*pid != 0, format!("no pid in: {err}"))?;
            check_cause(cause, behaviour, &err)?;
            // A pool without the fault still works.
            let clean = start_pool(None)?;
            run_checked(&clean, point, VALUES, 8)??;
            return Ok(short(&err));
        }
    };
    check(
        expect != Expect::NoPool,
        format!("expected {expect:?}, the pool started"),
    )?;
    let outcome = run_checked(&pool, point, VALUES, 8)?;
    let summary = match (&expect, outcome) {
        (Expect::Exact, Ok(retries)) => format!("exact, {retries} retries"),
        (_, Ok(retries)) => {
            return Err(format!("expected {expect:?}, got the exact result ({retries} retries)").into());
        }
        (Expect::Exact, Err(err)) => return Err(format!("expected the exact result, got: {err}").into()),
        (_, Err(err)) => {
            check_error(&expect, behaviour, point, &err)?;
            short(&err)
        }
    };
    // The pool runs the next job: a small one (tasks 0 and 1, so a fault in
    // task 3 does not strike again); with a fault in every partial, it fails
    // the same way again, and a pool without faults is exact.
    match run_checked(&pool, point, 64, 1)? {
        Ok(_) => {}
        Err(err) if point == Point::Partial && mode == Mode::Always => {
            check_error(&expect, behaviour, point, &err)?;
            run_checked(&start_pool(None)?, point, 64, 1)??;
        }
        Err(err) => return Err(format!("the next job failed: {err}").into()),
    }
    drop(pool);
    Ok(summary)
}

fn check_error(expect: &Expect, behaviour: Behaviour, point: Point, err: &Error) -> Result<(), Failed> {
    match (expect, err) {
        (
            Expect::Panicked(victim),
            Error::TaskPanicked {
                task, pid, message, ..
            },
        ) => {
            check(*task == TaskIndex(*victim), format!("wrong task in: {err}"))?;
            check(*pid != 0, format!("no pid in: {err}"))?;
            let wanted = format!("injected fault: panic at {point}");
            check(
                message.contains(&wanted),
                format!("message lacks {wanted:?}: {err}"),
            )
        }
        (
            Expect::Lost(victim),
            Error::TaskLost {
                task,
                attempts,
                pid,
                status,
                ..
            },
        ) => {
            if let Some(victim) = victim {
                check(task == victim, format!("wrong task in: {err}"))?;
            }
            check(*attempts == RETRIES + 1, format!("wrong attempts in: {err}"))?;
            check(*pid != 0, format!("no pid in: {err}"))?;
            check_cause(status, behaviour, err)
        }
        (
            Expect::TimedOut,
            Error::TaskTimedOut {
                timeout, attempts, ..
            },
        ) => {
            check(*timeout == TASK_TIMEOUT, format!("wrong timeout in: {err}"))?;
            check(*attempts == RETRIES + 1, format!("wrong attempts in: {err}"))
        }
        _ => Err(format!("expected {expect:?}, got: {err}").into()),
    }
}

fn check_cause(cause: &dyn std::fmt::Display, behaviour: Behaviour, err: &Error) -> Result<(), Failed> {
    let cause = cause.to_string();
    let words = cause_words(behaviour);
    check(
        words.iter().any(|w| cause.contains(w)),
        format!("the cause should say one of {words:?}: {err}"),
    )
}

/// The error, without the pid (which changes from run to run).
fn short(err: &Error) -> String {
    let text = err.to_string();
    let kind = match err {
        Error::TaskPanicked { .. } => "panicked",
        Error::TaskLost { .. } => "lost",
        Error::TaskTimedOut { .. } => "timed out",
        Error::Handshake { .. } => "no pool",
        _ => "error",
    };
    format!("{kind}: {}", scrub_pids(&text))
}

/// Replaces the number after each "pid " with "N".
fn scrub_pids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("pid ") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if end > 0 {
            out.push('N');
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Faults from outside
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so that a seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The live (not zombie) children of this process: the pool's workers.
fn live_workers() -> Vec<u32> {
    let snapshot = leaks::snapshot();
    snapshot
        .children
        .iter()
        .filter(|(_, state)| !state.contains('Z'))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Sends `signal` to `count` random workers at random moments within `window`.
fn strike_randomly(
    seed: u64,
    count: usize,
    window: Duration,
    signal: Signal,
) -> std::thread::JoinHandle<Vec<u32>> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut struck = Vec::new();
        for _ in 0..count {
            std::thread::sleep(Duration::from_millis(
                rng.below(window.as_millis() as u64 / count as u64),
            ));
            let workers = live_workers();
            if let Some(&pid) = workers.get(rng.below(workers.len() as u64) as usize) {
                let _ = kill(Pid::from_raw(pid as i32), signal);
                struck.push(pid);
            }
        }
        struck
    })
}

/// `kill -9` of three random workers at random moments of a job: the result
/// is exact, and the pool runs the next job.
fn random_sigkills(seed: u64) -> Result<String, Failed> {
    let pool = Pool::builder().workers(2).retries(10).build()?;
    let job = Sleepy { tasks: 60, millis: 5 };
    let killer = strike_randomly(seed, 3, Duration::from_millis(200), Signal::SIGKILL);
    let mut stats = JobStats::default();
    let done = Run::new(&job, &Input::new()).stats(&mut stats).on(&pool)?;
    let struck = killer.join().map_err(|_| "the killer thread panicked")?;
    check(
        done == (0..60).collect::<Vec<_>>(),
        format!("tasks run: {done:?}"),
    )?;
    let again = pool.run(&Sleepy { tasks: 4, millis: 0 }, &Input::new())?;
    check(again == vec![0, 1, 2, 3], format!("next job ran {again:?}"))?;
    Ok(format!(
        "exact, {} workers killed, {} retries",
        struck.len(),
        stats.retries
    ))
}

/// `kill -STOP` of a worker mid-job: the task timeout catches it, the task
/// runs elsewhere, the result is exact. With messages, the stopped worker
/// stops reading its input stream, which must not stall the coordinator.
fn stopped_worker_times_out(ipc: Ipc) -> Result<String, Failed> {
    let pool = Pool::builder()
        .workers(2)
        .ipc(ipc)
        .task_timeout(TASK_TIMEOUT)
        .build()?;
    let text = text(24 << 20);
    let input = Input::from_bytes(&text);
    let job = WordCount {
        rule: WordRule::Alphanumeric,
    };
    let expected = Run::new(&job, &input).on(&Sequential)?;
    let stopper = strike_randomly(7, 1, Duration::from_millis(40), Signal::SIGSTOP);
    let mut stats = JobStats::default();
    let started = Instant::now();
    let counts = Run::new(&job, &input)
        .tasks_per_worker(16)
        .stats(&mut stats)
        .on(&pool)?;
    let took = started.elapsed();
    let stopped = stopper.join().map_err(|_| "the stopper thread panicked")?;
    check(
        counts == expected,
        "word counts differ from the sequential run".into(),
    )?;
    check(stopped.len() == 1, format!("stopped {stopped:?}"))?;
    check(
        !pool.worker_pids().contains(&stopped[0]),
        format!("the stopped worker {} still serves", stopped[0]),
    )?;
    check(stats.retries >= 1, format!("no retry after a stop: {stats:?}"))?;
    Ok(format!(
        "exact, 1 worker stopped, {} retries, {took:.1?}",
        stats.retries
    ))
}

/// `len` bytes of words.
fn text(len: usize) -> Vec<u8> {
    let words = ["coop", "process", "shared", "memory", "ïpc", "worker", "task"];
    let mut text = Vec::with_capacity(len + 16);
    let mut rng = Rng(42);
    while text.len() < len {
        text.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
        text.push(if rng.below(10) == 0 { b'\n' } else { b' ' });
    }
    text
}

// ---------------------------------------------------------------------------
// Fuzzing what the coordinator reads
// ---------------------------------------------------------------------------

/// Pools of lying workers (`coop_tests::fake_worker`), one per seed: every
/// job must end, with some result or a named error about a worker, with the
/// coordinator never panicking, hanging or leaking. A lie told in the right
/// format (a wrong but well-formed partial) gives a wrong result: workers are
/// trusted to compute, not to speak the protocol.
fn lying_workers(ipc: Ipc, cases: u64) -> Result<String, Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("liars-").tempdir()?;
    let exe = std::env::current_exe()?;
    let (mut finished, mut failed) = (0, 0);
    let started = Instant::now();
    for seed in 1..=cases {
        let wrapper = dir.path().join(format!("liar-{seed}"));
        let script = format!(
            "#!/bin/sh\n{}={seed} exec '{}'\n",
            coop_tests::fake_worker::ENV_SEED,
            exe.display()
        );
        std::fs::write(&wrapper, script)?;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        let pool = Pool::builder()
            .workers(2)
            .ipc(ipc)
            .retries(RETRIES)
            .task_timeout(Duration::from_millis(300))
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .program(&wrapper)
            .build()?;
        for point in [Point::Task, Point::Tile] {
            match run_lenient(&pool, point) {
                Ok(()) => finished += 1,
                Err(
                    Error::TaskLost { .. }
                    | Error::TaskTimedOut { .. }
                    | Error::TaskPanicked { .. }
                    | Error::TaskFailed { .. }
                    | Error::JobSetup { .. }
                    | Error::UnknownJob { .. }
                    | Error::NoWorkers { .. },
                ) => failed += 1,
                Err(err) => return Err(format!("seed {seed}: not an error about a worker: {err}").into()),
            }
        }
    }
    Ok(format!(
        "{cases} seeds, {} jobs: {finished} finished, {failed} named errors, {:.1?}",
        finished + failed,
        started.elapsed()
    ))
}

/// The matrix's jobs, with any result accepted.
fn run_lenient(pool: &Pool, point: Point) -> coop::Result<()> {
    let data: Vec<u64> = (0..512).collect();
    let mut input = Input::new();
    input.push_slice(&data);
    if point == Point::Tile {
        let mut out = SharedOutput::zeroed::<u64>(data.len());
        Run::new(&Squares, &input)
            .output(&mut out)
            .tasks_per_worker(4)
            .on(pool)?;
    } else {
        Run::new(&Sum, &input).tasks_per_worker(4).on(pool)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

fn write_report(path: &Path) -> std::io::Result<()> {
    let rows = REPORT.lock().unwrap();
    let mut text = String::from("| fault | outcome |\n|---|---|\n");
    for (name, outcome) in rows.iter() {
        text.push_str(&format!("| `{name}` | {outcome} |\n"));
    }
    std::fs::write(path, text)
}
