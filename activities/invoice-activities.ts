import { log } from '@temporalio/activity';
import { NotFoundError, ConflictError, UnavailableError } from '../billing/errors.js';
import { customerEventKeys } from '../db/customers.js';
import { ratingCaughtUp } from '../db/rating.js';
import { BalanceLedgerEntry, Contract, Customer, Invoice } from '../db/entities.js';
import { computeInvoice, ledgerEntriesOf, storedLines, viewOfStored } from '../db/invoices.js';
import { renderInvoiceEmail } from '../integrations/email/invoice-email.js';
import type { ActivityDeps } from './index.js';
import { classified } from './failures.js';

export interface FreezeInput {
  invoiceId: string;
  contractId: string;
  periodStart: string;
  periodEnd: string;
  /** Recompute a DRAFT that finance rejected; a FINALIZED invoice is never recomputed. */
  recompute: boolean;
}

export interface FrozenInvoice {
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  total: string;
}

export function createInvoiceActivities({ orm, mailer }: ActivityDeps) {
  return {
    /**
     * Freezes the period's invoice: computes it from PostgreSQL and stores it, in one transaction
     * that locks the row. Idempotent: an invoice already frozen is returned as it is.
     */
    async freezeInvoice(input: FreezeInput): Promise<FrozenInvoice> {
      return classified(() => orm.em.fork().transactional(async (em) => {
        const existing = await em.findOne(Invoice, { id: input.invoiceId }, { lockMode: 4 /* PESSIMISTIC_WRITE */ });
        if (existing && (!input.recompute || existing.status !== 'DRAFT')) return { status: existing.status, total: existing.total };
        const contract = await em.findOne(Contract, { id: input.contractId });
        if (!contract) throw new NotFoundError('contract', input.contractId);
        // Freeze only what is rated: every event committed before this moment must be in the
        // aggregates (rating runs sub-second behind; the activity retries until it caught up).
        if (!(await ratingCaughtUp(em, await customerEventKeys(em, contract.customerId)))) {
          throw new UnavailableError(`rating has not caught up with customer ${contract.customerId}'s events yet`);
        }
        const computed = await computeInvoice(em, contract, { start: input.periodStart, end: input.periodEnd }, { invoiceId: input.invoiceId });
        const now = new Date();
        if (existing) {
          existing.lineItems = storedLines(computed);
          existing.total = computed.total.toString();
          existing.subtotal = computed.subtotal.toString();
          existing.approvalStatus = 'PENDING_APPROVAL';
          existing.frozenAt = now;
        } else {
          em.create(Invoice, {
            id: input.invoiceId,
            customerId: contract.customerId,
            contractId: contract.id,
            periodStart: new Date(input.periodStart),
            periodEnd: new Date(input.periodEnd),
            status: 'DRAFT',
            approvalStatus: 'PENDING_APPROVAL',
            creditTypeId: computed.creditType.id,
            creditTypeName: computed.creditType.name,
            lineItems: storedLines(computed),
            total: computed.total.toString(),
            subtotal: computed.subtotal.toString(),
            frozenAt: now,
            createdAt: now,
          });
        }
        // The balance ledger moves with the frozen invoice, in the same transaction.
        await em.flush();
        await em.nativeDelete(BalanceLedgerEntry, { invoiceId: input.invoiceId });
        for (const e of ledgerEntriesOf(computed, { id: input.invoiceId, contractId: contract.id, periodEnd: input.periodEnd })) {
          em.create(BalanceLedgerEntry, { ...e, invoiceId: input.invoiceId, contractId: contract.id, ts: new Date(e.ts), createdAt: now });
        }
        return { status: 'DRAFT', total: computed.total.toString() };
      }));
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
