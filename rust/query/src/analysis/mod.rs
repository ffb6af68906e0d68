//! Analyses of stored traces, as pure functions over [`crate::model::Trace`]: the API reads the
//! traces, these find what is in them.

pub mod n_plus_one;
pub mod statement;
