import { condition, defineQuery, defineUpdate, proxyActivities, setHandler, upsertSearchAttributes, allHandlersFinished, ApplicationFailure } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { LifecycleStateKey } from './search-attributes.js';

/**
 * Closes one contract period's invoice: freeze it from PostgreSQL (the grace period has already
 * passed), wait for finance to approve or reject it, finalize it (immutable from then on) and
 * email it to the customer's billing contact. Every step is an idempotent activity, so a worker
 * killed at any point resumes here without double-finalizing or double-sending.
 */
export interface InvoiceCloseInput {
  invoiceId: string;
  contractId: string;
  periodStart: string;
  periodEnd: string;
  /** Set when this invoice regenerates a voided one. */
  regeneratedFromInvoiceId?: string;
}

export type InvoiceCloseStage = 'FREEZING' | 'AWAITING_APPROVAL' | 'FINALIZING' | 'EMAILING' | 'DONE';

export interface InvoiceDecisionResult {
  invoiceId: string;
  status: 'DRAFT' | 'FINALIZED';
  approvalStatus: 'APPROVED' | 'REJECTED';
  total: string;
}

export const approveInvoiceUpdate = defineUpdate<InvoiceDecisionResult, [{ approvedBy?: string }]>('approveInvoice');
export const rejectInvoiceUpdate = defineUpdate<InvoiceDecisionResult, [{ reason: string; rejectedBy?: string }]>('rejectInvoice');
export const invoiceCloseStageQuery = defineQuery<InvoiceCloseStage>('invoiceCloseStage');

// Short start-to-close timeouts: they are also how a crashed worker's in-flight activity is noticed
// and retried elsewhere. Each call is one PostgreSQL transaction or one SMTP send.
const retry = { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 };
const acts = proxyActivities<Activities>({ startToCloseTimeout: '10 seconds', retry });
const mail = proxyActivities<Activities>({ startToCloseTimeout: '20 seconds', retry });

type Decision = { approve: true; by?: string } | { approve: false; reason: string; by?: string };

export async function invoiceCloseWorkflow(input: InvoiceCloseInput): Promise<InvoiceDecisionResult> {
  let stage: InvoiceCloseStage = 'FREEZING';
  let decision: Decision | undefined;
  let rejections = 0;
  let total = '0';

  const setStage = (s: InvoiceCloseStage) => {
    stage = s;
    upsertSearchAttributes([{ key: LifecycleStateKey, value: `INVOICE_${s}` }]);
  };

  setHandler(invoiceCloseStageQuery, () => stage);
  setHandler(approveInvoiceUpdate, async ({ approvedBy }) => {
    decision = { approve: true, by: approvedBy };
    await condition(() => stage === 'EMAILING' || stage === 'DONE');
    return { invoiceId: input.invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total };
  }, { validator: (_arg) => assertAwaitingDecision(stage, decision) });
  setHandler(rejectInvoiceUpdate, async ({ reason, rejectedBy }) => {
    const before = rejections;
    decision = { approve: false, reason, by: rejectedBy };
    await condition(() => rejections > before);
    return { invoiceId: input.invoiceId, status: 'DRAFT', approvalStatus: 'REJECTED', total };
  }, {
    validator: (arg) => {
      if (typeof arg?.reason !== 'string' || arg.reason.trim() === '') throw new Error('reason: is required when rejecting an invoice');
      assertAwaitingDecision(stage, decision);
    },
  });

  setStage('FREEZING');
  let frozen = await acts.freezeInvoice({ ...input, recompute: false });
  total = frozen.total;

  if (frozen.status !== 'FINALIZED') {
    for (;;) {
      setStage('AWAITING_APPROVAL');
      await condition(() => decision !== undefined);
      const d = decision as unknown as Decision;
      if (d.approve) {
        if (rejections > 0) {
          // Finance rejected an earlier version: approve what the data says now, not the stale copy.
          frozen = await acts.freezeInvoice({ ...input, recompute: true });
          total = frozen.total;
        }
        setStage('FINALIZING');
        await acts.finalizeInvoice({ invoiceId: input.invoiceId, approvedBy: d.by ?? null });
        break;
      }
      await acts.rejectInvoice({ invoiceId: input.invoiceId, reason: d.reason, rejectedBy: d.by ?? null });
      decision = undefined;
      rejections++;
    }
  }

  setStage('EMAILING');
  await mail.emailInvoice({ invoiceId: input.invoiceId });
  setStage('DONE');
  await condition(allHandlersFinished);
  return { invoiceId: input.invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total };
}

function assertAwaitingDecision(stage: InvoiceCloseStage, decision: Decision | undefined): void {
  if (stage === 'FREEZING') throw ApplicationFailure.nonRetryable('the invoice is still being frozen; try again in a moment', 'NotReady');
  if (stage !== 'AWAITING_APPROVAL' || decision !== undefined) {
    throw ApplicationFailure.nonRetryable(`the invoice is not awaiting approval (stage ${stage})`, 'NotAwaitingApproval');
  }
}
