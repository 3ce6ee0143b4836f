import { formatUsdCents } from '../../billing/money.js';
import type { OutgoingMail } from './mailer.js';

/**
 * Lifecycle notices (trial, renewal, overdue): plain text and HTML from the same facts, amounts
 * formatted from the same decimals the invoices carry (whole cents, `formatUsdCents`).
 */
export type NoticeKind = 'trial_started' | 'trial_reminder' | 'trial_ended' | 'renewal_notice' | 'invoice_overdue' | 'dunning_attempt' | 'dunning_exhausted';

export interface NoticeFacts {
  kind: NoticeKind;
  /** Unique per notice and recipient; the Message-ID is derived from it, so a resend carries the same one. */
  key: string;
  to: string;
  customerName: string;
  contractId: string;
  trial?: { endsAt: string; spendingCapCents?: string; outcome?: 'converted' | 'expired' };
  renewal?: { endingBefore: string; spentCents: string; commits: { name: string; amountCents: string; remainingCents: string }[]; toFinance: boolean };
  invoice?: { id: string; periodStart: string; periodEnd: string; totalCents: string; amountDueCents: string; dueAt: string };
  /** Dunning: the payment attempt (1-based) of how many, and Stripe's page where the customer can pay. */
  dunning?: { attempt: number; of: number; hostedUrl: string | null; toFinance: boolean };
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const day = (iso: string) => iso.slice(0, 10);

export function renderNotice(f: NoticeFacts): OutgoingMail {
  const { subject, paragraphs } = content(f);
  const greeting = f.renewal?.toFinance || f.dunning?.toFinance ? 'Hello finance team,' : `Hello ${f.customerName},`;
  const text = [greeting, '', ...paragraphs.flatMap((p) => [p, '']), `Contract: ${f.contractId}`].join('\n');
  const html = `<!doctype html><html><body>
<p>${esc(greeting)}</p>
${paragraphs.map((p) => `<p>${esc(p).replace(/\n/g, '<br>')}</p>`).join('\n')}
<p style="color:#666">Contract <code>${esc(f.contractId)}</code></p>
</body></html>`;
  const id = f.key.replace(/[^A-Za-z0-9._-]/g, '-');
  return { to: f.to, subject, text, html, messageId: `<notice-${id}@accrue.local>` };
}

function content(f: NoticeFacts): { subject: string; paragraphs: string[] } {
  const t = f.trial;
  switch (f.kind) {
    case 'trial_started':
      return {
        subject: `Your trial has started (ends ${day(t!.endsAt)})`,
        paragraphs: [
          `Your trial runs until ${t!.endsAt} (UTC). Usage is metered and shown on your draft invoice; the trial covers it${t!.spendingCapCents ? ` up to ${formatUsdCents(t!.spendingCapCents)}` : ''}.`,
        ],
      };
    case 'trial_reminder':
      return {
        subject: `Your trial ends on ${day(t!.endsAt)}`,
        paragraphs: [`Your trial ends at ${t!.endsAt} (UTC).`],
      };
    case 'trial_ended':
      return t!.outcome === 'converted'
        ? { subject: 'Your trial has ended: your contract is active', paragraphs: [`Your trial ended at ${t!.endsAt} (UTC) and your contract continues; usage from now on is billed.`] }
        : { subject: 'Your trial has ended', paragraphs: [`Your trial ended at ${t!.endsAt} (UTC). The contract has ended with it and access is paused until a contract is in place.`] };
    case 'renewal_notice': {
      const r = f.renewal!;
      const commits = r.commits.map((c) => `${c.name}: ${formatUsdCents(c.remainingCents)} of ${formatUsdCents(c.amountCents)} remaining`);
      return {
        subject: `${r.toFinance ? `${f.customerName}'s contract` : 'Your contract'} ends on ${day(r.endingBefore)}`,
        paragraphs: [
          `The contract ends at ${r.endingBefore} (UTC) and is up for renewal.`,
          `Invoiced so far: ${formatUsdCents(r.spentCents)}.`,
          ...(commits.length ? [`Commits:\n${commits.join('\n')}`] : []),
        ],
      };
    }
    case 'invoice_overdue': {
      const i = f.invoice!;
      return {
        subject: `Invoice overdue: ${formatUsdCents(i.amountDueCents)} was due on ${day(i.dueAt)}`,
        paragraphs: [
          `Invoice ${i.id} for ${day(i.periodStart)} to ${day(i.periodEnd)} (total ${formatUsdCents(i.totalCents)}) was due at ${i.dueAt} (UTC).`,
          `Amount due: ${formatUsdCents(i.amountDueCents)}.`,
        ],
      };
    }
    case 'dunning_attempt': {
      const i = f.invoice!;
      const d = f.dunning!;
      return {
        subject: `Payment failed: ${formatUsdCents(i.amountDueCents)} for invoice ${i.id} (attempt ${d.attempt} of ${d.of})`,
        paragraphs: [
          `We could not collect ${formatUsdCents(i.amountDueCents)} for invoice ${i.id} (${day(i.periodStart)} to ${day(i.periodEnd)}). This was attempt ${d.attempt} of ${d.of}.`,
          d.hostedUrl ? `Pay or update your payment method here: ${d.hostedUrl}` : 'Please update your payment method.',
        ],
      };
    }
    case 'dunning_exhausted': {
      const i = f.invoice!;
      const d = f.dunning!;
      return {
        subject: `${f.customerName}: invoice ${i.id} unpaid after ${d.of} payment attempts`,
        paragraphs: [
          `Every payment attempt for invoice ${i.id} (${day(i.periodStart)} to ${day(i.periodEnd)}, ${formatUsdCents(i.amountDueCents)} due) failed. The contract is now in arrears.`,
          ...(d.hostedUrl ? [`Stripe invoice: ${d.hostedUrl}`] : []),
        ],
      };
    }
  }
}
