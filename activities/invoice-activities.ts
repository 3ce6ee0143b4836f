import { log } from '@temporalio/activity';
import { NotFoundError, ConflictError } from '../billing/errors.js';
import { Customer, Invoice } from '../db/entities.js';
import { viewOfStored } from '../db/invoices.js';
import { freezeInvoiceTx, type FreezeInput, type FrozenInvoice } from '../db/invoice-freeze.js';
import { renderInvoiceEmail } from '../integrations/email/invoice-email.js';
import type { ActivityDeps } from './index.js';
import { classified } from './failures.js';

export type { FreezeInput, FrozenInvoice } from '../db/invoice-freeze.js';

export function createInvoiceActivities({ orm, mailer }: ActivityDeps) {
  return {
    /**
     * Freezes the period's invoice: computes it from PostgreSQL and stores it, in one transaction
     * that locks the row. Idempotent: an invoice already frozen is returned as it is.
     */
    async freezeInvoice(input: FreezeInput): Promise<FrozenInvoice> {
      return classified(() => orm.em.fork().transactional((em) => freezeInvoiceTx(em, input)));
    },

    async rejectInvoice({ invoiceId, reason, rejectedBy }: { invoiceId: string; reason: string; rejectedBy: string | null }): Promise<void> {
      return classified(() => orm.em.fork().transactional(async (em) => {
        const inv = await em.findOne(Invoice, { id: invoiceId }, { lockMode: 4 });
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
        const inv = await em.findOne(Invoice, { id: invoiceId }, { lockMode: 4 });
        if (!inv) throw new NotFoundError('invoice', invoiceId);
        if (inv.status === 'FINALIZED') return;
        if (inv.status !== 'DRAFT') throw new ConflictError(`invoice ${invoiceId} is ${inv.status} and cannot be finalized`);
        inv.status = 'FINALIZED';
        inv.approvalStatus = 'APPROVED';
        inv.approvedBy = approvedBy;
        inv.rejectionReason = null;
        inv.finalizedAt = new Date();
      }));
    },

    /**
     * Emails a finalized invoice to the customer's billing contact. Checks the record first, sends
     * with a Message-ID derived from the invoice id, then records the send: no transaction is held
     * across the SMTP call (a crash between send and record resends the same Message-ID).
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
          return { sent: false, reason: 'customer has no billing_email' };
        }
        const mail = renderInvoiceEmail(viewOfStored(inv), { name: customer.name, billingEmail: customer.billingEmail });
        await mailer.send(mail);
        await em.nativeUpdate(Invoice, { id: invoiceId, emailedAt: null }, { emailedAt: new Date(), emailMessageId: mail.messageId });
        return { sent: true };
      });
    },
  };
}
