//! A throwaway three-node RabbitMQ cluster, for the tests of what corral
//! does when a node dies or is cut off. Started, driven and removed by
//! `scripts/services --cluster…` (one implementation of the cluster, in the
//! script an operator also runs by hand), in a directory of its own on free
//! ports; stopped and removed on drop. The shared broker on 5672 is never
//! touched.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::process::workspace_root;

/// How many nodes the script starts.
pub const NODES: usize = 3;

/// A running cluster of [`NODES`] nodes, numbered from 0.
#[derive(Debug)]
pub struct RabbitCluster {
    dir: PathBuf,
    base: u16,
    /// How long starting and joining took.
    started_in: Duration,
}

impl RabbitCluster {
    /// Starts three nodes and joins them; fails with the script's output if
    /// that does not work.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique_name("rabbit"));
        let base = free_base()?;
        let began = Instant::now();
        let mut cluster = Self {
            dir,
            base,
            started_in: Duration::ZERO,
        };
        let args = vec![
            "--cluster".to_owned(),
            "--dir".to_owned(),
            cluster.dir.display().to_string(),
            "--base-port".to_owned(),
            base.to_string(),
        ];
        // From here on, a failure drops `cluster`, which stops what started.
        services(args).await.context("starting the cluster")?;
        cluster.started_in = began.elapsed();
        Ok(cluster)
    }

    /// How long starting the nodes and joining them took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The AMQP URL of `node`.
    pub fn url(&self, node: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port(node))
    }

    /// Every node's URL, comma-separated, as `CORRAL_AMQP_URL` takes them.
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|node| self.url(node))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The AMQP port of `node`.
    pub fn amqp_port(&self, node: usize) -> u16 {
        self.base + node as u16
    }

    /// The Erlang node name of `node`.
    pub fn node_name(&self, node: usize) -> String {
        format!("corral{}n{node}@localhost", self.base)
    }

    /// The pid of `node`'s Erlang VM, from the pid file RabbitMQ writes once
    /// it runs.
    pub fn node_pid(&self, node: usize) -> anyhow::Result<u32> {
        let file = self.dir.join(format!("n{node}")).join("pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}, not a pid", file.display()))
    }

    /// SIGKILLs `node`'s Erlang VM and waits until it is gone.
    pub async fn kill(&self, node: usize) -> anyhow::Result<()> {
        self.node_command("kill", node).await
    }

    /// Stops `node` cleanly (`rabbitmqctl stop`).
    pub async fn stop(&self, node: usize) -> anyhow::Result<()> {
        self.node_command("stop", node).await
    }

    /// Starts `node` again (it rejoins the cluster) and waits until it runs.
    pub async fn start_node(&self, node: usize) -> anyhow::Result<()> {
        self.node_command("start", node).await
    }

    /// Cuts `node` off from the other two: its distribution links are
    /// dropped and refused both ways until [`heal`](Self::heal) (see
    /// `scripts/rabbitmq-cluster` for how, and why not with a firewall).
    pub async fn partition(&self, node: usize) -> anyhow::Result<()> {
        self.node_command("partition", node).await
    }

    /// Ends [`partition`](Self::partition): `node` may reach its peers again.
    pub async fn heal(&self, node: usize) -> anyhow::Result<()> {
        self.node_command("heal", node).await
    }

    /// `rabbitmqctl` with `args` against `node`; its standard output.
    pub async fn ctl(&self, node: usize, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![
            "--cluster-ctl".to_owned(),
            node.to_string(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
            "--".to_owned(),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        services(all).await
    }

    /// The leader of `queue` and its members, as `node` sees them (a node
    /// number each; members of another cluster are left out).
    pub async fn leader_of(&self, node: usize, queue: &str) -> anyhow::Result<QueueNodes> {
        let out = self
            .ctl(
                node,
                &[
                    "list_queues",
                    "name",
                    "leader",
                    "members",
                    "--no-table-headers",
                    "--quiet",
                ],
            )
            .await?;
        let line = out
            .lines()
            .find(|line| line.split('\t').next() == Some(queue))
            .with_context(|| format!("no queue {queue} on node {node}: {out}"))?;
        let fields: Vec<&str> = line.split('\t').collect();
        let number = |name: &str| (0..NODES).find(|n| name.trim() == self.node_name(*n));
        let leader = fields
            .get(1)
            .and_then(|name| number(name))
            .with_context(|| format!("no leader in: {line}"))?;
        let members = fields
            .get(2)
            .map(|list| {
                list.trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(number)
                    .collect()
            })
            .unwrap_or_default();
        Ok(QueueNodes { leader, members })
    }

    async fn node_command(&self, action: &str, node: usize) -> anyhow::Result<()> {
        services(vec![
            "--cluster-node".to_owned(),
            action.to_owned(),
            node.to_string(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
        ])
        .await
        .with_context(|| format!("{action} node {node}"))
        .map(drop)
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = run_services(&["--cluster-stop".to_owned(), "--dir".to_owned(), dir]);
    }
}

/// Which nodes hold a quorum queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNodes {
    /// The node whose replica leads.
    pub leader: usize,
    /// Every node with a replica.
    pub members: Vec<usize>,
}

/// Runs `scripts/services` with `args` off the runtime's threads.
async fn services(args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || run_services(&args))
        .await
        .context("the scripts/services task")?
}

fn run_services(args: &[String]) -> anyhow::Result<String> {
    let script = workspace_root().join("scripts/services");
    let output = Command::new(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "scripts/services {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// A base port whose AMQP (base+n), distribution (base+100+n) and CLI
/// (distribution+10000…) ports are free, below the range the OS hands out
/// to outgoing connections (which would take them at random).
fn free_base() -> anyhow::Result<u16> {
    let seed = uuid::Uuid::now_v7().as_u128();
    for attempt in 0..50u128 {
        let base = 12_000 + ((seed / 7 + attempt * 997) % 100) as u16 * 100;
        let ports = (0..NODES as u16).flat_map(|n| [base + n, base + 100 + n, base + 10_100 + n]);
        if ports
            .into_iter()
            .all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        {
            return Ok(base);
        }
    }
    bail!("no free ports for a cluster between 12000 and 32200")
}
