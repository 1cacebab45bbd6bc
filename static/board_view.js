// @ts-check
/**
 * The board's rendering (DOM only): the rows of a {@link BoardModel} with FLIP movement and
 * ▲/▼ markers, the pager, and the "You" panel of a {@link YouModel}. No state of the board
 * lives here: the model decides, this draws.
 *
 * Test hooks: `#board-body tr[data-player-id][data-rank]`, `#pager[data-offset][data-total]`,
 * `#me-body tr[data-player-id][data-rank]`, `#me-status[data-rank]`.
 *
 * @module board_view
 */

import { $, h, signed, srOnly } from './dom.js';

/**
 * @typedef {import('./board_model.js').BoardModel} BoardModel
 * @typedef {import('./board_model.js').YouModel} YouModel
 * @typedef {import('./board_model.js').Entry} Entry
 */

/** How long a row shows its last movement (▲/▼), ms. */
export const CHANGE_VISIBLE_MS = 15000;

const reducedMotion = matchMedia('(prefers-reduced-motion: reduce)');

export class BoardView {
  /** @param {string|null} me the signed-in player, highlighted */
  constructor(me) {
    this.me = me;
    /** @type {Map<string, HTMLTableRowElement>} */
    this.rowEls = new Map();
  }

  /**
   * Render the board with FLIP movement: remember where each row was, put the rows in rank
   * order, then play each row from its old place to its new one.
   * @param {BoardModel} board
   * @param {Set<string>} changed players to highlight
   */
  render(board, changed) {
    const tbody = $('board-body');
    const sorted = board.rows();
    /** @type {Map<string, number>} */
    const first = new Map();
    for (const [id, tr] of this.rowEls) {
      first.set(id, tr.getBoundingClientRect().top);
      for (const a of tr.getAnimations()) if (a.id === 'flip') a.cancel();
    }
    const keep = new Set();
    for (const e of sorted) {
      let tr = this.rowEls.get(e.player_id);
      if (!tr) {
        tr = /** @type {HTMLTableRowElement} */ (h('tr', { 'data-player-id': e.player_id }));
        this.rowEls.set(e.player_id, tr);
      }
      this.fillRow(tr, e);
      tbody.append(tr); // moves existing rows into order
      keep.add(e.player_id);
    }
    for (const [id, tr] of this.rowEls) {
      if (!keep.has(id)) {
        tr.remove();
        this.rowEls.delete(id);
      }
    }
    if (!reducedMotion.matches) {
      for (const [id, tr] of this.rowEls) {
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
      const tr = this.rowEls.get(id);
      if (!tr) continue;
      tr.classList.remove('flash');
      void tr.offsetWidth; // restart the highlight animation
      tr.classList.add('flash');
    }
    this.renderStatus(board);
  }

  /** @param {BoardModel} board */
  renderStatus(board) {
    const shown = board.rows();
    let text;
    if (!board.ready) text = 'Loading…';
    else if (!shown.length) text = board.deep ? `No players at these ranks (${board.total} players).` : 'No ranked players yet: play a match.';
    else if (!board.deep) text = `Top ${shown.length} of ${board.total} players.`;
    else text = `Ranks ${shown[0].rank}–${shown[shown.length - 1].rank} of ${board.total} players.`;
    $('board-status').textContent = text;
    const pager = $('pager');
    pager.dataset.offset = String(board.offset);
    pager.dataset.total = String(board.total);
    /** @type {HTMLButtonElement} */ ($('page-top')).disabled = board.offset === 0;
    /** @type {HTMLButtonElement} */ ($('page-prev')).disabled = board.offset === 0;
    /** @type {HTMLButtonElement} */ ($('page-next')).disabled = board.offset + board.size >= board.total;
  }

  /**
   * @param {HTMLTableRowElement} tr
   * @param {Entry} e
   */
  fillRow(tr, e) {
    tr.dataset.rank = String(e.rank);
    const isMe = e.player_id === this.me;
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
   * Movement markers fade out after a while.
   * @param {BoardModel} board
   * @param {number} now
   */
  fadeMarkers(board, now) {
    for (const [id, e] of board.entries) {
      if (e.change && now - e.change.at > CHANGE_VISIBLE_MS) {
        delete e.change;
        const cell = this.rowEls.get(id)?.querySelector('.col-change');
        if (cell) cell.replaceChildren();
      }
    }
  }

  /** Bring the signed-in player's row into view, when the page shows it. */
  scrollToMe() {
    if (!this.me) return;
    this.rowEls.get(this.me)?.scrollIntoView({ block: 'center', behavior: reducedMotion.matches ? 'auto' : 'smooth' });
  }
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

/**
 * The "You" panel: the player's row and their window.
 * @param {YouModel} you
 * @param {number} total players on the board, when known
 */
export function renderYou(you, total) {
  const status = $('me-status');
  const me = you.entry;
  if (me) {
    status.textContent = `${me.name || me.player_id}: rank ${me.rank}${total ? ` of ${total}` : ''}, rating ${me.rating.toFixed(1)} (${me.wins}–${me.losses}–${me.draws}).`;
    status.dataset.rank = String(me.rank);
  } else if (you.read) {
    status.textContent = `${you.sub}: no rank yet. Play a match to get one.`;
    delete status.dataset.rank;
  }
  $('me-body').replaceChildren(
    ...you.around.map((e) => {
      const isMe = e.player_id === you.sub;
      return h(
        'tr',
        { 'data-player-id': e.player_id, 'data-rank': e.rank, class: isMe ? 'is-me' : null, 'aria-current': isMe ? 'true' : null },
        h('td', { class: 'col-rank' }, String(e.rank)),
        h('th', { scope: 'row', class: 'col-player' }, e.name || e.player_id, isMe ? h('span', { class: 'you', text: ' (you)' }) : null),
        h('td', { class: 'col-rating' }, e.rating.toFixed(1)),
      );
    }),
  );
  $('me-table').hidden = you.around.length === 0;
  /** @type {HTMLButtonElement} */ ($('page-me')).disabled = !me;
}
