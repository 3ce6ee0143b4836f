import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { ConflictError, NotFoundError, ValidationError } from '../../billing/errors.js';
import { dec, jsonDecimal, USD_CENTS } from '../../billing/money.js';
import { customerBalances, grantJson, type GrantBalance } from '../../db/balances.js';
import { findCustomer } from '../../db/customers.js';
import { BalanceGrant, Contract, Product } from '../../db/entities.js';
import { allow } from '../auth.js';
import { grantInput, ProductLookup } from '../../operations/input/contract-input.js';
import { offsetPage } from '../paging.js';
import { bool, objectAt, oneOf, reqUuid, stringArray, stringRecord, timestamp, uuid, uuidArray, type Obj } from '../../operations/input/validate.js';

/**
 * Customer-level commits and credits, and balances (Metronome's customerCommits, customerCredits
 * and customerBalances endpoints). Balances include the draw-downs of live draft invoices.
 */
export function balancesRouter(orm: MikroORM): Router {
  const r = Router();

  for (const kind of ['COMMIT', 'CREDIT'] as const) {
    const base = kind === 'COMMIT' ? '/v1/contracts/customerCommits' : '/v1/contracts/customerCredits';
    r.post(`${base}/create`, allow(), async (req, res) => {
      const body = objectAt(req.body, '', Object.keys(req.body ?? {}));
      const em = orm.em.fork();
      const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
      if (customer.archivedAt) throw new ValidationError('customer_id', 'refers to an archived customer');
      const grant = await grantInput(body, '', kind, { customerId: customer.id, contractId: null, products: new ProductLookup(em), customerLevel: true });
      for (const [field, ids] of [['invoice_contract_id', grant.invoiceContractId ? [grant.invoiceContractId] : []], ['applicable_contract_ids', grant.applicableContractIds ?? []]] as const) {
        for (const id of ids) {
          if (!(await em.findOne(Contract, { id, customerId: customer.id }))) throw new NotFoundError('contract of this customer', id, field);
        }
      }
      try {
        em.create(BalanceGrant, grant);
        await em.flush();
      } catch (err) {
        if (err instanceof UniqueConstraintViolationException) throw new ConflictError(`uniqueness_key: ${grant.uniquenessKey} was already used`);
        throw err;
      }
      res.json({ data: { id: grant.id } });
    });

    r.post(`${base}/list`, allow('read', 'finance'), async (req, res) => {
      const idField = kind === 'COMMIT' ? 'commit_id' : 'credit_id';
      const contractsField = kind === 'COMMIT' ? 'include_contract_commits' : 'include_contract_credits';
      const body = objectAt(req.body, '', ['customer_id', idField, 'covering_date', 'starting_at', 'effective_before', 'include_archived', 'include_balance', contractsField, 'include_ledgers', 'limit', 'next_page']);
      const items = await balanceItems(orm, body, {
        id: uuid(body, idField, '', { optional: true }),
        includeContract: bool(body, contractsField, '', { optional: true }) ?? false,
        kinds: kind === 'COMMIT' ? ['PREPAID', 'POSTPAID'] : ['CREDIT'],
      });
      res.json(offsetPage(items, body, 25));
    });
  }

  r.post('/v1/contracts/customerBalances/list', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['customer_id', 'id', 'covering_date', 'starting_at', 'effective_before', 'exclude_zero_balances', 'include_archived', 'include_balance', 'include_contract_balances', 'include_ledgers', 'limit', 'next_page']);
    const items = await balanceItems(orm, body, {
      id: uuid(body, 'id', '', { optional: true }),
      includeContract: bool(body, 'include_contract_balances', '', { optional: true }) ?? false,
      kinds: ['PREPAID', 'POSTPAID', 'CREDIT'],
      excludeZero: bool(body, 'exclude_zero_balances', '', { optional: true }) ?? false,
    });
    res.json(offsetPage(items, body, 25));
  });

  r.post('/v1/contracts/customerBalances/getNetBalance', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['customer_id', 'credit_type_id', 'filters', 'invoice_inclusion_mode']);
    const em = orm.em.fork();
    const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
    const creditTypeId = uuid(body, 'credit_type_id', '', { optional: true }) ?? USD_CENTS.id;
    if (creditTypeId !== USD_CENTS.id) throw new ValidationError('credit_type_id', `only USD (cents) ${USD_CENTS.id} is supported`);
    const mode = oneOf(body, 'invoice_inclusion_mode', ['FINALIZED', 'FINALIZED_AND_DRAFT'] as const, '', { optional: true }) ?? 'FINALIZED_AND_DRAFT';
    const filters = filtersInput(body);
    const balances = await customerBalances(em, customer.id, { includeDrafts: mode === 'FINALIZED_AND_DRAFT' });
    let total = dec(0);
    for (const b of balances) if (!filters.length || filters.some((f) => matches(f, b))) total = total.plus(b.balance);
    res.json({ data: { balance: jsonDecimal(total), credit_type_id: USD_CENTS.id } });
  });

  return r;
}

interface BalanceFilter { balance_types?: string[]; custom_fields?: Record<string, string>; ids?: string[] }

function filtersInput(body: Obj): BalanceFilter[] {
  if (body.filters === undefined || body.filters === null) return [];
  if (!Array.isArray(body.filters)) throw new ValidationError('filters', 'must be an array');
  return body.filters.map((f, i) => {
    const p = `filters[${i}]`;
    const o = objectAt(f, p, ['balance_types', 'custom_fields', 'ids']);
    const types = stringArray(o, 'balance_types', p, { optional: true });
    types?.forEach((t, j) => { if (!['PREPAID_COMMIT', 'POSTPAID_COMMIT', 'CREDIT'].includes(t)) throw new ValidationError(`${p}.balance_types[${j}]`, 'must be one of PREPAID_COMMIT, POSTPAID_COMMIT, CREDIT'); });
    return { balance_types: types, custom_fields: stringRecord(o, 'custom_fields', p), ids: uuidArray(o, 'ids', p, { optional: true }) };
  });
}

function matches(f: BalanceFilter, b: GrantBalance): boolean {
  const type = b.grant.kind === 'CREDIT' ? 'CREDIT' : `${b.grant.kind}_COMMIT`;
  return (!f.balance_types?.length || f.balance_types.includes(type))
    && (!f.ids?.length || f.ids.includes(b.grant.id))
    && (!f.custom_fields || Object.entries(f.custom_fields).every(([k, v]) => b.grant.customFields?.[k] === v));
}

async function balanceItems(orm: MikroORM, body: Obj, opts: { id?: string; includeContract: boolean; kinds: BalanceGrant['kind'][]; excludeZero?: boolean }) {
  const em = orm.em.fork();
  const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
  const covering = timestamp(body, 'covering_date', '', { optional: true });
  const startingAt = timestamp(body, 'starting_at', '', { optional: true });
  const effectiveBefore = timestamp(body, 'effective_before', '', { optional: true });
  const includeArchived = bool(body, 'include_archived', '', { optional: true }) ?? false;
  const withBalance = bool(body, 'include_balance', '', { optional: true }) ?? false;
  const withLedger = bool(body, 'include_ledgers', '', { optional: true }) ?? false;
  const balances = await customerBalances(em, customer.id, { includeArchived });
  const archivedContracts = includeArchived ? new Set<string>() : new Set((await em.find(Contract, { customerId: customer.id, archivedAt: { $ne: null } })).map((c) => c.id));
  const products = new Map((await em.find(Product, { id: { $in: [...new Set(balances.map((b) => b.grant.productId))] } })).map((p) => [p.id, p]));
  return balances
    .filter(({ grant: g, balance }) => opts.kinds.includes(g.kind)
      && (!opts.id || g.id === opts.id)
      && (opts.includeContract || g.contractId === null || g.id === opts.id)
      && (!g.contractId || !archivedContracts.has(g.contractId))
      && (!covering || g.accessSchedule.schedule_items.some((s) => Date.parse(s.starting_at) <= Date.parse(covering) && Date.parse(s.ending_before) > Date.parse(covering)))
      && (!startingAt || g.accessSchedule.schedule_items.some((s) => Date.parse(s.ending_before) > Date.parse(startingAt)))
      && (!effectiveBefore || g.accessSchedule.schedule_items.some((s) => Date.parse(s.starting_at) < Date.parse(effectiveBefore)))
      && (!opts.excludeZero || !balance.isZero()))
    .map(({ grant, balance, ledger }) => grantJson(grant, products.get(grant.productId), { ...(withBalance ? { balance } : {}), ...(withLedger ? { ledger } : {}) }));
}
