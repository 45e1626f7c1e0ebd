//! `corral-worker suppressions …`: list and lift the numbers not to message
//! again ([`crate::ops::suppressions`] does the work).

use std::io::Write;

use clap::Subcommand;

use super::preview;
use crate::{
    config::WorkerConfig,
    ops::suppressions::{Selection, lift_suppressions, list_suppressions},
};

/// `corral-worker suppressions …`: the worker suppresses a number when a
/// webhook says it opted out, belongs to a known litigator, is on the
/// sender's or a do-not-call list, or cannot take SMS (docs/operations/data.md,
/// "Suppressions"). No webhook ever lifts one.
#[derive(Debug, Clone, Subcommand)]
pub enum SuppressionCommand {
    /// Show suppressions in force, most recently seen first.
    List {
        /// Only this number (E.164, as the provider sends it: `+15552224444`).
        #[arg(long)]
        phone: Option<String>,
        /// Only this channel.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Lifted ones too.
        #[arg(long)]
        all: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Lift a number's suppressions in force (all, or one channel or class),
    /// e.g. after the recipient opted in again in writing. Only an event
    /// attempted after the latest one seen suppresses it again.
    Lift {
        /// The number (E.164, as the provider sends it).
        #[arg(long)]
        phone: String,
        /// Only this channel.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Who lifts it and why; kept with the row.
        #[arg(long)]
        by: String,
    },
}

/// A channel, as the tables name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// SMS.
    Sms,
    /// Ringless voicemail.
    Rvm,
}

impl KindArg {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Rvm => "rvm",
        }
    }
}

/// A suppression class, as `suppressions.class` names it (the reasons
/// and codes behind each: docs/operations/data.md, "Suppressions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuppressionClass {
    /// Code 6005, or reason `Opted out`.
    #[value(name = "opted_out")]
    OptedOut,
    /// Code 4017, or reason `Known Litigator`.
    Litigator,
    /// Code 4016, or reason `Internal DNC`.
    #[value(name = "internal_dnc")]
    InternalDnc,
    /// `"dnc": true`.
    Dnc,
    /// Reason `Prohibited by carrier or not SMS enabled`.
    Carrier,
    /// Code 4019: the number was reassigned to someone else.
    Reassigned,
}

impl SuppressionClass {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::Litigator => "litigator",
            Self::InternalDnc => "internal_dnc",
            Self::Dnc => "dnc",
            Self::Carrier => "carrier",
            Self::Reassigned => "reassigned",
        }
    }
}

/// Runs `corral-worker suppressions …` and writes its report to `out`.
pub async fn run(
    command: SuppressionCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (rows, verb) = match command {
        SuppressionCommand::List {
            phone,
            kind,
            class,
            all,
            limit,
        } => {
            let selection = Selection {
                phone_number: phone,
                kind: kind.map(|kind| kind.as_str().to_owned()),
                class: class.map(|class| class.as_str().to_owned()),
            };
            (
                list_suppressions(config, &selection, all, limit).await?,
                "listed",
            )
        }
        SuppressionCommand::Lift {
            phone,
            kind,
            class,
            by,
        } => {
            let selection = Selection {
                phone_number: Some(phone),
                kind: kind.map(|kind| kind.as_str().to_owned()),
                class: class.map(|class| class.as_str().to_owned()),
            };
            (lift_suppressions(config, &selection, &by).await?, "lifted")
        }
    };
    writeln!(
        out,
        "# phone_number\tkind\tclass\tactive\tfirst_seen\tlast_seen\treason\tlifted"
    )?;
    for row in &rows {
        let lifted = match (&row.lifted_at, &row.lifted_by) {
            (Some(at), Some(by)) => {
                format!("{} by {}", at.to_rfc3339(), preview(by.as_bytes(), 80))
            }
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.phone_number,
            row.kind,
            row.class,
            if row.active { "yes" } else { "no" },
            row.first_seen.to_rfc3339(),
            row.last_seen.to_rfc3339(),
            row.reason.as_deref().unwrap_or("-"),
            lifted,
        )?;
    }
    writeln!(out, "# {verb} {} suppression(s)", rows.len())?;
    Ok(())
}
