-- Realistic spans for the schema layout benchmark (bench/schema_layouts.sh): 8 resource attributes,
-- 10 span attributes, 8 spans per trace, 10 % of spans with an exception event, 2 % errors.
-- :rows is set by the caller.
DROP TABLE IF EXISTS stage;
CREATE TABLE stage AS
SELECT
  decode(md5((i / 8)::text), 'hex') AS trace_id,
  decode(substr(md5(i::text || 's'), 1, 16), 'hex') AS span_id,
  CASE WHEN i % 8 = 0 THEN NULL ELSE decode(substr(md5((i - 1)::text || 's'), 1, 16), 'hex') END AS parent_span_id,
  ''::text AS trace_state, 256 AS flags,
  'GET /api/v1/orders/{id}/items' || (i % 20)::text AS name, (i % 5)::smallint AS kind,
  to_timestamp(1700000000 + i / 1000.0) AS start_time,
  (1700000000000000000 + i::bigint * 1000000 + 123)::bigint AS start_time_unix_nano,
  (1000000 + (i % 997) * 1000)::bigint AS duration_ns,
  (CASE WHEN i % 50 = 0 THEN 2 ELSE 0 END)::smallint AS status_code, ''::text AS status_message,
  'svc-' || (i % 10) AS service_name,
  jsonb_build_object('service.name', 'svc-' || (i % 10), 'service.version', '1.4.' || (i % 3), 'host.name', 'host-' || (i % 50),
     'os.type', 'linux', 'process.pid', 1000 + i % 50, 'telemetry.sdk.name', 'opentelemetry', 'telemetry.sdk.language', 'python',
     'deployment.environment', 'production') AS resource_attributes,
  ''::text AS resource_schema_url, 'opentelemetry.instrumentation.flask'::text AS scope_name, '0.45b0'::text AS scope_version,
  '{}'::jsonb AS scope_attributes, ''::text AS scope_schema_url,
  jsonb_build_object('http.method', 'GET', 'http.route', '/api/v1/orders/{id}', 'http.status_code', 200 + (i % 3),
     'net.peer.name', 'orders.internal', 'net.peer.port', 8080, 'db.system', 'postgresql',
     'db.statement', 'SELECT id, customer_id, total FROM orders WHERE id = $1 AND tenant = $2 LIMIT ' || (i % 100),
     'user.id', i % 100000, 'http.user_agent', 'Mozilla/5.0 (X11; Linux x86_64) otelstore-bench', 'retry', false) AS span_attributes,
  CASE WHEN i % 10 = 0 THEN jsonb_build_array(jsonb_build_object('time_unix_nano', 1700000000000000000 + i::bigint * 1000000 + 500,
     'name', 'exception', 'attributes', jsonb_build_object('exception.type', 'ValueError', 'exception.message', 'bad input ' || i), 'dropped_attributes_count', 0))
     ELSE '[]'::jsonb END AS events,
  '[]'::jsonb AS links, 0 AS dropped_attributes_count, 0 AS dropped_events_count, 0 AS dropped_links_count
FROM generate_series(1, :rows) AS i;
