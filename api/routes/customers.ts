import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { ConflictError, ValidationError } from '../../billing/errors.js';
import type { FilterQuery } from '@mikro-orm/core';
import { BillableMetric, Customer, CustomerIngestAlias } from '../../db/entities.js';
import { aliasesOf, customerAliases, findCustomer } from '../../db/customers.js';
import { newId, UUID_RE } from '../../db/ids.js';
import { allow } from '../auth.js';
import { afterCondition, page, pageQuery } from '../paging.js';
import { metricJson } from '../views/metrics.js';
import { email, objectAt, reqStr, reqUuid, str, stringArray, stringRecord } from '../../operations/input/validate.js';

const CREATE_FIELDS = ['name', 'ingest_aliases', 'custom_fields', 'external_id', 'billing_email'] as const;

function customerJson(c: Customer, aliases: string[]) {
  return {
    id: c.id,
    external_id: aliases[0] ?? c.id,
    ingest_aliases: aliases,
    name: c.name,
    custom_fields: c.customFields ?? {},
    billing_email: c.billingEmail ?? null,
  };
}

function customerDetailJson(c: Customer, aliases: string[]) {
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
    const name = reqStr(body, 'name', '', 160);
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

  r.get('/v1/customers', allow('read', 'finance'), async (req, res) => {
    const query = objectAt(req.query, '', ['customer_ids', 'ingest_alias', 'only_archived', 'salesforce_account_ids', 'limit', 'next_page']);
    // Accrue keeps no Salesforce account ids, so it cannot filter by them.
    if (query.salesforce_account_ids !== undefined) throw new ValidationError('salesforce_account_ids', 'is not supported: Accrue stores no Salesforce account ids');
    const q = pageQuery(query);
    const em = orm.em.fork();
    const where: FilterQuery<Customer> = { ...afterCondition(q.after) };
    where.archivedAt = query.only_archived === 'true' ? { $ne: null } : null;
    // The SDK sends an array comma-joined (customer_ids=a,b); repeated keys work too.
    const ids = query.customer_ids === undefined ? undefined : ([] as unknown[]).concat(query.customer_ids).flatMap((v) => String(v).split(',')).filter((v) => v !== '');
    if (ids && ids.length > 100) throw new ValidationError('customer_ids', 'at most 100 ids');
    if (ids) {
      ids.forEach((id, i) => { if (!UUID_RE.test(id)) throw new ValidationError(`customer_ids[${i}]`, 'must be a UUID'); });
      where.id = { $in: ids };
    }
    if (typeof query.ingest_alias === 'string') {
      const alias = await em.findOne(CustomerIngestAlias, { alias: query.ingest_alias });
      where.id = alias ? alias.customerId : '00000000-0000-0000-0000-000000000000';
    }
    const rows = await em.find(Customer, where, { orderBy: { createdAt: 'asc', id: 'asc' }, limit: q.limit + 1 });
    const aliases = await aliasesOf(em, rows.map((c) => c.id));
    res.json(page(rows, q.limit, (c) => customerDetailJson(c, aliases.get(c.id) ?? [])));
  });

  r.post('/v1/customers/archive', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const em = orm.em.fork();
    const customer = await findCustomer(em, reqUuid(body, 'id'), 'id');
    if (!customer.archivedAt) {
      customer.archivedAt = new Date();
      await em.flush();
    }
    res.json({ data: { id: customer.id } });
  });

  // Replaces the customer's aliases. Events already rated stay with the customer; events sent
  // earlier for a newly added alias that matched nobody are rated now (db/rating.ts rematch).
  r.post('/v1/customers/:customer_id/setIngestAliases', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['ingest_aliases']);
    const aliases = [...new Set(stringArray(body, 'ingest_aliases')!)];
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    try {
      await em.transactional(async (tx) => {
        await tx.nativeDelete(CustomerIngestAlias, { customerId: customer.id });
        aliases.forEach((alias, position) => tx.create(CustomerIngestAlias, { alias, customerId: customer.id, position }));
      });
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) throw new ConflictError('ingest_aliases: an alias is already used by another customer');
      throw err;
    }
    res.status(200).json({});
  });

  r.get('/v1/customers/:customer_id/billable-metrics', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const query = objectAt(req.query, '', ['include_archived', 'on_current_plan', 'limit', 'next_page']);
    const q = pageQuery(query);
    const includeArchived = query.include_archived === 'true';
    // on_current_plan: only the contracts in effect now (else every contract not archived).
    const current = query.on_current_plan === 'true';
    // The metrics this customer is billed on: those of USAGE products rated on its contracts' rate cards.
    const ids = (await em.execute<{ id: string }[]>(
      `select distinct p.billable_metric_id::text as id from contract c
         join rate r on r.rate_card_id = c.rate_card_id join product p on p.id = r.product_id
        where c.customer_id = ? and c.archived_at is null and p.billable_metric_id is not null
          and (not ? or (c.starting_at <= now() and (c.ending_before is null or c.ending_before > now())))`, [customer.id, current])).map((r) => r.id);
    const rows = await em.find(BillableMetric, { id: { $in: ids }, ...(includeArchived ? {} : { archivedAt: null }), ...afterCondition(q.after) },
      { orderBy: { createdAt: 'asc', id: 'asc' }, limit: q.limit + 1 });
    res.json(page(rows, q.limit, metricJson));
  });

  r.get('/v1/customers/:customer_id', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    res.json({ data: customerDetailJson(customer, await customerAliases(em, customer.id)) });
  });

  return r;
}
