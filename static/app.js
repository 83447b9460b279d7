// The admin page: a hash router over a handful of screens. No build step, no dependencies:
// each screen is a module in js/ that renders into <main id="app"> with DOM calls only.

import { api, can, endSession, session, setUnauthorizedHandler } from './js/api.js';
import { replace, h, saveDrafts, showError } from './js/dom.js';
import { loginScreen } from './js/login.js';
import { clientsScreen } from './js/clients.js';
import { clientScreen } from './js/client.js';
import { auditScreen } from './js/audit.js';
import { webhooksScreen, webhookScreen } from './js/webhooks.js';
import { staffScreen } from './js/staff.js';
import { passwordScreen } from './js/password.js';

const app = document.getElementById('app');

// Screens by the first part of the hash; `param` is the second part (an id), `params` the query.
const screens = {
  login: () => loginScreen(onLogin),
  clients: ({ param, params }) => (param ? clientScreen(param) : clientsScreen(params)),
  audit: ({ params }) => auditScreen(params),
  webhooks: ({ param, params }) => (param ? webhookScreen(param) : webhooksScreen(params)),
  staff: () => staffScreen(),
  password: () => passwordScreen(),
};
// Screens not every role may open; `can` says who may.
const guarded = new Set(['audit', 'webhooks', 'staff']);

/** The route in the hash, or null when it cannot be read (a malformed %-escape in a link). */
function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  try {
    const [name = '', param = ''] = path.split('/').map(decodeURIComponent);
    return { name, param, params: new URLSearchParams(search) };
  } catch {
    return null;
  }
}

/** A screen that could not be shown, with the way back: the list it belongs to, or Clients. */
function cannotShow(message, route) {
  const back = route?.param && screens[route.name] ? `#/${route.name}` : '#/clients';
  return [
    h('p', { class: 'error', role: 'alert' }, message),
    h('p', {}, h('a', { href: back, id: 'back' }, back === '#/clients' ? '← Clients' : '← Back to the list')),
  ];
}

async function render() {
  const hash = location.hash;
  const route = parseHash();
  const signedIn = Boolean(session.token());
  showChrome(signedIn);
  if (!signedIn && route?.name !== 'login') {
    // A link, a bookmark or a new tab: come back here once logged in.
    if (screens[route?.name]) session.rememberRoute(hash);
    location.hash = '#/login';
    return;
  }
  if (!route) {
    replace(app, cannotShow('Not found: this link is damaged.'));
    return;
  }
  if (signedIn && (route.name === 'login' || !screens[route.name])) {
    location.hash = '#/clients';
    return;
  }
  if (guarded.has(route.name) && !can(route.name)) {
    replace(app, cannotShow('Your role does not give access to this page.'));
    return;
  }
  markCurrent(route.name);
  replace(app, h('p', { class: 'loading' }, 'Loading…'));
  try {
    const view = await screens[route.name](route);
    // A newer navigation may have started while this screen was loading.
    if (location.hash === hash) replace(app, view);
  } catch (e) {
    if (e.status !== 401) replace(app, cannotShow(e.message || String(e), route));
  }
}

function showChrome(signedIn) {
  const user = session.user();
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('session').hidden = !signedIn;
  document.getElementById('whoami').textContent = user ? `${user.name || user.email} (${user.role})` : '';
  for (const link of document.querySelectorAll('#nav [data-guarded]')) {
    link.hidden = !can(link.dataset.nav);
  }
}

function markCurrent(name) {
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function onLogin() {
  location.hash = session.takeRoute() || '#/clients';
}

function logout() {
  // Everything this tab kept goes at once, whatever the network does: the token, a route to
  // return to, unsent drafts. The next person at this screen starts afresh.
  const token = session.token();
  sessionStorage.clear();
  location.hash = '#/login';
  // Then the session ends on the server too, so a copy of the token is worth nothing.
  if (token) endSession(token);
}

setUnauthorizedHandler(() => {
  // What was being typed comes back after the login (see keepDraft).
  saveDrafts();
  session.flash('Your session has ended. Please log in again.');
  if (!location.hash.startsWith('#/login')) session.rememberRoute(location.hash);
  location.hash = '#/login';
});

/**
 * A submit the browser itself refuses (a required field left empty) never reaches the form's
 * handler, which is where errors are cleared: clear them here, or an earlier attempt's message
 * reads as the answer to this one.
 */
function clearErrorsOfRefusedForm(ev) {
  for (const box of ev.target.form?.querySelectorAll('.error') || []) showError(box, '');
}

async function start() {
  document.getElementById('logout').addEventListener('click', logout);
  // `invalid` does not bubble: listen while it travels down.
  document.addEventListener('invalid', clearErrorsOfRefusedForm, true);
  window.addEventListener('hashchange', render);
  if (session.token()) {
    // Refresh who we are (a role may have changed); a 401 here sends us to the login screen.
    try {
      const me = await api('GET', '/api/auth/me');
      session.setUser(me.user || me);
    } catch {
      // Shown by the screen that renders next (or the login screen after a 401).
    }
  }
  render();
}

start();
