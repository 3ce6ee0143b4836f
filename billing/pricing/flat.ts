import { need } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

export function priceFlat({ quantity, rate }: PricingInput): PricingResult {
  const price = need(rate, 'price');
  return { amount: quantity.times(price), unitPrice: price };
}
