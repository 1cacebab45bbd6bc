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
 * one per delivered event; `window.pulseApp` holds the client and the board state; the pager
 * (`#pager[data-offset]`, `#page-top`, `#page-prev`, `#page-next`, `#page-me`, `#rank-input`).
 *
 * The board's state lives in board_model.js (no DOM), its drawing in board_view.js.
 *
 * @module app
 */

import { BoardModel, YouModel, pageOffsetOf } from './board_model.js';
import { BoardView, renderYou } from './board_view.js';
import { $, h, signed, timeOf } from './dom.js';
import { PulseClient, PulseHttpError } from './pulse.js';

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
const FEED_MAX = 50;

// ---------------------------------------------------------------- utilities

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

/** @param {number} ms */
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
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

/** Least time between two reads of the board page, ms. */
const REREAD_GAP_MS = 250;
/** How far reads may lag behind events (PROTOCOL: within 1 s), with a margin, ms. */
const READ_LAG_MS = 2000;
/** Neighbours shown on each side of the signed-in player (PROTOCOL 1: at most 25). */
const ME_RADIUS = 5;

/** The page of the board shown (board_model.js); `top` rows a page. */
const board = new BoardModel({ size: TOP, readLagMs: READ_LAG_MS });
/** @type {BoardView} */
let view;
/** @type {YouModel} */
let you = new YouModel(null, ME_RADIUS);

/** Draw the board and keep the You panel's own row equal to the board's. */
function showBoard(/** @type {Set<string>} */ changed) {
  view.render(board, changed);
  if (you.syncFromBoard(board)) renderYou(you, board.total);
  if (board.needsRead()) reconcile();
}

/** @param {{entries: import('./board_model.js').Entry[], total: number}} data */
function onInitial(data) {
  board.applyInitial(data);
  showBoard(new Set());
}

/** @param {{match_id: string, changes: import('./board_model.js').Change[]}} data */
function onUpdate(data) {
  const changed = board.applyUpdate(data, Date.now());
  if (board.ready) showBoard(changed);
}

/** The read of the board page: one at a time, again if asked meanwhile. */
const reread = { running: false, again: false, last: 0, failures: 0 };

/**
 * Read the page over HTTP (`GET /api/leaderboard?offset=&limit=`) when the model says so: a
 * page just chosen, a player who left the top when the next one is not known here, a change
 * that crossed a deep page. The model replays or confirms what the answer may not reflect
 * (board_model.js).
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
      const epoch = board.beginRead(sent);
      let page;
      try {
        page = await client.request(`/api/leaderboard?offset=${board.offset}&limit=${TOP}`);
        reread.failures = 0;
      } catch (err) {
        console.warn('leaderboard read failed', err);
        reread.failures++;
        await sleep(Math.min(10000, 250 * 2 ** reread.failures));
        continue;
      }
      if (!board.applyRead(page, sent, epoch)) continue;
      view.render(board, new Set());
      if (you.syncFromBoard(board)) renderYou(you, board.total);
      const confirmIn = board.confirmReadIn(sent, Date.now());
      if (confirmIn !== null) {
        await sleep(confirmIn);
        reread.again = true;
      }
    } while (reread.again || board.needsRead());
  } finally {
    reread.running = false;
  }
}

/** Show the page starting at `offset` (0: the top, followed live by the stream's snapshot too). */
function goToOffset(/** @type {number} */ offset) {
  board.goTo(offset);
  view.render(board, new Set());
  reconcile();
}

/** The page that holds the signed-in player, their row brought into view. */
async function goToMe() {
  if (!auth.sub) return;
  let rank = you.entry?.rank;
  try {
    // Our rank as the server has it now (the panel's may be a window behind).
    rank = (await client.request(`/api/players/${encodeURIComponent(auth.sub)}`)).rank;
  } catch (err) {
    if (!rank) return;
  }
  if (typeof rank !== 'number') return;
  goToOffset(pageOffsetOf(rank, TOP));
  for (let i = 0; i < 40 && !board.ready; i++) await sleep(50);
  view.scrollToMe();
}

function setupPager() {
  $('page-top').addEventListener('click', () => goToOffset(0));
  $('page-prev').addEventListener('click', () => goToOffset(Math.max(0, board.offset - TOP)));
  $('page-next').addEventListener('click', () => goToOffset(board.offset + TOP));
  $('page-me').addEventListener('click', () => goToMe());
  $('rank-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const rank = Number.parseInt(/** @type {HTMLInputElement} */ ($('rank-input')).value, 10);
    if (Number.isFinite(rank) && rank >= 1) goToOffset(pageOffsetOf(rank, TOP));
  });
}

// Movement markers fade out after a while.
setInterval(() => view?.fadeMarkers(board, Date.now()), 2000);

// ---------------------------------------------------------------- "you" panel

/** @param {{window: string, entries: import('./board_model.js').Entry[], total: number}} data */
function onMyWindow(data) {
  if (you.applyWindow(data)) renderYou(you, board.total);
}

/**
 * A `leaderboard:update`: our own row when we are in it (our neighbours come with our window).
 * @param {{changes: import('./board_model.js').Change[]}} data
 */
function meOnUpdate(data) {
  const own = (data.changes || []).find((c) => c.player_id === auth.sub);
  if (own) {
    const { previous_rank: _p, delta: _d, ...row } = own;
    you.applyOwnRow(row);
  }
  you.syncFromBoard(board);
  renderYou(you, board.total);
}

/** @param {any} data `leaderboard:player_rank` or `player:stats_update` of our room */
function onMyStats(data) {
  if (!you.applyOwnRow(data)) return;
  you.syncFromBoard(board);
  renderYou(you, board.total);
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
  you = new YouModel(auth.sub, ME_RADIUS);
  view = new BoardView(auth.sub);
  if (you.room) rooms.push(`player:${auth.sub}`, you.room);
  client = new PulseClient({
    rooms,
    token: auth.mode === 'anonymous' ? null : tokenSource,
    transport: TRANSPORT,
    top: TOP,
  });
  // For debugging and tests.
  /** @type {any} */ (window).pulseApp = { client, board, you, auth, reconcile, onUpdate, goToOffset };

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
    board.drop();
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
  setupPager();
  client.connect();
}

main().catch((err) => {
  console.error(err);
  $('who').textContent = `Failed to start: ${String(err)}`;
});
