import { ParentClosePolicy, patched, proxyActivities, startChild } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import { invoiceCloseWorkflow } from './invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, LifecycleStateKey, invoiceWorkflowId } from './search-attributes.js';

/**
 * One auto-recharge of a contract's prepaid balance (`recharge/<contract_id>/<n>`, n = the
 * crossing's number, started by the outbound loop for each recharge its evaluation recorded), or
 * one spend-threshold charge (`spend-threshold/<contract_id>/<n>`, kind `spend`):
 * collect the payment through the payment gate (a Stripe invoice charged at once, with
 * idempotency keys), then grant the commit — only once paid. A declined payment grants nothing,
 * sends `payment_gate.payment_status` (failed) and ends: the charge is not retried in a loop (the
 * contract recharges again only after its balance was above the threshold once more).
 * Without a payment gate (NONE) the commit is granted at once and billed: the grant stores its
 * SCHEDULED invoice in the same transaction, and this workflow starts that invoice's close
 * (`invoice/<invoice_id>`: approval policy, finalize, email, Stripe), which lives on by itself.
 * Histories without the RECHARGE_INVOICE_PATCH marker (older builds) start no close.
 */
const stripe = proxyActivities<Activities>({ startToCloseTimeout: '10 minutes', heartbeatTimeout: '20 seconds', retry: { initialInterval: '2 seconds', maximumInterval: '10 minutes', backoffCoefficient: 2 } });
const acts = proxyActivities<Activities>({ startToCloseTimeout: '30 seconds', retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 } });

export async function rechargeWorkflow({ contractId, n, kind }: { contractId: string; n: number; kind?: 'prepaid' | 'spend' }): Promise<'GRANTED' | 'FAILED'> {
  // `kind` (absent: prepaid) is passed on only when given, so a recharge's inputs stay as recorded.
  const which = kind ? { kind } : {};
  const paid = await stripe.chargeRecharge({ contractId, n, ...which });
  if (paid.outcome === 'FAILED') {
    await acts.failRecharge({ contractId, n, failure: paid.message ?? 'the payment failed', ...which });
    return 'FAILED';
  }
  const granted = await acts.grantRecharge({ contractId, n, ...which });
  if (granted.invoice && patched(RECHARGE_INVOICE_PATCH)) {
    const { id: invoiceId, at, customerId } = granted.invoice;
    try {
      await startChild(invoiceCloseWorkflow, {
        workflowId: invoiceWorkflowId(invoiceId),
        args: [{ invoiceId, contractId, periodStart: at, periodEnd: at }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        typedSearchAttributes: [
          { key: CustomerIdKey, value: customerId }, { key: ContractIdKey, value: contractId },
          { key: InvoiceIdKey, value: invoiceId }, { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
        ],
      });
    } catch (err) {
      // Started already (this workflow's earlier attempt): that close carries on.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  }
  return 'GRANTED';
}

/** Marks histories of recharges that start the close of the invoice billing an ungated commit. */
export const RECHARGE_INVOICE_PATCH = 'accrue-recharge-invoice';

/**
 * A payment-gated commit (`commit-payment/<grant id>`, started when its contract is created): the
 * commit's price is charged through a Stripe invoice; the commit exists (balance, draw-downs) only
 * once paid. A declined payment leaves it ungranted and sends `payment_gate.payment_status` (failed).
 */
export async function commitPaymentWorkflow({ grantId }: { grantId: string }): Promise<'GRANTED' | 'FAILED'> {
  const paid = await stripe.chargeGatedCommit({ grantId });
  if (paid.outcome === 'FAILED') {
    await acts.failGatedCommit({ grantId, failure: paid.message ?? 'the payment failed' });
    return 'FAILED';
  }
  await acts.grantGatedCommit({ grantId });
  return 'GRANTED';
}
