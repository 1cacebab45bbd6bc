// @ts-check
/**
 * The page's picture of one page of the leaderboard, with no DOM: it takes the stream's
 * `leaderboard:initial` / `leaderboard:update` and the answers of `GET /api/leaderboard`, and
 * says which rows to show and when the page must be read again. Tested in a real browser
 * without the page around it (tests/browser/test_board_model.py).
 *
 * Two ways of keeping a page current, by where it is:
 *
 * - **The top page** (offset 0) is a *prefix* of the board: every player ordered at or before
 *   `bound` (null: every player there is), with their current row. Ranks are counted, not
 *   carried over: the board's order is rating descending, then player id ascending (byte
 *   order; ids are ASCII), so a known prefix sorted that way gives each row its rank. A change
 *   puts the player's new row in or out of the prefix, which is the same whether or not the
 *   picture already had it: events that a snapshot already reflects, and that still arrive
 *   after it, do no harm. Changes are replayed over an HTTP re-read for that reason.
 * - **A deep page** (offset > 0, up to a million players down): the rows before it are not
 *   known, so a change that moves anyone across its rank range (a player climbing from below
 *   it to above it shifts every row by one) cannot be placed by counting. Such a change is
 *   applied to the rows the page holds at once (so a row that moved within the page moves
 *   now) and the page is read again; a read sent less than `readLagMs` after the last such
 *   change is followed by one more (reads may lag events by up to a second, PROTOCOL), so the
 *   last read always reflects every change. A change whose old and new ranks are both before
 *   or both after the page moves no row of it and changes nothing.
 *
 * @module board_model
 */

import { RowVersions } from './row_versions.js';

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
 * @typedef {Entry & {previous_rank: number|null, delta: number, version?: number}} Change
 * @typedef {{rating: number, player_id: string}} Key
 */

/**
 * Whether `a` comes before `b` on the board.
 * @param {Key} a
 * @param {Key} b
 */
export function precedes(a, b) {
  return a.rating > b.rating || (a.rating === b.rating && a.player_id < b.player_id);
}

/** @param {Key} a @param {Key} b */
export function byBoardOrder(a, b) {
  return precedes(a, b) ? -1 : precedes(b, a) ? 1 : 0;
}

/**
 * The offset of the page (of `size` rows) that holds `rank` (1-based).
 * @param {number} rank
 * @param {number} size
 */
export function pageOffsetOf(rank, size) {
  return Math.max(0, Math.floor((Math.max(1, rank) - 1) / size) * size);
}

export class BoardModel {
  /**
   * @param {{size: number, slack?: number, readLagMs?: number}} opts `size` rows per page;
   * `slack` rows kept beyond the top page (players who climbed into the known prefix);
   * `readLagMs` how far reads may lag behind events, with a margin.
   */
  constructor({ size, slack = 20, readLagMs = 2000 }) {
    this.size = size;
    this.slack = slack;
    this.readLagMs = readLagMs;
    /** First rank shown, minus one: 0 is the top page. */
    this.offset = 0;
    /** @type {Map<string, Entry>} the known rows, by player id */
    this.entries = new Map();
    /** @type {Entry[]} the same rows in board order, ranks set */
    this.order = [];
    /** @type {Key|null} top page only: the last player of the known prefix; null: all of them */
    this.bound = null;
    this.total = 0;
    this.ready = false;
    /** Bumped whenever the page is replaced or dropped: a read started before is stale. */
    this.epoch = 0;
    /** Per player, the highest change-row version applied (see row_versions.js). */
    this.versions = new RowVersions();
    /** @type {{changes: Change[], at: number}[]} recent updates, replayed over a top re-read */
    this.recent = [];
    /** Deep pages: when the last change that crossed the page's rank range arrived. */
    this.lastCrossing = -Infinity;
    /** Deep pages: a change crossed the page since its last read. */
    this.stale = false;
    /** A page was chosen and not read yet (the stream's snapshot only covers the top). */
    this.unread = false;
    /** When the read under way was sent (null: none): its updates are kept for the replay. */
    this.readingSince = /** @type {number|null} */ (null);
  }

  get deep() {
    return this.offset > 0;
  }

  /** The rows to show, in order. @returns {Entry[]} */
  rows() {
    return this.order.slice(0, this.size);
  }

  /**
   * Show the page starting at `offset` (clamped to the board); until its read arrives the
   * model is not ready. @param {number} offset
   */
  goTo(offset) {
    const last = this.total > 0 ? pageOffsetOf(this.total, this.size) : Infinity;
    this.offset = Math.max(0, Math.min(pageOffsetOf(offset + 1, this.size), last));
    this.entries = new Map();
    this.order = [];
    this.bound = null;
    this.ready = false;
    this.unread = true;
    this.stale = false;
    this.epoch++;
  }

  /** The stream dropped its state (`stream:reset`): wait for a fresh snapshot. */
  drop() {
    this.ready = false;
    this.unread = false;
    this.epoch++;
  }

  /** Whether the page must be read (again) over HTTP. */
  needsRead() {
    if (!this.ready && this.unread) return true; // a page just chosen
    if (this.deep) return this.stale;
    return this.ready && this.entries.size < Math.min(this.size, this.total);
  }

  /**
   * After a read sent at `sentAt` was applied: how long to wait before reading again so that
   * the last read reflects every change that crossed a deep page (null: no need).
   * @param {number} sentAt @param {number} now
   * @returns {number|null}
   */
  confirmReadIn(sentAt, now) {
    if (!this.deep || sentAt - this.lastCrossing >= this.readLagMs) return null;
    return Math.max(0, this.lastCrossing + this.readLagMs - now);
  }

  /**
   * A read of the page is sent now: returns the epoch to hand back to `applyRead`.
   * @param {number} now
   */
  beginRead(now) {
    this.readingSince = now;
    return this.epoch;
  }

  /**
   * `leaderboard:initial` of the stream: the top of the board as of its position.
   * @param {{entries?: Entry[], total?: number}} data
   */
  applyInitial(data) {
    const entries = data.entries || [];
    if (this.deep) {
      // Only the top: a deep page learns the total, and is read again (a snapshot comes after
      // a reset or a conflation, when updates may have been skipped).
      this.total = data.total ?? this.total;
      this.stale = true;
      return;
    }
    this.epoch++;
    this._loadPrefix(entries, data.total ?? entries.length);
    this._settle();
  }

  /**
   * The answer of `GET /api/leaderboard?offset=<this.offset>&limit=<size>`, sent at `sentAt`.
   * @param {{entries?: Entry[], total?: number}} page
   * @param {number} sentAt
   * @param {number} epoch what `beginRead` returned
   * @returns {boolean} false when the answer is stale (the page changed or a snapshot came)
   */
  applyRead(page, sentAt, epoch) {
    this.readingSince = null;
    // A snapshot of the stream came meanwhile (or a reset, or another page): the newer word.
    if (epoch !== this.epoch) return false;
    const entries = page.entries || [];
    if (!this.deep) {
      this._loadPrefix(entries, page.total ?? 0);
      // Updates of the last readLagMs before the read, and all during it, again over it.
      for (const u of this.recent) if (u.at >= sentAt - this.readLagMs) this._applyToPrefix(u.changes, u.at, true);
      this._settle();
      return true;
    }
    const old = this.entries;
    this.entries = new Map(entries.map((e) => [e.player_id, { ...e, change: old.get(e.player_id)?.change }]));
    this.order = [...this.entries.values()].sort(byBoardOrder);
    this.total = page.total ?? this.total;
    this.ready = true;
    this.unread = false;
    this.stale = false;
    return true;
  }

  /**
   * `leaderboard:update`. Returns the ids of the players whose rows changed.
   * @param {{changes?: Change[]}} data
   * @param {number} at when it arrived
   * @returns {Set<string>}
   */
  applyUpdate(data, at) {
    // Only rows not older than what the page holds (PulseClient already leaves those out;
    // this keeps the model right whatever feeds it).
    const changes = this.versions.fresh(data.changes || []);
    this.recent.push({ changes, at });
    const keepFrom = Math.min(at, this.readingSince ?? at) - this.readLagMs;
    while (this.recent.length && this.recent[0].at < keepFrom) this.recent.shift();
    if (!this.ready) return new Set();
    if (this.deep) this._applyToDeepPage(changes, at);
    else {
      this._applyToPrefix(changes, at, false);
      this._settle();
    }
    return new Set(changes.map((c) => c.player_id));
  }

  // ---------------------------------------------------------------------------- top page

  /** @param {Key} k whether a player with this key belongs to the known prefix */
  _inPrefix(k) {
    return this.bound === null || !precedes(this.bound, k);
  }

  /** @param {Entry[]} entries the first rows of the board @param {number} total */
  _loadPrefix(entries, total) {
    const old = this.entries;
    this.entries = new Map();
    for (const e of entries) this.entries.set(e.player_id, { ...e, change: old.get(e.player_id)?.change });
    const order = [...this.entries.values()].sort(byBoardOrder);
    const everyone = order.length < this.size || order.length >= total;
    this.total = everyone ? order.length : total;
    const last = order[order.length - 1];
    this.bound = everyone || !last ? null : { rating: last.rating, player_id: last.player_id };
    this.ready = true;
    this.unread = false;
  }

  /**
   * @param {Change[]} changes
   * @param {number} at
   * @param {boolean} overSnapshot replayed over a read that may or may not reflect them
   */
  _applyToPrefix(changes, at, overSnapshot) {
    for (const c of changes) {
      const { previous_rank: prev, delta, version: _v, ...row } = c;
      const had = this.entries.delete(c.player_id);
      const known = this._inPrefix(row);
      if (known) {
        this.entries.set(c.player_id, {
          ...row,
          change: { places: typeof prev === 'number' ? prev - c.rank : null, delta, at },
        });
      }
      // A newcomer is one more player, unless the picture had them already (a snapshot that
      // counted them). Over a re-read, one outside the known part is taken as counted: the
      // re-read is the later word on the total.
      if ((prev === null || prev === undefined) && !had && (known || !overSnapshot)) this.total++;
    }
  }

  /** Sort the known rows, count their ranks, and keep at most size + slack of them. */
  _settle() {
    const order = [...this.entries.values()].sort(byBoardOrder);
    if (order.length > this.size + this.slack) {
      for (const e of order.splice(this.size + this.slack)) this.entries.delete(e.player_id);
      const last = order[order.length - 1];
      this.bound = { rating: last.rating, player_id: last.player_id };
    }
    order.forEach((e, i) => {
      e.rank = i + 1;
    });
    this.order = order;
  }

  // --------------------------------------------------------------------------- deep pages

  /** @param {Change[]} changes @param {number} at */
  _applyToDeepPage(changes, at) {
    const first = this.offset + 1;
    const last = this.offset + this.size;
    for (const c of changes) {
      const { previous_rank: prev, delta, version: _v, ...row } = c;
      const from = typeof prev === 'number' ? prev : Infinity; // a newcomer comes from below all
      if (prev === null || prev === undefined) this.total++;
      const low = Math.min(from, c.rank);
      const high = Math.max(from, c.rank);
      if (high < first || low > last) continue; // before the page or after it: no row moves
      const inside = from >= first && from <= last && c.rank >= first && c.rank <= last;
      if (!inside || !this.entries.has(c.player_id)) {
        this.stale = true;
        this.lastCrossing = at;
      }
      this.entries.delete(c.player_id);
      if (c.rank >= first && c.rank <= last) {
        this.entries.set(c.player_id, { ...row, change: { places: Number.isFinite(from) ? from - c.rank : null, delta, at } });
      }
    }
    const order = [...this.entries.values()].sort(byBoardOrder);
    // Rows that moved within the page are counted from its first rank; a crossing change is
    // corrected by the read that follows it.
    order.forEach((e, i) => {
      e.rank = this.offset + i + 1;
    });
    this.order = order;
  }
}

/**
 * The signed-in player's own row (from their events, the board, or their window) and the rows
 * around it (from the last `leaderboard:window` of `leaderboard:around:{me}:{radius}`).
 */
export class YouModel {
  /** @param {string|null} sub @param {number} radius */
  constructor(sub, radius) {
    this.sub = sub;
    this.radius = radius;
    /** @type {Entry|null} */
    this.entry = null;
    /** @type {Entry[]} */
    this.around = [];
    /** Whether a window has come at least once (until then: "Loading…"). */
    this.read = false;
  }

  /** The rank window the "You" panel follows: the server pushes it whenever it changes. */
  get room() {
    return this.sub ? `leaderboard:around:${this.sub}:${this.radius}` : null;
  }

  /**
   * A `leaderboard:window`; false when it is not ours.
   * @param {{window?: string, entries?: Entry[]}} data
   */
  applyWindow(data) {
    if (!data || data.window !== this.room) return false;
    const entries = data.entries || [];
    this.read = true;
    this.around = entries;
    const own = entries.find((e) => e.player_id === this.sub);
    if (own) this.entry = { ...own };
    return true;
  }

  /**
   * The player's own row as an event gives it (`leaderboard:player_rank`,
   * `player:stats_update`, their change in a `leaderboard:update`); false when not ours.
   * @param {Partial<Entry> & {player_id?: string}} data
   */
  applyOwnRow(data) {
    if (!this.sub || data?.player_id !== this.sub) return false;
    const base = this.entry || { rank: 0, player_id: this.sub, name: this.sub, rating: 0, wins: 0, losses: 0, draws: 0 };
    /** @type {Entry} */
    const entry = { ...base };
    for (const k of /** @type {(keyof Entry)[]} */ (['rank', 'name', 'rating', 'wins', 'losses', 'draws'])) {
      if (data[k] !== undefined && data[k] !== null) /** @type {any} */ (entry)[k] = data[k];
    }
    this.entry = entry;
    return true;
  }

  /**
   * Our row as the board shows it when the top page holds it (the same rank in both places).
   * @param {BoardModel} board
   */
  syncFromBoard(board) {
    if (!this.sub || board.deep || !board.ready) return false;
    const e = board.entries.get(this.sub);
    if (!e || e.rank > board.size) return false;
    const { change: _c, ...row } = e;
    this.entry = { ...row };
    return true;
  }
}
