import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * Serialises everything that reads a customer's commit and credit balances and then writes the
 * balance ledger (freezing an invoice, voiding one, rolling balances over to a renewal). Each
 * holder reads the ledger only after taking the lock, so it sees every draw-down the previous
 * holder committed: one commit is never drawn twice by two transactions that both read "what is
 * left" before either committed. Held until the caller's transaction ends; call it inside one.
 */
export async function lockCustomerBalances(em: EntityManager, customerId: string): Promise<void> {
  await em.execute(`select pg_advisory_xact_lock(hashtextextended('accrue:balances:' || ?::text, 0))`, [customerId]);
}
