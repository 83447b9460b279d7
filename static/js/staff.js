// Staff management (admins only): list, add, change role, disable/enable, reset password.
// Generated passwords are shown once, in a read-only field the admin can copy.

import { api, session } from './api.js';
import { h, field, select, table, errorBox, showError, busy, when, replace } from './dom.js';

const ROLES = ['admin', 'manager', 'agent'];

export async function staffScreen() {
  const list = h('div', { class: 'scroll' });
  const listError = errorBox();
  const secret = h('div', { class: 'secret', hidden: true, role: 'status' });

  function showPassword(label, password) {
    const box = h('input', { type: 'text', readonly: true, value: password, class: 'password-once' });
    replace(secret, h('p', {}, label), field('One-time password (shown only now)', box));
    secret.hidden = false;
    box.select();
  }

  // A password stays on screen only until the next action, so it cannot be read as belonging
  // to whoever was added or reset after it.
  function hidePassword() {
    secret.replaceChildren();
    secret.hidden = true;
  }

  async function load() {
    const res = await api('GET', '/api/staff');
    list.replaceChildren(table([
      ['Name', (u) => u.name],
      ['Email', (u) => u.email],
      ['Role', (u) => roleControl(u)],
      ['Status', (u) => (u.disabled ? 'disabled' : 'active')],
      ['Created', (u) => when(u.createdAt)],
      ['', (u) => rowActions(u)],
    ], res.staff || []));
  }

  /** Runs one row's action; `undo` puts back a control that shows a value not saved. */
  async function change(button, fn, undo = () => {}) {
    await busy(button, async () => {
      showError(listError, '');
      hidePassword();
      try {
        await fn();
        await load();
      } catch (e) {
        undo();
        showError(listError, e.message);
      }
    });
  }

  function roleControl(u) {
    const self = u.id === session.user()?.id;
    const control = select({ 'aria-label': `Role of ${u.email}`, disabled: self }, ROLES, u.role);
    control.addEventListener('change', () => change(control,
      () => api('PATCH', `/api/staff/${encodeURIComponent(u.id)}`, { role: control.value }),
      () => { control.value = u.role; }));
    return control;
  }

  function rowActions(u) {
    if (u.id === session.user()?.id) return h('span', { class: 'muted' }, 'you');
    const toggle = h('button', { type: 'button' }, u.disabled ? 'Enable' : 'Disable');
    toggle.addEventListener('click', () => change(toggle, () => api('PATCH', `/api/staff/${encodeURIComponent(u.id)}`, { disabled: !u.disabled })));
    const reset = h('button', { type: 'button' }, 'Reset password');
    reset.addEventListener('click', () => change(reset, async () => {
      const res = await api('POST', `/api/staff/${encodeURIComponent(u.id)}/reset-password`);
      showPassword(`New password for ${u.email}:`, res.password);
    }));
    return h('div', { class: 'actions' }, toggle, reset);
  }

  const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off' });
  const name = h('input', { type: 'text', name: 'name', required: true, autocomplete: 'off' });
  const role = select({ name: 'role' }, ROLES, 'agent');
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password' });
  const add = h('button', { type: 'submit', class: 'primary' }, 'Add staff member');
  const addError = errorBox();
  const form = h('form', { class: 'card', id: 'staff-form' },
    h('h2', {}, 'Add a staff member'),
    field('Email', email), field('Name', name), field('Role', role),
    field('Password', password, 'Leave empty to generate one.'),
    addError, add);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(add, async () => {
      showError(addError, '');
      hidePassword();
      try {
        const body = { email: email.value.trim(), name: name.value.trim(), role: role.value };
        if (password.value) body.password = password.value;
        const res = await api('POST', '/api/staff', body);
        if (res.password) showPassword(`Password for ${res.user?.email || body.email}:`, res.password);
        form.reset();
        await load();
      } catch (e) {
        showError(addError, e.message);
      }
    });
  });

  await load();
  return h('section', {}, h('h1', {}, 'Staff'), listError, secret, list, form);
}
