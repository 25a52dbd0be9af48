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
//   maskDrawn      non-transparent pixels on the keyframe image's overlay canvases (brush masks)
//   maskPixels     how many
//   attempts       page loads it took until the regions showed (1 normally)
// Debian's /usr/bin/chromium is used (never a downloaded browser build), with a fresh profile.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const args = JSON.parse(process.argv[2] || process.env.SHOW_TASK_ARGS || '{}');
for (const key of ['url', 'email', 'password', 'project', 'task', 'screenshot']) {
  if (args[key] === undefined) {
    console.error(`show_task: missing argument ${key}`);
    process.exit(2);
  }
}
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const log = (...m) => console.error('[show_task]', ...m);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'show-task-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: args.chromium || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 2200 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let exitCode = 0;
try {
  context.setDefaultTimeout(timeout);
  const page = context.pages()[0] || (await context.newPage());
  // Only Label Studio itself: anything else (fonts, analytics) is offline anyway; cut it at once.
  await page.route(/^https?:\/\//, (route) => {
    const u = new URL(route.request().url());
    if (u.origin === new URL(base).origin) return route.continue();
    return route.abort();
  });
  page.on('pageerror', (e) => log('pageerror:', String(e).slice(0, 300)));

  const t0 = Date.now();
  await page.goto(`${base}/user/login/`, { waitUntil: 'domcontentloaded' });
  await page.fill('input[name=email]', args.email);
  await page.fill('input[name=password]', args.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith('/user/login'), { timeout }),
    page.click('button[type=submit], input[type=submit]'),
  ]);
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
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(exitCode);
