import { crmSyncWorkflowId, CustomerIdKey, LifecycleStateKey } from '../../workflows/search-attributes.js';
import type { Client } from '../workflow-client.js';

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
