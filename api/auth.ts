import type { MikroORM } from '@mikro-orm/postgresql';
import type { RequestHandler } from 'express';
import { ForbiddenError, UnauthorizedError } from '../billing/errors.js';
import type { TokenScope } from '../db/entities.js';
import { findTokenScope, hashToken, sameSecret } from '../db/tokens.js';

declare module 'express-serve-static-core' {
  interface Request {
    scope?: TokenScope;
  }
}

const CACHE_MS = 10_000;

/** Bearer-token authentication: tokens are looked up by hash (cached briefly), or the admin env token. */
export function authenticate(orm: MikroORM, adminToken?: string): RequestHandler {
  const cache = new Map<string, { scope: TokenScope | undefined; at: number }>();
  return async (req, _res, next) => {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw new UnauthorizedError('Authorization: expected "Bearer <token>"');
    const token = m[1]!;
    if (adminToken && sameSecret(token, adminToken)) {
      req.scope = 'admin';
      return next();
    }
    const key = hashToken(token);
    let hit = cache.get(key);
    if (!hit || Date.now() - hit.at > CACHE_MS) {
      hit = { scope: await findTokenScope(orm.em.fork(), token), at: Date.now() };
      cache.set(key, hit);
    }
    if (!hit.scope) throw new UnauthorizedError('Authorization: unknown or revoked token');
    req.scope = hit.scope;
    next();
  };
}

/** Admin may do anything; other scopes only what they are listed for. */
export function allow(...scopes: TokenScope[]): RequestHandler {
  return (req, _res, next) => {
    if (req.scope === 'admin' || (req.scope && scopes.includes(req.scope))) return next();
    throw new ForbiddenError(`Authorization: a token with scope ${['admin', ...scopes].join(' or ')} is required (this one is ${req.scope})`);
  };
}
