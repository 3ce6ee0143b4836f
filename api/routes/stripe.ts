import express, { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import Stripe from 'stripe';
import { AccrueError, ConflictError, NotFoundError, UnavailableError, ValidationError } from '../../billing/errors.js';
import { findCustomer } from '../../db/customers.js';
import { Invoice } from '../../db/entities.js';
import { UUID_RE } from '../../db/ids.js';
import { enqueueNotification } from '../../db/notifications.js';
import { standings } from '../../db/payments.js';
import { recordStripePaid } from '../../integrations/stripe/out-of-band.js';
import { billingConfigOf, COLLECTION_METHODS, deleteBillingConfig, externalInvoices, invoiceIdOfExternal, recordExternal, saveBillingConfig, type CollectionMethod } from '../../db/stripe.js';
import { describeStripeError, stripeClient } from '../../integrations/stripe/client.js';
import type { StripeSettings } from '../../stack/config.js';
import { startDunning } from '../../operations/payments/start-dunning.js';
import { tellContractPaymentsChanged } from '../../operations/payments/tell-contract-payments-changed.js';
import { tellDunning } from '../../operations/payments/tell-dunning.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { objectAt, oneOf, reqStr } from '../../operations/input/validate.js';

const PROVIDER_TYPES = ['aws_marketplace', 'stripe', 'netsuite', 'custom', 'azure_marketplace', 'quickbooks_online', 'workday', 'gcp_marketplace', 'metronome'];

function providerType(raw: string): 'stripe' {
  if (raw === 'stripe') return 'stripe';
  throw new ValidationError('billing_provider_type', PROVIDER_TYPES.includes(raw)
    ? `${raw} is not supported by Accrue; the supported billing provider is stripe`
    : `must be one of ${PROVIDER_TYPES.join(', ')} (Accrue supports stripe), got ${JSON.stringify(raw)}`);
}

/**
 * Metronome's customer billing config for Stripe: `POST|GET|DELETE
 * /v1/customers/{id}/billing-config/stripe`. Creating one checks the Stripe customer exists (400
 * naming billing_provider_customer_id otherwise); with Stripe off it is a 409.
 */
export function billingConfigRouter(orm: MikroORM, settings: StripeSettings | undefined): Router {
  const r = Router();
  const client = stripeClient(settings);
  r.post('/v1/customers/:customer_id/billing-config/:type', allow('finance'), async (req, res) => {
    const type = providerType(String(req.params.type));
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    if (!client) throw new ConflictError(`billing_provider_type: ${type} is off in this Accrue (STRIPE_SECRET_KEY is not set)`);
    const body = objectAt(req.body ?? {}, '', ['billing_provider_customer_id', 'stripe_collection_method']);
    const providerCustomerId = reqStr(body, 'billing_provider_customer_id', '', 255);
    if (!/^cus_[A-Za-z0-9]+$/.test(providerCustomerId)) throw new ValidationError('billing_provider_customer_id', `must be a Stripe customer id (cus_…), got ${JSON.stringify(providerCustomerId)}`);
    const method = (oneOf(body, 'stripe_collection_method', ['charge_automatically', 'send_invoice', 'auto_charge_payment_intent', 'manually_charge_payment_intent'] as const, '', { optional: true }) ?? 'charge_automatically');
    if (!COLLECTION_METHODS.includes(method as CollectionMethod)) throw new ValidationError('stripe_collection_method', `${method} is not supported by Accrue; use charge_automatically or send_invoice`);
    try {
      const found = await client.customers.retrieve(providerCustomerId);
      if ((found as { deleted?: boolean }).deleted) throw new ValidationError('billing_provider_customer_id', `Stripe customer ${providerCustomerId} is deleted`);
    } catch (err) {
      if (err instanceof ValidationError) throw err;
      if (err instanceof Stripe.errors.StripeError && err.statusCode === 404) throw new ValidationError('billing_provider_customer_id', `Stripe has no customer ${providerCustomerId}`);
      throw new UnavailableError(`could not reach Stripe to check the customer; retry: ${describeStripeError(err)}`);
    }
    await saveBillingConfig(em, { customerId: customer.id, providerCustomerId, collectionMethod: method as CollectionMethod });
    res.json({});
  });
  r.get('/v1/customers/:customer_id/billing-config/:type', allow('read', 'finance'), async (req, res) => {
    const type = providerType(String(req.params.type));
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const config = await billingConfigOf(em, customer.id);
    if (!config) throw new NotFoundError(`${type} billing config of customer`, customer.id, 'customer_id');
    res.json({ data: { billing_provider_customer_id: config.providerCustomerId, stripe_collection_method: config.collectionMethod } });
  });
  r.delete('/v1/customers/:customer_id/billing-config/:type', allow('finance'), async (req, res) => {
    const type = providerType(String(req.params.type));
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    if (!(await deleteBillingConfig(em, customer.id))) throw new NotFoundError(`${type} billing config of customer`, customer.id, 'customer_id');
    res.json({});
  });
  return r;
}

/**
 * Stripe's webhooks: `POST /v1/accrue/webhooks/stripe`, verified with `Stripe.webhooks.constructEvent`
 * on the raw body and STRIPE_WEBHOOK_SECRET (400 and no change otherwise). Handled:
 * `invoice.paid` / `invoice.payment_succeeded` (the payment, through recordPayment),
 * `invoice.payment_failed` (starts dunning, or tells the running one), `invoice.voided` (external
 * status; dunning stops), `charge.refunded` (recorded, `accrue.invoice.refunded` sent). Every
 * handler is idempotent, and an event id seen before is acknowledged without doing anything; an
 * event about an invoice Accrue did not send, or of another type, is acknowledged and ignored.
 * A 2xx means the effect is committed; a 503 (Temporal unreachable) makes Stripe deliver it again.
 */
export function stripeWebhooksRouter(orm: MikroORM, temporal: Client, taskQueue: string, settings: StripeSettings | undefined): Router {
  const r = Router();
  r.post('/v1/accrue/webhooks/stripe', express.raw({ type: () => true, limit: '1mb' }), async (req, res) => {
    if (!settings?.webhookSecret) throw new ConflictError('Stripe webhooks are off in this Accrue (STRIPE_WEBHOOK_SECRET is not set)');
    const signature = req.headers['stripe-signature'];
    if (typeof signature !== 'string' || !signature) throw new ValidationError('stripe-signature', 'header is missing: Stripe signs every webhook');
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    let event: Stripe.Event;
    try {
      event = Stripe.webhooks.constructEvent(raw, signature, settings.webhookSecret);
    } catch (err) {
      throw new ValidationError('stripe-signature', `does not verify: ${(err as Error).message}`);
    }
    const em = orm.em.fork();
    const [seen] = await em.execute<{ outcome: string }[]>('select outcome from stripe_event where id = ?', [event.id]);
    if (seen) {
      res.json({ received: true, duplicate: true, outcome: seen.outcome });
      return;
    }
    const { outcome, invoiceId } = await handle(event);
    await em.execute('insert into stripe_event (id, type, invoice_id, outcome) values (?, ?, ?, ?) on conflict do nothing', [event.id, event.type, invoiceId ?? null, outcome]);
    res.json({ received: true, outcome });
  });

  /** The Accrue invoice a Stripe invoice is the copy of (by recorded id, else by its metadata). */
  const accrueInvoiceOf = async (si: { id?: string; metadata?: Stripe.Metadata | null }) => {
    const byId = si.id ? await invoiceIdOfExternal(orm.em.fork(), si.id) : undefined;
    if (byId) return byId;
    // Not recorded yet (the webhook beat the sync's record): by metadata, unless that invoice
    // already has another Stripe copy.
    const meta = si.metadata?.accrue_invoice_id;
    if (!meta || !UUID_RE.test(meta) || !(await orm.em.fork().findOne(Invoice, { id: meta }, { fields: ['id'] }))) return undefined;
    const known = (await externalInvoices(orm.em.fork(), [meta])).get(meta);
    return known?.externalId && known.externalId !== si.id ? undefined : meta;
  };

  /**
   * The Stripe invoice a charge paid: `charge.invoice` in API versions before 2025-03-31; since
   * then through the invoice payments of its payment intent (asked of Stripe; unreachable → 503,
   * and Stripe delivers the event again).
   */
  const client = stripeClient(settings);
  async function invoiceOfCharge(charge: Stripe.Charge): Promise<string | undefined> {
    const direct = (charge as unknown as { invoice?: unknown }).invoice;
    if (typeof direct === 'string') return direct;
    const pi = typeof charge.payment_intent === 'string' ? charge.payment_intent : charge.payment_intent?.id;
    if (!pi || !client) return undefined;
    try {
      const payments = await client.invoicePayments.list({ payment: { type: 'payment_intent', payment_intent: pi }, limit: 1 });
      const inv = payments.data[0]?.invoice;
      return typeof inv === 'string' ? inv : inv?.id ?? undefined;
    } catch (err) {
      throw new UnavailableError(`could not ask Stripe which invoice charge ${charge.id} paid; Stripe will deliver the event again: ${describeStripeError(err)}`);
    }
  }

  async function handle(event: Stripe.Event): Promise<{ outcome: string; invoiceId?: string }> {
    switch (event.type) {
      case 'invoice.paid':
      case 'invoice.payment_succeeded': {
        const si = event.data.object;
        const invoiceId = await accrueInvoiceOf(si);
        if (!invoiceId) return { outcome: 'ignored: not an Accrue invoice' };
        const paidAt = si.status_transitions?.paid_at ? new Date(si.status_transitions.paid_at * 1000).toISOString() : undefined;
        let paid;
        try {
          paid = await recordStripePaid(client, orm.em.fork(), invoiceId, si.id!, paidAt && Date.parse(paidAt) <= Date.now() ? paidAt : undefined);
        } catch (err) {
          if (err instanceof AccrueError) throw err;
          throw new UnavailableError(`could not settle invoice ${invoiceId} with Stripe; Stripe will deliver the event again: ${describeStripeError(err)}`);
        }
        const ext = (await externalInvoices(orm.em.fork(), [invoiceId])).get(invoiceId);
        await recordExternal(orm.em.fork(), { invoiceId, externalId: si.id!, status: 'PAID', collectionMethod: ext?.collectionMethod ?? 'charge_automatically', hostedUrl: si.hosted_invoice_url ?? ext?.hostedUrl ?? null });
        const inv = await orm.em.fork().findOne(Invoice, { id: invoiceId }, { fields: ['contractId'] });
        if (inv) await tellContractPaymentsChanged(temporal, inv.contractId, `Stripe's payment of invoice ${invoiceId}`);
        await tellDunning(temporal, invoiceId, 'PAID');
        return { outcome: paid?.created ? 'payment recorded' : 'already paid', invoiceId };
      }
      case 'invoice.payment_failed': {
        const si = event.data.object;
        const invoiceId = await accrueInvoiceOf(si);
        if (!invoiceId) return { outcome: 'ignored: not an Accrue invoice' };
        const inv = await orm.em.fork().findOne(Invoice, { id: invoiceId });
        const standing = inv ? (await standings(orm.em.fork(), [inv])).get(invoiceId) : undefined;
        if (!inv || inv.status !== 'FINALIZED' || !standing || standing.status === 'PAID') return { outcome: 'ignored: nothing is due', invoiceId };
        const ext = (await externalInvoices(orm.em.fork(), [invoiceId])).get(invoiceId);
        await recordExternal(orm.em.fork(), { invoiceId, externalId: si.id!, status: 'PAYMENT_FAILED', collectionMethod: ext?.collectionMethod ?? 'charge_automatically', hostedUrl: si.hosted_invoice_url ?? ext?.hostedUrl ?? null });
        if (!(await startDunning(temporal, taskQueue, { invoiceId, contractId: inv.contractId, customerId: inv.customerId }))) return { outcome: 'dunning already ended', invoiceId };
        return { outcome: 'dunning', invoiceId };
      }
      case 'invoice.voided': {
        const si = event.data.object;
        const invoiceId = await accrueInvoiceOf(si);
        if (!invoiceId) return { outcome: 'ignored: not an Accrue invoice' };
        const ext = (await externalInvoices(orm.em.fork(), [invoiceId])).get(invoiceId);
        await recordExternal(orm.em.fork(), { invoiceId, externalId: si.id!, status: 'VOID', collectionMethod: ext?.collectionMethod ?? 'charge_automatically', hostedUrl: si.hosted_invoice_url ?? ext?.hostedUrl ?? null });
        await tellDunning(temporal, invoiceId, 'VOID');
        return { outcome: 'voided at Stripe', invoiceId };
      }
      case 'charge.refunded': {
        const charge = event.data.object;
        const stripeInvoiceId = await invoiceOfCharge(charge);
        const invoiceId = stripeInvoiceId ? await accrueInvoiceOf({ id: stripeInvoiceId }) : undefined;
        if (!invoiceId) return { outcome: 'ignored: not a charge of an Accrue invoice' };
        await orm.em.fork().transactional(async (tx) => {
          const inv = await tx.findOne(Invoice, { id: invoiceId }, { fields: ['id', 'customerId', 'contractId'] });
          const rows = await tx.execute<{ amount: string }[]>(`
            insert into invoice_refund (invoice_id, reference, amount) values (?, ?, ?)
            on conflict (invoice_id, reference) do update set amount = greatest(invoice_refund.amount, excluded.amount), refunded_at = now()
              where invoice_refund.amount < excluded.amount
            returning amount::text as amount`, [invoiceId, `stripe:${charge.id}`, String(charge.amount_refunded)]);
          if (rows.length && inv) {
            await enqueueNotification(tx, {
              type: 'accrue.invoice.refunded', dedupKey: `refund:${invoiceId}:${charge.id}:${charge.amount_refunded}`, customerId: inv.customerId,
              properties: { invoice_id: invoiceId, customer_id: inv.customerId, contract_id: inv.contractId, amount_refunded: charge.amount_refunded, billing_provider: 'stripe', charge_id: charge.id },
            });
          }
        });
        return { outcome: 'refund recorded', invoiceId };
      }
      default:
        return { outcome: `ignored: ${event.type} is not handled` };
    }
  }
  return r;
}
