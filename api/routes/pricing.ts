import { Router } from 'express';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { productStateAt } from '../../billing/contract-terms.js';
import { jsonDecimal, USD_CENTS } from '../../billing/money.js';
import type { RateType } from '../../billing/pricing/index.js';
import { rateSchedule, type ScheduleSegment } from '../../billing/rate-schedule.js';
import { FREQUENCIES } from '../../billing/periods.js';
import { Product, Rate, RateCard } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { productRecordOf, rateRowOf } from '../../db/invoices.js';
import { allow } from '../auth.js';
import { afterCondition, offsetPage, page, pageQuery } from '../paging.js';
import { groupValuesInput, rateJson, rateSpecInput, RATE_SPEC_FIELDS, selected, selectorsInput, storedRateOf, type Selector } from '../../operations/input/pricing-input.js';
import { bool, hourTimestamp, objectAt, oneOf, reqStr, reqUuid, str, stringRecord, timestamp, uuid, type Obj } from '../../operations/input/validate.js';

/** Rate cards and their rates (Metronome's contract-pricing rate-card endpoints). */
const RATE_CARD_FIELDS = ['name', 'description', 'fiat_credit_type_id', 'custom_fields', 'aliases', 'credit_type_conversions'];
const RATE_FIELDS = ['product_id', 'entitled', 'starting_at', 'ending_before', 'pricing_group_values', 'billing_frequency', 'commit_rate', ...RATE_SPEC_FIELDS];
const CREDIT = { id: USD_CENTS.id, name: USD_CENTS.name };

/** Which rate types each product type can be priced with. */
const RATE_TYPES_FOR: Record<Product['type'], readonly RateType[]> = {
  USAGE: ['FLAT', 'TIERED', 'VOLUME', 'PACKAGE'],
  SUBSCRIPTION: ['SUBSCRIPTION', 'FLAT'],
  COMPOSITE: ['PERCENTAGE'],
  FIXED: ['FLAT'],
  PRO_SERVICE: ['FLAT'],
};

function aliasesInput(body: Obj, field = 'aliases') {
  if (body[field] === undefined || body[field] === null) return undefined;
  if (!Array.isArray(body[field])) throw new ValidationError(field, 'must be an array of {name, starting_at?, ending_before?}');
  return (body[field] as unknown[]).map((a, i) => {
    const p = `${field}[${i}]`;
    const o = objectAt(a, p, ['name', 'starting_at', 'ending_before']);
    const out: { name: string; starting_at?: string; ending_before?: string } = { name: reqStr(o, 'name', p) };
    const s = timestamp(o, 'starting_at', p, { optional: true });
    const e = timestamp(o, 'ending_before', p, { optional: true });
    if (s) out.starting_at = s;
    if (e) out.ending_before = e;
    return out;
  });
}

function creditTypeCheck(body: Obj, field: string, path = '') {
  const id = uuid(body, field, path, { optional: true });
  if (id && id !== USD_CENTS.id) throw new ValidationError(path ? `${path}.${field}` : field, `only USD (cents) ${USD_CENTS.id} is supported`);
}

function rateCardJson(c: RateCard) {
  return {
    id: c.id, name: c.name, created_at: c.createdAt.toISOString(), created_by: 'accrue',
    ...(c.description ? { description: c.description } : {}),
    aliases: c.aliases, custom_fields: c.customFields, fiat_credit_type: CREDIT, credit_type_conversions: [],
    ...(c.archivedAt ? { archived_at: c.archivedAt.toISOString() } : {}),
  };
}

async function findRateCard(em: EntityManager, id: string, field: string, { forWrite = false } = {}): Promise<RateCard> {
  const c = await em.findOne(RateCard, { id });
  if (!c) throw new NotFoundError('rate card', id, field);
  if (forWrite && c.archivedAt) throw new ValidationError(field, 'refers to an archived rate card');
  return c;
}

/** Validates one rate (addRate body or an addRates item) against its product; returns the row to insert. */
async function rateInput(em: EntityManager, o: Obj, path: string, rateCardId: string, products: Map<string, Product>): Promise<Rate> {
  const productId = reqUuid(o, 'product_id', path);
  let product = products.get(productId);
  if (!product) {
    product = (await em.findOne(Product, { id: productId })) ?? undefined;
    if (!product) throw new NotFoundError('product', productId, path ? `${path}.product_id` : 'product_id');
    products.set(productId, product);
  }
  if (product.archivedAt) throw new ValidationError(path ? `${path}.product_id` : 'product_id', 'refers to an archived product');
  const entitled = bool(o, 'entitled', path)!;
  const startingAt = hourTimestamp(o, 'starting_at', path)!;
  const endingBefore = hourTimestamp(o, 'ending_before', path, { optional: true });
  if (endingBefore && Date.parse(endingBefore) <= Date.parse(startingAt)) throw new ValidationError(path ? `${path}.ending_before` : 'ending_before', 'must be after starting_at');
  creditTypeCheck(o, 'credit_type_id', path);
  const spec = rateSpecInput(o, path, RATE_TYPES_FOR[product.type]);
  const pgv = groupValuesInput(o, 'pricing_group_values', path) ?? {};
  const pricingKeys = productStateAt(productRecordOf(product), Date.parse(startingAt)).pricing_group_key ?? [];
  for (const k of Object.keys(pgv)) {
    if (!pricingKeys.includes(k)) throw new ValidationError(`${path ? `${path}.` : ''}pricing_group_values.${k}`, `is not one of the product's pricing_group_key (${pricingKeys.join(', ') || 'none'})`);
  }
  const billingFrequency = oneOf(o, 'billing_frequency', FREQUENCIES, path, { optional: true }) ?? null;
  let commitRate: Rate['commitRate'] = null;
  if (o.commit_rate !== undefined && o.commit_rate !== null) {
    const cp = path ? `${path}.commit_rate` : 'commit_rate';
    const c = rateSpecInput(objectAt(o.commit_rate, cp, ['rate_type', 'price', 'tiers']), cp);
    commitRate = { rate_type: c.rate_type, price: c.price, tiers: c.tiers };
  }
  return {
    id: newId(), rateCardId, productId, rateType: spec.rate_type, price: spec.price ?? null, tiers: spec.tiers ?? null,
    pricingGroupValues: pgv, quantity: spec.quantity ?? null, isProrated: spec.is_prorated ?? null, billingFrequency,
    packageSize: spec.package_size ?? null, packageRounding: spec.package_rounding ?? null, commitRate, entitled,
    startingAt: new Date(startingAt), endingBefore: endingBefore ? new Date(endingBefore) : null, createdAt: new Date(),
  } as Rate;
}

/** A schedule entry as Metronome's rate list / rate schedule items. */
function scheduleEntryJson(seg: ScheduleSegment, rate: Rate, product: Product, at: number) {
  const state = productStateAt(productRecordOf(product), at);
  return {
    product_id: product.id,
    product_name: state.name,
    product_tags: state.tags,
    product_custom_fields: product.customFields ?? {},
    entitled: rate.entitled,
    rate: rateJson(storedRateOf(rate), { pricing_group_values: rate.pricingGroupValues, credit_type: CREDIT }),
    starting_at: new Date(seg.startingAt).toISOString(),
    ...(seg.endingBefore !== null ? { ending_before: new Date(seg.endingBefore).toISOString() } : {}),
    ...(Object.keys(rate.pricingGroupValues ?? {}).length ? { pricing_group_values: rate.pricingGroupValues } : {}),
    ...(rate.billingFrequency ? { billing_frequency: rate.billingFrequency } : {}),
    ...(rate.commitRate ? { commit_rate: { rate_type: rate.commitRate.rate_type, ...(rate.commitRate.price !== undefined ? { price: jsonDecimal(rate.commitRate.price) } : {}) } } : {}),
  };
}

/** The rate card's schedule over [from, to) (to null: open-ended), optionally filtered by selectors. */
async function rateCardSchedule(em: EntityManager, rateCardId: string, from: number, to: number | null, selectors: Selector[]) {
  const rates = await em.find(Rate, { rateCardId });
  const byId = new Map(rates.map((r) => [r.id, r]));
  const products = new Map((await em.find(Product, { id: { $in: [...new Set(rates.map((r) => r.productId))] } })).map((p) => [p.id, p]));
  return rateSchedule(rates.map(rateRowOf), from, to)
    .filter((s) => selected(selectors, s.rate, productStateAt(productRecordOf(products.get(s.rate.productId)!), s.startingAt).tags))
    .map((s) => ({ seg: s, rate: byId.get(s.rate.id)!, product: products.get(s.rate.productId)! }));
}

export function pricingRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/contract-pricing/rate-cards/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', RATE_CARD_FIELDS);
    const name = reqStr(body, 'name');
    creditTypeCheck(body, 'fiat_credit_type_id');
    if (body.credit_type_conversions !== undefined) throw new ValidationError('credit_type_conversions', 'custom pricing units are not supported');
    const em = orm.em.fork();
    const id = newId();
    em.create(RateCard, {
      id, name, description: str(body, 'description', '', { optional: true }) ?? null, creditTypeId: USD_CENTS.id,
      customFields: stringRecord(body, 'custom_fields') ?? {}, aliases: aliasesInput(body) ?? [], createdAt: new Date(),
    });
    await em.flush();
    res.json({ data: { id } });
  });

  r.post('/v1/contract-pricing/rate-cards/get', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    res.json({ data: rateCardJson(await findRateCard(orm.em.fork(), reqUuid(body, 'id'), 'id')) });
  });

  r.post('/v1/contract-pricing/rate-cards/update', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['rate_card_id', 'name', 'description', 'aliases', 'add_credit_type_conversions']);
    if (body.add_credit_type_conversions !== undefined) throw new ValidationError('add_credit_type_conversions', 'custom pricing units are not supported');
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'rate_card_id'), 'rate_card_id', { forWrite: true });
    const name = str(body, 'name', '', { optional: true });
    const description = str(body, 'description', '', { optional: true });
    const aliases = aliasesInput(body);
    if (name !== undefined) card.name = name;
    if (description !== undefined) card.description = description;
    if (aliases !== undefined) card.aliases = aliases;
    card.updatedAt = new Date();
    await em.flush();
    res.json({ data: { id: card.id } });
  });

  r.post('/v1/contract-pricing/rate-cards/list', allow('read', 'finance'), async (req, res) => {
    // The SDK sends `body` as given (usually nothing); Accrue takes no filters here.
    if (req.body !== undefined && req.body !== null) objectAt(req.body, '', []);
    const q = pageQuery(req.query as Record<string, unknown>);
    const rows = await orm.em.fork().find(RateCard, { archivedAt: null, ...afterCondition(q.after) }, { orderBy: { createdAt: 'asc', id: 'asc' }, limit: q.limit + 1 });
    res.json(page(rows, q.limit, rateCardJson));
  });

  r.post('/v1/contract-pricing/rate-cards/archive', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'id'), 'id');
    if (!card.archivedAt) {
      card.archivedAt = new Date();
      await em.flush();
    }
    res.json({ data: { id: card.id } });
  });

  r.post('/v1/contract-pricing/rate-cards/addRate', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['rate_card_id', ...RATE_FIELDS]);
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'rate_card_id'), 'rate_card_id', { forWrite: true });
    const rate = await rateInput(em, body, '', card.id, new Map());
    em.create(Rate, rate);
    await em.flush();
    res.json({
      data: {
        ...rateJson(storedRateOf(rate), { pricing_group_values: rate.pricingGroupValues, credit_type: CREDIT }),
        ...(rate.commitRate ? { commit_rate: { rate_type: rate.commitRate.rate_type, ...(rate.commitRate.price !== undefined ? { price: jsonDecimal(rate.commitRate.price) } : {}) } } : {}),
      },
    });
  });

  r.post('/v1/contract-pricing/rate-cards/addRates', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['rate_card_id', 'rates']);
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'rate_card_id'), 'rate_card_id', { forWrite: true });
    if (!Array.isArray(body.rates) || body.rates.length === 0) throw new ValidationError('rates', 'is required: a non-empty array of rates');
    if (body.rates.length > 1000) throw new ValidationError('rates', 'at most 1000 rates per request');
    const products = new Map<string, Product>();
    const rows: Rate[] = [];
    for (let i = 0; i < body.rates.length; i++) {
      const p = `rates[${i}]`;
      rows.push(await rateInput(em, objectAt(body.rates[i], p, RATE_FIELDS), p, card.id, products));
    }
    // All or nothing: every rate is validated before any is written, and they commit together.
    for (const row of rows) em.create(Rate, row);
    await em.flush();
    res.json({ data: { id: card.id } });
  });

  r.post('/v1/contract-pricing/rate-cards/getRates', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['rate_card_id', 'at', 'selectors']);
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'rate_card_id'), 'rate_card_id');
    const at = Date.parse(timestamp(body, 'at')!);
    const entries = (await rateCardSchedule(em, card.id, at, at + 1, selectorsInput(body, true)))
      .map(({ rate, product }) => scheduleEntryJson({ rate: rateRowOf(rate), startingAt: rate.startingAt.getTime(), endingBefore: rate.endingBefore?.getTime() ?? null }, rate, product, at));
    res.json(offsetPage(entries, req.query));
  });

  r.post('/v1/contract-pricing/rate-cards/getRateSchedule', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['rate_card_id', 'starting_at', 'ending_before', 'selectors']);
    const em = orm.em.fork();
    const card = await findRateCard(em, reqUuid(body, 'rate_card_id'), 'rate_card_id');
    const from = Date.parse(timestamp(body, 'starting_at')!);
    const endingBefore = timestamp(body, 'ending_before', '', { optional: true });
    const to = endingBefore ? Date.parse(endingBefore) : null;
    if (to !== null && to <= from) throw new ValidationError('ending_before', 'must be after starting_at');
    const entries = (await rateCardSchedule(em, card.id, from, to, selectorsInput(body, false)))
      .map(({ seg, rate, product }) => scheduleEntryJson(seg, rate, product, seg.startingAt));
    res.json(offsetPage(entries, req.query));
  });

  return r;
}
