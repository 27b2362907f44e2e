//! Prometheus metrics: fixed arrays of atomic counters, rendered as text exposition.
//!
//! Labels are drawn only from fixed sets (operation names, status classes), so no file name,
//! token or body can ever reach a metric, and the memory used is constant. [`exposition`] is
//! the handler of `GET /metrics`.

use super::App;
use crate::app::url::OpKind;
use crate::http::{Response, Stats};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Request counters per operation kind ([`OpKind::ALL`], in order), then one for requests
/// that named no operation (an unknown URL, a head the HTTP layer refused): "other".
const OP_SLOTS: usize = OpKind::ALL.len() + 1;
/// Status classes, in index order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the request duration histogram buckets, in seconds.
const BUCKETS_SECS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0];

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; CLASSES.len()]; OP_SLOTS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    duration_buckets: [AtomicU64; BUCKETS_SECS.len()],
    duration_count: AtomicU64,
    duration_micros: AtomicU64,
    expired_files: AtomicU64,
    expired_bytes: AtomicU64,
}

/// The label of each counter slot.
fn slot_label(slot: usize) -> &'static str {
    OpKind::ALL.get(slot).map_or("other", |kind| kind.label())
}

impl Metrics {
    /// Records one finished request of kind `op` (`None`: it named no operation).
    pub fn record(&self, op: Option<OpKind>, status: u16, bytes_in: u64, bytes_out: u64, duration: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let slot = op.map_or(OP_SLOTS - 1, |op| op as usize);
        self.requests[slot][class].fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        let secs = duration.as_secs_f64();
        for (bucket, &bound) in self.duration_buckets.iter().zip(&BUCKETS_SECS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records one file removed by retention (`--expire`), of `bytes` bytes.
    pub fn record_expired(&self, bytes: u64) {
        self.expired_files.fetch_add(1, Ordering::Relaxed);
        self.expired_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Renders every metric in Prometheus text format.
    pub fn render(&self, stats: &Stats, free_bytes: Option<u64>) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP http_nas_requests_total Requests served, by operation and status class.\n");
        out.push_str("# TYPE http_nas_requests_total counter\n");
        for (slot, row) in self.requests.iter().enumerate() {
            let op = slot_label(slot);
            for (class, count) in CLASSES.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "http_nas_requests_total{{op=\"{op}\",status=\"{class}\"}} {}",
                    load(count)
                );
            }
        }
        out.push_str("# HELP http_nas_body_bytes_total Body bytes received (in) and sent (out).\n");
        out.push_str("# TYPE http_nas_body_bytes_total counter\n");
        let _ = writeln!(
            out,
            "http_nas_body_bytes_total{{direction=\"in\"}} {}",
            load(&self.bytes_in)
        );
        let _ = writeln!(
            out,
            "http_nas_body_bytes_total{{direction=\"out\"}} {}",
            load(&self.bytes_out)
        );
        out.push_str("# HELP http_nas_request_duration_seconds Time from request head to last byte sent.\n");
        out.push_str("# TYPE http_nas_request_duration_seconds histogram\n");
        for (bound, count) in BUCKETS_SECS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "http_nas_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                load(count)
            );
        }
        let count = load(&self.duration_count);
        let _ = writeln!(out, "http_nas_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "http_nas_request_duration_seconds_sum {}",
            load(&self.duration_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "http_nas_request_duration_seconds_count {count}");
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        };
        let relaxed = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as u64;
        gauge(
            &mut out,
            "http_nas_in_flight_requests",
            "Requests being served (a connection on a worker counts once, pipelined requests included).",
            relaxed(&stats.in_flight),
        );
        gauge(
            &mut out,
            "http_nas_workers",
            "Worker threads.",
            relaxed(&stats.pool.workers),
        );
        gauge(
            &mut out,
            "http_nas_busy_workers",
            "Workers serving a request.",
            relaxed(&stats.pool.busy),
        );
        gauge(
            &mut out,
            "http_nas_queued_requests",
            "Requests waiting for a worker.",
            relaxed(&stats.pool.queued),
        );
        gauge(
            &mut out,
            "http_nas_parked_connections",
            "Connections waiting for a request head.",
            relaxed(&stats.parked),
        );
        out.push_str("# HELP http_nas_overload_rejections_total Requests refused with 503 because workers and queue were full.\n");
        out.push_str("# TYPE http_nas_overload_rejections_total counter\n");
        let _ = writeln!(
            out,
            "http_nas_overload_rejections_total {}",
            relaxed(&stats.pool.rejected)
        );
        out.push_str("# HELP http_nas_expired_files_total Files removed by retention (--expire).\n");
        out.push_str("# TYPE http_nas_expired_files_total counter\n");
        let _ = writeln!(out, "http_nas_expired_files_total {}", load(&self.expired_files));
        out.push_str("# HELP http_nas_expired_bytes_total Bytes of the files removed by retention (--expire).\n");
        out.push_str("# TYPE http_nas_expired_bytes_total counter\n");
        let _ = writeln!(out, "http_nas_expired_bytes_total {}", load(&self.expired_bytes));
        if let Some(free) = free_bytes {
            gauge(
                &mut out,
                "http_nas_storage_free_bytes",
                "Free bytes on the storage volume.",
                free,
            );
        }
        out
    }
}

/// `GET /metrics`: the counters, the server's gauges and the volume's free bytes.
pub(super) fn exposition(app: &App) -> Response {
    let text = app.metrics.render(&app.stats, app.storage.free_bytes().ok());
    Response::text(200, text).with_header("Content-Type", "text/plain; version=0.0.4")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_exposition() {
        let m = Metrics::default();
        m.record(Some(OpKind::Upload), 200, 10, 2, Duration::from_millis(3));
        m.record(None, 404, 0, 5, Duration::from_secs(200));
        let text = m.render(&Stats::default(), Some(42));
        assert!(text.contains("http_nas_requests_total{op=\"upload\",status=\"2xx\"} 1\n"));
        assert!(text.contains("http_nas_requests_total{op=\"other\",status=\"4xx\"} 1\n"));
        assert!(text.contains("http_nas_body_bytes_total{direction=\"out\"} 7\n"));
        assert!(text.contains("http_nas_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("http_nas_request_duration_seconds_count 2\n"));
        assert!(text.contains("http_nas_storage_free_bytes 42\n"));
    }

    #[test]
    fn every_kind_has_its_own_slot_and_label() {
        for (slot, &kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(kind as usize, slot, "{kind:?}");
            assert_eq!(slot_label(slot), kind.label());
            assert_eq!(OpKind::from_label(kind.label()), Some(kind));
        }
        assert_eq!(slot_label(OP_SLOTS - 1), "other");
        let text = Metrics::default().render(&Stats::default(), None);
        let rows = text
            .lines()
            .filter(|l| l.starts_with("http_nas_requests_total{"))
            .count();
        assert_eq!(rows, OP_SLOTS * CLASSES.len());
    }
}
