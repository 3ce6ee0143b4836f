import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { BillableMetric, type EventTypeFilter, type PropertyFilter } from '../../db/entities.js';
import { newId, UUID_RE } from '../../db/ids.js';
import { allow } from '../auth.js';
import { bool, objectAt, oneOf, reqStr, str, stringArray, stringRecord, type Obj } from '../validate.js';

const CREATE_FIELDS = ['name', 'aggregation_type', 'aggregation_key', 'event_type_filter', 'property_filters', 'group_keys', 'custom_fields', 'sql'];
const SUPPORTED_AGGREGATIONS = ['COUNT', 'SUM'] as const;

function eventTypeFilter(body: Obj): EventTypeFilter | null {
  if (body.event_type_filter === undefined || body.event_type_filter === null) return null;
  const f = objectAt(body.event_type_filter, 'event_type_filter', ['in_values', 'not_in_values']);
  const out: EventTypeFilter = {};
  const inValues = stringArray(f, 'in_values', 'event_type_filter', { optional: true, nonEmpty: true });
  const notIn = stringArray(f, 'not_in_values', 'event_type_filter', { optional: true, nonEmpty: true });
  if (inValues) out.in_values = inValues;
  if (notIn) out.not_in_values = notIn;
  return out;
}

function propertyFilters(body: Obj): PropertyFilter[] {
  const v = body.property_filters;
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ValidationError('property_filters', 'must be an array');
  return v.map((item, i) => {
    const path = `property_filters[${i}]`;
    const f = objectAt(item, path, ['name', 'exists', 'in_values', 'not_in_values']);
    const out: PropertyFilter = { name: reqStr(f, 'name', path) };
    const exists = bool(f, 'exists', path, { optional: true });
    const inValues = stringArray(f, 'in_values', path, { optional: true, nonEmpty: true });
    const notIn = stringArray(f, 'not_in_values', path, { optional: true, nonEmpty: true });
    if (exists !== undefined) out.exists = exists;
    if (inValues) out.in_values = inValues;
    if (notIn) out.not_in_values = notIn;
    return out;
  });
}

function groupKeys(body: Obj): string[][] {
  const v = body.group_keys;
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ValidationError('group_keys', 'must be an array of arrays of property names');
  return v.map((keys: unknown, i) => {
    if (!Array.isArray(keys) || keys.length === 0 || keys.some((k) => typeof k !== 'string' || k === '')) {
      throw new ValidationError(`group_keys[${i}]`, 'must be a non-empty array of property names');
    }
    return keys as string[];
  });
}

export function metricJson(m: BillableMetric) {
  return {
    id: m.id,
    name: m.name,
    aggregation_type: m.aggregationType,
    ...(m.aggregationKey ? { aggregation_key: m.aggregationKey } : {}),
    ...(m.eventTypeFilter ? { event_type_filter: m.eventTypeFilter } : {}),
    property_filters: m.propertyFilters,
    group_keys: m.groupKeys,
    custom_fields: m.customFields,
    ...(m.archivedAt ? { archived_at: m.archivedAt.toISOString() } : {}),
  };
}

export function billableMetricsRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/billable-metrics/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', CREATE_FIELDS);
    if (body.sql !== undefined) throw new ValidationError('sql', 'SQL billable metrics are not supported; use aggregation_type');
    const name = reqStr(body, 'name');
    const aggregationType = oneOf(body, 'aggregation_type', SUPPORTED_AGGREGATIONS) as 'COUNT' | 'SUM';
    const aggregationKey = str(body, 'aggregation_key', '', { optional: true });
    if (aggregationType === 'SUM' && !aggregationKey) throw new ValidationError('aggregation_key', 'is required for SUM');
    const metric: BillableMetric = {
      id: newId(),
      name,
      aggregationType,
      aggregationKey: aggregationKey ?? null,
      eventTypeFilter: eventTypeFilter(body),
      propertyFilters: propertyFilters(body),
      groupKeys: groupKeys(body),
      customFields: stringRecord(body, 'custom_fields') ?? {},
      createdAt: new Date(),
      archivedAt: null,
    };
    const em = orm.em.fork();
    em.create(BillableMetric, metric);
    await em.flush();
    res.json({ data: { id: metric.id } });
  });

  r.get('/v1/billable-metrics/:billable_metric_id', allow('read', 'finance'), async (req, res) => {
    const id = String(req.params.billable_metric_id);
    const m = UUID_RE.test(id) ? await orm.em.fork().findOne(BillableMetric, { id: id.toLowerCase() }) : null;
    if (!m) throw new NotFoundError('billable metric', id, 'billable_metric_id');
    res.json({ data: metricJson(m) });
  });

  return r;
}
