// Dev helper: node shoot.mjs BASE out-dir path... (screenshots + console errors)
import { launch } from './browser.mjs';
const [base, out, ...paths] = process.argv.slice(2);
const b = await launch();
const page = await b.page();
for (const [i, p] of paths.entries()) {
  const dark = p.startsWith('dark:');
  const path = dark ? p.slice(5) : p;
  await page.emulateMedia({ colorScheme: dark ? 'dark' : 'light' });
  const t = Date.now();
  await page.goto(base + path, { waitUntil: 'networkidle' });
  await page.waitForTimeout(400);
  console.log(path, Date.now() - t, 'ms', await page.evaluate(() => JSON.stringify(window.__tracedxPerf || null)));
  await page.screenshot({ path: `${out}/shot-${i}.png`, fullPage: false });
}
console.log('errors:', b.errors);
await b.close();
