//! The HTTP APIs: the router, Jaeger's response envelope and error answers, what every request
//! goes through (the results cache, then the request timeout), and how the APIs read traces.

mod analysis;
mod jaeger;
mod native;
mod otlp_json;
mod params;
mod time;
mod ui_trace;
mod v3;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use otelstore::config::GoDuration;
use serde::Serialize;

use crate::cache::{self, Cache};
use crate::config::{AnalysisSettings, Config, SearchSettings, StatsSettings};
use crate::model::{Trace, TraceId};
use crate::store::{Store, StoreError, TraceQuery};

/// What the handlers share.
struct AppState {
    store: Arc<dyn Store>,
    search: SearchSettings,
    stats: StatsSettings,
    analysis: AnalysisSettings,
    cache: Cache,
    request_timeout: Duration,
}

/// The application: every API route, each answer cached, each request bounded in time.
pub fn router(store: Arc<dyn Store>, config: &Config) -> Router {
    let state = Arc::new(AppState {
        store,
        search: config.search,
        stats: config.stats,
        analysis: config.analysis,
        cache: Cache::new(config.cache.ttl.0, config.cache.max_bytes),
        request_timeout: config.request_timeout,
    });
    jaeger::routes()
        .merge(v3::routes())
        .merge(native::routes())
        .merge(analysis::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), cached))
        .fallback(unknown_route)
        .with_state(state)
}

/// Why a request failed; answered in Jaeger's envelope with the status Jaeger would give.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// A parameter with a value that does not parse (400).
    #[error("unable to parse param '{param}': {reason}")]
    Param { param: &'static str, reason: String },
    /// Another bad request, such as a missing parameter (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("trace not found")]
    TraceNotFound,
    /// v3: no trace matched, or the one asked for is not stored (404).
    #[error("No traces found")]
    NoTraces,
    #[error("no such API: {0}")]
    UnknownRoute(Uri),
    /// 503 when the database is unavailable, 500 when it failed the query.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the request did not finish within {} (request_timeout); the database may be overloaded, or the query too broad", GoDuration(*.0))]
    Timeout(Duration),
    #[error("cannot encode the response: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot read the response: {0}")]
    Body(#[from] axum::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Param { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TraceNotFound | ApiError::NoTraces | ApiError::UnknownRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) | ApiError::Store(StoreError::Timeout { .. }) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ApiError::Store(StoreError::Query { .. }) | ApiError::Encode(_) | ApiError::Body(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// One item of the envelope's `errors`.
#[derive(Debug, Serialize)]
struct ErrorItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

/// Jaeger's v1 envelope: `errors` is null on success, never `[]`.
#[derive(Debug, Serialize)]
struct Envelope<T> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<ErrorItem>>,
}

impl<T> Envelope<T> {
    fn new(data: T) -> Self {
        Envelope {
            data,
            total: 0,
            limit: 0,
            offset: 0,
            errors: None,
        }
    }

    fn with_total(self, total: usize) -> Self {
        Envelope { total, ..self }
    }

    /// The JSON, indented by 4 spaces when `pretty` (Jaeger's `prettyPrint=true`).
    fn encode(&self, pretty: bool) -> Result<Bytes, serde_json::Error>
    where
        T: Serialize,
    {
        let mut out = Vec::with_capacity(256);
        if pretty {
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            self.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))?;
        } else {
            serde_json::to_writer(&mut out, self)?;
        }
        Ok(out.into())
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Which API a request is for: each answers errors in its own shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    /// Jaeger's envelope, `{"data":null,…,"errors":[{"code":400,"msg":"…"}]}`.
    V1,
    /// `{"error":{"httpCode":400,"message":"…"}}`: Jaeger's v3 API, and otelstore's own
    /// (native.rs, under `/api/v1/`).
    V3,
}

impl Api {
    fn of(path: &str) -> Api {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/api/v3") || under("/api/v1") {
            Api::V3
        } else {
            Api::V1
        }
    }
}

impl ApiError {
    /// The answer to a request for `api` that failed with this error.
    fn response(self, api: Api) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{self}");
        }
        let body = match api {
            Api::V1 => {
                let mut envelope = Envelope::new(());
                envelope.errors = Some(vec![ErrorItem {
                    code: Some(status.as_u16()),
                    msg: self.to_string(),
                    trace_id: None,
                }]);
                envelope.encode(false)
            }
            Api::V3 => v3::error_body(status, &self),
        };
        match body {
            Ok(body) => json(status, body),
            Err(_) => status.into_response(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(Api::V1)
    }
}

async fn unknown_route(uri: Uri) -> Response {
    let api = Api::of(uri.path());
    ApiError::UnknownRoute(uri).response(api)
}

/// The largest request body read (`POST /api/v1/traces`' JSON is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 << 10;

/// Serves a request from the cache, or runs it within the request timeout and caches a 200 answer.
/// A request other than GET is keyed by its method and its body too, which is read first (up to
/// [`MAX_BODY_BYTES`], within the request timeout too).
async fn cached(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let uri = request.uri();
    let api = Api::of(uri.path());
    let mut key = match params::Params::from_uri(uri) {
        Ok(params) => cache::key(uri.path(), params.pairs()),
        Err(error) => return error.response(api),
    };
    let request = if request.method() == Method::GET {
        request
    } else {
        let (parts, body) = request.into_parts();
        let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
        let body = match tokio::time::timeout(state.request_timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                return ApiError::BadRequest(format!(
                    "cannot read the request body (at most {MAX_BODY_BYTES} bytes): {error}"
                ))
                .response(api)
            }
            Err(_) => return ApiError::Timeout(state.request_timeout).response(api),
        };
        key = format!(
            "{} {key} {}",
            parts.method,
            percent_encoding::percent_encode(&body, percent_encoding::NON_ALPHANUMERIC)
        );
        Request::from_parts(parts, Body::from(body))
    };
    if let Some(body) = state.cache.get(&key, Instant::now()) {
        return json(StatusCode::OK, body);
    }
    let response = match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => return ApiError::Timeout(state.request_timeout).response(api),
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            state.cache.insert(key, bytes.clone(), Instant::now());
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(error) => ApiError::Body(error).into_response(),
    }
}

/// The traces that have spans, in the order of `ids`.
fn in_order(ids: &[TraceId], traces: Vec<Trace>) -> Vec<Trace> {
    let mut by_id: HashMap<TraceId, Trace> = traces
        .into_iter()
        .filter(|trace| !trace.spans.is_empty())
        .map(|trace| (trace.trace_id, trace))
        .collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// The traces a search finds, whole, the most recently started first.
async fn search_traces(store: &dyn Store, query: &TraceQuery) -> Result<Vec<Trace>, StoreError> {
    let ids = store.find_trace_ids(query).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let window = params::trace_window(query.start_min_unix_nano, query.start_max_unix_nano);
    Ok(in_order(&ids, store.traces(&ids, Some(window)).await?))
}

/// The trace with this id, looked for within `window` first (a hint), then everywhere; `None` when
/// no span of it is stored.
async fn trace_by_id(
    store: &dyn Store,
    id: TraceId,
    window: Option<(i64, i64)>,
) -> Result<Option<Trace>, StoreError> {
    let ids = [id];
    let mut found = in_order(&ids, store.traces(&ids, window).await?);
    if found.is_empty() && window.is_some() {
        found = in_order(&ids, store.traces(&ids, None).await?);
    }
    Ok(found.pop())
}

#[cfg(test)]
mod tests;
