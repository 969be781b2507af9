// Data access shared by views, with fallbacks for endpoints that a given
// server build may not have (findings store, compare, attribution).
import { get, optional, getAnalysis } from './api.js';
import { pool } from './util.js';

function listOf(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (body && Array.isArray(body[k])) return body[k];
  return null;
}

/**
 * Findings in [start, end) (ms). Returns { findings, source } where source
 * is 'store' (the findings store) or 'sampled' (analysed here from the
 * most recent traces because the store endpoint is missing).
 */
export async function loadFindings({ start, end, kind, service, systemic, limit = 500 } = {}) {
  const body = await optional('/api/v1/findings', { from: start, to: end, kind, service, systemic, limit });
  const list = body && listOf(body, 'findings', 'items');
  if (list) return { findings: list.map(normalizeFinding), source: 'store', truncated: !!body.truncated,
    unanswered_nodes: body.unanswered_nodes, from_bucket_nodes: body.from_bucket_nodes };
  const search = await get('/api/v1/search', { start, end, service, limit: 40 });
  const traces = search.traces || [];
  const analyses = await pool(traces, 4, t => getAnalysis(t.trace_id).catch(() => null));
  const out = [];
  analyses.forEach((a, i) => {
    if (!a) return;
    for (const f of a.findings || []) {
      if (kind && f.kind !== kind) continue;
      out.push(normalizeFinding({ ...f, trace_id: f.trace_id || a.trace_id, time: traces[i].start_time,
        root_service: a.root_service, root_operation: a.root_operation }));
    }
  });
  return { findings: out, source: 'sampled' };
}

function normalizeFinding(f) {
  const time = f.time || f.start_time || f.detected_at || f.timestamp || null;
  const examples = f.example_trace_ids || f.trace_ids || (f.trace_id ? [f.trace_id] : []);
  return { ...f, time, span_ids: f.span_ids || [], examples, service: f.service || f.root_service || '' };
}

export function findingsByKind(findings) {
  const m = new Map();
  for (const f of findings) {
    const e = m.get(f.kind) || { kind: f.kind, count: 0, impact: 0, worst: 'info', latest: null };
    e.count++;
    e.impact += f.impact_ms || 0;
    if (sevRank(f.severity) > sevRank(e.worst)) e.worst = f.severity;
    if (f.time && (!e.latest || f.time > e.latest)) e.latest = f.time;
    m.set(f.kind, e);
  }
  return [...m.values()].sort((a, b) => sevRank(b.worst) - sevRank(a.worst) || b.count - a.count);
}

function sevRank(s) { return { critical: 3, warning: 2, info: 1 }[s] || 0; }

/** Per-trace finding lists for search results: store first, else analysis. */
export async function findingsForTraces(ids, { start, end } = {}) {
  const out = new Map();
  const body = await optional('/api/v1/findings', { from: start, to: end, limit: 2000 });
  const list = body && listOf(body, 'findings', 'items');
  if (list) {
    const want = new Set(ids);
    for (const f of list) if (want.has(f.trace_id)) (out.get(f.trace_id) || out.set(f.trace_id, []).get(f.trace_id)).push(f);
    return out;
  }
  await pool(ids, 4, async id => {
    const a = await getAnalysis(id).catch(() => null);
    if (a) out.set(id, a.findings || []);
  });
  return out;
}
