// Talking to the staff API. The bearer token lives in sessionStorage only (never a cookie, never
// a URL), so it dies with the tab and is never sent anywhere the page does not send it itself.

import { DRAFT_PREFIX } from './dom.js';

const TOKEN_KEY = 'crm.token';
const USER_KEY = 'crm.user';
const FLASH_KEY = 'crm.flash';
const ROUTE_KEY = 'crm.route';
/** Who last logged in at this tab: the work kept for the next login (a route, drafts) is theirs. */
const OWNER_KEY = 'crm.owner';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onUnauthorized = () => {};

/** What to do when the API answers 401 (the app sends the user back to the login screen). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || 'null');
    } catch {
      return null;
    }
  },
  save(token, user) {
    // Someone else logging in at a tab whose session ended does not get the last person's page
    // or unsent text.
    const owner = sessionStorage.getItem(OWNER_KEY);
    if (owner !== null && owner !== user.id) forgetWork();
    sessionStorage.setItem(OWNER_KEY, user.id);
    sessionStorage.removeItem(FLASH_KEY);
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  setUser(user) {
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  /** A one-line message for the next screen (the login screen shows it). */
  flash(message) {
    sessionStorage.setItem(FLASH_KEY, message);
  },
  peekFlash: () => sessionStorage.getItem(FLASH_KEY),
  /** Where to go after the next login: the page an ended or missing session interrupted. */
  rememberRoute(hash) {
    sessionStorage.setItem(ROUTE_KEY, hash);
  },
  takeRoute() {
    const hash = sessionStorage.getItem(ROUTE_KEY);
    sessionStorage.removeItem(ROUTE_KEY);
    return hash;
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

/** Drops the route and the drafts kept for the next login. */
function forgetWork() {
  for (const key of Object.keys(sessionStorage)) {
    if (key === ROUTE_KEY || key.startsWith(DRAFT_PREFIX)) sessionStorage.removeItem(key);
  }
}

/** What each role may do; the page offers nothing the API would refuse. */
export function can(action) {
  const role = session.user()?.role;
  switch (action) {
    case 'changeKyc':
    case 'audit':
    case 'webhooks': // the log, to read
      return role === 'admin' || role === 'manager';
    case 'money': // balances, leverage, subaccounts
    case 'impersonate':
    case 'reprocess':
    case 'staff':
      return role === 'admin';
    default:
      return Boolean(role);
  }
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Tells the server to end the session of `token` (all of that user's sessions), without waiting:
 * the tab has already forgotten it, and `keepalive` lets the request outlive the page.
 */
export function endSession(token) {
  fetch('/api/auth/logout', {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}` },
    credentials: 'omit',
    cache: 'no-store',
    keepalive: true,
  }).catch(() => {});
}

async function send(method, path, body, extraHeaders = {}) {
  const headers = { Accept: 'application/json', ...extraHeaders };
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'The CRM server cannot be reached. Check the connection and try again.');
  }
  if (resp.status === 401 && path !== '/api/auth/login') {
    session.clear();
    onUnauthorized();
  }
  return resp;
}

async function errorOf(resp) {
  let message = `The server answered ${resp.status}.`;
  try {
    const text = await resp.text();
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') message = body.error;
    // Insufficient funds: {"error": "Insufficient real funds", "required": .., "available": ..}.
    if (body && typeof body.available === 'number') message += `: ${numberLiteral(text, 'available')} available`;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(resp.status, message);
}

/**
 * A top-level JSON number exactly as the server wrote it. Money figures arrive as JSON numbers,
 * which JSON.parse would round to the nearest float; the text is exact.
 */
function numberLiteral(text, name) {
  const m = new RegExp(`"${name}"\\s*:\\s*(-?\\d+(?:\\.\\d+)?)`).exec(text);
  return m ? m[1] : '';
}

/** A JSON request; resolves to the parsed body, rejects with ApiError carrying the API's message. */
export async function api(method, path, body, headers) {
  const resp = await send(method, path, body, headers);
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/**
 * A fresh Idempotency-Key: 128 random bits in hex. (crypto.randomUUID exists only on HTTPS
 * pages, and the page may be served over plain HTTP on a private network.)
 */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Downloads a file the API produces (with the bearer token) and saves it under `filename`. */
export async function download(path, filename) {
  const resp = await send('GET', path);
  if (!resp.ok) throw await errorOf(resp);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  // Give the browser a moment to start the download before the object URL goes away.
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
