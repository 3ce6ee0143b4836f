import { Decimal } from 'decimal.js';
import { Dec, dec } from '../money.js';
import type { PricingInput, PricingResult, RateSpec, Tier } from './types.js';

/**
 * One pure function per pricing model. Amounts are unrounded; the invoice line rounds once
 * (billing/money.ts roundAmount). Quantities and prices are decimals throughout.
 */

const ZERO = new Dec(0);

function need(rate: RateSpec, field: 'price' | 'packageSize'): Decimal {
  const v = rate[field];
  if (v === undefined) throw new RangeError(`${rate.rateType} rate needs ${field === 'price' ? 'a price' : 'package_size'}`);
  return dec(v);
}

function tiersOf(rate: RateSpec): { size: Decimal | null; price: Decimal }[] {
  const tiers: Tier[] = rate.tiers ?? [];
  if (!tiers.length) throw new RangeError(`${rate.rateType} rate needs tiers`);
  return tiers.map((t, i) => {
    if (t.size === undefined && i !== tiers.length - 1) throw new RangeError(`tiers[${i}].size is required on every tier but the last`);
    return { size: t.size === undefined ? null : dec(t.size), price: dec(t.price) };
  });
}

export function priceFlat({ quantity, rate }: PricingInput): PricingResult {
  const price = need(rate, 'price');
  return { amount: quantity.times(price), unitPrice: price };
}

/**
 * TIERED (graduated, Metronome's): the first `size` units at the first tier's price, the next
 * `size` units at the second's, and so on; the last tier takes the rest.
 */
export function priceTiered({ quantity, rate }: PricingInput): PricingResult {
  let remaining = quantity;
  let start = ZERO;
  let amount = ZERO;
  const tierBreakdown: NonNullable<PricingResult['tierBreakdown']> = [];
  tiersOf(rate).forEach((t, i) => {
    if (remaining.lte(0)) return;
    const take = t.size === null ? remaining : Dec.min(remaining, t.size);
    const part = take.times(t.price);
    tierBreakdown.push({ tier: i, startingAt: start, quantity: take, price: t.price, amount: part });
    amount = amount.plus(part);
    remaining = remaining.minus(take);
    start = start.plus(take);
  });
  return { amount, tierBreakdown };
}

/**
 * VOLUME (Accrue): the whole quantity at the price of the tier it ends in. Tier i covers
 * quantities above the previous tiers' total size, up to and including its own upper edge.
 */
export function priceVolume({ quantity, rate }: PricingInput): PricingResult {
  const tiers = tiersOf(rate);
  let upper = ZERO;
  for (let i = 0; i < tiers.length; i++) {
    const t = tiers[i]!;
    const lower = upper;
    upper = t.size === null ? upper : upper.plus(t.size);
    if (t.size === null || quantity.lte(upper)) {
      return { amount: quantity.times(t.price), unitPrice: t.price, tierBreakdown: [{ tier: i, startingAt: lower, quantity, price: t.price, amount: quantity.times(t.price) }] };
    }
  }
  // Quantity beyond a last tier that has a size: priced at the last tier.
  const last = tiers[tiers.length - 1]!;
  return { amount: quantity.times(last.price), unitPrice: last.price };
}

/** PACKAGE (Accrue): `price` per `packageSize` units; a partial package rounds UP (default) or DOWN. */
export function pricePackage({ quantity, rate }: PricingInput): PricingResult {
  const price = need(rate, 'price');
  const size = need(rate, 'packageSize');
  if (size.lte(0)) throw new RangeError('package_size must be > 0');
  const packages = quantity.div(size).toDecimalPlaces(0, rate.packageRounding === 'DOWN' ? Decimal.ROUND_FLOOR : Decimal.ROUND_CEIL);
  return { amount: packages.times(price), unitPrice: price, billedQuantity: packages };
}

/** PERCENTAGE: `price` is a fraction of the spend passed as the quantity (COMPOSITE products). */
export function pricePercentage({ quantity, rate }: PricingInput): PricingResult {
  const fraction = need(rate, 'price');
  return { amount: quantity.times(fraction), unitPrice: fraction };
}

/**
 * SUBSCRIPTION: `price` × `quantity` seats per period; when prorated, times the fraction of the
 * period the subscription covers. The input quantity is ignored (subscriptions are not metered).
 */
export function priceSubscription({ rate, prorationFactor }: PricingInput): PricingResult {
  const price = need(rate, 'price');
  const seats = dec(rate.quantity ?? '1');
  const factor = rate.isProrated && prorationFactor ? prorationFactor : new Dec(1);
  return { amount: price.times(seats).times(factor), unitPrice: price, billedQuantity: seats.times(factor) };
}
