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
