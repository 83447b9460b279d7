import { api, session } from './api.js';
import { h, field, errorBox, showError, busy } from './dom.js';

export function passwordScreen() {
  const current = h('input', { type: 'password', name: 'currentPassword', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', name: 'newPassword', autocomplete: 'new-password', required: true });
  const again = h('input', { type: 'password', name: 'confirmPassword', autocomplete: 'new-password', required: true });
  const save = h('button', { type: 'submit', class: 'primary' }, 'Change password');
  const error = errorBox();
  const done = h('p', { class: 'notice', role: 'status', hidden: true });
  const form = h('form', { class: 'card narrow', id: 'password-form' },
    h('h1', {}, 'Change your password'),
    field('Current password', current), field('New password', next), field('New password again', again),
    error, done, save);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError(error, '');
    done.hidden = true;
    if (next.value !== again.value) {
      showError(error, 'The two new passwords differ.');
      return;
    }
    busy(save, async () => {
      try {
        const res = await api('POST', '/api/auth/password', { currentPassword: current.value, newPassword: next.value });
        form.reset();
        if (res && res.token) {
          session.save(res.token, res.user || session.user());
          done.textContent = 'Password changed.';
          done.hidden = false;
        } else {
          // Tokens issued before a password change are no longer accepted: log in afresh.
          session.clear();
          session.flash('Password changed. Log in with the new password.');
          location.hash = '#/login';
        }
      } catch (e) {
        showError(error, e.message);
      }
    });
  });
  return form;
}
