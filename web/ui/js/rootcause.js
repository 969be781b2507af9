// Root-cause ranking: which service and operation most likely caused what
// went wrong in a range against the range of equal length before it
// (GET /api/v1/rootcause), each with its evidence and an incident and a
// baseline example trace. The /rootcause view is the full ranking; the
// overview's "Likely causes" card shows its top rows with the same
// drawing, and cross-trace findings link to the view for their window.
import { el, clear, fmtTime, rangePicker, rangeBounds, emptyState, svcColor, traceId } from './util.js';
import { get } from './api.js';

// Below this share of the incident a cause is noise between two windows.
const MIN_SHARE = 0.1;

const idOf = x => (typeof x === 'string' ? x : x && x.trace_id) || '';

/** The ranking as rows to draw: DOM-free, so it is unit-tested in Node. */
export function causeRows(body) {
  return (body?.causes || []).filter(c => c.score >= MIN_SHARE).map(c => {
    const incident = idOf(c.examples?.incident), baseline = idOf(c.examples?.baseline);
    return {
      name: [c.service, c.operation].filter(Boolean).join(' '),
      service: c.service || '',
      operation: c.operation || '',
      share: Math.round(Math.min(c.score, 1) * 100),
      evidence: (c.evidence || []).map(e => e.text || JSON.stringify(e)),
      incident, baseline,
      // The incident is A (under investigation), the baseline B, as in Compare.
      compare: incident && baseline ? `/compare?a=${incident}&b=${baseline}` : '',
    };
  });
}

/** The server's reason for an empty ranking as a sentence for people. */
export function noTracesText(reason) {
  const r = String(reason || '').replace(/^no traces in the /, '');
  return r === String(reason || '') ? r : `No trace arrived in the ${r}, so there is nothing to compare.`;
}

/** Where the ranking of [from, to) (unix ms), within one endpoint when given, is shown. */
export function causesHref({ from, to, service = '', operation = '' }) {
  const q = new URLSearchParams({ from: String(Math.round(from)), to: String(Math.round(to)) });
  if (service) q.set('service', service);
  if (operation) q.set('operation', operation);
  return '/rootcause?' + q;
}

/**
 * Fills box (its last child is replaced) with the ranking of [from, to):
 * the causes, or a sentence why there are none; limit caps the rows drawn.
 */
async function fillCauses(box, { from, to, service = '', operation = '', limit = 0 }) {
  const fill = node => box.lastChild.replaceWith(node);
  let body;
  try {
    body = await get('/api/v1/rootcause', { from, to, service, operation });
  } catch (e) {
    if (e.status === 404) fill(emptyState('root-cause ranking not available', 'This server has no /api/v1/rootcause endpoint.'));
    else fill(el('div.error-box', el('strong', 'Could not rank causes'), el('p', String(e.message || e))));
    return;
  }
  // A window (or the one before it) without traces: the server says which.
  if (body.reason && !(body.causes || []).length) { fill(emptyState('No traces in this window', noTracesText(body.reason))); return; }
  const rows = causeRows(body);
  if (!rows.length) { fill(emptyState('No cause stands out', 'No service explains a tenth of the change against the range before.')); return; }
  fill(el('ol.causes', (limit ? rows.slice(0, limit) : rows).map(r => el('li.cause', { 'data-service': r.service },
    el('div.row', el('span.svc-dot', { style: { background: svcColor(r.service) } }), el('b', r.service), el('span', r.operation),
      el('span.spacer'), el('span.muted.small', `explains ${r.share} %`)),
    el('div.bar', el('span', { style: { width: r.share + '%' } })),
    r.evidence.length ? el('ul.small', r.evidence.map(t => el('li', t))) : null,
    r.incident || r.baseline ? exampleRow(r) : null))));
}

function exampleRow(r) {
  return el('div.small.row', r.incident ? ['incident: ', traceId(r.incident, { href: '/trace/' + r.incident })] : null,
    r.baseline ? ['baseline: ', traceId(r.baseline, { href: '/trace/' + r.baseline })] : null,
    r.compare ? el('a', { href: r.compare }, 'compare →') : null);
}

/** The full ranking: ?range= (or ?from=&to= in unix ms) and optionally ?service=&operation=. */
export async function render({ params, root }) {
  document.title = 'Root causes · tracedx';
  const service = params.get('service') || '', operation = params.get('operation') || '';
  const fixed = params.get('from') && params.get('to');
  const range = fixed ? '' : params.get('range') || '1h';
  const [from, to] = fixed ? [Number(params.get('from')), Number(params.get('to'))] : rangeBounds(range);
  if (!(from < to)) {
    root.append(el('div.error-box', el('strong', 'Bad range'), el('p', 'from and to must be unix milliseconds, from before to.')));
    return;
  }
  // app.js is loaded here, not at the top, so Node can unit-test causeRows.
  const { navigate, setParams } = await import('./app.js');
  const go = p => { setParams({ from: '', to: '', ...p }); navigate(location.pathname + location.search, { replace: true }); };
  root.append(el('div.row', el('h1', 'Root causes', service ? el('span.muted', ' · ' + [service, operation].filter(Boolean).join(' ')) : null), el('span.spacer'),
    el('span.small.muted', fmtTime(from) + ' → ' + fmtTime(to) + ', against the range just before'), rangePicker(range, r => go({ range: r }))));
  const card = el('section.card#rootcause', el('div.loading', 'Ranking causes…'));
  root.append(card);
  await fillCauses(card, { from: Math.round(from), to: Math.round(to), service, operation });
}

/** The overview's card: the top causes of [start, end) (unix ms), linking to the full ranking. */
export function rootCauseCard({ start, end, title = 'Likely causes' }) {
  const from = Math.round(start), to = Math.round(end);
  const card = el('section.card#rootcause', el('h2', title, el('span.spacer'), el('span.muted.small', 'this range against the one just before it · '),
    el('a.small#rootcause-all', { href: causesHref({ from, to }) }, 'all causes →')), el('div.loading', 'Ranking…'));
  fillCauses(card, { from, to, limit: 3 });
  return card;
}
