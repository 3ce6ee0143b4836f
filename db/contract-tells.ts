import type { EntityManager } from '@mikro-orm/postgresql';
import { newId } from './ids.js';

/**
 * The durable half of telling a contract workflow about a change: the change's transaction queues
 * the contract (`queueContractTell`), the API tells the workflow after the commit and clears the
 * row with the token it queued (a newer change's row stays), and the outbound loop tells the
 * contracts still queued after `minAgeMs` (the API could not reach Temporal). Telling twice is
 * harmless: the workflow re-plans from the stored contract.
 */
export async function queueContractTell(tx: EntityManager, contractId: string): Promise<string> {
  const token = newId();
  await tx.execute(`insert into contract_tell (contract_id, token) values (?, ?)
    on conflict (contract_id) do update set token = excluded.token, queued_at = least(contract_tell.queued_at, excluded.queued_at)`, [contractId, token]);
  return token;
}

export async function clearContractTell(em: EntityManager, contractId: string, token: string): Promise<void> {
  await em.execute('delete from contract_tell where contract_id = ? and token = ?', [contractId, token]);
}

export async function queuedContractTells(em: EntityManager, minAgeMs: number, limit: number): Promise<{ contractId: string; token: string }[]> {
  return (await em.execute<{ contract_id: string; token: string }[]>(
    `select contract_id::text as contract_id, token::text as token from contract_tell where queued_at < now() - make_interval(secs => ?) order by queued_at limit ?`, [minAgeMs / 1000, limit]))
    .map((r) => ({ contractId: r.contract_id, token: r.token }));
}
