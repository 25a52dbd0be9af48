// What the browser scripts share: a headless Chromium with a fresh profile, cut off from every
// origin but Label Studio's (and those the caller allows), and the Label Studio login.
// Debian's /usr/bin/chromium is used (never a downloaded browser build).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Launch Chromium for a script named `name`; `args.url` is Label Studio, `args.allow_origins`
// (optional) more origins the page may load from (e.g. the backend serving overlay videos).
// Returns { context, page, close }: close() ends the browser and removes the profile.
export async function openBrowser(args, name) {
  const log = (...m) => console.error(`[${name}]`, ...m);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-profile-`));
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
  context.setDefaultTimeout(args.timeout_ms || 120000);
  const page = context.pages()[0] || (await context.newPage());
  // Only the allowed origins: anything else (fonts, analytics) is offline anyway; cut it at once.
  const allowed = new Set([args.url, ...(args.allow_origins || [])].map((u) => new URL(u).origin));
  await page.route(/^https?:\/\//, (route) => (allowed.has(new URL(route.request().url()).origin)
    ? route.continue() : route.abort()));
  page.on('pageerror', (e) => log('pageerror:', String(e).slice(0, 300)));
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close, log };
}

// Log in to Label Studio at `base` with args.email / args.password.
export async function login(page, base, args, timeout) {
  await page.goto(`${base}/user/login/`, { waitUntil: 'domcontentloaded' });
  await page.fill('input[name=email]', args.email);
  await page.fill('input[name=password]', args.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith('/user/login'), { timeout }),
    page.click('button[type=submit], input[type=submit]'),
  ]);
}

// Mark the main video's block for selectors (`[data-vrshq-main]`): the <video> elements hang off
// <body> (LS draws the picture on its own canvas), so go by the config's order: the first <Video>
// block is the main one (the overlay tag comes after it in the shipped config). The block count.
export async function markMainVideo(page) {
  return page.evaluate(() => {
    const blocks = document.querySelectorAll('.lsf-video-segmentation');
    if (blocks.length >= 1) blocks[0].setAttribute('data-vrshq-main', '1');
    return blocks.length;
  });
}

// Each video's time, paused flag and pixels at `points` ([[x, y], ...], the video's own pixels,
// drawn on a canvas: same origin), by role: a video whose src contains roles[role]. (DOM order is
// no guide: the overlay's <video> came first in LS 1.23.2.)
export function videoPixels(page, roles, points) {
  return page.evaluate(({ roles, points }) => {
    const out = {};
    for (const v of document.querySelectorAll('video')) {
      const role = Object.keys(roles).find((r) => (v.currentSrc || v.src || '').includes(roles[r]));
      if (!role) continue;
      const c = document.createElement('canvas');
      c.width = v.videoWidth; c.height = v.videoHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(v, 0, 0);
      const rgb = points.map(([x, y]) => [...ctx.getImageData(x, y, 1, 1).data.slice(0, 3)]);
      out[role] = { t: v.currentTime, paused: v.paused, rgb };
    }
    return out;
  }, { roles, points });
}

// Go to Label Studio frame `frame` by typing it into the main video's frame counter, and wait
// until no video is seeking.
export async function seekMain(page, frame) {
  await page.locator('[data-vrshq-main] .lsf-frames-control').first().click();
  const input = page.locator('[data-vrshq-main] .lsf-frames-control input').first();
  await input.fill(String(frame));
  await input.press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('video')].every((v) => !v.seeking && v.readyState >= 2));
}

// Each page of the keyframe image: which picture pixels the region layers paint (see show_task.mjs's
// header, maskPages); runs in the page (page.evaluate(measurePage, last)). Konva draws the picture on
// an opaque layer canvas and each region layer on a canvas of the same size above it. ``last``: the
// last <Image> of the config (the first by default).
export function measurePage(last = false) {
  const loaded = [...document.querySelectorAll('.lsf-image img')].filter((i) => i.complete && i.naturalWidth > 0);
  const img = last ? loaded[loaded.length - 1] : loaded[0];
  if (!img) return null;
  const r = img.getBoundingClientRect();
  const nw = img.naturalWidth, nh = img.naturalHeight;
  // best[k]: over the region layers, the largest share of picture pixel k's screen pixels painted.
  const best = new Float32Array(nw * nh), seen = new Uint8Array(nw * nh);
  let rs = 0, gs = 0, bs = 0, n = 0;
  const layers = [];
  for (const c of document.querySelectorAll('.konvajs-content canvas')) {
    const q = c.getBoundingClientRect();
    const cx = q.left + q.width / 2, cy = q.top + q.height / 2;
    if (!c.width || !c.height || !(cx > r.left && cx < r.right && cy > r.top && cy < r.bottom)) continue;
    if (Math.abs(c.width / c.height - nw / nh) > 0.01 * (nw / nh)) continue;  // not the picture's stage
    let d;
    try { d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; } catch (e) { continue; }
    let opaque = 0, painted = 0;
    for (let k = 3; k < d.length; k += 4) if (d[k] === 255) opaque++;
    const layer = { width: c.width, height: c.height, opaque };
    layers.push(layer);
    // the picture itself: opaque but for, at times, a part-covered edge row and column where the
    // stage's size is not the picture's scaled exactly (seen: 1418 of 811x608 pixels); a region
    // layer is see-through off its mask
    if (opaque >= 0.99 * c.width * c.height) continue;
    // A screen pixel -> the picture pixel under it, through the <img>'s box: the stage may show
    // the picture zoomed and cropped (larger than the canvas, centred).
    const count = new Uint32Array(nw * nh), hits = new Uint32Array(nw * nh);
    for (let j = 0; j < c.height; j++) {
      const iy = Math.floor((q.top + (j + 0.5) * q.height / c.height - r.top) * nh / r.height);
      if (iy < 0 || iy >= nh) continue;
      for (let i = 0; i < c.width; i++) {
        const ix = Math.floor((q.left + (i + 0.5) * q.width / c.width - r.left) * nw / r.width);
        if (ix < 0 || ix >= nw) continue;
        const k = 4 * (j * c.width + i);
        count[iy * nw + ix]++;
        if (d[k + 3] >= 128) {
          hits[iy * nw + ix]++; painted++;
          rs += d[k]; gs += d[k + 1]; bs += d[k + 2]; n++;
        }
      }
    }
    layer.painted = painted;
    for (let k = 0; k < nw * nh; k++) {
      if (count[k]) { seen[k] = 1; best[k] = Math.max(best[k], hits[k] / count[k]); }
    }
  }
  let out = '', paintedPixels = 0;
  for (let k = 0; k < nw * nh; k++) {
    const on = best[k] >= 0.5;
    out += !seen[k] ? '.' : on ? '1' : '0';
    paintedPixels += on;
  }
  const indicator = document.querySelector('.lsf-image')?.closest('.lsf-main-content, body')
    ?.querySelector('.lsf-pagination__page-indicator')?.textContent.trim() || null;
  return { indicator, width: nw, height: nh, painted: out, paintedPixels,
           rgb: n ? [rs / n, gs / n, bs / n] : null, layers };
}
