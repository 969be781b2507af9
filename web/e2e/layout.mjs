// Layout audit of the page on screen: text that is cut (by an ellipsis, a
// line clamp, a box with overflow hidden, a horizontal scroller or the
// window's edge) and text that overlaps other text. Text the UI shortens on
// purpose, with the full value at hand (a copy button, the detail panel),
// carries data-short on itself or an ancestor and is not reported.
//
// It works on text nodes, not elements: a Range gives the boxes the glyphs
// occupy, so a wide block with a short word in it overlaps nothing.

/** Problems on the page, as sentences; [] when the layout is clean. */
export async function layoutProblems(page) {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const problems = [];
    const styles = new Map();
    const style = e => { let s = styles.get(e); if (!s) { s = getComputedStyle(e); styles.set(e, s); } return s; };
    const name = e => {
      const parts = [];
      for (let x = e; x && x !== document.body && parts.length < 4; x = x.parentElement) {
        parts.unshift(x.tagName.toLowerCase() + (x.id ? '#' + x.id : '') + [...x.classList].slice(0, 2).map(c => '.' + c).join(''));
        if (x.id) break;
      }
      return parts.join(' > ');
    };
    // Visible: rendered, not transparent, not inside a closed or hidden part.
    const seen = new Map();
    const visible = e => {
      if (seen.has(e)) return seen.get(e);
      let v = true;
      const s = style(e);
      const up = e.parentElement;
      if (s.visibility === 'hidden' || s.opacity === '0' || s.display === 'none') v = false;
      // The body of a closed <details> still has boxes, but is not shown.
      else if (up && up.tagName === 'DETAILS' && !up.open && e.tagName !== 'SUMMARY') v = false;
      else if (e.parentElement && e.parentElement !== document.documentElement) v = visible(e.parentElement);
      seen.set(e, v);
      return v;
    };
    const short = e => !!e.closest('[data-short]');
    // The boxes that clip e's content: overflow other than visible.
    const clippers = e => {
      const out = [];
      for (let x = e; x && x !== document.documentElement; x = x.parentElement) {
        const s = style(x);
        const ox = s.overflowX, oy = s.overflowY;
        if (ox !== 'visible' || oy !== 'visible') out.push({ el: x, ox, oy, r: x.getBoundingClientRect(), s });
      }
      return out;
    };
    const inner = c => {
      // The padding box: the border does not show content.
      const bl = parseFloat(c.s.borderLeftWidth) || 0, bt = parseFloat(c.s.borderTopWidth) || 0;
      return { left: c.r.left + bl, top: c.r.top + bt, right: c.r.left + bl + c.el.clientWidth, bottom: c.r.top + bt + c.el.clientHeight };
    };
    // Sticky and fixed bars (the header, the waterfall's time axis) hide
    // what scrolls under them: that text is covered, not
    // overlapping. A bar covers text outside it whose own bar is lower.
    const bars = [...document.querySelectorAll('body *')].filter(e => { const p = style(e).position; return (p === 'sticky' || p === 'fixed') && e.getClientRects().length && visible(e); })
      .map(e => ({ el: e, z: parseInt(style(e).zIndex, 10) || 0, r: e.getBoundingClientRect() }));
    const barOf = e => { for (let x = e; x; x = x.parentElement) { const b = bars.find(o => o.el === x); if (b) return b; } return null; };
    const uncovered = (box, own) => {
      for (const o of bars) {
        if (o === own || (own && own.z >= o.z) || o.el.contains(own && own.el)) continue;
        const r = o.r;
        if (box.right <= r.left || box.left >= r.right || box.bottom <= r.top || box.top >= r.bottom) continue;
        // Bars across the text only (a side panel over text is a fault).
        if (r.left <= box.left && r.right >= box.right) {
          if (box.top >= r.top) box.top = Math.max(box.top, r.bottom); else box.bottom = Math.min(box.bottom, r.top);
        }
      }
      return box;
    };
    const boxes = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
      acceptNode: n => /\S/.test(n.data) && n.parentElement && !n.parentElement.closest('script,style,noscript,option,textarea,title,template')
        ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT,
    });
    const range = document.createRange();
    const reported = new Set();
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const p = n.parentElement;
      if (!visible(p)) continue;
      // The glyphs only: leading and trailing white space takes no ink.
      const lead = n.data.length - n.data.trimStart().length, trail = n.data.trimEnd().length;
      range.setStart(n, lead); range.setEnd(n, trail);
      const rects = [...range.getClientRects()].filter(r => r.width > 0.5 && r.height > 0.5);
      if (!rects.length) continue;
      const text = n.data.trim().replace(/\s+/g, ' ').slice(0, 70);
      const cl = clippers(p);
      // An ellipsis or a line clamp on the text's own box.
      const ps = style(p);
      const cut = [];
      if (ps.textOverflow === 'ellipsis' && p.scrollWidth > p.clientWidth + 1) cut.push('ellipsis');
      if (ps.webkitLineClamp && ps.webkitLineClamp !== 'none' && p.scrollHeight > p.clientHeight + 1) cut.push('line clamp');
      for (const r of rects) {
        // Wholly off screen on purpose (a skip link until focused).
        if (r.right <= 0 || r.left >= vw) continue;
        let vis = { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
        for (const c of cl) {
          const b = inner(c);
          // Vertical scrollers (lists, the waterfall) scroll; a box that
          // hides, or a horizontal scroller, cuts.
          const cutsX = c.ox === 'hidden' || c.ox === 'clip' || c.ox === 'auto' || c.ox === 'scroll';
          const cutsY = c.oy === 'hidden' || c.oy === 'clip';
          if (cutsX && (r.left < b.left - 1 || r.right > b.right + 1) && r.bottom > b.top && r.top < b.bottom) cut.push(`cut by ${name(c.el)} (x ${Math.round(r.left)}–${Math.round(r.right)} outside ${Math.round(b.left)}–${Math.round(b.right)})`);
          if (cutsY && (r.top < b.top - 1 || r.bottom > b.bottom + 1) && r.right > b.left && r.left < b.right) cut.push(`cut by ${name(c.el)} (y ${Math.round(r.top)}–${Math.round(r.bottom)} outside ${Math.round(b.top)}–${Math.round(b.bottom)})`);
          vis = { left: Math.max(vis.left, b.left), top: Math.max(vis.top, b.top), right: Math.min(vis.right, b.right), bottom: Math.min(vis.bottom, b.bottom) };
        }
        if (r.right > vw + 1 || r.left < -1) cut.push(`outside the window (x ${Math.round(r.left)}–${Math.round(r.right)}, width ${vw})`);
        vis = uncovered(vis, barOf(p));
        if (vis.right - vis.left > 0.5 && vis.bottom - vis.top > 0.5) boxes.push({ n, p, text, ...vis });
      }
      if (cut.length && !short(p) && !reported.has(p)) {
        reported.add(p);
        problems.push(`truncated: "${text}" <${name(p)}>: ${[...new Set(cut)].slice(0, 2).join('; ')}`);
      }
    }
    // Overlaps: a sweep over the boxes sorted by their top edge.
    boxes.sort((a, b) => a.top - b.top);
    const pairs = new Set();
    for (let i = 0; i < boxes.length; i++) {
      const a = boxes[i];
      for (let j = i + 1; j < boxes.length && boxes[j].top < a.bottom - 2; j++) {
        const b = boxes[j];
        if (a.n === b.n) continue;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w <= 2 || h <= 2) continue;
        const key = a.text + '|' + b.text;
        if (pairs.has(key)) continue;
        pairs.add(key);
        problems.push(`overlap: "${a.text}" <${name(a.p)}> and "${b.text}" <${name(b.p)}> (${Math.round(w)}×${Math.round(h)} px)`);
      }
    }
    return problems;
  });
}
