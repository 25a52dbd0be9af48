// Open Label Studio tasks whose config has the overlay <Video> synced with the main one, move the
// main video (typing frames into its frame counter, stepping, playing) and read what both videos
// show: their currentTime and the frame index burned into their pictures as bits.
//
// Usage: node overlay_sync.mjs '{"url", "email", "password", "project", "tasks": [id, ...],
//   "frames": [1, 2, ...], "bits": {"y": 60, "x0": 10, "dx": 20, "n": 5}, "main": "src part",
//   "overlay": "src part", "timeout_ms"}'
// Prints ONE JSON line: {"tasks": {id: {"videos": 2, "samples": [{how, frame, main: {t, bits},
// overlay: {t, bits}}, ...]}}}. bits: the frame index read from the picture (block k white = bit k).
import { login, openBrowser } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { page, close, log } = await openBrowser(args, 'overlay_sync');
let exitCode = 0;
try {
  await login(page, base, args, timeout);

  // Each video's time and the frame index its picture shows (drawn on a canvas: same origin),
  // by role: the main video's src has args.main in it, the overlay's args.overlay. (DOM order is
  // no guide: the overlay's <video> came first in LS 1.23.2.)
  const read = () => page.evaluate(({ b, roles }) => {
    const out = {};
    for (const v of document.querySelectorAll('video')) {
      const role = Object.keys(roles).find((r) => (v.currentSrc || v.src || '').includes(roles[r]));
      if (!role) continue;
      const c = document.createElement('canvas');
      c.width = v.videoWidth; c.height = v.videoHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(v, 0, 0);
      let bits = 0;
      for (let k = 0; k < b.n; k++) {
        const d = ctx.getImageData(b.x0 + k * b.dx, b.y, 1, 1).data;
        if (d[0] + d[1] + d[2] > 3 * 128) bits |= 1 << k;
      }
      out[role] = { t: v.currentTime, bits, paused: v.paused };
    }
    return out;
  }, { b: args.bits, roles: { main: args.main, overlay: args.overlay } });
  // Mark the main video's own controls. The <video> elements hang off <body> (LS draws the
  // picture on its own canvas), so go by the config's order: the first <Video> block is the main
  // one (the overlay tag comes after it in the shipped config).
  const markMain = () => page.evaluate(() => {
    const blocks = document.querySelectorAll('.lsf-video-segmentation');
    if (blocks.length !== 2) return false;
    blocks[0].setAttribute('data-vrshq-main', '1');
    return true;
  });
  const settle = async () => {
    await page.waitForFunction(() => [...document.querySelectorAll('video')].every((v) => !v.seeking && v.readyState >= 2));
    await page.waitForTimeout(400);
  };

  const out = {};
  for (const task of args.tasks) {
    await page.goto(`${base}/projects/${args.project}/data?task=${task}`, { waitUntil: 'domcontentloaded' });
    await page.waitForFunction(() => {
      const vs = [...document.querySelectorAll('video')];
      return vs.length >= 2 && vs.every((v) => v.readyState >= 2 && v.duration > 0);
    });
    await page.waitForTimeout(1500);
    if (!(await markMain())) throw new Error('expected two <Video> blocks (main and overlay)');
    const samples = [];
    const sample = async (how, frame) => {
      await settle();
      const { main, overlay } = await read();
      samples.push({ how, frame, main, overlay });
    };
    // Seek: type each frame into the main video's frame counter (the first one on the page).
    for (const frame of args.frames) {
      await page.locator('[data-vrshq-main] .lsf-frames-control').first().click();
      const input = page.locator('[data-vrshq-main] .lsf-frames-control input').first();
      await input.fill(String(frame));
      await input.press('Enter');
      await sample('seek', frame);
    }
    // LS's step buttons (the first of each: the main video's), when they are enabled.
    const step = async (label) => {
      const button = page.locator(`[data-vrshq-main] [aria-label="${label}"]`).first();
      if (await button.isEnabled().catch(() => false)) {
        await button.click();
        await sample(label, null);
      } else {
        samples.push({ how: label, skipped: 'disabled' });
      }
    };
    await step('Step backward');
    await step('Step backward');
    await step('Step forward');
    // Play from frame 1 for about a second, then pause: the two must be within a frame.
    await page.locator('[data-vrshq-main] .lsf-frames-control').first().click();
    await page.locator('[data-vrshq-main] .lsf-frames-control input').first().fill('1');
    await page.locator('[data-vrshq-main] .lsf-frames-control input').first().press('Enter');
    await settle();
    const play = page.locator('[data-vrshq-main] [data-testid="playback-button:play"]').first();
    await play.click();
    await page.waitForTimeout(1000);
    samples.push({ how: 'playing', ...(await read()) });
    const pause = page.locator('[data-vrshq-main] [data-testid="playback-button:pause"]').first();
    if (await pause.count()) await pause.click();
    await sample('paused', null);
    out[task] = { videos: await page.evaluate(() => document.querySelectorAll('video').length), samples };
    log('task', task, 'done');
  }
  console.log(JSON.stringify({ tasks: out }));
} catch (e) {
  console.error(String(e && e.stack || e));
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
