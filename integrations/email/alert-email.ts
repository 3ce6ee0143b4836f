import { dec, formatUsdCents, roundAmount } from '../../billing/money.js';
import type { OutgoingMail } from './mailer.js';
import { facts, note, paragraph, renderMail } from './templates.js';

export interface AlertEmailFacts {
  notificationId: string;
  to: string;
  customerName: string;
  /** The notification's properties (alert id, name, type, threshold, value, timestamp). */
  properties: Record<string, unknown>;
}

const MONEY_TYPES = new Set(['spend_threshold_reached', 'invoice_total_reached', 'low_credit_balance_reached', 'low_remaining_commit_balance_reached']);
const PERCENT_TYPES = new Set(['low_remaining_commit_percentage_reached', 'low_remaining_credit_percentage_reached']);

/** Amounts are cents (the stored decimals); percentages and usage are shown as numbers. */
function shown(type: string, v: unknown): string {
  if (v === null || v === undefined) return '-';
  const s = String(v);
  if (MONEY_TYPES.has(type)) return formatUsdCents(roundAmount(dec(s)));
  if (PERCENT_TYPES.has(type)) return `${dec(s).toDecimalPlaces(2).toString()} %`;
  return dec(s).toString();
}

const WHAT: Record<string, string> = {
  spend_threshold_reached: 'Your spend this billing period has reached',
  invoice_total_reached: 'Your current invoice total has reached',
  usage_threshold_reached: 'Your usage this billing period has reached',
  low_credit_balance_reached: 'Your remaining credit balance has fallen to',
  low_remaining_credit_percentage_reached: 'Your remaining credit has fallen to',
  low_remaining_commit_balance_reached: 'Your remaining commit balance has fallen to',
  low_remaining_commit_percentage_reached: 'Your remaining commit has fallen to',
};

/** The email an alert's crossing sends to the customer's billing contact. */
export function renderAlertEmail(f: AlertEmailFacts): OutgoingMail {
  const p = f.properties;
  const type = String(p.alert_type);
  const name = String(p.alert_name ?? type);
  const threshold = shown(type, p.threshold);
  const subject = `Alert: ${name}`;
  const { text, html } = renderMail(name, [
    paragraph(`Hello ${f.customerName},`),
    paragraph(`${WHAT[type] ?? 'An alert threshold was reached:'} ${shown(type, p.value)} (threshold ${threshold}).`),
    facts([
      ['Alert', name],
      ['Threshold', threshold],
      ['Current value', shown(type, p.value)],
      ['At', `${String(p.timestamp)} (UTC)`],
    ]),
    note(`Alert ${String(p.alert_id)}, notification ${f.notificationId}`),
  ]);
  return { to: f.to, subject, text, html, messageId: `<alert-${f.notificationId}@accrue.local>` };
}
