//! End-to-end tests of `wordcount`'s and `matmul`'s options, run as real
//! processes: `-r`, `--files0-from`, many files under a small descriptor
//! limit, engine options that do not apply, output into a closed pipe, and
//! logs into a pipe.

// Each test crate compiles its own copy of the shared helpers and uses only
// some of them: the rest would warn as unused.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Counts, Outcome, add_counts, assert_bad_input_says, assert_tsv_eq, command, mkfifo, ranked, run,
    run_command, run_in, run_within, tsv,
};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const MATMUL: &str = env!("CARGO_BIN_EXE_matmul");

/// How long the runs on many files may take: generous, for a loaded 2-core
/// machine and a debug build.
const MANY_FILES_TIMEOUT: Duration = Duration::from_secs(300);

/// The file count of the summary line on stderr: `N file(s), ...`.
fn files_counted(outcome: &Outcome) -> usize {
    let line = outcome
        .stderr
        .lines()
        .find(|line| line.contains(" file(s), "))
        .unwrap_or_else(|| panic!("no summary line\n{}", outcome.describe()));
    line.split(' ').next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------

/// `--split whitespace --all --format tsv`, then `extra`.
fn tsv_args(extra: &[OsString]) -> Vec<OsString> {
    let mut args = argv!["--split", "whitespace", "--all", "--format", "tsv"];
    args.extend(extra.iter().cloned());
    args
}

/// NUL-ended names, as `find -print0` writes them.
fn print0(names: &[PathBuf]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.extend_from_slice(name.as_os_str().as_bytes());
        list.push(0);
    }
    list
}

// ---------------------------------------------------------------------------
// -r / --recursive
// ---------------------------------------------------------------------------

/// A tree with nested directories, an empty directory, empty files, and
/// what `-r` must skip: links met in the walk (to a file, to a
/// directory, dangling) and a FIFO (which would block a reader).
/// Returns the tree's root and the texts of its regular files.
fn tree(root: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let top = root.join("top");
    let outside = root.join("outside");
    for dir in [
        &top,
        &top.join("a/b/c"),
        &top.join("empty"),
        &top.join("z"),
        &outside,
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(outside.join("o.txt"), "outside words never counted\n").unwrap();
    let files: Vec<(PathBuf, &[u8])> = vec![
        (top.join("one.txt"), b"alpha beta beta\n"),
        (top.join("a/two.txt"), b"beta gamma"),
        (top.join("a/b/c/three"), b"gamma gamma delta\n"),
        (top.join("z/empty"), b""),
        (top.join("z/name"), b"epsilon alpha"),
        (top.join("a/b/empty.txt"), b""),
    ];
    let mut texts = Vec::new();
    for (path, text) in &files {
        std::fs::write(path, text).unwrap();
        texts.push(text.to_vec());
    }
    std::os::unix::fs::symlink(outside.join("o.txt"), top.join("a/link-to-file")).unwrap();
    std::os::unix::fs::symlink(&outside, top.join("a/link-to-dir")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), top.join("dangling")).unwrap();
    // A link back up would loop if followed.
    std::os::unix::fs::symlink(&top, top.join("a/b/loop")).unwrap();
    mkfifo(&top.join("a/fifo"));
    (top, texts)
}

#[test]
fn recursive_counts_regular_files_under_directories_and_skips_links_met_in_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    let (top, texts) = tree(dir.path());
    let mut counts = Counts::new();
    for text in &texts {
        add_counts(&mut counts, text);
    }
    let expected = tsv(&ranked(&counts));
    // A link to the tree, given on the command line, is followed.
    let link = dir.path().join("link-to-top");
    std::os::unix::fs::symlink(&top, &link).unwrap();

    for engine in ["processes", "sequential"] {
        for (name, root) in [("directory", &top), ("link to a directory", &link)] {
            for flag in ["-r", "--recursive"] {
                let outcome = run(WORDCOUNT, &tsv_args(&argv!["--engine", engine, flag, root]));
                outcome.assert_success();
                let context = format!("{flag} {name}, {engine}");
                assert_tsv_eq(&outcome, &expected, &context);
                assert_eq!(
                    files_counted(&outcome),
                    texts.len(),
                    "{context}\n{}",
                    outcome.describe()
                );
            }
        }
    }

    // With -r, a file operand is still a file, and an empty directory counts nothing.
    let one = run(
        WORDCOUNT,
        &tsv_args(&argv!["-r", top.join("one.txt"), top.join("empty")]),
    );
    one.assert_success();
    let mut counts = Counts::new();
    add_counts(&mut counts, b"alpha beta beta\n");
    assert_tsv_eq(&one, &tsv(&ranked(&counts)), "-r FILE EMPTY-DIR");
    assert_eq!(files_counted(&one), 1, "{}", one.describe());
}

#[test]
fn a_directory_without_recursive_is_one_line_error_suggesting_it() {
    let dir = tempfile::tempdir().unwrap();
    let (top, _) = tree(dir.path());
    for args in [argv![&top], argv![top.join("one.txt"), &top]] {
        let outcome = run(WORDCOUNT, &args);
        assert_bad_input_says(&outcome, "directory without -r", "top: is a directory");
        assert!(
            outcome.stderr.contains("(use -r"),
            "should suggest -r\n{}",
            outcome.describe()
        );
    }
}

#[test]
fn recursive_walk_into_an_unreadable_directory_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    let locked = top.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(locked.join("secret"), "secret words").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let readable = std::fs::read_dir(&locked).is_ok();
    let outcome = run(WORDCOUNT, &argv!["-r", &top]);
    // Let the temporary directory be removed.
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    if readable {
        eprintln!("skipping: this process can read a mode-000 directory (root)");
        outcome.assert_success();
        return;
    }
    assert_bad_input_says(&outcome, "unreadable directory", "locked: Permission denied");
}

// ---------------------------------------------------------------------------
// --files0-from
// ---------------------------------------------------------------------------

#[test]
fn files0_from_gives_the_same_table_as_the_files_given_as_operands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Names a newline-separated list could not carry: space, newline.
    let names: Vec<PathBuf> = vec![
        d.join("plain.txt"),
        d.join("with space"),
        d.join("new\nline"),
        d.join("bytes"),
        d.join("empty"),
        d.join("-dash-first"),
    ];
    let texts: [&[u8]; 6] = [
        b"the cat and the hat\n",
        b"the dog",
        b"cat\tdog\r\nbird",
        b"\xFF\xFE bytes the",
        b"",
        b"last words the",
    ];
    let mut counts = Counts::new();
    for (name, text) in names.iter().zip(texts) {
        std::fs::write(name, text).unwrap();
        add_counts(&mut counts, text);
    }
    let expected = tsv(&ranked(&counts));
    let list = print0(&names);
    let list_file = d.join("list0");
    std::fs::write(&list_file, &list).unwrap();
    // `find -print0 | wordcount --files0-from=-` lists names in find's order.
    let operands = run(
        WORDCOUNT,
        &tsv_args(&names.iter().map(OsString::from).collect::<Vec<_>>()),
    );
    operands.assert_success();
    assert_tsv_eq(&operands, &expected, "FILE operands");

    for engine in ["processes", "sequential"] {
        let from_stdin = run_in(
            WORDCOUNT,
            &tsv_args(&argv!["--engine", engine, "--files0-from=-"]),
            &list,
            None,
        );
        from_stdin.assert_success();
        assert_tsv_eq(&from_stdin, &expected, &format!("--files0-from=-, {engine}"));
        assert_eq!(
            files_counted(&from_stdin),
            names.len(),
            "{}",
            from_stdin.describe()
        );

        let from_file = run(
            WORDCOUNT,
            &tsv_args(&argv!["--engine", engine, "--files0-from", &list_file]),
        );
        from_file.assert_success();
        assert_tsv_eq(&from_file, &expected, &format!("--files0-from FILE, {engine}"));
    }

    // The default table, too: one table, identical to the operands'.
    let table_operands = run(WORDCOUNT, &names.iter().map(OsString::from).collect::<Vec<_>>());
    table_operands.assert_success();
    let table_list = run_in(WORDCOUNT, &argv!["--files0-from=-"], &list, None);
    table_list.assert_success();
    assert_eq!(
        table_list.stdout,
        table_operands.stdout,
        "{}",
        table_list.describe()
    );

    // The last name may lack its NUL.
    let unterminated = run_in(
        WORDCOUNT,
        &tsv_args(&argv!["--files0-from=-"]),
        &list[..list.len() - 1],
        None,
    );
    unterminated.assert_success();
    assert_tsv_eq(&unterminated, &expected, "list without a final NUL");

    // A name that is not UTF-8 is read as the bytes it is. Sequential only:
    // coop's processes engine hangs on such a path (a bug of its own).
    let odd = d.join(std::ffi::OsStr::from_bytes(b"not\xFFutf8"));
    std::fs::write(&odd, b"odd name").unwrap();
    let outcome = run_in(
        WORDCOUNT,
        &tsv_args(&argv!["--engine", "sequential", "--files0-from=-"]),
        &print0(&[odd]),
        None,
    );
    outcome.assert_success();
    assert_eq!(outcome.stdout, b"1\tname\n1\todd\n", "{}", outcome.describe());

    // In a list read from a file, "-" is standard input, counted once.
    let mut with_stdin = print0(&names[..1]);
    with_stdin.extend_from_slice(b"-\0");
    std::fs::write(&list_file, &with_stdin).unwrap();
    let stdin_text = b"from standard input the";
    let outcome = run_in(
        WORDCOUNT,
        &tsv_args(&argv!["--files0-from", &list_file]),
        stdin_text,
        None,
    );
    outcome.assert_success();
    let mut counts = Counts::new();
    add_counts(&mut counts, texts[0]);
    add_counts(&mut counts, stdin_text);
    assert_tsv_eq(&outcome, &tsv(&ranked(&counts)), "'-' in a list file");

    // An empty list counts nothing: not standard input.
    std::fs::write(&list_file, b"").unwrap();
    let empty = run_in(
        WORDCOUNT,
        &tsv_args(&argv!["--files0-from", &list_file]),
        b"not counted",
        None,
    );
    empty.assert_success();
    assert!(empty.stdout.is_empty(), "{}", empty.describe());
    assert_eq!(files_counted(&empty), 0, "{}", empty.describe());

    // With -r, a directory in the list is walked.
    let (top, texts) = tree(&d.join("walked"));
    let mut counts = Counts::new();
    for text in &texts {
        add_counts(&mut counts, text);
    }
    let walked = run_in(
        WORDCOUNT,
        &tsv_args(&argv!["-r", "--files0-from=-"]),
        &print0(&[top]),
        None,
    );
    walked.assert_success();
    assert_tsv_eq(
        &walked,
        &tsv(&ranked(&counts)),
        "-r --files0-from with a directory",
    );
}

#[test]
fn files0_from_bad_lists_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = d.join("ok.txt");
    std::fs::write(&ok, "some words").unwrap();
    let ok0 = print0(std::slice::from_ref(&ok));
    let mut empty_third = ok0.clone();
    empty_third.extend_from_slice(&ok0);
    empty_third.push(0);
    empty_third.extend_from_slice(&ok0);
    let mut dash = ok0.clone();
    dash.extend_from_slice(b"-\0");
    let mut missing = ok0.clone();
    missing.extend_from_slice(&print0(&[d.join("missing.txt")]));

    let cases: Vec<(&str, Vec<OsString>, Vec<u8>, &str)> = vec![
        (
            "FILE operand with --files0-from",
            argv!["--files0-from=-", &ok],
            ok0.clone(),
            "extra operand",
        ),
        (
            "FILE operand before --files0-from",
            argv![&ok, "--files0-from", "-"],
            ok0.clone(),
            "file operands cannot be combined with --files0-from",
        ),
        (
            "an empty name in third position",
            argv!["--files0-from=-"],
            empty_third,
            "-:3: invalid zero-length file name",
        ),
        (
            "an empty first name",
            argv!["--files0-from=-"],
            b"\0".to_vec(),
            "-:1: invalid zero-length file name",
        ),
        (
            "'-' in a list read from standard input",
            argv!["--files0-from=-"],
            dash,
            "-:2: when reading file names from standard input, no file name of '-' allowed",
        ),
        (
            "a missing file in the list",
            argv!["--files0-from=-"],
            missing,
            "missing.txt: No such file or directory",
        ),
        (
            "a missing list",
            argv!["--files0-from", d.join("no-list")],
            Vec::new(),
            "no-list: No such file or directory",
        ),
        (
            "a directory in the list without -r",
            argv!["--files0-from=-"],
            print0(&[d.to_path_buf()]),
            "is a directory (use -r",
        ),
        (
            "--files0-from without a name",
            argv!["--files0-from="],
            Vec::new(),
            "a value is required for '--files0-from <F>'",
        ),
    ];
    for (case, args, stdin, says) in cases {
        let outcome = run_in(WORDCOUNT, &args, &stdin, None);
        assert_bad_input_says(&outcome, case, says);
    }

    // An empty name in a list file names the file and the position.
    let list = d.join("list0");
    std::fs::write(&list, [ok0.as_slice(), b"\0"].concat()).unwrap();
    let outcome = run(WORDCOUNT, &argv!["--files0-from", &list]);
    assert_bad_input_says(
        &outcome,
        "empty name in a list file",
        "list0:2: invalid zero-length file name",
    );
}

// ---------------------------------------------------------------------------
// Many files under a small descriptor limit
// ---------------------------------------------------------------------------

/// `cmd` runs with at most `limit` open descriptors (`ulimit -n`).
fn limit_descriptors(cmd: &mut Command, limit: libc::rlim_t) {
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls setrlimit (async-signal-safe) on a stack value, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A temporary directory for `files` small files: in /dev/shm if it has room
/// for them (tmpfs takes a page a file), else in the temporary directory.
/// Writing 100,000 files took 60 s on ext4 on a 2-core VM, 1.2 s on tmpfs.
fn many_files_dir(files: usize) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let c_path = std::ffi::CString::new(shm.as_os_str().as_bytes()).unwrap();
    // SAFETY: all-zero is a valid statvfs, which the call fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated path and `stat` a valid statvfs,
    // both alive for the call.
    let ok = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } == 0;
    // Twice the pages and inodes needed, and 256 MiB to spare: a small
    // /dev/shm (64 MiB in a default Docker container) is left alone.
    let room = ok
        && (stat.f_bavail as u128) * (stat.f_frsize as u128) >= (files as u128) * 2 * 4096 + (256 << 20)
        && (stat.f_favail as u128) >= (files as u128) * 2;
    room.then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
        .unwrap_or_else(|| tempfile::tempdir().unwrap())
}

/// Writes `count` small files (1 to 3 words) in `dir`, 1,000 to a
/// subdirectory; returns their names relative to `dir` and their counts.
fn small_files(dir: &Path, count: usize) -> (Vec<PathBuf>, Counts) {
    let mut names = Vec::with_capacity(count);
    let mut counts = Counts::new();
    let mut text = Vec::new();
    for i in 0..count {
        let sub = PathBuf::from(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir(dir.join(&sub)).unwrap();
        }
        text.clear();
        // Words shared across files (w0..w96), and one of this file's own
        // every seventh file, so the merge has both to do.
        for j in 0..=(i % 3) {
            text.extend_from_slice(format!("w{} ", (i * 7 + j * 13) % 97).as_bytes());
        }
        if i % 7 == 0 {
            text.extend_from_slice(format!("only{i}").as_bytes());
        }
        add_counts(&mut counts, &text);
        let name = sub.join(format!("f{i}"));
        std::fs::write(dir.join(&name), &text).unwrap();
        names.push(name);
    }
    (names, counts)
}

#[test]
fn hundred_thousand_files_from_files0_under_256_descriptors() {
    const FILES: usize = 100_000;
    let dir = many_files_dir(FILES);
    let started = Instant::now();
    let (names, counts) = small_files(dir.path(), FILES);
    println!(
        "{FILES} files written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let expected = tsv(&ranked(&counts));
    let list = print0(&names);
    for engine in ["sequential", "processes"] {
        let mut cmd = command(
            WORDCOUNT,
            &tsv_args(&argv!["--engine", engine, "--files0-from=-"]),
        );
        cmd.current_dir(dir.path());
        limit_descriptors(&mut cmd, 256);
        let started = Instant::now();
        let outcome = run_within(&mut cmd, &list, MANY_FILES_TIMEOUT);
        // Shown with --nocapture: how long CI spends here.
        println!(
            "{FILES} files, {engine}: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        outcome.assert_success();
        assert_tsv_eq(
            &outcome,
            &expected,
            &format!("{FILES} files, {engine}, ulimit -n 256"),
        );
        assert_eq!(files_counted(&outcome), FILES, "{}", outcome.describe());
    }
}

#[test]
fn five_thousand_file_operands_under_1024_descriptors() {
    const FILES: usize = 5_000;
    let dir = many_files_dir(FILES);
    let (names, counts) = small_files(dir.path(), FILES);
    let expected = tsv(&ranked(&counts));
    for engine in ["sequential", "processes"] {
        let operands: Vec<OsString> = names.iter().map(OsString::from).collect();
        let mut cmd = command(
            WORDCOUNT,
            &tsv_args(&[argv!["--engine", engine], operands].concat()),
        );
        cmd.current_dir(dir.path());
        limit_descriptors(&mut cmd, 1024);
        let outcome = run_within(&mut cmd, b"", MANY_FILES_TIMEOUT);
        outcome.assert_success();
        assert_tsv_eq(
            &outcome,
            &expected,
            &format!("{FILES} operands, {engine}, ulimit -n 1024"),
        );
        assert_eq!(files_counted(&outcome), FILES, "{}", outcome.describe());
    }
}

// ---------------------------------------------------------------------------
// Engine options that do not apply
// ---------------------------------------------------------------------------

#[test]
fn engine_options_that_do_not_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.txt");
    std::fs::write(&file, "some words here").unwrap();
    let refused: &[(&[&str], &str)] = &[
        (
            &["--engine", "threads", "--ipc", "messages"],
            "--ipc does not apply to --engine threads",
        ),
        (
            &["--engine", "threads", "--ipc", "shared-memory"],
            "--ipc does not apply to --engine threads",
        ),
        (
            &["--engine", "sequential", "-w", "2"],
            "--workers does not apply to --engine sequential",
        ),
        (
            &["--workers=1", "--engine=sequential"],
            "--workers does not apply to --engine sequential",
        ),
        (
            &["--engine", "sequential", "--ipc", "messages"],
            "--ipc does not apply to --engine sequential",
        ),
        (
            &["--engine", "sequential", "--ipc", "shared-memory"],
            "--ipc does not apply to --engine sequential",
        ),
        (
            &["--engine", "mpi", "--workers", "2"],
            "--workers does not apply to --engine mpi",
        ),
        (
            &["--engine", "mpi", "--ipc", "messages"],
            "--ipc does not apply to --engine mpi",
        ),
    ];
    for (options, says) in refused {
        let mut wordcount = argv![];
        wordcount.extend(options.iter().map(OsString::from));
        wordcount.push(file.clone().into());
        assert_bad_input_says(
            &run(WORDCOUNT, &wordcount),
            &format!("wordcount {options:?}"),
            says,
        );

        let mut matmul = argv!["--size", "8"];
        matmul.extend(options.iter().map(OsString::from));
        assert_bad_input_says(&run(MATMUL, &matmul), &format!("matmul {options:?}"), says);
    }

    // What does apply still runs.
    let applies: &[&[&str]] = &[
        &["--engine", "processes", "-w", "2", "--ipc", "messages"],
        &["-w", "1", "--ipc", "shared-memory"],
        &["--engine", "threads", "-w", "3"],
        &["--engine", "sequential"],
        &["--engine", "threads"],
    ];
    for options in applies {
        let mut wordcount = argv![];
        wordcount.extend(options.iter().map(OsString::from));
        wordcount.push(file.clone().into());
        run(WORDCOUNT, &wordcount).assert_success();
        let mut matmul = argv!["--size", "8"];
        matmul.extend(options.iter().map(OsString::from));
        run(MATMUL, &matmul).assert_success();
    }
}

// ---------------------------------------------------------------------------
// Output into a closed pipe; logs into a pipe
// ---------------------------------------------------------------------------

#[test]
fn every_format_into_a_closed_pipe_ends_quietly_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.txt");
    // 20,000 distinct words: far more output than a pipe or a BufWriter holds,
    // so the write fails in the middle of the output, not only at the flush.
    let text: String = (0..20_000).map(|i| format!("word{i} ")).collect();
    std::fs::write(&file, text).unwrap();
    for format in ["table", "tsv", "json"] {
        for engine in ["processes", "sequential"] {
            let (reader, writer) = std::io::pipe().unwrap();
            // The reader is gone before the program starts: `| head -0`.
            drop(reader);
            let mut cmd = command(
                WORDCOUNT,
                &argv!["--all", "--format", format, "--engine", engine, &file],
            );
            cmd.stdin(Stdio::null()).stdout(writer);
            let outcome = run_command(&mut cmd, b"");
            let context = format!("--format {format}, {engine}\n{}", outcome.describe());
            assert_eq!(outcome.code, Some(0), "{context}");
            assert!(!outcome.stderr.contains("error"), "{context}");
            assert!(!outcome.stderr.contains("Broken pipe"), "{context}");
        }
    }
}

#[test]
fn matmul_into_a_closed_pipe_ends_quietly_with_0() {
    for extra in [&[][..], &["--check"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut args = argv!["--size", "8"];
        args.extend(extra.iter().map(OsString::from));
        let mut cmd = command(MATMUL, &args);
        cmd.stdin(Stdio::null()).stdout(writer);
        let outcome = run_command(&mut cmd, b"");
        let context = format!("{extra:?}\n{}", outcome.describe());
        assert_eq!(outcome.code, Some(0), "{context}");
        assert!(outcome.stderr.is_empty(), "{context}");
    }
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.txt");
    std::fs::write(&file, "some words here").unwrap();
    for bin in [WORDCOUNT, MATMUL] {
        let args = if bin == WORDCOUNT {
            argv![&file]
        } else {
            argv!["--size", "8"]
        };
        let mut cmd = command(bin, &args);
        cmd.env("RUST_LOG", "coop=debug").env_remove("NO_COLOR");
        let outcome = run_command(&mut cmd, b"");
        outcome.assert_success();
        assert!(
            outcome.stderr.contains("DEBUG") && outcome.stderr.contains("pool started"),
            "RUST_LOG=coop=debug shows the pool's events\n{}",
            outcome.describe()
        );
        assert!(
            !outcome.stderr.contains("\x1b["),
            "escape codes in a pipe\n{}",
            outcome.describe().escape_debug()
        );
    }
}

// ---------------------------------------------------------------------------
// Many pipes
// ---------------------------------------------------------------------------

/// 70 FIFOs as FILEs: each is read into shared memory, more segments than
/// ipc-channel's 64 descriptors a message (this exited 101 with
/// `assertion failed: fds.len() <= MAX_FDS_IN_CMSG`).
#[test]
fn seventy_pipes_are_counted_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u8>> = (0..70)
        .map(|i| format!("pipe{i} shared words\n").into_bytes())
        .collect();
    let mut expected = Counts::new();
    for text in &texts {
        add_counts(&mut expected, text);
    }
    for engine in ["processes", "sequential"] {
        let fifos: Vec<PathBuf> = (0..texts.len())
            .map(|i| dir.path().join(format!("{engine}-{i}")))
            .collect();
        for fifo in &fifos {
            mkfifo(fifo);
        }
        // Writers block until wordcount opens each FIFO in turn.
        let writers: Vec<_> = fifos
            .iter()
            .zip(texts.clone())
            .map(|(fifo, text)| {
                let fifo = fifo.clone();
                std::thread::spawn(move || std::fs::write(fifo, text))
            })
            .collect();
        let mut args = tsv_args(&argv!["--engine", engine]);
        args.extend(fifos.iter().map(OsString::from));
        let outcome = run(WORDCOUNT, &args);
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        assert_tsv_eq(&outcome, &tsv(&ranked(&expected)), engine);
    }
}

// ---------------------------------------------------------------------------
// --timeout
// ---------------------------------------------------------------------------

#[test]
fn timeout_ends_a_count_that_runs_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    // Far more than a debug build counts in a millisecond.
    let text: String = (0..2_000_000).map(|i| format!("w{} ", i % 50_000)).collect();
    std::fs::write(&file, &text).unwrap();
    for engine in ["processes", "threads", "sequential"] {
        let late = run(WORDCOUNT, &argv!["--engine", engine, "--timeout", "1ms", &file]);
        let context = format!("{engine}\n{}", late.describe());
        assert_eq!(late.code, Some(1), "{context}");
        assert!(late.stdout.is_empty(), "{context}");
        let error: Vec<&str> = late.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(error.len(), 1, "{context}");
        assert!(error[0].contains("did not finish by its deadline"), "{context}");
        // Time enough: the same count as without a timeout.
        let on_time = run(WORDCOUNT, &argv!["--engine", engine, "--timeout", "10m", &file]);
        let plain = run(WORDCOUNT, &argv!["--engine", engine, &file]);
        on_time.assert_success();
        assert_eq!(on_time.stdout, plain.stdout, "{engine}");
    }
    assert_bad_input_says(
        &run(WORDCOUNT, &argv!["--timeout", "soon", &file]),
        "--timeout soon",
        "soon",
    );
}
