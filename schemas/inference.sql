-- Payloads of calls through the coding-agent proxy, joined to the usage table by request_id.
-- request_body is the body the agent sent; response_body is the body the provider answered, a
-- streamed answer as the raw server-sent-event text. Both are cut at the proxy's
-- max_payload_bytes (whole UTF-8 characters), with *_truncated saying so.
CREATE TABLE <catalog>.<schema>.<table_prefix>_inference (
  request_id STRING,
  request_time_unix_nano LONG,
  token_name STRING,
  route STRING,
  operation STRING,
  endpoint STRING,
  upstream_model STRING,
  status_code INT,
  request_body STRING,
  response_body STRING,
  request_truncated BOOLEAN,
  response_truncated BOOLEAN,
  -- Credentials found in the bodies and replaced by [REDACTED:kind] before they were stored
  -- (collector/proxy/redact.py), and their kinds. Added after the first version: an older
  -- table gains these columns in place.
  redactions INT,
  redacted_kinds ARRAY<STRING>
) USING DELTA
TBLPROPERTIES (
  'otel.schemaVersion' = 'v1'
)
