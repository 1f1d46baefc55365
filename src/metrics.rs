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
    pub mail_sent: Counter,
    pub mail_send_failures: Counter,
    pub mail_queued: Gauge,
    pub mail_oldest_queued_age_seconds: Gauge,
    pub registrations_awaiting_validation: Gauge,
    /// Federation with the alliance (0 everywhere on a standalone box).
    pub federation: FederationGauges,
}

/// What `alliance status` shows, as gauges.
#[derive(Default)]
pub struct FederationGauges {
    pub link_up: Gauge,
    pub last_contact_age_seconds: Gauge,
    pub cookie_age_seconds: Gauge,
    pub entries_in_scope: Gauge,
    pub outbox_pending: Gauge,
    pub outbox_oldest_age_seconds: Gauge,
    pub outbox_failed: Gauge,
    pub conflicts: Gauge,
    /// Entries a held refresh would delete (0: nothing held).
    pub deletions_held: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("commonscloud");
        let api_requests = Family::<RequestLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let uptime_seconds = Gauge::default();
        let docker_up = Gauge::default();
        let store_schema_version = Gauge::default();
        let mail_sent = Counter::default();
        let mail_send_failures = Counter::default();
        let mail_queued = Gauge::default();
        let mail_oldest_queued_age_seconds = Gauge::default();
        let registrations_awaiting_validation = Gauge::default();
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
        registry.register(
            "mail_sent",
            "Mails handed to the SMTP server",
            mail_sent.clone(),
        );
        registry.register(
            "mail_send_failures",
            "Attempts to send a mail that failed (it stays queued and is retried)",
            mail_send_failures.clone(),
        );
        registry.register(
            "mail_queued",
            "Mails waiting in the outbox",
            mail_queued.clone(),
        );
        registry.register(
            "mail_oldest_queued_age_seconds",
            "Age of the oldest mail waiting in the outbox (0 when empty)",
            mail_oldest_queued_age_seconds.clone(),
        );
        registry.register(
            "registrations_awaiting_validation",
            "Registration requests waiting for a collective's admins",
            registrations_awaiting_validation.clone(),
        );
        let federation = FederationGauges::default();
        for (name, help, g) in [
            (
                "federation_link_up",
                "1 while the alliance's directory answers",
                &federation.link_up,
            ),
            (
                "federation_last_contact_age_seconds",
                "Seconds since the alliance last answered",
                &federation.last_contact_age_seconds,
            ),
            (
                "federation_cookie_age_seconds",
                "Age of the sync cookie: how old the local copy may be",
                &federation.cookie_age_seconds,
            ),
            (
                "federation_entries_in_scope",
                "Entries copied from the alliance",
                &federation.entries_in_scope,
            ),
            (
                "federation_outbox_pending",
                "Local changes waiting for the alliance",
                &federation.outbox_pending,
            ),
            (
                "federation_outbox_oldest_age_seconds",
                "Age of the oldest local change waiting (0 when none)",
                &federation.outbox_oldest_age_seconds,
            ),
            (
                "federation_outbox_failed",
                "Local changes the alliance refused",
                &federation.outbox_failed,
            ),
            (
                "federation_conflicts",
                "Conflicts settled by the authority rule",
                &federation.conflicts,
            ),
            (
                "federation_deletions_held",
                "Entries a refresh held for an admin would delete (0 when nothing is held)",
                &federation.deletions_held,
            ),
        ] {
            registry.register(name, help, g.clone());
        }
        Self {
            registry,
            federation,
            mail_sent,
            mail_send_failures,
            mail_queued,
            mail_oldest_queued_age_seconds,
            registrations_awaiting_validation,
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
