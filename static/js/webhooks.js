import { api, query } from './api.js';
import { h, table, errorBox, showError, busy, onLoadMore, when, jsonText } from './dom.js';
import { filterForm, loadFirstPage, paramsObject } from './filters.js';

const FILTERS = ['status', 'event', 'from', 'to'];

export async function webhooksScreen(params) {
  const { form } = filterForm('webhooks', params, [
    { name: 'status', label: 'Status', options: ['processed', 'duplicate', 'rejected', 'unauthorized', 'conflict', 'failed'] },
    { name: 'event', label: 'Event', placeholder: 'deposit.completed', hint: 'the exact event name, e.g. client.registered' },
    { name: 'from', label: 'From' },
    { name: 'to', label: 'To' },
  ]);
  const filters = paramsObject(params, FILTERS);
  const error = errorBox();
  const body = h('div', { class: 'scroll' });
  const more = h('button', { type: 'button', hidden: true }, 'Older events');
  let cursor = '';
  let events = [];
  async function load() {
    const res = await api('GET', `/api/webhooks${query({ ...filters, before: cursor, limit: 100 })}`);
    events = events.concat(res.events || []);
    cursor = res.nextCursor || '';
    more.hidden = !cursor;
    body.replaceChildren(events.length
      ? table([
        ['Received', (e) => h('a', { href: `#/webhooks/${encodeURIComponent(e.id)}` }, when(e.receivedAt))],
        ['Event', (e) => e.event],
        ['Status', (e) => h('span', { class: `badge status-${String(e.status).replace(/[^a-z_]/g, '')}` }, e.status)],
        ['HTTP', (e) => e.httpStatus],
        ['Error', (e) => e.error],
        ['Client', (e) => (e.clientId ? h('a', { href: `#/clients/${encodeURIComponent(e.clientId)}` }, 'Open client') : '')],
      ], events)
      : h('p', { class: 'empty' }, 'No webhook events match.'));
  }
  onLoadMore(more, load, error);
  await loadFirstPage(load, error);
  return h('section', {}, h('h1', {}, 'Webhook log'), form, error, body, more);
}

/** One received webhook: its metadata, the raw body exactly as received, and re-processing. */
export async function webhookScreen(id) {
  const path = `/api/webhooks/${encodeURIComponent(id)}`;
  const event = await api('GET', path);
  const { rawBody, ...meta } = event;
  const result = h('p', { class: 'notice', role: 'status', hidden: true });
  const error = errorBox();
  const reprocess = h('button', { type: 'button', class: 'primary', id: 'reprocess' }, 'Re-process');
  reprocess.addEventListener('click', () => busy(reprocess, async () => {
    showError(error, '');
    result.hidden = true;
    try {
      const res = await api('POST', `${path}/reprocess`);
      result.textContent = `Re-processed: ${jsonText(res)}`;
      result.hidden = false;
    } catch (e) {
      showError(error, e.message);
    }
  }));
  return h('section', {},
    h('p', {}, h('a', { href: '#/webhooks' }, '← Webhook log')),
    h('h1', {}, 'Webhook event'),
    h('dl', { class: 'pairs card' }, Object.entries(meta).map(([k, v]) => [h('dt', {}, k), h('dd', {}, jsonText(v))])),
    h('h2', {}, 'Raw body'),
    h('pre', { class: 'raw', id: 'raw-body' }, rawBody ?? ''),
    h('div', { class: 'actions' }, reprocess, result, error));
}
