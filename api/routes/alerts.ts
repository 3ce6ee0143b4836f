import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ALERT_TYPES, isAlertType, type GroupValueFilter } from '../../billing/alerts.js';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { USD_CENTS } from '../../billing/money.js';
import { alertsForCustomer, archiveAlert, createAlert, customerAlertStates, findAlert, resetAlert, type AlertRow, type CustomerAlertState } from '../../db/alerts.js';
import { BillableMetric, Customer, Product } from '../../db/entities.js';
import { allow } from '../auth.js';
import { offsetPage } from '../paging.js';
import { bool, decimal, objectAt, oneOf, reqStr, reqUuid, str, stringArray, uuid, uuidArray, type Obj } from '../../operations/input/validate.js';

/**
 * Alerts through Metronome's API (`v1.alerts.create|archive`, `v1.customers.alerts.list|retrieve|reset`).
 * Evaluation is db/alerts.ts; what each type measures is billing/alerts.ts. Accrue adds
 * `gate_access` (and `gate_product_ids`): while such an alert is in alarm, the customer's access to
 * those products (all when none are named) is gated (entitlements).
 */
const UNSUPPORTED = ['alert_specifiers', 'credit_grant_type_filters', 'custom_field_filters', 'invoice_types_filter', 'plan_id', 'seat_filter'];
const CREATE_FIELDS = ['alert_type', 'name', 'threshold', 'billable_metric_id', 'credit_type_id', 'customer_id', 'evaluate_on_create', 'group_values', 'uniqueness_key', 'gate_access', 'gate_product_ids', ...UNSUPPORTED];

function groupValues(body: Obj, type: string): GroupValueFilter[] {
  const v = body.group_values;
  if (v === undefined || v === null) return [];
  if (type !== 'spend_threshold_reached' && type !== 'usage_threshold_reached') throw new ValidationError('group_values', `is only supported for spend_threshold_reached and usage_threshold_reached alerts, not ${type}`);
  if (!Array.isArray(v)) throw new ValidationError('group_values', 'must be an array of {key, value?}');
  return v.map((item, i) => {
    const o = objectAt(item, `group_values[${i}]`, ['key', 'value']);
    const key = reqStr(o, 'key', `group_values[${i}]`, 200);
    const value = str(o, 'value', `group_values[${i}]`, { optional: true, max: 500 });
    return value === undefined ? { key } : { key, value };
  });
}

function customerAlertJson(a: AlertRow, state: CustomerAlertState | undefined, metricsOk = true) {
  return {
    alert: {
      id: a.id, name: a.name, status: a.status, threshold: Number(a.threshold), type: a.type,
      updated_at: state?.updatedAt ?? a.archivedAt ?? a.createdAt,
      credit_type: { id: USD_CENTS.id, name: USD_CENTS.name },
      ...(a.groupValues.length ? { group_values: a.groupValues } : {}),
      ...(a.uniquenessKey ? { uniqueness_key: a.uniquenessKey } : {}),
      ...(a.billableMetricId ? { billable_metric_id: a.billableMetricId } : {}),
      gate_access: a.gateAccess,
      ...(a.gateProductIds ? { gate_product_ids: a.gateProductIds } : {}),
    },
    customer_status: a.status === 'archived' ? null : metricsOk ? (state?.status ?? 'evaluating') : 'evaluating',
    triggered_by: state?.status === 'in_alarm' ? state.triggeredBy : null,
  };
}

async function customerOr404(orm: MikroORM, id: string) {
  const c = await orm.em.fork().findOne(Customer, { id });
  if (!c) throw new NotFoundError('customer', id, 'customer_id');
  return c;
}

export function alertsRouter(orm: MikroORM): Router {
  const r = Router();

  r.post('/v1/alerts/create', allow(), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', CREATE_FIELDS);
    for (const f of UNSUPPORTED) if (body[f] !== undefined && body[f] !== null) throw new ValidationError(f, 'is not supported by Accrue');
    const type = reqStr(body, 'alert_type');
    if (!isAlertType(type)) throw new ValidationError('alert_type', `${JSON.stringify(type)} is not supported; supported alert types: ${ALERT_TYPES.join(', ')}`);
    const name = reqStr(body, 'name', '', 500);
    const threshold = decimal(body, 'threshold')!;
    if (threshold.startsWith('-')) throw new ValidationError('threshold', `must not be negative, got ${threshold}`);
    if (type.endsWith('_percentage_reached') && Number(threshold) > 100) throw new ValidationError('threshold', `is a percentage (0 to 100) for ${type}, got ${threshold}`);
    const creditTypeId = uuid(body, 'credit_type_id', '', { optional: true });
    if (creditTypeId !== undefined && creditTypeId !== USD_CENTS.id) throw new ValidationError('credit_type_id', `only USD (cents), ${USD_CENTS.id}, is supported`);
    const customerId = uuid(body, 'customer_id', '', { optional: true }) ?? null;
    if (customerId) await customerOr404(orm, customerId);
    const metricId = uuid(body, 'billable_metric_id', '', { optional: true }) ?? null;
    if (type === 'usage_threshold_reached') {
      if (!metricId) throw new ValidationError('billable_metric_id', 'is required for usage_threshold_reached alerts');
      const m = await orm.em.fork().findOne(BillableMetric, { id: metricId });
      if (!m) throw new NotFoundError('billable metric', metricId, 'billable_metric_id');
      if (m.archivedAt) throw new ValidationError('billable_metric_id', `billable metric ${metricId} is archived`);
    } else if (metricId) {
      throw new ValidationError('billable_metric_id', `is only for usage_threshold_reached alerts, not ${type}`);
    }
    const gv = groupValues(body, type);
    const gateAccess = bool(body, 'gate_access', '', { optional: true }) ?? false;
    const gateProductIds = uuidArray(body, 'gate_product_ids', '', { optional: true }) ?? null;
    if (gateProductIds) {
      if (!gateAccess) throw new ValidationError('gate_product_ids', 'needs gate_access: true');
      const found = await orm.em.fork().find(Product, { id: { $in: gateProductIds } });
      const missing = gateProductIds.findIndex((p) => !found.some((f) => f.id === p));
      if (missing >= 0) throw new ValidationError(`gate_product_ids[${missing}]`, `product ${gateProductIds[missing]} not found`);
    }
    const uniquenessKey = str(body, 'uniqueness_key', '', { optional: true, max: 128 }) ?? null;
    const alert = await createAlert(orm.em.fork(), {
      name, type, threshold, customerId, billableMetricId: metricId, groupValues: gv, creditTypeId: creditTypeId ?? null,
      evaluateOnCreate: bool(body, 'evaluate_on_create', '', { optional: true }) ?? true, uniquenessKey,
      gateAccess, gateProductIds,
    });
    res.json({ data: { id: alert.id } });
  });

  r.post('/v1/alerts/archive', allow(), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['id', 'release_uniqueness_key']);
    const id = reqUuid(body, 'id');
    const alert = await archiveAlert(orm.em.fork(), id, bool(body, 'release_uniqueness_key', '', { optional: true }) ?? false);
    res.json({ data: { id: alert.id } });
  });

  r.post('/v1/customer-alerts/list', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['customer_id', 'alert_statuses', 'next_page']);
    const customerId = reqUuid(body, 'customer_id');
    await customerOr404(orm, customerId);
    const statuses = (stringArray(body, 'alert_statuses', '', { optional: true }) ?? ['ENABLED']).map((s, i) => {
      const v = oneOf({ s }, 's', ['ENABLED', 'DISABLED', 'ARCHIVED'] as const);
      if (!v) throw new ValidationError(`alert_statuses[${i}]`, 'must be ENABLED, DISABLED or ARCHIVED');
      return v;
    });
    const wanted = [...new Set(statuses.flatMap((s) => (s === 'ENABLED' ? ['enabled' as const] : s === 'ARCHIVED' ? ['archived' as const] : [])))];
    const em = orm.em.fork();
    const alerts = wanted.length ? await alertsForCustomer(em, customerId, wanted) : [];
    const states = await customerAlertStates(em, customerId, alerts.map((a) => a.id));
    const q = req.query as Record<string, unknown>;
    res.json(offsetPage(alerts.map((a) => customerAlertJson(a, states.get(a.id))), { limit: q.limit, next_page: body.next_page ?? q.next_page }));
  });

  r.post('/v1/customer-alerts/get', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['alert_id', 'customer_id', 'group_values', 'plans_or_contracts', 'alert_specifiers', 'seat_filter']);
    for (const f of ['alert_specifiers', 'seat_filter']) if (body[f] !== undefined && body[f] !== null) throw new ValidationError(f, 'is not supported by Accrue');
    const alertId = reqUuid(body, 'alert_id');
    const customerId = reqUuid(body, 'customer_id');
    await customerOr404(orm, customerId);
    const em = orm.em.fork();
    const alert = await findAlert(em, alertId);
    if (!alert || (alert.customerId && alert.customerId !== customerId)) throw new NotFoundError('alert', alertId, 'alert_id');
    if (body.plans_or_contracts === 'PLANS') throw new ValidationError('plans_or_contracts', 'Accrue has contracts only');
    if (body.plans_or_contracts !== undefined && body.plans_or_contracts !== null && body.plans_or_contracts !== 'CONTRACTS') throw new ValidationError('plans_or_contracts', 'must be CONTRACTS');
    // An alert keeps one state per customer, for the group values it was created with: those are
    // the only group whose state there is to answer.
    if (body.group_values !== undefined && body.group_values !== null) {
      const key = (gv: GroupValueFilter[]) => JSON.stringify(gv.map((g) => [g.key, g.value ?? null]).sort());
      if (key(groupValues(body, alert.type)) !== key(alert.groupValues)) {
        throw new ValidationError('group_values', `alert ${alert.id} keeps a state only for its own group values (${JSON.stringify(alert.groupValues)}), not one per group`);
      }
    }
    const states = await customerAlertStates(em, customerId, [alert.id]);
    res.json({ data: customerAlertJson(alert, states.get(alert.id)) });
  });

  r.post('/v1/customer-alerts/reset', allow('finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['alert_id', 'customer_id']);
    const alertId = reqUuid(body, 'alert_id');
    const customerId = reqUuid(body, 'customer_id');
    await customerOr404(orm, customerId);
    const em = orm.em.fork();
    const alert = await findAlert(em, alertId);
    if (!alert || (alert.customerId && alert.customerId !== customerId)) throw new NotFoundError('alert', alertId, 'alert_id');
    if (alert.status !== 'enabled') throw new ValidationError('alert_id', `alert ${alertId} is archived`);
    await resetAlert(em, alertId, customerId);
    res.status(200).end();
  });

  return r;
}
