import { log } from '@temporalio/activity';
import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError, UnavailableError } from '../billing/errors.js';
import { lifecycleTimes } from '../billing/lifecycle-times.js';
import { dec } from '../billing/money.js';
import { customerBalances } from '../db/balances.js';
import { Contract, Customer, Invoice } from '../db/entities.js';
import { standings, unsettledInvoices } from '../db/payments.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import type { Mailer, OutgoingMail } from '../integrations/email/mailer.js';
import { renderNotice, type NoticeFacts, type NoticeKind } from '../integrations/email/notices.js';
import { DEFAULT_LIFECYCLE_SETTINGS } from '../stack/config.js';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';
import { externalInvoices } from '../db/stripe.js';

export interface NoticeInput {
  kind: NoticeKind;
  /** The notice's key (e.g. `trial_ended:<contract>`): one email per key and recipient, ever. */
  key: string;
  contractId: string;
  invoiceId?: string;
  outcome?: 'converted' | 'expired';
  /** Dunning notices: which payment attempt of how many. */
  attempt?: { n: number; of: number };
  /** The customer's billing contact (default) or ACCRUE_FINANCE_EMAIL. */
  recipient?: 'billing' | 'finance';
}

export function createNoticeActivities({ orm, mailer, lifecycle }: ActivityDeps) {
  const settings = { ...DEFAULT_LIFECYCLE_SETTINGS, ...lifecycle };
  return {
    /**
     * Sends one lifecycle notice at most once per key and recipient (recorded in
     * `notification_email` before and after the send, like invoice emails: at-least-once only
     * when a worker dies mid-send). No address → recorded as SKIPPED, not retried.
     */
    async sendNotificationEmail(input: NoticeInput): Promise<{ sent: boolean; reason?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const contract = await em.findOne(Contract, { id: input.contractId });
        if (!contract) throw new NotFoundError('contract', input.contractId);
        const customer = await em.findOne(Customer, { id: contract.customerId });
        if (!customer) throw new NotFoundError('customer', contract.customerId);
        const toFinance = input.recipient === 'finance';
        const key = toFinance ? `${input.key}:finance` : input.key;
        const to = toFinance ? settings.financeEmail : customer.billingEmail;
        if (!to) {
          await em.execute(`insert into notification_email (key, kind, contract_id, invoice_id, to_address, message_id, status, attempts, started_at)
            values (?, ?, ?, ?, '', '', 'SKIPPED', 0, now()) on conflict do nothing`, [key, input.kind, contract.id, input.invoiceId ?? null]);
          return { sent: false, reason: toFinance ? 'ACCRUE_FINANCE_EMAIL is not set' : 'customer has no billing_email' };
        }
        const mail = renderNotice(await noticeFacts(em, { ...input, key, to, toFinance }, contract, customer.name, settings.trialReminderDays));
        return sendOnce(em, mailer, { key, kind: input.kind, contractId: contract.id, invoiceId: input.invoiceId ?? null }, mail);
      });
    },

    /** Read-only: the contract's finalized invoices not yet paid in full or voided, with their due dates. */
    async invoicePaymentStates({ contractId }: { contractId: string }): Promise<{ invoiceId: string; dueAt: string; settled: boolean }[]> {
      return classified(async () => (await unsettledInvoices(orm.em.fork(), contractId)).map((i) => ({ invoiceId: i.invoiceId, dueAt: i.dueAt, settled: false })));
    },
  };
}

/** Claim (one statement, so two attempts cannot both claim), send, record. */
async function sendOnce(em: EntityManager, mailer: Mailer, row: { key: string; kind: string; contractId: string; invoiceId: string | null }, mail: OutgoingMail): Promise<{ sent: boolean; reason?: string }> {
  const [claim] = await em.execute<{ attempts: number }[]>(`
    insert into notification_email as e (key, kind, contract_id, invoice_id, to_address, message_id, status, attempts, started_at)
    values (?, ?, ?, ?, ?, ?, 'SENDING', 1, now())
    on conflict (key) do update set attempts = e.attempts + 1, started_at = now()
      where e.status = 'SENDING' and e.started_at < now() - make_interval(secs => ?)
    returning attempts`, [row.key, row.kind, row.contractId, row.invoiceId, mail.to, mail.messageId, EMAIL_ACTIVITY_TIMEOUT_MS / 1000]);
  if (!claim) {
    const [done] = await em.execute<{ status: string; started_at: Date }[]>('select status, started_at from notification_email where key = ?', [row.key]);
    if (done?.status === 'SENT' || done?.status === 'SKIPPED') return { sent: false, reason: `already ${done.status.toLowerCase()}` };
    throw new UnavailableError(`notice ${row.key} may still be in flight (started ${String(done?.started_at)}); it is sent again only once that attempt has timed out`);
  }
  if (claim.attempts > 1) log.warn('resending a notice whose earlier send was not recorded (at-least-once)', { key: row.key, attempts: claim.attempts });
  await mailer.send(mail);
  await em.execute(`update notification_email set status = 'SENT', sent_at = now() where key = ?`, [row.key]);
  return { sent: true };
}

async function noticeFacts(
  em: EntityManager, n: NoticeInput & { key: string; to: string; toFinance: boolean }, contract: Contract, customerName: string, trialReminderDays: number,
): Promise<NoticeFacts> {
  const base = { kind: n.kind, key: n.key, to: n.to, customerName, contractId: contract.id };
  const trial = lifecycleTimes(contract, { trialReminderDays }).trial;
  switch (n.kind) {
    case 'trial_started':
    case 'trial_reminder':
    case 'trial_ended': {
      if (!trial) throw new NotFoundError('trial of contract', contract.id);
      const cap = contract.terms?.trial_spec?.spending_cap?.amount;
      return { ...base, trial: { endsAt: trial.endsAt, ...(cap !== undefined ? { spendingCapCents: String(cap) } : {}), ...(n.outcome ? { outcome: n.outcome } : {}) } };
    }
    case 'renewal_notice': {
      const invoices = await em.find(Invoice, { contractId: contract.id, status: 'FINALIZED' }, { fields: ['total'] });
      const spent = invoices.reduce((s, i) => s.plus(dec(i.total)), dec(0));
      const balances = (await customerBalances(em, contract.customerId)).filter((b) => b.grant.contractId === contract.id && b.grant.kind !== 'CREDIT');
      const commits = balances.map((b) => ({
        name: b.grant.name ?? b.grant.id,
        amountCents: b.grant.accessSchedule.schedule_items.reduce((s, x) => s.plus(dec(x.amount)), dec(0)).toFixed(),
        remainingCents: b.balance.toFixed(),
      }));
      return { ...base, renewal: { endingBefore: contract.endingBefore!.toISOString(), spentCents: spent.toFixed(), commits, toFinance: n.toFinance } };
    }
    case 'invoice_overdue':
    case 'dunning_attempt':
    case 'dunning_exhausted': {
      const inv = await em.findOne(Invoice, { id: n.invoiceId! });
      if (!inv) throw new NotFoundError('invoice', n.invoiceId!);
      const s = (await standings(em, [inv])).get(inv.id)!;
      const invoice = { id: inv.id, periodStart: inv.periodStart.toISOString(), periodEnd: inv.periodEnd.toISOString(), totalCents: inv.total, amountDueCents: s.amountDue, dueAt: s.dueAt ?? '' };
      if (n.kind === 'invoice_overdue') return { ...base, invoice };
      const hostedUrl = (await externalInvoices(em, [inv.id])).get(inv.id)?.hostedUrl ?? null;
      return { ...base, invoice, dunning: { attempt: n.attempt?.n ?? 0, of: n.attempt?.of ?? 0, hostedUrl, toFinance: n.toFinance } };
    }
  }
}
