//! Where rows go. Each backend is one module.

pub mod postgres;
