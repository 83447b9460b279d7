import { api, session } from './api.js';
import { h, field, errorBox, showError, busy } from './dom.js';

export function loginScreen(onLogin) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const error = errorBox();
  const flash = session.peekFlash();
  const form = h('form', { class: 'card narrow', id: 'login-form' },
    h('h1', {}, 'Log in'),
    flash ? h('p', { class: 'notice', role: 'status' }, flash) : null,
    field('Email', email),
    field('Password', password),
    error,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(error, '');
    await busy(submit, async () => {
      try {
        const res = await api('POST', '/api/auth/login', { email: email.value.trim(), password: password.value });
        session.save(res.token, res.user);
        password.value = '';
        onLogin();
      } catch (e) {
        showError(error, e.message);
        password.select();
      }
    });
  });
  setTimeout(() => email.focus(), 0);
  return form;
}
