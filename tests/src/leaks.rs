//! Leak checks for tests that start worker processes: take a [`Snapshot`] of
//! what this process holds, run something, then [`check_no_leaks`] against it.
//!
//! What a snapshot records, all from `/proc` (Linux only):
//!
//! - this process's open file descriptors and what they point to, and among
//!   them the memfds (targets starting with `/memfd:`);
//! - the memfds still mapped into memory (`/proc/self/maps`), whose file
//!   descriptor may be closed: a region nobody unmaps is a leak too;
//! - this process's children: every process whose parent is this one, alive
//!   or zombie (a child nobody reaped is a leak);
//! - this process's threads (`/proc/self/task`), with their names: a thread
//!   left running (a watchdog, a feeder) is a leak too. Lazily started
//!   thread pools (rayon's global pool) count: start them before the snapshot;
//! - the entries of `/dev/shm`;
//! - ipc-channel's rendezvous directories left in the temp dir: on Linux,
//!   `IpcOneShotServer::new` binds its socket at `<temp dir>/.tmpXXXXXX/socket`
//!   (`tempfile::Builder::new().tempdir()`: prefix `.tmp`, six random ASCII
//!   letters or digits), and removes the directory when the server drops;
//! - the resident set size (`VmRSS`), reported, never compared (it is noisy).
//!
//! Children and file descriptors are process-wide: a test binary that checks
//! leaks must run its trials one at a time (`Arguments::test_threads = Some(1)`
//! with libtest-mimic), and should not keep a pool, an `Input` or a
//! `SharedOutput` alive across the check.
//!
//! `/dev/shm` and the temp dir are shared with every other process of the
//! machine: another program creating entries there at the same time shows up
//! as a leak. [`isolate_temp_dir`] gives this process (and its workers) a
//! private temp dir, so that rendezvous directories are this process's own.
//!
//! ```no_run
//! let before = coop_tests::leaks::snapshot();
//! // ... start a pool, run jobs, drop everything ...
//! coop_tests::leaks::check_no_leaks(&before).unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`check_no_leaks`] waits for children to exit and be reaped, and
/// for descriptors to be closed, before it reports what is left.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(3);

/// What this process holds at one moment; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Open file descriptors: number to `readlink` target (e.g. `socket:[123]`,
    /// `/memfd:name (deleted)`, a path). The descriptor used to list them is left out.
    pub fds: BTreeMap<i32, String>,
    /// Memfds mapped into memory, by `(device, inode)` as in `/proc/self/maps`,
    /// to their name; several mappings of one memfd count once.
    pub mapped_memfds: BTreeMap<(String, u64), String>,
    /// Threads of this process by thread id, to their name (`comm`).
    pub threads: BTreeMap<u32, String>,
    /// Children (alive or zombie) by pid, to their state letter and command
    /// name from `/proc/PID/stat`, e.g. `Z (coop-tests)`.
    pub children: BTreeMap<u32, String>,
    /// Names of the entries of `/dev/shm`.
    pub dev_shm: BTreeSet<String>,
    /// The temp dir searched for rendezvous directories (`std::env::temp_dir()`).
    pub temp_dir: PathBuf,
    /// ipc-channel rendezvous directories in `temp_dir`.
    pub rendezvous_dirs: BTreeSet<PathBuf>,
    /// Resident set size of this process, in bytes.
    pub rss_bytes: u64,
}

impl Snapshot {
    /// Number of open file descriptors.
    pub fn fd_count(&self) -> usize {
        self.fds.len()
    }

    /// The open file descriptors that are memfds, with their targets.
    pub fn memfds(&self) -> BTreeMap<i32, &str> {
        self.fds
            .iter()
            .filter(|(_, target)| target.starts_with("/memfd:"))
            .map(|(&fd, target)| (fd, target.as_str()))
            .collect()
    }

    /// Pids of the children, alive or zombie.
    pub fn child_pids(&self) -> Vec<u32> {
        self.children.keys().copied().collect()
    }

    /// Everything that `self` (taken later) holds beyond `before`, one line per
    /// finding; empty when nothing leaked. RSS is not compared.
    pub fn leaks_since(&self, before: &Snapshot) -> Vec<String> {
        let mut found = Vec::new();
        let new_children: Vec<String> = self
            .children
            .iter()
            .filter(|(pid, _)| !before.children.contains_key(pid))
            .map(|(pid, state)| format!("{pid} [{state}]"))
            .collect();
        if !new_children.is_empty() {
            found.push(format!(
                "{} child process(es) left (alive or unreaped): {}",
                new_children.len(),
                new_children.join(", ")
            ));
        }
        if self.fds.len() > before.fds.len() {
            let new: Vec<String> = self
                .fds
                .iter()
                .filter(|(fd, target)| before.fds.get(fd) != Some(target))
                .map(|(fd, target)| format!("{fd} -> {target}"))
                .collect();
            found.push(format!(
                "{} file descriptor(s) open, {} before; new or changed: {}",
                self.fds.len(),
                before.fds.len(),
                new.join(", ")
            ));
        }
        let (memfds, memfds_before) = (self.memfds(), before.memfds());
        if memfds.len() > memfds_before.len() {
            let new: Vec<String> = memfds
                .iter()
                .filter(|(fd, _)| !memfds_before.contains_key(fd))
                .map(|(fd, target)| format!("{fd} -> {target}"))
                .collect();
            found.push(format!(
                "{} memfd descriptor(s) open, {} before; new: {}",
                memfds.len(),
                memfds_before.len(),
                new.join(", ")
            ));
        }
        let new_threads: Vec<String> = self
            .threads
            .iter()
            .filter(|(tid, _)| !before.threads.contains_key(tid))
            .map(|(tid, name)| format!("{tid} ({name})"))
            .collect();
        if !new_threads.is_empty() {
            found.push(format!(
                "{} thread(s) left running ({} threads now, {} before): {}",
                new_threads.len(),
                self.threads.len(),
                before.threads.len(),
                new_threads.join(", ")
            ));
        }
        let new_maps: Vec<String> = self
            .mapped_memfds
            .iter()
            .filter(|(key, _)| !before.mapped_memfds.contains_key(key))
            .map(|((_, inode), name)| format!("{name} (inode {inode})"))
            .collect();
        if !new_maps.is_empty() {
            found.push(format!(
                "{} memfd(s) still mapped: {}",
                new_maps.len(),
                new_maps.join(", ")
            ));
        }
        let new_shm: Vec<&str> = self
            .dev_shm
            .difference(&before.dev_shm)
            .map(String::as_str)
            .collect();
        if !new_shm.is_empty() {
            found.push(format!("new entries in /dev/shm: {}", new_shm.join(", ")));
        }
        let new_dirs: Vec<String> = self
            .rendezvous_dirs
            .difference(&before.rendezvous_dirs)
            .map(|dir| dir.display().to_string())
            .collect();
        if !new_dirs.is_empty() {
            found.push(format!(
                "ipc-channel rendezvous directories left: {}",
                new_dirs.join(", ")
            ));
        }
        found
    }
}

/// Takes a snapshot of this process: descriptors, mapped memfds, children,
/// `/dev/shm`, rendezvous directories and RSS. Panics if `/proc` is unreadable.
pub fn snapshot() -> Snapshot {
    let temp_dir = std::env::temp_dir();
    Snapshot {
        fds: open_fds(),
        mapped_memfds: mapped_memfds(),
        threads: threads(),
        children: children(),
        dev_shm: dir_names(Path::new("/dev/shm")).into_iter().collect(),
        rendezvous_dirs: rendezvous_dirs(&temp_dir),
        temp_dir,
        rss_bytes: rss_bytes(),
    }
}

/// Checks that nothing leaked since `before`: no extra child (alive or
/// zombie), no extra thread, no extra file descriptor, memfd (open or mapped), `/dev/shm` entry
/// or rendezvous directory. Waits up to [`SETTLE_DEADLINE`], polling, for
/// things to settle (children exiting and being reaped) before it fails.
///
/// The error lists what leaked: pids with their `/proc` state, descriptors
/// with their targets, paths; and the RSS before and after, for information.
pub fn check_no_leaks(before: &Snapshot) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let now = snapshot();
        let leaks = now.leaks_since(before);
        if leaks.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut message = format!(
                "leaked after waiting {:?} (pid {}):\n",
                SETTLE_DEADLINE,
                std::process::id()
            );
            for leak in leaks {
                let _ = writeln!(message, "  - {leak}");
            }
            let _ = write!(
                message,
                "  (RSS {:.1} MiB before, {:.1} MiB now)",
                mib(before.rss_bytes),
                mib(now.rss_bytes)
            );
            return Err(message);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives this process a private temp dir (`TMPDIR`), a new directory under
/// the current one, short enough for Unix socket paths, and returns it. Its
/// workers inherit it. Afterwards, rendezvous directories found there belong
/// to this process (and its workers), not to other programs on the machine.
/// Remove it at the end with [`remove_isolated_temp_dir`].
///
/// # Safety
///
/// Sets an environment variable: call it before any other thread is started
/// (first thing in `main`, after `coop_tests::init()`), as for
/// [`std::env::set_var`].
pub unsafe fn isolate_temp_dir() -> std::io::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix("coop-leaks-").tempdir()?.keep();
    // SAFETY: the caller promises that no other thread runs yet.
    unsafe { std::env::set_var("TMPDIR", &dir) };
    Ok(dir)
}

/// Removes a directory made by [`isolate_temp_dir`], with anything left in it.
pub fn remove_isolated_temp_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir)
}

/// Resident set size of this process (`VmRSS`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn dir_names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn open_fds() -> BTreeMap<i32, String> {
    // The listing's own descriptor is open while it runs: it points at this
    // very directory (`/proc/<pid>/fd`), and is closed by the time we return.
    let own_dir = format!("/proc/{}/fd", std::process::id());
    let mut fds = BTreeMap::new();
    for name in dir_names(Path::new("/proc/self/fd")) {
        let Ok(fd) = name.parse::<i32>() else { continue };
        // A descriptor closed since the listing has no link any more: skip it.
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target != own_dir {
            fds.insert(fd, target);
        }
    }
    fds
}

fn mapped_memfds() -> BTreeMap<(String, u64), String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
    let mut found = BTreeMap::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(_), Some(_), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.collect::<Vec<_>>().join(" ");
        if path.starts_with("/memfd:") {
            let inode = inode.parse().unwrap_or(0);
            found.insert((dev.to_string(), inode), path);
        }
    }
    found
}

/// Pid, parent pid, state letter and command name of a process, from
/// `/proc/PID/stat`, whose command name may hold spaces and parentheses.
fn stat(pid: u32) -> Option<(u32, char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, state, comm))
}

fn threads() -> BTreeMap<u32, String> {
    dir_names(Path::new("/proc/self/task"))
        .into_iter()
        .filter_map(|name| name.parse::<u32>().ok())
        .filter_map(|tid| {
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            Some((tid, comm.trim_end().to_string()))
        })
        .collect()
}

fn children() -> BTreeMap<u32, String> {
    let me = std::process::id();
    let mut found = BTreeMap::new();
    for name in dir_names(Path::new("/proc")) {
        let Ok(pid) = name.parse::<u32>() else { continue };
        if let Some((ppid, state, comm)) = stat(pid)
            && ppid == me
        {
            found.insert(pid, format!("{state} ({comm})"));
        }
    }
    found
}

/// Whether `name` is what `tempfile::Builder::new().tempdir()` makes, as
/// ipc-channel 0.23 does on Linux: `.tmp` and six ASCII letters or digits.
fn is_tempfile_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.len() == 10 && name.starts_with(b".tmp") && name[4..].iter().all(u8::is_ascii_alphanumeric)
}

/// Directories of `temp_dir` named as ipc-channel names its rendezvous
/// directories and holding nothing but its `socket` (or nothing yet): other
/// users of `tempfile::tempdir()` make the same names, but put other files in.
fn rendezvous_dirs(temp_dir: &Path) -> BTreeSet<PathBuf> {
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| is_tempfile_name(&entry.file_name()))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .filter(|dir| dir_names(dir).iter().all(|name| name == "socket"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Children, threads and descriptors are process-wide, and the test
    /// harness starts a thread per test: the cases run one after the other,
    /// in one test.
    #[test]
    fn leak_checks() {
        nothing_done_is_no_leak();
        unreaped_child_is_reported_until_reaped();
        running_child_is_reported();
        running_thread_is_reported_with_its_name();
        memfd_is_reported_open_then_mapped();
        open_file_is_reported_with_its_path();
        rendezvous_directories_are_recognised();
        stat_parses_awkward_command_names();
    }

    fn nothing_done_is_no_leak() {
        let before = snapshot();
        assert!(before.fd_count() >= 3, "{:?}", before.fds);
        assert!(before.rss_bytes > 0);
        check_no_leaks(&before).unwrap();
    }

    fn unreaped_child_is_reported_until_reaped() {
        let before = snapshot();
        let mut child = Command::new("sleep")
            .arg("0.2")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Not waited for: it exits after 0.2 s and stays a zombie.
        let err = check_no_leaks(&before).unwrap_err();
        assert!(err.contains(&format!("{pid} [Z (sleep)]")), "{err}");
        child.wait().unwrap();
        check_no_leaks(&before).unwrap();
    }

    fn running_child_is_reported() {
        let before = snapshot();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let now = snapshot();
        let leaks = now.leaks_since(&before).join("\n");
        assert!(leaks.contains(&format!("{} [", child.id())), "{leaks}");
        child.kill().unwrap();
        child.wait().unwrap();
        check_no_leaks(&before).unwrap();
    }

    fn running_thread_is_reported_with_its_name() {
        let before = snapshot();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("leak-check-t".into())
            .spawn(move || {
                // The thread names itself once running: only then is it seen by name.
                ready.send(()).unwrap();
                stopped.recv()
            })
            .unwrap();
        started.recv().unwrap();
        let leaks = snapshot().leaks_since(&before).join("\n");
        assert!(leaks.contains("(leak-check-t)"), "{leaks}");
        drop(stop);
        thread.join().unwrap().unwrap_err();
        check_no_leaks(&before).unwrap();
    }

    fn memfd_is_reported_open_then_mapped() {
        let before = snapshot();
        let fd = nix::sys::memfd::memfd_create(c"leak-check-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
        let file = std::fs::File::from(fd);
        file.set_len(4096).unwrap();
        let leaks = snapshot().leaks_since(&before).join("\n");
        assert!(leaks.contains("memfd descriptor"), "{leaks}");
        assert!(leaks.contains("/memfd:leak-check-test"), "{leaks}");
        assert!(leaks.contains("file descriptor(s) open"), "{leaks}");

        use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
        let len = std::num::NonZeroUsize::new(4096).unwrap();
        // SAFETY: a fresh private memfd of 4096 bytes, mapped read-only, never
        // dereferenced, unmapped below.
        let map = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, &file, 0) }.unwrap();
        drop(file);
        let leaks = snapshot().leaks_since(&before).join("\n");
        assert!(!leaks.contains("memfd descriptor"), "{leaks}");
        assert!(
            leaks.contains("memfd(s) still mapped: /memfd:leak-check-test"),
            "{leaks}"
        );
        // SAFETY: the mapping made above, of that length, used by nothing else.
        unsafe { munmap(map, len.get()) }.unwrap();
        check_no_leaks(&before).unwrap();
    }

    fn open_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept-open");
        let before = snapshot();
        let file = std::fs::File::create(&path).unwrap();
        let leaks = snapshot().leaks_since(&before).join("\n");
        assert!(leaks.contains(&path.display().to_string()), "{leaks}");
        drop(file);
        check_no_leaks(&before).unwrap();
    }

    fn rendezvous_directories_are_recognised() {
        let parent = tempfile::tempdir().unwrap();
        let dir = tempfile::Builder::new().tempdir_in(parent.path()).unwrap();
        std::fs::write(dir.path().join("socket"), b"").unwrap();
        let other = tempfile::Builder::new().tempdir_in(parent.path()).unwrap();
        std::fs::write(other.path().join("struck"), b"").unwrap();
        std::fs::create_dir(parent.path().join(".tmpnot-it")).unwrap();
        let found = rendezvous_dirs(parent.path());
        assert_eq!(found, BTreeSet::from([dir.path().to_path_buf()]));
    }

    fn stat_parses_awkward_command_names() {
        let (ppid, state, comm) = stat(std::process::id()).unwrap();
        assert_eq!(ppid, nix::unistd::getppid().as_raw() as u32);
        assert!("RS".contains(state), "{state}");
        assert!(!comm.is_empty());
    }
}
