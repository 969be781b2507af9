// A trace past its retention: its spans are deleted, but the server keeps
// its summary (an archived search result) and its findings as long as
// retention.findings. This view shows what remains instead of a bare
// "not found".
import { el, fmtMs, fmtTime, svcColor, badge, traceId, fmtNum } from './util.js';
import { get, optional } from './api.js';

// How far back to look for the archive and the findings: the server's
// range parser reads a duration ago, and one reaching before 1970 means
// "from the beginning".
const EVER = '876000h';

/** What the server still knows of a gone trace: { summary, findings } or null. */
export async function loadGone(id) {
  const s = await get('/api/v1/search', { trace_id: id, start: EVER, limit: 1 });
  const summary = (s.traces || []).find(t => t.trace_id === id);
  if (!summary) return null;
  const f = await optional('/api/v1/findings', { trace_id: id, from: EVER, limit: 1000 }).catch(() => null);
  return { summary, findings: (f && f.findings) || [] };
}

/** The sentence that says why the spans are missing. */
export function goneNote(days) {
  const kept = days > 0 ? ` (${fmtNum(Math.round(days * 10) / 10)} day${days === 1 ? '' : 's'})` : '';
  return `The spans of this trace are past retention${kept}: its summary and its findings remain.`;
}

export function renderGone(id, { summary: t, findings }, root) {
  document.title = `${t.root_service ? t.root_service + ': ' + t.root_operation : id.slice(0, 8)} (gone) · tracedx`;
  const services = t.services || [];
  root.append(el('div.trace-head#trace-gone',
    el('div', el('h1', t.root_service ? [el('span.svc-dot', { style: { background: svcColor(t.root_service) } }), t.root_service + ': ' + (t.root_operation || '')] : 'Trace (no root span)'),
      el('div.ids', el('code#trace-id', traceId(id)), el('span.badge.plain.gone', 'trace gone'),
        t.root_service ? el('a', { href: `/search?service=${encodeURIComponent(t.root_service)}&operation=${encodeURIComponent(t.root_operation || '')}` }, 'Similar traces') : null)),
    el('span.spacer'),
    el('div.facts', el('span', el('b', fmtMs(t.duration_ms)), ' duration'), el('span', el('b', fmtNum(t.span_count)), ' spans'),
      el('span', el('b', String(services.length)), ' services'),
      el('span' + (t.error_count ? '.err' : ''), el('b', fmtNum(t.error_count || 0)), ' errors'),
      el('span#trace-start', fmtTime(t.start_time)))));
  root.append(el('div.note#gone-note', { role: 'status' }, goneNote(t.retention_days)));
  if (services.length) {
    root.append(el('section.card#gone-services', el('h2', 'Services'),
      el('table', el('thead', el('tr', el('th', 'Service'), el('th.num', 'Spans'), el('th.num', 'Errors'))),
        el('tbody', services.map(s => el('tr', el('td', el('span.svc-dot', { style: { background: svcColor(s.name) } }), s.name),
          el('td.num', fmtNum(s.span_count)), el('td.num' + (s.error_count ? '.err' : ''), fmtNum(s.error_count || 0))))))));
  }
  const card = el('section.card#findings', el('h2', `Findings (${findings.length})`));
  if (!findings.length) card.append(el('p.muted', 'No finding was stored for this trace.'));
  for (const f of findings) card.append(goneFinding(f));
  root.append(card);
  document.body.dataset.traceReady = id;
}

// A stored finding in full: with the spans gone, its evidence and the
// culprit spans' place are all there is to read.
function goneFinding(f) {
  const where = [f.service, f.operation].filter(Boolean).join(' · ');
  const spans = f.span_ids || [];
  return el('div.finding.sev-' + f.severity, { 'data-kind': f.kind },
    el('div.row', badge(f.kind, f.severity), f.impact_ms ? el('span.small', el('b', fmtMs(f.impact_ms)), ' on the critical path') : null),
    el('div.t', f.title), f.fix ? el('div.fix', 'Fix: ' + f.fix) : null,
    where || spans.length ? el('div.small.culprit', el('span.muted', 'Culprit: '), where,
      spans.length ? el('span.muted', ` (span${spans.length > 1 ? 's' : ''} ${spans.slice(0, 5).join(', ')}${spans.length > 5 ? ` and ${spans.length - 5} more` : ''})`) : null) : null,
    f.evidence && Object.keys(f.evidence).length ? el('details.evidence', { open: true }, el('summary.small.muted', 'evidence'), el('pre.small.mono', JSON.stringify(f.evidence, null, 2))) : null);
}
