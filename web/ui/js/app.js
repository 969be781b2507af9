// Router, theme, global keyboard. Routes are paths; view state lives in the
// query string so every screen can be shared and reloaded.
import { el, clear, registerServices, timeZone, setTimeZone } from './util.js';
import { setupJump } from './jump.js';

const routes = [
  [/^\/$/, 'overview', () => import('./overview.js')],
  [/^\/search$/, 'search', () => import('./search.js')],
  [/^\/trace\/([0-9a-fA-F]{1,32})$/, 'trace', () => import('./trace.js')],
  [/^\/compare$/, 'compare', () => import('./compare.js')],
  [/^\/findings$/, 'findings', () => import('./findings.js')],
  [/^\/alerts$/, 'alerts', () => import('./alerts.js')],
  [/^\/rootcause$/, 'rootcause', () => import('./rootcause.js')],
];

const view = document.getElementById('view');
const panel = document.getElementById('panel');
let current = null; // { name, mod, cleanup }
let renderSeq = 0;

export function navigate(url, { replace = false } = {}) {
  const u = new URL(url, location.href);
  if (u.origin !== location.origin) { location.href = url; return; }
  if (replace) history.replaceState(null, '', u.pathname + u.search + u.hash);
  else history.pushState(null, '', u.pathname + u.search + u.hash);
  render();
}

/** Updates the query string of the current view without re-rendering. */
export function setParams(params, { push = false } = {}) {
  const u = new URL(location.href);
  for (const [k, v] of Object.entries(params)) {
    u.searchParams.delete(k);
    if (v == null || v === '' || v === false) continue;
    if (Array.isArray(v)) v.forEach(x => u.searchParams.append(k, x)); else u.searchParams.set(k, v);
  }
  const next = u.pathname + u.search + u.hash;
  if (next === location.pathname + location.search + location.hash) return;
  if (push) history.pushState(null, '', next); else history.replaceState(null, '', next);
}

export function openPanel(content, { label = 'Details', onClose } = {}) {
  clear(panel);
  panel.setAttribute('aria-label', label);
  const close = el('button.icon.close', { type: 'button', 'aria-label': 'Close panel (Esc)', title: 'Close (Esc)', onclick: () => closePanel() }, '×');
  panel.append(close, content);
  panel.hidden = false;
  panel._onClose = onClose;
  document.body.classList.add('with-panel');
}

export function closePanel() {
  if (panel.hidden) return false;
  panel.hidden = true;
  clear(panel);
  document.body.classList.remove('with-panel');
  const f = panel._onClose; panel._onClose = null;
  if (f) f();
  return true;
}

async function render() {
  const seq = ++renderSeq;
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const route = routes.find(r => r[0].test(path));
  if (current && current.cleanup) { try { current.cleanup(); } catch (e) { console.warn(e); } }
  current = null;
  closePanel();
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    const on = route && a.dataset.view === route[1];
    a.classList.toggle('on', !!on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (!route) {
    clear(view).append(el('div.empty', el('strong', 'Page not found'), el('p', el('a', { href: '/', 'data-nav': '' }, 'Go to the overview'))));
    document.title = 'Not found · tracedx';
    return;
  }
  const m = route[0].exec(path);
  const mod = await route[2]();
  if (seq !== renderSeq) return;
  clear(view);
  const ctx = { params: new URLSearchParams(location.search), match: m, root: view };
  document.body.dataset.view = route[1];
  try {
    const cleanup = await mod.render(ctx);
    if (seq !== renderSeq) { if (typeof cleanup === 'function') cleanup(); return; }
    current = { name: route[1], mod, cleanup: typeof cleanup === 'function' ? cleanup : null };
  } catch (e) {
    if (seq !== renderSeq) return;
    console.warn(e);
    clear(view).append(el('div.error-box', el('strong', 'Could not load this view'), el('p', String(e.message || e))));
  }
}

// Links: same-origin anchors navigate in-app unless modified clicks.
document.addEventListener('click', e => {
  const a = e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target === '_blank' || a.hasAttribute('download')) return;
  const u = new URL(a.href, location.href);
  if (u.origin !== location.origin || u.pathname.startsWith('/api/')) return;
  e.preventDefault();
  navigate(u.pathname + u.search + u.hash);
});
window.addEventListener('popstate', render);

// Theme: system preference unless toggled; the toggle is remembered.
function effectiveTheme() {
  return document.documentElement.dataset.theme || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
}
function toggleTheme() {
  const next = effectiveTheme() === 'dark' ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  try { localStorage.setItem('tracedx-theme', next); } catch { /* private mode */ }
  window.dispatchEvent(new Event('themechange'));
}
document.getElementById('theme-toggle').addEventListener('click', toggleTheme);
const help = document.getElementById('help');
document.getElementById('help-toggle').addEventListener('click', () => help.showModal());

setupJump(document.getElementById('jump'), document.getElementById('jump-input'), navigate);

// Time zone switch: every time on screen is UTC or local, with the zone shown.
const tzBtn = document.getElementById('tz-toggle');
const drawTz = () => { tzBtn.textContent = timeZone() === 'utc' ? 'UTC' : 'Local'; tzBtn.setAttribute('aria-pressed', String(timeZone() === 'utc')); };
tzBtn.addEventListener('click', () => { setTimeZone(timeZone() === 'utc' ? 'local' : 'utc'); drawTz(); render(); });
drawTz();

// Sign out: offered only when the server checks tokens (it then answers
// /api/v1/session). A form POST, so the server clears the HttpOnly cookie
// and shows its sign-in page.
fetch('/api/v1/session', { headers: { Accept: 'application/json' } }).then(r => r.ok ? r.json() : null).then(s => {
  if (!s || !s.auth) return;
  const who = s.tenant ? `Signed in to tenant ${s.tenant}` : 'Signed in with a token';
  document.querySelector('header.top').append(el('form#logout', { method: 'post', action: s.logout || '/logout' },
    el('button', { type: 'submit', title: who + '. Sign out: forget the token in this browser.' }, 'Sign out')));
}).catch(() => {});

let gPrefix = false;
document.addEventListener('keydown', e => {
  const t = e.target;
  const typing = t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  if (e.key === 'Escape') {
    if (help.open) return;
    if (closePanel()) { e.preventDefault(); return; }
    if (typing) { t.blur(); return; }
  }
  if (typing || e.metaKey || e.ctrlKey || e.altKey) return;
  if (e.key === '/') {
    e.preventDefault();
    const local = view.querySelector('[data-search-focus]');
    (local || document.getElementById('jump-input')).focus();
    return;
  }
  if (gPrefix) {
    gPrefix = false;
    const to = { o: '/', s: '/search', f: '/findings', a: '/alerts', c: '/compare' }[e.key];
    if (to) { e.preventDefault(); navigate(to); }
    return;
  }
  if (e.key === 'g') { gPrefix = true; setTimeout(() => { gPrefix = false; }, 1000); return; }
  if (e.key === 't') { toggleTheme(); return; }
  if (e.key === '?') { help.showModal(); return; }
  if (current && current.mod.onKey && current.mod.onKey(e)) return;
  rowNav(e);
});

// j/k walk the focusable rows ([data-row]) of any list; Enter opens one.
function rowNav(e) {
  if (e.key !== 'j' && e.key !== 'k' && e.key !== 'Enter') return;
  const rows = [...view.querySelectorAll('[data-row]')].filter(r => r.offsetParent !== null);
  if (!rows.length) return;
  const i = rows.indexOf(document.activeElement);
  if (e.key === 'Enter') {
    if (i < 0) return;
    // A row may hold several links (a filter, examples): data-primary marks the one Enter follows.
    const link = rows[i].matches('a[href]') ? rows[i] : rows[i].querySelector('a[data-primary]') || rows[i].querySelector('a[href]');
    if (link) { e.preventDefault(); link.click(); }
    return;
  }
  e.preventDefault();
  const next = rows[Math.max(0, Math.min(rows.length - 1, i < 0 ? 0 : i + (e.key === 'j' ? 1 : -1)))];
  next.focus();
  next.scrollIntoView({ block: 'nearest' });
}

// Service colours are handed out in sorted order of the known services, so
// a service has the same colour in every view of the session.
fetch('/api/v1/services').then(r => r.ok ? r.json() : null).then(b => registerServices((b && b.services) || []))
  .catch(() => {}).finally(render);
