import { createHash } from 'node:crypto';
import pg from 'pg';
import { ValidationError } from '../billing/errors.js';
import { isDecimalString } from '../billing/money.js';
import type { NewEvent } from './events.js';

/**
 * A usage collector's source side: its SQL runs in a READ ONLY transaction on the source
 * PostgreSQL with $1 = window start and $2 = window end (timestamptz), and must return
 * `customer_id` and `timestamp` columns; every other column becomes an event property. A
 * `transaction_id` column is used as is; otherwise the id is derived from the collector, the
 * window, the customer, the timestamp and the row's dimensions (its non-numeric values), so
 * running a window again never counts it twice — even if a measure changed meanwhile.
 */
function dimensions(properties: Record<string, unknown>): [string, unknown][] {
  return Object.entries(properties)
    .filter(([, v]) => typeof v === 'boolean' || (typeof v === 'string' && !isDecimalString(v)))
    .sort(([a], [b]) => a.localeCompare(b));
}

export const REQUIRED_COLUMNS = ['customer_id', 'timestamp'] as const;

export async function withSource<T>(sourceUrl: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: sourceUrl, connectionTimeoutMillis: 10_000, statement_timeout: 60_000 });
  await client.connect();
  try {
    await client.query('begin transaction read only');
    try {
      return await fn(client);
    } finally {
      await client.query('rollback');
    }
  } finally {
    await client.end();
  }
}

/** The window parameters the query uses: $1 (start) and $2 (end) are both optional. */
export function windowParams(query: string, start: Date, end: Date): Date[] {
  const used = Math.max(0, ...[...query.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
  if (used > 2) throw new ValidationError('query', `may use $1 (window start) and $2 (window end) only, found $${used}`);
  return [start, end].slice(0, used);
}

/** Checks a query without reading data: it must parse, be read-only, and return the required columns. */
export async function checkCollectorQuery(sourceUrl: string, query: string): Promise<void> {
  windowParams(query, new Date(0), new Date(0));
  let columns: string[];
  try {
    columns = await withSource(sourceUrl, async (c) => {
      const r = await c.query(`select * from (${query}) q limit 0`, windowParams(query, new Date(0), new Date(0)));
      return r.fields.map((f) => f.name);
    });
  } catch (err) {
    const msg = (err as Error).message;
    const field = /connect|password|authentication|database .* does not exist|ECONNREFUSED|getaddrinfo/i.test(msg) ? 'source_database_url' : 'query';
    throw new ValidationError(field, field === 'query' ? `does not run as a read-only SELECT with $1/$2 as the window: ${msg}` : `cannot connect: ${msg}`);
  }
  for (const c of REQUIRED_COLUMNS) if (!columns.includes(c)) throw new ValidationError('query', `must return a ${c} column (returns ${columns.join(', ') || 'no columns'})`);
}

export function rowsToEvents(collectorId: string, eventType: string, windowStart: Date, rows: Record<string, unknown>[]): NewEvent[] {
  return rows.map((row, i) => {
    const { customer_id: customer, timestamp, transaction_id: txid, ...rest } = row;
    if (customer === null || customer === undefined || customer === '') throw new Error(`row ${i}: customer_id is empty`);
    const ts = timestamp instanceof Date ? timestamp : new Date(String(timestamp));
    if (Number.isNaN(ts.getTime())) throw new Error(`row ${i}: timestamp ${String(timestamp)} is not a time`);
    const properties = Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]));
    const id = txid !== undefined && txid !== null
      ? String(txid)
      : `collector:${collectorId}:${createHash('sha256').update(JSON.stringify([windowStart.toISOString(), String(customer), ts.toISOString(), dimensions(properties)])).digest('hex').slice(0, 32)}`;
    return { transactionId: id, customerId: String(customer), eventType, timestamp: ts.toISOString(), properties };
  });
}
