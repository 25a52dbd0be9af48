// Open one Label Studio task in the editor with headless Chromium and report what it shows.
//
// Usage: node show_task.mjs '{"url": "http://127.0.0.1:PORT", "email": "...", "password": "...",
//                              "project": 1, "task": 2, "screenshot": "/abs/shot.png", "timeout_ms": 120000}'
// (or the same JSON in the env var SHOW_TASK_ARGS). Prints ONE JSON line on stdout:
//   editor         the editor rendered (.lsf-outliner present)
//   video          a <video> element with its media loaded (readyState >= 2) and its duration
//   videoTimeline  the video's timeline is shown; timelineRows: its per-region keypoint rows
//   regions        the outliner entries: [{index, type, label, text}], type like "videorectangleregion"
//                  or "brushregion" (from the tree node class lsf-tree__node_type_<type>)
//   keyframeImage  the keyframe <Image> is shown and its picture loaded (naturalWidth)
//   maskDrawn      see-through pixels (0 < alpha < 255) on the canvases over the first keyframe
//   maskPixels     page, how many (Konva paints brush layers opaque: these are their anti-aliased
//                  edges; maskPages below is what the masks paint)
//   maskPages      per page of the keyframe <Image valueList> (page k shows the brush regions of
//                  item_index k - 1), what the region layers paint over the picture, in picture
//                  pixels: {page, indicator, width, height, painted: "01.." (row-major, one char
//                  per picture pixel: "1" when at least half of the screen pixels that fall in it
//                  are painted with alpha >= 128 on a region layer, "0" when not, "." when the
//                  stage does not show that pixel: it may show the picture zoomed and cropped),
//                  paintedPixels, rgb: mean colour painted, layers: the canvases read}
//   attempts       page loads it took until the regions showed (1 normally)
// The browser: lib.mjs's (Debian's /usr/bin/chromium, a fresh profile, only Label Studio's origin).
import { login, measurePage, openBrowser } from './lib.mjs';

const args = JSON.parse(process.argv[2] || process.env.SHOW_TASK_ARGS || '{}');
for (const key of ['url', 'email', 'password', 'project', 'task', 'screenshot']) {
  if (args[key] === undefined) {
    console.error(`show_task: missing argument ${key}`);
    process.exit(2);
  }
}
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { context, page, close, log } = await openBrowser(args, 'show_task');
let exitCode = 0;
try {
  const t0 = Date.now();
  await login(page, base, args, timeout);
  log('logged in', page.url(), `${Date.now() - t0} ms`);

  // The editor: the outliner with at least one region. Now and then (about 1 run in 10 on a busy
  // 2-core machine) the editor comes up without the task's predictions; a fresh load shows them,
  // so up to 3 loads share the timeout.
  let attempts = 0;
  for (;;) {
    attempts += 1;
    await page.goto(`${base}/projects/${args.project}/data?task=${args.task}`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.lsf-outliner', { state: 'attached' });
    const shown = await page.waitForSelector('.lsf-tree__node', { state: 'attached', timeout: Math.floor(timeout / 3) })
      .then(() => true, () => false);
    if (shown) break;
    log(`no regions after load ${attempts}`);
    if (attempts >= 3) throw new Error(`no regions shown after ${attempts} loads of task ${args.task}`);
  }
  await page.waitForFunction(() => {
    const v = document.querySelector('video');
    return v && v.readyState >= 2 && v.duration > 0;
  });
  await page.waitForSelector('.lsf-timeline', { state: 'attached' }).catch(() => {});
  // The keyframe image (<Image valueList>) and its picture.
  const hasImage = await page
    .waitForFunction(() => [...document.querySelectorAll('.lsf-image img')].some((i) => i.complete && i.naturalWidth > 0), null, { timeout: Math.min(timeout, 30000) })
    .then(() => true, () => false);
  // Let the canvases (video frame, boxes, brush layers) draw.
  await page.waitForTimeout(2000);
  log('editor ready', `${Date.now() - t0} ms`);

  const seen = await page.evaluate(() => {
    const regions = [...document.querySelectorAll('.lsf-tree__node')].map((node, i) => {
      const type = ([...node.classList].find((c) => c.startsWith('lsf-tree__node_type_')) || '').replace('lsf-tree__node_type_', '');
      const item = node.querySelector('.lsf-outliner-item');
      const title = node.querySelector('.lsf-outliner-item__title');
      const index = node.querySelector('.lsf-outliner-item__index');
      const labelText = title ? title.innerText.trim() : '';
      return {
        index: index ? Number(index.innerText.trim()) : i + 1,
        type,
        label: labelText.split(',')[0].trim() || null,
        labels: labelText ? labelText.split(',').map((s) => s.trim()) : [],
        text: (item ? item.innerText : node.innerText).replace(/\s+/g, ' ').trim(),
      };
    });
    const v = document.querySelector('video');
    const imageBox = document.querySelector('.lsf-image');
    const imgs = imageBox ? [...imageBox.querySelectorAll('img')] : [];
    let maskPixels = 0;
    // Konva draws the regions on canvases laid over the <img>: read those that overlap it.
    const img = imgs.find((i) => i.naturalWidth > 0);
    const r = img ? img.getBoundingClientRect() : null;
    const over = (c) => {
      const q = c.getBoundingClientRect();
      return r && q.width > 0 && q.left < r.right && q.right > r.left && q.top < r.bottom && q.bottom > r.top;
    };
    if (r) {
      for (const c of [...document.querySelectorAll('canvas')].filter(over)) {
        try {
          const ctx = c.getContext('2d');
          if (!ctx || !c.width || !c.height) continue;
          const d = ctx.getImageData(0, 0, c.width, c.height).data;
          // the picture itself is opaque; brush masks are drawn see-through
          for (let k = 3; k < d.length; k += 4) if (d[k] > 0 && d[k] < 255) maskPixels++;
        } catch (e) { /* a canvas we cannot read */ }
      }
    }
    return {
      editor: !!document.querySelector('.lsf-outliner'),
      video: !!(v && v.readyState >= 2 && v.duration > 0),
      videoDuration: v ? v.duration : null,
      videoCanvas: !!document.querySelector('.lsf-video-canvas'),
      videoTimeline: !!document.querySelector('.lsf-timeline'),
      timelineRows: document.querySelectorAll('.lsf-keypoints__label').length,
      regions,
      keyframeImage: imgs.some((i) => i.complete && i.naturalWidth > 0),
      keyframeImageSize: imgs.filter((i) => i.naturalWidth > 0).map((i) => [i.naturalWidth, i.naturalHeight])[0] || null,
      maskPixels,
      maskDrawn: maskPixels > 0,
    };
  });
  const maskPages = [];
  const indicatorText = () => page.evaluate(() => document.querySelector('.lsf-pagination__page-indicator')?.textContent.trim() || '');
  const pageCount = Number(((await indicatorText()).match(/of\s*(\d+)/) || [0, 1])[1]);
  for (let k = 1; k <= pageCount; k++) {
    if (k > 1) {
      const before = await page.evaluate(() => [...document.querySelectorAll('.lsf-image img')].map((i) => i.src).join(' '));
      await page.click('.lsf-pagination__btn_arrow-right:not(.lsf-pagination__btn_arrow-right-double)');
      await page.waitForFunction((want) => (document.querySelector('.lsf-pagination__page-indicator')?.textContent || '').trim().startsWith(String(want)), k);
      // The next page's picture, loaded (not the previous page's).
      await page.waitForFunction((old) => [...document.querySelectorAll('.lsf-image img')].some(
        (i) => i.complete && i.naturalWidth > 0 && !old.split(' ').includes(i.src)), before);
    }
    // The region layers draw after the picture: measure until two readings 250 ms apart agree and
    // show paint (at most 15 s; a page whose mask draws nothing is measured as it is then).
    let shown = null;
    for (const giveUp = Date.now() + 15000; ;) {
      const now = await page.evaluate(measurePage);
      const settled = now && shown && now.paintedPixels > 0 && now.painted === shown.painted;
      shown = now;
      if (settled || Date.now() > giveUp) break;
      await page.waitForTimeout(250);
    }
    maskPages.push({ page: k, ...shown });
    await page.screenshot({ path: args.screenshot.replace(/\.png$/, `-page${k}.png`), fullPage: true });
  }
  seen.maskPages = maskPages;
  seen.imageWaited = hasImage;
  seen.attempts = attempts;
  seen.url = page.url();
  seen.elapsed_ms = Date.now() - t0;
  await page.screenshot({ path: args.screenshot, fullPage: true });
  seen.screenshot = args.screenshot;
  process.stdout.write(JSON.stringify(seen) + '\n');
} catch (e) {
  log('failed:', e && e.stack ? e.stack : String(e));
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: args.screenshot, fullPage: true });
  } catch (e2) { /* no screenshot */ }
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
