//! What the ClickHouse integration tests share: the chdb front (tests/clickhouse/chdb_front.py
//! serves ClickHouse's HTTP interface over chdb, ClickHouse embedded; started by
//! rust/test-support/chdb_front.rs), OTLP builders (rust/test-support/otlp.rs) and a query helper.

use std::time::{SystemTime, UNIX_EPOCH};

use otelstore::config::{ClickHouseConfig, Retention};
use otelstore::sink::clickhouse::ClickHouseSink;
use serde_json::Value as Json;

// Shared with otelstore-query's tests. Each test file uses some of the builders.
#[path = "../../../test-support/chdb_front.rs"]
mod chdb_front;
#[allow(dead_code)]
#[path = "../../../test-support/otlp.rs"]
mod otlp;
pub use chdb_front::Front;
#[allow(unused_imports)]
pub use otlp::{any, kv, resource_spans, text};

impl Front {
    /// Settings for a sink that writes to this front's database `otel_test`.
    pub fn config(&self) -> ClickHouseConfig {
        ClickHouseConfig {
            endpoint: self.url().to_owned(),
            database: "otel_test".into(),
            ..Default::default()
        }
    }

    /// A sink with [`Front::config`] and the default retention.
    pub fn sink(&self) -> ClickHouseSink {
        ClickHouseSink::new(&self.config(), &Retention::default()).expect("settings")
    }
}

/// Some nanoseconds an hour ago, so the rows are well inside every TTL.
pub fn base_time() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    (now - 3600) / 3600 * 3600 * 1_000_000_000 + 123_456_789
}

/// The rows of a query, one JSON object each, 64-bit integers as numbers.
pub async fn rows(sink: &ClickHouseSink, sql: &str) -> Vec<Json> {
    let bytes = sink
        .client()
        .query_raw(&format!(
            "{sql} SETTINGS output_format_json_quote_64bit_integers = 0"
        ))
        .fetch_bytes("JSONEachRow")
        .expect("query")
        .collect()
        .await
        .expect("rows");
    String::from_utf8(bytes.to_vec())
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect()
}
