//! Jaeger's v1 query parameters, parsed into what the store is asked. A bad value is a 400 that names
//! the parameter and repeats the value.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::Uri;
use otelstore::config::GoDuration;

use super::{time, ApiError};
use crate::config::SearchSettings;
use crate::model::{SpanKind, TraceId};
use crate::store::{TagFilter, TraceQuery};

/// The query parameters of a request, in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_uri(uri: &Uri) -> Result<Params, ApiError> {
        Query::try_from_uri(uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Every non-empty value of a parameter; Jaeger's clients treat an empty one as absent.
    fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// The first non-empty value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// The value of a parameter that goes by several names (Jaeger's v3 API keeps older aliases),
    /// with the name it was given under: the first of `names` that has a non-empty value.
    pub fn first_of(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names
            .iter()
            .find_map(|name| self.get(name).map(|value| (*name, value)))
    }

    /// `prettyPrint=true` asks for indented JSON.
    pub fn pretty(&self) -> bool {
        self.get("prettyPrint") == Some("true")
    }
}

/// Parameters given some other way than in a URL (the fields of a JSON body), as name and value.
impl From<Vec<(String, String)>> for Params {
    fn from(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Params::from_uri(&parts.uri)
    }
}

pub fn bad(param: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::Param {
        param,
        reason: reason.into(),
    }
}

/// Traces are fetched whole after a search: spans that start this long before or after the search
/// window are looked at too (the store only reads spans within the window it is given).
const TRACE_MARGIN_NS: i64 = 3600 * 1_000_000_000;

/// The window of spans to read for traces found by a search over [start, end].
pub fn trace_window(start: i64, end: i64) -> (i64, i64) {
    (
        start.saturating_sub(TRACE_MARGIN_NS),
        end.saturating_add(TRACE_MARGIN_NS),
    )
}

const DEFAULT_LIMIT: usize = 100;

/// What a search (`/api/traces`) asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    /// Traces whose spans match.
    Query(TraceQuery),
    /// `traceID=…`: these traces, without searching.
    Ids(Vec<TraceId>),
}

fn parse_integer(param: &'static str, value: &str, unit: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        bad(
            param,
            format!("{value:?} is not an integer number of {unit}"),
        )
    })
}

/// `start` or `end` of a search: microseconds since the epoch, in nanoseconds.
fn micros(params: &Params, param: &'static str) -> Result<Option<i64>, ApiError> {
    params
        .get(param)
        .map(|value| {
            parse_integer(param, value, "microseconds since the epoch")?
                .checked_mul(1000)
                .ok_or_else(|| bad(param, format!("{value} is out of range")))
        })
        .transpose()
}

pub fn nanos(duration: Duration) -> Option<i64> {
    i64::try_from(duration.as_nanos()).ok()
}

/// A Go duration (`1.5s`, `100ms`, `1h30m`), in nanoseconds.
fn duration(params: &Params, names: &[&'static str]) -> Result<Option<i64>, ApiError> {
    params
        .first_of(names)
        .map(|(param, value)| {
            let parsed: GoDuration = value.parse().map_err(|reason: String| bad(param, reason))?;
            nanos(parsed.0).ok_or_else(|| bad(param, format!("{value:?} is out of range")))
        })
        .transpose()
}

/// An RFC 3339 time given as `param`, in nanoseconds since the epoch.
pub fn rfc3339(param: &'static str, value: &str) -> Result<i64, ApiError> {
    time::rfc3339(value).ok_or_else(|| {
        bad(
            param,
            format!("{value:?} is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)"),
        )
    })
}

/// An RFC 3339 time parameter, under one of `names`, in nanoseconds since the epoch.
pub fn time(params: &Params, names: &[&'static str]) -> Result<Option<i64>, ApiError> {
    params
        .first_of(names)
        .map(|(param, value)| rfc3339(param, value))
        .transpose()
}

/// The Jaeger UI's `lookback` (`1h`, `2d`, …; `custom` means start and end say it), in nanoseconds.
fn lookback(params: &Params) -> Result<Option<i64>, ApiError> {
    const PARAM: &str = "lookback";
    match params.get(PARAM) {
        None | Some("custom") => Ok(None),
        Some(value) => {
            let parsed = match value.strip_suffix('d') {
                Some(days) => days
                    .parse::<u32>()
                    .map(|days| Duration::from_secs(u64::from(days) * 86_400))
                    .map_err(|_| ()),
                None => value.parse::<GoDuration>().map(|d| d.0).map_err(|_| ()),
            };
            parsed.ok().and_then(nanos).map(Some).ok_or_else(|| {
                bad(
                    PARAM,
                    format!("{value:?} is not a duration such as \"1h\" or \"2d\", nor \"custom\""),
                )
            })
        }
    }
}

/// A JSON object of string values, `{"http.status_code":"500","error":"true"}`: tags to search for.
pub fn tag_map(param: &'static str, value: &str) -> Result<BTreeMap<String, String>, ApiError> {
    serde_json::from_str(value).map_err(|e| {
        bad(
            param,
            format!("{value:?} is not a JSON object of string values: {e}"),
        )
    })
}

/// The conditions the tags ask for.
pub fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<TagFilter> {
    tags.iter()
        .map(|(key, value)| TagFilter::from_jaeger(key, value))
        .collect()
}

/// `tag=key:value` (repeated) and `tags={"key":"value",…}` (repeated; these win over `tag`).
fn tags(params: &Params) -> Result<Vec<TagFilter>, ApiError> {
    let mut tags = BTreeMap::new();
    for value in params.all("tag") {
        let (key, tag_value) = value
            .split_once(':')
            .ok_or_else(|| bad("tag", format!("expecting key:value, got {value:?}")))?;
        tags.insert(key.to_owned(), tag_value.to_owned());
    }
    for value in params.all("tags") {
        tags.extend(tag_map("tags", value)?);
    }
    Ok(tag_filters(&tags))
}

/// At most this many traces (0 or none: the default), bounded by the configuration.
fn limit(
    params: &Params,
    names: &[&'static str],
    settings: &SearchSettings,
) -> Result<usize, ApiError> {
    let limit = match params.first_of(names) {
        None => 0,
        Some((param, value)) => value
            .parse()
            .map_err(|_| bad(param, format!("{value:?} is not a number of traces")))?,
    };
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    Ok(limit.min(settings.max_limit))
}

/// The names of a search's parameters in one API; each is read under the first of its names that
/// has a value.
pub struct SearchNames {
    pub service: &'static [&'static str],
    pub operation: &'static [&'static str],
    pub duration_min: &'static [&'static str],
    pub duration_max: &'static [&'static str],
    pub limit: &'static [&'static str],
}

/// The names of the v1 API (`/api/traces`).
const V1_SEARCH: SearchNames = SearchNames {
    service: &["service"],
    operation: &["operation"],
    duration_min: &["minDuration"],
    duration_max: &["maxDuration"],
    limit: &["limit"],
};

/// A search for spans with these tags that start within [start, end] (nanoseconds), and the
/// service, operation, durations and limit the parameters give under `names`.
pub fn trace_query(
    params: &Params,
    names: &SearchNames,
    tags: Vec<TagFilter>,
    (start, end): (i64, i64),
    settings: &SearchSettings,
) -> Result<TraceQuery, ApiError> {
    let duration_min_ns = duration(params, names.duration_min)?;
    let duration_max_ns = duration(params, names.duration_max)?;
    if let (Some(min), Some(max)) = (duration_min_ns, duration_max_ns) {
        if min > max {
            return Err(ApiError::BadRequest(format!(
                "'{}' must not be shorter than '{}'",
                names.duration_max[0], names.duration_min[0]
            )));
        }
    }
    let text = |names: &[&'static str]| params.first_of(names).map(|(_, value)| value.to_owned());
    Ok(TraceQuery {
        service: text(names.service),
        operation: text(names.operation),
        tags,
        start_min_unix_nano: start,
        start_max_unix_nano: end,
        duration_min_ns,
        duration_max_ns,
        limit: limit(params, names.limit, settings)?,
    })
}

/// A search's parameters. Without `end` the search ends now (`now_unix_nano`); without `start` it
/// looks back `lookback`, or the configured default.
pub fn search(
    params: &Params,
    now_unix_nano: i64,
    settings: &SearchSettings,
) -> Result<Search, ApiError> {
    let ids: Vec<TraceId> = params
        .all("traceID")
        .map(|id| TraceId::parse(id).map_err(|e| bad("traceID", e.to_string())))
        .collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        return Ok(Search::Ids(ids));
    }
    let end = micros(params, "end")?.unwrap_or(now_unix_nano);
    let start = match micros(params, "start")? {
        Some(start) => start,
        None => {
            let lookback = lookback(params)?
                .or_else(|| nanos(settings.default_lookback.0))
                .unwrap_or(i64::MAX);
            end.saturating_sub(lookback)
        }
    };
    if start > end {
        return Err(ApiError::BadRequest(format!(
            "'start' ({}) must not be after 'end' ({})",
            start / 1000,
            end / 1000
        )));
    }
    trace_query(params, &V1_SEARCH, tags(params)?, (start, end), settings).map(Search::Query)
}

/// Below this, a time given to `/api/traces/{id}` is taken as milliseconds (Grafana sends
/// milliseconds there): 10^14 microseconds is in 1973, 10^14 milliseconds in the year 5138.
const MILLIS_BELOW: i64 = 100_000_000_000_000;

/// `start` or `end` of a trace lookup: microseconds, or milliseconds, since the epoch, in
/// nanoseconds.
fn micros_or_millis(params: &Params, param: &'static str) -> Result<Option<i64>, ApiError> {
    params
        .get(param)
        .map(|value| {
            let number = parse_integer(
                param,
                value,
                "microseconds (or milliseconds) since the epoch",
            )?;
            let scale = if number.abs() < MILLIS_BELOW {
                1_000_000
            } else {
                1000
            };
            number
                .checked_mul(scale)
                .ok_or_else(|| bad(param, format!("{value} is out of range")))
        })
        .transpose()
}

/// The window in which to look for a trace's spans, from `start` and `end` (hints: the spans are
/// looked for around them, and everywhere if they are not found there).
pub fn trace_lookup_window(params: &Params) -> Result<Option<(i64, i64)>, ApiError> {
    let start = micros_or_millis(params, "start")?;
    let end = micros_or_millis(params, "end")?;
    Ok(lookup_window(start, end))
}

/// The window in which to look for a trace's spans first, around the start and end given, if any.
pub fn lookup_window(start: Option<i64>, end: Option<i64>) -> Option<(i64, i64)> {
    if start.is_none() && end.is_none() {
        return None;
    }
    Some(trace_window(
        start.unwrap_or(i64::MIN),
        end.unwrap_or(i64::MAX),
    ))
}

/// A trace id given in the path, where it goes by the name `param`.
pub fn trace_id(param: &'static str, text: &str) -> Result<TraceId, ApiError> {
    TraceId::parse(text).map_err(|e| bad(param, e.to_string()))
}

/// A service name given in the path. Jaeger unescapes it once more, because a client may escape it
/// twice (`my%2520svc`); a name with no `%` escape left is taken as it is.
pub fn service_in_path(service: String) -> String {
    if !service.contains('%') {
        return service;
    }
    match percent_encoding::percent_decode_str(&service).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => service,
    }
}

/// `/api/operations`: the service (required) and the span kind, given under one of `kind_names`
/// (any kind when absent).
pub fn operations(
    params: &Params,
    kind_names: &[&'static str],
) -> Result<(String, Option<SpanKind>), ApiError> {
    let service = params
        .get("service")
        .ok_or_else(|| ApiError::BadRequest("parameter 'service' is required".to_owned()))?;
    let kind = params
        .first_of(kind_names)
        .map(|(param, kind)| {
            SpanKind::from_jaeger(kind).ok_or_else(|| {
                bad(
                    param,
                    format!("{kind:?} is not one of server, client, producer, consumer, internal"),
                )
            })
        })
        .transpose()?;
    Ok((service.to_owned(), kind))
}

const DAY_MS: i64 = 86_400_000;

/// `/api/dependencies`: the window [endTs − lookback, endTs], both in milliseconds (end: now, lookback:
/// a day, by default), in nanoseconds, and the service the links must touch, if one is given.
pub fn dependencies(
    params: &Params,
    now_unix_nano: i64,
) -> Result<(i64, i64, Option<String>), ApiError> {
    let millis = |param: &'static str, unit: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(param)
            .map(|value| {
                parse_integer(param, value, unit)?
                    .checked_mul(1_000_000)
                    .ok_or_else(|| bad(param, format!("{value} is out of range")))
            })
            .transpose()
    };
    let end = millis("endTs", "milliseconds since the epoch")?.unwrap_or(now_unix_nano);
    let lookback = millis("lookback", "milliseconds")?.unwrap_or(DAY_MS * 1_000_000);
    if lookback < 0 {
        return Err(bad(
            "lookback",
            format!("{} is negative", lookback / 1_000_000),
        ));
    }
    Ok((
        end.saturating_sub(lookback),
        end,
        params.get("service").map(str::to_owned),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusCode;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/x?{query}").parse().expect("uri")).expect("query")
    }

    fn settings() -> SearchSettings {
        SearchSettings::default()
    }

    fn query(text: &str) -> TraceQuery {
        match search(&params(text), NOW, &settings()).expect("valid") {
            Search::Query(query) => query,
            other => panic!("expected a query, got {other:?}"),
        }
    }

    fn search_error(text: &str) -> String {
        search(&params(text), NOW, &settings())
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn a_search_without_parameters_looks_back_the_default() {
        assert_eq!(
            query(""),
            TraceQuery {
                service: None,
                operation: None,
                tags: vec![],
                start_min_unix_nano: NOW - 48 * 3600 * 1_000_000_000,
                start_max_unix_nano: NOW,
                duration_min_ns: None,
                duration_max_ns: None,
                limit: 100,
            }
        );
    }

    #[test]
    fn every_search_parameter_is_read() {
        let query = query(
            "service=front%20end&operation=GET+%2F&start=1000&end=2000&minDuration=1.5ms&maxDuration=2s\
             &limit=20&tag=http.method:GET&tag=url:http://x:1&tags=%7B%22error%22%3A%22true%22%7D\
             &lookback=1h&prettyPrint=true&raw=true",
        );
        assert_eq!(query.service.as_deref(), Some("front end"));
        assert_eq!(query.operation.as_deref(), Some("GET /"));
        assert_eq!(query.start_min_unix_nano, 1_000_000);
        assert_eq!(query.start_max_unix_nano, 2_000_000);
        assert_eq!(query.duration_min_ns, Some(1_500_000));
        assert_eq!(query.duration_max_ns, Some(2_000_000_000));
        assert_eq!(query.limit, 20);
        assert_eq!(
            query.tags,
            vec![
                TagFilter::Error(true),
                TagFilter::Attribute {
                    key: "http.method".into(),
                    value: "GET".into()
                },
                TagFilter::Attribute {
                    key: "url".into(),
                    value: "http://x:1".into()
                },
            ]
        );
    }

    #[test]
    fn tags_json_wins_over_tag_and_derived_tags_become_columns() {
        let query = query(
            "tag=span.kind:client&tag=k:1&tags=%7B%22k%22%3A%222%22%2C%22otel.status_code%22%3A%22ERROR%22%7D",
        );
        assert_eq!(
            query.tags,
            vec![
                TagFilter::Attribute {
                    key: "k".into(),
                    value: "2".into()
                },
                TagFilter::Status(StatusCode::Error),
                TagFilter::Kind(SpanKind::Client),
            ]
        );
    }

    #[test]
    fn empty_values_are_absent_and_the_limit_is_bounded() {
        let query = query("service=&operation=&limit=&start=&end=&minDuration=");
        assert_eq!(query.service, None);
        assert_eq!(query.operation, None);
        assert_eq!(query.limit, 100);
        assert_eq!(query.start_max_unix_nano, NOW);
        assert_eq!(self::query("limit=0").limit, 100);
        assert_eq!(self::query("limit=5000").limit, 1000);
    }

    #[test]
    fn lookback_applies_only_without_start() {
        assert_eq!(
            query("lookback=2d&end=1000000000").start_min_unix_nano,
            1_000_000_000_000 - 2 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            query("lookback=1h").start_min_unix_nano,
            NOW - 3600 * 1_000_000_000
        );
        assert_eq!(query("lookback=1h&start=5").start_min_unix_nano, 5000);
        assert_eq!(
            query("lookback=custom").start_min_unix_nano,
            NOW - 48 * 3600 * 1_000_000_000
        );
    }

    #[test]
    fn trace_ids_skip_the_search() {
        assert_eq!(
            search(
                &params("traceID=1&traceID=00ff&service=x"),
                NOW,
                &settings()
            )
            .expect("valid"),
            Search::Ids(vec![
                TraceId::parse("1").expect("id"),
                TraceId::parse("ff").expect("id")
            ])
        );
    }

    #[test]
    fn bad_search_values_name_the_parameter() {
        for (query, expected) in [
            ("start=yesterday", "unable to parse param 'start': \"yesterday\" is not an integer number of microseconds since the epoch"),
            ("end=1.5", "unable to parse param 'end': \"1.5\" is not an integer number of microseconds since the epoch"),
            ("end=9223372036854775807", "unable to parse param 'end': 9223372036854775807 is out of range"),
            ("minDuration=fast", "unable to parse param 'minDuration': invalid duration \"fast\""),
            ("maxDuration=10", "unable to parse param 'maxDuration': invalid duration \"10\""),
            ("limit=-1", "unable to parse param 'limit': \"-1\" is not a number of traces"),
            ("limit=ten", "unable to parse param 'limit': \"ten\" is not a number of traces"),
            ("tag=novalue", "unable to parse param 'tag': expecting key:value, got \"novalue\""),
            ("tags=%7B%22a%22%3A1%7D", "unable to parse param 'tags': \"{\\\"a\\\":1}\" is not a JSON object of string values"),
            ("tags=nope", "unable to parse param 'tags': \"nope\" is not a JSON object of string values"),
            ("lookback=soon", "unable to parse param 'lookback': \"soon\" is not a duration such as \"1h\" or \"2d\", nor \"custom\""),
            ("traceID=xyz", "unable to parse param 'traceID': \"xyz\" is not a 32-digit hex id"),
            ("start=3000&end=2000", "'start' (3000) must not be after 'end' (2000)"),
            ("minDuration=2s&maxDuration=1s", "'maxDuration' must not be shorter than 'minDuration'"),
        ] {
            let message = search_error(query);
            assert!(message.starts_with(expected), "{query}: {message}");
        }
    }

    #[test]
    fn trace_lookup_times_are_microseconds_or_milliseconds() {
        let window = |query: &str| trace_lookup_window(&params(query)).expect("valid");
        assert_eq!(window(""), None);
        // Microseconds, as the Jaeger UI and Grafana's frontend send them.
        assert_eq!(
            window("start=1700000000000000&end=1700000001000000"),
            Some(trace_window(
                1_700_000_000_000_000_000,
                1_700_000_001_000_000_000
            ))
        );
        // Milliseconds, as Grafana's backend sends them.
        assert_eq!(
            window("start=1700000000000&end=1700000001000"),
            Some(trace_window(
                1_700_000_000_000_000_000,
                1_700_000_001_000_000_000
            ))
        );
        assert_eq!(
            window("start=1700000000000"),
            Some((1_700_000_000_000_000_000 - TRACE_MARGIN_NS, i64::MAX))
        );
        let error = trace_lookup_window(&params("end=later"))
            .expect_err("bad")
            .to_string();
        assert_eq!(
            error,
            "unable to parse param 'end': \"later\" is not an integer number of microseconds (or milliseconds) since the epoch"
        );
        assert_eq!(
            trace_id("traceID", "0af7651916cd43dd8448eb211c80319c00")
                .expect_err("too long")
                .to_string(),
            "unable to parse param 'traceID': \"0af7651916cd43dd8448eb211c80319c00\" is not a 32-digit hex id"
        );
    }

    #[test]
    fn service_names_in_paths_are_unescaped_once_more() {
        assert_eq!(service_in_path("my svc".into()), "my svc");
        assert_eq!(service_in_path("my%20svc".into()), "my svc");
        assert_eq!(service_in_path("a+b".into()), "a+b");
        assert_eq!(service_in_path("100%".into()), "100%");
    }

    #[test]
    fn operations_need_a_service_and_a_known_kind() {
        assert_eq!(
            operations(&params("service=a&spanKind=server"), &["spanKind"]).expect("valid"),
            ("a".to_owned(), Some(SpanKind::Server))
        );
        assert_eq!(
            operations(&params("service=a&spanKind="), &["spanKind"]).expect("valid"),
            ("a".to_owned(), None)
        );
        assert_eq!(
            operations(&params("spanKind=server"), &["spanKind"])
                .expect_err("no service")
                .to_string(),
            "parameter 'service' is required"
        );
        assert_eq!(
            operations(&params("service=a&spanKind=sideways"), &["spanKind"])
                .expect_err("bad kind")
                .to_string(),
            "unable to parse param 'spanKind': \"sideways\" is not one of server, client, producer, consumer, internal"
        );
    }

    #[test]
    fn dependencies_take_milliseconds() {
        assert_eq!(
            dependencies(&params(""), NOW).expect("valid"),
            (NOW - 86_400 * 1_000_000_000, NOW, None)
        );
        assert_eq!(
            dependencies(
                &params("endTs=1700000000000&lookback=3600000&service=a"),
                NOW
            )
            .expect("valid"),
            (
                1_700_000_000_000_000_000 - 3600 * 1_000_000_000,
                1_700_000_000_000_000_000,
                Some("a".to_owned())
            )
        );
        for (query, expected) in [
            ("endTs=now", "unable to parse param 'endTs': \"now\" is not an integer number of milliseconds since the epoch"),
            ("lookback=1h", "unable to parse param 'lookback': \"1h\" is not an integer number of milliseconds"),
            ("lookback=-5", "unable to parse param 'lookback': -5 is negative"),
            ("endTs=9223372036854775807", "unable to parse param 'endTs': 9223372036854775807 is out of range"),
        ] {
            assert_eq!(
                dependencies(&params(query), NOW).expect_err("bad").to_string(),
                expected,
                "{query}"
            );
        }
    }
}
