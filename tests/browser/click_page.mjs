// Clicks on a mask page with the mouse, in the real Label Studio editor, then Submit.
// Args (JSON in argv[2]): url, email, password, project, task, page (1-based page of the
// keyframes pager), clicks: [[x %, y %, "Include" | "Exclude"], ...], screenshot, timeout_ms.
// Prints {"page": indicator, "clicks": n, "status": the annotation POST's HTTP status}.
import { openBrowser, login } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { context, page, close, log } = await openBrowser(args, 'click_page');
let exitCode = 0;
try {
  await login(page, base, args, timeout);
  // As in show_task.mjs: now and then the editor comes up without the task's predictions; a
  // fresh load shows them, so up to 3 loads share the timeout.
  for (let attempt = 1; ; attempt++) {
    await page.goto(`${base}/projects/${args.project}/data?task=${args.task}`, { waitUntil: 'domcontentloaded' });
    const shown = await page.waitForSelector('.lsf-tree__node', { state: 'attached', timeout: Math.floor(timeout / 3) })
      .then(() => true, () => false);
    if (shown) break;
    log(`no regions after load ${attempt}`);
    if (attempt >= 3) throw new Error(`no regions shown after ${attempt} loads of task ${args.task}`);
  }
  await page.waitForFunction(() => [...document.querySelectorAll('.lsf-image img')].some((i) => i.complete && i.naturalWidth > 0));
  const indicator = () => page.evaluate(() => (document.querySelector('.lsf-pagination__page-indicator')?.textContent || '').trim());
  while (!(await indicator()).startsWith(String(args.page))) {
    await page.click('.lsf-pagination__btn_arrow-right:not(.lsf-pagination__btn_arrow-right-double)');
    await page.waitForTimeout(300);
  }
  await page.waitForTimeout(1500);  // the page's picture and layers
  const img = page.locator('.lsf-image img').first();
  for (const [x, y, label] of args.clicks) {
    await page.keyboard.press('Escape');  // nothing selected: a label click picks the tool's label
    await page.locator('.lsf-label', { hasText: new RegExp(`^${label}`) }).first().click();
    const box = await img.boundingBox();
    await page.mouse.click(box.x + (x / 100) * box.width, box.y + (y / 100) * box.height);
    await page.waitForTimeout(300);
  }
  await page.keyboard.press('Escape');
  const onPage = await indicator();  // before Submit (the editor moves on after it)
  const posted = page.waitForResponse((r) => r.url().includes('/annotations') && r.request().method() === 'POST');
  await page.locator('button', { hasText: /^Submit$/ }).first().click();
  const response = await posted;
  await page.screenshot({ path: args.screenshot, fullPage: true });
  process.stdout.write(JSON.stringify({ page: onPage, clicks: args.clicks.length, status: response.status() }) + '\n');
} catch (e) {
  log('failed:', e && e.stack ? e.stack : String(e));
  try { await page.screenshot({ path: args.screenshot, fullPage: true }); } catch (e2) { /* none */ }
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
