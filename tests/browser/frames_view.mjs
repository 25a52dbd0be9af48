// Open one Label Studio task whose config has the overlay <Video> synced with the main one, go to
// each of the given frames by typing it into the main video's frame counter, and report what the
// two videos show there: their currentTime and their pixels at the given points; a screenshot of
// the editor is taken at each frame.
//
// Usage: node frames_view.mjs '{"url", "email", "password", "project", "task", "frames": [N, ...],
//   "points": [[x, y], ...], "shots": "folder", "main": "src part", "overlay": "src part", "timeout_ms"}'
// Prints ONE JSON line: {"videos": n, "samples": [{frame, shot, main: {t, rgb: [[r,g,b], ...]},
// overlay: {t, rgb}}, ...]}: rgb per point, in the videos' own pixels (drawn on a canvas: same origin).
import path from 'node:path';
import { login, markMainVideo, openBrowser, seekMain, videoPixels } from './lib.mjs';

const args = JSON.parse(process.argv[2] || '{}');
const timeout = args.timeout_ms || 120000;
const base = args.url.replace(/\/$/, '');
const { page, close, log } = await openBrowser(args, 'frames_view');
let exitCode = 0;
try {
  await login(page, base, args, timeout);
  await page.goto(`${base}/projects/${args.project}/data?task=${args.task}`, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => {
    const vs = [...document.querySelectorAll('video')];
    return vs.length >= 2 && vs.every((v) => v.readyState >= 2 && v.duration > 0);
  });
  await page.waitForTimeout(1500);
  const blocks = await markMainVideo(page);
  if (blocks !== 2) throw new Error(`expected two <Video> blocks (main and overlay), found ${blocks}`);
  const read = () => videoPixels(page, { main: args.main, overlay: args.overlay }, args.points);
  const samples = [];
  for (const frame of args.frames) {
    await seekMain(page, frame);
    await page.waitForTimeout(500);
    const shot = path.join(args.shots, `frame-${frame}.png`);
    await page.screenshot({ path: shot, fullPage: false });
    samples.push({ frame, shot, ...(await read()) });
    log('frame', frame, 'done');
  }
  console.log(JSON.stringify({ videos: await page.evaluate(() => document.querySelectorAll('video').length), samples }));
} catch (e) {
  console.error(String(e && e.stack || e));
  exitCode = 1;
} finally {
  await close();
}
process.exit(exitCode);
