// Building DOM nodes without ever parsing HTML: every string becomes a text node, so values from
// the database (client names arrive from webhooks and may be hostile) can only ever be text.

/**
 * h('button', {class: 'primary', type: 'submit', onclick: fn}, 'Save', otherNode)
 * Attributes are set with setAttribute (or as listeners for on*), children may be nodes,
 * strings, numbers, null/false (skipped) or arrays of those.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces everything inside `parent` with `children`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A labelled form field; `input` is the control, `hint` optional help text. */
export function field(labelText, input, hint) {
  if (!input.id) input.id = uid(labelText);
  return h('div', { class: 'field' },
    h('label', { for: input.id }, labelText),
    input,
    hint ? h('small', { class: 'hint' }, hint) : null);
}

let counter = 0;
function uid(base) {
  counter += 1;
  return `f-${String(base).toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${counter}`;
}

/** Where drafts are kept in sessionStorage (see `keepDraft`). */
export const DRAFT_PREFIX = 'crm.draft.';

/** The inputs whose text is kept across a session that ends (see `keepDraft`), by storage key. */
const drafted = new Map();

/**
 * Keeps what is typed into `input` across a session that ends mid-sentence: `saveDrafts` stores
 * it when the session ends, if it differs from what the input was given, and after the login the
 * page comes back with it, once. Nothing is kept otherwise, so a draft never stands in for what
 * the server holds now.
 */
export function keepDraft(input, key) {
  const name = `${DRAFT_PREFIX}${key}`;
  const given = input.value;
  const saved = sessionStorage.getItem(name);
  if (saved !== null) {
    input.value = saved;
    sessionStorage.removeItem(name);
  }
  drafted.set(name, { input, given });
}

/** Stores the typed text of every kept input still on the page: the session has just ended. */
export function saveDrafts() {
  for (const [name, { input, given }] of drafted) {
    if (input.isConnected && input.value !== given) sessionStorage.setItem(name, input.value);
  }
}

/** A paragraph that shows a form's error message, announced to screen readers. */
export function errorBox() {
  return h('p', { class: 'error', role: 'alert', hidden: true });
}

/** Shows `message` in an error or notice box, or hides the box when the message is empty. */
export function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}
export { showError as showNotice };

/**
 * A paragraph that says what was just saved, so nobody enters it a second time believing the
 * first went nowhere (forms reset after a save).
 */
export function noticeBox(id) {
  return h('p', { class: 'notice', role: 'status', id, hidden: true });
}

/** A select with the given options; each option is a value or [value, label]. */
export function select(attrs, options, selected) {
  const el = h('select', attrs);
  for (const opt of options) {
    const [value, label] = Array.isArray(opt) ? opt : [opt, opt];
    const o = h('option', { value }, label);
    if (value === selected) o.selected = true;
    el.appendChild(o);
  }
  return el;
}

/** A table with a header row and one row per item, `columns` = [[heading, item => cell], ...]. */
export function table(columns, items, rowAttrs) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map(([heading]) => h('th', { scope: 'col' }, heading)))),
    h('tbody', {}, items.map((item) =>
      h('tr', rowAttrs ? rowAttrs(item) : {}, columns.map(([, cell]) => h('td', {}, cell(item)))))));
}

/** A "more" button that loads the next page, showing a failure in `errorBox`. */
export function onLoadMore(button, load, errorBox) {
  button.addEventListener('click', () => busy(button, async () => {
    try {
      await load();
    } catch (e) {
      showError(errorBox, e.message);
    }
  }));
}

/** Runs `work` while `button` shows it is busy, so a double click cannot submit twice. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Timestamps from the API (RFC 3339) shown as "2025-10-13 19:00:00 UTC". */
export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Any JSON value as readable text (for audit details and the like). */
export function jsonText(value) {
  if (value === null || value === undefined || value === '') return '';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}
