// The trace minimap: every span as a thin line (time across, depth down)
// with the zoomed window outlined; dragging on it zooms the waterfall to
// that time range, a double click shows the whole trace again.
import { el } from './util.js';

const H = 40;

export function minimap(model, T, { onZoom, color }) {
  const canvas = el('canvas.mini-c', { 'aria-hidden': 'true' });
  const win = el('div.mini-win', { hidden: true });
  const brush = el('div.mini-brush', { hidden: true });
  const node = el('div.minimap#minimap', { title: 'Drag to zoom to a time range; double-click for the whole trace', role: 'slider',
    'aria-label': 'Trace minimap: drag to zoom' }, canvas, win, brush);
  let w0 = 0, w1 = T, drawn = 0;
  const draw = () => {
    const width = node.clientWidth;
    if (!width) return;
    drawn = width;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr; canvas.height = H * dpr;
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    const err = getComputedStyle(document.documentElement).getPropertyValue('--err').trim();
    const rowH = Math.max(1, Math.min(4, (H - 4) / (model.maxDepth + 1)));
    for (const n of model.nodes) {
      const c = color(n);
      g.fillStyle = c.startsWith('var(') ? err : c;
      g.fillRect(n.start / T * width, 2 + n.depth * rowH, Math.max(1, n.dur / T * width), Math.max(1, rowH - 0.5));
    }
    place();
  };
  const place = () => {
    const whole = w0 <= 0 && w1 >= T;
    win.hidden = whole;
    if (!whole) Object.assign(win.style, { left: (w0 / T * 100) + '%', width: Math.max(0.3, (w1 - w0) / T * 100) + '%' });
  };
  let drag = null;
  const tAt = ev => { const r = node.getBoundingClientRect(); return Math.max(0, Math.min(T, (ev.clientX - r.left) / r.width * T)); };
  node.addEventListener('pointerdown', ev => { drag = tAt(ev); node.setPointerCapture(ev.pointerId); });
  node.addEventListener('pointermove', ev => {
    if (drag == null) return;
    const t = tAt(ev);
    brush.hidden = false;
    Object.assign(brush.style, { left: (Math.min(t, drag) / T * 100) + '%', width: (Math.abs(t - drag) / T * 100) + '%' });
  });
  node.addEventListener('pointerup', ev => {
    if (drag == null) return;
    const t = tAt(ev), a = Math.min(t, drag), b = Math.max(t, drag);
    drag = null; brush.hidden = true;
    if (b - a > T / 500) onZoom(a, b);
  });
  node.addEventListener('dblclick', () => onZoom(0, T));
  const ro = new ResizeObserver(() => { if (node.clientWidth !== drawn) draw(); });
  ro.observe(node);
  window.addEventListener('themechange', draw);
  return { node, setWindow: (a, b) => { w0 = a; w1 = b; place(); }, draw };
}
