//! Several broker addresses: `CORRAL_AMQP_URL` may name every node of a
//! cluster, comma-separated. A connect tries them in turn, starting after
//! the one reached last, so a process whose node died moves to the next one
//! at once (as it would behind a Kubernetes Service) instead of knocking at
//! the dead one first on every attempt.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use lapin::uri::AMQPUri;

use super::AmqpError;
use crate::config::{redact_url, url_entries};

/// Where the next connect starts in the list of broker URLs.
#[derive(Debug, Clone, Default)]
pub struct Rotation(Arc<AtomicUsize>);

impl Rotation {
    /// The indices of `count` URLs in the order the next connect tries them.
    pub fn order(&self, count: usize) -> impl Iterator<Item = usize> {
        let start = self.0.load(Ordering::Relaxed);
        (0..count).map(move |step| (start + step) % count)
    }

    /// The URL at `index` was reached: the next connect (after this
    /// connection dies) starts with the one after it.
    pub fn reached(&self, index: usize) {
        self.0.store(index + 1, Ordering::Relaxed);
    }
}

/// Parses `CORRAL_AMQP_URL`, one URL or several separated by commas;
/// binaries call it at start so a typo fails fast instead of looking like an
/// unreachable broker. An error names the entry and shows it with its
/// password replaced by `***`, also where the parser's own message quotes it.
pub fn parse_urls(list: &str) -> Result<Vec<AMQPUri>, AmqpError> {
    let entries = url_entries(list);
    let of = entries.len();
    entries
        .into_iter()
        .enumerate()
        .map(|(index, url)| parse_entry(url, index + 1, of))
        .collect()
}

/// Parses one URL (a list of one).
pub fn parse_url(url: &str) -> Result<AMQPUri, AmqpError> {
    parse_entry(url.trim(), 1, 1)
}

fn parse_entry(url: &str, entry: usize, of: usize) -> Result<AMQPUri, AmqpError> {
    let invalid = |reason: String| {
        let redacted = redact_url(url);
        AmqpError::InvalidUrl {
            reason: reason.replace(url, &redacted),
            url: redacted,
            entry,
            of,
        }
    };
    // A comma ends a URL only where another URL follows it, so a trailing
    // or doubled comma would otherwise end up in a host name or a vhost.
    if url.is_empty() || url.ends_with(',') {
        return Err(invalid("an empty entry (a stray comma)".into()));
    }
    AMQPUri::from_str(url).map_err(invalid)
}

/// ` (entry 2 of 3)` for an error about one URL of several, else nothing.
pub(super) fn entry_note(entry: &usize, of: &usize) -> String {
    if *of > 1 {
        format!(" (entry {entry} of {of})")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_cut_before_each_url_and_a_comma_in_a_password_stays() {
        let list = "amqp://u:p@a:5672/%2f, amqps://u:p,w@b/vh ,amqp://c";
        let uris = parse_urls(list).unwrap();
        let hosts: Vec<_> = uris.iter().map(|u| u.authority.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(uris[1].authority.userinfo.password, "p,w");
        assert_eq!(parse_urls("amqp://one").unwrap().len(), 1);
    }

    #[test]
    fn a_bad_entry_is_named_without_its_password() {
        for (list, named) in [
            (
                "amqp://u:hunter2@a,amqp://u:hunter2@b:notaport",
                "entry 2 of 2",
            ),
            ("amqp://u:hunter2@a,", "stray comma"),
            ("amqp://u:hunter2@a,,amqp://b", "entry 1 of 2"),
            ("", "empty entry"),
            ("http://u:hunter2@a,amqp://b", "entry 1 of 2"),
        ] {
            let err = parse_urls(list).expect_err(list);
            let shown = format!("{err} / {err:?}");
            assert!(shown.contains(named), "{list}: {shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn each_url_of_a_list_is_redacted() {
        assert_eq!(
            redact_url("amqp://u:s3cret@a/%2f, amqps://v:p,w@b"),
            "amqp://u:***@a/%2f,amqps://v:***@b"
        );
    }

    #[test]
    fn the_rotation_starts_after_the_broker_reached_last() {
        let rotation = Rotation::default();
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        rotation.clone().reached(0);
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [1, 2, 0]);
        rotation.reached(2);
        assert_eq!(rotation.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation.order(1).collect::<Vec<_>>(), [0]);
    }
}
