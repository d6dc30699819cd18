// Open the node's player page in Debian's chromium (headless), wait until playback advances,
// save a screenshot. Prints one JSON line: {ok, title, currentTime, errors, screenshot}.
//
//   node play.mjs <player url> <screenshot.png> [timeout_ms]
import { chromium } from 'playwright-core';

const [url, shot, timeout = '40000'] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const errors = [];
const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
page.on('pageerror', e => errors.push('page: ' + e.message));
page.on('console', m => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
let ok = false;
try {
  await page.goto(url);
  await page.waitForFunction(() => /^playing|^error/.test(document.title), null, { timeout: Number(timeout) });
  ok = (await page.title()).startsWith('playing');
} catch (e) {
  errors.push('wait: ' + e.message.split('\n')[0]);
}
const title = await page.title();
const currentTime = await page.evaluate(() => document.getElementById('v').currentTime);
await page.screenshot({ path: shot });
await browser.close();
console.log(JSON.stringify({ ok, title, currentTime, errors, screenshot: shot }));
