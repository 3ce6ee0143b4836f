import { ValidationError } from '../../billing/errors.js';
import { dec, jsonDecimal } from '../../billing/money.js';
import { RATE_TYPES, type RateType } from '../../billing/pricing/index.js';
import type { StoredRate } from '../../billing/contract-terms.js';
import { FREQUENCIES } from '../../billing/periods.js';
import type { Rate } from '../../db/entities.js';
import { bool, decimal, objectAt, oneOf, stringArray, stringRecord, uuid, type Obj } from './validate.js';

/**
 * Rate input shared by rate cards (addRate/addRates) and contract overwrite rates: validates the
 * fields each rate type needs and refuses those it cannot use, naming the field.
 */
export const RATE_SPEC_FIELDS = ['rate_type', 'price', 'tiers', 'quantity', 'is_prorated', 'package_size', 'package_rounding', 'credit_type_id', 'custom_rate'];

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

export function tiersInput(o: Obj, path: string): { size?: string; price: string }[] {
  const v = o.tiers;
  const field = join(path, 'tiers');
  if (!Array.isArray(v) || v.length === 0) throw new ValidationError(field, 'is required: a non-empty array of {size, price}');
  return v.map((t, i) => {
    const p = `${field}[${i}]`;
    const tier = objectAt(t, p, ['size', 'price']);
    const price = decimal(tier, 'price', p, { min: 0 })!;
    const size = decimal(tier, 'size', p, { optional: true });
    if (size !== undefined && !dec(size).gt(0)) throw new ValidationError(`${p}.size`, 'must be > 0');
    if (size === undefined && i !== v.length - 1) throw new ValidationError(`${p}.size`, 'is required on every tier but the last');
    return size === undefined ? { price } : { size, price };
  });
}

export function rateSpecInput(o: Obj, path: string, rateTypes: readonly RateType[] = RATE_TYPES): StoredRate {
  if (o.custom_rate !== undefined) throw new ValidationError(join(path, 'custom_rate'), 'CUSTOM rates are not supported');
  if (o.rate_type === 'CUSTOM' || o.rate_type === 'TIERED_PERCENTAGE') throw new ValidationError(join(path, 'rate_type'), `${o.rate_type} rates are not supported; use one of ${rateTypes.join(', ')}`);
  const rateType = oneOf(o, 'rate_type', rateTypes, path)!;
  const notFor = (field: string) => {
    if (o[field] !== undefined && o[field] !== null) throw new ValidationError(join(path, field), `is not used by ${rateType} rates`);
  };
  const out: StoredRate = { rate_type: rateType };
  switch (rateType) {
    case 'FLAT':
      out.price = decimal(o, 'price', path, { min: 0 });
      ['tiers', 'package_size', 'package_rounding', 'quantity', 'is_prorated'].forEach(notFor);
      break;
    case 'TIERED':
    case 'VOLUME':
      out.tiers = tiersInput(o, path);
      ['price', 'package_size', 'package_rounding', 'quantity', 'is_prorated'].forEach(notFor);
      break;
    case 'PACKAGE': {
      out.price = decimal(o, 'price', path, { min: 0 });
      out.package_size = decimal(o, 'package_size', path)!;
      if (!dec(out.package_size).gt(0)) throw new ValidationError(join(path, 'package_size'), 'must be > 0');
      out.package_rounding = oneOf(o, 'package_rounding', ['UP', 'DOWN'] as const, path, { optional: true }) ?? 'UP';
      ['tiers', 'quantity', 'is_prorated'].forEach(notFor);
      break;
    }
    case 'PERCENTAGE':
      out.price = decimal(o, 'price', path, { min: 0 });
      if (dec(out.price!).gt(1)) throw new ValidationError(join(path, 'price'), 'is a fraction for PERCENTAGE rates and must be between 0 and 1');
      ['tiers', 'package_size', 'package_rounding', 'quantity', 'is_prorated'].forEach(notFor);
      break;
    case 'SUBSCRIPTION': {
      out.price = decimal(o, 'price', path, { min: 0 });
      out.quantity = decimal(o, 'quantity', path, { optional: true, min: 0 }) ?? '1';
      const prorated = bool(o, 'is_prorated', path, { optional: true });
      if (prorated === false) throw new ValidationError(join(path, 'is_prorated'), 'must be true for SUBSCRIPTION rates (as in Metronome)');
      out.is_prorated = true;
      ['tiers', 'package_size', 'package_rounding'].forEach(notFor);
      break;
    }
  }
  return out;
}

export function groupValuesInput(o: Obj, key: string, path = ''): Record<string, string> | undefined {
  return stringRecord(o, key, path);
}

/** A rate as Metronome's `Rate` JSON: prices and sizes as exact decimals (billing/money.ts `jsonDecimal`). */
export function rateJson(r: StoredRate, extra: { pricing_group_values?: Record<string, string>; credit_type?: { id: string; name: string } } = {}) {
  return {
    rate_type: r.rate_type,
    ...(r.price !== undefined ? { price: jsonDecimal(r.price) } : {}),
    ...(r.tiers ? { tiers: r.tiers.map((t) => (t.size !== undefined ? { size: jsonDecimal(t.size), price: jsonDecimal(t.price) } : { price: jsonDecimal(t.price) })) } : {}),
    ...(r.quantity !== undefined ? { quantity: jsonDecimal(r.quantity) } : {}),
    ...(r.is_prorated !== undefined ? { is_prorated: r.is_prorated } : {}),
    ...(r.package_size !== undefined ? { package_size: jsonDecimal(r.package_size), package_rounding: r.package_rounding } : {}),
    ...(extra.pricing_group_values && Object.keys(extra.pricing_group_values).length ? { pricing_group_values: extra.pricing_group_values } : {}),
    ...(extra.credit_type ? { credit_type: extra.credit_type } : {}),
  };
}

/** A stored rate row in the shape contract terms and overrides use. */
export function storedRateOf(r: Rate): StoredRate {
  return {
    rate_type: r.rateType, price: r.price ?? undefined, tiers: r.tiers ?? undefined, quantity: r.quantity ?? undefined,
    is_prorated: r.isProrated ?? undefined, package_size: r.packageSize ?? undefined, package_rounding: r.packageRounding ?? undefined,
  };
}

/** Metronome's rate selectors (rate lists, contract rate schedules): which rates an answer shows. */
export interface Selector { product_id?: string; product_tags?: string[]; pricing_group_values?: Record<string, string>; partial_pricing_group_values?: Record<string, string>; billing_frequency?: string }

export function selectorsInput(body: Obj, withTags: boolean): Selector[] {
  const v = body.selectors;
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ValidationError('selectors', 'must be an array');
  return v.map((s, i) => {
    const p = `selectors[${i}]`;
    const o = objectAt(s, p, ['product_id', 'pricing_group_values', 'partial_pricing_group_values', 'billing_frequency', ...(withTags ? ['product_tags'] : [])]);
    return {
      product_id: uuid(o, 'product_id', p, { optional: true }),
      product_tags: withTags ? stringArray(o, 'product_tags', p, { optional: true }) : undefined,
      pricing_group_values: stringRecord(o, 'pricing_group_values', p),
      partial_pricing_group_values: stringRecord(o, 'partial_pricing_group_values', p),
      billing_frequency: oneOf(o, 'billing_frequency', FREQUENCIES, p, { optional: true }),
    };
  });
}

export function selected(selectors: Selector[], r: { productId: string; pricingGroupValues: Record<string, string>; billingFrequency?: string | null }, tags: readonly string[]): boolean {
  if (!selectors.length) return true;
  return selectors.some((s) =>
    (!s.product_id || s.product_id === r.productId) &&
    (!s.product_tags?.length || s.product_tags.some((t) => tags.includes(t))) &&
    (!s.billing_frequency || s.billing_frequency === r.billingFrequency) &&
    (!s.pricing_group_values || (Object.keys(s.pricing_group_values).length === Object.keys(r.pricingGroupValues).length
      && Object.entries(s.pricing_group_values).every(([k, v]) => r.pricingGroupValues[k] === v))) &&
    (!s.partial_pricing_group_values || Object.entries(s.partial_pricing_group_values).every(([k, v]) => r.pricingGroupValues[k] === v)));
}
