import { Dec } from '../money.js';
import { tiersOf } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

/**
 * VOLUME (Accrue): the whole quantity at the price of the tier it ends in. Tier i covers
 * quantities above the previous tiers' total size, up to and including its own upper edge.
 */
export function priceVolume({ quantity, rate }: PricingInput): PricingResult {
  const tiers = tiersOf(rate);
  let upper = new Dec(0);
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
