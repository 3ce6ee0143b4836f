import { commitPaymentWorkflowId, ContractIdKey, CustomerIdKey, LifecycleStateKey } from '../../workflows/search-attributes.js';
import { WorkflowExecutionAlreadyStartedError, type Client } from '../workflow-client.js';

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
