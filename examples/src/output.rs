//! Writing an output file the way a user of a command-line tool expects.
//!
//! - A regular file, or a path where nothing is yet, is written to a hidden
//!   temporary file beside it and renamed into place: a failed or interrupted
//!   run leaves the old file (or none), never half a file. A new file gets
//!   `0666` less the umask, as `open(2)` would give it; a replaced file keeps
//!   its permissions and, where the process may, its owner.
//! - A symbolic link is followed, even a dangling one: its final target is
//!   written as above and the link stays.
//! - A device or a FIFO (`/dev/null`, `/dev/stdout` to a pipe) is opened and
//!   written in place, as `cp` or `numpy.save` would: never replaced.
//! - A directory or a socket is refused.
//!
//! [`clean_up_on_signals`] makes SIGINT, SIGTERM and SIGHUP remove a temporary
//! file being written before they end the process.

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tempfile::NamedTempFile;

/// Symbolic links followed before giving up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// Signals that end the process by default and that a user sends to stop it.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The temporary file being written, if any: the signal thread removes it.
static WRITING: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A path that cannot be written, or a write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct OutputError {
    /// The path as the user gave it.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

/// An output path, checked and resolved by [`Output::open`], written once by
/// [`Output::write_with`].
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    temp_prefix: &'static str,
    to: To,
}

#[derive(Debug)]
enum To {
    /// A regular file, or none yet: written beside it, renamed over it.
    Replace(PathBuf),
    /// A device, a FIFO, or the open file a `/proc` link names: written in place.
    Through(File),
}

impl Output {
    /// Resolves `path` and checks now, before a long computation, that it can
    /// be written: the folder of a file to replace must take a new file (one
    /// named `temp_prefix` and random letters is made and removed), a device
    /// or FIFO is opened (a FIFO waits here for its reader).
    pub fn open(path: &Path, temp_prefix: &'static str) -> Result<Output, OutputError> {
        let fail = |source| OutputError {
            path: path.to_owned(),
            source,
        };
        let to = match resolve(path).map_err(fail)? {
            Resolved::Replace(target) => {
                drop(Pending::create(parent_dir(&target), temp_prefix, None).map_err(fail)?);
                To::Replace(target)
            }
            Resolved::Through(at) => To::Through(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(at)
                    .map_err(fail)?,
            ),
        };
        Ok(Output {
            path: path.to_owned(),
            temp_prefix,
            to,
        })
    }

    /// Writes the output with `body`, then renames it into place if it
    /// replaces a file. On error, a temporary file is removed.
    pub fn write_with(self, body: impl FnOnce(&mut File) -> io::Result<()>) -> Result<(), OutputError> {
        let mut started = self.start()?;
        body(started.file()).map_err(|source| started.error(source))?;
        started.finish()
    }

    /// Starts writing: the file to write ([`Started::file`]), a temporary
    /// one beside the target if it replaces a file, which a program may also
    /// map by its path ([`Started::path`]); [`Started::finish`] puts it in
    /// place. A `Started` dropped unfinished removes its temporary file.
    pub fn start(self) -> Result<Started, OutputError> {
        let to = match self.to {
            To::Through(file) => Ok(Writing::Through(file)),
            To::Replace(target) => {
                // Read now, not at open: the file may have changed since.
                let existing = fs::metadata(&target).ok().filter(Metadata::is_file);
                Pending::create(parent_dir(&target), self.temp_prefix, existing.as_ref())
                    .map(|pending| Writing::Replace(pending, target))
            }
        };
        match to {
            Ok(to) => Ok(Started { path: self.path, to }),
            Err(source) => Err(OutputError {
                path: self.path,
                source,
            }),
        }
    }
}

/// An output being written ([`Output::start`]).
#[derive(Debug)]
pub struct Started {
    path: PathBuf,
    to: Writing,
}

#[derive(Debug)]
enum Writing {
    Through(File),
    /// The temporary file, and the file it replaces when finished.
    Replace(Pending, PathBuf),
}

impl Started {
    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        match &mut self.to {
            Writing::Through(file) => file,
            Writing::Replace(pending, _) => pending.file(),
        }
    }

    /// The path of the temporary file being written, which a program may
    /// map to write it in place; none for a device or FIFO written through.
    pub fn path(&self) -> Option<&Path> {
        match &self.to {
            Writing::Through(_) => None,
            Writing::Replace(pending, _) => pending.0.as_ref().map(NamedTempFile::path),
        }
    }

    /// The error `source` in writing this output, named as the user named it.
    pub fn error(&self, source: io::Error) -> OutputError {
        OutputError {
            path: self.path.clone(),
            source,
        }
    }

    /// Makes the writes durable and renames a temporary file into place.
    pub fn finish(self) -> Result<(), OutputError> {
        let done = match self.to {
            Writing::Through(_) => Ok(()),
            Writing::Replace(mut pending, target) => {
                pending.file().sync_data().and_then(|()| pending.persist(&target))
            }
        };
        done.map_err(|source| OutputError {
            path: self.path,
            source,
        })
    }
}

/// From now on, SIGINT, SIGTERM and SIGHUP remove the temporary file being
/// written (if any), then end the process as they would have (killed by that
/// signal). A signal this process ignores (`nohup`) stays ignored. Idempotent.
pub fn clean_up_on_signals() -> io::Result<()> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    let signals: Vec<i32> = STOP_SIGNALS.into_iter().filter(|&s| !ignored(s)).collect();
    let mut signals = Signals::new(signals)?;
    std::thread::Builder::new()
        .name("output-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held until the process ends: nothing is renamed into place after.
                let writing = lock();
                if let Some(path) = writing.as_deref() {
                    let _ = fs::remove_file(path);
                }
                // Workers die with this process (their parent-death signal).
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        })?;
    *installed = true;
    Ok(())
}

/// Whether `signal` is ignored (inherited from `nohup` or a shell's `&`).
fn ignored(signal: i32) -> bool {
    // SAFETY: a zeroed `sigaction` is a valid value; a null new action makes
    // `sigaction` only read the current one into `current`.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_IGN
    }
}

fn lock() -> MutexGuard<'static, Option<PathBuf>> {
    WRITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the symbolic links of a path lead.
enum Resolved {
    /// A regular file or none: replace it.
    Replace(PathBuf),
    /// Something else that can be written: open this path.
    Through(PathBuf),
}

/// Follows `path`'s symbolic links one by one (the last component's; the
/// kernel resolves the folders) to what is to be written.
fn resolve(path: &Path) -> io::Result<Resolved> {
    let mut at = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        let meta = match fs::symlink_metadata(&at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return new_file(at),
            Err(e) => return Err(e),
            Ok(meta) => meta,
        };
        if !meta.file_type().is_symlink() {
            return if meta.is_file() {
                Ok(Resolved::Replace(at))
            } else {
                through(at, &meta)
            };
        }
        // A relative link is relative to the folder it is in.
        let next = at.parent().unwrap_or(Path::new("")).join(fs::read_link(&at)?);
        match fs::metadata(&at) {
            // A link of the kernel's (/proc/self/fd/1) names an open file, a
            // pipe, say, and its text no path: write through the link itself.
            Ok(followed) if !same_file(&followed, &next) => return through(at, &followed),
            Ok(_) => {}
            // Dangling: the file is made where the chain ends.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        at = next;
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// A path where nothing is: a new file, if it names one.
fn new_file(at: PathBuf) -> io::Result<Resolved> {
    if at.as_os_str().is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    // "out/" names a folder (that `file_name` ignores the slash would hide).
    if at.file_name().is_none() || at.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(is_a_directory());
    }
    Ok(Resolved::Replace(at))
}

/// A path to write in place, unless it is a directory or a socket.
fn through(at: PathBuf, meta: &Metadata) -> io::Result<Resolved> {
    let kind = meta.file_type();
    if kind.is_dir() {
        Err(is_a_directory())
    } else if kind.is_socket() {
        // open(2) fails on one with "No such device or address": say why.
        Err(io::Error::other("is a socket, which cannot be written as a file"))
    } else {
        Ok(Resolved::Through(at))
    }
}

fn is_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "is a directory")
}

fn same_file(a: &Metadata, path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|b| (a.dev(), a.ino()) == (b.dev(), b.ino()))
}

fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A temporary file that the signal thread removes if a signal comes, and
/// that is removed when dropped unless persisted.
#[derive(Debug)]
struct Pending(Option<NamedTempFile>);

impl Pending {
    /// Makes a temporary file in `dir` with the permissions of `existing`, the
    /// file it will replace, or those of a new file.
    fn create(dir: &Path, prefix: &str, existing: Option<&Metadata>) -> io::Result<Pending> {
        // Registered under the lock, so that a signal can't come in between.
        let mut writing = lock();
        // A new file's mode, less the umask as open(2) applies it (tempfile's
        // default is 0600); a replacement gets the old file's below.
        let mode = if existing.is_none() { 0o666 } else { 0o600 };
        // Opened here, not by tempfile, whose errors name the temporary path
        // rather than the one the user gave.
        let temp = tempfile::Builder::new().prefix(prefix).make_in(dir, |path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
        })?;
        *writing = Some(temp.path().to_owned());
        drop(writing);
        let pending = Pending(Some(temp));
        if let Some(existing) = existing {
            // A user replacing a file expects it to stay as readable (or as
            // private) as it was, and to stay theirs under sudo: keep mode and owner.
            keep_owner_and_mode(pending.0.as_ref().expect("just made").as_file(), existing)?;
        }
        Ok(pending)
    }

    fn file(&mut self) -> &mut File {
        self.0.as_mut().expect("not persisted yet").as_file_mut()
    }

    /// Renames the file to `target`.
    fn persist(mut self, target: &Path) -> io::Result<()> {
        let temp = self.0.take().expect("not persisted yet");
        let mut writing = lock();
        // A failed rename's file is dropped (removed) here, still under the lock.
        let persisted = temp.persist(target).map(drop).map_err(|e| e.error);
        *writing = None;
        persisted
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut writing = lock();
        *writing = None;
        drop(self.0.take());
    }
}

/// Gives `file` the owner (where allowed) and mode of `existing`.
fn keep_owner_and_mode(file: &File, existing: &Metadata) -> io::Result<()> {
    let owner = |meta: &Metadata| (meta.uid(), meta.gid());
    if owner(&file.metadata()?) != owner(existing) {
        // Only root may give a file away; others may still keep its group.
        // Failing that, the file is the caller's, as any file they make.
        if std::os::unix::fs::fchown(file, Some(existing.uid()), Some(existing.gid())).is_err() {
            let _ = std::os::unix::fs::fchown(file, None, Some(existing.gid()));
        }
    }
    // Set-user/group-ID bits only on a file that kept its owner and group
    // (chown cleared them anyway).
    let mode = if owner(&file.metadata()?) == owner(existing) {
        existing.mode() & 0o7777
    } else {
        existing.mode() & 0o777
    };
    file.set_permissions(Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    const CHILD_DIR: &str = "COOP_OUTPUT_TEST_DIR";
    const CHILD_SIGNAL: &str = "COOP_OUTPUT_TEST_SIGNAL";

    /// Run in a child process by the tests below: writes `C.npy` in the
    /// folder they name and sends itself their signal halfway, while the
    /// temporary file exists.
    #[test]
    fn child_signalled_while_writing() {
        let (Some(dir), Some(signal)) = (std::env::var_os(CHILD_DIR), std::env::var_os(CHILD_SIGNAL)) else {
            return;
        };
        let signal: i32 = signal.to_str().unwrap().parse().unwrap();
        clean_up_on_signals().unwrap();
        let output = Output::open(&Path::new(&dir).join("C.npy"), ".matmul-").unwrap();
        output
            .write_with(|file| {
                file.write_all(b"half")?;
                signal_hook::low_level::raise(signal)?;
                // A handled signal ends the process in the signal thread;
                // an ignored one lets the write finish.
                std::thread::sleep(Duration::from_millis(200));
                file.write_all(b" and the rest")
            })
            .unwrap();
        std::process::exit(0);
    }

    /// Runs `child_signalled_while_writing` in `dir` with `signal`, ignoring
    /// `signal` from the start if `ignore`.
    fn run_child(dir: &Path, signal: i32, ignore: bool) -> std::process::ExitStatus {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "output::tests::child_signalled_while_writing"])
            .env(CHILD_DIR, dir)
            .env(CHILD_SIGNAL, signal.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if ignore {
            // SAFETY: signal(2) is async-signal-safe, so fine between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    libc::signal(signal, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        command.status().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_signal_while_writing_removes_the_temporary_file() {
        for signal in STOP_SIGNALS {
            let dir = tempfile::tempdir().unwrap();
            let status = run_child(dir.path(), signal, false);
            assert_eq!(status.signal(), Some(signal), "{status:?}");
            assert_eq!(entries(dir.path()), Vec::<String>::new(), "signal {signal}");
        }
    }

    #[test]
    fn an_ignored_signal_stays_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let status = run_child(dir.path(), SIGHUP, true);
        assert!(status.success(), "{status:?}");
        assert_eq!(entries(dir.path()), ["C.npy"]);
        assert_eq!(fs::read(dir.path().join("C.npy")).unwrap(), b"half and the rest");
    }
}
