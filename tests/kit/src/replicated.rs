//! A throwaway PostgreSQL primary with one synchronous standby, for a test of
//! what corral does while the standby is away. Made from the PostgreSQL
//! server binaries on this machine (`initdb`, `pg_ctl`, `pg_basebackup`) in a
//! directory of its own, on free ports, and stopped and removed on drop. The
//! shared server on 5432 is never touched.
//!
//! The binaries are found in `CORRAL_TEST_PG_BIN` if set, else in the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu), else on `PATH`; a
//! machine without them fails the test that asks for a cluster, with a hint.
//! `initdb` refuses to run as root, so a test running as root runs the server
//! programs as the `postgres` user (`runuser`), which then owns the directory.
//!
//! A failover test reaches both servers by one multi-host URL, kills the
//! primary and promotes the standby (`failover`).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{database, process::free_port, wait};

mod failover;

pub use failover::{HeldReceiver, longest_gap};

/// Deadline of each start, stop and wait for replication.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A running primary with a synchronous standby (`synchronous_standby_names
/// = '*'`): while the standby is stopped, every commit on the primary that
/// wrote WAL waits. Dropping it stops both servers and removes their files.
#[derive(Debug)]
pub struct ReplicatedPostgres {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres_user: bool,
    primary_port: u16,
    standby_port: u16,
}

impl ReplicatedPostgres {
    /// Makes the primary, copies the standby from it with `pg_basebackup`,
    /// starts both and waits until the primary reports the standby as
    /// streaming and synchronous.
    pub async fn start() -> Self {
        let cluster = tokio::task::spawn_blocking(Self::create)
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
        cluster.wait_synchronous().await;
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<primary port>/<dbname>`.
    pub fn primary_url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}",
            self.primary_port
        )
    }

    /// `postgres://postgres@127.0.0.1:<standby port>/<dbname>` (read-only).
    pub fn standby_url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}",
            self.standby_port
        )
    }

    /// Stops the standby (fast shutdown); commits on the primary then wait.
    pub async fn stop_standby(&self) {
        self.pg_ctl_blocking("stopping the standby", "standby", &["-m", "fast", "stop"])
            .await;
    }

    /// Starts the standby again and waits until it is synchronous once more.
    pub async fn start_standby(&self) {
        self.pg_ctl_blocking("starting the standby", "standby", &["start"])
            .await;
        self.wait_synchronous().await;
    }

    fn create() -> Self {
        let bin = bin_dir();
        let as_postgres_user = rustix::process::geteuid().is_root();
        let cluster = Self {
            dir: std::env::temp_dir().join(crate::unique_name("pg")),
            bin,
            as_postgres_user,
            primary_port: free_port(),
            standby_port: free_port(),
        };
        // From here on, a failure drops `cluster`, which stops what started.
        let mut mkdir = cluster.command_as_owner("mkdir");
        mkdir
            .arg("-m")
            .arg("700")
            .arg(&cluster.dir)
            .current_dir("/");
        cluster.run("creating the cluster directory", mkdir);

        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data("primary"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        cluster.run("initdb of the primary", initdb);
        cluster.append_config(
            "primary",
            &format!(
                "listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 synchronous_standby_names = '*'\n\
                 max_connections = 50\n\
                 shared_buffers = 16MB\n\
                 # A throwaway cluster: durability on this disk is not under test.\n\
                 fsync = off\n",
                cluster.primary_port,
                cluster.dir.display()
            ),
        );
        cluster.run(
            "starting the primary",
            cluster.pg_ctl("primary", &["start"]),
        );

        let mut basebackup = cluster.command("pg_basebackup");
        basebackup
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(cluster.primary_port.to_string())
            .arg("-D")
            .arg(cluster.data("standby"))
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        cluster.run("pg_basebackup of the standby", basebackup);
        // The copy has the primary's `synchronous_standby_names`, which a
        // standby ignores; once promoted it would make every commit wait for
        // a standby of its own that does not exist. Production keeps
        // replicating synchronously after a failover (CloudNativePG re-points
        // `synchronous_standby_names` at the remaining instances); two
        // servers cannot, so the promoted one commits alone.
        cluster.append_config(
            "standby",
            &format!(
                "port = {}\nsynchronous_standby_names = ''\n",
                cluster.standby_port
            ),
        );
        cluster.run(
            "starting the standby",
            cluster.pg_ctl("standby", &["start"]),
        );
        cluster
    }

    async fn wait_synchronous(&self) {
        let primary = database::connect(&self.primary_url("postgres")).await;
        let primary = &primary;
        wait::until_true(
            "the standby to stream to the primary as its synchronous standby",
            TIMEOUT,
            || async move {
                primary
                    .query_one(
                        "SELECT count(*) FROM pg_stat_replication
                         WHERE state = 'streaming' AND sync_state = 'sync'",
                        &[],
                    )
                    .await
                    .is_ok_and(|row| row.get::<_, i64>(0) == 1)
            },
        )
        .await;
    }

    fn data(&self, server: &str) -> PathBuf {
        self.dir.join(server)
    }

    fn log(&self, server: &str) -> PathBuf {
        self.dir.join(format!("{server}.log"))
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let mut command = self.command_as_owner(&self.bin.join(program).to_string_lossy());
        command.current_dir(&self.dir);
        command
    }

    fn command_as_owner(&self, program: &str) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, server: &str, action: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data(server))
            .arg("-l")
            .arg(self.log(server))
            .args(["-w", "-t", &TIMEOUT.as_secs().to_string()])
            .args(action);
        command
    }

    async fn pg_ctl_blocking(&self, what: &'static str, server: &str, action: &[&str]) {
        let command = self.pg_ctl(server, action);
        let logs = self.logs();
        tokio::task::spawn_blocking(move || run(what, command, &logs))
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
    }

    fn run(&self, what: &str, command: Command) {
        run(what, command, &self.logs());
    }

    fn append_config(&self, server: &str, lines: &str) {
        let path = self.data(server).join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(lines.as_bytes()))
            .unwrap_or_else(|err| panic!("appending to {}: {err}", path.display()));
    }

    /// The servers' log files, to quote when something fails.
    fn logs(&self) -> Vec<PathBuf> {
        vec![self.log("primary"), self.log("standby")]
    }
}

impl Drop for ReplicatedPostgres {
    fn drop(&mut self) {
        for server in ["standby", "primary"] {
            if self.data(server).join("postmaster.pid").exists() {
                let _ = self.pg_ctl(server, &["-m", "immediate", "stop"]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `command` to its end, or panics naming `what` with its output and the
/// tail of each server log.
fn run(what: &str, mut command: Command, logs: &[PathBuf]) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run {command:?}: {err}"));
    if output.status.success() {
        return;
    }
    let mut report = format!(
        "{what} failed ({}): {command:?}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for log in logs {
        if let Ok(text) = std::fs::read_to_string(log) {
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let _ = write!(report, "\n--- {} (last lines)\n", log.display());
            for line in tail.into_iter().rev() {
                let _ = writeln!(report, "{line}");
            }
        }
    }
    panic!("{report}");
}

/// Where `initdb`, `pg_ctl` and `pg_basebackup` are.
fn bin_dir() -> PathBuf {
    const HINT: &str = "install the PostgreSQL server (Debian: postgresql) or set \
                        CORRAL_TEST_PG_BIN to the directory holding initdb";
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("CORRAL_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_initdb(&dir),
            "CORRAL_TEST_PG_BIN={} holds no initdb: {HINT}",
            dir.display()
        );
        return dir;
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((major, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_initdb(dir)))
        .unwrap_or_else(|| {
            panic!("this test makes its own PostgreSQL primary and standby, and found no initdb: {HINT}")
        })
}
