import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { ConflictError } from '../../billing/errors.js';
import { Customer, CustomerIngestAlias } from '../../db/entities.js';
import { customerAliases, findCustomer } from '../../db/customers.js';
import { newId } from '../../db/ids.js';
import { allow } from '../auth.js';
import { email, objectAt, reqStr, str, stringArray, stringRecord } from '../validate.js';

const CREATE_FIELDS = ['name', 'ingest_aliases', 'custom_fields', 'external_id', 'billing_email'] as const;

export function customerJson(c: Customer, aliases: string[]) {
  return {
    id: c.id,
    external_id: aliases[0] ?? c.id,
    ingest_aliases: aliases,
    name: c.name,
    custom_fields: c.customFields ?? {},
    billing_email: c.billingEmail ?? null,
  };
}

export function customerDetailJson(c: Customer, aliases: string[]) {
  return {
    ...customerJson(c, aliases),
    created_at: c.createdAt.toISOString(),
    updated_at: c.updatedAt.toISOString(),
    archived_at: c.archivedAt?.toISOString() ?? null,
    customer_config: {},
  };
}

export function customersRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/customers', allow(), async (req, res) => {
    const body = objectAt(req.body, '', CREATE_FIELDS);
    const name = reqStr(body, 'name').slice(0, 160);
    const externalId = str(body, 'external_id', '', { optional: true, max: 256 });
    const aliases = [...(externalId ? [externalId] : []), ...(stringArray(body, 'ingest_aliases', '', { optional: true }) ?? [])];
    const unique = [...new Set(aliases)];
    const customFields = stringRecord(body, 'custom_fields') ?? {};
    const billingEmail = email(body, 'billing_email');

    const em = orm.em.fork();
    const id = newId();
    try {
      await em.transactional(async (tx) => {
        const now = new Date();
        tx.create(Customer, { id, name, billingEmail: billingEmail ?? null, customFields, createdAt: now, updatedAt: now });
        await tx.flush(); // the customer row first: aliases reference it
        unique.forEach((alias, position) => tx.create(CustomerIngestAlias, { alias, customerId: id, position }));
      });
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        throw new ConflictError(`ingest_aliases: an alias is already used by another customer (${unique.join(', ')})`);
      }
      throw err;
    }
    const customer = await findCustomer(em, id);
    res.status(200).json({ data: customerJson(customer, unique) });
  });

  r.get('/v1/customers/:customer_id', allow('read', 'finance', 'ingest'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    res.json({ data: customerDetailJson(customer, await customerAliases(em, customer.id)) });
  });

  return r;
}
