//! corral-ingress against the real RabbitMQ, driven over HTTP as Drop Cowboy
//! would: what lands in the queue, every rejection, token handling, a burst
//! of concurrent posts, broker loss through a per-test TCP proxy (cut,
//! black-hole, deleted queue, overload), graceful shutdown, and tokens kept
//! out of the logs.
//!
//! Each test runs in its own process under nextest, under its own AMQP prefix
//! ([`TestBroker`]), so the metrics recorder and the queue are the test's own
//! and counter deltas are exact. Nothing here touches the shared broker
//! itself: a broken path to it is a [`TcpProxy`] the test owns.
//!
//! # Layout
//!
//! - `auth`: Tokens, routes, and the refusal to run open by accident.
//! - `broker_loss`: Broker loss, through a proxy the test owns.
//! - `coalescing`: Group commit: webhooks arriving during a confirm travel
//!   together, and each gets its message's verdict.
//! - `concurrency`: A burst of concurrent posts.
//! - `contract`: The sample reaches the queue untouched, with its envelope.
//! - `depth`: Nesting depth: refused past `CORRAL_MAX_JSON_DEPTH`, nothing
//!   published.
//! - `helpers`: What the ingress tests share: settings, requests, answers, and
//!   reading the queue and the metrics.
//! - `hostile`: Hostile clients: heads trickled on a kept-alive connection,
//!   connections past the limit, and compressed bodies.
//! - `logs`: Tokens, passwords and webhook bodies stay out of logs, and a
//!   storm of refusals does not flood them.
//! - `memory`: Memory stays bounded when the broker stops answering.
//! - `rejections`: Rejections: status, error body, counter, and nothing
//!   published.
//! - `shutdown`: Graceful shutdown.
//! - `signed`: The signed route, `POST /webhooks/dropcowboy`: the
//!   provider's receiver conformance suite, secrets and start-up rules.
//! - `tls`: TLS to RabbitMQ.

mod auth;
mod broker_loss;
mod coalescing;
mod concurrency;
mod contract;
mod depth;
pub(crate) mod helpers;
mod hostile;
mod logs;
mod memory;
mod rejections;
mod shutdown;
pub(crate) mod signed;
mod tls;
