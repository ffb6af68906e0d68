//! The C ABI. The only module that touches raw pointers; every entry point catches panics, so none
//! unwinds into the caller. Exporters are named by opaque integer handles, so a freed, unknown or
//! doubly freed handle is an error, never a dangling pointer.

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::exporter::Exporter;
use crate::signal::Signal;

/// Outcome of a call. Every function that can fail returns one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelstoreStatus {
    Ok = 0,
    /// The configuration is invalid; the message names the field and the value.
    InvalidConfig = 1,
    /// The data can never be written as sent (malformed OTLP); retrying will not help.
    Permanent = 2,
    /// Nothing was acknowledged, but a later attempt may succeed (database unreachable).
    Retryable = 3,
    /// Misuse of the API: null pointer, unknown or freed handle, handle used after shutdown.
    InvalidArgument = 4,
    /// A bug in otelstore was caught at the boundary instead of unwinding into the caller.
    Internal = 5,
}

/// The signal of an export request.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelstoreSignal {
    Traces = 0,
    Logs = 1,
    Metrics = 2,
}

/// Signals arrive as plain integers: an out-of-range value from C must be an error, not an
/// invalid Rust enum.
fn signal(value: u32) -> Result<Signal, Failure> {
    match value {
        v if v == OtelstoreSignal::Traces as u32 => Ok(Signal::Traces),
        v if v == OtelstoreSignal::Logs as u32 => Ok(Signal::Logs),
        v if v == OtelstoreSignal::Metrics as u32 => Ok(Signal::Metrics),
        other => Err(misuse(&format!(
            "unknown signal {other} (expected an OtelstoreSignal)"
        ))),
    }
}

struct Failure {
    status: OtelstoreStatus,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidConfig => OtelstoreStatus::InvalidConfig,
            ErrorKind::Permanent => OtelstoreStatus::Permanent,
            ErrorKind::Retryable => OtelstoreStatus::Retryable,
            ErrorKind::ShutDown => OtelstoreStatus::InvalidArgument,
        };
        Failure {
            status,
            message: error.to_string(),
        }
    }
}

fn misuse(message: &str) -> Failure {
    Failure {
        status: OtelstoreStatus::InvalidArgument,
        message: message.to_owned(),
    }
}

fn registry() -> &'static Mutex<HashMap<u64, Arc<Exporter>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Arc<Exporter>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn lookup(handle: u64) -> Result<Arc<Exporter>, Failure> {
    let exporters = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    exporters.get(&handle).cloned().ok_or_else(|| {
        misuse(&format!(
            "unknown exporter handle {handle} (never created, or freed)"
        ))
    })
}

/// Runs `body`, turning an error or a panic into a status and an optional message for the caller.
fn call(
    message_out: *mut *mut c_char,
    body: impl FnOnce() -> Result<(), Failure>,
) -> OtelstoreStatus {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return OtelstoreStatus::Ok,
        Ok(Err(failure)) => failure,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Failure {
                status: OtelstoreStatus::Internal,
                message: format!("internal error (please report): {what}"),
            }
        }
    };
    write_string(message_out, &failure.message);
    failure.status
}

/// Stores a new C string in `*out` when `out` is not null.
fn write_string(out: *mut *mut c_char, text: &str) {
    if out.is_null() {
        return;
    }
    let c_string = CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default();
    // SAFETY: the caller passed `out` as a writable `char **`, checked non-null above.
    unsafe { *out = c_string.into_raw() };
}

/// # Safety
/// `data` must be null or point to `len` readable bytes for the duration of the call.
unsafe fn bytes<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(misuse(&format!("{what} is null but its length is {len}")));
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes until the call returns.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Writes the default configuration as JSON into `*json_out` (free with `otelstore_message_free`).
///
/// # Safety
/// `json_out` must be a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_config_defaults(json_out: *mut *mut c_char) -> OtelstoreStatus {
    if json_out.is_null() {
        return OtelstoreStatus::InvalidArgument;
    }
    call(std::ptr::null_mut(), || {
        write_string(json_out, &Config::defaults_json());
        Ok(())
    })
}

/// Checks a JSON configuration without creating anything. On failure `*message_out` names the
/// field and the value.
///
/// # Safety
/// `config_json` must point to `config_len` readable bytes; `message_out` must be null or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_config_validate(
    config_json: *const u8,
    config_len: usize,
    message_out: *mut *mut c_char,
) -> OtelstoreStatus {
    call(message_out, || {
        // SAFETY: forwarded from this function's contract.
        let json = unsafe { bytes(config_json, config_len, "config_json") }?;
        Config::from_json(json)
            .map(|_| ())
            .map_err(|e| Failure::from(Error::from(e)))
    })
}

/// Creates an exporter and stores its handle in `*handle_out`. Connections open lazily, so a
/// database that is down does not fail this call.
///
/// # Safety
/// `config_json` must point to `config_len` readable bytes; `handle_out` must be a valid `uint64_t *`;
/// `message_out` must be null or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_exporter_new(
    config_json: *const u8,
    config_len: usize,
    handle_out: *mut u64,
    message_out: *mut *mut c_char,
) -> OtelstoreStatus {
    call(message_out, || {
        if handle_out.is_null() {
            return Err(misuse("handle_out is null"));
        }
        // SAFETY: forwarded from this function's contract.
        let json = unsafe { bytes(config_json, config_len, "config_json") }?;
        let config = Config::from_json(json).map_err(Error::from)?;
        let exporter = Exporter::new(config)?;
        let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        registry()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(handle, Arc::new(exporter));
        // SAFETY: checked non-null above; the caller guarantees it is writable.
        unsafe { *handle_out = handle };
        Ok(())
    })
}

/// Writes one serialized OTLP export request (an `ExportTraceServiceRequest` protobuf for traces);
/// `signal` is an `OtelstoreSignal`. With `acknowledge: committed` (the default) it returns OK only
/// once the data is committed; transient failures are retried inside the call until `timeout_ms`
/// (0: no deadline) runs out, then reported as `Retryable`. The bytes are not kept after the call.
///
/// # Safety
/// `otlp` must point to `otlp_len` readable bytes (or be anything when `otlp_len` is 0);
/// `message_out` must be null or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_exporter_export(
    handle: u64,
    signal: u32,
    otlp: *const u8,
    otlp_len: usize,
    timeout_ms: u64,
    message_out: *mut *mut c_char,
) -> OtelstoreStatus {
    call(message_out, || {
        let signal = self::signal(signal)?;
        let exporter = lookup(handle)?;
        // SAFETY: forwarded from this function's contract.
        let otlp = unsafe { bytes(otlp, otlp_len, "otlp") }?;
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        exporter
            .export(signal, otlp, timeout)
            .map(|_| ())
            .map_err(Failure::from)
    })
}

/// Writes into `*json_out` (free with `otelstore_message_free`) what happened since the previous
/// call: counter deltas, gauges, the duration of each write, log records, and whether the database
/// is reachable. Meant to be called about once a second.
///
/// # Safety
/// `json_out` must be a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_exporter_drain(
    handle: u64,
    json_out: *mut *mut c_char,
) -> OtelstoreStatus {
    if json_out.is_null() {
        return OtelstoreStatus::InvalidArgument;
    }
    call(std::ptr::null_mut(), || {
        let exporter = lookup(handle)?;
        write_string(json_out, &exporter.drain_telemetry());
        Ok(())
    })
}

/// Stops accepting data, waits up to `timeout_ms` for the writes under way, and closes connections.
///
/// # Safety
/// `message_out` must be null or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn otelstore_exporter_shutdown(
    handle: u64,
    timeout_ms: u64,
    message_out: *mut *mut c_char,
) -> OtelstoreStatus {
    call(message_out, || {
        let exporter = lookup(handle)?;
        exporter
            .shutdown(Duration::from_millis(timeout_ms))
            .map_err(Failure::from)
    })
}

/// Releases the handle. Freeing an unknown or already freed handle returns `InvalidArgument`.
#[no_mangle]
pub extern "C" fn otelstore_exporter_free(handle: u64) -> OtelstoreStatus {
    call(std::ptr::null_mut(), || {
        let removed = registry()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&handle);
        // Dropping the last reference stops the runtime; an export still running keeps its own.
        removed
            .map(drop)
            .ok_or_else(|| misuse("unknown exporter handle"))
    })
}

/// Frees a string returned through a `*_out` parameter. Null is allowed.
///
/// # Safety
/// `message` must be null or a string returned by this library, not freed before.
#[no_mangle]
pub unsafe extern "C" fn otelstore_message_free(message: *mut c_char) {
    if !message.is_null() {
        // SAFETY: the caller guarantees it came from `CString::into_raw` in `write_string`.
        drop(unsafe { CString::from_raw(message) });
    }
}
