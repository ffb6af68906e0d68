//! `otel_metrics_*`. (Scaffolding: the encoder is being written.)

use super::Blocks;
use crate::sink::Encoded;
use crate::wire::WireError;

pub const GAUGE_COLUMNS: &[(&str, &str)] = &[];
pub const SUM_COLUMNS: &[(&str, &str)] = &[];
pub const HISTOGRAM_COLUMNS: &[(&str, &str)] = &[];
pub const EXPONENTIAL_HISTOGRAM_COLUMNS: &[(&str, &str)] = &[];
pub const SUMMARY_COLUMNS: &[(&str, &str)] = &[];

pub fn encode(_otlp: &[u8]) -> Result<Encoded<Blocks>, WireError> {
    Ok(Encoded {
        rows: Blocks::default(),
        rejected: 0,
        first_rejection: None,
    })
}
