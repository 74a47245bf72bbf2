// Test-only extension for r1's native-messaging host (dev.relayone.r1).
// tests/browser-extension/test.mjs calls globalThis.r1Test() in this service worker
// through Playwright and checks what it returns.
const HOST = 'dev.relayone.r1';

// chrome.runtime.sendNativeMessage: a one-shot host process per message.
function oneShot(msg) {
  return new Promise((resolve, reject) => {
    chrome.runtime.sendNativeMessage(HOST, msg, (resp) => {
      if (chrome.runtime.lastError) reject(new Error(chrome.runtime.lastError.message));
      else resolve(resp);
    });
  });
}

// chrome.runtime.connectNative: one long-lived host process for the port.
function connect() {
  const port = chrome.runtime.connectNative(HOST);
  const pending = new Map();
  const notes = [];
  const waiters = [];
  let disconnected = null;
  let nextId = 1;
  port.onMessage.addListener((m) => {
    if (m.id !== undefined && m.id !== null && pending.has(m.id)) {
      pending.get(m.id)(m);
      pending.delete(m.id);
    } else {
      notes.push(m);
      waiters.splice(0).forEach((w) => w());
    }
  });
  port.onDisconnect.addListener(() => {
    disconnected = (chrome.runtime.lastError && chrome.runtime.lastError.message) || 'disconnected';
    waiters.splice(0).forEach((w) => w());
  });
  const call = (method, params) =>
    new Promise((resolve, reject) => {
      if (disconnected) return reject(new Error('host disconnected: ' + disconnected));
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error('no answer to ' + method)), 20000);
      pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      port.postMessage({ jsonrpc: '2.0', id, method, params });
    });
  const waitFor = (pred, ms) =>
    new Promise((resolve, reject) => {
      const deadline = Date.now() + ms;
      const check = () => {
        if (pred()) return resolve(true);
        if (disconnected) return reject(new Error('host disconnected: ' + disconnected));
        if (Date.now() > deadline) return reject(new Error('timed out waiting'));
        waiters.push(check);
        setTimeout(() => waiters.includes(check) && check(), 200);
      };
      check();
    });
  return { port, call, notes, waitFor };
}

globalThis.r1Test = async (workdir) => {
  const out = {};
  out.oneShotInfo = await oneShot({ jsonrpc: '2.0', id: 1, method: 'daemon.info' });

  const h = connect();
  out.start = await h.call('session.start', { workdir, name: 'from-browser' });
  const sid = out.start.result && out.start.result.session_id;
  out.subscribe = await h.call('session.subscribe', { session_id: sid, since_seq: 0 });
  out.send = await h.call('session.send', { session_id: sid, text: 'echo output-from-the-browser' });
  await h.waitFor(
    () => h.notes.some((n) => n.method === '$/event' && n.params.kind === 'tool.end'),
    20000,
  );
  out.events = h.notes.filter((n) => n.method === '$/event').map((n) => n.params);
  out.discover = await h.call('r1.discover', {});
  out.read = await h.call('journal.read', { session_id: sid, since_seq: 0 });
  h.port.disconnect();
  return out;
};
