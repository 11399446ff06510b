//! W3C trace context on the way to Kafka: which `traceparent` / `tracestate` a message carries
//! as plain Kafka headers (OpenTelemetry's messaging conventions), so that consumers' tracing
//! continues the trace. The request's own `traceparent` HTTP header (this hop) wins; without it,
//! the event's distributed-tracing extension (where the event started) is used. The extension
//! itself stays an attribute of the event (`ce_traceparent` in binary mode) either way. An
//! invalid `traceparent` is ignored, as the W3C recommendation says, and never refuses an event.

use crate::message::Message;
use std::collections::BTreeMap;

/// A valid `traceparent` and the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace context of an HTTP request's `traceparent` / `tracestate` headers.
    pub fn from_headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    ) -> Option<TraceContext> {
        let value = |wanted: &str| {
            let found = (headers.clone()).find(|(name, _)| name.eq_ignore_ascii_case(wanted))?;
            std::str::from_utf8(found.1).ok().map(str::trim)
        };
        let traceparent = value("traceparent").filter(|v| is_valid_traceparent(v))?;
        let tracestate = value("tracestate").filter(|v| !v.is_empty());
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.map(str::to_string),
        })
    }

    /// The trace context of an event's distributed-tracing extension.
    pub fn from_extensions(extensions: &BTreeMap<String, String>) -> Option<TraceContext> {
        let traceparent = extensions
            .get("traceparent")
            .map(|v| v.trim())
            .filter(|v| is_valid_traceparent(v))?;
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: (extensions.get("tracestate"))
                .filter(|v| !v.is_empty())
                .cloned(),
        })
    }

    /// Adds the `traceparent` (and `tracestate`) headers to `message`.
    pub fn add_to(&self, message: &mut Message) {
        message
            .headers
            .push(("traceparent".into(), self.traceparent.as_bytes().to_vec()));
        if let Some(state) = &self.tracestate {
            message
                .headers
                .push(("tracestate".into(), state.as_bytes().to_vec()));
        }
    }
}

/// `version-traceid-parentid-flags` in lower-case hex (2-32-16-2), trace and parent id not
/// all zeros, version not `ff`; a future version may add fields after a `-`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = value.splitn(5, '-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest = parts.next();
    hex(version, 2)
        && version != "ff"
        && (version != "00" || rest.is_none())
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_checked_as_the_w3c_recommendation_says() {
        assert!(is_valid_traceparent(PARENT));
        assert!(is_valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_request_header_wins_and_an_invalid_one_is_ignored() {
        let headers = [("TraceParent", PARENT.as_bytes()), ("tracestate", b"a=1")];
        let context = TraceContext::from_headers(headers.iter().copied()).unwrap();
        assert_eq!(context.traceparent, PARENT);
        assert_eq!(context.tracestate.as_deref(), Some("a=1"));
        let invalid = [("traceparent", &b"00-xyz"[..]), ("tracestate", b"a=1")];
        assert_eq!(TraceContext::from_headers(invalid.iter().copied()), None);
        let extensions = BTreeMap::from([("traceparent".to_string(), PARENT.to_string())]);
        let context = TraceContext::from_extensions(&extensions).unwrap();
        assert_eq!(
            (context.traceparent.as_str(), context.tracestate),
            (PARENT, None)
        );
        let mut message = Message {
            topic: "t".into(),
            key: "k".into(),
            headers: Vec::new(),
            payload: Vec::new(),
        };
        TraceContext::from_headers(headers.iter().copied())
            .unwrap()
            .add_to(&mut message);
        let names: Vec<&str> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["traceparent", "tracestate"]);
    }
}
