//! A `SIGBUS` guard for memory-mapped files.
//!
//! Reading a page of a mapped file past the file's end raises `SIGBUS`, so a
//! file truncated by another process while a job reads it would kill whoever
//! touches the lost pages: a worker (a lost task) or the coordinator itself
//! (with no message at all). [`Guard::register`] records a file mapping in a
//! process-wide registry; the `SA_SIGINFO` handler installed on first use
//! looks the faulting address up in it and, for an address inside a
//! registered mapping, maps anonymous zero pages over the rest of that
//! mapping (every page past the file's new end is gone, not just the one
//! touched), marks the mapping as faulted ([`Guard::faulted`]) and returns:
//! the read completes and finds zeros. The owner of the mapping then checks
//! it and turns the job into an error. Any other `SIGBUS` goes to the handler
//! that was installed before (the standard library's stack-overflow handler,
//! which ends the process), or kills the process as the default action would.
//!
//! The registry is a list of fixed-size chunks of slots, never freed; the
//! handler only loads atomics and calls `mmap`, `sigaction` and `raise`,
//! which are system calls with no locks in this process. Each slot is a small
//! seqlock, so the handler never believes a half-written (start, end) pair.

use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};

use nix::libc::{self, c_int, c_void};

/// Slots per chunk of the registry.
const CHUNK_SLOTS: usize = 64;

/// One registered mapping: `[start, end)`, `start == 0` when unused.
#[derive(Debug)]
struct Slot {
    /// Claimed by a [`Guard`].
    taken: AtomicBool,
    /// Even when `start` and `end` are consistent, odd while they change.
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    /// Set by the handler when it answered a read in the mapping with zeros.
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            taken: AtomicBool::new(false),
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }

    /// Sets the range under the seqlock.
    fn set(&self, start: usize, end: usize) {
        self.seq.fetch_add(1, SeqCst);
        self.start.store(start, SeqCst);
        self.end.store(end, SeqCst);
        self.seq.fetch_add(1, SeqCst);
    }

    /// The range, if it was consistent and not changing while read.
    fn get(&self) -> Option<(usize, usize)> {
        let before = self.seq.load(SeqCst);
        if before % 2 == 1 {
            return None;
        }
        let (start, end) = (self.start.load(SeqCst), self.end.load(SeqCst));
        (self.seq.load(SeqCst) == before && start != 0).then_some((start, end))
    }
}

#[derive(Debug)]
struct Chunk {
    slots: [Slot; CHUNK_SLOTS],
    /// The chunk added before this one; set before this chunk is published.
    next: AtomicPtr<Chunk>,
}

/// The newest chunk; chunks are leaked, so every pointer in the list stays valid.
static HEAD: AtomicPtr<Chunk> = AtomicPtr::new(ptr::null_mut());

/// The previous `SIGBUS` handler (`sa_sigaction`) and its `sa_flags`.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// Iterates over the chunks of the registry.
fn chunks() -> impl Iterator<Item = &'static Chunk> {
    let mut next = HEAD.load(SeqCst);
    std::iter::from_fn(move || {
        // SAFETY: every non-null pointer in the list comes from `Box::leak` in
        // `claim` and chunks are never freed, so it is valid for 'static; only
        // atomics in it are written after it is published.
        let chunk: &'static Chunk = unsafe { next.as_ref()? };
        next = chunk.next.load(SeqCst);
        Some(chunk)
    })
}

/// A free slot, marked taken; grows the registry when all are taken.
fn claim() -> &'static Slot {
    for chunk in chunks() {
        for slot in &chunk.slots {
            if slot.taken.compare_exchange(false, true, SeqCst, SeqCst).is_ok() {
                return slot;
            }
        }
    }
    let chunk: &'static Chunk = Box::leak(Box::new(Chunk {
        slots: [const { Slot::new() }; CHUNK_SLOTS],
        next: AtomicPtr::new(ptr::null_mut()),
    }));
    chunk.slots[0].taken.store(true, SeqCst);
    let new = ptr::from_ref(chunk).cast_mut();
    let mut head = HEAD.load(SeqCst);
    loop {
        chunk.next.store(head, SeqCst);
        match HEAD.compare_exchange(head, new, SeqCst, SeqCst) {
            Ok(_) => return &chunk.slots[0],
            Err(current) => head = current,
        }
    }
}

/// A file mapping registered with the guard, from [`Guard::register`] until
/// it is dropped. Drop it before unmapping the memory.
#[derive(Debug)]
pub(crate) struct Guard {
    slot: &'static Slot,
}

impl Guard {
    /// Registers the mapping `[start, start + len)` of a file, installing the
    /// handler on first use. The memory must stay mapped until the guard is
    /// dropped.
    pub(crate) fn register(start: *const u8, len: usize) -> Guard {
        install();
        let slot = claim();
        slot.faulted.store(false, SeqCst);
        let start = start as usize;
        slot.set(start, start.saturating_add(len));
        Guard { slot }
    }

    /// Whether a read in the mapping faulted (the file had shrunk) and was
    /// answered with zeros.
    pub(crate) fn faulted(&self) -> bool {
        self.slot.faulted.load(SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.set(0, 0);
        self.slot.faulted.store(false, SeqCst);
        self.slot.taken.store(false, SeqCst);
    }
}

/// Installs the handler once per process. A failure leaves mappings
/// unguarded, as they were before the guard existed.
fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE_SIZE.store(page, SeqCst);
        }
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty
        // mask, no flags), and the kernel only writes `previous`.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null `act` only reads the current action into `previous`.
        if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut previous) } != 0 {
            tracing::warn!(
                "cannot read the SIGBUS action: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        PREVIOUS_HANDLER.store(previous.sa_sigaction, SeqCst);
        PREVIOUS_FLAGS.store(previous.sa_flags as usize, SeqCst);
        // SAFETY: as above, all-zero is a valid `sigaction`.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action` is a valid `sigaction` whose handler has the
        // `SA_SIGINFO` signature and is async-signal-safe (see `on_sigbus`).
        let installed = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, ptr::null_mut())
        };
        if installed != 0 {
            tracing::warn!(
                "cannot install the SIGBUS guard: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

/// The `SIGBUS` handler. Async-signal-safe: it loads atomics, and calls only
/// `mmap`, `sigaction` and `raise` (system calls that take no lock in this
/// process); it neither allocates nor panics.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel hands an `SA_SIGINFO` handler a valid siginfo_t;
    // `si_addr` is meaningful for the fault codes, checked below.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR {
        for chunk in chunks() {
            for slot in &chunk.slots {
                let Some((start, end)) = slot.get() else {
                    continue;
                };
                if (start..end).contains(&address) && zero_fill(address, end) {
                    slot.faulted.store(true, SeqCst);
                    return;
                }
            }
        }
    }
    forward(signal, info, context);
}

/// Maps anonymous zero pages, read-only, from the page of `address` to `end`.
fn zero_fill(address: usize, end: usize) -> bool {
    let page = address & !(PAGE_SIZE.load(SeqCst) - 1);
    let len = end.wrapping_sub(page);
    // SAFETY: `[page, end)` lies inside a registered file mapping (from the
    // page of the faulting address to the mapping's end; the mapping starts on
    // a page boundary), which stays mapped while registered: no other memory
    // is replaced. The owner only reads it, so read-only zeros are what it
    // sees instead of the lost file pages; unmapping it later unmaps these
    // pages too.
    let mapped = unsafe {
        libc::mmap(
            page as *mut c_void,
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    mapped != libc::MAP_FAILED
}

/// Hands a `SIGBUS` that is not ours to the previous handler, or ends the
/// process as the default action does.
fn forward(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS_HANDLER.load(SeqCst);
    let flags = PREVIOUS_FLAGS.load(SeqCst) as c_int;
    // SAFETY: `info` is the kernel's siginfo_t (see `on_sigbus`).
    let sent = unsafe { (*info).si_code } <= 0;
    if previous == libc::SIG_IGN && sent {
        // Ignored, and sent by kill(): nothing faulted, nothing to do.
        return;
    }
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        // SAFETY: all-zero is a valid `sigaction` (SIG_DFL); restoring the
        // default action and raising the signal again (it is delivered when
        // this handler returns; a fault would also recur) ends the process
        // with SIGBUS, as if the guard were not there.
        unsafe {
            let default: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, &default, ptr::null_mut());
            libc::raise(signal);
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: `previous` was installed with SA_SIGINFO, so it is a handler
        // of this signature, called with what the kernel gave us.
        let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(previous) };
        handler(signal, info, context);
    } else {
        // SAFETY: `previous` was installed without SA_SIGINFO, so it is a
        // plain `void (*)(int)` handler.
        let handler: extern "C" fn(c_int) = unsafe { std::mem::transmute(previous) };
        handler(signal);
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;

    use memmap2::Mmap;

    use super::*;

    /// A file of `pages` pages of `b'x'` under the temporary folder.
    fn scratch(name: &str, pages: usize) -> (PathBuf, File) {
        let path = std::env::temp_dir().join(format!("coop-sigbus-{}-{name}", std::process::id()));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(&vec![b'x'; pages * 4096]).unwrap();
        (path, file)
    }

    fn read_volatile(bytes: &[u8], at: usize) -> u8 {
        // SAFETY: `at` is in bounds of `bytes`; volatile so that the read is
        // not elided or moved.
        unsafe { ptr::read_volatile(bytes.as_ptr().add(at)) }
    }

    #[test]
    fn reads_past_a_truncated_end_are_zeros_and_flagged() {
        let (path, file) = scratch("guarded", 4);
        // SAFETY: the test owns the file; truncating it is what it tests.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let guard = Guard::register(map.as_ptr(), map.len());
        assert_eq!(read_volatile(&map, 3 * 4096), b'x');
        assert!(!guard.faulted());
        file.set_len(4096 + 100).unwrap();
        assert_eq!(read_volatile(&map, 0), b'x');
        assert_eq!(read_volatile(&map, 4096 + 99), b'x');
        assert!(!guard.faulted(), "the last page is still backed");
        assert_eq!(read_volatile(&map, 3 * 4096 + 7), 0);
        assert!(guard.faulted());
        assert_eq!(read_volatile(&map, 2 * 4096), 0);
        assert!(map[2 * 4096..].iter().all(|&b| b == 0));
        drop(guard);
        drop(map);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn many_guards_grow_the_registry_and_free_their_slots() {
        let guards: Vec<Guard> = (0..3 * CHUNK_SLOTS)
            .map(|i| Guard::register((4096 * (i + 1)) as *const u8, 10))
            .collect();
        let registered = |address: usize| {
            chunks()
                .flat_map(|c| c.slots.iter())
                .filter_map(Slot::get)
                .any(|(start, end)| (start..end).contains(&address))
        };
        assert!(registered(4096 * 100 + 5));
        drop(guards);
        assert!(!registered(4096 * 100 + 5));
    }

    /// Run in a child process by `unguarded_sigbus_still_kills`, which names
    /// the scratch file.
    #[test]
    fn child_reads_unguarded_truncated_mapping() {
        let Some(path) = std::env::var_os("COOP_SIGBUS_CHILD") else {
            return;
        };
        let mut file = File::options().read(true).write(true).open(path).unwrap();
        file.write_all(&[b'x'; 2 * 4096]).unwrap();
        // SAFETY: the test owns the file; the fault is what it tests.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        // Another mapping is guarded, so the handler is installed.
        let _other = Guard::register(4096 as *const u8, 4096);
        file.set_len(0).unwrap();
        read_volatile(&map, 4096);
        std::process::exit(0);
    }

    #[test]
    fn unguarded_sigbus_still_kills() {
        let (path, _file) = scratch("unguarded", 0);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigbus::tests::child_reads_unguarded_truncated_mapping",
            ])
            .env("COOP_SIGBUS_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    }
}
