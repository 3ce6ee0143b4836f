import { dec, type DecimalInput } from './money.js';
import { addDays } from './periods.js';

/**
 * An invoice's payment standing — the one rule for when an invoice is due, how much is left and
 * whether it is paid. Pure. A finalized invoice is due `net_payment_terms_days` (Metronome's
 * contract field; default 30) after it was finalized (issued); payments accumulate; it is PAID
 * when they reach its total (a zero-total invoice is PAID at once). A voided invoice is owed
 * nothing. Drafts have no standing. When the dunning of a failed card payment has run out of
 * attempts (`dunningExhaustedAt`), the invoice is due from then on if its terms were later.
 */
export type PaymentStatus = 'UNPAID' | 'PARTIALLY_PAID' | 'PAID';

export interface PaymentStanding {
  status: PaymentStatus;
  /** Decimal strings in the invoice's credit type. */
  paid: string;
  amountDue: string;
  /** ISO instant; null for a voided invoice. */
  dueAt: string | null;
}

export const DEFAULT_NET_PAYMENT_TERMS_DAYS = 30;

export function dueAt(finalizedAt: string, netPaymentTermsDays: number | undefined): string {
  return new Date(addDays(Date.parse(finalizedAt), netPaymentTermsDays ?? DEFAULT_NET_PAYMENT_TERMS_DAYS)).toISOString();
}

export function paymentStanding(i: {
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  total: DecimalInput;
  finalizedAt: string | null;
  paid: DecimalInput;
  netPaymentTermsDays?: number | undefined;
  dunningExhaustedAt?: string | null;
}): PaymentStanding {
  const paid = dec(i.paid);
  const total = dec(i.total);
  const status: PaymentStatus = paid.gte(total) ? 'PAID' : paid.isZero() ? 'UNPAID' : 'PARTIALLY_PAID';
  const amountDue = i.status === 'VOID' || status === 'PAID' ? dec(0) : total.minus(paid);
  return {
    status,
    paid: paid.toFixed(),
    amountDue: amountDue.toFixed(),
    dueAt: i.status === 'FINALIZED' && i.finalizedAt ? earlier(dueAt(i.finalizedAt, i.netPaymentTermsDays), i.dunningExhaustedAt) : null,
  };
}

function earlier(a: string, b: string | null | undefined): string {
  return b && Date.parse(b) < Date.parse(a) ? new Date(Date.parse(b)).toISOString() : a;
}
