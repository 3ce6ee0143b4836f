import {
  condition, defineQuery, defineSignal, getExternalWorkflowHandle, log, proxyActivities, setHandler, upsertSearchAttributes,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import { invoicePaymentChangedSignal } from './contract-messages.js';
import { contractWorkflowId, LifecycleStateKey } from './search-attributes.js';

/**
 * Dunning of one unpaid Stripe invoice (`dunning/<invoice_id>`), started by a failed card payment
 * (the close's own charge or Stripe's `invoice.payment_failed`), or for a `send_invoice` invoice
 * when it is sent, to act at its due date. On ACCRUE_DUNNING_SCHEDULE (delays, each from the
 * previous attempt) it asks Stripe to charge the invoice again and emails the customer after each
 * failed attempt (amount, attempt n of m, Stripe's hosted invoice link); when the last attempt
 * fails it emails finance and marks the dunning EXHAUSTED, which makes the invoice due now, so the
 * contract's workflow (told by signal) moves it to ARREARS. A payment or a void at any point
 * (signal `dunningSettled`, or found by the next attempt) ends it; the contract leaves ARREARS
 * through its own payment check. Its step is on the invoice (`dunning: {step, next_attempt_at}`).
 */
export interface DunningInput {
  invoiceId: string;
  contractId: string;
  /** send_invoice: the first attempt is at the invoice's due date (no failure yet). */
  firstAttemptAt?: string;
}

export interface DunningStatus {
  status: 'WAITING_FOR_DUE_DATE' | 'ACTIVE' | 'PAID' | 'EXHAUSTED' | 'STOPPED';
  /** Attempts made so far (the first charge counts as attempt 1). */
  attempts: number;
  of: number;
  nextAttemptAt: string | null;
}

/** A payment was recorded or the invoice was voided: dunning ends at its next wake-up (at once). */
export const dunningSettledSignal = defineSignal<[{ reason: 'PAID' | 'VOID' }]>('dunningSettled');
/** Stripe reported a failed payment (`invoice.payment_failed`): for an invoice waiting for its due date, attempt 1 has failed. */
export const paymentFailedSignal = defineSignal('paymentFailed');
export const dunningStatusQuery = defineQuery<DunningStatus>('dunningStatus');

const retry = { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 };
const acts = proxyActivities<Activities>({ startToCloseTimeout: '30 seconds', retry });
const mail = proxyActivities<Activities>({ startToCloseTimeout: EMAIL_ACTIVITY_TIMEOUT_MS, retry });

export async function dunningWorkflow(input: DunningInput): Promise<DunningStatus> {
  const { invoiceId, contractId } = input;
  let settled: 'PAID' | 'VOID' | undefined;
  let failedAtStripe = false;
  const { scheduleMs } = await acts.dunningPlan();
  const of = scheduleMs.length + 1;
  const state: DunningStatus = { status: input.firstAttemptAt ? 'WAITING_FOR_DUE_DATE' : 'ACTIVE', attempts: input.firstAttemptAt ? 0 : 1, of, nextAttemptAt: null };
  setHandler(dunningSettledSignal, ({ reason }) => { settled ??= reason; });
  setHandler(paymentFailedSignal, () => { failedAtStripe = true; });
  setHandler(dunningStatusQuery, () => state);

  const record = async (status: 'ACTIVE' | 'PAID' | 'EXHAUSTED' | 'STOPPED') => {
    await acts.recordDunningStep({ invoiceId, status, step: state.attempts, steps: of, nextAttemptAt: state.nextAttemptAt });
    upsertSearchAttributes([{ key: LifecycleStateKey, value: status === 'ACTIVE' ? `DUNNING_${state.attempts}_OF_${of}` : `DUNNING_${status}` }]);
  };
  const tellContract = () => getExternalWorkflowHandle(contractWorkflowId(contractId)).signal(invoicePaymentChangedSignal).catch(() => undefined);
  const end = async (status: 'PAID' | 'STOPPED') => {
    state.status = status;
    state.nextAttemptAt = null;
    await record(status);
    await tellContract();
    log.info('dunning ended', { invoiceId, status, attempts: state.attempts });
    return state;
  };
  const notifyCustomer = () => mail.sendNotificationEmail({ kind: 'dunning_attempt', key: `dunning:${invoiceId}:${state.attempts}`, contractId, invoiceId, attempt: { n: state.attempts, of } });

  if (input.firstAttemptAt) {
    // send_invoice: nothing to do before the due date unless Stripe reports a failure first.
    state.nextAttemptAt = input.firstAttemptAt;
    await record('ACTIVE');
    const wait = Date.parse(input.firstAttemptAt) - Date.now();
    if (wait > 0) await condition(() => settled !== undefined || failedAtStripe, wait);
    if (settled) return end(settled === 'PAID' ? 'PAID' : 'STOPPED');
    state.attempts = 1;
    if (!failedAtStripe) {
      const r = await acts.retryStripePayment({ invoiceId, attempt: 1 });
      if (r.outcome !== 'FAILED') return end(r.outcome === 'PAID' ? 'PAID' : 'STOPPED');
    }
    state.status = 'ACTIVE';
  }
  await notifyCustomer();

  for (const delay of scheduleMs) {
    state.nextAttemptAt = new Date(Date.now() + delay).toISOString();
    await record('ACTIVE');
    if (await condition(() => settled !== undefined, delay)) return end(settled === 'PAID' ? 'PAID' : 'STOPPED');
    state.attempts++;
    const r = await acts.retryStripePayment({ invoiceId, attempt: state.attempts });
    if (r.outcome !== 'FAILED') return end(r.outcome === 'PAID' ? 'PAID' : 'STOPPED');
    await notifyCustomer();
  }

  state.status = 'EXHAUSTED';
  state.nextAttemptAt = null;
  await record('EXHAUSTED');
  await mail.sendNotificationEmail({ kind: 'dunning_exhausted', key: `dunning_exhausted:${invoiceId}`, contractId, invoiceId, recipient: 'finance', attempt: { n: state.attempts, of } });
  // The invoice is due from now on: the contract's payment check puts it in ARREARS.
  await tellContract();
  return state;
}

/** Voids the Stripe copy of an invoice voided in Accrue (`stripe-void/<invoice_id>`), retried until Stripe answers. */
export async function stripeVoidWorkflow({ invoiceId }: { invoiceId: string }): Promise<string> {
  const r = await acts.voidStripeInvoice({ invoiceId });
  return r.outcome;
}
