//! The signing secrets: where they come from, and kept only as HMAC keys.
//!
//! Each of the provider's webhooks has its own secret, and a rotation
//! replaces one at once, so several are accepted together: from
//! `CORRAL_DROPCOWBOY_SIGNING_SECRETS` (comma-separated) and from the file
//! `CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE` names (commas or newlines, for a
//! Kubernetes Secret mounted as a file), the union of both. Every item is
//! trimmed and empty ones dropped, as the provider's reference receiver
//! does. No secret is ever logged or printed: `--help` hides the variable's
//! value, [`SigningSettings`]'s `Debug` shows a count, and once loaded a
//! secret exists only inside its [`ring::hmac::Key`].

use std::path::{Path, PathBuf};

use ring::hmac;

use super::verify;

/// The signed route's settings, a group of [`crate::config::IngressConfig`].
#[derive(Clone, clap::Args)]
pub struct SigningSettings {
    /// Signing secrets of Drop Cowboy's webhooks, comma-separated (one per
    /// webhook, and two during a rotation): `POST /webhooks/dropcowboy`
    /// accepts a delivery signed with any of them. Unset (and no file), that
    /// route answers 503.
    #[arg(
        long = "dropcowboy-signing-secrets",
        env = "CORRAL_DROPCOWBOY_SIGNING_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secrets: Vec<String>,

    /// A file of more signing secrets, separated by commas or newlines (a
    /// Kubernetes Secret mounted as a file); read once at start, and a file
    /// that cannot be read stops the start.
    #[arg(
        long = "dropcowboy-signing-secrets-file",
        env = "CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE"
    )]
    pub secrets_file: Option<PathBuf>,

    /// How far `X-Timestamp` may be from now, in seconds, either way, for a
    /// signed delivery to be accepted (the provider's rule: 300).
    #[arg(long, env = "CORRAL_SIGNATURE_TOLERANCE_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub signature_tolerance_secs: u64,
}

impl std::fmt::Debug for SigningSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("SigningSettings")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("secrets_file", &self.secrets_file)
            .field("signature_tolerance_secs", &self.signature_tolerance_secs)
            .finish()
    }
}

/// How long Drop Cowboy waits for an answer, less a second for the network:
/// what the waits of a signed delivery's request must fit in.
pub const ANSWER_BUDGET_MS: u64 = 4_000;

/// Signing settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The secrets file could not be read.
    #[error(transparent)]
    Unreadable(#[from] SecretsError),
    /// A signed delivery could wait past the provider's patience.
    #[error(
        "CORRAL_IN_FLIGHT_WAIT_MS ({wait} ms) + CORRAL_PUBLISH_TIMEOUT_MS ({publish} ms) must be \
         at most {ANSWER_BUDGET_MS} ms with signing secrets configured: Drop Cowboy waits 5 s \
         for an answer, then counts the delivery as failed and, if its endpoint keeps failing, \
         pauses it and drops its events"
    )]
    TooSlow {
        /// `CORRAL_IN_FLIGHT_WAIT_MS`.
        wait: u64,
        /// `CORRAL_PUBLISH_TIMEOUT_MS`.
        publish: u64,
    },
}

/// The secrets file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE {}", path.display())]
pub struct SecretsError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl SigningSettings {
    /// The secrets of both settings, trimmed, empty ones dropped, each once.
    pub fn secrets(&self) -> Result<Vec<String>, SecretsError> {
        // clap splits the variable at its commas; a value set another way
        // (a test's, or one with commas in a single flag) is split the same.
        let mut all = items(self.secrets.iter().flat_map(|item| item.split(',')));
        if let Some(path) = &self.secrets_file {
            let text = read(path)?;
            all.extend(items(text.split([',', '\n'])));
        }
        let mut unique = Vec::with_capacity(all.len());
        for secret in all {
            if !unique.contains(&secret) {
                unique.push(secret);
            }
        }
        Ok(unique)
    }

    /// The HMAC keys of [`SigningSettings::secrets`].
    pub fn keys(&self) -> Result<Keys, SecretsError> {
        Ok(Keys(
            self.secrets()?.iter().map(|s| verify::key(s)).collect(),
        ))
    }

    /// The keys, once the waits a signed delivery's request may go
    /// through (`wait_ms` for room, then `publish_ms` for a verdict) are
    /// checked to fit [`ANSWER_BUDGET_MS`]. Without secrets nothing is
    /// signed, and any deadline goes.
    pub fn load(&self, wait_ms: u64, publish_ms: u64) -> Result<Keys, SigningError> {
        let keys = self.keys()?;
        if !keys.is_empty() && wait_ms.saturating_add(publish_ms) > ANSWER_BUDGET_MS {
            return Err(SigningError::TooSlow {
                wait: wait_ms,
                publish: publish_ms,
            });
        }
        Ok(keys)
    }
}

fn items<'a>(raw: impl Iterator<Item = &'a str>) -> Vec<String> {
    raw.map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(str::to_owned)
        .collect()
}

fn read(path: &Path) -> Result<String, SecretsError> {
    std::fs::read_to_string(path).map_err(|source| SecretsError {
        path: path.to_owned(),
        source,
    })
}

/// The loaded secrets, as keys only.
#[derive(Clone, Default)]
pub struct Keys(Vec<hmac::Key>);

impl Keys {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys.
    pub fn as_slice(&self) -> &[hmac::Key] {
        &self.0
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        signing: SigningSettings,
    }

    fn parse(args: &[&str]) -> SigningSettings {
        Only::parse_from(std::iter::once("test").chain(args.iter().copied())).signing
    }

    #[test]
    fn items_are_trimmed_empty_ones_dropped_and_both_sources_joined() {
        let dir = std::env::temp_dir().join(format!("corral-secrets-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = dir.join("secrets");
        std::fs::write(&file, "  from-file-1 \n\nfrom-file-2,, first \r\n").expect("writing");
        let settings = parse(&[
            "--dropcowboy-signing-secrets",
            " first , ,second ",
            "--dropcowboy-signing-secrets-file",
            file.to_str().expect("a UTF-8 path"),
        ]);
        let secrets = settings.secrets().expect("readable");
        std::fs::remove_dir_all(&dir).expect("removing the directory");
        assert_eq!(secrets, ["first", "second", "from-file-1", "from-file-2"]);
        assert_eq!(settings.signature_tolerance_secs, 300);
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_the_setting_and_the_path() {
        let settings = parse(&[
            "--dropcowboy-signing-secrets-file",
            "/nonexistent/corral-signing-secrets",
        ]);
        let err = settings.keys().expect_err("no such file");
        assert_eq!(
            err.to_string(),
            "reading CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE /nonexistent/corral-signing-secrets"
        );
    }

    #[test]
    fn with_secrets_the_waits_must_fit_the_provider_s_patience() {
        let signed = parse(&["--dropcowboy-signing-secrets", "s"]);
        assert_eq!(signed.load(250, 3_000).expect("the defaults fit").len(), 1);
        assert_eq!(
            signed.load(1_000, 3_000).expect("exactly 4 s fits").len(),
            1
        );
        let err = signed.load(1_000, 3_001).expect_err("past 4 s");
        let text = err.to_string();
        assert!(
            text.contains("CORRAL_IN_FLIGHT_WAIT_MS (1000 ms)")
                && text.contains("CORRAL_PUBLISH_TIMEOUT_MS (3001 ms)"),
            "{text}"
        );
        let unsigned = parse(&[]);
        assert!(
            unsigned
                .load(250, 30_000)
                .expect("nothing signed")
                .is_empty()
        );
    }

    #[test]
    fn debug_shows_how_many_never_what() {
        let settings = parse(&["--dropcowboy-signing-secrets", "hush-1,hush-2"]);
        let shown = format!("{settings:?} {:?}", settings.keys().expect("keys"));
        assert!(!shown.contains("hush"), "{shown}");
        assert!(shown.contains("[2 redacted]"), "{shown}");
        assert!(shown.contains("count: 2"), "{shown}");
    }
}
