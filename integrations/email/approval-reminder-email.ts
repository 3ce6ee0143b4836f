import { formatUsdCents } from '../../billing/money.js';
import type { OutgoingMail } from './mailer.js';
import { facts, note, paragraph, renderMail } from './templates.js';

export interface ApprovalReminder {
  invoiceId: string;
  customerName: string;
  periodStart: string;
  periodEnd: string;
  /** Cents, the stored decimals. */
  total: string;
  previousTotal?: string;
  changePercent?: string;
  approvalStatus: 'PENDING_APPROVAL' | 'REJECTED';
  /** Which reminder this is (1, 2, …): part of the Message-ID, so a resend carries the same one. */
  reminder: number;
  waitingSince: string;
}

/** The reminder finance gets while an invoice waits for a decision (ACCRUE_FINANCE_EMAIL). */
export function renderApprovalReminder(r: ApprovalReminder, to: string): OutgoingMail {
  const period = `${r.periodStart.slice(0, 10)} to ${r.periodEnd.slice(0, 10)}`;
  const total = formatUsdCents(r.total);
  const subject = `Reminder ${r.reminder}: invoice for ${r.customerName} (${period}, ${total}) awaits approval`;
  const { text, html } = renderMail('Invoice awaiting approval', [
    paragraph(r.approvalStatus === 'REJECTED'
      ? `This invoice was rejected and re-frozen; it is waiting for finance to approve its current total.`
      : `This invoice is frozen and waiting for finance to approve or reject it.`),
    facts([
      ['Customer', r.customerName],
      ['Invoice', r.invoiceId],
      ['Period', `${period} (UTC)`],
      ['Total', total],
      ...(r.previousTotal !== undefined ? [['Previous period', formatUsdCents(r.previousTotal)] as [string, string]] : []),
      ...(r.changePercent !== undefined ? [['Change', `${r.changePercent} %`] as [string, string]] : []),
      ['Waiting since', r.waitingSince],
    ]),
    paragraph(`Approve with POST /v1/invoices/${r.invoiceId}/approve {"total": ${r.total}}, or reject with POST /v1/invoices/${r.invoiceId}/reject {"reason": "…"}. The queue: GET /v1/accrue/invoices/pending-approval.`),
    note(`Reminder ${r.reminder}; reminders continue every ACCRUE_APPROVAL_REMINDER until a decision.`),
  ]);
  return { to, subject, text, html, messageId: `<approval-reminder-${r.invoiceId}-${r.reminder}@accrue.local>` };
}
