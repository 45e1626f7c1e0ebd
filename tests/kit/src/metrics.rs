//! `/metrics` as a test reads it: scraped over HTTP and parsed into series.

use std::collections::{BTreeMap, BTreeSet};

use corral_runtime::telemetry::metrics::{CATALOGUE, Kind, MetricDef};

/// The series a histogram is exported as, besides its name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// The catalogue entry a series name belongs to: its own, or for a
/// histogram's `_bucket`, `_sum` or `_count` series the histogram's; and
/// whether it is a `_bucket` series (the one with the `le` label).
pub fn catalogued(name: &str) -> Option<(&'static MetricDef, bool)> {
    if let Some(def) = CATALOGUE.iter().find(|def| def.name == name) {
        return Some((def, false));
    }
    HISTOGRAM_SUFFIXES.iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let def = CATALOGUE
            .iter()
            .find(|def| def.name == base && def.kind == Kind::Histogram)?;
        Some((def, *suffix == "_bucket"))
    })
}

/// Parsed `/metrics`: series (name with labels, as exported) to value.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses Prometheus exposition text.
    pub fn parse(text: &str) -> Self {
        Metrics(
            text.lines()
                .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of a series, e.g. `corral_ingress_rejected_total{reason="too_large"}`;
    /// 0 when absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series of the metric `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Names of all metrics present (without labels or histogram suffixes).
    pub fn names(&self) -> BTreeSet<String> {
        self.0
            .keys()
            .map(|series| {
                let name = series.split('{').next().unwrap_or(series);
                HISTOGRAM_SUFFIXES
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name)
                    .to_owned()
            })
            .collect()
    }
}

/// Scrapes `http://127.0.0.1:<admin_port>/metrics`.
pub async fn scrape(http: &reqwest::Client, admin_port: u16) -> Metrics {
    let text = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("scraping /metrics")
        .text()
        .await
        .expect("reading /metrics");
    Metrics::parse(&text)
}
