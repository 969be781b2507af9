// Small DOM and formatting helpers shared by every view.

/** el('div.cls#id', {attrs}, ...children): tiny hyperscript. */
export function el(spec, attrs, ...kids) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec) || [];
  const node = document.createElement(m[1] || 'div');
  for (const part of (m[2] || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') node.classList.add(part.slice(1)); else node.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) { kids.unshift(attrs); attrs = null; }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(node.style, v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k in node && k !== 'list' && k !== 'form') node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  append(node, kids);
  return node;
}

function append(node, kids) {
  for (const k of kids) {
    if (k == null || k === false) continue;
    if (Array.isArray(k)) append(node, k);
    else node.append(k instanceof Node ? k : String(k));
  }
}

const SVGNS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs = {}, ...kids) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v); else n.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k != null) n.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return n;
}

export function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }

export function fmtMs(ms) {
  if (ms == null || isNaN(ms)) return '–';
  const a = Math.abs(ms);
  if (a === 0) return '0 ms';
  if (a < 1) return (ms * 1000).toFixed(a < 0.01 ? 1 : 0) + ' µs';
  if (a < 10) return ms.toFixed(2) + ' ms';
  if (a < 1000) return ms.toFixed(a < 100 ? 1 : 0) + ' ms';
  if (a < 60000) return (ms / 1000).toFixed(a < 10000 ? 2 : 1) + ' s';
  return (ms / 60000).toFixed(1) + ' min';
}

export function fmtPct(r, digits = 1) {
  if (r == null || isNaN(r)) return '–';
  const p = r * 100;
  return (p > 0 && p < 0.1 ? '<0.1' : p.toFixed(p >= 10 ? 0 : digits)) + ' %';
}

// rateUnit picks one unit for a column of rates (per second from the API):
// a column mixing /s, /min and /h reads wrong at a glance. The largest
// value decides, so a handful of calls an hour still reads "3.0/h".
export function rateUnit(perSecs) {
  const max = Math.max(0, ...perSecs.filter(v => v > 0 && isFinite(v)));
  if (max > 0 && max < 0.1 / 60) return 'h';
  if (max > 0 && max < 0.1) return 'min';
  return 's';
}

const secondsPer = { s: 1, min: 60, h: 3600 };

// fmtRate formats a per-second rate in unit (default: the value's own).
export function fmtRate(perSec, unit) {
  if (perSec == null || isNaN(perSec)) return '–';
  const u = secondsPer[unit] ? unit : rateUnit([perSec]);
  const v = perSec * secondsPer[u];
  if (v === 0) return '0/' + u;
  if (v >= 10) return v.toFixed(0) + '/' + u;
  if (v >= 0.1) return v.toFixed(u === 's' ? 2 : 1) + '/' + u;
  return String(Number(v.toPrecision(2))) + '/' + u;
}

export function fmtNum(n) { return n == null ? '–' : Number(n).toLocaleString('en-US'); }

// One time format everywhere, with its zone: UTC or the browser's local
// time (the header switch, remembered).
export function timeZone() {
  try { return localStorage.getItem('tracedx-tz') === 'utc' ? 'utc' : 'local'; } catch { return 'local'; }
}
export function setTimeZone(z) {
  try { localStorage.setItem('tracedx-tz', z); } catch { /* private mode */ }
  window.dispatchEvent(new Event('tzchange'));
}
function zoneName(d) {
  const off = -d.getTimezoneOffset();
  if (off === 0) return 'UTC';
  const p = n => String(Math.floor(Math.abs(n))).padStart(2, '0');
  return 'UTC' + (off > 0 ? '+' : '−') + p(off / 60) + (off % 60 ? ':' + p(off % 60) : '');
}
/** "2026-12-06 02:50:24.123 UTC" (zone always shown); short: time of day only. */
export function fmtTime(t, { short = false } = {}) {
  const d = t instanceof Date ? t : new Date(typeof t === 'string' && /^\d+$/.test(t) ? Number(t) : t);
  if (isNaN(d)) return '–';
  const utc = timeZone() === 'utc';
  const g = utc ? {
    Y: d.getUTCFullYear(), M: d.getUTCMonth() + 1, D: d.getUTCDate(), h: d.getUTCHours(), m: d.getUTCMinutes(), s: d.getUTCSeconds(), ms: d.getUTCMilliseconds(),
  } : { Y: d.getFullYear(), M: d.getMonth() + 1, D: d.getDate(), h: d.getHours(), m: d.getMinutes(), s: d.getSeconds(), ms: d.getMilliseconds() };
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const clock = `${p(g.h)}:${p(g.m)}:${p(g.s)}`;
  const zone = utc ? 'UTC' : zoneName(d);
  if (short) return `${clock} ${zone}`;
  return `${g.Y}-${p(g.M)}-${p(g.D)} ${clock}.${p(g.ms, 3)} ${zone}`;
}

/** A trace id: the full 32 hex digits in the DOM (shortened by CSS), with a copy button. */
export function traceId(id, { href, primary } = {}) {
  const full = normId(id);
  // Shortened by CSS on purpose (data-short): the title and the copy button hold the full id.
  const text = el('span.tid-text', { 'data-short': 'id' }, full);
  const link = href ? el('a.tid-link.mono', { href, title: full, 'data-primary': primary ? '' : null }, text) : el('span.mono', { title: full }, text);
  const copy = el('button.icon.tid-copy', { type: 'button', title: 'Copy the full trace id', 'aria-label': 'Copy trace id ' + full,
    onclick: async e => { e.preventDefault(); e.stopPropagation(); toast(await copyText(full) ? 'Trace id copied' : 'Copy failed'); } },
    svg('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true' }, svg('rect', { x: 3.5, y: 0.5, width: 8, height: 8, rx: 1.5, fill: 'none', stroke: 'currentColor' }),
      svg('path', { d: 'M2.5 3.5h-1a1 1 0 0 0-1 1v6a1 1 0 0 0 1 1h6a1 1 0 0 0 1-1v-1', fill: 'none', stroke: 'currentColor' })));
  return el('span.tid', { 'data-trace-id': full }, link, copy);
}
export function normId(id) { return String(id || '').toLowerCase().padStart(32, '0'); }


// Categorical service colours: 20 hues that are neither red (red means an
// error) nor close to each other, the same in light and dark. A service
// keeps its slot for the session: slots are handed out in sorted order of
// the known services (app.js registers them), then first come first served.
export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#17becf', '#bcbd22', '#8c6d31', '#7f7f7f', '#e7ba52', '#393b79',
  '#74c476', '#6baed6', '#fdae6b', '#637939', '#a55194', '#9edae5', '#c5b0d5', '#5254a3', '#b5cf6b', '#8ca252'];
const colorOf = new Map();
export function registerServices(names) {
  for (const n of [...names].sort()) svcColor(n);
}
export function svcColor(name) {
  let c = colorOf.get(name);
  if (!c) {
    c = PALETTE[colorOf.size % PALETTE.length];
    colorOf.set(name, c);
  }
  return c;
}
/** Text colour readable on a palette colour: the one of higher WCAG contrast. */
export function textOn(hex) {
  const v = parseInt(hex.slice(1), 16);
  const lin = y => { y /= 255; return y <= 0.03928 ? y / 12.92 : ((y + 0.055) / 1.055) ** 2.4; };
  const L = 0.2126 * lin(v >> 16) + 0.7152 * lin((v >> 8) & 255) + 0.0722 * lin(v & 255);
  const dark = 0.0056; // #111
  return (1.05 / (L + 0.05)) >= ((L + 0.05) / (dark + 0.05)) ? '#fff' : '#111';
}

export const RANGES = [['15m', 15 * 60e3], ['1h', 3600e3], ['6h', 6 * 3600e3], ['24h', 24 * 3600e3], ['7d', 7 * 24 * 3600e3]];

/** Turns a range spec ("1h" or "ms1-ms2") into [startMs, endMs]. */
export function rangeBounds(spec, now = Date.now()) {
  const q = RANGES.find(r => r[0] === spec);
  if (q) return [now - q[1], now];
  const m = /^(\d+)-(\d+)$/.exec(spec || '');
  if (m) return [Number(m[1]), Number(m[2])];
  return [now - 3600e3, now];
}

export function rangePicker(current, onPick) {
  const wrap = el('div.quick', { role: 'group', 'aria-label': 'Time range' });
  for (const [name] of RANGES) {
    wrap.append(el('button.chip' + (current === name ? '.on' : ''), {
      type: 'button', 'aria-pressed': String(current === name), onclick: () => onPick(name),
    }, name));
  }
  return wrap;
}

export function sparkline(values, { width = 90, height = 22, cls = '' } = {}) {
  const vals = values.map(v => (v == null || isNaN(v) ? 0 : v));
  // An error sparkline without errors is not drawn in the error colour.
  if (cls === 'err' && !vals.some(v => v > 0)) cls = 'none';
  const max = Math.max(...vals, 0) || 1;
  const n = vals.length;
  const pts = vals.map((v, i) => `${n <= 1 ? 0 : (i / (n - 1) * width).toFixed(1)},${(height - 2 - v / max * (height - 4)).toFixed(1)}`);
  return svg('svg', { class: 'spark ' + cls, width, height, viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true' },
    svg('polyline', { points: pts.join(' '), fill: 'none' }));
}

// The finding kinds of the catalogue (docs/patterns.md).
export const KINDS = ['slow_query', 'n_plus_one_query', 'fan_out', 'sequential_calls', 'slow_dependency', 'timeout_cascade', 'timeout_mismatch',
  'retry_storm', 'error_origin', 'swallowed_error', 'partial_failure', 'idle_gap', 'cache_miss', 'consumer_lag', 'poison_message',
  'broken_propagation', 'instrumentation_gap', 'cache_stampede', 'auth_expiry_race', 'span_count_regression', 'latency_regression',
  'error_rate_spike', 'new_error_type', 'missing_service', 'throughput_drop'];

export function severityRank(s) { return { critical: 3, warning: 2, info: 1 }[s] || 0; }

export function badge(kind, severity, extra = {}) {
  return el('span.badge.sev-' + (severity || 'info'), { title: extra.title || kind, ...extra.attrs }, kind.replace(/_/g, ' '));
}

export function emptyState(title, detail) {
  return el('div.empty', el('strong', title), detail ? el('p', detail) : null);
}

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

/** Runs fn over items with at most n in flight. */
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let i = 0;
  const worker = async () => { while (i < items.length) { const k = i++; out[k] = await fn(items[k], k); } };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

export function attrValue(a) {
  if (a == null) return '';
  const v = a.value;
  if (v == null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function attrMap(list) {
  const m = new Map();
  for (const a of list || []) m.set(a.key, a.value);
  return m;
}

export async function copyText(text) {
  try { await navigator.clipboard.writeText(text); return true; } catch {
    const ta = el('textarea', { value: text, style: { position: 'fixed', opacity: '0' } });
    document.body.append(ta); ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}

export function toast(msg) {
  const t = el('div.toast', { role: 'status' }, msg);
  document.body.append(t);
  setTimeout(() => t.remove(), 1800);
}

/**
 * Auto-refresh control (off by default; 10 s, 30 s, 1 min), kept in the
 * URL as refresh=. Returns the control and a stop function for the view's
 * cleanup; tick re-renders the view.
 */
export function autoRefresh(current, onPick, tick) {
  const opts = [['', 'Auto-refresh off'], ['10s', 'every 10 s'], ['30s', 'every 30 s'], ['1m', 'every 1 min']];
  const sel = el('select#refresh', { 'aria-label': 'Auto-refresh', onchange: () => onPick(sel.value) },
    opts.map(([v, l]) => el('option', { value: v, selected: v === (current || '') }, l)));
  const ms = { '10s': 10e3, '30s': 30e3, '1m': 60e3 }[current] || 0;
  const timer = ms ? setInterval(() => { if (!document.hidden) tick(); }, ms) : 0;
  return { node: sel, stop: () => clearInterval(timer) };
}
