//! What every operator command shares, so they behave like the tools
//! operators already know (kubectl, gh, psql): the report on stdout and
//! everything else on stderr, listings as tab-separated lines or one JSON
//! document, a listing cut short said so on stderr, and exit codes a script
//! can tell apart.

use std::io::{IsTerminal, Write};

use clap::Args;
use serde_json::Value;

/// Exit code of a command that failed (an error was printed on stderr).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a command used wrongly (clap's own, kept for ours).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a command that worked but found nothing to act on, e.g.
/// `suppressions lift` that lifted nothing.
pub const EXIT_NOTHING_MATCHED: u8 = 3;

/// How a command that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked (a listing may be empty).
    Done,
    /// It acted on nothing: the selection matched nothing. The text says what
    /// was looked for and how to see what there is.
    NothingMatched(String),
}

impl Outcome {
    /// The process's exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Done => 0,
            Self::NothingMatched(_) => EXIT_NOTHING_MATCHED,
        }
    }
}

/// The options of every listing.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Show at most this many; if there are more, stderr says so.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Print one JSON document (`{"items": [...], "truncated": bool}`, the
    /// field names documented in docs/operations/spool-and-dead-letters.md)
    /// instead of tab-separated lines.
    #[arg(long)]
    pub json: bool,
}

impl Default for ListArgs {
    fn default() -> Self {
        Self {
            limit: 100,
            json: false,
        }
    }
}

impl ListArgs {
    /// The first `limit`, as tab-separated lines.
    pub fn first(limit: u64) -> Self {
        Self { limit, json: false }
    }

    /// How many rows to read: one more than shown tells whether there are more.
    pub fn fetch(&self) -> u64 {
        self.limit.saturating_add(1)
    }

    /// Keeps the first `limit` of `rows`; true when some were cut off.
    pub fn cut<T>(&self, rows: &mut Vec<T>) -> bool {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let cut = rows.len() > limit;
        rows.truncate(limit);
        cut
    }
}

/// Writes a listing as one JSON document, and says on stderr when it was cut
/// short (also for the tab-separated form, where the caller wrote the lines).
pub fn finish_list(
    args: &ListArgs,
    items: Vec<Value>,
    truncated: bool,
    what: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if args.json {
        let document = serde_json::json!({ "items": items, "truncated": truncated });
        serde_json::to_writer_pretty(&mut *out, &document)?;
        writeln!(out)?;
    }
    if truncated {
        eprintln!(
            "corral-worker: showing the first {} {what}; there are more (raise --limit)",
            args.limit
        );
    }
    Ok(())
}

/// A running count on stderr while a long command works, when stderr is a
/// terminal (a log or a pipe gets the final report only).
pub fn progress(verb: &str, done: usize) {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        let _ = write!(stderr, "\r{verb} {done} so far…");
        let _ = stderr.flush();
    }
}

/// Ends the running count's line, if one was written.
pub fn progress_done() {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        let _ = writeln!(stderr);
    }
}
