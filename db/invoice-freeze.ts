import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError, UnavailableError } from '../billing/errors.js';
import { customerEventKeys } from './customers.js';
import { BalanceLedgerEntry, Contract, Invoice } from './entities.js';
import { computeInvoice, ledgerEntriesOf, storedLines } from './invoices.js';
import { ratingCaughtUp } from './rating.js';

export interface FreezeInput {
  invoiceId: string;
  contractId: string;
  periodStart: string;
  periodEnd: string;
  /** Recompute a DRAFT that finance rejected; a FINALIZED invoice is never recomputed. */
  recompute: boolean;
  /** Set when this invoice regenerates a voided one. */
  regeneratedFromInvoiceId?: string;
}

export interface FrozenInvoice {
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  total: string;
}

/**
 * Freezes a period's invoice inside the caller's transaction: computes it from PostgreSQL and
 * stores it with its balance ledger entries, locking the row. Idempotent: an invoice already
 * frozen is returned as it is (unless a rejected DRAFT is recomputed).
 */
export async function freezeInvoiceTx(em: EntityManager, input: FreezeInput): Promise<FrozenInvoice> {
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
      regeneratedFromInvoiceId: input.regeneratedFromInvoiceId ?? null,
    });
  }
  // The balance ledger moves with the frozen invoice, in the same transaction.
  await em.flush();
  await em.nativeDelete(BalanceLedgerEntry, { invoiceId: input.invoiceId });
  for (const e of ledgerEntriesOf(computed, { id: input.invoiceId, contractId: contract.id, periodEnd: input.periodEnd })) {
    em.create(BalanceLedgerEntry, { ...e, invoiceId: input.invoiceId, contractId: contract.id, ts: new Date(e.ts), createdAt: now });
  }
  return { status: 'DRAFT', total: computed.total.toString() };
}
