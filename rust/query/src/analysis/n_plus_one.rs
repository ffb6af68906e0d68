//! N+1 queries: a span that makes the same database call again and again, once per item of a list it
//! loaded, where one query for the whole list would do (an ORM's lazy loading).
//!
//! What is found:
//! - a database span is one with `db.system.name` (or the older `db.system`) set;
//! - its statement is `db.query.text` (or the older `db.statement`) with the values taken out
//!   ([`super::statement::normalize`]); without either, `db.query.summary`; without that, the span's
//!   name (which the conventions make the summary: an ORM that records no text, such as one naming
//!   its spans `db.relationship.select`, is still seen);
//! - the database children of each span are taken in the order they started; a run is a sequence of
//!   them with one statement, which another statement ends (spans that are not database calls, in
//!   between, do not);
//! - a run is a finding when it has at least [`Thresholds::min_repeats`] calls whose durations add up
//!   to at least [`Thresholds::min_total_ns`];
//! - findings are merged by service (that of the database spans), parent operation (the parent
//!   span's name) and statement, the worst first: the most time, then the most calls.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Span, SpanId, Trace, TraceId, Value};

use super::statement::{normalize, Dialect};

/// At most this many trace ids are listed with a finding.
pub const MAX_TRACES_PER_FINDING: usize = 20;

/// When a run of repeated calls is a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Calls in a row, at least.
    pub min_repeats: usize,
    /// Their durations added up, at least, in nanoseconds.
    pub min_total_ns: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_repeats: 5,
            min_total_ns: 50_000_000,
        }
    }
}

/// Calls in a row with one statement, under one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub trace_id: TraceId,
    pub parent_span_id: SpanId,
    /// The parent span's name; `None` when the parent is not stored.
    pub parent_operation: Option<String>,
    /// The service of the database spans (of the first, should they differ).
    pub service: String,
    pub statement: String,
    pub count: usize,
    /// The calls' durations added up, in nanoseconds.
    pub total_ns: i64,
}

/// Runs with one service, parent operation and statement, from any number of traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub service: String,
    pub parent_operation: Option<String>,
    pub statement: String,
    /// The calls of every run, added up.
    pub count: usize,
    /// The durations of every run's calls, added up, in nanoseconds.
    pub total_ns: i64,
    /// How many runs (parent spans) there were.
    pub occurrences: usize,
    /// The traces they are in, at most [`MAX_TRACES_PER_FINDING`], in the order given.
    pub traces: Vec<TraceId>,
    /// The run with the most time (the first given, of equals).
    pub example: Run,
}

/// The value of a string attribute, unless empty.
fn text_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find_map(|attribute| match &attribute.value {
            Value::Str(text) if attribute.key == key && !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
}

/// The statement of a database span, normalized; `None` for a span that is not a database call.
pub fn statement(span: &Span) -> Option<String> {
    let system =
        text_attribute(span, "db.system.name").or_else(|| text_attribute(span, "db.system"))?;
    let text =
        text_attribute(span, "db.query.text").or_else(|| text_attribute(span, "db.statement"));
    Some(match text {
        Some(text) => normalize(text, Dialect::of(system)),
        None => text_attribute(span, "db.query.summary")
            .unwrap_or(&span.name)
            .to_owned(),
    })
}

/// The runs of a trace that meet the thresholds, by parent span id, then start.
pub fn runs(trace: &Trace, thresholds: &Thresholds) -> Vec<Run> {
    let names: HashMap<SpanId, &str> = trace
        .spans
        .iter()
        .map(|span| (span.span_id, span.name.as_str()))
        .collect();
    let mut calls: BTreeMap<SpanId, Vec<(&Span, String)>> = BTreeMap::new();
    for span in &trace.spans {
        if let (Some(parent), Some(statement)) = (span.parent_span_id, statement(span)) {
            calls.entry(parent).or_default().push((span, statement));
        }
    }
    let mut found = Vec::new();
    for (parent, mut children) in calls {
        children.sort_by_key(|(span, _)| (span.start_unix_nano, span.span_id));
        // A span stored twice is one call.
        children.dedup_by_key(|(span, _)| span.span_id);
        for run in children.chunk_by(|(_, a), (_, b)| a == b) {
            let total_ns = run
                .iter()
                .fold(0i64, |sum, (span, _)| sum.saturating_add(span.duration_ns));
            if run.len() >= thresholds.min_repeats && total_ns >= thresholds.min_total_ns {
                let (first, statement) = &run[0];
                found.push(Run {
                    trace_id: trace.trace_id,
                    parent_span_id: parent,
                    parent_operation: names.get(&parent).map(|name| (*name).to_owned()),
                    service: first.service_name.clone(),
                    statement: statement.clone(),
                    count: run.len(),
                    total_ns,
                });
            }
        }
    }
    found
}

/// The findings of these traces, the worst first.
pub fn find(traces: &[Trace], thresholds: &Thresholds) -> Vec<Finding> {
    type Key = (String, Option<String>, String);
    let mut findings: HashMap<Key, Finding> = HashMap::new();
    for run in traces.iter().flat_map(|trace| runs(trace, thresholds)) {
        let key = (
            run.service.clone(),
            run.parent_operation.clone(),
            run.statement.clone(),
        );
        match findings.get_mut(&key) {
            Some(finding) => {
                finding.count += run.count;
                finding.total_ns = finding.total_ns.saturating_add(run.total_ns);
                finding.occurrences += 1;
                if !finding.traces.contains(&run.trace_id)
                    && finding.traces.len() < MAX_TRACES_PER_FINDING
                {
                    finding.traces.push(run.trace_id);
                }
                if run.total_ns > finding.example.total_ns {
                    finding.example = run;
                }
            }
            None => {
                let finding = Finding {
                    service: key.0.clone(),
                    parent_operation: key.1.clone(),
                    statement: key.2.clone(),
                    count: run.count,
                    total_ns: run.total_ns,
                    occurrences: 1,
                    traces: vec![run.trace_id],
                    example: run,
                };
                findings.insert(key, finding);
            }
        }
    }
    let mut findings: Vec<Finding> = findings.into_values().collect();
    findings.sort_by(|a, b| {
        (b.total_ns, b.count)
            .cmp(&(a.total_ns, a.count))
            .then_with(|| {
                (&a.service, &a.parent_operation, &a.statement).cmp(&(
                    &b.service,
                    &b.parent_operation,
                    &b.statement,
                ))
            })
    });
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attribute, SpanKind, StatusCode};

    const MS: i64 = 1_000_000;
    const T0: i64 = 1_700_000_000_000_000_000;

    fn attribute(key: &str, value: &str) -> Attribute {
        Attribute {
            key: key.into(),
            value: Value::Str(value.into()),
        }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_ms: i64) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|parent| SpanId([parent; 8])),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: SpanKind::Internal,
            start_unix_nano: T0 + start_ms * MS,
            duration_ns: MS,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: "library".into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
            attributes: vec![],
            events: vec![],
            links: vec![],
        }
    }

    /// A database call of `parent` that starts at `start_ms` and takes `duration_ms`.
    fn query(trace: u8, id: u8, parent: u8, text: &str, start_ms: i64, duration_ms: i64) -> Span {
        Span {
            kind: SpanKind::Client,
            duration_ns: duration_ms * MS,
            attributes: vec![
                attribute("db.system.name", "sqlite"),
                attribute("db.query.text", text),
                attribute("db.operation.name", "SELECT"),
            ],
            ..span(trace, id, Some(parent), "SELECT", start_ms)
        }
    }

    fn books_of(author: u8) -> String {
        format!("SELECT id, title FROM books WHERE author_id = {author}")
    }

    const BOOKS: &str = "SELECT id, title FROM books WHERE author_id = ?";

    /// `GET /authors-lazy`: the authors, then the books of each of `authors`, 12 ms apiece.
    fn lazy(trace: u8, authors: u8) -> Trace {
        let mut spans = vec![
            span(trace, 1, None, "GET /authors-lazy", 0),
            query(trace, 2, 1, "SELECT id, name FROM authors", 1, 3),
        ];
        for author in 1..=authors {
            let start = 5 + i64::from(author) * 13;
            spans.push(query(trace, 10 + author, 1, &books_of(author), start, 12));
        }
        Trace {
            trace_id: TraceId([trace; 16]),
            spans,
        }
    }

    fn thresholds() -> Thresholds {
        Thresholds::default()
    }

    #[test]
    fn the_lazy_pattern_is_found() {
        let trace = lazy(1, 8);
        assert_eq!(
            runs(&trace, &thresholds()),
            vec![Run {
                trace_id: TraceId([1; 16]),
                parent_span_id: SpanId([1; 8]),
                parent_operation: Some("GET /authors-lazy".into()),
                service: "library".into(),
                statement: BOOKS.into(),
                count: 8,
                total_ns: 96 * MS,
            }]
        );
    }

    #[test]
    fn the_eager_pattern_is_not() {
        let trace = Trace {
            trace_id: TraceId([2; 16]),
            spans: vec![
                span(2, 1, None, "GET /authors-eager", 0),
                query(2, 2, 1, "SELECT id, name FROM authors", 1, 3),
                query(
                    2,
                    3,
                    1,
                    "SELECT id, title, author_id FROM books WHERE author_id IN (1, 2, 3, 4, 5, 6, 7, 8)",
                    5,
                    40,
                ),
            ],
        };
        assert_eq!(runs(&trace, &thresholds()), vec![]);
        assert_eq!(find(&[trace], &thresholds()), vec![]);
    }

    #[test]
    fn another_statement_breaks_a_run_and_other_spans_do_not() {
        let mut trace = lazy(1, 8);
        // After the fourth author, a query for something else: 4 and 4 calls, neither a finding.
        trace.spans.push(query(
            1,
            50,
            1,
            "SELECT count(*) FROM reviews",
            5 + 4 * 13 + 1,
            1,
        ));
        assert_eq!(runs(&trace, &thresholds()), vec![]);
        let at_least_four = Thresholds {
            min_repeats: 4,
            min_total_ns: 0,
        };
        let found = runs(&trace, &at_least_four);
        assert_eq!(
            found.iter().map(|run| run.count).collect::<Vec<_>>(),
            vec![4, 4]
        );
        // A span that is not a database call, in between, does not end the run.
        let mut trace = lazy(1, 8);
        trace.spans.push(Span {
            attributes: vec![attribute("db.query.text", "not a database span")],
            ..span(1, 51, Some(1), "render", 5 + 4 * 13 + 1)
        });
        assert_eq!(runs(&trace, &thresholds())[0].count, 8);
    }

    #[test]
    fn runs_below_either_threshold_are_not_found() {
        // Four calls of 12 ms: too few.
        assert_eq!(runs(&lazy(1, 4), &thresholds()), vec![]);
        // Ten calls of 4 ms: 40 ms, too short.
        let mut trace = lazy(1, 10);
        for span in &mut trace.spans {
            span.duration_ns = 4 * MS;
        }
        assert_eq!(runs(&trace, &thresholds()), vec![]);
        // Both are configurable.
        let lower = Thresholds {
            min_repeats: 10,
            min_total_ns: 40 * MS,
        };
        assert_eq!(runs(&trace, &lower)[0].total_ns, 40 * MS);
        assert_eq!(
            runs(
                &lazy(1, 4),
                &Thresholds {
                    min_repeats: 4,
                    ..lower
                }
            )[0]
            .count,
            4
        );
    }

    #[test]
    fn calls_under_different_parents_are_not_one_run() {
        // Each author loaded in a span of its own, three calls under each: no parent has five.
        let mut spans = vec![span(3, 1, None, "GET /authors", 0)];
        for author in 0..4u8 {
            let parent = 10 + author;
            let start = i64::from(author) * 100;
            spans.push(span(3, parent, Some(1), "load author", start));
            for n in 0..3u8 {
                spans.push(query(
                    3,
                    100 + author * 3 + n,
                    parent,
                    &books_of(n),
                    start + 1 + i64::from(n) * 20,
                    20,
                ));
            }
        }
        let trace = Trace {
            trace_id: TraceId([3; 16]),
            spans,
        };
        assert_eq!(runs(&trace, &thresholds()), vec![]);
        let threes = Thresholds {
            min_repeats: 3,
            min_total_ns: 0,
        };
        let found = runs(&trace, &threes);
        assert_eq!(found.len(), 4);
        assert!(found
            .iter()
            .all(|run| run.parent_operation.as_deref() == Some("load author") && run.count == 3));
    }

    #[test]
    fn calls_are_taken_in_the_order_they_started() {
        let mut trace = lazy(1, 8);
        trace.spans.reverse();
        // Stored twice: counted once.
        trace.spans.push(trace.spans[0].clone());
        assert_eq!(runs(&trace, &thresholds())[0].count, 8);
        // Started between the third and the fourth call: two runs of 3 and 5.
        trace
            .spans
            .push(query(1, 60, 1, "SELECT 1", 5 + 3 * 13 + 1, 1));
        let found = runs(
            &trace,
            &Thresholds {
                min_repeats: 3,
                min_total_ns: 0,
            },
        );
        assert_eq!(
            found.iter().map(|run| run.count).collect::<Vec<_>>(),
            vec![3, 5]
        );
    }

    #[test]
    fn the_statement_comes_from_the_text_then_the_summary_then_the_name() {
        let db = |attributes: &[(&str, &str)]| Span {
            attributes: attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
            ..span(1, 2, Some(1), "db.relationship.select", 0)
        };
        assert_eq!(
            statement(&db(&[("db.query.text", "SELECT 1")])),
            None,
            "no db.system"
        );
        assert_eq!(
            statement(&db(&[
                ("db.system", "postgresql"),
                ("db.statement", "SELECT 1")
            ]))
            .as_deref(),
            Some("SELECT ?")
        );
        assert_eq!(
            statement(&db(&[
                ("db.system.name", "mysql"),
                ("db.query.summary", "SELECT users"),
                ("db.query.text", "SELECT * FROM users WHERE name = \"bob\""),
            ]))
            .as_deref(),
            Some("SELECT * FROM users WHERE name = ?")
        );
        assert_eq!(
            statement(&db(&[
                ("db.system.name", "postgresql"),
                ("db.query.summary", "SELECT users")
            ]))
            .as_deref(),
            Some("SELECT users")
        );
        // The seeds' ORM: relationship spans with no text.
        assert_eq!(
            statement(&db(&[
                ("db.system", "postgresql"),
                ("db.relationship.strategy", "select")
            ]))
            .as_deref(),
            Some("db.relationship.select")
        );
        assert_eq!(
            statement(&db(&[("db.system.name", "")])),
            None,
            "empty is not set"
        );
    }

    #[test]
    fn findings_merge_runs_by_service_parent_and_statement_the_worst_first() {
        let mut slow = lazy(4, 6);
        for span in &mut slow.spans {
            span.duration_ns = 30 * MS;
        }
        let mut other_service = lazy(5, 5);
        for span in &mut other_service.spans {
            span.service_name = "shelf".into();
        }
        let orphan = Trace {
            trace_id: TraceId([6; 16]),
            spans: lazy(6, 5).spans.into_iter().skip(1).collect(),
        };
        let traces = vec![
            lazy(1, 8),
            lazy(2, 9),
            slow,
            other_service,
            orphan,
            lazy(7, 3),
        ];
        let found = find(&traces, &thresholds());
        let summary: Vec<_> = found
            .iter()
            .map(|f| {
                (
                    f.service.as_str(),
                    f.parent_operation.as_deref(),
                    f.count,
                    f.occurrences,
                    f.total_ns / MS,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "library",
                    Some("GET /authors-lazy"),
                    8 + 9 + 6,
                    3,
                    96 + 108 + 180
                ),
                ("library", None, 5, 1, 60),
                ("shelf", Some("GET /authors-lazy"), 5, 1, 60),
            ]
        );
        let worst = &found[0];
        assert_eq!(worst.statement, BOOKS);
        assert_eq!(
            worst.traces,
            vec![TraceId([1; 16]), TraceId([2; 16]), TraceId([4; 16])]
        );
        assert_eq!(worst.example.trace_id, TraceId([4; 16]));
        assert_eq!(worst.example.count, 6);
        assert_eq!(worst.example.total_ns, 180 * MS);
        assert_eq!(found[1].example.parent_span_id, SpanId([1; 8]));
    }

    #[test]
    fn a_finding_lists_a_bounded_number_of_traces() {
        let traces: Vec<Trace> = (1..=30).map(|n| lazy(n, 5)).collect();
        let found = find(&traces, &thresholds());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].occurrences, 30);
        assert_eq!(found[0].count, 150);
        assert_eq!(found[0].traces.len(), MAX_TRACES_PER_FINDING);
        assert_eq!(found[0].traces[0], TraceId([1; 16]));
    }
}
