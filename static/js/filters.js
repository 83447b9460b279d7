// The filter form shared by the audit and webhook logs: the filters live in the page's hash
// (#/audit?actor=...), so Back works and a filtered view can be bookmarked.

import { h, field, select, showError } from './dom.js';
import { query } from './api.js';

/**
 * fields: [{name, label, options?, hint?}]; `from`/`to` are datetime-local inputs read as UTC,
 * like every time the tables show, and sent as RFC 3339.
 * Returns {form, values()} where values() gives the API query parameters.
 */
export function filterForm(route, params, fields) {
  const inputs = {};
  for (const f of fields) {
    const value = params.get(f.name) || '';
    if (f.options) {
      inputs[f.name] = select({ name: f.name }, [['', 'Any'], ...f.options], value);
    } else if (f.name === 'from' || f.name === 'to') {
      inputs[f.name] = h('input', { type: 'datetime-local', name: f.name, value: toUtcInput(value) });
    } else {
      inputs[f.name] = h('input', { type: 'text', name: f.name, value, autocomplete: 'off', placeholder: f.placeholder });
    }
  }
  const values = () => {
    const out = {};
    for (const [name, input] of Object.entries(inputs)) {
      const v = input.value.trim();
      out[name] = (name === 'from' || name === 'to') && v ? new Date(`${v}Z`).toISOString() : v;
    }
    return out;
  };
  const form = h('form', { class: 'filters' },
    fields.map((f) => field(f.name === 'from' || f.name === 'to' ? `${f.label} (UTC)` : f.label, inputs[f.name], f.hint)),
    h('div', { class: 'filter-buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Filter'),
      h('a', { href: `#/${route}`, class: 'button' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/${route}${query(values())}`;
  });
  return { form, values };
}

/**
 * Loads a log's first page. A failure, such as a bad filter in the URL (`from=garbage`), shows in
 * `errorBox` beside the form, which stays on screen to fix it.
 */
export async function loadFirstPage(load, errorBox) {
  try {
    await load();
  } catch (e) {
    showError(errorBox, e.message);
  }
}

/** The current filters from the hash, as API query parameters. */
export function paramsObject(params, names) {
  const out = {};
  for (const n of names) out[n] = params.get(n) || '';
  return out;
}

function toUtcInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 16);
}
