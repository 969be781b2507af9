// End-to-end tests of the tracedx UI: builds tracedx, starts `tracedx serve`
// on free loopback ports with a temporary data dir, loads OTLP fixtures (and
// a 5,000-span trace, and the demo shop when available), then drives every
// view in headless Chromium. Screenshots go to docs/img/.
//
//   node web/e2e/run.mjs            (from the repository root or anywhere)
//   E2E_DEMO=0 node web/e2e/run.mjs (skip the demo shop traffic)
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import assert from 'node:assert/strict';
import { launch } from './browser.mjs';
import { layoutProblems } from './layout.mjs';
import { listFixtures, loadFixture, shiftTo, traceIdOf, bigTrace, withNewTraceId, firstSpanIdOf, logsDoc } from './otlp.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const imgDir = join(repo, 'docs', 'img');
const tmp = mkdtempSync(join(tmpdir(), 'tracedx-e2e-'));
const children = [];
const results = [];
let failed = 0;

function log(...a) { console.log('[e2e]', ...a); }

async function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
    s.on('error', rej);
  });
}

function start(cmd, args, name) {
  const p = spawn(cmd, args, { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = [];
  p.stdout.on('data', d => out.push(d));
  p.stderr.on('data', d => out.push(d));
  p.output = () => Buffer.concat(out).toString();
  p.label = name;
  children.push(p);
  return p;
}

async function waitFor(what, fn, ms = 30000, every = 250) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    await new Promise(r => setTimeout(r, every));
  }
  throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) { const e = new Error(`${r.status} ${url}`); e.status = r.status; throw e; }
  return r.json();
}

// E2E_ONLY=regexp runs only the checks whose name matches (while working
// on one view; CI runs them all).
const only = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;

async function check(name, fn) {
  if (only && !only.test(name)) return;
  const t = Date.now();
  try {
    await fn();
    results.push(['ok', name, Date.now() - t]);
    log('ok  ', name, `(${Date.now() - t} ms)`);
  } catch (e) {
    failed++;
    results.push(['FAIL', name, Date.now() - t, e.message]);
    log('FAIL', name, '\n     ', e.stack || e.message);
  }
}

async function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 300));
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}

process.on('SIGINT', async () => { await cleanup(); process.exit(130); });

async function main() {
  // 1. Build and start the server (E2E_BACKEND=devserver: the UI dev server
  // with an in-memory store, for working on the UI while serve is broken).
  const bin = join(tmp, 'tracedx');
  const useDev = process.env.E2E_BACKEND === 'devserver';
  let api, base, otlpUrl;
  if (useDev) {
    const dev = join(tmp, 'devserver');
    log('building web/devserver…');
    execFileSync('go', ['build', '-o', dev, './web/devserver'], { cwd: repo, stdio: 'inherit' });
    const port = await freePort();
    mkdirSync(join(tmp, 'none'));
    const d = start(dev, ['-addr', `127.0.0.1:${port}`, '-ui', '', '-fixtures', join(tmp, 'none')], 'devserver');
    api = base = `http://127.0.0.1:${port}`;
    otlpUrl = `${api}/v1/traces`;
    await waitFor('devserver', async () => { if (d.exitCode !== null) throw new Error(d.output()); return (await fetch(api + '/healthz')).ok; });
  } else {
    log('building tracedx…');
    execFileSync('go', ['build', '-o', bin, './cmd/tracedx'], { cwd: repo, stdio: 'inherit' });
    const [httpPort, otlpHttp, otlpGrpc, tempoPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    // The 600 N+1 copies below complete together: with the default queue
    // (8,192 spans) and CPU share (20 %) the analysis sheds some of them by
    // design, and the "more findings than a page" precondition flaked.
    const cfgFile = join(tmp, 'tracedx.yaml');
    writeFileSync(cfgFile, 'analysis:\n  max_cpu_share: 1\n  queue_spans: 200000\n');
    const server = start(bin, ['serve', '--config', cfgFile, '--data-dir', join(tmp, 'data'), '--http-addr', `127.0.0.1:${httpPort}`,
      '--otlp-http-addr', `127.0.0.1:${otlpHttp}`, '--otlp-grpc-addr', `127.0.0.1:${otlpGrpc}`, '--zipkin-addr', '', '--tempo-addr', `127.0.0.1:${tempoPort}`,
      '--trace-idle-timeout', '2s', '--log-level', 'warn'], 'tracedx serve');
    api = base = `http://127.0.0.1:${httpPort}`;
    otlpUrl = `http://127.0.0.1:${otlpHttp}/v1/traces`;
    await waitFor('tracedx serve', async () => {
      if (server.exitCode !== null) throw new Error('tracedx serve exited:\n' + server.output());
      return (await fetch(api + '/healthz')).ok;
    });
    const index = await (await fetch(api + '/trace/00000000000000000000000000000001')).text();
    if (!index.includes('/js/app.js')) {
      // The server does not mount the UI yet: put the dev server in front.
      log('WARNING: tracedx serve does not serve the UI at /; using web/devserver in proxy mode');
      const dev = join(tmp, 'devserver');
      execFileSync('go', ['build', '-o', dev, './web/devserver'], { cwd: repo, stdio: 'inherit' });
      const devPort = await freePort();
      const d = start(dev, ['-addr', `127.0.0.1:${devPort}`, '-ui', '', '-proxy', api], 'devserver');
      base = `http://127.0.0.1:${devPort}`;
      await waitFor('devserver', async () => { if (d.exitCode !== null) throw new Error(d.output()); return (await fetch(base + '/')).ok; });
    }
  }
  log('UI at', base);

  // 2. Load traces: fixtures shifted into the last minutes, and a 5,000-span trace.
  const fixtures = listFixtures(join(repo, 'testdata', 'traces'));
  assert.ok(fixtures.length > 0, 'no fixtures under testdata/traces');
  const now = BigInt(Date.now()) * 1_000_000n;
  const ids = {};
  for (const [i, f] of fixtures.entries()) {
    const doc = shiftTo(loadFixture(f), now - BigInt(i) * 7_000_000_000n - 2_000_000_000n);
    ids[basename(f, '.json')] = traceIdOf(doc);
    const r = await fetch(otlpUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(doc) });
    assert.ok(r.ok, `ingest ${f}: ${r.status} ${await r.text()}`);
  }
  const big = bigTrace(5000, now - 1_000_000_000n);
  {
    const r = await fetch(otlpUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(big.doc) });
    assert.ok(r.ok, `ingest big trace: ${r.status} ${await r.text()}`);
  }
  // Over one page of GET /api/v1/traces/{id} (query.max_trace_spans, 10,000).
  const huge = bigTrace(12000, now - 1_500_000_000n);
  {
    const r = await fetch(otlpUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(huge.doc) });
    assert.ok(r.ok, `ingest huge trace: ${r.status} ${await r.text()}`);
  }
  log(`sent ${fixtures.length} fixture traces, a ${big.count}-span and a ${huge.count}-span trace`);
  // More findings than one page of the findings list (500): the overview
  // once counted a page and showed "500 findings".
  const n1doc = loadFixture(fixtures.find(f => basename(f, '.json') === 'positive-orders-then-50-customers'));
  for (let batch = 0; batch < 10; batch++) {
    const resourceSpans = [];
    for (let k = 0; k < 60; k++) {
      const i = batch * 60 + k;
      // Older than the fixtures, so newest-first lists still show those.
      resourceSpans.push(...shiftTo(withNewTraceId(n1doc), now - BigInt(i) * 900_000_000n - 660_000_000_000n).resourceSpans);
    }
    const r = await fetch(otlpUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ resourceSpans }) });
    assert.ok(r.ok, `ingest N+1 copies: ${r.status}`);
  }
  // Logs of the N+1 trace: one on its root span, one without a span id.
  const n1Root = firstSpanIdOf(shiftTo(loadFixture(fixtures.find(f => basename(f, '.json') === 'positive-orders-then-50-customers')), now));
  const logsResp = await fetch(otlpUrl.replace(/\/v1\/traces$/, '/v1/logs'), { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(logsDoc(ids['positive-orders-then-50-customers'], n1Root, now - 2_500_000_000n)) });
  log(`sent 600 copies of the N+1 trace; logs: ${logsResp.status}`);
  if (process.env.E2E_DEMO !== '0' && !useDev) {
    const help = (() => { try { return execFileSync(bin, ['demo', '--help'], { encoding: 'utf8' }); } catch { return ''; } })();
    if (help.includes('--endpoint') || help.includes('-endpoint')) {
      const demo = start(bin, ['demo', '--endpoint', new URL(otlpUrl).host, '--incident', 'all', '--rate', '8', '--incident-every', '0',
        '--consumer-lag', '2s', '--control-addr', `127.0.0.1:${await freePort()}`, '--duration', '25s'], 'tracedx demo');
      log('demo shop sending traffic for 25 s…');
      await waitFor('demo', () => demo.exitCode !== null, 60000, 500).catch(() => demo.kill('SIGTERM'));
    } else log('tracedx demo not available; fixtures only');
  }

  const nplus1 = ids['positive-orders-then-50-customers'];
  const healthy = ids['healthy-batched-in-query'];
  assert.ok(nplus1 && healthy, 'N+1 fixtures missing');
  const analysis = await waitFor('analysis of the N+1 trace', async () => {
    const a = await getJSON(`${api}/api/v1/traces/${nplus1}/analysis`);
    return (a.findings || []).some(f => f.kind === 'n_plus_one_query') ? a : null;
  }, 30000);
  const n1 = analysis.findings.find(f => f.kind === 'n_plus_one_query');
  await waitFor('big trace stored', () => getJSON(`${api}/api/v1/traces/${big.traceId}`).then(t => t.span_count >= 5000), 30000);
  await waitFor('huge trace stored', () => getJSON(`${api}/api/v1/traces/${huge.traceId}`).then(t => Math.max(t.total_spans || 0, t.span_count) >= huge.count), 30000);
  // Give the background analysis a moment (findings store, RED, service map).
  await waitFor('findings store', async () => {
    const r = await fetch(`${api}/api/v1/findings?limit=1`);
    if (r.status === 404) return true;
    const b = await r.json();
    return (Array.isArray(b) ? b : b.findings || []).length > 0;
  }, 20000).catch(() => log('findings store stayed empty'));
  // The background analysis works through the 600 copies too: badges and
  // TraceQL's finding.kind read the stored findings of the N+1 trace.
  await waitFor('stored findings of the N+1 trace', async () => {
    const r = await fetch(`${api}/api/v1/findings?trace_id=${nplus1}`);
    if (r.status === 404) return true;
    return ((await r.json()).findings || []).some(f => f.kind === 'n_plus_one_query');
  }, 90000, 500).catch(() => log('the N+1 trace has no stored finding yet'));

  // 3. The browser.
  mkdirSync(imgDir, { recursive: true });
  const b = await launch();
  const page = await b.page();
  const optional404 = [];
  page.on('response', r => {
    if (r.status() === 404 && /\/api\/v1\/(findings|compare|attribution|metrics|servicemap|rootcause)/.test(r.url())) optional404.push(new URL(r.url()).pathname);
  });
  await check('the Tempo API is mounted on the UI origin', async () => {
    // The TraceQL box calls /tempo/api/search on the UI's own origin.
    const r = await fetch(`${base}/tempo/api/echo`);
    if (!r.ok) throw new Error(`${base}/tempo/api/echo: ${r.status}`);
  });
  // A plain run leaves the repository clean: its screenshots go to the
  // run's temporary directory. E2E_SHOTS=1 writes every view, light and
  // dark, 1440 and 1024 wide, to docs/img (see screenshots below).
  const shotDir = join(tmp, 'shots');
  mkdirSync(shotDir, { recursive: true });
  const shot = async name => { await page.waitForTimeout(150); await page.screenshot({ path: join(shotDir, name) }); };
  const goto = async path => { await page.goto(base + path, { waitUntil: 'networkidle' }); };

  await check('overview renders', async () => {
    await goto('/');
    await page.waitForSelector('h1:text("Overview")');
    await page.waitForFunction(() => !document.querySelector('#view .loading'), null, { timeout: 15000 });
    const kpis = await page.locator('.kpi').count();
    assert.ok(kpis >= 3, 'KPIs missing');
    const hasMetrics = await fetch(`${api}/api/v1/metrics/services`).then(r => r.ok);
    if (hasMetrics) {
      const rows = await page.locator('section.card:has(h2:text("Services")) tbody tr').count();
      assert.ok(rows >= 1, 'no service rows although /metrics/services answers');
    }
    const map = await fetch(`${api}/api/v1/servicemap`).then(r => r.ok ? r.json() : null).catch(() => null);
    if (map && (map.nodes || []).length) {
      assert.ok(await page.locator('svg.map g.node').count() >= 1, 'service map has no nodes');
      assert.ok(await page.locator('svg.map g.edge text').count() >= 1, 'service map edges carry no labels');
    }
    await shot('overview.png');
    // The likely-causes card settles: a ranking, or a sentence why there is none.
    await page.waitForFunction(() => { const c = document.querySelector('#rootcause'); return !c || !c.querySelector('.loading'); }, null, { timeout: 15000 });
    const rc = await fetch(`${api}/api/v1/rootcause?from=1h`);
    assert.equal(rc.status, 200, `GET /api/v1/rootcause: ${rc.status}`);
    assert.ok(await page.locator('#rootcause ol.causes li, #rootcause .empty').count() >= 1, 'the likely-causes card shows neither causes nor a reason');
    assert.ok(await page.locator('#rootcause ol.causes li').count() <= 3, 'the card shows more than the top causes');
    // Its link opens the full ranking of the same window.
    await page.click('#rootcause-all');
    await page.waitForFunction(() => location.pathname === '/rootcause' && new URL(location.href).searchParams.get('to'));
    // The overview's own card is #rootcause too, with the same rows, and
    // stays until the view is swapped: body[data-view] changes with the swap.
    await page.waitForSelector('body[data-view="rootcause"] #rootcause :is(.empty, .cause, .error-box)');
    await page.goBack();
    await page.waitForSelector(map && (map.nodes || []).length ? 'svg.map g.node' : '#kpi-findings');
    if (map && (map.nodes || []).length) {
      // Click-through: a call between two instrumented services opens the
      // traces where one calls the other (TraceQL, caller span > callee span).
      const virtual = new Set(map.nodes.filter(n => n.virtual).map(n => n.id));
      const drawn = new Set(await page.locator('svg.map g.edge').evaluateAll(els => els.map(e => e.dataset.edge)));
      if (map.nodes.length > 24) assert.ok(await page.locator('svg.map g.node').count() <= 24 && await page.locator('#map-all').count() === 1, 'a big map is not trimmed');
      // An edge whose caller spans are direct parents of callee spans (an
      // edge inferred from a peer attribute has no such pair in TraceQL).
      let edge = null;
      for (const e of (map.edges || []).filter(e => drawn.has(`${e.source}>${e.target}`) && e.source !== e.target && !virtual.has(e.target) && !virtual.has(e.source))) {
        const tq = `{ resource.service.name = ${JSON.stringify(e.source)} } > { resource.service.name = ${JSON.stringify(e.target)} }`;
        const hits = await getJSON(`${base}/tempo/api/search?q=${encodeURIComponent(tq)}&start=${Math.floor(Date.now() / 1000) - 3600}&end=${Math.ceil(Date.now() / 1000)}&limit=1`).catch(() => null);
        if (hits && (hits.traces || []).length) { edge = e; break; }
      }
      if (edge) {
        await page.locator(`svg.map g.edge[data-edge="${edge.source}>${edge.target}"]`).dispatchEvent('click');
        await page.waitForFunction(() => location.pathname === '/search');
        const q = new URL(page.url()).searchParams.get('q');
        assert.equal(q, `{ resource.service.name = ${JSON.stringify(edge.source)} } > { resource.service.name = ${JSON.stringify(edge.target)} }`);
        await page.waitForSelector('.results .result', { timeout: 15000 });
        const first = page.locator('.results .result').first();
        const svcs = await first.locator('.svcs').innerText();
        const shown = await first.locator('.svcs > span').count();
        assert.ok(shown >= 6 || (svcs.includes(edge.source) && svcs.includes(edge.target)), `first hit does not involve both services: ${svcs}`);
        log(`service map: ${edge.source} → ${edge.target} opened ${await page.locator('.results .result').count()} traces via TraceQL`);
      }
      await goto('/');
      await page.locator('svg.map g.node').first().focus();
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => location.pathname === '/search' && new URL(location.href).searchParams.get('service'));
    }
  });

  await check('root causes: a window without traces is an empty ranking with its reason, shown as such', async () => {
    // A day-long window a year ago: nothing was stored then.
    const to = Date.now() - 365 * 86400e3, from = to - 86400e3;
    const r = await fetch(`${api}/api/v1/rootcause?from=${from}&to=${to}`);
    assert.equal(r.status, 200, `an empty window answers ${r.status}`);
    const body = await r.json();
    assert.deepEqual(body.causes, [], 'causes of an empty window');
    assert.match(body.reason || '', /no traces/, 'no reason given');
    await goto(`/rootcause?from=${from}&to=${to}`);
    await page.waitForSelector('#rootcause .empty, #rootcause .error-box');
    const text = await page.locator('#rootcause').innerText();
    assert.match(text, /No traces in this window/, 'the view does not say the window is empty: ' + text);
    assert.doesNotMatch(text, /not available/, 'an empty window reads as a missing endpoint');
  });

  await check('search lists traces newest first with a scatter', async () => {
    await goto('/search?service=order-service&range=1h');
    await page.waitForSelector('.results .result');
    await page.waitForSelector('svg.scatter[data-total] circle');
    const dots = await page.locator('svg.scatter circle').count();
    assert.equal(dots, Number(await page.getAttribute('svg.scatter', 'data-points')), 'one dot per sampled trace');
    const traces = await page.locator('.results .result').evaluateAll(els => els.map(e => e.dataset.trace));
    assert.ok(traces.includes(nplus1), 'N+1 trace not in the order-service results');
    await page.waitForSelector(`.result[data-trace="${nplus1}"] .badge:text("n plus one query")`, { timeout: 15000 });
    // Keyboard: / focuses the filter box; j moves through results.
    await page.keyboard.press('/');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'f-attrs');
    await page.keyboard.press('Escape');
    await page.keyboard.press('j');
    assert.ok(await page.evaluate(() => document.activeElement.classList.contains('result')), 'j does not focus a result');
    await goto('/search?range=1h');
    await page.waitForSelector('svg.scatter[data-total] circle');
    // Brush the slowest region of the scatter and follow the compare link.
    const box = await page.locator('svg.scatter').boundingBox();
    await page.mouse.move(box.x + box.width * 0.06, box.y + 4);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.999, box.y + box.height * 0.45, { steps: 5 });
    await page.mouse.up();
    await page.waitForSelector('#send-compare');
    await shot('search.png');
  });

  await check('TraceQL search finds the N+1 trace by finding kind and by span attribute', async () => {
    const q = '{ finding.kind = "n_plus_one_query" }';
    await goto('/search?mode=traceql&range=1h');
    await page.waitForSelector('#f-tql');
    assert.equal(await page.locator('#tab-traceql').getAttribute('aria-selected'), 'true');
    // Typed and run with Enter; the query lands in the URL.
    await page.fill('#f-tql', q);
    await page.press('#f-tql', 'Enter');
    await page.waitForSelector(`.results .result[data-trace="${nplus1}"]`, { timeout: 15000 });
    assert.equal(new URL(page.url()).searchParams.get('q'), q, 'query not in the URL');
    const starts = await page.locator('.results .result').evaluateAll(els => els.map(e => Date.parse(e.dataset.start)));
    assert.ok(starts.every((t, i) => i === 0 || starts[i - 1] >= t), 'TraceQL results not newest first');
    assert.ok(await page.locator('svg.scatter circle').count() === starts.length, 'scatter does not plot the TraceQL results');
    const row = page.locator(`.results .result[data-trace="${nplus1}"]`);
    await row.locator('.badge:text("n plus one query")').waitFor({ timeout: 15000 });
    assert.match(await row.locator('.badge.matched').innerText(), /\d+ matched span/);
    assert.match(await row.getAttribute('href'), new RegExp(`^/trace/${nplus1}\\?span=[0-9a-f]{16}$`), 'a hit does not open at its matched span');
    await shot('search-traceql.png');
    // Reloading the shared URL runs the same query.
    await page.reload({ waitUntil: 'networkidle' });
    await page.waitForSelector(`.results .result[data-trace="${nplus1}"]`);
    assert.equal(await page.inputValue('#f-tql'), q);
    // A span attribute query: the 50 customer lookups of the N+1 trace.
    await goto('/search?range=1h&q=' + encodeURIComponent('{ resource.service.name = "order-service" && span.db.collection.name = "customers" }'));
    await page.waitForSelector(`.results .result[data-trace="${nplus1}"]`, { timeout: 15000 });
    const matched = await page.locator(`.results .result[data-trace="${nplus1}"] .badge.matched`).innerText();
    assert.match(matched, /^50 matched spans/, 'the 50 customer queries are not the matched spans: ' + matched);
    // The filter form converts to TraceQL.
    await goto('/search?service=order-service&status=error&range=1h');
    await page.click('#to-traceql');
    assert.equal(await page.inputValue('#f-tql'), '{ resource.service.name = "order-service" && status = error }');
  });

  await check('a bad TraceQL query shows the parse error inline', async () => {
    await goto('/search?mode=traceql&range=1h');
    await page.fill('#f-tql', '{ status = }');
    await page.press('#f-tql', 'Enter');
    const box = page.locator('#tql-error:not([hidden])');
    await box.waitFor({ timeout: 10000 });
    const text = await box.innerText();
    assert.match(text, /Line 1, column 12/, 'no position: ' + text);
    assert.match(text, /expected/, 'no expectation: ' + text);
    assert.equal(await page.getAttribute('#f-tql', 'aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.getElementById('f-tql').selectionStart), 11, 'cursor not put at the error');
    assert.equal(await page.locator('.results .result').count(), 0);
    await shot('search-traceql-error.png');
    // Editing clears the error.
    await page.type('#f-tql', ' ');
    assert.equal(await page.locator('#tql-error:not([hidden])').count(), 0, 'error not cleared on edit');
  });

  await check('trace: N+1 finding pinned to its spans, critical path highlighted', async () => {
    await goto(`/trace/${nplus1}`);
    await page.waitForSelector(`body[data-analysis-ready="${nplus1}"]`);
    await page.waitForSelector('.finding[data-kind="n_plus_one_query"]');
    const cmp = new URL(await page.getAttribute('#cmp-endpoint', 'href'), base);
    assert.equal(cmp.searchParams.get('service'), 'order-service', 'endpoint comparison link: ' + cmp);
    assert.ok(Number(cmp.searchParams.get('a_min_duration')) > 0);
    const want = new Set(n1.span_ids);
    const marked = await page.locator('.wf-row:has(.fmark:text("n plus one query"))').evaluateAll(els => els.map(e => e.dataset.span));
    assert.ok(marked.length >= 5, `only ${marked.length} rows carry the N+1 badge`);
    for (const id of marked) assert.ok(want.has(id), `span ${id} is badged but not in the finding`);
    await page.click('.finding[data-kind="n_plus_one_query"]');
    const hl = await page.locator('.wf-row.hl').evaluateAll(els => els.map(e => e.dataset.span));
    assert.ok(hl.length >= 5 && hl.every(id => want.has(id)), 'clicking the finding does not highlight its spans');
    await page.waitForSelector('#span-detail');
    const cpRows = await page.locator('.wf-row.cp').evaluateAll(els => els.map(e => e.dataset.span));
    const cpIds = new Set(analysis.critical_path.map(p => p.span_id));
    assert.ok(cpRows.length > 0 && await page.locator('.wf-cp').count() > 0, 'no critical path drawn');
    const visibleCp = [...cpIds].filter(id => marked.includes(id) || cpRows.includes(id));
    assert.ok(visibleCp.length > 0, 'server critical path spans are not highlighted');
    const nonCp = await page.locator('.wf-row:not(.cp)').count();
    assert.ok(nonCp >= 0);
    await page.keyboard.press('Escape');
    assert.equal(await page.locator('#span-detail').count(), 0, 'Esc does not close the panel');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.click('.wf-row[data-i="0"] .op');
    await page.waitForSelector('#span-detail h3:text("Attributes")');
    await shot('trace.png');
    await page.keyboard.press('Escape');
    await page.keyboard.press('j');
    assert.equal(await page.locator('.wf-row.sel').getAttribute('data-i'), '1', 'j does not move the selection');
  });

  await check('trace: flame graph and service statistics', async () => {
    await goto(`/trace/${nplus1}?tab=flame`);
    await page.waitForSelector('#flame canvas[data-frames]');
    // Merged by service and operation: the 50 customer queries are one frame.
    const frames = Number(await page.getAttribute('#flame canvas', 'data-frames'));
    assert.ok(frames > 0 && frames <= analysis.span_count - 49, `${frames} frames for ${analysis.span_count} spans: not merged`);
    assert.match(await page.getAttribute('#flame canvas', 'aria-label'), /order-service: /, 'frames carry no service names');
    await shot('trace-flame.png');
    await page.click('button[data-tab="services"]');
    assert.ok(await page.locator('#service-stats tbody tr').count() >= 1);
  });

  await check('trace: dark theme', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    const errTrace = ids['positive-inventory-pool-exhaustion'] || ids[Object.keys(ids).find(k => k.startsWith('positive-'))];
    await goto(`/trace/${errTrace}`);
    await page.waitForSelector(`body[data-analysis-ready]`);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, 'rgb(246, 247, 249)', 'dark theme not applied');
    await shot('trace-dark.png');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  await check('compare shows the N+1 difference', async () => {
    await goto(`/compare?a=${nplus1}&b=${healthy}`);
    await page.waitForSelector('#cmp-notes li');
    const notes = (await page.locator('#cmp-notes').innerText());
    // The server's sentence for the N+1: "order-service: SELECT … : 50 → 1 calls".
    assert.match(notes, /\d+ → \d+ calls|only in A|called \d+ × in A/, 'no call-count difference reported:\n' + notes);
    assert.ok(await page.locator('tr.only-a, tr.changed').count() >= 1, 'no highlighted difference rows');
    await shot('compare.png');
  });

  await check('compare groups from a search selection, on the server, with attribution', async () => {
    // The busiest endpoint (by root span) of the last hour.
    const list = await getJSON(`${api}/api/v1/search?limit=300&start=1h`);
    const count = new Map();
    for (const t of list.traces) if (t.root_service && t.trace_id !== big.traceId) {
      const k = t.root_service + '\u0000' + t.root_operation;
      count.set(k, (count.get(k) || 0) + 1);
    }
    const [top, n] = [...count].sort((x, y) => y[1] - x[1])[0];
    const [svc, op] = top.split('\u0000');
    log(`group comparison on ${svc}: ${op} (${n} traces)`);
    await goto(`/search?service=${encodeURIComponent(svc)}&operation=${encodeURIComponent(op)}&range=1h&limit=100`);
    await page.waitForSelector('svg.scatter[data-total] circle');
    const box = await page.locator('svg.scatter').boundingBox();
    // The slow half of the plot, every time.
    await page.mouse.move(box.x + box.width * 0.055, box.y + 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.999, box.y + box.height * 0.5, { steps: 5 });
    await page.mouse.up();
    const link = page.locator('#send-compare');
    await link.waitFor();
    const href = new URL(await link.getAttribute('href'), base);
    assert.equal(href.searchParams.get('service'), svc);
    assert.ok(href.searchParams.get('a_min_duration') && href.searchParams.get('b_max_duration'), 'selection not turned into duration bounds: ' + href);
    const cmpResp = page.waitForResponse(r => new URL(r.url()).pathname === '/api/v1/compare');
    await link.click();
    const r = await cmpResp;
    assert.equal(r.status(), 200, 'server compare failed: ' + await r.text());
    const body = await r.json();
    assert.equal(body.mode, 'groups');
    assert.ok(body.a.traces >= 1 && body.b.traces >= 1, `empty side: A ${body.a.traces}, B ${body.b.traces}`);
    await page.waitForSelector('#cmp-notes');
    assert.match(await page.locator('section.side-a h2').innerText(), new RegExp(`${body.a.traces} traces?`));
    assert.match(await page.locator('section.side-b h2').innerText(), new RegExp(`${body.b.traces} traces?`));
    assert.ok(Number(await page.inputValue('#g-a-min')) > 0, 'form does not show side A');
    await shot('compare-groups.png');
    // Attribution of the same selection, on the server.
    const attrResp = page.waitForResponse(r => new URL(r.url()).pathname === '/api/v1/attribution');
    await page.click('#tab-attribution');
    const ar = await attrResp;
    assert.equal(ar.status(), 200, 'attribution failed: ' + await ar.text());
    const ab = await ar.json();
    assert.equal(new URL(ar.url()).searchParams.get('threshold_ms'), href.searchParams.get('a_min_duration'), 'attribution does not use the selection threshold');
    await page.waitForSelector('#attribution');
    if (ab.values.length) assert.equal(await page.locator('#attribution tbody tr').count(), ab.values.length);
    await shot('attribution.png');
    // Failed vs successful of an endpoint with failures, from the form.
    await goto('/compare');
    await page.click('summary:text("compare two groups")');
    await page.fill('#g-service', svc);
    await page.fill('#g-operation', op);
    const fr = page.waitForResponse(r => new URL(r.url()).pathname === '/api/v1/compare');
    await page.click('#preset-failed');
    assert.equal((await fr).status(), 200);
    const u = new URL(page.url());
    assert.equal(u.searchParams.get('a_status'), 'error');
    assert.equal(u.searchParams.get('b_status'), 'ok');
    await page.waitForSelector('#cmp-notes, .empty');
  });

  await check('findings view lists the N+1 finding with an example trace', async () => {
    // Flat list, filtered by kind and service: the fixture's finding links to its trace at a span of the finding.
    await goto('/findings?kind=n_plus_one_query&service=order-service&range=1h&group=0');
    await page.waitForSelector('tbody tr[data-kind="n_plus_one_query"]', { timeout: 20000 });
    const kinds = await page.locator('tbody tr[data-row]').evaluateAll(els => els.map(e => e.dataset.kind));
    assert.ok(kinds.every(k => k === 'n_plus_one_query'), 'kind filter lets other kinds through: ' + kinds);
    const hrefs = await page.locator('tbody tr[data-kind="n_plus_one_query"] td.examples a').evaluateAll(els => els.map(a => a.getAttribute('href')));
    const link = hrefs.find(h => h.startsWith('/trace/' + nplus1));
    assert.ok(link, 'no link to the N+1 trace: ' + hrefs.join(' '));
    const span = new URL(link, base).searchParams.get('span');
    assert.ok(n1.span_ids.includes(span), `example link opens span ${span}, not one of the finding's`);
    // Grouped (default): repeats fold into one row with a count; Enter on a row opens its example.
    await goto('/findings?range=1h');
    await page.waitForSelector('tbody tr[data-row]');
    const counts = await page.locator('tbody tr[data-row]').evaluateAll(els => els.map(e => Number(e.dataset.count)));
    const lost = await page.locator('tbody tr[data-row]').evaluateAll(els => els.map(e => Number(e.dataset.impact)));
    assert.ok(lost.every((v, i) => i === 0 || lost[i - 1] >= v), 'findings not ranked by time lost');
    const total = await page.locator('#view .badges a .badge').evaluateAll(els => els.reduce((s, e) => s + Number((e.textContent.match(/· (\d+)$/) || [0, 0])[1]), 0));
    assert.equal(counts.reduce((a, b) => a + b, 0), total, 'grouped rows do not add up to the per-kind counts');
    assert.ok(counts.length < total || total < 3, 'nothing was grouped');
    await page.click('#fscope button:text("systemic")');
    await page.waitForFunction(() => new URL(location.href).searchParams.get('scope') === 'systemic');
    // The URL changes at once, but the unscoped rows stay until the view is
    // drawn again: wait for rows under a scope bar that says systemic.
    await page.waitForFunction(() => document.querySelector('#fscope button[aria-pressed="true"]')?.textContent === 'systemic'
      && document.querySelector('#view tbody tr[data-row], #view .empty'), null, { timeout: 15000 });
    // A cross-trace finding's "causes" opens the root-cause view for the window before it.
    const causes = page.locator('tbody tr[data-row] a.causes-link').first();
    const systemicStored = await getJSON(`${api}/api/v1/findings?systemic=true&from=1h&limit=1`).then(b => b.findings.length > 0).catch(() => false);
    if (systemicStored) assert.ok(await causes.count() > 0, 'cross-trace findings are stored but none links to its causes');
    if (await causes.count()) {
      await causes.click();
      await page.waitForFunction(() => location.pathname === '/rootcause' && /^\d+$/.test(new URL(location.href).searchParams.get('from') || ''));
      await page.waitForSelector('#rootcause .empty, #rootcause .cause, #rootcause .error-box');
    }
    await goto('/findings?range=1h');
    await page.waitForSelector('tbody tr[data-row]');
    const idx = await page.locator('tbody tr[data-row]').evaluateAll(els => els.findIndex(e => e.querySelector('td.examples a')));
    for (let i = 0; i <= idx; i++) await page.keyboard.press('j');
    const first = await page.evaluate(() => document.activeElement.querySelector('td.examples a')?.getAttribute('href'));
    assert.ok(first, 'j did not reach a row with an example');
    await page.keyboard.press('Enter');
    await page.waitForFunction(want => location.pathname + location.search === want, first);
    await goto('/findings?range=1h');
    await page.waitForSelector('tbody tr[data-row]');
    await shot('findings.png');
  });

  await check('overview links to the alerts view, which lists the rules and their health', async () => {
    await goto('/');
    await page.waitForSelector('#kpi-alerts a', { timeout: 20000 });
    await page.click('#kpi-alerts a');
    await page.waitForFunction(() => location.pathname === '/alerts');
    await page.waitForSelector('tr[data-rule="TracedxSLOBurn"]');
    const rules = await page.locator('tr[data-rule]').evaluateAll(els => els.map(e => e.dataset.rule));
    for (const r of ['TracedxCriticalFinding', 'TracedxCrossTraceFinding', 'TracedxSLOBurn']) assert.ok(rules.includes(r), `rule ${r} not listed: ${rules}`);
    const health = await page.locator('tr[data-rule="TracedxSLOBurn"] td').nth(3).textContent();
    assert.match(health, /^(ok|unknown)/, 'the built-in SLO rule evaluates cleanly');
    assert.equal(await page.locator('nav a[data-view="alerts"]').getAttribute('aria-current'), 'page');
    await shot('alerts.png');
  });

  let loadMs = null, inPageMs = null;
  await check('5,000-span trace renders in under 1 s', async () => {
    // Warm the module cache the way a user arriving from search would.
    await goto('/search?range=1h');
    await page.waitForSelector('.results .result');
    const t0 = Date.now();
    await page.evaluate(id => { history.pushState(null, '', '/trace/' + id); dispatchEvent(new PopStateEvent('popstate')); }, big.traceId);
    await page.waitForSelector(`body[data-trace-ready="${big.traceId}"]`);
    loadMs = Date.now() - t0;
    const perf = await page.evaluate(() => window.__tracedxPerf);
    inPageMs = perf.totalMs;
    const rows = await page.locator('.wf-row').count();
    log(`5,000-span trace: ${loadMs} ms from click to waterfall (in page: fetch ${perf.fetchMs.toFixed(0)} ms + render ${perf.renderMs.toFixed(0)} ms), ${rows} rows in the DOM`);
    assert.equal(perf.spans, 5000);
    assert.ok(rows < 200, `waterfall not virtualised: ${rows} rows`);
    // The UI's share (model and first waterfall); the fetch is the server's.
    assert.ok(perf.renderMs < 500, `rendering took ${perf.renderMs} ms`);
    // A cold page load as well (fresh document, modules from cache).
    const t1 = Date.now();
    await page.goto(`${base}/trace/${big.traceId}`);
    await page.waitForSelector(`body[data-trace-ready="${big.traceId}"]`);
    log(`5,000-span trace, full page load: ${Date.now() - t1} ms`);
    // The rows of the new offset are drawn on the next frame, and the rows
    // of the top stay until then: count only rows inside the scrolled box.
    const rowsInView = () => page.locator('.wf-body').evaluate(b => {
      const r = b.getBoundingClientRect();
      return [...b.querySelectorAll('.wf-row')].filter(x => { const q = x.getBoundingClientRect(); return q.bottom > r.top && q.top < r.bottom; }).length;
    });
    await page.locator('.wf-body').evaluate(e => { e.scrollTop = 60000; });
    await waitFor('rows at the scrolled offset', async () => await rowsInView() > 10, 5000, 50).catch(() => {});
    assert.ok(await rowsInView() > 10, 'scrolling the waterfall shows no rows');
    await shot('trace-5000.png');
  });

  // ---- The on-call walk: each check below failed on the UI before the
  // "from the overview to the cause" work.
  // Analysis of the 600 copies may still be running on a busy machine.
  const summary = await waitFor('more findings than a page', async () => {
    const sm = await getJSON(`${api}/api/v1/findings/summary?from=1h&groups=50`).catch(() => null);
    return sm && sm.total > 500 ? sm : null;
  }, 60000, 1000).catch(() => getJSON(`${api}/api/v1/findings/summary?from=1h&groups=50`).catch(() => null));

  await check('overview counts every finding and ranks problems by time lost', async () => {
    assert.ok(summary, 'no /api/v1/findings/summary');
    assert.ok(summary.total > 500, `precondition: more findings than a page (${summary.total})`);
    await goto('/?range=1h');
    await page.waitForSelector('#kpi-findings');
    const shown = Number((await page.locator('#kpi-findings b').innerText()).replace(/,/g, ''));
    // The demo keeps adding findings: the UI's count is at least the one read before.
    assert.ok(shown >= summary.total, `overview shows ${shown} findings, the server holds ${summary.total}`);
    const kinds = await page.locator('#kinds tbody tr').evaluateAll(els => els.map(e => e.dataset.kind));
    for (const k of summary.kinds) assert.ok(kinds.includes(k.kind), `kind ${k.kind} missing from "Findings by kind"`);
    const impacts = await page.locator('#hurts tbody tr').evaluateAll(els => els.map(e => Number(e.dataset.impact)));
    assert.ok(impacts.length >= 2, 'no ranked problems');
    assert.ok(impacts.every((v, i) => i === 0 || impacts[i - 1] >= v), 'problems not ranked by time lost: ' + impacts);
    // One click from the top problem to its worst example, at a span of it.
    const worst = page.locator('#hurts tbody tr').first().locator('a.worst');
    const href = await worst.getAttribute('href');
    assert.match(href, /^\/trace\/[0-9a-f]{32}(\?span=[0-9a-f]{16})?$/);
    await worst.click();
    await page.waitForFunction(h => location.pathname + location.search === h, href);
    await page.waitForSelector('body[data-trace-ready]');
    // And to the root-cause ranking of its service.
    await goto('/?range=1h');
    await page.locator('#hurts tbody tr').first().locator('a.rc').click();
    // Not the overview's likely-causes card, which is #rootcause as well.
    await page.waitForSelector('body[data-view="rootcause"] #rootcause :is(.empty, .cause)');
    const rc = await fetch(`${api}/api/v1/rootcause?from=1h`);
    if (rc.status === 404 && !/no traces/.test(await rc.text())) assert.match(await page.locator('#rootcause').innerText(), /root-cause ranking not available/);
    // The documented answer renders as a ranking with evidence and the two
    // examples (served here by the test while the endpoint is not built in).
    await page.route('**/api/v1/rootcause?*', route => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ causes: [
      { service: 'payment-service', operation: 'POST /charge', score: 0.92, evidence: [{ text: 'p95 540 ms vs 80 ms in the baseline' }], examples: { baseline: healthy, incident: nplus1 } },
      { service: 'order-service', operation: 'SELECT orders', score: 0.31, evidence: [{ text: '51 calls per request vs 2' }], examples: {} }] }) }));
    await goto('/rootcause?service=order-service&range=1h');
    await page.waitForSelector('#rootcause li.cause');
    assert.deepEqual(await page.locator('#rootcause li.cause').evaluateAll(els => els.map(e => e.dataset.service)), ['payment-service', 'order-service']);
    assert.match(await page.locator('#rootcause').innerText(), /p95 540 ms vs 80 ms in the baseline/);
    assert.equal(await page.locator('#rootcause li.cause').first().locator(`a[href="/compare?a=${nplus1}&b=${healthy}"]`).count(), 1, 'no incident-vs-baseline link');
    await page.unroute('**/api/v1/rootcause?*');
  });

  await check('service map node rates match the services table', async () => {
    const map = await fetch(`${api}/api/v1/servicemap?start=${Date.now() - 3600e3}`).then(r => r.ok ? r.json() : null);
    if (!map || !(map.nodes || []).length) return;
    await goto('/?range=1h');
    await page.waitForSelector('svg.map g.node');
    const table = await page.locator('section.card:has(h2:text("Services")) tbody tr').evaluateAll(els => Object.fromEntries(els.map(e => [e.querySelector('a').textContent, e.children[1].textContent])));
    const nodes = await page.locator('svg.map g.node:not(.virtual)').evaluateAll(els => Object.fromEntries(els.map(e => [e.dataset.node, e.querySelector('text.sub').textContent.split(' · ')[0]])));
    const perSec = t => { const m = /([\d.]+)\/(s|min|h)/.exec(t); return m ? Number(m[1]) / { s: 1, min: 60, h: 3600 }[m[2]] : NaN; };
    let compared = 0;
    for (const [svc, rate] of Object.entries(nodes)) {
      if (!(svc in table)) continue;
      const a = perSec(rate), b = perSec(table[svc]);
      if (!(a > 0 && b > 0)) continue;
      compared++;
      assert.ok(Math.abs(a - b) / Math.max(a, b) < 0.35, `${svc}: map ${rate} vs table ${table[svc]}`);
    }
    assert.ok(compared >= 1, 'no service on both the map and the table');
  });

  await check('colours: no service in the error hue, distinct, zero-error sparklines not red', async () => {
    await goto('/?range=1h');
    await page.waitForSelector('section.card:has(h2:text("Services")) tbody tr');
    const dots = await page.locator('section.card:has(h2:text("Services")) tbody tr .svc-dot').evaluateAll(els => els.map(e => getComputedStyle(e).backgroundColor));
    const hue = c => { const [r, g, b] = c.match(/\d+/g).map(Number).map(v => v / 255); const mx = Math.max(r, g, b), mn = Math.min(r, g, b); if (mx === mn) return [0, 0];
      const d = mx - mn; let h = mx === r ? ((g - b) / d) % 6 : mx === g ? (b - r) / d + 2 : (r - g) / d + 4; return [(h * 60 + 360) % 360, d / (1 - Math.abs(mx + mn - 1))]; };
    for (const c of dots) { const [h, sat] = hue(c); assert.ok(sat < 0.35 || (h > 20 && h < 340), `service colour ${c} is in the error hue`); }
    // Colours repeat only after 20 services (slots go in sorted name order).
    const names = await page.locator('section.card:has(h2:text("Services")) tbody tr a').allInnerTexts();
    const byName = names.map((nm, i) => [nm, dots[i]]).sort((p, q) => p[0].localeCompare(q[0]));
    for (let i = 0; i < byName.length; i++) for (let j = i + 1; j < Math.min(byName.length, i + 20); j++) {
      assert.notEqual(byName[i][1], byName[j][1], `${byName[i][0]} and ${byName[j][0]} share a colour`);
    }
    const errColor = await page.evaluate(() => { const d = document.createElement('i'); d.style.color = 'var(--err)'; document.body.append(d); const c = getComputedStyle(d).color; d.remove(); return c; });
    const zeroRows = await page.locator('section.card:has(h2:text("Services")) tbody tr').evaluateAll((els, err) => els.filter(e => /^0(\.0)? %$/.test(e.children[2].textContent))
      .map(e => getComputedStyle(e.querySelector('td:last-child polyline')).stroke), errColor);
    for (const st of zeroRows) assert.notEqual(st, errColor, 'a service without errors has a red error sparkline');
  });

  await check('search: sort longest first over the range, whole-range log plot, badges in the response', async () => {
    const findReqs = [];
    const onReq = r => { if (new URL(r.url()).pathname === '/api/v1/findings') findReqs.push(r.url()); };
    page.on('request', onReq);
    await goto('/search?range=1h&sort=longest');
    await page.waitForSelector('.results .result');
    const durs = await page.locator('.results .result').evaluateAll(els => els.map(e => Number(e.dataset.duration)));
    assert.ok(durs.every((d, i) => i === 0 || durs[i - 1] >= d), 'not longest first');
    const longest = await getJSON(`${api}/api/v1/search?start=1h&sort=longest&limit=1`);
    assert.equal(await page.locator('.results .result').first().getAttribute('data-trace'), longest.traces[0].trace_id, 'the longest trace of the range is not first');
    // The plot: the whole range on x, log scale on y, sampled on the server.
    await page.waitForSelector('svg.scatter[data-total]');
    const [x0, x1] = await page.locator('svg.scatter').evaluate(e => [Number(e.dataset.x0), Number(e.dataset.x1)]);
    assert.ok(x1 - x0 > 3500e3 && x1 - x0 < 3700e3, `plot covers ${(x1 - x0) / 1e3} s of a 1 h range`);
    assert.equal(await page.locator('svg.scatter').getAttribute('data-log'), '1');
    const total = Number(await page.locator('svg.scatter').getAttribute('data-total'));
    assert.ok(total > durs.length, `plot holds ${total} traces, the page ${durs.length}`);
    const ys = await page.locator('svg.scatter circle').evaluateAll(els => els.map(e => Number(e.getAttribute('cy'))));
    const spread = new Set(ys.map(y => Math.round(y / 10))).size;
    assert.ok(spread >= 4, 'the dots are flattened into one band: ' + spread);
    await goto(`/search?service=order-service&range=1h`);
    await page.waitForSelector(`.result[data-trace="${nplus1}"] .badge:text("n plus one query")`, { timeout: 15000 });
    page.off('request', onReq);
    assert.deepEqual(findReqs, [], 'badges fetched with a separate findings request');
  });

  await check('search: brushing the slowest dots compares exactly those (A is not empty)', async () => {
    await goto('/search?range=1h');
    await page.waitForSelector('svg.scatter[data-total] circle');
    const box = await page.locator('svg.scatter').boundingBox();
    // The top band of the plot: the slowest endpoints of the range.
    const top = await page.locator('svg.scatter circle').evaluateAll(els => Math.min(...els.map(e => Number(e.getAttribute('cy')))));
    await page.mouse.move(box.x + box.width * 0.06, box.y + 1);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.999, box.y + (top + 8) / 190 * box.height, { steps: 4 });
    await page.mouse.up();
    const link = page.locator('#send-compare');
    await link.waitFor();
    const resp = page.waitForResponse(r => new URL(r.url()).pathname === '/api/v1/compare');
    await link.click();
    const r = await resp;
    const body = await r.json();
    const brushed = await page.locator('svg.scatter circle.sel').evaluateAll(els => els.map(e => e.textContent));
    assert.ok(body.a.traces >= 1, `brushed traces are not in A: ${JSON.stringify(body.a)}; ${r.url()}; brushed ${JSON.stringify(brushed)}`);
  });

  await check('ids: full 32-hex ids everywhere, a 16-hex id opens its trace, times carry their zone', async () => {
    await goto('/search?range=1h');
    await page.waitForSelector('.results .result .tid');
    const sids = await page.locator('.results .result .tid').evaluateAll(els => els.map(e => e.textContent.trim()));
    assert.ok(sids.every(t => /^[0-9a-f]{32}$/.test(t)), 'search ids are not 32-hex: ' + sids[0]);
    const when = await page.locator('.results .result .when').first().innerText();
    assert.match(when, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\+0[12]$/, 'local time without its zone: ' + when);
    // The switch re-renders the rows; the old row stays in the DOM until then, so wait for the zone itself.
    await page.click('#tz-toggle');
    await page.waitForFunction(() => / UTC$/.test(document.querySelector('.results .result .when')?.innerText || ''), null, { timeout: 5000 })
      .catch(() => {});
    assert.match(await page.locator('.results .result .when').first().innerText(), / UTC$/, 'UTC switch');
    await page.click('#tz-toggle');
    await page.waitForFunction(() => /UTC\+0[12]$/.test(document.querySelector('.results .result .when')?.innerText || ''), null, { timeout: 5000 })
      .catch(() => {});
    await goto('/findings?range=1h&group=0&kind=n_plus_one_query');
    await page.waitForSelector('td.examples .tid');
    const fids = await page.locator('td.examples .tid').evaluateAll(els => els.map(e => e.textContent.trim()));
    assert.ok(fids.every(t => /^[0-9a-f]{32}$/.test(t)), 'findings ids are not 32-hex: ' + fids[0]);
    // A 16-hex prefix (what other tools show) opens the trace.
    await page.fill('#jump-input', nplus1.slice(0, 16));
    await page.press('#jump-input', 'Enter');
    await page.waitForFunction(id => location.pathname === '/trace/' + id, nplus1, { timeout: 15000 });
  });

  await check('jump box finds services, operations and finding kinds', async () => {
    await goto('/');
    // The box asks the server for services and operations as one types; a
    // list missing answers a busy server refused is asked for again on the
    // next keystroke, as a user would retype.
    let shown = false;
    for (let i = 0; i < 5 && !shown; i++) {
      await page.fill('#jump-input', '');
      await page.fill('#jump-input', 'customers');
      shown = await page.waitForSelector('#jump-list li', { timeout: 6000 }).then(() => true, () => false);
    }
    assert.ok(shown, 'nothing matches "customers" after five tries');
    const subs = await page.locator('#jump-list li .js').allInnerTexts();
    assert.ok(subs.some(t => t.startsWith('operation')), 'no operation matches: ' + subs);
    await page.fill('#jump-input', 'n plus');
    await page.waitForSelector('#jump-list li:has-text("finding kind")');
    await page.press('#jump-input', 'Enter');
    await page.waitForFunction(() => new URL(location.href).searchParams.get('kind') === 'n_plus_one_query');
  });

  // The fixture trace with the most findings, for the fold checks.
  let busy = nplus1, busyN = 0;
  for (const id of Object.values(ids)) {
    const a = await getJSON(`${api}/api/v1/traces/${id}/analysis`).catch(() => null);
    if (a && (a.findings || []).length > busyN) { busy = id; busyN = a.findings.length; }
  }

  await check(`trace: the waterfall stays above the fold (${busyN} findings), cards fold, a finding scrolls to its spans`, async () => {
    await goto(`/trace/${busy}`);
    await page.waitForSelector(`body[data-analysis-ready="${busy}"]`);
    const visible = await page.locator('.wf-row').evaluateAll(els => els.filter(e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }).length);
    const total = await page.evaluate(() => window.__tracedxPerf.spans);
    assert.ok(visible >= Math.min(15, total), `only ${visible} waterfall rows above the fold`);
    await page.click('#findings > summary');
    assert.equal(await page.locator('#findings').getAttribute('open'), null, 'findings card does not fold');
    await page.click('#findings > summary');
    // The why chain starts folded to its first sentence; it opens and folds.
    assert.equal(await page.locator('#why').getAttribute('open'), null, 'why chain open by default');
    await page.click('#why > summary');
    assert.notEqual(await page.locator('#why').getAttribute('open'), null, 'why card does not open');
    await page.click('#why > summary');
    assert.equal(await page.locator('#why').getAttribute('open'), null, 'why card does not fold');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.locator('.finding').last().click();
    await page.waitForSelector('.wf-row.hl');
    const inView = await page.locator('.wf-row.hl').first().evaluate(e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; });
    assert.ok(inView, 'the highlighted spans are off screen');
    // With the span panel open, the name column keeps names readable and
    // badges clear of the durations.
    await page.waitForSelector('#span-detail');
    const row = page.locator('.wf-row.sel');
    const [opW, opFull, nameR, badgeL, laneL] = await row.evaluate(e => { const op = e.querySelector('.op'); return [op.getBoundingClientRect().width, op.scrollWidth <= op.clientWidth,
      e.querySelector('.wf-name').getBoundingClientRect().right, Math.min(1e9, ...[...e.querySelectorAll('.fmark')].map(b => b.getBoundingClientRect().left)), e.querySelector('.wf-lane').getBoundingClientRect().left]; });
    // The whole name shows, and at least 60 px of it (a call named "GET"
    // is narrower than that whole).
    const opText = await row.locator('.op').textContent();
    assert.ok(opFull && (opW >= 60 || opText.length <= 6), `operation name ${JSON.stringify(opText)} squeezed to ${opW}px`);
    assert.ok(badgeL >= laneL && nameR <= laneL + 1, 'finding badges cover the name column');
    await page.keyboard.press('Escape');
  });

  await check('trace: minimap zoom, find in trace, resizable names, span list and JSON', async () => {
    await goto(`/trace/${big.traceId}`);
    await page.waitForSelector(`body[data-trace-ready="${big.traceId}"]`);
    const barW = () => page.locator('.wf-row[data-i="3"] .wf-bar').evaluate(e => e.getBoundingClientRect().width);
    const before = await barW();
    const mm = await page.locator('#minimap').boundingBox();
    await page.mouse.move(mm.x + 2, mm.y + 20);
    await page.mouse.down();
    await page.mouse.move(mm.x + 2 + mm.width * 0.012, mm.y + 20, { steps: 3 });
    await page.mouse.up();
    await page.waitForSelector('#zoom-reset:not([hidden])');
    assert.match(new URL(page.url()).searchParams.get('zoom') || '', /^[\d.]+-[\d.]+$/, 'zoom not in the URL');
    const after = await barW();
    assert.ok(after > before * 5, `zooming did not widen a short span (${before} → ${after} px)`);
    await page.click('#zoom-reset');
    // Find: by attribute value, next/previous.
    await page.fill('#find', 'deadlock');
    await page.waitForFunction(() => /\d+ match/.test(document.getElementById('find-count').textContent));
    const n = Number((await page.locator('#find-count').innerText()).match(/\d+/)[0]);
    assert.ok(n >= 2, 'find found ' + n);
    await page.press('#find', 'Enter');
    await page.press('#find', 'Enter');
    assert.match(await page.locator('#find-count').innerText(), new RegExp(`^2 of ${n}$`));
    const cur = page.locator('.wf-row.match-cur');
    await cur.waitFor();
    assert.ok(await cur.evaluate(e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }), 'current match off screen');
    await page.click('#find-prev');
    assert.match(await page.locator('#find-count').innerText(), new RegExp(`^1 of ${n}$`));
    // Resize the name column.
    const g = await page.locator('.wf-grip').boundingBox();
    const w0 = await page.locator('.wf-row .wf-name').first().evaluate(e => e.getBoundingClientRect().width);
    await page.mouse.move(g.x + 4, g.y + 10);
    await page.mouse.down();
    await page.mouse.move(g.x + 124, g.y + 10, { steps: 3 });
    await page.mouse.up();
    const w1 = await page.locator('.wf-row .wf-name').first().evaluate(e => e.getBoundingClientRect().width);
    assert.ok(w1 > w0 + 80, `name column ${w0} → ${w1}`);
    await page.evaluate(() => localStorage.removeItem('tracedx-namew'));
    // Span list: longest first; the JSON download holds every span.
    await page.click('button[data-tab="spans"]');
    await page.waitForSelector('#span-list tbody tr');
    const dl = page.waitForEvent('download');
    await page.locator('#span-list .download-json').click();
    const file = await (await dl).path();
    const json = JSON.parse((await import('node:fs')).readFileSync(file, 'utf8'));
    assert.equal(json.spans.length, 5000, 'download does not hold every span');
  });

  await check('trace: a trace over one page shows its first page at once, then loads the rest with progress', async () => {
    const first = await getJSON(`${api}/api/v1/traces/${huge.traceId}`);
    assert.ok(first.truncated && first.next, `the ${huge.count}-span trace fits one page (${first.spans.length} spans): nothing to test`);
    const perPage = first.spans.length;
    // Hold the later pages back: the first page must be on screen, with a
    // note and progress, and the page usable, before they arrive.
    let release;
    const gate = new Promise(r => { release = r; });
    const later = [];
    const held = u => u.pathname === `/api/v1/traces/${huge.traceId}` && u.searchParams.has('offset');
    await page.route(held, async route => { later.push(route.request().url()); await gate; await route.continue(); });
    try {
      await page.goto(`${base}/trace/${huge.traceId}`, { waitUntil: 'domcontentloaded' });
      await page.waitForSelector(`body[data-trace-ready="${huge.traceId}"]`, { timeout: 15000 });
      assert.equal(await page.evaluate(() => window.__tracedxPerf.spans), perPage, 'the first page is not what is drawn');
      const note = page.locator('#trace-paging');
      await note.waitFor({ timeout: 5000 });
      assert.match(await note.innerText(), new RegExp(`${huge.count.toLocaleString('en')} spans.*first ${perPage.toLocaleString('en')}`), 'no clear note');
      assert.equal(await note.locator('progress').count(), 1, 'no progress');
      await waitFor('the second page requested', () => later.length > 0, 10000, 100);
      // Usable meanwhile: find in trace answers.
      await page.fill('#find', 'deadlock');
      await page.waitForFunction(() => /match/.test(document.getElementById('find-count').textContent), null, { timeout: 5000 });
      // Scrolled down the page and the waterfall meanwhile: the redraw with
      // every span keeps both.
      await page.fill('#find', '');
      const before = await page.evaluate(() => {
        const b = document.querySelector('.wf-body');
        b.scrollTop = 2400;
        scrollTo({ top: 120, behavior: 'instant' });
        return { y: scrollY, top: b.scrollTop, wf: Math.round(document.querySelector('.wf').getBoundingClientRect().top) };
      });
      assert.ok(before.y > 0 && before.top > 0, `nothing to scroll: ${JSON.stringify(before)}`);
      release();
      await page.waitForFunction(n => window.__tracedxPerf && window.__tracedxPerf.spans === n, huge.count, { timeout: 30000 });
      await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
      // Where the waterfall was on screen, and its rows: the paging note
      // above it is gone, so the page's own offset may differ by its height.
      const after = await page.evaluate(() => ({ top: document.querySelector('.wf-body').scrollTop, wf: Math.round(document.querySelector('.wf').getBoundingClientRect().top) }));
      assert.deepEqual(after, { top: before.top, wf: before.wf }, 'the redraw after the last page lost the scroll position');
      assert.equal(await page.locator('#trace-paging').count(), 0, 'the note stays after every span arrived');
      assert.match(await page.locator('.facts').innerText(), new RegExp(`${huge.count} spans`));
    } finally {
      release();
      await page.unroute(held);
    }
  });

  // Making a trace age out inside the e2e would need a clock hook the
  // binary does not have: page.route() answers /api/v1/traces/{id} with 404
  // and marks the trace's real search result and findings as archived,
  // exactly as the server does past retention (internal/server/archive_test.go).
  await check('trace gone: search row, trace page and findings show the summary, findings and a retention note', async () => {
    const gone = nplus1;
    const traceURL = u => u.pathname.startsWith(`/api/v1/traces/${gone}`);
    const searchURL = u => u.pathname === '/api/v1/search';
    const findingsURL = u => u.pathname === '/api/v1/findings';
    const markSearch = async route => {
      const res = await route.fetch();
      const body = await res.json();
      for (const t of body.traces || []) if (t.trace_id === gone) Object.assign(t, { trace_available: false, retention_days: 3 });
      await route.fulfill({ response: res, json: body });
    };
    const markFindings = async route => {
      const res = await route.fetch();
      const body = await res.json();
      for (const f of body.findings || []) if (f.trace_id === gone) Object.assign(f, { trace_available: false, trace_note: 'gone', trace_summary: `/api/v1/search?trace_id=${gone}` });
      await route.fulfill({ response: res, json: body });
    };
    await page.route(traceURL, route => route.fulfill({ status: 404, contentType: 'application/json', body: JSON.stringify({ error: 'trace not found' }) }));
    await page.route(searchURL, markSearch);
    await page.route(findingsURL, markFindings);
    try {
      const stored = await getJSON(`${api}/api/v1/search?trace_id=${gone}&start=24h`);
      const sum = stored.traces.find(t => t.trace_id === gone);
      assert.ok(sum, 'the N+1 trace is not in search');
      const fs = (await getJSON(`${api}/api/v1/findings?trace_id=${gone}&from=24h`)).findings;
      assert.ok(fs.length > 0, 'the N+1 trace has no stored finding');
      await goto(`/search?service=${encodeURIComponent(sum.root_service)}&operation=${encodeURIComponent(sum.root_operation)}&range=1h&limit=100`);
      const row = page.locator(`a.result[data-trace="${gone}"]`);
      await row.waitFor({ timeout: 10000 });
      assert.equal(await row.locator('.badge.gone').innerText(), 'trace gone');
      await row.click();
      await page.waitForSelector(`body[data-trace-ready="${gone}"] #trace-gone`, { timeout: 10000 });
      assert.equal(await page.locator('.error-box').count(), 0, 'a bare error instead of the summary');
      assert.match(await page.locator('#gone-note').innerText(), /past retention \(3 days\)/);
      const facts = await page.locator('#trace-gone .facts').innerText();
      assert.match(facts, new RegExp(`${sum.span_count} spans`));
      assert.match(facts, new RegExp(`${sum.error_count} errors`));
      assert.match(await page.locator('#trace-gone h1').innerText(), new RegExp(`${sum.root_service}: ${sum.root_operation.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      assert.equal(await page.locator('#gone-services tbody tr').count(), sum.services.length);
      const cards = page.locator('#findings .finding');
      assert.equal(await cards.count(), fs.length, 'not every stored finding shows');
      const n1 = fs.find(f => f.kind === 'n_plus_one_query') || fs[0];
      const card = page.locator(`#findings .finding[data-kind="${n1.kind}"]`).first();
      assert.match(await card.locator('details.evidence pre').innerText(), new RegExp(Object.keys(n1.evidence)[0]), 'no evidence');
      if (n1.service) assert.match(await card.locator('.culprit').innerText(), new RegExp(n1.service), 'no culprit');
      assert.deepEqual(await layoutProblems(page), [], 'text cut or overlapping on the gone trace page');
      // The findings list (one row each) says the same of its example links.
      await goto('/findings?range=1h&group=0&kind=' + n1.kind);
      const note = page.locator(`td.examples:has(a[href^="/trace/${gone}"]) .gone-note`);
      await note.first().waitFor({ timeout: 10000 });
      assert.match(await note.first().innerText(), /past retention/);
      assert.deepEqual(await layoutProblems(page), [], 'text cut or overlapping on the findings list');
    } finally {
      // The 404s served above are Chromium's console lines, not the app's.
      for (let i = b.errors.length - 1; i >= 0; i--) if (b.errors[i].includes(`/api/v1/traces/${gone}`)) b.errors.splice(i, 1);
      await page.unroute(traceURL);
      await page.unroute(searchURL);
      await page.unroute(findingsURL);
    }
  });

  await check('trace: logs without a span id show, with time and attributes', async () => {
    const body = await getJSON(`${api}/api/v1/traces/${nplus1}/logs`).catch(() => null);
    if (!body || !(body.logs || []).length) { log('no logs stored; skipped'); return; }
    await goto(`/trace/${nplus1}?tab=logs`);
    await page.waitForSelector('#trace-logs table.logs tbody tr');
    const text = await page.locator('#trace-logs').innerText();
    assert.match(text, /request finished without a span context/, 'log without span id missing');
    assert.match(text, /log\.origin=middleware/, 'log attributes missing');
    assert.match(text, /\d\d:\d\d:\d\d\.\d{3} UTC/, 'log time missing');
  });

  await check('compare: colours say worse or better than the chosen baseline', async () => {
    await goto(`/compare?a=${nplus1}&b=${healthy}`);
    await page.waitForSelector('#cmp-notes li');
    // A (the N+1 trace) is slower than the baseline B: its slower rows are "worse".
    const cells = await page.locator('td.vs').evaluateAll(els => els.map(e => [e.className, e.textContent]));
    assert.ok(cells.some(([c, t]) => c.includes('worse') && t.startsWith('+')), 'the slower N+1 side is not marked worse');
    assert.ok(!cells.some(([c, t]) => c.includes('better') && t.startsWith('+')), 'a slower row is marked better');
    await page.click('#cmp-base a');
    await page.waitForSelector('#cmp-base b:text("trace A")');
    await page.waitForSelector('td.vs');
    const flipped = await page.locator('td.vs').evaluateAll(els => els.map(e => [e.className, e.textContent]));
    assert.ok(flipped.some(([c, t]) => c.includes('better') && t.startsWith('−') || c.includes('better') && t.startsWith('-')), 'with A as the baseline, B is not better');
  });

  await check('auto-refresh: off by default, re-fetches when on', async () => {
    await goto('/findings?range=1h');
    await page.waitForSelector('#refresh');
    assert.equal(await page.inputValue('#refresh'), '');
    // Picking an interval draws the view again at once, with its own
    // summary request: that one says nothing of the timer, so wait it out.
    const isSummary = r => new URL(r.url()).pathname === '/api/v1/findings/summary';
    const redrawn = page.waitForResponse(isSummary);
    await page.selectOption('#refresh', '10s');
    await page.waitForFunction(() => new URL(location.href).searchParams.get('refresh') === '10s');
    await redrawn;
    const again = await page.waitForRequest(isSummary, { timeout: 25000 });
    assert.ok(again);
    await page.selectOption('#refresh', '');
  });

  await check('layout: no text cut or overlapping in any view, light and dark, 1440 and 1024 wide', () => auditViews(page, goto, { nplus1, healthy, busy, api }));

  await check('auth: sign in with a token, sign out from the header clears the cookie on the server', async () => {
    // Without tokens there is nothing to sign out of.
    await goto('/');
    await page.waitForSelector('h1:text("Overview")');
    assert.equal((await getJSON(`${api}/api/v1/session`)).auth, false, 'session without tokens');
    assert.equal(await page.locator('#logout').count(), 0, 'a sign-out button without authentication');
    const token = 'e2e-read-token-0123456789abcdef';
    const tokFile = join(tmp, 'tokens.txt');
    writeFileSync(tokFile, `${token}\n`);
    const port = await freePort();
    const secured = start(bin, ['serve', '--data-dir', join(tmp, 'data-auth'), '--auth-token-file', tokFile, '--http-addr', `127.0.0.1:${port}`,
      '--otlp-http-addr', `127.0.0.1:${await freePort()}`, '--otlp-grpc-addr', `127.0.0.1:${await freePort()}`, '--zipkin-addr', '',
      '--tempo-addr', `127.0.0.1:${await freePort()}`, '--log-level', 'warn'], 'tracedx serve (auth)');
    const base2 = `http://127.0.0.1:${port}`;
    await waitFor('tracedx serve with tokens', async () => {
      if (secured.exitCode !== null) throw new Error('exited:\n' + secured.output());
      return (await fetch(base2 + '/healthz')).ok;
    });
    try {
      await page.goto(base2 + '/', { waitUntil: 'networkidle' });
      await page.fill('#token', token);
      await Promise.all([page.waitForURL(base2 + '/'), page.click('button[type=submit]')]);
      const out = page.locator('#logout button');
      await out.waitFor({ timeout: 15000 });
      assert.match(await out.innerText(), /Sign out/);
      await Promise.all([page.waitForURL(u => u.pathname === '/login'), out.click()]);
      await page.waitForSelector('#token');
      const status = await page.evaluate(() => fetch('/api/v1/services').then(r => r.status));
      assert.equal(status, 401, 'the API still answers after signing out');
      assert.ok(!(await b.ctx.cookies(base2)).some(c => c.name === 'tracedx_token' && c.value), 'the token cookie survived');
    } finally {
      secured.kill('SIGTERM');
      // The sign-in page is a 401 by design; its console lines are not the app's.
      for (let i = b.errors.length - 1; i >= 0; i--) if (b.errors[i].includes(base2)) b.errors.splice(i, 1);
    }
  });

  await check('unknown routes and no console errors', async () => {
    await goto('/no/such/page');
    await page.waitForSelector('text=Page not found');
    // The deliberately bad TraceQL query's 400 is logged by Chromium as a
    // failed resource; the app itself must log nothing.
    const errs = b.errors.filter(e => !(/status of 404/.test(e) && optional404.length) && !/status of 400 .*\[[^\]]*\/tempo\/api\/search\?/.test(e));
    assert.deepEqual(errs, [], 'console errors');
  });
  if (optional404.length) log('optional endpoints missing in this build (404, degraded gracefully):', [...new Set(optional404)].join(', '));
  await b.close();
}

// Every view, light and dark, 1440 and 1024 wide: no text cut or on top of
// other text (layout.mjs). With E2E_SHOTS=1 each is also written to
// docs/img as a small PNG (a 256-colour palette with pngquant when it is
// installed).
async function auditViews(page, goto, { nplus1, healthy, busy, api }) {
  const list = await getJSON(`${api}/api/v1/search?limit=300&start=1h`);
  const ep = list.traces.find(t => t.root_service === 'order-service') || list.traces[0];
  // The span panel narrows the timeline: at 1024 px the N+1 trace's query
  // rows have little room left for their durations and badges.
  const n1A = await getJSON(`${api}/api/v1/traces/${nplus1}/analysis`);
  const n1Span = (n1A.findings.find(f => f.kind === 'n_plus_one_query') || n1A.findings[0]).span_ids.at(-1);
  const views = [
    ['overview', '/?range=1h', '#hurts'],
    ['search', '/search?range=1h&sort=longest', 'svg.scatter[data-total]'],
    ['findings', '/findings?range=1h', 'tbody tr[data-row]'],
    ['trace', `/trace/${busy}`, 'body[data-analysis-ready]'],
    ['trace-span', `/trace/${nplus1}?span=${n1Span}`, '#span-detail'],
    ['trace-flame', `/trace/${nplus1}?tab=flame`, '#flame canvas'],
    ['trace-spans', `/trace/${nplus1}?tab=spans`, '#span-list tbody tr'],
    ['trace-logs', `/trace/${nplus1}?tab=logs`, '#trace-logs table, #trace-logs p'],
    ['compare', `/compare?a=${nplus1}&b=${healthy}`, '#cmp-notes li'],
    ['compare-groups', `/compare?service=${encodeURIComponent(ep.root_service)}&operation=${encodeURIComponent(ep.root_operation)}&start=1h&a_status=error&b_status=ok`, '#cmp-notes, .empty, .error-box'],
    ['rootcause', '/rootcause?range=1h', '#rootcause .empty, #rootcause .cause'],
    ['alerts', '/alerts', 'tr[data-rule]'],
  ];
  const shots = !!process.env.E2E_SHOTS;
  let convert = true;
  const problems = [];
  try {
    for (const width of [1440, 1024]) {
      await page.setViewportSize({ width, height: 900 });
      for (const theme of ['light', 'dark']) {
        await page.emulateMedia({ colorScheme: theme });
        for (const [name, path, ready] of views) {
          await goto(path);
          await page.waitForSelector(ready, { timeout: 15000 }).catch(() => log(`${name}: ${ready} did not appear`));
          // Nothing hovered: hover shows what is hidden at rest.
          await page.mouse.move(0, 0);
          await page.waitForTimeout(200);
          for (const p of await layoutProblems(page)) problems.push(`${name} ${theme} ${width}: ${p}`);
          if (!shots) continue;
          const file = join(imgDir, `${name}-${theme}-${width}.png`);
          await page.screenshot({ path: file });
          if (convert) {
            try { execFileSync('pngquant', ['--force', '--ext', '.png', '--skip-if-larger', '256', file]); } catch (e) { if (e.code === 'ENOENT') { convert = false; log('pngquant not found: screenshots are full-colour PNGs'); } }
          }
        }
      }
    }
  } finally {
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.emulateMedia({ colorScheme: 'light' });
  }
  if (shots) log(`screenshots: ${views.length * 4} in ${imgDir}`);
  if (problems.length) throw new Error(`${problems.length} layout problems:\n      ` + problems.join('\n      '));
}

try {
  await main();
} catch (e) {
  failed++;
  log('FATAL', e.stack || e.message);
  for (const c of children) if (c.exitCode !== null && c.exitCode !== 0) log(`${c.label} output:\n${c.output().slice(-4000)}`);
} finally {
  await cleanup();
}
log(`${results.filter(r => r[0] === 'ok').length} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
