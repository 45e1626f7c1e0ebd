//! Result events (`CORRAL_RESULT_EVENTS=true`): what a customer's service
//! bound to `<prefix>.delivery-results` receives, exactly, once per stored
//! event (deduplicated by id), also across a crash of the worker between
//! storing and publishing, what waits while no queue is bound, and what a
//! queue that refuses some events holds back (only those).

mod crash;
mod flow;
mod helpers;
mod refused;
mod settings;
mod unbound;
