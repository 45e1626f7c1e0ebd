//! The real `corral-ingress` and `corral-worker` binaries as child processes,
//! for the end-to-end tests and the fault suite: start with `CORRAL_*`
//! environment only, wait on `/readyz`, SIGTERM, SIGKILL, restart with the
//! same configuration (same ports), read the resident set size from `/proc`.
//!
//! The binaries come from the workspace's target directory
//! (`$CARGO_TARGET_DIR` or `<workspace>/target`, `debug` profile). Each test
//! process runs `cargo build --workspace --all-targets` for them once, before the first start,
//! so a test never runs yesterday's binary by accident; cargo's own freshness
//! check makes that a no-op when they are up to date. `CORRAL_TEST_BIN_DIR`
//! points at another directory (a release build for the fault suite); those
//! binaries are used as they are, never built.
//!
//! Each process's output is forwarded line by line to the test's stderr
//! (which the test runner shows only for a failing test) and the last lines
//! are kept, so a process that dies or never gets ready explains itself in
//! the panic message.

//!
//! # Layout
//!
//! - [`binaries`]: where the binaries are, and building them once.
//! - [`settings`]: [`ProcessConfig`], a process's environment and ports.
//! - [`child`]: [`Process`], a running child with its log tail.

mod binaries;
mod child;
mod settings;

pub use self::{
    binaries::{Binary, binary_path, prepare_binaries, workspace_root},
    child::{Process, fresh_connections},
    settings::{ProcessConfig, free_port},
};
