// Loads extension/ into headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) and runs globalThis.r1Test in its service worker: one-shot
// sendNativeMessage, then connectNative → session.start, subscribe, send, events,
// r1.discover, journal.read through the r1 native-messaging host.
//
// node test.mjs --user-data-dir DIR --extension DIR --workdir DIR --home DIR
// Prints ok/FAIL per check and `browser extension: N passed, M failed`.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

let passed = 0;
let failed = 0;
function check(name, cond, detail) {
  if (cond) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail === undefined ? '' : ': ' + JSON.stringify(detail).slice(0, 600)}`);
  }
}

const ext = args.extension;
const context = await chromium.launchPersistentContext(args['user-data-dir'], {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: false, // the real flag is --headless=new below (Playwright's would differ)
  ignoreDefaultArgs: ['--disable-extensions', '--headless'],
  args: [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--load-extension=${ext}`,
    `--disable-extensions-except=${ext}`,
  ],
  timeout: 60000,
});

try {
  let [worker] = context.serviceWorkers();
  if (!worker) worker = await context.waitForEvent('serviceworker', { timeout: 30000 });
  check('extension service worker loaded', worker.url().startsWith('chrome-extension://'), worker.url());

  const r = await worker.evaluate((wd) => globalThis.r1Test(wd), args.workdir);
  const disc = JSON.parse(readFileSync(`${args.home}/daemon.json`, 'utf8'));

  check('sendNativeMessage daemon.info', r.oneShotInfo?.result?.pid === disc.pid, r.oneShotInfo);
  const sid = r.start?.result?.session_id;
  check('connectNative session.start', typeof sid === 'string' && sid.startsWith('sess_'), r.start);
  const sub = r.subscribe?.result?.sub;
  check('session.subscribe answered', Number.isInteger(sub), r.subscribe);
  check('session.send accepted', r.send?.result?.accepted === true, r.send);
  const kinds = r.events.map((e) => e.kind);
  check('events from the start, in order', kinds[0] === 'session.created' && r.events.every((e, i) => e.seq === i + 1 && e.sub === sub), kinds);
  const text = r.events.filter((e) => e.kind === 'session.delta').map((e) => e.data.text).join('');
  check('command output arrived as events', text.includes('output-from-the-browser'), text);
  const end = r.events.find((e) => e.kind === 'tool.end');
  check('tool.end ok', end && end.data.ok === true && end.data.exit_code === 0, end);
  check('r1.discover gives a scoped token, not the master token',
    typeof r.discover?.result?.token === 'string' && r.discover.result.token !== disc.token && r.discover.result.scope === 'read' && r.discover.result.port === disc.port,
    r.discover?.result && { ...r.discover.result, token: '<redacted>' });
  check('journal.read through the host', r.read?.result?.records?.length === r.events.length && r.read.result.page?.count === 1, r.read?.result?.page);
} catch (e) {
  check('extension run', false, String(e && e.stack ? e.stack : e));
} finally {
  await context.close();
}
console.log(`browser extension: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
