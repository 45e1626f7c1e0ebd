//! A process's CPU time and peak RSS, sampled from /proc while it runs.

use std::time::{Duration, Instant};

/// Samples a process's CPU time and peak RSS from /proc while it runs.
pub(super) struct Sampler {
    pid: u32,
    ticks_per_sec: f64,
    start_ticks: u64,
    started: Instant,
    peak_rss_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(pid: u32) -> Self {
        let peak =
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let task_peak = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_kib(pid) {
                    task_peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            pid,
            ticks_per_sec: ticks_per_sec(),
            start_ticks: cpu_ticks(pid).unwrap_or(0),
            started: Instant::now(),
            peak_rss_kib: peak,
            task,
        }
    }

    /// (CPU % of one core, peak RSS MiB) since start. The peak is also the
    /// kernel's own high-water mark (`VmHWM`, since the process started) when
    /// that is higher: a spike between two samples still counts.
    pub(super) fn finish(self) -> (f64, f64) {
        let ticks = cpu_ticks(self.pid).unwrap_or(self.start_ticks) - self.start_ticks;
        let cpu = ticks as f64 / self.ticks_per_sec / self.started.elapsed().as_secs_f64() * 100.0;
        self.task.abort();
        let sampled = self.peak_rss_kib.load(std::sync::atomic::Ordering::Relaxed);
        let peak = sampled.max(status_kib(self.pid, "VmHWM:").unwrap_or(0)) as f64 / 1024.0;
        (cpu, peak)
    }
}

pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(pid, false).map(|(_, ticks)| ticks)
}

/// A process's command name and CPU ticks from `/proc/<pid>/stat`, with its
/// reaped children's when `children`.
fn stat_ticks(pid: u32, children: bool) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14 to 17 of stat; 12 to 15
    // after the comm.
    let count = if children { 4 } else { 2 };
    let ticks = fields
        .get(11..11 + count)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((comm, ticks))
}

/// CPU ticks of every `postgres` process now, with their reaped children's:
/// a backend that ended between two readings is in the postmaster's
/// children by the second, so the difference stays whole.
pub(super) fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat_ticks(pid, true))
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, ticks)| ticks)
        .sum()
}

/// The machine's CPU time from `/proc/stat`: (busy, total) ticks over all cores.
#[derive(Debug, Clone, Copy)]
pub(super) struct MachineTicks {
    busy: u64,
    total: u64,
}

impl MachineTicks {
    pub(super) fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal; idle and iowait are not busy.
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }

    /// The share of all cores busy since `before`, 0 to 1.
    pub(super) fn busy_share_since(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1);
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

pub(super) fn ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
