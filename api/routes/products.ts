import { Router } from 'express';
import type { MikroORM, EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { productStateAt, type ProductAttributes, type ProductState, type ProductUpdate } from '../../billing/contract-terms.js';
import type { ProductType } from '../../billing/invoice.js';
import { dec } from '../../billing/money.js';
import { BillableMetric, Product } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { productRecordOf } from '../../db/invoices.js';
import { allow } from '../auth.js';
import { afterCondition, page, pageQuery } from '../paging.js';
import { bool, decimal, hourTimestamp, objectAt, oneOf, reqStr, reqUuid, str, stringArray, stringRecord, uuid, uuidArray, type Obj } from '../../operations/input/validate.js';

/** Products (Metronome's contract-pricing products): create, get, update (versioned), list, archive. */
const ATTRIBUTE_FIELDS = ['billable_metric_id', 'composite_product_ids', 'composite_tags', 'exclude_free_usage', 'is_refundable',
  'netsuite_internal_item_id', 'netsuite_overage_item_id', 'presentation_group_key', 'pricing_group_key', 'quantity_conversion',
  'quantity_rounding', 'tags', 'name'];
const CREATE_FIELDS = [...ATTRIBUTE_FIELDS, 'type', 'custom_fields'];
const UPDATE_FIELDS = [...ATTRIBUTE_FIELDS, 'product_id', 'starting_at'];
const TYPES = ['USAGE', 'SUBSCRIPTION', 'FIXED', 'COMPOSITE', 'PRO_SERVICE', 'PROFESSIONAL_SERVICE'] as const;

const USAGE_ONLY = ['billable_metric_id', 'pricing_group_key', 'presentation_group_key', 'quantity_conversion', 'quantity_rounding'];
const COMPOSITE_ONLY = ['composite_product_ids', 'composite_tags', 'exclude_free_usage'];

async function attributesInput(em: EntityManager, body: Obj, type: ProductType, current: ProductState | null): Promise<ProductAttributes & { billable_metric_id?: string; tags?: string[]; name?: string }> {
  if (body.sql_breakdown_granularity !== undefined) throw new ValidationError('sql_breakdown_granularity', 'SQL billable metrics are not supported');
  for (const f of USAGE_ONLY) if (type !== 'USAGE' && body[f] !== undefined) throw new ValidationError(f, 'is only allowed on USAGE products');
  for (const f of COMPOSITE_ONLY) if (type !== 'COMPOSITE' && body[f] !== undefined) throw new ValidationError(f, 'is only allowed on COMPOSITE products');
  const out: ProductAttributes & { billable_metric_id?: string; tags?: string[]; name?: string } = {};
  if (body.name !== undefined) out.name = reqStr(body, 'name');
  if (body.tags !== undefined) out.tags = stringArray(body, 'tags')!;
  const metricId = uuid(body, 'billable_metric_id', '', { optional: true });
  if (metricId) out.billable_metric_id = metricId;
  for (const k of ['pricing_group_key', 'presentation_group_key', 'composite_tags'] as const) {
    if (body[k] !== undefined && body[k] !== null) out[k] = stringArray(body, k)!;
  }
  if (body.composite_product_ids !== undefined && body.composite_product_ids !== null) out.composite_product_ids = uuidArray(body, 'composite_product_ids')!;
  if (out.composite_product_ids) {
    const found = await em.count(Product, { id: { $in: out.composite_product_ids } });
    if (found !== new Set(out.composite_product_ids).size) throw new ValidationError('composite_product_ids', 'refers to a product that does not exist');
  }
  for (const k of ['exclude_free_usage', 'is_refundable'] as const) {
    const b = bool(body, k, '', { optional: true });
    if (b !== undefined) out[k] = b;
  }
  for (const k of ['netsuite_internal_item_id', 'netsuite_overage_item_id'] as const) {
    const v = str(body, k, '', { optional: true });
    if (v !== undefined) out[k] = v;
  }
  if (body.quantity_conversion === null) out.quantity_conversion = null;
  else if (body.quantity_conversion !== undefined) {
    const q = objectAt(body.quantity_conversion, 'quantity_conversion', ['conversion_factor', 'operation', 'name']);
    const factor = decimal(q, 'conversion_factor', 'quantity_conversion')!;
    if (!dec(factor).gt(0)) throw new ValidationError('quantity_conversion.conversion_factor', 'must be > 0');
    out.quantity_conversion = { conversion_factor: factor, operation: oneOf(q, 'operation', ['MULTIPLY', 'DIVIDE'] as const, 'quantity_conversion')!, ...(q.name ? { name: reqStr(q, 'name', 'quantity_conversion') } : {}) };
  }
  if (body.quantity_rounding === null) out.quantity_rounding = null;
  else if (body.quantity_rounding !== undefined) {
    const q = objectAt(body.quantity_rounding, 'quantity_rounding', ['decimal_places', 'rounding_method']);
    const places = q.decimal_places;
    if (typeof places !== 'number' || !Number.isInteger(places) || places < 0 || places > 20) throw new ValidationError('quantity_rounding.decimal_places', 'must be an integer from 0 to 20');
    out.quantity_rounding = { decimal_places: places, rounding_method: oneOf(q, 'rounding_method', ['ROUND_UP', 'ROUND_DOWN', 'ROUND_HALF_UP'] as const, 'quantity_rounding')! };
  }

  // The state this input leads to must be coherent.
  const next = { ...(current ?? {}), ...out } as ProductState;
  if (type === 'USAGE') {
    if (!next.billable_metric_id) throw new ValidationError('billable_metric_id', 'is required for USAGE products');
    if (out.billable_metric_id || out.pricing_group_key || out.presentation_group_key) {
      const metric = await em.findOne(BillableMetric, { id: next.billable_metric_id });
      if (!metric) throw new NotFoundError('billable metric', next.billable_metric_id, 'billable_metric_id');
      if (metric.archivedAt) throw new ValidationError('billable_metric_id', 'refers to an archived billable metric');
      const keys = [...new Set([...(next.pricing_group_key ?? []), ...(next.presentation_group_key ?? [])])].sort();
      if (keys.length && !metric.groupKeys.some((g) => [...g].sort().join('\u0000') === keys.join('\u0000'))) {
        throw new ValidationError(next.pricing_group_key?.length ? 'pricing_group_key' : 'presentation_group_key',
          `the union of pricing_group_key and presentation_group_key (${keys.join(', ')}) must be one of the billable metric's group_keys`);
      }
    }
  }
  if (type === 'COMPOSITE' && !next.composite_product_ids?.length && !next.composite_tags?.length) {
    throw new ValidationError('composite_product_ids', 'COMPOSITE products need composite_product_ids or composite_tags');
  }
  return out;
}

function stateJson(s: ProductState, createdAt: string, createdBy: string) {
  return {
    created_at: createdAt, created_by: createdBy, name: s.name, tags: s.tags,
    ...(s.billable_metric_id ? { billable_metric_id: s.billable_metric_id } : {}),
    ...Object.fromEntries(Object.entries(s).filter(([k, v]) => v !== undefined && !['name', 'tags', 'billable_metric_id'].includes(k))),
  };
}

function productJson(p: Product, now = Date.now()) {
  const record = productRecordOf(p);
  const created = p.createdAt.toISOString();
  const initial = productStateAt({ ...record, updates: [] }, -Infinity);
  return {
    id: p.id,
    type: p.type,
    initial: stateJson(initial, created, 'accrue'),
    current: stateJson(productStateAt(record, now), created, 'accrue'),
    updates: record.updates,
    custom_fields: p.customFields,
    ...(p.archivedAt ? { archived_at: p.archivedAt.toISOString() } : {}),
  };
}

async function findProduct(em: EntityManager, id: string, field: string): Promise<Product> {
  const p = await em.findOne(Product, { id });
  if (!p) throw new NotFoundError('product', id, field);
  return p;
}

export function productsRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/contract-pricing/products/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', CREATE_FIELDS);
    const name = reqStr(body, 'name');
    const rawType = oneOf(body, 'type', TYPES)!;
    const type: ProductType = rawType === 'PROFESSIONAL_SERVICE' ? 'PRO_SERVICE' : rawType;
    const em = orm.em.fork();
    const { billable_metric_id, tags, name: _n, ...attributes } = await attributesInput(em, body, type, null);
    const id = newId();
    em.create(Product, {
      id, name, type, billableMetricId: billable_metric_id ?? null, tags: tags ?? [],
      customFields: stringRecord(body, 'custom_fields') ?? {}, attributes, updates: [], createdAt: new Date(),
    });
    await em.flush();
    res.json({ data: { id } });
  });

  r.post('/v1/contract-pricing/products/get', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const p = await findProduct(orm.em.fork(), reqUuid(body, 'id'), 'id');
    res.json({ data: productJson(p) });
  });

  r.post('/v1/contract-pricing/products/update', allow(), async (req, res) => {
    const body = objectAt(req.body, '', UPDATE_FIELDS);
    const em = orm.em.fork();
    const p = await findProduct(em, reqUuid(body, 'product_id'), 'product_id');
    if (p.archivedAt) throw new ValidationError('product_id', 'refers to an archived product');
    const startingAt = hourTimestamp(body, 'starting_at')!;
    const { product_id: _id, starting_at: _s, ...fields } = body;
    if (!Object.keys(fields).length) throw new ValidationError(undefined, 'nothing to update: give at least one field to change');
    const current = productStateAt(productRecordOf(p), Date.parse(startingAt));
    const changes = await attributesInput(em, fields, p.type, current);
    const update: ProductUpdate = { ...changes, starting_at: startingAt, created_at: new Date().toISOString(), created_by: 'accrue' };
    p.updates = [...p.updates, update];
    await em.flush();
    res.json({ data: { id: p.id } });
  });

  r.post('/v1/contract-pricing/products/list', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['archive_filter']);
    const filter = oneOf(body, 'archive_filter', ['ARCHIVED', 'NOT_ARCHIVED', 'ALL'] as const, '', { optional: true }) ?? 'NOT_ARCHIVED';
    const q = pageQuery(req.query as Record<string, unknown>);
    const where = { ...afterCondition(q.after), ...(filter === 'ARCHIVED' ? { archivedAt: { $ne: null } } : filter === 'NOT_ARCHIVED' ? { archivedAt: null } : {}) };
    const rows = await orm.em.fork().find(Product, where, { orderBy: { createdAt: 'asc', id: 'asc' }, limit: q.limit + 1 });
    res.json(page(rows, q.limit, (p) => productJson(p)));
  });

  r.post('/v1/contract-pricing/products/archive', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['product_id']);
    const em = orm.em.fork();
    const p = await findProduct(em, reqUuid(body, 'product_id'), 'product_id');
    if (!p.archivedAt) {
      p.archivedAt = new Date();
      await em.flush();
    }
    res.json({ data: { id: p.id } });
  });

  return r;
}
