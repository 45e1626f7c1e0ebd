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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the comm.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub(super) fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
