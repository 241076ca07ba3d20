//! The pool's normal life: start, jobs, shared input and output, scheduling.

use std::process::{Command, Stdio};

use coop::prelude::*;
use coop::{AnyEngine, EngineKind, Error, Ipc, Sequential, Threads};
use coop_examples::study::memory::pss_bytes;
use coop_tests::{BigValue, HoldInput, Sleepy, Squares, Sum, Unregistered};
use libtest_mimic::{Arguments, Failed, Trial};

/// Set in a child copy of this test binary, started with `COOP_WORKERS`, that
/// prints the worker counts of engines given none.
const DEFAULT_WORKERS_ROLE: &str = "COOP_TEST_DEFAULT_WORKERS";

fn main() {
    coop_tests::init();
    if std::env::var_os(DEFAULT_WORKERS_ROLE).is_some() {
        print_default_workers();
    }
    let tests = vec![
        Trial::test(
            "coop_workers_sets_the_count_of_engines_given_none",
            coop_workers_sets_the_count_of_engines_given_none,
        ),
        Trial::test(
            "every_engine_runs_a_job_in_one_call",
            every_engine_runs_a_job_in_one_call,
        ),
        Trial::test("sum_over_shared_slice", sum_over_shared_slice),
        Trial::test(
            "workers_are_replaced_after_max_jobs",
            workers_are_replaced_after_max_jobs,
        ),
        Trial::test(
            "a_worker_past_its_memory_limit_is_named_and_its_task_retried",
            a_worker_past_its_memory_limit_is_named_and_its_task_retried,
        ),
        Trial::test(
            "a_deadline_ends_a_job_and_the_pool_goes_on",
            a_deadline_ends_a_job_and_the_pool_goes_on,
        ),
        Trial::test(
            "a_cancel_from_another_thread_ends_a_job_and_the_pool_goes_on",
            a_cancel_from_another_thread_ends_a_job_and_the_pool_goes_on,
        ),
        Trial::test(
            "in_process_engines_start_no_task_after_a_stop",
            in_process_engines_start_no_task_after_a_stop,
        ),
        Trial::test(
            "output_tiles_are_written_in_place",
            output_tiles_are_written_in_place,
        ),
        Trial::test("many_jobs_on_one_pool", many_jobs_on_one_pool),
        Trial::test("empty_input_runs_no_task", empty_input_runs_no_task),
        Trial::test("worker_count_is_validated", worker_count_is_validated),
        Trial::test("unregistered_job_is_named", unregistered_job_is_named),
        Trial::test("slow_tasks_are_shared_out", slow_tasks_are_shared_out),
        Trial::test("progress_reaches_total", progress_reaches_total),
        Trial::test("engines_agree", engines_agree),
        Trial::test(
            "large_values_tasks_and_tiles_travel_whole",
            large_values_tasks_and_tiles_travel_whole,
        ),
        Trial::test("dropping_the_pool_reaps_workers", dropping_the_pool_reaps_workers),
        Trial::test("shared_input_is_not_copied_per_worker", || {
            input_is_not_copied_per_worker(false)
        }),
        Trial::test("mapped_file_is_not_copied_per_worker", || {
            input_is_not_copied_per_worker(true)
        }),
        Trial::test(
            "workers_keep_shared_input_mapped_between_jobs_until_it_is_dropped",
            workers_keep_shared_input_mapped_between_jobs_until_it_is_dropped,
        ),
        Trial::test(
            "workers_keep_an_input_file_mapped_between_jobs",
            workers_keep_an_input_file_mapped_between_jobs,
        ),
        Trial::test(
            "a_job_every_worker_refuses_leaves_the_next_one_whole",
            a_job_every_worker_refuses_leaves_the_next_one_whole,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit();
}

fn numbers(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

fn sum_over_shared_slice() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let data = numbers(100_000);
    let mut input = Input::new();
    input.push_slice(&data);
    assert_eq!(pool.run(&Sum, &input)?, 100_000 * 100_001 / 2);
    Ok(())
}

fn output_tiles_are_written_in_place() -> Result<(), Failed> {
    let pool = Pool::builder().workers(3).build()?;
    let data = numbers(10_007);
    let mut input = Input::new();
    input.push_slice(&data);
    let mut out = SharedOutput::zeroed::<u64>(data.len());
    let written = Run::new(&Squares, &input).output(&mut out).on(&pool)?;
    assert_eq!(written, data.len() as u64);
    let squares: Vec<u64> = data.iter().map(|x| x * x).collect();
    assert_eq!(out.as_slice::<u64>(), &squares[..]);
    Ok(())
}

/// A job value, tasks and (with messages) output tiles far larger than a
/// socket buffer reach the other side whole: they travel in shared memory,
/// so that no message is ever split into fragments (a receiver waits for
/// every fragment of a message it started, whatever its sender does).
fn large_values_tasks_and_tiles_travel_whole() -> Result<(), Failed> {
    let pad: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let data = numbers(1 << 20);
    let mut input = Input::new();
    input.push_slice(&data);
    let squares: Vec<u64> = data.iter().map(|x| x * x).collect();
    for ipc in [Ipc::SharedMemory, Ipc::Messages] {
        let pool = Pool::builder().workers(2).ipc(ipc).build()?;
        let job = BigValue {
            pad: pad.clone(),
            tasks: 5,
        };
        assert_eq!(
            pool.run(&job, &Input::new())?,
            BigValue::expected(&pad, 5),
            "{ipc:?}"
        );
        // Two tiles of 4 MiB each, with messages.
        let mut out = SharedOutput::zeroed::<u64>(data.len());
        let written = Run::new(&Squares, &input)
            .output(&mut out)
            .tasks_per_worker(1)
            .on(&pool)?;
        assert_eq!(written, data.len() as u64, "{ipc:?}");
        assert!(out.as_slice::<u64>() == &squares[..], "{ipc:?}: wrong squares");
    }
    Ok(())
}

fn many_jobs_on_one_pool() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let pids = pool.worker_pids();
    for n in [0u64, 1, 2, 17, 1000, 65_537] {
        let data = numbers(n);
        let mut input = Input::new();
        input.push_slice(&data);
        assert_eq!(pool.run(&Sum, &input)?, n * (n + 1) / 2, "n = {n}");
    }
    assert_eq!(
        pool.worker_pids(),
        pids,
        "workers serve many jobs without restarting"
    );
    Ok(())
}

fn empty_input_runs_no_task() -> Result<(), Failed> {
    let pool = Pool::builder().workers(1).build()?;
    let mut input = Input::new();
    input.push_slice::<u64>(&[]);
    assert_eq!(pool.run(&Sum, &input)?, 0);
    Ok(())
}

fn worker_count_is_validated() -> Result<(), Failed> {
    for bad in [0, 1025, 100_000] {
        match Pool::builder().workers(bad).build() {
            Err(Error::InvalidWorkerCount { requested, .. }) => assert_eq!(requested, bad),
            other => return Err(format!("{bad} workers: expected an error, got {other:?}").into()),
        }
    }
    assert!(matches!(Threads::new(0), Err(Error::InvalidWorkerCount { .. })));
    Ok(())
}

fn unregistered_job_is_named() -> Result<(), Failed> {
    let pool = Pool::builder().workers(1).build()?;
    let err = pool.run(&Unregistered, &Input::new()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::UnknownJob { .. }), "{message}");
    assert!(
        message.contains("test-unregistered") && message.contains("test-sum"),
        "{message}"
    );
    // The pool stays usable.
    let mut input = Input::new();
    input.push_slice(&[1u64, 2, 3]);
    assert_eq!(pool.run(&Sum, &input)?, 6);
    Ok(())
}

fn slow_tasks_are_shared_out() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let done = pool.run(
        &Sleepy {
            tasks: 12,
            millis: 20,
        },
        &Input::new(),
    )?;
    assert_eq!(done, (0..12).collect::<Vec<_>>());
    Ok(())
}

fn progress_reaches_total() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let seen = std::sync::Mutex::new(Vec::new());
    let report = |p: Progress| seen.lock().unwrap().push(p);
    Run::new(&Sleepy { tasks: 5, millis: 1 }, &Input::new())
        .progress(&report)
        .on(&pool)?;
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.last().copied(), Some(Progress { done: 5, total: 5 }));
    Ok(())
}

fn engines_agree() -> Result<(), Failed> {
    let data = numbers(50_001);
    let mut input = Input::new();
    input.push_slice(&data);
    let pool = Pool::builder().workers(2).build()?;
    let threads = Threads::new(3)?;
    let mut outputs = Vec::new();
    for run in 0..3 {
        let mut out = SharedOutput::zeroed::<u64>(data.len());
        let count = match run {
            0 => Run::new(&Squares, &input).output(&mut out).on(&pool)?,
            1 => Run::new(&Squares, &input).output(&mut out).on(&threads)?,
            _ => Run::new(&Squares, &input).output(&mut out).on(&Sequential)?,
        };
        assert_eq!(count, data.len() as u64);
        outputs.push(out.bytes().to_vec());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "engines disagree");
    Ok(())
}

/// `engine.run(&job, &input)` on every engine, and on each kind by name.
fn every_engine_runs_a_job_in_one_call() -> Result<(), Failed> {
    let data = numbers(10_000);
    let mut input = Input::new();
    input.push_slice(&data);
    let expected = 10_000 * 10_001 / 2;
    assert_eq!(Pool::builder().workers(2).build()?.run(&Sum, &input)?, expected);
    assert_eq!(Threads::new(2)?.run(&Sum, &input)?, expected);
    assert_eq!(Sequential.run(&Sum, &input)?, expected);
    for name in ["processes", "threads", "sequential"] {
        let engine = AnyEngine::builder(name.parse()?)
            .workers(2)
            .ipc(Ipc::Messages)
            .build()?;
        assert_eq!(engine.name(), name);
        assert_eq!(engine.run(&Sum, &input)?, expected, "{name}");
    }
    Ok(())
}

/// In the child: the worker count of each engine given none (or given 2),
/// or the error, one line each; then exit.
fn print_default_workers() -> ! {
    let workers = |engine: coop::Result<AnyEngine>| engine.map(|engine| engine.workers());
    let counts = [
        ("default_workers", coop::default_workers()),
        ("Pool::new", Pool::new().map(|pool| pool.worker_pids().len())),
        (
            "Pool::builder",
            Pool::builder().build().map(|pool| pool.workers()),
        ),
        ("processes", workers(AnyEngine::new(EngineKind::Processes))),
        ("threads", workers(AnyEngine::new(EngineKind::Threads))),
        ("sequential", workers(AnyEngine::new(EngineKind::Sequential))),
        (
            "given",
            Pool::builder().workers(2).build().map(|pool| pool.workers()),
        ),
        (
            "threads given",
            workers(AnyEngine::builder(EngineKind::Threads).workers(2).build()),
        ),
    ];
    for (engine, count) in counts {
        match count {
            Ok(count) => println!("{engine}: {count}"),
            Err(err @ Error::InvalidWorkersVar { .. }) if err.to_string().starts_with("COOP_WORKERS ") => {
                println!("{engine}: invalid")
            }
            Err(err) => println!("{engine}: unexpected error: {err}"),
        }
    }
    std::process::exit(0);
}

/// `COOP_WORKERS` sets the worker count of every engine given none, and a
/// bad value is refused there, naming the variable; a count given in code
/// wins. The variable is set in a child process: this one's environment
/// stays as it is (setting a variable while other threads read theirs is
/// undefined behaviour).
fn coop_workers_sets_the_count_of_engines_given_none() -> Result<(), Failed> {
    let child = |value: &str| -> Result<String, Failed> {
        let output = Command::new(std::env::current_exe()?)
            .env(DEFAULT_WORKERS_ROLE, "1")
            .env(coop::ENV_WORKERS, value)
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", output.status);
        Ok(String::from_utf8(output.stdout)?)
    };
    assert_eq!(
        child("3")?,
        "default_workers: 3\nPool::new: 3\nPool::builder: 3\nprocesses: 3\nthreads: 3\n\
         sequential: 1\ngiven: 2\nthreads given: 2\n"
    );
    for bad in ["0", "1025", "many", ""] {
        assert_eq!(
            child(bad)?,
            "default_workers: invalid\nPool::new: invalid\nPool::builder: invalid\nprocesses: invalid\n\
             threads: invalid\nsequential: 1\ngiven: 2\nthreads given: 2\n",
            "COOP_WORKERS={bad:?}"
        );
    }
    Ok(())
}

fn dropping_the_pool_reaps_workers() -> Result<(), Failed> {
    let pool = Pool::builder().workers(3).build()?;
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    drop(pool);
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "worker {pid} still exists (running or zombie) after drop");
    }
    Ok(())
}

/// The security model of shared regions, checked in a worker's
/// `/proc/PID/maps`: the input is a memfd (nameless: no other process can open
/// it) or the user's own file mapped read-only, and nothing lives in /dev/shm.
fn check_input_mappings(pid: u32, file: Option<&std::path::Path>) -> Result<(), Failed> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut found = false;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let perms = fields.nth(1).unwrap_or("");
        let path = fields.nth(3).unwrap_or("");
        if path.starts_with("/dev/shm") {
            return Err(format!("worker {pid} maps {path} from /dev/shm").into());
        }
        match file {
            Some(file) if path == file.to_string_lossy() => {
                if perms.contains('w') {
                    return Err(format!("worker {pid} maps the input file writable: {line}").into());
                }
                found = true;
            }
            None if path.starts_with("/memfd:") => found = true,
            _ => {}
        }
    }
    if !found {
        return Err(format!("worker {pid} does not map its input as expected ({file:?})").into());
    }
    Ok(())
}

/// While 3 workers each hold and have read all of a 64 MiB input, their memory
/// together grows by at most about 64 MiB (a share of one copy), not 3 x 64 MiB.
/// Only the workers are measured: this test process runs other tests at once.
fn input_is_not_copied_per_worker(from_file: bool) -> Result<(), Failed> {
    const SIZE: usize = 64 << 20;
    const WORKERS: usize = 3;
    let pool = Pool::builder().workers(WORKERS).build()?;
    let pids = pool.worker_pids();
    let total_pss = |pids: &[u32]| pids.iter().map(|&p| pss_bytes(p)).sum::<std::io::Result<u64>>();
    let before = total_pss(&pids)?;

    let dir = tempfile::tempdir()?;
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut input = Input::new();
    if from_file {
        let path = dir.path().join("input.bin");
        std::fs::write(&path, &data)?;
        input.push_file(&path)?;
    } else {
        input.push_bytes(&data);
    }
    drop(data);
    let job = HoldInput {
        dir: dir.path().to_path_buf(),
        tasks: WORKERS,
    };
    let during = std::thread::scope(|scope| -> Result<u64, Failed> {
        let running = scope.spawn(|| Run::new(&job, &input).tasks_per_worker(1).on(&pool));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_dir(dir.path())?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("touched-"))
            })
            .count()
            < WORKERS
        {
            assert!(std::time::Instant::now() < deadline, "workers did not all start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let during = total_pss(&pids)?;
        for &pid in &pids {
            check_input_mappings(pid, from_file.then(|| dir.path().join("input.bin")).as_deref())?;
        }
        std::fs::write(dir.path().join("release"), b"")?;
        running.join().unwrap()?;
        Ok(during)
    })?;
    let growth = during.saturating_sub(before);
    // At most one copy's worth (plus slack), far below the WORKERS copies a
    // pool that sends the input to each worker holds.
    let bound = SIZE as u64 * 5 / 4;
    assert!(
        growth < bound,
        "memory grew by {} MiB for a {} MiB input",
        growth >> 20,
        SIZE >> 20
    );
    Ok(())
}

/// The memfd mappings of `len` bytes in process `pid`: start address and
/// resident KiB of each.
fn memfd_mappings(pid: u32, len: usize) -> Result<Vec<(u64, u64)>, Failed> {
    mappings_of(pid, len, |path| path.starts_with("/memfd:"))
}

/// The mappings of `len` bytes in process `pid` whose path passes `wanted`:
/// start address and resident KiB of each.
fn mappings_of(pid: u32, len: usize, wanted: impl Fn(&str) -> bool) -> Result<Vec<(u64, u64)>, Failed> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let (mut found, mut current) = (Vec::new(), None);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some((start, end)) = fields.first().and_then(|f| f.split_once('-'))
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let path = fields.get(5).is_some_and(|path| wanted(path));
            current = (path && end - start == len as u64).then_some(start);
        } else if let (Some(start), Some(["Rss:", kib, "kB"])) = (current, fields.get(..3)) {
            found.push((start, kib.parse()?));
            current = None;
        }
    }
    Ok(found)
}

/// Workers keep the shared input of their last job mapped, so that the next
/// job on it does not map it again; dropping the input frees its memory in
/// the workers that keep it; a job on other input unmaps it.
fn workers_keep_shared_input_mapped_between_jobs_until_it_is_dropped() -> Result<(), Failed> {
    // Sizes no other region of these workers has.
    const FIRST: usize = 3 << 20;
    const SECOND: usize = 5 << 20;
    let pool = Pool::builder().workers(2).build()?;
    let pids = pool.worker_pids();
    let data = numbers(FIRST as u64 / 8);
    let mut input = Input::new();
    input.push_slice(&data);
    let expected = data.iter().sum::<u64>();

    assert_eq!(pool.run(&Sum, &input)?, expected);
    let mut first = Vec::new();
    for &pid in &pids {
        let maps = memfd_mappings(pid, FIRST)?;
        assert!(
            matches!(maps[..], [(_, resident)] if resident > 0),
            "worker {pid}: {maps:?}, one mapping with pages in it expected"
        );
        first.push(maps[0].0);
    }
    assert_eq!(pool.run(&Sum, &input)?, expected);
    for (&pid, &start) in pids.iter().zip(&first) {
        let maps = memfd_mappings(pid, FIRST)?;
        assert!(
            matches!(maps[..], [(at, _)] if at == start),
            "worker {pid}: {maps:?}, the mapping at {start:#x} kept"
        );
    }

    drop(input);
    for &pid in &pids {
        let maps = memfd_mappings(pid, FIRST)?;
        assert!(
            matches!(maps[..], [(_, 0)]),
            "worker {pid}: {maps:?}, still mapped, no page left"
        );
    }

    let mut other = Input::new();
    other.push_slice(&numbers(SECOND as u64 / 8));
    assert_eq!(
        pool.run(&Sum, &other)?,
        numbers(SECOND as u64 / 8).iter().sum::<u64>()
    );
    for &pid in &pids {
        assert_eq!(
            memfd_mappings(pid, FIRST)?,
            [],
            "worker {pid}: the dropped input is unmapped"
        );
        assert_eq!(
            memfd_mappings(pid, SECOND)?.len(),
            1,
            "worker {pid}: the new input is mapped"
        );
    }
    Ok(())
}

/// Minor page faults process `pid` took so far (`minflt` in /proc/PID/stat).
fn minor_faults(pid: u32) -> Result<u64, Failed> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name in parentheses: state is field 3, minflt field 10.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    Ok(after.split_whitespace().nth(7).ok_or("short stat")?.parse()?)
}

/// A mapped input file stays mapped in the workers from one job to the next:
/// a worker that reads all of it again takes no page fault for it.
fn workers_keep_an_input_file_mapped_between_jobs() -> Result<(), Failed> {
    const LEN: usize = 64 << 20;
    const WORKERS: usize = 2;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("input.bin");
    std::fs::write(&path, vec![1u8; LEN])?;
    // Every worker reads every page of the file, once per job, and goes on at once.
    std::fs::write(dir.path().join("release"), b"")?;
    let job = HoldInput {
        dir: dir.path().to_path_buf(),
        tasks: WORKERS,
    };
    let pool = Pool::builder().workers(WORKERS).build()?;
    let mut input = Input::new();
    input.push_file(&path)?;
    let run = || Run::new(&job, &input).tasks_per_worker(1).on(&pool);
    assert_eq!(run()?, (LEN / 4096 * WORKERS) as u64);
    let before: Vec<u64> = pool
        .worker_pids()
        .into_iter()
        .map(minor_faults)
        .collect::<Result<_, _>>()?;
    assert_eq!(run()?, (LEN / 4096 * WORKERS) as u64);
    // Mapped afresh, the file would cost a fault per 64 KiB (the pages
    // around a fault are mapped with it), or per 2 MiB where the page cache
    // holds it in large folios: 32 faults at least here; kept, none.
    for (pid, before) in pool.worker_pids().into_iter().zip(before) {
        let faults = minor_faults(pid)? - before;
        assert!(
            faults < (LEN / (4 << 20)) as u64,
            "worker {pid} took {faults} page faults reading the file again"
        );
    }
    Ok(())
}

/// Every worker refuses a job it does not know, and the job ends at the
/// first refusal; the next job, on the same input, runs all the same: no
/// worker is named by id a region it did not keep.
fn a_job_every_worker_refuses_leaves_the_next_one_whole() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let mut first = Input::new();
    first.push_slice(&numbers(1000));
    assert_eq!(pool.run(&Sum, &first)?, 1000 * 1001 / 2);
    for round in 0..5 {
        let mut other = Input::new();
        other.push_slice(&numbers(2000));
        let refused = pool.run(&Unregistered, &other).unwrap_err();
        assert!(
            matches!(refused, Error::UnknownJob { .. }),
            "round {round}: {refused}"
        );
        let sum = pool
            .run(&Sum, &other)
            .map_err(|err| format!("round {round}: {err}"))?;
        assert_eq!(sum, 2000 * 2001 / 2);
    }
    Ok(())
}

/// Ten tasks of a minute each (no task timeout): only the deadline ends the
/// job, and the workers stuck in them are replaced by the next job, which
/// gives none of its tasks to them (with no retries, one would fail it).
fn a_deadline_ends_a_job_and_the_pool_goes_on() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).retries(0).build()?;
    let before = pool.worker_pids();
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_millis(300);
    let slow = Sleepy {
        tasks: 10,
        millis: 60_000,
    };
    let err = Run::new(&slow, &Input::new())
        .deadline(deadline)
        .on(&pool)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DeadlineExceeded {
                done: 0,
                total: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let quick = Sleepy { tasks: 4, millis: 1 };
    let mut stats = coop::JobStats::default();
    let done = Run::new(&quick, &Input::new()).stats(&mut stats).on(&pool)?;
    assert_eq!(done, vec![0, 1, 2, 3]);
    assert_eq!(stats.retries, 0, "a task went to a worker killed by the deadline");
    let after = pool.worker_pids();
    assert!(
        before.iter().all(|pid| !after.contains(pid)),
        "{before:?} {after:?}: the busy workers were killed"
    );
    Ok(())
}

fn a_cancel_from_another_thread_ends_a_job_and_the_pool_goes_on() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let cancel = coop::CancelToken::new();
    let trip = cancel.clone();
    let tripper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        trip.cancel();
    });
    let slow = Sleepy {
        tasks: 10,
        millis: 60_000,
    };
    let err = Run::new(&slow, &Input::new())
        .cancel_token(&cancel)
        .on(&pool)
        .unwrap_err();
    tripper.join().unwrap();
    assert!(matches!(err, Error::Cancelled { total: 10, .. }), "{err}");
    assert!(err.to_string().contains("was cancelled"), "{err}");
    // Still cancelled: the next job with it stops at once; reset, it runs.
    let quick = Sleepy { tasks: 3, millis: 1 };
    let again = Run::new(&quick, &Input::new()).cancel_token(&cancel).on(&pool);
    assert!(matches!(again, Err(Error::Cancelled { .. })), "{again:?}");
    cancel.reset();
    assert_eq!(
        Run::new(&quick, &Input::new()).cancel_token(&cancel).on(&pool)?,
        vec![0, 1, 2]
    );
    Ok(())
}

/// Runs a `Sleepy` job on one engine.
type OnEngine<'e> = dyn Fn(Run<'_, Sleepy>) -> coop::Result<Vec<usize>> + 'e;

fn in_process_engines_start_no_task_after_a_stop() -> Result<(), Failed> {
    let job = Sleepy { tasks: 6, millis: 1 };
    let input = Input::new();
    let threads = Threads::new(2)?;
    let past = std::time::Instant::now();
    let cancelled = coop::CancelToken::new();
    cancelled.cancel();
    let on_threads = |run: Run<'_, Sleepy>| run.on(&threads);
    let on_sequential = |run: Run<'_, Sleepy>| run.on(&Sequential);
    let engines: [&OnEngine<'_>; 2] = [&on_threads, &on_sequential];
    for engine in engines {
        let err = engine(Run::new(&job, &input).deadline(past)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DeadlineExceeded {
                    done: 0,
                    total: 6,
                    ..
                }
            ),
            "{err}"
        );
        let err = engine(Run::new(&job, &input).cancel_token(&cancelled)).unwrap_err();
        assert!(matches!(err, Error::Cancelled { done: 0, .. }), "{err}");
        let later = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        assert_eq!(
            engine(Run::new(&job, &input).deadline(later))?,
            (0..6).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// With `max_jobs_per_worker(2)`, each worker serves two jobs, then the next
/// job starts on new ones; every result stays exact.
fn workers_are_replaced_after_max_jobs() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).max_jobs_per_worker(2).build()?;
    let numbers: Vec<u64> = (1..=1000).collect();
    let mut input = Input::new();
    input.push_slice(&numbers);
    let mut generations = Vec::new();
    for _ in 0..5 {
        assert_eq!(pool.run(&Sum, &input)?, 500_500);
        let mut pids = pool.worker_pids();
        pids.sort_unstable();
        generations.push(pids);
    }
    assert_eq!(generations[0], generations[1], "{generations:?}");
    assert_eq!(generations[2], generations[3], "{generations:?}");
    for (older, newer) in [(1, 2), (3, 4)] {
        assert!(
            generations[older]
                .iter()
                .all(|pid| !generations[newer].contains(pid)),
            "{generations:?}"
        );
    }
    Ok(())
}

fn a_worker_past_its_memory_limit_is_named_and_its_task_retried() -> Result<(), Failed> {
    const LIMIT: u64 = 256 << 20;
    let pool = Pool::builder()
        .workers(1)
        .retries(1)
        .memory_limit(LIMIT)
        .build()?;
    let mut stats = coop::JobStats::default();
    let err = Run::new(&coop_tests::Hog { bytes: 1 << 30 }, &Input::new())
        .stats(&mut stats)
        .on(&pool)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::TaskLost { attempts: 2, .. }), "{message}");
    assert!(
        message.contains(&format!("exceeded its memory limit of {LIMIT} bytes")),
        "{message}"
    );
    // Under the limit, the same job runs, on the worker that replaced it.
    assert_eq!(
        pool.run(&coop_tests::Hog { bytes: 16 << 20 }, &Input::new())?,
        4096
    );
    Ok(())
}
