import type { Client } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { EntityManager } from '@mikro-orm/postgresql';
import { periodsStartedBefore } from '../billing/periods.js';
import { clearContractTell } from '../db/contract-tells.js';
import { Contract, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { contractSchedule } from '../db/invoices.js';
import { contractChangedSignal } from '../workflows/contract-messages.js';
import { commitPaymentWorkflowId, ContractIdKey, contractWorkflowId, crmSyncWorkflowId, CustomerIdKey, LifecycleStateKey } from '../workflows/search-attributes.js';

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

/**
 * Tells `contract/<id>` that its contract changed (end date, archive, renewal notice): a running
 * workflow re-plans; a run that already ended (its last period closed) is started again from the
 * first period without an invoice. Then clears the contract's queued tell (db/contract-tells.ts)
 * if `token` is still the queued one. Throws when Temporal cannot be reached; the row stays.
 */
export async function tellContractWorkflow(client: Client, taskQueue: string, em: EntityManager, contractId: string, token?: string): Promise<void> {
  const contract = await em.findOne(Contract, { id: contractId });
  if (!contract) {
    // Nothing left to tell: the queued row goes too, or the outbound loop would read it forever.
    if (token) await clearContractTell(em, contractId, token);
    return;
  }
  const periods = periodsStartedBefore(contractSchedule(contract), new Date().toISOString());
  const stored = new Set((await em.find(Invoice, { contractId: contract.id }, { fields: ['id'] })).map((i) => i.id));
  let next = 0;
  while (next < periods.length && stored.has(invoiceIdFor(contract.id, periods[next]!.start))) next++;
  await client.workflow.signalWithStart('contractWorkflow', {
    workflowId: contractWorkflowId(contract.id),
    taskQueue,
    args: [{ contractId: contract.id, nextPeriodIndex: next }],
    signal: contractChangedSignal,
  });
  if (token) await clearContractTell(em, contract.id, token);
}
