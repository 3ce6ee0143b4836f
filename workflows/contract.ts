import {
  condition, continueAsNew, defineQuery, defineSignal, ParentClosePolicy, proxyActivities, setHandler, startChild,
  upsertSearchAttributes, workflowInfo, WorkflowIdReusePolicy,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import { periodAt } from '../billing/periods.js';
import { invoiceCloseWorkflow } from './invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, LifecycleStateKey, invoiceWorkflowId } from './search-attributes.js';

/**
 * One workflow per contract (`contract/<contract_id>`), from start to end. It sleeps until each
 * period's end plus the invoice grace period and then closes that period's invoice in a child
 * workflow (`invoice/<invoice_id>`), which lives on by itself (ABANDON) while it waits for finance.
 * A contract that started in the past closes its past periods right away. Continue-as-new keeps
 * the history short on long contracts.
 */
export interface ContractWorkflowInput {
  contractId: string;
  /** Next period to close; set by continue-as-new. */
  nextPeriodIndex?: number;
}

export interface ContractWorkflowState {
  nextPeriodIndex: number;
  nextCloseAt: string | null;
  state: 'ACTIVE' | 'ENDED' | 'ARCHIVED';
}

export const contractStateQuery = defineQuery<ContractWorkflowState>('contractState');
/** The contract's end date changed or it was archived: reload the plan (sent by the API). */
export const contractChangedSignal = defineSignal('contractChanged');

const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const PERIODS_PER_RUN = 24;

export async function contractWorkflow(input: ContractWorkflowInput): Promise<void> {
  let plan = await acts.loadContractPlan({ contractId: input.contractId });
  const state: ContractWorkflowState = { nextPeriodIndex: input.nextPeriodIndex ?? 0, nextCloseAt: null, state: 'ACTIVE' };
  let changed = false;
  setHandler(contractStateQuery, () => state);
  setHandler(contractChangedSignal, () => { changed = true; });
  upsertSearchAttributes([{ key: LifecycleStateKey, value: 'ACTIVE' }]);

  for (let closedThisRun = 0; ; closedThisRun++) {
    if (plan.archived) break;
    const period = periodAt(plan.schedule, state.nextPeriodIndex);
    if (!period) break;
    const closeAt = Date.parse(period.end) + plan.invoiceGracePeriodMs;
    state.nextCloseAt = new Date(closeAt).toISOString();
    const wait = closeAt - Date.now();
    if (wait > 0 && await condition(() => changed, wait)) {
      // The end date moved or the contract was archived: plan again from the same period.
      changed = false;
      plan = await acts.loadContractPlan({ contractId: input.contractId });
      closedThisRun--;
      continue;
    }

    const invoiceId = await acts.invoiceIdForPeriod({ contractId: input.contractId, periodStart: period.start });
    try {
      await startChild(invoiceCloseWorkflow, {
        workflowId: invoiceWorkflowId(invoiceId),
        args: [{ invoiceId, contractId: input.contractId, periodStart: period.start, periodEnd: period.end }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        typedSearchAttributes: [
          { key: CustomerIdKey, value: plan.customerId },
          { key: ContractIdKey, value: input.contractId },
          { key: InvoiceIdKey, value: invoiceId },
          { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
        ],
      });
    } catch (err) {
      // Already closing (e.g. started before a continue-as-new): that close carries on by itself.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    state.nextPeriodIndex++;
    if (closedThisRun + 1 >= PERIODS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof contractWorkflow>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
    }
  }
  if (!plan.archived) await acts.rollOverAtContractEnd({ contractId: input.contractId });
  state.state = plan.archived ? 'ARCHIVED' : 'ENDED';
  state.nextCloseAt = null;
  upsertSearchAttributes([{ key: LifecycleStateKey, value: state.state }]);
}
