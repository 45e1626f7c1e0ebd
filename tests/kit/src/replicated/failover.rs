//! A failover of a [`ReplicatedPostgres`]: both servers behind one libpq
//! multi-host URL, the primary killed as a crash would, the standby promoted
//! in its place, and the standby's WAL receiver held, to crash the primary
//! while a COMMIT it sent waits for the standby.

use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio_postgres::Client;

use super::ReplicatedPostgres;
use crate::database::{self, Server};

impl ReplicatedPostgres {
    /// Both servers, primary first, as libpq names several hosts, with
    /// `target_session_attrs=read-write`: a connection goes to whichever
    /// accepts writes, before and after a failover.
    pub fn server(&self) -> Server {
        Server::new(
            &format!(
                "127.0.0.1:{},127.0.0.1:{}",
                self.primary_port, self.standby_port
            ),
            "?target_session_attrs=read-write",
        )
    }

    /// `postgres://postgres@127.0.0.1:<primary>,127.0.0.1:<standby>/<dbname>?target_session_attrs=read-write`.
    pub fn url(&self, dbname: &str) -> String {
        self.server().url("postgres", dbname)
    }

    /// Kills the primary as a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint, every session cut), and waits until it is gone.
    pub async fn kill_primary(&self) {
        self.pg_ctl_blocking(
            "killing the primary",
            "primary",
            &["-m", "immediate", "stop"],
        )
        .await;
    }

    /// Promotes the standby (`pg_ctl promote`) and waits until it accepts
    /// writes. It commits without a synchronous standby of its own (see
    /// `create`).
    pub async fn promote_standby(&self) {
        self.pg_ctl_blocking("promoting the standby", "standby", &["promote"])
            .await;
        let standby = database::connect(&self.standby_url("postgres")).await;
        let standby = &standby;
        crate::wait::until_true(
            "the promoted standby to accept writes",
            super::TIMEOUT,
            || async move {
                standby
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .is_ok_and(|row| !row.get::<_, bool>(0))
            },
        )
        .await;
    }

    /// Stops the standby's WAL receiver (SIGSTOP) and returns it: what the
    /// primary sends from here stays in the socket, unconfirmed, so each
    /// COMMIT on the primary waits. [`HeldReceiver::release`] lets it read
    /// on, as far as the primary sent.
    pub async fn hold_wal_receiver(&self) -> HeldReceiver {
        let standby = database::connect(&self.standby_url("postgres")).await;
        let pid: i32 = standby
            .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
            .await
            .expect("the standby's WAL receiver")
            .get(0);
        let pid = Pid::from_raw(pid).expect("a WAL receiver's pid");
        kill_process(pid, Signal::STOP).expect("stopping the WAL receiver");
        HeldReceiver { pid: Some(pid) }
    }

    /// Waits until the primary has sent the standby all the WAL it has
    /// flushed (while the receiver is held, it waits in the standby's
    /// socket), and returns that position.
    pub async fn wait_wal_sent(&self) -> String {
        let primary = database::connect(&self.primary_url("postgres")).await;
        let primary = &primary;
        crate::wait::until(
            "the primary to send the standby all its WAL",
            Duration::from_secs(10),
            || async move {
                let row = primary
                    .query_one(
                        "SELECT pg_current_wal_flush_lsn()::text, count(*) FILTER (
                             WHERE sent_lsn >= pg_current_wal_flush_lsn())
                         FROM pg_stat_replication",
                        &[],
                    )
                    .await
                    .ok()?;
                (row.get::<_, i64>(1) == 1).then(|| row.get::<_, String>(0))
            },
        )
        .await
    }

    /// Waits until the standby has received and flushed the WAL up to `lsn`
    /// (from [`ReplicatedPostgres::wait_wal_sent`]).
    pub async fn wait_wal_received(&self, lsn: &str) {
        let standby = database::connect(&self.standby_url("postgres")).await;
        let standby = &standby;
        crate::wait::until_true(
            "the standby to receive the primary's last WAL",
            Duration::from_secs(10),
            || async move {
                standby
                    .query_one(
                        "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn",
                        &[&lsn],
                    )
                    .await
                    .is_ok_and(|row| row.get::<_, Option<bool>>(0) == Some(true))
            },
        )
        .await;
    }
}

/// A standby's WAL receiver stopped by [`ReplicatedPostgres::hold_wal_receiver`];
/// released on drop too, so a failing test leaves no stopped process.
#[derive(Debug)]
pub struct HeldReceiver {
    pid: Option<Pid>,
}

impl HeldReceiver {
    /// Lets the receiver run again (SIGCONT).
    pub fn release(mut self) {
        self.resume();
    }

    fn resume(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill_process(pid, Signal::CONT);
        }
    }
}

impl Drop for HeldReceiver {
    fn drop(&mut self) {
        self.resume();
    }
}

/// The longest time in seconds between two batches stored one after the
/// other (`delivery_events.stored_at`, each batch's transaction start) from
/// `since` (seconds since the epoch) on: how long writes stopped, for a
/// failover around then.
pub async fn longest_gap(client: &Client, since: f64) -> f64 {
    client
        .query_one(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(gap)), 0)::float8 FROM (
                 SELECT stored_at - lag(stored_at) OVER (ORDER BY stored_at) AS gap
                 FROM delivery_events WHERE stored_at >= to_timestamp($1)) AS gaps",
            &[&since],
        )
        .await
        .expect("measuring the gaps between stored batches")
        .get(0)
}
