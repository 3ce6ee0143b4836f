import {
  condition, continueAsNew, defineQuery, defineSignal, ParentClosePolicy, proxyActivities, setHandler, sleep, startChild,
  upsertSearchAttributes, workflowInfo, WorkflowIdReusePolicy, log,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import type { Period } from '../billing/periods.js';
import { periodAt } from '../billing/periods.js';
import { invoiceCloseWorkflow, invoiceSettledSignal } from './invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, LifecycleStateKey, invoiceWorkflowId } from './search-attributes.js';

/**
 * One workflow per contract (`contract/<contract_id>`), from start to end. It sleeps until each
 * period's end plus the invoice grace period and then closes that period's invoice in a child
 * workflow (`invoice/<invoice_id>`), which lives on by itself (ABANDON) while it waits for finance.
 * A contract that started in the past closes its past periods right away. Continue-as-new keeps
 * the history short on long contracts.
 *
 * No period is ever skipped: a close that failed, was terminated or timed out is started again
 * (ALLOW_DUPLICATE_FAILED_ONLY; a running or completed close is left alone). The workflow notices
 * a failed close of its own run at once (the child's result; restarted after 10 s, doubling up to
 * an hour while closes keep failing), and sweeps every earlier period
 * from PostgreSQL (`unclosedPeriods`) at each period close, after a failure, at the start of each
 * run and once a day while one is open. After the last period it waits until every
 * period's invoice is finalized and emailed (or voided), and only then rolls the commits and
 * credits over to the successor contract: the leftover it rolls is the final one.
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
  /** Earlier periods whose invoice is not closed yet (as of the last sweep), by period start. */
  unclosedPeriods: string[];
  /** Closes this run started again after they failed or were terminated. */
  restartedCloses: number;
}

export const contractStateQuery = defineQuery<ContractWorkflowState>('contractState');
/** The contract's end date changed or it was archived: reload the plan (sent by the API). */
export const contractChangedSignal = defineSignal('contractChanged');
/**
 * A payment was recorded on, or a void changed, one of the contract's finalized invoices: the
 * workflow re-reads its invoices' payment states (`invoicePaymentStates`) to enter or leave
 * ARREARS. Sent by the API after the change is committed; harmless when nothing changed.
 */
export const invoicePaymentChangedSignal = defineSignal('invoicePaymentChanged');

const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const PERIODS_PER_RUN = 24;
/** A failed close is started again after a pause that doubles while closes keep failing (no spin). */
const RESTART_BACKOFF_MS = { first: 10_000, max: 3_600_000 };
/**
 * While an earlier period is open, PostgreSQL is swept this often: a close started by an earlier
 * run is not watched, and a terminated child is not always reported to its parent (Temporal's
 * test server does not).
 */
const SWEEP_MS = 24 * 3_600_000;

export async function contractWorkflow(input: ContractWorkflowInput): Promise<void> {
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
        await continueAsNew<typeof contractWorkflow>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
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
      await continueAsNew<typeof contractWorkflow>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
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
    await continueAsNew<typeof contractWorkflow>({ contractId: input.contractId, nextPeriodIndex: state.nextPeriodIndex });
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
