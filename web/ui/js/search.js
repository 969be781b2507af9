// Search: filters or a TraceQL query (state in the query string), results
// newest first with duration bars, errors and finding badges, and a
// duration-over-time scatter whose brushed region goes to the server's
// group comparison and attribution.
import { el, svg, clear, fmtMs, fmtTime, fmtNum, svcColor, rangePicker, rangeBounds, emptyState, badge, traceId } from './util.js';
import { get, optional } from './api.js';
import { findingsForTraces } from './data.js';
import { navigate, setParams } from './app.js';
import { searchTraceQL, filtersToTraceQL, offsetOf, EXAMPLES } from './traceql.js';

let abort = null;

export async function render({ params, root }) {
  document.title = 'Search · tracedx';
  const st = {
    service: params.get('service') || '', operation: params.get('operation') || '', range: params.get('range') || '1h',
    minDuration: params.get('minDuration') || '', maxDuration: params.get('maxDuration') || '', status: params.get('status') || '',
    kind: params.get('kind') || '', attr: params.getAll('attr'), limit: params.get('limit') || '50', q: params.get('q') || '', sort: params.get('sort') || 'newest',
  };
  let mode = st.q || params.get('mode') === 'traceql' ? 'traceql' : 'filters';
  const svcSel = el('select#f-service', { name: 'service', 'aria-label': 'Service' }, el('option', { value: '' }, 'All services'));
  const opSel = el('select#f-operation', { name: 'operation', 'aria-label': 'Operation' }, el('option', { value: '' }, 'All operations'));
  const minD = el('input#f-min', { name: 'minDuration', placeholder: 'e.g. 250ms', value: st.minDuration });
  const maxD = el('input#f-max', { name: 'maxDuration', placeholder: 'e.g. 2s', value: st.maxDuration });
  const status = el('select#f-status', { name: 'status' }, ['', 'error', 'ok', 'unset'].map(v => el('option', { value: v, selected: v === st.status }, v || 'any')));
  const attrs = el('textarea#f-attrs', { name: 'attr', placeholder: 'http.route=/orders\nhttp.response.status_code>=500', value: st.attr.join('\n') });
  const limit = el('select#f-limit', { name: 'limit' }, ['20', '50', '100', '500'].map(v => el('option', { value: v, selected: v === st.limit }, v)));
  // The order picks which traces of the whole range are listed (server side).
  const SORTS = [['newest', 'Newest first'], ['longest', 'Longest first'], ['spans', 'Most spans'], ['impact', 'Most impact (findings)']];
  const sortSel = el('select#f-sort', { name: 'sort', 'aria-label': 'Order', onchange: () => submit() }, SORTS.map(([v, l]) => el('option', { value: v, selected: v === st.sort }, l)));
  let range = st.range;
  const rangeBox = el('div');
  const drawRange = () => {
    clear(rangeBox).append(rangePicker(range, r => { range = r; drawRange(); submit(); }));
    if (/^\d+-\d+$/.test(range)) rangeBox.append(el('div.small.muted', fmtTime(rangeBounds(range)[0]) + ' → ' + fmtTime(rangeBounds(range)[1])));
  };
  drawRange();

  // TraceQL: Enter runs, Shift+Enter is a new line; errors show under the box.
  const tql = el('textarea#f-tql', { name: 'q', rows: 3, spellcheck: false, autocomplete: 'off', value: st.q,
    placeholder: '{ resource.service.name = "checkout" && status = error }', 'aria-describedby': 'tql-error',
    onkeydown: e => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); submit(); } },
    oninput: () => { tqlErr.hidden = true; tql.removeAttribute('aria-invalid'); } });
  const tqlErr = el('div#tql-error.tql-error', { role: 'alert', hidden: true });
  const examples = el('div.tql-examples.small', el('span.muted', 'Examples: '),
    EXAMPLES.map(([label, q]) => el('button.chip', { type: 'button', title: q, onclick: () => { tql.value = q; submit(); } }, label)));
  const filterFields = el('div.mode-filters',
    el('label', { for: 'f-service' }, 'Service'), svcSel,
    el('label', { for: 'f-operation' }, 'Operation'), opSel,
    el('div.pair', el('div', el('label', { for: 'f-min' }, 'Min trace duration'), minD), el('div', el('label', { for: 'f-max' }, 'Max trace duration'), maxD)),
    el('label', { for: 'f-status' }, 'Span status'), status,
    el('label', { for: 'f-attrs' }, 'Attributes (one per line: key=value, key>=n, key=~regex)'), attrs,
    el('p.small', el('a#to-traceql', { href: '#', onclick: e => { e.preventDefault(); tql.value = filtersToTraceQL(query()); setMode('traceql'); } }, 'Edit these filters as TraceQL →')));
  const tqlFields = el('div.mode-traceql',
    el('label', { for: 'f-tql' }, 'TraceQL ', el('span.muted', '(Enter runs, Shift+Enter new line)')), tql, tqlErr, examples);
  const tabs = el('div.tabs.mode-tabs', { role: 'tablist', 'aria-label': 'Search mode' });
  const tabBtns = {};
  for (const [k, label] of [['filters', 'Filters'], ['traceql', 'TraceQL']]) {
    tabBtns[k] = el('button', { type: 'button', role: 'tab', id: 'tab-' + k, onclick: () => setMode(k) }, label);
    tabs.append(tabBtns[k]);
  }
  const form = el('form.filters.card', { onsubmit: e => { e.preventDefault(); submit(); } },
    tabs, filterFields, tqlFields,
    el('label', 'Time range'), rangeBox,
    el('div.pair', el('div', el('label', { for: 'f-sort' }, 'Order'), sortSel), el('div', el('label', { for: 'f-limit' }, 'Limit'), limit)),
    el('div.actions', el('button.primary#run', { type: 'submit' }, 'Find traces'), el('button', { type: 'button', onclick: () => navigate('/search' + (mode === 'traceql' ? '?mode=traceql' : '')) }, 'Reset')));
  function setMode(m, focus = true) {
    mode = m;
    for (const [k, b] of Object.entries(tabBtns)) b.setAttribute('aria-selected', String(k === m));
    filterFields.hidden = m !== 'filters';
    tqlFields.hidden = m !== 'traceql';
    // "/" focuses the box of the visible mode.
    attrs.toggleAttribute('data-search-focus', m === 'filters');
    tql.toggleAttribute('data-search-focus', m === 'traceql');
    if (m === 'traceql' && focus) tql.focus();
  }
  setMode(mode, false);
  const scatterCard = el('section.card#plot', el('h2', 'Endpoint duration over time', el('span.spacer'), el('span.muted.small', 'root span duration, log scale, the whole range; drag to select and compare, click a dot to open')), el('div'));
  const results = el('section.card.results', el('h2', 'Traces'), el('div.loading', 'Searching…'));
  root.append(el('div.search-layout', form, el('div', scatterCard, results)));

  // Form lists.
  get('/api/v1/services').then(b => {
    for (const s of b.services || []) svcSel.append(el('option', { value: s, selected: s === st.service }, s));
    if (st.service && !(b.services || []).includes(st.service)) svcSel.append(el('option', { value: st.service, selected: true }, st.service));
  }).catch(() => {});
  const loadOps = async svc => {
    clear(opSel).append(el('option', { value: '' }, 'All operations'));
    if (!svc) return;
    try {
      const b = await get(`/api/v1/services/${encodeURIComponent(svc)}/operations`);
      const names = [...new Set((b.operations || []).map(o => o.name))].sort();
      for (const n of names) opSel.append(el('option', { value: n, selected: n === st.operation }, n));
    } catch { /* list is a convenience */ }
    if (st.operation && ![...opSel.options].some(o => o.value === st.operation)) opSel.append(el('option', { value: st.operation, selected: true }, st.operation));
  };
  loadOps(st.service);
  svcSel.addEventListener('change', () => { st.operation = ''; loadOps(svcSel.value); });

  function query() {
    const [start, end] = rangeBounds(range);
    return {
      service: svcSel.value || st.service, operation: opSel.value || (svcSel.value === st.service ? st.operation : ''),
      status: status.value, minTraceDuration: minD.value.trim(), maxTraceDuration: maxD.value.trim(),
      attr: attrs.value.split('\n').map(s => s.trim()).filter(Boolean), start, end, limit: limit.value, kind: st.kind,
      sort: sortSel.value, findings: 'true',
    };
  }

  function submit() {
    const lim = limit.value === '50' ? '' : limit.value;
    if (mode === 'traceql') {
      const text = tql.value.trim();
      setParams({ service: '', operation: '', minDuration: '', maxDuration: '', status: '', attr: '', kind: '', mode: text ? '' : 'traceql', q: text, range, limit: lim });
      runTraceQL(text || '{ }');
      return;
    }
    const q = query();
    setParams({ service: q.service, operation: q.operation, range, minDuration: q.minTraceDuration, maxDuration: q.maxTraceDuration,
      status: q.status, attr: q.attr, limit: lim, kind: q.kind, q: '', mode: '', sort: q.sort === 'newest' ? '' : q.sort });
    run(q);
  }

  function begin(text) {
    if (abort) abort.abort();
    abort = new AbortController();
    results.lastChild.replaceWith(el('div.loading', text));
    results.firstChild.textContent = 'Traces';
    return abort.signal;
  }

  async function run(q) {
    const sig = begin('Searching…');
    let body;
    try {
      body = await get('/api/v1/search', q, { signal: sig });
    } catch (e) {
      if (e.name === 'AbortError') return;
      results.lastChild.replaceWith(el('div.error-box', el('strong', 'Search failed'), el('p', e.message)));
      scatterCard.lastChild.replaceWith(el('div'));
      return;
    }
    show(body.traces || [], q, body);
    // The plot covers the whole range (a server-side sample that keeps
    // every outlier), not the listed page.
    const plot = await optional('/api/v1/search/durations', { ...q, limit: '', sort: '', findings: '', points: 400 }, { signal: sig }).catch(() => null);
    if (sig.aborted) return;
    // A server without the sampling endpoint: plot the listed page.
    if (!plot || !plot.points.length) { if ((body.traces || []).length) scatterCard.lastChild.replaceWith(scatter(body.traces, q)); return; }
    const pts = plot.points.map(p => ({ trace_id: p.trace_id, root_service: p.root_service, root_operation: p.root_operation, error_count: p.error_count,
      start_time: new Date(p.start_unix_nano / 1e6).toISOString(), duration_ms: p.endpoint_ms, trace_ms: p.duration_ms }));
    scatterCard.lastChild.replaceWith(scatter(pts, q, plot));
  }

  async function runTraceQL(text) {
    tqlErr.hidden = true;
    tql.removeAttribute('aria-invalid');
    const [start, end] = rangeBounds(range);
    const sig = begin('Running TraceQL…');
    let res;
    try {
      res = await searchTraceQL(text, { start, end, limit: limit.value, signal: sig });
    } catch (e) {
      if (e.name === 'AbortError') return;
      showTraceQLError(text, e);
      results.lastChild.replaceWith(emptyState(e.line ? 'The query does not parse' : 'TraceQL search failed', 'See the message under the query.'));
      scatterCard.lastChild.replaceWith(el('div'));
      return;
    }
    show(res.traces, { start, end, limit: limit.value, traceql: true, partial: res.partial });
  }

  function showTraceQLError(text, e) {
    clear(tqlErr);
    if (e.line) {
      const lines = text.split('\n');
      const src = lines[e.line - 1] ?? '';
      tqlErr.append(el('strong', `Line ${e.line}, column ${e.col}: `), el('span.msg', e.message),
        el('pre.caret', src + '\n' + ' '.repeat(Math.max(0, e.col - 1)) + '^'));
      tqlErr.dataset.line = e.line; tqlErr.dataset.col = e.col;
      // Put the cursor where the parser stopped.
      const off = offsetOf(text, e.line, e.col);
      tql.focus();
      tql.setSelectionRange(off, off);
    } else {
      tqlErr.append(el('strong', e.missing ? 'TraceQL is not available here: ' : 'Query failed: '), el('span.msg', e.message));
      delete tqlErr.dataset.line; delete tqlErr.dataset.col;
    }
    tql.setAttribute('aria-invalid', 'true');
    tqlErr.hidden = false;
  }

  function show(traces, q, body) {
    const list = el('div');
    if (q.partial) list.append(el('p.note', q.partial));
    if (!traces.length) {
      list.append(emptyState('No traces match', 'Widen the time range or remove a filter.'));
      results.lastChild.replaceWith(list);
      scatterCard.lastChild.replaceWith(el('div'));
      return;
    }
    const order = body && body.sort && body.sort !== 'newest' ? ` · ${SORTS.find(x => x[0] === body.sort)?.[1].toLowerCase()} of ${fmtNum(body.scanned)}` : '';
    results.firstChild.textContent = `Traces (${traces.length}${traces.length >= Number(q.limit || 0) && q.limit ? '+' : ''}${order})`;
    const maxDur = Math.max(...traces.map(t => t.duration_ms), 1e-9);
    const badgeSlots = new Map();
    for (const t of traces) {
      // A TraceQL hit opens at its first matched span.
      const first = (t.matched || [])[0];
      const href = `/trace/${t.trace_id}${first ? '?span=' + first.span_id : ''}`;
      const slot = el('span.badges');
      badgeSlots.set(t.trace_id, slot);
      const err = t.error_count > 0;
      list.append(el('a.result', { href, 'data-row': '', 'data-trace': t.trace_id, 'data-start': t.start_time, 'data-duration': t.duration_ms, 'data-spans': t.span_count },
        el('div',
          el('div.title', t.root_service ? el('span', el('span.svc-dot', { style: { background: svcColor(t.root_service) } }), t.root_service + ': ') : null, t.root_operation || el('em.muted', 'root span missing')),
          el('div.meta', el('span.when', fmtTime(t.start_time)), el('span', `${t.span_count} spans`),
            err ? el('span.badge.err', `${t.error_count} error${t.error_count > 1 ? 's' : ''}`) : null,
            t.trace_available === false ? el('span.badge.plain.gone', { title: 'Past its retention: the spans are deleted, this summary and the trace\'s findings remain.' }, 'trace gone') : null,
            t.matched_count ? el('span.badge.plain.matched', { title: t.matched.map(s => `${s.name} (${fmtMs(s.duration_ms)})`).join('\n') },
              `${t.matched_count} matched span${t.matched_count > 1 ? 's' : ''}${first ? ': ' + first.name : ''}`) : null,
            slot,
            el('span.svcs', (t.services || []).slice(0, 6).map(s => el('span', el('span.svc-dot', { style: { background: svcColor(s.name) } }), s.name))))),
        el('div.right', el('b', fmtMs(t.duration_ms)), el('div.dbar' + (err ? '.err' : ''), el('i', { style: { width: Math.max(0.5, t.duration_ms / maxDur * 100) + '%' } })),
          el('div.small.muted', traceId(t.trace_id)))));
    }
    results.lastChild.replaceWith(list);
    const fill = m => {
      for (const [id, fs] of m) {
        const slot = badgeSlots.get(id);
        if (!slot) continue;
        const byKind = new Map();
        for (const f of fs) {
          const cur = byKind.get(f.kind);
          if (!cur || (f.impact_ms || 0) > (cur.impact_ms || 0)) byKind.set(f.kind, f);
        }
        for (const f of byKind.values()) slot.append(badge(f.kind, f.severity, { title: f.title }));
      }
    };
    // Badges come with the search response; TraceQL hits ask per trace.
    if (traces.every(t => Array.isArray(t.findings))) fill(new Map(traces.map(t => [t.trace_id, t.findings])));
    else {
      scatterCard.lastChild.replaceWith(scatter(traces, q));
      findingsForTraces(traces.map(t => t.trace_id), q).then(fill).catch(() => {});
    }
  }

  function scatter(traces, q, plot) {
    const W = 900, H = 190, L = 62, R = 10, T = 10, B = 24;
    const pts = traces.map(t => ({ t, x: Date.parse(t.start_time), y: Math.max(t.duration_ms, 1e-3) }));
    // x: the whole search range (not just where the dots are); y: log, so
    // two 45 s outliers do not flatten the 100 ms traces to the axis.
    let x0 = q.start || Math.min(...pts.map(p => p.x)), x1 = q.end || Math.max(...pts.map(p => p.x));
    if (x1 - x0 < 1000) { x0 -= 500; x1 += 500; }
    const ys = pts.map(p => p.y);
    const lo = Math.log10(Math.min(...ys)) - 0.1, hi = Math.log10(Math.max(...ys)) + 0.1;
    const l0 = Math.floor(lo), l1 = Math.max(Math.ceil(hi), l0 + 1);
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - (Math.log10(Math.max(y, 1e-3)) - l0) / (l1 - l0) * (H - T - B);

    const root = svg('svg', { class: 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Endpoint duration over time, log scale',
      'data-x0': x0, 'data-x1': x1, 'data-total': plot ? plot.total : traces.length, 'data-points': pts.length, 'data-log': '1' });
    const axis = svg('g', { class: 'axis' });
    const step = l1 - l0 > 4 ? 2 : 1;
    for (let e = l0; e <= l1; e += step) {
      const y = sy(10 ** e);
      axis.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y }), svg('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, fmtMs(10 ** e)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + (x1 - x0) * i / 4;
      axis.append(svg('text', { x: sx(v), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, fmtTime(v, { short: true })));
    }
    root.append(axis);
    const dots = pts.map(p => {
      const c = svg('circle', { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 4, class: p.t.error_count ? 'err' : '' },
        svg('title', {}, `${p.t.root_service}: ${p.t.root_operation}\nendpoint ${fmtMs(p.y)}${p.t.trace_ms > p.y * 1.01 ? ' · whole trace ' + fmtMs(p.t.trace_ms) : ''} · ${fmtTime(p.x)}`));
      c.addEventListener('click', ev => { ev.stopPropagation(); navigate('/trace/' + p.t.trace_id); });
      root.append(c);
      return c;
    });
    const brush = svg('rect', { class: 'brush', visibility: 'hidden' });
    root.append(brush);
    const hint = 'Select a region to compare it with the other traces of its endpoint, on the server.';
    const bar = el('div.row.small.sel-bar', el('span.muted', hint));
    let drag = null, picked = [];
    const toSvg = ev => {
      const r = root.getBoundingClientRect();
      return [(ev.clientX - r.left) / r.width * W, (ev.clientY - r.top) / r.height * H];
    };
    root.addEventListener('pointerdown', ev => {
      if (ev.target.tagName === 'circle') return;
      drag = toSvg(ev);
      root.setPointerCapture(ev.pointerId);
    });
    root.addEventListener('pointermove', ev => {
      if (!drag) return;
      const [x, y] = toSvg(ev);
      brush.setAttribute('x', Math.min(x, drag[0])); brush.setAttribute('y', Math.min(y, drag[1]));
      brush.setAttribute('width', Math.abs(x - drag[0])); brush.setAttribute('height', Math.abs(y - drag[1]));
      brush.setAttribute('visibility', 'visible');
    });
    root.addEventListener('pointerup', ev => {
      if (!drag) return;
      const [x, y] = toSvg(ev);
      const [ax, bx, ay, by] = [Math.min(x, drag[0]), Math.max(x, drag[0]), Math.min(y, drag[1]), Math.max(y, drag[1])];
      drag = null;
      if (bx - ax < 3 && by - ay < 3) { brush.setAttribute('visibility', 'hidden'); picked = []; }
      else picked = pts.filter(p => { const px = sx(p.x), py = sy(p.y); return px >= ax && px <= bx && py >= ay && py <= by; });
      dots.forEach((d, i) => d.classList.toggle('sel', picked.includes(pts[i])));
      drawBar();
    });
    function drawBar() {
      clear(bar);
      if (!picked.length) { bar.append(el('span.muted', hint)); return; }
      const g = groupFor(picked.map(p => p.t), traces, q);
      bar.append(el('b', `${picked.length} selected`));
      if (picked.length === 1) bar.append(el('a', { href: '/trace/' + picked[0].t.trace_id }, 'Open trace'));
      if (!g) { bar.append(el('span.muted', 'no endpoint to compare: the selected traces have no root span')); return; }
      bar.append(el('span.muted', g.label),
        el('a#send-compare', { href: '/compare?' + g.compare }, 'Compare with the others →'),
        el('a#send-attribution', { href: '/compare?' + g.compare + '&tab=attribution' }, 'What do they have in common? →'));
    }
    const note = plot ? el('div.small.muted', `${fmtNum(plot.points.length)} of ${fmtNum(plot.total)} traces in the range${plot.capped ? ' (the newest 20,000)' : ''}; every slow outlier is kept.`) : null;
    return el('div', root, bar, note);
  }

  if (mode === 'traceql' && st.q) { runTraceQL(st.q); return () => { if (abort) abort.abort(); }; }
  if (mode === 'traceql') { results.lastChild.replaceWith(emptyState('Write a TraceQL query', 'Or pick an example under the box.')); return () => {}; }
  const q0 = query();
  q0.service = st.service; q0.operation = st.operation;
  run(q0);
  return () => { if (abort) abort.abort(); };
}

/**
 * The server compares groups of one endpoint (service + operation) chosen
 * by time and duration, so a brushed region becomes: A (the selection) =
 * the endpoint's traces in the selected time span and duration band, B
 * (the baseline) = its traces in the whole search range on the other side
 * of that band.
 */
export function groupFor(sel, all, q) {
  const count = new Map();
  for (const t of sel) if (t.root_service) {
    const k = t.root_service + '\u0000' + t.root_operation;
    count.set(k, (count.get(k) || 0) + 1);
  }
  if (!count.size) return null;
  const [top, n] = [...count].sort((a, b) => b[1] - a[1])[0];
  let [service, operation] = top.split('\u0000');
  // Mixed endpoints: compare the service's entry spans, any operation.
  if (n < sel.length / 2) operation = '';
  // Bounds come from the traces of that endpoint only: the others in the
  // region are not part of either side.
  const mine = t => t.root_service === service && (!operation || t.root_operation === operation);
  sel = sel.filter(mine);
  all = all.filter(mine);
  const durs = sel.map(t => t.duration_ms);
  const lo = Math.min(...durs), hi = Math.max(...durs);
  // Side A's window must hold the endpoint span's start, which the server
  // matches (a span starting in the window, end excluded). Nanoseconds
  // read from JSON as a double lose their last bits: one start in eight
  // that falls on a whole millisecond (JavaScript SDKs stamp them) reads
  // 1 ms early, so a window ending 1 ms after it left the trace out of its
  // own side; a millisecond either side covers that. And a span that
  // starts before the root (a child whose clock runs behind) makes the
  // trace start earlier than its endpoint span, which starts no later
  // than the trace's end minus its own duration.
  const times = sel.map(t => Date.parse(t.start_time));
  const latest = sel.map(t => Date.parse(t.start_time) + Math.max(0, (t.trace_ms ?? t.duration_ms) - t.duration_ms));
  const others = all.filter(t => !sel.includes(t)).map(t => t.duration_ms).sort((a, b) => a - b);
  const median = others.length ? others[Math.floor(others.length / 2)] : 0;
  const p = new URLSearchParams({ service });
  if (operation) p.set('operation', operation);
  p.set('start', String(Math.floor(q.start)));
  if (q.end) p.set('end', String(Math.ceil(q.end)));
  p.set('a_start', String(Math.min(...times) - 1));
  p.set('a_end', String(Math.ceil(Math.max(...latest)) + 2));
  // Bounds to the microsecond, rounded outwards: a bound rounded inwards
  // leaves the selected traces out of their own side.
  const down = v => String(Math.floor(v * 1000) / 1000), up = v => String(Math.ceil(v * 1000) / 1000);
  let label;
  if (lo >= median) {
    // The slow band: the baseline is everything faster.
    p.set('a_min_duration', down(lo));
    p.set('b_max_duration', down(lo * 0.999));
    label = `${operation ? service + ': ' + operation : service} ≥ ${fmtMs(lo)}`;
  } else {
    p.set('a_max_duration', up(hi));
    p.set('b_min_duration', up(hi * 1.001));
    label = `${operation ? service + ': ' + operation : service} ≤ ${fmtMs(hi)}`;
  }
  return { service, operation, compare: p.toString(), label };
}
