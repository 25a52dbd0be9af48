// A smart click in the real Label Studio editor: Auto-Annotation on, the toolbar's Auto-Detect
// key point tool, a click label, one click on a mask page; the backend answers at once (no Submit).
//
// 1. open the task, switch Auto-Annotation on, go to page args.page (1-based) of the mask pager;
// 2. pick the smart (Auto-Detect) key point tool of the mask pager with the toolbar's Auto-Detect
//    button, then the label args.label (Include / Exclude), and click the picture at args.click
//    ([x %, y %]); Label Studio sends the click to /interactive-annotating;
// 3. when args.accept, accept the answer's suggestions (the bottom bar's accept button); when
//    args.submit, then Submit the annotation and wait for Label Studio's answer to the save.
//
// Usage: node smart_click.mjs '{"url", "email", "password", "project", "task", "annotation", "page", "label",
//   "click": [x, y], "accept", "submit", "screenshot", "timeout_ms"}'
// Prints ONE JSON line: {tool: the selected tool before the click, sent: the request's body,
// answer: the response's JSON, before / suggested / after: the page's regions (lib.mjs
// pageRegions) before the click, when the answer's suggestions are in, after accepting them,
// saved: {status, id}}
import { login, openBrowser } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { page, close, log } = await openBrowser(args, 'smart_click');

// The mask pager's tool manager's selected tool: which tool a click on the page uses.
const selectedTool = () => page.evaluate(() => {
  const a = window.Htx.annotationStore.selected;
  const img = [...a.names.values()].filter((t) => t.type === 'image').pop();
  const t = img.getToolsManager().findSelectedTool();
  return t ? { name: t.toolName, dynamic: !!t.dynamic, control: t.control?.name ?? null } : null;
});
// The serialized results on page `index` of the mask pager, and the open suggestions' there.
const pageRegions = (index) => page.evaluate((index) => {
  const a = window.Htx.annotationStore.selected;
  const mine = (r) => r.to_name === 'keyframes' && (r.item_index ?? 0) === index;
  const dynamic = a.regions.filter((r) => r.dynamic).map((r) => r.cleanId ?? r.id);
  return {
    results: a.serializeAnnotation().filter(mine),
    suggestions: [...a.suggestions.values()].map((s) => s.cleanId ?? s.id),
    dynamic,
    autoAccept: !!window.Htx.autoAcceptSuggestions,
  };
}, index);

const query = args.annotation ? `&annotation=${args.annotation}` : '';
let exitCode = 0;
try {
  await login(page, base, args, timeout);
  // Steps 1 and 2 up to the click, on a fresh load each try: now and then (as show_task.mjs
  // saw) the editor comes up without the annotation's regions, or drops them soon after; a
  // fresh load shows them, so up to 3 loads share the timeout.
  const index = args.page - 1;
  const hasPageMask = () => page.evaluate((index) => !!window.Htx?.annotationStore?.selected?.serializeAnnotation?.()
    .some((r) => r.type === 'brushlabels' && (r.item_index ?? 0) === index), index);
  const indicator = () => page.evaluate(() => ([...document.querySelectorAll('.lsf-pagination__page-indicator')].pop()?.textContent || '').trim());
  const openPage = async () => {
    await page.goto(`${base}/projects/${args.project}/data?task=${args.task}${query}`, { waitUntil: 'domcontentloaded' });
    const shown = await page.waitForFunction(() => window.Htx?.annotationStore?.selected?.serializeAnnotation?.()
      .some((r) => r.type === 'brushlabels'), null, { timeout: Math.floor(timeout / 4) }).then(() => true, () => false);
    if (!shown) return false;
    await page.waitForTimeout(1500);
    // 1. Auto-Annotation on, then the page
    const toggle = page.getByTestId('bottombar-auto-annotation-toggle');
    if (!(await page.evaluate(() => window.Htx.autoAnnotation))) await toggle.first().click({ force: true });
    if (!(await page.evaluate(() => window.Htx.autoAnnotation))) throw new Error('Auto-Annotation did not switch on');
    while (!(await indicator()).startsWith(String(args.page))) {
      await page.locator('.lsf-pagination').last().locator('.lsf-pagination__btn_arrow-right:not(.lsf-pagination__btn_arrow-right-double)').click();
      await page.waitForTimeout(300);
    }
    await page.waitForFunction(() => {
      const a = window.Htx.annotationStore.selected;
      const img = [...a.names.values()].filter((t) => t.type === 'image').pop();
      return img.currentImageEntity.imageLoaded;
    });
    await page.waitForTimeout(1500);  // the page's layers draw after the picture
    return hasPageMask();  // the page's mask is in the annotation before the click
  };
  for (let attempt = 1; !(await openPage()); attempt++) {
    log(`no mask on page ${args.page} after load ${attempt}:`, JSON.stringify(await page.evaluate(() => {
      const s = window.Htx?.annotationStore;
      return s && { selected: s.selected?.pk, type: s.selected?.type, regions: s.selected?.regions?.length,
        annotations: s.annotations?.map((a) => a.pk), predictions: s.predictions?.length };
    }).catch(() => null)));
    if (attempt >= 3) throw new Error(`no mask on page ${args.page} after ${attempt} loads of task ${args.task}`);
  }
  const out = { before: await pageRegions(index) };

  // 2. the Auto-Detect button cycles through the smart tools: up to 4 presses to reach the key point one
  for (let k = 0; k < 4; k++) {
    const t = await selectedTool();
    if (t && t.dynamic && t.control === 'clicks') break;
    await page.locator('.lsf-tool_smart:visible').first().click();
    await page.waitForTimeout(300);
  }
  await page.locator('.lsf-label', { hasText: new RegExp(`^${args.label}`) }).first().click();
  await page.waitForTimeout(300);
  out.tool = await selectedTool();
  if (!(out.tool && out.tool.dynamic && out.tool.control === 'clicks')) throw new Error(`the smart key point tool is not selected: ${JSON.stringify(out.tool)}`);
  const img = page.locator('.lsf-image img').last();
  const box = await img.boundingBox();
  const request = page.waitForRequest((r) => r.url().includes('/interactive-annotating'));
  const answered = page.waitForResponse((r) => r.url().includes('/interactive-annotating'));
  await page.mouse.click(box.x + (args.click[0] / 100) * box.width, box.y + (args.click[1] / 100) * box.height);
  out.sent = (await request).postDataJSON();
  out.answer = await (await answered).json();
  await page.waitForTimeout(1500);  // the suggestions are put in after the answer
  out.suggested = await pageRegions(index);

  // 3. accept, then Submit
  if (args.accept) {
    if (out.suggested.suggestions.length) {
      await page.getByTestId('bottombar-accept-suggestions-button').click();
      await page.waitForFunction(() => window.Htx.annotationStore.selected.suggestions.size === 0);
    }
    await page.waitForTimeout(500);
    out.after = await pageRegions(index);
  }
  await page.screenshot({ path: args.screenshot, fullPage: true });
  if (args.submit) {
    const saved = page.waitForResponse((r) => /\/api\/(tasks\/\d+\/)?annotations\/?(\d+\/?)?(\?|$)/.test(r.url())
      && ['POST', 'PATCH', 'PUT'].includes(r.request().method()));
    saved.catch(() => {});
    await page.locator('[data-testid=bottombar-submit-button], [data-testid=bottombar-update-button]').first().click();
    const response = await saved;
    out.saved = { status: response.status(), id: (await response.json()).id };
  }
  console.log(JSON.stringify(out));
} catch (e) {
  log('failed:', e && e.stack ? e.stack : String(e));
  await page.screenshot({ path: args.screenshot || '/tmp/smart-click-failed.png', fullPage: true }).catch(() => {});
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
