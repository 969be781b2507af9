// Frame-time benchmark of the trace view (not part of CI): builds tracedx,
// starts `tracedx serve` on free loopback ports, sends one synthetic trace
// of N spans (default 10,000), opens it in headless Chromium at 1440×900
// and reports the first render and the frame times while the waterfall
// scrolls from top to bottom at 3 rows per frame.
//
//   node web/e2e/bench-frames.mjs [spans]
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { launch } from './browser.mjs';
import { bigTrace } from './otlp.mjs';

const spans = Number(process.argv[2] || 10000);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'tracedx-bench-'));
const port = () => new Promise(res => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };

execFileSync('go', ['build', '-o', join(tmp, 'tracedx'), './cmd/tracedx'], { cwd: repo, stdio: 'inherit' });
const [http, otlp, grpc] = [await port(), await port(), await port()];
const server = spawn(join(tmp, 'tracedx'), ['serve', '--data-dir', join(tmp, 'data'), '--http-addr', `127.0.0.1:${http}`, '--otlp-http-addr', `127.0.0.1:${otlp}`,
  '--otlp-grpc-addr', `127.0.0.1:${grpc}`, '--zipkin-addr', '', '--tempo-addr', '', '--trace-idle-timeout', '1s', '--log-level', 'warn'], { stdio: 'ignore' });
const base = `http://127.0.0.1:${http}`;
let b;
try {
  for (let i = 0; i < 100; i++) { try { if ((await fetch(base + '/healthz')).ok) break; } catch { /* starting */ } await new Promise(r => setTimeout(r, 100)); }
  const t = bigTrace(spans, BigInt(Date.now()) * 1_000_000n);
  const r = await fetch(`http://127.0.0.1:${otlp}/v1/traces`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(t.doc) });
  if (!r.ok) throw new Error('ingest: ' + r.status);
  for (let i = 0; i < 100; i++) { const x = await fetch(`${base}/api/v1/traces/${t.traceId}`); if (x.ok && (await x.json()).span_count >= t.count) break; await new Promise(r => setTimeout(r, 200)); }
  b = await launch();
  const page = await b.page();
  const loads = [];
  for (let run = 0; run < 5; run++) {
    await page.goto(`${base}/trace/${t.traceId}`);
    await page.waitForSelector(`body[data-trace-ready="${t.traceId}"]`);
    loads.push(await page.evaluate(() => window.__tracedxPerf));
  }
  // Per frame: from the start of the frame's animation callbacks (ours
  // runs first, then the view's redraw) to a task queued behind the frame's
  // style, layout and paint: the main-thread work the frame cost. The gap
  // between frames is vsync-paced (about 16.7 ms) and reported too.
  // Chromium's trace gives each main-thread task's CPU time (tdur), which a
  // busy machine's preemption does not inflate the way wall time is.
  const cdp = await page.context().newCDPSession(page);
  const events = [];
  cdp.on('Tracing.dataCollected', e => events.push(...e.value));
  const traced = new Promise(r => cdp.once('Tracing.tracingComplete', r));
  await cdp.send('Tracing.start', { categories: 'devtools.timeline,disabled-by-default-devtools.timeline', transferMode: 'ReportEvents' });
  const { work, gaps } = await page.evaluate(() => new Promise(done => {
    const body = document.querySelector('.wf-body');
    const work = [], gaps = [];
    const ch = new MessageChannel();
    let t0 = 0, prev = 0;
    ch.port1.onmessage = () => {
      work.push(performance.now() - t0);
      if (body.scrollTop + body.clientHeight >= body.scrollHeight - 1 || work.length > 4000) { done({ work: work.slice(1), gaps: gaps.slice(1) }); return; }
      requestAnimationFrame(frame);
    };
    const frame = now => {
      t0 = performance.now();
      if (prev) gaps.push(now - prev);
      prev = now;
      body.scrollTop += 72;
      ch.port2.postMessage(0);
    };
    requestAnimationFrame(frame);
  }));
  await cdp.send('Tracing.end');
  await traced;
  const main = events.find(e => e.name === 'thread_name' && e.args?.name === 'CrRendererMain' &&
    events.some(x => x.pid === e.pid && x.name === 'RunTask' && x.dur > 0));
  const tasks = events.filter(e => main && e.pid === main.pid && e.tid === main.tid && e.name === 'RunTask' && e.ph === 'X' && e.tdur != null);
  // Per frame: the CPU of the tasks that ran between two frame starts.
  const frameStarts = events.filter(e => main && e.pid === main.pid && e.tid === main.tid && e.name === 'FireAnimationFrame').map(e => e.ts).sort((a, b) => a - b)
    // One frame runs several animation callbacks (the test's, the view's).
    .filter((t, i, all) => i === 0 || t - all[i - 1] > 4000);
  const cpu = [];
  let k = 0;
  const byStart = [...tasks].sort((a, b) => a.ts - b.ts);
  for (let f = 0; f + 1 < frameStarts.length; f++) {
    let sum = 0;
    while (k < byStart.length && byStart[k].ts < frameStarts[f + 1]) { if (byStart[k].ts >= frameStarts[f] - 2000) sum += byStart[k].tdur; k++; }
    cpu.push(sum / 1000);
  }
  const render = loads.slice(1).map(l => l.renderMs), total = loads.slice(1).map(l => l.totalMs);
  console.log(`trace of ${t.count} spans, Chromium ${b.ctx.browser()?.version() || ''} headless, 1440×900`);
  console.log(`first render (model + waterfall), median of 4 loads: ${pct(render, 0.5).toFixed(0)} ms; fetch + render: ${pct(total, 0.5).toFixed(0)} ms`);
  console.log(`scrolling, ${work.length} frames, work per frame: median ${pct(work, 0.5).toFixed(1)} ms, p95 ${pct(work, 0.95).toFixed(1)} ms, worst ${Math.max(...work).toFixed(1)} ms`);
  if (cpu.length) console.log(`main-thread CPU per frame (trace tdur, ${cpu.length} frames): median ${pct(cpu, 0.5).toFixed(1)} ms, p95 ${pct(cpu, 0.95).toFixed(1)} ms, worst ${Math.max(...cpu).toFixed(1)} ms`);
  console.log(`frame interval: median ${pct(gaps, 0.5).toFixed(1)} ms, p95 ${pct(gaps, 0.95).toFixed(1)} ms, worst ${Math.max(...gaps).toFixed(1)} ms`);
} finally {
  if (b) await b.close();
  const exited = new Promise(r => server.once('exit', r));
  server.kill('SIGTERM');
  await exited;
  rmSync(tmp, { recursive: true, force: true, maxRetries: 5 });
}
