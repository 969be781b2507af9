// The jump box: a trace id (16 or 32 hex digits) opens the trace; anything
// else is matched against services, operations and finding kinds, listed
// under the box (↑/↓ to pick, Enter to open the highlighted one).
import { el, clear, KINDS } from './util.js';

let index = null; // [{ label, sub, href, key }]

async function loadIndex() {
  if (index) return index;
  const items = KINDS.map(k => ({ label: k.replace(/_/g, ' '), sub: 'finding kind', href: `/findings?kind=${k}`, key: k + ' ' + k.replace(/_/g, ' ') }));
  // A list missing what a failed request would have added is used once,
  // not kept: the next keystroke asks again (a busy server answers 503).
  let whole = true;
  const get = async url => {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${r.status} ${url}`);
    return r.json();
  };
  try {
    const svcs = (await get('/api/v1/services')).services || [];
    for (const s of svcs) items.push({ label: s, sub: 'service', href: `/search?service=${encodeURIComponent(s)}`, key: s });
    await Promise.all(svcs.map(async s => {
      try {
        const ops = (await get(`/api/v1/services/${encodeURIComponent(s)}/operations`)).operations || [];
        for (const n of new Set(ops.map(o => o.name))) {
          items.push({ label: n, sub: 'operation · ' + s, href: `/search?service=${encodeURIComponent(s)}&operation=${encodeURIComponent(n)}`, key: s + ' ' + n });
        }
      } catch { whole = false; /* the list is a convenience */ }
    }));
  } catch { whole = false; /* offline: kinds only */ }
  if (whole) {
    index = items;
    setTimeout(() => { index = null; }, 60000);
  }
  return items;
}

/** Matches of text, best first: trace ids, then exact, prefix, substring. */
export function matches(text, items) {
  const v = text.trim();
  const out = [];
  if (/^([0-9a-fA-F]{16}|[0-9a-fA-F]{32})$/.test(v)) out.push({ label: v.toLowerCase(), sub: 'trace id', href: '/trace/' + v.toLowerCase() });
  const q = v.toLowerCase();
  if (!q) return out;
  const scored = [];
  for (const it of items) {
    const l = it.label.toLowerCase(), k = it.key.toLowerCase();
    const i = k.indexOf(q);
    if (i < 0) continue;
    scored.push([l === q ? 0 : l.startsWith(q) ? 1 : 2, it.sub === 'service' ? 0 : it.sub === 'finding kind' ? 1 : 2, it]);
  }
  scored.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2].label.localeCompare(b[2].label));
  return out.concat(scored.slice(0, 12).map(x => x[2]));
}

export function setupJump(form, input, navigate) {
  const list = document.getElementById('jump-list');
  let cur = [], hi = 0;
  const close = () => { list.hidden = true; input.setAttribute('aria-expanded', 'false'); };
  const draw = () => {
    clear(list);
    cur.forEach((m, i) => list.append(el('li', { role: 'option', id: 'jump-opt-' + i, 'aria-selected': String(i === hi),
      onmousedown: e => { e.preventDefault(); go(m); } }, el('span.jl', m.label), el('span.js', m.sub))));
    list.hidden = !cur.length;
    input.setAttribute('aria-expanded', String(!!cur.length));
    if (cur.length) input.setAttribute('aria-activedescendant', 'jump-opt-' + hi); else input.removeAttribute('aria-activedescendant');
  };
  const update = async () => {
    const text = input.value;
    const items = await loadIndex();
    if (input.value !== text) return;
    cur = matches(text, items); hi = 0;
    draw();
  };
  const go = m => { input.value = ''; close(); input.blur(); navigate(m.href); };
  input.addEventListener('input', update);
  input.addEventListener('focus', () => { loadIndex(); if (input.value) update(); });
  input.addEventListener('blur', () => setTimeout(close, 150));
  input.addEventListener('keydown', e => {
    if (list.hidden) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      hi = (hi + (e.key === 'ArrowDown' ? 1 : cur.length - 1)) % cur.length;
      draw();
    }
  });
  form.addEventListener('submit', async e => {
    e.preventDefault();
    const v = input.value.trim();
    if (!v) return;
    if (list.hidden || !cur.length) cur = matches(v, await loadIndex()), hi = 0;
    if (cur[hi]) go(cur[hi]);
    else { input.value = ''; close(); navigate('/search?q=' + encodeURIComponent(`{ name =~ ".*${v.replace(/["\\]/g, '')}.*" }`)); }
  });
}
