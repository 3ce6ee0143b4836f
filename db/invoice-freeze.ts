import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError, UnavailableError } from '../billing/errors.js';
import { periodClosesAt, type BackdatedWrite, type Period } from '../billing/periods.js';
import { backdatedWrites } from './backdated-writes.js';
import { lockCustomerBalances } from './balance-lock.js';
import { customerEventKeys } from './customers.js';
import { BalanceLedgerEntry, Contract, Invoice } from './entities.js';
import { computeInvoice, computeLateUsageInvoice, computeScheduledInvoice, lateUsageInvoiceId, ledgerEntriesOf, openPeriods, periodOrder, storedLines } from './invoices.js';
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

export interface FreezeOptions {
  /** The invoice grace period: an earlier period whose close (`periodClosesAt`) is still ahead is not frozen along. */
  invoiceGracePeriodMs?: number;
  now?: Date;
}

export interface FrozenInvoice {
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  total: string;
}

/**
 * Freezes a period's invoice inside the caller's transaction: computes it from PostgreSQL and
 * stores it with its balance ledger entries, locking the row. Idempotent: an invoice already
 * frozen is returned as it is (unless a rejected DRAFT is recomputed).
 *
 * Draw-downs are exactly what the drafts showed, whatever order the close workflows run in:
 * - the customer's balances are locked for the transaction (two contracts of one customer
 *   freezing on the same boundary take turns, and the second sees the first's draw-downs);
 * - periods are frozen in `periodOrder`: freezing a period first freezes every earlier open period
 *   of the customer (any contract) whose close is due, in the same transaction. Their own close
 *   workflows then find them frozen and carry on from there. An earlier period still waiting for
 *   its grace (a contract or amendment written after it ended: `periodClosesAt`) stays open and
 *   freezes at its own close.
 */
export async function freezeInvoiceTx(em: EntityManager, input: FreezeInput, opts: FreezeOptions = {}): Promise<FrozenInvoice> {
  const contract = await em.findOne(Contract, { id: input.contractId });
  if (!contract) throw new NotFoundError('contract', input.contractId);
  await lockCustomerBalances(em, contract.customerId);
  const existing = await em.findOne(Invoice, { id: input.invoiceId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
  if (existing && (!input.recompute || existing.status !== 'DRAFT')) return { status: existing.status, total: existing.total };
  // Freeze only what is rated: every event committed before this moment must be in the
  // aggregates (rating runs sub-second behind; the activity retries until it caught up).
  if (!(await ratingCaughtUp(em, await customerEventKeys(em, contract.customerId)))) {
    throw new UnavailableError(`rating has not caught up with customer ${contract.customerId}'s events yet`);
  }
  const period = { start: input.periodStart, end: input.periodEnd };
  if (!existing) {
    const target = { contractId: contract.id, period };
    const now = opts.now ?? new Date();
    const writes = new Map<string, BackdatedWrite[]>();
    for (const earlier of await openPeriods(em, contract.customerId, now)) {
      if (earlier.id === input.invoiceId || periodOrder({ contractId: earlier.contract.id, period: earlier.period }, target) >= 0) continue;
      if (!writes.has(earlier.contract.id)) writes.set(earlier.contract.id, await backdatedWrites(em, earlier.contract));
      if (periodClosesAt(earlier.period, opts.invoiceGracePeriodMs ?? 0, writes.get(earlier.contract.id)) > now.getTime()) continue;
      await storeFrozen(em, earlier.contract, earlier.period, earlier.id, null);
    }
  }
  return storeFrozen(em, contract, period, input.invoiceId, existing, input.regeneratedFromInvoiceId);
}

/** Computes one period's invoice and writes it and its ledger entries (flushed, so the next computation in this transaction sees them). */
async function storeFrozen(em: EntityManager, contract: Contract, period: Pick<Period, 'start' | 'end'>, invoiceId: string, existing: Invoice | null, regeneratedFromInvoiceId?: string): Promise<FrozenInvoice> {
  const computed = existing?.type === 'SCHEDULED'
    ? await computeScheduledInvoice(em, contract, invoiceId, period)
    : await computeInvoice(em, contract, period, { invoiceId, regeneratedFromInvoiceId });
  const now = new Date();
  if (existing) {
    existing.lineItems = storedLines(computed);
    existing.total = computed.total.toString();
    existing.subtotal = computed.subtotal.toString();
    existing.approvalStatus = 'PENDING_APPROVAL';
    existing.frozenAt = now;
  } else {
    em.create(Invoice, {
      id: invoiceId,
      customerId: contract.customerId,
      contractId: contract.id,
      type: 'USAGE',
      periodStart: new Date(period.start),
      periodEnd: new Date(period.end),
      status: 'DRAFT',
      approvalStatus: 'PENDING_APPROVAL',
      creditTypeId: computed.creditType.id,
      creditTypeName: computed.creditType.name,
      lineItems: storedLines(computed),
      total: computed.total.toString(),
      subtotal: computed.subtotal.toString(),
      frozenAt: now,
      createdAt: now,
      regeneratedFromInvoiceId: regeneratedFromInvoiceId ?? null,
    });
  }
  // The balance ledger moves with the frozen invoice, in the same transaction.
  await em.flush();
  await em.nativeDelete(BalanceLedgerEntry, { invoiceId });
  for (const e of ledgerEntriesOf(computed, { id: invoiceId, contractId: contract.id, periodEnd: period.end })) {
    em.create(BalanceLedgerEntry, { ...e, invoiceId, contractId: contract.id, ts: new Date(e.ts), createdAt: now });
  }
  await em.flush();
  return { status: 'DRAFT', total: computed.total.toString() };
}

/**
 * Freezes the late-usage invoice of an ended contract with no successor (see
 * computeLateUsageInvoice): corrections only, with the ledger entries of what commits and credits
 * drew on them. Idempotent: returns the stored one when it exists; null when there is nothing to bill.
 */
export async function freezeLateUsageInvoiceTx(em: EntityManager, contractId: string): Promise<(FrozenInvoice & { invoiceId: string; periodStart: string; periodEnd: string }) | null> {
  const contract = await em.findOne(Contract, { id: contractId });
  if (!contract) throw new NotFoundError('contract', contractId);
  await lockCustomerBalances(em, contract.customerId);
  const id = lateUsageInvoiceId(contract.id);
  const at = contract.endingBefore?.toISOString() ?? '';
  const existing = await em.findOne(Invoice, { id });
  if (existing) return { invoiceId: id, status: existing.status, total: existing.total, periodStart: at, periodEnd: at };
  if (!(await ratingCaughtUp(em, await customerEventKeys(em, contract.customerId)))) {
    throw new UnavailableError(`rating has not caught up with customer ${contract.customerId}'s events yet`);
  }
  const computed = await computeLateUsageInvoice(em, contract);
  if (!computed) return null;
  const now = new Date();
  em.create(Invoice, {
    id, customerId: contract.customerId, contractId: contract.id, type: 'USAGE', periodStart: contract.endingBefore!, periodEnd: contract.endingBefore!,
    status: 'DRAFT', approvalStatus: 'PENDING_APPROVAL', creditTypeId: computed.creditType.id, creditTypeName: computed.creditType.name,
    lineItems: storedLines(computed), total: computed.total.toString(), subtotal: computed.subtotal.toString(), frozenAt: now, createdAt: now,
    regeneratedFromInvoiceId: null,
  });
  await em.flush();
  for (const e of ledgerEntriesOf(computed, { id, contractId: contract.id, periodEnd: at })) {
    em.create(BalanceLedgerEntry, { ...e, invoiceId: id, contractId: contract.id, ts: new Date(e.ts), createdAt: now });
  }
  await em.flush();
  return { invoiceId: id, status: 'DRAFT', total: computed.total.toString(), periodStart: at, periodEnd: at };
}

/**
 * Stores, frozen and awaiting its close, the SCHEDULED invoice of a commit whose invoice schedule
 * item names it (computeScheduledInvoice) — inside the transaction that grants the commit, so the
 * commit never exists unbilled. Its period is the instant `at`. Idempotent: an existing one is kept.
 */
export async function storeScheduledInvoiceTx(em: EntityManager, contract: Contract, invoiceId: string, at: string): Promise<FrozenInvoice> {
  const existing = await em.findOne(Invoice, { id: invoiceId });
  if (existing) return { status: existing.status, total: existing.total };
  const computed = await computeScheduledInvoice(em, contract, invoiceId, { start: at, end: at });
  const now = new Date();
  em.create(Invoice, {
    id: invoiceId, customerId: contract.customerId, contractId: contract.id, type: 'SCHEDULED', periodStart: new Date(at), periodEnd: new Date(at),
    status: 'DRAFT', approvalStatus: 'PENDING_APPROVAL', creditTypeId: computed.creditType.id, creditTypeName: computed.creditType.name,
    lineItems: storedLines(computed), total: computed.total.toString(), subtotal: computed.subtotal.toString(), frozenAt: now, createdAt: now,
    regeneratedFromInvoiceId: null,
  });
  await em.flush();
  return { status: 'DRAFT', total: computed.total.toString() };
}
