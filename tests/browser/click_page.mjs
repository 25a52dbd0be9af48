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
  // The clicks must land in an annotation started from the prediction (its brush regions in it).
  // Now and then (on a busy 2-core machine) the editor shows the prediction's regions and then
  // re-renders without the task's predictions, leaving a blank annotation: Submit would then send
  // the clicks without the objects. So the editor's own store is asked, not the outliner, and a
  // fresh load is made while the selected annotation has no brush region; up to 3 loads.
  const prefilled = () => page.evaluate(() => {
    const a = window.Htx?.annotationStore?.selected;
    return !!a && a.type === 'annotation' && a.regions.some((r) => r.type === 'brushregion');
  });
  for (let attempt = 1; ; attempt++) {
    await page.goto(`${base}/projects/${args.project}/data?task=${args.task}`, { waitUntil: 'domcontentloaded' });
    const shown = await page.waitForFunction(() => {
      const a = window.Htx?.annotationStore?.selected;
      return !!a && a.type === 'annotation' && a.regions.some((r) => r.type === 'brushregion');
    }, null, { timeout: Math.floor(timeout / 3) }).then(() => true, () => false);
    await page.waitForTimeout(1000);  // a late re-render of the editor would drop them again
    if (shown && await prefilled()) break;
    log(`no prefilled annotation after load ${attempt}`);
    if (attempt >= 3) throw new Error(`no annotation prefilled from the prediction after ${attempt} loads of task ${args.task}`);
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
  if (!(await prefilled())) throw new Error('the annotation lost the prediction\'s regions before Submit');
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
