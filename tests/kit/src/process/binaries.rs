//! Where the service binaries are, and building them once per test process.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `corral-ingress`.
    Ingress,
    /// `corral-worker`.
    Worker,
}

impl Binary {
    /// The executable's name.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Ingress => "corral-ingress",
            Binary::Worker => "corral-worker",
        }
    }
}

/// The workspace root (this package lives in `<root>/tests/kit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the test kit lives in <workspace>/tests/kit")
        .to_path_buf()
}

/// The directory holding the binaries the tests run.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRAL_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// Builds both binaries once per test process (unless `CORRAL_TEST_BIN_DIR`
/// names ready-made ones). The build runs on a blocking thread, so a runtime
/// that must keep a broker connection's heartbeats going meanwhile is not
/// stalled by it.
pub async fn prepare_binaries() {
    tokio::task::spawn_blocking(build_once)
        .await
        .expect("building the binaries");
}

fn build_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    if std::env::var_os("CORRAL_TEST_BIN_DIR").is_some() {
        return;
    }
    BUILT.get_or_init(build_binaries);
}

/// The path of `binary`, built first if needed (blocking: async code calls
/// [`prepare_binaries`] first, as [`Process::start`](super::Process::start) does).
pub fn binary_path(binary: Binary) -> PathBuf {
    build_once();
    let path = bin_dir().join(binary.name());
    assert!(
        path.exists(),
        "{} not found at {} (set CORRAL_TEST_BIN_DIR or run `cargo build --workspace --bins`)",
        binary.name(),
        path.display()
    );
    path
}

/// `cargo build --workspace --bins --locked`, the very command `scripts/test`
/// runs before the tests: cargo unifies features over the packages it is
/// asked to build, so building only the two service packages would compile a
/// second variant of their dependencies (ring, rustls, lapin: about a minute)
/// and replace the binaries the build step made. Cargo's own lock makes
/// concurrent test processes build one after another; the second is a no-op.
fn build_binaries() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--workspace", "--bins", "--locked"])
        .stdin(Stdio::null())
        .status()
        .expect("running cargo build --workspace --bins");
    assert!(
        status.success(),
        "cargo build --workspace --bins failed: {status}"
    );
}
