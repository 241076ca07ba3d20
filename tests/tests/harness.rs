//! Jobs tested on real worker processes from ordinary `#[test]` functions,
//! with `coop::test_workers!`: exact results, and workers that run coop's
//! worker entry and nothing else of the test binary.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coop::Error;
use coop::prelude::*;
use coop_tests::{Squares, Sum};
use serde::{Deserialize, Serialize};

// In a module, not at the root: the worker entry's libtest name is then
// `workers::__coop_worker_entry`, which workers must be started with.
mod workers {
    coop::test_workers!(
        coop::register::<coop_tests::Sum>(),
        coop::register::<coop_tests::Squares>(),
        coop::register::<super::Pids>(),
    );
}

/// One task per input element; the partial is the set of pids that ran them.
#[derive(Serialize, Deserialize)]
struct Pids;

impl Job for Pids {
    const NAME: &'static str = "pids";
    type Task = usize;
    type Partial = BTreeSet<u32>;

    fn split(&self, input: &Input, _: usize) -> Result<Vec<usize>, TaskError> {
        Ok((0..input.slice::<u64>(0).len()).collect())
    }

    fn map(&self, _: &usize, _: &Input, pids: &mut BTreeSet<u32>) -> Result<(), TaskError> {
        pids.insert(std::process::id());
        Ok(())
    }

    fn merge(&self, into: &mut BTreeSet<u32>, other: BTreeSet<u32>) {
        into.extend(other);
    }
}

fn input_of(numbers: &[u64]) -> Input {
    let mut input = Input::new();
    input.push_slice(numbers);
    input
}

#[test]
fn sum_on_two_workers_is_exact() -> coop::Result<()> {
    let pool = Pool::builder().workers(2).build()?;
    let numbers: Vec<u64> = (1..=100_000).collect();
    assert_eq!(pool.run(&Sum, &input_of(&numbers))?, 5_000_050_000);
    Ok(())
}

#[test]
fn output_tiles_are_written_by_workers() -> coop::Result<()> {
    let pool = Pool::builder().workers(2).build()?;
    let numbers: Vec<u64> = (0..10_007).collect();
    let mut out = SharedOutput::zeroed::<u64>(numbers.len());
    let written = Run::new(&Squares, &input_of(&numbers))
        .output(&mut out)
        .on(&pool)?;
    assert_eq!(written, numbers.len() as u64);
    let squares: Vec<u64> = numbers.iter().map(|x| x * x).collect();
    assert_eq!(out.as_slice::<u64>(), &squares[..]);
    Ok(())
}

/// Tasks run in the workers, not in the test's process.
#[test]
fn tasks_run_in_the_worker_processes() -> coop::Result<()> {
    let pool = Pool::builder().workers(2).build()?;
    let ran_in = pool.run(&Pids, &input_of(&[0; 64]))?;
    let workers: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    assert!(
        !ran_in.is_empty() && ran_in.is_subset(&workers),
        "{ran_in:?} not in {workers:?}"
    );
    assert!(!ran_in.contains(&std::process::id()));
    Ok(())
}

/// `coop::init` in a test binary whose jobs the macro registered is no error:
/// not with the same list, not twice.
#[test]
fn init_after_the_macro_is_fine() -> coop::Result<()> {
    let jobs = [coop::register::<Sum>(), coop::register::<Squares>()];
    coop::init(&jobs)?;
    coop::init(&jobs)?;
    let pool = Pool::builder().workers(1).build()?;
    assert_eq!(pool.run(&Sum, &input_of(&[1, 2, 3]))?, 6);
    Ok(())
}

/// Workers write nothing to the test's stdout (libtest's banner would go
/// there), and keep its stderr (panics and errors stay visible).
#[test]
fn workers_stdout_is_discarded_and_stderr_kept() -> coop::Result<()> {
    let pool = Pool::builder().workers(2).build()?;
    let fd = |pid: String, fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let our_stderr = fd("self".into(), 2);
    for pid in pool.worker_pids() {
        assert_eq!(fd(pid.to_string(), 1), Path::new("/dev/null"), "worker {pid}");
        assert_eq!(fd(pid.to_string(), 2), our_stderr, "worker {pid}");
    }
    Ok(())
}

/// A worker program that ends before its handshake is named, with what
/// workers of a test binary run.
#[test]
fn a_worker_that_exits_early_names_the_worker_entry() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let wrapper = dir.path().join("exits-2");
    write_script(&wrapper, "#!/bin/sh\nexit 2\n")?;
    let err = build_with(&wrapper).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Handshake { .. }), "{message}");
    assert!(
        message.contains(
            "exited with status 2 before completing its handshake: workers are this test binary \
             re-executed to run only workers::__coop_worker_entry"
        ),
        "{message}"
    );
    Ok(())
}

fn write_script(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// A one-worker pool of `program`, without retries. Another test thread
/// forking while the script was being written may hold it open for a moment
/// ("text file busy"): tried again then.
fn build_with(program: &Path) -> coop::Result<Pool> {
    let build = || Pool::builder().workers(1).retries(0).program(program).build();
    let mut built = build();
    for _ in 0..20 {
        if !matches!(built, Err(Error::Spawn { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        built = build();
    }
    built
}

// --- Child copies of this test binary -----------------------------------
//
// Some checks need a process of their own: this binary run again, with a
// role (`ROLE`, "name:pid of the test that started it") that makes one test
// act. Workers inherit the variable but not the parent, so a role never
// acts in a worker.

const ROLE: &str = "COOP_TEST_ROLE";

/// Where `child_role_marks_its_process` leaves a file named by its pid.
const MARKERS: &str = "COOP_TEST_MARKERS";

fn has_role(name: &str) -> bool {
    std::env::var(ROLE).ok() == Some(format!("{name}:{}", std::os::unix::process::parent_id()))
}

/// Runs `command` with a deadline; returns its pid and output.
fn run_child(mut command: Command) -> std::io::Result<(u32, Output)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    // Generous: a loaded 2-core machine; a hang would be a bug.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    Ok((pid, output))
}

fn role_command(program: &str, role: &str) -> Command {
    let mut command = Command::new(program);
    command.env(ROLE, format!("{role}:{}", std::process::id()));
    command
}

fn this_binary() -> String {
    std::env::current_exe()
        .expect("the test binary")
        .to_str()
        .expect("a UTF-8 path")
        .to_string()
}

/// The regression of running a pool from `#[test]` functions: workers used
/// to run the test binary's whole suite (one libtest banner each on the
/// test's stdout, and other tests' side effects in workers). A child runs
/// a test with a side effect and a test with a pool; only the child itself
/// may show the side effect, and its stdout holds its own banner alone.
#[test]
fn only_the_worker_entry_runs_in_workers() -> std::io::Result<()> {
    let markers = tempfile::tempdir()?;
    let mut command = role_command(&this_binary(), "pool");
    command.env(MARKERS, markers.path()).args([
        "child_role_marks_its_process",
        "child_role_runs_a_pool",
        "--exact",
    ]);
    let (child, output) = run_child(command)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(output.status.success(), "{context}");
    assert!(stdout.contains("2 passed"), "{context}");
    let banners = stdout.lines().filter(|line| line.starts_with("running ")).count();
    assert_eq!(banners, 1, "libtest banners from workers: {context}");

    let workers = std::fs::read_to_string(markers.path().join("workers"))?;
    let mut marked = Vec::new();
    for entry in std::fs::read_dir(markers.path())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "workers" {
            marked.push(name);
        }
    }
    assert_eq!(
        marked,
        [child.to_string()],
        "processes that ran the side effect (the child's workers: {workers}): {context}"
    );
    Ok(())
}

/// A side effect that must never happen in a worker: a file named by this
/// process's pid. Does nothing outside `only_the_worker_entry_runs_in_workers`.
#[test]
fn child_role_marks_its_process() -> std::io::Result<()> {
    if let Some(dir) = std::env::var_os(MARKERS) {
        std::fs::write(Path::new(&dir).join(std::process::id().to_string()), "")?;
    }
    Ok(())
}

/// The pool in the child of `only_the_worker_entry_runs_in_workers`.
#[test]
fn child_role_runs_a_pool() -> Result<(), Box<dyn std::error::Error>> {
    if !has_role("pool") {
        return Ok(());
    }
    let pool = Pool::builder().workers(2).build()?;
    let numbers: Vec<u64> = (1..=1000).collect();
    assert_eq!(pool.run(&Sum, &input_of(&numbers))?, 500_500);
    let dir = std::env::var_os(MARKERS).ok_or("no marker directory")?;
    std::fs::write(
        Path::new(&dir).join("workers"),
        format!("{:?}", pool.worker_pids()),
    )?;
    Ok(())
}

/// Under umask 002 (a group of one's own, as on Debian and Ubuntu), the
/// rendezvous socket is created group-writable; pools used to refuse to
/// start ("is open to other users (mode 775)"). The umask is the process's:
/// a child of its own runs the pool.
#[test]
fn a_pool_starts_under_umask_002() -> std::io::Result<()> {
    let done = tempfile::tempdir()?;
    let mut command = role_command("sh", "umask");
    command.env(MARKERS, done.path()).args([
        "-c",
        "umask 002 && exec \"$0\" \"$@\"",
        &this_binary(),
        "child_role_pool_under_umask_002",
        "--exact",
    ]);
    let (_, output) = run_child(command)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(output.status.success(), "{context}");
    assert!(stdout.contains("1 passed"), "{context}");
    let result = std::fs::read_to_string(done.path().join("umask"));
    assert_eq!(
        result.ok().as_deref(),
        Some("500500"),
        "the child ran no pool: {context}"
    );
    Ok(())
}

/// The pool in the child of `a_pool_starts_under_umask_002`.
#[test]
fn child_role_pool_under_umask_002() -> Result<(), Box<dyn std::error::Error>> {
    if !has_role("umask") {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    assert!(
        status.lines().any(|line| line == "Umask:\t0002"),
        "not under umask 002: {status}"
    );
    let pool = Pool::builder().workers(2).build()?;
    let numbers: Vec<u64> = (1..=1000).collect();
    let sum = pool.run(&Sum, &input_of(&numbers))?;
    let dir = std::env::var_os(MARKERS).ok_or("no marker directory")?;
    std::fs::write(Path::new(&dir).join("umask"), sum.to_string())?;
    Ok(())
}
