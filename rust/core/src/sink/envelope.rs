//! The envelope every OTLP export request shares: resource groups (a resource, scope groups, a
//! schema URL), each holding scope groups (a scope, the items, a schema URL). The encoders of both
//! sinks walk it here and handle only their items: spans, log records or metrics.

use super::postgres::spans::service_name;
use super::postgres::CopyRows;
use crate::json;
use crate::wire::{Fields, WireError};

/// What the items of one resource and scope share. Strings borrow from the request (`'a`), the
/// jsonb text of the resource and scope attributes from the walk (`'b`): it is built once per
/// group and copied into each item's row (PostgreSQL), or left empty ([`for_each_item_raw`]).
pub struct Group<'a, 'b> {
    /// The `Resource` and `InstrumentationScope` messages as sent (empty when absent).
    pub resource: &'a [u8],
    pub scope: &'a [u8],
    /// `service.name` as the PostgreSQL tables take it: the last string value.
    pub service_name: &'a str,
    pub resource_json: &'b [u8],
    pub resource_schema_url: &'a str,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub scope_json: &'b [u8],
    pub scope_schema_url: &'a str,
}

impl Group<'_, '_> {
    /// The columns every table has, in their order there: service_name, resource_attributes,
    /// resource_schema_url, scope_name, scope_version, scope_attributes, scope_schema_url.
    pub fn write_columns(&self, rows: &mut CopyRows) {
        rows.text(self.service_name);
        rows.jsonb_text(self.resource_json);
        rows.text(self.resource_schema_url);
        rows.text(self.scope_name);
        rows.text(self.scope_version);
        rows.jsonb_text(self.scope_json);
        rows.text(self.scope_schema_url);
    }
}

/// The names of one signal's envelope messages, for error messages.
pub struct Paths {
    request: &'static str,
    resource_groups: &'static str,
    resource_group: &'static str,
    resource: &'static str,
    resource_schema_url: &'static str,
    scope_groups: &'static str,
    scope_group: &'static str,
    scope: &'static str,
    scope_schema_url: &'static str,
    items: &'static str,
}

pub const TRACES: Paths = Paths {
    request: "ExportTraceServiceRequest",
    resource_groups: "ExportTraceServiceRequest.resource_spans",
    resource_group: "ResourceSpans",
    resource: "ResourceSpans.resource",
    resource_schema_url: "ResourceSpans.schema_url",
    scope_groups: "ResourceSpans.scope_spans",
    scope_group: "ScopeSpans",
    scope: "ScopeSpans.scope",
    scope_schema_url: "ScopeSpans.schema_url",
    items: "ScopeSpans.spans",
};

pub const LOGS: Paths = Paths {
    request: "ExportLogsServiceRequest",
    resource_groups: "ExportLogsServiceRequest.resource_logs",
    resource_group: "ResourceLogs",
    resource: "ResourceLogs.resource",
    resource_schema_url: "ResourceLogs.schema_url",
    scope_groups: "ResourceLogs.scope_logs",
    scope_group: "ScopeLogs",
    scope: "ScopeLogs.scope",
    scope_schema_url: "ScopeLogs.schema_url",
    items: "ScopeLogs.log_records",
};

pub const METRICS: Paths = Paths {
    request: "ExportMetricsServiceRequest",
    resource_groups: "ExportMetricsServiceRequest.resource_metrics",
    resource_group: "ResourceMetrics",
    resource: "ResourceMetrics.resource",
    resource_schema_url: "ResourceMetrics.schema_url",
    scope_groups: "ResourceMetrics.scope_metrics",
    scope_group: "ScopeMetrics",
    scope: "ScopeMetrics.scope",
    scope_schema_url: "ScopeMetrics.schema_url",
    items: "ScopeMetrics.metrics",
};

/// Calls `item` with every item of a serialized export request, in order, and the group it is in.
/// The three signals number their envelope fields alike: a request's resource groups are field 1;
/// a resource group holds its resource (1), scope groups (2) and schema URL (3); a scope group its
/// scope (1), items (2) and schema URL (3).
pub fn for_each_item<'a>(
    otlp: &'a [u8],
    paths: &Paths,
    item: impl FnMut(&Group<'a, '_>, &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    walk(otlp, paths, true, item)
}

/// [`for_each_item`] without the jsonb text of the attributes (`resource_json` and `scope_json`
/// are empty), for encoders that read the raw `resource` and `scope` themselves.
pub fn for_each_item_raw<'a>(
    otlp: &'a [u8],
    paths: &Paths,
    item: impl FnMut(&Group<'a, '_>, &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    walk(otlp, paths, false, item)
}

fn walk<'a>(
    otlp: &'a [u8],
    paths: &Paths,
    with_json: bool,
    mut item: impl FnMut(&Group<'a, '_>, &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let (mut resource_json, mut scope_json) = (Vec::new(), Vec::new());
    for entry in Fields::new(otlp, paths.request) {
        let (1, resource_group) = entry? else {
            continue;
        };
        let resource_group = resource_group.bytes(paths.resource_groups)?;
        let mut resource: &[u8] = &[];
        let mut resource_schema_url = "";
        for entry in Fields::new(resource_group, paths.resource_group) {
            match entry? {
                (1, v) => resource = v.bytes(paths.resource)?,
                (3, v) => resource_schema_url = v.string(paths.resource_schema_url)?,
                _ => {}
            }
        }
        resource_json.clear();
        if with_json {
            json::write_attributes(&mut resource_json, resource, 1, "Resource.attributes")?;
        }
        let service_name = service_name(resource)?;
        for entry in Fields::new(resource_group, paths.resource_group) {
            let (2, scope_group) = entry? else { continue };
            let scope_group = scope_group.bytes(paths.scope_groups)?;
            let mut scope: &[u8] = &[];
            let mut scope_schema_url = "";
            for entry in Fields::new(scope_group, paths.scope_group) {
                match entry? {
                    (1, v) => scope = v.bytes(paths.scope)?,
                    (3, v) => scope_schema_url = v.string(paths.scope_schema_url)?,
                    _ => {}
                }
            }
            let (mut scope_name, mut scope_version) = ("", "");
            for entry in Fields::new(scope, "InstrumentationScope") {
                match entry? {
                    (1, v) => scope_name = v.string("InstrumentationScope.name")?,
                    (2, v) => scope_version = v.string("InstrumentationScope.version")?,
                    _ => {}
                }
            }
            scope_json.clear();
            if with_json {
                json::write_attributes(
                    &mut scope_json,
                    scope,
                    3,
                    "InstrumentationScope.attributes",
                )?;
            }
            let group = Group {
                resource,
                scope,
                service_name,
                resource_json: &resource_json,
                resource_schema_url,
                scope_name,
                scope_version,
                scope_json: &scope_json,
                scope_schema_url,
            };
            for entry in Fields::new(scope_group, paths.scope_group) {
                if let (2, v) = entry? {
                    item(&group, v.bytes(paths.items)?)?;
                }
            }
        }
    }
    Ok(())
}
