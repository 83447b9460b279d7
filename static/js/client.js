// One client: profile, KYC, accounts (with balance and leverage changes), ledger, notes and the
// activity timeline. Every value from the API is put on the page as text.

import { api, can, newIdempotencyKey, query } from './api.js';
import {
  h, field, select, table, errorBox, showError, showNotice, noticeBox, keepDraft, busy, when, jsonText, replace,
} from './dom.js';
import { parseMoney, formatMoney, addMoney, isNegative, signedAmount } from './money.js';
import { clientName, kycBadge } from './clients.js';

const FUNDS = ['real', 'demo', 'bonus'];
const KYC = [['pending', 'Pending'], ['in_review', 'In review'], ['approved', 'Approved'], ['rejected', 'Rejected']];

export async function clientScreen(id) {
  const path = `/api/clients/${encodeURIComponent(id)}`;
  const data = await api('GET', path);
  // Each account picker keeps its own choice (by key) across reloads; none follows another.
  // `notices` are the success lines of the sections a reload redraws, to fill after it.
  const ctx = { id, path, data, selected: {}, notices: {} };

  const heading = h('div', { class: 'client-head' });
  const profile = h('section', { class: 'card', id: 'profile' });
  const kyc = h('section', { class: 'card', id: 'kyc' });
  const accounts = h('section', { class: 'card wide', id: 'accounts' });
  const ledger = h('section', { class: 'card wide', id: 'ledger' });
  const notes = h('section', { class: 'card', id: 'notes' });
  const activity = h('section', { class: 'card', id: 'activity' });

  ctx.reload = async () => {
    ctx.data = await api('GET', path);
    renderHead(heading, ctx);
    renderProfile(profile, ctx);
    renderKyc(kyc, ctx);
    renderAccounts(accounts, ctx);
    renderLedger(ledger, ctx);
    renderActivity(activity, ctx);
  };
  renderHead(heading, ctx);
  renderProfile(profile, ctx);
  renderKyc(kyc, ctx);
  renderAccounts(accounts, ctx);
  renderLedger(ledger, ctx);
  renderNotes(notes, ctx);
  renderActivity(activity, ctx);

  return h('div', { class: 'client-page' },
    h('p', {}, h('a', { href: '#/clients' }, '← All clients')),
    heading,
    h('div', { class: 'grid' }, profile, kyc, accounts, ledger, notes, activity));
}

function allAccounts(data) {
  return [data.account, ...(data.subaccounts || [])].filter(Boolean);
}

/**
 * "Primary USD · …9f2c41d7", "Subaccount 2 EUR · …": subaccounts are numbered in the order they
 * were opened (the API lists them so). The id's tail, not its head: ids are UUIDv7, whose first
 * digits are a timestamp that two accounts opened in the same minute share.
 */
function accountLabel(a, data) {
  const n = (data.subaccounts || []).findIndex((s) => s.id === a.id);
  const kind = n < 0 ? 'Primary' : `Subaccount ${n + 1}`;
  return `${kind} ${a.currency} · …${String(a.id).slice(-8)}`;
}

function accountSelect(ctx, key, name) {
  const { data } = ctx;
  const el = select({ name }, allAccounts(data).map((a) => [a.id, accountLabel(a, data)]), ctx.selected[key]);
  el.addEventListener('change', () => { ctx.selected[key] = el.value; });
  return el;
}

function renderHead(el, { data }) {
  const c = data.client;
  const status = h('p', { class: 'notice', role: 'status', hidden: true });
  const error = errorBox();
  let impersonate = null;
  if (can('impersonate')) {
    impersonate = h('button', { type: 'button', id: 'impersonate' }, 'Impersonate');
    impersonate.addEventListener('click', () => busy(impersonate, async () => {
      showError(error, '');
      try {
        const res = await api('POST', `/api/clients/${encodeURIComponent(c.id)}/impersonate`);
        // noopener: the trading platform's tab gets no handle back to this one.
        window.open(res.ssoUrl, '_blank', 'noopener,noreferrer');
        status.textContent = `Opened the trading platform as ${c.email} in a new tab.`;
        status.hidden = false;
      } catch (e) {
        showError(error, e.message);
      }
    }));
  }
  replace(el,
    h('div', {},
      h('h1', { id: 'client-title' }, clientName(c)),
      h('p', { class: 'muted' }, c.email, ' · ', c.platformClientId || '')),
    h('div', { class: 'actions' }, impersonate, status, error));
}

function renderProfile(el, { data }) {
  const c = data.client;
  const rows = [
    ['First name', c.firstName], ['Last name', c.lastName], ['Email', c.email], ['Phone', c.phone],
    ['Platform id', c.platformClientId], ['CRM id', c.id], ['Registered', when(c.createdAt)],
    ['Updated', when(c.updatedAt)],
  ];
  replace(el, h('h2', {}, 'Profile'),
    h('dl', { class: 'pairs' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '')])));
}

function renderKyc(el, ctx) {
  const c = ctx.data.client;
  const parts = [h('h2', {}, 'KYC'),
    h('p', {}, 'Status: ', kycBadge(c.kycStatus)),
    c.kycNotes ? h('p', { class: 'pre' }, c.kycNotes) : null];
  if (can('changeKyc')) {
    const status = select({ name: 'kycStatus' }, KYC, c.kycStatus);
    const notes = h('textarea', { name: 'kycNotes', rows: 2 });
    notes.value = c.kycNotes || '';
    // Only the text is kept: a status picked long ago and restored later could be saved by mistake.
    keepDraft(notes, `kyc-notes.${c.id}`);
    const save = h('button', { type: 'submit', class: 'primary' }, 'Save KYC');
    const error = errorBox();
    const done = noticeBox('kyc-done');
    ctx.notices.kyc = done;
    const form = h('form', { id: 'kyc-form' }, field('New status', status), field('KYC notes', notes), error, done, save);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(save, async () => {
        showError(error, '');
        showNotice(done, '');
        try {
          await api('PATCH', `${ctx.path}/kyc`, { kycStatus: status.value, kycNotes: notes.value });
          const saved = status.selectedOptions[0].textContent;
          await ctx.reload();
          showNotice(ctx.notices.kyc, `KYC saved: status ${saved}.`);
        } catch (e) {
          showError(error, e.message);
        }
      });
    });
    parts.push(form);
  }
  replace(el, parts);
}

function renderAccounts(el, ctx) {
  const { data } = ctx;
  const money = (key) => (a) => h('span', { class: `money bal-${key}`, 'data-account': a.id }, a[key]);
  const rows = table([
    ['Account', (a) => accountLabel(a, data)],
    ['Leverage', (a) => h('span', { class: 'leverage', 'data-account': a.id }, `1:${a.leverage}`)],
    ['Real', money('realBalance')],
    ['Demo', money('demoBalance')],
    ['Bonus', money('bonusBalance')],
    ['Total', money('balance')],
    ['Equity', money('equity')],
  ], allAccounts(data));
  ctx.notices.accounts = noticeBox('accounts-done');
  const parts = [h('h2', {}, 'Accounts'), ctx.notices.accounts, h('div', { class: 'scroll' }, rows)];
  if (can('money')) {
    parts.push(h('div', { class: 'forms' }, adjustForm(ctx), leverageForm(ctx), subaccountForm(ctx)));
  }
  replace(el, parts);
}

/** Adjust balance in two steps: the form, then a confirmation with before and after. */
function adjustForm(ctx) {
  const account = accountSelect(ctx, 'adjust', 'account');
  const fund = select({ name: 'fundType' }, FUNDS, 'real');
  const amount = h('input', { name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true, placeholder: '100.00 or -50.00' });
  const notes = h('input', { name: 'notes', autocomplete: 'off' });
  const review = h('button', { type: 'submit', class: 'primary' }, 'Review…');
  const error = errorBox();
  const confirm = h('div', { id: 'adjust-confirm', class: 'confirm', tabindex: -1, hidden: true });
  const form = h('form', { id: 'adjust-form' },
    h('h3', {}, 'Adjust balance'),
    field('Account', account),
    field('Fund', fund),
    field('Amount', amount, 'Positive credits, negative debits. Up to 8 decimals.'),
    field('Reason (notes)', notes),
    error, review);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError(error, '');
    showNotice(ctx.notices.accounts, '');
    const atoms = parseMoney(amount.value);
    if (atoms === null || atoms === 0n) {
      showError(error, 'Enter a non-zero amount such as 100.00 or -50.25 (at most 8 decimals).');
      return;
    }
    const change = formatMoney(atoms);
    busy(review, async () => {
      try {
        // The figures to confirm are the account as it is now: money may have moved since the
        // page was opened (a deposit, a withdrawal, another member of staff).
        const acct = await api('GET', `/api/accounts/${encodeURIComponent(account.value)}`);
        showConfirm(confirm, ctx, { acct, fundType: fund.value, change, notes: notes.value }, () => {
          form.hidden = false;
          confirm.hidden = true;
          amount.focus();
        });
        form.hidden = true;
      } catch (e) {
        showError(error, e.message);
      }
    });
  });
  return h('div', { class: 'subform' }, form, confirm);
}

function showConfirm(box, ctx, { acct, fundType, change, notes }, back) {
  const key = `${fundType}Balance`;
  const after = addMoney(acct[key], change);
  const rows = [
    ['Account', accountLabel(acct, ctx.data)],
    ['Fund', fundType],
    ['Change', change],
    [`${fundType} before`, acct[key]],
    [`${fundType} after`, after],
    ['Total before', acct.balance],
    ['Total after', addMoney(acct.balance, change)],
  ];
  const ok = h('button', { type: 'button', class: 'primary', id: 'adjust-confirm-button' }, 'Confirm adjustment');
  const cancel = h('button', { type: 'button' }, 'Back');
  const error = errorBox();
  // One key per confirmation: pressing Confirm again after an answer was lost (a dropped
  // connection, a timeout) cannot book the adjustment twice. Back and a new review get a new key.
  const idempotencyKey = newIdempotencyKey();
  cancel.addEventListener('click', back);
  ok.addEventListener('click', () => busy(ok, async () => {
    showError(error, '');
    try {
      const now = await api('POST', `/api/accounts/${encodeURIComponent(acct.id)}/adjust-balance`, { amount: change, fundType, notes },
        { 'Idempotency-Key': idempotencyKey });
      await ctx.reload();
      showNotice(ctx.notices.accounts, `Booked ${signedAmount(change)} ${fundType} on ${accountLabel(now, ctx.data)}; `
        + `${fundType} funds are now ${now[key]} ${now.currency}.`);
    } catch (e) {
      showError(error, e.message);
    }
  }));
  // A fund cannot go below zero (the API refuses it): say so rather than offer a Confirm that
  // can only fail.
  const overdrawn = isNegative(after)
    ? h('p', { class: 'error', role: 'alert' },
      `Not possible: ${fundType} funds would become ${after} ${acct.currency}. `,
      `Only ${acct[key]} ${acct.currency} ${fundType} is available. Go back and change the amount.`)
    : null;
  replace(box,
    h('h3', {}, 'Confirm balance adjustment'),
    h('dl', { class: 'pairs' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', { class: 'money' }, v ?? '')])),
    overdrawn,
    error,
    h('div', { class: 'actions' }, overdrawn ? null : ok, cancel));
  box.hidden = false;
  // The panel takes the focus, not Confirm: an Enter held down or pressed twice on the form
  // would otherwise book the adjustment without it ever being reviewed.
  box.focus();
}

function leverageForm(ctx) {
  const account = accountSelect(ctx, 'leverage', 'account');
  const current = () => allAccounts(ctx.data).find((a) => a.id === account.value)?.leverage ?? '';
  const leverage = h('input', { name: 'leverage', type: 'number', min: 1, max: 500, step: 1, required: true, value: current() });
  account.addEventListener('change', () => { leverage.value = current(); });
  const save = h('button', { type: 'submit', class: 'primary' }, 'Change leverage');
  const error = errorBox();
  const form = h('form', { id: 'leverage-form', class: 'subform' },
    h('h3', {}, 'Leverage'), field('Account', account), field('Leverage (1 to 500)', leverage), error, save);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError(error, '');
    showNotice(ctx.notices.accounts, '');
    if (!/^\d{1,3}$/.test(leverage.value) || +leverage.value < 1 || +leverage.value > 500) {
      showError(error, 'Leverage must be a whole number from 1 to 500.');
      return;
    }
    busy(save, async () => {
      try {
        const now = await api('PATCH', `/api/accounts/${encodeURIComponent(account.value)}/leverage`, { leverage: Number(leverage.value) });
        await ctx.reload();
        showNotice(ctx.notices.accounts, `Leverage of ${accountLabel(now, ctx.data)} is now 1:${now.leverage}.`);
      } catch (e) {
        showError(error, e.message);
      }
    });
  });
  return form;
}

function subaccountForm(ctx) {
  const currency = h('input', { name: 'currency', maxlength: 3, value: ctx.data.account?.currency || 'USD', autocomplete: 'off' });
  const leverage = h('input', { name: 'leverage', type: 'number', min: 1, max: 500, step: 1, value: 100 });
  const save = h('button', { type: 'submit' }, 'Open subaccount');
  const error = errorBox();
  const form = h('form', { id: 'subaccount-form', class: 'subform' },
    h('h3', {}, 'New subaccount'), field('Currency', currency), field('Leverage', leverage), error, save);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(save, async () => {
      showError(error, '');
      showNotice(ctx.notices.accounts, '');
      try {
        const body = { currency: currency.value.trim().toUpperCase() };
        if (leverage.value) body.leverage = Number(leverage.value);
        const opened = await api('POST', `${ctx.path}/subaccounts`, body);
        await ctx.reload();
        showNotice(ctx.notices.accounts, `Opened ${accountLabel(opened, ctx.data)} with leverage 1:${opened.leverage}.`);
      } catch (e) {
        showError(error, e.message);
      }
    });
  });
  return form;
}

function renderLedger(el, ctx) {
  const account = accountSelect(ctx, 'ledger', 'ledger-account');
  const body = h('div', {});
  const error = errorBox();
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  let cursor = '';
  let entries = [];
  // Only the answer to the latest request is shown: switching accounts while a page is on its
  // way must not mix that page (or its cursor) into the other account's ledger. A switch forgets
  // the other account's entries and cursor at once, so "Older entries" cannot ask for them.
  let latest = 0;
  async function load(reset) {
    const mine = ++latest;
    if (reset) {
      entries = [];
      cursor = '';
      more.hidden = true;
      body.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
    }
    const [shown, before] = [entries, cursor];
    showError(error, '');
    try {
      const res = await api('GET', `/api/accounts/${encodeURIComponent(account.value)}/ledger${query({ before, limit: 50 })}`);
      if (mine !== latest) return;
      entries = shown.concat(res.entries || []);
      cursor = res.nextCursor || '';
      more.hidden = !cursor;
      body.replaceChildren(entries.length
        ? table([
          ['When', (e) => when(e.createdAt)],
          ['Fund', (e) => e.fundType],
          ['Amount', (e) => h('span', { class: 'money' }, e.amount)],
          ['Balance after', (e) => h('span', { class: 'money' }, e.balanceAfter)],
          ['Reason', (e) => e.reason],
          ['Notes', (e) => e.notes],
          ['By', (e) => e.actor],
          ['Reference', (e) => e.externalRef],
        ], entries)
        : h('p', { class: 'empty' }, 'No ledger entries yet.'));
    } catch (e) {
      if (mine === latest) showError(error, e.message);
    }
  }
  account.addEventListener('change', () => load(true));
  more.addEventListener('click', () => busy(more, () => load(false)));
  replace(el, h('h2', {}, 'Ledger'), field('Account', account), error, h('div', { class: 'scroll' }, body), more);
  if (account.value) load(true);
}

function renderNotes(el, ctx) {
  const list = h('ul', { class: 'notes', id: 'notes-list' });
  const comment = h('textarea', { name: 'comment', rows: 3, required: true });
  keepDraft(comment, `note.${ctx.id}`);
  const add = h('button', { type: 'submit', class: 'primary' }, 'Add note');
  const error = errorBox();
  const done = noticeBox('note-done');
  const form = h('form', { id: 'note-form' }, field('New note', comment), error, done, add);
  async function load() {
    list.replaceChildren(h('li', { class: 'loading' }, 'Loading…'));
    try {
      const res = await api('GET', `${ctx.path}/notes`);
      const notes = res.notes || [];
      list.replaceChildren(...(notes.length
        ? notes.map((n) => h('li', {}, h('p', { class: 'pre note-text' }, n.comment), h('small', { class: 'muted' }, n.author, ' · ', when(n.createdAt))))
        : [h('li', { class: 'empty' }, 'No notes yet.')]));
    } catch (e) {
      list.replaceChildren();
      showError(error, e.message);
    }
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(add, async () => {
      showError(error, '');
      showNotice(done, '');
      try {
        await api('POST', `${ctx.path}/notes`, { comment: comment.value });
        comment.value = '';
        showNotice(done, 'Note added.');
        await load();
        renderActivity(document.getElementById('activity'), ctx);
      } catch (e) {
        showError(error, e.message);
      }
    });
  });
  replace(el, h('h2', {}, 'Notes'), form, list);
  load();
}

function renderActivity(el, ctx) {
  const list = h('ol', { class: 'timeline', id: 'activity-list' });
  const error = errorBox();
  const more = h('button', { type: 'button', hidden: true }, 'Older activity');
  let cursor = '';
  async function load() {
    try {
      const res = await api('GET', `${ctx.path}/activity${query({ before: cursor, limit: 30 })}`);
      const items = res.activity || [];
      if (!cursor) list.replaceChildren();
      for (const a of items) {
        const details = jsonText(a.details);
        list.appendChild(h('li', {},
          h('div', {}, h('span', { class: 'badge' }, a.type), ' ', h('time', { datetime: a.at }, when(a.at))),
          h('div', { class: 'summary' }, a.summary),
          details ? h('details', {}, h('summary', {}, 'Details'), h('pre', {}, details)) : null));
      }
      if (!list.children.length) list.appendChild(h('li', { class: 'empty' }, 'No activity yet.'));
      cursor = res.nextCursor || '';
      more.hidden = !cursor;
    } catch (e) {
      showError(error, e.message);
    }
  }
  more.addEventListener('click', () => busy(more, load));
  list.appendChild(h('li', { class: 'loading' }, 'Loading…'));
  replace(el, h('h2', {}, 'Activity'), error, list, more);
  load();
}
