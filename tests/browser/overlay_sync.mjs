// Open Label Studio tasks whose config has the overlay <Video> synced with the main one, move the
// main video (typing frames into its frame counter, stepping, playing) and read what both videos
// show: their currentTime and the frame index burned into their pictures as bits.
//
// Usage: node overlay_sync.mjs '{"url", "email", "password", "project", "tasks": [id, ...],
//   "frames": [1, 2, ...], "bits": {"y": 60, "x0": 10, "dx": 20, "n": 5}, "main": "src part",
//   "overlay": "src part", "timeout_ms"}'
// Prints ONE JSON line: {"tasks": {id: {"videos": 2, "samples": [{how, frame, main: {t, bits},
// overlay: {t, bits}}, ...], "images": [{src, width, height}]}}}. bits: the frame index read from
// the picture (block k white = bit k); images: the <Image> pictures shown (first page of each, in
// the config's order; LS shows them as blob: URLs), their natural size once loaded (0 when not).
// Also "media": [{url, status}] of every response from an allowed origin other than LS's.
import { login, markMainVideo, openBrowser, seekMain, videoPixels } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { page, close, log } = await openBrowser(args, 'overlay_sync');
const media = [];
page.on('response', (r) => {
  if (new URL(r.url()).origin !== new URL(base).origin) media.push({ url: r.url(), status: r.status() });
});
let exitCode = 0;
try {
  await login(page, base, args, timeout);

  // Each video's time and the frame index its picture shows (block k white = bit k).
  const b = args.bits;
  const points = Array.from({ length: b.n }, (_, k) => [b.x0 + k * b.dx, b.y]);
  const read = async () => {
    const seen = await videoPixels(page, { main: args.main, overlay: args.overlay }, points);
    for (const role of Object.keys(seen)) {
      const { t, paused, rgb } = seen[role];
      seen[role] = { t, paused, bits: rgb.reduce((acc, [r, g, bl], k) => (r + g + bl > 3 * 128 ? acc | (1 << k) : acc), 0) };
    }
    return seen;
  };
  const markMain = async () => (await markMainVideo(page)) === 2;
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
    // The <Image> pages (strips, keyframes): wait up to 20 s for them to load, then note them.
    await page.waitForFunction(() => [...document.querySelectorAll('.lsf-image img')].every((i) => i.complete),
      null, { timeout: 20000 }).catch(() => {});
    const images = await page.evaluate(() => [...document.querySelectorAll('.lsf-image img')].map(
      (i) => ({ src: i.currentSrc || i.src, width: i.naturalWidth, height: i.naturalHeight })));
    const samples = [];
    const sample = async (how, frame) => {
      await settle();
      const { main, overlay } = await read();
      samples.push({ how, frame, main, overlay });
    };
    // Seek: type each frame into the main video's frame counter (the first one on the page).
    for (const frame of args.frames) {
      await seekMain(page, frame);
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
    // The clip may end (and LS swap pause back to play) between the check and the click.
    if (await pause.count()) await pause.click({ timeout: 3000 }).catch(() => log('pause: the video had stopped'));
    await sample('paused', null);
    out[task] = { videos: await page.evaluate(() => document.querySelectorAll('video').length), samples, images };
    log('task', task, 'done');
  }
  console.log(JSON.stringify({ tasks: out, media }));
} catch (e) {
  console.error(String(e && e.stack || e));
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
