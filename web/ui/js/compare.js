// Compare: two traces (?a=&b=), drawn as one aligned call tree with the
// server's diff sentences, or two groups of one endpoint (?service=&…, the
// parameters of GET /api/v1/compare) compared on the server, so groups of
// hundreds of traces cost one request. A is the trace or group under
// investigation, B the reference. The attribution tab asks the server which
// attribute values the slow or failed traces have in common.
// In the pair tree, spans are matched by their path of (service, operation)
// from the root; repeated siblings are aggregated so "1 call became 50" is
// one row.
import { el, clear, fmtMs, fmtPct, fmtTime, svcColor, badge, emptyState, pool, traceId } from './util.js';
import { get, getTrace, getAnalysis } from './api.js';
import { buildModel } from './tracemodel.js';
import { navigate, setParams } from './app.js';

// Which side is the baseline: B unless the user picks A (?base=a). Colours
// say worse or better than the baseline, never the sign of a difference.
let base = 'b';
const other = () => (base === 'b' ? 'A' : 'B');
/** Difference of the investigated side over the baseline, and its class. */
function versus(a, b, bigEnough) {
  const d = base === 'b' ? a - b : b - a;
  return { d, cls: bigEnough ? (d > 0 ? '.worse' : d < 0 ? '.better' : '') : '' };
}

export async function render({ params, root }) {
  document.title = 'Compare · tracedx';
  base = params.get('base') === 'a' && !params.get('service') ? 'a' : 'b';
  const a = (params.get('a') || '').trim(), b = (params.get('b') || '').trim();
  root.append(el('h1', 'Compare'));
  if (params.get('service')) return renderGroups(params, root);
  if (params.get('ga') || params.get('gb')) {
    root.append(el('p.note', 'Group links listing trace ids are no longer used: groups are now chosen by endpoint, time and duration and compared on the server. Select a region in Search again.'));
  }
  const ia = el('input#cmp-a', { value: a, placeholder: 'trace id A (e.g. the slow or failing one)', 'data-search-focus': '' });
  const ib = el('input#cmp-b', { value: b, placeholder: 'trace id B (e.g. a healthy one)' });
  root.append(el('form.card.cmp-inputs', { onsubmit: e => { e.preventDefault(); navigate(`/compare?a=${enc(ia.value)}&b=${enc(ib.value)}`); } },
    el('div', el('label', { for: 'cmp-a' }, 'Trace A'), ia), el('div', el('label', { for: 'cmp-b' }, 'Trace B'), ib),
    el('button.primary', { type: 'submit' }, 'Compare')));
  if (!a) {
    root.append(groupForm(new URLSearchParams(), root, true));
    root.append(emptyState('Pick two traces or two groups', 'Open a trace and use "Compare with…", select a region in the Search scatter plot, or compare the failed and successful requests of an endpoint above.'));
    return;
  }
  if (!b) { await suggest(root, a); return; }

  const pane = el('div.card', el('div.loading', 'Loading traces…'));
  root.append(pane);
  let A, B;
  // The server's diff matches database spans by statement and names the
  // biggest effects; the tree below is drawn from both traces here.
  const server = get('/api/v1/compare', { a, b }).catch(() => null);
  try {
    [A, B] = await Promise.all([loadGroup([a]), loadGroup([b])]);
  } catch (e) {
    pane.lastChild.replaceWith(el('div.error-box', el('strong', 'Could not load the traces'), el('p', e.message)));
    return;
  }
  if (!A.traces.length || !B.traces.length) {
    pane.lastChild.replaceWith(el('div.error-box', el('strong', 'Nothing to compare'), el('p', `${A.traces.length ? 'B' : 'A'} could not be loaded.`)));
    return;
  }
  const res = await server;
  clear(pane);
  const flip = new URLSearchParams(location.search);
  if (base === 'a') flip.delete('base'); else flip.set('base', 'a');
  root.insertBefore(el('div.row.small#cmp-base', el('span', 'Baseline: ', el('b', 'trace ' + base.toUpperCase()), `; colours say whether ${other()} is worse or better than it.`),
    el('a', { href: '/compare?' + flip }, `Use ${other()} as the baseline`)), pane);
  root.insertBefore(sideBySide(A, B, false), pane);
  pane.append(diffTable(A, B, false, res && res.summary));
}

const SIDES = [['a', 'A · selection'], ['b', 'B · baseline']];

/** Editable group criteria; every field is a /api/v1/compare parameter. */
function groupForm(params, root, collapsed) {
  const f = name => params.get(name) || '';
  const svc = el('input#g-service', { value: f('service'), placeholder: 'service (required)', list: 'g-services', required: true });
  const op = el('input#g-operation', { value: f('operation'), placeholder: 'operation (optional)', list: 'g-ops' });
  const dl = el('datalist#g-services'), dlo = el('datalist#g-ops');
  get('/api/v1/services').then(bd => { for (const s of bd.services || []) dl.append(el('option', { value: s })); }).catch(() => {});
  const loadOps = () => {
    clear(dlo);
    if (svc.value) get(`/api/v1/services/${encodeURIComponent(svc.value)}/operations`).then(bd => {
      for (const n of new Set((bd.operations || []).map(o => o.name))) dlo.append(el('option', { value: n }));
    }).catch(() => {});
  };
  svc.addEventListener('change', loadOps);
  loadOps();
  const start = el('input#g-start', { value: readableTime(f('start')) || '1h', placeholder: '1h, RFC 3339 or unix ms', 'aria-label': 'From' });
  const end = el('input#g-end', { value: readableTime(f('end')), placeholder: 'now', 'aria-label': 'To' });
  const side = p => {
    const st = el('select', { id: `g-${p}-status`, 'aria-label': `Side ${p.toUpperCase()} status` }, ['', 'ok', 'error'].map(v => el('option', { value: v, selected: v === f(p + '_status') }, v || 'any status')));
    const mn = el('input', { id: `g-${p}-min`, value: f(p + '_min_duration'), placeholder: 'min (ms or 250ms)', 'aria-label': `Side ${p.toUpperCase()} min duration` });
    const mx = el('input', { id: `g-${p}-max`, value: f(p + '_max_duration'), placeholder: 'max', 'aria-label': `Side ${p.toUpperCase()} max duration` });
    const ws = f(p + '_start'), we = f(p + '_end');
    const win = ws || we ? el('div.small.muted', 'window ', fmtWhen(ws), ' → ', fmtWhen(we)) : null;
    return { st, mn, mx, win, ws, we };
  };
  const sa = side('a'), sb = side('b');
  const go = extra => {
    const p = new URLSearchParams();
    const set = (k, v) => { if (v) p.set(k, v); };
    set('service', svc.value.trim()); set('operation', op.value.trim()); set('start', start.value.trim()); set('end', end.value.trim());
    for (const [k, s] of [['a', sa], ['b', sb]]) {
      set(k + '_status', s.st.value); set(k + '_min_duration', s.mn.value.trim()); set(k + '_max_duration', s.mx.value.trim());
      set(k + '_start', s.ws); set(k + '_end', s.we);
    }
    for (const [k, v] of Object.entries(extra || {})) { p.delete(k); if (v) p.set(k, v); }
    const tab = params.get('tab');
    if (tab) p.set('tab', tab);
    navigate('/compare?' + p);
  };
  const sideBox = (p, label, s) => el('fieldset.gside', el('legend', label), s.st, el('div.pair', s.mn, s.mx), s.win);
  const form = el('form.card.groups-form', { onsubmit: e => { e.preventDefault(); go(); } },
    el('h2', 'Compare two groups of one endpoint', el('span.spacer'), el('span.muted.small', 'computed on the server over up to 200 traces per side')),
    el('div.gcrit', el('div', el('label', { for: 'g-service' }, 'Service'), svc, dl), el('div', el('label', { for: 'g-operation' }, 'Operation'), op, dlo),
      el('div', el('label', { for: 'g-start' }, 'From'), start), el('div', el('label', { for: 'g-end' }, 'To'), end)),
    el('div.gsides', sideBox('a', SIDES[0][1], sa), sideBox('b', SIDES[1][1], sb)),
    el('div.actions.row', el('button.primary', { type: 'submit' }, 'Compare groups'),
      el('button#preset-failed', { type: 'button', onclick: () => {
        sa.st.value = 'error'; sb.st.value = 'ok';
        for (const s of [sa, sb]) { s.mn.value = ''; s.mx.value = ''; s.ws = ''; s.we = ''; }
        go({ selection: 'error', threshold_ms: '' });
      } }, 'Failed vs successful'),
      el('span.muted.small', 'A is the selection, B the baseline; the sentences read A → B.')));
  if (collapsed) return el('details.card-details', el('summary', 'Or compare two groups of an endpoint…'), form);
  return form;
}

// Unix ms in links (short, exact) read as RFC 3339 in the form; the server takes both.
function readableTime(v) {
  return /^\d{12,}$/.test(v) ? new Date(Number(v)).toISOString() : v;
}

/** Server sentences name whole call paths; keep the first and last hop. */
function shortSentence(t) {
  const parts = t.split(' > ');
  if (parts.length <= 3) return t;
  return el('span', { title: t }, parts[0] + ' > … > ' + parts[parts.length - 1]);
}

function fmtWhen(v) {
  if (!v) return 'range';
  return /^\d{10,}$/.test(v) ? fmtTime(Number(v), { short: true }) : v;
}

async function renderGroups(params, root) {
  const tabName = params.get('tab') === 'attribution' ? 'attribution' : 'diff';
  root.append(groupForm(params, root, false));
  const tabs = el('div.tabs', { role: 'tablist' });
  for (const [k, label] of [['diff', 'Call tree differences'], ['attribution', 'Attribute attribution']]) {
    tabs.append(el('button', { type: 'button', role: 'tab', id: 'tab-' + k, 'aria-selected': String(k === tabName),
      onclick: () => { setParams({ tab: k === 'diff' ? '' : k }); navigate(location.pathname + location.search, { replace: true }); } }, label));
  }
  const pane = el('div.card', el('div.loading', 'Comparing on the server…'));
  root.append(tabs, pane);
  if (tabName === 'attribution') return renderAttribution(params, pane);
  const q = {};
  for (const [k, v] of params) if (k !== 'tab' && k !== 'selection' && k !== 'threshold_ms') q[k] = v;
  let res;
  try {
    res = await get('/api/v1/compare', q);
  } catch (e) {
    pane.lastChild.replaceWith(el('div.error-box', el('strong', 'The server could not compare these groups'), el('p', e.message)));
    return;
  }
  clear(pane);
  root.insertBefore(groupCards(res), tabs);
  if (!res.a.traces || !res.b.traces) {
    pane.append(emptyState('Nothing to compare', `${res.a.traces} trace(s) in A and ${res.b.traces} in B match. Widen the time range or loosen a side's duration or status.`));
    return;
  }
  pane.append(groupDiff(res));
}

function groupCards(res) {
  const card = (p, label, g) => el('section.card.side-' + p,
    el('h2', label, el('span.spacer'), el('span.muted.small', `${g.traces} trace${g.traces === 1 ? '' : 's'}`)),
    el('div.facts', el('span', el('b', fmtMs(g.mean_duration_ms)), ' mean'), el('span', el('b', fmtMs(g.p50_duration_ms)), ' p50'),
      el('span', el('b', g.mean_span_count.toFixed(1)), ' spans'), el('span' + (g.error_share ? '.err' : ''), el('b', fmtPct(g.error_share)), ' failed')),
    (g.example_trace_ids || []).length ? el('div.small', 'Examples: ', g.example_trace_ids.map((id, i) => [i ? ' ' : '', traceId(id, { href: '/trace/' + id })])) : null);
  return el('div.side', card('a', SIDES[0][1], res.a), card('b', SIDES[1][1], res.b));
}

/** The leaf of a path, with the chain above it for the tooltip. */
function call(x) {
  const leaf = x.service + ': ' + (x.statement || x.operation) + (!x.statement && x.target ? ' → ' + x.target : '');
  const parent = x.path && x.path.endsWith(leaf) && x.path.length > leaf.length ? x.path.slice(0, x.path.length - leaf.length).replace(/ > $/, '') : '';
  return el('td.path', { title: x.path },
    el('span.svc-dot', { style: { background: svcColor(x.service) } }), el('span.muted', x.service + ' '),
    x.statement ? el('code', x.statement) : x.operation, !x.statement && x.target ? el('span.muted', ' → ' + x.target) : null,
    parent ? el('div.small.muted.chain', 'under ' + parent.split(' > ').slice(-2).join(' > ')) : null);
}

const num = v => (Number.isInteger(v) ? String(v) : v.toFixed(1));

function groupDiff(res) {
  const out = el('div#cmp-diff');
  out.append(res.summary.length ? el('div', el('h2', 'What differs'), el('ul#cmp-notes', res.summary.map(t => el('li', shortSentence(t)))))
    : el('p.muted#cmp-notes', 'The two groups have the same shape and timing.'));
  if (res.count_changes.length) {
    out.append(el('h3', 'Repeated calls that changed count (per trace)'), el('table.cmp-counts',
      el('thead', el('tr', el('th', 'Call'), el('th.num', 'Calls A'), el('th.num', 'Calls B'), el('th.num', 'Time A'), el('th.num', 'Time B'))),
      el('tbody', res.count_changes.map(c => el('tr.changed', call(c), el('td.num.cnt', num(c.count_a)), el('td.num.cnt', num(c.count_b)),
        el('td.num', fmtMs(c.duration_ms_a)), el('td.num', fmtMs(c.duration_ms_b)))))));
  }
  if (res.only_in_one.length) {
    out.append(el('h3', 'Calls on one side only'), el('table.cmp-only',
      el('thead', el('tr', el('th', 'Call'), el('th', 'Side'), el('th.num', 'Calls per trace'), el('th.num', 'Time per trace'), el('th.num', 'Failed spans'))),
      el('tbody', res.only_in_one.map(o => el('tr.only-' + o.side, call(o), el('td', 'only in ' + o.side.toUpperCase()), el('td.num', num(o.count)),
        el('td.num', fmtMs(o.duration_ms)), el('td.num' + (o.failed ? '.err' : ''), String(o.failed)))))));
  }
  if (res.duration_diffs.length) {
    const max = Math.max(...res.duration_diffs.map(d => Math.max(d.a.per_trace_ms, d.b.per_trace_ms)), 1e-9);
    out.append(el('h3', 'Time per trace'), el('table.cmp-durs',
      el('thead', el('tr', el('th', 'Call'), el('th.num', 'A'), el('th.num', 'B'), el('th.num', `${other()} vs baseline`), el('th.num', 'own time vs baseline'), el('th', ''))),
      el('tbody', res.duration_diffs.map(d => {
        const big = Math.abs(d.diff_ms) >= Math.max(1, 0.2 * Math.min(d.a.per_trace_ms, d.b.per_trace_ms));
        return el('tr', call(d), el('td.num', fmtMs(d.a.per_trace_ms)), el('td.num', fmtMs(d.b.per_trace_ms)),
          vsCell(d.a.per_trace_ms, d.b.per_trace_ms, big),
          el('td.num.muted', signed(versus(d.a.self_ms, d.b.self_ms).d)),
          el('td', el('div.cbar', el('i.a', { style: { width: (d.a.per_trace_ms / max * 100) + '%' } }), el('i.b', { style: { width: (d.b.per_trace_ms / max * 100) + '%' } }))));
      }))));
  }
  if (res.error_diffs.length) {
    out.append(el('h3', 'Failure share'), el('table.cmp-errs',
      el('thead', el('tr', el('th', 'Call'), el('th.num', 'Fails in A'), el('th.num', 'Fails in B'))),
      el('tbody', res.error_diffs.map(e => el('tr', call(e), el('td.num', fmtPct(e.error_share_a, 0)), el('td.num' + versus(e.error_share_a, e.error_share_b, true).cls, fmtPct(e.error_share_b, 0)))))));
  }
  out.append(el('div.legend', el('span', el('i', { style: { background: 'var(--fg3)' } }), 'A · selection'), el('span', el('i', { style: { background: 'var(--accent)' } }), 'B · baseline'),
    el('span', 'counts and times are per trace, from each trace\'s endpoint span')));
  return out;
}

/**
 * Attribution on the server: the endpoint's traces in the range, split into
 * the selection (slow: at or above the threshold; error: failed) and the
 * rest. The threshold defaults to side A's lower duration bound.
 */
async function renderAttribution(params, pane) {
  const service = params.get('service'), operation = params.get('operation') || '';
  const selection = params.get('selection') || (params.get('a_status') === 'error' ? 'error' : 'slow');
  const threshold = params.get('threshold_ms') ?? params.get('a_min_duration') ?? '';
  const selSel = el('select#attr-selection', { 'aria-label': 'Selection' }, [['slow', 'slow traces'], ['error', 'failed traces']].map(([v, l]) => el('option', { value: v, selected: v === selection }, l)));
  const thr = el('input#attr-threshold', { value: threshold, placeholder: 'p90', size: 8, 'aria-label': 'Slow threshold (ms)' });
  const apply = () => { setParams({ selection: selSel.value, threshold_ms: thr.value.trim() }); navigate(location.pathname + location.search, { replace: true }); };
  selSel.addEventListener('change', apply);
  const controls = el('form.row.small', { onsubmit: e => { e.preventDefault(); apply(); } },
    el('label', 'Selection ', selSel), el('label', 'at or above ', thr, ' ms'), el('button', { type: 'submit' }, 'Apply'));
  let res;
  try {
    res = await get('/api/v1/attribution', { service, operation, start: params.get('start'), end: params.get('end'), selection, threshold_ms: selection === 'slow' ? threshold : '' });
  } catch (e) {
    pane.lastChild.replaceWith(el('div', controls, el('div.error-box', el('strong', 'The server could not rank attributes'), el('p', e.message))));
    return;
  }
  const what = res.selection === 'error' ? 'failed' : `at or above ${fmtMs(res.threshold_ms)}`;
  const endpoint = operation ? `${service}: ${operation}` : service;
  const head = el('p.muted', `${res.selected_traces} ${endpoint} trace${res.selected_traces === 1 ? '' : 's'} ${what} (selection) against the other ${res.baseline_traces} in the range (baseline). A value counts once per trace.`);
  clear(pane).append(controls, head);
  if (!res.values.length) { pane.append(el('div#attribution', emptyState('No attribute value stands out', res.selected_traces ? 'Selection and baseline carry the same attribute values.' : 'Nothing is selected: lower the threshold or widen the range.'))); return; }
  const range = /^\d+$/.test(params.get('start') || '') && /^\d+$/.test(params.get('end') || '') ? `${params.get('start')}-${params.get('end')}` : '1h';
  const filter = v => v.op === '=' ? `${v.key}=${/^-?\d+(\.\d+)?$/.test(v.value) ? JSON.stringify(v.value) : v.value}` : `${v.key}${v.op}${v.value}`;
  pane.append(el('div#attribution', el('table',
    el('thead', el('tr', el('th', 'Attribute value'), el('th.num', 'Selection'), el('th.num', 'Baseline'), el('th.num', 'Lift'), el('th', ''), el('th', ''))),
    el('tbody', res.values.map(v => {
      const href = `/search?service=${encodeURIComponent(service)}${operation ? '&operation=' + encodeURIComponent(operation) : ''}&range=${range}&attr=${encodeURIComponent(filter(v))}`;
      return el('tr', { tabindex: '0', 'data-row': '' }, el('td.mono', v.label),
        el('td.num', `${fmtPct(v.selection_share, 0)} (${v.selection_count})`), el('td.num', `${fmtPct(v.baseline_share, 0)} (${v.baseline_count})`),
        el('td.num', v.lift >= 1000 ? '∞' : v.lift.toFixed(1) + '×'),
        el('td', el('span.lift', { style: { width: Math.max(2, Math.round((v.selection_share - v.baseline_share) * 120)) + 'px' } })),
        el('td.small', el('a', { href }, 'traces →')));
    })))));
}

const enc = s => encodeURIComponent(s.trim());

async function suggest(root, a) {
  const box = el('section.card', el('h2', 'Pick trace B'), el('div.loading', 'Looking for similar traces…'));
  root.append(box);
  try {
    const ta = await getTrace(a);
    const m = buildModel(ta);
    if (!m.main) throw new Error('trace A has no root span');
    const res = await get('/api/v1/search', { service: m.main.service, operation: m.main.name, start: Date.now() - 24 * 3600e3, limit: 50 });
    const others = (res.traces || []).filter(t => t.trace_id !== ta.trace_id);
    if (!others.length) { box.lastChild.replaceWith(emptyState('No similar trace found', 'Paste a trace id above.')); return; }
    const ok = others.filter(t => !t.error_count).sort((x, y) => x.duration_ms - y.duration_ms);
    const pick = ok[Math.floor(ok.length / 2)] || others[0];
    const tb = el('tbody');
    for (const t of others.slice(0, 15)) {
      const href = `/compare?a=${ta.trace_id}&b=${t.trace_id}`;
      tb.append(el('tr', { tabindex: '0', 'data-row': '', onclick: () => navigate(href) },
        el('td', traceId(t.trace_id, { href })), el('td.num', fmtMs(t.duration_ms)), el('td.num', String(t.span_count)),
        el('td.num' + (t.error_count ? '.err' : ''), String(t.error_count)), el('td', t === pick ? el('span.badge.sev-info', 'typical healthy') : '')));
    }
    box.lastChild.replaceWith(el('div',
      el('p', `Trace A: ${m.main.service}: ${m.main.name}, ${fmtMs(m.duration)}. `, el('a#pick-typical', { href: `/compare?a=${ta.trace_id}&b=${pick.trace_id}` }, 'Compare with a typical healthy one →')),
      el('table', el('thead', el('tr', el('th', 'Similar trace'), el('th.num', 'Duration'), el('th.num', 'Spans'), el('th.num', 'Errors'), el('th', ''))), tb)));
  } catch (e) {
    box.lastChild.replaceWith(el('div.error-box', e.message));
  }
}

async function loadGroup(list) {
  const loaded = await pool(list, 4, async id => {
    try {
      const t = await getTrace(id);
      const an = await getAnalysis(id).catch(() => null);
      return { trace: t, model: buildModel(t), analysis: an };
    } catch { return null; }
  });
  const traces = loaded.filter(Boolean);
  return { traces, tree: aggregate(traces.map(x => x.model)) };
}

/** Aggregated call tree: key = path of service:operation; values summed over traces. */
function aggregate(models) {
  const nodes = new Map();
  for (const m of models) {
    const stack = m.roots.map(r => [r, '']);
    while (stack.length) {
      const [n, parentKey] = stack.pop();
      const key = parentKey + '\u0000' + n.service + '\u0001' + n.name;
      let e = nodes.get(key);
      if (!e) { e = { key, parentKey, service: n.service, name: n.name, count: 0, dur: 0, errors: 0, depth: n.depth, order: n.start }; nodes.set(key, e); }
      e.count++; e.dur += n.dur; if (n.err) e.errors++;
      if (n.start < e.order) e.order = n.start;
      for (const c of n.children) stack.push([c, key]);
    }
  }
  return { nodes, n: models.length, duration: models.reduce((s, m) => s + m.duration, 0) / Math.max(1, models.length) };
}

function sideBySide(A, B, groups) {
  const card = (label, G) => {
    const kinds = new Map();
    for (const t of G.traces) for (const f of t.analysis?.findings || []) kinds.set(f.kind, f.severity);
    const errs = G.traces.reduce((s, t) => s + t.model.nodes.filter(n => n.err).length, 0) / G.traces.length;
    const spans = G.traces.reduce((s, t) => s + t.model.nodes.length, 0) / G.traces.length;
    const first = G.traces[0];
    return el('section.card.side-' + label.toLowerCase(),
      el('h2', 'Side ' + label, el('span.spacer'), groups ? el('span.muted.small', `${G.traces.length} traces (mean per trace)`) :
        el('span.small', traceId(first.trace.trace_id, { href: '/trace/' + first.trace.trace_id }))),
      !groups && first.model.main ? el('div', el('span.svc-dot', { style: { background: svcColor(first.model.main.service) } }), first.model.main.service + ': ' + first.model.main.name) : null,
      el('div.facts', el('span', el('b', fmtMs(G.tree.duration)), ' duration'), el('span', el('b', spans.toFixed(groups ? 1 : 0)), ' spans'),
        el('span' + (errs ? '.err' : ''), el('b', errs.toFixed(groups ? 1 : 0)), ' errors')),
      kinds.size ? el('div.badges', [...kinds].map(([k, s]) => badge(k, s))) : el('div.muted.small', 'no findings'));
  };
  const { d } = versus(A.tree.duration, B.tree.duration);
  const ref = base === 'b' ? B.tree.duration : A.tree.duration;
  return el('div',
    el('div.side', card('A', A), card('B', B)),
    el('p.note#cmp-summary', `${other()} is ${fmtMs(Math.abs(d))} ${d >= 0 ? 'slower' : 'faster'} than the baseline ${base.toUpperCase()} (${fmtPct(ref ? Math.abs(d) / ref : 0)}).`));
}

const signed = v => (v > 0 ? '+' : '') + fmtMs(v);
function vsCell(a, b, big) {
  const v = versus(a, b, big);
  return el('td.num.vs' + v.cls, { title: v.cls ? (v.cls === '.worse' ? 'worse' : 'better') + ' than the baseline' : '' }, signed(v.d));
}

function diffTable(A, B, groups, serverNotes) {
  const na = A.tree.n, nb = B.tree.n;
  const keys = new Set([...A.tree.nodes.keys(), ...B.tree.nodes.keys()]);
  const rows = [];
  for (const k of keys) {
    const x = A.tree.nodes.get(k), y = B.tree.nodes.get(k);
    const ref = x || y;
    rows.push({ key: k, parentKey: ref.parentKey, service: ref.service, name: ref.name, order: Math.min(x?.order ?? Infinity, y?.order ?? Infinity),
      ca: (x?.count || 0) / na, cb: (y?.count || 0) / nb, da: (x?.dur || 0) / na, db: (y?.dur || 0) / nb,
      ea: (x?.errors || 0) / na, eb: (y?.errors || 0) / nb });
  }
  // Tree order: children after their parent, siblings by first start.
  const kids = new Map();
  for (const r of rows) (kids.get(r.parentKey) || kids.set(r.parentKey, []).get(r.parentKey)).push(r);
  for (const l of kids.values()) l.sort((p, q) => p.order - q.order);
  const ordered = [];
  const stack = [...(kids.get('') || [])].reverse().map(r => [r, 0]);
  while (stack.length) {
    const [r, d] = stack.pop();
    r.depth = d; ordered.push(r);
    for (const c of [...(kids.get(r.key) || [])].reverse()) stack.push([c, d + 1]);
  }
  const max = Math.max(...rows.map(r => Math.max(r.da, r.db)), 1e-9);
  const fmtC = c => groups ? (Number.isInteger(c) ? String(c) : c.toFixed(1)) : String(c);
  // What differs most, in words.
  const notes = [];
  for (const r of ordered) {
    if (r.ca === 0) notes.push([r.db, `only in B: ${fmtC(r.cb)} × ${r.service}: ${r.name} (${fmtMs(r.db)})`]);
    else if (r.cb === 0) notes.push([r.da, `only in A: ${fmtC(r.ca)} × ${r.service}: ${r.name} (${fmtMs(r.da)})`]);
    else if (Math.abs(r.ca - r.cb) >= 1) notes.push([Math.abs(r.db - r.da) + 1, `${r.service}: ${r.name} called ${fmtC(r.ca)} × in A, ${fmtC(r.cb)} × in B`]);
  }
  const slow = rows.filter(r => r.ca && r.cb).sort((p, q) => Math.abs(q.db - q.da) - Math.abs(p.db - p.da)).slice(0, 3)
    .filter(r => Math.abs(r.db - r.da) >= Math.max(1, 0.2 * Math.min(r.da, r.db)));
  for (const r of slow) notes.push([Math.abs(r.db - r.da), `${r.service}: ${r.name} ${fmtMs(r.da)} in A vs ${fmtMs(r.db)} in B`]);
  notes.sort((p, q) => q[0] - p[0]);
  // The server's sentences are better informed (statements, callees, own
  // vs children's time): prefer them, minus the headline shown above.
  if (serverNotes && serverNotes.length) notes.splice(0, notes.length, ...serverNotes.filter(t => !/^B took /.test(t)).map(t => [0, shortSentence(t)]));
  const tb = el('tbody');
  const limit = 3000;
  for (const r of ordered.slice(0, limit)) {
    const only = r.ca === 0 ? 'b' : r.cb === 0 ? 'a' : '';
    const cls = only ? `.only-${only}.${only === base ? 'gone' : 'extra'}` : Math.abs(r.ca - r.cb) >= (groups ? 0.5 : 1) ? '.changed' : '';
    const big = r.ca && r.cb && Math.abs(r.db - r.da) >= Math.max(1, 0.2 * Math.min(r.da, r.db));
    tb.append(el('tr' + cls, { 'data-key': r.key },
      el('td.path', { style: { paddingLeft: (6 + Math.min(r.depth, 30) * 12) + 'px' } }, el('span.svc-dot', { style: { background: svcColor(r.service) } }), el('span.muted', r.service + ' '), r.name),
      el('td.num.cnt', fmtC(r.ca)), el('td.num.cnt', fmtC(r.cb)),
      el('td.num', r.ca ? fmtMs(r.da) : '–'), el('td.num', r.cb ? fmtMs(r.db) : '–'),
      vsCell(r.da, r.db, big),
      el('td', el('div.cbar', el('i.a', { style: { width: (r.da / max * 100) + '%' } }), el('i.b', { style: { width: (r.db / max * 100) + '%' } })))));
  }
  return el('div#cmp-diff',
    notes.length ? el('div', el('h2', 'What differs'), el('ul#cmp-notes', notes.slice(0, 8).map(([, t]) => el('li', t)))) : el('p.muted', 'The two call trees have the same shape.'),
    el('div.legend', el('span', el('i.worse-i'), `${other()} worse than the baseline`), el('span', el('i.better-i'), `${other()} better than the baseline`),
      el('span', el('i.extra-i'), `only in ${other()}`), el('span', el('i.gone-i'), `only in the baseline ${base.toUpperCase()}`),
      el('span', el('i', { style: { background: 'var(--fg3)' } }), 'duration A'), el('span', el('i', { style: { background: 'var(--accent)' } }), 'duration B'),
      groups ? el('span', 'counts and durations are means per trace') : null),
    el('table', el('thead', el('tr', el('th', 'Call path'), el('th.num', 'Calls A'), el('th.num', 'Calls B'), el('th.num', 'Time A'), el('th.num', 'Time B'), el('th.num', `${other()} vs baseline`), el('th', ''))), tb),
    ordered.length > limit ? el('p.muted.small', `${ordered.length - limit} more rows not shown.`) : null);
}

