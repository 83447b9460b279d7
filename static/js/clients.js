import { api, query } from './api.js';
import { h, field, table, errorBox, showError, when } from './dom.js';

const PAGE = 25;

export function clientName(c) {
  return [c.firstName, c.lastName].filter(Boolean).join(' ') || '(no name)';
}

/** The client list: a search box and cursor paging (forward with nextCursor, back with a stack). */
export async function clientsScreen(params) {
  const q = params.get('q') || '';
  const search = h('input', { type: 'search', name: 'q', value: q, placeholder: 'Name, email, phone or platform id' });
  const form = h('form', { class: 'toolbar', role: 'search' },
    field('Search clients', search),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/clients${query({ q: search.value.trim() })}`;
  });

  const results = h('div', { class: 'results' });
  const error = errorBox();
  const cursors = []; // the cursors of the pages before the one shown
  let current = '';

  async function load(after) {
    results.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
    showError(error, '');
    try {
      const res = await api('GET', `/api/clients${query({ q, after, limit: PAGE })}`);
      current = after;
      results.replaceChildren(render(res));
    } catch (e) {
      results.replaceChildren();
      showError(error, e.message);
    }
  }

  function render(res) {
    const clients = res.clients || [];
    const list = clients.length
      ? table([
        ['Name', (c) => h('a', { href: `#/clients/${encodeURIComponent(c.id)}`, class: 'client-name' }, clientName(c))],
        ['Email', (c) => c.email],
        ['Platform id', (c) => c.platformClientId],
        ['Phone', (c) => c.phone],
        ['KYC', (c) => kycBadge(c.kycStatus)],
        ['Registered', (c) => when(c.createdAt)],
      ], clients)
      : h('p', { class: 'empty' }, q ? 'No client matches this search.' : 'No clients yet.');
    const prev = h('button', { type: 'button', disabled: cursors.length === 0 }, '← Previous');
    const next = h('button', { type: 'button', disabled: !res.nextCursor }, 'Next →');
    prev.addEventListener('click', () => load(cursors.pop()));
    next.addEventListener('click', () => {
      cursors.push(current);
      load(res.nextCursor);
    });
    return h('div', {}, h('div', { class: 'scroll' }, list), h('div', { class: 'pager' }, prev, next));
  }

  await load('');
  return h('section', {}, h('h1', {}, 'Clients'), form, error, results);
}

export function kycBadge(status) {
  return h('span', { class: `badge kyc-${String(status).replace(/[^a-z_]/g, '')}` }, String(status || '').replace('_', ' '));
}
