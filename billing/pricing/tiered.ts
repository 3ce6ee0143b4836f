import { Dec } from '../money.js';
import { tiersOf } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

/**
 * TIERED (graduated, Metronome's): the first `size` units at the first tier's price, the next
 * `size` units at the second's, and so on; the last tier takes the rest.
 */
export function priceTiered({ quantity, rate }: PricingInput): PricingResult {
  let remaining = quantity;
  let start = new Dec(0);
  let amount = new Dec(0);
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
