import pg from 'pg';

/**
 * A plain pg pool that survives its server going away (a PostgreSQL restart or failover): a
 * connection the server drops makes `pg` emit 'error' — on the pool for an idle client, on the
 * client for a checked-out one — and an 'error' event without a listener ends the process. The
 * query in flight still rejects on its own (answered 503, see `isDatabaseUnavailable`), and the
 * pool has already discarded the broken client, so the listeners only log. MikroORM's own pool
 * does the same (PostgreSqlConnection.handlePoolErrors).
 */
export function createPool(connectionString: string, opts: { max: number; name: string }): pg.Pool {
  const pool = new pg.Pool({ connectionString, max: opts.max, connectionTimeoutMillis: 5_000 });
  const warn = (err: Error) => console.warn(`[${opts.name}] PostgreSQL connection lost: ${err.message}`);
  pool.on('error', warn);
  pool.on('connect', (client) => client.on('error', warn));
  return pool;
}

/** SQLSTATEs that mean the server is going away or not accepting connections yet. */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Connection is closed',
];

/**
 * Whether an error from pg or MikroORM means PostgreSQL is unreachable or restarting (a retry
 * later can succeed: the API answers 503), as opposed to a bug or a constraint (500 / 4xx).
 * Follows `cause` chains and AggregateErrors (a refused connection to 127.0.0.1 and ::1).
 */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 5) return false;
  const e = err as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && (UNAVAILABLE_SQLSTATES.has(e.code) || e.code.startsWith('08') || UNAVAILABLE_NET_CODES.has(e.code))) return true;
  if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.some((m) => (e.message as string).includes(m))) return true;
  if (Array.isArray(e.errors) && e.errors.some((x) => isDatabaseUnavailable(x, depth + 1))) return true;
  return isDatabaseUnavailable(e.cause, depth + 1);
}
