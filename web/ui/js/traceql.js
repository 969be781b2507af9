// TraceQL search against the Tempo-compatible API, which the server mounts
// on the UI's own origin under /tempo (same response shape as Tempo's
// /api/search). Results are turned into the summaries the filter search
// returns, so both list, plot and badge the same way.
import { ApiError } from './api.js';

export const TEMPO_SEARCH = '/tempo/api/search';

export const EXAMPLES = [
  ['N+1 queries', '{ finding.kind = "n_plus_one_query" }'],
  ['errors', '{ status = error }'],
  ['slow spans', '{ duration > 500ms }'],
  ['HTTP 5xx', '{ span.http.response.status_code >= 500 }'],
  ['DB under a service', '{ resource.service.name = "order-service" } >> { span.db.system != nil }'],
];

let available = null;
/** Whether this origin serves the Tempo API (checked once per page load). */
export function traceQLAvailable() {
  if (!available) available = fetch('/tempo/api/echo').then(r => r.ok, () => false);
  return available;
}

/** A TraceQL failure the UI shows inline: position when it is a parse error. */
export class TraceQLError extends Error {
  constructor(message, { line = 0, col = 0, status = 0, missing = false } = {}) {
    super(message);
    this.line = line; this.col = col; this.status = status; this.missing = missing;
  }
}

/** Parses "parse error at line L, col C: msg" (the server's SyntaxError text). */
export function parseError(text, status) {
  const m = /parse error at line (\d+), col (\d+): ([^\n]*)/.exec(text || '');
  if (m) return new TraceQLError(m[3], { line: Number(m[1]), col: Number(m[2]), status });
  return new TraceQLError((text || '').trim() || `HTTP ${status}`, { status });
}

/** Byte-agnostic offset of (line, col) in src, both 1-based. */
export function offsetOf(src, line, col) {
  let off = 0;
  const lines = src.split('\n');
  for (let i = 0; i < line - 1 && i < lines.length; i++) off += lines[i].length + 1;
  return Math.min(src.length, off + Math.max(0, col - 1));
}

export async function searchTraceQL(q, { start, end, limit, signal } = {}) {
  const u = new URLSearchParams({ q, limit: String(limit || 50), spss: '5' });
  if (start) u.set('start', String(Math.floor(start / 1000)));
  if (end) u.set('end', String(Math.ceil(end / 1000)));
  let res;
  try {
    res = await fetch(`${TEMPO_SEARCH}?${u}`, { headers: { Accept: 'application/json' }, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  if (res.status === 404) {
    throw new TraceQLError('This server does not serve the Tempo API on the UI port (expected at /tempo/api/search). ' +
      'Query the Tempo port (3200 by default) from Grafana or curl, or use the filters.', { status: 404, missing: true });
  }
  if (!res.ok) throw parseError(text, res.status);
  let body;
  try { body = JSON.parse(text); } catch { throw new TraceQLError('bad JSON from ' + TEMPO_SEARCH, { status: res.status }); }
  const traces = (body.traces || []).map(toSummary).sort((a, b) => b.start_ns - a.start_ns);
  return { traces, partial: body.status === 'PARTIAL' ? body.message || 'partial result' : '', inspected: body.metrics?.inspectedTraces };
}

const ROOT_MISSING = '<root span not yet received>';

/** Tempo search hit → /api/v1/search summary (plus the matched spans). */
export function toSummary(t) {
  const ns = BigInt(t.startTimeUnixNano || '0');
  const services = Object.entries(t.serviceStats || {}).map(([name, s]) => ({ name, span_count: s.spanCount || 0, error_count: s.errorCount || 0 }))
    .sort((a, b) => b.span_count - a.span_count);
  const sets = t.spanSets || (t.spanSet ? [t.spanSet] : []);
  const matched = [];
  let matchedCount = 0;
  for (const ss of sets) {
    matchedCount += ss.matched || (ss.spans || []).length;
    for (const s of ss.spans || []) matched.push({ span_id: s.spanID, name: s.name, duration_ms: Number(s.durationNanos || 0) / 1e6 });
  }
  const root = t.rootServiceName === ROOT_MISSING ? '' : (t.rootServiceName || '');
  return {
    trace_id: (t.traceID || '').padStart(32, '0'),
    root_service: root, root_operation: t.rootTraceName || '',
    start_time: new Date(Number(ns / 1000000n)).toISOString(), start_ns: Number(ns),
    duration_ms: Number(t.durationMs || 0),
    span_count: services.reduce((s, x) => s + x.span_count, 0),
    error_count: services.reduce((s, x) => s + x.error_count, 0),
    services, matched, matched_count: matchedCount,
  };
}

const quote = s => JSON.stringify(s);

function literal(v) {
  v = v.trim();
  if (/^-?\d+(\.\d+)?$/.test(v) || v === 'true' || v === 'false' || /^".*"$/.test(v)) return v;
  return quote(v);
}

function durationLit(v) {
  v = v.trim();
  return /^\d+(\.\d+)?$/.test(v) ? v + 'ms' : v;
}

/** The filter form as one TraceQL spanset (same-span semantics as /api/v1/search). */
export function filtersToTraceQL({ service, operation, status, attr = [], minTraceDuration, maxTraceDuration }) {
  const c = [];
  if (service) c.push(`resource.service.name = ${quote(service)}`);
  if (operation) c.push(`name = ${quote(operation)}`);
  if (status) c.push(`status = ${status}`);
  for (const a of attr) {
    const m = /^\s*([^=!<>~\s]+)\s*(>=|<=|!=|=~|!~|=|>|<)(.*)$/.exec(a);
    if (!m) { if (a.trim()) c.push(`${scoped(a.trim())} != nil`); continue; }
    const val = m[2] === '=~' || m[2] === '!~' ? quote(m[3].trim().replace(/^"(.*)"$/, '$1')) : literal(m[3]);
    c.push(`${scoped(m[1])} ${m[2]} ${val}`);
  }
  if (minTraceDuration) c.push(`traceDuration >= ${durationLit(minTraceDuration)}`);
  if (maxTraceDuration) c.push(`traceDuration <= ${durationLit(maxTraceDuration)}`);
  return c.length ? `{ ${c.join(' && ')} }` : '{ }';
}

function scoped(key) {
  return /^(resource|span)\./.test(key) ? key : '.' + key;
}
