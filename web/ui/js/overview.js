// Overview: where does it hurt? RED per service, the worst operations,
// findings by kind and the service map; everything clicks through.
import { el, fmtMs, fmtPct, fmtRate, rateUnit, fmtNum, sparkline, svcColor, rangePicker, rangeBounds, emptyState, badge, autoRefresh } from './util.js';
import { optional, get } from './api.js';
import { loadFindings, findingsByKind } from './data.js';
import { serviceMap } from './servicemap.js';
import { nodesNote } from './nodesnote.js';
import { traceQLAvailable } from './traceql.js';
import { navigate, setParams } from './app.js';
import { rootCauseCard } from './rootcause.js';

// A map of more services than this is a wall of boxes: show the busiest
// and the failing ones (and the calls between them), the rest on request.
const MAP_NODES = 24;

function busiest(body, n) {
  const nodes = body.nodes || [];
  if (nodes.length <= n) return body;
  // Calls, with failed calls counting more: a busy path and a failing one
  // both make the cut, a service seen once does not.
  const weight = new Map(nodes.map(x => [x.id, 0]));
  for (const e of body.edges || []) for (const id of [e.source, e.target]) weight.set(id, (weight.get(id) || 0) + (e.call_count || 0) + 5 * (e.error_count || 0));
  const keep = new Set([...weight].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, n).map(([id]) => id));
  return { ...body, nodes: nodes.filter(x => keep.has(x.id)), edges: (body.edges || []).filter(e => keep.has(e.source) && keep.has(e.target)) };
}

export async function render({ params, root }) {
  const range = params.get('range') || '1h';
  document.title = 'Overview · tracedx';
  const [start, end] = rangeBounds(range);
  const rerender = () => navigate(location.pathname + location.search, { replace: true });
  const refresh = autoRefresh(params.get('refresh'), v => { setParams({ refresh: v }); rerender(); }, rerender);
  const head = el('div.row', el('h1', 'Overview'), el('span.spacer'), refresh.node,
    rangePicker(range, r => { setParams({ range: r }); rerender(); }));
  const kpis = el('div.kpis');
  const mapCard = el('section.card', el('h2', 'Service map', el('span.spacer'), el('span.muted.small', 'edges: calls · error rate · p95; click a service or a call to see its traces')), el('div.loading', 'Loading…'));
  const svcCard = el('section.card', el('h2', 'Services'), el('div.loading', 'Loading…'));
  const findCard = el('section.card', el('h2', 'Findings by kind', el('span.spacer'), el('span.muted.small', 'by time lost')), el('div.loading', 'Loading…'));
  const hurtCard = el('section.card#where', el('h2', 'Where it hurts', el('span.spacer'), el('span.muted.small', 'problems by time lost on the critical path, then traces hurt')), el('div.loading', 'Loading…'));
  const opsCard = el('section.card', el('h2', 'Slowest operations (p95)'), el('div.loading', 'Loading…'));
  root.append(head, kpis, hurtCard, rootCauseCard({ start, end }), el('div.grid2', el('div', svcCard, opsCard), el('div', findCard)), mapCard);

  const rangeQ = `range=${encodeURIComponent(range)}`;
  const fill = (card, node) => { card.lastChild.replaceWith(node); };
  const failed = (card, e) => fill(card, el('div.error-box', String(e.message || e)));

  const findings = optional('/api/v1/findings/summary', { from: start, to: end, groups: 50 }).then(sum => {
    if (!sum || !sum.groups) return legacyFindings();
    drawFindings(sum);
    return sum;
  }).catch(e => { failed(findCard, e); failed(hurtCard, e); return null; });

  const services = optional('/api/v1/metrics/services', { start, end, points: 30 }).then(async body => {
    // Services rank by the time their findings cost, then errors, then traffic.
    const sum = await findings;
    const lost = new Map((sum?.services || []).map(x => [x.service, x.impact_ms]));
    const list = body?.services;
    if (!list) {
      fill(svcCard, emptyState('No RED metrics in this build', 'The metrics endpoint is not available; use Search to browse traces.'));
      return null;
    }
    if (!list.length) { fill(svcCard, emptyState('No traffic in this range', 'Send OTLP to the collector port, or try a longer range.')); return list; }
    const tbl = el('table', el('thead', el('tr', el('th', 'Service'), el('th.num', 'Rate'), el('th.num', 'Errors'), el('th.num', 'p95'), el('th.num', 'Time lost'), el('th', 'p95 trend'), el('th', 'errors'))));
    const tb = el('tbody');
    const unit = rateUnit(list.map(s => s.rate));
    for (const s of [...list].sort((a, b) => (lost.get(b.service) || 0) - (lost.get(a.service) || 0) || b.error_rate - a.error_rate || b.rate - a.rate)) {
      const href = `/search?service=${encodeURIComponent(s.service)}&${rangeQ}`;
      tb.append(el('tr', { tabindex: '0', 'data-row': '', onclick: () => navigate(href) },
        el('td', el('span.svc-dot', { style: { background: svcColor(s.service) } }), el('a', { href }, s.service), s.basis === 'all' ? el('span.muted.small', ' (no entry spans)') : null),
        el('td.num', fmtRate(s.rate, unit)),
        el('td.num' + (s.error_rate >= 0.05 ? '.err' : ''), fmtPct(s.error_rate)),
        el('td.num', fmtMs(s.p95_ms)),
        el('td.num', lost.get(s.service) ? fmtMs(lost.get(s.service)) : '–'),
        el('td', sparkline((s.sparkline || []).map(p => p.p95_ms))),
        el('td', sparkline((s.sparkline || []).map(p => p.error_rate), { cls: 'err' }))));
    }
    tbl.append(tb);
    fill(svcCard, tbl);
    return list;
  }).catch(e => { failed(svcCard, e); return null; });

  optional('/api/v1/metrics/operations', { start, end, sort: 'p95', limit: 10 }).then(body => {
    const ops = body?.operations;
    if (!ops) { fill(opsCard, emptyState('No operation metrics in this build')); return; }
    if (!ops.length) { fill(opsCard, emptyState('No operations in this range')); return; }
    const tb = el('tbody');
    const unit = rateUnit(ops.map(o => o.rate));
    for (const o of ops) {
      const href = `/search?service=${encodeURIComponent(o.service)}&operation=${encodeURIComponent(o.operation)}&${rangeQ}`;
      tb.append(el('tr', { tabindex: '0', 'data-row': '', onclick: () => navigate(href) },
        el('td', el('span.svc-dot', { style: { background: svcColor(o.service) } }), el('a', { href }, o.operation), el('div.muted.small', o.service + ' · ' + o.kind)),
        el('td.num', fmtMs(o.p95_ms)), el('td.num', fmtRate(o.rate, unit)), el('td.num' + (o.error_rate >= 0.05 ? '.err' : ''), fmtPct(o.error_rate))));
    }
    fill(opsCard, el('table', el('thead', el('tr', el('th', 'Operation'), el('th.num', 'p95'), el('th.num', 'Rate'), el('th.num', 'Errors'))), tb));
  }).catch(e => failed(opsCard, e));


  // Findings by kind and the problems ranked by impact, from the server's
  // aggregates over every finding in the range (no page size).
  function drawFindings(sum) {
    if (!sum.total) {
      fill(findCard, emptyState('No findings in this range', 'Traces are analysed a few seconds after their last span arrives.'));
      fill(hurtCard, emptyState('Nothing hurts in this range'));
      return;
    }
    const tb = el('tbody');
    for (const k of sum.kinds) {
      const href = `/findings?kind=${encodeURIComponent(k.kind)}&${rangeQ}`;
      tb.append(el('tr', { tabindex: '0', 'data-row': '', 'data-kind': k.kind, 'data-count': k.count, onclick: () => navigate(href) },
        el('td', el('a', { href, 'data-primary': '' }, badge(k.kind, k.severity))), el('td.num', fmtNum(k.count)), el('td.num', fmtNum(k.traces)),
        el('td.num', fmtMs(k.impact_ms))));
    }
    fill(findCard, el('table#kinds', el('thead', el('tr', el('th', 'Kind'), el('th.num', 'Findings'), el('th.num', 'Traces'), el('th.num', 'Time lost'))), tb));
    const hb = el('tbody');
    for (const g of sum.groups.slice(0, 8)) {
      const ex = g.example;
      const exHref = ex && ex.trace_id ? `/trace/${ex.trace_id}${ex.span_id ? '?span=' + ex.span_id : ''}` : null;
      const rc = `/rootcause?service=${encodeURIComponent(g.service || '')}&${rangeQ}`;
      hb.append(el('tr', { tabindex: '0', 'data-row': '', 'data-kind': g.kind, 'data-impact': g.impact_ms },
        el('td', badge(g.kind, g.severity), el('div.small', g.service ? el('b', g.service) : null, g.operation ? el('span.muted', ' ' + g.operation) : null)),
        el('td.num', fmtNum(g.traces || g.count)),
        el('td.num', el('b', fmtMs(g.impact_ms))),
        el('td.small.nowrap', exHref ? el('a.worst', { href: exHref, 'data-primary': '', title: ex.title }, 'worst example') : el('span.muted', 'no example'),
          ' · ', el('a.rc', { href: rc }, 'root causes'))));
    }
    fill(hurtCard, el('table#hurts', el('thead', el('tr', el('th', 'Problem'), el('th.num', 'Traces hurt'), el('th.num', 'Time lost'), el('th', ''))), hb));
  }

  // Servers without the summary endpoint: counts from a sample, said so.
  async function legacyFindings() {
    const { findings: fs, source } = await loadFindings({ start, end });
    const kinds = findingsByKind(fs);
    fill(hurtCard, emptyState('No ranking in this build', 'The findings summary endpoint is not available.'));
    if (!kinds.length) { fill(findCard, emptyState('No findings in this range')); return { total: 0 }; }
    fill(findCard, el('div', el('p.note', source === 'sampled' ? 'Findings of the 40 most recent traces.' : `Newest ${fmtNum(fs.length)} findings only.`),
      el('table', el('tbody', kinds.map(k => el('tr', el('td', badge(k.kind, k.worst)), el('td.num', fmtNum(k.count)), el('td.num', fmtMs(k.impact))))))));
    return { total: fs.length, by_severity: {} };
  }

  optional('/api/v1/servicemap', { start, end }).then(body => {
    if (!body) { fill(mapCard, emptyState('No service map in this build')); return; }
    // Under the title: fill replaces the card's last child.
    const nodes = nodesNote(body);
    if (nodes) mapCard.firstChild.after(nodes);
    if (!(body.nodes || []).length) { fill(mapCard, emptyState('No calls between services in this range')); return; }
    const virtual = new Set((body.nodes || []).filter(n => n.virtual).map(n => n.id));
    const all = params.get('map') === 'all';
    const shown = all ? body : busiest(body, MAP_NODES);
    if (shown !== body) {
      mapCard.firstChild.append(el('a.small#map-all', { href: `/?${rangeQ}&map=all` }, `show all ${body.nodes.length}`));
      mapCard.firstChild.querySelector('.muted.small').textContent = `the ${shown.nodes.length} services with the most (failed) calls of ${body.nodes.length} services and databases · click a service or a call to see its traces`;
    }
    fill(mapCard, serviceMap(shown, {
      onNode: n => navigate(`/search?service=${encodeURIComponent(n.id)}&${rangeQ}`),
      // An edge opens the traces where the caller calls the callee (TraceQL:
      // a callee span whose parent is a caller span), when TraceQL is served
      // here; a database or external node has no spans of its own, so its
      // edges open the caller's traces.
      onEdge: async e => {
        if (!virtual.has(e.target) && await traceQLAvailable()) {
          const q = `{ resource.service.name = ${JSON.stringify(e.source)} } > { resource.service.name = ${JSON.stringify(e.target)} }`;
          navigate(`/search?q=${encodeURIComponent(q)}&${rangeQ}`);
        } else navigate(`/search?service=${encodeURIComponent(virtual.has(e.target) ? e.source : e.target)}&${rangeQ}`);
      },
    }));
  }).catch(e => failed(mapCard, e));

  // KPIs once services and findings are in.
  const [svcs, sum] = await Promise.all([services, findings]);
  let rate = 0, errs = 0;
  for (const s of svcs || []) { rate += s.rate || 0; errs += (s.rate || 0) * (s.error_rate || 0); }
  let nTraces = null;
  if (!svcs) nTraces = await get('/api/v1/search', { start, end, limit: 1000 }).then(b => b.count).catch(() => null);
  kpis.append(
    el('div.kpi', el('b', fmtNum(svcs ? svcs.length : null)), el('span', 'services')),
    svcs ? el('div.kpi', el('b', fmtRate(rate)), el('span', 'requests, all services')) : el('div.kpi', el('b', fmtNum(nTraces)), el('span', 'traces')),
    el('div.kpi' + (rate && errs / rate >= 0.05 ? '.bad' : ''), el('b', svcs ? fmtPct(rate ? errs / rate : 0) : '–'), el('span', 'error rate')),
    el('div.kpi#kpi-findings' + ((sum?.by_severity?.critical) ? '.bad' : ''), el('b', fmtNum(sum ? sum.total : null)), el('span', 'findings')),
    sum && sum.impact_ms != null ? el('div.kpi', el('b', fmtMs(sum.impact_ms)), el('span', 'time lost to findings')) : null,
  );
  // Alerts firing now, linked to the Alerts view (absent when alerting is off).
  const alerts = await optional('/api/v1/alerts').catch(() => null);
  if (alerts) {
    const n = alerts.firing.length;
    kpis.append(el('div.kpi#kpi-alerts' + (n ? '.bad' : ''), el('b', el('a', { href: '/alerts', 'data-nav': '' }, fmtNum(n))), el('span', el('a', { href: '/alerts', 'data-nav': '' }, 'alerts firing'))));
  }
  return () => refresh.stop();
}
