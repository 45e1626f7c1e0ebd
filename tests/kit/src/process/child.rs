//! A service binary running as a child process: readiness, signals,
//! restarts, its resident set size and its last log lines.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{ProcessConfig, binaries::remove_inherited, binary_path, prepare_binaries};
use crate::metrics::{self, Metrics};

/// Lines of a process's output kept for panic messages.
const LOG_TAIL_LINES: usize = 60;

/// Deadline for a process to become ready (or not).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or exited) service process. Dropping it kills the process.
#[derive(Debug)]
pub struct Process {
    config: ProcessConfig,
    child: Child,
    /// Set once the process has been reaped; its pid must not be signalled after.
    exit: Option<ExitStatus>,
    log: Arc<Mutex<VecDeque<String>>>,
    http: reqwest::Client,
}

impl Process {
    /// Spawns the process (building the binaries first if needed); does not
    /// wait for readiness.
    pub async fn start(config: ProcessConfig) -> Self {
        crate::init_test_logging();
        prepare_binaries().await;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let child = spawn(&config, &log);
        Self {
            config,
            child,
            exit: None,
            log,
            http: fresh_connections(),
        }
    }

    /// Spawns the process and waits until `/readyz` answers 200.
    pub async fn start_ready(config: ProcessConfig) -> Self {
        let process = Self::start(config).await;
        process.wait_ready(true).await;
        process
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// Operating-system process id (of the current incarnation).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Admin port.
    pub fn admin_port(&self) -> u16 {
        self.config.admin_port
    }

    /// `http://127.0.0.1:<listen port>` (ingress only): what
    /// `corral-loadgen` takes as its target.
    pub fn base_url(&self) -> String {
        crate::base_url(self.listen_port())
    }

    /// `http://127.0.0.1:<listen port>/webhooks/dropcowboy/<kind>` (ingress only).
    pub fn webhook_url(&self, kind: &str) -> String {
        crate::webhook_url(self.listen_port(), kind)
    }

    /// The port of the webhook listener (ingress only).
    pub fn listen_port(&self) -> u16 {
        self.config
            .listen_port
            .expect("only the ingress has a webhook listener")
    }

    /// The last lines the process wrote.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether `/readyz` answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        self.readyz_status().await == Some(200)
    }

    async fn readyz_status(&self) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}/readyz", self.config.admin_port);
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// Waits until `/readyz` answers 200 (`ready`) or 503 (`!ready`). Panics
    /// with the process's last log lines if it exits or the deadline passes.
    pub async fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if self.readyz_status().await == Some(want) {
                return;
            }
            if let Ok(Some(status)) = self.child_exit_status() {
                panic!(
                    "{} exited ({status}) while waiting for /readyz {want}; its log:\n{}",
                    self.config.binary.name(),
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not answer /readyz {want} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.config.binary.name(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exit status without reaping twice (`&self`: peeks via /proc).
    fn child_exit_status(&self) -> std::io::Result<Option<String>> {
        if let Some(status) = self.exit {
            return Ok(Some(status.to_string()));
        }
        // A zombie (exited, not yet reaped) shows state Z.
        let status = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let state = status
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        Ok((state == Some("Z")).then(|| "exited".to_owned()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_reap().is_none()
    }

    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("polling the child");
        }
        self.exit
    }

    /// Sends SIGTERM (a graceful shutdown request).
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGKILL (a crash).
    pub fn sigkill(&mut self) {
        self.signal("KILL");
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`…), unless the
    /// process has already been reaped (its pid may belong to another by then).
    pub fn signal(&mut self, name: &str) {
        if self.try_reap().is_some() {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running kill");
        assert!(
            status.success() || self.try_reap().is_some(),
            "kill -{name} {} failed",
            self.pid()
        );
    }

    /// Waits for the process to exit, panicking (with its log) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_reap() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} (pid {}) did not exit within {timeout:?}; its log:\n{}",
                    self.config.binary.name(),
                    self.pid(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit and returns its status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(timeout).await
    }

    /// Starts the process again with the same configuration (same ports,
    /// same environment). It must have exited (SIGTERM or SIGKILL it first).
    pub fn restart(&mut self) {
        assert!(
            self.try_reap().is_some(),
            "restart() needs the previous {} to have exited",
            self.config.binary.name()
        );
        self.child = spawn(&self.config, &self.log);
        self.exit = None;
    }

    /// Resident set size in bytes (`VmRSS` from `/proc/<pid>/status`), or
    /// `None` once the process is gone.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// Peak resident set size in bytes since start or the last
    /// [`Process::reset_peak_rss`] (`VmHWM`), or `None` once the process is gone.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// Starts [`Process::peak_rss_bytes`] again from the current RSS (Linux's
    /// `clear_refs` 5).
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("resetting the peak RSS through /proc/<pid>/clear_refs");
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        metrics::scrape(&self.http, self.config.admin_port).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_reap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client that opens a connection per request, for processes that
/// are killed and restarted: [`Process::restart`] brings a new process up
/// on the same ports, and a keep-alive connection pooled from the one it
/// replaced was reused after that process died (a fault run's scrape
/// failed with an incomplete message).
pub fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("building an HTTP client")
}

fn spawn(config: &ProcessConfig, log: &Arc<Mutex<VecDeque<String>>>) -> Child {
    let path = binary_path(config.binary);
    let mut command = Command::new(&path);
    // The test's own settings only: neither a `CORRAL_*` nor an AWS
    // variable (region, credentials, endpoint) of the environment the tests
    // run in reaches the process unless the test set it.
    remove_inherited(&mut command, |name| {
        name.starts_with("CORRAL_") || name.starts_with("AWS_")
    });
    command
        .args(&config.args)
        .envs(&config.env)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", path.display()));
    let tag = format!("[{} {}]", config.binary.name(), child.id());
    if let Some(stdout) = child.stdout.take() {
        forward(stdout, tag.clone(), log.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        forward(stderr, tag, log.clone());
    }
    child
}

/// Copies a child's output to the test's stderr and into the log tail.
fn forward(stream: impl Read + Send + 'static, tag: String, log: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    eprintln!("{tag} {text}");
                    let mut log = log.lock().expect("log lock");
                    if log.len() == LOG_TAIL_LINES {
                        log.pop_front();
                    }
                    log.push_back(format!("{tag} {text}"));
                }
            }
        }
    });
}
