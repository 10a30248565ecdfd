//! Counters and latency histograms, rendered in the Prometheus text format at
//! `/.cluster/metrics` (behind the administrator credential).
//!
//! Plain atomics: recording is a few relaxed additions, never a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the local cache in front of S3 did.
#[derive(Default)]
pub struct CacheMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub hit_bytes: AtomicU64,
    pub miss_bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Entries whose bytes did not match their hash (evicted, fetched again).
    pub corrupt: AtomicU64,
    /// Bytes currently held (a gauge).
    pub size_bytes: AtomicU64,
    pub max_bytes: AtomicU64,
}

/// What the S3 client did.
#[derive(Default)]
pub struct S3Metrics {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The HTTP methods counted separately; anything else is "other".
const METHODS: [&str; 8] = [
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Status classes 1xx..5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

/// Request counts by method and status class, and latency by method.
#[derive(Default)]
pub struct RequestMetrics {
    counts: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    latency: [Histogram; METHODS.len()],
}

impl RequestMetrics {
    pub fn record(&self, method: &str, status: u16, elapsed: std::time::Duration) {
        let m = METHODS
            .iter()
            .position(|x| *x == method)
            .unwrap_or(METHODS.len() - 1);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.counts[m][class].fetch_add(1, Relaxed);
        let h = &self.latency[m];
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i].fetch_add(1, Relaxed);
            }
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }
}

/// How forwarded requests from other nodes were authenticated.
#[derive(Default)]
pub struct NodeAuthMetrics {
    /// Accepted with an Ed25519 node signature.
    pub signed: AtomicU64,
    /// Accepted with a session MAC.
    pub session: AtomicU64,
    /// Refused (forged, replayed, stale, or an unknown session).
    pub refused: AtomicU64,
}

/// Client requests that presented Solid-OIDC credentials.
#[derive(Default)]
pub struct OidcMetrics {
    /// Token and DPoP proof verified.
    pub accepted: AtomicU64,
    /// Refused with 401 (or 503 when the replay store was unreachable).
    pub refused: AtomicU64,
}

/// All of a node's metrics.
#[derive(Default)]
pub struct Metrics {
    pub cache: CacheMetrics,
    pub s3: S3Metrics,
    pub requests: RequestMetrics,
    pub node_auth: NodeAuthMetrics,
    pub oidc: OidcMetrics,
    /// Edges whose tunnel is open to this node.
    pub edges_connected: AtomicU64,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format 0.0.4.
    pub fn render(&self, cache_enabled: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if cache_enabled {
            let c = &self.cache;
            counter(
                &mut out,
                "xpod_cache_hits_total",
                "Reads served from the local cache.",
                c.hits.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_misses_total",
                "Reads fetched from S3.",
                c.misses.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_hit_bytes_total",
                "Bytes served from the local cache.",
                c.hit_bytes.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_miss_bytes_total",
                "Bytes fetched from S3 for reads.",
                c.miss_bytes.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_evictions_total",
                "Entries evicted to stay under the cap.",
                c.evictions.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_evicted_bytes_total",
                "Bytes evicted to stay under the cap.",
                c.evicted_bytes.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_cache_corrupt_total",
                "Entries whose bytes did not match their hash.",
                c.corrupt.load(Relaxed),
            );
            gauge(
                &mut out,
                "xpod_cache_size_bytes",
                "Bytes held by the local cache.",
                c.size_bytes.load(Relaxed),
            );
            gauge(
                &mut out,
                "xpod_cache_max_bytes",
                "The cache cap (CSS_CACHE_MAX_SIZE).",
                c.max_bytes.load(Relaxed),
            );
            let s = &self.s3;
            counter(
                &mut out,
                "xpod_s3_requests_total",
                "Requests sent to S3, retries included.",
                s.requests.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_s3_retries_total",
                "S3 requests retried after a transient failure.",
                s.retries.load(Relaxed),
            );
            counter(
                &mut out,
                "xpod_s3_failures_total",
                "S3 operations that failed after their retries.",
                s.failures.load(Relaxed),
            );
        }
        let a = &self.node_auth;
        out.push_str("# HELP xpod_forwarded_requests_total Requests forwarded here by other nodes, by how they were authenticated.\n# TYPE xpod_forwarded_requests_total counter\n");
        for (how, n) in [
            ("signature", &a.signed),
            ("session", &a.session),
            ("refused", &a.refused),
        ] {
            let _ = writeln!(
                out,
                "xpod_forwarded_requests_total{{auth=\"{how}\"}} {}",
                n.load(Relaxed)
            );
        }
        let o = &self.oidc;
        out.push_str("# HELP xpod_oidc_requests_total Client requests with Solid-OIDC credentials, by outcome.\n# TYPE xpod_oidc_requests_total counter\n");
        for (outcome, n) in [("accepted", &o.accepted), ("refused", &o.refused)] {
            let _ = writeln!(
                out,
                "xpod_oidc_requests_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
        let r = &self.requests;
        out.push_str("# HELP xpod_http_requests_total HTTP requests by method and status class.\n# TYPE xpod_http_requests_total counter\n");
        for (m, method) in METHODS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = r.counts[m][c].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "xpod_http_requests_total{{method=\"{method}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP xpod_http_request_duration_seconds Time to the response head, by method.\n# TYPE xpod_http_request_duration_seconds histogram\n");
        for (m, method) in METHODS.iter().enumerate() {
            let h = &r.latency[m];
            let count = h.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "xpod_http_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {}",
                    h.buckets[i].load(Relaxed)
                );
            }
            let _ = writeln!(
                out,
                "xpod_http_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "xpod_http_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                h.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "xpod_http_request_duration_seconds_count{{method=\"{method}\"}} {count}"
            );
        }
        gauge(
            &mut out,
            "xpod_edge_tunnels",
            "Edge nodes whose tunnel is open to this node.",
            self.edges_connected.load(Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.requests
            .record("GET", 200, std::time::Duration::from_millis(3));
        m.requests
            .record("GET", 404, std::time::Duration::from_millis(30));
        let text = m.render(false);
        assert!(text.contains("xpod_http_requests_total{method=\"GET\",status=\"2xx\"} 1"));
        assert!(text.contains("xpod_http_requests_total{method=\"GET\",status=\"4xx\"} 1"));
        assert!(
            text.contains(
                "xpod_http_request_duration_seconds_bucket{method=\"GET\",le=\"0.0025\"} 0"
            )
        );
        assert!(
            text.contains(
                "xpod_http_request_duration_seconds_bucket{method=\"GET\",le=\"0.005\"} 1"
            )
        );
        assert!(
            text.contains(
                "xpod_http_request_duration_seconds_bucket{method=\"GET\",le=\"0.05\"} 2"
            )
        );
        assert!(text.contains("xpod_http_request_duration_seconds_count{method=\"GET\"} 2"));
        assert!(!text.contains("xpod_cache_hits_total"));
    }
}
