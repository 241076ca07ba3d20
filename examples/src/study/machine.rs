//! The machine around a measurement: CPU time used by the study's own
//! processes and by everything else (from `/proc/stat` and
//! `/proc/PID/stat`), so that a table can say when other programs were
//! competing for the cores; and trimming the coordinator's heap so that
//! memory freed by earlier runs is not counted in later ones.

use std::io;

/// Clock ticks per second of the times in `/proc` (`USER_HZ`).
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time of the whole machine, all cores together, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Time spent running anything: user, nice, system, irq and softirq.
    pub busy: f64,
    /// Time the hypervisor gave to other virtual machines while this one
    /// wanted to run (steal).
    pub steal: f64,
}

/// Parses the `cpu` line of `/proc/stat` (in ticks) into seconds.
pub fn parse_machine_cpu(proc_stat: &str, ticks_per_second: f64) -> Option<MachineCpu> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is in user)
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    if fields.len() < 4 {
        return None;
    }
    Some(MachineCpu {
        busy: (at(0) + at(1) + at(2) + at(5) + at(6)) / ticks_per_second,
        steal: at(7) / ticks_per_second,
    })
}

/// The machine's CPU time so far.
pub fn machine_cpu() -> io::Result<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_machine_cpu(&text, clock_ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no cpu line in /proc/stat"))
}

/// Parses user + system time (all threads, no children) from a
/// `/proc/PID/stat` text, in seconds.
pub fn parse_process_cpu(pid_stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name, in parentheses, may hold spaces: count fields after it.
    let rest = &pid_stat[pid_stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// User + system time of process `pid` so far, in seconds.
pub fn process_cpu(pid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_process_cpu(&text, clock_ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

/// CPU times of the machine and of a set of processes at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSnapshot {
    machine: MachineCpu,
    ours: f64,
}

/// How CPU time was shared between two snapshots, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuShare {
    /// Used by the processes the snapshots followed.
    pub ours: f64,
    /// Used by every other process on the machine (never below zero).
    pub others: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl std::ops::AddAssign for CpuShare {
    fn add_assign(&mut self, other: CpuShare) {
        self.ours += other.ours;
        self.others += other.others;
        self.steal += other.steal;
    }
}

impl CpuSnapshot {
    /// The machine's CPU time and that of `pids` (processes that cannot be
    /// read count nothing); `None` without `/proc/stat`.
    pub fn take(pids: &[u32]) -> Option<CpuSnapshot> {
        let machine = machine_cpu().ok()?;
        let ours = pids.iter().filter_map(|&pid| process_cpu(pid).ok()).sum();
        Some(CpuSnapshot { machine, ours })
    }

    /// What happened between `self` and `later`, for the same processes.
    pub fn until(&self, later: &CpuSnapshot) -> CpuShare {
        let ours = (later.ours - self.ours).max(0.0);
        CpuShare {
            ours,
            others: (later.machine.busy - self.machine.busy - ours).max(0.0),
            steal: (later.machine.steal - self.machine.steal).max(0.0),
        }
    }
}

/// Fixes glibc's thresholds so that freed memory goes back to the system:
/// blocks of 128 KiB or more are unmapped when freed, and free memory over
/// 128 KiB at the top of an arena is trimmed. By default glibc raises both
/// after large frees (the trim threshold up to 64 MiB per arena, where
/// `malloc_trim` does not reach): in a study that runs many engines in one
/// process, earlier runs' tables stayed resident (about 150 MB after one
/// round of word count) and were counted in later runs' memory. Does nothing
/// elsewhere.
///
/// Only this process: worker processes keep glibc's defaults. Passing the
/// same thresholds to them (`GLIBC_TUNABLES`) was tried: it made word count
/// over messages 17 % slower (ipc-channel takes a new 212 KB buffer for
/// every message it receives, which was then mapped afresh each time), and
/// in paired runs the threads engine was no faster with glibc's defaults
/// than with these (0.51 to 0.57 s either way).
pub fn give_freed_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// Gives the coordinator's free heap memory back to the system (glibc's
/// `malloc_trim`), so that what earlier runs freed is not resident and
/// counted in the next run's memory. Does nothing elsewhere.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_line_is_parsed() {
        let text = "cpu  100 20 30 4000 50 6 4 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let cpu = parse_machine_cpu(text, 100.0).unwrap();
        assert!((cpu.busy - 1.6).abs() < 1e-12, "{cpu:?}");
        assert!((cpu.steal - 0.08).abs() < 1e-12, "{cpu:?}");
        assert_eq!(parse_machine_cpu("intr 1 2\n", 100.0), None);
    }

    #[test]
    fn pid_stat_is_parsed_past_a_name_with_spaces() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 7 9 20 0 1 0 5 0 0";
        assert_eq!(parse_process_cpu(text, 100.0), Some(3.0));
        assert_eq!(parse_process_cpu("42 (x) S 1", 100.0), None);
    }

    #[test]
    fn own_work_is_counted_as_ours() {
        let me = [std::process::id()];
        let Some(before) = CpuSnapshot::take(&me) else {
            return; // no /proc
        };
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let share = before.until(&CpuSnapshot::take(&me).unwrap());
        assert!(share.ours >= 0.1, "{share:?}");
        trim_heap();
    }
}
