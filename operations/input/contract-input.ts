import type { SpendThresholdConfig, ThresholdConfig } from '../../billing/recharge.js';
import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import type { AccessSchedule, ContractTerms, GrantSpecifier, InvoiceSchedule, StoredCharge, StoredOverride, StoredScheduleItem, TrialSpec } from '../../billing/contract-terms.js';
import { dec, divideAmount, divideAmountRounded, roundAmount, USD_CENTS } from '../../billing/money.js';
import { addMonthsClamped } from '../../billing/periods.js';
import { trialWindow } from '../../billing/trial.js';
import { APPROVAL_MODES, type ApprovalPolicy } from '../../billing/approval-policy.js';
import { invoiceMetadataInput, type PaymentGateConfig, type StripeGateConfig } from '../../billing/stripe-metadata.js';
import { BalanceGrant, Product, type ExternalIds } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { rateSpecInput, RATE_SPEC_FIELDS } from './pricing-input.js';
import { bool, decimal, objectAt, oneOf, reqStr, reqUuid, str, stringArray, stringRecord, timestamp, uuid, uuidArray, type Obj } from './validate.js';

/**
 * Contract terms from Metronome-shaped input (create, amend): overrides, commits, credits,
 * discounts and scheduled charges. Each item gets its id here; everything is validated before
 * anything is written, and each error names the field's path (e.g. `commits[0].access_schedule`).
 */

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

function arrayAt(o: Obj, key: string, path: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ValidationError(join(path, key), 'must be an array');
  return v;
}

function creditType(o: Obj, key: string, path: string) {
  const id = uuid(o, key, path, { optional: true });
  if (id && id !== USD_CENTS.id) throw new ValidationError(join(path, key), `only USD (cents) ${USD_CENTS.id} is supported`);
}

/** Amounts of commits and credits are whole units of the credit type (cents), so draw-downs stay exact. */
function wholeAmount(o: Obj, key: string, path: string): string {
  const a = decimal(o, key, path, { min: 0 })!;
  if (!roundAmount(dec(a)).eq(dec(a))) throw new ValidationError(join(path, key), 'must be a whole number of cents');
  return dec(a).toString();
}

export class ProductLookup {
  private readonly cache = new Map<string, Product | null>();
  constructor(private readonly em: EntityManager) {}
  async get(o: Obj, key: string, path: string, types?: readonly Product['type'][]): Promise<Product> {
    const id = reqUuid(o, key, path);
    if (!this.cache.has(id)) this.cache.set(id, await this.em.findOne(Product, { id }));
    const p = this.cache.get(id);
    if (!p) throw new NotFoundError('product', id, join(path, key));
    if (p.archivedAt) throw new ValidationError(join(path, key), 'refers to an archived product');
    if (types && !types.includes(p.type)) throw new ValidationError(join(path, key), `must be a ${types.join(' or ')} product, got ${p.type}`);
    return p;
  }
}

const MONTHS = { MONTHLY: 1, QUARTERLY: 3, SEMI_ANNUAL: 6, ANNUAL: 12 } as const;

/** schedule_items and/or a recurring_schedule, as concrete items (amount = quantity × unit_price). */
export function scheduleItemsInput(s: Obj, path: string): StoredScheduleItem[] {
  const items: StoredScheduleItem[] = arrayAt(s, 'schedule_items', path).map((raw, i) => {
    const p = `${path}.schedule_items[${i}]`;
    const it = objectAt(raw, p, ['timestamp', 'amount', 'quantity', 'unit_price']);
    return itemAmounts(it, p, timestamp(it, 'timestamp', p)!);
  });
  if (s.recurring_schedule !== undefined && s.recurring_schedule !== null) {
    const p = `${path}.recurring_schedule`;
    const r = objectAt(s.recurring_schedule, p, ['amount_distribution', 'frequency', 'starting_at', 'ending_before', 'amount', 'quantity', 'unit_price']);
    const distribution = oneOf(r, 'amount_distribution', ['DIVIDED', 'DIVIDED_ROUNDED', 'EACH'] as const, p)!;
    const frequency = oneOf(r, 'frequency', Object.keys(MONTHS) as (keyof typeof MONTHS)[], p)!;
    const start = Date.parse(timestamp(r, 'starting_at', p)!);
    const end = Date.parse(timestamp(r, 'ending_before', p)!);
    if (end <= start) throw new ValidationError(`${p}.ending_before`, 'must be after starting_at');
    const stamps: number[] = [];
    for (let k = 0; ; k++) {
      const t = addMonthsClamped(start, k * MONTHS[frequency]);
      if (t >= end) break;
      stamps.push(t);
      if (stamps.length > 1200) throw new ValidationError(p, 'produces more than 1200 charges');
    }
    const base = itemAmounts(r, p, new Date(start).toISOString());
    const total = dec(base.amount);
    // The parts always sum to the total (billing/money.ts): DIVIDED spreads the remainder cents.
    const parts = distribution === 'DIVIDED' ? divideAmount(total, stamps.length)
      : distribution === 'DIVIDED_ROUNDED' ? divideAmountRounded(total, stamps.length) : undefined;
    stamps.forEach((t, i) => {
      const amount = parts ? parts[i]! : total;
      const quantity = distribution === 'EACH' ? base.quantity : '1';
      const unit = distribution === 'EACH' ? base.unit_price : amount.toString();
      items.push({ id: newId(), timestamp: new Date(t).toISOString(), amount: amount.toString(), quantity, unit_price: unit });
    });
  }
  if (!items.length) throw new ValidationError(path, 'needs schedule_items or a recurring_schedule');
  return items;
}

function itemAmounts(it: Obj, p: string, ts: string): StoredScheduleItem {
  const amount = decimal(it, 'amount', p, { optional: true });
  const quantity = decimal(it, 'quantity', p, { optional: true });
  const unitPrice = decimal(it, 'unit_price', p, { optional: true });
  if (amount !== undefined && (quantity !== undefined || unitPrice !== undefined)) throw new ValidationError(`${p}.amount`, 'give either amount or unit_price and quantity, not both');
  if (amount === undefined && (quantity === undefined || unitPrice === undefined)) throw new ValidationError(`${p}.amount`, 'is required (or unit_price and quantity)');
  const q = quantity ?? '1';
  const u = unitPrice ?? amount!;
  return { id: newId(), timestamp: ts, amount: dec(q).times(dec(u)).toString(), quantity: dec(q).toString(), unit_price: dec(u).toString() };
}

function specifiersInput(o: Obj, key: string, path: string, withPresentation = true): GrantSpecifier[] | undefined {
  const list = arrayAt(o, key, path);
  if (!list.length) return undefined;
  return list.map((raw, i) => {
    const p = `${join(path, key)}[${i}]`;
    const s = objectAt(raw, p, ['product_id', 'product_tags', 'pricing_group_values', ...(withPresentation ? ['presentation_group_values'] : []), 'billing_frequency']);
    const out: GrantSpecifier & { billing_frequency?: string } = {};
    const pid = uuid(s, 'product_id', p, { optional: true });
    if (pid) out.product_id = pid;
    const tags = stringArray(s, 'product_tags', p, { optional: true });
    if (tags) out.product_tags = tags;
    const pgv = stringRecord(s, 'pricing_group_values', p);
    if (pgv) out.pricing_group_values = pgv;
    const prv = withPresentation ? stringRecord(s, 'presentation_group_values', p) : undefined;
    if (prv) out.presentation_group_values = prv;
    const bf = oneOf(s, 'billing_frequency', ['MONTHLY', 'QUARTERLY', 'ANNUAL', 'WEEKLY'] as const, p, { optional: true });
    if (bf) out.billing_frequency = bf;
    return out;
  });
}

export async function overridesInput(o: Obj, key: string, path: string, products: ProductLookup, amendmentId?: string): Promise<StoredOverride[]> {
  const out: StoredOverride[] = [];
  const list = arrayAt(o, key, path);
  for (let i = 0; i < list.length; i++) {
    const p = `${join(path, key)}[${i}]`;
    const v = objectAt(list[i], p, ['starting_at', 'ending_before', 'type', 'product_id', 'applicable_product_tags', 'override_specifiers', 'multiplier', 'overwrite_rate', 'entitled', 'priority', 'is_commit_specific', 'target', 'tiers']);
    if (v.tiers !== undefined || v.type === 'TIERED') throw new ValidationError(`${p}.type`, 'TIERED overrides are not supported; use OVERWRITE with a TIERED rate');
    if (v.is_commit_specific === true) throw new ValidationError(`${p}.is_commit_specific`, 'commit-specific overrides are not supported');
    if (v.target !== undefined) throw new ValidationError(`${p}.target`, 'is only used by commit-specific overrides, which are not supported');
    const startingAt = timestamp(v, 'starting_at', p)!;
    const endingBefore = timestamp(v, 'ending_before', p, { optional: true });
    if (endingBefore && Date.parse(endingBefore) <= Date.parse(startingAt)) throw new ValidationError(`${p}.ending_before`, 'must be after starting_at');
    const ov: StoredOverride = { id: newId(), created_at: new Date().toISOString(), starting_at: startingAt, ...(endingBefore ? { ending_before: endingBefore } : {}), ...(amendmentId ? { amendment_id: amendmentId } : {}) };
    const specifiers = specifiersInput(v, 'override_specifiers', p, false);
    const productId = uuid(v, 'product_id', p, { optional: true });
    const tags = stringArray(v, 'applicable_product_tags', p, { optional: true });
    if (specifiers && (productId || tags)) throw new ValidationError(`${p}.override_specifiers`, 'cannot be combined with product_id or applicable_product_tags');
    if (!specifiers && !productId && !tags?.length) throw new ValidationError(`${p}.product_id`, 'an override needs product_id, applicable_product_tags or override_specifiers');
    if (productId) { await products.get(v, 'product_id', p); ov.product_id = productId; }
    if (tags) ov.applicable_product_tags = tags;
    if (specifiers) {
      for (let j = 0; j < specifiers.length; j++) {
        if (specifiers[j]!.product_id) await products.get(specifiers[j] as Obj, 'product_id', `${p}.override_specifiers[${j}]`);
      }
      ov.override_specifiers = specifiers;
    }
    const type = oneOf(v, 'type', ['OVERWRITE', 'MULTIPLIER'] as const, p, { optional: true });
    const entitled = bool(v, 'entitled', p, { optional: true });
    if (entitled !== undefined) ov.entitled = entitled;
    if (type === undefined && entitled === undefined) throw new ValidationError(`${p}.type`, 'is required (OVERWRITE or MULTIPLIER) unless the override only sets entitled');
    if (type) ov.type = type;
    if (type === 'MULTIPLIER') {
      ov.multiplier = decimal(v, 'multiplier', p, { min: 0 })!;
      if (v.overwrite_rate !== undefined) throw new ValidationError(`${p}.overwrite_rate`, 'is only used by OVERWRITE overrides');
    } else if (type === 'OVERWRITE') {
      const rp = `${p}.overwrite_rate`;
      ov.overwrite_rate = rateSpecInput(objectAt(v.overwrite_rate, rp, RATE_SPEC_FIELDS), rp);
      if (v.multiplier !== undefined) throw new ValidationError(`${p}.multiplier`, 'is only used by MULTIPLIER overrides');
    }
    if (v.priority !== undefined && v.priority !== null) {
      if (typeof v.priority !== 'number' || !(v.priority > 0)) throw new ValidationError(`${p}.priority`, 'must be a number > 0');
      ov.priority = v.priority;
    }
    out.push(ov);
  }
  return out;
}

export async function chargesInput(o: Obj, key: 'scheduled_charges' | 'discounts', path: string, products: ProductLookup, amendmentId?: string): Promise<StoredCharge[]> {
  const out: StoredCharge[] = [];
  const list = arrayAt(o, key, path);
  for (let i = 0; i < list.length; i++) {
    const p = `${join(path, key)}[${i}]`;
    const v = objectAt(list[i], p, ['product_id', 'schedule', 'name', 'custom_fields', 'netsuite_sales_order_id']);
    const product = await products.get(v, 'product_id', p, ['FIXED', 'PRO_SERVICE']);
    const sp = `${p}.schedule`;
    const s = objectAt(v.schedule, sp, ['credit_type_id', 'schedule_items', 'recurring_schedule', 'do_not_invoice']);
    creditType(s, 'credit_type_id', sp);
    if (s.do_not_invoice !== undefined) throw new ValidationError(`${sp}.do_not_invoice`, 'only applies to commit invoice schedules');
    out.push({
      id: newId(), created_at: new Date().toISOString(), product_id: product.id, ...(v.name !== undefined ? { name: reqStr(v, 'name', p) } : {}),
      custom_fields: stringRecord(v, 'custom_fields', p) ?? {},
      schedule: { credit_type_id: USD_CENTS.id, schedule_items: scheduleItemsInput(s, sp) },
      ...(amendmentId ? { amendment_id: amendmentId } : {}),
      ...externalIdsInput(v, p, ['netsuite_sales_order_id']),
    });
  }
  return out;
}

/**
 * A payment gate's stripe_config: INVOICE payments only; `invoice_metadata` goes on the gate's
 * Stripe invoice (billing/stripe-metadata.ts), so it needs the STRIPE gate and INVOICE payments.
 * Undefined when absent.
 */
function stripeConfigInput(gate: Obj, gp: string, gateType: 'NONE' | 'STRIPE'): StripeGateConfig | undefined {
  if (gate.stripe_config === undefined || gate.stripe_config === null) return undefined;
  const sp = `${gp}.stripe_config`;
  const sc = objectAt(gate.stripe_config, sp, ['payment_type', 'invoice_metadata']);
  const metadata = sc.invoice_metadata !== undefined && sc.invoice_metadata !== null;
  const invoice = sc.payment_type === undefined || sc.payment_type === 'INVOICE';
  if (metadata && !invoice) throw new ValidationError(`${sp}.invoice_metadata`, `only applies to payment_type INVOICE, got ${JSON.stringify(sc.payment_type)}`);
  if (!invoice) throw new ValidationError(`${sp}.payment_type`, 'only INVOICE is supported by Accrue');
  if (metadata && gateType !== 'STRIPE') throw new ValidationError(`${sp}.invoice_metadata`, `only applies to payment_gate_type STRIPE (its Stripe invoice), got ${gateType}`);
  return { payment_type: 'INVOICE', ...(metadata ? { invoice_metadata: invoiceMetadataInput(sc.invoice_metadata, `${sp}.invoice_metadata`) } : {}) };
}

/** NetSuite and Salesforce ids given with a commit, credit, charge or amendment: kept and returned as given. */
export function externalIdsInput(v: Obj, path: string, keys: readonly ('netsuite_sales_order_id' | 'salesforce_opportunity_id')[] = ['netsuite_sales_order_id', 'salesforce_opportunity_id']): ExternalIds {
  const out: ExternalIds = {};
  for (const k of keys) {
    const id = str(v, k, path, { optional: true, max: 256 });
    if (id !== undefined) out[k] = id;
  }
  return out;
}

const GRANT_FIELDS = ['product_id', 'access_schedule', 'priority', 'applicable_product_ids', 'applicable_product_tags', 'specifiers',
  'name', 'description', 'custom_fields', 'rollover_fraction', 'rate_type', 'uniqueness_key', 'netsuite_sales_order_id', 'salesforce_opportunity_id'];

/** A commit (kind from `type`) or a credit, for a contract (contractId) or the customer (contractId null). */
export async function grantInput(
  raw: unknown, p: string, kind: 'COMMIT' | 'CREDIT',
  ctx: { customerId: string; contractId: string | null; products: ProductLookup; customerLevel?: boolean; amendmentId?: string; gates?: Map<string, PaymentGateConfig> },
): Promise<BalanceGrant> {
  const allowed = [...GRANT_FIELDS, ...(kind === 'COMMIT' ? ['type', 'invoice_schedule', 'amount', 'temporary_id', 'payment_gate_config'] : []),
    ...(ctx.customerLevel ? ['customer_id', 'applicable_contract_ids', ...(kind === 'COMMIT' ? ['invoice_contract_id'] : [])] : [])];
  const pp = p ? `${p}.` : '';
  const v = objectAt(raw, p, allowed);
  if (v.amount !== undefined) throw new ValidationError(`${pp}amount`, 'is deprecated; use access_schedule and invoice_schedule');
  const grantKind = kind === 'CREDIT' ? 'CREDIT' : (String(v.type ?? '').toUpperCase() as 'PREPAID' | 'POSTPAID');
  if (kind === 'COMMIT' && grantKind !== 'PREPAID' && grantKind !== 'POSTPAID') throw new ValidationError(`${pp}type`, `must be one of PREPAID, POSTPAID; got ${JSON.stringify(v.type)}`);
  // Payment-gated commits (contracts/create only): the commit takes effect once paid through Stripe.
  let gate: PaymentGateConfig = { payment_gate_type: 'NONE' };
  if (v.payment_gate_config !== undefined && v.payment_gate_config !== null) {
    const gp = `${pp}payment_gate_config`;
    if (!ctx.gates) throw new ValidationError(gp, 'is accepted on contracts/create only');
    const g = objectAt(v.payment_gate_config, gp, ['payment_gate_type', 'stripe_config', 'tax_type', 'precalculated_tax_config']);
    const t = oneOf(g, 'payment_gate_type', ['NONE', 'STRIPE', 'EXTERNAL'] as const, gp)!;
    if (t === 'EXTERNAL') throw new ValidationError(`${gp}.payment_gate_type`, 'EXTERNAL is not supported by Accrue; use STRIPE or NONE');
    if (g.tax_type !== undefined && g.tax_type !== 'NONE') throw new ValidationError(`${gp}.tax_type`, 'only NONE is supported by Accrue');
    if (g.precalculated_tax_config !== undefined) throw new ValidationError(`${gp}.precalculated_tax_config`, 'is not supported by Accrue');
    const stripeConfig = stripeConfigInput(g, gp, t);
    if (t === 'STRIPE' && grantKind !== 'PREPAID') throw new ValidationError(`${gp}.payment_gate_type`, 'only a PREPAID commit can be payment-gated');
    gate = { payment_gate_type: t, ...(stripeConfig ? { stripe_config: stripeConfig } : {}) };
  }
  const product = await ctx.products.get(v, 'product_id', p);

  const ap = `${pp}access_schedule`;
  const a = objectAt(v.access_schedule, ap, ['schedule_items', 'credit_type_id']);
  creditType(a, 'credit_type_id', ap);
  const segments = arrayAt(a, 'schedule_items', ap).map((rawItem, i) => {
    const ip = `${ap}.schedule_items[${i}]`;
    const it = objectAt(rawItem, ip, ['amount', 'starting_at', 'ending_before']);
    const s = timestamp(it, 'starting_at', ip)!;
    const e = timestamp(it, 'ending_before', ip)!;
    if (Date.parse(e) <= Date.parse(s)) throw new ValidationError(`${ip}.ending_before`, 'must be after starting_at');
    return { id: newId(), amount: wholeAmount(it, 'amount', ip), starting_at: s, ending_before: e };
  });
  if (!segments.length) throw new ValidationError(`${ap}.schedule_items`, 'must have at least one item');
  const accessSchedule: AccessSchedule = { credit_type_id: USD_CENTS.id, schedule_items: segments };

  let invoiceSchedule: InvoiceSchedule | null = null;
  if (kind === 'COMMIT' && v.invoice_schedule !== undefined && v.invoice_schedule !== null) {
    const ip = `${pp}invoice_schedule`;
    const s = objectAt(v.invoice_schedule, ip, ['credit_type_id', 'schedule_items', 'recurring_schedule', 'do_not_invoice']);
    creditType(s, 'credit_type_id', ip);
    const doNotInvoice = bool(s, 'do_not_invoice', ip, { optional: true }) ?? false;
    invoiceSchedule = { credit_type_id: USD_CENTS.id, do_not_invoice: doNotInvoice, schedule_items: scheduleItemsInput(s, ip) };
  }
  if (grantKind === 'POSTPAID') {
    if (segments.length !== 1) throw new ValidationError(`${ap}.schedule_items`, 'a POSTPAID commit has exactly one access schedule item');
    if (!invoiceSchedule || invoiceSchedule.schedule_items.length !== 1) throw new ValidationError(`${pp}invoice_schedule`, 'a POSTPAID commit needs exactly one invoice schedule item (when the true-up is billed)');
    if (!dec(invoiceSchedule.schedule_items[0]!.amount).eq(dec(segments[0]!.amount))) throw new ValidationError(`${pp}invoice_schedule`, 'a POSTPAID commit\'s invoice schedule total must equal its access amount');
  }

  let priority = 0;
  if (v.priority !== undefined && v.priority !== null) {
    if (typeof v.priority !== 'number' || !Number.isFinite(v.priority)) throw new ValidationError(`${pp}priority`, 'must be a number');
    priority = v.priority;
  } else if (ctx.customerLevel) throw new ValidationError(`${pp}priority`, 'is required');
  const specifiers = specifiersInput(v, 'specifiers', p) ?? null;
  const ids = uuidArray(v, 'applicable_product_ids', p, { optional: true }) ?? null;
  const tags = stringArray(v, 'applicable_product_tags', p, { optional: true }) ?? null;
  if (specifiers && (ids || tags)) throw new ValidationError(`${pp}specifiers`, 'cannot be combined with applicable_product_ids or applicable_product_tags');
  for (let i = 0; i < (ids ?? []).length; i++) await ctx.products.get({ id: ids![i] }, 'id', `${pp}applicable_product_ids[${i}]`);
  const rollover = decimal(v, 'rollover_fraction', p, { optional: true, min: 0 });
  if (rollover !== undefined && dec(rollover).gt(1)) throw new ValidationError(`${pp}rollover_fraction`, 'must be between 0 and 1');
  const invoiceContractId = ctx.customerLevel ? uuid(v, 'invoice_contract_id', p, { optional: true }) ?? null : null;
  if (ctx.customerLevel && grantKind !== 'CREDIT' && invoiceSchedule && !invoiceSchedule.do_not_invoice && !invoiceContractId) {
    throw new ValidationError(`${p ? `${pp}` : ''}invoice_contract_id`, 'is required for a commit with an invoice schedule: the contract whose invoices bill it');
  }
  const id = newId();
  if (gate.payment_gate_type === 'STRIPE') ctx.gates!.set(id, gate);
  return {
    id, customerId: ctx.customerId, contractId: ctx.contractId, kind: grantKind, productId: product.id,
    name: str(v, 'name', p, { optional: true }) ?? null, description: str(v, 'description', p, { optional: true }) ?? null,
    priority, applicableProductIds: ids, applicableProductTags: tags,
    applicableContractIds: ctx.customerLevel ? uuidArray(v, 'applicable_contract_ids', p, { optional: true }) ?? null : null,
    specifiers, accessSchedule, invoiceSchedule, invoiceContractId, rolloverFraction: rollover ?? null,
    rateType: oneOf(v, 'rate_type', ['COMMIT_RATE', 'LIST_RATE'] as const, p, { optional: true }) ?? null,
    customFields: stringRecord(v, 'custom_fields', p) ?? {}, uniquenessKey: str(v, 'uniqueness_key', p, { optional: true, max: 128 }) ?? null,
    externalIds: Object.keys(externalIdsInput(v, p)).length ? externalIdsInput(v, p) : null,
    amendmentId: ctx.amendmentId ?? null, rolledOver: null, rolledOverFrom: null, createdAt: new Date(), archivedAt: null,
  };
}

export async function termsInput(body: Obj, products: ProductLookup, amendmentId?: string): Promise<ContractTerms> {
  const terms: ContractTerms = {
    overrides: await overridesInput(body, 'overrides', '', products, amendmentId),
    scheduled_charges: await chargesInput(body, 'scheduled_charges', '', products, amendmentId),
    discounts: await chargesInput(body, 'discounts', '', products, amendmentId),
  };
  const prio = oneOf(body, 'multiplier_override_prioritization', ['LOWEST_MULTIPLIER', 'EXPLICIT'] as const, '', { optional: true });
  if (prio) terms.multiplier_override_prioritization = prio;
  if (prio === 'EXPLICIT') {
    terms.overrides!.forEach((o, i) => {
      if (o.type === 'MULTIPLIER' && o.priority === undefined) throw new ValidationError(`overrides[${i}].priority`, 'is required under EXPLICIT multiplier_override_prioritization');
    });
  }
  if (body.net_payment_terms_days !== undefined) {
    const d = body.net_payment_terms_days;
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) throw new ValidationError('net_payment_terms_days', 'must be a non-negative integer');
    terms.net_payment_terms_days = d;
  }
  const tcv = decimal(body, 'total_contract_value', '', { optional: true, min: 0 });
  if (tcv) terms.total_contract_value = tcv;
  return terms;
}

/** Longest trial and renewal notice accepted: beyond this, dates leave the range timestamps can hold. */
const MAX_DAYS = 36_500;

/**
 * `trial_spec` on contract create: a whole number of days (≥ 1) from the contract's start, over
 * before the contract ends; an optional spending cap in whole cents (the trial covers usage up to
 * it); `convert: 'AUTO'` to become ACTIVE at its end without a commit or billing provider.
 */
export function trialSpecInput(body: Obj, startingAt: string, endingBefore?: string): TrialSpec | undefined {
  if (body.trial_spec === undefined || body.trial_spec === null) return undefined;
  const t = objectAt(body.trial_spec, 'trial_spec', ['length_in_days', 'spending_cap', 'convert']);
  const days = t.length_in_days;
  if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new ValidationError('trial_spec.length_in_days', `must be a whole number of days from 1 to ${MAX_DAYS}`);
  }
  const spec: TrialSpec = { length_in_days: days };
  const { end } = trialWindow(startingAt, spec);
  if (endingBefore && Date.parse(end) >= Date.parse(endingBefore)) {
    throw new ValidationError('trial_spec.length_in_days', `the trial would end at ${end}, not before the contract's ending_before ${endingBefore}`);
  }
  if (t.spending_cap !== undefined && t.spending_cap !== null) {
    const path = 'trial_spec.spending_cap';
    const cap = objectAt(t.spending_cap, path, ['amount', 'credit_type_id']);
    creditType(cap, 'credit_type_id', path);
    spec.spending_cap = { amount: wholeAmount(cap, 'amount', path) };
  }
  const convert = oneOf(t, 'convert', ['AUTO'] as const, 'trial_spec', { optional: true });
  if (convert) spec.convert = convert;
  return spec;
}

/** `renewal_notice_days` (create and edit): a whole number of days ≥ 0, 0 meaning no notice; undefined when absent. */
export function renewalNoticeDaysInput(body: Obj): number | undefined {
  const v = body.renewal_notice_days;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_DAYS) {
    throw new ValidationError('renewal_notice_days', `must be a whole number of days from 0 (no notice) to ${MAX_DAYS}`);
  }
  return v;
}

/**
 * `approval_policy` (create and v2 edit): `{mode: ALWAYS | NEVER | ABOVE, amount?}` — `amount` in
 * cents, a decimal ≥ 0, required with ABOVE and refused otherwise. Undefined when absent (the
 * contract follows ACCRUE_APPROVAL_POLICY); `null` too (on edit: back to the default).
 */
export function approvalPolicyInput(body: Obj): ApprovalPolicy | undefined {
  if (body.approval_policy === undefined || body.approval_policy === null) return undefined;
  const path = 'approval_policy';
  const p = objectAt(body.approval_policy, path, ['mode', 'amount']);
  const mode = oneOf(p, 'mode', APPROVAL_MODES, path)!;
  if (mode !== 'ABOVE') {
    if (p.amount !== undefined && p.amount !== null) throw new ValidationError(`${path}.amount`, `is only used with mode ABOVE, not ${mode}`);
    return { mode };
  }
  if (p.amount === undefined || p.amount === null) throw new ValidationError(`${path}.amount`, 'is required with mode ABOVE (cents: invoices with a total above it wait for approval)');
  const amount = decimal(p, 'amount', path)!;
  if (dec(amount).isNegative()) throw new ValidationError(`${path}.amount`, `must be >= 0 (cents), got ${amount}`);
  return { mode, amount: dec(amount).toFixed() };
}

/**
 * `arrears_policy` (create and v2 edit): `{gate_access: boolean}` — while the contract is in
 * ARREARS its customer's access is gated (entitlements). Undefined when absent.
 */
export function arrearsPolicyInput(body: Obj): { gate_access: boolean } | undefined {
  if (body.arrears_policy === undefined || body.arrears_policy === null) return undefined;
  const p = objectAt(body.arrears_policy, 'arrears_policy', ['gate_access']);
  return { gate_access: bool(p, 'gate_access', 'arrears_policy')! };
}

/**
 * Metronome's `prepaid_balance_threshold_configuration` on contract create: when the contract's
 * remaining prepaid balance falls to `threshold_amount`, a commit of `commit.product_id` tops it up
 * to `recharge_to_amount` (whole cents), granted once paid through Stripe (`payment_gate_type:
 * STRIPE`) or at once (`NONE`). EXTERNAL gates, custom credit types, discounts and balance
 * specifiers are not supported (400 naming the field).
 */
export async function thresholdConfigInput(body: Obj, products: ProductLookup): Promise<ThresholdConfig | undefined> {
  const key = 'prepaid_balance_threshold_configuration';
  if (body[key] === undefined || body[key] === null) return undefined;
  const c = objectAt(body[key], key, ['commit', 'is_enabled', 'payment_gate_config', 'recharge_to_amount', 'threshold_amount', 'custom_credit_type_id', 'discount_configuration', 'threshold_balance_specifiers']);
  const common = await thresholdCommon(c, key, products, ['custom_credit_type_id', 'discount_configuration', 'threshold_balance_specifiers']);
  const rechargeTo = wholeAmount(c, 'recharge_to_amount', key);
  if (!dec(rechargeTo).gt(dec(common.threshold_amount))) throw new ValidationError(`${key}.recharge_to_amount`, `must be more than threshold_amount (${common.threshold_amount})`);
  return { ...common, recharge_to_amount: rechargeTo };
}

/**
 * Metronome's `spend_threshold_configuration` on contract create: when the current period's invoice
 * owes `threshold_amount` (after commits and credits), that amount is billed at once through the
 * payment gate as a commit covering the period's usage (billing/recharge.ts).
 */
export async function spendThresholdInput(body: Obj, products: ProductLookup): Promise<SpendThresholdConfig | undefined> {
  const key = 'spend_threshold_configuration';
  if (body[key] === undefined || body[key] === null) return undefined;
  const c = objectAt(body[key], key, ['commit', 'is_enabled', 'payment_gate_config', 'threshold_amount']);
  const common = await thresholdCommon(c, key, products, []);
  if (dec(common.threshold_amount).lte(0)) throw new ValidationError(`${key}.threshold_amount`, 'must be more than 0');
  return common;
}

/** What both threshold configurations share: the commit, the switch, the payment gate and the threshold. */
async function thresholdCommon(c: Obj, key: string, products: ProductLookup, unsupported: string[]): Promise<SpendThresholdConfig> {
  for (const field of unsupported) {
    if (c[field] !== undefined && c[field] !== null) throw new ValidationError(`${key}.${field}`, 'is not supported by Accrue');
  }
  const cp = `${key}.commit`;
  const commit = objectAt(c.commit, cp, ['product_id', 'name', 'description', 'priority', 'applicable_product_ids', 'applicable_product_tags', 'specifiers']);
  if (commit.specifiers !== undefined) throw new ValidationError(`${cp}.specifiers`, 'is not supported by Accrue for threshold commits; use applicable_product_ids or applicable_product_tags');
  // The commit is bought (a purchase line, a Stripe item), like a scheduled charge: never metered.
  const product = await products.get(commit, 'product_id', cp, ['FIXED', 'PRO_SERVICE']);
  const ids = uuidArray(commit, 'applicable_product_ids', cp, { optional: true });
  for (let i = 0; i < (ids ?? []).length; i++) await products.get({ id: ids![i] }, 'id', `${cp}.applicable_product_ids[${i}]`);
  const tags = stringArray(commit, 'applicable_product_tags', cp, { optional: true });
  if (commit.priority !== undefined && (typeof commit.priority !== 'number' || !Number.isFinite(commit.priority))) throw new ValidationError(`${cp}.priority`, 'must be a number');
  const gp = `${key}.payment_gate_config`;
  const gate = objectAt(c.payment_gate_config, gp, ['payment_gate_type', 'stripe_config', 'tax_type', 'precalculated_tax_config']);
  const gateType = oneOf(gate, 'payment_gate_type', ['NONE', 'STRIPE', 'EXTERNAL'] as const, gp)!;
  if (gateType === 'EXTERNAL') throw new ValidationError(`${gp}.payment_gate_type`, 'EXTERNAL is not supported by Accrue; use STRIPE or NONE');
  if (gate.tax_type !== undefined && gate.tax_type !== 'NONE') throw new ValidationError(`${gp}.tax_type`, 'only NONE is supported by Accrue');
  if (gate.precalculated_tax_config !== undefined) throw new ValidationError(`${gp}.precalculated_tax_config`, 'is not supported by Accrue');
  const stripeConfig = stripeConfigInput(gate, gp, gateType);
  const threshold = wholeAmount(c, 'threshold_amount', key);
  return {
    commit: {
      product_id: product.id,
      ...(str(commit, 'name', cp, { optional: true }) !== undefined ? { name: str(commit, 'name', cp)! } : {}),
      ...(str(commit, 'description', cp, { optional: true }) !== undefined ? { description: str(commit, 'description', cp)! } : {}),
      ...(typeof commit.priority === 'number' ? { priority: commit.priority } : {}),
      ...(ids ? { applicable_product_ids: ids } : {}),
      ...(tags ? { applicable_product_tags: tags } : {}),
    },
    is_enabled: bool(c, 'is_enabled', key)!,
    payment_gate_config: { payment_gate_type: gateType, ...(stripeConfig ? { stripe_config: stripeConfig } : {}) },
    threshold_amount: threshold,
  };
}
