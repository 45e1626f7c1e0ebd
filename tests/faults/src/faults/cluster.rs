//! The scenarios on a three-node RabbitMQ cluster of their own (the kit's
//! [`RabbitCluster`], started by `scripts/services --cluster`): both
//! binaries get every node's URL in `CORRAL_AMQP_URL`, the quorum queue has
//! three replicas, and a node is killed, stopped or cut off under load.
//! They never touch the shared broker; the cluster is removed when the
//! scenario ends, failed or not (it is dropped).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::cluster::{NODES, QueueNodes, RabbitCluster};

use super::{
    outcome::*,
    scenarios::{SPOOLED_SHARE, require_answered},
    stack::Brokers,
    stack::*,
};

/// How long the load runs around a node's death or a partition.
const FAULT: Duration = Duration::from_secs(10);

/// Deadline for the cluster to elect a leader elsewhere.
const ELECTION: Duration = Duration::from_secs(60);

/// A scenario's cluster, its stack, and where the queue lived at the start.
struct OnCluster {
    /// Dropped after the stack, so that its processes stop first.
    stack: Stack,
    cluster: RabbitCluster,
    queue: String,
    start: QueueNodes,
    notes: Vec<String>,
}

impl OnCluster {
    /// A cluster, one ingress and one worker with every node's URL; checks
    /// that the queue has a replica on each node.
    async fn start() -> anyhow::Result<Self> {
        Self::start_sharded(1).await
    }

    /// [`OnCluster::start`] with `queues` quorum queues sharing the webhooks
    /// (`CORRAL_AMQP_QUEUES`); the checks are on the first.
    async fn start_sharded(queues: u16) -> anyhow::Result<Self> {
        let cluster = RabbitCluster::start().await?;
        let urls = cluster.urls();
        let brokers = Brokers { url: &urls, queues };
        let stack = Stack::start_on(1, 1, brokers).await?;
        let queue = format!("{}.delivery-status", stack.prefix);
        let start = cluster.leader_of(0, &queue).await?;
        ensure!(
            start.members.len() == NODES,
            "the quorum queue has {} replicas, not {NODES}: {start:?}",
            start.members.len()
        );
        let notes = vec![format!(
            "cluster started and joined in {:.0} s; queue leader node {}, replicas on {:?}; {}",
            cluster.started_in().as_secs_f64(),
            start.leader,
            start.members,
            connections(&cluster, start.leader).await
        )];
        Ok(Self {
            stack,
            cluster,
            queue,
            start,
            notes,
        })
    }

    /// Waits until a node other than `gone` leads the queue, as node
    /// `asked` sees it; notes how long the election took since `since`.
    async fn await_new_leader(
        &mut self,
        asked: usize,
        gone: usize,
        since: Instant,
    ) -> anyhow::Result<usize> {
        let queue = self.queue.clone();
        self.await_new_leader_of(&queue, asked, gone, since).await
    }

    /// [`OnCluster::await_new_leader`] of `queue`.
    async fn await_new_leader_of(
        &mut self,
        queue: &str,
        asked: usize,
        gone: usize,
        since: Instant,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + ELECTION;
        loop {
            if let Ok(nodes) = self.cluster.leader_of(asked, queue).await
                && nodes.leader != gone
            {
                self.notes.push(format!(
                    "{queue}: new leader node {} after {:.1} s",
                    nodes.leader,
                    since.elapsed().as_secs_f64()
                ));
                return Ok(nodes.leader);
            }
            ensure!(
                Instant::now() < deadline,
                "{queue}: no leader other than node {gone} within {ELECTION:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The nodes other than `node`.
    fn others(&self, node: usize) -> Vec<usize> {
        (0..NODES).filter(|n| *n != node).collect()
    }

    async fn finish(
        self,
        name: &str,
        loads: Vec<LoadTask>,
        recovered: f64,
        rss: Vec<(String, f64)>,
    ) -> anyhow::Result<Outcome> {
        let outcome = self
            .stack
            .finish(name, loads, recovered, rss, false, self.notes)
            .await;
        drop(self.cluster);
        outcome
    }
}

/// Which node each of the services' connections is on, as `node` lists
/// them (by the port they reached; 3.10 lists no node or connection name
/// column, so the name is found in the client properties).
async fn connections(cluster: &RabbitCluster, node: usize) -> String {
    let args = [
        "list_connections",
        "port",
        "client_properties",
        "--no-table-headers",
        "--quiet",
    ];
    let out = match cluster.ctl(node, &args).await {
        Ok(out) => out,
        Err(err) => return format!("connections not listed: {err:#}"),
    };
    let listed: Vec<String> = out
        .lines()
        .filter_map(|line| {
            let port: u16 = line.split('\t').next()?.trim().parse().ok()?;
            let on = (0..NODES).find(|n| cluster.amqp_port(*n) == port)?;
            let name = ["corral-ingress", "corral-worker"]
                .into_iter()
                .find(|name| line.contains(name))
                .unwrap_or("another client");
            Some(format!("{name} on node {on}"))
        })
        .collect();
    format!("connections: {}", listed.join(", "))
}

/// SIGKILL of the node leading the quorum queue, where both services are
/// connected: what was in flight there is answered by the spool or
/// published again on a new link to another node, the other two elect a
/// leader, and the worker goes on consuming.
pub(super) async fn leader_killed(p: Profile) -> anyhow::Result<Outcome> {
    let mut on = OnCluster::start().await?;
    let leader = on.start.leader;
    let (loads, rss) = on.stack.load_until_fault(p, FAULT).await?;
    let since = Instant::now();
    on.cluster.kill(leader).await?;
    let asked = on.others(leader)[0];
    on.await_new_leader(asked, leader, since).await?;
    let recovered = on.stack.wait_recovered(since).await?;
    let after = connections(&on.cluster, asked).await;
    on.notes
        .push(format!("SIGKILL of leader node {leader}; then {after}"));
    let mut outcome = on
        .finish("cluster-leader-killed", loads, recovered, rss)
        .await?;
    require_few_nacks(&mut outcome, p);
    Ok(outcome)
}

/// How long after a leader's death the broker may go on nacking: the
/// election, plus the second for which ingress lets a link nack every
/// publish before it replaces it.
const NACKING: Duration = Duration::from_millis(2_500);

/// Fails `outcome` if more webhooks were nacked than [`NACKING`] of the
/// load: RabbitMQ 3.10 nacked every publish, for as long as it lived, on a
/// connection made during the election, and without replacing that link
/// ingress sent every later webhook to the spool (~4,400 in a run of the
/// full profile); with it, the CI profile's run had 301, one second of its
/// load.
fn require_few_nacks(outcome: &mut Outcome, p: Profile) {
    let nacked = outcome.spooled_for(SpoolCause::Nack);
    let bound = (p.rate * NACKING.as_secs_f64()) as u64;
    if nacked > bound {
        outcome.fail(format!(
            "{nacked} webhooks were nacked, more than {NACKING:?} of the load ({bound}): \
             a link that only nacks was kept"
        ));
    }
}

/// SIGKILL of a node holding only a follower: the queue keeps its
/// majority, so nothing shows but latency.
pub(super) async fn follower_killed(p: Profile) -> anyhow::Result<Outcome> {
    let mut on = OnCluster::start().await?;
    let follower = on.others(on.start.leader)[0];
    let (loads, rss) = on.stack.load_until_fault(p, FAULT).await?;
    let since = Instant::now();
    on.cluster.kill(follower).await?;
    tokio::time::sleep(FAULT / 2).await;
    let still = on.cluster.leader_of(on.start.leader, &on.queue).await?;
    on.notes.push(format!(
        "SIGKILL of follower node {follower}; leader still node {}",
        still.leader
    ));
    let recovered = on.stack.wait_recovered(since).await?;
    let mut outcome = on
        .finish("cluster-follower-killed", loads, recovered, rss)
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    if outcome.unavailable > 0 {
        outcome.fail("webhooks got 503 while the queue kept its majority");
    }
    Ok(outcome)
}

/// Two of the three nodes stopped: the queue has no majority and refuses,
/// the spool takes every webhook, and once the nodes are back the worker
/// drains it.
pub(super) async fn majority_stopped(p: Profile) -> anyhow::Result<Outcome> {
    let mut on = OnCluster::start().await?;
    let stopped = on.others(on.start.leader);
    let (loads, rss) = on.stack.load_until_fault(p, p.outage).await?;
    let (first, second) = (stopped[0], stopped[1]);
    tokio::try_join!(on.cluster.stop(first), on.cluster.stop(second))?;
    tokio::time::sleep(p.outage).await;
    let since = Instant::now();
    tokio::try_join!(on.cluster.start_node(first), on.cluster.start_node(second))
        .context("starting the stopped nodes again")?;
    let restarted = since.elapsed().as_secs_f64();
    let recovered = on.stack.wait_recovered(since).await?;
    on.notes.push(format!(
        "nodes {first} and {second} stopped (rabbitmqctl stop) for {:?}; their start took {restarted:.0} s",
        p.outage,
    ));
    let mut outcome = on
        .finish("cluster-majority-stopped", loads, recovered, rss)
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    if outcome.spooled_total() == 0 {
        outcome.fail("the spool took nothing while the queue had no majority");
    }
    Ok(outcome)
}

/// The node the services use, leading the queue, cut off from the other
/// two: it pauses (`pause_minority`) and closes their connections, they
/// move to the majority, which elects a leader; nothing answered 200 on the
/// minority side is lost, and the node rejoins when the partition heals.
pub(super) async fn node_partitioned(p: Profile) -> anyhow::Result<Outcome> {
    let mut on = OnCluster::start().await?;
    let cut = on.start.leader;
    let (loads, rss) = on.stack.load_until_fault(p, p.outage).await?;
    let since = Instant::now();
    on.cluster.partition(cut).await?;
    let asked = on.others(cut)[0];
    on.await_new_leader(asked, cut, since).await?;
    tokio::time::sleep(p.outage.saturating_sub(since.elapsed())).await;
    on.cluster.heal(cut).await?;
    let healed = Instant::now();
    let recovered = on.stack.wait_recovered(since).await?;
    let back = on.cluster.leader_of(cut, &on.queue).await;
    on.notes.push(format!(
        "node {cut} partitioned for {:.0} s; after healing it sees {back:?}; {}",
        healed.duration_since(since).as_secs_f64(),
        connections(&on.cluster, asked).await
    ));
    on.finish("cluster-node-partitioned", loads, recovered, rss)
        .await
}

/// How many quorum queues the sharded scenario spreads the webhooks over.
const SHARDS: u16 = 3;

/// `CORRAL_AMQP_QUEUES=3` on the cluster, and SIGKILL of a node that leads
/// some of the shards but not all: only those shards elect a new leader
/// (the others keep theirs and keep taking webhooks), and all resume; 0 lost,
/// 0 duplicated, and the gap in stored rows no longer than one election.
pub(super) async fn shard_leader_killed(p: Profile) -> anyhow::Result<Outcome> {
    let mut on = OnCluster::start_sharded(SHARDS).await?;
    let shards: Vec<String> = (0..SHARDS)
        .map(|k| match k {
            0 => on.queue.clone(),
            k => format!("{}.{k}", on.queue),
        })
        .collect();
    let mut leaders = Vec::new();
    for shard in &shards {
        leaders.push(on.cluster.leader_of(0, shard).await?.leader);
    }
    // The node leading the fewest shards, so that others keep theirs.
    let victim = (0..NODES)
        .filter(|node| leaders.contains(node))
        .min_by_key(|node| leaders.iter().filter(|l| *l == node).count())
        .context("no shard has a leader")?;
    ensure!(
        leaders.iter().any(|leader| *leader != victim),
        "every shard is led by node {victim}: leaders {leaders:?}, nothing to compare"
    );
    on.notes.push(format!("shard leaders before: {leaders:?}"));
    let (loads, rss) = on.stack.load_until_fault(p, FAULT).await?;
    let since = Instant::now();
    on.cluster.kill(victim).await?;
    let asked = on.others(victim)[0];
    for (shard, leader) in shards.iter().zip(&leaders) {
        if *leader == victim {
            on.await_new_leader_of(shard, asked, victim, since).await?;
        } else {
            let still = on.cluster.leader_of(asked, shard).await?.leader;
            ensure!(
                still == *leader,
                "{shard}, led by node {leader}, moved to {still} when node {victim} died"
            );
        }
    }
    let recovered = on.stack.wait_recovered(since).await?;
    on.notes.push(format!(
        "SIGKILL of node {victim}; the shards it did not lead kept their leaders"
    ));
    on.finish("cluster-shard-leader-killed", loads, recovered, rss)
        .await
}
