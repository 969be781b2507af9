// Root-cause ranking: which service and operation most likely caused what
// went wrong in a range (GET /api/v1/rootcause), each with its evidence and
// a baseline and an incident example trace. Servers without the endpoint
// say so.
import { el, clear, fmtTime, rangePicker, rangeBounds, emptyState, svcColor, traceId } from './util.js';
import { get } from './api.js';
import { navigate, setParams } from './app.js';

export async function render({ params, root }) {
  document.title = 'Root causes · tracedx';
  const service = params.get('service') || '', range = params.get('range') || '1h';
  const [from, to] = rangeBounds(range);
  const go = p => { setParams(p); navigate(location.pathname + location.search, { replace: true }); };
  root.append(el('div.row', el('h1', 'Root causes', service ? el('span.muted', ' · ' + service) : null), el('span.spacer'),
    el('span.small.muted', fmtTime(from) + ' → ' + fmtTime(to)), rangePicker(range, r => go({ range: r }))));
  const card = el('section.card#rootcause', el('div.loading', 'Ranking causes…'));
  root.append(card);
  let body;
  try {
    body = await get('/api/v1/rootcause', { from, to, service });
  } catch (e) {
    clear(card).append(e.status === 404 ? emptyState('root-cause ranking not available', 'This server has no /api/v1/rootcause endpoint.')
      : el('div.error-box', el('strong', 'Could not rank causes'), el('p', e.message)));
    return;
  }
  const causes = body.causes || [];
  clear(card);
  if (!causes.length) { card.append(emptyState('No cause stands out', 'Nothing in this range differs enough from the baseline.')); return; }
  const idOf = x => (typeof x === 'string' ? x : x && x.trace_id) || '';
  const max = Math.max(...causes.map(c => c.score || 0), 1e-9);
  card.append(el('ol.causes', causes.map(c => el('li.cause', { 'data-service': c.service },
    el('div.row', el('span.svc-dot', { style: { background: svcColor(c.service) } }), el('b', c.service), el('span', c.operation || ''),
      el('span.spacer'), el('span.score', { title: 'score' }, (c.score ?? 0).toFixed(2)),
      el('span.lift', { style: { width: Math.round((c.score || 0) / max * 120) + 'px' } })),
    (c.evidence || []).length ? el('ul.small', c.evidence.map(e => el('li', e.text || JSON.stringify(e)))) : null,
    c.examples ? exampleRow(idOf(c.examples.incident), idOf(c.examples.baseline)) : null))));
}

// The incident is A (under investigation), the baseline B, as in Compare.
function exampleRow(inc, base) {
  return el('div.small.row', inc ? ['incident: ', traceId(inc, { href: '/trace/' + inc })] : null,
    base ? ['baseline: ', traceId(base, { href: '/trace/' + base })] : null,
    inc && base ? el('a', { href: `/compare?a=${inc}&b=${base}` }, 'compare →') : null);
}
