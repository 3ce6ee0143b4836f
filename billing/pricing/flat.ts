import type { Decimal } from 'decimal.js';
import { dec } from '../money.js';
import type { PricingInput, PricingResult } from './types.js';

/** FLAT: every unit costs `price`. Unrounded; rounding happens once, on the invoice line. */
export function priceFlat(input: PricingInput): PricingResult {
  if (input.price === undefined) throw new RangeError('FLAT rate needs a price');
  const price: Decimal = dec(input.price);
  return { amount: input.quantity.times(price), unitPrice: price };
}
