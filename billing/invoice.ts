import type { Decimal } from 'decimal.js';
import { dec, roundAmount, sum, USD_CENTS, type CreditType } from './money.js';
import { price, type RateType } from './pricing/index.js';

/** One product × rate × time slice of a period, with the usage measured for that slice. */
export interface UsageCharge {
  productId: string;
  productName: string;
  rateType: RateType;
  price?: string;
  /** Decimal string: the metric's aggregate over [startingAt, endingBefore). */
  quantity: string;
  startingAt: string;
  endingBefore: string;
}

export interface InvoiceLine {
  type: 'usage';
  productId: string;
  name: string;
  quantity: Decimal;
  unitPrice?: Decimal;
  /** Rounded to the credit type's precision: the one rounding point. */
  total: Decimal;
  startingAt: string;
  endingBefore: string;
}

export interface AssembledInvoice {
  lines: InvoiceLine[];
  /** Sum of the rounded lines, exactly (invariant I2). */
  total: Decimal;
  creditType: CreditType;
}

/** A pure function of the period's charges: same inputs, same invoice, to the cent. */
export function assembleInvoice(charges: readonly UsageCharge[], creditType: CreditType = USD_CENTS): AssembledInvoice {
  const lines = charges.map((c): InvoiceLine => {
    const quantity = dec(c.quantity);
    const result = price(c.rateType, { quantity, price: c.price });
    return {
      type: 'usage',
      productId: c.productId,
      name: c.productName,
      quantity,
      unitPrice: result.unitPrice,
      total: roundAmount(result.amount, creditType),
      startingAt: c.startingAt,
      endingBefore: c.endingBefore,
    };
  });
  return { lines, total: sum(lines.map((l) => l.total)), creditType };
}
