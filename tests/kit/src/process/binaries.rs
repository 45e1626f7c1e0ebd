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
        "{} not found at {} (set CORRAL_TEST_BIN_DIR or run `cargo build --workspace --all-targets`)",
        binary.name(),
        path.display()
    );
    path
}

/// `cargo build --workspace --all-targets --locked`, the very command
/// `scripts/test` builds with: cargo unifies features over the targets it is
/// asked to build, and the tests' dev-dependencies add features to tokio,
/// lapin and some 80 other crates, so building the binaries alone (`--bins`)
/// compiled a second variant of each (about a minute) and replaced the
/// binaries the build step made. Cargo's own lock makes concurrent test
/// processes build one after another; after the first it is a no-op.
fn build_binaries() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // What cargo and nextest set for the crate a test runs in
    // (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …) is not the environment
    // `scripts/test` built in, and build scripts that declare them
    // (`rerun-if-env-changed`: ring's does) make cargo rebuild them and every
    // crate above them, once in the tests and again in the fault suite
    // (about 40 s each from a clean clone).
    remove_inherited(&mut command, |name| {
        [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name)
    });
    let status = command
        .current_dir(workspace_root())
        .args(["build", "--workspace", "--all-targets", "--locked"])
        .stdin(Stdio::null())
        .status()
        .expect("running cargo build --workspace --all-targets");
    assert!(
        status.success(),
        "cargo build --workspace --all-targets failed: {status}"
    );
}

/// Keeps every variable of this process's environment whose name `unwanted`
/// picks from reaching `command`.
pub(super) fn remove_inherited(command: &mut Command, unwanted: impl Fn(&str) -> bool) {
    for (key, _) in std::env::vars_os() {
        if unwanted(&key.to_string_lossy()) {
            command.env_remove(key);
        }
    }
}
