import { createHash, randomUUID } from 'node:crypto';

export const newId = (): string => randomUUID();

// Namespace for Accrue's name-based ids (RFC 9562 UUIDv5). Never change it: stored ids derive from it.
const ACCRUE_NAMESPACE = 'f0a4a7b2-6c4e-4b8e-9a51-2f1f5d1c9e20';

/** Deterministic UUIDv5 of `name`: the same domain key always yields the same id. */
export function uuidV5(name: string, namespace = ACCRUE_NAMESPACE): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const hash = createHash('sha1').update(ns).update(name, 'utf8').digest();
  const b = Buffer.from(hash.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The id of a contract period's usage invoice, the same for its live draft and its frozen row. */
export function invoiceIdFor(contractId: string, periodStart: string): string {
  return uuidV5(`invoice:${contractId}:${new Date(periodStart).toISOString()}`);
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
