import { api, can, query } from './api.js';
import { h, table, errorBox, showError, busy, onLoadMore, when, jsonText, replace } from './dom.js';
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

/**
 * Whether the API would re-run this attempt (README, "Staff webhook log"): one whose signature was
 * verified and that took no effect, but never a refused withdrawal, which only the platform may
 * send again. Anything else answers 409, so it is not offered.
 */
function canReprocess(e) {
  return ['current', 'previous'].includes(e.signature)
    && e.event !== 'withdrawal.completed'
    && ['failed', 'rejected', 'conflict'].includes(e.status);
}

/** One received webhook: its metadata, the raw body exactly as received, and re-processing. */
export async function webhookScreen(id) {
  const path = `/api/webhooks/${encodeURIComponent(id)}`;
  const event = await api('GET', path);
  const meta = h('dl', { class: 'pairs card', id: 'webhook-meta' });
  renderMeta(meta, event);
  const result = h('p', { class: 'notice', role: 'status', id: 'reprocess-result', hidden: true });
  const error = errorBox();
  let reprocess = null;
  if (can('reprocess') && canReprocess(event)) {
    reprocess = h('button', { type: 'button', class: 'primary', id: 'reprocess' }, 'Re-process');
    reprocess.addEventListener('click', () => busy(reprocess, async () => {
      showError(error, '');
      result.hidden = true;
      try {
        const res = await api('POST', `${path}/reprocess`);
        try {
          // The original is stamped with this run (reprocessedAt, reprocessedBy): show it so,
          // before the outcome, which then describes a page that is up to date.
          renderMeta(meta, await api('GET', path));
        } finally {
          showResult(result, res.attempt);
        }
      } catch (e) {
        showError(error, e.message);
      }
    }));
  }
  return h('section', {},
    h('p', {}, h('a', { href: '#/webhooks' }, '← Webhook log')),
    h('h1', {}, 'Webhook event'),
    meta,
    h('h2', {}, 'Raw body'),
    h('pre', { class: 'raw', id: 'raw-body' }, event.rawBody ?? ''),
    h('div', { class: 'actions' }, reprocess, result, error));
}

function renderMeta(dl, event) {
  const { rawBody, ...fields } = event;
  replace(dl, Object.entries(fields).map(([k, v]) => [h('dt', {}, k), h('dd', {}, jsonText(v))]));
}

/** A re-run's outcome in words, with a link to the new attempt it recorded. */
function showResult(box, attempt) {
  const why = attempt.error ? `: ${attempt.error}` : '.';
  replace(box,
    `Re-processed as a new attempt, which was ${attempt.status} (HTTP ${attempt.httpStatus})${why} `,
    h('a', { href: `#/webhooks/${encodeURIComponent(attempt.id)}` }, 'Open the new attempt'));
  box.hidden = false;
}
