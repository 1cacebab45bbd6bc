// @ts-check
/**
 * Love Rank Pulse browser client: one object that keeps a live, resumable
 * subscription to the service's rooms over Server-Sent Events, long-polling
 * or WebSocket (PROTOCOL.md section 3), and hands the app every event once,
 * in order.
 *
 * ```js
 * import { PulseClient } from '/static/pulse.js';
 * const client = new PulseClient({
 *   rooms: ['leaderboard:global', 'matches'],
 *   token: async () => fetchFreshToken(),   // or a plain string, or null
 * });
 * client.on('leaderboard:update', (data, envelope) => render(data));
 * client.on('reset', ({ reason, resume }) => { if (!resume) dropLocalState(); });
 * client.on('state', ({ state, transport }) => showIndicator(state, transport));
 * client.connect();
 * ```
 *
 * Delivery rules (why the code looks the way it does):
 * - Cursors are opaque. The client never parses or orders them; it keeps the
 *   `id` of the last event it delivered and hands it back on every resume,
 *   whatever the transport, so a drop or a transport switch loses nothing.
 * - The server promises "no duplicate across a resume". As a defence the
 *   client still drops a log event whose `id` it has just delivered (it keeps a
 *   small window of recent ids) and counts it in `stats.duplicates`.
 * - `stream:open`, `stream:reset`, `leaderboard:initial` and `leaderboard:window` are not log events:
 *   their `id` is the position they reflect (often equal to the last delivered
 *   id), so they are never de-duplicated. Their ids do not move the cursor past
 *   events still to come: `stream:open` gives the stream's start in
 *   `data.cursor`, and a snapshot's id is only taken by a client with no cursor.
 * - The client controls reconnection itself (exponential backoff with jitter):
 *   an `EventSource` is closed on its first error instead of letting the
 *   browser retry, and a new one is opened with `last_event_id=<cursor>`.
 *
 * @module pulse
 */

import { RowVersions } from './row_versions.js';

/**
 * Every event name of PROTOCOL.md section 2, plus the stream meta events.
 * SSE delivers named events only to listeners registered for that name, so
 * the client registers all of these (and any name the app asks for with `on`).
 */
export const EVENT_NAMES = Object.freeze([
  'stream:open',
  'stream:reset',
  'leaderboard:initial',
  'leaderboard:update',
  'leaderboard:window',
  'leaderboard:player_rank',
  'match:created',
  'match:started',
  'match:progress',
  'match:result',
  'match:cancelled',
  'player:online',
  'player:offline',
  'player:stats_update',
  'announcement',
]);

/** Events that are not in the server's log: never de-duplicated, never filtered by room. */
const SNAPSHOT_EVENTS = new Set(['stream:open', 'stream:reset', 'leaderboard:initial', 'leaderboard:window']);

/** Names the client emits itself (not envelopes). */
const CLIENT_EVENTS = new Set(['state', 'reset', 'error', '*']);

/** How many recently delivered ids are remembered for the duplicate check. */
const RECENT_IDS = 512;

/**
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} PulseState
 * @typedef {'sse'|'poll'|'websocket'} PulseTransport
 * @typedef {'auto'|PulseTransport} PulseTransportChoice
 */

/**
 * The envelope every event travels in (PROTOCOL.md section 2).
 * @typedef {Object} Envelope
 * @property {string} id      opaque cursor: the log position just after this event
 * @property {string[]} rooms rooms the event was published to
 * @property {string} event   event name
 * @property {any} data       event payload
 * @property {number} ts      server publication time, ms since the epoch
 */

/**
 * A token source: a string, `null` for anonymous, or a function returning one
 * (possibly async). The function is called before every connection attempt and
 * every HTTP request; it receives `{forceRefresh: true}` after the server
 * rejected the previous token, and should then return a fresh one.
 * @typedef {string|null|((opts: {forceRefresh: boolean}) => (string|null|Promise<string|null>))} TokenSource
 */

/**
 * @typedef {Object} PulseOptions
 * @property {string[]} [rooms]             rooms to subscribe to (PROTOCOL.md section 1)
 * @property {TokenSource} [token]          the bearer token, or how to get one
 * @property {PulseTransportChoice} [transport='auto']
 *   `auto`: SSE first, long-polling when SSE fails or is buffered; or force one.
 * @property {string} [baseUrl]             service origin; default: the page's origin
 * @property {string|null} [cursor]         resume from this cursor instead of the live head
 * @property {number} [top]                 entries of `leaderboard:initial` (server default 100)
 * @property {number} [sseOpenTimeout=4000] ms to wait for `stream:open` before deciding SSE is buffered
 * @property {number} [pollTimeout=25]      seconds the server may hold a long-poll
 * @property {number} [backoffInitial=500]  first reconnect delay ceiling, ms
 * @property {number} [backoffMax=30000]    largest reconnect delay ceiling, ms
 * @property {number} [drainJitterMax=3000] a WebSocket closed by a draining instance (1012)
 *                                          resumes after a random delay up to this, ms
 * @property {number} [sseRetryAfter=300000] ms on long-poll (after SSE failed in `auto`) before trying SSE again
 * @property {number} [wsPingInterval=25000] ms between WebSocket pings
 */

/**
 * @typedef {Object} PulseError
 * @property {number|null} status  HTTP status (or WS close code) when known
 * @property {string} title        short description
 * @property {string} [detail]
 * @property {boolean} fatal       true when the client gave up (state becomes `closed`)
 * @property {PulseTransport} transport
 */

/** A problem+json error answered by the service. */
export class PulseHttpError extends Error {
  /**
   * @param {number} status
   * @param {any} problem the parsed `application/problem+json` body, if any
   * @param {number|null} [retryAfter] the `Retry-After` header, in ms
   */
  constructor(status, problem, retryAfter = null) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.name = 'PulseHttpError';
    /** @type {number} */
    this.status = status;
    /** @type {any} */
    this.problem = problem;
    /** @type {number|null} */
    this.retryAfter = retryAfter;
  }
}

/**
 * Live subscription to Love Rank Pulse rooms.
 *
 * Client-level events (besides every envelope event name):
 * - `state`: `{state, transport, previousState, previousTransport}` when either changes;
 * - `reset`: `{reason, resume, envelope}` on `stream:reset`. `resume: false`
 *   (`expired`/`unknown`): drop local state, a fresh `leaderboard:initial`
 *   follows; `resume: true` (`slow`): the client resumes from its cursor, local
 *   state stays valid;
 * - `error`: a {@link PulseError};
 * - `*`: every delivered envelope, `(envelope)`.
 */
export class PulseClient {
  /** @param {PulseOptions} [options] */
  constructor(options = {}) {
    /** @private */
    this._opts = {
      transport: /** @type {PulseTransportChoice} */ (options.transport || 'auto'),
      baseUrl: options.baseUrl || globalThis.location?.origin || '',
      top: options.top ?? null,
      sseOpenTimeout: options.sseOpenTimeout ?? 4000,
      pollTimeout: options.pollTimeout ?? 25,
      backoffInitial: options.backoffInitial ?? 500,
      backoffMax: options.backoffMax ?? 30000,
      drainJitterMax: options.drainJitterMax ?? 3000,
      sseRetryAfter: options.sseRetryAfter ?? 300000,
      wsPingInterval: options.wsPingInterval ?? 25000,
    };
    if (!['auto', 'sse', 'poll', 'websocket'].includes(this._opts.transport)) {
      throw new TypeError(`unknown transport ${this._opts.transport}`);
    }
    /** @private @type {TokenSource} */
    this._tokenSource = options.token ?? null;
    /** @private @type {Set<string>} */
    this._rooms = new Set(normalizeRooms(options.rooms || []));
    /** @private @type {string|null} */
    this._cursor = options.cursor ?? null;
    /** @private @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @private @type {Set<string>} event names registered on EventSources */
    this._names = new Set(EVENT_NAMES);
    /** @private @type {string[]} FIFO of recently delivered log ids */
    this._recentIds = [];
    /** @private @type {Set<string>} */
    this._recentSet = new Set();
    /** Per player, the highest change-row version handed to the app (row_versions.js). */
    this._versions = new RowVersions();

    /** @private @type {PulseState} */
    this._state = 'closed';
    /** @private @type {PulseTransport} */
    this._transport = this._opts.transport === 'auto' ? 'sse' : this._opts.transport;
    /** @private generation of the current attempt; stale callbacks compare against it */
    this._gen = 0;
    /** @private */
    this._everOpen = false;
    /** @private consecutive failed attempts, drives the backoff */
    this._attempt = 0;
    /** @private @type {ReturnType<typeof setTimeout>|null} */
    this._reconnectTimer = null;
    /** @private @type {(() => void)|null} runs the pending reconnect at once */
    this._reconnectNow = null;
    /** @private @type {(() => void)|null} tears down the live transport */
    this._cleanup = null;
    /** @private @type {string|null} */
    this._connectionId = null;
    /** @private SSE failures before `stream:open` in a row */
    this._sseFailures = 0;
    /** @private SSE found unusable (auto mode): stay on long-poll for a while */
    this._sseBroken = false;
    /** @private */
    this._sseRetryAt = 0;
    /** @private long-poll is standing in for SSE after SSE errors (not a timeout) */
    this._pollStandIn = false;
    /** @private SSE got its one early re-try after long-poll took over */
    this._sseReprobed = false;
    /** @private @type {AbortController|null} */
    this._pollAbort = null;
    /** @private @type {WebSocket|null} */
    this._ws = null;
    /** @private @type {{resolve: Function, reject: Function, timer: any}[]} WS subscribes awaiting an answer */
    this._wsPending = [];
    /** @private */
    this._onOnline = () => this._reconnectNow?.();
    /** @private @type {ReturnType<typeof setTimeout>|undefined} */
    this._healthTimer = undefined;
    /** @private next reconnect without the backoff (after a "slow" verdict) */
    this._resumeQuickly = false;
    /** @private @type {((name: string) => void)|null} adds a listener for a new event name to the live EventSource */
    this._onNewName = null;

    /**
     * Counters for diagnostics and tests.
     * @type {{delivered: number, duplicates: number, reconnects: number, resets: number, fallbacks: number}}
     */
    this.stats = { delivered: 0, duplicates: 0, reconnects: 0, resets: 0, fallbacks: 0 };
  }

  // ------------------------------------------------------------------ public API

  /** @returns {PulseState} the connection state */
  get state() {
    return this._state;
  }

  /** @returns {PulseTransport} the transport in use (or being tried) */
  get transport() {
    return this._transport;
  }

  /** @returns {string|null} the cursor the client would resume from */
  get cursor() {
    return this._cursor;
  }

  /** @returns {string[]} the rooms the client is (or will be) subscribed to */
  get rooms() {
    return [...this._rooms];
  }

  /** @returns {string|null} the SSE `connection_id` from `stream:open` */
  get connectionId() {
    return this._connectionId;
  }

  /**
   * Listen to an event: an envelope event name (`leaderboard:update`, ...),
   * or `state`, `reset`, `error`, `*`.
   * Envelope listeners are called as `fn(data, envelope)`.
   * @param {string} name
   * @param {Function} fn
   * @returns {() => void} a function that removes the listener
   */
  on(name, fn) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(fn);
    if (!CLIENT_EVENTS.has(name) && !this._names.has(name)) {
      // A name we did not know: SSE only dispatches named events to named listeners.
      this._names.add(name);
      this._onNewName?.(name);
    }
    return () => this.off(name, fn);
  }

  /**
   * Remove a listener added with {@link PulseClient#on}.
   * @param {string} name
   * @param {Function} fn
   */
  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  /**
   * Listen to the next occurrence of an event only.
   * @param {string} name
   * @param {Function} fn
   * @returns {() => void}
   */
  once(name, fn) {
    const off = this.on(name, (/** @type {any[]} */ ...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /** Open the subscription (no-op when already connected or connecting). */
  connect() {
    if (this._state !== 'closed') return;
    globalThis.addEventListener?.('online', this._onOnline);
    this._everOpen = false;
    this._attempt = 0;
    this._start(this._transport);
  }

  /** Close the subscription; `connect()` resumes it from the last cursor. */
  close() {
    globalThis.removeEventListener?.('online', this._onOnline);
    this._teardown();
    this._setState('closed', this._transport);
  }

  /**
   * Add rooms. On SSE this is `POST /api/subscribe` for the open stream, on
   * WebSocket a `subscribe` frame, on long-poll the next poll's `rooms`.
   * While (re)connecting the rooms are simply used by the next connection.
   * @param {string[]|string} rooms
   * @returns {Promise<string[]>} the rooms after the change
   * @throws {PulseHttpError} when the server refuses (400 unknown room, 403 private room)
   */
  async subscribe(rooms) {
    const added = normalizeRooms(rooms).filter((r) => !this._rooms.has(r));
    if (!added.length) return this.rooms;
    for (const r of added) this._rooms.add(r);
    try {
      await this._changeRooms('subscribe', added);
    } catch (err) {
      for (const r of added) this._rooms.delete(r);
      throw err;
    }
    return this.rooms;
  }

  /**
   * Remove rooms (see {@link PulseClient#subscribe}).
   * @param {string[]|string} rooms
   * @returns {Promise<string[]>} the rooms after the change
   */
  async unsubscribe(rooms) {
    const removed = normalizeRooms(rooms).filter((r) => this._rooms.has(r));
    if (!removed.length) return this.rooms;
    for (const r of removed) this._rooms.delete(r);
    await this._changeRooms('unsubscribe', removed);
    return this.rooms;
  }

  /**
   * Change the transport on the fly; the cursor carries over.
   * @param {PulseTransportChoice} transport
   */
  setTransport(transport) {
    this._opts.transport = transport;
    this._sseBroken = false;
    this._pollStandIn = false;
    this._sseReprobed = false;
    const next = transport === 'auto' ? 'sse' : transport;
    if (this._state === 'closed') {
      this._transport = next;
      this._emitState();
      return;
    }
    this._teardown();
    this._attempt = 0;
    this._start(next);
  }

  /**
   * `fetch` against the service with the bearer token, retrying once with a
   * fresh token after a 401. Resolves to the parsed JSON body (or `null`).
   * @param {string} path
   * @param {RequestInit & {json?: any}} [init]
   * @returns {Promise<any>}
   * @throws {PulseHttpError}
   */
  async request(path, init = {}) {
    const { json, ...rest } = init;
    for (let tries = 0; ; tries++) {
      const token = await this._getToken(tries > 0);
      /** @type {Record<string, string>} */
      const headers = { Accept: 'application/json', ...(/** @type {any} */ (rest.headers) || {}) };
      if (token) headers.Authorization = `Bearer ${token}`;
      /** @type {RequestInit} */
      const req = { ...rest, headers };
      if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        req.body = JSON.stringify(json);
        req.method = rest.method || 'POST';
      }
      const res = await fetch(new URL(path, this._opts.baseUrl), req);
      if (res.status === 401 && tries === 0 && typeof this._tokenSource === 'function') continue;
      const body = await readBody(res);
      if (!res.ok) throw new PulseHttpError(res.status, body, retryAfterMs(res));
      return body;
    }
  }

  // ------------------------------------------------------------- state, events

  /**
   * @private
   * @param {PulseState} state
   * @param {PulseTransport} transport
   */
  _setState(state, transport) {
    const previousState = this._state;
    const previousTransport = this._transport;
    if (state === previousState && transport === previousTransport) return;
    this._state = state;
    this._transport = transport;
    this._emit('state', { state, transport, previousState, previousTransport });
  }

  /** @private */
  _emitState() {
    this._emit('state', {
      state: this._state,
      transport: this._transport,
      previousState: this._state,
      previousTransport: this._transport,
    });
  }

  /**
   * @private
   * @param {string} name
   * @param {...any} args
   */
  _emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // A broken listener must not break the stream (or the other listeners).
        console.error(`pulse: listener for ${name} failed`, err);
      }
    }
  }

  /**
   * @private
   * @param {Omit<PulseError, 'transport'>} error
   */
  _emitError(error) {
    this._emit('error', { ...error, transport: this._transport });
  }

  /**
   * Hand one envelope to the app, keeping the cursor and the duplicate window.
   * @private
   * @param {any} env
   * @returns {boolean} whether it was delivered
   */
  _deliver(env) {
    if (!env || typeof env !== 'object' || typeof env.event !== 'string') return false;
    const name = env.event;
    const snapshot = SNAPSHOT_EVENTS.has(name);
    const id = typeof env.id === 'string' ? env.id : null;

    if (name === 'stream:reset') {
      const reason = env.data?.reason ?? 'unknown';
      const resume = reason === 'slow';
      // After "slow" the stream ends and we resume from the last event we got:
      // taking the reset's id could skip what we never received.
      if (!resume && id !== null) this._cursor = id;
      if (!resume) this._clearRecent();
      this.stats.resets++;
      if (reason === 'slow') this._resumeQuickly = true;
      this._emitEnvelope(env);
      this._emit('reset', { reason, resume, envelope: env });
      return true;
    }

    if (!snapshot) {
      if (id !== null && this._recentSet.has(id)) {
        this.stats.duplicates++;
        return false;
      }
      // Events of rooms we left can still be in flight: skip them, but keep the cursor.
      if (Array.isArray(env.rooms) && env.rooms.length && !env.rooms.some((/** @type {string} */ r) => this._rooms.has(r))) {
        if (id !== null) this._cursor = id;
        return false;
      }
      if (id !== null) this._remember(id);
    }
    if (name === 'stream:open') {
      // Where this stream starts (the resume cursor, or the head): the backlog
      // after it is still to come, so the envelope's own id must not be taken
      // if it is ahead of that.
      this._connectionId = env.data?.connection_id ?? null;
      const start = typeof env.data?.cursor === 'string' ? env.data.cursor : id;
      if (start !== null) this._cursor = start;
    } else if (name === 'leaderboard:initial') {
      // The snapshot may reflect events still queued behind it (of other rooms
      // too): resuming from its id could skip those. Only a client without any
      // position takes it.
      if (this._cursor === null && id !== null) this._cursor = id;
    } else if (name === 'leaderboard:window') {
      // A rank window (PROTOCOL 2): its id is the position it reflects, which events
      // already delivered may be past; windows of two rooms can share it. It never
      // moves the cursor and is never de-duplicated (a resume sends fresh ones).
    } else if (id !== null) {
      this._cursor = id;
    }
    if (!snapshot) this._healthy();
    if (name === 'leaderboard:update' && Array.isArray(env.data?.changes)) {
      // An older row than one already handed over (out of commit order) is left out; the
      // event itself is still delivered, once, like every other.
      env = { ...env, data: { ...env.data, changes: this._versions.fresh(env.data.changes) } };
    }
    this._emitEnvelope(env);
    return true;
  }

  /**
   * @private
   * @param {Envelope} env
   */
  _emitEnvelope(env) {
    this.stats.delivered++;
    this._emit(env.event, env.data, env);
    this._emit('*', env);
  }

  /**
   * @private
   * @param {string} id
   */
  _remember(id) {
    this._recentIds.push(id);
    this._recentSet.add(id);
    if (this._recentIds.length > RECENT_IDS) {
      this._recentSet.delete(/** @type {string} */ (this._recentIds.shift()));
    }
  }

  /** @private */
  _clearRecent() {
    this._recentIds = [];
    this._recentSet.clear();
  }

  // --------------------------------------------------------------- lifecycle

  /**
   * Start an attempt on a transport.
   * @private
   * @param {PulseTransport} transport
   */
  _start(transport) {
    this._teardown();
    const gen = this._gen;
    this._setState(this._everOpen ? 'reconnecting' : 'connecting', transport);
    const run =
      transport === 'sse' ? this._openSse(gen) : transport === 'poll' ? this._pollLoop(gen) : this._openWs(gen);
    run.catch((err) => {
      if (gen !== this._gen) return;
      console.warn('pulse: connection attempt failed', err);
      this._retry(transport, null);
    });
  }

  /**
   * Stop whatever is running (transport and timers); stale callbacks of the
   * old attempt see a new generation and do nothing.
   * @private
   */
  _teardown() {
    this._gen++;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._reconnectNow = null;
    const cleanup = this._cleanup;
    this._cleanup = null;
    this._onNewName = null;
    this._connectionId = null;
    clearTimeout(this._healthTimer);
    for (const p of this._wsPending.splice(0)) {
      clearTimeout(p.timer);
      p.resolve();
    }
    if (cleanup) cleanup();
  }

  /**
   * The attempt became usable.
   * @private
   * @param {number} gen
   */
  _opened(gen) {
    if (gen !== this._gen) return;
    this._everOpen = true;
    if (this._transport === 'sse') {
      this._sseBroken = false;
      this._sseReprobed = false;
    }
    this._setState('open', this._transport);
    // Reset the backoff only once the connection proved itself (an event, or a
    // few quiet seconds): a server that accepts and drops at once must not be
    // hammered.
    this._healthTimer = setTimeout(() => gen === this._gen && this._healthy(), 5000);
  }

  /** @private */
  _healthy() {
    this._attempt = 0;
    this._sseFailures = 0;
  }

  /**
   * Schedule a new attempt after a drop or a failure, with exponential backoff
   * and jitter ("equal jitter": half the ceiling fixed, half random).
   * @private
   * @param {PulseTransport} transport
   * @param {number|null} delayMs an explicit delay (Retry-After), or null for the backoff
   */
  _retry(transport, delayMs) {
    this._teardown();
    const gen = this._gen;
    let delay = delayMs;
    if (delay === null) {
      const ceiling = Math.min(this._opts.backoffMax, this._opts.backoffInitial * 2 ** this._attempt);
      delay = ceiling / 2 + Math.random() * (ceiling / 2);
      if (this._resumeQuickly) delay = Math.min(delay, 250 + Math.random() * 250);
    }
    this._resumeQuickly = false;
    this._attempt = Math.min(this._attempt + 1, 30);
    this.stats.reconnects++;
    this._setState(this._everOpen ? 'reconnecting' : 'connecting', transport);
    const fire = () => {
      if (gen !== this._gen) return;
      this._start(transport);
    };
    this._reconnectTimer = setTimeout(fire, delay);
    this._reconnectNow = () => {
      if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
      fire();
    };
  }

  /**
   * Give up: the server refused in a way retrying cannot fix.
   * @private
   * @param {number|null} status
   * @param {any} problem
   */
  _fatal(status, problem) {
    this._teardown();
    this._emitError({
      status,
      title: problem?.title || `HTTP ${status}`,
      detail: problem?.detail,
      fatal: true,
    });
    globalThis.removeEventListener?.('online', this._onOnline);
    this._setState('closed', this._transport);
  }

  /**
   * @private
   * @param {boolean} [forceRefresh]
   * @returns {Promise<string|null>}
   */
  async _getToken(forceRefresh = false) {
    const src = this._tokenSource;
    if (typeof src === 'function') return (await src({ forceRefresh })) || null;
    return src || null;
  }

  /**
   * @private
   * @param {string} path
   * @param {Record<string, string|number|null|undefined>} params
   * @returns {URL}
   */
  _url(path, params) {
    const url = new URL(path, this._opts.baseUrl);
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, String(v));
    }
    return url;
  }

  // ---------------------------------------------------------------------- SSE

  /**
   * @private
   * @param {number} gen
   */
  async _openSse(gen) {
    const token = await this._getToken(this._sseFailures > 0);
    if (gen !== this._gen) return;
    const url = this._url('/api/events', {
      rooms: this.rooms.join(','),
      access_token: token,
      last_event_id: this._cursor,
      top: this._opts.top,
    });
    const es = new EventSource(url.href);
    let opened = false;
    const openTimer = setTimeout(() => {
      if (gen !== this._gen || opened) return;
      this._sseNotOpened(gen, 'timeout');
    }, this._opts.sseOpenTimeout);

    /** @param {MessageEvent} e */
    const onMessage = (e) => {
      if (gen !== this._gen) return;
      let env;
      try {
        env = JSON.parse(e.data);
      } catch {
        console.warn('pulse: undecodable SSE data', e.data);
        return;
      }
      if (!env.event) env.event = e.type;
      if (env.event === 'stream:open' && !opened) {
        opened = true;
        clearTimeout(openTimer);
        this._deliver(env);
        this._opened(gen);
        return;
      }
      this._deliver(env);
    };
    for (const name of this._names) es.addEventListener(name, /** @type {any} */ (onMessage));
    es.addEventListener('message', onMessage);
    this._onNewName = (/** @type {string} */ name) => es.addEventListener(name, /** @type {any} */ (onMessage));

    es.onerror = () => {
      if (gen !== this._gen) return;
      // Close at once: the browser's own retry would ignore our backoff.
      es.close();
      clearTimeout(openTimer);
      if (opened) this._retry('sse', null);
      else this._sseNotOpened(gen, 'error');
    };
    this._cleanup = () => {
      clearTimeout(openTimer);
      clearTimeout(this._healthTimer);
      es.close();
    };
  }

  /**
   * SSE did not reach `stream:open`: an error before it, or silence (a proxy
   * that buffers the stream). In `auto` mode this is where long-poll takes over.
   * @private
   * @param {number} gen
   * @param {'error'|'timeout'} why
   */
  _sseNotOpened(gen, why) {
    if (gen !== this._gen) return;
    this._sseFailures++;
    if (this._opts.transport === 'auto') {
      if (why === 'timeout' || this._sseBroken || this._sseFailures >= 2) {
        // Buffered or refused SSE: long-poll, and try SSE again later. After
        // errors (not a timeout) long-poll first proves the server is up at all;
        // if it is not, SSE gets the next try (see _pollLoop).
        this._sseBroken = true;
        this._pollStandIn = why === 'error';
        this._sseRetryAt = Date.now() + this._opts.sseRetryAfter;
        this.stats.fallbacks++;
        this._teardown();
        this._start('poll');
        return;
      }
      this._retry('sse', null);
      return;
    }
    if (this._sseFailures >= 3 && this._sseFailures % 3 === 0) {
      // EventSource hides the status code: ask the poll endpoint why we fail.
      this._diagnose();
    }
    this._retry('sse', null);
  }

  /**
   * Find out whether a failing stream is refused for good (400/403, or 401
   * with a fixed token) by asking the long-poll endpoint for a snapshot.
   * @private
   */
  async _diagnose() {
    try {
      const token = await this._getToken(true);
      /** @type {Record<string, string>} */
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const url = this._url('/api/poll', { rooms: this.rooms.join(','), top: 1, timeout: 1 });
      const res = await fetch(url, { headers, cache: 'no-store' });
      // Closed by the app meanwhile, or the stream came up after all.
      if (this._state === 'closed' || this._state === 'open' || res.ok) return;
      const problem = await readBody(res);
      if (isFatal(res.status, typeof this._tokenSource === 'function')) this._fatal(res.status, problem);
      else this._emitError({ status: res.status, title: problem?.title || `HTTP ${res.status}`, fatal: false });
    } catch {
      // The network is down: the backoff goes on.
    }
  }

  // ---------------------------------------------------------------- long-poll

  /**
   * @private
   * @param {number} gen
   */
  async _pollLoop(gen) {
    /** @type {AbortController|null} */
    let ctrl = null;
    this._cleanup = () => ctrl?.abort('closed');
    let succeeded = false;
    while (gen === this._gen) {
      if (this._opts.transport === 'auto' && this._sseBroken && Date.now() >= this._sseRetryAt) {
        this._start('sse'); // time to see whether SSE works again
        return;
      }
      const token = await this._getToken(false);
      if (gen !== this._gen) return;
      const url = this._url('/api/poll', {
        rooms: this.rooms.join(','),
        cursor: this._cursor,
        // The first poll of a session answers at once: it proves the server takes polls
        // (the state becomes open) instead of sitting "reconnecting" while it waits.
        timeout: succeeded ? this._opts.pollTimeout : 0,
        top: this._cursor ? null : this._opts.top,
      });
      const myCtrl = new AbortController();
      ctrl = myCtrl;
      this._pollAbort = myCtrl;
      const guard = setTimeout(() => myCtrl.abort('timeout'), (this._opts.pollTimeout + 15) * 1000);
      const sentAt = Date.now();
      const hadCursor = this._cursor !== null;
      const confirmed = succeeded; // (a full long-poll, not the first one's quick answer)
      /** @type {Response} */
      let res;
      let body;
      try {
        res = await fetch(url, {
          headers: token ? { Authorization: `Bearer ${token}`, Accept: 'application/json' } : { Accept: 'application/json' },
          cache: 'no-store',
          signal: myCtrl.signal,
        });
        body = await readBody(res);
      } catch (err) {
        clearTimeout(guard);
        if (gen !== this._gen) return;
        if (myCtrl.signal.reason === 'rooms') continue; // rooms changed: poll again at once
        if (this._pollStandIn && !succeeded) {
          // Long-poll fails as well: the server is down, not SSE. Back to SSE.
          this._sseBroken = false;
          this._pollStandIn = false;
          this._retry('sse', null);
          return;
        }
        this._retry('poll', null);
        return;
      } finally {
        clearTimeout(guard);
      }
      if (gen !== this._gen) return;
      if (myCtrl.signal.aborted && myCtrl.signal.reason === 'rooms') continue;

      if (res.ok && body && Array.isArray(body.events)) {
        if (!succeeded) {
          succeeded = true;
          this._opened(gen);
          if (this._pollStandIn && !this._sseReprobed) {
            // SSE failed but long-poll works: maybe the server just came back
            // (a restart), not a proxy that refuses streams. One more SSE try.
            this._sseReprobed = true;
            this._sseRetryAt = Date.now();
          }
        }
        for (const env of body.events) {
          this._deliver(env);
          if (gen !== this._gen) return; // a listener closed or switched us
        }
        if (typeof body.cursor === 'string') this._cursor = body.cursor;
        this._healthy();
        if (hadCursor && confirmed && !body.events.length && Date.now() - sentAt < 1000) {
          await sleep(1000); // a server that answers empty at once must not be hammered
        }
        continue;
      }
      if (res.status === 401 && typeof this._tokenSource === 'function') {
        await this._getToken(true);
        if (gen === this._gen) this._retry('poll', null);
        return;
      }
      if (isFatal(res.status, typeof this._tokenSource === 'function')) {
        this._fatal(res.status, body);
        return;
      }
      this._emitError({ status: res.status, title: body?.title || `HTTP ${res.status}`, fatal: false });
      this._retry('poll', retryAfterMs(res));
      return;
    }
  }

  // ---------------------------------------------------------------- WebSocket

  /**
   * @private
   * @param {number} gen
   */
  async _openWs(gen) {
    const token = await this._getToken(this._attempt > 0);
    if (gen !== this._gen) return;
    const url = this._url('/api/ws', { access_token: token });
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url.href);
    this._ws = ws;
    let opened = false;
    let lastSeen = Date.now();
    /** @type {ReturnType<typeof setInterval>|null} */
    let pinger = null;
    const openTimer = setTimeout(() => {
      if (gen === this._gen && !opened) ws.close(4000, 'no answer to subscribe');
    }, 10000);
    const markOpen = () => {
      if (opened) return;
      opened = true;
      clearTimeout(openTimer);
      this._opened(gen);
    };

    ws.onopen = () => {
      if (gen !== this._gen) return;
      /** @type {Record<string, any>} */
      const frame = { type: 'subscribe', rooms: this.rooms };
      if (this._cursor) frame.cursor = this._cursor;
      if (this._opts.top) frame.top = this._opts.top;
      this._wsPending.push({ resolve: () => {}, reject: () => {}, timer: null });
      ws.send(JSON.stringify(frame));
      pinger = setInterval(() => {
        if (Date.now() - lastSeen > this._opts.wsPingInterval * 2) {
          ws.close(4000, 'ping timeout'); // half-open socket: no pong, no event
          return;
        }
        if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
      }, this._opts.wsPingInterval);
    };

    ws.onmessage = (e) => {
      if (gen !== this._gen) return;
      lastSeen = Date.now();
      let msg;
      try {
        msg = JSON.parse(typeof e.data === 'string' ? e.data : '');
      } catch {
        return;
      }
      if (msg && typeof msg.event === 'string') {
        markOpen();
        this._deliver(msg);
        return;
      }
      switch (msg?.type) {
        case 'subscribed': {
          const p = this._wsPending.shift();
          if (p) {
            clearTimeout(p.timer);
            p.resolve(msg.rooms);
          }
          markOpen();
          break;
        }
        case 'error': {
          const p = this._wsPending.shift();
          const err = new PulseHttpError(msg.status, msg);
          if (p) {
            clearTimeout(p.timer);
            p.reject(err);
          }
          if (!opened) {
            // The first subscribe was refused: the socket is useless.
            if (isFatal(msg.status, typeof this._tokenSource === 'function')) this._fatal(msg.status, msg);
            else ws.close(4000, 'subscribe refused');
          } else {
            this._emitError({ status: msg.status, title: msg.title, detail: msg.detail, fatal: false });
          }
          break;
        }
        default: // pong and anything new: only liveness
      }
    };

    ws.onclose = (e) => {
      if (gen !== this._gen) return;
      if (e.code === 4008) this._resumeQuickly = true; // slow: resume with the cursor
      if (e.code === 1008 || e.code === 4401 || e.code === 4403) {
        this._emitError({ status: e.code, title: e.reason || 'refused', fatal: false });
      }
      if (e.code === 1012 || e.code === 1001) {
        // The instance drains (PROTOCOL 3.7): resume with the cursor after a random
        // delay, so its clients reach the other instances spread out, not all at once.
        this._retry('websocket', Math.random() * this._opts.drainJitterMax);
        return;
      }
      this._retry('websocket', null);
    };
    this._onNewName = null;
    this._cleanup = () => {
      clearTimeout(openTimer);
      clearTimeout(this._healthTimer);
      if (pinger) clearInterval(pinger);
      ws.onclose = ws.onmessage = ws.onopen = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
      if (this._ws === ws) this._ws = null;
    };
  }

  // ------------------------------------------------------------ room changes

  /**
   * Ask the server whether these rooms may be read (a snapshot poll that does
   * not wait). Network failures pass: the connection will tell later.
   * @private
   * @param {string[]} rooms
   * @throws {PulseHttpError} 400 (unknown room) or 403 (someone else's room)
   */
  async _checkRooms(rooms) {
    const url = this._url('/api/poll', { rooms: rooms.join(','), timeout: 0, top: 1 });
    try {
      await this.request(url.pathname + url.search, { cache: 'no-store' });
    } catch (err) {
      if (err instanceof PulseHttpError && (err.status === 400 || err.status === 403)) throw err;
    }
  }

  /**
   * @private
   * @param {'subscribe'|'unsubscribe'} op
   * @param {string[]} rooms
   */
  async _changeRooms(op, rooms) {
    if (this._state === 'closed') return;
    const transport = this._transport;
    if (op === 'subscribe' && (this._state !== 'open' || transport === 'poll')) {
      // No live connection to ask: check the rooms first, or the next
      // connection attempt would be refused as a whole.
      await this._checkRooms(rooms);
    }
    if (this._state !== 'open') {
      // The next connection attempt carries the new rooms; nothing more to do.
      return;
    }
    if (transport === 'poll') {
      this._pollAbort?.abort('rooms');
      return;
    }
    if (transport === 'websocket') {
      const ws = this._ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ type: op, rooms }));
      // Both frames are answered ("subscribed" or "error"), in order.
      await new Promise((resolve, reject) => {
        const entry = { resolve, reject, timer: /** @type {any} */ (null) };
        // Answers come in order; a server that does not answer still lets us go on.
        entry.timer = setTimeout(() => {
          const i = this._wsPending.indexOf(entry);
          if (i >= 0) this._wsPending.splice(i, 1);
          resolve(undefined);
        }, 5000);
        this._wsPending.push(entry);
      });
      return;
    }
    // SSE: change the open stream where it is held.
    const gen = this._gen;
    const connectionId = this._connectionId;
    if (!connectionId) return;
    for (let tries = 0; tries < 3; tries++) {
      let body;
      try {
        body = await this.request(`/api/${op}`, { json: { connection_id: connectionId, rooms } });
      } catch (err) {
        if (gen !== this._gen) return; // reconnected meanwhile: the new stream has the rooms
        if (err instanceof PulseHttpError) {
          if (err.status === 400 || err.status === 403 || err.status === 422) throw err;
          if (err.status === 503) {
            await sleep(err.retryAfter ?? 1000);
            if (gen !== this._gen) return;
            continue;
          }
        }
        // 401 (anonymous stream), 404 (connection gone) or the network: reopen
        // the stream with the new rooms from our cursor.
        this._attempt = 0;
        this._retry('sse', 0);
        return;
      }
      if (body && Array.isArray(body.rooms) && gen === this._gen) {
        // The server's list is authoritative for this stream.
        const keep = new Set(normalizeRooms(body.rooms));
        if (op === 'subscribe') for (const r of rooms) keep.add(r);
        else for (const r of rooms) keep.delete(r);
        this._rooms = keep;
      }
      return;
    }
    this._retry('sse', 0);
  }
}

// ------------------------------------------------------------------ helpers

/**
 * @param {string[]|string} rooms
 * @returns {string[]}
 */
function normalizeRooms(rooms) {
  const list = typeof rooms === 'string' ? rooms.split(',') : rooms;
  return [...new Set(list.map((r) => String(r).trim()).filter(Boolean))];
}

/**
 * A status retrying cannot fix: a bad or forbidden room, a missing endpoint,
 * or a rejected fixed token.
 * @param {number} status
 * @param {boolean} tokenRefreshable
 */
function isFatal(status, tokenRefreshable) {
  if (status === 401) return !tokenRefreshable;
  return status === 400 || status === 403 || status === 404 || status === 422;
}

/**
 * @param {Response} res
 * @returns {Promise<any>}
 */
async function readBody(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { title: text.slice(0, 200) };
  }
}

/**
 * The `Retry-After` of a response, in ms (seconds form only), or null.
 * @param {Response} res
 * @returns {number|null}
 */
function retryAfterMs(res) {
  const raw = res.headers.get('Retry-After');
  const s = Number(raw);
  return raw !== null && Number.isFinite(s) && s >= 0 ? Math.min(s, 300) * 1000 : null;
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
