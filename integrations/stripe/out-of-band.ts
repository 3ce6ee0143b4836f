import type { EntityManager } from '@mikro-orm/postgresql';
import type Stripe from 'stripe';
import { recordProviderPayment, recordSettledOutOfBand, type RecordedPayment } from '../../db/payments.js';
import { UnavailableError } from '../../billing/errors.js';
import { forgetOutOfBand, outOfBandPayment } from '../../db/stripe.js';
import { describeStripeError, isStripeRequestError } from './client.js';

/**
 * A manual payment of the whole amount due on an invoice whose Stripe copy is open: the copy is
 * marked paid out of band (`pay` with `paid_out_of_band: true` — no charge, and its hosted link
 * can no longer be paid), under the idempotency key `accrue:<invoice>:out_of_band`, for the
 * payment noted on the invoice (`noteOutOfBand`). Stripe settles an invoice once, so this and a
 * charge in flight (the sync's, dunning's, the customer on the hosted page) cannot both succeed:
 * - Stripe accepts (or replays its earlier acceptance): the noted manual payment is recorded;
 * - Stripe refuses because the copy is already paid: paid out of band, another settle of the noted
 *   payment won — it is recorded; else a charge won — the Stripe payment is recorded and the noted
 *   one forgotten (the caller answers 409: not recorded, collected by Stripe);
 * - the key is in use by another settle, or Stripe refuses while the copy is still open: the note
 *   stays and an `UnavailableError` is thrown (503 to a route's caller; activities retry);
 * - void at Stripe: the noted payment is forgotten.
 * Whoever finds a noted payment on a copy that is paid runs this again (the same key: Stripe
 * answers as it did the first time), so a request cut off between Stripe and the record is
 * completed by the next one, by the sync, dunning or Stripe's `invoice.paid`. Stripe unreachable
 * or failing: thrown (retry).
 */
export type OutOfBandResult =
  | { outcome: 'RECORDED'; payment: RecordedPayment }
  | { outcome: 'PAID_AT_STRIPE' | 'VOID' | 'NOT_OPEN'; stripeStatus: string | null };

export async function settleOutOfBand(stripe: Stripe, em: EntityManager, invoiceId: string, stripeInvoiceId: string): Promise<OutOfBandResult | undefined> {
  const noted = await outOfBandPayment(em.fork(), invoiceId);
  if (!noted) return undefined;
  let refusal: Stripe.errors.StripeError;
  try {
    await stripe.invoices.pay(stripeInvoiceId, { paid_out_of_band: true }, { idempotencyKey: `accrue:${invoiceId}:out_of_band` });
    return { outcome: 'RECORDED', payment: await recordSettledOutOfBand(em.fork(), invoiceId, noted) };
  } catch (err) {
    // Another settle of this payment holds the key (the route and the sync, two requests): it
    // decides; this one is retried and then sees its answer.
    const e = err as { statusCode?: number; code?: string };
    if (e.statusCode === 409 || e.code === 'idempotency_key_in_use' || e.code === 'lock_timeout') {
      throw new UnavailableError(`invoice ${stripeInvoiceId} is being marked paid out of band by another request for payment ${JSON.stringify(noted.reference)}; retry: ${describeStripeError(err)}`);
    }
    if (!isStripeRequestError(err)) throw err;
    refusal = err;
  }
  const si = await stripe.invoices.retrieve(stripeInvoiceId);
  if (si.status === 'paid' && (si as { paid_out_of_band?: boolean }).paid_out_of_band) {
    // Marked paid out of band by Accrue (another settle of the noted payment got there first).
    return { outcome: 'RECORDED', payment: await recordSettledOutOfBand(em.fork(), invoiceId, noted) };
  }
  if (si.status === 'paid') {
    await forgetOutOfBand(em.fork(), invoiceId, noted.reference);
    await recordProviderPayment(em.fork(), invoiceId, stripeInvoiceId);
    return { outcome: 'PAID_AT_STRIPE', stripeStatus: si.status };
  }
  if (si.status === 'void') {
    await forgetOutOfBand(em.fork(), invoiceId, noted.reference);
    return { outcome: 'VOID', stripeStatus: si.status };
  }
  // Still open: the mark may yet happen (or a charge): the note stays, the request is retried.
  if (si.status === 'open') throw new UnavailableError(`Stripe refused to mark invoice ${stripeInvoiceId} paid out of band while it is open; payment ${JSON.stringify(noted.reference)} stays noted, retry: ${describeStripeError(refusal)}`);
  await forgetOutOfBand(em.fork(), invoiceId, noted.reference);
  return { outcome: 'NOT_OPEN', stripeStatus: si.status ?? null };
}

/**
 * Stripe's copy of an invoice is paid: the payment it stands for is recorded — the manual payment
 * noted for it when Accrue marked it paid out of band (`settleOutOfBand`), else Stripe's own.
 */
export async function recordStripePaid(stripe: Stripe | undefined, em: EntityManager, invoiceId: string, stripeInvoiceId: string, paidAt?: string): Promise<RecordedPayment | undefined> {
  if (stripe && (await outOfBandPayment(em.fork(), invoiceId))) {
    const r = await settleOutOfBand(stripe, em, invoiceId, stripeInvoiceId);
    if (r?.outcome === 'RECORDED') return r.payment.created ? r.payment : undefined;
    if (r) return undefined;
  }
  return recordProviderPayment(em.fork(), invoiceId, stripeInvoiceId, paidAt);
}
