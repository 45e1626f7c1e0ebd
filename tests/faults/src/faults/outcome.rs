//! How hard each scenario runs, what it found, and the table of
//! docs/reliability.md.

use std::{collections::BTreeMap, time::Duration};

use corral_runtime::telemetry::labels::SpoolCause;
use serde::Serialize;

/// How hard and how long each scenario runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Profile {
    /// Name (`ci`, `full`).
    pub name: &'static str,
    /// Webhooks per second offered (open loop), split over the ingresses.
    pub rate: f64,
    /// Load before the fault.
    pub before: Duration,
    /// Load after recovery.
    pub after: Duration,
    /// How long an outage lasts where the scenario has one.
    pub outage: Duration,
}

impl Profile {
    /// The short version CI runs: every scenario, a lighter and shorter load.
    pub const CI: Profile = Profile {
        name: "ci",
        rate: 300.0,
        before: Duration::from_secs(3),
        after: Duration::from_secs(3),
        outage: Duration::from_secs(10),
    };
    /// The full version.
    pub const FULL: Profile = Profile {
        name: "full",
        rate: 1_500.0,
        before: Duration::from_secs(10),
        after: Duration::from_secs(10),
        outage: Duration::from_secs(10),
    };
}

/// One scenario's outcome: the row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Requests sent (all loads).
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered 503.
    pub unavailable: u64,
    /// Anything else: other statuses, connection errors, timeouts.
    pub other: u64,
    /// `delivery_events` rows of the load.
    pub rows: u64,
    /// Webhooks answered 200 from the PostgreSQL spool, by cause
    /// (`corral_ingress_spooled_total`, summed over the ingresses as they
    /// are at the end: an ingress restarted mid-scenario counts from its restart).
    pub spooled: BTreeMap<String, u64>,
    /// Webhooks the spool failed to commit (`corral_ingress_spool_failures_total`).
    pub spool_failures: u64,
    /// Provider resends of the load with both copies answered 2xx: the
    /// workers count each second copy as a duplicate, by design.
    pub resent_twice: u64,
    /// Answered 2xx and not stored.
    pub lost: u64,
    /// Stored more than once.
    pub duplicated: u64,
    /// Rows nobody sent, content changed, stale latest state, quarantined by mistake.
    pub wrong: u64,
    /// Seconds from the end of the fault until every process was ready and a
    /// webhook was accepted again.
    pub recovered_secs: f64,
    /// The slowest answer any request got, from its actual send, ms: no
    /// request may hang past the publish deadline (plus scheduling slack).
    pub slowest_answer_ms: f64,
    /// Resident memory before the fault and after recovery, per process, MiB.
    pub rss_mib: Vec<(String, f64, f64)>,
    /// Whether RSS after recovery is within 20 % of before (broker scenarios).
    pub rss_checked: bool,
    /// Anything else the scenario checked or noticed.
    pub notes: Vec<String>,
    /// The scenario's verdict.
    pub passed: bool,
}

impl Outcome {
    /// Marks the scenario failed, saying why.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.passed = false;
        self.notes.push(why.into());
    }

    /// Webhooks answered from the spool, whatever the cause.
    pub fn spooled_total(&self) -> u64 {
        self.spooled.values().sum()
    }

    /// Webhooks answered from the spool for `cause`.
    pub fn spooled_for(&self, cause: SpoolCause) -> u64 {
        spooled_for(&self.spooled, cause)
    }

    /// The share of requests answered 2xx.
    pub fn ok_share(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.ok as f64 / self.sent as f64
        }
    }
}

/// Renders outcomes as the markdown table of docs/reliability.md.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | sent | 2xx | 503 | other | spooled | spool failed | rows | lost | duplicated | wrong | recovered in | slowest answer | RSS before → after (MiB) | result |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for o in outcomes {
        let rss = o
            .rss_mib
            .iter()
            .map(|(name, before, after)| format!("{name} {before} → {after}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.0} ms | {}{} | {} |\n",
            o.scenario,
            o.sent,
            o.ok,
            o.unavailable,
            o.other,
            o.spooled_total(),
            o.spool_failures,
            o.rows,
            o.lost,
            o.duplicated,
            o.wrong,
            o.recovered_secs,
            o.slowest_answer_ms,
            rss,
            if o.rss_checked {
                " (checked ≤ +20 %)"
            } else {
                ""
            },
            if o.passed { "pass" } else { "**FAIL**" },
        ));
    }
    out
}

/// Of webhooks spooled by cause (`corral_ingress_spooled_total`'s label),
/// those spooled for `cause`.
pub fn spooled_for(spooled: &BTreeMap<String, u64>, cause: SpoolCause) -> u64 {
    spooled.get(cause.as_str()).copied().unwrap_or(0)
}
