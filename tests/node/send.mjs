// Sends a fixed set of logs, metrics and spans to a collector with the real OpenTelemetry JS SDK
// and its OTLP/HTTP JSON exporters (what Gemini CLI does), then prints one JSON object on stdout:
// what was sent on the wire (each request's path, headers and decoded JSON body), what the
// collector answered, and the exporters' result codes. Driven by tests/test_node_json.py.
//
//   node send.mjs --url http://127.0.0.1:4318 --prefix main.tests.t123
//   (or COLLECTOR_URL=... TABLE_PREFIX=... node send.mjs)
//
// The tables are `${prefix}_otel_logs`, `${prefix}_otel_metrics`, `${prefix}_otel_spans`.
// Exit 0 only if every exporter reported SUCCESS for every export and the SDK logged no warning
// or error (a response the exporter cannot parse, or a partial success, is logged as a warning).

import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';

import { diag, DiagLogLevel, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, ValueType } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { ExportResultCode, TraceState } from '@opentelemetry/core';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';
import { AggregationType, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';

// ---------------------------------------------------------------------------------------------
// The fixed data. tests/test_node_json.py holds the same constants: change both together.

const RESOURCE_ATTRIBUTES = {
  'service.name': 'gemini-cli',
  'service.version': '0.61.0',
  'session.id': 'f3b1c2d4-0000-4000-8000-000000000001',
  'host.cpu.count': 8,
};
const RESOURCE_SCHEMA_URL = 'https://opentelemetry.io/schemas/1.37.0';
const SCOPE_NAME = 'gemini-cli';
const SCOPE_VERSION = '0.61.0';
const SCOPE_SCHEMA_URL = 'https://opentelemetry.io/schemas/1.36.0';

// 2026-01-01T00:00:00Z; HrTime [seconds, nanoseconds] keeps full nanosecond precision.
const T0 = 1767225600;
const TRACE_ID = '5b8efff798038103d269b633813fc60c';
const PARENT_SPAN_ID = 'eee19b7ec3c1b174';
const CHILD_SPAN_ID = 'eee19b7ec3c1b173';
const LOG_SPAN_ID = '00f067aa0ba902b7';
const LINK_TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const LINK_SPAN_ID = '53995c3f42cd8ad8';

// ---------------------------------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.COLLECTOR_URL },
    prefix: { type: 'string', default: process.env.TABLE_PREFIX },
  },
});
if (!args.url || !args.prefix) {
  console.error('usage: node send.mjs --url http://HOST:PORT --prefix catalog.schema.prefix');
  process.exit(2);
}
const base = args.url.replace(/\/+$/, '');
// Both path families the collector serves; one signal gzip-compressed, as the exporters allow.
const ENDPOINTS = {
  logs: { url: `${base}/v1/logs`, table: `${args.prefix}_otel_logs` },
  metrics: { url: `${base}/api/2.0/otel/v1/metrics`, table: `${args.prefix}_otel_metrics`, compression: 'gzip' },
  traces: { url: `${base}/v1/traces`, table: `${args.prefix}_otel_spans` },
};

// --- what the SDK says about itself: any warning or error fails the run ----------------------
const diagnostics = [];
const record = (level) => (message, ...rest) => {
  const text = [message, ...rest.map((r) => (r instanceof Error ? r.stack : typeof r === 'string' ? r : JSON.stringify(r)))].join(' ');
  diagnostics.push({ level, message: text });
  console.error(`[otel ${level}] ${text}`);
};
diag.setLogger(
  { error: record('error'), warn: record('warn'), info: () => {}, debug: () => {}, verbose: () => {} },
  DiagLogLevel.WARN,
);

// --- what went over the wire, seen from Node's HTTP client ------------------------------------
// The exporters load `request` from node:http when they first export; wrap it (observing only)
// so that each request body and each answer can be reported. The diagnostics_channel
// 'http.client.request.start' comes too late on Node 20 to see the body.
const wire = [];
const originalRequest = http.request;
http.request = function request(...requestArgs) {
  const req = originalRequest.apply(this, requestArgs);
  const entry = { method: req.method, path: req.path, requestChunks: [], responseChunks: [] };
  wire.push(entry);
  const keep = (chunk, encoding) => {
    if (chunk != null && typeof chunk !== 'function') entry.requestChunks.push(Buffer.from(chunk, typeof encoding === 'string' ? encoding : undefined));
  };
  const { write, end } = req;
  req.write = function (chunk, encoding, ...rest) {
    keep(chunk, encoding);
    return write.call(this, chunk, encoding, ...rest);
  };
  req.end = function (chunk, encoding, ...rest) {
    keep(chunk, encoding);
    entry.requestHeaders = this.getHeaders();
    return end.call(this, chunk, encoding, ...rest);
  };
  req.on('response', (res) => {
    entry.status = res.statusCode;
    entry.responseHeaders = res.headers;
    res.on('data', (chunk) => entry.responseChunks.push(Buffer.from(chunk)));
  });
  return req;
};
syncBuiltinESMExports();

function decodeWire(entry) {
  const raw = Buffer.concat(entry.requestChunks);
  const encoding = entry.requestHeaders?.['content-encoding'];
  let requestBody;
  try {
    requestBody = JSON.parse((encoding === 'gzip' ? zlib.gunzipSync(raw) : raw).toString('utf8'));
  } catch (err) {
    requestBody = { undecodable: String(err), base64: raw.toString('base64') };
  }
  const responseText = Buffer.concat(entry.responseChunks).toString('utf8');
  let responseJson = null;
  try {
    responseJson = JSON.parse(responseText);
  } catch {
    // left null: the test says so
  }
  return {
    method: entry.method,
    path: entry.path,
    request_headers: {
      'content-type': entry.requestHeaders?.['content-type'] ?? null,
      'content-encoding': encoding ?? null,
      'x-databricks-uc-table-name': entry.requestHeaders?.['x-databricks-uc-table-name'] ?? null,
      'user-agent': entry.requestHeaders?.['user-agent'] ?? null,
    },
    request_body: requestBody,
    status: entry.status ?? null,
    response_content_type: entry.responseHeaders?.['content-type'] ?? null,
    response_text: responseText,
    response_json: responseJson,
  };
}

// --- exporters, wrapped so that every export's result code is seen -----------------------------
const results = { logs: [], metrics: [], traces: [] };
function recorded(signal, exporter) {
  return new Proxy(exporter, {
    get(target, prop, receiver) {
      if (prop === 'export') {
        return (items, done) =>
          target.export(items, (result) => {
            results[signal].push({
              code: result.code === ExportResultCode.SUCCESS ? 'SUCCESS' : 'FAILED',
              error: result.error ? String(result.error.stack ?? result.error) : null,
            });
            done(result);
          });
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
const exporterOptions = (signal) => ({
  url: ENDPOINTS[signal].url,
  headers: { 'X-Databricks-UC-Table-Name': ENDPOINTS[signal].table },
  ...(ENDPOINTS[signal].compression ? { compression: ENDPOINTS[signal].compression } : {}),
  timeoutMillis: 10000,
});

const resource = resourceFromAttributes(RESOURCE_ATTRIBUTES, { schemaUrl: RESOURCE_SCHEMA_URL });

// --- logs --------------------------------------------------------------------------------------
async function sendLogs() {
  const provider = new LoggerProvider({
    resource,
    processors: [new BatchLogRecordProcessor({ exporter: recorded('logs', new OTLPLogExporter(exporterOptions('logs'))) })],
  });
  const logger = provider.getLogger(SCOPE_NAME, SCOPE_VERSION, { schemaUrl: SCOPE_SCHEMA_URL });
  const inSpan = trace.setSpanContext(ROOT_CONTEXT, {
    traceId: TRACE_ID,
    spanId: LOG_SPAN_ID,
    traceFlags: TraceFlags.SAMPLED,
    isRemote: false,
  });
  logger.emit({
    eventName: 'gemini_cli.tool_call',
    timestamp: [T0, 123456789],
    observedTimestamp: [T0, 123456999],
    severityNumber: SeverityNumber.WARN,
    severityText: 'WARN',
    body: 'Tool call: run_shell_command',
    attributes: {
      function_name: 'run_shell_command',
      duration_ms: 42,
      ratio: 0.25,
      success: true,
      mixed: ['a', 1],
      blob: new Uint8Array([0xde, 0xad, 0xbe, 0xef]),
    },
    context: inSpan,
  });
  logger.emit({
    timestamp: [T0 + 1, 5],
    observedTimestamp: [T0 + 1, 6],
    severityNumber: SeverityNumber.INFO,
    severityText: 'INFO',
    body: { prompt_length: 12, nested: { ok: false, tags: ['x', 2.5] } },
    attributes: { 'event.name': 'gemini_cli.user_prompt', big: 9007199254740991, neg: -3.5e-7 },
    context: ROOT_CONTEXT,
  });
  // No body and no severity: the JSON exporter still writes `"body": {}` (its protobuf
  // sibling leaves field 5 out).
  logger.emit({
    eventName: 'gemini_cli.session_end',
    timestamp: [T0 + 2, 0],
    observedTimestamp: [T0 + 2, 1],
    context: ROOT_CONTEXT,
  });
  await provider.forceFlush();
  await provider.shutdown();
}

// --- metrics -----------------------------------------------------------------------------------
async function sendMetrics() {
  const reader = new PeriodicExportingMetricReader({
    exporter: recorded('metrics', new OTLPMetricExporter(exporterOptions('metrics'))),
    exportIntervalMillis: 3_600_000, // never on its own: shutdown() makes the one export
    exportTimeoutMillis: 10_000,
  });
  const provider = new MeterProvider({
    resource,
    readers: [reader],
    views: [
      { instrumentName: 'gemini_cli.tool.call.latency', aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM } },
    ],
  });
  const meter = provider.getMeter(SCOPE_NAME, SCOPE_VERSION, { schemaUrl: SCOPE_SCHEMA_URL });

  const tokens = meter.createCounter('gemini_cli.token.usage', {
    description: 'Counts the total number of tokens used.',
    unit: '{token}',
    valueType: ValueType.INT,
  });
  tokens.add(40, { model: 'gemini-2.5-pro', type: 'input' });
  tokens.add(2, { model: 'gemini-2.5-pro', type: 'input' });
  tokens.add(7, { model: 'gemini-2.5-pro', type: 'output' });

  const latency = meter.createHistogram('gemini_cli.api.request.latency', {
    description: 'Latency of API requests in milliseconds.',
    unit: 'ms',
    advice: { explicitBucketBoundaries: [10, 100, 1000] },
  });
  for (const v of [5, 50, 500, 5000]) latency.record(v, { model: 'gemini-2.5-pro', status_code: 200 });

  const toolLatency = meter.createHistogram('gemini_cli.tool.call.latency', { unit: 's' });
  toolLatency.record(2);
  toolLatency.record(4);

  const fill = meter.createObservableGauge('gemini_cli.context.fill', { unit: '1' });
  fill.addCallback((result) => result.observe(0.25, { 'session.id': 's1', streaming: false }));

  // No forceFlush() first: each collection of a cumulative reader is one more export (and row).
  await provider.shutdown();
}

// --- traces ------------------------------------------------------------------------------------
class FixedIdGenerator {
  #spanIds = [PARENT_SPAN_ID, CHILD_SPAN_ID];
  generateTraceId() {
    return TRACE_ID;
  }
  generateSpanId() {
    const id = this.#spanIds.shift();
    if (id === undefined) throw new Error('FixedIdGenerator: out of span ids');
    return id;
  }
}

async function sendTraces() {
  const provider = new BasicTracerProvider({
    resource,
    idGenerator: new FixedIdGenerator(),
    spanProcessors: [new BatchSpanProcessor(recorded('traces', new OTLPTraceExporter(exporterOptions('traces'))))],
  });
  const tracer = provider.getTracer(SCOPE_NAME, SCOPE_VERSION, { schemaUrl: SCOPE_SCHEMA_URL });
  const parent = tracer.startSpan(
    'gemini_cli.agent.turn',
    { kind: SpanKind.INTERNAL, startTime: [T0, 0], attributes: { 'turn.index': 3, interactive: true } },
    ROOT_CONTEXT,
  );
  const child = tracer.startSpan(
    'POST /v1beta/models/gemini-2.5-pro:generateContent',
    {
      kind: SpanKind.CLIENT,
      startTime: [T0, 1_000_000],
      attributes: { 'http.request.method': 'POST', 'http.response.status_code': 429, 'retry.ratio': 0.5, 'gen_ai.request.model': 'gemini-2.5-pro' },
      links: [
        {
          context: {
            traceId: LINK_TRACE_ID,
            spanId: LINK_SPAN_ID,
            traceFlags: TraceFlags.SAMPLED,
            isRemote: true,
            traceState: new TraceState('vendor=opaque'),
          },
          attributes: { 'link.kind': 'previous_turn' },
        },
      ],
    },
    trace.setSpan(ROOT_CONTEXT, parent),
  );
  child.addEvent('retry', { attempt: 2, 'backoff.ms': 1.5 }, [T0, 2_000_000]);
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'RESOURCE_EXHAUSTED: quota exceeded' });
  child.end([T0, 3_000_000]);
  parent.end([T0, 4_000_000]);
  await provider.forceFlush();
  await provider.shutdown();
}

// --- run ---------------------------------------------------------------------------------------
const problems = [];
// One after another so that the wire order is stable; a failure of one does not stop the next.
for (const [signal, send] of [['logs', sendLogs], ['metrics', sendMetrics], ['traces', sendTraces]]) {
  try {
    await send();
  } catch (err) {
    problems.push(`${signal}: exception: ${err?.stack ?? err}`);
  }
}
for (const [signal, list] of Object.entries(results)) {
  if (list.length === 0) problems.push(`${signal}: nothing was exported`);
  for (const r of list) if (r.code !== 'SUCCESS') problems.push(`${signal}: export ${r.code}: ${r.error}`);
}
for (const d of diagnostics) problems.push(`otel ${d.level}: ${d.message}`);

const requests = wire.map(decodeWire);

process.stdout.write(
  `${JSON.stringify({
    ok: problems.length === 0,
    problems,
    endpoints: Object.fromEntries(Object.entries(ENDPOINTS).map(([k, v]) => [k, { url: v.url, table: v.table }])),
    results,
    requests,
    node: process.version,
  })}\n`,
);
process.exitCode = problems.length === 0 ? 0 : 1;
