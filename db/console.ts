import { randomBytes } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { TokenScope } from './entities.js';
import { hashToken } from './tokens.js';

/** Console sessions (a finance login) and the key that signs customer dashboard URLs. */

export const SESSION_PREFIX = 'acs_';

/**
 * A new session for a token's scope: its own token (shown once), stored by hash, expiring. The
 * console is finance's: an admin token logs in with finance scope. `sourceToken` null: the
 * operator's ACCRUE_ADMIN_TOKEN (not in the token table). One token holds at most
 * `maxPerToken` sessions that have not expired: `limited` (nothing written) past that. Logins
 * of one token take turns (a transaction lock on its hash), so the limit holds under races.
 */
export async function createConsoleSession(em: EntityManager, scope: TokenScope, sourceToken: string | null, ttlMs: number, maxPerToken: number): Promise<{ token: string; scope: TokenScope; expiresAt: Date } | { limited: number }> {
  const token = `${SESSION_PREFIX}${randomBytes(24).toString('base64url')}`;
  const expiresAt = new Date(Date.now() + ttlMs);
  const sessionScope: TokenScope = scope === 'admin' ? 'finance' : scope;
  const source = sourceToken === null ? null : hashToken(sourceToken);
  return em.transactional(async (tx) => {
    await tx.execute(`select pg_advisory_xact_lock(hashtextextended('console_session:' || coalesce(?::text, 'operator'), 0))`, [source]);
    const [open] = await tx.execute<{ n: number }[]>(
      `select count(*)::int as n from console_session where source_token_hash is not distinct from ?::text and expires_at > now()`, [source]);
    if (open!.n >= maxPerToken) return { limited: open!.n };
    await tx.execute('insert into console_session (token_hash, scope, source_token_hash, expires_at) values (?, ?, ?, ?)', [hashToken(token), sessionScope, source, expiresAt]);
    // Expired sessions are of no use to anyone: cleared as new ones are made.
    await tx.execute(`delete from console_session where expires_at < now() - interval '1 day'`);
    return { token, scope: sessionScope, expiresAt };
  });
}

/**
 * The session's scope, 'expired' (past its time, or the token that logged in was revoked since),
 * or undefined for a token that never was a session.
 */
export async function findConsoleSession(em: EntityManager, token: string): Promise<TokenScope | 'expired' | undefined> {
  const [r] = await em.execute<{ scope: TokenScope; expired: boolean }[]>(`
    select s.scope, s.expires_at <= now()
      or (s.source_token_hash is not null and not exists (select 1 from api_token t where t.token_hash = s.source_token_hash and t.revoked_at is null)) as expired
    from console_session s where s.token_hash = ?`, [hashToken(token)]);
  if (!r) return undefined;
  return r.expired ? 'expired' : r.scope;
}

export async function endConsoleSession(em: EntityManager, token: string): Promise<void> {
  await em.execute('delete from console_session where token_hash = ?', [hashToken(token)]);
}

let cachedSecret: Promise<Buffer> | undefined;

/** The dashboard-signing key: made once (the first replica to ask wins), the same for every replica; kept in memory once read. */
export function dashboardSecret(em: EntityManager): Promise<Buffer> {
  cachedSecret ??= readDashboardSecret(em);
  cachedSecret.catch(() => { cachedSecret = undefined; });
  return cachedSecret;
}

async function readDashboardSecret(em: EntityManager): Promise<Buffer> {
  await em.execute('insert into console_secret (id, secret) values (1, ?) on conflict (id) do nothing', [randomBytes(32).toString('base64url')]);
  const [r] = await em.execute<{ secret: string }[]>('select secret from console_secret where id = 1');
  return Buffer.from(r!.secret, 'base64url');
}
