//! Failures never hang and never lose results: panics, errors, dead workers,
//! timeouts, and a coordinator that dies.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coop::Error;
use coop::prelude::*;
use coop_tests::{Fault, Misbehave, Sleepy, Sum};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Set in a child copy of this test binary that plays a coordinator to be killed.
const COORDINATOR_ROLE: &str = "COOP_TEST_COORDINATOR";

fn main() {
    coop_tests::init();
    if std::env::var_os(COORDINATOR_ROLE).is_some() {
        play_coordinator();
    }
    if std::env::var_os(INHERITED_FAULT_ROLE).is_some() {
        std::process::exit(match run_under_an_inherited_fault() {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("{err:?}");
                1
            }
        });
    }
    let tests = vec![
        Trial::test(
            "panic_is_reported_and_pool_survives",
            panic_is_reported_and_pool_survives,
        ),
        Trial::test(
            "error_is_reported_with_task_and_pid",
            error_is_reported_with_task_and_pid,
        ),
        Trial::test("worker_killing_itself_once_is_retried", || {
            fault_once_is_retried(Fault::Kill)
        }),
        Trial::test("worker_exiting_once_is_retried", || {
            fault_once_is_retried(Fault::Exit)
        }),
        Trial::test("worker_aborting_once_is_retried", || {
            fault_once_is_retried(Fault::Abort)
        }),
        Trial::test(
            "task_that_always_kills_names_the_signal",
            task_that_always_kills_names_the_signal,
        ),
        Trial::test(
            "sigkill_from_outside_mid_job_loses_nothing",
            sigkill_from_outside_mid_job_loses_nothing,
        ),
        Trial::test(
            "worker_killed_between_jobs_is_replaced",
            worker_killed_between_jobs_is_replaced,
        ),
        Trial::test("hung_task_times_out", hung_task_times_out),
        Trial::test(
            "a_fault_variable_in_the_environment_is_not_passed_to_workers",
            a_fault_variable_in_the_environment_is_not_passed_to_workers,
        ),
        Trial::test(
            "worker_without_the_token_is_refused",
            worker_without_the_token_is_refused,
        ),
        Trial::test(
            "an_intruder_is_dropped_and_the_pool_goes_on",
            an_intruder_is_dropped_and_the_pool_goes_on,
        ),
        Trial::test(
            "a_program_that_exits_before_init_is_told_why",
            a_program_that_exits_before_init_is_told_why,
        ),
        Trial::test("coordinator_killed_leaves_no_worker", || {
            coordinator_dies_leaving_no_worker(Signal::SIGKILL, false)
        }),
        Trial::test("ctrl_c_leaves_no_worker", || {
            coordinator_dies_leaving_no_worker(Signal::SIGINT, true)
        }),
        Trial::test("sigterm_leaves_no_worker", || {
            coordinator_dies_leaving_no_worker(Signal::SIGTERM, false)
        }),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit();
}

fn misbehave(fault: Fault, once: Option<std::path::PathBuf>) -> Misbehave {
    Misbehave {
        tasks: 20,
        victim: 7,
        fault,
        once,
    }
}

const SUM_0_TO_19: u64 = 190;

fn panic_is_reported_and_pool_survives() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let err = pool
        .run(&misbehave(Fault::Panic, None), &Input::new())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::TaskPanicked {
                task: coop::TaskIndex(Some(7)),
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("task 7 panics on purpose"), "{message}");
    assert!(
        message.contains("lib.rs"),
        "the message carries the location: {message}"
    );
    let mut input = Input::new();
    input.push_slice(&[5u64, 6]);
    assert_eq!(pool.run(&Sum, &input)?, 11, "the pool runs the next job");
    Ok(())
}

fn error_is_reported_with_task_and_pid() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let pids = pool.worker_pids();
    let err = pool
        .run(&misbehave(Fault::Error, None), &Input::new())
        .unwrap_err();
    let Error::TaskFailed {
        task, pid, message, ..
    } = &err
    else {
        return Err(format!("unexpected error: {err}").into());
    };
    assert_eq!(task.0, Some(7));
    assert!(pids.contains(pid), "pid {pid} is one of the workers {pids:?}");
    assert!(message.contains("fails on purpose"), "{message}");
    // Errors are not retried: an error on the first attempt ends the job.
    let (_dir, path) = marker()?;
    let once = misbehave(Fault::Error, Some(path));
    assert!(matches!(
        pool.run(&once, &Input::new()),
        Err(Error::TaskFailed { .. })
    ));
    assert_eq!(pool.run(&misbehave(Fault::Error, None), &Input::new()).ok(), None);
    Ok(())
}

/// A path that does not exist yet, for a fault that strikes once; the
/// directory is removed when the returned guard drops.
fn marker() -> Result<(tempfile::TempDir, std::path::PathBuf), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("struck");
    Ok((dir, path))
}

fn fault_once_is_retried(fault: Fault) -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let before = pool.worker_pids();
    let (_dir, marker) = marker()?;
    let sum = pool.run(&misbehave(fault, Some(marker.clone())), &Input::new())?;
    assert!(marker.exists(), "the fault was injected");
    assert_eq!(sum, SUM_0_TO_19, "the result is exact despite the lost worker");
    let after = pool.worker_pids();
    assert_eq!(after.len(), 2, "the dead worker was replaced");
    assert_ne!(before, after);
    Ok(())
}

fn task_that_always_kills_names_the_signal() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).retries(2).build()?;
    let err = pool
        .run(&misbehave(Fault::Kill, None), &Input::new())
        .unwrap_err();
    let message = err.to_string();
    match &err {
        Error::TaskLost {
            task: 7, attempts: 3, ..
        } => {}
        other => return Err(format!("unexpected error: {other}").into()),
    }
    assert!(message.contains("SIGKILL"), "{message}");
    let mut input = Input::new();
    input.push_slice(&[1u64; 100]);
    assert_eq!(pool.run(&Sum, &input)?, 100, "the pool still works");
    assert_eq!(pool.worker_pids().len(), 2);
    Ok(())
}

fn sigkill_from_outside_mid_job_loses_nothing() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let victim = pool.worker_pids()[0];
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL)
    });
    let done = pool.run(
        &Sleepy {
            tasks: 40,
            millis: 20,
        },
        &Input::new(),
    )?;
    killer.join().unwrap()?;
    assert_eq!(
        done,
        (0..40).collect::<Vec<_>>(),
        "every task ran, none twice in the result"
    );
    assert!(!pool.worker_pids().contains(&victim));
    Ok(())
}

fn worker_killed_between_jobs_is_replaced() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let victim = pool.worker_pids()[1];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL)?;
    std::thread::sleep(Duration::from_millis(50));
    let mut input = Input::new();
    input.push_slice(&(1..=1000u64).collect::<Vec<_>>());
    assert_eq!(pool.run(&Sum, &input)?, 500_500);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&victim));
    Ok(())
}

fn hung_task_times_out() -> Result<(), Failed> {
    let pool = Pool::builder()
        .workers(2)
        .retries(1)
        .task_timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    let err = pool
        .run(&misbehave(Fault::Hang, None), &Input::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TaskTimedOut {
                task: 7,
                attempts: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    // A task that hangs only once succeeds on retry.
    let (_dir, path) = marker()?;
    let sum = pool.run(&misbehave(Fault::Hang, Some(path)), &Input::new())?;
    assert_eq!(sum, SUM_0_TO_19);
    Ok(())
}

/// In the child: start a pool, print its workers' pids, then work until killed.
fn play_coordinator() -> ! {
    let pool = Pool::builder().workers(2).build().expect("pool");
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("{}", pids.join(" "));
    let _ = pool.run(
        &Sleepy {
            tasks: 10_000,
            millis: 50,
        },
        &Input::new(),
    );
    std::process::exit(0);
}

fn coordinator_dies_leaving_no_worker(signal: Signal, to_group: bool) -> Result<(), Failed> {
    // Become the reaper of orphans, so that workers reparent to this process and
    // their end can be observed with waitpid, whatever init runs here.
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut command = Command::new(std::env::current_exe()?);
    command.env(COORDINATOR_ROLE, "1").stdout(Stdio::piped());
    if to_group {
        // Its own process group, as a shell gives a foreground job: Ctrl-C
        // signals the whole group, coordinator and workers alike.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut coordinator = command.spawn()?;
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().unwrap()).read_line(&mut line)?;
    let workers: Vec<i32> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(workers.len(), 2, "coordinator printed {line:?}");
    std::thread::sleep(Duration::from_millis(200)); // let the job start
    let target = if to_group {
        -(coordinator.id() as i32)
    } else {
        coordinator.id() as i32
    };
    kill(Pid::from_raw(target), signal)?;
    coordinator.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in workers {
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(WaitStatus::StillAlive) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    return Err(format!("worker {pid} outlived its coordinator by 10 s").into());
                }
                // Exited and reaped here, or already reaped by someone else.
                _ => break,
            }
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left behind"
        );
    }
    Ok(())
}

/// A process that connects with the wrong token (here: a real worker whose
/// token a wrapper replaced) is refused and named; nothing hangs.
fn worker_without_the_token_is_refused() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let wrapper = dir.path().join("forge-token");
    let real = std::env::current_exe()?;
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nCOOP_WORKER_TOKEN=forged exec '{}'\n", real.display()),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700))?;
    // Another test thread forking while the script was being written may hold
    // it open for a moment ("text file busy"): try again then.
    let mut err = Pool::builder().workers(1).program(&wrapper).build().unwrap_err();
    for _ in 0..20 {
        if !matches!(err, Error::Spawn { .. }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        err = Pool::builder().workers(1).program(&wrapper).build().unwrap_err();
    }
    let message = err.to_string();
    assert!(matches!(err, Error::Handshake { .. }), "{message}");
    assert!(message.contains("without its token"), "{message}");
    Ok(())
}

/// A worker program whose main ends before `coop::init` (here: exits 2, as
/// an argument parser does without its arguments) is reported with what
/// workers are and what to look for, not only with its exit status.
fn a_program_that_exits_before_init_is_told_why() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let wrapper = dir.path().join("parses-arguments");
    std::fs::write(&wrapper, "#!/bin/sh\nexit 2\n")?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700))?;
    let build = || {
        Pool::builder()
            .workers(1)
            .retries(0)
            .program(&wrapper)
            .build()
            .unwrap_err()
    };
    let mut err = build();
    for _ in 0..20 {
        // "text file busy" while another test thread forks: try again.
        if !matches!(err, Error::Spawn { .. }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        err = build();
    }
    let message = err.to_string();
    assert!(matches!(err, Error::Handshake { .. }), "{message}");
    assert!(
        message.ends_with(
            "failed to start: exited with status 2 before completing its handshake: workers are this \
             program re-executed without arguments; does main do anything (parse arguments?) before coop::init?"
        ),
        "{message}"
    );
    Ok(())
}

/// The first process to connect presents a forged token (as an intruder that
/// reached the socket first would): it is dropped, the worker is started
/// again, and the pool runs its job exactly.
fn an_intruder_is_dropped_and_the_pool_goes_on() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let wrapper = dir.path().join("forge-once");
    let real = std::env::current_exe()?;
    let marker = dir.path().join("forged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif mkdir '{m}' 2>/dev/null; then echo $$ > '{m}/pid'; export COOP_WORKER_TOKEN=forged; fi\nexec '{}'\n",
            real.display(),
            m = marker.display(),
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700))?;
    let mut built = Pool::builder().workers(2).program(&wrapper).build();
    for _ in 0..20 {
        // "text file busy" while another test thread forks: try again.
        if !matches!(built, Err(Error::Spawn { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        built = Pool::builder().workers(2).program(&wrapper).build();
    }
    let pool = built?;
    let forger: u32 = std::fs::read_to_string(marker.join("pid"))?.trim().parse()?;
    assert!(
        !pool.worker_pids().contains(&forger),
        "the process with the forged token (pid {forger}) serves in the pool"
    );
    let numbers: Vec<u64> = (0..10_000).collect();
    let mut input = Input::new();
    input.push_slice(&numbers);
    assert_eq!(pool.run(&coop_tests::Sum, &input)?, 49_995_000);
    Ok(())
}

/// Set in a child copy of this test binary whose environment holds a fault.
const INHERITED_FAULT_ROLE: &str = "COOP_TEST_INHERITED_FAULT";

/// A worker obeys a fault only when its pool was asked for one: a fault
/// variable the coordinator inherited (from a shell, say) is not passed on.
/// The child has the variable in its environment from the start, as a user's
/// program would; its workers would exit in every task if they saw it.
fn a_fault_variable_in_the_environment_is_not_passed_to_workers() -> Result<(), Failed> {
    let output = Command::new(std::env::current_exe()?)
        .env(INHERITED_FAULT_ROLE, "1")
        .env(coop::fault::ENV_FAULT, "task:exit")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    Ok(())
}

fn run_under_an_inherited_fault() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).build()?;
    let mut stats = coop::JobStats::default();
    let job = misbehave(Fault::Error, None);
    let job = Misbehave {
        victim: usize::MAX,
        ..job
    };
    let sum = Run::new(&job, &Input::new()).stats(&mut stats).on(&pool)?;
    if sum != (0..20).sum::<u64>() || stats.retries != 0 {
        return Err(format!(
            "sum {sum}, {} retries: the workers obeyed the fault",
            stats.retries
        )
        .into());
    }
    Ok(())
}
