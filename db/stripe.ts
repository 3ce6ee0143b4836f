import type { EntityManager } from '@mikro-orm/postgresql';
import { pgTextArray } from './sql.js';

/**
 * What Accrue keeps about Stripe: a customer's billing config, each invoice's copy at Stripe
 * (`external_invoice` on our invoice, as Metronome shows it), inbound events already handled,
 * refunds, and dunning state. Plain SQL; the Stripe calls live in activities/stripe-activities.ts.
 */
export type CollectionMethod = 'charge_automatically' | 'send_invoice';
export const COLLECTION_METHODS: readonly CollectionMethod[] = ['charge_automatically', 'send_invoice'];

export interface BillingConfig {
  customerId: string;
  providerCustomerId: string;
  collectionMethod: CollectionMethod;
}

export async function billingConfigOf(em: EntityManager, customerId: string): Promise<BillingConfig | undefined> {
  const [row] = await em.execute<{ provider_customer_id: string; collection_method: CollectionMethod }[]>(
    `select provider_customer_id, collection_method from customer_billing_config where customer_id = ? and provider = 'stripe'`, [customerId]);
  return row ? { customerId, providerCustomerId: row.provider_customer_id, collectionMethod: row.collection_method } : undefined;
}

export async function saveBillingConfig(em: EntityManager, c: BillingConfig): Promise<void> {
  await em.execute(`
    insert into customer_billing_config (customer_id, provider, provider_customer_id, collection_method) values (?, 'stripe', ?, ?)
    on conflict (customer_id, provider) do update set provider_customer_id = excluded.provider_customer_id,
      collection_method = excluded.collection_method, updated_at = now()`, [c.customerId, c.providerCustomerId, c.collectionMethod]);
}

export async function deleteBillingConfig(em: EntityManager, customerId: string): Promise<boolean> {
  const rows = await em.execute<{ customer_id: string }[]>(
    `delete from customer_billing_config where customer_id = ? and provider = 'stripe' returning customer_id`, [customerId]);
  return rows.length > 0;
}

/** Metronome's external_status values Accrue uses. */
export type ExternalStatus = 'QUEUED' | 'DRAFT' | 'FINALIZED' | 'PAID' | 'PAYMENT_FAILED' | 'VOID' | 'SKIPPED' | 'INVALID_REQUEST_ERROR' | 'UNCOLLECTIBLE';

export interface ExternalInvoice {
  invoiceId: string;
  externalId: string | null;
  status: ExternalStatus;
  collectionMethod: CollectionMethod;
  hostedUrl: string | null;
}

type ExternalRow = { invoice_id: string; external_id: string | null; external_status: ExternalStatus; collection_method: CollectionMethod; hosted_url: string | null };
const fromRow = (r: ExternalRow): ExternalInvoice => ({ invoiceId: r.invoice_id, externalId: r.external_id, status: r.external_status, collectionMethod: r.collection_method, hostedUrl: r.hosted_url });

export async function externalInvoices(em: EntityManager, invoiceIds: readonly string[]): Promise<Map<string, ExternalInvoice>> {
  if (!invoiceIds.length) return new Map();
  const rows = await em.execute<ExternalRow[]>(
    `select invoice_id::text as invoice_id, external_id, external_status, collection_method, hosted_url from invoice_external where invoice_id = any(?::uuid[])`, [pgTextArray([...invoiceIds])]);
  return new Map(rows.map((r) => [r.invoice_id, fromRow(r)]));
}

export async function invoiceIdOfExternal(em: EntityManager, externalId: string): Promise<string | undefined> {
  const [row] = await em.execute<{ invoice_id: string }[]>(
    `select invoice_id::text as invoice_id from invoice_external where provider = 'stripe' and external_id = ?`, [externalId]);
  return row?.invoice_id;
}

/**
 * Writes what Stripe said about the invoice. A known id is never replaced by null, and a final
 * status (PAID, VOID) is not taken back by a late, older answer.
 */
export async function recordExternal(em: EntityManager, e: ExternalInvoice): Promise<void> {
  await em.execute(`
    insert into invoice_external (invoice_id, provider, external_id, external_status, collection_method, hosted_url)
    values (?, 'stripe', ?, ?, ?, ?)
    on conflict (invoice_id) do update set
      external_id = coalesce(excluded.external_id, invoice_external.external_id),
      external_status = case when invoice_external.external_status in ('PAID', 'VOID') and excluded.external_status not in ('PAID', 'VOID')
        then invoice_external.external_status else excluded.external_status end,
      hosted_url = coalesce(excluded.hosted_url, invoice_external.hosted_url),
      updated_at = now()`, [e.invoiceId, e.externalId, e.status, e.collectionMethod, e.hostedUrl]);
}

export interface DunningState {
  invoiceId: string;
  status: 'ACTIVE' | 'PAID' | 'EXHAUSTED' | 'STOPPED';
  step: number;
  steps: number;
  nextAttemptAt: string | null;
  updatedAt: string;
}

export async function dunningStates(em: EntityManager, invoiceIds: readonly string[]): Promise<Map<string, DunningState>> {
  if (!invoiceIds.length) return new Map();
  const rows = await em.execute<{ invoice_id: string; status: DunningState['status']; step: number; steps: number; next_attempt_at: Date | null; updated_at: Date }[]>(
    `select invoice_id::text as invoice_id, status, step, steps, next_attempt_at, updated_at from invoice_dunning where invoice_id = any(?::uuid[])`, [pgTextArray([...invoiceIds])]);
  return new Map(rows.map((r) => [r.invoice_id, {
    invoiceId: r.invoice_id, status: r.status, step: r.step, steps: r.steps,
    nextAttemptAt: r.next_attempt_at ? new Date(r.next_attempt_at).toISOString() : null, updatedAt: new Date(r.updated_at).toISOString(),
  }]));
}

/** Written by the dunning workflow at each step; a finished dunning (PAID, EXHAUSTED, STOPPED) is not reopened. */
export async function recordDunning(em: EntityManager, d: { invoiceId: string; status: DunningState['status']; step: number; steps: number; nextAttemptAt: string | null }): Promise<void> {
  await em.execute(`
    insert into invoice_dunning (invoice_id, status, step, steps, next_attempt_at) values (?, ?, ?, ?, ?)
    on conflict (invoice_id) do update set status = excluded.status, step = excluded.step, steps = excluded.steps,
      next_attempt_at = excluded.next_attempt_at, updated_at = now()
    where invoice_dunning.status = 'ACTIVE'`, [d.invoiceId, d.status, d.step, d.steps, d.nextAttemptAt]);
}

/** A manual payment for which the invoice's Stripe copy is being (or was) marked paid out of band. */
export interface OutOfBandPayment {
  reference: string;
  amount: string;
  paidAt: string;
  recordedBy: string | null;
}

/**
 * Notes, in the payment's transaction, that the Stripe copy is to be marked paid out of band for
 * this payment. Another payment already noted (not the same reference) is a conflict: one
 * settlement at a time.
 */
export async function noteOutOfBand(em: EntityManager, invoiceId: string, p: OutOfBandPayment): Promise<OutOfBandPayment> {
  const [row] = await em.execute<{ out_of_band_payment: OutOfBandPayment }[]>(`
    update invoice_external set out_of_band_payment = coalesce(out_of_band_payment, ?::jsonb), updated_at = now()
    where invoice_id = ? returning out_of_band_payment`, [JSON.stringify(p), invoiceId]);
  if (!row) throw new Error(`invoice ${invoiceId} has no Stripe copy`);
  return row.out_of_band_payment;
}

/** The payment noted by `noteOutOfBand`, if any. */
export async function outOfBandPayment(em: EntityManager, invoiceId: string): Promise<OutOfBandPayment | undefined> {
  const [row] = await em.execute<{ out_of_band_payment: OutOfBandPayment | null }[]>('select out_of_band_payment from invoice_external where invoice_id = ?', [invoiceId]);
  return row?.out_of_band_payment ?? undefined;
}

/** The Stripe copy is paid (out of band, for the noted payment). */
export async function markExternalPaid(em: EntityManager, invoiceId: string): Promise<void> {
  await em.execute(`update invoice_external set external_status = 'PAID', updated_at = now() where invoice_id = ?`, [invoiceId]);
}

/** Forgets a noted payment that Stripe did not settle (the copy was paid by a charge, or voided). */
export async function forgetOutOfBand(em: EntityManager, invoiceId: string, reference: string): Promise<void> {
  await em.execute(`update invoice_external set out_of_band_payment = null, updated_at = now() where invoice_id = ? and out_of_band_payment->>'reference' = ?`, [invoiceId, reference]);
}

/**
 * Whether Stripe collects this finalized invoice — it asks the customer for the whole amount due:
 * Stripe is on and the invoice's copy there is open (or still being sent), or it has no copy yet
 * and its customer had a Stripe billing config when it was finalized (the close sends it). Not
 * when the sync skipped it or Stripe refused it, nor once the copy is paid or void.
 */
export async function stripeCollection(em: EntityManager, inv: { id: string; customerId: string; finalizedAt?: Date | null }): Promise<{ externalId: string | null; status: ExternalStatus } | undefined> {
  const ext = (await externalInvoices(em, [inv.id])).get(inv.id);
  if (ext) return ['QUEUED', 'DRAFT', 'FINALIZED', 'PAYMENT_FAILED'].includes(ext.status) ? { externalId: ext.externalId, status: ext.status } : undefined;
  const [config] = await em.execute<{ created_at: Date }[]>(`select created_at from customer_billing_config where customer_id = ? and provider = 'stripe'`, [inv.customerId]);
  if (!config || (inv.finalizedAt && new Date(config.created_at).getTime() > new Date(inv.finalizedAt).getTime())) return undefined;
  return { externalId: null, status: 'QUEUED' };
}
