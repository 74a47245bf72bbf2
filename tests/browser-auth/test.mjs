// The loopback auth rules (DESIGN §4) in a real browser: headless Chromium driven by
// playwright-core against a real `r1 serve --detach`.
//
// * A page served FROM THE DAEMON'S ORIGIN (http://127.0.0.1:<port>/test.html,
//   fulfilled by page.route(); every other request goes to the real daemon) opens
//   `new WebSocket(url, ['r1.bearer', token])`, subscribes and receives events, and
//   follows the session with an EventSource on the SSE route using a ticket from
//   `POST /v1/sse-ticket`.
// * A page from ANOTHER ORIGIN (a second HTTP server on another port) that knows the
//   token is refused with 403: its fetches (preflighted or simple) and its WebSocket.
//
// Environment: R1_BIN (default: $CARGO_TARGET_DIR or <repo>/target, debug/r1),
// CHROMIUM (default /usr/bin/chromium). Prints `browser auth tests: N passed, M
// failed` and exits non-zero on any failure. Every daemon, browser, server and temp
// dir it starts is cleaned up, on failure too.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
const r1Bin = process.env.R1_BIN || path.join(targetDir, 'debug', 'r1');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
/** Longest any one step may take (a bound, not a sleep). */
const STEP_MS = 15_000;

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`);
  }
}

function withTimeout(promise, what, ms = STEP_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// The daemon

function r1(args, env) {
  const r = spawnSync(r1Bin, args, { env, encoding: 'utf8', timeout: STEP_MS });
  if (r.error) throw r.error;
  return r;
}

function daemonEnv(tmp) {
  const run = path.join(tmp, 'run');
  fs.mkdirSync(run, { recursive: true, mode: 0o700 });
  return { ...process.env, R1_HOME: path.join(tmp, 'home'), XDG_RUNTIME_DIR: run, R1_LOG: 'info' };
}

function startDaemon(env) {
  // --detach returns once daemon.json is written: that is the readiness signal.
  const r = r1(['serve', '--detach'], env);
  if (r.status !== 0) {
    throw new Error(`r1 serve --detach exited ${r.status}: ${r.stderr}`);
  }
  const disc = JSON.parse(fs.readFileSync(path.join(env.R1_HOME, 'daemon.json'), 'utf8'));
  return { env, port: disc.port, token: disc.token, pid: disc.pid };
}

/** Stops the daemon of `env` if one runs (also after a failed start). */
function stopDaemon(env) {
  const disc = path.join(env.R1_HOME, 'daemon.json');
  if (!fs.existsSync(disc)) return;
  const { pid } = JSON.parse(fs.readFileSync(disc, 'utf8'));
  const r = r1(['ctl', 'shutdown'], env);
  if (r.status !== 0) {
    console.log(`r1 ctl shutdown exited ${r.status}: ${r.stderr.trim()}; sending SIGTERM to ${pid}`);
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}

// ---------------------------------------------------------------------------
// Pages

/** The page served at http://127.0.0.1:<daemon port>/test.html. */
const SAME_ORIGIN_PAGE = `<!doctype html><meta charset="utf-8"><title>r1 same-origin</title>
<script>
// Every call resolves with plain data the test checks.
window.r1 = {
  ws(token, sessionId, text) {
    return new Promise((resolve) => {
      const out = { protocol: null, subscribe: null, events: [], sendResult: null, error: null };
      const ws = new WebSocket('ws://' + location.host + '/v1/ws', ['r1.bearer', token]);
      const done = (extra) => { Object.assign(out, extra || {}); try { ws.close(1000); } catch (e) {} resolve(out); };
      ws.onerror = () => done({ error: 'websocket error' });
      ws.onclose = (e) => done({ error: out.error || ('closed ' + e.code) });
      ws.onopen = () => {
        out.protocol = ws.protocol;
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.subscribe', params: { session_id: sessionId, since_seq: 0 } }));
      };
      // Done when the send was answered and its lane's tool.end arrived (either order).
      const finished = () => out.sendResult && out.sendResult.result &&
        out.events.some((e) => e.kind === 'tool.end' && e.data.lane_id === out.sendResult.result.seq);
      ws.onmessage = (m) => {
        const v = JSON.parse(m.data);
        if (v.id === 1) {
          out.subscribe = v;
          ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'session.send', params: { session_id: sessionId, text } }));
        } else if (v.id === 2) {
          out.sendResult = v;
          if (v.error) done({ error: 'session.send failed' });
        } else if (v.method === '$/event') {
          out.events.push(v.params);
        }
        if (finished()) {
          ws.onclose = null;
          done();
        }
      };
    });
  },
  async sse(token, sessionId) {
    const t = await fetch('/v1/sse-ticket', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token },
      body: JSON.stringify({ session_id: sessionId }),
    });
    const ticketStatus = t.status;
    const { ticket } = await t.json();
    return new Promise((resolve) => {
      const out = { ticketStatus, subscribed: null, events: [], error: null };
      const es = new EventSource('/v1/sessions/' + sessionId + '/sse?ticket=' + ticket + '&since_seq=0');
      const finish = (extra) => { es.close(); Object.assign(out, extra || {}); resolve(out); };
      es.addEventListener('subscribed', (e) => { out.subscribed = JSON.parse(e.data); });
      for (const kind of ['session.created', 'user.input', 'tool.start', 'session.delta', 'tool.end']) {
        es.addEventListener(kind, (e) => {
          out.events.push({ id: e.lastEventId, event: e.type, data: JSON.parse(e.data) });
          if (kind === 'tool.end') finish();
        });
      }
      es.onerror = () => finish({ error: 'eventsource error, readyState ' + es.readyState });
    });
  },
  async fetchStatus(url, init) {
    try {
      const r = await fetch(url, init);
      return { status: r.status, body: await r.text() };
    } catch (e) {
      return { error: String(e) };
    }
  },
  ticketReplay(sessionId, ticket) {
    return new Promise((resolve) => {
      const es = new EventSource('/v1/sessions/' + sessionId + '/sse?ticket=' + ticket);
      es.onopen = () => { es.close(); resolve('open'); };
      es.onerror = () => { es.close(); resolve('error'); };
    });
  },
};
</script>`;

/** The page served by the second server (another origin). */
const FOREIGN_PAGE = `<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<script>
window.attack = {
  async fetchWithToken(url, token) {
    try {
      const r = await fetch(url, { headers: { Authorization: 'Bearer ' + token } });
      return { status: r.status };
    } catch (e) {
      return { error: String(e) };
    }
  },
  async simplePost(url, body) {
    // A "simple" request (no preflight): the browser sends it with Origin.
    try {
      const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body });
      return { status: r.status };
    } catch (e) {
      return { error: String(e) };
    }
  },
  ws(url, token) {
    return new Promise((resolve) => {
      const ws = new WebSocket(url, ['r1.bearer', token]);
      const out = { opened: false };
      ws.onopen = () => { out.opened = true; ws.close(); };
      ws.onclose = (e) => { out.code = e.code; resolve(out); };
    });
  },
};
</script>`;

function startForeignServer() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(FOREIGN_PAGE);
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---------------------------------------------------------------------------
// The test

async function sameOrigin(context, d, sessionId) {
  const origin = `http://127.0.0.1:${d.port}`;
  // A page fulfilled by page.route() has no IP address, so Chromium's Local Network
  // Access checks count it as public and block its requests to loopback unless the
  // user allows them (a page the daemon served itself would be loopback already).
  // Allow them for the daemon's origin only; the other origin never gets this.
  await context.grantPermissions(['local-network-access'], { origin });
  const page = await context.newPage();
  const pageUrl = `${origin}/test.html`;
  // Only this URL is fulfilled here; every other request reaches the real daemon.
  await page.route(pageUrl, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: SAME_ORIGIN_PAGE }),
  );
  await withTimeout(page.goto(pageUrl), 'load the same-origin page');
  check('same origin: the page is at the daemon origin', (await page.evaluate(() => location.origin)) === origin);

  const ws = await withTimeout(
    page.evaluate(([t, s]) => window.r1.ws(t, s, 'echo hello-from-the-browser'), [d.token, sessionId]),
    'websocket subscribe and events',
  );
  check('same origin: WebSocket opens with r1.bearer selected', ws.protocol === 'r1.bearer', JSON.stringify(ws));
  check(
    'same origin: session.subscribe answers {sub, current_seq}',
    ws.subscribe && ws.subscribe.result && typeof ws.subscribe.result.sub === 'number',
    JSON.stringify(ws.subscribe),
  );
  const kinds = ws.events.map((e) => e.kind);
  check('same origin: $/event from seq 1 (session.created first)', ws.events[0]?.kind === 'session.created' && ws.events[0]?.seq === 1, kinds.join(','));
  const text = ws.events.filter((e) => e.kind === 'session.delta').map((e) => e.data.text).join('');
  check('same origin: the command output arrives as events', text.includes('hello-from-the-browser'), JSON.stringify(ws.events));
  const seqs = ws.events.map((e) => e.seq);
  check('same origin: events are contiguous', seqs.length > 0 && seqs.every((s, i) => s === i + 1), seqs.join(','));

  const sse = await withTimeout(page.evaluate(([t, s]) => window.r1.sse(t, s), [d.token, sessionId]), 'sse events');
  check('same origin: POST /v1/sse-ticket answers 200', sse.ticketStatus === 200, JSON.stringify(sse));
  check('same origin: EventSource gets `subscribed`', sse.subscribed && sse.subscribed.session_id === sessionId, JSON.stringify(sse.subscribed));
  check(
    'same origin: EventSource replays the journal with id epoch:seq',
    sse.events.length >= 4 && sse.events[0].event === 'session.created' && sse.events[0].id.endsWith(':1'),
    JSON.stringify(sse.events.slice(0, 2)),
  );
  check(
    'same origin: EventSource sees the command output',
    sse.events.some((e) => e.event === 'session.delta' && e.data.data.text.includes('hello-from-the-browser')),
    sse.error || '',
  );

  // A ticket is single use.
  const t = await page.evaluate(
    async ([tok, s]) =>
      (await fetch('/v1/sse-ticket', { method: 'POST', headers: { Authorization: 'Bearer ' + tok }, body: JSON.stringify({ session_id: s }) })).json(),
    [d.token, sessionId],
  );
  const first = await withTimeout(page.evaluate(([s, tk]) => window.r1.ticketReplay(s, tk), [sessionId, t.ticket]), 'ticket use');
  const second = await withTimeout(page.evaluate(([s, tk]) => window.r1.ticketReplay(s, tk), [sessionId, t.ticket]), 'ticket reuse');
  check('same origin: an SSE ticket works once, then not', first === 'open' && second === 'error', `${first}, ${second}`);

  const noToken = await page.evaluate((u) => window.r1.fetchStatus(u), `${origin}/v1/sessions`);
  check('same origin: a fetch without the token gets 401', noToken.status === 401, JSON.stringify(noToken));
  const withToken = await page.evaluate(
    ([u, tok]) => window.r1.fetchStatus(u, { headers: { Authorization: 'Bearer ' + tok } }),
    [`${origin}/v1/sessions`, d.token],
  );
  check('same origin: a fetch with the token gets 200', withToken.status === 200, JSON.stringify(withToken).slice(0, 200));
  await page.close();
}

async function foreignOrigin(context, d, sessionId, work, server) {
  const daemon = `http://127.0.0.1:${d.port}`;
  const foreign = `http://127.0.0.1:${server.address().port}`;
  const page = await context.newPage();
  // What the daemon answered, as the browser's network layer saw it: a response a
  // CORS check then hid from the page still reaches DevTools (responseReceived, or
  // only responseReceivedExtraInfo for one the page may not read).
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const requests = new Map();
  const statuses = new Map();
  // DevTools events reach us after the page's fetch has already failed, so a check
  // waits for the status it needs instead of reading the map at once.
  let waiters = [];
  const note = (id, status) => {
    const r = requests.get(id);
    if (!r) return;
    statuses.set(`${r.url} ${r.type}`, status);
    waiters = waiters.filter((w) => !w.settle());
  };
  const statusWhere = (what, pred) => {
    const found = () => [...statuses.entries()].find(([k]) => pred(k));
    return withTimeout(
      new Promise((resolve) => {
        const settle = () => {
          const hit = found();
          if (hit) resolve(hit[1]);
          return hit !== undefined;
        };
        if (!settle()) waiters.push({ settle });
      }),
      `the daemon's answer to ${what}, as DevTools saw it`,
    );
  };
  cdp.on('Network.requestWillBeSent', (e) => requests.set(e.requestId, { url: e.request.url, type: e.type }));
  cdp.on('Network.responseReceived', (e) => {
    requests.set(e.requestId, { url: e.response.url, type: e.type });
    note(e.requestId, e.response.status);
  });
  cdp.on('Network.responseReceivedExtraInfo', (e) => note(e.requestId, e.statusCode));
  const wsStatuses = [];
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => wsStatuses.push(e.response.status));
  const wsErrors = [];
  page.on('websocket', (w) => w.on('socketerror', (err) => wsErrors.push(String(err))));
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));

  await withTimeout(page.goto(`${foreign}/`), 'load the foreign page');
  check('other origin: the page is at another origin', (await page.evaluate(() => location.origin)) === foreign);

  const pre = await withTimeout(
    page.evaluate(([u, t]) => window.attack.fetchWithToken(u, t), [`${daemon}/v1/sessions`, d.token]),
    'foreign fetch with token',
  );
  check('other origin: a fetch with the token fails in the page', pre.error !== undefined, JSON.stringify(pre));
  const preflight = await statusWhere('the fetch with the token', (k) => k.startsWith(`${daemon}/v1/sessions `));
  check(
    'other origin: the daemon answered that fetch (its preflight) with 403',
    preflight === 403,
    JSON.stringify([...statuses.entries()]),
  );

  // Simple requests skip the preflight: the daemon sees them and must refuse them
  // on the Origin alone (CSRF) — here one that would run a command.
  const marker = path.join(work, 'csrf-was-here');
  const csrf = await withTimeout(
    page.evaluate(
      ([u, b]) => window.attack.simplePost(u, b),
      [`${daemon}/v1/sessions/${sessionId}/send`, JSON.stringify({ text: `touch ${marker}` })],
    ),
    'foreign simple POST',
  );
  const sendKey = `${daemon}/v1/sessions/${sessionId}/send Fetch`;
  const csrfStatus = await statusWhere('the simple POST', (k) => k === sendKey);
  check('other origin: a simple POST is answered 403', csrfStatus === 403, `${JSON.stringify(csrf)} ${JSON.stringify([...statuses.entries()])}`);
  const rpc = await page.evaluate(
    ([u, b]) => window.attack.simplePost(u, b),
    [`${daemon}/v1/rpc`, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.send', params: { session_id: sessionId, text: `touch ${marker}` } })],
  );
  const rpcStatus = await statusWhere('the simple POST to /v1/rpc', (k) => k === `${daemon}/v1/rpc Fetch`);
  check('other origin: a simple POST to /v1/rpc is answered 403', rpcStatus === 403, JSON.stringify(rpc));

  const ws = await withTimeout(
    page.evaluate(([u, t]) => window.attack.ws(u, t), [`ws://127.0.0.1:${d.port}/v1/ws`, d.token]),
    'foreign websocket',
  );
  check('other origin: the WebSocket never opens', ws.opened === false && ws.code === 1006, JSON.stringify(ws));
  const saw403 =
    wsStatuses.includes(403) ||
    wsErrors.some((e) => e.includes('403')) ||
    consoleLines.some((l) => l.includes('WebSocket') && l.includes('403'));
  check(
    'other origin: the WebSocket handshake was answered 403',
    saw403,
    JSON.stringify({ wsStatuses, wsErrors, consoleLines }),
  );

  // Nothing the foreign page sent ran: check through the daemon's own journal.
  const read = await fetch(`${daemon}/v1/rpc`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${d.token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'journal.read', params: { session_id: sessionId } }),
  }).then((r) => r.json());
  const inputs = read.result.records.filter((r) => r.kind === 'user.input').map((r) => r.data.text);
  check(
    'other origin: no input from it reached the session',
    !inputs.some((t) => t.includes('csrf-was-here')) && !fs.existsSync(marker),
    JSON.stringify(inputs),
  );
  await page.close();
}

async function main() {
  if (!fs.existsSync(r1Bin)) throw new Error(`no r1 binary at ${r1Bin} (cargo build -p r1-bin, or set R1_BIN)`);
  if (!fs.existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath} (set CHROMIUM)`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'r1-browser-auth-'));
  const env = daemonEnv(tmp);
  let context = null;
  let server = null;
  try {
    const d = startDaemon(env);
    const work = path.join(tmp, 'work');
    fs.mkdirSync(work);
    const created = await fetch(`http://127.0.0.1:${d.port}/v1/sessions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${d.token}` },
      body: JSON.stringify({ workdir: work, name: 'browser' }),
    });
    const session = await created.json();
    if (created.status !== 201) throw new Error(`session create: ${created.status} ${JSON.stringify(session)}`);

    server = await startForeignServer();
    context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    await sameOrigin(context, d, session.session_id);
    await foreignOrigin(context, d, session.session_id, work, server);
  } finally {
    if (context) await context.close().catch(() => {});
    if (server) await new Promise((r) => server.close(r));
    stopDaemon(env);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (e) {
  failed += 1;
  console.log(`FAIL the test could not run: ${e.stack || e}`);
}
console.log(`browser auth tests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
