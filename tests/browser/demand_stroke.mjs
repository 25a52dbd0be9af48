// In the Label Studio editor, as an annotator: ask for a frame on demand, then paint a brush stroke
// on its page and save, with the mouse and the editor's own buttons.
//
// 1. open the task (with ?annotation=<id>: that annotation), switch Auto-Annotation on, type
//    args.text (e.g. "frame 12 #1") into the prompt box and click Add; wait for the backend's answer
//    and accept its suggestions (the bottom bar's accept button);
// 2. go to the last page of the mask pager (its ">>" button): the on-demand page; report what it
//    shows (the picture's pixels at args.points, the painted region pixels: lib.mjs measurePage);
// 3. click the brush label args.label above the pager, drag the mouse from args.stroke[0] to
//    args.stroke[1] (picture pixels) over the page, and click Update (or Submit); wait for Label
//    Studio's answer to the save.
//
// Usage: node demand_stroke.mjs '{"url", "email", "password", "project", "task", "annotation",
//   "text", "label", "stroke": [[x0, y0], [x1, y1]], "points": [[x, y], ...], "shots", "timeout_ms"}'
// Prints ONE JSON line: {before: {pages, last}, answer: [[id, item_index], ...], after: {pages, last,
// current, naturalSize, rgb, painted}, stroke: {screen, scale, brushSize}, saved: {status, id}}
import path from 'node:path';
import { login, measurePage, openBrowser } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { page, close, log } = await openBrowser(args, 'demand_stroke');

// The mask pager (the config's last <Image>): its page count and the current page's picture URL.
const pager = () => page.evaluate(() => {
  const a = window.Htx.annotationStore.selected;
  const img = [...a.names.values()].filter((t) => t.type === 'image').pop();
  return { pages: img.imageEntities.length, current: img.currentImage, last: img.imageEntities.at(-1).src,
    shownSrc: img.currentImageEntity.src, loaded: img.currentImageEntity.imageLoaded,
    indicator: [...document.querySelectorAll('.lsf-pagination__page-indicator')].pop()?.textContent.trim() };
});
// The picture's own pixels at `points` (a blob: URL of Label Studio's origin: readable).
const pixels = (points) => page.evaluate((points) => {
  const img = [...document.querySelectorAll('.lsf-image img')].filter((i) => i.complete && i.naturalWidth > 0).pop();
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return { size: [img.naturalWidth, img.naturalHeight],
    rgb: points.map(([x, y]) => [...ctx.getImageData(x, y, 1, 1).data.slice(0, 3)]) };
}, points);
// Picture pixel (x, y) -> the screen point over its centre, through the <img>'s box.
const toScreen = ([x, y]) => page.evaluate(([x, y]) => {
  const img = [...document.querySelectorAll('.lsf-image img')].filter((i) => i.complete && i.naturalWidth > 0).pop();
  const r = img.getBoundingClientRect();
  return [r.left + (x + 0.5) * r.width / img.naturalWidth, r.top + (y + 0.5) * r.height / img.naturalHeight,
    r.width / img.naturalWidth];
}, [x, y]);

if (args.debug) {
  page.on('request', (r) => { if (r.url().includes('/api/') || r.url().includes('demand-')) log('request', r.method(), r.url()); });
  page.on('response', (r) => { if (r.url().includes('demand-') || r.url().includes('interactive')) log('response', r.status(), r.url()); });
}
let exitCode = 0;
try {
  await login(page, base, args, timeout);
  const query = args.annotation ? `&annotation=${args.annotation}` : '';
  // As show_task.mjs: now and then the editor comes up without the task's regions; load again.
  for (let attempt = 1; ; attempt++) {
    await page.goto(`${base}/projects/${args.project}/data?task=${args.task}${query}`, { waitUntil: 'domcontentloaded' });
    const shown = await page.waitForSelector('.lsf-tree__node', { state: 'attached', timeout: Math.floor(timeout / 3) })
      .then(() => true, () => false);
    if (shown) break;
    log(`no regions after load ${attempt}`);
    if (attempt >= 3) throw new Error(`no regions shown after ${attempt} loads of task ${args.task}`);
  }
  await page.waitForFunction(() => window.Htx?.annotationStore?.selected?.names);
  await page.waitForTimeout(1500);
  const out = { before: await pager() };

  // 1. frame N, typed and added with Auto-Annotation on
  const toggle = page.getByTestId('bottombar-auto-annotation-toggle');
  if (!(await page.evaluate(() => window.Htx.autoAnnotation))) await toggle.first().click({ force: true });
  if (!(await page.evaluate(() => window.Htx.autoAnnotation))) throw new Error('Auto-Annotation did not switch on');
  const box = page.locator('textarea').first();
  await box.click();
  await box.fill(args.text);
  const answered = page.waitForResponse((r) => r.url().includes('/interactive-annotating'));
  await page.getByRole('button', { name: 'Add' }).click();
  const answer = await (await answered).json();
  out.answer = (answer?.data?.result || []).filter((r) => r.type === 'brushlabels').map((r) => [r.id, r.item_index]);
  await page.getByTestId('bottombar-accept-suggestions-button').click();
  await page.waitForFunction(() => window.Htx.annotationStore.selected.suggestions.size === 0);

  // 2. the pager's last page: the on-demand page
  await page.locator('.lsf-pagination').last().locator('.lsf-pagination__btn_arrow-right-double').click();
  await page.waitForFunction(() => {
    const a = window.Htx.annotationStore.selected;
    const img = [...a.names.values()].filter((t) => t.type === 'image').pop();
    return img.currentImage === img.imageEntities.length - 1 && img.currentImageEntity.imageLoaded;
  });
  await page.waitForTimeout(1500);  // the region layers draw after the picture
  const shown = await pixels(args.points || []);
  out.after = { ...(await pager()), naturalSize: shown.size, rgb: shown.rgb,
    painted: await page.evaluate(measurePage, true) };
  const image = page.locator('.lsf-image').last();
  await image.screenshot({ path: path.join(args.shots, 'demand-page.png') });

  // 3. a brush stroke with the mouse: the object's brush label, then a drag over the page
  // the brush's label group: the last one holding the label (the click tool's Include/Exclude
  // group, when the config has it, comes after it and holds no object label)
  await page.locator('.lsf-labels').filter({ hasText: args.label }).last()
    .getByText(args.label, { exact: true }).click();
  await page.waitForTimeout(300);
  const [x0, y0, scale] = await toScreen(args.stroke[0]);
  const [x1, y1] = await toScreen(args.stroke[1]);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (let k = 1; k <= 20; k++) await page.mouse.move(x0 + (x1 - x0) * k / 20, y0 + (y1 - y0) * k / 20);
  await page.mouse.up();
  await page.waitForTimeout(1500);
  out.stroke = { screen: [[x0, y0], [x1, y1]], scale,
    brushSize: await page.evaluate(() => window.Htx.annotationStore.selected.regions
      .filter((r) => r.type === 'brushregion').map((r) => r.touches?.map((t) => t.strokeWidth)).flat().filter(Boolean)) };
  await image.screenshot({ path: path.join(args.shots, 'demand-stroke.png') });
  const saved = page.waitForResponse((r) => /\/api\/(tasks\/\d+\/)?annotations\/?(\d+\/?)?(\?|$)/.test(r.url())
    && ['POST', 'PATCH', 'PUT'].includes(r.request().method()));
  saved.catch(() => {});  // awaited below; a timeout is reported there
  log('stroke', JSON.stringify(out.stroke), 'saving');
  await page.locator('[data-testid=bottombar-submit-button], [data-testid=bottombar-update-button]').first().click();
  const response = await saved;
  out.saved = { status: response.status(), method: response.request().method(), id: (await response.json()).id };
  console.log(JSON.stringify(out));
} catch (e) {
  log('failed:', e && e.stack ? e.stack : String(e));
  await page.screenshot({ path: path.join(args.shots || '/tmp', 'demand-stroke-failed.png'), fullPage: true }).catch(() => {});
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
