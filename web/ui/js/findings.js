// Findings across traces, systemic ones included, filterable by kind,
// service, scope and time; every row links to example traces at the right
// span. Repeats of one problem (same kind, service and operation) fold into
// one row by default, so 80 N+1 findings of one endpoint read as one.
import { el, clear, fmtMs, fmtNum, fmtTime, relTime, rangePicker, rangeBounds, emptyState, badge, severityRank } from './util.js';
import { get } from './api.js';
import { loadFindings, findingsByKind } from './data.js';
import { navigate, setParams, openPanel } from './app.js';
import { rootCauseCard } from './rootcause.js';

const KINDS = ['slow_query', 'n_plus_one_query', 'fan_out', 'sequential_calls', 'slow_dependency', 'timeout_cascade', 'timeout_mismatch',
  'retry_storm', 'error_origin', 'swallowed_error', 'partial_failure', 'idle_gap', 'cache_miss', 'consumer_lag', 'poison_message',
  'broken_propagation', 'instrumentation_gap', 'cache_stampede', 'auth_expiry_race', 'span_count_regression', 'latency_regression',
  'error_rate_spike', 'new_error_type', 'missing_service', 'throughput_drop'];

export async function render({ params, root }) {
  document.title = 'Findings · tracedx';
  const kind = params.get('kind') || '', service = params.get('service') || '', range = params.get('range') || '1h';
  const scope = params.get('scope') || '', flat = params.get('group') === '0';
  const [start, end] = rangeBounds(range);
  const go = p => { setParams(p); navigate(location.pathname + location.search, { replace: true }); };
  const kindSel = el('select#fk', { 'aria-label': 'Kind', onchange: () => go({ kind: kindSel.value }) },
    el('option', { value: '' }, 'All kinds'), KINDS.map(k => el('option', { value: k, selected: k === kind }, k)));
  const svcSel = el('select#fs', { 'aria-label': 'Service', onchange: () => go({ service: svcSel.value }) }, el('option', { value: '' }, 'All services'));
  get('/api/v1/services').then(b => {
    for (const s of b.services || []) svcSel.append(el('option', { value: s, selected: s === service }, s));
    if (service && !(b.services || []).includes(service)) svcSel.append(el('option', { value: service, selected: true }, service));
  }).catch(() => {});
  const scopeBox = el('div.quick#fscope', { role: 'group', 'aria-label': 'Scope' },
    [['', 'all'], ['trace', 'per trace'], ['systemic', 'systemic']].map(([v, l]) =>
      el('button.chip' + (v === scope ? '.on' : ''), { type: 'button', 'aria-pressed': String(v === scope), onclick: () => go({ scope: v }) }, l)));
  const groupBox = el('label.small.muted', el('input#fgroup', { type: 'checkbox', checked: !flat, onchange: e => go({ group: e.target.checked ? '' : '0' }) }), ' group repeats');
  root.append(el('div.row', el('h1', 'Findings'), el('span.spacer'), kindSel, svcSel, scopeBox, groupBox, rangePicker(range, r => go({ range: r }))));
  const kindsBox = el('div.badges', { style: { margin: '8px 0 12px' } });
  const list = el('section.card', el('div.loading', 'Loading findings…'));
  root.append(kindsBox, list);
  let res;
  try {
    res = await loadFindings({ start, end, kind, service, systemic: scope === 'systemic' ? 'true' : scope === 'trace' ? 'false' : '', limit: 2000 });
  } catch (e) {
    list.lastChild.replaceWith(el('div.error-box', el('strong', 'Could not load findings'), el('p', e.message)));
    return;
  }
  const fs = res.findings.filter(f => (!service || !f.service || f.service === service || f.root_service === service) &&
    (!scope || (scope === 'systemic') === !!f.systemic));
  const qs = p => { const u = new URLSearchParams(location.search); for (const [k, v] of Object.entries(p)) { if (v) u.set(k, v); else u.delete(k); } return '/findings?' + u; };
  for (const k of findingsByKind(fs)) kindsBox.append(el('a', { href: qs({ kind: k.kind }) }, badge(k.kind + ' · ' + k.count, k.worst)));
  if (kind) kindsBox.append(el('a', { href: qs({ kind: '' }) }, 'clear kind'));
  clear(list);
  if (res.source === 'sampled') list.append(el('p.note', 'Findings store not available in this build: showing findings of the 40 most recent traces.'));
  if (res.truncated) list.append(el('p.note', 'Showing the newest 2,000 findings; narrow the range or pick a kind for the rest.'));
  if (!fs.length) { list.append(emptyState('No findings', kind ? `No ${kind} in this range.` : 'No problem found in this range.')); return; }
  fs.sort((a, b) => (b.time || '').localeCompare(a.time || '') || severityRank(b.severity) - severityRank(a.severity) || (b.impact_ms || 0) - (a.impact_ms || 0));
  const rows = flat ? fs.map(f => ({ latest: f, count: 1, impact: f.impact_ms || 0, examples: exampleLinks([f]) })) : groupFindings(fs);
  const tb = el('tbody');
  for (const g of rows.slice(0, 500)) {
    const f = g.latest;
    const href = g.examples[0]?.href;
    tb.append(el('tr', { tabindex: '0', 'data-row': '', 'data-kind': f.kind, 'data-count': g.count, onclick: e => { if (href && !e.target.closest('a')) navigate(href); } },
      el('td.small.muted', { title: f.time ? fmtTime(f.time) : '' }, f.time ? relTime(f.time) : ''),
      el('td', badge(f.kind, f.severity), f.systemic ? el('div.small.muted', 'systemic · ', el('a.causes-link', { href: '#', onclick: e => { e.preventDefault(); showCauses(f); } }, 'causes')) : null),
      el('td', el('div', f.title), f.fix ? el('div.small.muted', 'Fix: ' + f.fix) : null),
      el('td.small', f.service ? el('a', { href: qs({ service: f.service }), title: 'only this service' }, f.service) : '', f.operation ? el('div.muted', f.operation) : null),
      el('td.num', g.count > 1 ? el('b', '× ' + fmtNum(g.count)) : '1'),
      el('td.num', { title: g.count > 1 ? 'total over all occurrences' : '' }, g.impact ? fmtMs(g.impact) : '–'),
      el('td.examples', g.examples.length ? g.examples.slice(0, 3).map((x, i) => [i ? ' ' : '', el('a.mono.small', { href: x.href, title: 'open at the finding\'s span', 'data-primary': i === 0 ? '' : null }, x.id.slice(0, 8))])
        : el('span.muted.small', 'no example trace'))));
  }
  list.append(el('table.findings-table', el('thead', el('tr', el('th', 'Last seen'), el('th', 'Kind'), el('th', 'Finding'), el('th', 'Where'), el('th.num', 'Count'),
    el('th.num', 'Impact'), el('th', 'Example traces'))), tb));
}

// The window a cross-trace finding looks back on before it opens.
const CAUSE_WINDOW_MS = 10 * 60e3;

/** Ranks the causes of the window before a cross-trace finding, in the side panel. */
function showCauses(f) {
  const end = f.time ? Date.parse(f.time) : Date.now();
  // Latency and error findings name their endpoint; the others are about
  // whole flows, so they rank whole traces.
  const scoped = f.kind === 'latency_regression' || f.kind === 'error_rate_spike';
  openPanel(el('div', f.culprit ? el('p.note', `The finding blames ${[f.culprit.service, f.culprit.operation].filter(Boolean).join(' ')}: ${f.culprit.reason}`) : null,
    rootCauseCard({ start: end - CAUSE_WINDOW_MS, end, service: scoped ? f.service || '' : '', operation: scoped ? f.operation || '' : '',
      title: 'Likely causes of ' + f.kind.replace(/_/g, ' ') })), { label: 'Likely causes' });
}

/** One row per problem: systemic findings by their key, others by kind and place. */
function groupFindings(fs) {
  const m = new Map();
  for (const f of fs) {
    const key = f.key || [f.kind, f.service || '', f.operation || f.root_operation || ''].join('\u0000');
    let g = m.get(key);
    if (!g) { g = { latest: f, count: 0, impact: 0, all: [] }; m.set(key, g); }
    g.count++;
    g.impact += f.impact_ms || 0;
    if (g.all.length < 20) g.all.push(f);
  }
  const out = [...m.values()];
  for (const g of out) { g.examples = exampleLinks(g.all); delete g.all; }
  // fs is newest first, so groups keep that order by their latest finding.
  return out;
}

/** Distinct example traces, each opening at the finding's first span. */
function exampleLinks(list) {
  const seen = new Set(), out = [];
  for (const f of list) {
    const spans = f.span_ids || [];
    (f.examples || []).forEach((id, i) => {
      if (seen.has(id)) return;
      seen.add(id);
      // Span ids belong to the finding's own trace, not to other examples.
      const span = f.trace_id ? (f.trace_id === id ? spans[0] : '') : (i === 0 ? spans[0] : '');
      out.push({ id, href: `/trace/${id}${span ? '?span=' + span : ''}` });
    });
  }
  return out;
}
