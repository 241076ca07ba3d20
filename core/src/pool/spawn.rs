//! Starting workers: re-executing this program with a rendezvous name, and a
//! handshake that can never hang (the watchdog of `../shared/notes/ipc-channel.md`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use coop_worker::ipc_channel::IpcError;
use coop_worker::ipc_channel::ipc::{IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender};
use coop_worker::protocol::{ENV_PARENT, ENV_SERVER, ENV_TOKEN, FromWorker, Hello, ToWorker};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::error::{Error, HandshakeFailure, Result, WorkerExit};

/// A started worker whose handshake succeeded.
pub(crate) struct Worker {
    pub(crate) pid: u32,
    pub(crate) child: Child,
    pub(crate) tx: IpcSender<ToWorker>,
    /// Carries the bytes of input chunks (message passing).
    pub(crate) bulk: IpcBytesSender,
}

/// A worker and the channel its messages arrive on.
pub(crate) type Started = (Worker, IpcReceiver<FromWorker>);

/// What a spawn needs to know.
#[derive(Debug, Clone)]
pub(crate) struct SpawnConfig {
    pub(crate) program: PathBuf,
    pub(crate) handshake_timeout: Duration,
    pub(crate) fault: Option<InjectedFault>,
    /// In a test binary ([`crate::test_workers!`]): the libtest name of the
    /// worker entry, the one test workers run.
    pub(crate) test_entry: Option<&'static str>,
    /// Each worker's `RLIMIT_DATA` ([`crate::PoolBuilder::memory_limit`]).
    pub(crate) memory_limit: Option<u64>,
}

/// A fault for the worker started `worker`-th (all workers if `None`), in
/// its text form (`coop_worker::fault::Fault`); tests only.
#[derive(Debug, Clone)]
pub(crate) struct InjectedFault {
    pub(crate) worker: Option<usize>,
    pub(crate) fault: String,
}

type Reply = mpsc::Sender<Vec<Result<Started>>>;

/// A long-lived thread that starts every worker of a pool.
///
/// Linux delivers a worker's parent-death signal when the *thread* that forked
/// it exits, so workers must not be spawned from whatever short-lived thread
/// happens to call into the pool.
pub(crate) struct Spawner {
    requests: Option<mpsc::Sender<(usize, Reply)>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub(crate) fn new(config: SpawnConfig) -> Result<Self> {
        let (requests, incoming) = mpsc::channel::<(usize, Reply)>();
        let thread = thread::Builder::new()
            .name("coop-spawner".into())
            .spawn(move || {
                let mut started = 0;
                for (count, reply) in incoming {
                    let _ = reply.send(spawn_batch(&config, started..started + count));
                    started += count;
                }
            })
            .map_err(|source| Error::Os {
                context: "starting the spawner thread",
                source,
            })?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Starts `count` workers, in parallel; one result each.
    pub(crate) fn spawn(&self, count: usize) -> Vec<Result<Started>> {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send((count, reply)).is_ok());
        match sent.then(|| answer.recv().ok()).flatten() {
            Some(workers) => workers,
            None => (0..count)
                .map(|_| {
                    Err(Error::Os {
                        context: "starting a worker",
                        source: std::io::Error::other("the spawner thread is gone"),
                    })
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts all children first, then completes their handshakes side by side,
/// so that start-up costs about one process start, not one per worker, and a
/// worker that never connects delays the others by nothing.
/// `indices`: the workers' numbers in the order this pool started them.
fn spawn_batch(config: &SpawnConfig, indices: std::ops::Range<usize>) -> Vec<Result<Started>> {
    let started: Vec<_> = indices.map(|index| start_child(config, index)).collect();
    thread::scope(|scope| {
        let handshakes: Vec<_> = started
            .into_iter()
            .map(|started| scope.spawn(move || handshake(started?, config)))
            .collect();
        handshakes
            .into_iter()
            .map(|handshake| {
                handshake.join().unwrap_or_else(|_| {
                    Err(Error::Os {
                        context: "completing a worker's handshake",
                        source: std::io::Error::other("the handshake thread panicked"),
                    })
                })
            })
            .collect()
    })
}

/// A child started and not yet connected.
struct Pending {
    server: IpcOneShotServer<Hello>,
    /// The rendezvous socket's path.
    name: String,
    child: Child,
    token: String,
}

/// Unix socket paths longer than this are silently truncated by the kernel.
const MAX_SOCKET_PATH: usize = 107;

/// Makes the rendezvous socket and its directory private and checks that
/// they are, and that the socket's path is short enough to work.
///
/// ipc-channel creates both with the umask's modes: 0755 and 0755 under the
/// usual umask 022, 0775 and 0775 under umask 002 (Debian and Ubuntu give
/// each user a group of their own), where the socket is writable by the
/// group. So both are set (0700, 0600) rather than only checked: what they
/// were made with depends on the caller's umask, what they end with does
/// not. A process that reached the socket before this (possible only under
/// a umask as open as 002, for the group) connects without the worker's
/// token, and is dropped by the handshake; one that replaced the socket is
/// refused here.
fn secure_rendezvous(name: &str) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let refuse = |why: String| Error::Os {
        context: "securing the rendezvous socket",
        source: std::io::Error::other(why),
    };
    if name.len() > MAX_SOCKET_PATH {
        return Err(refuse(format!(
            "{name} is longer than {MAX_SOCKET_PATH} bytes: set TMPDIR to a shorter directory"
        )));
    }
    let dir = Path::new(name).parent().unwrap_or(Path::new("/"));
    let socket = Path::new(name);
    // `lstat`, never following a link: what is at the path itself counts.
    let stat = |path: &Path| {
        std::fs::symlink_metadata(path).map_err(|err| refuse(format!("{}: {err}", path.display())))
    };
    let private = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|err| refuse(format!("{}: {err}", path.display())))
    };
    // The directory first: once it is private, nobody else can swap the
    // socket; then the socket must still be this process's own.
    private(dir, 0o700)?;
    let (dir_stat, socket_stat) = (stat(dir)?, stat(socket)?);
    if !dir_stat.is_dir() || !socket_stat.file_type().is_socket() || socket_stat.uid() != dir_stat.uid() {
        return Err(refuse(format!("{name} is not the socket this process made")));
    }
    private(socket, 0o600)?;
    for path in [dir, socket] {
        let mode = stat(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "{} is open to other users (mode {:o})",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

/// 128 random bits, hex.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| Error::Os {
        context: "drawing a worker token",
        source: std::io::Error::other(err.to_string()),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn start_child(config: &SpawnConfig, index: usize) -> Result<Pending> {
    let (server, name) = IpcOneShotServer::<Hello>::new().map_err(|source| Error::Os {
        context: "creating a rendezvous socket",
        source,
    })?;
    secure_rendezvous(&name)?;
    let token = new_token()?;
    let mut command = Command::new(&config.program);
    if let Some(name) = std::env::args_os().next() {
        // Shown by `ps` instead of "/proc/self/exe".
        std::os::unix::process::CommandExt::arg0(&mut command, name);
    }
    // A fault variable in the coordinator's own environment is never passed
    // on: workers misbehave only when a test asked this pool for it.
    command.env_remove(coop_worker::fault::ENV_FAULT);
    if let Some(injected) = &config.fault
        && injected.worker.is_none_or(|worker| worker == index)
    {
        command.env(coop_worker::fault::ENV_FAULT, &injected.fault);
    }
    if let Some(entry) = config.test_entry {
        // libtest is this program's main: run only the worker entry. Its
        // banner goes to stdout, so stdout goes nowhere; stderr (panics,
        // errors) stays.
        command
            .args(crate::testing::worker_args(entry))
            .stdout(Stdio::null());
    }
    if let Some(limit) = config.memory_limit {
        use nix::sys::resource::{Resource, setrlimit};
        // SAFETY: runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: setrlimit is a plain system
        // call, and the closure allocates nothing and takes no lock.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                setrlimit(Resource::RLIMIT_DATA, limit, limit).map_err(std::io::Error::from)
            });
        }
    }
    let child = command
        .env(ENV_SERVER, &name)
        .env(ENV_TOKEN, &token)
        .env(ENV_PARENT, std::process::id().to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: config.program.clone(),
            source,
        })?;
    tracing::debug!(pid = child.id(), "worker process started");
    Ok(Pending {
        server,
        name,
        child,
        token,
    })
}

/// Why the watchdog broke a handshake.
enum Verdict {
    Exited,
    TimedOut,
}

fn handshake(pending: Pending, config: &SpawnConfig) -> Result<Started> {
    let timeout = config.handshake_timeout;
    let Pending {
        server,
        name,
        mut child,
        token,
    } = pending;
    let pid = child.id();
    let finished = Arc::new(AtomicBool::new(false));
    // `accept` has no timeout and blocks forever if the child dies before it
    // connects. The watchdog unblocks it by connecting itself and hanging up.
    let watchdog = {
        let finished = Arc::clone(&finished);
        thread::spawn(move || watch(pid, &name, timeout, &finished))
    };
    let accepted = server.accept();
    finished.store(true, Ordering::Release);
    let verdict = watchdog.join().unwrap_or(None);

    let failure = |child: &mut Child, cause: HandshakeFailure| {
        let _ = child.kill();
        let _ = child.wait();
        Error::Handshake { pid, cause }
    };
    match accepted {
        Ok((
            _,
            Hello {
                pid: hello_pid,
                token: hello_token,
                to_worker,
                bulk,
                from_worker,
            },
        )) if hello_pid == pid && hello_token == token => Ok((
            Worker {
                pid,
                child,
                tx: to_worker,
                bulk,
            },
            from_worker,
        )),
        Ok((_, Hello { pid: hello_pid, .. })) => {
            // Someone else reached the socket first, or the child lied: drop it.
            tracing::warn!(
                pid,
                hello_pid,
                "a process connected without the worker's token; dropped"
            );
            Err(failure(
                &mut child,
                HandshakeFailure::WrongToken { pid: hello_pid },
            ))
        }
        Err(err) => {
            let cause = match verdict {
                Some(Verdict::TimedOut) => HandshakeFailure::TimedOut { timeout },
                _ if matches!(err, IpcError::SerializationError(_)) => {
                    HandshakeFailure::UnreadableHello { source: err.into() }
                }
                // Its end of the socket closes a moment before it can be reaped.
                _ => match wait_briefly(&mut child, Duration::from_millis(200)) {
                    Some(status) => early_exit(status, config.test_entry),
                    None => HandshakeFailure::HungUp { source: err.into() },
                },
            };
            Err(failure(&mut child, cause))
        }
    }
}

/// Why a worker that ended before its handshake did, as far as the
/// coordinator can tell: most often, code in `main` before `coop::init`,
/// which workers run too.
fn early_exit(status: std::process::ExitStatus, test_entry: Option<&str>) -> HandshakeFailure {
    let hint = match (status.code(), test_entry) {
        // Killed by a signal: the signal says it.
        (None, _) => None,
        // A program that ran to a clean end never became a worker.
        (Some(0), None) => Some(" (does main call coop::init first?)".to_string()),
        (Some(0), Some(entry)) => Some(format!(
            ": it ran no test named {entry}, coop's worker entry (is it a test binary with coop::test_workers!?)"
        )),
        (Some(_), None) => Some(
            ": workers are this program re-executed without arguments; does main do anything (parse arguments?) before coop::init?"
                .to_string(),
        ),
        (Some(_), Some(entry)) => Some(format!(
            ": workers are this test binary re-executed to run only {entry}, coop's worker entry (coop::test_workers!)"
        )),
    };
    HandshakeFailure::Exited {
        exit: WorkerExit::of(status),
        hint,
    }
}

/// The child's exit status if it exits within `grace` (not reaped).
fn wait_briefly(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            _ => return None,
        }
    }
}

/// Connects to the rendezvous socket and hangs up at once, which ends a
/// pending `accept` (`IpcSender::connect` would leak the socket if the
/// server is already gone: ipc-channel 0.23 does not close it on failure).
fn knock(name: &str) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let Ok(socket) = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return;
    };
    if let Ok(address) = UnixAddr::new(name) {
        let _ = connect(socket.as_raw_fd(), &address);
    }
    // `socket` is an OwnedFd: closed here whatever happened.
}

fn watch(pid: u32, name: &str, timeout: Duration, finished: &AtomicBool) -> Option<Verdict> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    while !finished.load(Ordering::Acquire) {
        let verdict = if has_exited(pid) {
            Some(Verdict::Exited)
        } else if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Some(Verdict::TimedOut)
        } else {
            None
        };
        if let Some(verdict) = verdict {
            // Only the first connection counts; if the child got there first,
            // this one is dropped and harmless.
            knock(name);
            return Some(verdict);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    None
}

/// Whether `pid` has exited, without reaping it (the `Child` reaps it later).
fn has_exited(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(
        waitid(Id::Pid(Pid::from_raw(pid as i32)), flags),
        Ok(WaitStatus::StillAlive)
    )
}

/// The program workers are started from: this very executable.
pub(crate) fn current_program() -> Result<PathBuf> {
    // /proc/self/exe still works if the file was replaced or deleted since start.
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().map_err(|source| Error::Os {
        context: "finding the current executable",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn rendezvous_directory_is_made_private() {
        let (_server, name) = IpcOneShotServer::<Hello>::new().unwrap();
        let dir = Path::new(&name).parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_rendezvous(&name).unwrap();
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        assert!(name.len() <= MAX_SOCKET_PATH);
    }

    /// As ipc-channel makes them under umask 002 (or any other): the modes
    /// they end with do not depend on it.
    #[test]
    fn a_socket_and_directory_made_open_are_made_private() {
        let (_server, name) = IpcOneShotServer::<Hello>::new().unwrap();
        let dir = Path::new(&name).parent().unwrap();
        for path in [dir, Path::new(&name)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o775)).unwrap();
        }
        secure_rendezvous(&name).unwrap();
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        assert_eq!(mode(Path::new(&name)), 0o600, "{name}");
    }

    #[test]
    fn a_socket_replaced_by_something_else_is_refused() {
        let (_server, name) = IpcOneShotServer::<Hello>::new().unwrap();
        std::fs::remove_file(&name).unwrap();
        std::os::unix::fs::symlink("/dev/null", &name).unwrap();
        let err = secure_rendezvous(&name).unwrap_err().to_string();
        assert!(err.contains("is not the socket this process made"), "{err}");
    }

    #[test]
    fn an_early_exit_says_what_workers_run() {
        use std::os::unix::process::ExitStatusExt;
        let exited = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        let entry = Some("tests::__coop_worker_entry");
        let early_exit = |status, entry| early_exit(status, entry).to_string();
        assert_eq!(
            early_exit(exited(2), None),
            "exited with status 2 before completing its handshake: workers are this program \
             re-executed without arguments; does main do anything (parse arguments?) before coop::init?"
        );
        assert!(early_exit(exited(0), None).ends_with("(does main call coop::init first?)"));
        assert!(early_exit(exited(2), entry).ends_with(
            "re-executed to run only tests::__coop_worker_entry, coop's worker entry (coop::test_workers!)"
        ));
        assert!(early_exit(exited(0), entry).contains("it ran no test named tests::__coop_worker_entry"));
        // A signal speaks for itself.
        assert_eq!(
            early_exit(std::process::ExitStatus::from_raw(9), None),
            "was killed by signal 9 (SIGKILL) before completing its handshake"
        );
    }

    #[test]
    fn a_socket_path_too_long_for_the_kernel_is_refused() {
        let long = format!("/tmp/{}/socket", "d".repeat(MAX_SOCKET_PATH));
        let err = secure_rendezvous(&long).unwrap_err().to_string();
        assert!(err.contains("set TMPDIR to a shorter directory"), "{err}");
    }
}
