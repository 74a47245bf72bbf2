// Browser tests of the r1 web console: headless Chromium (Debian's, driven by
// playwright-core) against real `r1` daemons. Run by scripts/test-browser.sh;
// prints one line per test and closes with `browser tests: N passed, M failed`.
//
// Environment: R1_BIN (default <target>/debug/r1), CHROMIUM (default
// /usr/bin/chromium), R1_BROWSER_ARTIFACTS (default <target>/browser-artifacts).

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { request as httpRequest } from 'node:http';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Daemon, r1Binary } from './daemon.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const target = process.env.CARGO_TARGET_DIR || join(repo, 'target');
const artifacts = process.env.R1_BROWSER_ARTIFACTS || join(target, 'browser-artifacts');
const bin = r1Binary(repo);
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

/** Sessions in the big list, and records (ticks) in the big session. */
const MANY_SESSIONS = 1000;
const TICKS = 100_000;

// ------------------------------------------------------------------ harness

const tests = [];
function test(name, fn, { needs = [], timeoutMs = 60000 } = {}) {
  tests.push({ name, fn, needs, timeoutMs });
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
    }),
  ]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const screenshots = [];

/** Saves a screenshot and checks it: a real, non-empty PNG, taken while the
 *  page said every one of `mustShow` (checked on the page text, not pixels). */
async function screenshot(page, name, mustShow) {
  const file = join(artifacts, `${name}.png`);
  const text = await page.evaluate(() => document.body.innerText);
  await page.screenshot({ path: file });
  for (const s of mustShow) assert(text.includes(s), `screenshot ${name}: the page does not show ${JSON.stringify(s)}`);
  const png = readFileSync(file);
  assert(png.length > 2000 && png.subarray(0, 8).equals(PNG_SIGNATURE), `screenshot ${name} is not a non-empty PNG`);
  writeFileSync(join(artifacts, `${name}.txt`), text);
  screenshots.push(file);
}

/** The page's test hook as plain data. */
function hook(page) {
  return page.evaluate(() => {
    const s = window.__r1state;
    const out = {};
    for (const k of Object.keys(s)) if (typeof s[k] !== 'function') out[k] = s[k];
    return out;
  });
}

/** Waits until `fn(state, arg)` holds for the page's test hook (polled from
 *  here: the page's CSP rightly refuses evaluating strings). */
async function waitHook(page, what, fn, arg, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let s = {};
  for (;;) {
    s = await hook(page);
    if (fn(s, arg)) return s;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; page state: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitVisible(locator, what, timeoutMs = 20000) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: timeoutMs });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

// ------------------------------------------------------------------ fixture

const ctx = {
  browser: null,
  a: null, // the daemon of tests 1-4
  b: null, // the daemon with many sessions and a big one (test 5)
  bReady: null,
  page: null, // tests 1-3 share one page, as a user would
  problems: [], // CSP violations and uncaught errors seen on any page
  contexts: [],
};

/** A fresh browser profile (its own sessionStorage) and page. Every page is
 *  watched for CSP or Trusted Types violations and uncaught exceptions. */
async function newPage() {
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', timezoneId: 'UTC' });
  ctx.contexts.push(context);
  const page = await context.newPage();
  page.on('pageerror', (e) => ctx.problems.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Trusted Type|Refused to/i.test(m.text())) ctx.problems.push(`csp: ${m.text()}`);
  });
  return page;
}

/** Fills daemon B: many plain sessions and one whose child writes TICKS records. */
async function populateB(b) {
  // The exec driver turns each JSON line with a kind into one record. The big
  // session starts first so it fills while the others are created.
  const prog = `BEGIN { for (i = 1; i <= ${TICKS}; i++) printf "{\\"kind\\":\\"tick\\",\\"data\\":{\\"i\\":%d}}\\n", i }`;
  const big = await b.rpc('session.start', { workdir: b.workdir, name: 'big', driver: 'exec', command: ['awk', prog] });
  const starts = [];
  for (let i = 0; i < MANY_SESSIONS; i++) starts.push(['session.start', { workdir: b.workdir, name: `many-${String(i).padStart(4, '0')}` }]);
  await b.rpc(starts);
  const done = await Daemon.until('the big session to end', async () => {
    const s = await b.rpc('session.get', { session_id: big.session_id });
    return s.state === 'ended' ? s : null;
  }, 60000);
  return { bigId: big.session_id, bigLastSeq: done.last_seq };
}

// -------------------------------------------------------------------- tests

test('1. the token link opens the console and lists sessions with their state', async () => {
  const a = ctx.a;
  const started = [];
  for (const name of ['alpha', 'beta']) {
    const { stdout } = await a.ctl('--json', 'sessions', 'start', '--workdir', a.workdir, '--name', name);
    started.push(JSON.parse(stdout).session_id);
  }
  [ctx.alphaId, ctx.betaId] = started;
  const { stdout } = await a.ctl('--json', 'open');
  const url = JSON.parse(stdout).url;
  assert(url === a.consoleUrl(), `r1 ctl open printed an unexpected address`);

  const page = (ctx.page = await newPage());
  await page.goto(url);
  for (const name of ['alpha', 'beta']) {
    const row = page.locator('#session-list .srow', { hasText: name });
    await waitVisible(row, `the ${name} row`);
    const state = await row.locator('.state').textContent();
    assert(state === 'running', `${name} shows state ${state}`);
    const meta = await row.locator('.meta').textContent();
    assert(meta.includes(a.workdir) && meta.includes('shell') && /\d records?\b/.test(meta), `${name} row lacks workdir/driver/records: ${meta}`);
  }
  assert(page.url() === `${a.origin}/`, `the token is still in the address bar: the page is at ${page.url().replace(a.token, '<token>')}`);
  const kept = await page.evaluate(() => sessionStorage.getItem('r1.console.token'));
  assert(kept === a.token, 'the token is not kept in sessionStorage');
  const dom = await page.evaluate(() => document.documentElement.outerHTML);
  assert(!dom.includes(a.token), 'the token is in the DOM');
  assert(!JSON.stringify(await hook(page)).includes(a.token), 'the token is in the test hook');
  assert((await page.locator('#conn-text').textContent()) === 'Connected', 'not shown as connected');
  await screenshot(page, '01-sessions', ['alpha', 'beta', 'running', 'Connected', 'Sessions (2)']);

  // Live: a session started elsewhere appears without a reload.
  await a.ctl('sessions', 'start', '--workdir', a.workdir, '--name', 'gamma');
  await waitVisible(page.locator('#session-list .srow', { hasText: 'gamma' }), 'the gamma row to appear live');
});

test('2. a command typed in a session streams stdout, stderr and its exit status', async () => {
  const page = ctx.page;
  await page.locator('#session-list .srow', { hasText: 'alpha' }).click();
  await waitHook(page, 'the alpha session to be followed', (s, id) => s.viewId === id && s.sub !== null, ctx.alphaId);
  const input = page.locator('#send-input');
  await input.fill('echo hello; echo oops >&2');
  await input.press('Enter');
  const out = page.locator('#log .lrow.k-out', { hasText: 'hello' });
  const err = page.locator('#log .lrow.k-err', { hasText: 'oops' });
  await waitVisible(page.locator('#log .lrow.k-in', { hasText: '❯ echo hello; echo oops >&2' }), 'the input row');
  await waitVisible(out, 'stdout "hello"');
  await waitVisible(err, 'stderr "oops"');
  await waitVisible(page.locator('#log .lrow.k-ok', { hasText: 'exit 0' }), 'the tool end with exit 0');
  const endText = await page.locator('#log .lrow.k-ok', { hasText: 'exit 0' }).first().textContent();
  assert(/exit 0 · [\d.]+ (ms|s)/.test(endText), `tool end lacks a duration: ${endText}`);
  const [outColor, errColor, errMark] = await page.evaluate(() => {
    const o = document.querySelector('#log .lrow.k-out .txt');
    const e = document.querySelector('#log .lrow.k-err .txt');
    return [getComputedStyle(o).color, getComputedStyle(e).color, document.querySelector('#log .lrow.k-err .mark').textContent];
  });
  assert(outColor !== errColor, `stdout and stderr have the same colour ${outColor}`);
  assert(errMark === '!', 'stderr rows carry no non-colour marker');

  await input.fill('exit 3');
  await input.press('Enter');
  await waitVisible(page.locator('#log .lrow.k-fail', { hasText: 'exit 3' }), 'the tool end with exit 3');
  await screenshot(page, '02-session-output', ['❯ echo hello; echo oops >&2', 'hello', 'oops', '✓ exit 0', '✗ exit 3']);
}, { needs: ['1.'] });

test('3. after a daemon restart the banner shows and the stream continues with no gap and no duplicate', async () => {
  const page = ctx.page;
  const a = ctx.a;
  const before = await hook(page);
  const port = a.port;
  await a.stop();
  await waitHook(page, 'the page to notice the daemon is gone', (s) => s.status !== 'open');
  await waitVisible(page.locator('#banner', { hasText: 'Reconnecting' }), 'the reconnecting banner');
  await a.start();
  assert(a.port === port, `the daemon came back on port ${a.port}, not ${port}`);
  await waitHook(page, 'a reconnection to the new daemon', (s, id) => s.status === 'open' && s.instanceId === id && s.restarts === 1, a.instanceId);
  await waitVisible(page.locator('#banner', { hasText: 'The daemon restarted' }), 'the restart banner');
  await waitVisible(page.locator('#log .lrow', { hasText: 'reattached after a daemon restart' }), 'the reattached record');
  await waitVisible(page.locator('#act-reattach'), 'the "Resume after restart" button');
  await screenshot(page, '03-restarted', ['The daemon restarted', 'paused by shutdown', 'reattached after a daemon restart', 'Resume after restart']);

  await page.locator('#act-reattach').click();
  await waitVisible(page.locator('#view-state', { hasText: 'running' }), 'the session to run again');
  const input = page.locator('#send-input');
  await input.fill('echo after-restart');
  await input.press('Enter');
  await waitVisible(page.locator('#log .lrow.k-out', { hasText: 'after-restart' }), 'output after the restart');
  const server = await a.rpc('session.get', { session_id: ctx.alphaId });
  await waitHook(page, 'every record of the session', (s, n) => s.lastSeq === n, server.last_seq);
  const seqs = await page.evaluate(() => window.__r1state.seqs());
  const after = await hook(page);
  assert(seqs.length === server.last_seq, `the view holds ${seqs.length} records, the journal ${server.last_seq}`);
  seqs.forEach((s, i) => assert(s === i + 1, `record ${i} has seq ${s}: the stream has a gap or a duplicate`));
  assert(after.gaps === 0, `the page saw ${after.gaps} gap(s)`);
  assert(after.epoch === server.epoch, 'the view is on another epoch than the journal');
  assert(after.lastSeq > before.lastSeq, 'nothing arrived after the restart');
  // The DOM agrees: the seqs in the gutter of the rendered rows ascend with no repeat.
  const shown = await page.evaluate(() => [...document.querySelectorAll('#log .lrow')].map((r) => Number(r.dataset.seq)).filter(Boolean));
  shown.forEach((s, i) => assert(i === 0 || s > shown[i - 1], `rendered seqs out of order: ${shown.join(',')}`));
  await screenshot(page, '04-stream-continues', ['after-restart', 'resumed', 'running']);
}, { needs: ['2.'] });

test('4. a wrong token shows the sign-in message; pasting the right one signs in', async () => {
  const a = ctx.a;
  const page = await newPage();
  const wrong = 'f'.repeat(64);
  await page.goto(`${a.origin}/#token=${wrong}`);
  await waitVisible(page.locator('#signin-msg', { hasText: 'refused this token' }), 'the refused-token message');
  assert(await page.locator('#signin-h').isVisible(), 'no sign-in box');
  assert(await page.locator('#app').isHidden(), 'the app is shown without a valid token');
  assert(page.url() === `${a.origin}/`, 'the wrong token stayed in the address bar');
  assert((await page.evaluate(() => sessionStorage.getItem('r1.console.token'))) === null, 'a refused token is kept');
  await screenshot(page, '05-wrong-token', ['Sign in to r1', 'The daemon refused this token', 'r1 ctl open']);

  // A token with characters no token has never reaches the daemon.
  await page.locator('#signin-token').fill('not a token');
  await page.locator('#signin-token').press('Enter');
  await waitVisible(page.locator('#signin-msg', { hasText: 'not an r1 token' }), 'the malformed-token message');

  // The whole `r1 ctl open` address pasted into the box works too.
  await page.locator('#signin-token').fill(a.consoleUrl());
  await page.locator('#signin-token').press('Enter');
  await waitVisible(page.locator('#session-list .srow', { hasText: 'alpha' }), 'the sessions after signing in');

  // No token at all: the sign-in box, with no error.
  const fresh = await newPage();
  await fresh.goto(`${a.origin}/`);
  await waitVisible(fresh.locator('#signin-h'), 'the sign-in box without a token');
  assert((await fresh.locator('#signin-msg').textContent()) === '', 'an error shown before any attempt');
}, { needs: ['1.'] });

test(`5. ${MANY_SESSIONS.toLocaleString('en')} sessions and a ${TICKS.toLocaleString('en')}-record session render with a small DOM`, async () => {
  const b = ctx.b;
  const { bigId, bigLastSeq } = await ctx.bReady;
  assert(bigLastSeq >= TICKS, `the big session has only ${bigLastSeq} records`);
  // This page has been open since before the sessions were created: the list
  // grew live from bus events, in batches.
  const page = ctx.pageB;
  await waitHook(page, 'every session in the list', (s, n) => s.sessionCount === n, MANY_SESSIONS + 1);
  let s = await hook(page);
  assert(s.listRowsInDom > 5 && s.listRowsInDom < 60, `${s.listRowsInDom} session rows in the DOM`);
  const gets = s.calls['session.get'] || 0;
  const lists = s.calls['session.list'] || 0;
  assert(gets + lists < 100, `${gets} session.get and ${lists} session.list calls for ${MANY_SESSIONS + 1} new sessions: updates are not batched`);
  await waitVisible(page.locator('#session-count', { hasText: '(1,001)' }), 'the session count');

  // Keyboard: End goes to the last session, which is then rendered and in view.
  const list = page.locator('#session-list');
  await list.focus();
  await list.press('End');
  const all = (await b.rpc('session.list', {})).sessions;
  // The page's order: newest first, then name, then id, descending.
  const key = (x) => [x.started_at, x.name || '', x.id];
  all.sort((x, y) => {
    const [kx, ky] = [key(x), key(y)];
    for (let i = 0; i < 3; i++) if (kx[i] !== ky[i]) return kx[i] < ky[i] ? 1 : -1;
    return 0;
  });
  const last = all[all.length - 1];
  const lastRow = page.locator(`#session-list .srow.active[data-session-id="${last.id}"]`);
  await waitVisible(lastRow, 'the last session row after End');
  const [rowBox, listBox] = [await lastRow.boundingBox(), await list.boundingBox()];
  assert(rowBox.y >= listBox.y - 1 && rowBox.y + rowBox.height <= listBox.y + listBox.height + 1, 'the last row is not scrolled into view');
  assert((await list.getAttribute('aria-activedescendant')) === `srow-${last.id}`, 'aria-activedescendant does not follow the cursor');
  s = await hook(page);
  assert(s.listRowsInDom < 60, `${s.listRowsInDom} session rows in the DOM after scrolling`);
  await screenshot(page, '06-many-sessions', ['Sessions (1,001)', last.name]);

  // The big session: replayed whole, rendered a screenful at a time.
  await page.locator('#filter').fill('big');
  const t0 = Date.now();
  await page.locator('#session-list .srow', { hasText: 'big' }).click();
  await waitHook(page, `all ${bigLastSeq} records`, (st, n) => st.recordCount === n && st.sub !== null, bigLastSeq, 30000);
  const loadMs = Date.now() - t0;
  s = await hook(page);
  assert(s.gaps === 0 && s.lastSeq === bigLastSeq, `gaps ${s.gaps}, last seq ${s.lastSeq}`);
  assert(s.logRowsInDom > 10 && s.logRowsInDom < 150, `${s.logRowsInDom} log rows in the DOM for ${s.rowCount} rows`);
  const elements = await page.evaluate(() => document.getElementsByTagName('*').length);
  assert(elements < 1500, `${elements} elements in the page`);
  // Opened at the end: the last records are in view.
  await waitVisible(page.locator('#log .lrow', { hasText: 'session ended (ok)' }), 'the last record');
  await waitVisible(page.locator('#log .lrow', { hasText: `tick {"i":${TICKS}}` }), 'the last tick');
  await screenshot(page, '07-100k-records', [`tick {"i":${TICKS}}`, 'session ended (ok)', bigLastSeq.toLocaleString('en')]);

  // Home goes back to the first record; the DOM stays small.
  const log = page.locator('#log');
  await log.focus();
  await log.press('Home');
  await waitVisible(page.locator('#log .lrow', { hasText: 'session created' }), 'the first record after Home');
  await log.press('End');
  await waitVisible(page.locator('#log .lrow', { hasText: 'session ended (ok)' }), 'the last record after End');
  s = await hook(page);
  assert(s.logRowsInDom < 150, `${s.logRowsInDom} log rows in the DOM after scrolling`);
  console.log(`    (${bigLastSeq.toLocaleString('en')} records replayed in ${loadMs} ms; ${gets} session.get and ${lists} session.list calls for the list)`);
}, { timeoutMs: 90000 });


test('6. the console is served with its types, a strict CSP, the shared headers and the pins', async () => {
  const a = ctx.a;
  const get = (path, headers = {}, method = 'GET') => new Promise((resolvePromise, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: a.port, path, method, headers: { Host: `127.0.0.1:${a.port}`, ...headers } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolvePromise({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
  const types = { '/': 'text/html; charset=utf-8', '/console/app.js': 'text/javascript; charset=utf-8', '/console/app.css': 'text/css; charset=utf-8', '/console/icon.svg': 'image/svg+xml' };
  for (const [path, type] of Object.entries(types)) {
    for (const host of [`127.0.0.1:${a.port}`, `localhost:${a.port}`, `[::1]:${a.port}`]) {
      const r = await get(path, { Host: host, Origin: `http://${host.startsWith('[') ? 'localhost' : host.split(':')[0]}:${a.port}` });
      assert(r.status === 200, `${path} with Host ${host}: ${r.status}`);
      assert(r.headers['content-type'] === type, `${path}: content-type ${r.headers['content-type']}`);
      assert(r.headers.vary === 'Origin' && r.headers['cache-control'] === 'no-store' && r.headers['x-content-type-options'] === 'nosniff', `${path}: shared headers missing: ${JSON.stringify(r.headers)}`);
      const csp = r.headers['content-security-policy'] || '';
      assert(csp.includes("default-src 'none'") && csp.includes("script-src 'self'") && csp.includes(`connect-src 'self' ws://127.0.0.1:${a.port} ws://localhost:${a.port}`) && csp.includes("frame-ancestors 'none'"), `${path}: CSP ${csp}`);
      assert(!csp.includes('unsafe'), `${path}: CSP allows unsafe sources`);
      assert(r.headers['x-frame-options'] === 'DENY' && r.headers['referrer-policy'] === 'no-referrer', `${path}: framing/referrer headers missing`);
      assert(r.body.length > 100, `${path}: empty body`);
    }
  }
  for (const [why, path, headers, want] of [
    ['a foreign Host (DNS rebinding)', '/', { Host: `evil.example:${a.port}` }, 403],
    ['another port in Host', '/', { Host: `127.0.0.1:${a.port + 1}` }, 403],
    ['a foreign Origin', '/', { Origin: 'http://evil.example' }, 403],
    ['an unknown asset', '/console/nope.js', {}, 404],
    ['a path outside the console', '/index.html', {}, 404],
  ]) {
    const r = await get(path, headers);
    assert(r.status === want, `${why}: ${r.status}, want ${want}`);
    assert(r.headers.vary === 'Origin' && r.headers['cache-control'] === 'no-store' && r.headers['x-content-type-options'] === 'nosniff', `${why}: shared headers missing`);
  }
  const post = await get('/', {}, 'POST');
  assert(post.status === 405 && /GET/.test(post.headers.allow || ''), `POST /: ${post.status} allow ${post.headers.allow}`);
}, { needs: ['1.'] });

test('7. a session started from the page can be paused, resumed and cancelled', async () => {
  const a = ctx.a;
  const page = await newPage();
  await page.goto(a.consoleUrl());
  await waitVisible(page.locator('#session-list .srow', { hasText: 'alpha' }), 'the session list');
  await page.locator('#start-workdir').fill(a.workdir);
  await page.locator('#start-workdir').press('Enter');
  await waitHook(page, 'the new session to open', (s) => s.viewId !== null && s.sub !== null);
  const { viewId } = await hook(page);
  const state = page.locator('#view-state');
  await waitVisible(state.filter({ hasText: 'running' }), 'the new session running');
  // Keyboard only: Tab to the button, Enter presses it.
  await page.locator('#act-pause').focus();
  await page.keyboard.press('Enter');
  await waitVisible(state.filter({ hasText: 'paused' }), 'paused');
  await waitVisible(page.locator('#log .lrow', { hasText: 'paused by user' }), 'the paused record');
  assert((await a.rpc('session.get', { session_id: viewId })).state === 'paused', 'the daemon does not see it paused');
  await page.locator('#act-resume').click();
  await waitVisible(state.filter({ hasText: 'running' }), 'running again');
  await waitVisible(page.locator('#log .lrow', { hasText: 'resumed' }), 'the resumed record');
  // Cancel takes a second press.
  await page.locator('#act-cancel').click();
  await waitVisible(page.locator('#act-cancel', { hasText: 'Press again' }), 'the cancel confirmation');
  assert((await a.rpc('session.get', { session_id: viewId })).state === 'running', 'one press cancelled the session');
  await page.locator('#act-cancel').click();
  await waitVisible(state.filter({ hasText: 'ended' }), 'ended');
  await waitVisible(page.locator('#log .lrow', { hasText: 'session ended (cancelled)' }), 'the ended record');
  assert(await page.locator('#send-input').isDisabled(), 'an ended session still takes input');
  const row = page.locator(`#session-list .srow[data-session-id="${viewId}"] .state`);
  await waitVisible(row.filter({ hasText: 'ended' }), 'the list row to show ended');
}, { needs: ['1.'] });

test('8. records cut by a journal repair are dropped from the view (reset) and the stream goes on', async () => {
  // A crash that tore the journal's tail: while the daemon is down, the last
  // records of alpha (which the page has shown) are cut and a torn half line
  // left. Recovery keeps the good prefix and starts a new epoch; the page,
  // resubscribing with the old epoch, gets `reset` and must drop what was cut.
  const page = ctx.page;
  const a = ctx.a;
  const before = await hook(page);
  assert(before.viewId === ctx.alphaId && before.lastSeq > 5, 'the alpha session is not open');
  await a.stop();
  await waitHook(page, 'the page to notice the daemon is gone', (s) => s.status !== 'open');
  const dir = join(a.home, 'sessions', ctx.alphaId);
  const file = join(dir, 'journal.ndjson');
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  const kept = lines.slice(0, -3);
  const lastGood = JSON.parse(kept[kept.length - 1]).seq;
  writeFileSync(file, `${kept.join('\n')}\n{"v":1,"seq":${lastGood + 1},"crc":"0000`);
  rmSync(join(dir, 'clean'), { force: true });
  await a.start();
  await waitHook(page, 'a reconnection to the restarted daemon', (s, id) => s.status === 'open' && s.instanceId === id && s.sub !== null, a.instanceId);
  await waitVisible(page.locator('#view-status', { hasText: `records after seq ${lastGood} were replaced` }), 'the repair notice');
  const server = await a.rpc('session.get', { session_id: ctx.alphaId });
  await waitHook(page, 'the repaired journal in the view', (s, n) => s.lastSeq === n, server.last_seq);
  const seqs = await page.evaluate(() => window.__r1state.seqs());
  seqs.forEach((q, i) => assert(q === i + 1, `record ${i} has seq ${q} after the reset`));
  const after = await hook(page);
  assert(after.epoch === server.epoch && after.epoch !== before.epoch, 'the view did not move to the new epoch');
  // What the view shows for the reused seqs is what the journal now holds.
  const journal = await a.rpc('journal.read', { session_id: ctx.alphaId, since_seq: lastGood, limit: 10 });
  assert(journal.records[0].kind === 'journal.repaired', `seq ${lastGood + 1} is ${journal.records[0].kind}`);
  await waitVisible(page.locator(`#log .lrow[data-seq="${lastGood + 1}"]`, { hasText: 'journal repaired' }), 'the journal.repaired row at the reused seq');
  await screenshot(page, '08-journal-repaired', ['journal repaired', `records after seq ${lastGood} were replaced`]);
}, { needs: ['3.'] });

test('9. a token rotated while the page is open sends it back to sign-in', async () => {
  const page = ctx.page;
  await waitHook(page, 'the page to be connected', (s) => s.status === 'open');
  await ctx.a.ctl('rotate-token');
  await waitVisible(page.locator('#signin-msg', { hasText: 'rotated' }), 'the rotated-token message');
  assert((await page.evaluate(() => sessionStorage.getItem('r1.console.token'))) === null, 'the dead token is kept');
  assert((await hook(page)).status === 'signedout', 'the page still tries to connect');
}, { needs: ['1.'] });

test('10. no page broke the CSP, and the token is in no daemon log', async () => {
  assert(ctx.problems.length === 0, `page problems:\n  ${ctx.problems.join('\n  ')}`);
  for (const d of [ctx.a, ctx.b]) {
    const log = d.logText();
    assert(log.length > 0, `no log at ${d.home}`);
    assert(!log.includes(d.token), `the token is in ${d.home}/log/r1.log`);
  }
});

// ------------------------------------------------------------------- runner

async function main() {
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  assert(existsSync(bin), `no r1 binary at ${bin} (cargo build -p r1-bin, or set R1_BIN)`);
  assert(existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);

  ctx.a = new Daemon(bin, 'a');
  ctx.b = new Daemon(bin, 'b');
  await Promise.all([ctx.a.start(), ctx.b.start()]);
  // Daemon B fills up while the first tests run.
  ctx.bReady = populateB(ctx.b);
  ctx.bReady.catch(() => {});
  // launch() runs Chromium on a fresh temporary profile of its own.
  ctx.browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // A console on daemon B watches its sessions being created (test 5).
  ctx.pageB = await newPage();
  await ctx.pageB.goto(ctx.b.consoleUrl());

  let passed = 0;
  let failed = 0;
  const failedNames = [];
  // R1_BROWSER_ONLY=1,2,3 runs only those tests (while working on them).
  const only = (process.env.R1_BROWSER_ONLY || '').split(',').filter(Boolean);
  for (const t of tests.filter((x) => !only.length || only.some((n) => x.name.startsWith(`${n}.`)))) {
    const t0 = Date.now();
    const blocker = t.needs.find((n) => failedNames.some((f) => f.startsWith(n)));
    if (blocker) {
      failed += 1;
      failedNames.push(t.name);
      console.log(`not ok - ${t.name}\n    not run: test ${blocker} failed`);
      continue;
    }
    try {
      await withTimeout(t.fn(), t.timeoutMs, t.name);
      passed += 1;
      console.log(`ok - ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed += 1;
      failedNames.push(t.name);
      console.log(`not ok - ${t.name} (${Date.now() - t0} ms)\n    ${String(e.stack || e).split('\n').join('\n    ')}`);
      for (const [i, c] of ctx.contexts.entries()) {
        for (const [j, p] of c.pages().entries()) await p.screenshot({ path: join(artifacts, `failure-${failed}-${i}-${j}.png`) }).catch(() => {});
      }
    }
  }
  return { passed, failed };
}

let result = { passed: 0, failed: 1 };
try {
  result = await main();
} catch (e) {
  console.log(`not ok - setup\n    ${String(e.stack || e).split('\n').join('\n    ')}`);
} finally {
  if (ctx.browser) await ctx.browser.close().catch(() => {});
  for (const d of [ctx.a, ctx.b]) {
    if (!d) continue;
    if (result.failed) writeFileSync(join(artifacts, `daemon-${d === ctx.a ? 'a' : 'b'}.log`), d.logText().split(d.token).join('<token>'));
    await d.dispose().catch(() => {});
  }
}
if (screenshots.length) console.log(`screenshots: ${screenshots.map((f) => f.replace(`${repo}/`, '')).join(' ')}`);
console.log(`browser tests: ${result.passed} passed, ${result.failed} failed`);
process.exit(result.failed ? 1 : 0);
