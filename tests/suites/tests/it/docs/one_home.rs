//! One home for each measured number and each contract table. The benchmark
//! numbers other pages rely on live in the key figures of docs/benchmarks.md,
//! which `corral-bench` rewrites with every run; a page that repeats one goes
//! stale at the next run without anyone noticing, so pages link instead. The
//! settings' defaults live in the README's configuration table (checked
//! against the binaries above), the HTTP answers in design.md's.

use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{doc_files, line_of, read};

/// The page whose key figures the other pages link to.
const BENCHMARKS: &str = "docs/benchmarks.md";

/// Pages that may state measured numbers: the benchmarks page itself, and
/// the two histories, whose numbers are records of dated runs (a changelog
/// entry, the bench's notes for developers), not claims about today's code.
const MAY_STATE_NUMBERS: &[&str] = &[BENCHMARKS, "CHANGELOG.md", "tests/bench/README.md"];

/// Sections exempt from the first heading to the second (not included):
/// configure-and-size.md's sizing, measured on its own and kept with its
/// run by whoever measured it.
const EXEMPT_SECTIONS: &[(&str, &str, &str)] = &[(
    "docs/operations/configure-and-size.md",
    "Scale",
    "More than one queue",
)];

/// The rows of the key figures table, by anchor: what other pages link to.
const KEY_FIGURES: &[&str] = &[
    "publish-64-in-flight-1-channel",
    "publish-64-in-flight-4-channels",
    "publish-1024-in-flight-4-channels",
    "insert-probe",
    "insert-probe-events-only",
    "ingress-rate-16-connections",
    "ingress-cpu-16-connections",
    "ingress-rate-64-connections",
    "ingress-cpu-64-connections",
    "ingress-rate-256-connections",
    "ingress-cpu-256-connections",
    "webhooks-per-message",
    "ingress-rss",
    "ingress-rss-4096-connections",
    "worker-rate",
    "worker-cpu",
    "worker-rss",
    "pipeline-best-verified",
    "pipeline-ingress-rss",
    "pipeline-worker-rss",
];

// ---------------------------------------------------------------------------
// Finding a measured number in a sentence
// ---------------------------------------------------------------------------

/// A number ("13,400", "2.8") or a range of two ("9–22", "13,400-18,800")
/// at `start..end` of a sentence.
#[derive(Debug)]
struct Amount {
    start: usize,
    end: usize,
    range: bool,
}

/// The end of the number starting at `from` (a digit), thousands groups and
/// decimals included.
fn number_end(s: &str, from: usize) -> usize {
    let bytes = s.as_bytes();
    let digits = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        at
    };
    let mut end = digits(from);
    // "13,400": a comma followed by exactly three digits continues it.
    while bytes.get(end) == Some(&b',') && digits(end + 1) == end + 4 {
        end += 4;
    }
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits(end + 1);
    }
    end
}

/// Every number and range in `s`, not counting digits inside words
/// (`corral-ingress#0`, `V7`, `sha256`).
fn amounts(s: &str) -> Vec<Amount> {
    let bytes = s.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let inside_word =
            at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if !bytes[at].is_ascii_digit() || inside_word {
            at += 1;
            continue;
        }
        let end = number_end(s, at);
        let rest = &s[end..];
        let dash = rest.trim_start();
        let second = dash
            .strip_prefix('–')
            .or_else(|| dash.strip_prefix('-'))
            .map(str::trim_start)
            .filter(|tail| tail.starts_with(|c: char| c.is_ascii_digit()));
        // "2026-11-28" is a date, not a range.
        let date = second.is_some_and(|tail| {
            let tail_end = number_end(tail, 0);
            tail[tail_end..].starts_with('-')
        });
        let second = second.filter(|_| !date);
        let amount = match second {
            Some(tail) => {
                let second_at = s.len() - tail.len();
                Amount {
                    start: at,
                    end: number_end(s, second_at),
                    range: true,
                }
            }
            None => Amount {
                start: at,
                end,
                range: false,
            },
        };
        at = amount.end;
        found.push(amount);
    }
    found
}

/// Words that make a number a duration, a size, a rate or a count of
/// things: a range followed by one is not a number of webhooks per message.
const UNITS: &[&str] = &[
    "ms",
    "s",
    "µs",
    "KiB",
    "MiB",
    "GiB",
    "KB",
    "MB",
    "GB",
    "%",
    "minute",
    "hour",
    "day",
    "second",
    "core",
    "CPU",
    "pod",
    "worker",
    "connection",
    "node",
    "byte",
    "level",
    "character",
    "digit",
    "webhooks/s",
    "/s",
];

/// Whether `rest` starts with the word `unit` (or its plural).
fn starts_with_unit(rest: &str, unit: &str) -> bool {
    rest.strip_prefix(unit)
        .map(|tail| tail.strip_prefix('s').unwrap_or(tail))
        .is_some_and(|tail| !tail.starts_with(char::is_alphanumeric))
}

/// `s` from `from` back by at most `n` bytes, cut at a character boundary.
fn before(s: &str, from: usize, n: usize) -> &str {
    let mut start = from.saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..from]
}

/// `s` from `from` on, at most `n` bytes, cut at a character boundary.
fn after(s: &str, from: usize, n: usize) -> &str {
    let mut end = (from + n).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[from..end]
}

/// Which key figure `sentence` states as a number, if any, with the number.
fn stated_figure(sentence: &str) -> Option<(&'static str, String)> {
    amounts(sentence).into_iter().find_map(|amount| {
        let number = sentence[amount.start..amount.end].to_owned();
        rule(sentence, &amount).map(|rule| (rule, number))
    })
}

/// What follows a range of webhooks per message: "9–22 per message",
/// "9–27 webhooks in a message" ("webhooks" skipped).
const PER_MESSAGE: &[&str] = &[
    "per message",
    "per AMQP message",
    "per SQS message",
    "in a message",
];

/// Words in a sentence that make a rate in it a measured one.
const MEASURED_RATE: &[&str] = &["ingress alone", "pipeline", "at its most", "verified"];

/// The key figure `amount` states, judged by what follows and surrounds it.
fn rule(sentence: &str, amount: &Amount) -> Option<&'static str> {
    let rest = sentence[amount.end..].trim_start();
    let skip = |word: &str| rest.strip_prefix(word).map_or(rest, str::trim_start);
    let (webhooks, confirmed) = (skip("webhooks"), skip("confirmed"));
    let ahead = before(sentence, amount.start, 80);
    if rest.starts_with("µs") {
        return Some("CPU time per webhook (µs)");
    }
    let per_message = PER_MESSAGE.iter().any(|p| webhooks.starts_with(p))
        || rest.starts_with("webhooks each")
        // "One message carries several webhooks (up to …, 9–23 under load)"
        || (!UNITS.iter().any(|unit| starts_with_unit(rest, unit))
            && ahead.contains("message")
            && ahead.contains("webhook"));
    if amount.range && per_message {
        return Some("webhooks per message");
    }
    if rest.starts_with("MiB")
        && (before(sentence, amount.start, 40).contains("RSS")
            || after(sentence, amount.end, 40).contains("RSS"))
    {
        return Some("peak RSS (MiB)");
    }
    // AWS's published quotas are limits, not measurements.
    if (confirmed.starts_with("msg/s") || confirmed.starts_with("messages/s"))
        && !sentence.contains("quota")
    {
        return Some("broker messages/s");
    }
    if ["rows/s", "rows per second", "rows a second"]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        return Some("rows/s");
    }
    let measured = amount.range || MEASURED_RATE.iter().any(|p| sentence.contains(p));
    (webhooks.starts_with("/s") && measured).then_some("measured webhooks/s")
}

/// The sentences of a block of prose: cut after `.` or `;` and a space.
fn sentences(block: &str) -> impl Iterator<Item = &str> {
    block.split(". ").flat_map(|part| part.split("; "))
}

// ---------------------------------------------------------------------------
// Reading the pages
// ---------------------------------------------------------------------------

/// A page's prose, one block (a paragraph, a list item's text, a table cell,
/// a heading) at a time, with its 1-based line and whether an exempt section
/// holds it; code blocks, HTML and link targets left out.
fn blocks(file: &Path, text: &str) -> Vec<Block> {
    let sections: Vec<_> = EXEMPT_SECTIONS
        .iter()
        .filter(|(page, ..)| file == Path::new(page))
        .collect();
    let mut found = Vec::new();
    let mut block = Block::default();
    let (mut heading, mut in_code) = (None::<String>, false);
    for (event, range) in Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Text(part) | Event::Code(part) if !in_code => {
                if block.text.is_empty() {
                    block.line = line_of(text, range.start);
                }
                block.text.push_str(&part);
                if let Some(heading) = &mut heading {
                    heading.push_str(&part);
                }
            }
            Event::SoftBreak | Event::HardBreak => block.text.push(' '),
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let title = heading.take().unwrap_or_default();
                for (_, from, until) in &sections {
                    block.exempt = (block.exempt || title == *from) && title != *until;
                }
                block.flush_into(&mut found);
            }
            // Inline markup goes on within the block.
            Event::Start(
                Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Link { .. }
                | Tag::Image { .. },
            )
            | Event::End(
                TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Link
                | TagEnd::Image,
            ) => {}
            Event::Start(_) | Event::End(_) => block.flush_into(&mut found),
            _ => {}
        }
    }
    found
}

/// A block of prose being read.
#[derive(Debug, Default)]
struct Block {
    line: usize,
    exempt: bool,
    text: String,
}

impl Block {
    /// Ends this block: kept when it holds text; the next one starts in the
    /// same section.
    fn flush_into(&mut self, found: &mut Vec<Block>) {
        let next = Block {
            exempt: self.exempt,
            ..Block::default()
        };
        let done = std::mem::replace(self, next);
        if !done.text.trim().is_empty() {
            found.push(done);
        }
    }
}

/// The pages checked: every doc but those that may state measured numbers.
fn pages_that_must_link() -> Vec<PathBuf> {
    doc_files()
        .into_iter()
        .filter(|file| !MAY_STATE_NUMBERS.iter().any(|page| file == Path::new(page)))
        .collect()
}

/// Every sentence of `file` outside the exempt sections that states a key
/// figure, as `file:line: rule: «number» in "sentence"`.
fn stated_figures(file: &Path, text: &str) -> Vec<String> {
    let mut offenders = Vec::new();
    for block in blocks(file, text) {
        if block.exempt {
            continue;
        }
        let line = block.line;
        for sentence in sentences(&block.text) {
            if let Some((rule, number)) = stated_figure(sentence) {
                offenders.push(format!(
                    "{}:{line}: {rule}: «{number}» in \"{}\"",
                    file.display(),
                    sentence.trim()
                ));
            }
        }
    }
    offenders
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn no_page_but_the_benchmarks_states_a_key_figure() {
    let pages = pages_that_must_link();
    assert!(
        pages.iter().any(|p| p == Path::new("README.md"))
            && pages
                .iter()
                .any(|p| p == Path::new("docs/operations/deploy.md")),
        "the pages to check were not found: {pages:?}"
    );
    let offenders: Vec<String> = pages
        .iter()
        .flat_map(|file| stated_figures(file, &read(file)))
        .collect();
    assert!(
        offenders.is_empty(),
        "these pages state a benchmark figure as a number; link to its row of the key figures \
         ({BENCHMARKS}#key-figures) or to the generated table instead, since the next run \
         changes it:\n{}",
        offenders.join("\n")
    );
}

/// The detector against the copies issue 33 found, and against what it must
/// let through: settings, limits of configuration, durations, inputs.
#[test]
fn the_detector_tells_a_measured_figure_from_a_setting() {
    let caught = [
        "CPU 500m requested (benchmarks: ingress spends 35–45 µs of CPU per webhook)",
        "ingress alone 16,100–23,700 webhooks/s (9–22 per message)",
        "KEDA adds one per 2,000 ready messages — 9–23 webhooks each under load",
        "Group commit puts 9–27 webhooks in a message under load",
        "One message carries several webhooks (up to `CORRAL_PUBLISH_BATCH_MAX`, 9–23 under load)",
        "the broker alone 13,400–18,800 confirmed messages/s",
        "worker 128 MiB / 256 MiB (measured peak RSS, limit twice that)",
        "a worker drained 15,200–16,500 rows/s",
        "the whole pipeline 11,800 webhooks/s with answers under 100 ms",
    ];
    for sentence in caught {
        assert!(stated_figure(sentence).is_some(), "not caught: {sentence}");
    }
    let let_through = [
        "`CORRAL_MAX_IN_FLIGHT_BYTES` (16 MiB), `CORRAL_MAX_CONNECTIONS` (2048)",
        "How many quorum queues share the webhooks (1–64, each led by its own broker node)",
        "300 API calls/s per operation per queue, 3,000 messages/s with batching (the quotas)",
        "each group moves one batch at a time (receive, commit, delete: ~50–100 ms): roughly groups × webhooks per message",
        "at 10,000 webhooks/s (864 million a day), 2.6 billion requests",
        "ingress 64 MiB request / 256 MiB limit",
        "`corral-faults --profile full` (1,500 webhooks/s open loop, at most 64 connections)",
    ];
    for sentence in let_through {
        assert_eq!(stated_figure(sentence), None, "caught: {sentence}");
    }
}

#[test]
fn the_benchmarks_page_has_every_key_figure_and_the_version_measured() {
    let text = read(Path::new(BENCHMARKS));
    let section = text
        .split("\n## ")
        .find(|section| section.starts_with("Key figures\n"))
        .unwrap_or_else(|| panic!("{BENCHMARKS} has no section \"## Key figures\""));
    assert!(
        section.contains("**Version measured:** corral"),
        "the key figures do not say which version was measured:\n{section}"
    );
    let missing: Vec<&&str> = KEY_FIGURES
        .iter()
        .filter(|name| !section.contains(&format!("| <a id=\"{name}\"></a>`{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "{BENCHMARKS}'s key figures lack the rows other pages link to: {missing:?} \
         (regenerate it with `corral-bench report --dir docs`)"
    );
}

/// The cells of every table row of `text` under a header row whose cells
/// satisfy `header`, with the row's line.
fn rows_under(text: &str, header: impl Fn(&[&str]) -> bool) -> Vec<(usize, Vec<String>)> {
    let mut rows = Vec::new();
    let mut inside = false;
    for (number, line) in text.lines().enumerate() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.starts_with('|') {
            inside = false;
        } else if !inside && header(&cells) {
            inside = true;
        } else if inside && !line.starts_with("|---") {
            rows.push((number + 1, cells.iter().map(|c| (*c).to_owned()).collect()));
        }
    }
    rows
}

/// Defaults live in the README's configuration table, the only one the
/// binaries' defaults are checked against; a second table of them drifts.
#[test]
fn only_the_readme_tabulates_the_settings_defaults() {
    let mut offenders = Vec::new();
    for file in doc_files().iter().filter(|f| *f != Path::new("README.md")) {
        let text = read(file);
        let rows = rows_under(&text, |cells| cells.contains(&"default"));
        for (line, cells) in rows {
            if cells.iter().any(|cell| cell.contains("`CORRAL_")) {
                offenders.push(format!("{}:{line}: {}", file.display(), cells.join(" | ")));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "tables of settings with their defaults outside the README; link to its configuration \
         table instead:\n{}",
        offenders.join("\n")
    );
}

/// The HTTP answers, route by route, are design.md's table; the README,
/// reliability and troubleshooting link to it.
#[test]
fn only_the_design_tabulates_the_http_answers() {
    let mut offenders = Vec::new();
    for file in doc_files()
        .iter()
        .filter(|f| *f != Path::new("docs/design.md"))
    {
        let text = read(file);
        let rows = rows_under(&text, |cells| {
            cells.len() >= 2 && cells[0] == "request" && cells[1] == "answer"
        });
        if let Some((line, _)) = rows.first() {
            offenders.push(format!("{}:{line}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "tables of the HTTP answers outside design.md; link to it instead:\n{}",
        offenders.join("\n")
    );
}

/// A default a page states in passing — "`CORRAL_X` (default 250)",
/// "`CORRAL_X`, default 20", "`CORRAL_X` at its default of 1 s" — is the
/// binary's: such a mention is a copy of the README's table, so it is held
/// to the same default. Seconds written for a `_MS` setting count as
/// milliseconds.
#[test]
fn every_default_stated_in_passing_is_the_binarys() {
    let defaults: std::collections::BTreeMap<String, String> = super::all_settings()
        .into_iter()
        .filter_map(|(env, default)| Some((env, default?)))
        .collect();
    let mut checked = 0;
    let mut offenders = Vec::new();
    // The changelog records the defaults of its day.
    for file in doc_files()
        .iter()
        .filter(|f| *f != Path::new("CHANGELOG.md"))
    {
        let text = read(file);
        for (line, name, value) in defaults_stated(&text) {
            let at = format!("{}:{line}: {name}", file.display());
            match defaults.get(&name) {
                None => offenders.push(format!("{at} has no default")),
                Some(default) if in_units_of(&name, &value).as_ref() != Some(default) => {
                    offenders.push(format!(
                        "{at} (default {value}), but its default is {default}"
                    ));
                }
                Some(_) => checked += 1,
            }
        }
    }
    assert!(
        checked > 10,
        "found only {checked} defaults stated in passing"
    );
    assert!(
        offenders.is_empty(),
        "defaults stated in the docs that are not the binaries' (the README's table has them all):\n{}",
        offenders.join("\n")
    );
}

/// Each default `text` states in passing: its line, the setting, the value
/// as written.
fn defaults_stated(text: &str) -> Vec<(usize, String, String)> {
    // One line's worth of bytes each: a mention may wrap.
    let flat = text.replace('\n', " ");
    let mut found = Vec::new();
    for (at, _) in flat.match_indices("`CORRAL_") {
        let name_end = flat[at + 1..].find('`').map_or(at + 1, |end| at + 1 + end);
        // "`CORRAL_AMQP_QUEUES=N` (default 1)" names the setting before the `=`.
        let name = flat[at + 1..name_end].split('=').next().unwrap_or_default();
        let rest = &flat[name_end + 1..];
        let Some(stated) = [" (default ", ", default ", " at its default of "]
            .iter()
            .find_map(|lead| rest.strip_prefix(lead))
        else {
            continue;
        };
        let value = stated.split([',', ';', ')']).next().unwrap_or_default();
        found.push((
            line_of(text, at),
            name.to_owned(),
            value.trim().trim_matches('`').to_owned(),
        ));
    }
    found
}

/// `value` as the setting `name` takes it: "10 s" of a `_MS` setting is
/// "10000"; anything else as written.
fn in_units_of(name: &str, value: &str) -> Option<String> {
    match value.strip_suffix(" s") {
        Some(seconds) if name.ends_with("_MS") => {
            seconds.parse::<u64>().ok().map(|s| (s * 1000).to_string())
        }
        Some(seconds) if name.ends_with("_SECS") => Some(seconds.to_owned()),
        Some(_) => None,
        None => Some(value.to_owned()),
    }
}

/// operations.md's contents list every page of docs/operations/ and each
/// page's main sections (its shallowest headings: the alerts of a runbook
/// page), so nothing there is found only by scrolling.
#[test]
fn the_operations_contents_list_every_page_and_its_sections() {
    let contents = read(Path::new("docs/operations.md"));
    let mut pages = Vec::new();
    super::markdown_under(Path::new("docs/operations"), &mut pages);
    assert!(pages.len() > 5, "found only {pages:?}");
    let mut missing = Vec::new();
    for page in pages {
        let name = page
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let link = format!("(operations/{name}");
        if !contents.contains(&format!("{link})")) {
            missing.push(format!("the page {name}"));
        }
        for heading in main_headings(&read(&page)) {
            let anchor = format!("{link}#{})", super::slug(&heading));
            if !contents.contains(&anchor) {
                missing.push(format!("{name}: \"{heading}\""));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md's table of contents lacks:\n{}",
        missing.join("\n")
    );
}

/// The text of a page's shallowest headings below its title.
fn main_headings(text: &str) -> Vec<String> {
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((level as usize, String::new()))
            }
            Event::Text(part) | Event::Code(part) => {
                if let Some((_, heading)) = &mut current {
                    heading.push_str(&part);
                }
            }
            Event::End(TagEnd::Heading(_)) => headings.extend(current.take()),
            _ => {}
        }
    }
    let top = headings
        .iter()
        .map(|(level, _)| *level)
        .filter(|l| *l > 1)
        .min();
    headings
        .into_iter()
        .filter(|(level, _)| Some(*level) == top)
        .map(|(_, heading)| heading)
        .collect()
}
