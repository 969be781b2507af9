// Findings across traces, systemic ones included, filterable by kind,
// service and time; every row links to an example trace at the right span.
import { el, clear, fmtMs, fmtTime, relTime, rangePicker, rangeBounds, emptyState, badge, severityRank } from './util.js';
import { get } from './api.js';
import { loadFindings, findingsByKind } from './data.js';
import { navigate, setParams } from './app.js';

const KINDS = ['slow_query', 'n_plus_one_query', 'fan_out', 'sequential_calls', 'slow_dependency', 'timeout_cascade', 'timeout_mismatch',
  'retry_storm', 'error_origin', 'swallowed_error', 'partial_failure', 'idle_gap', 'cache_miss', 'consumer_lag', 'poison_message',
  'broken_propagation', 'instrumentation_gap', 'cache_stampede', 'auth_expiry_race', 'span_count_regression', 'latency_regression',
  'error_rate_spike', 'new_error_type', 'missing_service', 'throughput_drop'];

export async function render({ params, root }) {
  document.title = 'Findings · tracedx';
  const kind = params.get('kind') || '', service = params.get('service') || '', range = params.get('range') || '1h';
  const [start, end] = rangeBounds(range);
  const go = p => { setParams(p); navigate(location.pathname + location.search, { replace: true }); };
  const kindSel = el('select#fk', { 'aria-label': 'Kind', onchange: () => go({ kind: kindSel.value }) },
    el('option', { value: '' }, 'All kinds'), KINDS.map(k => el('option', { value: k, selected: k === kind }, k)));
  const svcSel = el('select#fs', { 'aria-label': 'Service', onchange: () => go({ service: svcSel.value }) }, el('option', { value: '' }, 'All services'));
  get('/api/v1/services').then(b => {
    for (const s of b.services || []) svcSel.append(el('option', { value: s, selected: s === service }, s));
  }).catch(() => {});
  root.append(el('div.row', el('h1', 'Findings'), el('span.spacer'), kindSel, svcSel, rangePicker(range, r => go({ range: r }))));
  const kindsBox = el('div.badges', { style: { margin: '8px 0 12px' } });
  const list = el('section.card', el('div.loading', 'Loading findings…'));
  root.append(kindsBox, list);
  let res;
  try {
    res = await loadFindings({ start, end, kind, service });
  } catch (e) {
    list.lastChild.replaceWith(el('div.error-box', el('strong', 'Could not load findings'), el('p', e.message)));
    return;
  }
  const fs = res.findings.filter(f => !service || !f.service || f.service === service || f.root_service === service);
  for (const k of findingsByKind(fs)) {
    kindsBox.append(el('a', { href: `/findings?kind=${k.kind}&range=${range}${service ? '&service=' + encodeURIComponent(service) : ''}` },
      badge(k.kind + ' · ' + k.count, k.worst)));
  }
  if (kind) kindsBox.append(el('a', { href: `/findings?range=${range}` }, 'clear kind'));
  clear(list);
  if (res.source === 'sampled') list.append(el('p.note', 'Findings store not available in this build: showing findings of the 40 most recent traces.'));
  if (!fs.length) { list.append(emptyState('No findings', kind ? `No ${kind} in this range.` : 'No problem found in this range.')); return; }
  fs.sort((a, b) => (b.time || '').localeCompare(a.time || '') || severityRank(b.severity) - severityRank(a.severity) || (b.impact_ms || 0) - (a.impact_ms || 0));
  const tb = el('tbody');
  for (const f of fs.slice(0, 500)) {
    const ex = f.examples || [];
    const href = ex.length ? `/trace/${ex[0]}${(f.span_ids || [])[0] ? '?span=' + f.span_ids[0] : ''}` : null;
    tb.append(el('tr', { tabindex: '0', 'data-row': '', 'data-kind': f.kind, onclick: e => { if (href && !e.target.closest('a')) navigate(href); } },
      el('td.small.muted', { title: f.time ? fmtTime(f.time) : '' }, f.time ? relTime(f.time) : ''),
      el('td', badge(f.kind, f.severity)),
      el('td', el('div', f.title), f.fix ? el('div.small.muted', 'Fix: ' + f.fix) : null),
      el('td.small', f.service || ''),
      el('td.num', f.impact_ms ? fmtMs(f.impact_ms) : '–'),
      el('td', ex.length ? ex.slice(0, 3).map((id, i) => [i ? ' ' : '', el('a.mono.small', { href: i === 0 ? href : '/trace/' + id }, id.slice(0, 8))]) : el('span.muted.small', 'systemic'))));
  }
  list.append(el('table', el('thead', el('tr', el('th', 'When'), el('th', 'Kind'), el('th', 'Finding'), el('th', 'Service'), el('th.num', 'Impact'), el('th', 'Example traces'))), tb));
}
