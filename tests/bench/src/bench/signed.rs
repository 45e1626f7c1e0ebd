//! The signed route beside the token route: ingress alone with a signing
//! secret, loaded through one route and then the other at the same
//! connections, right after each other, so both meet the same machine; the
//! signed route's rate as a ratio of the token route's is what verifying
//! the signatures costs. The pairs alternate their order (token first, then
//! signed first), so a drift of the machine during them falls on both.

use std::{fmt::Write as _, time::Duration};

use corral_loadgen::{self as loadgen, Load, Mix};
use corral_testkit::process::ProcessConfig;
use serde::{Deserialize, Serialize};

use super::{report::Target, results::*, runs::ingress_under};

/// The signing secret of the bench's ingresses and load.
const SECRET: &str = "bench-signing-secret-0123456789";

/// What the signed route's rate must be of the token route's: verification
/// may cost at most 5 % of ingress's throughput (issue 27; issue 32 sets the
/// same ratio).
pub const SIGNED_TARGET: f64 = 0.95;

/// An ingress with the bench's signing secret, loaded through the signed
/// route or the token route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signing {
    /// Signed webhooks; else callbacks with the token.
    pub(crate) signed: bool,
}

impl Signing {
    /// The ingress's settings with the secret.
    pub(super) fn ingress(self, settings: ProcessConfig) -> ProcessConfig {
        settings.env("CORRAL_DROPCOWBOY_SIGNING_SECRETS", SECRET)
    }

    /// The load: the same results (route, outcome, reason drawn alike) as
    /// signed status events, or as callbacks. No receipts nor other events,
    /// so the bodies are alike in number and size and the ratio is the
    /// signature's cost.
    pub(super) fn load(self, config: &mut loadgen::Config) {
        config.signing_secret = Some(SECRET.into());
        if self.signed {
            config.mix = Mix {
                signed: 1.0,
                other_events: 0.0,
                receipts: 0.0,
                ..Mix::default()
            };
        }
    }
}

/// One pair of runs: the token route and the signed route at the same
/// connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedRun {
    /// Closed-loop connections.
    pub connections: usize,
    /// Whether the signed route was measured first.
    pub signed_first: bool,
    /// Callbacks to the token routes.
    pub token: IngressRun,
    /// Signed webhooks to `POST /webhooks/dropcowboy`.
    pub signed: IngressRun,
}

impl SignedRun {
    /// The signed route's rate ÷ the token route's.
    pub fn ratio(&self) -> f64 {
        self.signed.accepted_per_sec / self.token.accepted_per_sec.max(f64::MIN_POSITIVE)
    }
}

/// Ingress's CPU per webhook answered 200 in `run`, µs.
fn cpu_per_webhook_us(run: &IngressRun) -> f64 {
    run.cpu_percent / 100.0 / run.accepted_per_sec.max(f64::MIN_POSITIVE) * 1e6
}

/// Each planned connection count, `plan.signed_pairs` pairs.
pub async fn signed_runs(plan: &Plan) -> anyhow::Result<Vec<SignedRun>> {
    let duration = Duration::from_secs(plan.seconds);
    let mut runs = Vec::new();
    for &connections in &plan.signed_connections {
        for pair in 0..plan.signed_pairs {
            let signed_first = pair % 2 == 1;
            let measure = |signed| {
                let load = Load::Closed { connections };
                let signing = Some(Signing { signed });
                ingress_under(load, connections, duration, false, None, signing)
            };
            let (token, signed) = if signed_first {
                let signed = measure(true).await?;
                (measure(false).await?, signed)
            } else {
                let token = measure(false).await?;
                (token, measure(true).await?)
            };
            let run = SignedRun {
                connections,
                signed_first,
                token,
                signed,
            };
            eprintln!(
                "bench: {connections} connections, token route {:.0}/s (p99 {:.2} ms), signed route {:.0}/s (p99 {:.2} ms): {:.3}x, {} not 200",
                run.token.accepted_per_sec,
                run.token.p99_ms,
                run.signed.accepted_per_sec,
                run.signed.p99_ms,
                run.ratio(),
                run.token.not_accepted + run.signed.not_accepted
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

/// At `connections`: the pairs' signed rates summed ÷ their token rates
/// summed, and the answers other than 200 in all of them.
fn overall(results: &Results, connections: usize) -> Option<(f64, u64)> {
    let pairs = results
        .signed
        .iter()
        .filter(|r| r.connections == connections);
    let (signed, token, not_accepted) = pairs.fold((0.0, 0.0, 0), |(s, t, n), r| {
        (
            s + r.signed.accepted_per_sec,
            t + r.token.accepted_per_sec,
            n + r.signed.not_accepted + r.token.not_accepted,
        )
    });
    (token > 0.0).then(|| (signed / token, not_accepted))
}

/// The target row: the signed route ÷ the token route at 64 connections,
/// every request answered 200.
pub(super) fn target(results: &Results) -> Target {
    let measured = overall(results, 64);
    Target {
        what: "signed route ÷ token route, ingress alone, 64 connections (verification's cost \
               ≤ 5 %), every request 200"
            .to_owned(),
        needed: format!("≥ {SIGNED_TARGET:.2}×, 0 not 200"),
        measured: measured.map_or_else(
            || "n/a".to_owned(),
            |(ratio, not_accepted)| format!("{ratio:.3}×, {not_accepted} not 200"),
        ),
        met: measured.map(|(ratio, not_accepted)| ratio >= SIGNED_TARGET && not_accepted == 0),
    }
}

/// The pairs, each route's numbers side by side.
pub(super) fn table(out: &mut String, results: &Results) {
    if results.signed.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Signed route beside the token route\n");
    let _ = writeln!(
        out,
        "Ingress alone (no worker) with a signing secret, as above, loaded for {} s after a 2 s warm-up through \
         the token routes (callbacks with the token) and then through the signed route (`POST \
         /webhooks/dropcowboy`: each delivery signed by the load generator as it leaves, HMAC-SHA256 over \
         `X-Timestamp`, `.` and the body, verified by ingress over the raw bytes before anything parses them), \
         right after each other on a fresh ingress each, the second pair in the other order. Both carry the \
         same results (SMS and voicemail, success and failures): callbacks on the one, status events with \
         their `reason_code` on the other, bodies of about the same size; all signed events share one \
         routing key, so they pack into somewhat larger messages (webhooks per message). The ratio is the \
         signed route's rate ÷ the token route's, what verification costs; the target, ≥ \
         {SIGNED_TARGET:.2}×, holds the pairs' rates summed. Ingress's CPU per webhook (its CPU over the \
         run ÷ the rate) shows the same cost without the machine's other load in it; the load generator \
         signs each request, so its own CPU is given too.\n",
        results.plan.seconds
    );
    let _ = writeln!(
        out,
        "| connections | first | token route accepted/s | p50 / p99 ms | webhooks per message | CPU µs per webhook | load generator CPU % | signed route accepted/s | p50 / p99 ms | webhooks per message | CPU µs per webhook | load generator CPU % | signed ÷ token | not 200 |\n|---:|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for r in &results.signed {
        let route = |run: &IngressRun| {
            format!(
                "{:.0} | {:.2} / {:.2} | {} | {:.1} | {:.0}",
                run.accepted_per_sec,
                run.p50_ms,
                run.p99_ms,
                per_message(run.webhooks_per_message),
                cpu_per_webhook_us(run),
                run.generator_cpu_percent
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | **{:.3}×** | {} |",
            r.connections,
            if r.signed_first { "signed" } else { "token" },
            route(&r.token),
            route(&r.signed),
            r.ratio(),
            r.token.not_accepted + r.signed.not_accepted
        );
    }
}
