import { LockMode } from '@mikro-orm/core';
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type Stripe from 'stripe';
import { ConflictError, NotFoundError } from '../billing/errors.js';
import { dec } from '../billing/money.js';
import { chargeInvoiceMetadata } from '../billing/stripe-metadata.js';
import { stripeItems } from '../billing/stripe-items.js';
import { Invoice } from '../db/entities.js';
import { standings } from '../db/payments.js';
import { recordStripePaid, settleOutOfBand } from '../integrations/stripe/out-of-band.js';
import { billingConfigOf, externalInvoices, outOfBandPayment, recordDunning, recordExternal, type DunningState, type ExternalStatus } from '../db/stripe.js';
import { Contract } from '../db/entities.js';
import type { RechargeKind } from '../billing/recharge.js';
import { CONFIG_KEY, failGatedCommit, failRecharge, findGatedCommit, findRecharge, grantGatedCommit, grantRecharge, recordGatedCommitInvoice, recordRechargeInvoice, type GrantedRecharge } from '../db/recharge.js';
import { describeStripeError, isStripeCardError, isStripeRequestError, stripeClient } from '../integrations/stripe/client.js';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';
import { crashPoint } from '../workers/failpoints.js';

/**
 * Stripe, as activities. Every call that creates or charges carries an idempotency key made of the
 * Accrue invoice id and the step (`accrue:<invoice>:create`, `…:item:<line>`, `…:finalize`,
 * `…:pay`, `…:dunning:<attempt>`, `…:void`), so an activity retried after a crash — even one killed
 * between Stripe's answer and recording it — gets Stripe's first answer again instead of a second
 * invoice or charge. The Stripe invoice id is recorded as soon as Stripe gives it. Transient
 * failures (5xx, 429, timeouts) throw and Temporal retries; a request Stripe refuses (4xx) is
 * recorded as INVALID_REQUEST_ERROR on the invoice and not retried; a declined card is an outcome.
 */
export type SyncOutcome = 'STRIPE_OFF' | 'NO_BILLING_CONFIG' | ExternalStatus;

export interface SyncResult {
  outcome: SyncOutcome;
  stripeInvoiceId?: string;
  message?: string;
  customerId?: string;
  /** A `send_invoice` invoice sent and open: dunning acts at this instant (its due date) if it is still unpaid. */
  firstAttemptAt?: string;
}

const key = (invoiceId: string, step: string) => `accrue:${invoiceId}:${step}`;

/**
 * Between Stripe calls: tells Temporal the activity is alive (a worker killed mid-sync is noticed
 * within the heartbeat timeout, not the long start-to-close one), and stops an attempt Temporal
 * has cancelled (timed out, its workflow gone): a newer attempt carries on with the same
 * idempotency keys, so this one must not send more. Outside an activity: nothing.
 */
function beat(): void {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return; // not running as an activity (direct calls in tests)
  }
  ctx.heartbeat();
  ctx.cancellationSignal.throwIfAborted();
}

function statusOf(si: Stripe.Invoice): ExternalStatus {
  switch (si.status) {
    case 'draft': return 'DRAFT';
    case 'open': return 'FINALIZED';
    case 'paid': return 'PAID';
    case 'void': return 'VOID';
    case 'uncollectible': return 'UNCOLLECTIBLE';
    default: return 'FINALIZED';
  }
}

/** Transient Stripe failures are rethrown as plain errors (retryable) carrying only the description. */
function rethrow(err: unknown): never {
  throw new Error(describeStripeError(err));
}

export function createStripeActivities({ orm, stripe: settings }: ActivityDeps) {
  const client = stripeClient(settings);
  const scheduleMs = settings?.dunningScheduleMs ?? [86_400_000, 3 * 86_400_000, 5 * 86_400_000, 7 * 86_400_000];

  const loadInvoice = async (invoiceId: string) => {
    const inv = await orm.em.fork().findOne(Invoice, { id: invoiceId });
    if (!inv) throw new NotFoundError('invoice', invoiceId);
    return inv;
  };

  /** Voids (or deletes, while still a draft) the Stripe copy of an invoice voided in Accrue. */
  const voidAtStripe = async (stripe: Stripe, inv: Invoice, externalId: string, collectionMethod: 'charge_automatically' | 'send_invoice'): Promise<SyncResult> => {
    const em = orm.em.fork();
    let si = await stripe.invoices.retrieve(externalId);
    if (si.status === 'draft') {
      try {
        await stripe.invoices.del(externalId);
      } catch (err) {
        // Deleted by an earlier attempt whose answer was lost: done.
        if (!(err instanceof Error && (err as { statusCode?: number }).statusCode === 404)) throw err;
      }
    } else if (si.status === 'open' || si.status === 'uncollectible') {
      si = await stripe.invoices.voidInvoice(externalId, {}, { idempotencyKey: key(inv.id, 'void') });
    } else if (si.status === 'paid') {
      // Paid at Stripe before the void reached it: Stripe cannot void a paid invoice (refund it there).
      log.warn('the invoice was voided in Accrue but is already paid at Stripe; refund it in Stripe if intended', { invoiceId: inv.id, stripeInvoiceId: externalId });
      await recordExternal(em, { invoiceId: inv.id, externalId, status: 'PAID', collectionMethod, hostedUrl: si.hosted_invoice_url ?? null });
      return { outcome: 'PAID', stripeInvoiceId: externalId };
    }
    await recordExternal(em, { invoiceId: inv.id, externalId, status: 'VOID', collectionMethod, hostedUrl: si.hosted_invoice_url ?? null });
    return { outcome: 'VOID', stripeInvoiceId: externalId };
  };

  /**
   * One payment through a Stripe invoice charged at once (a recharge, a gated commit): create (id
   * recorded by `record`), one item, finalize, pay — each with `<keyPrefix>:<step>` as idempotency
   * key, resuming from the recorded invoice. A decline or a request Stripe refuses is FAILED.
   */
  const chargeAtStripe = async (o: {
    customerId: string; amount: string; keyPrefix: string; existingInvoiceId: string | null; description: string; itemName: string;
    /** The invoice's: the gate's invoice_metadata and Accrue's keys. The item carries Accrue's only. */
    invoiceMetadata: Record<string, string>; metadata: Record<string, string>; record: (externalId: string) => Promise<void>; crashPoint?: string;
  }): Promise<{ outcome: 'PAID' | 'FAILED'; message?: string }> => {
    if (!client) return { outcome: 'FAILED', message: 'Stripe is off (STRIPE_SECRET_KEY is not set)' };
    const config = await billingConfigOf(orm.em.fork(), o.customerId);
    if (!config) return { outcome: 'FAILED', message: 'the customer has no Stripe billing config' };
    const k = (step: string) => `${o.keyPrefix}:${step}`;
    try {
      // A heartbeat before every call: an attempt cut off from Temporal stops between calls
      // instead of racing the attempt that replaced it (which then meets Stripe's 409
      // idempotency_key_in_use for a call still in flight, and retries until it has its answer).
      let si: Stripe.Invoice;
      beat();
      if (!o.existingInvoiceId) {
        si = await client.invoices.create({
          customer: config.providerCustomerId, collection_method: 'charge_automatically', auto_advance: false, currency: 'usd',
          pending_invoice_items_behavior: 'exclude', description: o.description, metadata: o.invoiceMetadata,
        }, { idempotencyKey: k('create') });
        beat();
        await o.record(si.id!);
      } else {
        si = await client.invoices.retrieve(o.existingInvoiceId);
      }
      if (si.status === 'draft') {
        if (!dec(o.amount).isInteger()) return { outcome: 'FAILED', message: `the amount ${o.amount} is not whole cents` };
        beat();
        await client.invoiceItems.create({
          customer: config.providerCustomerId, invoice: si.id!, amount: dec(o.amount).toNumber(), currency: 'usd', description: o.itemName, metadata: o.metadata,
        }, { idempotencyKey: k('item') });
        beat();
        si = await client.invoices.finalizeInvoice(si.id!, { auto_advance: false }, { idempotencyKey: k('finalize') });
      }
      if (si.status === 'open') {
        beat();
        try {
          si = await client.invoices.pay(si.id!, {}, { idempotencyKey: k('pay') });
          if (o.crashPoint) crashPoint(o.crashPoint); // charged at Stripe; nothing granted yet
        } catch (err) {
          if (!isStripeCardError(err)) throw err;
          // Nothing will be granted for it: the open invoice is voided so it cannot be paid later.
          beat();
          await client.invoices.voidInvoice(si.id!, {}, { idempotencyKey: k('void') });
          return { outcome: 'FAILED', message: describeStripeError(err) };
        }
      }
      if (si.status === 'paid') return { outcome: 'PAID' };
      return { outcome: 'FAILED', message: `the Stripe invoice is ${si.status}` };
    } catch (err) {
      if (isStripeRequestError(err)) return { outcome: 'FAILED', message: describeStripeError(err) };
      rethrow(err);
    }
  };

  return {
    /**
     * Sends a finalized invoice to Stripe: create (one item per Accrue line, integer cents), finalize,
     * and for `charge_automatically` pay with the default payment method. Resumes where an earlier
     * attempt stopped. Zero-total invoices are not sent (SKIPPED).
     */
    async syncInvoiceToStripe({ invoiceId }: { invoiceId: string }): Promise<SyncResult> {
      return classified(async () => {
        if (!client) return { outcome: 'STRIPE_OFF' };
        const em = orm.em.fork();
        const inv = await loadInvoice(invoiceId);
        if (inv.status === 'DRAFT') throw new ConflictError(`invoice ${invoiceId} is not finalized; only finalized invoices go to Stripe`);
        const config = await billingConfigOf(em, inv.customerId);
        if (!config) return { outcome: 'NO_BILLING_CONFIG' };
        const ext = (await externalInvoices(em, [invoiceId])).get(invoiceId);
        if (ext && ['PAID', 'VOID', 'SKIPPED', 'INVALID_REQUEST_ERROR'].includes(ext.status)) return { outcome: ext.status, ...(ext.externalId ? { stripeInvoiceId: ext.externalId } : {}) };
        if (inv.status === 'VOID' && !ext?.externalId) return { outcome: 'VOID' };
        const base = { invoiceId, collectionMethod: config.collectionMethod };
        if (dec(inv.total).lte(0)) {
          await recordExternal(em, { ...base, externalId: null, status: 'SKIPPED', hostedUrl: null });
          return { outcome: 'SKIPPED' };
        }
        const terms = (await standings(em, [inv])).get(inv.id);
        // Paid in full another way (a wire recorded while Stripe was down): nothing to collect.
        if (!ext?.externalId && terms?.status === 'PAID') {
          await recordExternal(em, { ...base, externalId: null, status: 'SKIPPED', hostedUrl: null });
          return { outcome: 'SKIPPED' };
        }
        try {
          let si: Stripe.Invoice;
          if (!ext?.externalId) {
            const daysUntilDue = terms?.dueAt && inv.finalizedAt ? Math.max(0, Math.round((Date.parse(terms.dueAt) - inv.finalizedAt.getTime()) / 86_400_000)) : 30;
            si = await client.invoices.create({
              customer: config.providerCustomerId,
              collection_method: config.collectionMethod,
              ...(config.collectionMethod === 'send_invoice' ? { days_until_due: daysUntilDue } : {}),
              auto_advance: false,
              currency: 'usd',
              pending_invoice_items_behavior: 'exclude',
              description: `Invoice ${inv.id} for ${inv.periodStart.toISOString().slice(0, 10)} to ${inv.periodEnd.toISOString().slice(0, 10)}`,
              metadata: { accrue_invoice_id: inv.id, accrue_contract_id: inv.contractId, accrue_customer_id: inv.customerId },
            }, { idempotencyKey: key(inv.id, 'create') });
            beat();
            crashPoint('@stripe-invoice-created'); // Stripe has answered; nothing recorded yet
            await recordExternal(em, { ...base, externalId: si.id!, status: 'DRAFT', hostedUrl: null });
          } else {
            si = await client.invoices.retrieve(ext.externalId);
          }
          // A void that raced this send: whichever of the two writes second sees the other.
          if ((await orm.em.fork().findOne(Invoice, { id: invoiceId }, { fields: ['status'] }))?.status === 'VOID') {
            return await voidAtStripe(client, inv, si.id!, config.collectionMethod);
          }
          if (si.status === 'draft') {
            const items = stripeItems(inv.lineItems, inv.total);
            for (const item of items) {
              await client.invoiceItems.create({
                customer: config.providerCustomerId, invoice: si.id!, amount: item.amount, currency: 'usd', description: item.description,
                metadata: { accrue_invoice_id: inv.id, accrue_line: String(item.index) },
              }, { idempotencyKey: key(inv.id, `item:${item.index}`) });
              beat();
            }
            // Stripe keeps idempotency keys 24 h: a draft resumed later could hold an item twice.
            // Finalized only when Stripe's total is the Accrue invoice's.
            const draft = await client.invoices.retrieve(si.id!);
            const want = items.reduce((a, i) => a + i.amount, 0);
            if (draft.total !== want) {
              await recordExternal(em, { ...base, externalId: si.id!, status: 'INVALID_REQUEST_ERROR', hostedUrl: null });
              log.error('the Stripe draft does not add up to the invoice; not finalized (fix the draft in Stripe and resend)', { invoiceId, stripeInvoiceId: si.id, stripeTotal: draft.total, total: want });
              return { outcome: 'INVALID_REQUEST_ERROR', stripeInvoiceId: si.id!, message: `the Stripe draft totals ${draft.total}, not ${want}` };
            }
            si = await client.invoices.finalizeInvoice(si.id!, { auto_advance: false }, { idempotencyKey: key(inv.id, 'finalize') });
            beat();
          }
          await recordExternal(em, { ...base, externalId: si.id!, status: statusOf(si), hostedUrl: si.hosted_invoice_url ?? null });
          // Read under the invoice's row lock, after the copy's id is recorded: a manual payment
          // either committed before (seen here) or sees the copy and settles it at Stripe itself.
          const gate = await orm.em.fork().transactional(async (tx) => {
            await tx.findOne(Invoice, { id: invoiceId }, { lockMode: LockMode.PESSIMISTIC_WRITE, fields: ['id'] });
            return { standing: (await standings(tx, [inv])).get(inv.id), noted: await outOfBandPayment(tx, invoiceId) };
          });
          if (si.status === 'open' && gate.noted) {
            // A manual payment of the whole amount is settling it out of band: it is finished here.
            await settleOutOfBand(client, em, invoiceId, si.id!);
            si = await client.invoices.retrieve(si.id!);
          } else if (si.status === 'open' && gate.standing?.status === 'PAID') {
            // Paid in Accrue meanwhile: its copy can no longer be paid at Stripe.
            try {
              si = await client.invoices.pay(si.id!, { paid_out_of_band: true }, { idempotencyKey: key(inv.id, 'out_of_band') });
            } catch (err) {
              if (!isStripeRequestError(err)) throw err;
              si = await client.invoices.retrieve(si.id!);
            }
            await recordExternal(em, { ...base, externalId: si.id!, status: statusOf(si), hostedUrl: si.hosted_invoice_url ?? null });
            return { outcome: statusOf(si), stripeInvoiceId: si.id!, customerId: inv.customerId };
          } else if (si.status === 'open' && gate.standing && !dec(gate.standing.amountDue).eq(si.total)) {
            // Its items add up to more than is due (paid in part before it was sent): nothing is
            // collected there. (Stripe's amount_due may differ by the customer's Stripe balance.)
            await recordExternal(em, { ...base, externalId: si.id!, status: 'INVALID_REQUEST_ERROR', hostedUrl: si.hosted_invoice_url ?? null });
            log.error('the Stripe invoice asks for another amount than is due; not charged (settle it in Stripe)', { invoiceId, stripeInvoiceId: si.id, stripeTotal: si.total, amountDue: gate.standing.amountDue });
            return { outcome: 'INVALID_REQUEST_ERROR', stripeInvoiceId: si.id!, message: `the Stripe invoice totals ${si.total}, not the ${gate.standing.amountDue} due` };
          } else if (si.status === 'open' && config.collectionMethod === 'charge_automatically') {
            try {
              si = await client.invoices.pay(si.id!, {}, { idempotencyKey: key(inv.id, 'pay') });
              crashPoint('@stripe-charged'); // charged at Stripe; the payment is not recorded yet
            } catch (err) {
              if (isStripeRequestError(err)) {
                // Settled meanwhile (marked paid out of band for a manual payment): see by what.
                const now = await client.invoices.retrieve(si.id!);
                if (now.status !== 'paid') throw err;
                si = now;
              } else {
                if (!isStripeCardError(err)) throw err;
                await recordExternal(em, { ...base, externalId: si.id!, status: 'PAYMENT_FAILED', hostedUrl: si.hosted_invoice_url ?? null });
                log.info('the card payment failed; dunning starts', { invoiceId, stripeInvoiceId: si.id, error: describeStripeError(err) });
                return { outcome: 'PAYMENT_FAILED', stripeInvoiceId: si.id!, message: describeStripeError(err), customerId: inv.customerId };
              }
            }
          }
          if (si.status === 'paid') await recordStripePaid(client, em, invoiceId, si.id!);
          await recordExternal(em, { ...base, externalId: si.id!, status: statusOf(si), hostedUrl: si.hosted_invoice_url ?? null });
          const dunningAt = si.status === 'open' && config.collectionMethod === 'send_invoice' && terms?.dueAt ? { firstAttemptAt: terms.dueAt } : {};
          return { outcome: statusOf(si), stripeInvoiceId: si.id!, customerId: inv.customerId, ...dunningAt };
        } catch (err) {
          if (isStripeRequestError(err)) {
            const message = describeStripeError(err);
            await recordExternal(em, { ...base, externalId: ext?.externalId ?? null, status: 'INVALID_REQUEST_ERROR', hostedUrl: null });
            log.error('Stripe refused the invoice; fix the billing config and resend', { invoiceId, error: message });
            return { outcome: 'INVALID_REQUEST_ERROR', message };
          }
          rethrow(err);
        }
      });
    },

    /** The Stripe copy of a voided Accrue invoice is voided (deleted while a draft). Nothing to do when it was never sent. */
    async voidStripeInvoice({ invoiceId }: { invoiceId: string }): Promise<SyncResult> {
      return classified(async () => {
        if (!client) return { outcome: 'STRIPE_OFF' };
        const ext = (await externalInvoices(orm.em.fork(), [invoiceId])).get(invoiceId);
        if (!ext?.externalId) return { outcome: 'VOID' };
        try {
          return await voidAtStripe(client, await loadInvoice(invoiceId), ext.externalId, ext.collectionMethod);
        } catch (err) {
          if (isStripeRequestError(err)) throw ApplicationFailure.nonRetryable(describeStripeError(err), 'StripeRefused');
          rethrow(err);
        }
      });
    },

    /** The dunning schedule (ACCRUE_DUNNING_SCHEDULE), read by the worker and kept in the workflow's history. */
    async dunningPlan(): Promise<{ scheduleMs: number[] }> {
      return { scheduleMs };
    },

    async recordDunningStep(d: { invoiceId: string; status: DunningState['status']; step: number; steps: number; nextAttemptAt: string | null }): Promise<void> {
      return classified(() => recordDunning(orm.em.fork(), d));
    },

    /**
     * One dunning attempt: asks Stripe to charge the invoice again (its own idempotency key per
     * attempt). SETTLED when there is nothing to collect any more (paid — at Stripe or in Accrue —
     * or voided).
     */
    async retryStripePayment({ invoiceId, attempt }: { invoiceId: string; attempt: number }): Promise<{ outcome: 'PAID' | 'FAILED' | 'SETTLED'; message?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const inv = await loadInvoice(invoiceId);
        const standing = (await standings(em, [inv])).get(inv.id);
        if (inv.status !== 'FINALIZED' || !standing || dec(standing.amountDue).lte(0)) return { outcome: 'SETTLED' };
        const ext = (await externalInvoices(em, [invoiceId])).get(invoiceId);
        if (!client || !ext?.externalId) return { outcome: 'FAILED', message: client ? 'the invoice is not at Stripe' : 'Stripe is off' };
        const base = { invoiceId, externalId: ext.externalId, collectionMethod: ext.collectionMethod };
        try {
          let si = await client.invoices.retrieve(ext.externalId);
          if (si.status === 'open' && (await outOfBandPayment(em, invoiceId))) {
            // A manual payment of the whole amount is settling it out of band: not charged.
            await settleOutOfBand(client, em, invoiceId, si.id!);
            si = await client.invoices.retrieve(si.id!);
          } else if (si.status === 'open') {
            try {
              si = await client.invoices.pay(si.id!, {}, { idempotencyKey: key(inv.id, `dunning:${attempt}`) });
            } catch (err) {
              if (isStripeRequestError(err)) {
                const now = await client.invoices.retrieve(si.id!);
                if (now.status !== 'paid') throw err;
                si = now; // settled meanwhile (paid out of band)
              } else {
                if (!isStripeCardError(err)) throw err;
                await recordExternal(em, { ...base, status: 'PAYMENT_FAILED', hostedUrl: si.hosted_invoice_url ?? null });
                return { outcome: 'FAILED', message: describeStripeError(err) };
              }
            }
          }
          await recordExternal(em, { ...base, status: statusOf(si), hostedUrl: si.hosted_invoice_url ?? null });
          if (si.status === 'paid') {
            await recordStripePaid(client, em, invoiceId, si.id!);
            return { outcome: 'PAID' };
          }
          return si.status === 'void' ? { outcome: 'SETTLED' } : { outcome: 'FAILED', message: `the Stripe invoice is ${si.status}` };
        } catch (err) {
          if (isStripeRequestError(err)) return { outcome: 'FAILED', message: describeStripeError(err) };
          rethrow(err);
        }
      });
    },

    /**
     * The payment of recharge n of a contract: a Stripe invoice for the recharge amount, charged to
     * the default payment method, with idempotency keys `accrue:recharge:<contract>:<n>:<step>`
     * (one invoice and one charge however often this runs). NO_GATE: the contract's gate is NONE.
     * FAILED: declined, or nothing to charge (no Stripe, no billing config) — not retried.
     */
    async chargeRecharge({ contractId, n, kind = 'prepaid' }: { contractId: string; n: number; kind?: RechargeKind }): Promise<{ outcome: 'PAID' | 'NO_GATE' | 'FAILED'; message?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const r = await findRecharge(em, contractId, n, kind);
        if (!r) throw new NotFoundError('recharge', `${contractId}/${n}`);
        if (r.status === 'GRANTED' || r.status === 'PAID') return { outcome: 'PAID' };
        if (r.status === 'FAILED') return { outcome: 'FAILED', message: r.failure ?? 'failed' };
        const contract = await em.findOneOrFail(Contract, { id: contractId });
        const cfg = contract.terms?.[CONFIG_KEY[kind]];
        if (!cfg || cfg.payment_gate_config.payment_gate_type === 'NONE') return { outcome: 'NO_GATE' };
        if (!client) return { outcome: 'FAILED', message: 'Stripe is off (STRIPE_SECRET_KEY is not set)' };
        const what = kind === 'prepaid' ? 'recharge' : 'spend-threshold';
        const accrueKeys = { [kind === 'prepaid' ? 'accrue_recharge' : 'accrue_spend_threshold']: `${contractId}:${n}`, accrue_contract_id: contractId, accrue_customer_id: r.customerId };
        return chargeAtStripe({
          customerId: r.customerId, amount: r.amount, keyPrefix: `accrue:${what}:${contractId}:${n}`, existingInvoiceId: r.externalInvoiceId,
          description: kind === 'prepaid' ? `Prepaid balance recharge ${n}` : `Spend threshold ${n}`, itemName: cfg.commit.name ?? (kind === 'prepaid' ? 'Prepaid balance recharge' : 'Spend threshold'),
          invoiceMetadata: chargeInvoiceMetadata(cfg.payment_gate_config, accrueKeys),
          metadata: accrueKeys,
          record: (id) => recordRechargeInvoice(em, contractId, n, id, kind), crashPoint: '@recharge-charged',
        });
      });
    },

    /** The payment of a payment-gated commit (its own invoice, keys `accrue:commit:<grant id>:<step>`). */
    async chargeGatedCommit({ grantId }: { grantId: string }): Promise<{ outcome: 'PAID' | 'FAILED'; message?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const g = await findGatedCommit(em, grantId);
        if (!g) throw new NotFoundError('gated commit', grantId);
        if (g.status === 'GRANTED') return { outcome: 'PAID' };
        if (g.status === 'FAILED') return { outcome: 'FAILED', message: g.failure ?? 'failed' };
        const accrueKeys = { accrue_commit: grantId, accrue_contract_id: g.contractId, accrue_customer_id: g.customerId };
        return chargeAtStripe({
          customerId: g.customerId, amount: g.amount, keyPrefix: `accrue:commit:${grantId}`, existingInvoiceId: g.externalInvoiceId,
          description: `Commit ${g.name ?? grantId}`, itemName: g.name ?? 'Prepaid commit',
          invoiceMetadata: chargeInvoiceMetadata(g.paymentGateConfig ?? undefined, accrueKeys),
          metadata: accrueKeys,
          record: (id) => recordGatedCommitInvoice(em, grantId, id),
        });
      });
    },

    async grantGatedCommit({ grantId }: { grantId: string }): Promise<boolean> {
      return classified(() => grantGatedCommit(orm.em.fork(), grantId));
    },

    async failGatedCommit({ grantId, failure }: { grantId: string; failure: string }): Promise<void> {
      return classified(() => failGatedCommit(orm.em.fork(), grantId, failure));
    },

    async grantRecharge({ contractId, n, kind = 'prepaid' }: { contractId: string; n: number; kind?: RechargeKind }): Promise<GrantedRecharge> {
      return classified(async () => {
        const granted = await grantRecharge(orm.em.fork(), contractId, n, kind);
        if (granted.created && granted.invoice) crashPoint('@recharge-invoiced'); // granted and billed; its invoice's close not started yet
        return granted;
      });
    },

    async failRecharge({ contractId, n, failure, kind = 'prepaid' }: { contractId: string; n: number; failure: string; kind?: RechargeKind }): Promise<void> {
      return classified(() => failRecharge(orm.em.fork(), contractId, n, failure, kind));
    },
  };
}
