//! Result events in the suite: the relay emptying a pre-filled outbox, and
//! the worker draining one pre-fill twice, with result events off and on,
//! right after each other, so the ratio of the two is what events cost a
//! drain (issue 32's targets: relay ≥ 0.6× the publish probe, drain on ÷
//! off ≥ 0.8×).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{
    relay::{RelayRun, drain_without_events, relay_run},
    report::{Ceiling, Target, ceiling_of},
    results::*,
};

/// The relay's events per second ÷ the publish probe (64 in flight).
pub const RELAY_TARGET: f64 = 0.6;
/// The drain with events on ÷ the same drain with them off.
pub const DRAIN_TARGET: f64 = 0.8;

/// The three runs, each of `Plan::result_events` events or webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultEvents {
    /// The relay alone, emptying a pre-filled outbox.
    pub relay: RelayRun,
    /// The worker draining 100 webhooks per message, result events off.
    pub drain_off: RelayRun,
    /// The same drain with result events on.
    pub drain_on: RelayRun,
}

impl ResultEvents {
    /// Webhooks stored per second with events on ÷ off.
    pub fn drain_ratio(&self) -> Option<f64> {
        self.drain_on
            .stored_per_sec
            .zip(self.drain_off.stored_per_sec)
            .map(|(on, off)| on / off)
    }
}

/// The runs the plan asks for; `None` when it plans none.
pub async fn runs(plan: &Plan) -> anyhow::Result<Option<ResultEvents>> {
    let events = plan.result_events;
    if events == 0 {
        return Ok(None);
    }
    let relay = relay_run(events, false, &[]).await?;
    eprintln!(
        "bench: relay of {events} events: {:.0} events/s",
        relay.events_per_sec
    );
    let drain_off = drain_without_events(events).await?;
    let drain_on = relay_run(events, true, &[]).await?;
    let runs = ResultEvents {
        relay,
        drain_off,
        drain_on,
    };
    eprintln!(
        "bench: drain of {events} webhooks: {:.0}/s with result events off, {:.0}/s on ({:.2}x)",
        runs.drain_off.stored_per_sec.unwrap_or(0.0),
        runs.drain_on.stored_per_sec.unwrap_or(0.0),
        runs.drain_ratio().unwrap_or(0.0)
    );
    Ok(Some(runs))
}

/// The relay's and the drain's targets.
pub(super) fn targets(results: &Results) -> Vec<Target> {
    let Some(runs) = &results.result_events else {
        return Vec::new();
    };
    let publish64 = ceiling_of(&results.probes, Ceiling::Publish64);
    let relay = publish64.map(|probe| runs.relay.events_per_sec / probe);
    let drain = runs.drain_ratio();
    let each_once = runs.relay.queued as usize == runs.relay.events
        && runs.drain_on.queued as usize == runs.drain_on.events;
    vec![
        Target {
            what: "result relay, events/s ÷ publish probe (64 in flight); each event queued once"
                .to_owned(),
            needed: format!("≥ {RELAY_TARGET:.1}×"),
            measured: relay.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×")),
            met: relay.map(|r| r >= RELAY_TARGET && each_once),
        },
        Target {
            what: "worker drain (100 webhooks per message), result events on ÷ off".to_owned(),
            needed: format!("≥ {DRAIN_TARGET:.1}×"),
            measured: drain.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×")),
            met: drain.map(|r| r >= DRAIN_TARGET && each_once),
        },
    ]
}

/// The three runs side by side.
pub(super) fn table(out: &mut String, results: &Results) {
    let Some(runs) = &results.result_events else {
        return;
    };
    let _ = writeln!(out, "\n## Result events\n");
    let _ = writeln!(
        out,
        "The worker with `CORRAL_RESULT_EVENTS=true` publishing into a durable quorum queue bound to \
         `<prefix>.delivery-results`, as a customer's service binds one. **Relay**: {} events already in \
         the outbox (stored rows with their outbox rows), the main queue empty; events/s from the first \
         confirmed round to the last. **Drain**: {} webhooks pre-filled 100 per message, stored by the \
         worker with result events off and then on (each on a fresh database and prefix); stored/s is \
         webhooks ÷ seconds from the worker's start to the last one stored, by its own counters. \
         Queued is what the bound queue held at the end: every event once when it equals the events.\n",
        runs.relay.events, runs.drain_on.events
    );
    let _ = writeln!(
        out,
        "| run | stored/s | events/s | events published while storing | seconds | worker CPU % | queued |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let number = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"));
    for (name, run) in [
        ("relay, pre-filled outbox", &runs.relay),
        ("drain, result events off", &runs.drain_off),
        ("drain, result events on", &runs.drain_on),
    ] {
        let events = (run.events_per_sec > 0.0).then_some(run.events_per_sec);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.1} | {:.0} | {} |",
            number(run.stored_per_sec),
            number(events),
            run.published_while_storing
                .map_or_else(|| "—".to_owned(), |p| p.to_string()),
            run.seconds,
            run.cpu_percent,
            run.queued
        );
    }
}
