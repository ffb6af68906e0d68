//! Where rows go. Each backend is one module; both read requests with [`envelope`].

pub mod clickhouse;
pub mod envelope;
pub mod postgres;
