import { Decimal } from 'decimal.js';
import { need } from './rate-fields.js';
import type { PricingInput, PricingResult } from './types.js';

/** PACKAGE (Accrue): `price` per `packageSize` units; a partial package rounds UP (default) or DOWN. */
export function pricePackage({ quantity, rate }: PricingInput): PricingResult {
  const price = need(rate, 'price');
  const size = need(rate, 'packageSize');
  if (size.lte(0)) throw new RangeError('package_size must be > 0');
  const packages = quantity.div(size).toDecimalPlaces(0, rate.packageRounding === 'DOWN' ? Decimal.ROUND_FLOOR : Decimal.ROUND_CEIL);
  return { amount: packages.times(price), unitPrice: price, billedQuantity: packages };
}
