// The trace as a tree with millisecond offsets, plus the derived facts the
// views draw: critical-path segments, idle gaps, per-service statistics.
// Everything is linear or n log n so a 5,000-span trace stays instant.

export function buildModel(trace) {
  const spans = trace.spans || [];
  let base = Infinity, last = -Infinity;
  for (const s of spans) { if (s.start_unix_nano < base) base = s.start_unix_nano; }
  const nodes = new Array(spans.length);
  const byId = new Map();
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i];
    const start = (s.start_unix_nano - base) / 1e6;
    const dur = s.duration_ms != null ? s.duration_ms : (s.end_unix_nano - s.start_unix_nano) / 1e6;
    const n = { i, span: s, id: s.span_id, start, end: start + Math.max(0, dur), dur: Math.max(0, dur), depth: 0, parent: null,
      children: [], err: s.status && s.status.code === 'error', service: s.service || 'unknown', name: s.name };
    if (n.end > last) last = n.end;
    nodes[i] = n;
    if (!byId.has(n.id)) byId.set(n.id, n);
  }
  const roots = [];
  for (const n of nodes) {
    const p = n.span.parent_span_id ? byId.get(n.span.parent_span_id) : null;
    if (p && p !== n) { n.parent = p; p.children.push(n); } else roots.push(n);
  }
  const byStart = (a, b) => a.start - b.start || a.end - b.end;
  roots.sort(byStart);
  // Depths without recursion (deep traces); sort children once.
  const stack = [...roots];
  for (const r of roots) r.depth = 0;
  let maxDepth = 0;
  while (stack.length) {
    const n = stack.pop();
    if (n.children.length > 1) n.children.sort(byStart);
    for (const c of n.children) { c.depth = n.depth + 1; if (c.depth > maxDepth) maxDepth = c.depth; stack.push(c); }
  }
  // The main root: the longest true root (what the server analyses).
  let main = null;
  for (const r of roots) if (!r.span.parent_span_id && (!main || r.dur > main.dur)) main = r;
  if (!main) main = roots.reduce((a, b) => (!a || b.dur > a.dur ? b : a), null);
  return { nodes, byId, roots, main, duration: Math.max(0, last), base, maxDepth };
}

/** Critical path as in shared/patterns.md; returns Map node → [[start,end]…]. */
export function criticalPath(model) {
  const segs = new Map();
  const add = (n, a, b) => { if (b > a) { (segs.get(n) || segs.set(n, []).get(n)).push([a, b]); } };
  const root = model.main;
  if (!root) return segs;
  const frame = (n, lo, hi) => {
    const kids = n.children.filter(c => !(c.span.kind === 'consumer' && n.span.kind === 'producer') && c.start < hi && c.end > lo);
    kids.sort((a, b) => b.end - a.end);
    return { n, lo, cursor: hi, kids, next: 0 };
  };
  const stack = [frame(root, root.start, root.end)];
  while (stack.length) {
    const f = stack[stack.length - 1];
    let pick = null;
    while (f.next < f.kids.length) {
      const c = f.kids[f.next++];
      if (c.start < f.cursor) { pick = c; break; }
    }
    if (!pick) { add(f.n, f.lo, f.cursor); stack.pop(); continue; }
    const end = Math.min(pick.end, f.cursor);
    add(f.n, end, f.cursor);
    const start = Math.max(pick.start, f.lo);
    f.cursor = start;
    stack.push(frame(pick, start, end));
  }
  return segs;
}

/** Stretches of n with no child running, at least minMs long. */
export function idleGaps(n, minMs) {
  if (!n.children.length || n.dur <= 0) return [];
  const iv = n.children.map(c => [Math.max(c.start, n.start), Math.min(c.end, n.end)]).filter(x => x[1] > x[0]).sort((a, b) => a[0] - b[0]);
  const out = [];
  let cur = n.start;
  for (const [a, b] of iv) {
    if (a - cur >= minMs) out.push([cur, a]);
    if (b > cur) cur = b;
  }
  if (n.end - cur >= minMs) out.push([cur, n.end]);
  return out;
}

/** Own time: span time not covered by any child. */
export function selfTime(n) {
  if (!n.children.length) return n.dur;
  let covered = 0;
  let cur = n.start;
  const iv = n.children.map(c => [Math.max(c.start, n.start), Math.min(c.end, n.end)]).filter(x => x[1] > x[0]).sort((a, b) => a[0] - b[0]);
  for (const [a, b] of iv) {
    const s = Math.max(a, cur);
    if (b > s) { covered += b - s; cur = b; }
  }
  return Math.max(0, n.dur - covered);
}

export function serviceStats(model, cpSegs) {
  const m = new Map();
  const get = s => m.get(s) || m.set(s, { service: s, spans: 0, errors: 0, total: 0, self: 0, cp: 0, ops: new Set() }).get(s);
  for (const n of model.nodes) {
    const e = get(n.service);
    e.spans++; if (n.err) e.errors++;
    e.total += n.dur; e.self += selfTime(n); e.ops.add(n.name);
  }
  for (const [n, list] of cpSegs) for (const [a, b] of list) get(n.service).cp += b - a;
  return [...m.values()].sort((a, b) => b.cp - a.cp || b.self - a.self);
}

/** Visible rows in tree order, honouring collapsed nodes. */
export function flatten(model, collapsed) {
  const out = [];
  const stack = [];
  for (let i = model.roots.length - 1; i >= 0; i--) stack.push(model.roots[i]);
  while (stack.length) {
    const n = stack.pop();
    out.push(n);
    if (collapsed.has(n)) continue;
    for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
  }
  return out;
}

/**
 * A flame graph tree: spans merged by their path of (service, operation)
 * from the root, so 50 identical queries are one frame 50× as wide.
 * Frames: { service, name, total, self, count, errors, kids: [] }.
 */
export function flameTree(model) {
  const top = { service: '', name: '', total: 0, self: 0, count: 0, errors: 0, kids: [], map: new Map() };
  const queue = model.roots.map(n => [n, top]);
  for (let qi = 0; qi < queue.length; qi++) {
    const [n, parent] = queue[qi];
    const key = n.service + '\u0000' + n.name;
    let f = parent.map.get(key);
    if (!f) { f = { service: n.service, name: n.name, total: 0, self: 0, count: 0, errors: 0, kids: [], map: new Map() }; parent.map.set(key, f); parent.kids.push(f); }
    f.total += n.dur; f.self += selfTime(n); f.count++;
    if (n.err) f.errors++;
    for (const c of n.children) queue.push([c, f]);
  }
  top.total = top.kids.reduce((a, f) => a + f.total, 0);
  const stack = [top];
  while (stack.length) {
    const f = stack.pop();
    delete f.map;
    f.kids.sort((a, b) => b.total - a.total);
    stack.push(...f.kids);
  }
  return top;
}

/** Lays frames out: x and w in [0, width], depth from 0 (children of top). */
export function layoutFlame(top, width) {
  const out = [];
  const stack = [[top, 0, width, -1]];
  while (stack.length) {
    const [f, x, w, d] = stack.pop();
    if (d >= 0) out.push({ f, x, w, d });
    const sum = f.kids.reduce((a, k) => a + k.total, 0);
    if (!sum) continue;
    // Parallel children may add up to more than their parent: squeeze them in.
    const scale = w / Math.max(sum, d < 0 ? sum : f.total);
    let cx = x;
    for (const k of f.kids) {
      const kw = k.total * scale;
      if (kw >= 0.3) stack.push([k, cx, kw, d + 1]);
      cx += kw;
    }
  }
  return out;
}

/** Does span n match the find box text? Name, service, status message, attribute keys or values; key=value too. */
export function spanMatches(n, q) {
  const t = q.toLowerCase();
  const eq = /^([^=\s]+)\s*=\s*(.+)$/.exec(q);
  const s = n.span;
  const lists = [s.attributes || [], s.resource || []];
  if (eq) {
    const k = eq[1].toLowerCase(), v = eq[2].toLowerCase();
    return lists.some(l => l.some(a => a.key.toLowerCase() === k && String(a.value).toLowerCase().includes(v)));
  }
  if (n.name.toLowerCase().includes(t) || n.service.toLowerCase().includes(t) || (s.span_id || '').startsWith(t) ||
    (s.status?.message || '').toLowerCase().includes(t)) return true;
  return lists.some(l => l.some(a => a.key.toLowerCase().includes(t) || (typeof a.value !== 'object' && String(a.value).toLowerCase().includes(t))));
}
