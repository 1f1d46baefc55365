//! Prometheus metrics for `/metrics` on the local API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub api_requests: Family<RequestLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub uptime_seconds: Gauge,
    pub docker_up: Gauge,
    pub store_schema_version: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("commonscloud");
        let api_requests = Family::<RequestLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let uptime_seconds = Gauge::default();
        let docker_up = Gauge::default();
        let store_schema_version = Gauge::default();
        registry.register(
            "build",
            "Version of the running daemon",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "api_requests",
            "Requests served on the local API",
            api_requests.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by result (applied or refused)",
            config_reloads.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            uptime_seconds.clone(),
        );
        registry.register(
            "docker_up",
            "1 when the Docker Engine answered the last probe",
            docker_up.clone(),
        );
        registry.register(
            "store_schema_version",
            "Schema version of state.db",
            store_schema_version.clone(),
        );
        Self {
            registry,
            api_requests,
            config_reloads,
            uptime_seconds,
            docker_up,
            store_schema_version,
        }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
