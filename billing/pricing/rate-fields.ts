import type { Decimal } from 'decimal.js';
import { dec } from '../money.js';
import type { RateSpec, Tier } from './types.js';

/** Helpers shared by the pricing models: required fields, with the field named when missing. */
export function need(rate: RateSpec, field: 'price' | 'packageSize'): Decimal {
  const v = rate[field];
  if (v === undefined) throw new RangeError(`${rate.rateType} rate needs ${field === 'price' ? 'a price' : 'package_size'}`);
  return dec(v);
}

export function tiersOf(rate: RateSpec): { size: Decimal | null; price: Decimal }[] {
  const tiers: Tier[] = rate.tiers ?? [];
  if (!tiers.length) throw new RangeError(`${rate.rateType} rate needs tiers`);
  return tiers.map((t, i) => {
    if (t.size === undefined && i !== tiers.length - 1) throw new RangeError(`tiers[${i}].size is required on every tier but the last`);
    return { size: t.size === undefined ? null : dec(t.size), price: dec(t.price) };
  });
}
