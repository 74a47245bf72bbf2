// Starts and stops real `r1` daemons for the browser tests, each in its own
// throwaway home (R1_HOME) and runtime dir (XDG_RUNTIME_DIR), and talks to them
// over the loopback HTTP API the way any client would.
//
// Homes go on /dev/shm when it is there: the daemon fsyncs every session start,
// and the tests create a thousand sessions.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The r1 binary: $R1_BIN, else <target>/debug/r1 of this checkout. */
export function r1Binary(repo) {
  if (process.env.R1_BIN) return process.env.R1_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(repo, 'target');
  return join(target, 'debug', 'r1');
}

function run(bin, args, env, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        err.message = `r1 ${args.join(' ')} failed: ${err.message}\n${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

export class Daemon {
  /** A daemon in a fresh home named after `label` (not started yet). Its token
   *  lives in a file, so a restart (`--token-file`) keeps it valid. */
  constructor(bin, label) {
    this.bin = bin;
    const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
    this.dir = mkdtempSync(join(base, `r1-browser-${label}-`));
    chmodSync(this.dir, 0o700);
    this.home = join(this.dir, 'home');
    this.runDir = join(this.dir, 'run');
    mkdirSync(this.runDir, { mode: 0o700 });
    this.workdir = join(this.dir, 'work');
    mkdirSync(this.workdir, { mode: 0o700 });
    this.tokenFile = join(this.dir, 'token');
    this.token = randomBytes(32).toString('hex');
    writeFileSync(this.tokenFile, `${this.token}\n`, { mode: 0o600 });
    this.port = 0;
    this.running = false;
  }

  /** The environment of every r1 command for this daemon. Inherited R1_* are
   *  dropped so a developer's settings cannot leak in. */
  env() {
    const env = {};
    // No DISPLAY: `r1 ctl open` would start a browser.
    const drop = new Set(['XDG_RUNTIME_DIR', 'DISPLAY', 'WAYLAND_DISPLAY']);
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('R1_') && !drop.has(k)) env[k] = v;
    env.R1_HOME = this.home;
    env.XDG_RUNTIME_DIR = this.runDir;
    env.R1_BIN = this.bin;
    return env;
  }

  /** `r1 serve --detach` on the same port as before (if any), with the token
   *  file; returns once daemon.json is written. */
  async start() {
    const args = ['serve', '--detach', '--token-file', this.tokenFile, '--grace', '2'];
    if (this.port) args.push('--port', String(this.port));
    await run(this.bin, args, this.env());
    const d = JSON.parse(readFileSync(join(this.home, 'daemon.json'), 'utf8'));
    if (d.token !== this.token) throw new Error('daemon.json holds another token than --token-file gave');
    this.port = d.port;
    this.pid = d.pid;
    this.instanceId = d.instance_id;
    this.running = true;
    return this;
  }

  /** `r1 ctl shutdown`: waits until the daemon has exited. */
  async stop() {
    if (!this.running) return;
    this.running = false;
    await run(this.bin, ['ctl', 'shutdown'], this.env());
  }

  ctl(...args) {
    return run(this.bin, ['ctl', '--no-spawn', ...args], this.env());
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The address `r1 ctl open` prints. */
  consoleUrl(token = this.token) {
    return `${this.origin}/#token=${token}`;
  }

  /** One JSON-RPC call (or a batch, given an array of [method, params]) over
   *  POST /v1/rpc. Throws on an RPC error. */
  async rpc(method, params = {}) {
    const batch = Array.isArray(method);
    const body = batch
      ? method.map(([m, p], i) => ({ jsonrpc: '2.0', id: i, method: m, params: p }))
      : { jsonrpc: '2.0', id: 1, method, params };
    const res = await fetch(`${this.origin}/v1/rpc`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await res.json();
    const one = (a) => {
      if (a.error) throw new Error(`${a.error.message} (${a.error.code})`);
      return a.result;
    };
    return batch ? answer.map(one) : one(answer);
  }

  /** Polls `fn` until it returns a truthy value (bounded). */
  static async until(what, fn, timeoutMs = 20000) {
    const end = Date.now() + timeoutMs;
    let last;
    for (;;) {
      try {
        last = await fn();
        if (last) return last;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last && last.message ? last.message : JSON.stringify(last)})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  logText() {
    const p = join(this.home, 'log', 'r1.log');
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  }

  /** Stops the daemon if it runs and removes its directory. */
  async dispose() {
    try {
      await this.stop();
    } catch (e) {
      // Already gone; fall back to the pid so nothing is left running.
      if (this.pid) try { process.kill(this.pid, 'SIGTERM'); } catch { /* not running */ }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
