import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { USD_CENTS } from '../../billing/money.js';
import { SUPPORTED_RATE_TYPES } from '../../billing/pricing/index.js';
import { BillableMetric, Product, Rate, RateCard } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { allow } from '../auth.js';
import { bool, decimal, hourTimestamp, objectAt, oneOf, reqStr, reqUuid, str, stringArray, stringRecord, uuid } from '../validate.js';

const PRODUCT_FIELDS = ['name', 'type', 'billable_metric_id', 'tags', 'custom_fields'];
const RATE_CARD_FIELDS = ['name', 'description', 'fiat_credit_type_id', 'custom_fields'];
const RATE_FIELDS = ['rate_card_id', 'product_id', 'entitled', 'rate_type', 'starting_at', 'ending_before', 'price', 'credit_type_id'];

/** Products, rate cards and rates (Metronome's contract-pricing endpoints). */
export function pricingRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/contract-pricing/products/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', PRODUCT_FIELDS);
    const name = reqStr(body, 'name');
    const type = oneOf(body, 'type', ['USAGE'] as const);
    const metricId = uuid(body, 'billable_metric_id');
    const em = orm.em.fork();
    const metric = await em.findOne(BillableMetric, { id: metricId! });
    if (!metric) throw new NotFoundError('billable metric', metricId!, 'billable_metric_id');
    if (metric.archivedAt) throw new ValidationError('billable_metric_id', 'refers to an archived billable metric');
    const id = newId();
    em.create(Product, {
      id, name, type: type!, billableMetricId: metric.id,
      tags: stringArray(body, 'tags', '', { optional: true }) ?? [],
      customFields: stringRecord(body, 'custom_fields') ?? {},
      createdAt: new Date(),
    });
    await em.flush();
    res.json({ data: { id } });
  });

  r.post('/v1/contract-pricing/rate-cards/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', RATE_CARD_FIELDS);
    const name = reqStr(body, 'name');
    const creditTypeId = uuid(body, 'fiat_credit_type_id', '', { optional: true }) ?? USD_CENTS.id;
    if (creditTypeId !== USD_CENTS.id) throw new ValidationError('fiat_credit_type_id', `only USD (cents) ${USD_CENTS.id} is supported`);
    const em = orm.em.fork();
    const id = newId();
    em.create(RateCard, {
      id, name, description: str(body, 'description', '', { optional: true }) ?? null, creditTypeId,
      customFields: stringRecord(body, 'custom_fields') ?? {}, createdAt: new Date(),
    });
    await em.flush();
    res.json({ data: { id } });
  });

  r.post('/v1/contract-pricing/rate-cards/addRate', allow(), async (req, res) => {
    const body = objectAt(req.body, '', RATE_FIELDS);
    const rateCardId = reqUuid(body, 'rate_card_id');
    const productId = reqUuid(body, 'product_id');
    const entitled = bool(body, 'entitled') as boolean;
    const rateType = oneOf(body, 'rate_type', SUPPORTED_RATE_TYPES)!;
    const startingAt = hourTimestamp(body, 'starting_at') as string;
    const endingBefore = hourTimestamp(body, 'ending_before', '', { optional: true });
    if (endingBefore && Date.parse(endingBefore) <= Date.parse(startingAt)) throw new ValidationError('ending_before', 'must be after starting_at');
    const price = decimal(body, 'price', '', { min: 0 })!;
    const creditTypeId = uuid(body, 'credit_type_id', '', { optional: true }) ?? USD_CENTS.id;
    if (creditTypeId !== USD_CENTS.id) throw new ValidationError('credit_type_id', `only USD (cents) ${USD_CENTS.id} is supported`);
    const em = orm.em.fork();
    if (!(await em.findOne(RateCard, { id: rateCardId }))) throw new NotFoundError('rate card', rateCardId, 'rate_card_id');
    if (!(await em.findOne(Product, { id: productId }))) throw new NotFoundError('product', productId, 'product_id');
    em.create(Rate, {
      id: newId(), rateCardId, productId, rateType, price, entitled,
      startingAt: new Date(startingAt), endingBefore: endingBefore ? new Date(endingBefore) : null, createdAt: new Date(),
    });
    await em.flush();
    res.json({ data: { rate_type: rateType, price: Number(price), credit_type: { id: USD_CENTS.id, name: USD_CENTS.name } } });
  });

  return r;
}
