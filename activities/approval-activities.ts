import { changePercent, decideApproval, policyApprover, type ApprovalDecision } from '../billing/approval-policy.js';
import { NotFoundError } from '../billing/errors.js';
import { Contract, Customer, Invoice } from '../db/entities.js';
import { previousPeriodTotal } from '../db/approvals.js';
import { renderApprovalReminder } from '../integrations/email/approval-reminder-email.js';
import { DEFAULT_LIFECYCLE_SETTINGS } from '../stack/config.js';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';
import { sendOnce } from './send-once.js';

export interface ApprovalDecisionResult extends ApprovalDecision {
  /** What finalize records as the approver when no approval is required (`policy:NEVER`, `policy:ABOVE`). */
  approvedBy: string;
  /** How often finance is reminded while the invoice waits (ACCRUE_APPROVAL_REMINDER), carried into the workflow's history. */
  reminderMs: number;
}

export function createApprovalActivities({ orm, mailer, lifecycle }: ActivityDeps) {
  const settings = { ...DEFAULT_LIFECYCLE_SETTINGS, ...lifecycle };
  return {
    /**
     * Does this frozen invoice wait for finance? Reads the contract's approval_policy (else
     * ACCRUE_APPROVAL_POLICY), the frozen total and the previous period's, and lets
     * `decideApproval` decide. Read-only, so safe to repeat.
     */
    async approvalDecision({ invoiceId }: { invoiceId: string }): Promise<ApprovalDecisionResult> {
      return classified(async () => {
        const em = orm.em.fork();
        const inv = await em.findOne(Invoice, { id: invoiceId });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        const contract = await em.findOne(Contract, { id: inv.contractId });
        const decision = decideApproval({
          contractPolicy: contract?.terms?.approval_policy,
          defaultPolicy: settings.approvalPolicy,
          total: inv.total,
          previousTotal: await previousPeriodTotal(em, invoiceId),
          changePct: settings.approvalChangePct,
        });
        return { ...decision, approvedBy: policyApprover(decision), reminderMs: settings.approvalReminderMs };
      });
    },

    /**
     * Reminder number `reminder` to ACCRUE_FINANCE_EMAIL about an invoice still waiting for a
     * decision, sent once (recorded in `approval_reminder`). Nothing is sent when no finance
     * address is set or the invoice is no longer waiting (decided meanwhile).
     */
    async remindApproval({ invoiceId, reminder }: { invoiceId: string; reminder: number }): Promise<{ sent: boolean; reason?: string }> {
      return classified(async () => {
        if (!settings.financeEmail) return { sent: false, reason: 'ACCRUE_FINANCE_EMAIL is not set' };
        const em = orm.em.fork();
        const inv = await em.findOne(Invoice, { id: invoiceId });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        if (inv.status !== 'DRAFT' || inv.approvalStatus === 'APPROVED') return { sent: false, reason: `invoice is ${inv.status}` };
        const customer = await em.findOne(Customer, { id: inv.customerId });
        const previousTotal = await previousPeriodTotal(em, invoiceId);
        const mail = renderApprovalReminder({
          invoiceId, customerName: customer?.name ?? inv.customerId, periodStart: inv.periodStart.toISOString(), periodEnd: inv.periodEnd.toISOString(),
          total: inv.total, previousTotal, changePercent: previousTotal !== undefined ? changePercent(inv.total, previousTotal) : undefined, approvalStatus: inv.approvalStatus === 'REJECTED' ? 'REJECTED' : 'PENDING_APPROVAL',
          reminder, waitingSince: inv.createdAt.toISOString(),
        }, settings.financeEmail);
        return sendOnce(em, mailer, mail, { table: 'approval_reminder', key: { invoice_id: invoiceId, reminder_number: reminder } });
      });
    },
  };
}
