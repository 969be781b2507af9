// Likely causes: GET /api/v1/rootcause ranks the services that explain a
// window against the window of equal length before it. Shown on the
// overview and, for a cross-trace finding, in the side panel.
import { el, svcColor, emptyState } from './util.js';
import { get } from './api.js';

// Below this share of the incident a cause is noise between two windows.
const MIN_SHARE = 0.1;

/** The ranking as rows to draw: DOM-free, so it is unit-tested in Node. */
export function causeRows(body) {
  return (body?.causes || []).filter(c => c.score >= MIN_SHARE).map(c => ({
    name: [c.service, c.operation].filter(Boolean).join(' '),
    service: c.service,
    share: Math.round(Math.min(c.score, 1) * 100),
    evidence: (c.evidence || []).map(e => e.text),
    compare: c.examples?.baseline && c.examples?.incident ? `/compare?a=${c.examples.baseline}&b=${c.examples.incident}` : '',
  }));
}

/** A card ranking the causes of [start, end) (unix ms), within one endpoint when given. */
export function rootCauseCard({ start, end, service = '', operation = '', title = 'Likely causes' }) {
  const card = el('section.card#rootcause', el('h2', title, el('span.spacer'), el('span.muted.small', 'this range against the one just before it')),
    el('div.loading', 'Ranking…'));
  const fill = node => card.lastChild.replaceWith(node);
  const from = Math.round(start), to = Math.round(end), before = from - (to - from);
  // A window without traces is a 404 of the ranking; asking the search
  // first keeps that out of the browser console on a fresh install.
  const any = (s, e) => get('/api/v1/search', { start: s, end: e, service, operation, limit: 1 }).then(b => b.count > 0);
  Promise.all([any(before, from), any(from, to)]).then(([inBase, inIncident]) => {
    if (!inBase || !inIncident) {
      fill(emptyState('Nothing to compare', `No traces${service ? ' of ' + [service, operation].filter(Boolean).join(' ') : ''} in ${inBase ? 'this range' : 'the range before this one'}.`));
      return null;
    }
    return get('/api/v1/rootcause', { from, to, service, operation, causes: 5 });
  }).then(body => {
    if (!body) return;
    const rows = causeRows(body);
    if (!rows.length) { fill(emptyState('Nothing stands out', 'No service explains a tenth of the change against the range before.')); return; }
    fill(el('ol.causes', rows.map(r => el('li',
      el('div.row', el('span.svc-dot', { style: { background: svcColor(r.service) } }), el('strong', r.name), el('span.spacer'),
        el('span.muted.small', `explains ${r.share} %`), r.compare ? el('a.small', { href: r.compare, 'data-nav': '' }, 'compare examples') : null),
      el('div.bar', el('span', { style: { width: r.share + '%' } })),
      r.evidence.length ? el('ul.small', r.evidence.map(t => el('li', t))) : null))));
  }).catch(e => {
    if (e.status === 404 && /no traces/.test(e.message)) fill(emptyState('Nothing to compare', e.message));
    else if (e.status === 404) card.remove();
    else fill(el('div.error-box', String(e.message || e)));
  });
  return card;
}
