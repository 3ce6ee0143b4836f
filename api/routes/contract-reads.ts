import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ValidationError } from '../../billing/errors.js';
import { overrideOf, productStateAt } from '../../billing/contract-terms.js';
import { applyOverrides } from '../../billing/overrides.js';
import { rateSchedule, ratesForFrequency } from '../../billing/rate-schedule.js';
import { customerBalances } from '../../db/balances.js';
import { findCustomer } from '../../db/customers.js';
import { Contract, Product, Rate } from '../../db/entities.js';
import { productRecordOf, rateRowOf } from '../../db/invoices.js';
import { allow } from '../auth.js';
import { offsetPage } from '../paging.js';
import { rateJson, selected, selectorsInput, storedRateOf } from '../../operations/input/pricing-input.js';
import { bool, objectAt, reqUuid, timestamp } from '../../operations/input/validate.js';
import { contractJson, CREDIT, findContract } from '../views/contracts.js';

/** Reading contracts (v1 Contract shape with initial/current/amendments) and their rate schedules. */
export function contractReadsRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/contracts/get', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'include_balance', 'include_ledgers']);
    const em = orm.em.fork();
    const c = await findContract(em, body);
    const withBalance = bool(body, 'include_balance', '', { optional: true }) || bool(body, 'include_ledgers', '', { optional: true });
    const balances = withBalance ? new Map((await customerBalances(em, c.customerId, { includeArchived: true })).map((b) => [b.grant.id, b])) : undefined;
    res.json({ data: await contractJson(em, c, balances, { ledgers: !!body.include_ledgers }) });
  });

  r.post('/v1/contracts/list', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['customer_id', 'covering_date', 'starting_at', 'include_archived', 'include_balance', 'include_ledgers']);
    const em = orm.em.fork();
    const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
    const covering = timestamp(body, 'covering_date', '', { optional: true });
    const startingAt = timestamp(body, 'starting_at', '', { optional: true });
    if (covering && startingAt) throw new ValidationError('covering_date', 'cannot be combined with starting_at');
    const archived = bool(body, 'include_archived', '', { optional: true });
    let contracts = await em.find(Contract, { customerId: customer.id, ...(archived ? {} : { archivedAt: null }) }, { orderBy: { startingAt: 'asc', id: 'asc' } });
    if (covering) contracts = contracts.filter((c) => c.startingAt.getTime() <= Date.parse(covering) && (!c.endingBefore || c.endingBefore.getTime() > Date.parse(covering)));
    if (startingAt) contracts = contracts.filter((c) => c.startingAt.getTime() >= Date.parse(startingAt));
    const withBalance = bool(body, 'include_balance', '', { optional: true }) || bool(body, 'include_ledgers', '', { optional: true });
    const balances = withBalance ? new Map((await customerBalances(em, customer.id, { includeArchived: true })).map((b) => [b.grant.id, b])) : undefined;
    const data = [];
    for (const c of contracts) data.push(await contractJson(em, c, balances, { ledgers: !!body.include_ledgers }));
    res.json({ data });
  });

  r.post('/v1/contracts/getContractRateSchedule', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'at', 'selectors']);
    const em = orm.em.fork();
    const c = await findContract(em, body);
    const at = Date.parse(timestamp(body, 'at', '', { optional: true }) ?? new Date().toISOString());
    const selectors = selectorsInput(body, true);
    const rates = await em.find(Rate, { rateCardId: c.rateCardId });
    const byId = new Map(rates.map((x) => [x.id, x]));
    const products = new Map((await em.find(Product, { id: { $in: [...new Set(rates.map((x) => x.productId))] } })).map((p) => [p.id, p]));
    const tags = (id: string) => productStateAt(productRecordOf(products.get(id)!), at).tags;
    const segs = applyOverrides(rateSchedule(ratesForFrequency(rates.map(rateRowOf), c.usageStatementFrequency), at, at + 1), (c.terms?.overrides ?? []).map(overrideOf), tags, c.terms?.multiplier_override_prioritization)
      .filter((s) => s.entitled && selected(selectors, s.rate, tags(s.rate.productId)));
    const data = segs.map((s) => {
      const rate = byId.get(s.rate.id)!;
      const product = products.get(s.rate.productId)!;
      const state = productStateAt(productRecordOf(product), at);
      const list = rateJson(storedRateOf(rate), { pricing_group_values: rate.pricingGroupValues, credit_type: CREDIT });
      const effective = s.overrideIds.length ? rateJson({ rate_type: s.effective.rateType, price: s.effective.price, tiers: s.effective.tiers, quantity: s.effective.quantity, is_prorated: s.effective.isProrated, package_size: s.effective.packageSize, package_rounding: s.effective.packageRounding }, { credit_type: CREDIT }) : undefined;
      return {
        rate_card_id: c.rateCardId, product_id: product.id, product_name: state.name, product_tags: state.tags, product_custom_fields: product.customFields ?? {},
        entitled: s.entitled, list_rate: list, ...(effective ? { override_rate: effective } : {}),
        starting_at: rate.startingAt.toISOString(), ...(rate.endingBefore ? { ending_before: rate.endingBefore.toISOString() } : {}),
        ...(Object.keys(rate.pricingGroupValues ?? {}).length ? { pricing_group_values: rate.pricingGroupValues } : {}),
        ...(rate.billingFrequency ? { billing_frequency: rate.billingFrequency } : {}),
      };
    });
    res.json(offsetPage(data, req.query));
  });

  return r;
}

