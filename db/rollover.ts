import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { AccessSegment } from '../billing/contract-terms.js';
import { dec, roundAmount } from '../billing/money.js';
import { lockCustomerBalances } from './balance-lock.js';
import { customerBalances } from './balances.js';
import { BalanceGrant, Contract } from './entities.js';
import { newId } from './ids.js';

/** The contract that renews or supersedes `contractId`, if any. */
export async function successorOf(em: EntityManager, contractId: string): Promise<Contract | null> {
  const [row] = await em.execute<{ id: string }[]>(`select id::text as id from contract where terms -> 'transition' ->> 'from_contract_id' = ? and archived_at is null`, [contractId]);
  return row ? em.findOne(Contract, { id: row.id }) : null;
}

/** Rolls the old contract's commits and credits over to its successor, once (idempotent). */
export async function rollOverToSuccessor(em: EntityManager, contractId: string): Promise<{ rolled: number }> {
  return em.transactional(async (tx) => {
    // Rollover reads balances and writes grants: it takes its turn with freezes and voids.
    const customer = await tx.findOne(Contract, { id: contractId }, { fields: ['customerId'] });
    if (customer) await lockCustomerBalances(tx, customer.customerId);
    const from = await tx.findOne(Contract, { id: contractId }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
    const next = from ? await successorOf(tx, contractId) : null;
    if (!from || !next) return { rolled: 0 };
    const grants = await tx.find(BalanceGrant, { contractId: from.id });
    if (grants.some((g) => g.rolledOver?.some((r) => r.new_contract_id === next.id))) return { rolled: 0 };
    return { rolled: await rollOver(tx, from, next) };
  });
}

/**
 * rollover_fraction: what is left of each of the old contract's commits and credits at the
 * transition (after every draw-down up to it, drafts included), times the fraction, rounded
 * half-up to the cent, becomes a new commit or credit on the new contract from its start, for as
 * long as the old segment had to run (at least its original length).
 */
export async function rollOver(tx: EntityManager, from: Contract, next: Contract): Promise<number> {
  const at = next.startingAt;
  let count = 0;
  const balances = await customerBalances(tx, from.customerId, { now: at });
  for (const b of balances) {
    const g = b.grant;
    if (g.contractId !== from.id || !g.rolloverFraction || dec(g.rolloverFraction).isZero()) continue;
    const rolled: NonNullable<BalanceGrant['rolledOver']> = [];
    const segments: AccessSegment[] = [];
    for (const s of b.segments) {
      if (s.endingBefore < at.getTime() || s.startingAt >= at.getTime() || !s.left.gt(0)) continue;
      const amount = roundAmount(s.left.times(dec(g.rolloverFraction)));
      if (!amount.gt(0)) continue;
      const length = s.endingBefore - s.startingAt;
      const end = Math.max(s.endingBefore, at.getTime() + length);
      const segId = newId();
      segments.push({ id: segId, amount: amount.toString(), starting_at: at.toISOString(), ending_before: new Date(end).toISOString() });
      rolled.push({ segment_id: s.id, amount: amount.toString(), timestamp: at.toISOString(), new_contract_id: next.id, new_grant_id: '' });
    }
    if (!segments.length) continue;
    const id = newId();
    tx.create(BalanceGrant, {
      ...g, id, contractId: next.id, accessSchedule: { credit_type_id: g.accessSchedule.credit_type_id, schedule_items: segments },
      invoiceSchedule: null, invoiceContractId: null, uniquenessKey: null, amendmentId: null, rolledOver: null,
      rolledOverFrom: { grant_id: g.id, contract_id: from.id }, createdAt: new Date(), archivedAt: null,
    });
    const old = (await tx.findOne(BalanceGrant, { id: g.id }))!;
    old.rolledOver = [...(old.rolledOver ?? []), ...rolled.map((r) => ({ ...r, new_grant_id: id }))];
    count++;
  }
  return count;
}

