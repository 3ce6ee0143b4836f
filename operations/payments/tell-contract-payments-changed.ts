import { UnavailableError } from '../../billing/errors.js';
import { invoicePaymentChangedSignal } from '../../workflows/contract-messages.js';
import { contractWorkflowId } from '../../workflows/search-attributes.js';
import { WorkflowNotFoundError, type Client } from '../workflow-client.js';

/**
 * Tells a contract's workflow that one of its invoices' payment state changed (a payment, a void),
 * after the change is committed. A contract whose workflow has finished has nothing to re-check.
 */
export async function tellContractPaymentsChanged(temporal: Client, contractId: string, what: string): Promise<void> {
  try {
    await temporal.workflow.getHandle(contractWorkflowId(contractId)).signal(invoicePaymentChangedSignal);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return;
    throw new UnavailableError(`${what} is recorded, but the contract workflow could not be told; retry the same request: ${(err as Error).message}`);
  }
}
