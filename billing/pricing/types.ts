import type { Decimal } from 'decimal.js';

export type RateType = 'FLAT';

export interface PricingInput {
  quantity: Decimal;
  /** Decimal string, in the credit type's unit (USD cents). */
  price?: string;
}

export interface PricingResult {
  /** Unrounded amount in the credit type's unit. */
  amount: Decimal;
  unitPrice?: Decimal;
}
