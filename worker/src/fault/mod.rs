//! Fault injection, for tests only (feature `fault-injection`, off by default
//! and never enabled by release builds of the example binaries).
//!
//! A test asks a pool (`coop::PoolBuilder::inject_fault`) to start some of its
//! workers with a [`Fault`]; the fault travels in the worker's environment
//! ([`ENV_FAULT`]) and fires at one [`Point`] of the worker's life with one
//! [`Behaviour`]. Nothing here runs unless that variable is set.
//!
//! - [`Point`]: where in the worker's life the fault fires.
//! - [`Behaviour`]: what the worker does then.
//! - [`Fault`]: the two, which task, and whether it fires once per test.
//!
//! The handshake points fire in the pool's handshake; the others in a layer
//! around the worker's [`Link`](crate::Link) and its job instances
//! (`layer`), so that the task loop itself knows nothing of faults.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod layer;

pub(crate) use layer::{Breakable, FaultyLink};

/// Environment variable carrying a worker's [`Fault`], in its text form.
pub const ENV_FAULT: &str = "COOP_WORKER_FAULT";

/// Where in a worker's life a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// At start, before connecting to the coordinator.
    BeforeConnect,
    /// Connected, instead of or before sending the hello.
    Handshake,
    /// In a task, after the job's `map` ran and before the result is reported.
    Task,
    /// While writing a task's output tile: half of the tile is overwritten
    /// with garbage, then the behaviour follows.
    Tile,
    /// While sending the worker's partial (after encoding, before sending).
    Partial,
    /// Right after the partial was sent.
    AfterPartial,
}

/// What a worker does when its fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// `exit(1)`.
    Exit,
    /// Sends itself `SIGKILL`.
    Kill,
    /// `abort()` (`SIGABRT`).
    Abort,
    /// Panics (caught and reported where user code would be caught).
    Panic,
    /// Sleeps forever.
    Hang,
    /// Allocates and touches memory until the allocator fails; a cap on the
    /// address space (`RLIMIT_AS`, 128 MiB above the current size) makes that
    /// happen quickly and without putting the test machine at risk.
    Oom,
    /// Sends a message that does not decode (for [`Point::Partial`]: a
    /// well-formed partial message whose bytes do not decode).
    Garbage,
    /// Closes its channel to the coordinator and keeps running, idle.
    CloseChannel,
}

/// A fault for a worker: where, what, which task, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Fault does nothing until given to PoolBuilder::inject_fault"]
pub struct Fault {
    /// Where it fires.
    pub point: Point,
    /// What the worker does.
    pub behaviour: Behaviour,
    /// For [`Point::Task`] and [`Point::Tile`]: only in this task (by index in
    /// the job's split); `None`: in any task.
    pub task: Option<u32>,
    /// Fires only in the first process that creates this file (so a retry
    /// succeeds); `None`: fires every time the point is reached.
    pub once: Option<PathBuf>,
}

impl Fault {
    /// A fault that fires every time `point` is reached, in any task.
    pub fn new(point: Point, behaviour: Behaviour) -> Self {
        Fault {
            point,
            behaviour,
            task: None,
            once: None,
        }
    }

    /// Only in task `task`.
    pub fn in_task(mut self, task: u32) -> Self {
        self.task = Some(task);
        self
    }

    /// Only once, across all processes: the first to create `marker` fires.
    pub fn once(mut self, marker: impl Into<PathBuf>) -> Self {
        self.once = Some(marker.into());
        self
    }

    /// The fault of this worker process, read from [`ENV_FAULT`]; always
    /// `None` without the feature `fault-injection`.
    #[cfg(not(feature = "fault-injection"))]
    pub fn from_env() -> Option<Fault> {
        None
    }

    /// The fault of this worker process, read from [`ENV_FAULT`].
    #[cfg(feature = "fault-injection")]
    pub fn from_env() -> Option<Fault> {
        let text = std::env::var(ENV_FAULT).ok()?;
        match text.parse() {
            Ok(fault) => Some(fault),
            Err(err) => {
                eprintln!("coop worker: ignoring {ENV_FAULT}={text:?}: {err}");
                None
            }
        }
    }

    /// Whether the fault fires at `point` in task `task` (`None` outside tasks),
    /// claiming the once-marker if there is one.
    pub fn fires(&self, point: Point, task: Option<u32>) -> bool {
        if self.point != point || self.task.is_some_and(|wanted| task != Some(wanted)) {
            return false;
        }
        match &self.once {
            None => true,
            Some(marker) => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
                .is_ok(),
        }
    }
}

const POINTS: [(Point, &str); 6] = [
    (Point::BeforeConnect, "before-connect"),
    (Point::Handshake, "handshake"),
    (Point::Task, "task"),
    (Point::Tile, "tile"),
    (Point::Partial, "partial"),
    (Point::AfterPartial, "after-partial"),
];

const BEHAVIOURS: [(Behaviour, &str); 8] = [
    (Behaviour::Exit, "exit"),
    (Behaviour::Kill, "kill"),
    (Behaviour::Abort, "abort"),
    (Behaviour::Panic, "panic"),
    (Behaviour::Hang, "hang"),
    (Behaviour::Oom, "oom"),
    (Behaviour::Garbage, "garbage"),
    (Behaviour::CloseChannel, "close-channel"),
];

impl Point {
    /// Every point, in the order of a worker's life.
    pub const ALL: [Point; 6] = firsts(POINTS);
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 8] = firsts(BEHAVIOURS);
}

/// The values of a name table, in its order.
const fn firsts<T: Copy, const N: usize>(table: [(T, &str); N]) -> [T; N] {
    let mut all = [table[0].0; N];
    let mut i = 1;
    while i < N {
        all[i] = table[i].0;
        i += 1;
    }
    all
}

fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> &'static str {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("?", |(_, name)| name)
}

fn parse_name<T: Copy>(table: &[(T, &'static str)], text: &str, what: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(_, name)| *name == text)
        .map(|(v, _)| *v)
        .ok_or_else(|| {
            let names: Vec<_> = table.iter().map(|(_, name)| *name).collect();
            format!("unknown {what} {text:?} (expected one of {})", names.join(", "))
        })
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&POINTS, *self))
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&BEHAVIOURS, *self))
    }
}

/// The text form, `POINT:BEHAVIOUR[:task=N][:once=PATH]`, as in the environment.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.point, self.behaviour)?;
        if let Some(task) = self.task {
            write!(f, ":task={task}")?;
        }
        if let Some(marker) = &self.once {
            write!(f, ":once={}", marker.display())?;
        }
        Ok(())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let point = parse_name(&POINTS, parts.next().unwrap_or(""), "fault point")?;
        let behaviour = parse_name(&BEHAVIOURS, parts.next().unwrap_or(""), "fault behaviour")?;
        let mut fault = Fault::new(point, behaviour);
        let mut rest = parts.next().unwrap_or("");
        while !rest.is_empty() {
            if let Some(path) = rest.strip_prefix("once=") {
                // The path is last and may contain ':'.
                fault.once = Some(PathBuf::from(path));
                break;
            }
            let (option, tail) = rest.split_once(':').unwrap_or((rest, ""));
            let task = option
                .strip_prefix("task=")
                .ok_or_else(|| format!("unknown fault option {option:?}"))?;
            fault.task = Some(task.parse().map_err(|_| format!("bad task index {task:?}"))?);
            rest = tail;
        }
        Ok(fault)
    }
}

/// What the worker must do after a fault that leaves it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aftermath {
    /// Send a message that does not decode.
    SendGarbage,
    /// Close the channel to the coordinator and idle.
    CloseChannel,
}

/// Carries out `behaviour` at `point`. Behaviours that end the process do not
/// return; the two that need the worker's channel are handed back.
pub(crate) fn strike(point: Point, behaviour: Behaviour) -> Aftermath {
    match behaviour {
        Behaviour::Exit => std::process::exit(1),
        Behaviour::Kill => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            unreachable!("SIGKILL cannot be caught")
        }
        Behaviour::Abort => std::process::abort(),
        Behaviour::Panic => panic!("injected fault: panic at {point}"),
        Behaviour::Hang => idle(),
        Behaviour::Oom => exhaust_memory(),
        Behaviour::Garbage => Aftermath::SendGarbage,
        Behaviour::CloseChannel => Aftermath::CloseChannel,
    }
}

/// Sleeps forever (until killed).
pub(crate) fn idle() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn exhaust_memory() -> ! {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The allocator's last words ("memory allocation of N bytes failed" and
    // a backtrace) would land among the output of the tests that asked for
    // this: they expect the death, and check how the coordinator reports it.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open; replacing standard error
        // invalidates no Rust object (the standard library writes to fd 2
        // by number, whatever file it is).
        unsafe { nix::libc::dup2(null.as_raw_fd(), 2) };
    }
    let size = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(1 << 30, |pages| pages * 4096);
    let cap = size + (128 << 20);
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_AS) {
        let _ = setrlimit(Resource::RLIMIT_AS, cap.min(hard), hard);
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touched, so that the pages are real; the allocator's failure aborts.
        hoard.push(vec![1u8; 4 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// A message that decodes as no `FromWorker`: an out-of-range variant index
/// followed by noise. ipc-channel frames it; the content is what is wrong.
#[derive(Serialize, Deserialize)]
pub(crate) struct Garbage(u32, Vec<u8>);

impl Garbage {
    pub(crate) fn new() -> Self {
        Garbage(0xDEAD_BEEF, (0..=255).collect())
    }
}

/// Partial bytes no decoder accepts: a varint that never ends.
pub(crate) const GARBAGE_PARTIAL: [u8; 24] = [0xFF; 24];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for point in Point::ALL {
            for behaviour in Behaviour::ALL {
                for fault in [
                    Fault::new(point, behaviour),
                    Fault::new(point, behaviour).in_task(7),
                    Fault::new(point, behaviour).once("/tmp/a:b/marker"),
                    Fault::new(point, behaviour).in_task(0).once("/m"),
                ] {
                    assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
                }
            }
        }
    }

    #[test]
    fn bad_text_is_explained() {
        let err = "later:exit".parse::<Fault>().unwrap_err();
        assert!(err.contains("unknown fault point \"later\""), "{err}");
        let err = "task:explode".parse::<Fault>().unwrap_err();
        assert!(err.contains("fault behaviour"), "{err}");
        assert!("task:exit:task=x".parse::<Fault>().is_err());
        assert!("task:exit:color=red".parse::<Fault>().is_err());
    }

    #[test]
    fn fires_only_at_its_point_task_and_once() {
        let fault = Fault::new(Point::Task, Behaviour::Exit).in_task(3);
        assert!(!fault.fires(Point::Partial, None));
        assert!(!fault.fires(Point::Task, Some(2)));
        assert!(fault.fires(Point::Task, Some(3)));
        assert!(fault.fires(Point::Task, Some(3)));

        let dir = std::env::temp_dir().join(format!("coop-fault-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let once = Fault::new(Point::Partial, Behaviour::Kill).once(dir.join("marker"));
        assert!(once.fires(Point::Partial, None));
        assert!(!once.fires(Point::Partial, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
