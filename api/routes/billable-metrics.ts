import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { AGGREGATION_TYPES, BillableMetric, type AggregationType, type EventTypeFilter, type PropertyFilter } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { insertMetric } from '../../db/metrics.js';
import { startMetricBackfill } from '../../operations/metrics/start-metric-backfill.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { findMetric, metricJson } from '../views/metrics.js';
import { afterCondition, page, pageQuery } from '../paging.js';
import { bool, objectAt, oneOf, reqStr, reqUuid, str, stringArray, stringRecord, type Obj } from '../../operations/input/validate.js';

const CREATE_FIELDS = ['name', 'aggregation_type', 'aggregation_key', 'event_type_filter', 'property_filters', 'group_keys', 'custom_fields', 'sql'];

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

export function billableMetricsRouter(orm: MikroORM, temporal: Client, taskQueue: string): Router {
  const r = Router();

  r.post('/v1/billable-metrics/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', CREATE_FIELDS);
    if (body.sql !== undefined) throw new ValidationError('sql', 'SQL billable metrics are not supported; use aggregation_type');
    const name = reqStr(body, 'name');
    const aggregationType = oneOf(body, 'aggregation_type', AGGREGATION_TYPES) as AggregationType;
    const aggregationKey = str(body, 'aggregation_key', '', { optional: true }) ?? null;
    if (aggregationType !== 'COUNT' && !aggregationKey) throw new ValidationError('aggregation_key', `is required for ${aggregationType}`);
    if (aggregationType === 'COUNT' && aggregationKey) throw new ValidationError('aggregation_key', 'is not used by COUNT; leave it out');
    const fields = {
      eventTypeFilter: eventTypeFilter(body),
      propertyFilters: propertyFilters(body),
      groupKeys: groupKeys(body),
      customFields: stringRecord(body, 'custom_fields') ?? {},
    };
    const id = newId();
    const backfillTotal = await insertMetric(orm.em.fork(), { id, name, aggregationType, aggregationKey, ...fields });
    if (backfillTotal > 0) {
      // Idempotent start; if Temporal is unreachable the worker starts pending backfills on boot.
      await startMetricBackfill(temporal, taskQueue, id);
    }
    res.json({ data: { id } });
  });

  r.get('/v1/billable-metrics', allow('read', 'finance'), async (req, res) => {
    const q = pageQuery(req.query as Record<string, unknown>);
    const includeArchived = req.query.include_archived === 'true';
    const rows = await orm.em.fork().find(BillableMetric, { ...(includeArchived ? {} : { archivedAt: null }), ...afterCondition(q.after) },
      { orderBy: { createdAt: 'asc', id: 'asc' }, limit: q.limit + 1 });
    res.json(page(rows, q.limit, metricJson));
  });

  r.get('/v1/billable-metrics/:billable_metric_id', allow('read', 'finance'), async (req, res) => {
    res.json({ data: metricJson(await findMetric(orm, String(req.params.billable_metric_id), 'billable_metric_id')) });
  });

  // Archiving stops rating new events for the metric; finalized invoices are frozen and unaffected.
  r.post('/v1/billable-metrics/archive', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const id = reqUuid(body, 'id');
    const em = orm.em.fork();
    const m = await em.findOne(BillableMetric, { id });
    if (!m) throw new NotFoundError('billable metric', id, 'id');
    if (!m.archivedAt) {
      m.archivedAt = new Date();
      await em.flush();
    }
    res.json({ data: { id } });
  });

  return r;
}
