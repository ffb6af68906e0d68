//! The `otelstore-query` binary.

fn main() {}
