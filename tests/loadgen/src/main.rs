//! `corral-loadgen`: a Drop Cowboy simulator that drives corral-ingress with
//! realistic delivery-status webhooks, measures it, and optionally proves
//! that every accepted webhook landed in PostgreSQL exactly once.
//! A thin CLI over [`corral_loadgen`]; see `docs/loadgen.md`.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use corral_loadgen::{self as loadgen, Config, Load, Mix, VerifyOptions};

/// Exit status when the verification found lost, duplicated or otherwise wrong rows.
const EXIT_VERIFY_FAILED: u8 = 1;
/// Exit status when the run or the verification could not be made.
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "corral-loadgen",
    version,
    about = "Drop Cowboy simulator: load corral-ingress with delivery-status webhooks, measure it, verify the database.",
    long_about = "Drop Cowboy simulator: load corral-ingress with delivery-status webhooks, measure it, \
and optionally verify that every webhook answered 2xx landed in PostgreSQL exactly once.\n\n\
Callbacks (--token) go to the token routes; with --signing-secret, signed webhooks go to \
/webhooks/dropcowboy, signed as Drop Cowboy signs them, with its retries and, for some drops, \
the callback too.\n\n\
Closed loop (default, --connections N): N virtual users, each on its own HTTP/1.1 keep-alive \
connection, each sending its next webhook when the previous one was answered.\n\
Open loop (--rate R): R requests per second whatever the answers; latency counts from the \
scheduled send time, so a stalled server cannot hide its stalls.\n\n\
Every drop_id of a run starts with the run id (10 hex digits), so runs never collide.\n\n\
Exit status: 0 done (and verified, with --verify); 1 the verification found lost, duplicated, \
unexpected, changed, stale, quarantined or unmerged webhooks; 2 the run or the verification could not be made.",
    after_help = "Examples:\n  corral-loadgen --token \"$TOKEN\" -c 64 -d 15s --warmup 2s \
--duplicate-fraction 0.05 --out-of-order-fraction 0.05 --json report.json \
--verify postgres://postgres@127.0.0.1:5432/corral\n  \
corral-loadgen --signing-secret \"$SECRET\" --token \"$TOKEN\" -c 64 -d 15s \
--retry-fraction 0.1 --both-channels-fraction 0.1 --verify postgres://postgres@127.0.0.1:5432/corral"
)]
struct Args {
    /// Base URL of corral-ingress; webhooks are posted to
    /// `<URL>/webhooks/dropcowboy/sms` and `/rvm`. Plain http only.
    #[arg(
        long,
        env = "CORRAL_LOADGEN_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    target: String,

    /// Webhook token, sent as `Authorization: Bearer <TOKEN>` to the
    /// callback routes (one of ingress's CORRAL_WEBHOOK_TOKENS). Needed
    /// unless every item is a signed webhook.
    #[arg(long, env = "CORRAL_LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Signing secret of a Drop Cowboy webhook (one of ingress's
    /// CORRAL_DROPCOWBOY_SIGNING_SECRETS): items are then sent as signed
    /// webhooks to `<URL>/webhooks/dropcowboy`, each signed as it leaves
    /// (`X-Signature: sha256=` HMAC-SHA256 of `X-Timestamp`, `.`, the body).
    #[arg(long, env = "CORRAL_LOADGEN_SIGNING_SECRET", hide_env_values = true)]
    signing_secret: Option<String>,

    /// Share of items sent as signed webhooks, the rest as callbacks: 1 by
    /// default with --signing-secret, else 0 (more needs a secret).
    #[arg(long, value_name = "FRACTION")]
    signed_fraction: Option<f64>,

    /// Of the signed items, the share whose drop's result also goes as its
    /// callback to the token route, in either order (one result, two
    /// channels: one `deliveries` row).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    both_channels_fraction: f64,

    /// Of the signed items, the share that are events corral does not type
    /// (contact.msg.received, campaign.completed, …): kept in
    /// provider_events.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    other_event_fraction: f64,

    /// Share of signed events delivered again, as the provider retries: the
    /// same event_id with a new X-Timestamp, signature and X-Attempt (2, a
    /// quarter of them 3 too), half of them re-serialised. Each is stored
    /// once.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    retry_fraction: f64,

    /// Share of signed voicemail results a receipt can follow (reason_code
    /// 0, 4001, 4002) that are followed by their contact.rvm.receipt.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    receipt_fraction: f64,

    /// Closed loop: this many virtual users, each with exactly one keep-alive
    /// connection, each sending its next request when the previous one was
    /// answered. The default load (16) when --rate is not given.
    #[arg(short = 'c', long, value_name = "N", conflicts_with = "rate")]
    connections: Option<usize>,

    /// Open loop: schedule this many requests per second, whatever the
    /// answers. Latency is measured from each request's scheduled time.
    #[arg(short = 'r', long, value_name = "PER_SEC")]
    rate: Option<f64>,

    /// Open loop: at most this many connections at once; a request that
    /// finds them all busy waits (and the wait counts in its latency).
    #[arg(long, value_name = "N", default_value_t = 512, requires = "rate")]
    max_connections: usize,

    /// Measure for this long after the warm-up (500ms, 15s, 2m, 1h; a bare
    /// number is seconds). 10s when neither this nor --requests is given.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Measure this many requests after the warm-up (duplicate resends and
    /// both events of an out-of-order pair count as requests). With
    /// --duration, whichever ends first.
    #[arg(short = 'n', long, value_name = "N")]
    requests: Option<u64>,

    /// Send, but do not measure, for this long first (connections warm up,
    /// the services reach their steady state).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,

    /// A request without an answer after this long counts as a timeout and
    /// its connection is dropped.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,

    /// Share of webhooks for ringless voicemail (/rvm); the rest are SMS.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.25)]
    rvm_fraction: f64,

    /// Share of webhooks reporting success; the rest are failures with a
    /// reason drawn evenly from every reason the provider documents.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.8)]
    success_fraction: f64,

    /// Share of webhooks sent twice in a row, byte for byte (a provider
    /// resend); corral must store each once.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    duplicate_fraction: f64,

    /// Share of items that are two events for one drop_id, the newer sent
    /// first (the older is a "Temporarily unreachable" failure that was
    /// retried); `deliveries` must end at the newer.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    out_of_order_fraction: f64,

    /// Share of webhooks without a foreign_id (their send request set none).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    no_foreign_id_fraction: f64,

    /// Seed of the traffic's random choices (random by default; the report
    /// gives the one used).
    #[arg(long)]
    seed: Option<u64>,

    /// Worker threads of the generator's runtime. It shares the machine with
    /// the services it measures, so keep it small; the report gives its CPU.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Write the JSON report to FILE (`-`: standard output, and the table
    /// goes to standard error).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Do not print the table.
    #[arg(short = 'q', long)]
    quiet: bool,

    /// Do not draw the progress bar (it is drawn only when standard error is
    /// a terminal anyway).
    #[arg(long)]
    no_progress: bool,

    /// After sending, wait for the pipeline to drain and check the corral
    /// database at DATABASE_URL (the worker's CORRAL_DATABASE_URL): every
    /// callback answered 2xx must be in delivery_events exactly once, every
    /// signed event answered 2xx once by its event_id (delivery_events for
    /// results, provider_events for the rest), no row of the run may be
    /// unexpected, and `deliveries` must show each drop_id's newest event
    /// (and, for a drop sent on both channels, the callback's foreign_id).
    /// Prints lost / duplicated / unexpected counts.
    #[arg(
        long,
        value_name = "DATABASE_URL",
        env = "CORRAL_LOADGEN_VERIFY",
        hide_env_values = true
    )]
    verify: Option<String>,

    /// With --verify: stop waiting for the pipeline to drain after this long
    /// and report what is there.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    verify_timeout: Duration,

    /// With --verify: the pipeline counts as drained once the run's row count
    /// has not moved for this long (or at once when every body sent is
    /// stored).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    verify_quiet: Duration,
}

/// `500ms`, `15s`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 15s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())
}

impl Args {
    fn config(&self) -> Config {
        let load = match self.rate {
            Some(rate) => Load::Open {
                rate,
                max_connections: self.max_connections,
            },
            None => Load::Closed {
                connections: self.connections.unwrap_or(16),
            },
        };
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        };
        Config {
            target: self.target.clone(),
            token: self.token.clone().unwrap_or_default(),
            signing_secret: self.signing_secret.clone(),
            load,
            duration,
            requests: self.requests,
            warmup: self.warmup,
            timeout: self.timeout,
            mix: Mix {
                rvm: self.rvm_fraction,
                success: self.success_fraction,
                duplicates: self.duplicate_fraction,
                out_of_order: self.out_of_order_fraction,
                without_foreign_id: self.no_foreign_id_fraction,
                signed: self
                    .signed_fraction
                    .unwrap_or(if self.signing_secret.is_some() {
                        1.0
                    } else {
                        0.0
                    }),
                both_channels: self.both_channels_fraction,
                other_events: self.other_event_fraction,
                retries: self.retry_fraction,
                receipts: self.receipt_fraction,
            },
            seed: self.seed,
            progress: !self.no_progress,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let outcome = runtime
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_VERIFY_FAILED),
        Err(err) => {
            eprintln!("corral-loadgen: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs, verifies, reports; `Ok(false)` when the verification failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let mut run = loadgen::run(args.config()).await?;
    run.report.generator.threads = Some(args.threads.max(1));
    if let Some(db_url) = &args.verify {
        if !args.quiet {
            eprintln!(
                "corral-loadgen: sent; waiting (at most {:?}) for the pipeline to drain, then verifying…",
                args.verify_timeout
            );
        }
        let options = VerifyOptions {
            timeout: args.verify_timeout,
            quiet: args.verify_quiet,
            ..VerifyOptions::default()
        };
        run.report.verification = Some(loadgen::verify(db_url, &run.sent, &options).await?);
    }
    let json_to_stdout = args.json.as_deref() == Some("-".as_ref());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&run.report).context("serialising the report")?;
        if json_to_stdout {
            writeln!(std::io::stdout(), "{json}").context("writing the report")?;
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if !args.quiet {
        if json_to_stdout {
            write!(std::io::stderr(), "{}", run.report)
        } else {
            write!(std::io::stdout(), "{}", run.report)
        }
        .context("writing the table")?;
    }
    Ok(run
        .report
        .verification
        .as_ref()
        .is_none_or(loadgen::Verification::is_ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
