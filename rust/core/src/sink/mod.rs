//! Where rows go. Each backend is one module; both read requests with [`envelope`].
//!
//! A backend encodes a request into its own rows on the caller's thread ([`Sink::encode`]), and
//! writes the rows of several requests together on the runtime ([`Sink::write`]); the batch writer
//! in between is the same for both.

pub mod clickhouse;
pub mod datapoints;
pub mod envelope;
pub mod log_record;
pub mod postgres;
pub mod span_fields;

use std::future::Future;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::ConfigError;
use crate::error::Error;
use crate::signal::Signal;
use crate::wire::WireError;

/// One request's rows, encoded for a backend.
pub trait Rows: Send + Sync + 'static {
    /// Rows of telemetry (not bookkeeping) they hold.
    fn rows(&self) -> u64;
    /// Bytes they take in memory.
    fn bytes(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}

/// An export request encoded for a backend's tables, and the items that could not become rows.
pub struct Encoded<R> {
    pub rows: R,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// One export request's rows waiting to be written.
pub struct Pending<'a, R> {
    pub request_id: [u8; 16],
    pub rows: &'a R,
}

/// What became of one request's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub written: u64,
    pub rejected: u64,
    pub first_rejection: Option<String>,
    /// The request had been stored before (a retry after a lost acknowledgement): nothing written.
    pub duplicate: bool,
}

/// A database the exporter writes to.
pub trait Sink: Send + Sync + 'static {
    type Rows: Rows;

    /// Encodes a serialized OTLP request of `signal` into rows, without the database.
    fn encode(signal: Signal, otlp: &[u8]) -> Result<Encoded<Self::Rows>, WireError>;

    /// Writes the rows of several requests together. Returns one [`Stored`] per request, in order.
    fn write(
        &self,
        pending: &[Pending<'_, Self::Rows>],
    ) -> impl Future<Output = Result<Vec<Stored>, Error>> + Send;

    /// Periodic upkeep (schema, partitions); run at start and then every maintenance interval.
    fn maintain(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stops handing out connections and closes the idle ones.
    fn close(&self);
}

/// The CA certificates of a PEM file, read at validation so a bad path fails at collector start.
/// `field` names the setting in errors.
pub fn root_certificates(field: &str, ca_file: &str) -> Result<RootCertStore, ConfigError> {
    let error = |reason: String| ConfigError {
        field: field.to_owned(),
        reason,
    };
    let pem = std::fs::read(ca_file).map_err(|e| error(format!("cannot read {ca_file:?}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate =
            certificate.map_err(|e| error(format!("{ca_file:?} is not valid PEM: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| error(format!("{ca_file:?} holds an unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(error(format!("{ca_file:?} holds no PEM certificate")));
    }
    Ok(roots)
}
