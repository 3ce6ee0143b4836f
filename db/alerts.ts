import type { EntityManager } from '@mikro-orm/postgresql';
import type { Decimal } from 'decimal.js';
import { alertNotificationType, alertStep, groupMatches, isInAlarm, type AlertStatus, type AlertType, type GroupValueFilter } from '../billing/alerts.js';
import { ConflictError, NotFoundError } from '../billing/errors.js';
import { dec, sum } from '../billing/money.js';
import { customerBalances } from './balances.js';
import { invalidateEntitlements } from './entitlements.js';
import { BillableMetric } from './entities.js';
import { newId } from './ids.js';
import { BILLED_USAGE_TYPES, customerDrafts, preloadDrafts, type DraftsPreload } from './invoices.js';
import { enqueueNotification } from './notifications.js';
import { isEventDataError } from './quarantine.js';
import { pgTextArray } from './sql.js';
import { evaluateRecharges, rechargeContracts } from './recharge.js';
import { usageSeries } from './usage-series.js';
import { OUTBOUND_CHANNEL, wake } from './wakeup.js';

/**
 * Alerts in PostgreSQL: their definitions, their state per customer, and the evaluator.
 *
 * Evaluation is driven by `alert_dirty`: the rating pass marks the customers it touched in the
 * same transaction as their aggregates; creating or resetting an alert, and balance changes, mark
 * customers too. `evaluateDirty` measures each marked customer with the invoice code itself
 * (`customerDrafts`, `customerBalances`, the usage aggregates: no second pricing path), and in one
 * transaction per batch, holding a per-customer advisory lock, moves each (alert, customer) state
 * with `alertStep` and writes the notification of every crossing. A crash before that commit
 * leaves the marks, so the customers are evaluated again; after it, the state says `in_alarm`, so
 * nothing fires twice. The marks read are removed afterwards; marks made while it ran stay.
 */
export interface AlertRow {
  id: string;
  name: string;
  type: AlertType;
  threshold: string;
  customerId: string | null;
  billableMetricId: string | null;
  groupValues: GroupValueFilter[];
  creditTypeId: string | null;
  evaluateOnCreate: boolean;
  uniquenessKey: string | null;
  gateAccess: boolean;
  gateProductIds: string[] | null;
  status: 'enabled' | 'archived';
  createdAt: string;
  archivedAt: string | null;
}

type AlertDbRow = {
  id: string; name: string; alert_type: AlertType; threshold: string; customer_id: string | null; billable_metric_id: string | null;
  group_values: GroupValueFilter[]; credit_type_id: string | null; evaluate_on_create: boolean; uniqueness_key: string | null;
  gate_access: boolean; gate_product_ids: string[] | null; status: 'enabled' | 'archived'; created_at: Date; archived_at: Date | null;
};
const ALERT_COLS = `id::text as id, name, alert_type, threshold::text as threshold, customer_id::text as customer_id, billable_metric_id::text as billable_metric_id,
  group_values, credit_type_id, evaluate_on_create, uniqueness_key, gate_access, gate_product_ids::text[] as gate_product_ids, status, created_at, archived_at`;
const alertOf = (r: AlertDbRow): AlertRow => ({
  id: r.id, name: r.name, type: r.alert_type, threshold: r.threshold, customerId: r.customer_id, billableMetricId: r.billable_metric_id,
  groupValues: r.group_values ?? [], creditTypeId: r.credit_type_id, evaluateOnCreate: r.evaluate_on_create, uniquenessKey: r.uniqueness_key,
  gateAccess: r.gate_access, gateProductIds: r.gate_product_ids, status: r.status,
  createdAt: new Date(r.created_at).toISOString(), archivedAt: r.archived_at ? new Date(r.archived_at).toISOString() : null,
});

export type NewAlert = Omit<AlertRow, 'id' | 'status' | 'createdAt' | 'archivedAt'>;

/** Creates the alert and marks the customers it watches for evaluation, in one transaction. */
export async function createAlert(em: EntityManager, a: NewAlert): Promise<AlertRow> {
  return em.transactional(async (tx) => {
    if (a.uniquenessKey !== null) {
      // Serialize creators of one key, so two concurrent creates cannot both pass the check.
      await tx.execute(`select pg_advisory_xact_lock(hashtextextended(?, 7))`, [`alert-uniqueness:${a.uniquenessKey}`]);
      const [taken] = await tx.execute<{ id: string }[]>(`select id::text as id from alert where uniqueness_key = ? and not uniqueness_key_released`, [a.uniquenessKey]);
      if (taken) throw new ConflictError(`uniqueness_key: an alert with uniqueness_key ${JSON.stringify(a.uniquenessKey)} already exists (${taken.id})`);
    }
    const [row] = await tx.execute<AlertDbRow[]>(`
      insert into alert (id, name, alert_type, threshold, customer_id, billable_metric_id, group_values, credit_type_id, evaluate_on_create,
                         uniqueness_key, gate_access, gate_product_ids)
      values (?, ?, ?, ?::numeric, ?, ?, ?::jsonb, ?, ?, ?, ?, ?::uuid[]) returning ${ALERT_COLS}`,
    [newId(), a.name, a.type, a.threshold, a.customerId, a.billableMetricId, JSON.stringify(a.groupValues), a.creditTypeId, a.evaluateOnCreate,
      a.uniquenessKey, a.gateAccess, a.gateProductIds ? pgTextArray(a.gateProductIds) : null]);
    await markDirty(tx, a.customerId ? [a.customerId] : 'all');
    return alertOf(row!);
  });
}

export async function archiveAlert(em: EntityManager, id: string, releaseUniquenessKey: boolean): Promise<AlertRow> {
  const [row] = await em.execute<AlertDbRow[]>(`
    update alert set status = 'archived', archived_at = coalesce(archived_at, now()),
      uniqueness_key_released = uniqueness_key_released or ?
    where id = ? returning ${ALERT_COLS}`, [releaseUniquenessKey, id]);
  if (!row) throw new NotFoundError('alert', id, 'id');
  // An archived gating alert gates nobody any more.
  if (row.gate_access) await invalidateEntitlements(em, row.customer_id ?? '*');
  // Customers quarantined for this alert are evaluated again without it.
  await releaseQuarantine(em, { alertId: id });
  return alertOf(row);
}

export async function findAlert(em: EntityManager, id: string): Promise<AlertRow | undefined> {
  const [row] = await em.execute<AlertDbRow[]>(`select ${ALERT_COLS} from alert where id = ?`, [id]);
  return row && alertOf(row);
}

/** Alerts that apply to the customer (its own and every-customer ones), enabled or in `statuses`. */
export async function alertsForCustomer(em: EntityManager, customerId: string, statuses: ('enabled' | 'archived')[] = ['enabled']): Promise<AlertRow[]> {
  const rows = await em.execute<AlertDbRow[]>(`
    select ${ALERT_COLS} from alert where (customer_id = ? or customer_id is null) and status = any(?::text[])
    order by created_at, id`, [customerId, pgTextArray(statuses)]);
  return rows.map(alertOf);
}

export interface CustomerAlertState { status: AlertStatus; triggeredBy: string | null; value: string | null; windowEnd: string | null; updatedAt: string }

export async function customerAlertStates(em: EntityManager, customerId: string, alertIds: string[]): Promise<Map<string, CustomerAlertState>> {
  if (!alertIds.length) return new Map();
  const rows = await em.execute<{ alert_id: string; status: AlertStatus; triggered_by: string | null; value: string | null; window_end: Date | null; updated_at: Date }[]>(`
    select alert_id::text as alert_id, status, triggered_by, value::text as value, window_end, updated_at from customer_alert_state
    where customer_id = ? and alert_id = any(?::uuid[])`, [customerId, pgTextArray(alertIds)]);
  return new Map(rows.map((r) => [r.alert_id, {
    status: r.status, triggeredBy: r.triggered_by, value: r.value, windowEnd: r.window_end ? new Date(r.window_end).toISOString() : null, updatedAt: new Date(r.updated_at).toISOString(),
  }]));
}

/** `reset`: forget the customer's state for the alert (it shows `evaluating`) and evaluate it afresh; in alarm, it fires again. */
export async function resetAlert(em: EntityManager, alertId: string, customerId: string): Promise<void> {
  await em.transactional(async (tx) => {
    await tx.execute(`select pg_advisory_xact_lock(hashtextextended(?, 7))`, [`alert-customer:${customerId}`]);
    await tx.execute(`
      insert into customer_alert_state (alert_id, customer_id, status) values (?, ?, 'evaluating')
      on conflict (alert_id, customer_id) do update set status = 'evaluating', triggered_by = null, updated_at = now()`, [alertId, customerId]);
    // A reset is also how an operator retries a quarantined customer (after fixing its data).
    await releaseQuarantine(tx, { customerId });
    await markDirty(tx, [customerId]);
  });
}

/** Marks customers for evaluation (`'all'`: every customer that is not archived). */
export async function markDirty(em: EntityManager, customerIds: string[] | 'all'): Promise<void> {
  if (customerIds !== 'all' && !customerIds.length) return;
  const source = customerIds === 'all'
    ? { sql: `select id from customer where archived_at is null`, params: [] as unknown[] }
    : { sql: `select distinct unnest(?::uuid[])`, params: [pgTextArray(customerIds)] as unknown[] };
  await em.execute(`insert into alert_dirty (customer_id) ${source.sql}`, source.params);
  await wake(em, OUTBOUND_CHANNEL);
}

export interface Measures {
  /** The current billing periods' end (earliest), when the customer has one. */
  windowEnd: Date | null;
  value(alert: AlertRow): Decimal | null;
}

const BALANCE_TYPES: AlertType[] = ['low_credit_balance_reached', 'low_remaining_credit_percentage_reached', 'low_remaining_commit_balance_reached', 'low_remaining_commit_percentage_reached'];

/**
 * Measures what each customer's alerts watch, with the invoice code: drafts (`customerDrafts`,
 * every customer's computed side by side over one `preloadDrafts`), balances
 * (`customerBalances` over those drafts) and the usage aggregates (one query per metric, filter
 * and period start for all the customers). Nothing here is a second pricing path.
 */
export async function measureCustomers(em: EntityManager, customers: { id: string; alerts: AlertRow[] }[], now: Date, metrics = new Map<string, BillableMetric | null>(), preloaded?: DraftsPreload): Promise<Map<string, Measures>> {
  const t = now.getTime();
  const out = new Map<string, Measures>();
  if (!customers.length) return out;
  const preload = preloaded ?? await preloadDrafts(em, customers.map((c) => c.id), now);
  const measured = await Promise.all(customers.map(async (c) => {
    const drafts = await customerDrafts(em, c.id, now, { preload });
    const current = drafts.filter((d) => Date.parse(d.view.periodStart) <= t && t < Date.parse(d.view.periodEnd));
    return { c, drafts, current };
  }));
  // Usage alerts: one read per (metric, group filter, period start) for every customer that needs it.
  const usageReads = new Map<string, { metricId: string; filters: Record<string, string[]>; from: string; ids: string[] }>();
  const usageKey = (a: AlertRow, from: string) => `${a.billableMetricId}|${JSON.stringify(a.groupValues)}|${from}`;
  for (const { c, current } of measured) {
    if (!current.length) continue;
    const from = new Date(Math.min(...current.map((d) => Date.parse(d.view.periodStart)))).toISOString();
    for (const a of c.alerts.filter((x) => x.type === 'usage_threshold_reached' && x.billableMetricId)) {
      const k = usageKey(a, from);
      const filters: Record<string, string[]> = {};
      for (const g of a.groupValues) if (g.value !== undefined) filters[g.key] = [g.value];
      (usageReads.get(k) ?? usageReads.set(k, { metricId: a.billableMetricId!, filters, from, ids: [] }).get(k)!).ids.push(c.id);
    }
  }
  const usage = new Map<string, Decimal>(); // `${key}|${customer}`
  for (const [k, r] of usageReads) {
    if (!metrics.has(r.metricId)) metrics.set(r.metricId, await em.findOne(BillableMetric, { id: r.metricId }));
    const metric = metrics.get(r.metricId);
    if (!metric) continue;
    const rows = await usageSeries(em, metric, { customerIds: r.ids, from: r.from, to: new Date(Math.max(t, Date.parse(r.from) + 1)).toISOString(), window: 'NONE', groupFilters: r.filters });
    for (const id of r.ids) usage.set(`${k}|${id}`, sum(rows.filter((x) => x.customerId === id && x.value !== null).map((x) => dec(x.value!))));
  }
  for (const { c, drafts, current } of measured) {
    const needsBalances = c.alerts.some((a) => BALANCE_TYPES.includes(a.type));
    const balances = needsBalances ? await customerBalances(em, c.id, { now, drafts }) : [];
    const balanceOf = (kind: 'commit' | 'credit', pct: boolean): Decimal | null => {
      const grants = balances.filter((b) => (kind === 'credit') === (b.grant.kind === 'CREDIT'));
      const inEffect = grants.flatMap((b) => b.segments.filter((s) => s.startingAt <= t && t < s.endingBefore).map((s) => ({ s, b })));
      if (!inEffect.length) return null;
      const left = sum(grants.map((b) => b.balance));
      if (!pct) return left;
      const granted = sum(inEffect.map(({ s, b }) => dec(b.grant.accessSchedule.schedule_items.find((i) => i.id === s.id)?.amount ?? 0)));
      return granted.gt(0) ? left.div(granted).times(100) : null;
    };
    const from = current.length ? new Date(Math.min(...current.map((d) => Date.parse(d.view.periodStart)))).toISOString() : null;
    out.set(c.id, {
      windowEnd: current.length ? new Date(Math.min(...current.map((d) => Date.parse(d.view.periodEnd)))) : null,
      value(alert) {
        switch (alert.type) {
          case 'spend_threshold_reached': {
            if (!current.length) return null;
            return sum(current.flatMap((d) => d.view.lines).filter((l) => BILLED_USAGE_TYPES.has(l.type)
              && (!alert.groupValues.length || (l.type === 'usage' && groupMatches(alert.groupValues, { ...l.pricing_group_values, ...l.presentation_group_values }))))
              .map((l) => dec(l.total)));
          }
          case 'invoice_total_reached':
            return current.length ? current.map((d) => dec(d.view.total)).reduce((a, b) => (a.gt(b) ? a : b)) : null;
          case 'usage_threshold_reached':
            return from ? usage.get(`${usageKey(alert, from)}|${c.id}`) ?? null : null;
          case 'low_credit_balance_reached': return balanceOf('credit', false);
          case 'low_remaining_credit_percentage_reached': return balanceOf('credit', true);
          case 'low_remaining_commit_balance_reached': return balanceOf('commit', false);
          case 'low_remaining_commit_percentage_reached': return balanceOf('commit', true);
        }
      },
    });
  }
  return out;
}

export interface EvaluationResult { customers: number; fired: number; notifications: string[] }

/**
 * Evaluates up to `limit` marked customers (oldest marks first) in one transaction: it takes the
 * advisory lock of every customer it can (one held by another evaluator is skipped and stays
 * marked), measures them all (`measureCustomers`: a few queries for the whole round), moves each
 * (alert, customer) state with `alertStep` and writes the notification of each crossing, then
 * commits; the marks it read are removed after. Two evaluators (two workers) never interleave on
 * one customer, and the locks are held from before measuring until the states are written.
 */
export async function evaluateDirty(em: EntityManager, opts: { limit: number; now?: () => Date }): Promise<EvaluationResult> {
  // Exactly the marks read are removed at the end: a mark committed later (by a pass or a reset
  // still running now) is not in this list and stays for the next round.
  const marks = await em.execute<{ customer_id: string; seqs: string[] }[]>(
    `select customer_id::text as customer_id, array_agg(seq::text) as seqs from alert_dirty group by customer_id order by min(seq) limit ?`, [opts.limit]);
  if (!marks.length) return { customers: 0, fired: 0, notifications: [] };
  const now = opts.now?.() ?? new Date();
  const ids = pgTextArray(marks.map((m) => m.customer_id));
  const alertRows = await em.execute<AlertDbRow[]>(`select ${ALERT_COLS} from alert where status = 'enabled' and (customer_id is null or customer_id = any(?::uuid[])) order by created_at, id`, [ids]);
  const customerRows = await em.execute<{ id: string; created_at: Date; archived_at: Date | null }[]>(`select id::text as id, created_at, archived_at from customer where id = any(?::uuid[])`, [ids]);
  // Customers in a trial with a spending cap: their usage moves the cap, so entitlements are recomputed.
  const cappedRows = await em.execute<{ customer_id: string }[]>(`
    select distinct customer_id::text as customer_id from contract where customer_id = any(?::uuid[]) and archived_at is null
      and terms -> 'trial_spec' -> 'spending_cap' is not null
      and starting_at <= ? and starting_at + make_interval(days => (terms -> 'trial_spec' ->> 'length_in_days')::int) > ?`, [ids, now, now]);
  const alerts = alertRows.map(alertOf).filter((a) => a.type !== 'usage_threshold_reached' || a.billableMetricId);
  const customers = new Map(customerRows.map((c) => [c.id, c]));
  const capped = new Set(cappedRows.map((r) => r.customer_id));
  // Contracts that recharge their prepaid balance are evaluated in the same rounds (db/recharge.ts).
  const recharging = await rechargeContracts(em, marks.map((m) => m.customer_id), now);
  const recharges = new Set(recharging.map((c) => c.customerId));
  const alertsOf = (id: string) => (customers.get(id) && !customers.get(id)!.archived_at ? alerts.filter((a) => a.customerId === null || a.customerId === id) : []);
  // Quarantined customers (their evaluation failed on their data) are left out until released.
  const quarantined = new Set((await em.execute<{ customer_id: string }[]>(
    `select customer_id::text as customer_id from alert_quarantine where alert_id is null and customer_id = any(?::uuid[])`, [ids])).map((r) => r.customer_id));
  const idle = marks.filter((m) => quarantined.has(m.customer_id) || (!alertsOf(m.customer_id).length && !capped.has(m.customer_id) && !recharges.has(m.customer_id)));
  const wanted = marks.filter((m) => !idle.includes(m));

  const round = (subset: typeof wanted) => em.fork().transactional(async (tx) => {
    const out: EvaluationResult = { customers: 0, fired: 0, notifications: [] };
    if (!subset.length) return { out, locked: new Set<string>() };
    const locked = new Set((await tx.execute<{ id: string }[]>(`
      select id::text as id from unnest(?::uuid[]) as id where pg_try_advisory_xact_lock(hashtextextended('alert-customer:' || id::text, 7))`,
    [pgTextArray(subset.map((m) => m.customer_id))])).map((r) => r.id));
    for (const id of locked) if (capped.has(id)) await invalidateEntitlements(tx, id);
    const evaluated = [...locked].filter((id) => alertsOf(id).length).map((id) => ({ id, alerts: alertsOf(id) }));
    const states = await customerAlertStatesMany(tx, evaluated.map((c) => c.id));
    const rechargeNow = recharging.filter((c) => locked.has(c.customerId));
    const measuredIds = [...new Set([...evaluated.map((c) => c.id), ...rechargeNow.map((c) => c.customerId)])];
    const preload = measuredIds.length ? await preloadDrafts(tx, measuredIds, now) : undefined;
    const measures = await measureCustomers(tx, evaluated, now, undefined, preload);
    if (preload) await evaluateRecharges(tx, rechargeNow, now, preload);
    for (const c of evaluated) {
      const fired = await recordSteps(tx, c.id, new Date(customers.get(c.id)!.created_at), c.alerts, states.get(c.id) ?? new Map(), measures.get(c.id)!, now);
      out.fired += fired.length;
      out.notifications.push(...fired);
    }
    out.customers = locked.size;
    return { out, locked };
  });
  let result: Awaited<ReturnType<typeof round>>;
  try {
    result = await round(wanted);
  } catch (err) {
    if (!isCustomerDataError(err)) throw err;
    // One customer's stored data fails the round: each customer is evaluated alone, and the ones
    // that still fail are quarantined (their marks removed with the others'), so they never hold
    // up anyone else's alerts or recharges.
    result = { out: { customers: 0, fired: 0, notifications: [] }, locked: new Set<string>() };
    for (const m of wanted) {
      try {
        const one = await round([m]);
        result.out.customers += one.out.customers;
        result.out.fired += one.out.fired;
        result.out.notifications.push(...one.out.notifications);
        for (const id of one.locked) result.locked.add(id);
      } catch (e) {
        if (!isCustomerDataError(e)) throw e;
        await quarantine(em, m.customer_id, null, e);
        result.locked.add(m.customer_id);
      }
    }
  }
  const done = [...idle, ...wanted.filter((m) => result.locked.has(m.customer_id))].flatMap((m) => m.seqs);
  if (done.length) await em.execute(`delete from alert_dirty where seq = any(?::bigint[])`, [`{${done.join(',')}}`]);
  return result.out;
}

/**
 * An evaluation that failed on a customer's stored data rather than on Accrue or PostgreSQL being
 * unavailable: a value the decimal helper refuses (RangeError) or a PostgreSQL data exception
 * (SQLSTATE class 22) or program limit (54). Only these quarantine; anything else fails the round
 * and is retried, as before.
 */
function isCustomerDataError(err: unknown): boolean {
  return err instanceof RangeError || isEventDataError(err);
}

/**
 * Records a customer's (alert_id null) or one alert's evaluation as quarantined in
 * `alert_quarantine`, and says so in the worker's log the first time. It stays until released
 * (`releaseQuarantine`: archiving or resetting the alert) or the row is deleted.
 */
async function quarantine(em: EntityManager, customerId: string, alertId: string | null, err: unknown): Promise<void> {
  const reason = err instanceof Error ? err.message : String(err);
  const added = await em.execute<{ customer_id: string }[]>(
    `insert into alert_quarantine (customer_id, alert_id, reason) values (?, ?, ?) on conflict do nothing returning customer_id::text as customer_id`,
    [customerId, alertId, reason.slice(0, 2000)]);
  if (added.length) {
    console.error(`[alerts] quarantined ${alertId ? `alert ${alertId} of customer ${customerId}` : `customer ${customerId} (alerts and recharges)`}: ${reason}`);
  }
}

/** Releases quarantined evaluations (of an alert, of a customer) and marks the customers for evaluation. */
export async function releaseQuarantine(em: EntityManager, where: { alertId?: string; customerId?: string }): Promise<void> {
  const released = await em.execute<{ customer_id: string }[]>(`
    delete from alert_quarantine where (?::uuid is null or alert_id = ?::uuid) and (?::uuid is null or customer_id = ?::uuid)
    returning customer_id::text as customer_id`, [where.alertId ?? null, where.alertId ?? null, where.customerId ?? null, where.customerId ?? null]);
  if (released.length) await markDirty(em, [...new Set(released.map((r) => r.customer_id))]);
}

async function customerAlertStatesMany(em: EntityManager, customerIds: string[]): Promise<Map<string, Map<string, CustomerAlertState>>> {
  const out = new Map<string, Map<string, CustomerAlertState>>();
  if (!customerIds.length) return out;
  const rows = await em.execute<{ customer_id: string; alert_id: string; status: AlertStatus; triggered_by: string | null; value: string | null; window_end: Date | null; updated_at: Date }[]>(`
    select customer_id::text as customer_id, alert_id::text as alert_id, status, triggered_by, value::text as value, window_end, updated_at
    from customer_alert_state where customer_id = any(?::uuid[])`, [pgTextArray(customerIds)]);
  for (const r of rows) {
    (out.get(r.customer_id) ?? out.set(r.customer_id, new Map()).get(r.customer_id)!).set(r.alert_id, {
      status: r.status, triggeredBy: r.triggered_by, value: r.value, windowEnd: r.window_end ? new Date(r.window_end).toISOString() : null, updatedAt: new Date(r.updated_at).toISOString(),
    });
  }
  return out;
}

/**
 * One customer's alert steps, inside the caller's transaction (which holds its lock); returns the
 * notifications written. The state is written only when the alert's status or its period changes
 * (the measured value alone changing is not worth a write per rating pass).
 */
async function recordSteps(tx: EntityManager, customerId: string, customerCreatedAt: Date, alerts: AlertRow[], states: Map<string, CustomerAlertState>, measures: Measures, now: Date): Promise<string[]> {
  const fired: string[] = [];
  const windowEnd = measures.windowEnd?.toISOString() ?? null;
  for (const alert of alerts) {
    let value: Decimal | null;
    let inAlarm: boolean;
    try {
      value = measures.value(alert);
      inAlarm = isInAlarm(alert.type, value, alert.threshold);
    } catch (err) {
      // This alert alone cannot be evaluated from what is stored (a threshold beyond what the
      // decimal helper reads): it is quarantined for this customer; the customer's other alerts go on.
      if (!isCustomerDataError(err)) throw err;
      await quarantine(tx, customerId, alert.id, err);
      continue;
    }
    const prev = states.get(alert.id);
    const step = alertStep(prev?.status, inAlarm, {
      silentBaseline: !alert.evaluateOnCreate && customerCreatedAt.getTime() < Date.parse(alert.createdAt),
    });
    const triggeredBy = step.fire ? `${alert.type} ${value?.toString()} ${alert.type.startsWith('low_') ? '<=' : '>='} ${alert.threshold}` : prev?.triggeredBy ?? null;
    const changed = !prev || prev.status !== step.status || prev.windowEnd !== windowEnd || step.fire;
    if (alert.gateAccess && (prev?.status === 'in_alarm') !== (step.status === 'in_alarm')) await invalidateEntitlements(tx, customerId);
    if (!changed) continue;
    const [{ fired: n }] = await tx.execute<{ fired: number }[]>(`
      insert into customer_alert_state (alert_id, customer_id, status, value, triggered_by, window_end, fired, updated_at)
      values (?, ?, ?, ?::numeric, ?, ?, ?, now())
      on conflict (alert_id, customer_id) do update set status = excluded.status, value = excluded.value,
        triggered_by = excluded.triggered_by, window_end = excluded.window_end,
        fired = customer_alert_state.fired + excluded.fired, updated_at = now()
      returning fired`,
    [alert.id, customerId, step.status, value?.toString() ?? null, step.status === 'in_alarm' ? triggeredBy : null, windowEnd, step.fire ? 1 : 0]) as [{ fired: number }];
    if (step.fire) {
      const { id } = await enqueueNotification(tx, {
        type: alertNotificationType(alert.type) as never,
        dedupKey: `alert:${alert.id}:${customerId}:${n}`,
        customerId,
        properties: {
          alert_id: alert.id, alert_name: alert.name, alert_type: alert.type, customer_id: customerId,
          threshold: Number(alert.threshold), value: value?.toString() ?? null, triggered_by: triggeredBy, timestamp: now.toISOString(),
          ...(alert.billableMetricId ? { billable_metric_id: alert.billableMetricId } : {}),
          ...(alert.groupValues.length ? { group_values: alert.groupValues } : {}),
        },
      });
      fired.push(id);
    }
  }
  return fired;
}

/**
 * Customers in alarm whose billing period has ended since: marked, so they leave alarm (and can
 * fire again) in the new period even without new usage.
 */
export async function markEndedWindows(em: EntityManager, now: Date): Promise<number> {
  const rows = await em.execute<{ customer_id: string }[]>(`
    select distinct customer_id::text as customer_id from customer_alert_state where status = 'in_alarm' and window_end <= ?`, [now]);
  await markDirty(em, rows.map((r) => r.customer_id));
  return rows.length;
}
