//! otelstore's core: reads OTLP requests and writes them to PostgreSQL with binary COPY.
//!
//! The collector's Go component calls it through the C ABI in [`ffi`]; Rust programs use
//! [`Exporter`] directly.

pub mod batch;
pub mod config;
pub mod error;
pub mod exporter;
pub mod ffi;
mod json;
pub mod limiter;
#[cfg(test)]
mod proptests;
pub mod signal;
pub mod sink;
pub mod telemetry;
#[cfg(test)]
mod testdata;
pub mod wire;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use exporter::Exporter;
