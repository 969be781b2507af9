// Alerts: what fires now and who to blame, what is pending, the rules and
// their health, and what resolved recently. Refreshes every 15 s like the
// server's evaluation.
import { el, clear, fmtTime, emptyState, badge } from './util.js';
import { optional } from './api.js';

const REFRESH_MS = 15000;

export async function render({ params, root }) {
  document.title = 'Alerts · tracedx';
  const only = params.get('rule') || '';
  const body = el('div', el('div.loading', 'Loading alerts…'));
  root.append(el('div.row', el('h1', 'Alerts'), el('span.spacer'),
    only ? el('a.small', { href: '/alerts', 'data-nav': '' }, 'all rules') : null), body);
  let timer = null;
  const load = async () => {
    let alerts, rules;
    try {
      [alerts, rules] = await Promise.all([optional('/api/v1/alerts'), optional('/api/v1/rules')]);
    } catch (e) {
      clear(body).append(el('div.error-box', el('strong', 'Could not load alerts'), el('p', e.message)));
      return;
    }
    if (!alerts) {
      clear(body).append(emptyState('Alerting is off', 'Start tracedx serve with alerting.enabled: true (the default); docs/alerting.md explains the rules.'));
      return;
    }
    const keep = a => !only || a.rule === only;
    clear(body).append(
      section('Firing', alerts.firing.filter(keep), 'Nothing is firing.'),
      section('Pending', alerts.pending.filter(keep), 'Nothing is pending.'),
      rulesCard((rules?.data?.groups || []).flatMap(g => g.rules).filter(r => !only || r.name === only)),
      section('Resolved recently', alerts.history.filter(keep).slice(0, 50), 'No alert resolved recently.'));
    timer = setTimeout(load, REFRESH_MS);
  };
  await load();
  return () => clearTimeout(timer);
}

function sevOf(a) {
  const s = a.labels.severity;
  return s === 'critical' || s === 'page' ? 'critical' : s === 'info' ? 'info' : 'warning';
}

function section(title, list, empty) {
  const card = el('section.card', el('h2', `${title} (${list.length})`));
  if (!list.length) { card.append(el('p.muted', empty)); return card; }
  const tb = el('tbody');
  for (const a of list) {
    const an = a.annotations || {};
    const when = a.state === 'resolved' ? a.resolved_at : a.state === 'firing' ? a.fired_at : a.active_at;
    const links = [['trace', an.trace_url], ['finding', an.finding_url], ['comparison', an.compare_url]]
      .filter(([, u]) => u).map(([label, u], i) => [i ? ' · ' : '', el('a.small', { href: localPath(u) }, label)]);
    tb.append(el('tr', { 'data-row': '', 'data-alert': a.labels.alertname },
      el('td', badge(a.labels.alertname, sevOf(a)), el('div.small.muted', labelText(a.labels))),
      el('td', el('div', an.summary || ''), an.impact ? el('div.small.muted', an.impact) : null),
      el('td', an.culprit ? el('b', an.culprit) : '–', an.culprit_reason ? el('div.small.muted', an.culprit_reason) : null),
      el('td.small', links.length ? links : '–'),
      el('td.small.muted', { title: when ? fmtTime(when) : '' }, when ? fmtTime(when, { short: true }) : '')));
  }
  card.append(el('div.hscroll', el('table.alerts-table', el('thead', el('tr', el('th', 'Alert'), el('th', 'What'), el('th', 'Culprit'), el('th', 'Open'), el('th', 'Since'))), tb)));
  return card;
}

function rulesCard(rules) {
  const card = el('section.card', el('h2', `Rules (${rules.length})`));
  if (!rules.length) { card.append(el('p.muted', 'No rules.')); return card; }
  const tb = el('tbody');
  for (const r of rules) {
    tb.append(el('tr', { 'data-rule': r.name },
      el('td', el('a', { href: '/alerts?rule=' + encodeURIComponent(r.name), 'data-nav': '' }, r.name)),
      el('td.small', r.query, r.duration ? el('div.muted', `for ${r.duration} s`) : null),
      el('td.small', r.state),
      el('td.small' + (r.health === 'err' ? '.err' : ''), { title: r.lastError || '' }, r.health + (r.lastError ? ': ' + r.lastError : ''))));
  }
  card.append(el('table', el('thead', el('tr', el('th', 'Rule'), el('th', 'Condition'), el('th', 'State'), el('th', 'Health'))), tb));
  return card;
}

function labelText(labels) {
  return Object.entries(labels).filter(([k]) => k !== 'alertname').map(([k, v]) => `${k}=${v}`).join(' ');
}

/** Links in alerts carry the external URL; inside the UI open them here. */
function localPath(u) {
  try { const x = new URL(u); return x.pathname + x.search; } catch { return u; }
}
