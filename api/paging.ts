import { ValidationError } from '../billing/errors.js';
import { UUID_RE } from '../db/ids.js';

/** Cursor pages as Metronome's: `limit` and an opaque `next_page` token (keyset on created_at, id). */
export interface PageQuery {
  limit: number;
  after?: { createdAt: Date; id: string };
}

export function pageQuery(query: Record<string, unknown>, maxLimit = 100): PageQuery {
  const rawLimit = query.limit;
  let limit = maxLimit;
  if (rawLimit !== undefined) {
    limit = Number(rawLimit);
    if (!Number.isInteger(limit) || limit < 1 || limit > maxLimit) throw new ValidationError('limit', `must be an integer from 1 to ${maxLimit}`);
  }
  const token = query.next_page;
  if (token === undefined || token === '') return { limit };
  try {
    const [at, id] = Buffer.from(String(token), 'base64url').toString('utf8').split('|');
    const createdAt = new Date(at!);
    if (!id || !UUID_RE.test(id) || Number.isNaN(createdAt.getTime())) throw new Error('bad token'); // a non-UUID id failed the query with a 500
    return { limit, after: { createdAt, id } };
  } catch {
    throw new ValidationError('next_page', 'is not a page token this API returned');
  }
}

/** `{ data, next_page }` from rows fetched with limit + 1. */
export function page<T extends { createdAt: Date; id: string }, J>(rows: T[], limit: number, json: (row: T) => J) {
  const more = rows.length > limit;
  const data = rows.slice(0, limit);
  const last = data[data.length - 1];
  return {
    data: data.map(json),
    next_page: more && last ? Buffer.from(`${last.createdAt.toISOString()}|${last.id}`).toString('base64url') : null,
  };
}

/** The keyset condition for MikroORM `find`. */
export function afterCondition(after: PageQuery['after']) {
  return after ? { $or: [{ createdAt: { $gt: after.createdAt } }, { createdAt: after.createdAt, id: { $gt: after.id } }] } : {};
}

/**
 * Pages over a list computed in memory (rate schedules, balances): `next_page` is an opaque
 * offset token. Used where the whole answer is derived, not read row by row.
 */
export function offsetPage<T>(items: readonly T[], query: { limit?: unknown; next_page?: unknown }, maxLimit = 100, field = 'limit'): { data: T[]; next_page: string | null } {
  let limit = maxLimit;
  if (query.limit !== undefined && query.limit !== null) {
    limit = Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > maxLimit) throw new ValidationError(field, `must be an integer from 1 to ${maxLimit}`);
  }
  let offset = 0;
  if (query.next_page !== undefined && query.next_page !== null && query.next_page !== '') {
    const m = /^o(\d+)$/.exec(Buffer.from(String(query.next_page), 'base64url').toString('utf8'));
    if (!m) throw new ValidationError('next_page', 'is not a page token this API returned');
    offset = Number(m[1]);
  }
  const data = items.slice(offset, offset + limit);
  const next = offset + limit < items.length ? Buffer.from(`o${offset + limit}`).toString('base64url') : null;
  return { data, next_page: next };
}
