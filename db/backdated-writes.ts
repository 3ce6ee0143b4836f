import type { EntityManager } from '@mikro-orm/postgresql';
import type { BackdatedWrite } from '../billing/periods.js';
import { BalanceGrant, Contract } from './entities.js';

/**
 * The contract's writes that took effect before they were written (its creation after its start,
 * amendments and added commits or credits starting earlier): a period's grace counts from the last
 * one reaching into it (`periodClosesAt`).
 */
export async function backdatedWrites(em: EntityManager, contract: Contract): Promise<BackdatedWrite[]> {
  const writes: BackdatedWrite[] = [{ at: contract.createdAt.toISOString(), from: contract.startingAt.toISOString() }];
  for (const a of contract.terms?.amendments ?? []) writes.push({ at: a.created_at, from: a.starting_at });
  const added = await em.find(BalanceGrant, { contractId: contract.id, amendmentId: { $ne: null } }, { fields: ['createdAt', 'accessSchedule'] });
  for (const g of added) {
    const starts = (g.accessSchedule?.schedule_items ?? []).map((i) => Date.parse(i.starting_at));
    if (starts.length) writes.push({ at: g.createdAt.toISOString(), from: new Date(Math.min(...starts)).toISOString() });
  }
  return writes.filter((w) => Date.parse(w.from) < Date.parse(w.at));
}
