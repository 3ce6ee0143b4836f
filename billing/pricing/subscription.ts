import { Dec, dec } from '../money.js';
import { need } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

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
