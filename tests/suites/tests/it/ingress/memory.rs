//! Memory stays bounded when the broker stops answering.

use corral_testkit::{
    apps::TOKEN,
    process::{Process, ProcessConfig},
    proxy::TcpProxy,
    stack::Stack,
    wait,
};
use reqwest::StatusCode;
use tokio::task::JoinSet;

use super::helpers::*;

const MIB: u64 = 1024 * 1024;

/// The broker black-holed (sockets open, nothing answered) and a burst of
/// large bodies from more clients than the ingress takes connections: every
/// answer is 503, and the ingress process's peak RSS stays within the bound
/// docs/operations/deploy.md gives — `CORRAL_MAX_CONNECTIONS` × (body + 32 KiB of
/// actix's buffers) + 2 × `CORRAL_MAX_IN_FLIGHT_BYTES` — here 128 × 92 KiB +
/// 4 MiB ≈ 16 MiB above the process's own (23 MiB measured), checked against
/// 32 MiB for allocator slack. Without the two bounds each of the 500 bodies
/// sits in actix's buffers and is held twice more (the handler's copy and the
/// AMQP frames) until its publish deadline: 53 MiB measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_bodies_into_a_black_holed_broker_is_refused_within_the_byte_budget() {
    const POSTS: usize = 500;
    const BODY_BYTES: usize = 60_000;
    const CEILING: u64 = 32 * MIB;
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let proxy = TcpProxy::rabbitmq().await;
    let config = ProcessConfig::ingress(broker.prefix(), TOKEN)
        .env("CORRAL_AMQP_URL", proxy.amqp_url())
        .env("CORRAL_MAX_IN_FLIGHT_BYTES", (2 * MIB).to_string())
        .env("CORRAL_MAX_CONNECTIONS", "128")
        // Each connection closes after its answer, so the clients waiting in
        // the backlog get their turn.
        .env("CORRAL_KEEP_ALIVE_SECS", "0")
        .env("CORRAL_PUBLISH_TIMEOUT_MS", "3000")
        .env("CORRAL_IN_FLIGHT_WAIT_MS", "250")
        .env("CORRAL_AMQP_HEARTBEAT_SECS", "60")
        .env("CORRAL_AMQP_CONNECT_TIMEOUT_MS", "2000")
        .env("CORRAL_LOG", "error");
    let ingress = Process::start_ready(config).await;
    proxy.blackhole();
    ingress.reset_peak_rss();
    let before = ingress.rss_bytes().expect("the ingress is running");

    let client = bounded_client();
    let body = format!(
        "{{\"drop_id\":\"memory\",\"pad\":\"{}\"}}",
        "x".repeat(BODY_BYTES - 30)
    );
    let mut posts = JoinSet::new();
    for i in 0..POSTS {
        let request = client
            .post(ingress.webhook_url(if i % 2 == 0 { "sms" } else { "rvm" }))
            .bearer_auth(TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        posts.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    let mut statuses = Vec::with_capacity(POSTS);
    while let Some(joined) = posts.join_next().await {
        statuses.push(joined.expect("a post task panicked"));
    }
    let peak = ingress.peak_rss_bytes().expect("the ingress is running");
    let growth = peak.saturating_sub(before);
    let not_503: Vec<_> = statuses
        .iter()
        .filter(|status| !matches!(status, Ok(StatusCode::SERVICE_UNAVAILABLE)))
        .collect();
    assert!(
        not_503.is_empty(),
        "{} answers were not 503, e.g. {:?}",
        not_503.len(),
        not_503.first()
    );
    assert!(
        growth < CEILING,
        "peak RSS grew by {} MiB during the burst (ceiling {} MiB; {} MiB of bodies offered)",
        growth / MIB,
        CEILING / MIB,
        (POSTS * BODY_BYTES) as u64 / MIB
    );
    // Everything leased is given back once the link that stranded the
    // unsent frames is gone.
    wait::until_true("the body budget to be free again", QUEUE_WAIT, || async {
        ingress
            .metrics()
            .await
            .get("corral_ingress_body_bytes_in_flight")
            == 0.0
    })
    .await;
}
