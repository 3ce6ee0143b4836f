import { ValidationError } from '../billing/errors.js';

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
    if (!id || Number.isNaN(createdAt.getTime())) throw new Error('bad token');
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
