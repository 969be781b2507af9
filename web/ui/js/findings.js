// Findings across traces, systemic ones included, filterable by kind,
// service, scope and time; every row links to example traces at the right
// span. Repeats of one problem (same kind, service and operation) fold into
// one row by default, so 80 N+1 findings of one endpoint read as one.
import { KINDS, el, clear, fmtMs, fmtNum, fmtTime, rangePicker, rangeBounds, emptyState, badge, severityRank, traceId, autoRefresh } from './util.js';
import { get, optional } from './api.js';
import { loadFindings, findingsByKind } from './data.js';
import { navigate, setParams } from './app.js';
import { causesHref } from './rootcause.js';
import { goneNote } from './gone.js';
import { nodesNote } from './nodesnote.js';

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
  const rerender = () => navigate(location.pathname + location.search, { replace: true });
  const refresh = autoRefresh(params.get('refresh'), v => go({ refresh: v }), rerender);
  root.append(el('div.row', el('h1', 'Findings'), el('span.spacer'), kindSel, svcSel, scopeBox, groupBox, refresh.node, rangePicker(range, r => go({ range: r }))));
  const kindsBox = el('div.badges', { style: { margin: '8px 0 12px' } });
  const list = el('section.card', el('div.loading', 'Loading findings…'));
  root.append(kindsBox, list);
  const systemic = scope === 'systemic' ? 'true' : scope === 'trace' ? 'false' : '';
  // Kinds and grouped rows come from the server's summary of every finding
  // in the range; the flat list is the newest 2,000, ranked by impact.
  const sum = await optional('/api/v1/findings/summary', { from: start, to: end, kind, service, systemic, groups: 500 }).catch(() => null);
  const res = flat || !sum ? await loadFindings({ start, end, kind, service, systemic, limit: 2000 }).catch(e => e) : null;
  if (res instanceof Error) {
    list.lastChild.replaceWith(el('div.error-box', el('strong', 'Could not load findings'), el('p', res.message)));
    return () => refresh.stop();
  }
  const qs = p => { const u = new URLSearchParams(location.search); for (const [k, v] of Object.entries(p)) { if (v) u.set(k, v); else u.delete(k); } return '/findings?' + u; };
  const kindRows = sum ? sum.kinds.map(k => ({ kind: k.kind, count: k.count, worst: k.severity })) : findingsByKind(res.findings);
  for (const k of kindRows) kindsBox.append(el('a', { href: qs({ kind: k.kind }) }, badge(k.kind + ' · ' + k.count, k.worst)));
  if (kind) kindsBox.append(el('a', { href: qs({ kind: '' }) }, 'clear kind'));
  clear(list);
  const nodes = nodesNote(sum, res);
  if (nodes) list.append(nodes);
  let rows;
  if (!flat && sum) {
    rows = sum.groups.map(g => ({ f: { kind: g.kind, severity: g.severity, title: g.example?.title || '', fix: g.example?.fix, service: g.service,
      operation: g.operation, systemic: g.systemic, time: g.last_seen }, count: g.count, impact: g.impact_ms,
      examples: g.example?.trace_id ? [{ id: g.example.trace_id, href: `/trace/${g.example.trace_id}${g.example.span_id ? '?span=' + g.example.span_id : ''}` }] : [] }));
    if (sum.groups_total > sum.groups.length) list.append(el('p.note', `The ${sum.groups.length} costliest of ${fmtNum(sum.groups_total)} problems.`));
  } else {
    if (res.source === 'sampled') list.append(el('p.note', 'Findings store not available in this build: showing findings of the 40 most recent traces.'));
    if (res.truncated) list.append(el('p.note', 'The newest 2,000 findings, costliest first; narrow the range or pick a kind for the rest.'));
    const fs = res.findings.filter(f => (!service || !f.service || f.service === service || f.root_service === service) &&
      (!scope || (scope === 'systemic') === !!f.systemic));
    rows = (flat ? fs.map(f => ({ f, count: 1, impact: f.impact_ms || 0, examples: exampleLinks([f]) })) : groupFindings(fs).map(g => ({ f: g.latest, ...g })));
  }
  // Ranked by impact: time lost, then severity, then how often.
  rows.sort((a, b) => b.impact - a.impact || severityRank(b.f.severity) - severityRank(a.f.severity) || b.count - a.count);
  if (!rows.length) { list.append(emptyState('No findings', kind ? `No ${kind} in this range.` : 'No problem found in this range.')); return () => refresh.stop(); }
  const tb = el('tbody');
  for (const g of rows.slice(0, 500)) {
    const f = g.f;
    const href = g.examples[0]?.href;
    tb.append(el('tr', { tabindex: '0', 'data-row': '', 'data-kind': f.kind, 'data-count': g.count, 'data-impact': g.impact, onclick: e => { if (href && !e.target.closest('a,button')) navigate(href); } },
      el('td', badge(f.kind, f.severity), f.systemic ? el('div.small.muted', 'systemic · ', el('a.causes-link', { href: causesLink(f) }, 'causes')) : null),
      el('td', el('div', f.title), f.fix ? el('div.small.muted.fixline', 'Fix: ' + f.fix) : null),
      el('td.small', f.service ? el('a', { href: qs({ service: f.service }), title: 'only this service' }, f.service) : '', f.operation ? el('div.muted', f.operation) : null,
        f.time ? el('div.muted.nowrap.seen', (g.count > 1 ? 'last ' : '') + fmtTime(f.time, { short: true })) : null),
      el('td.num', g.count > 1 ? el('b', '× ' + fmtNum(g.count)) : '1'),
      el('td.num', { title: g.count > 1 ? 'total over all occurrences' : '' }, g.impact ? fmtMs(g.impact) : '–'),
      el('td.examples', g.examples.length ? g.examples.slice(0, 2).map((x, i) => el('div', traceId(x.id, { href: x.href, primary: i === 0 }),
        x.gone ? el('div.small.muted.gone-note', el('span.badge.plain.gone', 'trace gone'), ' ', goneNote()) : null))
        : el('span.muted.small', 'no example trace'))));
  }
  list.append(el('div.hscroll', el('table.findings-table', el('thead', el('tr', el('th', 'Kind'), el('th', flat ? 'Finding' : 'Finding (costliest example)'), el('th', 'Where, when'), el('th.num', 'Count'),
    el('th.num', 'Time lost'), el('th', 'Example traces'))), tb)));
  return () => refresh.stop();
}

// The window a cross-trace finding looks back on before it opens.
const CAUSE_WINDOW_MS = 10 * 60e3;

/** The root-cause ranking of the window before a cross-trace finding. */
function causesLink(f) {
  const end = f.time ? Date.parse(f.time) : Date.now();
  // Latency and error findings name their endpoint; the others are about
  // whole flows, so they rank whole traces.
  const scoped = f.kind === 'latency_regression' || f.kind === 'error_rate_spike';
  return causesHref({ from: end - CAUSE_WINDOW_MS, to: end, service: scoped ? f.service : '', operation: scoped ? f.operation : '' });
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
      // A gone trace opens on what remains of it (summary and findings).
      const gone = f.trace_available === false && f.trace_id === id;
      out.push({ id, gone, href: `/trace/${id}${span ? '?span=' + span : ''}` });
    });
  }
  return out;
}
