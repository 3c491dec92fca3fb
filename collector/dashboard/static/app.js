// The dashboard page: reads the JSON API of the same origin with the page's filters and
// draws the tiles, charts and tables. No request leaves this origin.
"use strict";

const api = "/dashboard/api/";
const form = document.getElementById("filters");
let token = sessionStorage.getItem("dashboard-token") || "";

function query(extra = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (!value) continue;
    // datetime-local has no zone: the page's times are UTC, as the tables'
    params.set(name, name === "from" || name === "to" ? value + ":00Z" : value);
  }
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params.toString();
}

async function getAllTime(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(api + path, { headers });
  return response.json();
}

async function get(path, extra) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(api + path + "?" + query(extra), { headers });
  const body = await response.json();
  if (response.status === 401 || response.status === 403) {
    const error = new Error(body.error);
    error.login = true;
    throw error;
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const number = new Intl.NumberFormat("en-US");
function money(usd) {
  return usd.toFixed(usd >= 100 ? 0 : usd >= 1 ? 2 : 4);
}
function duration(seconds) {
  if (seconds >= 3600) return (seconds / 3600).toFixed(1) + " h";
  if (seconds >= 60) return (seconds / 60).toFixed(1) + " min";
  return seconds.toFixed(1) + " s";
}
function show(name, value) {
  const cell = document.querySelector(`[data-tile="${name}"]`);
  if (value === null || value === undefined) cell.textContent = "–";
  else if (name.endsWith("cost_usd")) cell.textContent = money(value);
  else if (name === "cache_hit_ratio") cell.textContent = (100 * value).toFixed(1) + " %";
  else if (name === "active_time_s") cell.textContent = duration(value);
  else cell.textContent = number.format(value);
  cell.dataset.value = value === null || value === undefined ? "" : String(value);
}

const config = { displaylogo: false, responsive: true };

// Model names such as "claude-haiku-4-5" would be taken for dates: every axis here is a list
// of names (or of days), shown as they are.
function plot(id, traces, barmode = "stack") {
  const element = document.getElementById(id);
  element.dataset.traces = JSON.stringify(traces.map((t) => ({ name: t.name, x: t.x, y: t.y, labels: t.labels, values: t.values })));
  const layout = {
    margin: { t: 10, r: 10, b: 60, l: 60 }, barmode, showlegend: true,
    legend: { orientation: "h", y: -0.25 },
    xaxis: { type: "category", automargin: true }, yaxis: { automargin: true },
  };
  Plotly.react(element, traces, layout, config);
}

function costPerUserDay(rows) {
  const users = [...new Set(rows.map((r) => r.user ?? "(unknown)"))];
  return users.map((user) => {
    const mine = rows.filter((r) => (r.user ?? "(unknown)") === user);
    return { type: "bar", name: user, x: mine.map((r) => r.day), y: mine.map((r) => r.cost_usd ?? 0) };
  });
}

function tokensByModel(rows) {
  const kinds = ["input", "output", "cache_read", "cache_creation"];
  return kinds.map((kind) => ({ type: "bar", name: kind, x: rows.map((r) => r.model ?? "(unknown)"), y: rows.map((r) => r[kind] ?? 0) }));
}

function tokenMix(tokens) {
  const labels = Object.keys(tokens);
  return [{ type: "pie", hole: 0.5, labels, values: labels.map((k) => tokens[k]), name: "tokens" }];
}

function latencyByModel(rows) {
  const x = rows.map((r) => r.model ?? "(unknown)");
  return [
    { type: "bar", name: "p50", x, y: rows.map((r) => r.duration_p50_ms) },
    { type: "bar", name: "p95", x, y: rows.map((r) => r.duration_p95_ms) },
  ];
}

const tables = {};
function fillTable(id, rows, cells) {
  tables[id] = rows;
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    for (const text of cells(r)) {
      const td = document.createElement("td");
      td.textContent = text === null || text === undefined ? "–" : text;
      tr.append(td);
    }
    return tr;
  }));
}

const fixed = (digits) => (v) => (v === null || v === undefined ? null : v.toFixed(digits));
function fillSessions(rows) {
  fillTable("sessions", rows, (r) => [r.session, r.session_user, (r.models || []).join(", "), r.calls,
    number.format(r.total_tokens), fixed(4)(r.cost_usd), fixed(4)(r.estimated_cost_usd)]);
}
function fillTools(rows) {
  fillTable("tools", rows, (r) => [r.agent, r.tool, r.calls,
    r.success_rate === null ? null : (100 * r.success_rate).toFixed(0) + " %",
    fixed(0)(r.duration_p50_ms), fixed(0)(r.duration_p95_ms)]);
}
function fillErrors(rows) {
  fillTable("errors", rows, (r) => [r.time, r.agent, r.user, r.model, r.status, r.message]);
}

function fillEdits(rows) {
  fillTable("edits", rows, (r) => [r.tool, r.language, r.accepted, r.rejected,
    r.acceptance_rate === null ? null : (100 * r.acceptance_rate).toFixed(0) + " %"]);
}

function linesPerDay(rows) {
  const x = rows.map((r) => r.day);
  return [
    { type: "bar", name: "added", x, y: rows.map((r) => r.lines_added) },
    { type: "bar", name: "removed", x, y: rows.map((r) => r.lines_removed) },
  ];
}

function byKey(rows, key, x, y) {
  const keys = [...new Set(rows.map((r) => String(r[key] ?? "(none)")))];
  return keys.map((k) => {
    const mine = rows.filter((r) => String(r[key] ?? "(none)") === k);
    return { type: "bar", name: k, x: mine.map((r) => r[x]), y: mine.map(y) };
  });
}

function fillGateway(g) {
  plot("gateway-status", byKey(g.by_status, "status_code", "day", (r) => r.requests));
  plot("gateway-tokens", byKey(g.tokens, "token_name", "day",
    (r) => (r.input ?? 0) + (r.output ?? 0) + (r.cache_read ?? 0) + (r.cache_creation ?? 0)));
  const pair = (a, b) => `${fixed(0)(a) ?? "–"} / ${fixed(0)(b) ?? "–"}`;
  fillTable("endpoints", g.endpoints, (r) => [r.endpoint, r.requests, r.errors,
    pair(r.latency_p50_ms, r.latency_p95_ms), pair(r.ttft_p50_ms, r.ttft_p95_ms),
    r.estimated_cost_usd === null ? null : money(r.estimated_cost_usd)]);
  fillTable("refusals", g.refusals, (r) => [r.token_name, r.refusals]);
}

function errorsByStatus(rows) {
  const statuses = [...new Set(rows.map((r) => String(r.error_status ?? "none")))];
  return statuses.map((status) => {
    const mine = rows.filter((r) => String(r.error_status ?? "none") === status);
    return { type: "bar", name: status, x: mine.map((r) => r.model ?? "(unknown)"), y: mine.map((r) => r.errors) };
  });
}

function csv(rows) {
  if (!rows.length) return "";
  const names = Object.keys(rows[0]);
  const cell = (v) => {
    const text = Array.isArray(v) ? v.join(" ") : v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(text) ? '"' + text.replaceAll('"', '""') + '"' : text;
  };
  return [names.join(","), ...rows.map((r) => names.map((n) => cell(r[n])).join(","))].join("\n") + "\n";
}

for (const link of document.querySelectorAll("a.csv")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    const blob = new Blob([csv(tables[link.dataset.table] || [])], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = link.dataset.table + ".csv";
    a.click();
  });
}

function fillOptions(options) {
  for (const name of ["agent", "user", "model", "endpoint", "token"]) {
    const select = form.elements[name];
    const chosen = select.value;
    select.replaceChildren(new Option("all", ""), ...options[name].map((v) => new Option(v, v)));
    select.value = options[name].includes(chosen) ? chosen : "";
  }
}

// What to set up for an agent that has sent nothing yet (over all time), pointed at this
// collector's own address.
function setupHints(origin) {
  const code = (text) => "<code>" + text.replaceAll("&", "&amp;").replaceAll("<", "&lt;") + "</code>";
  return {
    "claude-code": "<b>No Claude Code data yet.</b> In its environment (or the <code>env</code> of " +
      "<code>~/.claude/settings.json</code>): " + code("CLAUDE_CODE_ENABLE_TELEMETRY=1 OTEL_LOGS_EXPORTER=otlp " +
      "OTEL_METRICS_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT=" + origin),
    codex: "<b>No Codex CLI data yet.</b> In <code>~/.codex/config.toml</code>: " +
      code(`[otel] exporter = { otlp-http = { endpoint = "${origin}/v1/logs", protocol = "binary" } }`),
    "gemini-cli": "<b>No Gemini CLI data yet.</b> In <code>~/.gemini/settings.json</code>: " +
      code(`"telemetry": { "enabled": true, "target": "local", "otlpEndpoint": "${origin}", "otlpProtocol": "http" }`),
  };
}

function fillSetup(everSeen) {
  const setup = document.getElementById("setup");
  const hints = setupHints(location.origin);
  const missing = Object.keys(hints).filter((agent) => !everSeen.includes(agent));
  setup.hidden = missing.length === 0;
  setup.innerHTML = missing.map((agent) => `<p data-agent="${agent}">${hints[agent]}</p>`).join("");
}

function emptyState(tiles) {
  const empty = document.getElementById("empty");
  if (tiles.tables.length && tiles.api_calls) {
    empty.hidden = true;
    return;
  }
  empty.hidden = false;
  empty.innerHTML = tiles.tables.length
    ? "<p>No model calls in this range and filter. Widen the range, or clear a filter.</p>"
    : "<p>No telemetry yet. Point an agent at this collector, for instance Claude Code with " +
      "<code>CLAUDE_CODE_ENABLE_TELEMETRY=1 OTEL_LOGS_EXPORTER=otlp OTEL_METRICS_EXPORTER=otlp " +
      "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318</code>, " +
      "Codex CLI with an <code>[otel]</code> section in <code>~/.codex/config.toml</code> " +
      "(<code>exporter = { otlp-http = { endpoint = \"http://127.0.0.1:4318/v1/logs\", protocol = \"binary\" } }</code>), " +
      "or Gemini CLI with <code>\"telemetry\": { \"enabled\": true, \"target\": \"local\", \"otlpEndpoint\": \"http://127.0.0.1:4318\", \"otlpProtocol\": \"http\" }</code> " +
      "in <code>~/.gemini/settings.json</code>.</p>";
}

async function signedIn() {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const access = await (await fetch(api + "access", { headers })).json();
  if (access.reads) return true;
  document.getElementById("login").hidden = false;
  document.getElementById("content").hidden = true;
  document.getElementById("login-error").textContent = token || !access.tokens ? access.reason : "";
  document.body.dataset.state = "signed-out";
  return false;
}

// plotly.js runs after this script (both deferred): the figures are asked for meanwhile, and
// drawn once it has run (DOMContentLoaded comes after every deferred script).
const plotlyReady = new Promise((resolve) => {
  if (typeof Plotly !== "undefined") resolve();
  else document.addEventListener("DOMContentLoaded", resolve);
});

async function refresh() {
  const problem = document.getElementById("problem");
  problem.hidden = true;
  if (!(await signedIn())) return;
  try {
    const [tiles, options, byDayUser, byModel, sessions, tools, errors, days, edits, gw, allTime] = await Promise.all([
      get("tiles"), get("options"), get("calls", { by: "day,user" }), get("calls", { by: "model" }),
      get("calls", { by: "session", limit: "10" }), get("tools"), get("errors", { limit: "20" }),
      get("productivity"), get("edits"), get("gateway"), getAllTime("options"),
    ]);
    const everSeen = allTime.agent;
    await plotlyReady;
    document.getElementById("login").hidden = true;
    document.getElementById("content").hidden = false;
    fillOptions(options);
    const t = tiles.tokens;
    for (const [name, value] of Object.entries(tiles)) if (name !== "tokens" && name !== "tables") show(name, value);
    show("total_tokens", t.input + t.output + t.cache_read + t.cache_creation);
    emptyState(tiles);
    plot("cost-per-user-day", costPerUserDay(byDayUser.rows));
    plot("tokens-by-model", tokensByModel(byModel.rows));
    plot("token-mix", tokenMix(t));
    plot("latency-by-model", latencyByModel(byModel.rows), "group");
    plot("errors-by-status", errorsByStatus(errors.by_status));
    fillSessions(sessions.rows);
    fillTools(tools.rows);
    fillErrors(errors.recent);
    plot("lines-per-day", linesPerDay(days.rows), "group");
    fillEdits(edits.rows);
    fillGateway(gw);
    fillSetup(everSeen);
    document.body.dataset.state = "ready";
  } catch (error) {
    if (error.login) {
      document.getElementById("login").hidden = false;
      document.getElementById("content").hidden = true;
      document.getElementById("login-error").textContent = token ? error.message : "";
    } else {
      problem.hidden = false;
      problem.textContent = error.message;
    }
    document.body.dataset.state = "error";
  }
}

document.getElementById("token").addEventListener("submit", (event) => {
  event.preventDefault();
  token = event.target.elements.token.value.trim();
  sessionStorage.setItem("dashboard-token", token);
  refresh();
});
form.addEventListener("change", () => {
  document.body.dataset.state = "loading";
  refresh();
});
refresh();
