import { createHash } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import pg from 'pg';
import { AccrueError, ValidationError } from '../billing/errors.js';
import { isDecimalString } from '../billing/money.js';
import type { NewEvent } from './events.js';
import { firstUnstorable } from './storable-text.js';

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

/**
 * What a collector may cost its source and Accrue per window. The session settings are set by
 * Accrue after connecting (a connection string cannot lift them), and the query runs inside
 * `select * from (<query>) limit maxRows + 1`, so more rows than the cap are never fetched.
 */
export interface SourceLimits {
  maxRows: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  connectTimeoutMs: number;
}
export const SOURCE_LIMITS: SourceLimits = { maxRows: 100_000, statementTimeoutMs: 60_000, idleInTransactionTimeoutMs: 30_000, connectTimeoutMs: 10_000 };

/** Roles that can read or write the source server's files or run programs there, besides superusers. */
const SERVER_ROLES = ['pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program'];

/**
 * Which database a connection reached: its oid, and which cluster — the system identifier from
 * initdb (shared by a primary and its streaming replicas, so a replica of Accrue's database is
 * recognised too) where the role may read it, and the postmaster's start time as a fallback.
 */
export interface DatabaseIdentity {
  oid: string;
  started: string;
  systemId: string | null;
}

export async function databaseIdentity(run: (sql: string) => Promise<Record<string, unknown>[]>): Promise<DatabaseIdentity> {
  const [row] = await run(`select (select oid from pg_database where datname = current_database())::text as oid, pg_postmaster_start_time()::text as started`);
  // pg_control_system() is open to every role by default; a provider may revoke it.
  const systemId = await run('select system_identifier::text as id from pg_control_system()').then((r) => String(r[0]!.id), () => null);
  return { oid: String(row!.oid), started: String(row!.started), systemId };
}

/** Accrue's own database, to refuse it as a source. */
export const ownDatabaseIdentity = (em: EntityManager) => databaseIdentity((sql) => em.execute(sql));

const sameDatabase = (a: DatabaseIdentity, b: DatabaseIdentity) =>
  a.oid === b.oid && ((a.systemId !== null && a.systemId === b.systemId) || a.started === b.started);

/**
 * The source could not be reached or refused the login. The reason (refused, timed out, no such
 * host, bad password) is logged by the caller, never answered: echoed, it makes the collector a
 * port scanner of Accrue's network. Retryable: a source that is down comes back.
 */
export class SourceConnectError extends AccrueError {
  readonly status = 400;
  readonly code = 'invalid_request';
  override readonly retryable = true;
  readonly field = 'source_database_url';
  constructor(readonly reason: string) {
    super('source_database_url: cannot connect, or the login was refused (check the host, port, database, user and password)');
  }
}

/** A plain-text reason for logs: the driver's message, without the connection string. */
const reasonOf = (err: unknown) => (err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err));

function checkSourceUrl(sourceUrl: string): void {
  if (!/^postgres(ql)?:\/\//.test(sourceUrl)) throw new ValidationError('source_database_url', 'must be a postgres:// or postgresql:// connection string');
  let params: URLSearchParams;
  try {
    params = new URL(sourceUrl).searchParams;
  } catch {
    throw new ValidationError('source_database_url', 'is not a valid URL');
  }
  for (const p of ['sslcert', 'sslkey', 'sslrootcert']) {
    // node-postgres reads these files from Accrue's own disk.
    if (params.has(p)) throw new ValidationError('source_database_url', `must not set ${p} (it names a file on Accrue's host)`);
  }
}

/**
 * Opens the source and runs `fn` in a READ ONLY transaction, after refusing a source that is
 * Accrue's own database (`own`, from ownDatabaseIdentity) or whose role
 * is a superuser, a member of one, or of a role that reaches the server's files or programs.
 */
export async function withSource<T>(sourceUrl: string, own: DatabaseIdentity, fn: (c: pg.Client) => Promise<T>, limits: SourceLimits = SOURCE_LIMITS): Promise<T> {
  checkSourceUrl(sourceUrl);
  let client: pg.Client;
  try {
    client = new pg.Client({ connectionString: sourceUrl, connectionTimeoutMillis: limits.connectTimeoutMs, application_name: 'accrue-usage-collector' });
    // A source that drops the connection (a restart, idle_in_transaction_session_timeout) emits
    // 'error' on an idle client; unhandled, that would end the worker process.
    client.on('error', () => undefined);
    await client.connect();
  } catch (err) {
    throw new SourceConnectError(reasonOf(err));
  }
  try {
    // Our own statements, with our own numbers: the simple protocol is fine here.
    await client.query(`set statement_timeout = ${Math.trunc(limits.statementTimeoutMs)}; set idle_in_transaction_session_timeout = ${Math.trunc(limits.idleInTransactionTimeoutMs)}; set default_transaction_read_only = on`);
    const identity = await databaseIdentity(async (sql) => (await client.query(sql)).rows as Record<string, unknown>[]);
    const who = (await client.query<{ privileged: boolean; role: string }>(
      `select session_user::text as role,
              exists (select 1 from pg_roles r where (r.rolsuper or r.rolname = any($1::text[])) and pg_has_role(session_user, r.oid, 'MEMBER')) as privileged`,
      [SERVER_ROLES])).rows[0]!;
    if (sameDatabase(identity, own)) throw new ValidationError('source_database_url', "is Accrue's own database; a collector reads another database");
    if (who.privileged) {
      throw new ValidationError('source_database_url', `connects as ${who.role}, a superuser or a member of one (or of ${SERVER_ROLES.join(', ')}); give the collector a role that can only read what it needs`);
    }
    await client.query('begin transaction read only');
    try {
      return await fn(client);
    } finally {
      await client.query('rollback').catch(() => undefined);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The window parameters the query uses: $1 (start) and $2 (end) are both optional. */
export function windowParams(query: string, start: Date, end: Date): Date[] {
  const used = Math.max(0, ...[...query.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
  if (used > 2) throw new ValidationError('query', `may use $1 (window start) and $2 (window end) only, found $${used}`);
  return [start, end].slice(0, used);
}

/**
 * Runs a collector's query for one window, always over the extended protocol: PostgreSQL then
 * parses exactly one statement ("cannot insert multiple commands into a prepared statement"),
 * so `...; commit; ...` cannot leave the READ ONLY transaction. (Without bound parameters,
 * node-postgres would use the simple protocol, which runs every statement it is sent.)
 * Refusals and the row cap are ValidationErrors naming the field; the query's own errors
 * (syntax, permissions, statement_timeout) are plain errors carrying PostgreSQL's message.
 */
export async function runCollectorQuery(src: pg.Client, query: string, start: Date, end: Date, maxRows: number): Promise<{ columns: string[]; rows: Record<string, unknown>[] }> {
  // maxRows + 1 tells 'more than the cap' from 'exactly the cap'; 0 (a check) fetches nothing.
  const limit = maxRows > 0 ? Math.trunc(maxRows) + 1 : 0;
  const config = { text: `select * from (${query}) as collector_query limit ${limit}`, values: windowParams(query, start, end), queryMode: 'extended' } as pg.QueryConfig;
  let r: pg.QueryResult;
  try {
    r = await src.query(config);
  } catch (err) {
    if ((err as { code?: string }).code === '42601' && /multiple commands/.test((err as Error).message)) {
      throw new ValidationError('query', 'must be a single SELECT statement');
    }
    throw err;
  }
  if (Array.isArray(r)) throw new ValidationError('query', 'must be a single SELECT statement'); // never with the extended protocol; kept as the guard
  if (r.rows.length > maxRows) {
    throw new ValidationError('query', `returns more than ${maxRows} rows for the window ${start.toISOString()}–${end.toISOString()}; aggregate in the query or shorten interval_seconds`);
  }
  return { columns: r.fields.map((f) => f.name), rows: r.rows as Record<string, unknown>[] };
}

/** Checks a query without reading data: it must parse, be read-only, and return the required columns. */
export async function checkCollectorQuery(sourceUrl: string, own: DatabaseIdentity, query: string, limits: SourceLimits = SOURCE_LIMITS): Promise<void> {
  windowParams(query, new Date(0), new Date(0));
  let columns: string[];
  try {
    columns = await withSource(sourceUrl, own, async (c) => (await runCollectorQuery(c, query, new Date(0), new Date(0), 0)).columns, limits);
  } catch (err) {
    if (err instanceof AccrueError) throw err;
    throw new ValidationError('query', `does not run as a read-only SELECT with $1/$2 as the window: ${(err as Error).message}`);
  }
  for (const c of REQUIRED_COLUMNS) if (!columns.includes(c)) throw new ValidationError('query', `must return a ${c} column (returns ${columns.join(', ') || 'no columns'})`);
}

/** How far ahead of now an event's timestamp may be, for the API and collectors alike. */
export const INGEST_FUTURE_LIMIT_MS = 24 * 3_600_000;

/**
 * A collector's rows as events. Rows are held to the API's ingest window (`window.maxAgeMs`,
 * ACCRUE_INGEST_MAX_AGE, back from `window.now`, and 24 h ahead): a transaction_id is
 * deduplicated only while its key is kept (the retention window), so a row re-emitted later
 * with its old timestamp would otherwise be counted a second time. Such a row is skipped (never
 * stored) and described in `outside`; every other bad row is an error.
 */
export function rowsToEvents(collectorId: string, eventType: string, windowStart: Date, rows: Record<string, unknown>[], window: { now: number; maxAgeMs: number }): { events: NewEvent[]; outside: string[] } {
  const outside: string[] = [];
  const events = rows.flatMap((row, i): NewEvent[] => {
    const { customer_id: customer, timestamp, transaction_id: txid, ...rest } = row;
    if (customer === null || customer === undefined || customer === '') throw new Error(`row ${i}: customer_id is empty`);
    const ts = timestamp instanceof Date ? timestamp : new Date(String(timestamp));
    if (Number.isNaN(ts.getTime())) throw new Error(`row ${i}: timestamp ${String(timestamp)} is not a time`);
    const which = `transaction_id ${txid === undefined || txid === null ? 'derived' : JSON.stringify(String(txid))}`;
    if (ts.getTime() < window.now - window.maxAgeMs) {
      outside.push(`row ${i}: timestamp ${ts.toISOString()} is older than the ${Math.round(window.maxAgeMs / 86_400_000)}-day ingest window (${which})`);
      return [];
    }
    if (ts.getTime() > window.now + INGEST_FUTURE_LIMIT_MS) {
      outside.push(`row ${i}: timestamp ${ts.toISOString()} is more than 24 hours in the future (${which})`);
      return [];
    }
    const properties = Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]));
    // A json column can carry "\u0000", which jsonb refuses: the whole window's insert would fail, on every retry.
    const unstorable = firstUnstorable({ customer_id: customer, transaction_id: txid, ...properties });
    if (unstorable) throw new Error(`row ${i}: column ${unstorable[0]} ${unstorable[1]}`);
    const id = txid !== undefined && txid !== null
      ? String(txid)
      : `collector:${collectorId}:${createHash('sha256').update(JSON.stringify([windowStart.toISOString(), String(customer), ts.toISOString(), dimensions(properties)])).digest('hex').slice(0, 32)}`;
    return [{ transactionId: id, customerId: String(customer), eventType, timestamp: ts.toISOString(), properties }];
  });
  return { events, outside };
}
