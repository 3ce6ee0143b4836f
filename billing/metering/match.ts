import { isDecimalString } from '../money.js';

/**
 * How a billable metric reads an event, in TypeScript: the same rule db/metric-sql.ts applies in
 * SQL (tests hold both to the same cases). Used to validate events at ingest and to recount usage
 * from raw events when checking the aggregates (invariant I1).
 */
export interface MetricRule {
  aggregationType: 'COUNT' | 'SUM' | 'MAX' | 'UNIQUE' | 'LATEST';
  aggregationKey?: string | null;
  eventTypeFilter?: { in_values?: string[]; not_in_values?: string[] } | null;
  propertyFilters?: { name: string; exists?: boolean; in_values?: string[]; not_in_values?: string[] }[];
  groupKeys?: string[][];
}

export interface MeteredEvent {
  eventType: string;
  properties: Record<string, unknown>;
}

/** A property as PostgreSQL's `->>` renders it: strings as is, other JSON as its JSON text. */
export function propertyText(properties: Record<string, unknown>, name: string): string | null {
  if (!Object.hasOwn(properties, name)) return null;
  const v = properties[name];
  if (v === null || v === undefined) return null;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export function matchesMetric(rule: MetricRule, event: MeteredEvent): boolean {
  const etf = rule.eventTypeFilter;
  if (etf?.in_values?.length && !etf.in_values.includes(event.eventType)) return false;
  if (etf?.not_in_values?.length && etf.not_in_values.includes(event.eventType)) return false;
  for (const f of rule.propertyFilters ?? []) {
    const present = Object.hasOwn(event.properties, f.name);
    if (f.exists === true && !present) return false;
    if (f.exists === false && present) return false;
    const text = propertyText(event.properties, f.name);
    if (f.in_values?.length && (text === null || !f.in_values.includes(text))) return false;
    if (f.not_in_values?.length && text !== null && f.not_in_values.includes(text)) return false;
  }
  return true;
}

/** The event's aggregation value: a decimal string (SUM, MAX, LATEST), text (UNIQUE), or null. */
export function aggregationValue(rule: MetricRule, event: MeteredEvent): string | null {
  if (rule.aggregationType === 'COUNT' || !rule.aggregationKey) return null;
  const text = propertyText(event.properties, rule.aggregationKey);
  if (text === null) return null;
  if (rule.aggregationType === 'UNIQUE') return text;
  return isDecimalString(text) ? text.trim() : null;
}

const NUMBER_SHAPED = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Why an event cannot be accepted for this metric, if it matches it: a SUM, MAX or LATEST metric
 * needs its aggregation key to hold a number (a JSON number or a numeric string) when present.
 */
export function aggregationProblem(rule: MetricRule, event: MeteredEvent): string | undefined {
  if (rule.aggregationType === 'COUNT' || rule.aggregationType === 'UNIQUE' || !rule.aggregationKey) return undefined;
  const text = propertyText(event.properties, rule.aggregationKey);
  if (text === null || isDecimalString(text)) return undefined;
  if (NUMBER_SHAPED.test(text.trim())) {
    return `is out of range for ${rule.aggregationType} metrics (at most 100 digits before and after the point, exponent at most 3 digits), got ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)}`;
  }
  return `must be a number for ${rule.aggregationType} metrics, got ${JSON.stringify(event.properties[rule.aggregationKey])}`;
}

/**
 * Values that become part of an aggregate's key (UNIQUE values, group values) must fit a
 * PostgreSQL index entry (~2.7 kB per row of usage_unique_hourly, which holds both): Accrue
 * allows 1,024 bytes (UTF-8) for the UNIQUE value and 1,024 for all group values together.
 * Larger ones are refused at ingest instead of being accepted and then quarantined by the rater.
 */
export const MAX_KEY_VALUE_BYTES = 1024;

/** Why an event's UNIQUE value or group values cannot be aggregated for this metric, naming the property. */
export function keySizeProblem(rule: MetricRule, event: MeteredEvent): { property: string; message: string } | undefined {
  if (rule.aggregationType === 'UNIQUE' && rule.aggregationKey) {
    const text = propertyText(event.properties, rule.aggregationKey);
    if (text !== null && Buffer.byteLength(text, 'utf8') > MAX_KEY_VALUE_BYTES) {
      return { property: rule.aggregationKey, message: `is longer than ${MAX_KEY_VALUE_BYTES} bytes, the most a UNIQUE metric counts` };
    }
  }
  let total = 0;
  for (const key of groupKeyUnion(rule)) {
    const text = propertyText(event.properties, key);
    if (text === null) continue;
    total += Buffer.byteLength(text, 'utf8');
    if (total > MAX_KEY_VALUE_BYTES) return { property: key, message: `makes the group values longer than ${MAX_KEY_VALUE_BYTES} bytes in all, the most a metric groups by` };
  }
  return undefined;
}

export function groupKeyUnion(rule: MetricRule): string[] {
  return [...new Set((rule.groupKeys ?? []).flat())].sort();
}

/** The event's group values over the union of the metric's group keys. */
export function groupValues(rule: MetricRule, event: MeteredEvent): Record<string, string | null> {
  return Object.fromEntries(groupKeyUnion(rule).map((k) => [k, propertyText(event.properties, k)]));
}
