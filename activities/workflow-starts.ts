import type { Client } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { commitPaymentWorkflowId, ContractIdKey, crmSyncWorkflowId, CustomerIdKey, LifecycleStateKey } from '../workflows/search-attributes.js';

/** `commit-payment/<grant id>`; a second start of the same commit is a no-op. */
export async function startCommitPayment(client: Client, taskQueue: string, g: { grantId: string; contractId: string; customerId: string }): Promise<void> {
  try {
    await client.workflow.start('commitPaymentWorkflow', {
      workflowId: commitPaymentWorkflowId(g.grantId), taskQueue, args: [{ grantId: g.grantId }],
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [{ key: CustomerIdKey, value: g.customerId }, { key: ContractIdKey, value: g.contractId }, { key: LifecycleStateKey, value: 'COMMIT_PAYMENT' }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/**
 * Tells `crm-sync/<customer>` that the customer's billing facts changed (starting it if it is
 * not running): its next push comes within the coalescing window.
 */
export async function startCrmSync(client: Client, taskQueue: string, customerId: string, reason: string): Promise<void> {
  await client.workflow.signalWithStart('crmSyncWorkflow', {
    workflowId: crmSyncWorkflowId(customerId), taskQueue, args: [{ customerId }],
    signal: 'crmChanged', signalArgs: [{ reason }],
    typedSearchAttributes: [{ key: CustomerIdKey, value: customerId }, { key: LifecycleStateKey, value: 'CRM_SYNC' }],
  });
}
