//! CPU time of a process from `/proc`, with no raw system calls.
//!
//! Two figures per process:
//! * `utime + stime` from `/proc/<pid>/stat`, in clock ticks (the figure the issue asks for,
//!   converted with `CLK_TCK`, read once from `getconf CLK_TCK` since `sysconf` is a raw
//!   libc call and those are confined to `crates/uring`);
//! * the sum of `/proc/<pid>/task/*/schedstat`'s first field (nanoseconds on a CPU, per thread),
//!   a finer-grained cross-check that does not depend on tick sampling.

use std::fs;
use std::io;
use std::time::Duration;

/// CPU time of a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// `utime + stime` in clock ticks.
    pub ticks: u64,
    /// Sum of the threads' on-CPU time in nanoseconds (`schedstat`), if readable.
    pub sched_ns: Option<u64>,
}

/// Which process to sample.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// This process.
    OurSelf,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::OurSelf => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Clock ticks per second for `/proc/*/stat` times: `getconf CLK_TCK`, or 100 (the value on
/// every Linux architecture turnstile runs on) if `getconf` is unavailable.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Resident set size of process `pid` now (`VmRSS` of `/proc/<pid>/status`), in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// Reads the CPU time of `pid` now.
pub fn sample(pid: Pid) -> io::Result<CpuSample> {
    let dir = pid.dir();
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected format of {dir}/stat"),
        )
    })?;
    Ok(CpuSample {
        ticks,
        sched_ns: sched_ns(&dir),
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')' comes field 3 (state); utime is field 14, i.e. the 12th token from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn sched_ns(dir: &str) -> Option<u64> {
    let mut total = 0u64;
    for entry in fs::read_dir(format!("{dir}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread that exited between the listing and the read contributes nothing.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        total += text.split_ascii_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// One thread of a process at one instant: where it runs and how often it was switched out.
#[derive(Debug, Clone, Default)]
pub struct ThreadSample {
    /// Thread id.
    pub tid: u32,
    /// Thread name (`comm`, at most 15 bytes).
    pub name: String,
    /// On-CPU nanoseconds (`schedstat`, first field).
    pub sched_ns: u64,
    /// Nanoseconds spent runnable but waiting for a CPU (`schedstat`, second field).
    pub wait_ns: u64,
    /// The CPU it last ran on (`stat` field 39).
    pub last_cpu: Option<u32>,
    /// Voluntary context switches (it blocked).
    pub voluntary: u64,
    /// Involuntary context switches (it was preempted).
    pub involuntary: u64,
    /// Migrations between CPUs (`sched`, when the kernel provides it).
    pub migrations: Option<u64>,
}

/// Every thread of `pid` now. Threads that exit while being read are skipped.
pub fn threads(pid: Pid) -> io::Result<Vec<ThreadSample>> {
    let dir = pid.dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("{dir}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let read = |f: &str| fs::read_to_string(path.join(f)).ok();
        let (Some(stat), Some(schedstat), Some(status)) =
            (read("stat"), read("schedstat"), read("status"))
        else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let migrations = read("sched").and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("se.nr_migrations"))
                .and_then(|l| l.rsplit(':').next())
                .and_then(|v| v.trim().parse().ok())
        });
        let mut schedstat = schedstat
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        out.push(ThreadSample {
            tid,
            name: read("comm").unwrap_or_default().trim().to_owned(),
            sched_ns: schedstat.next().unwrap_or(0),
            wait_ns: schedstat.next().unwrap_or(0),
            last_cpu: parse_stat_field(&stat, 39),
            voluntary: field("voluntary_ctxt_switches:"),
            involuntary: field("nonvoluntary_ctxt_switches:"),
            migrations,
        });
    }
    Ok(out)
}

/// Field `n` (1-based, as in proc(5)) of a `stat` line, for fields after the command name.
pub fn parse_stat_field<T: std::str::FromStr>(stat: &str, n: usize) -> Option<T> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// What one thread did between two samples.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ThreadDelta {
    /// Thread name.
    pub name: String,
    /// Cores kept busy (on-CPU time over the window).
    pub busy: f64,
    /// Time spent runnable but waiting for a CPU, over the window (0.1 = waited 10% of it).
    pub waiting: f64,
    /// CPU it last ran on, at the end of the window.
    pub last_cpu: Option<u32>,
    /// Voluntary context switches (blocking) in the window.
    pub voluntary_switches: u64,
    /// Involuntary context switches (preemption) in the window.
    pub involuntary_switches: u64,
    /// CPU migrations in the window.
    pub migrations: Option<u64>,
}

/// Per-thread activity over a window of `secs` seconds, for threads present at both edges that
/// did anything.
pub fn thread_deltas(start: &[ThreadSample], end: &[ThreadSample], secs: f64) -> Vec<ThreadDelta> {
    let mut out = Vec::new();
    for e in end {
        let Some(s) = start.iter().find(|s| s.tid == e.tid) else {
            continue;
        };
        let busy = e.sched_ns.saturating_sub(s.sched_ns) as f64 / 1e9 / secs.max(1e-9);
        let voluntary_switches = e.voluntary.saturating_sub(s.voluntary);
        let involuntary_switches = e.involuntary.saturating_sub(s.involuntary);
        if busy < 0.001 && voluntary_switches + involuntary_switches == 0 {
            continue;
        }
        out.push(ThreadDelta {
            name: e.name.clone(),
            busy,
            waiting: e.wait_ns.saturating_sub(s.wait_ns) as f64 / 1e9 / secs.max(1e-9),
            last_cpu: e.last_cpu,
            voluntary_switches,
            involuntary_switches,
            migrations: match (s.migrations, e.migrations) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The whole machine's CPU time (`/proc/stat`, first line), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineSample {
    /// Time not idle: user, nice, system, irq, softirq, steal.
    pub busy: u64,
    /// Of which at a positive nice value (typically background builds).
    pub nice: u64,
    /// Idle and iowait.
    pub idle: u64,
    /// Time the hypervisor ran something else.
    pub steal: u64,
}

/// Reads `/proc/stat` now.
pub fn machine() -> io::Result<MachineSample> {
    let stat = fs::read_to_string("/proc/stat")?;
    parse_proc_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/stat"))
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal [guest…]
/// (guest time is already counted in user and nice).
pub fn parse_proc_stat(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(MachineSample {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        nice: at(1),
        idle: at(3) + at(4),
        steal: at(7),
    })
}

/// The machine over a window, in cores (CPU seconds per second).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct MachineDelta {
    /// Cores busy, all processes together.
    pub busy_cores: f64,
    /// Cores busy at a positive nice value.
    pub nice_cores: f64,
    /// Cores idle.
    pub idle_cores: f64,
    /// Cores taken by the hypervisor.
    pub steal_cores: f64,
}

impl MachineDelta {
    /// `end - start` over `secs` seconds, ticks at `ticks_per_sec`.
    pub fn between(a: MachineSample, b: MachineSample, secs: f64, ticks_per_sec: u64) -> Self {
        let cores = |x: u64, y: u64| {
            y.saturating_sub(x) as f64 / ticks_per_sec.max(1) as f64 / secs.max(1e-9)
        };
        MachineDelta {
            busy_cores: cores(a.busy, b.busy),
            nice_cores: cores(a.nice, b.nice),
            idle_cores: cores(a.idle, b.idle),
            steal_cores: cores(a.steal, b.steal),
        }
    }
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy)]
pub struct CpuDelta {
    /// From `utime + stime`.
    pub stat: Duration,
    /// From `schedstat`, when both samples had it.
    pub sched: Option<Duration>,
}

impl CpuDelta {
    /// `end - start`, with ticks converted at `ticks_per_sec`.
    pub fn between(start: CpuSample, end: CpuSample, ticks_per_sec: u64) -> CpuDelta {
        let ticks = end.ticks.saturating_sub(start.ticks);
        let stat = Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_sec.max(1));
        let sched = match (start.sched_ns, end.sched_ns) {
            (Some(a), Some(b)) => Some(Duration::from_nanos(b.saturating_sub(a))),
            _ => None,
        };
        CpuDelta { stat, sched }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn stat_field_numbers_follow_proc5() {
        let line = "1234 (a b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75";
        assert_eq!(parse_stat_field::<char>(line, 3), Some('S'));
        assert_eq!(parse_stat_field::<u64>(line, 14), Some(250));
        assert_eq!(parse_stat_field::<u64>(line, 2), None);
        assert_eq!(parse_stat_field::<u64>(line, 39), None);
    }

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  100 50 30 1000 5 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        let m = parse_proc_stat(text).expect("cpu line");
        assert_eq!((m.busy, m.nice, m.idle, m.steal), (186, 50, 1005, 3));
        assert!(machine().is_ok());
    }

    #[test]
    fn our_threads_are_listed() {
        let t = threads(Pid::OurSelf).expect("/proc/self/task");
        assert!(!t.is_empty());
        assert!(t.iter().all(|t| t.last_cpu.is_some()));
    }

    #[test]
    fn our_own_cpu_is_readable_and_grows() {
        let a = sample(Pid::OurSelf).expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = sample(Pid::OurSelf).expect("/proc/self/stat");
        let d = CpuDelta::between(a, b, clock_ticks_per_sec());
        assert!(d.sched.is_some_and(|s| s > Duration::ZERO));
    }
}
