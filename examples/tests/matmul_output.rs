//! Where and how `matmul -o PATH` writes its product, run as a real process:
//! a regular file is replaced atomically with the permissions a user expects,
//! a symbolic link is followed, a device or FIFO is written through (never
//! replaced), a socket or directory is refused, a signal leaves no temporary
//! file, and `--help` says all this and shows the defaults.
//!
//! Device cases use nodes made with mknod in a scratch folder, so that a
//! `matmul` that replaces its output replaces nothing of the system's.

// Each test crate compiles its own copy of the shared helpers and uses only
// some of them: the rest would warn as unused.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coop_examples::npy::{self, Dtype};

use common::{Outcome, assert_no_panic_text, command, finish, mkfifo, run_within, spawn};

const MATMUL: &str = env!("CARGO_BIN_EXE_matmul");

/// A hung binary fails its test instead of hanging the suite.
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Running matmul
// ---------------------------------------------------------------------------

/// Exit `code`, nothing on stdout, one line `error: ...` that contains `says`.
fn assert_error(outcome: &Outcome, code: i32, says: &str) {
    assert_eq!(outcome.code, Some(code), "{}", outcome.describe());
    assert!(outcome.stdout.is_empty(), "{}", outcome.describe());
    assert!(outcome.stderr.starts_with("error: "), "{}", outcome.describe());
    assert_eq!(outcome.stderr.matches('\n').count(), 1, "{}", outcome.describe());
    assert!(
        outcome.stderr.contains(says),
        "expected {says:?}\n{}",
        outcome.describe()
    );
    assert_no_panic_text(outcome);
}

/// `matmul ARGS` with `umask`, if given, and no standard input.
fn matmul(args: &[OsString], umask: Option<libc::mode_t>) -> Command {
    let mut cmd = command(MATMUL, args);
    cmd.stdin(Stdio::null())
        // Its own process group, as a shell's job: the signal test sends
        // Ctrl-C's SIGINT to the group.
        .process_group(0);
    if let Some(mask) = umask {
        // SAFETY: umask(2) is async-signal-safe, so fine between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            });
        }
    }
    cmd
}

fn run(args: &[OsString]) -> Outcome {
    run_within(&mut matmul(args, None), b"", TIMEOUT)
}

fn run_with_umask(args: &[OsString], umask: libc::mode_t) -> Outcome {
    run_within(&mut matmul(args, Some(umask)), b"", TIMEOUT)
}

// ---------------------------------------------------------------------------
// Inputs, outputs and folders
// ---------------------------------------------------------------------------

/// A `.npy` file of a C-order f64 matrix.
fn npy_f64(rows: usize, cols: usize, value: impl Fn(usize) -> f64) -> Vec<u8> {
    let mut out = npy::encode_header(Dtype::F64, false, &[rows, cols]);
    for i in 0..rows * cols {
        out.extend_from_slice(&value(i).to_le_bytes());
    }
    out
}

/// Writes A (2 x 3) and B (3 x 2) of small integers into `dir`.
fn small_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("A.npy"), dir.join("B.npy"));
    std::fs::write(&a, npy_f64(2, 3, |i| i as f64 + 1.0)).unwrap();
    std::fs::write(&b, npy_f64(3, 2, |i| i as f64 - 2.0)).unwrap();
    (a, b)
}

/// The file `matmul` writes for [`small_inputs`], exact: the products of
/// small integers are exact in f64.
fn small_product() -> Vec<u8> {
    // [[1 2 3] [4 5 6]] x [[-2 -1] [0 1] [2 3]]
    let c = [4.0, 10.0, 4.0, 19.0];
    npy_f64(2, 2, |i| c[i])
}

/// `matmul A B -o OUT` on the small inputs.
fn small_args(inputs: &(PathBuf, PathBuf), out: &Path) -> Vec<OsString> {
    argv![&inputs.0, &inputs.1, "-o", out]
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `.matmul-*` temporary files in `dir`.
fn stray_temp_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".matmul-"))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A character device node `major:minor` at `dir/name`, made with mknod
/// (root); else, or where this file system does not open devices (nodev),
/// the system's `/dev/name`, checked to be that device.
fn char_device(dir: &Path, name: &str, major: u32, minor: u32) -> PathBuf {
    let path = dir.join(name);
    let c_path = c_path(&path);
    let dev = libc::makedev(major, minor);
    // SAFETY: `c_path` is a valid NUL-terminated path.
    let made = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o666, dev) } == 0;
    if made && std::fs::File::options().write(true).open(&path).is_ok() {
        return path;
    }
    let _ = std::fs::remove_file(&path);
    let system = Path::new("/dev").join(name);
    assert_char_device(&system, dev);
    system
}

fn assert_char_device(path: &Path, dev: libc::dev_t) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "{} is no longer a device",
        path.display()
    );
    assert_eq!(meta.rdev(), dev, "{}: device number", path.display());
}

fn assert_symlink(link: &Path, to: &Path) {
    let meta = std::fs::symlink_metadata(link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "{} is no longer a link",
        link.display()
    );
    assert_eq!(
        std::fs::read_link(link).unwrap(),
        to,
        "{}: link text",
        link.display()
    );
}

/// Reads the FIFO at `path` to its end on a thread: its bytes, once the
/// writer closes it. (A matmul that replaced the FIFO leaves the thread
/// waiting; the test fails on the replaced FIFO first.)
fn drain_fifo(path: &Path) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut fifo| fifo.read_to_end(&mut bytes))
            .unwrap();
        let _ = tx.send(bytes);
    });
    rx
}

// ---------------------------------------------------------------------------
// Regular files: atomic replace, permissions
// ---------------------------------------------------------------------------

#[test]
fn new_file_gets_0666_less_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = small_inputs(dir.path());
    for umask in [0o022, 0o027, 0o077] {
        let out = dir.path().join(format!("C{umask:o}.npy"));
        let outcome = run_with_umask(&small_args(&inputs, &out), umask);
        outcome.assert_success();
        assert_eq!(std::fs::read(&out).unwrap(), small_product());
        assert_eq!(
            mode(&out),
            0o666 & !umask,
            "umask {umask:03o}\n{}",
            outcome.describe()
        );
    }
    assert_eq!(stray_temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn replaced_file_keeps_its_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = small_inputs(dir.path());
    let out = dir.path().join("C.npy");
    std::fs::write(&out, b"an older product").unwrap();
    // A mode no umask gives, and that the old code's 0600 is not.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o604)).unwrap();
    // As root, a file of another user's, replaced by root (sudo), stays theirs.
    let as_root = std::fs::metadata(&out).unwrap().uid() == 0;
    if as_root {
        std::os::unix::fs::chown(&out, Some(4321), Some(4322)).unwrap();
    }
    let outcome = run_with_umask(&small_args(&inputs, &out), 0o022);
    outcome.assert_success();
    assert_eq!(std::fs::read(&out).unwrap(), small_product());
    assert_eq!(mode(&out), 0o604, "{}", outcome.describe());
    if as_root {
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "owner not kept");
    }
    assert_eq!(stray_temp_files(dir.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Symbolic links: followed
// ---------------------------------------------------------------------------

#[test]
fn symbolic_links_are_followed_and_stay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = small_inputs(d);
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::create_dir(d.join("other")).unwrap();

    // A relative link to an existing file in another folder: that file is
    // replaced (keeping its mode), the link stays.
    let target = d.join("sub/target.npy");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("sub/target.npy", d.join("link.npy")).unwrap();
    run(&small_args(&inputs, &d.join("link.npy"))).assert_success();
    assert_symlink(&d.join("link.npy"), Path::new("sub/target.npy"));
    assert_eq!(std::fs::read(&target).unwrap(), small_product());
    assert_eq!(mode(&target), 0o640);

    // A dangling link: its target is made.
    std::os::unix::fs::symlink("new.npy", d.join("other/dangling.npy")).unwrap();
    run(&small_args(&inputs, &d.join("other/dangling.npy"))).assert_success();
    assert_symlink(&d.join("other/dangling.npy"), Path::new("new.npy"));
    assert_eq!(std::fs::read(d.join("other/new.npy")).unwrap(), small_product());

    // A chain: an absolute link to a relative one, both stay.
    let absolute = d.join("other/dangling.npy");
    std::os::unix::fs::symlink(&absolute, d.join("chain.npy")).unwrap();
    std::fs::write(d.join("other/new.npy"), b"old").unwrap();
    run(&small_args(&inputs, &d.join("chain.npy"))).assert_success();
    assert_symlink(&d.join("chain.npy"), &absolute);
    assert_symlink(&absolute, Path::new("new.npy"));
    assert_eq!(std::fs::read(d.join("other/new.npy")).unwrap(), small_product());

    for folder in [d.to_path_buf(), d.join("sub"), d.join("other")] {
        assert_eq!(
            stray_temp_files(&folder),
            Vec::<String>::new(),
            "{}",
            folder.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Devices and FIFOs: written through, never replaced
// ---------------------------------------------------------------------------

#[test]
fn fifo_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = small_inputs(d);
    let fifo = d.join("c.fifo");
    mkfifo(&fifo);
    std::os::unix::fs::symlink("c.fifo", d.join("link")).unwrap();
    for out in [fifo.clone(), d.join("link")] {
        let read = drain_fifo(&fifo);
        let outcome = run(&small_args(&inputs, &out));
        let meta = std::fs::symlink_metadata(&fifo).unwrap();
        assert!(
            meta.file_type().is_fifo(),
            "the FIFO was replaced\n{}",
            outcome.describe()
        );
        outcome.assert_success();
        let bytes = read.recv_timeout(TIMEOUT).expect("the FIFO's reader got no end");
        assert_eq!(bytes, small_product(), "-o {}", out.display());
    }
    assert_symlink(&d.join("link"), Path::new("c.fifo"));
    assert_eq!(stray_temp_files(d), Vec::<String>::new());
}

#[test]
fn character_devices_are_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = small_inputs(d);
    let null = char_device(d, "null", 1, 3);
    let full = char_device(d, "full", 1, 7);
    std::os::unix::fs::symlink(&null, d.join("link")).unwrap();

    for out in [null.clone(), d.join("link")] {
        let outcome = run(&small_args(&inputs, &out));
        assert_char_device(&null, libc::makedev(1, 3));
        outcome.assert_success();
    }
    assert_symlink(&d.join("link"), &null);

    // /dev/full: the write fails with ENOSPC, reported as a failed run.
    let outcome = run(&small_args(&inputs, &full));
    assert_char_device(&full, libc::makedev(1, 7));
    assert_error(&outcome, 1, "full: No space left on device");

    assert_eq!(stray_temp_files(d), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Refused: bad input (exit 2), nothing replaced, nothing left
// ---------------------------------------------------------------------------

#[test]
fn sockets_directories_and_link_loops_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = small_inputs(d);
    let _socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    std::fs::create_dir(d.join("folder")).unwrap();
    std::os::unix::fs::symlink("folder", d.join("to_folder")).unwrap();
    std::os::unix::fs::symlink("loop_b", d.join("loop_a")).unwrap();
    std::os::unix::fs::symlink("loop_a", d.join("loop_b")).unwrap();

    let cases = [
        ("sock", "sock: is a socket"),
        ("to_folder", "to_folder: is a directory"),
        ("nothing/", "nothing/: is a directory"),
        ("loop_a", "loop_a: Too many levels of symbolic links"),
    ];
    for (name, says) in cases {
        let outcome = run(&small_args(&inputs, &d.join(name)));
        assert_error(&outcome, 2, says);
    }
    assert!(
        std::fs::symlink_metadata(d.join("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(d.join("folder").is_dir());
    assert_eq!(names(&d.join("folder")), Vec::<String>::new());
    assert_symlink(&d.join("to_folder"), Path::new("folder"));
    assert_symlink(&d.join("loop_a"), Path::new("loop_b"));
    assert_eq!(
        names(d),
        [
            "A.npy",
            "B.npy",
            "folder",
            "loop_a",
            "loop_b",
            "sock",
            "to_folder"
        ]
    );
}

// ---------------------------------------------------------------------------
// Signals: nothing left behind
// ---------------------------------------------------------------------------

/// The pids whose parent is `pid` (its workers).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
                after.split_whitespace().nth(1) == Some(&pid.to_string())
            })
        })
        .collect()
}

/// Whether `pid` has exited (gone, or a zombie nobody reaps).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        matches!(after.split_whitespace().next(), Some("Z" | "X"))
    })
}

#[test]
fn a_signal_mid_multiply_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 3000 x 1000 times 1000 x 3000: 18 GFLOP, a minute of a debug build and
    // a second or more of a release one; each run is stopped well before.
    let (a, b) = (d.join("A.npy"), d.join("B.npy"));
    std::fs::write(&a, npy_f64(3000, 1000, |i| (i % 7) as f64)).unwrap();
    std::fs::write(&b, npy_f64(1000, 3000, |i| (i % 5) as f64)).unwrap();
    let out = d.join("C.npy");
    let args = argv![&a, &b, "-o", &out, "--workers", "2"];

    // Ctrl-C reaches the whole process group; kill(1) and a closed terminal the program.
    for (signal, group) in [
        (libc::SIGINT, true),
        (libc::SIGTERM, false),
        (libc::SIGHUP, false),
    ] {
        let mut cmd = matmul(&args, None);
        let child = spawn(&mut cmd);
        let pid = child.id();
        // Mid-multiply: the workers run, past the checks of the inputs and the output.
        let deadline = Instant::now() + TIMEOUT;
        let workers = loop {
            let workers = children(pid);
            if workers.len() == 2 || exited(pid) || Instant::now() > deadline {
                break workers;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(workers.len(), 2, "signal {signal}: no workers");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!exited(pid), "signal {signal}: finished before the signal");
        let target = if group { -(pid as i32) } else { pid as i32 };
        // SAFETY: kill(2) on our own child (or its process group) touches no memory.
        assert_eq!(unsafe { libc::kill(target, signal) }, 0);
        let outcome = finish(child, &cmd, TIMEOUT);

        // Ended by that signal, as without a handler, with nothing to say.
        assert_eq!(outcome.signal, Some(signal), "{}", outcome.describe());
        assert_eq!(outcome.stderr, "", "{}", outcome.describe());
        assert_eq!(names(d), ["A.npy", "B.npy"], "signal {signal}");
        // The workers die with it.
        let deadline = Instant::now() + TIMEOUT;
        while !workers.iter().all(|&w| exited(w)) {
            assert!(
                Instant::now() < deadline,
                "signal {signal}: workers {workers:?} still run"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------
// --help
// ---------------------------------------------------------------------------

#[test]
fn help_shows_defaults_and_what_output_does() {
    let outcome = run(&argv!["--help"]);
    outcome.assert_success();
    let help = String::from_utf8(outcome.stdout).unwrap();
    // An option's section runs from its line ("  -o, --output <C.npy>",
    // "      --seed <S>") to the next option's, its text deeper indented.
    let section = |flag: &str| {
        let mut sections: Vec<String> = Vec::new();
        for line in help.lines() {
            let indent = line.len() - line.trim_start().len();
            if line.trim_start().starts_with('-') && indent <= 6 {
                sections.push(String::new());
            }
            if let Some(section) = sections.last_mut() {
                section.push_str(line.trim());
                section.push(' ');
            }
        }
        sections
            .into_iter()
            .find(|section| {
                section
                    .split_whitespace()
                    .any(|word| word.trim_end_matches(',') == flag)
            })
            .unwrap_or_else(|| panic!("no {flag} in\n{help}"))
    };
    assert!(section("--dtype").contains("[default: f64]"), "{help}");
    assert!(section("--seed").contains("[default: 0]"), "{help}");
    let output = section("--output");
    for says in [
        "renamed into place",
        "permissions",
        "umask",
        "symbolic link",
        "device",
        "FIFO",
        "socket",
    ] {
        assert!(output.contains(says), "--output's help lacks {says:?}: {output}");
    }
}
