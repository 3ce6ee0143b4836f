import {
  condition, continueAsNew, ParentClosePolicy, proxyActivities, setHandler, sleep, startChild,
  upsertSearchAttributes, workflowInfo, WorkflowIdReusePolicy, log,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import type { Period } from '../billing/periods.js';
import { periodAt } from '../billing/periods.js';
import { contractChangedSignal, contractStateQuery, type ContractWorkflowInput, type ContractWorkflowState } from './contract-messages.js';
import { invoiceCloseWorkflow, invoiceSettledSignal } from './invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, LifecycleStateKey, invoiceWorkflowId } from './search-attributes.js';

/**
 * The contract workflow as it ran before the lifecycle (trial, renewal notice, arrears) was added,
 * kept verbatim so runs started by that build still replay: `contractWorkflow` takes this path
 * when its history has no `lifecycle` patch marker (`patched('lifecycle')`). A run that continues
 * as new runs the current code. Remove with `deprecatePatch` once no such run is open.
 */
const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const PERIODS_PER_RUN = 24;
const RESTART_BACKOFF_MS = { first: 10_000, max: 3_600_000 };
const SWEEP_MS = 24 * 3_600_000;

export async function legacyContractWorkflow(input: ContractWorkflowInput): Promise<void> {
  let plan = await acts.loadContractPlan({ contractId: input.contractId });
  const state: ContractWorkflowState = { nextPeriodIndex: input.nextPeriodIndex ?? 0, nextCloseAt: null, state: 'ACTIVE', unclosedPeriods: [], restartedCloses: 0 };
  let changed = false;
  let settled = false;
  let closeFailed = false;
  let failuresInARow = 0;
  const pauseAfterFailure = async () => {
    await sleep(Math.min(RESTART_BACKOFF_MS.first * 2 ** failuresInARow, RESTART_BACKOFF_MS.max));
    failuresInARow++;
  };
  setHandler(contractStateQuery, () => state);
  setHandler(contractChangedSignal, () => { changed = true; });
  setHandler(invoiceSettledSignal, () => { settled = true; });
  upsertSearchAttributes([{ key: LifecycleStateKey, value: 'ACTIVE' }]);

  /** Starts the period's close unless one is running or completed; watches it while this run lives. */
  const startClose = async (period: Period, restart: boolean): Promise<void> => {
    const invoiceId = await acts.invoiceIdForPeriod({ contractId: input.contractId, periodStart: period.start });
    try {
      const child = await startChild(invoiceCloseWorkflow, {
        workflowId: invoiceWorkflowId(invoiceId),
        args: [{ invoiceId, contractId: input.contractId, periodStart: period.start, periodEnd: period.end }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        typedSearchAttributes: [
          { key: CustomerIdKey, value: plan.customerId },
          { key: ContractIdKey, value: input.contractId },
          { key: InvoiceIdKey, value: invoiceId },
          { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
        ],
      });
      if (restart) {
        state.restartedCloses++;
        log.warn('restarted an invoice close that had failed or been terminated', { invoiceId, periodStart: period.start });
      }
      child.result().then(() => { settled = true; }, () => { closeFailed = true; });
    } catch (err) {
      // Running (e.g. started before a continue-as-new) or completed: that close carries on by itself.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  };

  /** Starts again every earlier period's close that is not closed and not running; returns how many are open. */
  const sweep = async (): Promise<number> => {
    closeFailed = false;
    settled = false;
    const open = await acts.unclosedPeriods({ contractId: input.contractId, beforeIndex: state.nextPeriodIndex });
    state.unclosedPeriods = open.map((p) => p.start);
    if (!open.length) failuresInARow = 0;
    for (const p of open) await startClose(p, true);
    return open.length;
  };

  let sweptAt = -1;
  for (;;) {
    for (let closedThisRun = 0; ; closedThisRun++) {
      if (plan.archived) break;
      const period = periodAt(plan.schedule, state.nextPeriodIndex);
      if (!period) break;
      const closeAt = Date.parse(period.end) + plan.invoiceGracePeriodMs;
      state.nextCloseAt = new Date(closeAt).toISOString();
      let wait = closeAt - Date.now();
      if (wait > 0 && sweptAt !== state.nextPeriodIndex) {
        // Before sleeping to the next close: is every earlier period closed, or closing?
        sweptAt = state.nextPeriodIndex;
        await sweep();
        wait = closeAt - Date.now();
      }
      // While an earlier period is open, sweep once a day too (its close may be of an earlier run).
      const nap = state.unclosedPeriods.length ? Math.min(wait, SWEEP_MS) : wait;
      if (wait > 0) {
        const woke = await condition(() => changed || closeFailed, nap);
        if (woke || nap < wait) {
          if (changed) {
            // The end date moved or the contract was archived: plan again from the same period.
            changed = false;
            plan = await acts.loadContractPlan({ contractId: input.contractId });
          } else {
            if (woke) await pauseAfterFailure();
            await sweep();
          }
          closedThisRun--;
          continue;
        }
      }
      await startClose(period, false);
      state.nextPeriodIndex++;
      if (closedThisRun + 1 >= PERIODS_PER_RUN || workflowInfo().continueAsNewSuggested) {
        await continueAsNew<(input: ContractWorkflowInput) => Promise<void>>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
      }
    }
    if (plan.archived) break;
    // Every period is closing: wait until each invoice is final (finalized and emailed, or voided).
    state.nextCloseAt = null;
    if (await sweep() === 0) break;
    const woke = await condition(() => changed || settled || closeFailed, SWEEP_MS);
    if (woke && closeFailed) await pauseAfterFailure();
    else if (woke) failuresInARow = 0;
    if (changed) {
      changed = false;
      plan = await acts.loadContractPlan({ contractId: input.contractId });
    }
    if (workflowInfo().continueAsNewSuggested) {
      await continueAsNew<(input: ContractWorkflowInput) => Promise<void>>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
    }
  }
  if (!plan.archived) await acts.rollOverAtContractEnd({ contractId: input.contractId });
  state.state = plan.archived ? 'ARCHIVED' : 'ENDED';
  state.nextCloseAt = null;
  upsertSearchAttributes([{ key: LifecycleStateKey, value: state.state }]);
  if (plan.archived || !plan.schedule.endingBefore) return;

  // Late events for the contract's periods are accepted for the ingest window after its end. Once
  // it has passed, late usage that no renewal bills goes on a late-usage invoice of its own.
  const lateUsageAt = Date.parse(plan.schedule.endingBefore) + plan.lateUsageWindowMs + plan.invoiceGracePeriodMs;
  state.nextCloseAt = new Date(lateUsageAt).toISOString();
  const wait = lateUsageAt - Date.now();
  if (wait > 0 && await condition(() => changed, wait)) {
    // The end date moved or the contract was archived meanwhile: plan again.
    await continueAsNew<(input: ContractWorkflowInput) => Promise<void>>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
  }
  state.nextCloseAt = null;
  const late = await acts.freezeLateUsageInvoice({ contractId: input.contractId });
  if (!late) return;
  try {
    // The contract's story ends with its late-usage invoice final (or its close failed: logged).
    const child = await startChild(invoiceCloseWorkflow, {
      workflowId: invoiceWorkflowId(late.invoiceId),
      args: [{ invoiceId: late.invoiceId, contractId: input.contractId, periodStart: late.periodStart, periodEnd: late.periodEnd }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
      typedSearchAttributes: [
        { key: CustomerIdKey, value: plan.customerId },
        { key: ContractIdKey, value: input.contractId },
        { key: InvoiceIdKey, value: late.invoiceId },
        { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
      ],
    });
    await child.result().catch((err: unknown) => log.warn('the late-usage invoice close failed', { invoiceId: late.invoiceId, error: String(err) }));
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}
