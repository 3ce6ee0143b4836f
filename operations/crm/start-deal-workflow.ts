import { UnavailableError } from '../../billing/errors.js';
import { crmDealWorkflowId, LifecycleStateKey } from '../../workflows/search-attributes.js';
import type { Client } from '../workflow-client.js';

/**
 * Starts `crm-deal/<deal id>`, or tells the run going: it reads the deal again if it changed after
 * its read; a finished one runs anew. A 503 when Temporal cannot take it, so HubSpot delivers again.
 */
export async function startDealWorkflow(temporal: Client, taskQueue: string, dealId: string): Promise<void> {
  try {
    await temporal.workflow.signalWithStart('crmDealWorkflow', {
      workflowId: crmDealWorkflowId(dealId), taskQueue, args: [{ dealId }], signal: 'dealChanged',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      typedSearchAttributes: [{ key: LifecycleStateKey, value: 'CRM_DEAL' }],
    });
  } catch (err) {
    throw new UnavailableError(`could not start the deal's workflow; HubSpot will deliver again: ${(err as Error).message}`);
  }
}
