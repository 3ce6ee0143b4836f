import { need } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

/** PERCENTAGE: `price` is a fraction of the spend passed as the quantity (COMPOSITE products). */
export function pricePercentage({ quantity, rate }: PricingInput): PricingResult {
  const fraction = need(rate, 'price');
  return { amount: quantity.times(fraction), unitPrice: fraction };
}
