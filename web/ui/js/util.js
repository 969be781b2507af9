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

export function fmtTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (isNaN(d)) return '–';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function relTime(t) {
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  if (!isFinite(s)) return '';
  if (s < 0) return 'in the future';
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

/** Stable per-service colour (hue from a string hash). */
const colorCache = new Map();
export function svcColor(name) {
  let c = colorCache.get(name);
  if (!c) {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 16777619); }
    const hue = ((h >>> 0) % 360);
    c = `hsl(${hue} 55% 52%)`;
    colorCache.set(name, c);
  }
  return c;
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
  const max = Math.max(...vals, 0) || 1;
  const n = vals.length;
  const pts = vals.map((v, i) => `${n <= 1 ? 0 : (i / (n - 1) * width).toFixed(1)},${(height - 2 - v / max * (height - 4)).toFixed(1)}`);
  return svg('svg', { class: 'spark ' + cls, width, height, viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true' },
    svg('polyline', { points: pts.join(' '), fill: 'none' }));
}

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
