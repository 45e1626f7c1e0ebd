//! `corral-worker suppressions …`: list and lift the numbers not to message
//! again ([`crate::ops::suppressions`] does the work).

use std::io::Write;

use clap::Subcommand;
use serde_json::Value;

use super::{
    Outcome,
    output::{ListArgs, finish_list},
    preview,
};
use crate::{
    config::WorkerConfig,
    ops::{
        OpsError,
        suppressions::{Selection, Suppression, lift_suppressions, list_suppressions},
    },
};

/// `corral-worker suppressions …`: the worker suppresses a number when a
/// webhook says it opted out, belongs to a known litigator, is on the
/// sender's or a do-not-call list, or cannot take SMS (docs/operations/data.md,
/// "Suppressions"). No webhook ever lifts one.
#[derive(Debug, Clone, Subcommand)]
pub enum SuppressionCommand {
    /// Show suppressions in force, oldest first (by first_seen, then number,
    /// channel and class), like every listing.
    List {
        /// Only this number (E.164, as the provider sends it: `+15552224444`).
        #[arg(long, value_parser = e164)]
        phone: Option<String>,
        /// Only this channel.
        #[arg(long = "kind", id = "channel", value_enum)]
        kind: Option<KindArg>,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Lifted ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Lift a number's suppressions in force (of one class, or of all with
    /// --all-classes; of one channel or both), e.g. after the recipient
    /// opted in again in writing. Only an event attempted after the latest
    /// one seen suppresses it again. Lifting an opted-out or litigator
    /// suppression (or all classes) needs --yes: messaging such a number can
    /// expose the sender to a lawsuit. Exits 3 when nothing was in force.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["class", "all_classes"])))]
    Lift {
        /// The number (E.164, as the provider sends it: `+15552224444`).
        #[arg(long, value_parser = e164)]
        phone: String,
        /// Only this channel.
        #[arg(long = "kind", id = "channel", value_enum)]
        kind: Option<KindArg>,
        /// The class to lift.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Every class in force for the number (needs --yes).
        #[arg(long)]
        all_classes: bool,
        /// Who lifts it and why; kept with the row.
        #[arg(long)]
        by: String,
        /// Show what would be lifted; lift nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm lifting an opted-out or litigator suppression.
        #[arg(long)]
        yes: bool,
    },
}

/// Accepts an E.164 number (`+`, then 2 to 15 digits, the first not 0), the
/// form the provider sends and the table keeps: any other spelling would
/// match no row.
fn e164(text: &str) -> Result<String, String> {
    let digits = text.strip_prefix('+').unwrap_or("");
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an E.164 number: write it as the provider sends it, e.g. +15552224444"
        ))
    }
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

impl SuppressionClass {
    /// Whether lifting it can expose the sender to a lawsuit (TCPA): those
    /// need `--yes`.
    fn needs_confirmation(self) -> bool {
        matches!(self, Self::OptedOut | Self::Litigator)
    }
}

/// Runs `corral-worker suppressions …` and writes its report to `out`.
pub async fn run(
    command: SuppressionCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match command {
        SuppressionCommand::List {
            phone,
            kind,
            class,
            all,
            list,
        } => {
            let selection = selection(phone, kind, class);
            let mut rows = list_suppressions(config, &selection, all, list.fetch()).await?;
            let truncated = list.cut(&mut rows);
            if !list.json {
                write_rows(&rows, "listed", out)?;
            }
            let items = rows.iter().map(json).collect();
            finish_list(&list, items, truncated, "suppressions", out)?;
            Ok(Outcome::Done)
        }
        SuppressionCommand::Lift {
            phone,
            kind,
            class,
            all_classes,
            by,
            dry_run,
            yes,
        } => {
            let confirm = all_classes || class.is_some_and(SuppressionClass::needs_confirmation);
            if confirm && !yes && !dry_run {
                return Err(OpsError::Usage(
                    "lifting an opted-out or litigator suppression (or every class) can expose                      the sender to a lawsuit: check with --dry-run, then confirm with --yes"
                        .to_owned(),
                )
                .into());
            }
            let selection = selection(Some(phone), kind, class);
            let lifted = lift_suppressions(config, &selection, &by, dry_run).await?;
            lift_report(&selection, &lifted, dry_run, out)
        }
    }
}

fn selection(
    phone: Option<String>,
    kind: Option<KindArg>,
    class: Option<SuppressionClass>,
) -> Selection {
    Selection {
        phone_number: phone,
        kind: kind.map(|kind| kind.as_str().to_owned()),
        class: class.map(|class| class.as_str().to_owned()),
    }
}

fn lift_report(
    selection: &Selection,
    lifted: &[Suppression],
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    if lifted.is_empty() {
        let phone = selection.phone_number.as_deref().unwrap_or("-");
        return Ok(Outcome::NothingMatched(format!(
            "no suppression in force matches {phone}{}{} \
             (`corral-worker suppressions list --all --phone {phone}` shows its rows)",
            selection
                .kind
                .as_deref()
                .map_or_else(String::new, |kind| format!(", kind {kind}")),
            selection
                .class
                .as_deref()
                .map_or_else(String::new, |class| format!(", class {class}")),
        )));
    }
    let verb = if dry_run { "would lift" } else { "lifted" };
    write_rows(lifted, verb, out)?;
    Ok(Outcome::Done)
}

fn write_rows(rows: &[Suppression], verb: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "# phone_number\tkind\tclass\tactive\tfirst_seen\tlast_seen\treason\tlifted"
    )?;
    for row in rows {
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

/// A row in `--json`: the table's own column names.
fn json(row: &Suppression) -> Value {
    serde_json::json!({
        "phone_number": row.phone_number,
        "kind": row.kind,
        "class": row.class,
        "active": row.active,
        "reason": row.reason,
        "first_seen": row.first_seen.to_rfc3339(),
        "last_seen": row.last_seen.to_rfc3339(),
        "lifted_at": row.lifted_at.map(|at| at.to_rfc3339()),
        "lifted_by": row.lifted_by,
    })
}
