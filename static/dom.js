// @ts-check
/**
 * Small DOM helpers shared by the page's views.
 * @module dom
 */

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el;
}

/**
 * Create an element with attributes and children (text is always text, never HTML:
 * player names come from users).
 * @param {string} tag
 * @param {Record<string, string|number|boolean|null|undefined>} [attrs]
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
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
export function srOnly(text) {
  return h('span', { class: 'visually-hidden', text });
}

/** @param {number} x */
export function signed(x) {
  const v = Math.round(x * 10) / 10;
  return `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(v).toFixed(1)}`;
}

/** @param {number|undefined} ts */
export function timeOf(ts) {
  const d = new Date(ts || Date.now());
  return h('time', { datetime: d.toISOString(), text: d.toLocaleTimeString([], { hour12: false }) });
}
