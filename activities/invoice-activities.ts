import { LockMode } from '@mikro-orm/core';
import { log } from '@temporalio/activity';
import { NotFoundError, ConflictError, UnavailableError } from '../billing/errors.js';
import { jsonDecimal } from '../billing/money.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import { Customer, Invoice } from '../db/entities.js';
import { viewOfStored } from '../db/invoices.js';
import { enqueueNotification } from '../db/notifications.js';
import { freezeInvoiceTx, freezeLateUsageInvoiceTx, type FreezeInput, type FrozenInvoice } from '../db/invoice-freeze.js';
import { renderInvoiceEmail } from '../integrations/email/invoice-email.js';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';

export type { FreezeInput, FrozenInvoice } from '../db/invoice-freeze.js';

export function createInvoiceActivities({ orm, mailer, invoiceGracePeriodMs }: ActivityDeps) {
  return {
    /**
     * Freezes the period's invoice: computes it from PostgreSQL and stores it, in one transaction
     * that locks the row. Idempotent: an invoice already frozen is returned as it is.
     */
    async freezeInvoice(input: FreezeInput): Promise<FrozenInvoice> {
      return classified(() => orm.em.fork().transactional((em) => freezeInvoiceTx(em, input, { invoiceGracePeriodMs })));
    },

    /**
     * The late-usage invoice of an ended contract with no renewal (corrections only), frozen once;
     * null when there is nothing to bill. Its close workflow then takes it through approval.
     */
    async freezeLateUsageInvoice({ contractId }: { contractId: string }) {
      return classified(() => orm.em.fork().transactional((em) => freezeLateUsageInvoiceTx(em, contractId)));
    },

    async rejectInvoice({ invoiceId, reason, rejectedBy }: { invoiceId: string; reason: string; rejectedBy: string | null }): Promise<void> {
      return classified(() => orm.em.fork().transactional(async (em) => {
        const inv = await em.findOne(Invoice, { id: invoiceId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        if (inv.status !== 'DRAFT') throw new ConflictError(`invoice ${invoiceId} is ${inv.status} and cannot be rejected`);
        inv.approvalStatus = 'REJECTED';
        inv.rejectionReason = reason;
        inv.approvedBy = rejectedBy;
      }));
    },

    /** DRAFT → FINALIZED, once. Finalizing a finalized invoice is a no-op. */
    async finalizeInvoice({ invoiceId, approvedBy }: { invoiceId: string; approvedBy: string | null }): Promise<void> {
      return classified(() => orm.em.fork().transactional(async (em) => {
        const inv = await em.findOne(Invoice, { id: invoiceId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        if (inv.status === 'FINALIZED') return;
        if (inv.status !== 'DRAFT') throw new ConflictError(`invoice ${invoiceId} is ${inv.status} and cannot be finalized`);
        inv.status = 'FINALIZED';
        inv.approvalStatus = 'APPROVED';
        inv.approvedBy = approvedBy;
        inv.rejectionReason = null;
        inv.finalizedAt = new Date();
        // Sent if and only if the finalization commits (the outbox, db/notifications.ts).
        await enqueueNotification(em, {
          type: 'invoice.finalized', dedupKey: `invoice.finalized:${inv.id}`, customerId: inv.customerId,
          properties: {
            invoice_id: inv.id, customer_id: inv.customerId, contract_id: inv.contractId, total: jsonDecimal(inv.total),
            start_timestamp: new Date(inv.periodStart).toISOString(), end_timestamp: new Date(inv.periodEnd).toISOString(),
            finalized_at: inv.finalizedAt.toISOString(),
          },
        });
      }));
    },

    /**
     * Emails a finalized invoice to the customer's billing contact (invariant I4). The send is
     * recorded before and after, in `invoice_email`, and no transaction is held across the SMTP
     * call:
     * - no row: claim it (SENDING), send, then record SENT (and `emailed_at` on the invoice);
     * - SENT: done, nothing is sent again;
     * - SENDING younger than the activity's timeout: a send may still be in flight (a retry that
     *   overlaps it) — refuse, retryably, and send nothing;
     * - SENDING older than that: the earlier send has ended (nodemailer's limits are shorter), but
     *   whether the server accepted it is unknown (killed between the server's 250 and the
     *   record): send again, with the same Message-ID. That is the at-least-once boundary: a crash
     *   in that window is the one way a customer gets the same invoice twice.
     */
    async emailInvoice({ invoiceId }: { invoiceId: string }): Promise<{ sent: boolean; reason?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const inv = await em.findOne(Invoice, { id: invoiceId });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        if (inv.emailedAt) return { sent: false, reason: 'already emailed' };
        if (inv.status !== 'FINALIZED') throw new ConflictError(`invoice ${invoiceId} is ${inv.status}; only finalized invoices are emailed`);
        const customer = await em.findOne(Customer, { id: inv.customerId });
        if (!customer?.billingEmail) {
          log.warn('customer has no billing_email; invoice not emailed', { invoiceId, customerId: inv.customerId });
          // Recorded, so the contract workflow counts this close as done even if an email is added later.
          await em.execute(`insert into invoice_email (invoice_id, message_id, status, attempts, started_at) values (?, '', 'SKIPPED', 0, now()) on conflict do nothing`, [invoiceId]);
          return { sent: false, reason: 'customer has no billing_email' };
        }
        const mail = renderInvoiceEmail(viewOfStored(inv), { name: customer.name, billingEmail: customer.billingEmail });

        // Before: claim the send (one statement, so two attempts cannot both claim it).
        const [claim] = await em.execute<{ status: string; attempts: number; claimed: boolean }[]>(`
          insert into invoice_email as e (invoice_id, message_id, status, attempts, started_at) values (?, ?, 'SENDING', 1, now())
          on conflict (invoice_id) do update set status = 'SENDING', message_id = excluded.message_id, attempts = e.attempts + 1, started_at = now()
            where (e.status = 'SENDING' and e.started_at < now() - make_interval(secs => ?)) or e.status = 'SKIPPED'
          returning status, attempts, true as claimed`, [invoiceId, mail.messageId, EMAIL_ACTIVITY_TIMEOUT_MS / 1000]);
        if (!claim) {
          const [row] = await em.execute<{ status: string; started_at: Date }[]>('select status, started_at from invoice_email where invoice_id = ?', [invoiceId]);
          if (row?.status === 'SENT') {
            await em.nativeUpdate(Invoice, { id: invoiceId, emailedAt: null }, { emailedAt: new Date(), emailMessageId: mail.messageId });
            return { sent: false, reason: 'already emailed' };
          }
          throw new UnavailableError(`invoice ${invoiceId}'s email may still be in flight (started ${String(row?.started_at)}); it is sent again only once that attempt has timed out`);
        }
        if (claim.attempts > 1) log.warn('resending an invoice email whose earlier send was not recorded (at-least-once)', { invoiceId, attempts: claim.attempts });

        await mailer.send(mail);

        // After: the server accepted it.
        await em.transactional(async (tx) => {
          await tx.execute(`update invoice_email set status = 'SENT', sent_at = now() where invoice_id = ?`, [invoiceId]);
          await tx.nativeUpdate(Invoice, { id: invoiceId, emailedAt: null }, { emailedAt: new Date(), emailMessageId: mail.messageId });
        });
        return { sent: true };
      });
    },
  };
}
