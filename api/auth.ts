import type { MikroORM } from '@mikro-orm/postgresql';
import type { RequestHandler } from 'express';
import { ForbiddenError, UnauthorizedError } from '../billing/errors.js';
import type { TokenScope } from '../db/entities.js';
import { findTokenScope, hashToken, sameSecret } from '../db/tokens.js';
import { findConsoleSession, SESSION_PREFIX } from '../db/console.js';

declare module 'express-serve-static-core' {
  interface Request {
    scope?: TokenScope;
  }
}

/**
 * Scopes of tokens that were valid when last looked up, by token hash: at most `maxEntries`
 * (the least recently used is dropped first) for at most `ttlMs` each, so a revocation takes
 * effect within `ttlMs`. Unknown and revoked tokens are never cached: a stream of random
 * tokens costs one indexed lookup each and no memory.
 */
export class TokenCache {
  private readonly entries = new Map<string, { scope: TokenScope; at: number }>();

  constructor(readonly maxEntries = 10_000, readonly ttlMs = 10_000) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string, now = Date.now()): TokenScope | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    this.entries.delete(key);
    if (now - hit.at > this.ttlMs) return undefined;
    this.entries.set(key, hit); // Map order is recency order: re-inserted = most recent
    return hit.scope;
  }

  set(key: string, scope: TokenScope, now = Date.now()): void {
    this.entries.delete(key);
    this.entries.set(key, { scope, at: now });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

/** Bearer-token authentication: tokens are looked up by hash (cached briefly), or the admin env token. */
export function authenticate(orm: MikroORM, adminToken?: string, cache = new TokenCache()): RequestHandler {
  return async (req, _res, next) => {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw new UnauthorizedError('Authorization: expected "Bearer <token>"');
    const token = m[1]!;
    if (adminToken && sameSecret(token, adminToken)) {
      req.scope = 'admin';
      return next();
    }
    if (token.startsWith(SESSION_PREFIX)) {
      // A console login (never cached: its expiry is checked on every request).
      const session = await findConsoleSession(orm.em.fork(), token);
      if (session === 'expired') throw new UnauthorizedError('Authorization: the console session has expired; log in again');
      if (!session) throw new UnauthorizedError('Authorization: unknown console session');
      req.scope = session;
      return next();
    }
    const key = hashToken(token);
    let scope = cache.get(key);
    if (!scope) {
      scope = await findTokenScope(orm.em.fork(), token);
      if (scope) cache.set(key, scope);
    }
    if (!scope) throw new UnauthorizedError('Authorization: unknown or revoked token');
    req.scope = scope;
    next();
  };
}

/**
 * The scope of a request's bearer token when it is known without PostgreSQL (the admin token, or
 * a token in the cache); undefined otherwise — the caller then goes the full way (`authenticate`).
 */
export function cachedScope(authorization: string | undefined, adminToken: string | undefined, cache: TokenCache): TokenScope | undefined {
  const m = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
  if (!m) return undefined;
  if (adminToken && sameSecret(m[1]!, adminToken)) return 'admin';
  return cache.get(hashToken(m[1]!));
}

/** Admin may do anything; other scopes only what they are listed for. */
export function allow(...scopes: TokenScope[]): RequestHandler {
  return (req, _res, next) => {
    if (req.scope === 'admin' || (req.scope && scopes.includes(req.scope))) return next();
    throw new ForbiddenError(`Authorization: a token with scope ${['admin', ...scopes].join(' or ')} is required (this one is ${req.scope})`);
  };
}
