-- One row per call through the coding-agent proxy (collector/proxy). Token counts are as the
-- provider reported them (NULL when it reported none, e.g. count_tokens or an error);
-- input_tokens follows each provider's meaning (OpenAI and Gemini count cached input in it,
-- Anthropic does not).
CREATE TABLE <catalog>.<schema>.<table_prefix>_usage (
  request_id STRING,
  request_time_unix_nano LONG,
  token_name STRING,
  agent STRING,
  user_agent STRING,
  route STRING,
  operation STRING,
  endpoint STRING,
  upstream_model STRING,
  status_code INT,
  input_tokens LONG,
  output_tokens LONG,
  cache_read_input_tokens LONG,
  cache_creation_input_tokens LONG,
  reasoning_tokens LONG,
  latency_ms DOUBLE,
  time_to_first_token_ms DOUBLE,
  streamed BOOLEAN,
  -- The call's estimated cost in USD: its tokens priced by the model priced_model names
  -- (genai-prices' data, the endpoint's price_model, or its price in proxy.toml), uncached
  -- input, output, cache reads and cache writes apart; all NULL when no price is known for
  -- the model or the provider reported no usage. Added after the first version: a usage table
  -- written before gains these columns in place, its rows reading them as NULL.
  priced_model STRING,
  input_cost_usd DOUBLE,
  output_cost_usd DOUBLE,
  cache_read_cost_usd DOUBLE,
  cache_write_cost_usd DOUBLE,
  estimated_cost_usd DOUBLE,
  -- The upstream that served the call (proxy.toml's name) and how many were tried: an
  -- endpoint with several targets tries the next when one refuses connections or answers
  -- 429 / 5xx before any byte reached the caller. Added after the first version.
  upstream STRING,
  attempts INT
) USING DELTA
TBLPROPERTIES (
  'otel.schemaVersion' = 'v1'
)
