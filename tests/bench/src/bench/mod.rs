//! The benchmark suite behind `corral-bench all`: limit probes, ingress alone,
//! worker alone, the whole pipeline at fixed rates, each measured on the
//! local services with the real binaries (release build) as processes, and
//! written up as `docs/benchmarks.md`, `docs/benchmarks.json` and
//! `docs/benchmarks.svg`.
//!
//! Nothing here asserts a speed: benchmarks measure, tests check behaviour.
//!
//! # Layout
//!
//! - [`results`]: What is planned and what is measured, and running the whole
//!   suite.
//! - [`runs`]: Each measured run: ingress alone, worker alone, the pipeline,
//!   the latency layers, and the machine.
//! - [`relay`]: The result-event relay, alone or while the worker drains.
//! - [`events`]: The relay and the drain with events off and on, in the
//!   suite, with their targets and table.
//! - [`sampler`]: A process's CPU time and peak RSS, sampled from /proc while
//!   it runs.
//! - [`sizing`]: What each part costs per webhook on a three-node cluster.
//! - [`signed`]: The signed route beside the token route, and its table.
//! - [`figures`]: The key figures other pages link to, and the version
//!   measured.
//! - [`report`]: `benchmarks.md`, `benchmarks.json` and `benchmarks.svg` from
//!   the results.

mod events;
mod figures;
mod relay;
mod report;
mod results;
mod runs;
mod sampler;
mod signed;
mod sizing;

pub use self::{
    events::ResultEvents,
    relay::relay_run,
    report::write,
    results::*,
    runs::{latency_at, worker_alone_with},
    signed::{SignedRun, signed_runs},
    sizing::{SizingRun, sizing_runs},
};
