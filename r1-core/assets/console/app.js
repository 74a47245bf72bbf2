// r1 console: lists the daemon's sessions and follows one live, over one
// JSON-RPC WebSocket (DESIGN §4, §7). No framework, no network beyond this origin.
//
// Security rules this file keeps (the CSP enforces most of them):
// - The token comes from the URL fragment (never sent to a server) or the sign-in
//   box; it is removed from the address bar at once and kept only in
//   sessionStorage (this tab). It is sent only as the WebSocket subprotocol
//   `r1.bearer, <token>` and in `Authorization` to this origin's /v1/rpc. It is
//   never logged, never shown, never put in the DOM or the test hook.
// - Session output is untrusted text: it only ever reaches the DOM through
//   textContent (Trusted Types refuse markup sinks anyway).
'use strict';

(() => {
  // ---------------------------------------------------------------- constants

  const TOKEN_KEY = 'r1.console.token';
  const PROTOCOL_VERSION = 1;
  /** Must match --log-row / --list-row in app.css (fixed heights make the
   *  virtual lists a matter of arithmetic). */
  const LOG_ROW_H = 18;
  const LIST_ROW_H = 52;
  /** Rows rendered beyond the visible ones, so fast scrolling shows no gaps. */
  const OVERSCAN = 8;
  /** Browsers cap element heights (~16M px in some); past this the scroll
   *  position is mapped onto the rows proportionally. */
  const MAX_SCROLL_PX = 8_000_000;
  /** Characters of one row put in the DOM; the rest is summarised. */
  const MAX_ROW_CHARS = 4000;
  const READ_PAGE = 5000;
  const CALL_TIMEOUT_MS = 20000;
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 4000;
  /** The list is re-read this often as well as on bus events, because record
   *  counts, activity and pause/resume of other sessions are not on the bus. */
  const LIST_POLL_MS = 10000;
  /** Above this many changed sessions in one batch, one session.list beats N
   *  session.get calls. */
  const GET_BATCH_MAX = 20;
  const TOKEN_RE = /^[A-Za-z0-9._~-]{32,512}$/;

  // -------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);

  /** An element with a class and text (never markup). */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** Runs `fn` once per animation frame however often it is asked; falls back
   *  to a timer where frames do not run (a background tab). */
  function frameScheduler(fn) {
    let queued = false;
    const run = () => {
      if (!queued) return;
      queued = false;
      fn();
    };
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(run);
      setTimeout(run, 100);
    };
  }

  function fmtDuration(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const m = Math.floor(ms / 60000);
    return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  function plural(n, word) {
    return `${n.toLocaleString()} ${word}${n === 1 ? '' : 's'}`;
  }

  function relTime(iso) {
    const t = Date.parse(iso || '');
    if (!isFinite(t)) return 'never';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(t).toLocaleDateString();
  }

  const STATE_LABEL = {
    running: 'running',
    paused: 'paused',
    ended: 'ended',
    'paused-reattachable': 'paused after restart',
    damaged: 'damaged',
  };

  function stateBadge(badge, state) {
    badge.dataset.state = state || '';
    badge.textContent = STATE_LABEL[state] || state || 'unknown';
  }

  // ------------------------------------------------------------------- token

  /** Takes the token from `#token=…` (then scrubs it from the address bar and
   *  history entry), else from this tab's sessionStorage. */
  function takeToken() {
    const hash = location.hash.replace(/^#/, '');
    if (hash) {
      const params = new URLSearchParams(hash);
      const t = params.get('token');
      if (t !== null) {
        params.delete('token');
        const rest = params.toString();
        history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
        if (t) {
          sessionStorage.setItem(TOKEN_KEY, t);
          return t;
        }
      }
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Accepts a bare token or a whole `r1 ctl open` URL pasted into the box. */
  function tokenFromInput(text) {
    const s = text.trim();
    const i = s.indexOf('#');
    if (i >= 0) {
      const t = new URLSearchParams(s.slice(i + 1)).get('token');
      if (t) return t.trim();
    }
    return s;
  }

  // -------------------------------------------------------------- connection

  /** One JSON-RPC WebSocket, reconnected with backoff. The owner gets
   *  `onOpen()` after each (re)connection, `onNotify(method, params)`,
   *  `onStatus(status, detail)` and `onUnauthorized(reason)`. */
  class Connection {
    constructor(token, owner) {
      this.token = token;
      this.owner = owner;
      this.ws = null;
      this.nextId = 1;
      this.pending = new Map();
      this.backoff = BACKOFF_MIN_MS;
      this.retryTimer = null;
      this.retryAt = 0;
      this.stopped = false;
      this.status = 'connecting';
      this.connects = 0;
      this.calls = {}; // method → count (the test hook shows it)
    }

    start() {
      this.stopped = false;
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.onclose = null;
        ws.close(1000);
      }
      this.failPending('signed out');
    }

    setStatus(status, detail) {
      this.status = status;
      this.owner.onStatus(status, detail);
    }

    connect() {
      clearTimeout(this.retryTimer);
      if (this.stopped) return;
      this.setStatus('connecting');
      let ws;
      try {
        // The token rides in the subprotocol list: browsers cannot set headers on
        // a WebSocket. The server selects `r1.bearer`, never echoing the token.
        ws = new WebSocket(`ws://${location.host}/v1/ws`, ['r1.bearer', this.token, `r1.proto.v${PROTOCOL_VERSION}`]);
      } catch (e) {
        // A token with characters a subprotocol cannot carry.
        this.owner.onUnauthorized('That token cannot be right: it has characters no r1 token has.');
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.connects += 1;
        this.backoff = BACKOFF_MIN_MS;
        this.setStatus('open');
        this.owner.onOpen(this.connects);
      };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.failPending('connection lost');
        if (this.stopped) return;
        if (ev.code === 1008) {
          // Policy: the token was rotated while we were connected.
          this.owner.onUnauthorized('The daemon’s token was rotated: this one no longer works.');
          return;
        }
        if (ev.code === 1002) {
          this.owner.onStatus('down', 'incompatible');
          this.owner.onIncompatible(ev.reason || 'protocol version mismatch');
          return;
        }
        if (!opened) {
          // A refused upgrade (401) and a dead daemon look the same to a
          // WebSocket; ask /v1/rpc, which answers 401 for a bad token.
          this.probe();
        } else {
          this.scheduleRetry(ev.code === 1001 ? 'stopping' : 'lost');
        }
      };
    }

    async probe() {
      let status = 0;
      try {
        const res = await fetch('/v1/rpc', {
          method: 'POST',
          cache: 'no-store',
          credentials: 'omit',
          referrerPolicy: 'no-referrer',
          headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'daemon.hello', params: { protocol_version: PROTOCOL_VERSION, client: 'r1-console' } }),
        });
        status = res.status;
      } catch (e) {
        status = 0; // unreachable: the daemon is down or restarting
      }
      if (this.stopped) return;
      if (status === 401) {
        this.owner.onUnauthorized('The daemon refused this token. It may be from an earlier daemon start, or it was rotated.');
      } else {
        this.scheduleRetry(status === 0 ? 'unreachable' : 'refused');
      }
    }

    scheduleRetry(why) {
      const delay = Math.round(this.backoff * (0.75 + Math.random() * 0.5));
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.retryAt = Date.now() + delay;
      this.setStatus('down', why);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    retryNow() {
      if (this.ws || this.stopped) return;
      this.backoff = BACKOFF_MIN_MS;
      this.connect();
    }

    failPending(why) {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new RpcError(why, -1));
      }
      this.pending.clear();
    }

    /** Calls `method`; rejects with RpcError on an error answer, a timeout or a
     *  lost connection. */
    call(method, params, timeoutMs = CALL_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const ws = this.ws;
        if (!ws || ws.readyState !== WebSocket.OPEN) {
          reject(new RpcError('not connected to the daemon', -1));
          return;
        }
        const id = this.nextId++;
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new RpcError(`${method} timed out`, -2));
        }, timeoutMs);
        this.pending.set(id, { resolve, reject, timer });
        this.calls[method] = (this.calls[method] || 0) + 1;
        ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params: params || {} }));
      });
    }

    receive(data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        return; // not JSON: nothing we can act on
      }
      for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (m && typeof m.method === 'string') {
          this.owner.onNotify(m.method, m.params || {});
        } else if (m && m.id !== undefined && m.id !== null) {
          const p = this.pending.get(m.id);
          if (!p) continue;
          this.pending.delete(m.id);
          clearTimeout(p.timer);
          if (m.error) p.reject(new RpcError(m.error.message || 'error', m.error.code, m.error.data));
          else p.resolve(m.result);
        }
      }
    }
  }

  class RpcError extends Error {
    constructor(message, code, data) {
      super(message);
      this.code = code;
      this.data = data;
    }
  }

  // ---------------------------------------------------------------- banner

  const banner = {
    node: $('banner'),
    text: $('banner-text'),
    history: [],
    show(text, level = 'info', opts = {}) {
      this.node.dataset.level = level;
      this.text.textContent = text;
      $('banner-retry').hidden = !opts.retry;
      $('banner-reload').hidden = !opts.reload;
      this.node.hidden = false;
      this.history.push(text);
      this.kind = opts.kind || '';
    },
    hide(kind) {
      if (kind && this.kind !== kind) return;
      this.node.hidden = true;
      this.kind = '';
    },
  };

  // ----------------------------------------------------------- virtual list

  /** A scrolling container that holds only the rows in view. `count` says how
   *  many rows there are and `paint(node, index)` fills a pooled row node.
   *  The viewport height and scroll offset are cached (from ResizeObserver and
   *  scroll events), so a frame that appends rows forces at most one layout. */
  class VirtualList {
    constructor(container, rowHeight, makeRow, paint) {
      this.box = container;
      this.spacer = container.querySelector('.vspacer');
      this.rows = container.querySelector('.vrows');
      this.rowH = rowHeight;
      this.makeRow = makeRow;
      this.paint = paint;
      this.count = 0;
      this.pool = [];
      this.first = 0;
      this.top = 0;
      this.viewH = container.clientHeight;
      this.schedule = frameScheduler(() => this.render());
      container.addEventListener('scroll', () => {
        this.top = container.scrollTop;
        this.schedule();
      }, { passive: true });
      new ResizeObserver((entries) => {
        for (const e of entries) this.viewH = e.contentRect.height;
        this.top = container.scrollTop;
        this.schedule();
      }).observe(container);
    }

    setCount(n) {
      this.count = n;
      this.schedule();
    }

    totalPx(count = this.count) {
      return Math.min(count * this.rowH, MAX_SCROLL_PX);
    }

    /** First visible row (fractional) for the current scroll position. */
    firstExact() {
      const real = this.count * this.rowH;
      if (real <= MAX_SCROLL_PX) return this.top / this.rowH;
      const span = Math.max(1, this.totalPx() - this.viewH);
      const rowsSpan = Math.max(0, this.count - this.viewH / this.rowH);
      return (Math.min(this.top, span) / span) * rowsSpan;
    }

    /** Scroll offset that puts row `i` at the top. */
    offsetOf(i) {
      const real = this.count * this.rowH;
      if (real <= MAX_SCROLL_PX) return i * this.rowH;
      const span = Math.max(1, this.totalPx() - this.viewH);
      const rowsSpan = Math.max(1, this.count - this.viewH / this.rowH);
      return (i / rowsSpan) * span;
    }

    /** Whether the view shows the last row (as last rendered). */
    atEnd() {
      return this.top + this.viewH >= this.totalPx() - this.rowH;
    }

    setTop(px) {
      const max = Math.max(0, this.totalPx() - this.viewH);
      this.top = Math.max(0, Math.min(px, max));
      this.spacer.style.height = `${this.totalPx()}px`;
      this.box.scrollTop = this.top;
      this.schedule();
    }

    scrollToEnd() {
      this.setTop(Infinity);
    }

    /** Scrolls the least needed to show row `i` whole. */
    reveal(i) {
      const top = this.offsetOf(i);
      if (top < this.top) this.setTop(top);
      else if (top + this.rowH > this.top + this.viewH) this.setTop(top + this.rowH - this.viewH);
      this.schedule();
    }

    visibleCount() {
      return Math.max(1, Math.floor(this.viewH / this.rowH));
    }

    render() {
      this.spacer.style.height = `${this.totalPx()}px`;
      const exact = this.firstExact();
      const first = Math.max(0, Math.floor(exact) - OVERSCAN);
      const want = Math.min(this.count - first, Math.ceil(this.viewH / this.rowH) + 2 * OVERSCAN + 1);
      const n = Math.max(0, want);
      while (this.pool.length < n) {
        const r = this.makeRow();
        this.pool.push(r);
        this.rows.appendChild(r);
      }
      while (this.pool.length > n) this.pool.pop().remove();
      // Where row `first` sits in the scrolled content.
      const top = this.top - (exact - first) * this.rowH;
      this.rows.style.transform = `translateY(${Math.max(0, top)}px)`;
      this.first = first;
      for (let k = 0; k < n; k++) this.paint(this.pool[k], first + k);
    }
  }

  // ------------------------------------------------------------ sessions list

  /** Newest first. started_at has whole seconds, so sessions started in the
   *  same second go by name (then id), descending, which keeps numbered names
   *  newest first too and the order stable. */
  function newestFirst(a, b) {
    if (a.started_at !== b.started_at) return a.started_at < b.started_at ? 1 : -1;
    const an = a.name || '';
    const bn = b.name || '';
    if (an !== bn) return an < bn ? 1 : -1;
    return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
  }

  const sessions = {
    byId: new Map(),
    order: [], // ids shown, filtered and sorted
    activeIndex: -1, // keyboard cursor in `order`
    openId: null,
    filter: '',
    stateFilter: '',
    dirty: new Set(),
    needFullList: false,
    flushTimer: null,
    list: null,

    init() {
      const box = $('session-list');
      this.list = new VirtualList(box, LIST_ROW_H, () => this.makeRow(), (n, i) => this.paint(n, i));
      box.addEventListener('click', (ev) => {
        const row = ev.target.closest('.srow');
        if (!row) return;
        const i = Number(row.dataset.index);
        this.activeIndex = i;
        this.open(this.order[i]);
      });
      box.addEventListener('keydown', (ev) => this.key(ev));
      box.addEventListener('focus', () => {
        if (this.activeIndex < 0 && this.order.length) this.setActive(Math.max(0, this.order.indexOf(this.openId)));
      });
      $('filter').addEventListener('input', (ev) => {
        this.filter = ev.target.value.trim().toLowerCase();
        this.reorder();
      });
      $('state-filter').addEventListener('change', (ev) => {
        this.stateFilter = ev.target.value;
        this.reorder();
      });
      setInterval(() => {
        if (app.conn && app.conn.status === 'open' && !document.hidden) this.refreshAll();
        else this.list.schedule(); // relative times
      }, LIST_POLL_MS);
    },

    makeRow() {
      const row = el('div', 'srow');
      row.setAttribute('role', 'option');
      const name = el('span', 'name');
      const badge = el('span', 'state');
      const meta = el('span', 'meta');
      row.append(name, badge, meta);
      return row;
    },

    paint(row, i) {
      const id = this.order[i];
      const s = this.byId.get(id);
      if (!s) return;
      row.id = `srow-${id}`;
      row.dataset.index = String(i);
      row.dataset.sessionId = id;
      row.setAttribute('aria-selected', String(id === this.openId));
      row.setAttribute('aria-posinset', String(i + 1));
      row.setAttribute('aria-setsize', String(this.order.length));
      row.classList.toggle('active', i === this.activeIndex);
      row.children[0].textContent = s.name || id;
      row.children[0].title = id;
      stateBadge(row.children[1], s.state);
      const meta = row.children[2];
      meta.textContent = '';
      meta.append(
        el('span', 'mono', s.workdir || ''),
        ` · ${s.driver || ''} · ${plural(Number(s.record_count ?? s.last_seq ?? 0), 'record')} · ${relTime(s.last_activity || s.started_at)}`,
      );
    },

    key(ev) {
      const n = this.order.length;
      if (!n) return;
      let i = this.activeIndex < 0 ? 0 : this.activeIndex;
      const page = this.list.visibleCount();
      switch (ev.key) {
        case 'ArrowDown': i = Math.min(n - 1, i + 1); break;
        case 'ArrowUp': i = Math.max(0, i - 1); break;
        case 'PageDown': i = Math.min(n - 1, i + page); break;
        case 'PageUp': i = Math.max(0, i - page); break;
        case 'Home': i = 0; break;
        case 'End': i = n - 1; break;
        case 'Enter':
        case ' ':
          ev.preventDefault();
          this.open(this.order[i]);
          return;
        default: return;
      }
      ev.preventDefault();
      this.setActive(i);
    },

    setActive(i) {
      this.activeIndex = i;
      this.list.reveal(i);
      const id = this.order[i];
      // The active row is always rendered (reveal scrolled to it), so the
      // listbox can point at it for screen readers.
      requestAnimationFrame(() => {
        if (id) $('session-list').setAttribute('aria-activedescendant', `srow-${id}`);
      });
    },

    open(id) {
      if (!id) return;
      this.openId = id;
      this.list.schedule();
      view.open(id);
    },

    /** Replaces the whole set with a session.list answer. */
    replaceAll(items) {
      const seen = new Set();
      for (const s of items) {
        seen.add(s.id);
        this.byId.set(s.id, s);
      }
      for (const id of [...this.byId.keys()]) if (!seen.has(id)) this.byId.delete(id);
      this.reorder();
    },

    upsert(s) {
      this.byId.set(s.id, s);
      this.reorder();
    },

    remove(id) {
      this.byId.delete(id);
      this.reorder();
    },

    /** Applies what the open session's own records say, without a round trip. */
    patch(id, fields) {
      const s = this.byId.get(id);
      if (!s) return;
      Object.assign(s, fields);
      if (fields.state !== undefined) this.reorder();
      else this.list.schedule();
      if (id === view.id) view.renderHead();
    },

    reorder: null, // set below (scheduled per frame)

    doReorder() {
      const f = this.filter;
      const st = this.stateFilter;
      const activeId = this.order[this.activeIndex];
      const all = [...this.byId.values()].filter((s) => {
        if (st && s.state !== st) return false;
        if (!f) return true;
        return [s.id, s.name, s.workdir, s.driver, s.state].some((v) => v && String(v).toLowerCase().includes(f));
      });
      all.sort(newestFirst);
      this.order = all.map((s) => s.id);
      this.activeIndex = activeId ? this.order.indexOf(activeId) : -1;
      $('session-count').textContent = `(${this.byId.size.toLocaleString()})`;
      $('list-empty').hidden = this.byId.size > 0;
      this.list.setCount(this.order.length);
      if (view.id) view.renderHead();
    },

    /** Refresh a session soon (after an action on it), batched with others. */
    touch(id) {
      if (id) this.dirty.add(id);
      else this.needFullList = true;
      if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), 150);
    },

    async flush() {
      this.flushTimer = null;
      const ids = [...this.dirty];
      this.dirty.clear();
      const full = this.needFullList || ids.length > GET_BATCH_MAX;
      this.needFullList = false;
      if (full) {
        await this.refreshAll();
        return;
      }
      await Promise.all(ids.map(async (id) => {
        try {
          const s = await app.conn.call('session.get', { session_id: id });
          this.upsert(s);
        } catch (e) {
          if (e.code === -32001) this.remove(id); // not found: deleted
        }
      }));
    },

    async refreshAll() {
      try {
        const r = await app.conn.call('session.list', {});
        this.replaceAll(r.sessions || []);
      } catch (e) {
        // Reconnection refreshes again; nothing to do here.
      }
    },

    /** Bus events carry enough to update the list at once with no call; a
     *  session.list a little later (one per burst) brings the exact figures. */
    onBusEvent(p) {
      const d = p.data || {};
      const id = d.session_id;
      switch (p.kind) {
        case 'session.created':
          if (id && !this.byId.has(id)) {
            this.upsert({ id, name: d.name ?? null, workdir: d.workdir, driver: d.driver, state: 'running', started_at: String(p.at || '').replace(/\.\d+Z$/, 'Z'), last_seq: 1, record_count: 1, last_activity: p.at });
          }
          this.reconcileSoon();
          break;
        case 'session.ended':
          if (id) this.patch(id, { state: 'ended', last_activity: p.at });
          this.reconcileSoon();
          break;
        case 'session.deleted':
          if (id) this.remove(id);
          if (id && id === view.id) view.status('This session was deleted.', 'error');
          break;
        case 'daemon.reloaded':
          this.reconcileSoon();
          break;
        default:
          break;
      }
    },

    /** One session.list after a burst of bus events: 300 ms after the last
     *  one, but at least every 2 s while they keep coming. */
    reconcileSoon() {
      const now = Date.now();
      if (!this.burstStart) this.burstStart = now;
      clearTimeout(this.reconcileTimer);
      const wait = Math.max(0, Math.min(300, this.burstStart + 2000 - now));
      this.reconcileTimer = setTimeout(() => {
        this.burstStart = 0;
        this.refreshAll();
      }, wait);
    },
  };
  sessions.reorder = frameScheduler(() => sessions.doReorder());

  // ------------------------------------------------------------- session view

  /** How each record kind looks: a CSS class and a glyph, so kinds differ by
   *  more than colour. */
  const CLS = ['k-out', 'k-err', 'k-in', 'k-tool', 'k-ok', 'k-fail', 'k-sys', 'k-other'];
  const K = { out: 0, err: 1, in: 2, tool: 3, ok: 4, fail: 5, sys: 6, other: 7 };

  /** The records of the open session, as display rows in parallel arrays (no
   *  object per record: a session can hold hundreds of thousands). */
  const store = {
    reset() {
      this.seqs = []; // seq of each record, ascending
      this.recRow = []; // row where each record's text starts
      this.recCut = []; // length of that row before the record joined it, or -1
      this.rowSeq = []; // seq shown in the gutter (0 = continuation row)
      this.rowCls = []; // index into CLS
      this.rowText = [];
      this.rowAt = [];
      this.open = null; // {stream, lane}: the last row is an unterminated delta line
      this.lastSeq = 0;
      this.epoch = null;
      this.gaps = 0;
      this.dups = 0;
    },

    addRow(seq, cls, text, at) {
      this.rowSeq.push(seq);
      this.rowCls.push(cls);
      this.rowText.push(text);
      this.rowAt.push(at);
    },

    /** Adds one record; false when it is a duplicate (seq already seen). */
    add(rec) {
      const seq = rec.seq;
      if (!(seq > this.lastSeq)) {
        this.dups += 1;
        return false;
      }
      if (this.lastSeq && seq !== this.lastSeq + 1) this.gaps += 1;
      this.seqs.push(seq);
      this.lastSeq = seq;
      const start = this.rowText.length;
      this.recRow.push(start);
      this.recCut.push(-1);
      const d = rec.data || {};
      const at = rec.at || '';
      if (rec.kind === 'session.delta') {
        this.addDelta(seq, d, at);
        return true;
      }
      this.open = null;
      const [cls, text] = describe(rec.kind, d);
      this.addRow(seq, cls, text, at);
      return true;
    },

    /** Output chunks are not line-aligned: a chunk continues the previous row
     *  while that row is the same stream's unterminated line. */
    addDelta(seq, d, at) {
      const stream = d.stream === 'stderr' ? 'stderr' : 'stdout';
      const cls = stream === 'stderr' ? K.err : K.out;
      const parts = String(d.text ?? '').split('\n');
      const endsWithNewline = parts.length > 1 && parts[parts.length - 1] === '';
      if (endsWithNewline) parts.pop();
      let i = 0;
      const last = this.rowText.length - 1;
      if (this.open && this.open.stream === stream && this.open.lane === d.lane_id && last >= 0 && parts.length) {
        const k = this.recRow.length - 1;
        this.recRow[k] = last;
        this.recCut[k] = this.rowText[last].length;
        this.rowText[last] += parts[0];
        i = 1;
      }
      // The gutter shows the seq on the record's first row of its own.
      for (; i < parts.length; i++) this.addRow(i === 0 ? seq : 0, cls, parts[i], at);
      this.open = endsWithNewline || !parts.length ? null : { stream, lane: d.lane_id };
    },

    /** Drops every record after `seq` (a journal repair cut them). */
    truncate(seq) {
      let k = this.seqs.length;
      while (k > 0 && this.seqs[k - 1] > seq) k--;
      if (k === this.seqs.length) return;
      const row = this.recRow[k];
      const cut = this.recCut[k];
      const rows = cut >= 0 ? row + 1 : row;
      this.rowSeq.length = rows;
      this.rowCls.length = rows;
      this.rowText.length = rows;
      this.rowAt.length = rows;
      if (cut >= 0) this.rowText[row] = this.rowText[row].slice(0, cut);
      this.seqs.length = k;
      this.recRow.length = k;
      this.recCut.length = k;
      this.lastSeq = k ? this.seqs[k - 1] : 0;
      this.open = null;
    },
  };

  /** [class, text] of a non-output record. */
  function describe(kind, d) {
    switch (kind) {
      case 'user.input':
        return [K.in, `❯ ${d.text ?? ''}`];
      case 'tool.start': {
        const cmd = d.args && typeof d.args.cmd === 'string' ? d.args.cmd : JSON.stringify(d.args ?? {});
        return [K.tool, `▶ ${d.tool ?? 'tool'}: ${cmd}`];
      }
      case 'tool.end': {
        const dur = fmtDuration(d.duration_ms);
        if (d.interrupted) return [K.fail, `■ interrupted${d.exit_code != null ? ` · exit ${d.exit_code}` : ''}${dur ? ` · ${dur}` : ''}`];
        let how = d.exit_code != null ? `exit ${d.exit_code}` : d.signal != null ? `killed by signal ${d.signal}` : d.ok ? 'done' : 'failed';
        if (d.exit_code != null && d.signal != null) how += ` (signal ${d.signal})`;
        return [d.ok ? K.ok : K.fail, `${d.ok ? '✓' : '✗'} ${how}${dur ? ` · ${dur}` : ''}`];
      }
      case 'session.created':
        return [K.sys, `● session created · ${d.driver ?? ''} · ${d.workdir ?? ''}`];
      case 'session.paused':
        return [K.sys, `‖ paused${d.by ? ` by ${d.by}` : ''}${d.error ? `: ${d.error}` : ''}`];
      case 'session.resumed':
        return [K.sys, '▷ resumed'];
      case 'session.reattached':
        return [K.sys, '↻ reattached after a daemon restart'];
      case 'session.ended':
        return [d.reason === 'ok' ? K.sys : K.fail, `■ session ended (${d.reason ?? 'unknown'})${d.detail ? `: ${d.detail}` : ''}${d.exit_code != null ? ` · exit ${d.exit_code}` : ''}`];
      case 'journal.repaired':
        return [K.fail, `⚠ journal repaired after a crash: ${d.dropped_lines ?? '?'} torn line(s) dropped, records after seq ${d.last_good_seq ?? '?'} were cut`];
      case 'driver.invalid':
        return [K.fail, `⚠ the driver wrote a reserved kind: ${d.line ?? ''}`];
      default:
        return [K.other, `${kind} ${JSON.stringify(d)}`];
    }
  }

  const view = {
    id: null,
    sub: null,
    gen: 0, // bumps on each open: answers for an older open are ignored
    following: false,
    list: null,
    cancelArmed: null,
    pendingRows: 0,
    pendingFields: {}, // list fields the live records changed, applied per frame
    pendingToolEnd: null,

    init() {
      this.list = new VirtualList($('log'), LOG_ROW_H, () => this.makeRow(), (n, i) => this.paint(n, i));
      this.list.box.addEventListener('scroll', () => {
        if (this.list.atEnd()) {
          this.pendingRows = 0;
          $('jump').hidden = true;
        }
      }, { passive: true });
      $('jump').addEventListener('click', () => {
        this.list.scrollToEnd();
        $('jump').hidden = true;
        this.pendingRows = 0;
        $('log').focus();
      });
      $('send-form').addEventListener('submit', (ev) => {
        ev.preventDefault();
        this.send();
      });
      $('act-pause').addEventListener('click', () => this.act('session.pause', 'Paused.'));
      $('act-resume').addEventListener('click', () => this.act('session.resume', 'Resumed.'));
      $('act-reattach').addEventListener('click', () => this.act('session.resume', 'Resumed after the restart.'));
      $('act-cancel').addEventListener('click', () => this.cancel());
      this.flushRows = frameScheduler(() => this.afterAppend());
      store.reset();
    },

    makeRow() {
      const row = el('div', 'lrow');
      row.append(el('span', 'seq'), el('span', 'mark'), el('span', 'txt'));
      return row;
    },

    paint(row, i) {
      const seq = store.rowSeq[i];
      const cls = store.rowCls[i];
      row.className = `lrow ${CLS[cls]}`;
      row.dataset.seq = seq ? String(seq) : '';
      row.children[0].textContent = seq ? String(seq) : '';
      row.children[1].textContent = cls === K.err ? '!' : '';
      row.children[1].title = cls === K.err ? 'stderr' : '';
      let t = store.rowText[i];
      if (t.length > MAX_ROW_CHARS) t = `${t.slice(0, MAX_ROW_CHARS)} … (${(t.length - MAX_ROW_CHARS).toLocaleString()} more characters)`;
      row.children[2].textContent = t;
      row.title = store.rowAt[i] || '';
    },

    async open(id) {
      const old = this.sub;
      this.id = id;
      this.sub = null;
      this.gen += 1;
      this.cancelArmed = null;
      store.reset();
      this.pendingRows = 0;
      this.pendingFields = {};
      this.pendingToolEnd = null;
      $('jump').hidden = true;
      $('view-empty').hidden = true;
      $('view').hidden = false;
      this.status('');
      this.renderHead();
      this.list.setCount(0);
      this.list.setTop(0);
      if (old !== null && app.conn) app.conn.call('session.unsubscribe', { sub: old }).catch(() => {});
      await this.follow();
      $('send-input').focus();
    },

    /** Brings the view up to date and keeps it there: reads what it lacks in
     *  journal.read pages (one message per few thousand records, far cheaper
     *  than one notification each when replaying a long session), then
     *  subscribes from the last seq seen, with its epoch, so the daemon sends
     *  everything after it exactly once: no gap, no duplicate. Used on open
     *  (from seq 0) and after every reconnection. A damaged journal cannot be
     *  subscribed to; the records before the damage stay readable. */
    async follow() {
      const gen = this.gen;
      const id = this.id;
      if (!id || !app.conn || app.conn.status !== 'open') return;
      this.following = true;
      try {
        for (;;) {
          const params = { session_id: id, since_seq: store.lastSeq, limit: READ_PAGE };
          if (store.epoch !== null) params.epoch = store.epoch;
          const r = await app.conn.call('journal.read', params);
          if (gen !== this.gen) return;
          if (r.reset) this.applyReset(r.reset);
          store.epoch = r.epoch;
          for (const rec of r.records || []) store.add(rec);
          this.flushRows();
          if (r.damage) {
            this.status(`This session's journal is damaged: it is read-only and shows the records before the damage. ${r.damage}`, 'error');
            return;
          }
          if (!r.more) break;
        }
        const p = { session_id: id, since_seq: store.lastSeq };
        if (store.epoch !== null) p.epoch = store.epoch;
        const s = await app.conn.call('session.subscribe', p);
        if (gen !== this.gen) {
          app.conn.call('session.unsubscribe', { sub: s.sub }).catch(() => {});
          return;
        }
        if (s.reset) this.applyReset(s.reset);
        store.epoch = s.epoch;
        this.sub = s.sub;
      } catch (e) {
        if (gen === this.gen && e.code !== -1) this.status(`Cannot follow this session: ${e.message}`, 'error');
      } finally {
        if (gen === this.gen) this.following = false;
      }
    },

    applyReset(reset) {
      store.truncate(reset.last_good_seq);
      store.epoch = reset.epoch;
      this.status(`The journal was repaired after a crash: records after seq ${reset.last_good_seq} were replaced; the view was rewound there.`, 'error');
      this.list.setCount(store.rowText.length);
    },

    /** One record of the live stream. Only the store is touched here; the
     *  list row, the header and the rows are updated once per frame, however
     *  many records arrived in it. */
    onEvent(p) {
      if (p.sub !== this.sub || p.sub === null) return;
      if (!store.add(p)) return;
      const f = this.pendingFields;
      f.last_seq = p.seq;
      f.record_count = p.seq;
      f.last_activity = p.at;
      switch (p.kind) {
        case 'session.paused': f.state = 'paused'; break;
        case 'session.resumed': f.state = 'running'; break;
        case 'session.ended': f.state = 'ended'; break;
        case 'session.reattached': f.state = 'paused-reattachable'; break;
        case 'tool.end': this.pendingToolEnd = p.data || {}; break;
        default: break;
      }
      this.flushRows();
    },

    /** Tells screen readers when a command finishes (the output itself is not
     *  announced: it would drown everything else). */
    announce(d) {
      const [, text] = describe('tool.end', d);
      this.status(`Command finished: ${text.slice(2)}`);
    },

    afterAppend() {
      if (this.pendingFields.last_seq !== undefined) {
        const f = this.pendingFields;
        this.pendingFields = {};
        sessions.patch(this.id, f);
      }
      if (this.pendingToolEnd) {
        this.announce(this.pendingToolEnd);
        this.pendingToolEnd = null;
      }
      const before = this.list.count;
      const pinned = before === 0 || this.list.atEnd();
      this.list.count = store.rowText.length;
      if (pinned) {
        this.list.scrollToEnd();
      } else {
        this.pendingRows += Math.max(0, store.rowText.length - before);
        $('jump').hidden = this.pendingRows === 0;
        this.list.schedule();
      }
      $('view-records').textContent = store.lastSeq.toLocaleString();
    },

    renderHead() {
      const s = sessions.byId.get(this.id) || { id: this.id };
      $('view-title').textContent = s.name ? `${s.name} (${s.id})` : s.id;
      stateBadge($('view-state'), s.state);
      $('view-workdir').textContent = s.workdir || '';
      $('view-driver').textContent = s.driver || '';
      $('view-records').textContent = Math.max(store.lastSeq, Number(s.record_count || 0)).toLocaleString();
      const st = s.state;
      const live = app.conn && app.conn.status === 'open';
      $('act-pause').hidden = st !== 'running';
      $('act-resume').hidden = st !== 'paused';
      $('act-reattach').hidden = st !== 'paused-reattachable';
      $('act-cancel').hidden = !(st === 'running' || st === 'paused' || st === 'paused-reattachable');
      for (const b of ['act-pause', 'act-resume', 'act-reattach', 'act-cancel', 'send-btn']) $(b).disabled = !live;
      const canSend = st === 'running' || st === 'paused';
      $('send-input').disabled = !canSend;
      $('send-btn').disabled = !live || !canSend;
      $('send-input').placeholder = canSend
        ? 'A command, e.g. ls -la'
        : st === 'paused-reattachable'
          ? 'Resume after restart to send input'
          : 'This session no longer takes input';
    },

    async send() {
      const input = $('send-input');
      const text = input.value;
      if (!text.trim() || !this.id) return;
      try {
        const r = await app.conn.call('session.send', { session_id: this.id, text });
        input.value = '';
        this.status(`Sent (seq ${r.seq}).`);
      } catch (e) {
        this.status(`Not sent: ${e.message}`, 'error');
      }
    },

    async act(method, done) {
      const id = this.id;
      try {
        await app.conn.call(method, { session_id: id });
        this.status(done);
      } catch (e) {
        this.status(`${method} failed: ${e.message}`, 'error');
      }
      sessions.touch(id);
    },

    /** Cancelling ends the session for good, so it takes a second press. */
    cancel() {
      const b = $('act-cancel');
      if (this.cancelArmed !== this.id) {
        this.cancelArmed = this.id;
        b.textContent = 'Press again to end the session';
        b.classList.add('confirm');
        setTimeout(() => {
          this.cancelArmed = null;
          b.textContent = 'Cancel session';
          b.classList.remove('confirm');
        }, 4000);
        return;
      }
      this.cancelArmed = null;
      b.textContent = 'Cancel session';
      b.classList.remove('confirm');
      this.act('session.cancel', 'Cancelled.');
    },

    status(text, level = '') {
      const s = $('view-status');
      s.textContent = text;
      s.dataset.level = level;
    },
  };

  // ------------------------------------------------------------- the app

  const app = {
    conn: null,
    instanceId: null,
    version: null,
    reloaded: null, // data of a `$/daemon daemon.reloaded` on this connection
    restarts: 0,
    busSub: null,

    start(token) {
      $('signin').hidden = true;
      $('app').hidden = false;
      $('signout').hidden = false;
      this.conn = new Connection(token, this);
      this.conn.start();
    },

    signIn(message) {
      if (this.conn) this.conn.stop();
      this.conn = null;
      sessionStorage.removeItem(TOKEN_KEY);
      banner.hide();
      $('app').hidden = true;
      $('signout').hidden = true;
      $('signin').hidden = false;
      $('signin-msg').textContent = message || '';
      this.onStatus('signedout');
      $('signin-token').focus();
    },

    async onOpen(n) {
      this.busSub = null;
      try {
        const hello = await this.conn.call('daemon.hello', { protocol_version: PROTOCOL_VERSION, client: 'r1-console' });
        const restarted = this.instanceId !== null && hello.instance_id !== this.instanceId;
        this.instanceId = hello.instance_id;
        this.version = hello.version;
        if (restarted) {
          this.restarts += 1;
          const re = this.reloaded;
          const n2 = re && typeof re.sessions === 'number' ? re.sessions : 0;
          banner.show(
            `The daemon restarted (r1 ${hello.version}). Reconnected; the stream continues where it left off.` +
              (n2 ? ` ${n2} unfinished session${n2 === 1 ? ' was' : 's were'} reattached: use “Resume after restart” to run ${n2 === 1 ? 'it' : 'them'} again.` : ''),
            'warn',
            { kind: 'restart' },
          );
        } else if (n > 1) {
          banner.hide('conn');
        }
        const sub = await this.conn.call('daemon.subscribe', {});
        this.busSub = sub.sub;
        await sessions.refreshAll();
        if (view.id) {
          view.sub = null;
          await view.follow();
        }
        view.renderHead();
      } catch (e) {
        // The connection dropped mid-setup; the next onOpen starts over.
      } finally {
        this.reloaded = null;
      }
    },

    onNotify(method, p) {
      if (method === '$/event') {
        if (p.sub === this.busSub) sessions.onBusEvent(p);
        else view.onEvent(p);
      } else if (method === '$/daemon') {
        if (p.kind === 'daemon.reloaded') {
          this.reloaded = p.data || {};
        } else if (p.kind === 'daemon.stopping') {
          banner.show('The daemon is stopping. The console reconnects when it is back.', 'warn', { kind: 'conn' });
        }
      }
    },

    onStatus(status, detail) {
      const c = $('conn');
      c.dataset.status = status;
      const text = {
        open: 'Connected',
        connecting: 'Connecting…',
        down: detail === 'incompatible' ? 'Incompatible daemon' : 'Disconnected, retrying…',
        unauthorized: 'Token refused',
        signedout: 'Signed out',
      }[status] || status;
      $('conn-text').textContent = text;
      if (status === 'down' && detail !== 'incompatible') {
        const secs = Math.max(1, Math.round((this.conn.retryAt - Date.now()) / 1000));
        const why = detail === 'stopping' ? 'The daemon stopped.' : detail === 'unreachable' ? 'The daemon is not reachable.' : 'The connection to the daemon was lost.';
        if (banner.kind !== 'restart' || banner.node.hidden) {
          banner.show(`${why} Reconnecting in ${secs} s…`, 'warn', { kind: 'conn', retry: true });
        }
      }
      if (view.id) view.renderHead();
    },

    onUnauthorized(reason) {
      this.signIn(`${reason} Run “r1 ctl open” for a fresh link, or paste the current token from daemon.json.`);
      this.onStatus('unauthorized');
    },

    onIncompatible(reason) {
      banner.show(`This page does not match the running daemon (${reason}). Reload the page.`, 'error', { reload: true });
    },
  };

  // ----------------------------------------------------------------- boot

  function boot() {
    sessions.init();
    view.init();
    $('banner-dismiss').addEventListener('click', () => banner.hide());
    $('banner-retry').addEventListener('click', () => app.conn && app.conn.retryNow());
    $('banner-reload').addEventListener('click', () => location.reload());
    $('signout').addEventListener('click', () => app.signIn('Signed out. The token was removed from this tab.'));
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('signin-token');
      const token = tokenFromInput(input.value);
      input.value = '';
      if (!TOKEN_RE.test(token)) {
        $('signin-msg').textContent = 'That is not an r1 token: a token is 32 to 512 letters, digits or . _ ~ - (64 hex digits unless the daemon was given one).';
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      app.start(token);
    });
    $('start-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const input = $('start-workdir');
      try {
        const r = await app.conn.call('session.start', { workdir: input.value.trim() });
        input.value = '';
        sessions.upsert({ id: r.session_id, name: r.name, workdir: r.workdir, driver: r.driver, state: r.state, started_at: r.started_at, last_seq: 1, record_count: 1, epoch: r.epoch });
        sessions.open(r.session_id);
      } catch (e) {
        view.status(`Cannot start a session: ${e.message}`, 'error');
        banner.show(`Cannot start a session: ${e.message}`, 'error');
      }
    });
    // The fragment can change without a reload (a second `r1 ctl open` link).
    window.addEventListener('hashchange', () => {
      const t = takeToken();
      if (t && (!app.conn || app.conn.token !== t)) {
        if (app.conn) app.conn.stop();
        app.start(t);
      }
    });

    const token = takeToken();
    if (token) app.start(token);
    else app.signIn('');
  }

  // A read-only view for tests and for curious users in the devtools console.
  // It never exposes the token.
  Object.defineProperty(window, '__r1state', {
    value: Object.freeze({
      get status() { return app.conn ? app.conn.status : 'signedout'; },
      get instanceId() { return app.instanceId; },
      get restarts() { return app.restarts; },
      get connects() { return app.conn ? app.conn.connects : 0; },
      get calls() { return app.conn ? { ...app.conn.calls } : {}; },
      get banner() { return banner.node.hidden ? '' : banner.text.textContent; },
      get banners() { return banner.history.slice(); },
      get sessionCount() { return sessions.byId.size; },
      get listRowsInDom() { return document.querySelectorAll('#session-list .srow').length; },
      get viewId() { return view.id; },
      get sub() { return view.sub; },
      get following() { return view.following; },
      get epoch() { return store.epoch; },
      get lastSeq() { return store.lastSeq; },
      get recordCount() { return store.seqs.length; },
      get rowCount() { return store.rowText.length; },
      get logRowsInDom() { return document.querySelectorAll('#log .lrow').length; },
      get gaps() { return store.gaps; },
      get dups() { return store.dups; },
      seqs() { return store.seqs.slice(); },
    }),
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
