//! OTLP protobuf decoding: bytes in, opentelemetry-proto messages out.

use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::error::Error;

/// The three OTLP signals, numbered as in the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub enum Signal {
    Traces = 0,
    Logs = 1,
    Metrics = 2,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        })
    }
}

/// Decodes one `ExportTraceServiceRequest`. Strings that are not UTF-8 are a decode error naming the
/// field path (for example `Span.name: invalid string value: data is not UTF-8 encoded`).
pub fn traces(otlp: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    ExportTraceServiceRequest::decode(otlp).map_err(|source| Error::Decode { signal: Signal::Traces, len: otlp.len(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{request_with, span};

    #[test]
    fn round_trips_a_request() {
        let request = request_with(vec![span(1)]);
        let decoded = traces(&request.encode_to_vec()).expect("decodes");
        assert_eq!(decoded, request);
    }

    #[test]
    fn empty_input_is_an_empty_request() {
        assert_eq!(traces(&[]).expect("decodes").resource_spans.len(), 0);
    }

    #[test]
    fn garbage_and_truncation_are_permanent_errors() {
        let error = traces(&[0xff, 0xff, 0xff]).expect_err("garbage");
        assert_eq!(error.kind(), crate::error::ErrorKind::Permanent);
        assert!(error.to_string().starts_with("malformed OTLP traces request (3 bytes)"), "{error}");

        let bytes = request_with(vec![span(1)]).encode_to_vec();
        let error = traces(&bytes[..bytes.len() - 3]).expect_err("truncated");
        assert_eq!(error.kind(), crate::error::ErrorKind::Permanent);
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut bad = span(1);
        bad.name = "MARKER".to_owned();
        let mut bytes = request_with(vec![bad]).encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"MARKER").expect("marker present");
        bytes[at] = 0xff;
        let error = traces(&bytes).expect_err("invalid UTF-8");
        let message = error.to_string();
        assert!(message.contains("Span.name") && message.contains("UTF-8"), "{message}");
    }
}
