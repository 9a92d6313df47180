//! The daemon's counters, rendered in the Prometheus text format for `--metrics-addr` and
//! `adlsfs stats <mountpoint>`. Every metric name lives here.

use crate::error::ErrorKind;
use crate::fetch::FetcherKind;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CACHE_HITS: &str = "adlsfs_cache_hits_total";
pub const CACHE_MISSES: &str = "adlsfs_cache_misses_total";
pub const FETCHED_BYTES: &str = "adlsfs_fetched_bytes_total";
pub const FETCHES: &str = "adlsfs_fetches_total";
pub const FETCH_SECONDS: &str = "adlsfs_fetch_seconds_total";
pub const FETCH_FAILURES: &str = "adlsfs_fetch_failures_total";
pub const VERIFICATION_FAILURES: &str = "adlsfs_verification_failures_total";
pub const EVICTIONS: &str = "adlsfs_evictions_total";
pub const EVICTED_BYTES: &str = "adlsfs_evicted_bytes_total";
pub const FETCHES_IN_FLIGHT: &str = "adlsfs_fetches_in_flight";

/// Per-fetcher counters.
#[derive(Debug, Default)]
pub struct FetcherCounters {
    pub fetches: AtomicU64,
    pub bytes: AtomicU64,
    pub micros: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub native: FetcherCounters,
    pub azcopy: FetcherCounters,
    /// Failed materialisations, indexed like [`ErrorKind::ALL`].
    pub fetch_failures: [AtomicU64; ErrorKind::ALL.len()],
    pub verification_failures: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    pub in_flight: AtomicU64,
}

impl Metrics {
    pub fn fetcher(&self, kind: FetcherKind) -> &FetcherCounters {
        match kind {
            FetcherKind::Azcopy => &self.azcopy,
            FetcherKind::Native => &self.native,
        }
    }

    pub fn record_fetch(&self, fetcher: FetcherKind, bytes: u64, seconds: f64) {
        let c = self.fetcher(fetcher);
        c.fetches.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Counts a failed materialisation under its kind.
    pub fn record_failure(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        self.fetch_failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed materialisations of every kind.
    pub fn fetch_failures_total(&self) -> u64 {
        self.fetch_failures
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            CACHE_HITS,
            "Opens served by a complete cache entry.",
            "counter",
            &[("", get(&self.cache_hits) as f64)],
        );
        counter(
            CACHE_MISSES,
            "Opens that had to download.",
            "counter",
            &[("", get(&self.cache_misses) as f64)],
        );
        let per = |f: fn(&FetcherCounters) -> f64| {
            [
                ("{fetcher=\"native\"}", f(&self.native)),
                ("{fetcher=\"azcopy\"}", f(&self.azcopy)),
            ]
        };
        counter(
            FETCHED_BYTES,
            "Bytes downloaded and verified, by fetcher.",
            "counter",
            &per(|c| c.bytes.load(Ordering::Relaxed) as f64),
        );
        counter(
            FETCHES,
            "Completed downloads, by fetcher.",
            "counter",
            &per(|c| c.fetches.load(Ordering::Relaxed) as f64),
        );
        counter(
            FETCH_SECONDS,
            "Time spent in completed downloads, by fetcher.",
            "counter",
            &per(|c| c.micros.load(Ordering::Relaxed) as f64 / 1e6),
        );
        let by_kind: Vec<(String, f64)> = ErrorKind::ALL
            .iter()
            .zip(&self.fetch_failures)
            .map(|(k, c)| (format!("{{kind=\"{}\"}}", k.label()), get(c) as f64))
            .collect();
        let by_kind: Vec<(&str, f64)> = by_kind.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        counter(
            FETCH_FAILURES,
            "Downloads that failed, by kind of failure.",
            "counter",
            &by_kind,
        );
        counter(
            VERIFICATION_FAILURES,
            "Downloaded files whose bytes did not match their digest or size (each download counts; one is retried).",
            "counter",
            &[("", get(&self.verification_failures) as f64)],
        );
        counter(
            EVICTIONS,
            "Cache entries evicted.",
            "counter",
            &[("", get(&self.evictions) as f64)],
        );
        counter(
            EVICTED_BYTES,
            "Bytes evicted from the cache.",
            "counter",
            &[("", get(&self.evicted_bytes) as f64)],
        );
        counter(
            FETCHES_IN_FLIGHT,
            "Downloads in progress.",
            "gauge",
            &[("", get(&self.in_flight) as f64)],
        );
        out
    }
}

/// The sum of every sample of metric `name`, whatever its labels (for tests).
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labelled) => &labelled[labelled.find('}')? + 1..],
                None => rest,
            };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

/// The value of one sample in a rendered exposition (for tests and `adlsfs stats`).
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_that_can_be_read_back() {
        let m = Metrics::default();
        m.cache_hits.fetch_add(3, Ordering::Relaxed);
        m.record_fetch(FetcherKind::Azcopy, 1024, 1.5);
        m.record_failure(ErrorKind::Corrupt);
        m.record_failure(ErrorKind::Changed);
        m.record_failure(ErrorKind::Changed);
        let text = m.render();
        assert!(text.contains("# TYPE adlsfs_cache_hits_total counter"));
        assert_eq!(sample(&text, CACHE_HITS), Some(3.0));
        assert_eq!(
            sample(&text, "adlsfs_fetched_bytes_total{fetcher=\"azcopy\"}"),
            Some(1024.0)
        );
        assert_eq!(
            sample(&text, "adlsfs_fetch_seconds_total{fetcher=\"azcopy\"}"),
            Some(1.5)
        );
        assert_eq!(
            sample(&text, "adlsfs_fetches_total{fetcher=\"native\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "adlsfs_fetch_failures_total{kind=\"changed\"}"),
            Some(2.0)
        );
        assert_eq!(sum(&text, FETCH_FAILURES), 3.0);
        assert_eq!(m.fetch_failures_total(), 3);
        assert_eq!(sample(&text, VERIFICATION_FAILURES), Some(0.0));
    }
}
