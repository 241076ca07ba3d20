//! Load and soak: many jobs on one pool, many pools, more workers than cores,
//! and (ignored by default, `-- --ignored`) inputs and results of gigabytes.
//! Every trial checks, with [`coop_tests::leaks`], that it leaves no process,
//! descriptor, memfd, shared-memory entry or rendezvous directory behind; so
//! trials run one at a time.

use std::io::{BufWriter, Read, Write};
use std::time::{Duration, Instant};

use coop::Ipc;
use coop::partial::WordRule;
use coop::prelude::*;
use coop_examples::study::memory::pss_bytes;
use coop_tests::leaks::{self, Snapshot};
use coop_tests::{BigPartial, Sleepy, Squares, Sum};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    coop_tests::init();
    // SAFETY: first thing in main after `init` (which returns at once in the
    // coordinator): no other thread runs yet.
    let temp_dir = unsafe { leaks::isolate_temp_dir() }.expect("creating a private temp dir");
    // rayon's global pool (the corpus generator, the word-count merge) starts
    // its threads once and keeps them: start it before any snapshot.
    coop_examples::corpus::generate(1, 1, 0);
    let mut args = Arguments::from_args();
    // Children and descriptors are process-wide: one trial at a time.
    args.test_threads = Some(1);
    let tests = vec![
        checked("ten_thousand_small_jobs_on_one_pool", || {
            many_small_jobs(Ipc::SharedMemory, 10_000)
        }),
        checked("two_thousand_small_jobs_over_messages", || {
            many_small_jobs(Ipc::Messages, 2_000)
        }),
        checked("fifty_pools_created_and_dropped", fifty_pools),
        checked("thirty_two_workers_on_few_cores", || oversubscribed(32)),
        checked("one_worker_runs_everything", || oversubscribed(1)),
        // Leaves a pool's thread and sockets behind: last of the quick trials.
        Trial::test("leak_check_sees_a_forgotten_pool", forgotten_pool_is_seen),
        checked("three_gb_file_word_count", three_gb_file).with_ignored_flag(true),
        checked("partial_over_2_gib", partial_over_2_gib).with_ignored_flag(true),
    ];
    let conclusion = libtest_mimic::run(&args, tests);
    let _ = leaks::remove_isolated_temp_dir(&temp_dir);
    conclusion.exit();
}

/// A trial that fails if `test` leaks anything.
fn checked(name: &str, test: impl FnOnce() -> Result<(), Failed> + Send + 'static) -> Trial {
    Trial::test(name, move || {
        let before = leaks::snapshot();
        test()?;
        leaks::check_no_leaks(&before)?;
        Ok(())
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One small job of a mix, chosen by `i`, run on `pool` and checked exactly:
/// empty input, one task, sums of various lengths, output-writing squares,
/// jobs without input.
fn small_job(pool: &Pool, i: u64) -> Result<(), Failed> {
    match i % 6 {
        0 => {
            let mut input = Input::new();
            input.push_slice::<u64>(&[]);
            assert_eq!(pool.run(&Sum, &input)?, 0, "job {i}: empty input");
        }
        1 => {
            let mut input = Input::new();
            input.push_slice(&[i]);
            assert_eq!(pool.run(&Sum, &input)?, i, "job {i}: one task");
        }
        2 | 3 => {
            let n = (i * 7919) % 5000;
            let data: Vec<u64> = (1..=n).collect();
            let mut input = Input::new();
            input.push_slice(&data);
            assert_eq!(
                pool.run(&Sum, &input)?,
                n * (n + 1) / 2,
                "job {i}: sum of 1..={n}"
            );
        }
        4 => {
            let n = 1 + (i * 31) % 700;
            let data: Vec<u64> = (0..n).map(|x| x ^ i).collect();
            let mut input = Input::new();
            input.push_slice(&data);
            let mut out = SharedOutput::zeroed::<u64>(data.len());
            let written = Run::new(&Squares, &input).output(&mut out).on(pool)?;
            assert_eq!(written, n, "job {i}: squares written");
            let squares: Vec<u64> = data.iter().map(|x| x * x).collect();
            assert_eq!(out.as_slice::<u64>(), &squares[..], "job {i}: squares");
        }
        _ => {
            let tasks = (i % 4) as usize;
            let done = pool.run(&Sleepy { tasks, millis: 0 }, &Input::new())?;
            assert_eq!(done, (0..tasks).collect::<Vec<_>>(), "job {i}: tasks run");
        }
    }
    Ok(())
}

/// RSS may grow this much between job 100 and job 10,000: the allocator's
/// free lists and arenas settle over the first few hundred jobs (a few pages
/// per size class and thread), which is not a leak; a leak of even 500 bytes
/// per job would be 4.7 MiB.
const RSS_SLACK: u64 = 4 << 20;

/// `jobs` small jobs on one pool of 2 workers: after the first 100, the
/// descriptors, memfds, threads, children and workers stay the same, and the
/// coordinator's RSS grows by at most [`RSS_SLACK`].
fn many_small_jobs(ipc: Ipc, jobs: u64) -> Result<(), Failed> {
    const WARM_UP: u64 = 100;
    let pool = Pool::builder().workers(2).ipc(ipc).build()?;
    let pids = pool.worker_pids();
    let started = Instant::now();
    for i in 0..WARM_UP {
        small_job(&pool, i)?;
    }
    let warm = leaks::snapshot();
    let warm_time = started.elapsed();
    for i in WARM_UP..jobs {
        small_job(&pool, i)?;
    }
    let elapsed = started.elapsed();
    // A thread the pool joined (a feeder, with messages) may still be listed
    // for a moment after its join: let things settle, as after a pool drop.
    let settled = leaks::check_no_leaks(&warm);
    let end = leaks::snapshot();
    let rate = jobs as f64 / elapsed.as_secs_f64();
    println!(
        "\n  {ipc:?}: {jobs} jobs in {:.2} s: {rate:.0} jobs/s ({:.0} jobs/s over the first {WARM_UP})\n  \
         after {WARM_UP} jobs: {} fds ({} memfds), {} threads, RSS {:.2} MiB, workers {:?}\n  \
         after {jobs} jobs: {} fds ({} memfds), {} threads, RSS {:.2} MiB, workers {:?}",
        elapsed.as_secs_f64(),
        WARM_UP as f64 / warm_time.as_secs_f64(),
        warm.fd_count(),
        warm.memfds().len(),
        warm.threads.len(),
        mib(warm.rss_bytes),
        warm.child_pids(),
        end.fd_count(),
        end.memfds().len(),
        end.threads.len(),
        mib(end.rss_bytes),
        end.child_pids(),
    );
    if let Err(leaks) = settled {
        panic!("grew between job {WARM_UP} and job {jobs}: {leaks}");
    }
    assert_eq!(end.fd_count(), warm.fd_count(), "descriptors");
    assert_eq!(end.memfds().len(), warm.memfds().len(), "memfds");
    assert_eq!(pool.worker_pids(), pids, "the same workers serve every job");
    assert_eq!(end.child_pids(), warm.child_pids(), "children");
    let growth = end.rss_bytes.saturating_sub(warm.rss_bytes);
    assert!(
        growth <= RSS_SLACK,
        "coordinator RSS grew by {:.2} MiB over {} jobs (slack {:.0} MiB)",
        mib(growth),
        jobs - WARM_UP,
        mib(RSS_SLACK)
    );
    Ok(())
}

fn fifty_pools() -> Result<(), Failed> {
    const POOLS: usize = 50;
    let data: Vec<u64> = (1..=1000).collect();
    let started = Instant::now();
    let mut first: Option<Snapshot> = None;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..POOLS {
        {
            let pool = Pool::builder().workers(2).build()?;
            for pid in pool.worker_pids() {
                assert!(
                    seen.insert(pid),
                    "pid {pid} reused by round {round}: a worker survived?"
                );
            }
            let mut input = Input::new();
            input.push_slice(&data);
            assert_eq!(pool.run(&Sum, &input)?, 500_500);
        }
        // Drop reaps its workers synchronously: no child may be left right
        // after it. A thread it joined may be listed in /proc a moment longer.
        let now = leaks::snapshot();
        assert!(
            now.children.is_empty(),
            "children after pool {round}: {:?}",
            now.children
        );
        match &first {
            None => first = Some(now),
            Some(first) => {
                if let Err(grown) = leaks::check_no_leaks(first) {
                    panic!("after pool {round}: {grown}");
                }
                let now = leaks::snapshot();
                assert_eq!(now.fd_count(), first.fd_count(), "fds after pool {round}");
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "\n  {POOLS} pools of 2 workers started, used and dropped in {:.2} s ({:.0} ms each)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / POOLS as f64
    );
    Ok(())
}

fn oversubscribed(workers: usize) -> Result<(), Failed> {
    let started = Instant::now();
    let pool = Pool::builder().workers(workers).build()?;
    let start_time = started.elapsed();
    assert_eq!(pool.worker_pids().len(), workers);
    let n = 200_000u64;
    let data: Vec<u64> = (1..=n).collect();
    let mut input = Input::new();
    input.push_slice(&data);
    // Several hundred tasks whatever the worker count.
    let per_worker = 600usize.div_ceil(workers);
    let mut stats = coop::JobStats::default();
    let sum = Run::new(&Sum, &input)
        .tasks_per_worker(per_worker)
        .stats(&mut stats)
        .on(&pool)?;
    assert_eq!(sum, n * (n + 1) / 2);
    let mut out = SharedOutput::zeroed::<u64>(data.len());
    let written = Run::new(&Squares, &input)
        .output(&mut out)
        .tasks_per_worker(per_worker)
        .on(&pool)?;
    assert_eq!(written, n);
    assert!(
        out.as_slice::<u64>().iter().zip(&data).all(|(o, x)| *o == x * x),
        "squares differ"
    );
    let done = Run::new(
        &Sleepy {
            tasks: 400,
            millis: 1,
        },
        &Input::new(),
    )
    .tasks_per_worker(per_worker)
    .on(&pool)?;
    assert_eq!(done, (0..400).collect::<Vec<_>>());
    println!(
        "\n  {workers} worker(s): started in {:.0} ms, 3 jobs in {:.0} ms; sum: {stats:?}",
        start_time.as_secs_f64() * 1000.0,
        (started.elapsed() - start_time).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Free space of the filesystem holding `path`, in bytes.
fn free_bytes(path: &std::path::Path) -> Result<u64, Failed> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Words as `wc -w` counts them (maximal runs of non-whitespace bytes), read
/// as a stream: a word may span two reads.
fn streaming_word_count(path: &std::path::Path) -> Result<u64, Failed> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 << 20];
    let (mut words, mut in_word) = (0u64, false);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(words);
        }
        for &b in &buf[..n] {
            let space = is_space(b);
            // Count each word where it starts.
            words += u64::from(!space && !in_word);
            in_word = !space;
        }
    }
}

/// Sum of the PSS of the coordinator and `pids`.
fn total_pss(pids: &[u32]) -> u64 {
    std::iter::once(std::process::id())
        .chain(pids.iter().copied())
        .map(|pid| pss_bytes(pid).unwrap_or(0))
        .sum()
}

/// The leak check sees what a pool leaves behind when it is never dropped:
/// its workers, its spawner thread, its descriptors. (The pool's memory, thread
/// and sockets stay leaked in this process; the workers are killed and reaped.)
fn forgotten_pool_is_seen() -> Result<(), Failed> {
    let before = leaks::snapshot();
    let pool = Pool::builder().workers(2).build()?;
    let pids = pool.worker_pids();
    std::mem::forget(pool);
    let leaks = leaks::snapshot().leaks_since(&before).join("\n");
    for pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::SIGKILL)?;
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid as i32), None)?;
    }
    for pid in &pids {
        assert!(
            leaks.contains(&format!("{pid} [")),
            "worker {pid} not reported:\n{leaks}"
        );
    }
    assert!(
        leaks.contains("(coop-spawner)"),
        "spawner thread not reported:\n{leaks}"
    );
    assert!(leaks.contains("socket:["), "sockets not reported:\n{leaks}");
    Ok(())
}

/// A 3 GiB text file, word-counted by 2 workers that map it: the exact total,
/// and the file's pages counted once in the memory of all processes together.
fn three_gb_file() -> Result<(), Failed> {
    const CHUNK: usize = 64 << 20;
    const COPIES: usize = 48; // 3 GiB
    const WORKERS: usize = 2;
    let dir = tempfile::tempdir()?;
    let free = free_bytes(dir.path())?;
    if free < 8 << 30 {
        println!(
            "\n  skipped: {:.1} GiB free in {}, 8 GiB wanted",
            free as f64 / (1u64 << 30) as f64,
            dir.path().display()
        );
        return Ok(());
    }
    let path = dir.path().join("corpus.txt");
    let started = Instant::now();
    let mut chunk = coop_examples::corpus::generate(CHUNK, coop_examples::corpus::DEFAULT_VOCABULARY, 7);
    // A word never runs from one copy into the next.
    if chunk.last().is_some_and(|&b| !is_space(b)) {
        chunk.push(b'\n');
    }
    let mut file = BufWriter::new(std::fs::File::create(&path)?);
    for _ in 0..COPIES {
        file.write_all(&chunk)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    drop(chunk);
    let size = std::fs::metadata(&path)?.len();
    let written = started.elapsed();

    let started = Instant::now();
    let expected = streaming_word_count(&path)?;
    let streamed = started.elapsed();

    let pool = Pool::builder().workers(WORKERS).build()?;
    let pids = pool.worker_pids();
    let rss_before = leaks::rss_bytes();
    let pss_before = total_pss(&pids);
    let mut input = Input::new();
    input.push_file(&path)?;
    let job = coop_examples::wordcount::WordCount {
        rule: WordRule::Whitespace,
    };
    let started = Instant::now();
    let (counts, peak) = std::thread::scope(|scope| {
        let running = scope.spawn(|| pool.run(&job, &input));
        let mut peak = 0;
        while !running.is_finished() {
            peak = peak.max(total_pss(&pids));
            std::thread::sleep(Duration::from_millis(100));
        }
        (running.join().unwrap(), peak)
    });
    let counts = counts?;
    let counted = started.elapsed();
    // The merged table is about one partial's size: each worker saw nearly
    // every word of the vocabulary.
    let partial = leaks::rss_bytes().saturating_sub(rss_before).max(32 << 20);
    let margin = 256u64 << 20;
    let bound = pss_before + size + WORKERS as u64 * partial + margin;
    println!(
        "\n  file {:.2} GiB written in {:.1} s; streaming count {} words in {:.1} s; \
         pool count in {:.1} s ({:.0} MB/s), {} distinct\n  \
         PSS coordinator + {WORKERS} workers: {:.0} MiB before, peak {:.0} MiB during; \
         bound {:.0} MiB (before + file + {WORKERS} x {:.0} MiB partial + {:.0} MiB)",
        size as f64 / (1u64 << 30) as f64,
        written.as_secs_f64(),
        expected,
        streamed.as_secs_f64(),
        counted.as_secs_f64(),
        size as f64 / 1e6 / counted.as_secs_f64(),
        counts.len(),
        mib(pss_before),
        mib(peak),
        mib(bound),
        mib(partial),
        mib(margin),
    );
    assert_eq!(counts.total(), expected, "total word count");
    assert!(
        peak < bound,
        "peak PSS {:.0} MiB above {:.0} MiB: the file is counted more than once",
        mib(peak),
        mib(bound)
    );
    Ok(())
}

/// One worker's partial of 2.2 GiB: exact, or a clear error and a pool that
/// still works; never a crash or a corrupt result.
fn partial_over_2_gib() -> Result<(), Failed> {
    let job = BigPartial {
        bytes: (2.2 * (1u64 << 30) as f64) as usize,
    };
    let pool = Pool::builder().workers(1).build()?;
    let started = Instant::now();
    let outcome = pool.run(&job, &Input::new());
    let elapsed = started.elapsed();
    match outcome {
        Ok(partial) => {
            job.check(&partial)?;
            println!(
                "\n  {} bytes came back exact in {:.1} s",
                partial.len(),
                elapsed.as_secs_f64()
            );
        }
        Err(err) => println!(
            "\n  {} bytes: failed after {:.1} s with: {err}\n  ({err:?})",
            job.bytes,
            elapsed.as_secs_f64()
        ),
    }
    let mut input = Input::new();
    input.push_slice(&[1u64, 2, 3]);
    assert_eq!(pool.run(&Sum, &input)?, 6, "the pool still works");
    Ok(())
}

/// The six ASCII whitespace bytes that end a word under `WordRule::Whitespace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}
