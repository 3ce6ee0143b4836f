import type { EntityManager } from '@mikro-orm/postgresql';
import { periodsStartedBefore } from '../../billing/periods.js';
import { clearContractTell } from '../../db/contract-tells.js';
import { Contract, Invoice } from '../../db/entities.js';
import { invoiceIdFor } from '../../db/ids.js';
import { contractSchedule } from '../../db/invoices.js';
import { contractChangedSignal, type ContractWorkflowInput } from '../../workflows/contract-messages.js';
import { contractWorkflowId } from '../../workflows/search-attributes.js';
import type { Client } from '../workflow-client.js';

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
  const input: ContractWorkflowInput = { contractId: contract.id, nextPeriodIndex: next };
  await client.workflow.signalWithStart('contractWorkflow', {
    workflowId: contractWorkflowId(contract.id),
    taskQueue,
    args: [input],
    signal: contractChangedSignal,
  });
  if (token) await clearContractTell(em, contract.id, token);
}

/** How long a request waits for Temporal to take the tell before leaving it to the outbound loop. */
const TELL_DEADLINE_MS = 3_000;

/**
 * Tells the contract workflow of a committed change queued with `token`; never fails the request:
 * when Temporal does not take it within TELL_DEADLINE_MS the queued tell stays for the outbound loop.
 */
export async function tellContractWorkflowOrLeaveQueued(temporal: Client, taskQueue: string, em: EntityManager, contractId: string, token: string): Promise<void> {
  try {
    await temporal.withDeadline(Date.now() + TELL_DEADLINE_MS, () => tellContractWorkflow(temporal, taskQueue, em, contractId, token));
  } catch (err) {
    console.warn(`[api] contract ${contractId}: the workflow is told later from the queue (${(err as Error).message})`);
  }
}
