//! The pool's normal life: start, jobs, shared input and output, scheduling.

use coop::prelude::*;
use coop::{Error, Sequential, Threads};
use coop_tests::{Sleepy, Squares, Sum, Unregistered};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    coop_tests::init();
    let tests = vec![
        Trial::test("sum_over_shared_slice", sum_over_shared_slice),
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
        Trial::test("dropping_the_pool_reaps_workers", dropping_the_pool_reaps_workers),
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
