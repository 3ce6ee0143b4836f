import {
  condition, defineQuery, defineSignal, defineUpdate, getExternalWorkflowHandle, proxyActivities, setHandler,
  upsertSearchAttributes, allHandlersFinished, ApplicationFailure, log, patched, startChild, ParentClosePolicy,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import { dec } from '../billing/money.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import { dunningWorkflow } from './dunning.js';
import { ContractIdKey, contractWorkflowId, CustomerIdKey, dunningWorkflowId, InvoiceIdKey, LifecycleStateKey } from './search-attributes.js';

/**
 * Closes one contract period's invoice: freeze it from PostgreSQL (the grace period has already
 * passed), wait for finance to approve or reject it, finalize it (immutable from then on) and
 * email it to the customer's billing contact. Every step is an idempotent activity, so a worker
 * killed at any point resumes here without double-finalizing or double-sending.
 *
 * Finance approves a total it has seen: the approval names it, and a total that no longer matches
 * is refused (`TotalMismatch`, a 409). A rejection re-freezes the invoice at once, so the pending
 * invoice shows what the data says now; an approval after a rejection re-freezes once more (data
 * fixed since the rejection counts) and finalizes only when the total is still the one named —
 * otherwise the new total is stored, pending, and the approval is refused.
 *
 * Whether finance is asked at all is the contract's approval policy (else ACCRUE_APPROVAL_POLICY)
 * and the change from the previous period, decided by a read-only activity right after the
 * freeze (`billing/approval-policy.ts`). Not asked: finalized at once, the approver recorded as
 * `policy:<mode>`. Asked: while it waits, a reminder goes to finance every
 * ACCRUE_APPROVAL_REMINDER (a timer here; each reminder sent once, by number).
 * Closes started by a build before approval policies have no `APPROVAL_POLICY_PATCH` marker in
 * their history: they keep their old behaviour (always wait, no reminders) when replayed.
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

/** `total`: the invoice total finance approves (a decimal string); refused when it is not the invoice's total. */
export const approveInvoiceUpdate = defineUpdate<InvoiceDecisionResult, [{ approvedBy?: string; total?: string }]>('approveInvoice');
export const rejectInvoiceUpdate = defineUpdate<InvoiceDecisionResult, [{ reason: string; rejectedBy?: string }]>('rejectInvoice');
export const invoiceCloseStageQuery = defineQuery<InvoiceCloseStage>('invoiceCloseStage');
/** Sent by a close to its contract's workflow when the invoice is final (finalized and emailed). */
export const invoiceSettledSignal = defineSignal('invoiceSettled');

// Short start-to-close timeouts: they are also how a crashed worker's in-flight activity is noticed
// and retried elsewhere. Each call is one PostgreSQL transaction or one SMTP send.
const retry = { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 };
const acts = proxyActivities<Activities>({ startToCloseTimeout: '10 seconds', retry });
// The email activity outlives nodemailer's own limits, so no retry overlaps a send in flight (I4).
const mail = proxyActivities<Activities>({ startToCloseTimeout: EMAIL_ACTIVITY_TIMEOUT_MS, retry });

/** Marks histories of closes that decide by policy and remind; older ones always wait, silently. */
export const APPROVAL_POLICY_PATCH = 'accrue-approval-policy';
/**
 * Marks histories of closes whose search attribute skips the FREEZING/FINALIZING moments; older
 * ones upsert every stage on replay. (The steps stay normal activities: as local activities the
 * close was lighter on Temporal, but Temporal's time-skipping test server fails on them — "invalid
 * history builder state for action" — so they could not be tested.)
 */
export const LEAN_STAGES_PATCH = 'accrue-close-lean-stages';
/** Marks histories of closes that send the final invoice to Stripe (when the customer has a Stripe billing config). */
export const STRIPE_SYNC_PATCH = 'accrue-close-stripe-sync';

// Stripe calls: retried until Stripe answers (an outage of hours is waited out), each attempt with
// the same idempotency keys. The sync heartbeats between calls (each call times out in 10 s), so a
// killed worker's attempt is retried after 20 s.
const stripe = proxyActivities<Activities>({ startToCloseTimeout: '10 minutes', heartbeatTimeout: '20 seconds', retry: { initialInterval: '2 seconds', maximumInterval: '10 minutes', backoffCoefficient: 2 } });

type Decision = { seq: number } & ({ approve: true; by?: string; total?: string } | { approve: false; reason: string; by?: string });

export async function invoiceCloseWorkflow(input: InvoiceCloseInput): Promise<InvoiceDecisionResult> {
  let stage: InvoiceCloseStage = 'FREEZING';
  let decision: Decision | undefined;
  let rejections = 0;
  let total = '0';
  let decisions = 0;
  /** The approval (by decision number) refused because the re-frozen total differs from the one it named. */
  let refused: number | undefined;

  /**
   * With the lean-stages patch the search attribute skips the moments a close does not stay in:
   * it starts as INVOICE_FREEZING (set by whoever starts it), then AWAITING_APPROVAL, EMAILING (SMTP
   * can be down for a while), DONE; FINALIZING is one short step. The query shows every stage.
   */
  let lean = false;
  const setStage = (s: InvoiceCloseStage) => {
    stage = s;
    if (lean && (s === 'FREEZING' || s === 'FINALIZING')) return;
    upsertSearchAttributes([{ key: LifecycleStateKey, value: `INVOICE_${s}` }]);
  };

  setHandler(invoiceCloseStageQuery, () => stage);
  setHandler(approveInvoiceUpdate, async ({ approvedBy, total: named }) => {
    const seq = ++decisions;
    decision = { seq, approve: true, by: approvedBy, total: named };
    await condition(() => stage === 'EMAILING' || stage === 'DONE' || refused === seq);
    if (refused === seq) throw totalMismatch(total, named!);
    return { invoiceId: input.invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total };
  }, {
    validator: (arg) => {
      assertAwaitingDecision(stage, decision);
      if (arg?.total !== undefined && !sameTotal(arg.total, total)) throw totalMismatch(total, arg.total);
    },
  });
  setHandler(rejectInvoiceUpdate, async ({ reason, rejectedBy }) => {
    const before = rejections;
    decision = { seq: ++decisions, approve: false, reason, by: rejectedBy };
    await condition(() => rejections > before);
    return { invoiceId: input.invoiceId, status: 'DRAFT', approvalStatus: 'REJECTED', total };
  }, {
    validator: (arg) => {
      if (typeof arg?.reason !== 'string' || arg.reason.trim() === '') throw new Error('reason: is required when rejecting an invoice');
      assertAwaitingDecision(stage, decision);
    },
  });

  lean = patched(LEAN_STAGES_PATCH);
  setStage('FREEZING');
  let frozen = await acts.freezeInvoice({ ...input, recompute: false });
  total = frozen.total;

  if (frozen.status !== 'FINALIZED') {
    let reminderMs: number | undefined;
    let approvedByPolicy: string | undefined;
    if (patched(APPROVAL_POLICY_PATCH)) {
      const asked = await acts.approvalDecision({ invoiceId: input.invoiceId });
      if (!asked.approvalRequired) approvedByPolicy = asked.approvedBy;
      reminderMs = asked.reminderMs;
      log.info('approval decided', { invoiceId: input.invoiceId, approvalRequired: asked.approvalRequired, reason: asked.reason });
    }
    let reminders = 0;
    if (approvedByPolicy !== undefined) {
      setStage('FINALIZING');
      await acts.finalizeInvoice({ invoiceId: input.invoiceId, approvedBy: approvedByPolicy });
    } else for (;;) {
      setStage('AWAITING_APPROVAL');
      if (reminderMs === undefined) {
        await condition(() => decision !== undefined);
      } else {
        // Each interval without a decision sends the next reminder, without waiting for it: a
        // decision is acted on at once even while SMTP is slow or down (the send retries alone).
        while (!(await condition(() => decision !== undefined, reminderMs))) {
          void mail.remindApproval({ invoiceId: input.invoiceId, reminder: ++reminders }).catch(() => undefined);
        }
      }
      const d = decision as unknown as Decision;
      if (d.approve) {
        if (rejections > 0) {
          // Finance rejected an earlier version: approve what the data says now, not the stale copy,
          // and only if that is still the total finance named.
          frozen = await acts.freezeInvoice({ ...input, recompute: true });
          total = frozen.total;
          if (d.total !== undefined && !sameTotal(d.total, total)) {
            refused = d.seq;
            decision = undefined;
            continue;
          }
        }
        setStage('FINALIZING');
        await acts.finalizeInvoice({ invoiceId: input.invoiceId, approvedBy: d.by ?? null });
        break;
      }
      // Re-freeze right away, so the rejected invoice shows what an approval would now finalize;
      // then record the rejection on it (a re-freeze marks the invoice pending again).
      frozen = await acts.freezeInvoice({ ...input, recompute: true });
      total = frozen.total;
      await acts.rejectInvoice({ invoiceId: input.invoiceId, reason: d.reason, rejectedBy: d.by ?? null });
      decision = undefined;
      rejections++;
    }
  }

  setStage('EMAILING');
  await mail.emailInvoice({ invoiceId: input.invoiceId });
  setStage('DONE');
  if (!input.regeneratedFromInvoiceId) {
    // Wakes the contract's workflow, which waits for its last invoices before rolling over. It
    // may have ended already (or never run, for a close started by hand): nothing to wake then.
    await getExternalWorkflowHandle(contractWorkflowId(input.contractId))
      .signal(invoiceSettledSignal).catch(() => undefined);
  }
  if (patched(STRIPE_SYNC_PATCH)) {
    // Collection: the final invoice goes to Stripe when the customer has a Stripe billing config.
    const sent = await stripe.syncInvoiceToStripe({ invoiceId: input.invoiceId });
    log.info('stripe sync', { invoiceId: input.invoiceId, outcome: sent.outcome, stripeInvoiceId: sent.stripeInvoiceId });
    if (sent.outcome === 'PAYMENT_FAILED' || sent.firstAttemptAt) {
      try {
        await startChild(dunningWorkflow, {
          workflowId: dunningWorkflowId(input.invoiceId),
          args: [{ invoiceId: input.invoiceId, contractId: input.contractId, ...(sent.firstAttemptAt && sent.outcome !== 'PAYMENT_FAILED' ? { firstAttemptAt: sent.firstAttemptAt } : {}) }],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          typedSearchAttributes: [
            { key: CustomerIdKey, value: sent.customerId ?? '' }, { key: ContractIdKey, value: input.contractId },
            { key: InvoiceIdKey, value: input.invoiceId }, { key: LifecycleStateKey, value: 'DUNNING' },
          ],
        });
      } catch (err) {
        // Started already (by Stripe's payment_failed webhook): that dunning carries on.
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      }
    }
  }
  await condition(allHandlersFinished);
  return { invoiceId: input.invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total };
}

function sameTotal(a: string, b: string): boolean {
  try {
    return dec(a).eq(dec(b));
  } catch {
    return false;
  }
}

function totalMismatch(current: string, named: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`total: the invoice's total is now ${current}, not ${named}; review it and approve that total`, 'TotalMismatch');
}

function assertAwaitingDecision(stage: InvoiceCloseStage, decision: Decision | undefined): void {
  if (stage === 'FREEZING') throw ApplicationFailure.nonRetryable('the invoice is still being frozen; try again in a moment', 'NotReady');
  if (stage !== 'AWAITING_APPROVAL' || decision !== undefined) {
    throw ApplicationFailure.nonRetryable(`the invoice is not awaiting approval (stage ${stage})`, 'NotAwaitingApproval');
  }
}
