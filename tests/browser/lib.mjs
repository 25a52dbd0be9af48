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
