//! Memory of a set of processes as the sum of their proportional set sizes
//! (PSS, from `/proc/PID/smaps_rollup`): a page shared by k processes counts
//! 1/k in each, so the sum counts shared memory (the input regions every
//! worker maps) once, and each process's private memory fully.
//!
//! [`PssSampler`] samples that sum in a thread while a job runs and keeps the
//! peak. Reading `smaps_rollup` walks the process's page tables, which costs
//! CPU time next to the job being measured: the sampler waits at least
//! [`COST_FACTOR`] times as long as its last sample took, keeping its own
//! share of one core under about `1 / COST_FACTOR`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sampler waits at least this many times its last sample's cost.
pub const COST_FACTOR: u32 = 20;

/// The value of the `Pss:` line of a `smaps_rollup` text, in bytes.
pub fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    let line = smaps_rollup.lines().find(|line| line.starts_with("Pss:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// The proportional set size of process `pid`, in bytes.
pub fn pss_bytes(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    parse_pss(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Pss: line in smaps_rollup"))
}

/// The sum of the PSS of `pids`, leaving out processes that cannot be read
/// (gone, or no `smaps_rollup` on this kernel); `None` if none could.
pub fn total_pss(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .filter_map(|&pid| pss_bytes(pid).ok())
        .fold(None, |sum, pss| Some(sum.unwrap_or(0) + pss))
}

/// What a [`PssSampler`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeakPss {
    /// The largest sum of PSS over the processes, in bytes; `None` if no
    /// sample could be read.
    pub peak_bytes: Option<u64>,
    /// Samples taken.
    pub samples: u32,
    /// Time spent taking them (the sampler's own CPU cost, roughly).
    pub sampling: Duration,
}

/// A thread that samples the summed PSS of some processes every `interval`
/// (or less often, see [`COST_FACTOR`]) until stopped, and keeps the peak.
/// It takes one sample as it starts and one after it is stopped.
#[derive(Debug)]
pub struct PssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<PeakPss>,
}

impl PssSampler {
    /// Starts sampling `pids`; the first sample is taken before this returns.
    pub fn start(pids: Vec<u32>, interval: Duration) -> PssSampler {
        let mut peak = PeakPss::default();
        sample(&pids, &mut peak);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pss-sampler".into())
            .spawn(move || {
                loop {
                    let cost = sample(&pids, &mut peak);
                    if stopped.load(Ordering::Acquire) {
                        return peak;
                    }
                    std::thread::park_timeout(interval.max(cost * COST_FACTOR));
                    // Stopped while parked: the loop takes one last sample.
                }
            })
            .expect("spawning the PSS sampler thread");
        PssSampler { stop, thread }
    }

    /// Stops the thread after one last sample and returns what it saw.
    pub fn stop(self) -> PeakPss {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        self.thread.join().unwrap_or_default()
    }
}

/// Takes one sample into `peak`; returns how long it took.
fn sample(pids: &[u32], peak: &mut PeakPss) -> Duration {
    let started = Instant::now();
    if let Some(total) = total_pss(pids) {
        peak.peak_bytes = Some(peak.peak_bytes.map_or(total, |p| p.max(total)));
    }
    let cost = started.elapsed();
    peak.samples += 1;
    peak.sampling += cost;
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLUP: &str = "\
55d1c6a2e000-7ffd7c5f3000 ---p 00000000 00:00 0                          [rollup]
Rss:               10240 kB
Pss:                4410 kB
Pss_Anon:           2048 kB
Shared_Clean:       5000 kB
";

    #[test]
    fn pss_line_is_parsed_in_bytes() {
        assert_eq!(parse_pss(ROLLUP), Some(4410 * 1024));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
        assert_eq!(parse_pss("Pss: many kB\n"), None);
    }

    fn have_rollup() -> bool {
        std::path::Path::new("/proc/self/smaps_rollup").exists()
    }

    #[test]
    fn own_process_has_a_pss_and_missing_ones_are_left_out() {
        if !have_rollup() {
            return;
        }
        let me = std::process::id();
        assert!(pss_bytes(me).unwrap() > 0);
        assert_eq!(total_pss(&[u32::MAX]), None);
        let both = total_pss(&[me, u32::MAX]).unwrap();
        assert!(both > 0);
    }

    #[test]
    fn sampler_sees_a_transient_allocation() {
        if !have_rollup() {
            return;
        }
        let before = total_pss(&[std::process::id()]).unwrap();
        let sampler = PssSampler::start(vec![std::process::id()], Duration::from_millis(2));
        {
            // 64 MiB, touched, held for a while, then freed.
            let block = vec![1u8; 64 << 20];
            std::thread::sleep(Duration::from_millis(150));
            std::hint::black_box(&block);
        }
        let seen = sampler.stop();
        assert!(seen.samples >= 3, "{seen:?}");
        let peak = seen.peak_bytes.unwrap();
        assert!(peak >= before + (48 << 20), "peak {peak}, before {before}");
    }
}
