// @ts-check
/**
 * The live board page: wires a {@link PulseClient} to the DOM of index.html.
 *
 * Query parameters (for people and for tests):
 * - `transport=sse|poll|websocket` forces a transport (default: auto, SSE with long-poll fallback);
 * - `player=<id>` who signs in in development mode (default: a random `guest-xxxx`);
 * - `top=<n>` how many leaderboard rows to show (default 25, at most 1000);
 * - `logmax=<n>` how many entries `#event-log` keeps (default 10000).
 *
 * Test hooks: board rows carry `data-player-id` and `data-rank`; `#online-count`;
 * `#connection[data-state][data-transport]`; `#event-log > li[data-event-id][data-event]`,
 * one per delivered event; `window.pulseApp` holds the client and the board state.
 *
 * @module app
 */

import { PulseClient, PulseHttpError } from './pulse.js';
import { RowVersions } from './row_versions.js';

// ----------------------------------------------------------------- settings

const params = new URLSearchParams(location.search);
const TRANSPORTS = ['auto', 'sse', 'poll', 'websocket'];
const TRANSPORT = /** @type {'auto'|'sse'|'poll'|'websocket'} */ (
  TRANSPORTS.includes(params.get('transport') || '') ? params.get('transport') : 'auto'
);
const TOP = clampInt(params.get('top'), 25, 1, 1000);
const LOG_MAX = clampInt(params.get('logmax'), 10000, 1, 1000000);
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const REQUESTED_PLAYER = ID_RE.test(params.get('player') || '') ? /** @type {string} */ (params.get('player')) : randomId('guest');
/** How long a row shows its last movement (▲/▼), ms. */
const CHANGE_VISIBLE_MS = 15000;
const FEED_MAX = 50;
const reducedMotion = matchMedia('(prefers-reduced-motion: reduce)');

// ---------------------------------------------------------------- utilities

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el;
}

/**
 * @param {string|null} raw
 * @param {number} fallback
 * @param {number} min
 * @param {number} max
 */
function clampInt(raw, fallback, min, max) {
  const n = Number.parseInt(raw || '', 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

/** @param {string} prefix */
function randomId(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}`;
}

/**
 * Create an element with attributes and children (text is always text, never HTML:
 * player names come from users).
 * @param {string} tag
 * @param {Record<string, string|number|boolean|null|undefined>} [attrs]
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

/** Text only for screen readers. @param {string} text */
function srOnly(text) {
  return h('span', { class: 'visually-hidden', text });
}

/** @param {number} x */
function signed(x) {
  const v = Math.round(x * 10) / 10;
  return `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(v).toFixed(1)}`;
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** @param {number|undefined} ts */
function timeOf(ts) {
  const d = new Date(ts || Date.now());
  return h('time', { datetime: d.toISOString(), text: d.toLocaleTimeString([], { hour12: false }) });
}

/**
 * The payload of a JWT (no verification: only to learn our own `sub` and `exp`).
 * @param {string} token
 * @returns {any}
 */
function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return {};
  }
}

// --------------------------------------------------------------------- auth

/**
 * Who we are and how we get tokens.
 * `dev`: tokens from `POST /api/dev/token`, refreshed before they expire;
 * `manual`: a pasted token; `anonymous`: none (needs PUBLIC_READ on the server).
 */
const auth = {
  /** @type {'dev'|'manual'|'anonymous'} */
  mode: 'anonymous',
  /** @type {string|null} */
  token: null,
  /** @type {string|null} */
  sub: null,
  exp: 0,
  scope: '',
};

/**
 * Ask the development-mode endpoint for a token.
 * @param {string} sub
 * @returns {Promise<string|null>} the token, or null when the server is not in development mode
 */
async function fetchDevToken(sub) {
  const res = await fetch('/api/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ sub, scope: 'matches:write admin' }),
  });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
  return (await res.json()).access_token;
}

/** @param {string} token */
function adoptToken(token) {
  const claims = jwtClaims(token);
  auth.token = token;
  auth.sub = typeof claims.sub === 'string' ? claims.sub : null;
  auth.exp = typeof claims.exp === 'number' ? claims.exp * 1000 : Infinity;
  auth.scope = typeof claims.scope === 'string' ? claims.scope : '';
}

/**
 * The token source handed to the client: a dev token is renewed a minute
 * before it expires, or at once when the server refused it.
 * @param {{forceRefresh: boolean}} opts
 * @returns {Promise<string|null>}
 */
async function tokenSource({ forceRefresh }) {
  if (auth.mode === 'dev' && auth.sub && (forceRefresh || !auth.token || auth.exp - Date.now() < 60000)) {
    const token = await fetchDevToken(auth.sub);
    if (token) adoptToken(token);
  }
  return auth.token;
}

/**
 * Sign in: a dev token when the server offers them, else the token form.
 * Retries while the server is unreachable.
 * @returns {Promise<void>}
 */
async function signIn() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 10000)) {
    try {
      const token = await fetchDevToken(REQUESTED_PLAYER);
      if (token) {
        auth.mode = 'dev';
        adoptToken(token);
        return;
      }
      break; // 404: not development mode
    } catch {
      $('who').textContent = 'Server unreachable, retrying…';
      await sleep(delay * (0.5 + Math.random() / 2));
    }
  }
  const saved = sessionStorage.getItem('pulse-token');
  if (saved) {
    auth.mode = 'manual';
    adoptToken(saved);
    return;
  }
  await askForToken();
}

/** Show the token form and wait for a token or "watch without signing in". */
function askForToken() {
  const panel = $('token-panel');
  panel.hidden = false;
  $('who').textContent = 'Not signed in';
  return new Promise((resolve) => {
    const form = /** @type {HTMLFormElement} */ ($('token-form'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const token = /** @type {HTMLTextAreaElement} */ ($('token-input')).value.trim();
      if (!jwtClaims(token).sub) {
        $('token-status').textContent = 'That does not look like a JWT with a "sub" claim.';
        return;
      }
      sessionStorage.setItem('pulse-token', token);
      auth.mode = 'manual';
      adoptToken(token);
      panel.hidden = true;
      resolve(undefined);
    });
    $('anonymous-button').addEventListener('click', () => {
      auth.mode = 'anonymous';
      panel.hidden = true;
      resolve(undefined);
    });
  });
}

// -------------------------------------------------------------------- board

/**
 * @typedef {Object} Entry
 * @property {number} rank
 * @property {string} player_id
 * @property {string} name
 * @property {number} rating
 * @property {number} wins
 * @property {number} losses
 * @property {number} draws
 * @property {{places: number|null, delta: number, at: number}} [change] last movement shown
 */

/**
 * @typedef {Entry & {previous_rank: number|null, delta: number}} Change
 * @typedef {{rating: number, player_id: string}} Key
 */

/** Rows kept beyond `top` (players who climbed into the known part of the board). */
const SLACK = 20;
/** Least time between two re-reads of the board, ms. */
const REREAD_GAP_MS = 250;
/** How far reads may lag behind events (PROTOCOL: within 1 s), with a margin, ms. */
const READ_LAG_MS = 2000;

/**
 * The page's picture of the board is a *prefix* of it: every player ordered
 * at or before `bound` (null: every player there is), with their current row.
 * Ranks are not stored but counted: the board's order is rating descending,
 * then player id ascending (byte order; ids are ASCII), so a known prefix
 * sorted that way gives each row its rank. A change is then applied by
 * putting the player's new row in or out of the prefix, which is the same
 * whether or not the picture already had it: events that a snapshot (the
 * stream's `leaderboard:initial` or an HTTP re-read) already reflects, and
 * that still arrive after it, do no harm.
 */
const board = {
  /** @type {Map<string, Entry>} the known prefix of the board, by player id */
  entries: new Map(),
  /** @type {Entry[]} the same rows in board order, ranks set */
  order: [],
  /** @type {Key|null} the last player of the known prefix; null when it holds every player */
  bound: null,
  total: 0,
  ready: false,
  /** Bumped when the stream replaces or drops the board: a re-read started before is stale. */
  epoch: 0,
};
/** @type {Map<string, HTMLTableRowElement>} */
const rowEls = new Map();
/** Per player, the highest change-row version applied to `board` (see row_versions.js). */
const rowVersions = new RowVersions();

/**
 * Whether `a` comes before `b` on the board.
 * @param {Key} a
 * @param {Key} b
 */
function precedes(a, b) {
  return a.rating > b.rating || (a.rating === b.rating && a.player_id < b.player_id);
}

/** @param {Key} a @param {Key} b */
function byBoardOrder(a, b) {
  return precedes(a, b) ? -1 : precedes(b, a) ? 1 : 0;
}

/** @param {Key} k whether the player with this rating belongs to the known prefix */
function inKnownPart(k) {
  return board.bound === null || !precedes(board.bound, k);
}

/** Whether the page knows fewer rows than it must show. */
function incomplete() {
  return board.ready && board.entries.size < Math.min(TOP, board.total);
}

/** Sort the known rows, count their ranks, and keep at most TOP + SLACK of them. */
function settle() {
  const order = [...board.entries.values()].sort(byBoardOrder);
  if (order.length > TOP + SLACK) {
    for (const e of order.splice(TOP + SLACK)) board.entries.delete(e.player_id);
    const last = order[order.length - 1];
    board.bound = { rating: last.rating, player_id: last.player_id };
  }
  order.forEach((e, i) => {
    e.rank = i + 1;
  });
  board.order = order;
}

/**
 * Replace the picture by a snapshot of the top of the board.
 * @param {Entry[]} entries the first rows of the board, asked for `TOP` of them
 * @param {number} total
 */
function loadSnapshot(entries, total) {
  const old = board.entries;
  board.entries = new Map();
  for (const e of entries) board.entries.set(e.player_id, { ...e, change: old.get(e.player_id)?.change });
  const order = [...board.entries.values()].sort(byBoardOrder);
  const everyone = order.length < TOP || order.length >= total;
  board.total = everyone ? order.length : total;
  const last = order[order.length - 1];
  board.bound = everyone || !last ? null : { rating: last.rating, player_id: last.player_id };
  board.ready = true;
}

/**
 * Put changed rows in (or out of) the known prefix.
 * @param {Change[]} changes
 * @param {number} at when they arrived (for the movement markers)
 * @param {boolean} overSnapshot replayed over a re-read that may or may not reflect them
 */
function applyChanges(changes, at, overSnapshot) {
  for (const c of changes) {
    const { previous_rank: prev, delta, ...row } = c;
    const had = board.entries.delete(c.player_id);
    const known = inKnownPart(row);
    if (known) {
      board.entries.set(c.player_id, {
        ...row,
        change: { places: typeof prev === 'number' ? prev - c.rank : null, delta, at },
      });
    }
    // A newcomer is one more player, unless the picture had them already (a
    // snapshot that counted them). Over a re-read, one outside the known part
    // is taken as counted: the re-read is the later word on the total.
    if ((prev === null || prev === undefined) && !had && (known || !overSnapshot)) board.total++;
  }
}

/** @param {{entries: Entry[], total: number}} data */
function onInitial(data) {
  board.epoch++;
  loadSnapshot(data.entries || [], data.total ?? (data.entries || []).length);
  settle();
  renderBoard(new Set());
  syncMeFromBoard();
  if (incomplete()) reconcile();
}

/**
 * Apply `leaderboard:update`: only the players whose rating changed are in
 * `changes`; everybody they passed moves too, which the counted ranks show.
 * When a player leaves the known prefix the row after the last known one is
 * unknown: then the top is read again.
 * @param {{match_id: string, changes: Change[]}} data
 */
function onUpdate(data) {
  if (!board.ready) return;
  // Only rows not older than what the page holds (PulseClient already leaves those out; this
  // keeps the model right whatever feeds it).
  const changes = rowVersions.fresh(data.changes || []);
  const at = Date.now();
  reread.recent.push({ changes, at });
  if (!reread.running) while (reread.recent.length && reread.recent[0].at < at - READ_LAG_MS) reread.recent.shift();
  applyChanges(changes, at, false);
  settle();
  renderBoard(new Set(changes.map((c) => c.player_id)));
  if (incomplete()) reconcile();
}

/** The re-read of the board: one at a time, again if asked meanwhile. */
const reread = {
  running: false,
  again: false,
  last: 0,
  failures: 0,
  /**
   * @type {{changes: Change[], at: number}[]} the updates of the last READ_LAG_MS, and all
   * of them while a re-read is under way
   */
  recent: [],
};

/**
 * Re-read the top of the board over HTTP (`GET /api/leaderboard?limit=top`),
 * when the page's picture cannot be complete: a player left the top and the
 * next one is not known here. The answer may be older or newer than the
 * events delivered meanwhile, or shortly before (a read may lag events by up
 * to a second): those are applied again over it, in order (a no-op for the
 * ones it reflects), and the ones it reflects that are still to come change
 * nothing either.
 * @returns {Promise<void>}
 */
async function reconcile() {
  if (!client) return;
  if (reread.running) {
    reread.again = true;
    return;
  }
  reread.running = true;
  try {
    do {
      reread.again = false;
      const wait = reread.last + REREAD_GAP_MS - Date.now();
      if (wait > 0) await sleep(wait);
      const sent = (reread.last = Date.now());
      const epoch = board.epoch;
      let page;
      try {
        page = await client.request(`/api/leaderboard?offset=0&limit=${TOP}`);
        reread.failures = 0;
      } catch (err) {
        console.warn('leaderboard refresh failed', err);
        reread.failures++;
        await sleep(Math.min(10000, 250 * 2 ** reread.failures));
        continue;
      }
      // A snapshot of the stream came meanwhile (or a reset): it is the newer word.
      if (epoch !== board.epoch || !board.ready) continue;
      loadSnapshot(page.entries || [], page.total ?? 0);
      for (const u of reread.recent) if (u.at >= sent - READ_LAG_MS) applyChanges(u.changes, u.at, true);
      settle();
      renderBoard(new Set());
      syncMeFromBoard();
    } while (reread.again || incomplete());
  } finally {
    reread.running = false;
  }
}

/**
 * Render the board with FLIP movement: remember where each row was, put the
 * rows in rank order, then play each row from its old place to its new one.
 * @param {Set<string>} changed players to highlight
 */
function renderBoard(changed) {
  const tbody = $('board-body');
  const sorted = board.order.slice(0, TOP);
  /** @type {Map<string, number>} */
  const first = new Map();
  for (const [id, tr] of rowEls) {
    first.set(id, tr.getBoundingClientRect().top);
    for (const a of tr.getAnimations()) if (a.id === 'flip') a.cancel();
  }
  const keep = new Set();
  for (const e of sorted) {
    let tr = rowEls.get(e.player_id);
    if (!tr) {
      tr = /** @type {HTMLTableRowElement} */ (h('tr', { 'data-player-id': e.player_id }));
      rowEls.set(e.player_id, tr);
    }
    fillRow(tr, e);
    tbody.append(tr); // moves existing rows into order
    keep.add(e.player_id);
  }
  for (const [id, tr] of rowEls) {
    if (!keep.has(id)) {
      tr.remove();
      rowEls.delete(id);
    }
  }
  if (!reducedMotion.matches) {
    for (const [id, tr] of rowEls) {
      const was = first.get(id);
      if (was === undefined) continue;
      const dy = was - tr.getBoundingClientRect().top;
      if (Math.abs(dy) < 1) continue;
      const anim = tr.animate([{ transform: `translateY(${dy}px)` }, { transform: 'translateY(0)' }], {
        duration: 700,
        easing: 'cubic-bezier(.2,.8,.2,1)',
      });
      anim.id = 'flip';
    }
  }
  for (const id of changed) {
    const tr = rowEls.get(id);
    if (!tr) continue;
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the highlight animation
    tr.classList.add('flash');
  }
  const shown = sorted.length;
  $('board-status').textContent = shown
    ? `Top ${shown} of ${board.total} players.`
    : 'No ranked players yet: play a match.';
}

/**
 * @param {HTMLTableRowElement} tr
 * @param {Entry} e
 */
function fillRow(tr, e) {
  tr.dataset.rank = String(e.rank);
  const isMe = e.player_id === auth.sub;
  tr.classList.toggle('is-me', isMe);
  if (isMe) tr.setAttribute('aria-current', 'true');
  else tr.removeAttribute('aria-current');
  const cells = [
    h('td', { class: 'col-rank' }, String(e.rank)),
    h(
      'th',
      { scope: 'row', class: 'col-player' },
      h('span', { class: 'name', text: e.name || e.player_id }),
      e.name && e.name !== e.player_id ? h('span', { class: 'pid', text: ` ${e.player_id}` }) : null,
      isMe ? h('span', { class: 'you', text: ' (you)' }) : null,
    ),
    h('td', { class: 'col-rating' }, e.rating.toFixed(1)),
    h('td', { class: 'col-record' }, `${e.wins}–${e.losses}–${e.draws}`),
    h('td', { class: 'col-change' }, changeBadge(e)),
  ];
  tr.replaceChildren(...cells);
}

/**
 * ▲/▼ with the number of places and the rating delta, so movement reads without colour.
 * @param {Entry} e
 * @returns {Node|string}
 */
function changeBadge(e) {
  const c = e.change;
  if (!c || Date.now() - c.at > CHANGE_VISIBLE_MS) return '';
  const delta = h('span', { class: 'delta' }, ` ${signed(c.delta)}`);
  if (c.places === null) {
    return h('span', { class: 'change new' }, h('span', { 'aria-hidden': 'true', text: '★ new' }), srOnly('new on the board, rating'), delta);
  }
  if (c.places > 0) {
    return h('span', { class: 'change up' }, h('span', { 'aria-hidden': 'true', text: `▲ ${c.places}` }), srOnly(`up ${c.places}, rating`), delta);
  }
  if (c.places < 0) {
    return h('span', { class: 'change down' }, h('span', { 'aria-hidden': 'true', text: `▼ ${-c.places}` }), srOnly(`down ${-c.places}, rating`), delta);
  }
  return h('span', { class: 'change same' }, h('span', { 'aria-hidden': 'true', text: '=' }), srOnly('same rank, rating'), delta);
}

// Movement markers fade out after a while.
setInterval(() => {
  const now = Date.now();
  for (const [id, e] of board.entries) {
    if (e.change && now - e.change.at > CHANGE_VISIBLE_MS) {
      delete e.change;
      const tr = rowEls.get(id);
      const cell = tr?.querySelector('.col-change');
      if (cell) cell.replaceChildren();
    }
  }
}, 2000);

// ---------------------------------------------------------------- "you" panel

/** Neighbours shown on each side of the signed-in player (PROTOCOL 1: at most 25). */
const ME_RADIUS = 5;

/** The rank window the "You" panel follows: the server pushes it whenever it changes. */
function myWindowRoom() {
  return auth.sub ? `leaderboard:around:${auth.sub}:${ME_RADIUS}` : null;
}

/**
 * The signed-in player's own row (from their events, the board, or their
 * window) and the rows around it (from the last `leaderboard:window`).
 */
const mine = {
  /** @type {Entry|null} */
  entry: null,
  /** @type {Entry[]} */
  around: [],
  /** Whether a window has come at least once (until then: "Loading…"). */
  read: false,
};

/**
 * A `leaderboard:window` of our `leaderboard:around:{me}:5` room: the player and
 * their neighbours as the board is now. It comes on subscribe, on every resume
 * and whenever one of its rows changes, so nothing is read again by hand.
 * @param {{window: string, entries: Entry[], total: number}} data
 */
function onMyWindow(data) {
  if (!data || data.window !== myWindowRoom()) return;
  const entries = data.entries || [];
  mine.read = true;
  mine.around = entries;
  const own = entries.find((e) => e.player_id === auth.sub);
  if (own) mine.entry = { ...own };
  renderMe();
}

/**
 * The player's own row as an event gives it.
 * @param {Partial<Entry> & {player_id: string}} data
 */
function heardOfMe(data) {
  const base = mine.entry || { rank: 0, player_id: data.player_id, name: data.player_id, rating: 0, wins: 0, losses: 0, draws: 0 };
  /** @type {Entry} */
  const entry = { ...base };
  for (const k of /** @type {(keyof Entry)[]} */ (['rank', 'name', 'rating', 'wins', 'losses', 'draws'])) {
    if (data[k] !== undefined && data[k] !== null) /** @type {any} */ (entry)[k] = data[k];
  }
  mine.entry = entry;
}

/** Our row as the page's board shows it, when it shows it (the same rank in both places). */
function syncMeFromBoard() {
  if (!auth.sub) return;
  const e = board.entries.get(auth.sub);
  if (!e || e.rank > TOP) return;
  const { change, ...row } = e;
  mine.entry = { ...row };
  renderMe();
}

/**
 * A `leaderboard:update`: our own row when we are in it (our neighbours come
 * with our window).
 * @param {{changes: Change[]}} data
 */
function meOnUpdate(data) {
  if (!auth.sub) return;
  const own = (data.changes || []).find((c) => c.player_id === auth.sub);
  if (own) {
    const { previous_rank: _p, delta: _d, ...row } = own;
    heardOfMe(row);
  }
  syncMeFromBoard();
  renderMe();
}

/** @param {any} data `leaderboard:player_rank` or `player:stats_update` of our room */
function onMyStats(data) {
  if (!auth.sub || data?.player_id !== auth.sub) return;
  heardOfMe(data);
  syncMeFromBoard();
  renderMe();
}

function renderMe() {
  const status = $('me-status');
  const me = mine.entry;
  if (me) {
    status.textContent = `${me.name || me.player_id}: rank ${me.rank}${board.total ? ` of ${board.total}` : ''}, rating ${me.rating.toFixed(1)} (${me.wins}–${me.losses}–${me.draws}).`;
    status.dataset.rank = String(me.rank);
  } else if (mine.read) {
    status.textContent = `${auth.sub}: no rank yet. Play a match to get one.`;
    delete status.dataset.rank;
  }
  const tbody = $('me-body');
  tbody.replaceChildren(
    ...mine.around.map((e) => {
      const isMe = e.player_id === auth.sub;
      return h(
        'tr',
        { 'data-player-id': e.player_id, 'data-rank': e.rank, class: isMe ? 'is-me' : null, 'aria-current': isMe ? 'true' : null },
        h('td', { class: 'col-rank' }, String(e.rank)),
        h('th', { scope: 'row', class: 'col-player' }, e.name || e.player_id, isMe ? h('span', { class: 'you', text: ' (you)' }) : null),
        h('td', { class: 'col-rating' }, e.rating.toFixed(1)),
      );
    }),
  );
  $('me-table').hidden = mine.around.length === 0;
}

// ------------------------------------------------------------------ presence

let presenceEvents = 0;

/** @param {number} n */
function setOnline(n) {
  const el = $('online-count');
  el.textContent = String(n);
  el.dataset.count = String(n);
}

async function loadPresence() {
  if (!client) return;
  const seen = presenceEvents;
  try {
    const body = await client.request('/api/presence');
    // An event that arrived meanwhile is newer than this answer.
    if (presenceEvents === seen && typeof body.online_count === 'number') setOnline(body.online_count);
  } catch (err) {
    console.warn('presence failed', err);
  }
}

/** @param {{online_count: number}} data */
function onPresence(data) {
  presenceEvents++;
  if (typeof data?.online_count === 'number') setOnline(data.online_count);
}

// --------------------------------------------------------------- match feed

/** @param {string} id */
function nameOf(id) {
  return board.entries.get(id)?.name || id;
}

/**
 * @param {string} event
 * @param {any} data
 * @param {{ts: number}} env
 */
function onMatchEvent(event, data, env) {
  const feed = $('match-feed');
  const matchId = data?.match_id;
  if (!matchId) return;
  if (event === 'match:progress') {
    showProgress(matchId, data);
    return;
  }
  updateDevMatch(data);
  const [a, b] = data.player_ids || ['?', '?'];
  const vs = `${nameOf(a)} vs ${nameOf(b)}`;
  /** @type {[string, string, (Node|string)[]]} */
  let parts;
  switch (event) {
    case 'match:created':
      parts = ['+', 'New match', [vs]];
      break;
    case 'match:started':
      parts = ['▶', 'Started', [vs, h('span', { class: 'score' })]];
      break;
    case 'match:cancelled':
      parts = ['✕', 'Cancelled', [vs]];
      break;
    case 'match:result': {
      const rc = data.rating_changes || {};
      const deltas = [a, b]
        .filter((p) => typeof rc[p] === 'number')
        .map((p) => `${nameOf(p)} ${signed(rc[p])}`)
        .join(', ');
      const text = data.draw
        ? `${vs}: draw`
        : `${nameOf(data.winner_id)} beat ${nameOf(data.winner_id === a ? b : a)}`;
      parts = ['■', 'Result', [text, deltas ? ` (${deltas})` : '']];
      break;
    }
    default:
      return;
  }
  const [icon, label, body] = parts;
  const li = h(
    'li',
    { class: `feed-item ${event.replace(':', '-')}`, 'data-match-id': matchId, 'data-event': event },
    timeOf(env.ts),
    ' ',
    h('span', { class: 'feed-icon', 'aria-hidden': 'true', text: icon }),
    ' ',
    h('strong', { class: 'feed-label', text: `${label}:` }),
    ' ',
    ...body,
  );
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastElementChild?.remove();
  $('feed-empty').hidden = true;
}

/**
 * Live score: updates the "started" line in place (not announced again: the
 * feed only announces additions).
 * @param {string} matchId
 * @param {{score: Record<string, number>}} data
 */
function showProgress(matchId, data) {
  const li = document.querySelector(`#match-feed li[data-event="match:started"][data-match-id="${CSS.escape(matchId)}"] .score`);
  const text = Object.entries(data.score || {})
    .map(([p, s]) => `${nameOf(p)} ${s}`)
    .join(' – ');
  if (li) li.textContent = ` (live: ${text})`;
}

// ---------------------------------------------------------------- dev panel

/** @type {Map<string, any>} matches made from this page */
const devMatches = new Map();

function setupDevPanel() {
  $('dev-panel').hidden = false;
  const a = /** @type {HTMLInputElement} */ ($('player-a'));
  const b = /** @type {HTMLInputElement} */ ($('player-b'));
  a.value = auth.sub || '';
  b.value = randomId('bot');
  $('create-match').addEventListener('submit', async (e) => {
    e.preventDefault();
    await devAction(async () => {
      const match = await client.request('/api/matches', { json: { player_ids: [a.value.trim(), b.value.trim()] } });
      devMatches.set(match.match_id, match);
      renderDevMatches();
      b.value = randomId('bot');
      return `Match ${match.match_id} created.`;
    });
  });
  $('dev-matches').addEventListener('click', async (e) => {
    const button = /** @type {HTMLElement} */ (e.target).closest('button[data-action]');
    if (!(button instanceof HTMLButtonElement)) return;
    const id = button.dataset.matchId || '';
    const action = button.dataset.action;
    const match = devMatches.get(id);
    if (!match) return;
    const path = `/api/matches/${encodeURIComponent(id)}`;
    await devAction(async () => {
      let updated;
      if (action === 'start') updated = await client.request(`${path}/start`, { json: {} });
      else if (action === 'cancel') updated = await client.request(`${path}/cancel`, { json: {} });
      else if (action === 'draw') updated = await client.request(`${path}/result`, { json: { draw: true } });
      else updated = await client.request(`${path}/result`, { json: { winner_id: button.dataset.winner } });
      updateDevMatch(updated);
      return `Match ${id}: ${updated.status}.`;
    });
  });
}

/** @param {() => Promise<string>} fn */
async function devAction(fn) {
  const status = $('dev-status');
  try {
    status.textContent = await fn();
  } catch (err) {
    status.textContent =
      err instanceof PulseHttpError ? `Refused (${err.status}): ${err.message}` : `Failed: ${String(err)}`;
  }
}

/** @param {any} match */
function updateDevMatch(match) {
  if (!match?.match_id || !devMatches.has(match.match_id)) return;
  devMatches.set(match.match_id, { ...devMatches.get(match.match_id), ...match });
  renderDevMatches();
}

function renderDevMatches() {
  const list = $('dev-matches');
  list.replaceChildren(
    ...[...devMatches.values()].reverse().map((m) => {
      const [a, b] = m.player_ids;
      const open = m.status === 'scheduled' || m.status === 'live';
      /**
       * @param {string} action
       * @param {string} text
       * @param {boolean} enabled
       * @param {string} [winner]
       */
      const btn = (action, text, enabled, winner) =>
        h('button', {
          type: 'button',
          'data-action': action,
          'data-match-id': m.match_id,
          'data-winner': winner,
          disabled: !enabled,
          'aria-label': `${text}: ${a} vs ${b}`,
          text,
        });
      return h(
        'li',
        { 'data-match-id': m.match_id, 'data-status': m.status },
        h('span', { class: 'dev-match-title', text: `${a} vs ${b}` }),
        ' ',
        h('span', { class: 'dev-match-status', text: `(${m.status})` }),
        h(
          'span',
          { class: 'buttons' },
          btn('start', 'Start', m.status === 'scheduled'),
          btn('win', `${a} wins`, open, a),
          btn('win', `${b} wins`, open, b),
          btn('draw', 'Draw', open),
          btn('cancel', 'Cancel', open),
        ),
      );
    }),
  );
}

// ------------------------------------------------------------- connection UI

const TRANSPORT_NAMES = { sse: 'SSE', poll: 'long-poll', websocket: 'WebSocket' };
const STATE_VIEW = {
  connecting: ['◌', 'Connecting'],
  open: ['●', 'Live'],
  reconnecting: ['↻', 'Reconnecting'],
  closed: ['■', 'Disconnected'],
};

/**
 * @param {{state: keyof STATE_VIEW, transport: keyof TRANSPORT_NAMES}} s
 * @param {string} [note]
 */
function showConnection({ state, transport }, note) {
  const el = $('connection');
  el.dataset.state = state;
  el.dataset.transport = transport;
  const [icon, word] = STATE_VIEW[state];
  /** @type {HTMLElement} */ (el.querySelector('.connection-icon')).textContent = icon;
  /** @type {HTMLElement} */ (el.querySelector('.connection-text')).textContent =
    state === 'open'
      ? `${word} (${liveTransportText(transport)})${note ? `: ${note}` : ''}`
      : `${word} · ${TRANSPORT_NAMES[transport]}${state === 'closed' ? '' : '…'}${note ? `: ${note}` : ''}`;
}

/**
 * How the page is live: the transport, and on long-poll in automatic mode that streaming is
 * blocked on this network (the client fell back on its own; it tries SSE again later).
 * @param {keyof TRANSPORT_NAMES} transport
 */
function liveTransportText(transport) {
  if (transport === 'poll' && TRANSPORT === 'auto') return 'long-poll: streaming is blocked here';
  return TRANSPORT_NAMES[transport];
}

// ---------------------------------------------------------------- event log

const log = { count: 0 };

/** @param {{id: string, event: string, ts: number}} env */
function appendLog(env) {
  const list = $('event-log');
  list.append(
    h('li', { 'data-event-id': env.id, 'data-event': env.event }, timeOf(env.ts), ` ${env.event} `, h('code', { text: env.id })),
  );
  while (list.children.length > LOG_MAX) list.firstElementChild?.remove();
  log.count++;
  $('event-log-count').textContent = String(log.count);
}

// --------------------------------------------------------------------- main

/** @type {PulseClient} */
let client;

async function main() {
  /** @type {HTMLInputElement} */ ($('switch-player')).value = params.get('player') || '';
  /** @type {HTMLSelectElement} */ ($('switch-transport')).value = TRANSPORT === 'auto' ? '' : TRANSPORT;
  showConnection({ state: 'connecting', transport: TRANSPORT === 'auto' ? 'sse' : TRANSPORT });

  await signIn();
  $('who').textContent = auth.sub
    ? `Signed in as ${auth.sub}${auth.mode === 'dev' ? ' (development mode)' : ''}`
    : 'Watching anonymously';
  $('me-status').textContent = auth.sub ? 'Loading your rank…' : 'Sign in to see your rank.';

  const rooms = ['leaderboard:global', 'matches', 'presence'];
  if (auth.sub) rooms.push(`player:${auth.sub}`, /** @type {string} */ (myWindowRoom()));
  client = new PulseClient({
    rooms,
    token: auth.mode === 'anonymous' ? null : tokenSource,
    transport: TRANSPORT,
    top: TOP,
  });
  // For debugging and tests.
  /** @type {any} */ (window).pulseApp = { client, board, auth, reconcile, onUpdate };

  client.on('*', appendLog);
  client.on('state', (/** @type {any} */ s) => {
    showConnection(s);
    if (s.state === 'open' && s.previousState !== 'open') {
      loadPresence();
    }
  });
  client.on('error', (/** @type {any} */ err) => {
    console.warn('pulse error', err);
    if (err.fatal) {
      showConnection({ state: 'closed', transport: client.transport }, err.status === 401 ? 'sign-in required' : err.title);
      if (err.status === 401 && auth.mode !== 'dev') {
        sessionStorage.removeItem('pulse-token');
        askForToken().then(() => location.reload());
      }
    }
  });
  client.on('reset', (/** @type {any} */ r) => {
    if (r.resume) return; // "slow": we resume from our cursor, our state stays right
    board.ready = false;
    board.epoch++;
    $('board-status').textContent = `Stream reset (${r.reason}): reloading…`;
    presenceEvents++;
    loadPresence();
  });
  client.on('leaderboard:initial', onInitial);
  client.on('leaderboard:update', (/** @type {any} */ d) => {
    onUpdate(d);
    meOnUpdate(d);
  });
  client.on('leaderboard:window', onMyWindow);
  client.on('leaderboard:player_rank', onMyStats);
  client.on('player:stats_update', onMyStats);
  client.on('player:online', onPresence);
  client.on('player:offline', onPresence);
  for (const name of ['match:created', 'match:started', 'match:progress', 'match:result', 'match:cancelled']) {
    client.on(name, (/** @type {any} */ data, /** @type {any} */ env) => {
      // One event can reach us through several rooms but arrives once; the
      // player room repeats the public one, so the feed shows each once.
      // (Players new to the board arrive with a leaderboard:update of their own.)
      onMatchEvent(name, data, env);
    });
  }
  if (auth.mode === 'dev') setupDevPanel();
  client.connect();
}

main().catch((err) => {
  console.error(err);
  $('who').textContent = `Failed to start: ${String(err)}`;
});
