import { UnavailableError } from '../../billing/errors.js';
import { dunningSettledSignal } from '../../workflows/dunning.js';
import { dunningWorkflowId } from '../../workflows/search-attributes.js';
import { WorkflowNotFoundError, type Client } from '../workflow-client.js';

/** Tells an invoice's `dunning/<id>` that the invoice was paid or voided: its dunning stops. */
export async function tellDunning(temporal: Client, invoiceId: string, reason: 'PAID' | 'VOID'): Promise<void> {
  try {
    await temporal.workflow.getHandle(dunningWorkflowId(invoiceId)).signal(dunningSettledSignal, { reason });
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return; // no dunning, or it has ended
    throw new UnavailableError(`recorded, but the invoice's dunning could not be told; retry: ${(err as Error).message}`);
  }
}
