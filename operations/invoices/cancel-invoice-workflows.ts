import { invoiceWorkflowId } from '../../workflows/search-attributes.js';
import type { Client } from '../workflow-client.js';

/**
 * Cancels the close workflows of invoices voided while still DRAFT (an archived contract's open
 * periods). Best effort: a workflow already gone, or Temporal unreachable, leaves nothing to undo.
 */
export async function cancelInvoiceWorkflows(temporal: Client, invoiceIds: readonly string[]): Promise<void> {
  for (const id of invoiceIds) await temporal.workflow.getHandle(invoiceWorkflowId(id)).cancel().catch(() => undefined);
}
