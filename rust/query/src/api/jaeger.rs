//! Jaeger's v1 HTTP JSON API, the one Grafana's Jaeger data source calls: services, operations,
//! trace search, a trace by id, and service dependencies, each in Jaeger's envelope.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::params::{self, Params, Search};
use super::ui_trace::UiTrace;
use super::{in_order, json, search_traces, trace_by_id, ApiError, AppState, Envelope, ErrorItem};
use crate::model::Trace;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{id}", get(trace))
        .route("/api/dependencies", get(dependencies))
}

pub(super) fn now_unix_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

fn reply<T: Serialize>(envelope: Envelope<T>, params: &Params) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, envelope.encode(params.pretty())?))
}

pub(super) fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// `{"data":["frontend","redis"],"total":2,…}`
async fn services(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, ApiError> {
    let services = state.store.services().await?;
    let total = services.len();
    reply(Envelope::new(services).with_total(total), &params)
}

/// The operation names of a service, of every kind: `{"data":["GET /","SELECT"],"total":2,…}`.
async fn service_operations(
    State(state): State<Arc<AppState>>,
    service: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let service = params::service_in_path(path_value(service)?);
    let mut names: Vec<String> = state
        .store
        .operations(&service, None)
        .await?
        .into_iter()
        .map(|operation| operation.name)
        .collect();
    names.sort();
    names.dedup();
    let total = names.len();
    reply(Envelope::new(names).with_total(total), &params)
}

/// An operation with its kind, in both APIs.
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub(super) struct OperationJson {
    pub name: String,
    pub span_kind: String,
}

/// The operations of the service given as `service`, of the kind given under one of `kind_names`
/// (any when absent), with `""` as the kind of spans that had none.
pub(super) async fn operation_list(
    state: &AppState,
    params: &Params,
    kind_names: &[&'static str],
) -> Result<Vec<OperationJson>, ApiError> {
    let (service, kind) = params::operations(params, kind_names)?;
    Ok(state
        .store
        .operations(&service, kind)
        .await?
        .into_iter()
        .map(|operation| OperationJson {
            name: operation.name,
            span_kind: operation.span_kind,
        })
        .collect())
}

/// `/api/operations?service=S[&spanKind=K]`: `{"data":[{"name":"GET /","spanKind":"server"}],…}`,
/// with `""` as the kind of spans that had none.
async fn operations(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, ApiError> {
    let operations = operation_list(&state, &params, &["spanKind"]).await?;
    let total = operations.len();
    reply(Envelope::new(operations).with_total(total), &params)
}

fn ui_traces(traces: &[Trace]) -> Vec<UiTrace> {
    traces.iter().map(UiTrace::from_trace).collect()
}

/// A search, or with `traceID=` the traces asked for: `{"data":[<trace>…],"total":0,…}`. A trace
/// asked for by id and not found is named in `errors`, and the answer is still 200.
async fn search(State(state): State<Arc<AppState>>, params: Params) -> Result<Response, ApiError> {
    match params::search(&params, now_unix_nano(), &state.search)? {
        Search::Query(query) => {
            let traces = search_traces(state.store.as_ref(), &query).await?;
            reply(Envelope::new(ui_traces(&traces)), &params)
        }
        Search::Ids(ids) => {
            let traces = in_order(&ids, state.store.traces(&ids, None).await?);
            let missing: Vec<ErrorItem> = ids
                .iter()
                .filter(|id| !traces.iter().any(|trace| trace.trace_id == **id))
                .map(|id| ErrorItem {
                    code: None,
                    msg: ApiError::TraceNotFound.to_string(),
                    trace_id: Some(id.to_string()),
                })
                .collect();
            let mut envelope = Envelope::new(ui_traces(&traces));
            if !missing.is_empty() {
                envelope.errors = Some(missing);
            }
            reply(envelope, &params)
        }
    }
}

/// `/api/traces/{id}[?start=&end=]`: `{"data":[<trace>],…}`, or 404 when no span of it is stored.
/// `start` and `end` only narrow where the spans are looked for first.
async fn trace(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let id = params::trace_id("traceID", &path_value(id)?)?;
    let window = params::trace_lookup_window(&params)?;
    let trace = trace_by_id(state.store.as_ref(), id, window)
        .await?
        .ok_or(ApiError::TraceNotFound)?;
    reply(Envelope::new(ui_traces(&[trace])), &params)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DependencyJson {
    parent: String,
    child: String,
    call_count: u64,
}

/// `/api/dependencies?endTs=&lookback=[&service=]`:
/// `{"data":[{"parent":"frontend","child":"redis","callCount":12}],…}`, one link per pair of
/// services, sorted.
async fn dependencies(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, ApiError> {
    let (start, end, service) = params::dependencies(&params, now_unix_nano())?;
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for link in state.store.dependencies(start, end).await? {
        let touches = service
            .as_ref()
            .is_none_or(|service| *service == link.parent || *service == link.child);
        if touches {
            *calls.entry((link.parent, link.child)).or_default() += link.call_count;
        }
    }
    let links: Vec<DependencyJson> = calls
        .into_iter()
        .map(|((parent, child), call_count)| DependencyJson {
            parent,
            child,
            call_count,
        })
        .collect();
    reply(Envelope::new(links), &params)
}
