import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError } from '../billing/errors.js';
import { UUID_RE } from './ids.js';
import { Customer, CustomerIngestAlias } from './entities.js';

export async function findCustomer(em: EntityManager, id: string, field = 'customer_id'): Promise<Customer> {
  const customer = UUID_RE.test(id) ? await em.findOne(Customer, { id: id.toLowerCase() }) : null;
  if (!customer) throw new NotFoundError('customer', id, field);
  return customer;
}

export async function customerAliases(em: EntityManager, customerId: string): Promise<string[]> {
  const rows = await em.find(CustomerIngestAlias, { customerId }, { orderBy: { position: 'asc' } });
  return rows.map((r) => r.alias);
}

/** Every key the customer's events may carry: its id and its ingest aliases. */
export async function customerEventKeys(em: EntityManager, customerId: string): Promise<string[]> {
  return [customerId, ...(await customerAliases(em, customerId))];
}

/** Aliases of many customers at once, in their order. */
export async function aliasesOf(em: EntityManager, customerIds: string[]): Promise<Map<string, string[]>> {
  const rows = customerIds.length ? await em.find(CustomerIngestAlias, { customerId: { $in: customerIds } }, { orderBy: { customerId: 'asc', position: 'asc' } }) : [];
  const out = new Map<string, string[]>();
  for (const r of rows) out.set(r.customerId, [...(out.get(r.customerId) ?? []), r.alias]);
  return out;
}
