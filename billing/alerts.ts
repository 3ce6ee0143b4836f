import type { Decimal } from 'decimal.js';
import { dec } from './money.js';

/**
 * Alerts (Metronome's threshold notifications): which types Accrue evaluates, what each measures,
 * and the one rule for when an alert fires. Pure; db/alerts.ts measures and records.
 *
 * What each type measures, per customer, in the threshold's unit (amounts in cents of USD, the
 * credit type Accrue bills in; percentages 0–100):
 * - `spend_threshold_reached`: charges so far in the current billing period — usage and
 *   subscription lines of the drafts whose period contains now, before commits and credits are
 *   applied; with `group_values`, only usage lines whose pricing or presentation group matches.
 *   In alarm at or above the threshold.
 * - `invoice_total_reached`: the largest current draft's total (after commits and credits). At
 *   or above.
 * - `usage_threshold_reached`: the billable metric's value in the current billing period (from
 *   the period start to now), with `group_values` as a filter on the metric's group keys. At or above.
 * - `low_remaining_commit_balance_reached` / `low_credit_balance_reached`: what is left of the
 *   customer's commits / credits whose segment is in effect now, live (draft draw-downs count).
 *   In alarm at or below the threshold; a customer with none is not in alarm.
 * - `low_remaining_commit_percentage_reached` / `low_remaining_credit_percentage_reached`: the
 *   same as a percentage of those segments' amounts. At or below.
 */
export const ALERT_TYPES = [
  'spend_threshold_reached', 'invoice_total_reached', 'usage_threshold_reached',
  'low_credit_balance_reached', 'low_remaining_credit_percentage_reached',
  'low_remaining_commit_balance_reached', 'low_remaining_commit_percentage_reached',
] as const;
export type AlertType = typeof ALERT_TYPES[number];
export type AlertStatus = 'ok' | 'in_alarm' | 'evaluating';

export function isAlertType(t: string): t is AlertType {
  return (ALERT_TYPES as readonly string[]).includes(t);
}

/** Balance alerts watch a value fall; the others watch one rise. */
export function alertFalls(type: AlertType): boolean {
  return type.startsWith('low_');
}

/** The outbound notification type an alert's crossing is sent as (Metronome's webhook names). */
export function alertNotificationType(type: AlertType): string {
  return type === 'low_credit_balance_reached' ? 'alerts.low_remaining_credit_balance_reached' : `alerts.${type}`;
}

/** Whether `value` is in alarm for the alert; nothing to measure (no commit, no credit) is not. */
export function isInAlarm(type: AlertType, value: Decimal | null, threshold: Decimal | string | number): boolean {
  if (value === null) return false;
  const t = dec(threshold as string);
  return alertFalls(type) ? value.lte(t) : value.gte(t);
}

export interface AlertStep {
  status: 'ok' | 'in_alarm';
  /** Send the alert's notification (webhook, email): it has just entered alarm. */
  fire: boolean;
}

/**
 * The one rule: an alert fires when it enters alarm — from `ok`, from `evaluating` (after a reset
 * or on creation with `evaluate_on_create`), or on its first evaluation for a customer — and not
 * again while it stays in alarm. Leaving alarm (a new period, a top-up) makes it `ok`, so it can
 * fire again. `silentBaseline`: the first evaluation of a customer that already existed when an
 * alert was created with `evaluate_on_create: false` records the state without firing.
 */
export function alertStep(prev: AlertStatus | undefined, inAlarm: boolean, opts: { silentBaseline?: boolean } = {}): AlertStep {
  if (!inAlarm) return { status: 'ok', fire: false };
  if (prev === 'in_alarm') return { status: 'in_alarm', fire: false };
  if (prev === undefined && opts.silentBaseline) return { status: 'in_alarm', fire: false };
  return { status: 'in_alarm', fire: true };
}

/** Group values an alert is scoped to: every listed key must match (a key without a value matches any value). */
export interface GroupValueFilter { key: string; value?: string }

export function groupMatches(filters: readonly GroupValueFilter[], groups: Record<string, string | null | undefined>): boolean {
  return filters.every((f) => f.key in groups && groups[f.key] !== undefined && (f.value === undefined || groups[f.key] === f.value));
}
