/** The console's calls to Accrue's API: the session token as bearer, errors as messages. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const SESSION_KEY = 'accrue.console.session';

export function session(): { token: string; scope: string; expiresAt: string } | null {
  const raw = sessionStorage.getItem(SESSION_KEY);
  return raw ? (JSON.parse(raw) as { token: string; scope: string; expiresAt: string }) : null;
}

export function saveSession(s: { token: string; scope: string; expiresAt: string } | null): void {
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

export async function api<T>(method: string, path: string, body?: unknown, token = session()?.token): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  const json = text ? (JSON.parse(text) as { message?: string }) : {};
  if (!res.ok) throw new ApiError(res.status, json.message ?? `${res.status} ${res.statusText}`);
  return json as T;
}

/** Cents (a decimal string or number) as money in the currency's units. */
export function money(cents: string | number | null | undefined): string {
  if (cents === null || cents === undefined || cents === '') return '—';
  const n = Number(cents) / 100;
  return n.toLocaleString('en-US', { style: 'currency', currency: 'USD' });
}

export const day = (iso: string | null | undefined) => (iso ? iso.slice(0, 10) : '—');
