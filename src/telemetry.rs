//! The sidecar's own spans, exported over OTLP/HTTP (protobuf) when `telemetry.otlp_endpoint`
//! is set: `append` for each ingest request that reached the store (a child of the request's
//! W3C trace, linked to the events' own traces) and `produce` for each batch the broker
//! confirmed (linked to its events' traces, as OpenTelemetry's messaging conventions do for a
//! batch). Off by default; when off, [`Telemetry`] holds nothing and no span, link or
//! attribute is built.

use crate::config::TelemetryConfig;
use crate::event::trace::TraceContext;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::time::{Duration, SystemTime};

/// Links one span carries at most (OpenTelemetry's default span limit).
const MAX_LINKS: usize = 128;

/// The span exporter, or nothing.
#[derive(Default)]
pub struct Telemetry {
    exporting: Option<(SdkTracerProvider, SdkTracer)>,
}

impl Telemetry {
    /// Exports to `config.otlp_endpoint` (`/v1/traces` below it) when set; off otherwise.
    pub fn from_config(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Telemetry::default());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(10))
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("edge-outbox");
        tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
        Ok(Telemetry {
            exporting: Some((provider, tracer)),
        })
    }

    /// Whether spans are exported.
    pub fn is_on(&self) -> bool {
        self.exporting.is_some()
    }

    /// The span of an ingest request appended from `started` until now: its parent is the
    /// request's trace; `events` (asked only when on) gives each event's own trace, linked.
    pub fn append(
        &self,
        started: SystemTime,
        request: Option<&TraceContext>,
        events: impl FnOnce() -> Vec<TraceContext>,
        count: usize,
        error: Option<&str>,
    ) {
        let Some((_, tracer)) = &self.exporting else {
            return;
        };
        let parent = match request.and_then(span_context) {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        let mut span = tracer
            .span_builder("append")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_links(links(events(), request))
            .with_attributes([KeyValue::new("edge_outbox.events", count as i64)])
            .start_with_context(tracer, &parent);
        end(&mut span, error);
    }

    /// The span of a batch produced for `took` and confirmed by the broker now, linked to the
    /// traces `events` (asked only when on) gives.
    pub fn produce(
        &self,
        took: Duration,
        events: impl FnOnce() -> Vec<TraceContext>,
        count: usize,
        transactional: bool,
    ) {
        let Some((_, tracer)) = &self.exporting else {
            return;
        };
        let mut span = tracer
            .span_builder("produce")
            .with_kind(SpanKind::Producer)
            .with_start_time(SystemTime::now() - took)
            .with_links(links(events(), None))
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.batch.message_count", count as i64),
                KeyValue::new("edge_outbox.transactional", transactional),
            ])
            .start_with_context(tracer, &Context::new());
        end(&mut span, None);
    }

    /// Sends what is still buffered (at the exit).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.exporting {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "exporting the last spans failed");
            }
        }
    }
}

fn end(span: &mut impl opentelemetry::trace::Span, error: Option<&str>) {
    if let Some(error) = error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// The remote span context of a W3C trace context.
fn span_context(trace: &TraceContext) -> Option<SpanContext> {
    let mut parts = trace.traceparent.split('-');
    let (_, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let state = (trace.tracestate.as_deref())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        state,
    ))
}

/// Links to the distinct traces of `traces` but `parent`'s own, at most [`MAX_LINKS`].
fn links(traces: Vec<TraceContext>, parent: Option<&TraceContext>) -> Vec<Link> {
    let mut seen = std::collections::HashSet::new();
    (traces.iter())
        .filter(|t| Some(*t) != parent && seen.insert(t.traceparent.clone()))
        .filter_map(span_context)
        .take(MAX_LINKS)
        .map(Link::with_context)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_off_no_span_data_is_even_asked_for() {
        let off = Telemetry::default();
        assert!(!off.is_on());
        off.append(SystemTime::now(), None, || unreachable!(), 1, None);
        off.produce(Duration::ZERO, || unreachable!(), 1, false);
    }

    #[test]
    fn a_traceparent_becomes_a_remote_parent_and_links_are_distinct() {
        let trace = |parent: &str| TraceContext {
            traceparent: parent.to_string(),
            tracestate: Some("vendor=1".into()),
        };
        let a = trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let b = trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        let context = span_context(&a).unwrap();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.trace_state().header(), "vendor=1");
        let linked = links(vec![a.clone(), b.clone(), b.clone()], Some(&a));
        assert_eq!(linked.len(), 1);
        assert_eq!(
            linked[0].span_context.span_id().to_string(),
            "b7ad6b7169203331"
        );
    }
}
