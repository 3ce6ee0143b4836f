import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ApiToken, type TokenScope } from './entities.js';
import { newId } from './ids.js';

export const TOKEN_SCOPES: readonly TokenScope[] = ['admin', 'ingest', 'finance', 'read'];

/** Tokens are stored as SHA-256 hashes only; the plaintext is shown once, when created. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function generateToken(): string {
  return `acr_${randomBytes(24).toString('base64url')}`;
}

export async function createToken(em: EntityManager, name: string, scope: TokenScope, token = generateToken()): Promise<string> {
  em.create(ApiToken, { id: newId(), name, tokenHash: hashToken(token), scope, createdAt: new Date() });
  await em.flush();
  return token;
}

export async function findTokenScope(em: EntityManager, token: string): Promise<TokenScope | undefined> {
  const row = await em.findOne(ApiToken, { tokenHash: hashToken(token), revokedAt: null });
  return row?.scope;
}

export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
