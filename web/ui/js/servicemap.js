// Service map: a layered left-to-right layout drawn as SVG by hand. Ranks
// are the longest call depth from a service nobody calls; within a rank,
// nodes sit near the average position of their callers (one sweep is enough
// for the dozen services a map usually has).
import { svg, fmtRate, rateUnit, fmtPct, fmtMs, svcColor } from './util.js';

const NW = 178, NH = 46, CW = 270, RH = 78;
// Width of a glyph of the 10px edge labels (app.css), a little generous.
const LABEL_CH = 6;

const edgeLabel = (e, unit) => `${fmtRate(e.rate, unit)} · ${fmtPct(e.error_rate)} err · p95 ${fmtMs(e.p95_ms || e.client_p95_ms)}`;

/** The curve from node a to node b and where its label goes. */
function edgePath(a, b) {
  if (b.x > a.x) {
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x - 2, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    return { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, lx: mx, ly: (y1 + y2) / 2 - 4 };
  }
  // Same rank or backwards: loop under the nodes.
  const x1 = a.x + NW / 2, y1 = a.y + NH, x2 = b.x + NW / 2, y2 = b.y + NH + 2, yb = Math.max(y1, y2) + 36;
  return { d: `M${x1},${y1} C${x1},${yb} ${x2},${yb} ${x2},${y2}`, lx: (x1 + x2) / 2, ly: yb - 6 };
}

export function serviceMap(data, { onNode, onEdge } = {}) {
  const nodes = new Map();
  for (const n of data.nodes || []) nodes.set(n.id, { ...n, in: [], out: [] });
  const edges = (data.edges || []).filter(e => e.source !== e.target);
  for (const e of edges) {
    for (const id of [e.source, e.target]) if (!nodes.has(id)) nodes.set(id, { id, service: id, in: [], out: [] });
    nodes.get(e.source).out.push(e);
    nodes.get(e.target).in.push(e);
  }
  // Longest-path ranks with a guard against cycles.
  const rank = new Map();
  const visiting = new Set();
  const rankOf = id => {
    if (rank.has(id)) return rank.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    let r = 0;
    for (const e of nodes.get(id).in) r = Math.max(r, rankOf(e.source) + 1);
    visiting.delete(id);
    rank.set(id, r);
    return r;
  };
  for (const id of nodes.keys()) rankOf(id);
  const cols = [];
  for (const [id, r] of rank) (cols[r] ||= []).push(id);
  const pos = new Map();
  cols.forEach((ids, c) => {
    const keyed = ids.map(id => {
      const ys = nodes.get(id).in.map(e => pos.get(e.source)?.y).filter(y => y != null);
      return [id, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0];
    }).sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]));
    keyed.forEach(([id], i) => pos.set(id, { x: 20 + c * CW, y: 20 + i * RH }));
  });
  const rows = Math.max(1, ...cols.map(c => c.length));
  // Centre short columns vertically.
  cols.forEach(ids => {
    const off = (rows - ids.length) * RH / 2;
    for (const id of ids) pos.get(id).y += off;
  });
  const W = 40 + Math.max(1, cols.length) * CW - (CW - NW);
  const H = 40 + rows * RH - (RH - NH) + 20;
  const root = svg('svg', { class: 'map', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Service map', style: `max-height:${Math.max(H, 200)}px` });
  root.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '8', markerHeight: '8', markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
    svg('path', { d: 'M0,0 L10,5 L0,10 z' }))));
  const maxCalls = Math.max(1, ...edges.map(e => e.call_count || 0));
  // One unit on the whole map, so edge and node rates compare at a glance.
  const unit = rateUnit([...edges.map(e => e.rate), ...[...nodes.values()].map(n => n.rate)]);
  // Edge labels that would sit on a node or on a label already placed show
  // on hover and focus only (like the healthy edges of a dense map): text
  // on text is unreadable. Failing edges are placed first.
  const placed = [...pos.values()].map(p => ({ x0: p.x - 2, y0: p.y - 2, x1: p.x + NW + 2, y1: p.y + NH + 2 }));
  const free = b => !placed.some(o => b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1);
  const isErr = e => (e.error_rate || 0) >= 0.05;
  const order = [...edges].sort((x, y) => isErr(y) - isErr(x) || (y.call_count || 0) - (x.call_count || 0));
  const quietOf = new Map();
  for (const e of order) {
    const { lx, ly } = edgePath(pos.get(e.source), pos.get(e.target));
    const w = edgeLabel(e, unit).length * LABEL_CH;
    const box = { x0: lx - w / 2, y0: ly - 10, x1: lx + w / 2, y1: ly + 3 };
    const quiet = (edges.length > 12 && !isErr(e)) || !free(box);
    if (!quiet) placed.push(box);
    quietOf.set(e, quiet);
  }
  for (const e of edges) {
    const { d, lx, ly } = edgePath(pos.get(e.source), pos.get(e.target));
    const err = isErr(e);
    const width = 1 + 3 * Math.sqrt((e.call_count || 0) / maxCalls);
    const label = edgeLabel(e, unit);
    const quiet = quietOf.get(e);
    const g = svg('g', { class: 'edge' + (err ? ' err' : ''), tabindex: '0', role: 'link',
      'aria-label': `${e.source} calls ${e.target}: ${label}`, 'data-edge': `${e.source}>${e.target}` },
      svg('title', {}, `${e.source} → ${e.target}${e.connection_type ? ' (' + e.connection_type + ')' : ''}\n${e.call_count} calls, ${e.error_count} errors\n${label}`),
      svg('path', { d, 'stroke-width': width.toFixed(1), 'marker-end': 'url(#arrow)' }),
      svg('text', { x: lx, y: ly, 'text-anchor': 'middle', class: quiet ? 'quiet' : null }, label));
    if (onEdge) {
      g.addEventListener('click', () => onEdge(e));
      g.addEventListener('keydown', ev => { if (ev.key === 'Enter') onEdge(e); });
    }
    root.append(g);
  }
  for (const [id, n] of nodes) {
    const p = pos.get(id);
    const err = (n.error_rate || 0) >= 0.05;
    const sub = n.virtual ? (n.type === 'database' ? 'database · ' + fmtRate(n.rate, unit) : (n.service || 'external')) : `${fmtRate(n.rate, unit)} · ${fmtPct(n.error_rate)} · p95 ${fmtMs(n.p95_ms)}`;
    const g = svg('g', { class: 'node' + (err ? ' err' : '') + (n.virtual ? ' virtual' : ''), tabindex: '0', role: 'link',
      'aria-label': `${id}: ${sub}`, 'data-node': id, transform: `translate(${p.x},${p.y})` },
      svg('title', {}, `${id}\n${sub}`),
      svg('rect', { width: NW, height: NH, rx: 6 }),
      svg('rect', { width: 5, height: NH, rx: 2, style: `fill:${svcColor(id)};stroke:none` }),
      svg('text', { x: 12, y: 19 }, id.length > 20 ? id.slice(0, 19) + '…' : id),
      svg('text', { x: 12, y: 35, class: 'sub' }, sub));
    if (onNode) {
      g.addEventListener('click', () => onNode(n));
      g.addEventListener('keydown', ev => { if (ev.key === 'Enter') onNode(n); });
    }
    root.append(g);
  }
  return root;
}
