// Search: filters in the query string, results newest first with duration
// bars, errors and finding badges, and a duration-over-time scatter whose
// brushed region goes to comparison/attribution.
import { el, svg, clear, fmtMs, fmtTime, relTime, svcColor, rangePicker, rangeBounds, emptyState, badge } from './util.js';
import { get } from './api.js';
import { findingsForTraces } from './data.js';
import { navigate, setParams } from './app.js';

let abort = null;

export async function render({ params, root }) {
  document.title = 'Search · tracedx';
  const st = {
    service: params.get('service') || '', operation: params.get('operation') || '', range: params.get('range') || '1h',
    minDuration: params.get('minDuration') || '', maxDuration: params.get('maxDuration') || '', status: params.get('status') || '',
    kind: params.get('kind') || '', attr: params.getAll('attr'), limit: params.get('limit') || '50', q: params.get('q') || '',
  };
  const svcSel = el('select#f-service', { name: 'service', 'aria-label': 'Service' }, el('option', { value: '' }, 'All services'));
  const opSel = el('select#f-operation', { name: 'operation', 'aria-label': 'Operation' }, el('option', { value: '' }, 'All operations'));
  const minD = el('input#f-min', { name: 'minDuration', placeholder: 'e.g. 250ms', value: st.minDuration });
  const maxD = el('input#f-max', { name: 'maxDuration', placeholder: 'e.g. 2s', value: st.maxDuration });
  const status = el('select#f-status', { name: 'status' }, ['', 'error', 'ok', 'unset'].map(v => el('option', { value: v, selected: v === st.status }, v || 'any')));
  const attrs = el('textarea#f-attrs', { name: 'attr', placeholder: 'http.route=/orders\nhttp.response.status_code>=500', value: st.attr.join('\n'), 'data-search-focus': '' });
  const limit = el('select#f-limit', { name: 'limit' }, ['20', '50', '100', '500'].map(v => el('option', { value: v, selected: v === st.limit }, v)));
  let range = st.range;
  const rangeBox = el('div');
  const drawRange = () => {
    clear(rangeBox).append(rangePicker(range, r => { range = r; drawRange(); submit(); }));
    if (/^\d+-\d+$/.test(range)) rangeBox.append(el('div.small.muted', fmtTime(rangeBounds(range)[0]) + ' → ' + fmtTime(rangeBounds(range)[1])));
  };
  drawRange();

  const tqlBox = el('div');
  const form = el('form.filters.card', { onsubmit: e => { e.preventDefault(); submit(); } },
    el('label', { for: 'f-service' }, 'Service'), svcSel,
    el('label', { for: 'f-operation' }, 'Operation'), opSel,
    el('label', 'Time range'), rangeBox,
    el('div.pair', el('div', el('label', { for: 'f-min' }, 'Min trace duration'), minD), el('div', el('label', { for: 'f-max' }, 'Max trace duration'), maxD)),
    el('div.pair', el('div', el('label', { for: 'f-status' }, 'Span status'), status), el('div', el('label', { for: 'f-limit' }, 'Limit'), limit)),
    el('label', { for: 'f-attrs' }, 'Attributes (one per line: key=value, key>=n, key=~regex)'), attrs,
    el('div.actions', el('button.primary', { type: 'submit' }, 'Find traces'), el('button', { type: 'button', onclick: () => navigate('/search') }, 'Reset')),
    tqlBox);
  const scatterCard = el('section.card', el('h2', 'Duration over time', el('span.spacer'), el('span.muted.small', 'drag to select a region; click a dot to open')), el('div'));
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

  // TraceQL is answered by the Tempo-compatible API on its own port (3200
  // by default), which this origin cannot call; ?q= still runs it when the
  // server mounts /api/search here.
  tqlBox.append(el('p.note', 'TraceQL: use the Tempo-compatible API (port 3200 by default) from Grafana or curl: /api/search?q={ … }.'));

  function query() {
    const [start, end] = rangeBounds(range);
    return {
      service: svcSel.value || st.service, operation: opSel.value || (svcSel.value === st.service ? st.operation : ''),
      status: status.value, minTraceDuration: minD.value.trim(), maxTraceDuration: maxD.value.trim(),
      attr: attrs.value.split('\n').map(s => s.trim()).filter(Boolean), start, end, limit: limit.value, kind: st.kind,
    };
  }

  function submit() {
    const q = query();
    setParams({ service: q.service, operation: q.operation, range, minDuration: q.minTraceDuration, maxDuration: q.maxTraceDuration,
      status: q.status, attr: q.attr, limit: q.limit === '50' ? '' : q.limit, kind: q.kind });
    run(q);
  }

  async function run(q) {
    if (abort) abort.abort();
    abort = new AbortController();
    const sig = abort.signal;
    results.lastChild.replaceWith(el('div.loading', 'Searching…'));
    let body;
    try {
      body = await get('/api/v1/search', q, { signal: sig });
    } catch (e) {
      if (e.name === 'AbortError') return;
      results.lastChild.replaceWith(el('div.error-box', el('strong', 'Search failed'), el('p', e.message)));
      scatterCard.lastChild.replaceWith(el('div'));
      return;
    }
    show(body.traces || [], q);
  }

  async function runTraceQL(text) {
    const [start, end] = rangeBounds(range);
    results.lastChild.replaceWith(el('div.loading', 'Running TraceQL…'));
    try {
      const b = await get('/api/search', { q: text, start: Math.floor(start / 1000), end: Math.ceil(end / 1000), limit: limit.value });
      const traces = (b.traces || []).map(t => ({
        trace_id: t.traceID, root_service: t.rootServiceName || '', root_operation: t.rootTraceName || '',
        start_time: new Date(Number(BigInt(t.startTimeUnixNano || '0') / 1000000n)).toISOString(), duration_ms: t.durationMs || 0,
        span_count: 0, error_count: 0, services: [],
      }));
      show(traces, { start, end });
    } catch (e) {
      results.lastChild.replaceWith(el('div.error-box', el('strong', 'TraceQL failed'), el('p', e.message)));
    }
  }

  function show(traces, q) {
    const list = el('div');
    if (!traces.length) {
      list.append(emptyState('No traces match', 'Widen the time range or remove a filter.'));
      results.lastChild.replaceWith(list);
      scatterCard.lastChild.replaceWith(el('div'));
      return;
    }
    results.firstChild.textContent = `Traces (${traces.length}${traces.length >= Number(q.limit || 0) && q.limit ? '+' : ''})`;
    const maxDur = Math.max(...traces.map(t => t.duration_ms), 1e-9);
    const badgeSlots = new Map();
    for (const t of traces) {
      const href = `/trace/${t.trace_id}`;
      const slot = el('span.badges');
      badgeSlots.set(t.trace_id, slot);
      const err = t.error_count > 0;
      list.append(el('a.result', { href, 'data-row': '', 'data-trace': t.trace_id },
        el('div',
          el('div.title', t.root_service ? el('span', el('span.svc-dot', { style: { background: svcColor(t.root_service) } }), t.root_service + ': ') : null, t.root_operation || el('em.muted', 'root span missing')),
          el('div.meta', el('span', { title: fmtTime(t.start_time) }, relTime(t.start_time)), el('span', `${t.span_count} spans`),
            err ? el('span.badge.err', `${t.error_count} error${t.error_count > 1 ? 's' : ''}`) : null, slot,
            el('span.svcs', (t.services || []).slice(0, 6).map(s => el('span', el('span.svc-dot', { style: { background: svcColor(s.name) } }), s.name))))),
        el('div.right', el('b', fmtMs(t.duration_ms)), el('div.dbar' + (err ? '.err' : ''), el('i', { style: { width: Math.max(0.5, t.duration_ms / maxDur * 100) + '%' } })),
          el('div.small.muted.mono', t.trace_id.slice(0, 16)))));
    }
    results.lastChild.replaceWith(list);
    scatterCard.lastChild.replaceWith(scatter(traces));
    findingsForTraces(traces.slice(0, 100).map(t => t.trace_id), q).then(m => {
      for (const [id, fs] of m) {
        const slot = badgeSlots.get(id);
        if (!slot) continue;
        const byKind = new Map();
        for (const f of fs) {
          const cur = byKind.get(f.kind);
          if (!cur || (f.severity === 'critical' && cur.severity !== 'critical')) byKind.set(f.kind, f);
        }
        for (const f of byKind.values()) slot.append(badge(f.kind, f.severity, { title: f.title }));
      }
    }).catch(() => {});
  }

  function scatter(traces) {
    const W = 900, H = 190, L = 52, R = 10, T = 10, B = 24;
    const pts = traces.map(t => ({ t, x: Date.parse(t.start_time), y: t.duration_ms }));
    let x0 = Math.min(...pts.map(p => p.x)), x1 = Math.max(...pts.map(p => p.x));
    if (x1 - x0 < 1000) { x0 -= 500; x1 += 500; }
    const ymax = Math.max(...pts.map(p => p.y)) * 1.08 || 1;
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - y / ymax * (H - T - B);
    const root = svg('svg', { class: 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Trace duration over time' });
    const axis = svg('g', { class: 'axis' });
    for (let i = 0; i <= 4; i++) {
      const v = ymax * i / 4, y = sy(v);
      axis.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y }), svg('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, fmtMs(v)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + (x1 - x0) * i / 4;
      axis.append(svg('text', { x: sx(v), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, fmtTime(v).slice(11, 19)));
    }
    root.append(axis);
    const dots = pts.map(p => {
      const c = svg('circle', { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 4, class: p.t.error_count ? 'err' : '' },
        svg('title', {}, `${p.t.root_service}: ${p.t.root_operation}\n${fmtMs(p.y)} · ${fmtTime(p.x)}`));
      c.addEventListener('click', ev => { ev.stopPropagation(); navigate('/trace/' + p.t.trace_id); });
      root.append(c);
      return c;
    });
    const brush = svg('rect', { class: 'brush', visibility: 'hidden' });
    root.append(brush);
    const bar = el('div.row.small', el('span.muted', 'Select a region to compare slow or failing traces with the rest.'));
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
      if (!picked.length) { bar.append(el('span.muted', 'Select a region to compare slow or failing traces with the rest.')); return; }
      const sel = picked.map(p => p.t.trace_id);
      const rest = pts.filter(p => !picked.includes(p)).map(p => p.t.trace_id);
      const href = `/compare?ga=${sel.slice(0, 50).join(',')}&gb=${rest.slice(0, 50).join(',')}`;
      bar.append(el('b', `${picked.length} selected`),
        rest.length ? el('a', { href, id: 'send-compare' }, 'Compare with the other ' + rest.length + ' →') : el('span.muted', 'everything is selected'),
        rest.length ? el('a', { href: href + '&tab=attribution' }, 'Attribute values over-represented →') : null,
        picked.length === 1 ? el('a', { href: '/trace/' + sel[0] }, 'Open trace') : null);
    }
    return el('div', root, bar);
  }

  if (st.q) { runTraceQL(st.q); return () => { if (abort) abort.abort(); }; }
  const q0 = query();
  q0.service = st.service; q0.operation = st.operation;
  run(q0);
  return () => { if (abort) abort.abort(); };
}
