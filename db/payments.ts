import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ConflictError, NotFoundError, ValidationError } from '../billing/errors.js';
import { dec, jsonDecimal } from '../billing/money.js';
import { paymentStanding, type PaymentStanding } from '../billing/payments.js';
import type { Decimal } from 'decimal.js';
import { Contract, Invoice } from './entities.js';
import { enqueueNotification } from './notifications.js';
import { pgTextArray } from './sql.js';
import { dunningStates, markExternalPaid, noteOutOfBand, stripeCollection, type OutOfBandPayment } from './stripe.js';

/**
 * Payments against finalized invoices: the one domain function every payment goes through (a
 * finance user's wire transfer today, a billing provider's `invoice.paid` later), and the payment
 * standing of invoices (`billing/payments.ts` decides it). Amounts are in the invoice's credit
 * type (USD cents), decimal.
 */
export interface PaymentInput {
  invoiceId: string;
  /** Decimal string, > 0, at most the amount still due; `REMAINING`: whatever is due when the invoice is locked. */
  amount: string;
  /** ISO instant; defaults to now. */
  paidAt?: string;
  /** The payment's reference (wire id, cheque number): recording the same reference twice is one payment. */
  reference: string;
  recordedBy?: string | null;
  source?: 'MANUAL' | 'STRIPE';
}

/** A payment received outside a billing provider, in an Accrue where Stripe may be on. */
export interface ManualPaymentInput extends Omit<PaymentInput, 'source' | 'amount'> {
  amount: string;
  /** Stripe is on: invoices it collects (`stripeCollection`) take only payments of the whole amount due. */
  stripeOn: boolean;
}

/**
 * The invoice's Stripe copy is open: it is marked paid out of band first (the caller asks Stripe,
 * which settles it against any charge in flight), then the noted payment is recorded.
 */
export interface SettleAtStripeFirst {
  settleAtStripe: { invoiceId: string; contractId: string; stripeInvoiceId: string; payment: OutOfBandPayment };
}

export interface RecordedPayment {
  invoiceId: string;
  contractId: string;
  reference: string;
  amount: string;
  paidAt: string;
  /** False when this reference was already recorded (the same payment: nothing written). */
  created: boolean;
  standing: PaymentStanding;
}

/**
 * Records a payment in one transaction, under the invoice's row lock (two payments at once cannot
 * both fit the amount due). Idempotent on (invoice, reference): the same reference with the same
 * amount answers the recorded payment; with another amount it is a conflict.
 */
export async function recordPayment(em: EntityManager, p: PaymentInput): Promise<RecordedPayment> {
  const r = await recordPaymentOnce(em, p);
  if ('settleAtStripe' in r) throw new Error('unreachable: only manual payments are settled at Stripe');
  return r;
}

/**
 * A manual payment (`POST /v1/accrue/invoices/{id}/payments`). On an invoice Stripe collects, only
 * the whole amount due is taken (Stripe asks for all of it: a part paid here would be collected
 * again there) — a smaller amount is a 409; while its Stripe copy is being created, a 409 to
 * retry; once the copy is open, the payment is noted and `settleAtStripe` returned.
 */
export async function recordManualPayment(em: EntityManager, p: ManualPaymentInput): Promise<RecordedPayment | SettleAtStripeFirst> {
  return recordPaymentOnce(em, { ...p, source: 'MANUAL' }, p.stripeOn);
}

/**
 * The payment noted for the invoice's Stripe copy, now paid out of band there: recorded as the
 * manual payment it is (idempotent on its reference), and the copy's status PAID with it.
 */
export async function recordSettledOutOfBand(em: EntityManager, invoiceId: string, payment: OutOfBandPayment): Promise<RecordedPayment> {
  // The payment and the copy's PAID status commit together: never a copy PAID without its payment.
  return em.transactional(async (tx) => {
    const recorded = await recordPayment(tx, { invoiceId, amount: payment.amount, reference: payment.reference, paidAt: payment.paidAt, recordedBy: payment.recordedBy, source: 'MANUAL' });
    await markExternalPaid(tx, invoiceId);
    return recorded;
  });
}

async function recordPaymentOnce(em: EntityManager, p: PaymentInput, stripeOn = false): Promise<RecordedPayment | SettleAtStripeFirst> {
  return em.transactional(async (tx): Promise<RecordedPayment | SettleAtStripeFirst> => {
    const inv = await tx.findOne(Invoice, { id: p.invoiceId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!inv) throw new NotFoundError('invoice', p.invoiceId, 'invoice_id');
    const remaining = p.amount === 'REMAINING';
    if (!remaining && (!dec(p.amount).isInteger() || dec(p.amount).lte(0))) throw new ValidationError('amount', `must be a positive whole number of cents, got ${p.amount}`);
    const [existing] = await tx.execute<{ amount: string; paid_at: Date }[]>(
      'select amount::text as amount, paid_at from invoice_payment where invoice_id = ? and reference = ?', [inv.id, p.reference]);
    if (existing) {
      if (!remaining && !dec(existing.amount).eq(dec(p.amount))) throw new ConflictError(`reference: payment ${JSON.stringify(p.reference)} on invoice ${inv.id} was recorded with amount ${existing.amount}, not ${dec(p.amount).toFixed()}`);
      return { invoiceId: inv.id, contractId: inv.contractId, reference: p.reference, amount: existing.amount, paidAt: new Date(existing.paid_at).toISOString(), created: false, standing: (await standings(tx, [inv])).get(inv.id)! };
    }
    if (inv.status !== 'FINALIZED') throw new ValidationError('invoice_id', `invoice ${inv.id} is ${inv.status}; payments are recorded on finalized invoices only`);
    const before = (await standings(tx, [inv])).get(inv.id)!;
    const amount = remaining ? dec(before.amountDue) : dec(p.amount);
    if (remaining && amount.lte(0)) return { invoiceId: inv.id, contractId: inv.contractId, reference: p.reference, amount: '0', paidAt: p.paidAt ?? new Date().toISOString(), created: false, standing: before };
    if (!amount.isInteger() || amount.lte(0)) throw new ValidationError('amount', `must be a positive whole number of cents, got ${p.amount}`);
    if (amount.gt(before.amountDue)) throw new ValidationError('amount', `${amount.toFixed()} is more than the ${before.amountDue} still due on invoice ${inv.id}`);
    const paidAt = p.paidAt ?? new Date().toISOString();
    const collection = stripeOn ? await stripeCollection(tx, inv) : undefined;
    if (collection) {
      const at = collection.externalId ? ` (${collection.externalId})` : '';
      if (amount.lt(before.amountDue)) throw new ConflictError(`amount: invoice ${inv.id} is collected through Stripe${at}, which asks for the whole ${before.amountDue} due; a manual payment must settle all of it (or the customer pays at Stripe)`);
      if (collection.externalId && (collection.status === 'QUEUED' || collection.status === 'DRAFT')) {
        throw new ConflictError(`invoice ${inv.id} is being sent to Stripe${at}; retry the payment in a moment`);
      }
      if (collection.externalId) {
        const payment = { reference: p.reference, amount: amount.toFixed(), paidAt, recordedBy: p.recordedBy ?? null };
        const noted = await noteOutOfBand(tx, inv.id, payment);
        if (noted.reference !== p.reference) throw new ConflictError(`invoice ${inv.id} is being settled at Stripe by payment ${JSON.stringify(noted.reference)}; repeat that request`);
        return { settleAtStripe: { invoiceId: inv.id, contractId: inv.contractId, stripeInvoiceId: collection.externalId, payment: noted } };
      }
    }
    await tx.execute('insert into invoice_payment (invoice_id, reference, amount, paid_at, recorded_by, source) values (?, ?, ?, ?, ?, ?)',
      [inv.id, p.reference, amount.toFixed(), paidAt, p.recordedBy ?? null, p.source ?? 'MANUAL']);
    const after = (await standings(tx, [inv])).get(inv.id)!;
    if (after.status !== before.status) await notifyPaymentStatus(tx, inv, after.status, after.amountDue, `payment:${p.reference}`);
    return { invoiceId: inv.id, contractId: inv.contractId, reference: p.reference, amount: amount.toFixed(), paidAt, created: true, standing: after };
  });
}

/**
 * `accrue.invoice.payment_status_changed`, written in the transaction that changed it (a payment,
 * a void); `cause` makes it unique per change.
 */
export async function notifyPaymentStatus(tx: EntityManager, inv: Pick<Invoice, 'id' | 'customerId' | 'contractId'>, status: string, amountDue: string | Decimal, cause: string, extra: Record<string, unknown> = {}): Promise<void> {
  await enqueueNotification(tx, {
    type: 'accrue.invoice.payment_status_changed', dedupKey: `payment_status:${inv.id}:${cause}`, customerId: inv.customerId,
    properties: { invoice_id: inv.id, customer_id: inv.customerId, contract_id: inv.contractId, payment_status: status, amount_due: jsonDecimal(amountDue), ...extra },
  });
}

/**
 * Why these invoices cannot be voided: the payments still kept on them. Voiding an invoice that
 * was paid (in full or in part) would leave the money recorded against nothing and let regenerate
 * bill the period again; it is refused until the payments are refunded (refunds reported by the
 * provider add up to at least what was paid), and while Stripe took or is taking money for it that
 * is not recorded yet (`settlingAtStripe`). Read under the invoices' row locks, so no payment
 * slips in between the check and the void. Undefined when every invoice may be voided.
 */
export async function voidBlockedByPayments(em: EntityManager, invoiceIds: readonly string[]): Promise<string | undefined> {
  if (!invoiceIds.length) return undefined;
  const rows = await em.execute<{ invoice_id: string; payments: { reference: string; amount: string }[]; paid: string; refunded: string }[]>(`
    select p.invoice_id::text as invoice_id,
      json_agg(json_build_object('reference', p.reference, 'amount', p.amount::text) order by p.paid_at, p.reference) as payments,
      sum(p.amount)::text as paid,
      coalesce((select sum(r.amount) from invoice_refund r where r.invoice_id = p.invoice_id), 0)::text as refunded
    from invoice_payment p where p.invoice_id = any(?::uuid[])
    group by p.invoice_id order by p.invoice_id`, [pgTextArray([...invoiceIds])]);
  const kept = rows.filter((r) => dec(r.paid).gt(dec(r.refunded)));
  const reasons = kept.map((r) => {
    const list = r.payments.map((x) => `${JSON.stringify(x.reference)} (${dec(x.amount).toFixed()})`).join(', ');
    const refunded = dec(r.refunded).isZero() ? '' : `, ${dec(r.refunded).toFixed()} refunded`;
    return `invoice ${r.invoice_id} has payments ${list}${refunded}`;
  });
  reasons.push(...await settlingAtStripe(em, invoiceIds, { chargesInFlight: true }));
  return reasons.length ? reasons.join('; ') : undefined;
}

/**
 * Money Stripe took (or is taking) for these invoices that is not recorded yet: a manual payment
 * noted for marking the Stripe copy paid out of band (Stripe may already have marked it), a copy
 * Stripe reports paid with no payment recorded, and — with `chargesInFlight` — a copy Stripe
 * charges automatically that is sent but neither paid nor declined yet (the sync may be charging
 * it). Voiding such an invoice would leave that payment unrecordable and let regenerate bill the
 * period again. One reason per invoice, empty when there is none.
 */
export async function settlingAtStripe(em: EntityManager, invoiceIds: readonly string[], o: { chargesInFlight: boolean }): Promise<string[]> {
  if (!invoiceIds.length) return [];
  const rows = await em.execute<{ invoice_id: string; external_id: string | null; external_status: string; collection_method: string; noted: string | null; recorded: boolean }[]>(`
    select e.invoice_id::text as invoice_id, e.external_id, e.external_status, e.collection_method,
      e.out_of_band_payment->>'reference' as noted,
      exists (select 1 from invoice_payment p where p.invoice_id = e.invoice_id) as recorded
    from invoice_external e where e.invoice_id = any(?::uuid[]) order by e.invoice_id`, [pgTextArray([...invoiceIds])]);
  return rows.flatMap((r) => {
    const at = r.external_id ? ` (${r.external_id})` : '';
    if (r.noted) return [`invoice ${r.invoice_id} has payment ${JSON.stringify(r.noted)} being settled at Stripe${at} out of band; repeat that payment request so it is recorded`];
    if (r.external_status === 'PAID' && !r.recorded) return [`invoice ${r.invoice_id} is paid at Stripe${at} and its payment is not recorded yet; retry once it is`];
    if (o.chargesInFlight && r.collection_method === 'charge_automatically' && (r.external_status === 'DRAFT' || r.external_status === 'FINALIZED')) {
      return [`invoice ${r.invoice_id} is being charged at Stripe${at}; retry once the charge is paid or declined`];
    }
    return [];
  });
}

type InvoiceLike = Pick<Invoice, 'id' | 'contractId' | 'status' | 'total'> & { finalizedAt?: Date | string | null };

/** The payment standing of each invoice: paid so far, due, status, due date (finalized ones only). */
export async function standings(em: EntityManager, invoices: readonly InvoiceLike[]): Promise<Map<string, PaymentStanding>> {
  const closed = invoices.filter((i) => i.status !== 'DRAFT');
  if (!closed.length) return new Map();
  const paid = new Map((await em.execute<{ invoice_id: string; paid: string; payments: number }[]>(`
    select invoice_id::text as invoice_id, sum(amount)::text as paid, count(*)::int as payments
    from invoice_payment where invoice_id = any(?::uuid[]) group by invoice_id`, [pgTextArray(closed.map((i) => i.id))])).map((r) => [r.invoice_id, r.paid]));
  const contracts = new Map((await em.find(Contract, { id: { $in: [...new Set(closed.map((i) => i.contractId))] } }, { fields: ['id', 'terms'] })).map((c) => [c.id, c]));
  const dunning = await dunningStates(em, closed.map((i) => i.id));
  return new Map(closed.map((i) => {
    const d = dunning.get(i.id);
    return [i.id, paymentStanding({
      status: i.status, total: i.total, finalizedAt: i.finalizedAt ? new Date(i.finalizedAt).toISOString() : null,
      paid: paid.get(i.id) ?? '0', netPaymentTermsDays: contracts.get(i.contractId)?.terms?.net_payment_terms_days,
      dunningExhaustedAt: d?.status === 'EXHAUSTED' ? d.updatedAt : null,
    })];
  }));
}

/**
 * The contract's finalized invoices that are not settled (neither paid in full nor voided), with
 * their due dates: what the contract workflow watches for ARREARS. Bounded by what is unpaid.
 */
export async function unsettledInvoices(em: EntityManager, contractId: string): Promise<{ invoiceId: string; dueAt: string; amountDue: string }[]> {
  const rows = await em.find(Invoice, { contractId, status: 'FINALIZED' }, {
    fields: ['id', 'contractId', 'status', 'total', 'finalizedAt'], orderBy: { finalizedAt: 'asc', id: 'asc' },
  });
  const s = await standings(em, rows);
  return rows.flatMap((i) => {
    const st = s.get(i.id)!;
    return st.status === 'PAID' || !st.dueAt ? [] : [{ invoiceId: i.id, dueAt: st.dueAt, amountDue: st.amountDue }];
  });
}

/**
 * Stripe says its copy of the invoice is paid: the Accrue invoice is paid in full, once — whatever
 * is still due is recorded as one payment with reference `stripe:<Stripe invoice id>` (the sync
 * activity, a dunning retry and the `invoice.paid` webhook may all report it; the first one
 * records it). Stripe may have covered part of it from the customer's Stripe balance (e.g. an
 * amount below its minimum charge carried from an earlier invoice): it is paid all the same.
 * Undefined when nothing was due any more (already paid, voided). A copy with a manual payment
 * noted for it (`noteOutOfBand`) goes through `settleOutOfBand` instead, which knows which of the
 * two Stripe settled.
 */
export async function recordProviderPayment(em: EntityManager, invoiceId: string, externalId: string, paidAt?: string): Promise<RecordedPayment | undefined> {
  const inv = await em.fork().findOne(Invoice, { id: invoiceId }, { fields: ['id', 'contractId', 'status', 'total', 'finalizedAt'] });
  if (!inv || inv.status !== 'FINALIZED') return undefined;
  const reference = `stripe:${externalId}`;
  const [done] = await em.execute<{ amount: string }[]>('select amount::text as amount from invoice_payment where invoice_id = ? and reference = ?', [invoiceId, reference]);
  if (done) return recordPayment(em.fork(), { invoiceId, amount: done.amount, reference, source: 'STRIPE' });
  // What is due is read under the invoice's lock (a wire recorded meanwhile is not paid twice).
  const paid = await recordPayment(em.fork(), { invoiceId, amount: 'REMAINING', reference, source: 'STRIPE', recordedBy: 'stripe', ...(paidAt ? { paidAt } : {}) });
  return paid.created ? paid : undefined;
}
