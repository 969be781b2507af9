// Unit tests of the UI's DOM-free modules, in Node (no browser):
//   node web/e2e/unit.mjs
import assert from 'node:assert/strict';
import { toSummary, parseError, offsetOf, filtersToTraceQL } from '../ui/js/traceql.js';
import { causeRows, causesHref, noTracesText } from '../ui/js/rootcause.js';
import { buildModel, flameTree, layoutFlame, spanMatches } from '../ui/js/tracemodel.js';
import { PALETTE, textOn } from '../ui/js/util.js';
import { matches } from '../ui/js/jump.js';
import { nodesText } from '../ui/js/nodesnote.js';

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
  // A is the incident under investigation, B the baseline, as in Compare.
  assert.equal(rows[0].compare, `/compare?a=${'c'.repeat(32)}&b=${'b'.repeat(32)}`);
  assert.deepEqual([rows[0].incident, rows[0].baseline, rows[1].incident], ['c'.repeat(32), 'b'.repeat(32), '']);
  assert.equal(rows[1].compare, '', 'no comparison without an incident example');
  assert.deepEqual(rows[0].evidence, ['callers of pricing wait']);
  assert.deepEqual(causeRows({ causes: [] }), []);
  assert.deepEqual(causeRows(null), []);
  // Examples given as objects, as some servers answer, are ids too.
  assert.equal(causeRows({ causes: [{ service: 'x', score: 0.5, examples: { incident: { trace_id: 'e'.repeat(32) }, baseline: 'f'.repeat(32) } }] })[0].compare,
    `/compare?a=${'e'.repeat(32)}&b=${'f'.repeat(32)}`);
});

test('a cross-trace finding links to the ranking of its window', () => {
  assert.equal(causesHref({ from: 1000.4, to: 601000, service: 'cart', operation: 'GET /cart' }), '/rootcause?from=1000&to=601000&service=cart&operation=GET+%2Fcart');
  assert.equal(causesHref({ from: 0, to: 5 }), '/rootcause?from=0&to=5');
  assert.equal(noTracesText('no traces in the baseline window through endpoint cart'), 'No trace arrived in the baseline window through endpoint cart, so there is nothing to compare.');
  assert.equal(noTracesText('something else'), 'something else');
});

// A root with 50 identical queries and one call: the flame graph merges the
// queries into one frame 50× as wide, labelled with its service.
function fanTrace() {
  const spans = [{ span_id: 'r', service: 'orders', name: 'GET /orders', start_unix_nano: 0, end_unix_nano: 100e6, attributes: [] }];
  for (let i = 0; i < 50; i++) spans.push({ span_id: 'q' + i, parent_span_id: 'r', service: 'orders', name: 'SELECT customers', start_unix_nano: i * 1e6, end_unix_nano: i * 1e6 + 1e6,
    attributes: [{ key: 'db.statement', value: 'SELECT * FROM customers WHERE id = ' + i }] });
  spans.push({ span_id: 'c', parent_span_id: 'r', service: 'payment', name: 'POST /charge', start_unix_nano: 60e6, end_unix_nano: 90e6, attributes: [{ key: 'http.status', value: 502 }],
    status: { code: 'error' } });
  return buildModel({ spans });
}

test('flame graph frames merge spans by service and operation along the path', () => {
  const top = flameTree(fanTrace());
  assert.equal(top.kids.length, 1);
  const root = top.kids[0];
  assert.deepEqual(root.kids.map(k => [k.service, k.name, k.count]), [['orders', 'SELECT customers', 50], ['payment', 'POST /charge', 1]]);
  assert.equal(root.kids[0].total, 50);
  assert.equal(root.kids[1].errors, 1);
  const frames = layoutFlame(top, 1000);
  const q = frames.find(f => f.f.name === 'SELECT customers');
  assert.equal(q.d, 1);
  assert.equal(Math.round(q.w), 500, 'width is the merged time share of the root');
});

test('find in trace matches names, services, attribute values and key=value', () => {
  const m = fanTrace();
  const find = q => m.nodes.filter(n => spanMatches(n, q)).map(n => n.id);
  assert.equal(find('customers').length, 50);
  assert.deepEqual(find('payment'), ['c']);
  assert.deepEqual(find('WHERE id = 7'), ['q7']);
  assert.deepEqual(find('http.status=502'), ['c']);
  assert.deepEqual(find('no such thing'), []);
});

test('service palette: 20 distinct colours, none in the error hue, readable text', () => {
  assert.equal(new Set(PALETTE).size, 20);
  for (const c of PALETTE) {
    const v = parseInt(c.slice(1), 16), [r, g, b] = [v >> 16, (v >> 8) & 255, v & 255].map(x => x / 255);
    const mx = Math.max(r, g, b), mn = Math.min(r, g, b), d = mx - mn;
    const h = d === 0 ? 0 : ((mx === r ? ((g - b) / d) % 6 : mx === g ? (b - r) / d + 2 : (r - g) / d + 4) * 60 + 360) % 360;
    assert.ok(d < 0.15 || (h > 20 && h < 340), `${c} is red (hue ${h})`);
    // WCAG contrast of the label colour on the frame colour.
    const lum = x => { const [R, G, B] = [x >> 16, (x >> 8) & 255, x & 255].map(y => { y /= 255; return y <= 0.03928 ? y / 12.92 : ((y + 0.055) / 1.055) ** 2.4; }); return 0.2126 * R + 0.7152 * G + 0.0722 * B; };
    const t = textOn(c) === '#fff' ? 0xffffff : 0x111111;
    const [L1, L2] = [lum(v), lum(t)].sort((p, q) => q - p);
    assert.ok((L1 + 0.05) / (L2 + 0.05) >= 3, `label on ${c}: contrast ${((L1 + 0.05) / (L2 + 0.05)).toFixed(2)}`);
  }
});

test('jump box: ids, then exact, prefix and substring matches', () => {
  const items = [{ label: 'checkout', sub: 'service', key: 'checkout', href: '/s' }, { label: 'POST /api/checkout', sub: 'operation · gateway', key: 'gateway POST /api/checkout', href: '/o' },
    { label: 'n plus one query', sub: 'finding kind', key: 'n_plus_one_query n plus one query', href: '/k' }];
  assert.deepEqual(matches('checkout', items).map(m => m.href), ['/s', '/o']);
  assert.deepEqual(matches('n_plus', items).map(m => m.href), ['/k']);
  assert.equal(matches('0af7651916cd43dd', items)[0].href, '/trace/0af7651916cd43dd');
  assert.equal(matches('0AF7651916CD43DD8448EB211C80319C', items)[0].href, '/trace/0af7651916cd43dd8448eb211c80319c');
});

test('a merged answer says which nodes did not answer', () => {
  assert.equal(nodesText({ findings: [] }, null), '');
  assert.equal(nodesText({ unanswered_nodes: ['n1'], from_bucket_nodes: ['n1'] }),
    'Node n1 did not answer: the share of n1 comes from its copy in the bucket (its last minute or so may be missing).');
  assert.equal(nodesText({ unanswered_nodes: ['n2', 'n1'], from_bucket_nodes: ['n1'] }, { unanswered_nodes: ['n1'] }),
    'Nodes n1, n2 did not answer: the share of n1 comes from its copy in the bucket (its last minute or so may be missing); the share of n2 is missing.');
});

console.log(`[unit] ${n} passed`);
