//! Prometheus metrics: one registry per sidecar (no process globals, so tests can run several
//! sidecars side by side). Counters and histograms are fed where things happen (ingest, relay,
//! committer); gauges that mirror the store are read when `/metrics` is scraped.

use crate::clock::now_ms;
use crate::shutdown::Phase;
use crate::store::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Label sets: `reason`, `topic` or `class`.
pub type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

pub struct Metrics {
    registry: Registry,
    backlog_events: Gauge,
    backlog_bytes: Gauge,
    oldest_age_seconds: Gauge<f64, AtomicU64>,
    dead_letters: Gauge,
    disk_bytes: Gauge,
    pub appended_events: Counter,
    pub duplicate_events: Counter,
    refused_requests: Family<Labels, Counter>,
    published_events: Family<Labels, Counter>,
    published_bytes: Family<Labels, Counter>,
    produce_errors: Family<Labels, Counter>,
    pub batch_events: Histogram,
    pub batch_duration_seconds: Histogram,
    pub flush_duration_seconds: Histogram,
    pub limiter_wait_seconds: Counter<f64, AtomicU64>,
    pub broker_reachable: Gauge,
    token_refresh_failures: Counter,
    draining: Gauge,
    drain_deadline_seconds: Gauge<f64, AtomicU64>,
    disk_limit_bytes: Gauge,
    backlog_age_limit_seconds: Gauge<f64, AtomicU64>,
    tenants_with_backlog: Gauge,
    largest_tenants_events: Family<Labels, Gauge>,
    largest_tenants_bytes: Family<Labels, Gauge>,
}

/// How many tenants `edge_outbox_tenant_backlog_*` name: the largest by backlog.
pub const LARGEST_TENANTS: usize = 10;

/// The `tenant` label of the shared account of tenants beyond `store.max_tracked_tenants`.
pub const UNTRACKED_TENANTS: &str = "(untracked)";

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics {
            backlog_events: Gauge::default(),
            backlog_bytes: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
            dead_letters: Gauge::default(),
            disk_bytes: Gauge::default(),
            appended_events: Counter::default(),
            duplicate_events: Counter::default(),
            refused_requests: Family::default(),
            published_events: Family::default(),
            published_bytes: Family::default(),
            produce_errors: Family::default(),
            batch_events: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            batch_duration_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            flush_duration_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            limiter_wait_seconds: Counter::default(),
            broker_reachable: Gauge::default(),
            token_refresh_failures: Counter::default(),
            draining: Gauge::default(),
            drain_deadline_seconds: Gauge::default(),
            disk_limit_bytes: Gauge::default(),
            backlog_age_limit_seconds: Gauge::default(),
            tenants_with_backlog: Gauge::default(),
            largest_tenants_events: Family::default(),
            largest_tenants_bytes: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut m.registry;
        r.register(
            "edge_outbox_backlog_events",
            "Undelivered events in the store",
            m.backlog_events.clone(),
        );
        r.register(
            "edge_outbox_backlog_bytes",
            "Stored bytes of undelivered events",
            m.backlog_bytes.clone(),
        );
        r.register(
            "edge_outbox_oldest_event_age_seconds",
            "Age of the oldest undelivered event",
            m.oldest_age_seconds.clone(),
        );
        r.register(
            "edge_outbox_dead_letters",
            "Parked events in the dead-letter table",
            m.dead_letters.clone(),
        );
        r.register(
            "edge_outbox_store_disk_bytes",
            "Disk space the store's files take",
            m.disk_bytes.clone(),
        );
        r.register(
            "edge_outbox_token_refresh_failures",
            "MSK IAM token signings that failed (no or expired credentials, timeout)",
            m.token_refresh_failures.clone(),
        );
        r.register(
            "edge_outbox_tenants_with_backlog",
            "Tenants holding undelivered events",
            m.tenants_with_backlog.clone(),
        );
        r.register(
            "edge_outbox_tenant_backlog_events",
            "Undelivered events of the 10 tenants holding the most",
            m.largest_tenants_events.clone(),
        );
        r.register(
            "edge_outbox_tenant_backlog_bytes",
            "Stored bytes of undelivered events of the 10 tenants holding the most events",
            m.largest_tenants_bytes.clone(),
        );
        r.register(
            "edge_outbox_appended_events",
            "Events accepted and stored",
            m.appended_events.clone(),
        );
        r.register(
            "edge_outbox_duplicate_events",
            "Events answered as repeats of stored ones",
            m.duplicate_events.clone(),
        );
        r.register(
            "edge_outbox_refused_requests",
            "Ingest requests refused, by reason",
            m.refused_requests.clone(),
        );
        r.register(
            "edge_outbox_published_events",
            "Events confirmed by the broker, by topic",
            m.published_events.clone(),
        );
        r.register(
            "edge_outbox_published_bytes",
            "Message bytes confirmed by the broker, by topic",
            m.published_bytes.clone(),
        );
        r.register(
            "edge_outbox_produce_errors",
            "Failed messages, by error class",
            m.produce_errors.clone(),
        );
        r.register(
            "edge_outbox_relay_batch_events",
            "Events per relay batch",
            m.batch_events.clone(),
        );
        r.register(
            "edge_outbox_relay_batch_duration_seconds",
            "Time from the first produce to the last report of a batch",
            m.batch_duration_seconds.clone(),
        );
        r.register(
            "edge_outbox_flush_duration_seconds",
            "durable write of one commit group: segment fdatasync, plus sled flush and fdatasync when the group confirms, parks or replays",
            m.flush_duration_seconds.clone(),
        );
        r.register(
            "edge_outbox_rate_limiter_wait_seconds",
            "Time the relay waited for the rate limiter",
            m.limiter_wait_seconds.clone(),
        );
        r.register(
            "edge_outbox_broker_reachable",
            "1 while the last batch was delivered without transient failures",
            m.broker_reachable.clone(),
        );
        r.register(
            "edge_outbox_draining",
            "1 from the shutdown signal on, while the backlog is delivered before exiting",
            m.draining.clone(),
        );
        r.register(
            "edge_outbox_drain_deadline_seconds",
            "Seconds left until the drain's deadline (0 while not draining)",
            m.drain_deadline_seconds.clone(),
        );
        r.register(
            "edge_outbox_store_disk_limit_bytes",
            "store.max_disk_bytes: appends are refused while the store's files take more (0: none)",
            m.disk_limit_bytes.clone(),
        );
        r.register(
            "edge_outbox_backlog_age_limit_seconds",
            "readiness.max_backlog_age: /readyz fails while the oldest undelivered event is older",
            m.backlog_age_limit_seconds.clone(),
        );
        Arc::new(m)
    }

    /// The configured limits that alerts compare with (packaging/prometheus).
    pub fn set_limits(&self, disk_limit_bytes: u64, backlog_age_limit: std::time::Duration) {
        self.disk_limit_bytes.set(disk_limit_bytes as i64);
        self.backlog_age_limit_seconds
            .set(backlog_age_limit.as_secs_f64());
    }

    pub fn refused(&self, reason: &str) {
        self.refused_requests
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub fn published(&self, topic: &str, events: u64, bytes: u64) {
        self.published_events
            .get_or_create(&label("topic", topic))
            .inc_by(events);
        self.published_bytes
            .get_or_create(&label("topic", topic))
            .inc_by(bytes);
    }

    pub fn produce_error(&self, class: &str) {
        self.produce_errors
            .get_or_create(&label("class", class))
            .inc();
    }

    /// The OpenMetrics text of every metric, with the store's gauges read now.
    pub fn render(
        &self,
        store: &Store,
        auth: Option<&crate::msk_iam::AuthStatus>,
        phase: Phase,
    ) -> String {
        let (draining, left) = match phase {
            Phase::Running => (0, 0.0),
            Phase::Draining { deadline, .. } => (
                1,
                deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_secs_f64(),
            ),
            Phase::Stopping => (1, 0.0),
        };
        self.draining.set(draining);
        self.drain_deadline_seconds.set(left);
        if let Some(auth) = auth {
            let failures = auth.failures.load(std::sync::atomic::Ordering::Relaxed);
            self.token_refresh_failures
                .inc_by(failures.saturating_sub(self.token_refresh_failures.get()));
        }
        let stats = store.stats();
        self.backlog_events.set(stats.backlog_events as i64);
        self.backlog_bytes.set(stats.backlog_bytes as i64);
        self.dead_letters.set(stats.dead_letters as i64);
        self.disk_bytes.set(store.recent_disk_bytes() as i64);
        let age = store
            .oldest_appended_ms()
            .map(|ms| now_ms().saturating_sub(ms) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.oldest_age_seconds.set(age);
        self.tenants_with_backlog
            .set(store.tenants_with_backlog() as i64);
        self.largest_tenants_events.clear();
        self.largest_tenants_bytes.clear();
        for held in store.largest_tenants(LARGEST_TENANTS) {
            let tenant = match held.tenant.is_empty() {
                true => UNTRACKED_TENANTS,
                false => &held.tenant,
            };
            let labels = label("tenant", tenant);
            (self.largest_tenants_events.get_or_create(&labels)).set(held.events as i64);
            (self.largest_tenants_bytes.get_or_create(&labels)).set(held.bytes as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }
}
