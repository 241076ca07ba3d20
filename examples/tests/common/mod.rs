//! Running the example binaries as real processes, shared by the integration
//! tests: what a run left behind ([`Outcome`]), starting and waiting with a
//! timeout (a hung binary fails its test instead of hanging the suite), the
//! assertions on output that every binary must pass, and plain word counts
//! to check `wordcount` against.
//!
//! Each test file compiles its own copy (`mod common;`) and uses part of it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`run`], [`run_in`] and [`run_command`] let a binary run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a `Vec<OsString>` from strings and paths.
macro_rules! argv {
    ($($arg:expr),* $(,)?) => {
        Vec::<std::ffi::OsString>::from([$(std::ffi::OsString::from($arg)),*])
    };
}

// ---------------------------------------------------------------------------
// What a run left behind
// ---------------------------------------------------------------------------

/// What a finished process left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The program's file name and its arguments, for messages.
    pub command: String,
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// From the wait's start (just after the spawn for [`run_within`]) to the exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// The command and what it printed, for assertion messages.
    pub fn describe(&self) -> String {
        // 2,000 characters take at most 8,000 bytes.
        let head = &self.stdout[..self.stdout.len().min(8000)];
        let stdout = shorten(&String::from_utf8_lossy(head), 2000);
        let stderr = shorten(&self.stderr, 8000);
        format!(
            "command: {}\nexit code: {:?}, signal: {:?}, after {:.2?}\nstdout ({} bytes):\n{stdout}\n\
             stderr ({} bytes):\n{stderr}",
            self.command,
            self.code,
            self.signal,
            self.elapsed,
            self.stdout.len(),
            self.stderr.len()
        )
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("stdout is not UTF-8\n{}", self.describe()))
    }

    /// Exit code 0 and no panic text on stderr.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.describe());
        assert_no_panic_text(self);
        self
    }
}

/// The first `max` characters of `text`, marked where cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}[... cut]", &text[..cut]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Running a binary
// ---------------------------------------------------------------------------

/// A command for `bin` as the tests run it: no `RUST_LOG`, backtraces on (a
/// panic would show one: the tests look for it), all three streams piped.
pub fn command(bin: &str, args: &[OsString]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `cmd`'s program (its file name) and arguments, for messages.
pub fn command_line(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    let line = std::iter::once(name)
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    shorten(&line, 1000)
}

/// Reads a child's pipe to the end on a thread of its own, so that neither
/// pipe fills while the test waits on the other.
pub fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.read_to_end(&mut buf).unwrap();
        buf
    })
}

/// Starts `cmd`; a failure to start fails the test.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", command_line(cmd)))
}

/// Waits for `child`, started from `cmd`, collecting what it writes on the
/// pipes it has; kills it and fails the test after `timeout`.
pub fn finish(mut child: Child, cmd: &Command, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let command = command_line(cmd);
    let out_reader = child.stdout.take().map(read_all);
    let err_reader = child.stderr.take().map(read_all);
    let deadline = started + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command}: still running after {timeout:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let stdout = out_reader.map_or_else(Vec::new, |r| r.join().unwrap());
    let stderr = err_reader.map_or_else(Vec::new, |r| r.join().unwrap());
    Outcome {
        command,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    }
}

/// Runs `cmd`, feeding `stdin` to it (if it reads a pipe, closed after
/// `stdin`), killing it after `timeout`.
pub fn run_within(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Outcome {
    let mut child = spawn(cmd);
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_vec();
        std::thread::spawn(move || {
            // The child may exit without reading: a broken pipe is fine.
            let _ = pipe.write_all(&input);
        })
    });
    let outcome = finish(child, cmd, timeout);
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    outcome
}

/// [`run_within`] [`TIMEOUT`].
pub fn run_command(cmd: &mut Command, stdin: &[u8]) -> Outcome {
    run_within(cmd, stdin, TIMEOUT)
}

/// Runs `bin` with `args` in `dir` (else here), feeding `stdin`, with [`TIMEOUT`].
pub fn run_in(bin: &str, args: &[OsString], stdin: &[u8], dir: Option<&Path>) -> Outcome {
    let mut cmd = command(bin, args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    run_command(&mut cmd, stdin)
}

/// Runs `bin` with `args` and empty standard input, with [`TIMEOUT`].
pub fn run(bin: &str, args: &[OsString]) -> Outcome {
    run_in(bin, args, b"", None)
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

pub fn assert_no_panic_text(outcome: &Outcome) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace", "internal error"] {
        assert!(
            !outcome.stderr.contains(bad),
            "stderr mentions {bad:?}\n{}",
            outcome.describe()
        );
    }
}

/// Exit code 2, nothing on stdout, exactly one line `error: ...` on stderr.
pub fn assert_bad_input(outcome: &Outcome, case: &str) {
    let context = format!("case `{case}`\n{}", outcome.describe());
    assert_eq!(
        outcome.code,
        Some(2),
        "bad input must exit with code 2\n{context}"
    );
    assert!(
        outcome.stdout.is_empty(),
        "bad input must print nothing on stdout\n{context}"
    );
    assert!(
        outcome.stderr.ends_with('\n'),
        "stderr must be one complete line\n{context}"
    );
    assert_eq!(
        outcome.stderr.matches('\n').count(),
        1,
        "stderr must be exactly one line\n{context}"
    );
    assert!(
        outcome.stderr.starts_with("error: "),
        "stderr must start with `error: `\n{context}"
    );
    assert!(
        outcome.stderr.trim_end().len() > "error: ".len(),
        "the error message is empty\n{context}"
    );
    assert_no_panic_text(outcome);
}

/// [`assert_bad_input`], and the message says `says`.
pub fn assert_bad_input_says(outcome: &Outcome, case: &str, says: &str) {
    assert_bad_input(outcome, case);
    assert!(
        outcome.stderr.contains(says),
        "case `{case}`: the message should say {says:?}\n{}",
        outcome.describe()
    );
}

/// Shows a tsv mismatch by its first differing line rather than as two huge
/// byte strings.
pub fn assert_tsv_eq(actual: &Outcome, expected: &[u8], context: &str) {
    if actual.stdout != expected {
        let got: Vec<_> = actual.stdout.split(|&b| b == b'\n').collect();
        let want: Vec<_> = expected.split(|&b| b == b'\n').collect();
        let first = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{context}: tsv output differs from the reference at line {}: got {:?}, expected {:?} \
             ({} vs {} lines)\n{}",
            first + 1,
            got.get(first).map(|l| String::from_utf8_lossy(l)),
            want.get(first).map(|l| String::from_utf8_lossy(l)),
            got.len(),
            want.len(),
            actual.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Word-count references
// ---------------------------------------------------------------------------

pub type Counts = BTreeMap<Vec<u8>, u64>;

/// Adds the words of `text` between the six ASCII whitespace bytes, as
/// `--split whitespace` counts them.
pub fn add_counts(counts: &mut Counts, text: &[u8]) {
    for word in text.split(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')) {
        if !word.is_empty() {
            *counts.entry(word.to_vec()).or_insert(0) += 1;
        }
    }
}

/// Count descending, then word bytes ascending.
pub fn ranked(counts: &Counts) -> Vec<(&[u8], u64)> {
    let mut all: Vec<(&[u8], u64)> = counts.iter().map(|(w, &n)| (w.as_slice(), n)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all
}

/// The `--format tsv` output expected for `rows`.
pub fn tsv(rows: &[(&[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (word, n) in rows {
        out.extend_from_slice(format!("{n}\t").as_bytes());
        out.extend_from_slice(word);
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Makes a FIFO (mode 0600) at `path`.
pub fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(
        made,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}
