// OTLP/JSON helpers: load fixtures shifted to "now", and build a large
// synthetic trace for the load-time check.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export function listFixtures(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    // jaeger/ and zipkin/ hold samples in other formats for the file readers.
    if (statSync(p).isDirectory()) { if (name !== 'jaeger' && name !== 'zipkin') out.push(...listFixtures(p)); }
    else if (name.endsWith('.json')) out.push(p);
  }
  return out;
}

function eachSpan(doc, fn) {
  for (const rs of doc.resourceSpans || []) for (const ss of rs.scopeSpans || []) for (const s of ss.spans || []) fn(s);
}

export function traceIdOf(doc) {
  let id = null;
  eachSpan(doc, s => { id ||= s.traceId; });
  return id;
}

/** Shifts every timestamp so the trace ends at endNs (BigInt). */
export function shiftTo(doc, endNs) {
  let maxEnd = 0n;
  eachSpan(doc, s => { const e = BigInt(s.endTimeUnixNano); if (e > maxEnd) maxEnd = e; });
  const d = endNs - maxEnd;
  const sh = v => (BigInt(v) + d).toString();
  eachSpan(doc, s => {
    s.startTimeUnixNano = sh(s.startTimeUnixNano);
    s.endTimeUnixNano = sh(s.endTimeUnixNano);
    for (const ev of s.events || []) if (ev.timeUnixNano) ev.timeUnixNano = sh(ev.timeUnixNano);
  });
  return doc;
}

export function loadFixture(path) { return JSON.parse(readFileSync(path, 'utf8')); }

const str = (k, v) => ({ key: k, value: { stringValue: v } });
const int = (k, v) => ({ key: k, value: { intValue: String(v) } });

/**
 * A trace of n spans: a gateway request fanning out to 50 service calls,
 * each running a batch of database queries (some failing), ending at endNs.
 */
export function bigTrace(n, endNs) {
  const traceId = randomBytes(16).toString('hex');
  const dur = 4_000_000_000n;
  const start = endNs - dur;
  const by = new Map();
  const add = (svc, span) => { (by.get(svc) || by.set(svc, []).get(svc)).push(span); };
  let seq = 0;
  const sid = () => { seq++; return seq.toString(16).padStart(16, '0'); };
  const rootId = sid();
  add('gateway', { traceId, spanId: rootId, name: 'GET /api/catalog', kind: 2, startTimeUnixNano: start.toString(), endTimeUnixNano: endNs.toString(),
    attributes: [str('http.request.method', 'GET'), str('http.route', '/api/catalog'), int('http.response.status_code', 200)] });
  const calls = 50;
  const slot = dur / BigInt(calls);
  let count = 1;
  for (let c = 0; c < calls && count < n; c++) {
    const cs = start + BigInt(c) * slot + 1_000_000n, ce = cs + slot - 2_000_000n;
    const q = Math.floor((n - count) / (calls - c)) - 2; // client + server + q queries
    const cid = sid(), srv = sid();
    const svc = ['catalog', 'pricing', 'inventory', 'reviews', 'search'][c % 5];
    add('gateway', { traceId, spanId: cid, parentSpanId: rootId, name: `GET /${svc}/items`, kind: 3, startTimeUnixNano: cs.toString(), endTimeUnixNano: ce.toString(),
      attributes: [str('http.request.method', 'GET'), str('server.address', svc), int('http.response.status_code', 200)] });
    add(svc, { traceId, spanId: srv, parentSpanId: cid, name: `GET /${svc}/items`, kind: 2, startTimeUnixNano: (cs + 200_000n).toString(), endTimeUnixNano: (ce - 200_000n).toString(),
      attributes: [str('http.request.method', 'GET'), str('http.route', `/${svc}/items`), int('http.response.status_code', 200)] });
    count += 2;
    const qslot = (ce - cs - 1_000_000n) / BigInt(Math.max(q, 1));
    for (let k = 0; k < q && count < n; k++, count++) {
      const qs = cs + 500_000n + BigInt(k) * qslot;
      const fail = (c * 131 + k) % 211 === 0;
      add(svc, { traceId, spanId: sid(), parentSpanId: srv, name: `SELECT ${svc}`, kind: 3, startTimeUnixNano: qs.toString(), endTimeUnixNano: (qs + qslot * 8n / 10n).toString(),
        attributes: [str('db.system', 'postgresql'), str('db.query.text', `SELECT * FROM ${svc} WHERE id = ${k}`), str('db.namespace', 'shop'), int('db.response.rows', k % 7)],
        status: fail ? { code: 2, message: 'deadlock detected' } : undefined });
    }
  }
  const resourceSpans = [...by].map(([svc, spans]) => ({
    resource: { attributes: [str('service.name', svc), str('service.version', '1.0.0')] },
    scopeSpans: [{ scope: { name: 'e2e' }, spans }],
  }));
  return { traceId, count, doc: { resourceSpans } };
}

/** A copy of doc under a fresh trace id (same spans, same times). */
export function withNewTraceId(doc) {
  const copy = JSON.parse(JSON.stringify(doc));
  const id = randomBytes(16).toString('hex');
  eachSpan(copy, s => { s.traceId = id; for (const l of s.links || []) if (l.traceId === s.traceId) l.traceId = id; });
  return copy;
}

/** The first span id of doc (its root when listed first). */
export function firstSpanIdOf(doc) {
  let id = null;
  eachSpan(doc, s => { if (!id && !s.parentSpanId) id = s.spanId; });
  return id;
}

/** OTLP/JSON logs for a trace: one on spanId, one on the trace without a span. */
export function logsDoc(traceId, spanId, atNs) {
  const rec = (body, span, extra) => ({ timeUnixNano: atNs.toString(), severityNumber: 17, severityText: 'ERROR', body: { stringValue: body },
    traceId, spanId: span || undefined, attributes: [str('order.id', '42'), ...extra] });
  return { resourceLogs: [{ resource: { attributes: [str('service.name', 'order-service')] }, scopeLogs: [{ scope: { name: 'e2e' },
    logRecords: [rec('customer lookup slow', spanId, []), rec('request finished without a span context', '', [str('log.origin', 'middleware')])] }] }] };
}
