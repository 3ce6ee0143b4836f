import { UnavailableError } from '../../billing/errors.js';
import { invoiceCloseWorkflow } from '../../workflows/invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, invoiceWorkflowId, LifecycleStateKey } from '../../workflows/search-attributes.js';
import { WorkflowExecutionAlreadyStartedError, type Client } from '../workflow-client.js';

/**
 * Starts the close workflow (approval, finalize, email) of a regenerated invoice already frozen;
 * a start that finds it running is the same request repeated. Temporal unreachable is a 503.
 */
export async function startRegeneratedInvoiceClose(
  temporal: Client, taskQueue: string, customerId: string,
  input: { invoiceId: string; contractId: string; periodStart: string; periodEnd: string; regeneratedFromInvoiceId: string },
): Promise<void> {
  const newId = input.invoiceId;
  try {
    await temporal.workflow.start(invoiceCloseWorkflow, {
      workflowId: invoiceWorkflowId(newId), taskQueue, args: [input],
      typedSearchAttributes: [
        { key: CustomerIdKey, value: customerId }, { key: ContractIdKey, value: input.contractId },
        { key: InvoiceIdKey, value: newId }, { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
      ],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw new UnavailableError(`the regenerated invoice ${newId} is stored but its close workflow could not start; retry: ${(err as Error).message}`);
  }
}
