// Unit tests of the UI's DOM-free modules, in Node (no browser):
//   node web/e2e/unit.mjs
import assert from 'node:assert/strict';
import { toSummary, parseError, offsetOf, filtersToTraceQL } from '../ui/js/traceql.js';
import { causeRows } from '../ui/js/rootcause.js';

let n = 0;
const test = (name, fn) => { fn(); n++; console.log('[unit] ok  ', name); };

test('a Tempo search hit becomes a search summary', () => {
  const s = toSummary({
    traceID: 'af7651916cd43dd8448eb211c80319c', rootServiceName: 'frontend', rootTraceName: 'GET /orders',
    startTimeUnixNano: '1768471200123456789', durationMs: 120,
    spanSet: { spans: [{ spanID: '00f067aa0ba902b7', name: 'SELECT', durationNanos: '1500000' }], matched: 51 },
    spanSets: [{ spans: [{ spanID: '00f067aa0ba902b7', name: 'SELECT', durationNanos: '1500000' }], matched: 51 }],
    serviceStats: { frontend: { spanCount: 3, errorCount: 1 }, db: { spanCount: 51 } },
  });
  assert.equal(s.trace_id, '0af7651916cd43dd8448eb211c80319c', 'Tempo may drop leading zeros; links need 32 digits');
  assert.equal(s.start_time, '2026-01-15T10:00:00.123Z');
  assert.equal(s.span_count, 54);
  assert.equal(s.error_count, 1);
  assert.deepEqual(s.services.map(x => x.name), ['db', 'frontend'], 'services by span count');
  assert.equal(s.matched_count, 51);
  assert.equal(s.matched[0].span_id, '00f067aa0ba902b7');
  assert.equal(s.matched[0].duration_ms, 1.5);
  assert.equal(toSummary({ traceID: '1', rootServiceName: '<root span not yet received>', startTimeUnixNano: '0' }).root_service, '');
});

test('parse errors carry their position', () => {
  const e = parseError('parse error at line 2, col 5: expected \'}\' or an operator, found end of query\n', 400);
  assert.deepEqual([e.line, e.col, e.message, e.status], [2, 5, 'expected \'}\' or an operator, found end of query', 400]);
  const o = parseError('finding.kind is not available: this server runs no trace analysis\n', 400);
  assert.equal(o.line, 0);
  assert.match(o.message, /finding.kind/);
  assert.equal(offsetOf('{ a = 1\n  && }', 2, 5), 12);
  assert.equal(offsetOf('{ status = }', 1, 12), 11);
});

test('filters translate to one TraceQL spanset', () => {
  assert.equal(filtersToTraceQL({}), '{ }');
  assert.equal(filtersToTraceQL({ service: 'shop "eu"', operation: 'GET /x', status: 'error',
    attr: ['http.response.status_code>=500', 'http.route=/orders', 'resource.k8s.pod.name=~web-.*', 'code="007"', 'retry'],
    minTraceDuration: '250', maxTraceDuration: '2s' }),
  '{ resource.service.name = "shop \\"eu\\"" && name = "GET /x" && status = error && .http.response.status_code >= 500 && ' +
  '.http.route = "/orders" && resource.k8s.pod.name =~ "web-.*" && .code = "007" && .retry != nil && traceDuration >= 250ms && traceDuration <= 2s }');
});

test('likely causes keep those that explain a tenth, with a comparison of their examples', () => {
  const rows = causeRows({ causes: [
    { service: 'pricing', operation: 'GET /prices', score: 0.99, evidence: [{ kind: 'callee_delay', text: 'callers of pricing wait' }],
      examples: { baseline: 'b'.repeat(32), incident: 'c'.repeat(32) } },
    { service: 'cart', operation: '', score: 0.12, evidence: [], examples: { baseline: 'd'.repeat(32) } },
    { service: 'email', operation: 'POST /send', score: 0.03, evidence: [], examples: {} },
  ] });
  assert.deepEqual(rows.map(r => [r.name, r.share]), [['pricing GET /prices', 99], ['cart', 12]]);
  assert.equal(rows[0].compare, `/compare?a=${'b'.repeat(32)}&b=${'c'.repeat(32)}`);
  assert.equal(rows[1].compare, '', 'no comparison without an incident example');
  assert.deepEqual(rows[0].evidence, ['callers of pricing wait']);
  assert.deepEqual(causeRows({ causes: [] }), []);
  assert.deepEqual(causeRows(null), []);
});

console.log(`[unit] ${n} passed`);
