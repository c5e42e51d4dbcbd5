//! Logging, metrics and error-chain printing. Depends on no other Strata module.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::LogFormat;

/// Installs the global tracing subscriber. `RUST_LOG` (or `STRATA_LOG`) filters, default `info`.
pub fn init_logging(format: LogFormat) {
    let filter = std::env::var("STRATA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,openraft=warn,quinn=warn,rustls=warn".to_string());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Renders an error and its whole `source()` chain on one line: `a: b: c`.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `api` or `console`.
    pub via: String,
    /// `no_valid_token`, `failed_sign_in` or `locked_out`.
    pub reason: String,
}

/// The node's metrics, exported in Prometheus text format on `/metrics`.
pub struct Metrics {
    pub registry: Registry,
    pub raft_term: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_apply_lag: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_voters: Gauge,
    pub raft_learners: Gauge,
    pub membership_alive: Gauge,
    pub membership_size: Gauge,
    pub extent_files_open: Gauge,
    pub rpc_seconds: Family<RpcLabels, Histogram>,
    pub requests_refused: Family<RefusedLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("strata");
        let m = Metrics {
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_apply_lag: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_voters: Gauge::default(),
            raft_learners: Gauge::default(),
            membership_alive: Gauge::default(),
            membership_size: Gauge::default(),
            extent_files_open: Gauge::default(),
            rpc_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ])
            }),
            requests_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register("raft_term", "Current Raft term", m.raft_term.clone());
        registry.register(
            "raft_commit_index",
            "Index of the last committed Raft log entry",
            m.raft_commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Index of the last log entry applied to the state machine",
            m.raft_applied_index.clone(),
        );
        registry.register(
            "raft_apply_lag",
            "Committed entries not yet applied",
            m.raft_apply_lag.clone(),
        );
        registry.register(
            "raft_is_leader",
            "1 when this node is the Raft leader",
            m.raft_is_leader.clone(),
        );
        registry.register(
            "raft_voters",
            "Voters in the Raft membership",
            m.raft_voters.clone(),
        );
        registry.register(
            "raft_learners",
            "Learners in the Raft membership",
            m.raft_learners.clone(),
        );
        registry.register(
            "membership_alive",
            "Cluster members this node's gossip sees alive, itself included",
            m.membership_alive.clone(),
        );
        registry.register(
            "membership_size",
            "Nodes admitted to the cluster",
            m.membership_size.clone(),
        );
        registry.register(
            "extent_files_open",
            "Extent files of local volume replicas held open (a bounded set)",
            m.extent_files_open.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Latency of node-to-node RPCs issued by this node",
            m.rpc_seconds.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused without valid credentials (never written to the store)",
            m.requests_refused.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Sets a refusal counter to the count kept by `control` (which only grows).
    pub fn set_refused(&self, via: &str, reason: &str, count: u64) {
        self.requests_refused
            .get_or_create(&RefusedLabels {
                via: via.to_string(),
                reason: reason.to_string(),
            })
            .inner()
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn observe_rpc(&self, rpc: &str, took: Duration) {
        self.rpc_seconds
            .get_or_create(&RpcLabels {
                rpc: rpc.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_prints_every_cause_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "outer: disk on fire");
    }

    #[test]
    fn metrics_encode_in_prometheus_text_format() {
        let m = Metrics::new();
        m.raft_term.set(7);
        m.observe_rpc("append", Duration::from_millis(2));
        let text = m.encode();
        assert!(text.contains("strata_raft_term 7"), "{text}");
        assert!(
            text.contains("strata_rpc_duration_seconds_count{rpc=\"append\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
