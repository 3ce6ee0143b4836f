import { UnavailableError } from '../../billing/errors.js';
import { stripeVoidWorkflow } from '../../workflows/dunning.js';
import { stripeVoidWorkflowId } from '../../workflows/search-attributes.js';
import { WorkflowExecutionAlreadyStartedError, type Client } from '../workflow-client.js';
import { tellDunning } from './tell-dunning.js';

/** After a void commits: the Stripe copy is voided by `stripe-void/<id>` and any dunning stops. */
export async function voidAtProvider(temporal: Client, taskQueue: string, invoiceId: string): Promise<void> {
  try {
    await temporal.workflow.start(stripeVoidWorkflow, { workflowId: stripeVoidWorkflowId(invoiceId), taskQueue, args: [{ invoiceId }] });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw new UnavailableError(`the void of invoice ${invoiceId} is recorded, but voiding it at Stripe could not start; retry the same request: ${(err as Error).message}`);
  }
  await tellDunning(temporal, invoiceId, 'VOID');
}
