import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError } from '../../billing/errors.js';
import { DEFAULT_RENEWAL_NOTICE_DAYS, type ContractTerms, type StoredCharge, type StoredOverride, type TrialSpec } from '../../billing/contract-terms.js';
import { trialWindow } from '../../billing/trial.js';
import { jsonDecimal, USD_CENTS } from '../../billing/money.js';
import { gridPeriodContaining } from '../../billing/periods.js';
import { grantJson, type GrantBalance } from '../../db/balances.js';
import { findCustomer } from '../../db/customers.js';
import { BalanceGrant, Contract, Product } from '../../db/entities.js';
import { contractSchedule } from '../../db/invoices.js';
import { successorOf } from '../../db/rollover.js';
import { lifecycleStates } from '../../db/lifecycle.js';
import { rateJson } from '../../operations/input/pricing-input.js';
import { reqUuid, timestamp, type Obj } from '../../operations/input/validate.js';

/** A contract as Metronome shapes it (v1 Contract: initial, current, amendments), and the lookup the contract routes share. */

/** The one credit type Accrue bills in, as answers name it. */
export const CREDIT = { id: USD_CENTS.id, name: USD_CENTS.name };

function chargeJson(c: StoredCharge, products: Map<string, Product>) {
  return {
    id: c.id,
    product: { id: c.product_id, name: products.get(c.product_id)?.name ?? '' },
    ...(c.name ? { name: c.name } : {}),
    custom_fields: c.custom_fields ?? {},
    ...(c.netsuite_sales_order_id ? { netsuite_sales_order_id: c.netsuite_sales_order_id } : {}),
    schedule: {
      credit_type: CREDIT,
      schedule_items: c.schedule.schedule_items.map((i) => ({ id: i.id, timestamp: i.timestamp, amount: jsonDecimal(i.amount), quantity: jsonDecimal(i.quantity), unit_price: jsonDecimal(i.unit_price) })),
    },
  };
}

function overrideJson(o: StoredOverride, products: Map<string, Product>, createdAt: string) {
  return {
    id: o.id, created_at: createdAt, starting_at: o.starting_at,
    ...(o.ending_before ? { ending_before: o.ending_before } : {}),
    ...(o.type ? { type: o.type } : {}),
    ...(o.product_id ? { product: { id: o.product_id, name: products.get(o.product_id)?.name ?? '' } } : {}),
    ...(o.applicable_product_tags ? { applicable_product_tags: o.applicable_product_tags } : {}),
    ...(o.override_specifiers ? { override_specifiers: o.override_specifiers } : {}),
    ...(o.multiplier !== undefined ? { multiplier: jsonDecimal(o.multiplier) } : {}),
    ...(o.overwrite_rate ? { overwrite_rate: rateJson(o.overwrite_rate, { credit_type: CREDIT }) } : {}),
    ...(o.entitled !== undefined ? { entitled: o.entitled } : {}),
    ...(o.priority !== undefined ? { priority: o.priority } : {}),
  };
}

/** The trial as given, plus the instants it starts and ends (the same function the workflow's timers use). */
function trialSpecJson(t: TrialSpec, startingAt: string) {
  const w = trialWindow(startingAt, t);
  return {
    length_in_days: t.length_in_days,
    ...(t.spending_cap ? { spending_cap: { amount: jsonDecimal(t.spending_cap.amount), credit_type: CREDIT } } : {}),
    ...(t.convert ? { convert: t.convert } : {}),
    starting_at: w.start,
    ending_before: w.end,
  };
}

/**
 * `opts.asOf`: `current` is the contract as its amendment history had it at that instant — the
 * initial terms, every amendment whose starting_at is not after it and every v2 edit made by
 * then (terms added before edits were recorded count as always there). Name, end date and
 * policies are today's: their earlier values are not kept.
 */
export async function contractJson(em: EntityManager, c: Contract, balances?: Map<string, GrantBalance>, opts: { ledgers?: boolean; asOf?: string } = {}) {
  const grants = await em.find(BalanceGrant, { contractId: c.id }, { orderBy: { createdAt: 'asc', id: 'asc' } });
  const terms = c.terms ?? {};
  const productIds = new Set<string>([...grants.map((g) => g.productId), ...(terms.overrides ?? []).flatMap((o) => (o.product_id ? [o.product_id] : [])),
    ...(terms.scheduled_charges ?? []).map((x) => x.product_id), ...(terms.discounts ?? []).map((x) => x.product_id)]);
  const products = new Map((await em.find(Product, { id: { $in: [...productIds] } })).map((p) => [p.id, p]));
  const created = c.createdAt.toISOString();
  const grantOut = (list: BalanceGrant[], kind: 'COMMIT' | 'CREDIT') => list.filter((g) => (kind === 'CREDIT') === (g.kind === 'CREDIT')).map((g) => {
    const b = balances?.get(g.id);
    return grantJson(g, products.get(g.productId), b ? { balance: b.balance, ...(opts.ledgers ? { ledger: b.ledger } : {}) } : {});
  });
  const sched = contractSchedule(c);
  // `initial` is the contract as created, `current` with every amendment, `amendments` each one.
  const termsOf = (pick: (amendmentId: string | null | undefined) => boolean) => ({
    commits: grantOut(grants.filter((g) => pick(g.amendmentId)), 'COMMIT'),
    credits: grantOut(grants.filter((g) => pick(g.amendmentId)), 'CREDIT'),
    overrides: (terms.overrides ?? []).filter((o) => pick(o.amendment_id)).map((o) => overrideJson(o, products, o.created_at ?? created)),
    scheduled_charges: (terms.scheduled_charges ?? []).filter((x) => pick(x.amendment_id)).map((x) => chargeJson(x, products)),
    discounts: (terms.discounts ?? []).filter((x) => pick(x.amendment_id)).map((x) => chargeJson(x, products)),
  });
  const body = (items: ReturnType<typeof termsOf>) => ({
    created_at: created, created_by: 'accrue', starting_at: c.startingAt.toISOString(),
    ...(c.endingBefore ? { ending_before: c.endingBefore.toISOString() } : {}),
    ...(c.name ? { name: c.name } : {}),
    rate_card_id: c.rateCardId,
    usage_statement_schedule: { frequency: c.usageStatementFrequency, billing_anchor_date: gridPeriodContaining(sched, sched.startingAt).start },
    transitions,
    ...items,
    ...(terms.net_payment_terms_days !== undefined ? { net_payment_terms_days: terms.net_payment_terms_days } : {}),
    ...(terms.total_contract_value !== undefined ? { total_contract_value: jsonDecimal(terms.total_contract_value) } : {}),
    ...(terms.multiplier_override_prioritization ? { multiplier_override_prioritization: terms.multiplier_override_prioritization } : {}),
    ...(terms.trial_spec ? { trial_spec: trialSpecJson(terms.trial_spec, c.startingAt.toISOString()) } : {}),
    renewal_notice_days: terms.renewal_notice_days ?? DEFAULT_RENEWAL_NOTICE_DAYS,
    // Absent: the contract follows the operator's ACCRUE_APPROVAL_POLICY.
    ...(terms.arrears_policy ? { arrears_policy: { gate_access: terms.arrears_policy.gate_access } } : {}),
    ...(terms.prepaid_balance_threshold_configuration ? {
      prepaid_balance_threshold_configuration: {
        ...terms.prepaid_balance_threshold_configuration,
        threshold_amount: jsonDecimal(terms.prepaid_balance_threshold_configuration.threshold_amount),
        recharge_to_amount: jsonDecimal(terms.prepaid_balance_threshold_configuration.recharge_to_amount),
      },
    } : {}),
    ...(terms.spend_threshold_configuration ? {
      spend_threshold_configuration: { ...terms.spend_threshold_configuration, threshold_amount: jsonDecimal(terms.spend_threshold_configuration.threshold_amount) },
    } : {}),
    ...(terms.approval_policy ? { approval_policy: { mode: terms.approval_policy.mode, ...(terms.approval_policy.amount !== undefined ? { amount: jsonDecimal(terms.approval_policy.amount) } : {}) } } : {}),
  });
  const successor = await successorOf(em, c.id);
  const transitions = [
    ...(terms.transition ? [{ from_contract_id: terms.transition.from_contract_id, to_contract_id: c.id, type: terms.transition.type }] : []),
    ...(successor?.terms?.transition ? [{ from_contract_id: c.id, to_contract_id: successor.id, type: successor.terms.transition.type }] : []),
  ];
  const amendments = (terms.amendments ?? []).map((a) => ({
    id: a.id, starting_at: a.starting_at, created_at: a.created_at, created_by: a.created_by,
    ...(a.netsuite_sales_order_id ? { netsuite_sales_order_id: a.netsuite_sales_order_id } : {}),
    ...(a.salesforce_opportunity_id ? { salesforce_opportunity_id: a.salesforce_opportunity_id } : {}),
    ...termsOf((id) => id === a.id),
  }));
  return {
    id: c.id,
    customer_id: c.customerId,
    initial: body(termsOf((id) => !id)),
    current: body(termsOf(opts.asOf ? inEffectAt(terms, Date.parse(opts.asOf)) : () => true)),
    amendments,
    custom_fields: c.customFields ?? {},
    ...(c.uniquenessKey ? { uniqueness_key: c.uniquenessKey } : {}),
    ...(c.archivedAt ? { archived_at: c.archivedAt.toISOString() } : {}),
    // Accrue: the contract's lifecycle state (GET /v1/accrue/contracts/{id}/lifecycle has its story).
    accrue_lifecycle_state: (await lifecycleStates(em, [c])).get(c.id)!.state,
  };
}

/** Whether what an amendment or edit (by id; none: the initial terms) added was in effect at `at`. */
function inEffectAt(terms: ContractTerms, at: number): (amendmentId: string | null | undefined) => boolean {
  const from = new Map<string, number>([
    ...(terms.amendments ?? []).map((a) => [a.id, Date.parse(a.starting_at)] as const),
    ...(terms.edits ?? []).map((e) => [e.id, Date.parse(e.created_at)] as const),
  ]);
  return (id) => !id || (from.get(id) ?? -Infinity) <= at;
}

export async function findContract(em: EntityManager, body: Obj): Promise<Contract> {
  const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
  const id = reqUuid(body, 'contract_id');
  const c = await em.findOne(Contract, { id, customerId: customer.id });
  if (!c) throw new NotFoundError('contract', id, 'contract_id');
  return c;
}
