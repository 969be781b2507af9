// Launches Debian's Chromium through playwright-core (never downloads a
// browser) and collects console errors and page errors per page.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'tracedx-e2e-chrome-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
    viewport: { width: 1440, height: 900 },
    // Not UTC, so "local" and "UTC" differ and the zone switch is tested.
    timezoneId: process.env.E2E_TZ || 'Europe/Berlin',
  });
  const errors = [];
  const watch = page => {
    // The resource URL matters for "Failed to load resource" lines: a 400
    // from a deliberately bad TraceQL query is expected, anything else not.
    page.on('console', m => { if (m.type() === 'error') errors.push(`console: ${m.text()} (${page.url()}) [${m.location()?.url || ''}]`); });
    page.on('pageerror', e => errors.push(`pageerror: ${e.message} (${page.url()})`));
  };
  ctx.pages().forEach(watch);
  ctx.on('page', watch);
  return {
    ctx, errors,
    page: async () => { const p = ctx.pages()[0] || await ctx.newPage(); return p; },
    close: async () => { await ctx.close(); rmSync(profile, { recursive: true, force: true }); },
  };
}
