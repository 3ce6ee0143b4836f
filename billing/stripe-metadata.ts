import { ValidationError } from './errors.js';

/**
 * A payment gate's `stripe_config.invoice_metadata` (Metronome's "metadata to be added to the
 * Stripe invoice"): the user's keys go on the Stripe invoice Accrue makes for a gated commit or a
 * threshold charge, beside Accrue's own keys. Accrue's keys all start with `accrue_`, a prefix the
 * user's keys may not use, so neither side ever overwrites the other. Bounds are Stripe's (50
 * keys, keys of at most 40 characters without square brackets, values of at most 500 characters),
 * less the keys Accrue adds, so what is accepted here is never refused by Stripe later. Pure.
 */

export interface StripeGateConfig {
  payment_type: 'INVOICE';
  invoice_metadata?: Record<string, string>;
}

/** The stored form of a payment gate (threshold configurations, gated commits). */
export interface PaymentGateConfig {
  payment_gate_type: 'NONE' | 'STRIPE';
  stripe_config?: StripeGateConfig;
}

export const ACCRUE_METADATA_PREFIX = 'accrue_';
const STRIPE_MAX_KEYS = 50;
/** Accrue's keys on a charge invoice: what it pays for (commit, recharge or spend threshold), the contract, the customer. */
export const ACCRUE_CHARGE_METADATA_KEYS = 3;
export const MAX_INVOICE_METADATA_KEYS = STRIPE_MAX_KEYS - ACCRUE_CHARGE_METADATA_KEYS;
export const MAX_METADATA_KEY_LENGTH = 40;
export const MAX_METADATA_VALUE_LENGTH = 500;

/** Checks `invoice_metadata` given at `field`; every refusal names the field (and the key). */
export function invoiceMetadataInput(v: unknown, field: string): Record<string, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError(field, `must be an object of strings, got ${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v}`);
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_INVOICE_METADATA_KEYS) {
    throw new ValidationError(field, `has ${entries.length} keys; at most ${MAX_INVOICE_METADATA_KEYS} (Stripe allows ${STRIPE_MAX_KEYS}, Accrue adds ${ACCRUE_CHARGE_METADATA_KEYS})`);
  }
  const out: Record<string, string> = {};
  for (const [k, val] of entries) {
    const kf = `${field}.${k}`;
    if (k.length === 0) throw new ValidationError(field, 'has an empty key');
    if (k.length > MAX_METADATA_KEY_LENGTH) throw new ValidationError(kf, `key is ${k.length} characters; at most ${MAX_METADATA_KEY_LENGTH}`);
    if (/[[\]]/.test(k)) throw new ValidationError(kf, 'key may not contain [ or ]');
    if (k.toLowerCase().startsWith(ACCRUE_METADATA_PREFIX)) throw new ValidationError(kf, `keys starting with "${ACCRUE_METADATA_PREFIX}" are Accrue's own`);
    if (typeof val !== 'string') throw new ValidationError(kf, `must be a string, got ${val === null ? 'null' : Array.isArray(val) ? 'array' : typeof val}`);
    // Stripe reads an empty value as "no such key": it would silently not be there.
    if (val.length === 0) throw new ValidationError(kf, 'must not be empty');
    if (val.length > MAX_METADATA_VALUE_LENGTH) throw new ValidationError(kf, `is ${val.length} characters; at most ${MAX_METADATA_VALUE_LENGTH}`);
    out[k] = val;
  }
  return out;
}

/** The metadata of a Stripe invoice Accrue makes: the user's keys, then Accrue's (disjoint by the prefix rule). */
export function chargeInvoiceMetadata(gate: PaymentGateConfig | undefined, accrue: Record<string, string>): Record<string, string> {
  return { ...(gate?.stripe_config?.invoice_metadata ?? {}), ...accrue };
}
