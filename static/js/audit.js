import { api, download, query } from './api.js';
import { h, table, errorBox, showError, busy, onLoadMore, when, jsonText } from './dom.js';
import { filterForm, loadFirstPage, paramsObject } from './filters.js';

const FILTERS = ['actor', 'action', 'outcome', 'target', 'from', 'to'];

export async function auditScreen(params) {
  const { form } = filterForm('audit', params, [
    // Actor, action and target match exactly: the hints show how the log writes them.
    { name: 'actor', label: 'Actor', placeholder: 'staff:admin@example.com', hint: 'staff:<email>, platform:webhook or platform:service' },
    { name: 'action', label: 'Action', placeholder: 'account.adjust_balance', hint: 'as in the table, e.g. client.note_add' },
    { name: 'outcome', label: 'Outcome', options: [['success', 'Success'], ['failure', 'Failure']] },
    { name: 'target', label: 'Target', placeholder: 'client:<id>', hint: 'client:<id>, account:<id>, staff:<email> or webhook:<id>' },
    { name: 'from', label: 'From' },
    { name: 'to', label: 'To' },
  ]);
  const filters = paramsObject(params, FILTERS);
  const error = errorBox();
  const csv = h('button', { type: 'button', id: 'audit-csv' }, 'Download CSV');
  csv.addEventListener('click', () => busy(csv, async () => {
    showError(error, '');
    try {
      // Fetched with the bearer header and saved from a Blob: the token never goes in a URL.
      await download(`/api/audit.csv${query(filters)}`, 'audit.csv');
    } catch (e) {
      showError(error, e.message);
    }
  }));

  const rows = h('tbody', {});
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  let cursor = '';
  async function load() {
    const res = await api('GET', `/api/audit${query({ ...filters, before: cursor, limit: 100 })}`);
    for (const e of res.entries || []) {
      const details = jsonText(e.details);
      rows.appendChild(h('tr', { class: `outcome-${e.outcome === 'failure' ? 'failure' : 'success'}` },
        h('td', {}, when(e.at)),
        h('td', { class: 'audit-actor' }, e.actor),
        h('td', { class: 'audit-action' }, e.action),
        h('td', { class: 'audit-target' }, e.target),
        h('td', {}, e.outcome),
        h('td', {}, e.ip),
        h('td', {}, details ? h('details', {}, h('summary', {}, 'Details'), h('pre', {}, details)) : '')));
    }
    if (!rows.children.length) rows.appendChild(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No entries match.')));
    cursor = res.nextCursor || '';
    more.hidden = !cursor;
  }
  onLoadMore(more, load, error);
  await loadFirstPage(load, error);
  const headings = ['When', 'Actor', 'Action', 'Target', 'Outcome', 'IP', 'Details'];
  return h('section', {},
    h('div', { class: 'title-row' }, h('h1', {}, 'Audit log'), csv),
    form, error,
    h('div', { class: 'scroll' }, h('table', { id: 'audit-table' },
      h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))), rows)),
    more);
}
