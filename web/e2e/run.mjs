// End-to-end tests of the tracedx UI: builds tracedx, starts `tracedx serve`
// on free loopback ports with a temporary data dir, loads OTLP fixtures (and
// a 5,000-span trace, and the demo shop when available), then drives every
// view in headless Chromium. Screenshots go to docs/img/.
//
//   node web/e2e/run.mjs            (from the repository root or anywhere)
//   E2E_DEMO=0 node web/e2e/run.mjs (skip the demo shop traffic)
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import assert from 'node:assert/strict';
import { launch } from './browser.mjs';
import { listFixtures, loadFixture, shiftTo, traceIdOf, bigTrace } from './otlp.mjs';

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

async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push(['ok', name, Date.now() - t]);
    log('ok  ', name);
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
    const [httpPort, otlpHttp, otlpGrpc] = [await freePort(), await freePort(), await freePort()];
    const server = start(bin, ['serve', '--data-dir', join(tmp, 'data'), '--http-addr', `127.0.0.1:${httpPort}`,
      '--otlp-http-addr', `127.0.0.1:${otlpHttp}`, '--otlp-grpc-addr', `127.0.0.1:${otlpGrpc}`, '--zipkin-addr', '', '--tempo-addr', '',
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
  log(`sent ${fixtures.length} fixture traces and a ${big.count}-span trace`);
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
  // Give the background analysis a moment (findings store, RED, service map).
  await waitFor('findings store', async () => {
    const r = await fetch(`${api}/api/v1/findings?limit=1`);
    if (r.status === 404) return true;
    const b = await r.json();
    return (Array.isArray(b) ? b : b.findings || []).length > 0;
  }, 20000).catch(() => log('findings store stayed empty'));

  // 3. The browser.
  mkdirSync(imgDir, { recursive: true });
  const b = await launch();
  const page = await b.page();
  const optional404 = [];
  page.on('response', r => {
    if (r.status() === 404 && /\/api\/v1\/(findings|compare|attribution|metrics|servicemap)/.test(r.url())) optional404.push(new URL(r.url()).pathname);
  });
  const shot = async name => { await page.waitForTimeout(150); await page.screenshot({ path: join(imgDir, name) }); };
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
  });

  await check('search lists traces newest first with a scatter', async () => {
    await goto('/search?service=order-service&range=1h');
    await page.waitForSelector('.results .result');
    const n = await page.locator('.results .result').count();
    const dots = await page.locator('svg.scatter circle').count();
    assert.equal(dots, n, 'one dot per result');
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
    await page.waitForSelector('.results .result');
    // Brush the slowest region of the scatter and follow the compare link.
    const box = await page.locator('svg.scatter').boundingBox();
    await page.mouse.move(box.x + box.width * 0.06, box.y + 4);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.999, box.y + box.height * 0.45, { steps: 5 });
    await page.mouse.up();
    await page.waitForSelector('#send-compare');
    await shot('search.png');
  });

  await check('trace: N+1 finding pinned to its spans, critical path highlighted', async () => {
    await goto(`/trace/${nplus1}`);
    await page.waitForSelector(`body[data-analysis-ready="${nplus1}"]`);
    await page.waitForSelector('.finding[data-kind="n_plus_one_query"]');
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
    await page.waitForSelector('#flame canvas');
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
    assert.match(notes, /only in A|called \d+ × in A/, 'no call-count difference reported:\n' + notes);
    assert.ok(await page.locator('tr.only-a, tr.changed').count() >= 1, 'no highlighted difference rows');
    await shot('compare.png');
  });

  await check('compare groups from a search selection, with attribution', async () => {
    const list = await getJSON(`${api}/api/v1/search?limit=40&start=1h`);
    const tr = list.traces.map(t => t.trace_id).filter(id => id !== big.traceId);
    const ga = tr.slice(0, 5).join(','), gb = tr.slice(5, 15).join(',');
    await goto(`/compare?ga=${ga}&gb=${gb}&tab=attribution`);
    await page.waitForSelector('#attribution, .empty');
  });

  await check('findings view lists the N+1 finding with an example trace', async () => {
    await goto('/findings?kind=n_plus_one_query&range=1h');
    await page.waitForSelector('tbody tr[data-kind="n_plus_one_query"]', { timeout: 20000 });
    const hrefs = await page.locator('tbody tr[data-kind="n_plus_one_query"] a').evaluateAll(els => els.map(a => a.getAttribute('href')));
    assert.ok(hrefs.some(h => h.startsWith('/trace/' + nplus1)), 'no link to the N+1 trace');
    await goto('/findings?range=1h');
    await page.waitForSelector('tbody tr[data-row]');
    await shot('findings.png');
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
    assert.ok(loadMs < 1000, `took ${loadMs} ms`);
    // A cold page load as well (fresh document, modules from cache).
    const t1 = Date.now();
    await page.goto(`${base}/trace/${big.traceId}`);
    await page.waitForSelector(`body[data-trace-ready="${big.traceId}"]`);
    log(`5,000-span trace, full page load: ${Date.now() - t1} ms`);
    await page.locator('.wf-body').evaluate(e => { e.scrollTop = 60000; });
    await page.waitForTimeout(100);
    assert.ok(await page.locator('.wf-row').count() > 10, 'scrolling the waterfall shows no rows');
    await shot('trace-5000.png');
  });

  await check('unknown routes and no console errors', async () => {
    await goto('/no/such/page');
    await page.waitForSelector('text=Page not found');
    const errs = b.errors.filter(e => !(/status of 404/.test(e) && optional404.length));
    assert.deepEqual(errs, [], 'console errors');
  });
  if (optional404.length) log('optional endpoints missing in this build (404, degraded gracefully):', [...new Set(optional404)].join(', '));
  await b.close();
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
log(`${results.filter(r => r[0] === 'ok').length} passed, ${failed} failed; screenshots in ${existsSync(imgDir) ? imgDir : '(none)'}`);
process.exit(failed ? 1 : 0);
