// Trace view: why chain and findings on top, then a virtualised waterfall
// (only the rows in view exist in the DOM), a flame graph and per-service
// statistics. The waterfall draws as soon as the spans arrive; the
// analysis (critical path, findings) is overlaid when it lands.
import { el, clear, fmtMs, fmtPct, fmtTime, svcColor, textOn, badge, attrValue, traceId } from './util.js';
import { get, getTrace, getAnalysis, optional, setCached } from './api.js';
import { buildModel, criticalPath, idleGaps, serviceStats, flatten, selfTime, flameTree, layoutFlame, spanMatches } from './tracemodel.js';
import { setParams, openPanel, navigate } from './app.js';
import { minimap } from './minimap.js';
import { loadGone, renderGone } from './gone.js';

const ROW = 24;
// Finding cards shown before "Show n more": one row at 1024 px.
const FIRST_FINDINGS = 3;
// The fonts of .wf-dur and its badges (app.css), for measuring labels.
const DUR_FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const BADGE_FONT = '10px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const widths = new Map();
let measureCtx = null;
function textWidth(text, font) {
  const k = font[0] + text;
  let w = widths.get(k);
  if (w === undefined) {
    measureCtx = measureCtx || document.createElement('canvas').getContext('2d');
    measureCtx.font = font;
    w = measureCtx.measureText(text).width;
    if (widths.size > 5000) widths.clear();
    widths.set(k, w);
  }
  return w;
}
const esc = s => String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
let active = null; // the live view state, for onKey
// The page's and the waterfall's scroll positions across the redraw that
// follows the last page of a large trace.
let keepScroll = null;

export async function render({ match, params, root }) {
  // A 16-digit id may be the first half of a 128-bit id (shortened ids
  // copied from other tools): the server resolves it to a stored trace.
  if (match[1].length === 16) {
    const hit = await optional('/api/v1/traceids', { prefix: match[1].toLowerCase() }).then(b => b && b.trace_ids[0]).catch(() => null);
    if (hit) { navigate('/trace/' + hit + location.search, { replace: true }); return; }
  }
  const id = match[1].toLowerCase().padStart(32, '0');
  const t0 = performance.now();
  document.title = 'Trace ' + id.slice(0, 8) + ' · tracedx';
  const anaP = getAnalysis(id);
  anaP.catch(() => {});
  let trace;
  try {
    trace = await getTrace(id);
  } catch (e) {
    // Past its retention a trace's summary and findings remain: show them.
    const gone = e.status === 404 ? await loadGone(id).catch(() => null) : null;
    if (gone) { renderGone(id, gone, root); return; }
    root.append(el('div.error-box', el('strong', e.status === 404 ? 'Trace not found' : 'Could not load the trace'),
      el('p', e.status === 404 ? `No span of trace ${id} is stored (it may have expired, or not arrived yet).` : e.message)));
    return;
  }
  const tFetched = performance.now();
  // A trace over one page (query.max_trace_spans) draws its first page now
  // and fetches the rest in the background; with every page in, the view
  // is drawn again from the whole trace (its state is in the URL).
  const total = Math.max(trace.total_spans || 0, trace.span_count || 0, trace.spans.length);
  const paged = trace.truncated && trace.next ? el('div.note#trace-paging', { role: 'status' }) : null;
  const abort = new AbortController();
  if (paged) {
    const bar = el('progress', { max: String(Math.min(total, MAX_SPANS)), value: String(trace.spans.length) });
    const say = el('span');
    const show = n => {
      bar.value = n;
      say.textContent = `Large trace: ${total.toLocaleString('en')} spans. Showing the first ${trace.spans.length.toLocaleString('en')} (by start time) while the rest load: ${n.toLocaleString('en')} of ${Math.min(total, MAX_SPANS).toLocaleString('en')}…`;
    };
    show(trace.spans.length);
    paged.append(say, ' ', bar);
    loadRest(trace, show, abort.signal).then(full => {
      if (active !== S) return;
      setCached('t:' + id, full);
      // The redraw starts from an empty view: keep where the reader was.
      // The waterfall is the anchor: the paging note above it goes away.
      keepScroll = { id, wfTop: wf.getBoundingClientRect().top, top: body.scrollTop };
      navigate(location.pathname + location.search, { replace: true });
    }).catch(e => {
      if (e.name === 'AbortError') return;
      bar.remove();
      say.textContent = `Showing the first ${trace.spans.length.toLocaleString('en')} of ${total.toLocaleString('en')} spans: the rest could not be loaded (${e.message}).`;
    });
  }
  const model = buildModel(trace);
  const cp = criticalPath(model);
  const S = active = {
    id, model, cp, cpSet: withAncestors(cp.keys()), collapsed: new Set(), flat: [], sel: null, hl: new Set(),
    findingsBySpan: new Map(), findings: [], analysis: null, tab: params.get('tab') || 'waterfall', gapCache: new Map(),
  };
  const rootN = model.main;
  document.title = `${rootN ? rootN.service + ': ' + rootN.name : id.slice(0, 8)} · tracedx`;

  // Header.
  const errCount = model.nodes.filter(n => n.err).length;
  const services = new Set(model.nodes.map(n => n.service));
  root.append(el('div.trace-head',
    el('div', el('h1', rootN ? [el('span.svc-dot', { style: { background: svcColor(rootN.service) } }), rootN.service + ': ' + rootN.name] : 'Trace (no root span)'),
      el('div.ids', el('code#trace-id', traceId(id)),
        el('a', { href: `/compare?a=${id}` }, 'Compare with…'),
        rootN ? el('a#cmp-endpoint', { href: endpointCompare(rootN, model.duration), title: 'Compare this endpoint\'s traces like this one (failed, or as slow) with the others of the last hour, on the server' },
          rootN.err ? 'Failed vs successful' : 'Slow vs the rest') : null,
        rootN ? el('a', { href: `/search?service=${encodeURIComponent(rootN.service)}&operation=${encodeURIComponent(rootN.name)}` }, 'Similar traces') : null)),
    el('span.spacer'),
    el('div.facts', el('span', el('b', fmtMs(model.duration)), ' duration'), el('span', el('b', String(model.nodes.length)), total > model.nodes.length ? ` of ${total} spans` : ' spans'),
      el('span', el('b', String(services.size)), ' services'), el('span', el('b', String(model.maxDepth + 1)), ' depth'),
      el('span' + (errCount ? '.err' : ''), el('b', String(errCount)), ' errors'),
      el('span#trace-start', fmtTime(trace.start_time)))));

  if (paged) root.append(paged);
  else if (trace.capped) root.append(el('div.note#trace-paging', { role: 'status' },
    `Very large trace: showing its first ${trace.spans.length.toLocaleString('en')} spans by start time of ${total.toLocaleString('en')}; the API has them all (GET /api/v1/traces/${id}?offset=…).`));

  // Collapsible, and compact when open: the waterfall must stay above the fold.
  const whyCard = el('details.card.fold#why', { open: localStorage.getItem('tracedx-fold-why') === '1', ontoggle: e => localStorage.setItem('tracedx-fold-why', e.target.open ? '1' : '0') },
    el('summary', el('h2', 'Why')), el('div.loading', 'Analysing…'));
  const findCard = el('details.card.fold#findings', { hidden: true, open: localStorage.getItem('tracedx-fold-findings') !== '0', ontoggle: e => localStorage.setItem('tracedx-fold-findings', e.target.open ? '1' : '0') },
    el('summary', el('h2', 'Findings')), el('div'));
  root.append(whyCard, findCard);

  const tabs = el('div.tabs', { role: 'tablist' });
  const pane = el('div');
  const tabDefs = [['waterfall', 'Waterfall'], ['flame', 'Flame graph'], ['services', 'Services'], ['spans', 'Span list'], ['logs', 'Logs']];
  for (const [k, label] of tabDefs) {
    tabs.append(el('button', { type: 'button', role: 'tab', 'data-tab': k, 'aria-selected': String(S.tab === k), onclick: () => showTab(k) }, label));
  }
  root.append(tabs, pane);

  // Waterfall.
  const legend = el('div.legend', el('span', el('i.cp'), 'critical path'), el('span', el('i.gap'), 'idle gap (no child running)'),
    el('span', el('i.errb'), 'error'), el('span.spacer'),
    el('button', { type: 'button', onclick: () => { S.collapsed.clear(); refresh(); } }, 'Expand all'),
    el('button', { type: 'button', onclick: () => { collapseToCriticalPath(); } }, 'Critical path only'));
  const ticks = el('div.ticks');
  const grip = el('div.wf-grip', { title: 'Drag to resize the name column', role: 'separator', 'aria-orientation': 'vertical' });
  const head = el('div.wf-head', el('div.wf-namehead', 'Service · operation', grip), ticks);
  const spacer = el('div.wf-spacer');
  const body = el('div.wf-body', { role: 'tree', 'aria-label': 'Spans' }, spacer);
  const wf = el('div.wf', head, body);
  const T = Math.max(model.duration, 1e-6);
  // The visible time window (zoom): [S.v0, S.v1] ms from the trace start.
  S.v0 = 0; S.v1 = T;
  const pct = x => (x - S.v0) / (S.v1 - S.v0) * 100;
  // The lane width labels are placed for (durLabel).
  let laneW = 600, laneKnown = false;
  function measureLane() {
    // The lane is the timeline column of a row: the head's ticks minus the
    // body's scroll bar. Measured once on screen, then on resizes (tickRO),
    // so redraws do not force a layout.
    const w = ticks.clientWidth;
    laneKnown = w > 0;
    laneW = Math.max(40, w - Math.max(0, head.clientWidth - body.clientWidth));
  }
  // As many time ticks as fit the timeline's width (it narrows when the
  // span panel opens).
  function drawTicks() {
    measureLane();
    const nTicks = Math.max(2, Math.min(5, Math.floor((ticks.clientWidth || 900) / 110)));
    clear(ticks);
    for (let i = 0; i <= nTicks; i++) ticks.append(el('span', { style: { left: (i / nTicks * 100) + '%' } }, fmtMs(S.v0 + (S.v1 - S.v0) * i / nTicks)));
  }
  drawTicks();
  let tickW = 0;
  // Labels are placed for the lane's width: redraw the rows too.
  const tickRO = new ResizeObserver(() => { if (ticks.clientWidth !== tickW) { tickW = ticks.clientWidth; drawTicks(); if (S.flat.length) draw(true); } });
  tickRO.observe(ticks);
  // Minimap: every span at a glance; drag on it to zoom to a time range.
  const zoomInfo = el('span.small.muted#zoom-info');
  const resetZoom = el('button#zoom-reset', { type: 'button', hidden: true, onclick: () => setZoom(0, T) }, 'Reset zoom');
  const mini = minimap(model, T, { onZoom: (a, b) => setZoom(a, b), color: n => n.err ? 'var(--err)' : svcColor(n.service) });
  function setZoom(a, b) {
    if (b - a < T * 1e-4) return;
    S.v0 = Math.max(0, a); S.v1 = Math.min(T, b);
    const whole = S.v0 <= 0 && S.v1 >= T;
    resetZoom.hidden = whole;
    zoomInfo.textContent = whole ? '' : `${fmtMs(S.v0)} – ${fmtMs(S.v1)} of ${fmtMs(T)}`;
    mini.setWindow(S.v0, S.v1);
    setParams({ zoom: whole ? '' : `${S.v0.toFixed(3)}-${S.v1.toFixed(3)}` });
    drawTicks();
    draw(true);
  }
  S.setZoom = setZoom;
  // Find in trace: name, service, attribute keys and values.
  const findBox = el('input#find', { type: 'search', placeholder: 'Find: name, service, attribute…', 'aria-label': 'Find in trace', autocomplete: 'off', spellcheck: false,
    oninput: () => runFind(), onkeydown: e => { if (e.key === 'Enter') { e.preventDefault(); stepFind(e.shiftKey ? -1 : 1); } } });
  const findCount = el('span.small.muted#find-count');
  const findBar = el('div.findbar', findBox,
    el('button#find-prev', { type: 'button', title: 'Previous match (Shift+Enter)', 'aria-label': 'Previous match', onclick: () => stepFind(-1) }, '↑'),
    el('button#find-next', { type: 'button', title: 'Next match (Enter)', 'aria-label': 'Next match', onclick: () => stepFind(1) }, '↓'), findCount);
  S.matches = []; S.matchSet = new Set(); S.mi = -1;
  function runFind() {
    const q = findBox.value.trim();
    S.matches = q ? model.nodes.filter(n => spanMatches(n, q)).sort((a, b) => a.start - b.start) : [];
    S.matchSet = new Set(S.matches);
    S.mi = -1;
    findCount.textContent = q ? (S.matches.length ? `${S.matches.length} match${S.matches.length > 1 ? 'es' : ''}` : 'no match') : '';
    draw(true);
  }
  function stepFind(d) {
    if (!S.matches.length) return;
    S.mi = (S.mi + d + S.matches.length) % S.matches.length;
    findCount.textContent = `${S.mi + 1} of ${S.matches.length}`;
    select(S.matches[S.mi], false, false);
  }
  const downloadLink = () => el('a.button.download-json', { href: '#', download: `trace-${id}.json`, title: 'Download every span as JSON',
    onclick: e => { e.currentTarget.href = URL.createObjectURL(new Blob([JSON.stringify(trace, null, 1)], { type: 'application/json' })); } }, 'Download JSON');
  const download = downloadLink();
  const wfPane = el('div', el('div.toolbar', findBar, el('span.spacer'), zoomInfo, resetZoom, download), mini.node, legend, wf);
  // Name column: drag to resize, remembered.
  const savedW = Number(localStorage.getItem('tracedx-namew'));
  if (savedW >= 160) wf.style.setProperty('--namew', savedW + 'px');
  grip.addEventListener('pointerdown', e => {
    e.preventDefault();
    grip.setPointerCapture(e.pointerId);
    const x0 = wf.getBoundingClientRect().left;
    const move = ev => {
      const w = Math.round(Math.max(160, Math.min(wf.clientWidth * 0.75, ev.clientX - x0)));
      wf.style.setProperty('--namew', w + 'px');
      localStorage.setItem('tracedx-namew', String(w));
    };
    grip.addEventListener('pointermove', move);
    grip.addEventListener('pointerup', () => grip.removeEventListener('pointermove', move), { once: true });
  });

  function gapsOf(n) {
    let g = S.gapCache.get(n);
    if (!g) { g = idleGaps(n, Math.max(T * 0.01, n.dur * 0.1)); S.gapCache.set(n, g); }
    return g;
  }

  function rowHTML(n, idx) {
    const l = pct(n.start), w = Math.max(pct(n.end) - l, 0.05);
    const cls = ['wf-row'];
    if (n === S.sel) cls.push('sel');
    if (n.err) cls.push('err');
    if (S.cpSet.has(n)) cls.push('cp');
    if (S.hl.has(n.id)) cls.push('hl');
    if (S.matchSet.has(n)) cls.push('match');
    if (S.mi >= 0 && S.matches[S.mi] === n) cls.push('match-cur');
    const color = svcColor(n.service);
    const fs = S.findingsBySpan.get(n.id);
    const hasKids = n.children.length > 0;
    const exp = hasKids ? (S.collapsed.has(n) ? 'false' : 'true') : null;
    let h = `<div class="${cls.join(' ')}" style="top:${idx * ROW}px" data-i="${idx}" role="treeitem" aria-level="${n.depth + 1}"${exp ? ` aria-expanded="${exp}"` : ''} aria-selected="${n === S.sel}" tabindex="${n === S.sel ? 0 : -1}" data-span="${n.id}">`;
    h += `<div class="wf-name" style="padding-left:${4 + Math.min(n.depth, 40) * 12}px">`;
    h += `<span class="tw" data-toggle="1">${hasKids ? (S.collapsed.has(n) ? '▸' : '▾') : ''}</span>`;
    if (S.cpSet.has(n)) h += '<span class="cpmark" title="on the critical path"></span>';
    h += `<span class="svc-dot" style="background:${color}"></span><span class="svc">${esc(n.service)}</span>&nbsp;<span class="op" title="${esc(n.name)}">${esc(n.name)}</span>`;
    if (n.err) h += '<span class="emark" title="error">!</span>';
    // Finding badges ride next to the duration in the timeline, so the name
    // column keeps the whole name; the count says how many more.
    let tags = '';
    if (fs) {
      const f = fs[0];
      tags += `<span class="badge fmark sev-${esc(f.severity)}" title="${esc(fs.map(x => x.title).join('\n'))}">${esc(f.kind.replace(/_/g, ' '))}</span>`;
      if (fs.length > 1) tags += `<span class="badge plain fmark" title="${esc(fs.slice(1).map(x => x.kind).join(', '))}">+${fs.length - 1}</span>`;
    }
    if (hasKids && S.collapsed.has(n)) h += `<span class="badge plain fold">+${n.children.length}</span>`;
    h += '</div><div class="wf-lane">';
    // Gaps narrower than a few pixels are not drawn (a parent of 100
    // queries has 100 of them).
    const minGap = (S.v1 - S.v0) * 0.004;
    for (const [a, b] of gapsOf(n)) if (b - a >= minGap && b > S.v0 && a < S.v1) h += `<div class="wf-gap" style="left:${pct(a)}%;width:${pct(b) - pct(a)}%" title="idle ${esc(fmtMs(b - a))}"></div>`;
    h += `<div class="wf-bar" style="left:${l}%;width:${w}%;background:${n.err ? 'var(--err)' : color}"></div>`;
    const segs = S.cpSet.has(n) ? cp.get(n) : null;
    if (segs) for (const [a, b] of segs) h += `<div class="wf-cp" style="left:${pct(a)}%;width:${Math.max(pct(b) - pct(a), 0.05)}%"></div>`;
    h += durLabel(n, fs, l, l + w, tags);
    h += '</div></div>';
    return h;
  }

  // The duration (and the finding badges) go right of the bar, else left of
  // it, else inside its right end, where the label fits the lane: the lane
  // clips, and a label cut at 1024 px with the span panel open read "4.0 ms"
  // for "64.0 ms". Widths are measured with a canvas, not the DOM, so a
  // frame does not wait for layout.
  function durLabel(n, fs, l, end, tags) {
    const dur = esc(fmtMs(n.dur));
    let width = textWidth(fmtMs(n.dur), DUR_FONT);
    if (fs) width += 4 + textWidth(fs[0].kind.replace(/_/g, ' '), BADGE_FONT) + 12 + (fs.length > 1 ? 4 + textWidth(`+${fs.length - 1}`, BADGE_FONT) + 12 : 0);
    // Badges are also in the span panel and the findings: a lane too narrow
    // for both keeps the duration.
    if (width > laneW - 8) { tags = ''; width = textWidth(fmtMs(n.dur), DUR_FONT); }
    width += 2;
    const lx = Math.max(0, l) / 100 * laneW, ex = Math.min(100, end) / 100 * laneW;
    if (ex + 4 + width <= laneW) return `<span class="wf-dur" style="left:calc(${Math.max(0, end)}% + 4px)">${dur}${tags}</span>`;
    if (lx - 4 - width >= 0) return `<span class="wf-dur" style="right:calc(${100 - l}% + 4px)">${dur}${tags}</span>`;
    if (ex - lx >= width + 8) return `<span class="wf-dur in" style="right:calc(${Math.max(0, 100 - end)}% + 4px)">${dur}${tags}</span>`;
    // Fits nowhere beside the bar: over it, inside the lane, on a backing.
    return `<span class="wf-dur over" style="left:${Math.max(0, Math.min(laneW - width, ex + 4 - width))}px">${dur}${tags}</span>`;
  }

  // Rows are keyed by index: scrolling adds the rows that come into view and
  // drops those that leave, so a frame builds a handful of rows, not all.
  let shown = new Map(), lastRange = '';
  function draw(force) {
    const top = body.scrollTop, h = body.clientHeight || 600;
    const from = Math.max(0, Math.floor(top / ROW) - 10), to = Math.min(S.flat.length, Math.ceil((top + h) / ROW) + 10);
    const key = from + ':' + to;
    if (!force && key === lastRange) return;
    lastRange = key;
    if (force) {
      if (!laneKnown) measureLane();
      let html = '';
      for (let i = from; i < to; i++) html += rowHTML(S.flat[i], i);
      spacer.innerHTML = html;
      shown = new Map([...spacer.children].map(r => [Number(r.dataset.i), r]));
      return;
    }
    for (const [i, r] of shown) if (i < from || i >= to) { r.remove(); shown.delete(i); }
    let html = '';
    for (let i = from; i < to; i++) if (!shown.has(i)) html += rowHTML(S.flat[i], i);
    if (!html) return;
    const tpl = document.createElement('template');
    tpl.innerHTML = html;
    for (const r of [...tpl.content.children]) shown.set(Number(r.dataset.i), r);
    spacer.append(tpl.content);
  }
  function refresh() {
    S.flat = flatten(model, S.collapsed);
    spacer.style.height = (S.flat.length * ROW) + 'px';
    draw(true);
  }
  let raf = 0;
  body.addEventListener('scroll', () => { if (!raf) raf = requestAnimationFrame(() => { raf = 0; draw(false); }); }, { passive: true });

  body.addEventListener('click', e => {
    const row = e.target.closest('.wf-row');
    if (!row) return;
    const n = S.flat[Number(row.dataset.i)];
    if (e.target.closest('[data-toggle]') && n.children.length) { toggle(n); return; }
    select(n, true);
  });
  body.addEventListener('dblclick', e => {
    const row = e.target.closest('.wf-row');
    if (row) toggle(S.flat[Number(row.dataset.i)]);
  });

  function toggle(n, open) {
    if (!n.children.length) return;
    const isCollapsed = S.collapsed.has(n);
    if (open === true && !isCollapsed) return;
    if (open === false && isCollapsed) return;
    if (isCollapsed) S.collapsed.delete(n); else S.collapsed.add(n);
    refresh();
  }
  function collapseToCriticalPath() {
    S.collapsed.clear();
    for (const n of model.nodes) if (n.children.length && !n.children.some(c => S.cpSet.has(c))) S.collapsed.add(n);
    refresh();
  }
  function reveal(n) {
    let changed = false;
    for (let p = n.parent; p; p = p.parent) if (S.collapsed.delete(p)) changed = true;
    if (changed) refresh();
    const idx = S.flat.indexOf(n);
    if (idx < 0) return;
    const top = idx * ROW;
    if (top < body.scrollTop || top > body.scrollTop + body.clientHeight - ROW) body.scrollTop = Math.max(0, top - body.clientHeight / 3);
  }
  function select(n, openDetail, focus = true, scrollPage = true) {
    S.sel = n;
    setParams({ span: n ? n.id : '' });
    if (n) reveal(n);
    draw(true);
    const r = n && spacer.querySelector(`.wf-row[data-span="${n.id}"]`);
    if (r && focus) r.focus({ preventScroll: true });
    if (r && scrollPage) intoWindow(r);
    if (n && openDetail) showSpan(n);
  }
  // The waterfall scrolls inside its own box, and the cards above it may be
  // tall (findings that wrap): the page scrolls too when the row is below
  // the window or under the sticky headers.
  function intoWindow(r) {
    const b = r.getBoundingClientRect(), under = head.getBoundingClientRect().bottom;
    if (b.top < under || b.bottom > innerHeight) scrollTo({ top: scrollY + b.top - Math.max(under + ROW, innerHeight / 3), behavior: 'instant' });
  }
  S.select = select; S.toggle = toggle; S.body = body;

  // Span detail panel.
  let logsP = null;
  function showSpan(n) {
    const s = n.span;
    const kv = list => {
      if (!list || !list.length) return el('p.muted.small', 'none');
      return el('table.kv', el('tbody', list.map(a => el('tr', el('td', { title: a.key }, keyBreaks(a.key)), el('td', attrValue(a))))));
    };
    const fs = S.findingsBySpan.get(n.id) || [];
    const exc = (s.events || []).filter(ev => ev.name === 'exception');
    const logsBox = el('div', el('p.muted.small', 'Loading logs…'));
    const content = el('div#span-detail',
      el('h2', el('span.svc-dot', { style: { background: svcColor(n.service) } }), n.service + ': ' + n.name),
      el('div.facts', el('span', el('b', fmtMs(n.dur))), el('span', 'at ' + fmtMs(n.start)), el('span', s.kind),
        el('span' + (n.err ? '.err' : ''), 'status ' + (s.status?.code || 'unset') + (s.status?.message ? ': ' + s.status.message : '')),
        S.cpSet.has(n) ? el('span', el('b', fmtMs((cp.get(n) || []).reduce((a, [x, y]) => a + y - x, 0))), ' on the critical path') : null,
        el('span', 'self ' + fmtMs(selfTime(n)))),
      fs.length ? [el('h3', 'Findings on this span'), fs.map(f => findingCard(f, false))] : null,
      exc.length ? [el('h3', 'Exception'), exc.map(ev => eventBox(ev))] : null,
      el('h3', 'Attributes'), kv(s.attributes),
      el('h3', 'Resource'), kv(s.resource),
      (s.events || []).length ? [el('h3', `Events (${s.events.length})`), s.events.map(ev => eventBox(ev))] : null,
      (s.links || []).length ? [el('h3', 'Links'), el('ul', s.links.map(l => el('li', traceId(l.trace_id, { href: `/trace/${l.trace_id}?span=${l.span_id}` }), ' / ' + l.span_id)))] : null,
      el('h3', 'Logs'), logsBox,
      el('h3', 'Identity'),
      el('table.kv', el('tbody',
        el('tr', el('td', 'span_id'), el('td', s.span_id)), el('tr', el('td', 'parent'), el('td', s.parent_span_id || '(root)')),
        el('tr', el('td', 'scope'), el('td', (s.scope?.name || '') + (s.scope?.version ? ' ' + s.scope.version : ''))),
        el('tr', el('td', 'start'), el('td', fmtTime(s.start_unix_nano / 1e6))))));
    openPanel(content, { label: 'Span details', onClose: () => { const r = spacer.querySelector('.wf-row.sel'); if (r) r.focus({ preventScroll: true }); } });
    if (!logsP) logsP = optional(`/api/v1/traces/${id}/logs`).catch(() => null);
    logsP.then(b => {
      if (!b) { clear(logsBox).append(el('p.muted.small', 'Logs are not available in this build.')); return; }
      const mine = (b.logs || []).filter(l => l.span_id === n.id);
      const loose = (b.logs || []).filter(l => !l.span_id);
      clear(logsBox).append(mine.length ? el('table.logs', el('tbody', mine.map(l => logRow(l, false)))) : el('p.muted.small', 'No logs for this span.'),
        loose.length ? el('p.small', el('button.linkish', { type: 'button', onclick: () => showTab('logs') }, `${loose.length} log${loose.length > 1 ? 's' : ''} of this trace without a span →`)) : null);
    });
  }
  function eventBox(ev) {
    const m = new Map((ev.attributes || []).map(a => [a.key, attrValue(a)]));
    if (ev.name === 'exception') {
      return el('div.event.exception', el('b', (m.get('exception.type') || 'exception') + ': '), m.get('exception.message') || '',
        m.get('exception.stacktrace') ? el('pre', m.get('exception.stacktrace')) : null);
    }
    return el('div.event', el('b', ev.name), el('span.muted.small', ' ' + fmtTime(ev.time_unix_nano ? ev.time_unix_nano / 1e6 : ev.time)), (ev.attributes || []).length ? el('table.kv', el('tbody', ev.attributes.map(a => el('tr', el('td', a.key), el('td', attrValue(a)))))) : null);
  }

  function findingCard(f, clickable = true) {
    const card = el('div.finding.sev-' + f.severity, { tabindex: '0', 'data-row': '', 'data-kind': f.kind },
      el('div.row', badge(f.kind, f.severity), f.impact_ms ? el('span.small', el('b', fmtMs(f.impact_ms)), ' on the critical path') : null),
      el('div.t', { title: f.title }, f.title), f.fix ? el('div.fix', 'Fix: ' + f.fix) : null,
      !clickable && f.evidence && Object.keys(f.evidence).length ? el('details', el('summary.small.muted', 'evidence'), el('pre.small.mono', JSON.stringify(f.evidence, null, 2))) : null);
    if (clickable) {
      const go = () => {
        S.hl = new Set(f.span_ids || []);
        for (const c of findCard.querySelectorAll('.finding')) c.classList.toggle('active', c === card);
        const first = (f.span_ids || []).map(sid => model.byId.get(sid)).filter(Boolean).sort((a, b) => a.start - b.start)[0];
        if (S.tab !== 'waterfall') showTab('waterfall');
        if (first) select(first, true, false); else draw(true);
        // Bring the highlighted rows on screen, not just into the list.
        const r = wf.getBoundingClientRect();
        if (r.top < 60 || r.top > innerHeight * 0.5) scrollTo({ top: scrollY + r.top - 56 - 34, behavior: 'instant' });
      };
      card.addEventListener('click', go);
      card.addEventListener('keydown', e => { if (e.key === 'Enter') go(); });
    }
    return card;
  }

  // Tabs.
  let flameCleanup = null;
  function showTab(k) {
    S.tab = k;
    setParams({ tab: k === 'waterfall' ? '' : k });
    for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.tab === k));
    if (flameCleanup) { flameCleanup(); flameCleanup = null; }
    clear(pane);
    if (k === 'waterfall') { pane.append(wfPane); draw(true); }
    else if (k === 'flame') { const f = flameGraph(); pane.append(f.node); flameCleanup = f.cleanup; f.draw(); }
    else if (k === 'spans') pane.append(spanList());
    else if (k === 'logs') pane.append(logsTab());
    else pane.append(statsTable());
  }

  function statsTable() {
    const rows = serviceStats(model, cp);
    const tb = el('tbody');
    for (const r of rows) {
      tb.append(el('tr',
        el('td', el('span.svc-dot', { style: { background: svcColor(r.service) } }), r.service),
        el('td.num', String(r.spans)), el('td.num' + (r.errors ? '.err' : ''), String(r.errors)), el('td.num', String(r.ops.size)),
        el('td.num', fmtMs(r.total)), el('td.num', fmtMs(r.self)), el('td.num', fmtMs(r.cp)), el('td.num', fmtPct(r.cp / T)),
        el('td', el('span.lift', { style: { width: Math.round(r.cp / T * 120) + 'px', background: svcColor(r.service) } }))));
    }
    return el('div.card#service-stats', el('table',
      el('thead', el('tr', el('th', 'Service'), el('th.num', 'Spans'), el('th.num', 'Errors'), el('th.num', 'Operations'), el('th.num', 'Span time'),
        el('th.num', 'Self time'), el('th.num', 'Critical path'), el('th.num', 'Share'), el('th', ''))), tb),
      el('p.small.muted', 'Self time: span time with no child running. Critical path: time this service decided the end-to-end duration.'));
  }

  function flameGraph() {
    const H = 20;
    const top = flameTree(model);
    const canvas = el('canvas', { role: 'img', 'aria-label': 'Flame graph: spans merged by service and operation along their call path; width is total time' });
    const tip = el('div.tip', { hidden: true });
    const wrap = el('div.flame-wrap#flame', el('p.small.muted.flame-note', 'Spans merged by service and operation along their call path; width is the time spent, children sorted by time. Click a frame to find its spans.'), canvas);
    document.body.append(tip);
    let frames = [];
    const drawF = () => {
      const width = wrap.clientWidth || 1000;
      frames = layoutFlame(top, width);
      canvas.dataset.frames = frames.length;
      // The widest frames, for screen readers (and tests): the canvas has no text.
      canvas.setAttribute('aria-label', 'Flame graph, spans merged by service and operation: ' +
        frames.filter(q => q.w > 36).slice(0, 12).map(q => `${q.f.service}: ${q.f.name}${q.f.count > 1 ? ' ×' + q.f.count : ''} ${fmtMs(q.f.total)}`).join('; '));
      const depth = frames.reduce((a, r) => Math.max(a, r.d), 0);
      const dpr = window.devicePixelRatio || 1;
      const height = (depth + 1) * H + 4;
      canvas.width = width * dpr; canvas.height = height * dpr;
      canvas.style.height = height + 'px';
      const g = canvas.getContext('2d');
      g.scale(dpr, dpr);
      const errC = getComputedStyle(document.documentElement).getPropertyValue('--err').trim();
      g.font = '11.5px system-ui, sans-serif';
      g.textBaseline = 'middle';
      for (const { f, x, w, d } of frames) {
        const y = d * H + 2, c = svcColor(f.service);
        g.fillStyle = c;
        g.fillRect(x, y, Math.max(w - (w > 2 ? 1 : 0), 0.5), H - 2);
        if (f.errors) { g.fillStyle = errC; g.fillRect(x, y + H - 5, w, 3); }
        if (w > 36) {
          g.fillStyle = textOn(c);
          g.save(); g.beginPath(); g.rect(x + 2, y, w - 4, H); g.clip();
          g.fillText(`${f.service}: ${f.name}${f.count > 1 ? ' ×' + f.count : ''}`, x + 4, y + H / 2 - 1);
          g.restore();
        }
      }
    };
    const at = ev => {
      const r = canvas.getBoundingClientRect();
      const d = Math.floor((ev.clientY - r.top - 2) / H), x = ev.clientX - r.left;
      return frames.find(q => q.d === d && x >= q.x && x < q.x + q.w) || null;
    };
    canvas.addEventListener('mousemove', ev => {
      const q = at(ev);
      if (!q) { tip.hidden = true; return; }
      const f = q.f;
      tip.hidden = false;
      tip.textContent = `${f.service}: ${f.name} — ${f.count} span${f.count > 1 ? 's' : ''}, ${fmtMs(f.total)} total, ${fmtMs(f.self)} self${f.errors ? `, ${f.errors} failed` : ''}`;
      tip.style.left = Math.min(ev.clientX + 12, innerWidth - 300) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
    });
    canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
    canvas.addEventListener('click', ev => {
      const q = at(ev);
      if (!q) return;
      showTab('waterfall');
      findBox.value = q.f.name;
      runFind();
      stepFind(1);
    });
    const onResize = () => drawF();
    window.addEventListener('resize', onResize);
    window.addEventListener('themechange', onResize);
    return { node: wrap, draw: drawF, cleanup: () => { tip.remove(); window.removeEventListener('resize', onResize); window.removeEventListener('themechange', onResize); } };
  }

  // Every span as a sortable table (the longest first), and the JSON.
  function spanList() {
    const cols = [['service', 'Service', n => n.service], ['name', 'Operation', n => n.name], ['start', 'Start', n => n.start],
      ['dur', 'Duration', n => n.dur], ['self', 'Self', n => selfTime(n)], ['status', 'Status', n => (n.err ? 'error' : n.span.status?.code || 'unset')]];
    let by = 'dur', desc = true;
    const LIMIT = 1000;
    const tb = el('tbody');
    const thead = el('tr');
    const drawRows = () => {
      const get = cols.find(c => c[0] === by)[2];
      const rows = [...model.nodes].sort((a, b) => { const x = get(a), y = get(b); return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1); }).slice(0, LIMIT);
      clear(tb).append(...rows.map(n => el('tr', { tabindex: '0', 'data-row': '', 'data-span': n.id, onclick: () => { showTab('waterfall'); select(n, true); } },
        el('td', el('span.svc-dot', { style: { background: svcColor(n.service) } }), n.service), el('td.op', n.name), el('td.num', fmtMs(n.start)),
        el('td.num', fmtMs(n.dur)), el('td.num', fmtMs(selfTime(n))), el('td' + (n.err ? '.err' : ''), n.err ? 'error' : n.span.status?.code || 'unset'),
        el('td.mono.small', n.id))));
      clear(thead).append(...cols.map(([k, label]) => el('th' + (['start', 'dur', 'self'].includes(k) ? '.num' : ''), { 'aria-sort': k === by ? (desc ? 'descending' : 'ascending') : 'none' },
        el('button.linkish', { type: 'button', onclick: () => { if (by === k) desc = !desc; else { by = k; desc = ['dur', 'self'].includes(k); } drawRows(); } }, label + (k === by ? (desc ? ' ↓' : ' ↑') : '')))),
      el('th', 'Span id'));
    };
    drawRows();
    return el('div.card#span-list', el('div.row', el('span.muted.small', model.nodes.length > LIMIT ? `The first ${LIMIT} of ${model.nodes.length} spans in this order; the JSON has them all.` : `${model.nodes.length} spans.`),
      el('span.spacer'), downloadLink()), el('table', el('thead', thead), tb));
  }

  // Logs of the trace, those without a span id too, with time and attributes.
  function logsTab() {
    const box = el('div.card#trace-logs', el('div.loading', 'Loading logs…'));
    if (!logsP) logsP = optional(`/api/v1/traces/${id}/logs`).catch(() => null);
    logsP.then(b => {
      clear(box);
      if (!b) { box.append(el('p.muted', 'Logs are not available in this build.')); return; }
      const logs = [...(b.logs || [])].sort((x, y) => x.time_unix_nano - y.time_unix_nano);
      if (!logs.length) { box.append(el('p.muted', 'No logs were received for this trace.')); return; }
      box.append(el('table.logs', el('thead', el('tr', el('th', 'Time'), el('th', 'Level'), el('th', 'Service'), el('th', 'Message'), el('th', 'Span'))),
        el('tbody', logs.map(l => logRow(l, true)))));
    });
    return box;
  }
  function logRow(l, withSpan) {
    const n = l.span_id ? model.byId.get(l.span_id) : null;
    const attrs = Object.entries(l.attributes || {});
    return el('tr', { 'data-log-span': l.span_id || '' },
      el('td.small.nowrap', fmtTime(l.time_unix_nano / 1e6)), el('td.small', l.severity_text || String(l.severity_number || '')), el('td.small', l.service),
      el('td', el('div.mono.small', l.body), attrs.length ? el('div.small.muted.mono', attrs.map(([k, v]) => `${k}=${v}`).join('  ')) : null),
      withSpan ? el('td.small', n ? el('button.linkish', { type: 'button', onclick: () => { showTab('waterfall'); select(n, true); } }, n.name) : el('span.muted', l.span_id ? l.span_id : 'no span')) : null);
  }

  // First paint: waterfall (or the tab in the URL), then analysis.
  const z = /^([\d.]+)-([\d.]+)$/.exec(params.get('zoom') || '');
  if (z) setZoom(Number(z[1]), Number(z[2]));
  refresh();
  showTab(S.tab);
  const want = params.get('span');
  // A shared link opens at the top of the page, the span in its panel.
  if (want && model.byId.has(want)) select(model.byId.get(want), true, false, false);
  const kept = keepScroll && keepScroll.id === id ? keepScroll : null;
  keepScroll = null;
  if (kept) { body.scrollTop = kept.top; draw(true); }
  requestAnimationFrame(() => {
    // After the cached analysis has filled the cards above the waterfall.
    if (kept) scrollTo({ top: scrollY + wf.getBoundingClientRect().top - kept.wfTop, behavior: 'instant' });
    const tDrawn = performance.now();
    window.__tracedxPerf = { traceId: id, spans: model.nodes.length, fetchMs: tFetched - t0, renderMs: tDrawn - tFetched, totalMs: tDrawn - t0 };
    document.body.dataset.traceReady = id;
  });

  anaP.then(a => {
    if (active !== S) return;
    S.analysis = a;
    // The server's critical path decides which spans are on it.
    if ((a.critical_path || []).length) S.cpSet = withAncestors(a.critical_path.map(p => model.byId.get(p.span_id)).filter(Boolean));
    S.findings = [...(a.findings || [])].sort((x, y) => sev(y.severity) - sev(x.severity) || (y.impact_ms || 0) - (x.impact_ms || 0));
    for (const f of S.findings) for (const sid of f.span_ids || []) (S.findingsBySpan.get(sid) || S.findingsBySpan.set(sid, []).get(sid)).push(f);
    const why = a.why || [];
    // The first sentence is the summary line; the chain unfolds under it.
    whyCard.firstChild.replaceWith(el('summary', el('h2', 'Why'), el('span.why-first', why[0] || (S.findings.length ? 'See the findings below.' : 'No problem found in this trace.'))));
    whyCard.lastChild.replaceWith(why.length > 1 ? el('ol.why', why.slice(1).map(w => el('li', w))) : el('div'));
    // Stored findings are the record; say when today's baselines would differ.
    if (a.note) whyCard.append(el('p.muted.small', { 'data-rejudged': String((a.rejudged || []).length) }, a.note));
    if (S.findings.length) {
      findCard.hidden = false;
      findCard.firstChild.firstChild.textContent = `Findings (${S.findings.length})`;
      // One row of cards with whole titles; the rest on demand: the
      // waterfall must stay in view.
      const strip = el('div.findings-strip', S.findings.slice(0, FIRST_FINDINGS).map(f => findingCard(f)));
      findCard.lastChild.replaceWith(strip);
      if (S.findings.length > FIRST_FINDINGS) {
        const more = el('button#findings-more', { type: 'button', onclick: () => { strip.append(...S.findings.slice(FIRST_FINDINGS).map(f => findingCard(f))); more.remove(); } },
          `Show ${S.findings.length - FIRST_FINDINGS} more`);
        findCard.append(more);
      }
    }
    if (S.tab === 'waterfall') draw(true); else showTab(S.tab);
    document.body.dataset.analysisReady = id;
  }).catch(e => {
    whyCard.lastChild.replaceWith(el('p.muted', 'Analysis unavailable: ' + e.message));
    whyCard.open = true;
  });

  return () => { abort.abort(); tickRO.disconnect(); if (flameCleanup) flameCleanup(); if (active === S) active = null; };
}

// The spans a browser tab holds: beyond this a trace is shown cut, with a note.
const MAX_SPANS = 200000;

/** The whole trace from its first page: the other pages one after the other, reporting progress. */
async function loadRest(first, progress, signal) {
  const spans = first.spans.slice();
  let next = first.next;
  while (next && spans.length < MAX_SPANS) {
    const page = await get(next, null, { signal });
    for (const sp of page.spans || []) spans.push(sp);
    progress(spans.length);
    next = page.truncated && (page.spans || []).length ? page.next : null;
  }
  return { ...first, spans, truncated: false, next: undefined, capped: !!next, offset: 0, limit: spans.length };
}

// A span whose child is on the critical path is on it too, even when it
// spends no time of its own there.
function withAncestors(nodes) {
  const set = new Set();
  for (let n of nodes) for (; n && !set.has(n); n = n.parent) set.add(n);
  return set;
}

/** An attribute key that may break after its dots (not inside a word) in a narrow column. */
function keyBreaks(key) {
  const parts = String(key).split('.');
  return parts.flatMap((p, i) => i < parts.length - 1 ? [p + '.', document.createElement('wbr')] : [p]);
}

function sev(s) { return { critical: 3, warning: 2, info: 1 }[s] || 0; }

export function onKey(e) {
  const S = active;
  if (!S || S.tab !== 'waterfall') return false;
  const i = S.sel ? S.flat.indexOf(S.sel) : -1;
  switch (e.key) {
    case 'j': case 'ArrowDown':
      if (e.key === 'ArrowDown' && !(document.activeElement && document.activeElement.closest('.wf-body'))) return false;
      S.select(S.flat[Math.min(S.flat.length - 1, i + 1)], false); break;
    case 'k': case 'ArrowUp':
      if (e.key === 'ArrowUp' && !(document.activeElement && document.activeElement.closest('.wf-body'))) return false;
      S.select(S.flat[Math.max(0, i - 1)], false); break;
    case 'Enter': case 'o':
      if (!S.sel || (document.activeElement && document.activeElement.closest('.finding'))) return false;
      S.select(S.sel, true); break;
    case 'ArrowLeft': case 'h':
      if (!S.sel) return false;
      if (S.sel.children.length && !S.collapsed.has(S.sel)) S.toggle(S.sel, false); else if (S.sel.parent) S.select(S.sel.parent, false);
      break;
    case 'ArrowRight': case 'l':
      if (!S.sel) return false;
      S.toggle(S.sel, true); break;
    default: return false;
  }
  e.preventDefault();
  return true;
}

/** The group comparison of this trace's endpoint that its own shape suggests. */
function endpointCompare(root, durMs) {
  const p = new URLSearchParams({ service: root.service, operation: root.name, start: '1h' });
  if (root.err) { p.set('a_status', 'error'); p.set('b_status', 'ok'); }
  else {
    const t = Math.round(durMs * 0.8 * 1000) / 1000;
    p.set('a_min_duration', String(t));
    p.set('b_max_duration', String(Math.max(0, t - 0.001)));
  }
  return '/compare?' + p;
}
