//! otelstore-query: serves the traces the otelstore exporter stored, in PostgreSQL or ClickHouse,
//! over the HTTP APIs that Grafana's Jaeger data source and the Jaeger UI call.

pub mod analysis;
pub mod api;
pub mod cache;
pub mod config;
pub mod model;
pub mod store;
