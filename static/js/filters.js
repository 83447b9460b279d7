// The filter form shared by the audit and webhook logs: the filters live in the page's hash
// (#/audit?actor=...), so Back works and a filtered view can be bookmarked.

import { h, field, select } from './dom.js';
import { query } from './api.js';

/**
 * fields: [{name, label, options?}]; `from`/`to` are datetime-local inputs sent as RFC 3339 UTC.
 * Returns {form, values()} where values() gives the API query parameters.
 */
export function filterForm(route, params, fields) {
  const inputs = {};
  for (const f of fields) {
    const value = params.get(f.name) || '';
    if (f.options) {
      inputs[f.name] = select({ name: f.name }, [['', 'Any'], ...f.options], value);
    } else if (f.name === 'from' || f.name === 'to') {
      inputs[f.name] = h('input', { type: 'datetime-local', name: f.name, value: toLocalInput(value) });
    } else {
      inputs[f.name] = h('input', { type: 'text', name: f.name, value, autocomplete: 'off' });
    }
  }
  const values = () => {
    const out = {};
    for (const [name, input] of Object.entries(inputs)) {
      const v = input.value.trim();
      out[name] = (name === 'from' || name === 'to') && v ? new Date(v).toISOString() : v;
    }
    return out;
  };
  const form = h('form', { class: 'filters' },
    fields.map((f) => field(f.label, inputs[f.name])),
    h('div', { class: 'filter-buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Filter'),
      h('a', { href: `#/${route}`, class: 'button' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/${route}${query(values())}`;
  });
  return { form, values };
}

/** The current filters from the hash, as API query parameters. */
export function paramsObject(params, names) {
  const out = {};
  for (const n of names) out[n] = params.get(n) || '';
  return out;
}

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}
