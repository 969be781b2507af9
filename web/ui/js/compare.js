// Compare: two traces (?a=&b=) or two groups (?ga=id,id&gb=id,id).
// Spans are matched by their path of (service, operation) from the root;
// repeated siblings are aggregated so that "1 call became 50" is one row.
// The attribution tab ranks attribute values over-represented in group A.
import { el, clear, fmtMs, fmtPct, svcColor, badge, emptyState, pool, attrValue } from './util.js';
import { get, getTrace, getAnalysis } from './api.js';
import { buildModel } from './tracemodel.js';
import { navigate, setParams } from './app.js';

const MAX_GROUP = 50;

export async function render({ params, root }) {
  document.title = 'Compare · tracedx';
  const a = (params.get('a') || '').trim(), b = (params.get('b') || '').trim();
  const ga = ids(params.get('ga')), gb = ids(params.get('gb'));
  const groups = ga.length > 0 || gb.length > 0;
  root.append(el('h1', 'Compare'));
  if (!groups) {
    const ia = el('input#cmp-a', { value: a, placeholder: 'trace id A (e.g. the slow or failing one)', 'data-search-focus': '' });
    const ib = el('input#cmp-b', { value: b, placeholder: 'trace id B (e.g. a healthy one)' });
    root.append(el('form.card.cmp-inputs', { onsubmit: e => { e.preventDefault(); navigate(`/compare?a=${enc(ia.value)}&b=${enc(ib.value)}`); } },
      el('div', el('label', { for: 'cmp-a' }, 'Trace A'), ia), el('div', el('label', { for: 'cmp-b' }, 'Trace B'), ib),
      el('button.primary', { type: 'submit' }, 'Compare')));
    if (!a) { root.append(emptyState('Pick two traces', 'Open a trace and use "Compare with…", or select a region in the search scatter plot to compare groups.')); return; }
    if (!b) { await suggest(root, a); return; }
  }
  const tabName = params.get('tab') === 'attribution' && groups ? 'attribution' : 'diff';
  const tabs = el('div.tabs', { role: 'tablist' });
  const pane = el('div.card', el('div.loading', 'Loading traces…'));
  if (groups) {
    for (const [k, label] of [['diff', 'Call tree differences'], ['attribution', 'Attribute attribution']]) {
      tabs.append(el('button', { type: 'button', role: 'tab', 'aria-selected': String(k === tabName), onclick: () => { setParams({ tab: k === 'diff' ? '' : k }); navigate(location.pathname + location.search, { replace: true }); } }, label));
    }
    root.append(tabs);
  }
  root.append(pane);

  let A, B;
  try {
    if (groups) {
      [A, B] = await Promise.all([loadGroup(ga.slice(0, MAX_GROUP)), loadGroup(gb.slice(0, MAX_GROUP))]);
    } else {
      [A, B] = await Promise.all([loadGroup([a]), loadGroup([b])]);
    }
  } catch (e) {
    pane.lastChild.replaceWith(el('div.error-box', el('strong', 'Could not load the traces'), el('p', e.message)));
    return;
  }
  if (!A.traces.length || !B.traces.length) {
    pane.lastChild.replaceWith(el('div.error-box', el('strong', 'Nothing to compare'), el('p', `${A.traces.length} trace(s) on side A, ${B.traces.length} on side B could be loaded.`)));
    return;
  }
  clear(pane);
  root.insertBefore(sideBySide(A, B, groups), tabs.parentNode ? tabs : pane);
  if (tabName === 'attribution') pane.append(attribution(A, B));
  else pane.append(diffTable(A, B, groups));
}

const enc = s => encodeURIComponent(s.trim());
function ids(s) { return (s || '').split(',').map(x => x.trim()).filter(x => /^[0-9a-fA-F]{1,32}$/.test(x)); }

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
        el('td', el('a.mono', { href }, t.trace_id.slice(0, 16))), el('td.num', fmtMs(t.duration_ms)), el('td.num', String(t.span_count)),
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
        el('a.mono.small', { href: '/trace/' + first.trace.trace_id }, first.trace.trace_id.slice(0, 16))),
      !groups && first.model.main ? el('div', el('span.svc-dot', { style: { background: svcColor(first.model.main.service) } }), first.model.main.service + ': ' + first.model.main.name) : null,
      el('div.facts', el('span', el('b', fmtMs(G.tree.duration)), ' duration'), el('span', el('b', spans.toFixed(groups ? 1 : 0)), ' spans'),
        el('span' + (errs ? '.err' : ''), el('b', errs.toFixed(groups ? 1 : 0)), ' errors')),
      kinds.size ? el('div.badges', [...kinds].map(([k, s]) => badge(k, s))) : el('div.muted.small', 'no findings'));
  };
  const d = B.tree.duration - A.tree.duration;
  return el('div',
    el('div.side', card('A', A), card('B', B)),
    el('p.note#cmp-summary', `B is ${fmtMs(Math.abs(d))} ${d >= 0 ? 'slower' : 'faster'} than A (${fmtPct(A.tree.duration ? Math.abs(d) / A.tree.duration : 0)}).`));
}

function diffTable(A, B, groups) {
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
  const tb = el('tbody');
  const limit = 3000;
  for (const r of ordered.slice(0, limit)) {
    const cls = r.ca === 0 ? '.only-b' : r.cb === 0 ? '.only-a' : Math.abs(r.ca - r.cb) >= (groups ? 0.5 : 1) ? '.changed' : '';
    const delta = r.db - r.da;
    const big = r.ca && r.cb && Math.abs(delta) >= Math.max(1, 0.2 * Math.min(r.da, r.db));
    tb.append(el('tr' + cls, { 'data-key': r.key },
      el('td.path', { style: { paddingLeft: (6 + Math.min(r.depth, 30) * 12) + 'px' } }, el('span.svc-dot', { style: { background: svcColor(r.service) } }), el('span.muted', r.service + ' '), r.name),
      el('td.num.cnt', fmtC(r.ca)), el('td.num.cnt', fmtC(r.cb)),
      el('td.num', r.ca ? fmtMs(r.da) : '–'), el('td.num', r.cb ? fmtMs(r.db) : '–'),
      el('td.num' + (big ? (delta > 0 ? '.slower' : '.faster') : ''), (delta > 0 ? '+' : '') + fmtMs(delta)),
      el('td', el('div.cbar', el('i.a', { style: { width: (r.da / max * 100) + '%' } }), el('i.b', { style: { width: (r.db / max * 100) + '%' } })))));
  }
  return el('div#cmp-diff',
    notes.length ? el('div', el('h2', 'What differs'), el('ul#cmp-notes', notes.slice(0, 8).map(([, t]) => el('li', t)))) : el('p.muted', 'The two call trees have the same shape.'),
    el('div.legend', el('span', el('i', { style: { background: 'var(--err-bg)', border: '1px solid var(--err)' } }), 'only in A'),
      el('span', el('i', { style: { background: 'var(--ok-bg)', border: '1px solid var(--ok)' } }), 'only in B'),
      el('span', el('i', { style: { background: 'var(--fg3)' } }), 'duration A'), el('span', el('i', { style: { background: 'var(--accent)' } }), 'duration B'),
      groups ? el('span', 'counts and durations are means per trace') : null),
    el('table', el('thead', el('tr', el('th', 'Call path'), el('th.num', 'Calls A'), el('th.num', 'Calls B'), el('th.num', 'Time A'), el('th.num', 'Time B'), el('th.num', 'Δ'), el('th', ''))), tb),
    ordered.length > limit ? el('p.muted.small', `${ordered.length - limit} more rows not shown.`) : null);
}

/** Attribute values (span + resource) by how much more often they occur in A. */
function attribution(A, B) {
  const collect = G => {
    const per = G.traces.map(t => {
      const set = new Set(); const nums = new Map();
      for (const n of t.model.nodes) {
        for (const a of [...(n.span.attributes || []), ...(n.span.resource || [])]) {
          const v = attrValue(a);
          if (v.length > 80) continue;
          set.add(a.key + '=' + v);
          if ((a.type === 'int' || a.type === 'double') && isFinite(Number(a.value))) nums.set(a.key, Math.max(nums.get(a.key) ?? -Infinity, Number(a.value)));
        }
      }
      return { set, nums };
    });
    return per;
  };
  const pa = collect(A), pb = collect(B);
  const share = (per, pred) => per.filter(pred).length / Math.max(1, per.length);
  const cands = new Map();
  for (const p of pa) for (const kv of p.set) cands.set(kv, (cands.get(kv) || 0) + 1);
  const rows = [];
  for (const [kv, cnt] of cands) {
    if (cnt < Math.max(2, Math.ceil(pa.length * 0.5)) && pa.length > 1) continue;
    const sa = cnt / pa.length, sb = share(pb, p => p.set.has(kv));
    if (sa - sb >= 0.2) rows.push({ label: kv, sa, sb });
  }
  // Numeric keys: the threshold that best separates A from B.
  const numKeys = new Set(pa.flatMap(p => [...p.nums.keys()]));
  for (const k of numKeys) {
    const vals = [...new Set([...pa, ...pb].map(p => p.nums.get(k)).filter(v => v != null))].sort((x, y) => x - y);
    if (vals.length < 3) continue;
    let best = null;
    for (const t of vals.slice(0, -1)) {
      const sa = share(pa, p => (p.nums.get(k) ?? -Infinity) > t), sb = share(pb, p => (p.nums.get(k) ?? -Infinity) > t);
      if (!best || sa - sb > best.sa - best.sb) best = { label: `${k} > ${t}`, sa, sb };
    }
    if (best && best.sa - best.sb >= 0.3) rows.push(best);
  }
  rows.sort((p, q) => (q.sa - q.sb) - (p.sa - p.sb) || p.label.localeCompare(q.label));
  if (!rows.length) return emptyState('No attribute value stands out', 'Selection and baseline carry the same attribute values.');
  return el('div#attribution',
    el('p.muted', `Attribute values present in the ${A.traces.length} selected traces (A) compared with ${B.traces.length} others (B). Each value counts once per trace.`),
    el('table', el('thead', el('tr', el('th', 'Attribute value'), el('th.num', 'In A'), el('th.num', 'In B'), el('th.num', 'Lift'), el('th', ''))),
      el('tbody', rows.slice(0, 40).map(r => el('tr', el('td.mono', r.label), el('td.num', fmtPct(r.sa, 0)), el('td.num', fmtPct(r.sb, 0)),
        el('td.num', r.sb ? (r.sa / r.sb).toFixed(1) + '×' : '∞'), el('td', el('span.lift', { style: { width: Math.round((r.sa - r.sb) * 120) + 'px' } })))))));
}
