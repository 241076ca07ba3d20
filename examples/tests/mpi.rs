//! `--engine mpi` end to end: `wordcount` and `matmul` under `mpirun -n 1`,
//! `-n 2` and `-n 4` (oversubscribed) on this host, byte for byte against
//! `--engine sequential`; the library's parts (records, `RecordJob`,
//! partials) against the sequential engine; failures that end the whole MPI
//! job quickly with the rank, host and cause. Run with `cargo test -p coop-examples --features
//! mpi --test mpi` (needs Open MPI's `mpirun`). Without the feature, only the
//! refusal of `--engine mpi` is tested.

// Each test crate compiles its own copy of the shared helpers and uses only
// some of them: the rest would warn as unused.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use common::run;

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");

#[cfg(not(feature = "mpi"))]
#[test]
fn engine_mpi_without_the_feature_says_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("words.txt");
    std::fs::write(&file, "a b c\n").unwrap();
    let out = run(WORDCOUNT, &argv!["--engine", "mpi", &file]);
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(
        stderr.starts_with("error: --engine mpi needs a build with MPI") && stderr.contains("--features mpi"),
        "{stderr}"
    );
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::ffi::OsString;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use coop_examples::corpus;
    use coop_examples::npy::{self, Dtype};

    use super::common::{Outcome, finish, run_within};
    use super::*;

    const MATMUL: &str = env!("CARGO_BIN_EXE_matmul");

    /// An MPI job that runs longer than this has hung.
    const TIMEOUT: Duration = Duration::from_secs(120);

    /// One MPI job at a time: on a small machine, concurrent oversubscribed
    /// jobs would only measure the scheduler.
    static MPI_JOBS: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> MutexGuard<'static, ()> {
        MPI_JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn text(output: &[u8]) -> String {
        String::from_utf8_lossy(output).into_owned()
    }

    /// `mpirun` on this host: as root if need be, more ranks than cores
    /// allowed, and no single-copy shared memory (which needs ptrace rights
    /// that containers often withhold).
    fn mpirun() -> Command {
        let mut command = Command::new("mpirun");
        command
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .env_remove("RUST_LOG");
        command
    }

    /// Exit code 0, and no rank panicked.
    fn assert_job_success(job: &Outcome) {
        assert!(job.code == Some(0), "expected success\n{}", job.describe());
        assert!(!job.stderr.contains("panicked"), "{}", job.describe());
    }

    /// Runs `command` with no input, to its end, killing it after [`TIMEOUT`].
    fn run_to_end(command: &mut Command) -> Outcome {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_within(command, b"", TIMEOUT)
    }

    /// `mpirun -n RANKS program args...`, with `stdin` as standard input.
    fn mpi_job(ranks: usize, program: &str, args: &[&str], stdin: Option<&Path>) -> Outcome {
        let mut command = mpirun();
        command.arg("-n").arg(ranks.to_string()).arg(program).args(args);
        command.stdin(match stdin {
            Some(path) => Stdio::from(std::fs::File::open(path).unwrap()),
            None => Stdio::null(),
        });
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (Open MPI) must be installed for the mpi feature's tests");
        finish(child, &command, TIMEOUT)
    }

    fn sequential(program: &str, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["--engine", "sequential"];
        all.extend_from_slice(args);
        let out = run(program, &all.iter().map(OsString::from).collect::<Vec<_>>());
        assert!(out.code == Some(0), "sequential run failed: {}", out.stderr);
        out.stdout
    }

    /// Two files of generated text (different sizes, so tasks differ) and an empty one.
    fn corpus_files(dir: &Path) -> Vec<String> {
        let files = [
            ("zipf.txt", corpus::generate(3 << 20, 20_000, 7)),
            ("small.txt", corpus::generate(50_000, 500, 8)),
            ("empty.txt", Vec::new()),
        ];
        files
            .into_iter()
            .map(|(name, bytes)| {
                let path = dir.join(name);
                std::fs::write(&path, bytes).unwrap();
                path.to_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn wordcount_on_files_matches_sequential() {
        let dir = tempfile::tempdir().unwrap();
        let files = corpus_files(dir.path());
        let mut args = vec!["--all", "--format", "tsv"];
        args.extend(files.iter().map(String::as_str));
        let expected = sequential(WORDCOUNT, &args);
        assert!(expected.len() > 100_000, "the corpus has many distinct words");
        let mut mpi_args = vec!["--engine", "mpi"];
        mpi_args.extend_from_slice(&args);
        let _one = one_at_a_time();
        for ranks in [1, 2, 4] {
            let job = mpi_job(ranks, WORDCOUNT, &mpi_args, None);
            assert_job_success(&job);
            assert!(
                job.stdout == expected,
                "-n {ranks}: output differs from --engine sequential\n{}",
                job.describe()
            );
            let workers = format!("{} worker(s) (mpi)", (ranks - 1).max(1));
            assert!(job.stderr.contains(&workers), "-n {ranks}: {}", job.describe());
        }
    }

    #[test]
    fn wordcount_on_stdin_sends_the_text_to_the_ranks() {
        // Standard input is read into rank 0's memory: its pieces travel to
        // the ranks that count them.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stdin.txt");
        std::fs::write(&file, corpus::generate(2 << 20, 5_000, 11)).unwrap();
        let args = ["--split", "whitespace", "--all", "--format", "tsv"];
        let mut sequential_args = args.to_vec();
        sequential_args.push(file.to_str().unwrap());
        let expected = sequential(WORDCOUNT, &sequential_args);
        let mut mpi_args = vec!["--engine", "mpi"];
        mpi_args.extend_from_slice(&args);
        let _one = one_at_a_time();
        for ranks in [2, 4] {
            let job = mpi_job(ranks, WORDCOUNT, &mpi_args, Some(&file));
            assert_job_success(&job);
            assert!(job.stdout == expected, "-n {ranks}: differs\n{}", job.describe());
        }
    }

    /// A `.npy` file of `rows x cols` f64 values, C or Fortran order.
    fn write_npy(path: &Path, rows: usize, cols: usize, fortran: bool, seed: u64) {
        let mut bytes = npy::encode_header(Dtype::F64, fortran, &[rows, cols]);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..rows * cols {
            // xorshift: values in [-1, 1), deterministic.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn matmul_files_match_sequential_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        write_npy(&a, 613, 257, false, 1);
        write_npy(&b, 257, 389, true, 2);
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let expected_path = dir.path().join("c-sequential.npy");
        sequential(MATMUL, &[a, b, "-o", expected_path.to_str().unwrap()]);
        let expected = std::fs::read(&expected_path).unwrap();
        let _one = one_at_a_time();
        for ranks in [1, 2, 4] {
            let out = dir.path().join(format!("c-{ranks}.npy"));
            let job = mpi_job(
                ranks,
                MATMUL,
                &["--engine", "mpi", a, b, "-o", out.to_str().unwrap()],
                None,
            );
            assert_job_success(&job);
            let c = std::fs::read(&out).unwrap();
            assert!(
                c == expected,
                "-n {ranks}: C differs from --engine sequential\n{}",
                job.describe()
            );
        }
        // Only rank 0 writes the output: no rank left a temporary file behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "a.npy",
                "b.npy",
                "c-1.npy",
                "c-2.npy",
                "c-4.npy",
                "c-sequential.npy"
            ]
        );
    }

    #[test]
    fn matmul_of_matrices_in_memory_is_exact() {
        // Random matrices live in rank 0's memory: each rank receives the row
        // blocks of A it multiplies, and B once. `--check` compares with a
        // single-process multiply by the same kernel.
        let _one = one_at_a_time();
        for ranks in [2, 4] {
            let job = mpi_job(
                ranks,
                MATMUL,
                &["--engine", "mpi", "--size", "300", "--check", "--seed", "5"],
                None,
            );
            assert_job_success(&job);
            let stdout = text(&job.stdout);
            assert!(
                stdout.contains(&format!("{} worker(s) (mpi)", ranks - 1)),
                "{}",
                job.describe()
            );
            assert!(
                stdout.contains("check: largest relative error 0e0"),
                "-n {ranks}: not exact\n{}",
                job.describe()
            );
        }
    }

    #[test]
    fn a_single_process_without_mpirun_runs_the_tasks_itself() {
        let dir = tempfile::tempdir().unwrap();
        let files = corpus_files(dir.path());
        let mut args = vec!["--top", "50"];
        args.extend(files.iter().map(String::as_str));
        let expected = sequential(WORDCOUNT, &args);
        let mut mpi_args = vec!["--engine", "mpi"];
        mpi_args.extend_from_slice(&args);
        let _one = one_at_a_time();
        // MPI's singleton start: one rank, no mpirun.
        let job = run_to_end(Command::new(WORDCOUNT).args(&mpi_args));
        assert_job_success(&job);
        assert!(job.stdout == expected, "{}", job.describe());
        assert!(job.stderr.contains("1 worker(s) (mpi)"), "{}", job.describe());
    }

    #[test]
    fn a_rank_without_the_job_fails_it_with_rank_host_and_cause() {
        // Two programs in one MPI job (MPMD): rank 2 is matmul, which does not
        // register the word-count job. The job fails at once, naming the rank.
        let dir = tempfile::tempdir().unwrap();
        let files = corpus_files(dir.path());
        let _one = one_at_a_time();
        let job = run_to_end(
            mpirun()
                .args(["-n", "2", WORDCOUNT, "--engine", "mpi", &files[0]])
                .args([":", "-n", "1", MATMUL, "--engine", "mpi"]),
        );
        assert_eq!(job.code, Some(1), "{}", job.describe());
        assert!(job.stdout.is_empty(), "{}", job.describe());
        let error = job
            .stderr
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line\n{}", job.describe()));
        assert!(
            error.starts_with(
                "error: job `coop-examples/wordcount`: the job is not registered on MPI rank 2 (host "
            ) && error.contains("registered there: [`coop-examples/matmul` (coop_examples::matmul::MatMul)]"),
            "{}",
            job.describe()
        );
        assert!(job.elapsed < Duration::from_secs(30), "{}", job.describe());
    }

    #[test]
    fn a_rank_still_busy_with_a_failed_job_is_not_waited_for_long() {
        // Rank 2 (wordcount) refuses the matmul job at once; rank 1 is deep in a
        // long task (n = 4000, 512 rows, a debug build). Rank 0 reports the
        // error, waits coop::mpi::SHUTDOWN_GRACE for rank 1, then aborts.
        let _one = one_at_a_time();
        let job = run_to_end(
            mpirun()
                .args(["-n", "2", MATMUL, "--engine", "mpi", "--size", "4000"])
                .args([":", "-n", "1", WORDCOUNT, "--engine", "mpi"]),
        );
        assert_eq!(job.code, Some(1), "{}", job.describe());
        assert!(
            job.stderr
                .contains("error: job `coop-examples/matmul`: the job is not registered on MPI rank 2"),
            "{}",
            job.describe()
        );
        assert!(
            job.stderr.contains("coop: MPI rank 0: rank 1 (host ")
                && job
                    .stderr
                    .contains("still running a task of a failed job 5s after shutdown; aborting the MPI job"),
            "{}",
            job.describe()
        );
        let grace = coop::mpi::SHUTDOWN_GRACE;
        assert!(
            job.elapsed > grace && job.elapsed < grace + Duration::from_secs(25),
            "{}",
            job.describe()
        );
    }

    #[test]
    fn a_killed_rank_ends_the_whole_job_quickly() {
        // MPI cannot recover a lost rank: mpirun ends every rank and names the
        // one that died, its host and its signal. Nothing hangs.
        let _one = one_at_a_time();
        let started = Instant::now();
        let mut command = mpirun();
        command
            .args(["-n", "3", MATMUL, "--engine", "mpi", "--size", "1500"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().unwrap();
        let rank = loop {
            if let Some(pid) = rank_pid(child.id(), 1) {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "rank 1 never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let it get into its first task (MPI_Init and the hello come first).
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        let status = Command::new("kill")
            .args(["-KILL", &rank.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL {rank}");
        let job = finish(child, &command, TIMEOUT);
        assert!(job.code != Some(0), "{}", job.describe());
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "took {:?} after the kill\n{}",
            killed.elapsed(),
            job.describe()
        );
        assert!(
            job.stderr.contains("rank 1") && job.stderr.contains("signal 9"),
            "{}",
            job.describe()
        );
        assert!(!text(&job.stdout).contains("GFLOP/s"), "{}", job.describe());
    }

    /// The pid of the process that `mpirun` (pid `mpirun`) started as `rank`.
    fn rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        for entry in std::fs::read_dir("/proc").ok()? {
            let Ok(pid) = entry.ok()?.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if parent != Some(mpirun) {
                continue;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()) {
                return Some(pid);
            }
        }
        None
    }

    /// Sums task indices; one task may panic or fail, as user code can.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Picky {
        fail_at: Option<u64>,
        panic: bool,
    }

    impl coop::Job for Picky {
        const NAME: &'static str = "tests/picky";
        type Task = u64;
        type Partial = u64;

        fn split(&self, _: &coop::Input, _: usize) -> Result<Vec<u64>, coop::TaskError> {
            Ok((0..64).collect())
        }

        fn map(&self, task: &u64, _: &coop::Input, sum: &mut u64) -> Result<(), coop::TaskError> {
            if self.fail_at == Some(*task) {
                assert!(!self.panic, "task {task} refuses to run");
                return Err(format!("task {task} has no data").into());
            }
            // Long enough for every rank to take tasks.
            std::thread::sleep(Duration::from_millis(5));
            *sum += task;
            Ok(())
        }

        fn merge(&self, into: &mut u64, other: u64) {
            *into += other;
        }
    }

    /// Set by [`panics_and_errors_on_ranks_are_reported_and_the_engine_goes_on`]
    /// for the copies of this test binary it starts under mpirun.
    const UNDER_MPIRUN: &str = "COOP_TEST_UNDER_MPIRUN";

    /// The MPI program of the test below (every rank runs it): a job whose
    /// task panics on some rank, one whose task fails, then a good one on the
    /// same engine. Prints what it got; exits with a failure if it was not
    /// what it should be.
    #[test]
    #[ignore = "an MPI program: run under mpirun by the test below"]
    fn mpi_program_with_failing_tasks() {
        use coop::{Engine, Error, RankFailure, TaskIndex};
        assert!(
            std::env::var_os(UNDER_MPIRUN).is_some(),
            "run by panics_and_errors_on_ranks_are_reported_and_the_engine_goes_on, under mpirun"
        );
        coop::init(&[coop::register::<Picky>()]).unwrap();
        let mpi = coop::Mpi::init().unwrap(); // ranks 1 and 2 serve and exit here
        let input = coop::Input::new();
        let panicked = mpi
            .run(
                &Picky {
                    fail_at: Some(5),
                    panic: true,
                },
                &input,
            )
            .unwrap_err();
        println!("first job: {panicked}");
        assert!(
            matches!(
                &panicked,
                Error::Rank { failure: RankFailure::Panicked { task: TaskIndex(Some(5)) }, rank: 1 | 2, host, message, .. }
                    if !host.is_empty() && message.starts_with("task 5 refuses to run (at ") && message.contains("mpi.rs:")
            ),
            "{panicked:?}"
        );
        let failed = mpi
            .run(
                &Picky {
                    fail_at: Some(9),
                    panic: false,
                },
                &input,
            )
            .unwrap_err();
        println!("second job: {failed}");
        assert!(
            matches!(
                &failed,
                Error::Rank { failure: RankFailure::Failed { task: TaskIndex(Some(9)) }, message, .. }
                    if message == "task 9 has no data"
            ),
            "{failed:?}"
        );
        let mut stats = coop::JobStats::default();
        let sum = coop::Run::new(
            &Picky {
                fail_at: None,
                panic: false,
            },
            &input,
        )
        .stats(&mut stats)
        .on(&mpi)
        .unwrap();
        assert_eq!(sum, (0..64).sum::<u64>());
        assert_eq!(stats.tasks, 64);
        assert!(
            stats.bytes_from_workers > 0 && stats.bytes_to_workers > 0,
            "{stats:?}"
        );
        println!("third job: {sum} on ranks {:?}", mpi.hosts());
    }

    #[test]
    fn panics_and_errors_on_ranks_are_reported_and_the_engine_goes_on() {
        let _one = one_at_a_time();
        let job = run_to_end(
            mpirun()
                .env(UNDER_MPIRUN, "1")
                .args(["-n", "3"])
                .arg(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "with_mpi::mpi_program_with_failing_tasks",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ]),
        );
        assert_job_success(&job);
        let stdout = text(&job.stdout);
        for expected in [
            "first job: job `tests/picky`: task 5 panicked on MPI rank ",
            "second job: job `tests/picky`: task 9 failed on MPI rank ",
            ": task 9 has no data",
            "third job: 2016 on ranks",
        ] {
            assert!(stdout.contains(expected), "no {expected:?}\n{}", job.describe());
        }
        assert!(job.elapsed < Duration::from_secs(60), "{}", job.describe());
    }

    /// Counts each distinct line twice (a map, a keyed table), the words of
    /// the lines, a histogram of line lengths in as many bins as the job
    /// says and their summary: the library's parts (records, a `RecordJob`,
    /// combining partials, a partial sized by the job).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Lines {
        bins: usize,
    }

    impl coop::RecordJob for Lines {
        const NAME: &'static str = "tests/lines";
        type Partial = (
            std::collections::BTreeMap<Vec<u8>, u64>,
            coop::partial::Dense<u64>,
            coop::partial::Keyed<coop::partial::ShortBytes, u64>,
            coop::partial::Tally,
            coop::partial::Summary,
        );

        fn empty_partial(&self) -> Self::Partial {
            let (map, keyed, words, summary) = Default::default();
            (map, coop::partial::Dense::new(self.bins), keyed, words, summary)
        }

        fn fold(&self, line: &[u8], partial: &mut Self::Partial) -> Result<(), coop::TaskError> {
            let (map, lengths, keyed, words, summary) = partial;
            *map.entry(line.to_vec()).or_default() += 1;
            lengths.add(line.len().min(self.bins - 1), 1);
            keyed.add_ref(line, 1);
            words.add_words(coop::partial::WordRule::Whitespace, line);
            summary.add(line.len() as f64);
            Ok(())
        }
    }

    /// Set for the copies of this test binary that
    /// [`library_parts_on_mpi_match_sequential`] starts under mpirun.
    const PARTS_UNDER_MPIRUN: &str = "COOP_TEST_PARTS_UNDER_MPIRUN";

    /// The MPI program of the test below: [`Lines`] over no input, over
    /// segments in rank 0's memory (sent in the chunks tasks read: a last
    /// line without its newline, an empty segment, a line longer than a
    /// task), and over a file every rank maps; each against the sequential
    /// engine in the same process.
    #[test]
    #[ignore = "an MPI program: run under mpirun by the test below"]
    fn mpi_program_with_library_parts() {
        use coop::Engine;
        let file = std::env::var_os(PARTS_UNDER_MPIRUN)
            .expect("run by library_parts_on_mpi_match_sequential, under mpirun");
        coop::init(&[coop::register::<Lines>()]).unwrap();
        let mpi = coop::Mpi::init().unwrap(); // ranks 1 and 2 serve and exit here
        let job = Lines { bins: 12 };
        let long = [vec![b'y'; 100_000], b"\nafter\n".to_vec()].concat();
        let mut in_memory = coop::Input::new();
        for segment in [
            &b"a\nbb\n\nccc\nbb"[..],
            b"",
            &long,
            &"x\n".repeat(5_000).into_bytes(),
        ] {
            in_memory.push_bytes(segment);
        }
        let mut mapped = coop::Input::new();
        mapped.push_file(&file).unwrap();
        for (name, input) in [
            ("no input", coop::Input::new()),
            ("memory", in_memory),
            ("file", mapped),
        ] {
            let expected = coop::Sequential.run(&job, &input).unwrap();
            let got = mpi.run(&job, &input).unwrap();
            assert_eq!(got, expected, "{name}");
            assert_eq!(got.1.len(), 12, "{name}: the job's bins, even with no line");
            assert_eq!(got.2.len(), got.0.len(), "{name}: keyed and map");
            assert_eq!(got.4.count, got.0.values().sum::<u64>(), "{name}: summary");
            println!("{name}: {} distinct lines", got.0.len());
        }
        println!("library parts: as sequential on ranks {:?}", mpi.hosts());
    }

    #[test]
    fn library_parts_on_mpi_match_sequential() {
        let _one = one_at_a_time();
        let dir = std::env::temp_dir().join(format!("coop-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lines.txt");
        std::fs::write(&file, corpus::generate(2 << 20, 1_000, 3)).unwrap();
        let job = run_to_end(
            mpirun()
                .env(PARTS_UNDER_MPIRUN, &file)
                .args(["-n", "3"])
                .arg(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "with_mpi::mpi_program_with_library_parts",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ]),
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_job_success(&job);
        let stdout = text(&job.stdout);
        for expected in [
            "no input: 0 distinct lines",
            "memory: ",
            "file: ",
            "library parts: as sequential",
        ] {
            assert!(stdout.contains(expected), "no {expected:?}\n{}", job.describe());
        }
    }

    #[test]
    fn workers_flag_is_refused_as_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let files = corpus_files(dir.path());
        let _one = one_at_a_time();
        let job = mpi_job(
            2,
            WORDCOUNT,
            &["--engine", "mpi", "--workers", "2", &files[1]],
            None,
        );
        assert_eq!(job.code, Some(2), "{}", job.describe());
        assert!(
            job.stderr
                .contains("error: --workers does not apply to --engine mpi"),
            "{}",
            job.describe()
        );
    }

    #[test]
    fn bad_input_on_rank_0_exits_2_and_stops_the_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let _one = one_at_a_time();
        let job = mpi_job(
            3,
            WORDCOUNT,
            &["--engine", "mpi", missing.to_str().unwrap()],
            None,
        );
        assert_eq!(job.code, Some(2), "{}", job.describe());
        assert!(
            job.stderr.contains("missing.txt: No such file"),
            "{}",
            job.describe()
        );
        assert!(job.elapsed < Duration::from_secs(30), "{}", job.describe());
    }
}
