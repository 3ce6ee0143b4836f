import { dec, isDecimalString } from './money.js';
import { addDays, addMonthsClamped } from './periods.js';

/**
 * What a HubSpot deal says about its contract, and what Accrue writes back to the CRM — pure, so
 * both rules are table-tested (billing/crm.test.ts) and the activities only move data.
 */

/** The deal properties Accrue reads (HubSpot's own and Accrue's custom ones). */
export const DEAL_PROPERTIES = ['dealname', 'dealstage', 'hubspot_owner_id', 'accrue_rate_card', 'accrue_start_date', 'accrue_term_months', 'accrue_commit_amount', 'accrue_trial_days', 'accrue_renewal_notice_days', 'accrue_net_payment_terms_days'] as const;

export interface DealContractPlan {
  /** A rate card id (uuid) or alias. */
  rateCard: { id: string } | { alias: string };
  startingAt: string;
  endingBefore?: string;
  /** The prepaid commit, in cents (the deal says it in the currency's units). */
  commitCents?: string;
  trialDays?: number;
  renewalNoticeDays?: number;
  netPaymentTermsDays?: number;
  name: string;
}

export interface DealProblem {
  property: string;
  message: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** HubSpot sends unset properties as null or "". */
function present(v: string | null | undefined): string | undefined {
  const t = v?.trim();
  return t ? t : undefined;
}

/**
 * A deal's start date: `YYYY-MM-DD` (midnight UTC), an ISO timestamp, or epoch milliseconds (how
 * HubSpot stores date properties: midnight UTC). Contracts start on an hour boundary.
 */
export function dealDate(raw: string): number | string {
  let ms: number;
  if (/^\d{1,16}$/.test(raw)) ms = Number(raw);
  else if (/^\d{4}-\d{2}-\d{2}$/.test(raw)) ms = Date.parse(`${raw}T00:00:00Z`);
  else if (/^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:?\d{2})$/.test(raw)) ms = Date.parse(raw);
  else return 'must be a date (YYYY-MM-DD), an ISO timestamp or epoch milliseconds';
  if (!Number.isFinite(ms) || ms < Date.UTC(2000, 0, 1) || ms > Date.UTC(2200, 0, 1)) return 'is not a valid date';
  if (ms % 3_600_000 !== 0) return 'must fall on a whole hour (UTC)';
  return ms;
}

function wholeNumber(raw: string, min: number, max: number): number | string {
  if (!/^\d{1,6}(\.0+)?$/.test(raw)) return `must be a whole number from ${min} to ${max}`;
  const n = Number(raw.split('.')[0]);
  return n < min || n > max ? `must be a whole number from ${min} to ${max}` : n;
}

/**
 * The contract a closed-won deal asks for, or every problem with its properties (each naming the
 * property). `accrue_rate_card` and `accrue_start_date` are required; `accrue_term_months` gives
 * the end date (open-ended without it); `accrue_commit_amount` (in the currency's units, at most
 * 2 decimals) is a prepaid commit over the whole term, so it needs the term; `accrue_trial_days`
 * starts the contract with a trial of that many days; `accrue_renewal_notice_days` sets when the
 * renewal notice comes (30 days before the end by default, 0 for none);
 * `accrue_net_payment_terms_days` when its invoices are due (30 days after they are issued by
 * default).
 */
export function planContractFromDeal(dealId: string, props: Record<string, string | null | undefined>): { plan: DealContractPlan } | { problems: DealProblem[] } {
  const problems: DealProblem[] = [];
  const problem = (property: string, message: string) => problems.push({ property, message });

  const card = present(props.accrue_rate_card);
  let rateCard: DealContractPlan['rateCard'] | undefined;
  if (!card) problem('accrue_rate_card', 'is missing: set it to the rate card id or alias the contract is priced with');
  else if (card.length > 256) problem('accrue_rate_card', 'is longer than 256 characters');
  else rateCard = UUID_RE.test(card) ? { id: card.toLowerCase() } : { alias: card };

  const startRaw = present(props.accrue_start_date);
  let start: number | undefined;
  if (!startRaw) problem('accrue_start_date', 'is missing: set it to the day the contract starts');
  else {
    const d = dealDate(startRaw);
    if (typeof d === 'string') problem('accrue_start_date', `${d}, got ${JSON.stringify(startRaw)}`);
    else start = d;
  }

  const termRaw = present(props.accrue_term_months);
  let term: number | undefined;
  if (termRaw) {
    const n = wholeNumber(termRaw, 1, 120);
    if (typeof n === 'string') problem('accrue_term_months', `${n}, got ${JSON.stringify(termRaw)}`);
    else term = n;
  }

  const commitRaw = present(props.accrue_commit_amount)?.replace(/,/g, '');
  let commitCents: string | undefined;
  if (commitRaw) {
    if (!isDecimalString(commitRaw) || /e/i.test(commitRaw) || !dec(commitRaw).gt(0) || dec(commitRaw).decimalPlaces() > 2 || dec(commitRaw).gte('1e12')) {
      problem('accrue_commit_amount', `must be a positive amount with at most 2 decimals (in the currency's units, e.g. 5000 or 1250.50), got ${JSON.stringify(props.accrue_commit_amount)}`);
    } else if (!termRaw) {
      problem('accrue_commit_amount', 'needs accrue_term_months: the prepaid commit is available over the contract\'s term');
    } else commitCents = dec(commitRaw).times(100).toFixed(0);
  }

  const trialRaw = present(props.accrue_trial_days);
  let trialDays: number | undefined;
  if (trialRaw) {
    const n = wholeNumber(trialRaw, 1, 365);
    if (typeof n === 'string') problem('accrue_trial_days', `${n}, got ${JSON.stringify(trialRaw)}`);
    else trialDays = n;
  }
  const noticeRaw = present(props.accrue_renewal_notice_days);
  let renewalNoticeDays: number | undefined;
  if (noticeRaw) {
    const n = wholeNumber(noticeRaw, 0, 365);
    if (typeof n === 'string') problem('accrue_renewal_notice_days', `${n}, got ${JSON.stringify(noticeRaw)}`);
    else renewalNoticeDays = n;
  }
  const netRaw = present(props.accrue_net_payment_terms_days);
  let netPaymentTermsDays: number | undefined;
  if (netRaw) {
    const n = wholeNumber(netRaw, 0, 365);
    if (typeof n === 'string') problem('accrue_net_payment_terms_days', `${n}, got ${JSON.stringify(netRaw)}`);
    else netPaymentTermsDays = n;
  }
  if (start !== undefined && term !== undefined && trialDays !== undefined && addDays(start, trialDays) > addMonthsClamped(start, term)) {
    problem('accrue_trial_days', `the trial (${trialDays} days) is longer than the term (${term} months)`);
  }

  if (problems.length) return { problems };
  return {
    plan: {
      rateCard: rateCard!,
      startingAt: new Date(start!).toISOString(),
      ...(term !== undefined ? { endingBefore: new Date(addMonthsClamped(start!, term)).toISOString() } : {}),
      ...(commitCents ? { commitCents } : {}),
      ...(trialDays !== undefined ? { trialDays } : {}),
      ...(renewalNoticeDays !== undefined ? { renewalNoticeDays } : {}),
      ...(netPaymentTermsDays !== undefined ? { netPaymentTermsDays } : {}),
      name: present(props.dealname) ?? `HubSpot deal ${dealId}`,
    },
  };
}

/** The note Accrue leaves on a deal it could not turn into a contract. */
export function dealProblemNote(problems: readonly DealProblem[]): string {
  return `Accrue could not create the contract for this deal. Fix ${problems.length === 1 ? 'this property' : 'these properties'} and save the deal again:\n`
    + problems.map((p) => `- ${p.property}: ${p.message}`).join('\n');
}

/** The billing facts of a customer (on its company) or of one contract (on its deal). */
export interface CrmFacts {
  currentPeriodSpendCents: string | null;
  commitRemainingCents: string | null;
  lifecycleState: string | null;
  lastInvoice: { id: string; totalCents: string; status: string } | null;
  renewalDate: string | null;
}

export type CrmPropertyType = { type: 'number'; fieldType: 'number' } | { type: 'string'; fieldType: 'text' } | { type: 'datetime'; fieldType: 'date' };

/** How each field is defined when Accrue creates its property (HubSpot's properties API). */
export const CRM_PROPERTY_DEFINITIONS: Record<'current_period_spend' | 'commit_remaining' | 'lifecycle_state' | 'last_invoice_number' | 'last_invoice_total' | 'last_invoice_status' | 'renewal_date', { label: string; description: string } & CrmPropertyType> = {
  current_period_spend: { label: 'Accrue: current-period spend', description: 'What the current billing period has cost so far (the live draft invoice), in the currency\'s units.', type: 'number', fieldType: 'number' },
  commit_remaining: { label: 'Accrue: commit remaining', description: 'What is left of prepaid and postpaid commits, in the currency\'s units.', type: 'number', fieldType: 'number' },
  lifecycle_state: { label: 'Accrue: lifecycle state', description: 'TRIAL, ACTIVE, RENEWING, ARREARS, ENDED or ARCHIVED.', type: 'string', fieldType: 'text' },
  last_invoice_number: { label: 'Accrue: last invoice', description: 'The id of the last finalized invoice.', type: 'string', fieldType: 'text' },
  last_invoice_total: { label: 'Accrue: last invoice total', description: 'The total of the last finalized invoice, in the currency\'s units.', type: 'number', fieldType: 'number' },
  last_invoice_status: { label: 'Accrue: last invoice status', description: 'PAID, UNPAID, PARTIALLY_PAID or VOID.', type: 'string', fieldType: 'text' },
  renewal_date: { label: 'Accrue: renewal date', description: 'When the contract ends (its renewal date).', type: 'datetime', fieldType: 'date' },
};

const dollars = (cents: string | null) => (cents === null ? '' : dec(cents).div(100).toFixed(2));

/**
 * The property values to write, by property name (`names` maps each field to its configured
 * property). An unknown fact is written as "" (HubSpot clears the property).
 */
export function crmPropertyValues(facts: CrmFacts, names: Record<keyof typeof CRM_PROPERTY_DEFINITIONS, string>): Record<string, string> {
  return {
    [names.current_period_spend]: dollars(facts.currentPeriodSpendCents),
    [names.commit_remaining]: dollars(facts.commitRemainingCents),
    [names.lifecycle_state]: facts.lifecycleState ?? '',
    [names.last_invoice_number]: facts.lastInvoice?.id ?? '',
    [names.last_invoice_total]: dollars(facts.lastInvoice?.totalCents ?? null),
    [names.last_invoice_status]: facts.lastInvoice?.status ?? '',
    [names.renewal_date]: facts.renewalDate ?? '',
  };
}

/** Only what differs from what was last written (so a sync that changes nothing writes nothing). */
export function changedProperties(next: Record<string, string>, last: Record<string, string> | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(next)) if (!last || last[k] !== v) out[k] = v;
  return out;
}
