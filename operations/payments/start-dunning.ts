import { UnavailableError } from '../../billing/errors.js';
import { dunningWorkflow, paymentFailedSignal } from '../../workflows/dunning.js';
import { ContractIdKey, CustomerIdKey, dunningWorkflowId, InvoiceIdKey, LifecycleStateKey } from '../../workflows/search-attributes.js';
import { WorkflowExecutionAlreadyStartedError, type Client } from '../workflow-client.js';

/**
 * A payment of the invoice failed at Stripe: starts its `dunning/<id>` (or tells the one running).
 * False when its dunning has already run to the end: it is not started again by a later failure.
 * Temporal unreachable is a 503, so Stripe delivers the event again.
 */
export async function startDunning(temporal: Client, taskQueue: string, inv: { invoiceId: string; contractId: string; customerId: string }): Promise<boolean> {
  const { invoiceId } = inv;
  try {
    await temporal.workflow.signalWithStart(dunningWorkflow, {
      workflowId: dunningWorkflowId(invoiceId), taskQueue, args: [{ invoiceId, contractId: inv.contractId }],
      signal: paymentFailedSignal, signalArgs: [],
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [
        { key: CustomerIdKey, value: inv.customerId }, { key: ContractIdKey, value: inv.contractId },
        { key: InvoiceIdKey, value: invoiceId }, { key: LifecycleStateKey, value: 'DUNNING' },
      ],
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return false;
    throw new UnavailableError(`could not start the dunning of invoice ${invoiceId}; Stripe will deliver the event again: ${(err as Error).message}`);
  }
  return true;
}
