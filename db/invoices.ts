import type { EntityManager } from '@mikro-orm/postgresql';
import { ConflictError } from '../billing/errors.js';
import { Decimal } from 'decimal.js';
import { productInfo, productStateAt, overrideOf, type ProductRecord, type TrialSpec } from '../billing/contract-terms.js';
import { assembleInvoice, type AssembledInvoice, type CorrectionInput, type FixedCharge, type GrantSegment, type GrantState, type InvoiceTrial, type ProductInfo, type ProductType, type RatedSlice } from '../billing/invoice.js';
import { trialWindow, type TrialWindow } from '../billing/trial.js';
import { inTrialUsageTotal, isInTrialCharge } from '../billing/trial-cap.js';
import { Dec, dec, USD_CENTS } from '../billing/money.js';
import { applyOverrides, type EffectiveSegment } from '../billing/overrides.js';
import { periodsStartedBefore, prorationFraction, type Period, type Schedule } from '../billing/periods.js';
import { groupValuesKey, rateSchedule, ratesForFrequency, type RateRow } from '../billing/rate-schedule.js';
import { BalanceGrant, BillableMetric, Contract, Invoice, Product, Rate, type StoredInvoiceLine } from './entities.js';
import { invoiceIdFor, uuidV5 } from './ids.js';
import { pgTextArray } from './sql.js';
import { batchingUsageReader, usageParts, type UsagePart } from './usage-series.js';

export function contractSchedule(c: Contract): Schedule {
  return {
    startingAt: c.startingAt.toISOString(),
    endingBefore: c.endingBefore?.toISOString() ?? null,
    frequency: c.usageStatementFrequency,
    day: c.usageStatementDay,
    billingAnchorDate: c.billingAnchorDate?.toISOString() ?? null,
  };
}

export interface PricingData {
  rates: RateRow[];
  products: Map<string, ProductRecord>;
  metrics: Map<string, MetricRef>;
}

export function rateRowOf(r: Rate): RateRow {
  return {
    id: r.id, productId: r.productId, pricingGroupValues: r.pricingGroupValues ?? {}, entitled: r.entitled,
    startingAt: r.startingAt.getTime(), endingBefore: r.endingBefore?.getTime() ?? null, createdAt: r.createdAt.getTime(),
    billingFrequency: r.billingFrequency ?? null,
    spec: {
      rateType: r.rateType, price: r.price ?? undefined, tiers: r.tiers ?? undefined, quantity: r.quantity ?? undefined,
      isProrated: r.isProrated ?? undefined, packageSize: r.packageSize ?? undefined, packageRounding: r.packageRounding ?? undefined,
    },
  };
}

export function productRecordOf(p: Product): ProductRecord {
  return { id: p.id, type: p.type, name: p.name, billableMetricId: p.billableMetricId ?? null, tags: p.tags, customFields: p.customFields, attributes: p.attributes ?? {}, updates: p.updates ?? [] };
}

/** The rate card's rates and every product and metric an invoice of the contract can touch. */
/**
 * The rate card's rates and every product and metric an invoice of the contract can touch, in
 * one round trip (this sits on the path of every draft read).
 */
export async function loadPricing(em: EntityManager, rateCardId: string, extraProductIds: string[] = []): Promise<PricingData> {
  const [row] = await em.execute<{ rates: RateJson[] | string; products: ProductJson[] | string; metrics: MetricJson[] | string }[]>(
    `with r as (select * from rate where rate_card_id = ?::uuid),
          p as (select * from product where id in (select product_id from r) or id = any(?::uuid[])),
          m as (select id, aggregation_type from billable_metric
                 where id in (select billable_metric_id from p)
                    or id in (select (u ->> 'billable_metric_id')::uuid from p, jsonb_array_elements(p.updates) u where u ->> 'billable_metric_id' is not null))
     select (select coalesce(jsonb_agg(to_jsonb(r) || jsonb_build_object('price', r.price::text, 'quantity', r.quantity::text, 'package_size', r.package_size::text)), '[]') from r) as rates,
            (select coalesce(jsonb_agg(to_jsonb(p)), '[]') from p) as products,
            (select coalesce(jsonb_agg(to_jsonb(m)), '[]') from m) as metrics`,
    [rateCardId, pgTextArray(extraProductIds)],
  );
  const parse = <T>(v: T[] | string): T[] => (typeof v === 'string' ? JSON.parse(v) as T[] : v);
  const rates = parse(row!.rates).map((r): RateRow => ({
    id: r.id, productId: r.product_id, pricingGroupValues: r.pricing_group_values ?? {}, entitled: r.entitled,
    startingAt: Date.parse(r.starting_at), endingBefore: r.ending_before ? Date.parse(r.ending_before) : null, createdAt: Date.parse(r.created_at),
    billingFrequency: r.billing_frequency,
    spec: {
      rateType: r.rate_type, price: num(r.price), tiers: r.tiers ?? undefined, quantity: num(r.quantity), isProrated: r.is_prorated ?? undefined,
      packageSize: num(r.package_size), packageRounding: r.package_rounding ?? undefined,
    },
  }));
  const products = new Map(parse(row!.products).map((p): [string, ProductRecord] => [p.id, {
    id: p.id, type: p.type, name: p.name, billableMetricId: p.billable_metric_id, tags: p.tags ?? [], customFields: p.custom_fields ?? {},
    attributes: p.attributes ?? {}, updates: p.updates ?? [],
  }]));
  const metrics = new Map(parse(row!.metrics).map((m): [string, MetricRef] => [m.id, { id: m.id, aggregationType: m.aggregation_type }]));
  return { rates, products, metrics };
}

/** numeric columns are sent as text (to_jsonb would make them JSON numbers, which JS parses as doubles). */
function num(v: string | number | null | undefined): string | undefined {
  if (v === null || v === undefined) return undefined;
  return typeof v === 'string' ? v : String(v);
}

interface RateJson {
  id: string; product_id: string; pricing_group_values: Record<string, string> | null; entitled: boolean; starting_at: string; ending_before: string | null;
  created_at: string; billing_frequency: string | null; rate_type: Rate['rateType']; price: string | number | null; tiers: Rate['tiers'];
  quantity: string | number | null; is_prorated: boolean | null; package_size: string | number | null; package_rounding: 'UP' | 'DOWN' | null;
}
interface ProductJson {
  id: string; type: Product['type']; name: string; billable_metric_id: string | null; tags: string[] | null; custom_fields: Record<string, string> | null;
  attributes: ProductRecord['attributes'] | null; updates: ProductRecord['updates'] | null;
}
interface MetricJson { id: string; aggregation_type: BillableMetric['aggregationType'] }
export type MetricRef = Pick<BillableMetric, 'id' | 'aggregationType'>;

const DEDUCTION: Record<BalanceGrant['kind'], string> = {
  PREPAID: 'PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION',
  POSTPAID: 'POSTPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION',
  CREDIT: 'CREDIT_AUTOMATED_INVOICE_DEDUCTION',
};
export const LEDGER_DEDUCTION_TYPES = DEDUCTION;
const CREDITED: Record<'PREPAID' | 'CREDIT', string> = { PREPAID: 'PREPAID_COMMIT_CREDITED', CREDIT: 'CREDIT_CREDITED' };

/** Commits and credits that can apply to the contract's invoices: its own and the customer's. */
export async function grantsForContract(em: EntityManager, contract: Contract): Promise<BalanceGrant[]> {
  const grants = await em.find(BalanceGrant, { customerId: contract.customerId, archivedAt: null }, { orderBy: { createdAt: 'asc', id: 'asc' } });
  return grantsApplying(grants, contract);
}

/** Of the customer's live grants, those that apply to the contract: its own and the customer's that name it or no contract. */
export function grantsApplying(customerGrants: readonly BalanceGrant[], contract: Pick<Contract, 'id'>): BalanceGrant[] {
  return customerGrants.filter((g) => g.contractId === contract.id
    || (g.contractId === null && (!g.applicableContractIds?.length || g.applicableContractIds.includes(contract.id))));
}

/** Per grant segment, what frozen, non-void invoices other than `exceptInvoiceId` drew from it (positive). */
export async function drawnBySegment(em: EntityManager, grantIds: string[], exceptInvoiceId?: string, asOf?: Date): Promise<Map<string, Decimal>> {
  const out = new Map<string, Decimal>();
  if (!grantIds.length) return out;
  const rows = await em.execute<{ grant_id: string; segment_id: string; drawn: string }[]>(
    `select l.grant_id::text as grant_id, l.segment_id, (-sum(l.amount))::text as drawn
       from balance_ledger l join invoice i on i.id = l.invoice_id
      where l.grant_id::text = any(?::text[]) and l.invoice_id::text <> ?
        and l.created_at <= ? and (i.status <> 'VOID' or i.voided_at > ?)
      group by 1, 2`,
    // As of a moment: entries written by then, of invoices not voided by then.
    [pgTextArray(grantIds), exceptInvoiceId ?? '', ...Array(2).fill((asOf ?? new Date('9999-01-01T00:00:00Z')).toISOString())],
  );
  for (const r of rows) out.set(`${r.grant_id}|${r.segment_id}`, dec(r.drawn));
  return out;
}

export interface ComputeOptions {
  /** The invoice being computed: its own ledger entries do not count against the balances. */
  invoiceId?: string;
  /** Draw-downs of earlier drafts (not yet frozen) of the same contract, by `grant|segment`. */
  carried?: Map<string, Decimal>;
  /** Corrections already on earlier drafts of this computation, by `corrected invoice id|correctedLineKey` (key '' for a whole-invoice one). */
  carriedCorrections?: Map<string, Decimal>;
  /** What commits and credits drew on those corrections (net of give-backs), by the same key, then by `grant|segment`. */
  carriedCorrectionDraws?: Map<string, Map<string, Decimal>>;
  /** Of those, the in-trial ones (marked for a trial), by corrected invoice id. */
  carriedTrialCorrections?: Map<string, Decimal>;
  /** What earlier drafts of this computation covered of each trial (positive), by the trial's contract id. */
  carriedTrial?: Map<string, Decimal>;
  /**
   * Take these correction lines as they are instead of computing them (reconciliation of a frozen
   * invoice: its billed corrections are checked per corrected invoice, the other lines against them).
   */
  corrections?: CorrectionInput[];
  /** Leave corrections out (used when re-deriving a finalized period itself). */
  skipCorrections?: boolean;
  /**
   * Price as things stood at this moment: rates, product updates, contract terms, commits and
   * credits created later are left out. Re-deriving a frozen invoice uses the moment it was frozen,
   * so only usage (late events) can change it, never a later price change or amendment.
   */
  asOf?: Date;
  /**
   * The voided invoice this one regenerates: corrections that later invoices billed for its
   * period while it stood are subtracted here, so the period's usage is billed once.
   */
  regeneratedFromInvoiceId?: string;
  /** Usage and subscriptions only (invoice breakdowns): no charges, commits, credits or corrections. */
  usageOnly?: boolean;
  pricing?: PricingData;
  grants?: BalanceGrant[];
  drawn?: Map<string, Decimal>;
  /** Where usage quantities come from: the aggregates (default) or, for reconciliation, raw events. */
  usageReader?: typeof usageParts;
}

function project(group: Record<string, string | null>, keys: readonly string[]): Record<string, string | null> {
  return Object.fromEntries(keys.map((k) => [k, group[k] ?? null]));
}

/** Aggregations whose value over a period is the sum of their values over its parts. */
const ADDITIVE = new Set<BillableMetric['aggregationType']>(['COUNT', 'SUM']);

interface UsagePlan {
  productId: string;
  from: number;
  to: number;
  pricingKeys: string[];
  presentationKeys: string[];
  /** The pricing group this plan prices (its `groupValuesKey`), or null: every group without rates of its own. */
  groupKey: string | null;
  /** Pricing groups with rates of their own (priced by their own plans, not the product-wide one). */
  exactKeys: Set<string>;
  /** The segment whose rate prices the window: the group's own rate first, else the product-wide one. */
  rateFor(exact: boolean): EffectiveSegment | undefined;
  part: number;
}

/**
 * How a USAGE product's period is cut into priced windows. Usage is cut only where the rate of its
 * own (product, pricing group) changes: a price change for one group never restarts another
 * group's graduated tiers. A group with rates of its own falls back to the product-wide rate
 * wherever its own do not cover, so its windows are cut at both. Non-additive aggregations (MAX,
 * UNIQUE, LATEST) are never cut: their quantity is taken over the whole service period (a user
 * seen before and after a price change is one user; usage in a gap where nothing is entitled in
 * between counts too) and priced at the rate in force at its end. A trial ending inside the
 * period cuts every group of every aggregation there (a rate edge in effect: graduated tiers
 * restart after it; a non-additive metric is taken over each side), so the in-trial part is on
 * lines of its own that the trial line covers.
 */
function usagePlans(productId: string, segs: EffectiveSegment[], pEnd: number, additive: boolean, pricingKeys: string[], presentationKeys: string[], trialEnd: number | null): Omit<UsagePlan, 'part'>[] {
  const product = segs.filter((s) => Object.keys(s.rate.pricingGroupValues).length === 0);
  const byGroup = new Map<string, EffectiveSegment[]>();
  for (const s of segs) {
    if (!Object.keys(s.rate.pricingGroupValues).length) continue;
    const k = groupValuesKey(s.rate.pricingGroupValues);
    (byGroup.get(k) ?? byGroup.set(k, []).get(k)!).push(s);
  }
  const exactKeys = new Set(byGroup.keys());
  const end = (s: EffectiveSegment) => s.endingBefore ?? pEnd;
  const covering = (list: EffectiveSegment[], t: number) => list.find((s) => s.startingAt <= t && end(s) > t);
  const lastOf = (list: EffectiveSegment[], to: number) => covering(list, to - 1) ?? [...list].filter((s) => s.startingAt < to).sort((a, b) => end(a) - end(b)).at(-1);
  const out: Omit<UsagePlan, 'part'>[] = [];
  for (const [groupKey, own] of [[null, [] as EffectiveSegment[]] as const, ...byGroup.entries()]) {
    const all = [...own, ...product];
    if (!all.length) continue;
    // Cut at the group's own rate edges, and at product-wide edges only where its own rates do not cover.
    const insideOwn = (t: number) => own.some((s) => s.startingAt < t && end(s) > t);
    const edges = [...new Set([...own.flatMap((s) => [s.startingAt, end(s)]), ...product.flatMap((s) => [s.startingAt, end(s)]).filter((t) => !insideOwn(t))])]
      .sort((a, b) => a - b);
    // The trial's end cuts every aggregation (unlike a rate edge): the in-trial part is priced on its own.
    const first = edges[0]!;
    const last = edges.at(-1)!;
    const trialCut = trialEnd !== null && trialEnd > first && trialEnd < last ? [trialEnd] : [];
    const cuts = [...new Set([...(additive ? edges : [first, last]), ...trialCut])].sort((a, b) => a - b);
    for (let i = 0; i + 1 < cuts.length; i++) {
      const from = cuts[i]!;
      const to = cuts[i + 1]!;
      // An additive window lies inside one segment of each list, priced by the one at its start; a
      // non-additive window is priced by the rate in force at its end (the last one before it, if none is).
      const at = (list: EffectiveSegment[]) => (additive ? covering(list, from) : covering(list, to - 1));
      const last = (list: EffectiveSegment[]) => (additive ? undefined : lastOf(list, to));
      if (!at(all) && !last(all)) continue; // a gap in which nothing is entitled
      out.push({
        productId, from, to, pricingKeys, presentationKeys, groupKey, exactKeys,
        rateFor: (exact) => (exact ? at(own) ?? at(product) ?? last(own) ?? last(product) : at(product) ?? last(product)),
      });
    }
  }
  return out;
}

/**
 * Prices one contract period from PostgreSQL: the rate schedule in force (rate card + contract
 * overrides) split at every change, usage per product and pricing group from the hourly
 * aggregates (one query), subscriptions prorated, scheduled charges, commits and credits drawn
 * in priority order. The pure part is billing/invoice.ts assembleInvoice.
 */
export async function computeInvoice(em: EntityManager, contract: Contract, period: Pick<Period, 'start' | 'end'>, opts: ComputeOptions = {}): Promise<AssembledInvoice> {
  const pStart = Date.parse(period.start);
  const pEnd = Date.parse(period.end);
  if (pEnd <= pStart) {
    // The empty period at a contract's end is its late-usage invoice: corrections only.
    const corrections = opts.usageOnly ? [] : opts.corrections ?? (opts.skipCorrections ? [] : await lateUsageCorrections(em, contract, pStart, opts));
    // Late in-trial usage on it is covered by its trial, within what is left of the cap.
    const trials = opts.usageOnly ? [] : await invoiceTrials(em, contract, pStart, pEnd, corrections, opts);
    const known = (createdAt: string | number | Date | undefined) => !opts.asOf || createdAt === undefined || new Date(createdAt).getTime() <= opts.asOf.getTime();
    // Only the contract's own commits and credits (and its predecessors'): no other contract's
    // draft can draw on those, so drafts and balances need not wait for this invoice to see them.
    const own = opts.usageOnly ? [] : (opts.grants ?? await grantsForContract(em, contract)).filter((g) => known(g.createdAt) && g.contractId === contract.id);
    const late = await drawingGrants(em, contract, own, corrections, pStart, pEnd, opts, known, undefined, { contractLevelOnly: true });
    const products = await correctionProducts(em, new Map(), corrections, pStart, known);
    return assembleInvoice({ creditType: USD_CENTS, contractId: contract.id, periodStart: pStart, periodEnd: pEnd, products, slices: [], corrections, trials, grants: late.states });
  }
  const asOf = opts.asOf?.getTime();
  const known = (createdAt: string | number | Date | undefined) => asOf === undefined || createdAt === undefined || new Date(createdAt).getTime() <= asOf;
  const allTerms = contract.terms ?? {};
  const terms = asOf === undefined ? allTerms : {
    ...allTerms,
    overrides: allTerms.overrides?.filter((o) => known(o.created_at)),
    scheduled_charges: allTerms.scheduled_charges?.filter((c) => known(c.created_at)),
    discounts: allTerms.discounts?.filter((c) => known(c.created_at)),
  };
  const grants = opts.usageOnly ? [] : (opts.grants ?? await grantsForContract(em, contract)).filter((g) => known(g.createdAt));
  const chargeProductIds = [...(terms.scheduled_charges ?? []), ...(terms.discounts ?? [])].map((c) => c.product_id);
  const loaded = opts.pricing ?? await loadPricing(em, contract.rateCardId, [...chargeProductIds, ...grants.map((g) => g.productId)]);
  const pricing: PricingData = asOf === undefined ? loaded : {
    rates: loaded.rates.filter((r) => known(r.createdAt)),
    products: new Map([...loaded.products].map(([id, p]) => [id, { ...p, updates: p.updates.filter((u) => known(u.created_at)) }])),
    metrics: loaded.metrics,
  };
  const infoAt = new Map<string, ProductInfo>();
  for (const p of pricing.products.values()) infoAt.set(p.id, productInfo(p, pStart));
  const schedule = contractSchedule(contract);
  const ownTrial = contractTrial(contract);
  const trialEnd = ownTrial && Date.parse(ownTrial.window.end) > pStart && Date.parse(ownTrial.window.end) < pEnd ? Date.parse(ownTrial.window.end) : null;

  const segments = applyOverrides(
    rateSchedule(ratesForFrequency(pricing.rates, contract.usageStatementFrequency), pStart, pEnd),
    (terms.overrides ?? []).map(overrideOf),
    (productId) => infoAt.get(productId)?.tags ?? [],
    terms.multiplier_override_prioritization ?? 'LOWEST_MULTIPLIER',
  ).filter((s) => s.entitled);

  const byProduct = new Map<string, EffectiveSegment[]>();
  for (const s of segments) (byProduct.get(s.rate.productId) ?? byProduct.set(s.rate.productId, []).get(s.rate.productId)!).push(s);

  const slices: RatedSlice[] = [];
  const parts: UsagePart[] = [];
  const partIndex = new Map<string, number>();
  const partMeta: UsagePlan[] = [];
  for (const [productId, segs] of [...byProduct.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const record = pricing.products.get(productId);
    if (!record) continue;
    const state = productStateAt(record, pStart);
    if (record.type === 'USAGE') {
      const metric = state.billable_metric_id ? pricing.metrics.get(state.billable_metric_id) : undefined;
      if (!metric) continue;
      const pricingKeys = state.pricing_group_key ?? [];
      const presentationKeys = state.presentation_group_key ?? [];
      const keys = [...new Set([...pricingKeys, ...presentationKeys])];
      for (const plan of usagePlans(productId, segs, pEnd, ADDITIVE.has(metric.aggregationType), pricingKeys, presentationKeys, trialEnd)) {
        // Plans with the same window (and grouping) share one part of the usage query.
        const window = `${plan.from}|${plan.to}|${metric.id}|${JSON.stringify(keys)}`;
        let index = partIndex.get(window);
        if (index === undefined) {
          index = parts.push({ metric, from: new Date(plan.from).toISOString(), to: new Date(plan.to).toISOString(), groupKeys: keys }) - 1;
          partIndex.set(window, index);
        }
        partMeta.push({ ...plan, part: index });
      }
    } else if (record.type === 'SUBSCRIPTION' || record.type === 'COMPOSITE') {
      for (const s of segs) {
        const segFrom = s.startingAt;
        const segTo = s.endingBefore ?? pEnd;
        // A FLAT rate on a SUBSCRIPTION product is a per-period price for one unit, prorated.
        const rate = record.type === 'SUBSCRIPTION' && s.effective.rateType === 'FLAT'
          ? { rateType: 'SUBSCRIPTION' as const, price: s.effective.price, quantity: '1', isProrated: true }
          : s.effective;
        // The trial's end cuts a prorated subscription (each side prorated on its own) and a
        // composite; a subscription that is not prorated costs the same for any part of a period,
        // so it is not cut: it lies in the trial (and is covered) only if all of it does.
        const cut = trialEnd !== null && trialEnd > segFrom && trialEnd < segTo && (record.type === 'COMPOSITE' || rate.isProrated);
        for (const [from, to] of cut ? [[segFrom, trialEnd], [trialEnd, segTo]] : [[segFrom, segTo]]) {
          const f = prorationFraction(schedule, new Date(from!).toISOString(), new Date(to!).toISOString());
          slices.push({
            productId, startingAt: from!, endingBefore: to!, rate, pricingGroupValues: s.rate.pricingGroupValues,
            ...(record.type === 'SUBSCRIPTION' ? { prorationFactor: dec(f.numerator).div(f.denominator).toString() } : {}),
          });
        }
      }
    }
  }

  const usage = await (opts.usageReader ?? usageParts)(em, contract.customerId, parts);
  for (const plan of partMeta) {
    for (const g of usage[plan.part]!) {
      const pgv = project(g.group, plan.pricingKeys) as Record<string, string>;
      const groupKey = groupValuesKey(pgv);
      // Each group is priced by exactly one plan: its own rates' plan, else the product-wide one.
      if (plan.groupKey === null ? plan.exactKeys.has(groupKey) : plan.groupKey !== groupKey) continue;
      const seg = plan.rateFor(plan.groupKey !== null);
      if (!seg) continue; // usage in a pricing group with no rate is not billable on this contract
      slices.push({
        productId: plan.productId, startingAt: plan.from, endingBefore: plan.to, quantity: g.value, rate: seg.effective,
        pricingGroupValues: pgv, presentationGroupValues: project(g.group, plan.presentationKeys),
      });
    }
  }
  // Stable line order: by product name, then time, then group values.
  slices.sort((a, b) => (infoAt.get(a.productId)?.name ?? '').localeCompare(infoAt.get(b.productId)?.name ?? '') || a.productId.localeCompare(b.productId)
    || a.startingAt - b.startingAt || groupValuesKey(a.pricingGroupValues as Record<string, string>).localeCompare(groupValuesKey(b.pricingGroupValues as Record<string, string>))
    || JSON.stringify(a.presentationGroupValues ?? {}).localeCompare(JSON.stringify(b.presentationGroupValues ?? {})));

  const inPeriod = (ts: string) => Date.parse(ts) >= pStart && Date.parse(ts) < pEnd;
  const fixedCharges: FixedCharge[] = [];
  for (const [kind, list] of opts.usageOnly ? [] : [['scheduled', terms.scheduled_charges ?? []], ['discount', terms.discounts ?? []]] as const) {
    for (const c of list) {
      for (const item of c.schedule.schedule_items) {
        if (!inPeriod(item.timestamp)) continue;
        fixedCharges.push({ kind, id: c.id, productId: c.product_id, name: c.name ?? pricing.products.get(c.product_id)?.name ?? c.product_id, timestamp: Date.parse(item.timestamp), quantity: item.quantity, unitPrice: item.unit_price });
      }
    }
  }
  let corrections: CorrectionInput[] = [];
  if (opts.corrections && !opts.usageOnly) corrections = opts.corrections;
  else if (!opts.skipCorrections && !opts.usageOnly) {
    corrections = await lateUsageCorrections(em, contract, pStart, opts);
    if (opts.regeneratedFromInvoiceId) corrections.push(...await correctionsBilledElsewhere(em, contract, opts.regeneratedFromInvoiceId, opts.invoiceId));
  }
  const { states: grantStates, trueUps, purchases } = await drawingGrants(em, contract, grants, corrections, pStart, pEnd, opts, known, pricing);
  fixedCharges.push(...purchases);
  const products = await correctionProducts(em, infoAt, corrections, pStart, known);
  const trials = opts.usageOnly ? [] : await invoiceTrials(em, contract, pStart, pEnd, corrections, opts);
  return assembleInvoice({ creditType: USD_CENTS, contractId: contract.id, periodStart: pStart, periodEnd: pEnd, products, slices, fixedCharges, grants: grantStates, trueUps, corrections, trials });
}

/**
 * A SCHEDULED invoice: a commit billed on its own invoice when it is granted (an auto-recharge or
 * spend-threshold commit with payment gate NONE). Its lines are the customer's commit invoice
 * schedule items that name this invoice, as commit-purchase lines — the same lines a period
 * invoice bills for a commit's schedule item in its period (which skips these items). Its period
 * is the instant of the grant.
 */
export async function computeScheduledInvoice(em: EntityManager, contract: Contract, invoiceId: string, period: Pick<Period, 'start' | 'end'>): Promise<AssembledInvoice> {
  const at = Date.parse(period.start);
  const grants = await em.find(BalanceGrant, { customerId: contract.customerId }, { orderBy: { createdAt: 'asc', id: 'asc' } });
  const items = grants.flatMap((g) => (g.invoiceSchedule?.do_not_invoice ? [] : g.invoiceSchedule?.schedule_items ?? []).filter((i) => i.invoice_id === invoiceId).map((item) => ({ g, item })));
  const products = new Map<string, ProductInfo>();
  for (const p of items.length ? await em.find(Product, { id: { $in: [...new Set(items.map((x) => x.g.productId))] } }) : []) products.set(p.id, productInfo(productRecordOf(p), at));
  const fixedCharges: FixedCharge[] = items.map(({ g, item }) => ({
    kind: 'commit_purchase', id: item.id, productId: g.productId, name: g.name ?? products.get(g.productId)?.name ?? 'Commit',
    timestamp: Date.parse(item.timestamp), quantity: item.quantity, unitPrice: item.unit_price, commitId: g.id,
  }));
  return assembleInvoice({ creditType: USD_CENTS, periodStart: at, periodEnd: Date.parse(period.end), products, slices: [], fixedCharges });
}

/** A contract's trial: its spec and window (billing/trial.ts), or null. */
export function contractTrial(contract: Contract): { spec: TrialSpec; window: TrialWindow } | null {
  const spec = contract.terms?.trial_spec;
  return spec ? { spec, window: trialWindow(contract.startingAt.toISOString(), spec) } : null;
}

/**
 * The trials an invoice applies: its contract's own when the trial overlaps the period, and any
 * trial whose late in-trial usage it corrects (a renewal corrects its predecessor's periods). What
 * each trial covered before this invoice — its lines on frozen, non-void invoices (as of `asOf`,
 * like commit draw-downs) plus earlier drafts of this computation — is drawn first, in period
 * order. One query, and only for invoices a trial touches.
 */
type TrueUp = { grantId: string; name: string; productId?: string; segmentId: string; remainingBeforeInvoice: string };

/**
 * The commits and credits an invoice draws on, with what is left of each segment: this period's
 * (the contract's own grants, segments overlapping the period; POSTPAID minimums ending in it are
 * trued up here) and, for late usage of finalized periods, the segments of the PREPAID commits and
 * credits that applied to the corrected line's contract and time — its predecessor's too when a
 * renewal bills that usage — while they have balance, expired or not (an ended contract's
 * late-usage invoice: contract-level ones only). A negative correction's give-back goes to the
 * segments that drew on that line's earlier corrections. What is left is the segment
 * less every other invoice's draw-downs, earlier drafts of this computation's, and what rolled
 * over to a renewal.
 */
async function drawingGrants(
  em: EntityManager, contract: Contract, own: BalanceGrant[], corrections: readonly CorrectionInput[], pStart: number, pEnd: number,
  opts: ComputeOptions, known: (createdAt: string | number | Date | undefined) => boolean, pricing?: PricingData, only: { contractLevelOnly?: boolean } = {},
): Promise<{ states: GrantState[]; trueUps: TrueUp[]; purchases: FixedCharge[] }> {
  const windows = new Map<string, [number, number][]>();
  for (const c of corrections) {
    if (!c.contractId || !c.productId || !c.startingAt || !c.endingBefore || c.trialContractId || c.netsOwnUsage) continue;
    if (!dec(c.amount).gt(0) && !c.giveBack?.length) continue;
    (windows.get(c.contractId) ?? windows.set(c.contractId, []).get(c.contractId)!).push([Date.parse(c.startingAt), Date.parse(c.endingBefore)]);
  }
  const ownIds = new Set(own.map((g) => g.id));
  const contractsOf = new Map<string, string[]>(own.map((g) => [g.id, [contract.id]]));
  let all = own;
  const others = [...windows.keys()].filter((id) => id !== contract.id);
  if (others.length) {
    const customerGrants = (await em.find(BalanceGrant, { customerId: contract.customerId, archivedAt: null }, { orderBy: { createdAt: 'asc', id: 'asc' } })).filter((g) => known(g.createdAt));
    all = [...own, ...customerGrants.filter((g) => !ownIds.has(g.id))];
    for (const id of others) {
      for (const g of grantsApplying(all, { id })) {
        if (only.contractLevelOnly && g.contractId !== id) continue;
        (contractsOf.get(g.id) ?? contractsOf.set(g.id, []).get(g.id)!).push(id);
      }
    }
  }
  const lateOverlap = (g: BalanceGrant, from: number, to: number) => g.kind !== 'POSTPAID'
    && (contractsOf.get(g.id) ?? []).some((k) => (windows.get(k) ?? []).some(([a, b]) => from < b && to > a));
  // The segments a negative correction gives back to, whatever the grant's level or state now (an
  // archived one keeps what it gets back: it is never paid out in cash).
  const givenBack = new Set(corrections.flatMap((c) => (c.giveBack ?? []).map((b) => `${b.grantId}|${b.segmentId}`)));
  const named = [...new Set([...givenBack].map((k) => k.split('|')[0]!))].filter((id) => !all.some((g) => g.id === id));
  if (named.length) all = [...all, ...await em.find(BalanceGrant, { id: { $in: named } }, { orderBy: { createdAt: 'asc', id: 'asc' } })];
  const givenBackTo = new Set([...givenBack].map((k) => k.split('|')[0]!));
  const drawing = all.filter((g) => contractsOf.has(g.id) || givenBackTo.has(g.id));
  const missing = drawing.filter((g) => !ownIds.has(g.id)).map((g) => g.id);
  const base = opts.drawn ?? await drawnBySegment(em, own.map((g) => g.id), opts.invoiceId, opts.asOf);
  // A predecessor's grants are not among the preloaded ones: added to a copy (the preloaded map is
  // shared by every draft of an evaluation round, so it is copied only then).
  const drawn = missing.length ? new Map([...base, ...await drawnBySegment(em, missing, opts.invoiceId, opts.asOf)]) : base;
  const inPeriod = (ts: string) => Date.parse(ts) >= pStart && Date.parse(ts) < pEnd;
  const states: GrantState[] = [];
  const trueUps: TrueUp[] = [];
  const purchases: FixedCharge[] = [];
  for (const g of drawing) {
    const name = g.name ?? pricing?.products.get(g.productId)?.name ?? (g.kind === 'CREDIT' ? 'Credit' : 'Commit');
    const billedOn = g.invoiceContractId ?? g.contractId;
    const isOwn = ownIds.has(g.id);
    if (isOwn && g.kind === 'PREPAID' && g.invoiceSchedule && !g.invoiceSchedule.do_not_invoice && billedOn === contract.id) {
      for (const item of g.invoiceSchedule.schedule_items) {
        // An item with its own invoice (computeScheduledInvoice) is billed there, not here.
        if (!inPeriod(item.timestamp) || item.invoice_id) continue;
        purchases.push({ kind: 'commit_purchase', id: item.id, productId: g.productId, name, timestamp: Date.parse(item.timestamp), quantity: item.quantity, unitPrice: item.unit_price, commitId: g.id });
      }
    }
    const segs: GrantSegment[] = [];
    for (const s of g.accessSchedule.schedule_items) {
      const from = Date.parse(s.starting_at);
      const to = Date.parse(s.ending_before);
      const overlapsOwn = isOwn && from < pEnd && to > pStart;
      if (!overlapsOwn && !lateOverlap(g, from, to) && !givenBack.has(`${g.id}|${s.id}`)) continue;
      const key = `${g.id}|${s.id}`;
      const rolled = (g.rolledOver ?? []).filter((r) => r.segment_id === s.id && known(r.timestamp)).reduce((a, r) => a.plus(r.amount), dec(0));
      // Never more than the segment's amount (a give-back to a draw since voided cannot add to it).
      const remaining = Dec.min(dec(s.amount), dec(s.amount).minus(drawn.get(key) ?? 0).minus(opts.carried?.get(key) ?? 0).minus(rolled));
      segs.push({ id: s.id, startingAt: from, endingBefore: to, amount: s.amount, remaining: Dec.max(remaining, 0).toString() });
      if (overlapsOwn && g.kind === 'POSTPAID' && to > pStart && to <= pEnd && (billedOn ?? contract.id) === contract.id) {
        trueUps.push({ grantId: g.id, name, productId: g.productId, segmentId: s.id, remainingBeforeInvoice: Dec.max(remaining, 0).toString() });
      }
    }
    if (!segs.length) continue;
    states.push({
      id: g.id, kind: g.kind, name, priority: Number(g.priority), contractLevel: g.contractId !== null,
      applicableProductIds: g.applicableProductIds ?? undefined, applicableProductTags: g.applicableProductTags ?? undefined,
      specifiers: g.specifiers ?? undefined, segments: segs, contractIds: contractsOf.get(g.id) ?? [],
      ...(contractsOf.has(g.id) && !g.archivedAt ? {} : { giveBackOnly: true }),
    });
  }
  return { states, trueUps, purchases };
}

/** The products of the invoice, and those of its corrections (a predecessor's rate card may differ), as of the period. */
async function correctionProducts(em: EntityManager, infoAt: Map<string, ProductInfo>, corrections: readonly CorrectionInput[], at: number, known: (createdAt: string | number | Date | undefined) => boolean): Promise<Map<string, ProductInfo>> {
  const missing = [...new Set(corrections.map((c) => c.productId).filter((id): id is string => !!id && !infoAt.has(id)))];
  if (!missing.length) return infoAt;
  const out = new Map(infoAt);
  for (const p of await em.find(Product, { id: { $in: missing } })) {
    const record = productRecordOf(p);
    out.set(p.id, productInfo({ ...record, updates: record.updates.filter((u) => known(u.created_at)) }, at));
  }
  return out;
}

async function invoiceTrials(em: EntityManager, contract: Contract, pStart: number, pEnd: number, corrections: readonly CorrectionInput[], opts: ComputeOptions): Promise<InvoiceTrial[]> {
  const found = new Map<string, { contract: Contract; ownLines: boolean }>();
  const own = contractTrial(contract);
  if (own && Date.parse(own.window.start) < pEnd && Date.parse(own.window.end) > pStart) found.set(contract.id, { contract, ownLines: true });
  for (const c of corrections) {
    if (!c.trialContractId || found.has(c.trialContractId)) continue;
    const of = c.trialContractId === contract.id ? contract : await em.findOne(Contract, { id: c.trialContractId });
    if (of && contractTrial(of)) found.set(of.id, { contract: of, ownLines: false });
  }
  if (!found.size) return [];
  const asOf = (opts.asOf ?? new Date('9999-01-01T00:00:00Z')).toISOString();
  const rows = await em.execute<{ contract_id: string; covered: string }[]>(
    `select l ->> 'trial_contract_id' as contract_id, (-sum((l ->> 'total')::numeric))::text as covered
       from invoice i cross join lateral jsonb_array_elements(i.line_items) l
      where i.customer_id = ?::uuid and i.id::text <> ? and i.frozen_at <= ? and (i.status <> 'VOID' or i.voided_at > ?)
        and l ->> 'type' = 'trial' and l ->> 'trial_contract_id' = any(?::text[])
      group by 1`,
    [contract.customerId, opts.invoiceId ?? '', asOf, asOf, pgTextArray([...found.keys()])],
  );
  const frozen = new Map(rows.map((r) => [r.contract_id, dec(r.covered)]));
  return [...found.entries()].map(([id, f]) => {
    const t = contractTrial(f.contract)!;
    const before = (frozen.get(id) ?? dec(0)).plus(opts.carriedTrial?.get(id) ?? 0);
    return { contractId: id, window: t.window, spec: t.spec, coveredBefore: before.toString(), ownLines: f.ownLines };
  });
}

/**
 * Of the given finalized invoices, those whose customer has usage in their period that was rated
 * after they were frozen (one query). An hour of margin: a rating transaction that began just
 * before the freeze, and clock skew between this process and PostgreSQL, can stamp rows slightly
 * earlier than they commit.
 */
async function invoicesWithLateUsage(em: EntityManager, contractIds: string[], until: number): Promise<string[]> {
  // Usage invoices only: a SCHEDULED invoice bills a purchase at an instant, never usage.
  // "Since" is the later of its freeze and the last freeze of an invoice correcting it: usage
  // rated before that is already billed, so one late event does not make every later draft
  // re-derive the period for the rest of the contract.
  const rows = await em.execute<{ id: string }[]>(
    `with f as (
       select i.id, i.customer_id, i.period_start, i.period_end,
              greatest(i.frozen_at, (select max(o.frozen_at) from invoice o
                                      where o.customer_id = i.customer_id and o.status <> 'VOID'
                                        and o.line_items @> jsonb_build_array(jsonb_build_object('type', 'correction', 'corrected_invoice_id', i.id::text)))) - interval '1 hour' as since
         from invoice i where i.contract_id = any(?::uuid[]) and i.type = 'USAGE' and i.status = 'FINALIZED' and i.period_end <= ?
     )
     select f.id::text as id from f
      where exists (select 1 from usage_daily d where d.customer_id = f.customer_id and d.day >= date_trunc('day', f.period_start, 'UTC') and d.day < f.period_end and d.rated_at > f.since)
         or exists (select 1 from usage_unique_daily d where d.customer_id = f.customer_id and d.day >= date_trunc('day', f.period_start, 'UTC') and d.day < f.period_end and d.rated_at > f.since)`,
    [pgTextArray(contractIds), new Date(until).toISOString()],
  );
  return rows.map((r) => r.id);
}

/** The contracts this one renewed or superseded, transitively (their late usage is billed here). */
export async function predecessorsOf(em: EntityManager, contract: Contract): Promise<Contract[]> {
  const out: Contract[] = [];
  const seen = new Set([contract.id]);
  for (let from = contract.terms?.transition?.from_contract_id; from && !seen.has(from);) {
    seen.add(from);
    const c = await em.findOne(Contract, { id: from });
    if (!c) break;
    out.push(c);
    from = c.terms?.transition?.from_contract_id;
  }
  return out;
}

export const BILLED_USAGE_TYPES = new Set(['usage', 'subscription']);

export function usageTotal(lines: readonly { type: string; total: string }[]): Decimal {
  return lines.filter((l) => BILLED_USAGE_TYPES.has(l.type)).reduce((a, l) => a.plus(l.total), dec(0));
}

/**
 * Late usage (invariant I3): a finalized invoice never changes, so when usage for its period
 * changes afterwards (late events, an alias matched later, a new metric's backfill), the
 * difference in each of its usage and subscription lines (product, time slice, group values) is
 * billed as a correction line on the next open invoice, once: minus the corrections already made
 * for it on other invoices. However old the period: finalized periods are watched for as long as
 * the contract has open invoices. A renewal (or superseding contract) also bills the late usage of
 * the contracts it follows, whose own periods are all closed; a contract that ended with no
 * successor bills it on a late-usage invoice of its own (`computeLateUsageInvoice`). The commits
 * and credits that applied to the corrected line draw on a positive correction while they have
 * balance (`drawingGrants`), with ledger entries written by the invoice that bills it; in-trial
 * late usage is covered by its trial instead.
 */
async function lateUsageCorrections(em: EntityManager, contract: Contract, pStart: number, opts: ComputeOptions): Promise<CorrectionInput[]> {
  const contracts = new Map([contract, ...await predecessorsOf(em, contract)].map((c) => [c.id, c]));
  const ids = opts.usageReader
    // Reconciliation re-derives from raw events: every finalized period is checked.
    ? (await em.find(Invoice, { contractId: { $in: [...contracts.keys()] }, type: 'USAGE', status: 'FINALIZED', periodEnd: { $lte: new Date(pStart) } }, { fields: ['id'] })).map((i) => i.id)
    : await invoicesWithLateUsage(em, [...contracts.keys()], pStart);
  if (!ids.length) return [];
  const finalized = await em.find(Invoice, { id: { $in: ids } }, { orderBy: { periodStart: 'asc', id: 'asc' } });
  // Corrections already made for it, wherever the customer was billed them (in the order they were frozen).
  const others = await em.find(Invoice, { customerId: contract.customerId, status: { $ne: 'VOID' } }, { orderBy: { frozenAt: 'asc', id: 'asc' } });
  const out: CorrectionInput[] = [];
  for (const f of finalized) {
    const own = f.contractId === contract.id;
    const again = await computeInvoice(em, contracts.get(f.contractId)!, { start: f.periodStart.toISOString(), end: f.periodEnd.toISOString() }, {
      invoiceId: f.id, skipCorrections: true, pricing: own ? opts.pricing : undefined, grants: own ? opts.grants : undefined, usageReader: opts.usageReader, asOf: f.frozenAt,
    });
    // Of it, or of the voided invoices it regenerated (their late usage billed elsewhere, and that
    // usage subtracted again on this one, net out; what commits drew on them counts).
    const chain = new Set([f.id]);
    for (let id = f.regeneratedFromInvoiceId; id && !chain.has(id);) {
      chain.add(id);
      id = (await em.findOne(Invoice, { id }, { fields: ['regeneratedFromInvoiceId'] }))?.regeneratedFromInvoiceId ?? null;
    }
    const made = others.filter((i) => i.id !== opts.invoiceId).flatMap((i) => i.lineItems).filter((l) => l.type === 'correction' && !!l.corrected_invoice_id && chain.has(l.corrected_invoice_id));
    const name = `Correction for ${f.periodStart.toISOString().slice(0, 10)} – ${f.periodEnd.toISOString().slice(0, 10)}`;
    const trial = contractTrial(contracts.get(f.contractId)!);
    const againLines = storedLines(again);
    if (made.some((l) => !l.product_id) || [...opts.carriedCorrections?.keys() ?? []].some((k) => k === `${f.id}|`)) {
      out.push(...wholeInvoiceCorrection(f, againLines, made, name, trial, opts));
      continue;
    }
    // Per changed line (product, time slice, group values): what it is now − what was billed −
    // what corrections of it were already made.
    const changes = new Map<string, { line: StoredInvoiceLine; delta: Decimal; billed: Decimal; draws: Map<string, Decimal> }>();
    // What each line is billed at, and what commits and credits drew on it: on the finalized
    // invoice, then on its corrections, in the order they were frozen.
    const change = (l: StoredInvoiceLine, by: Decimal, billed: boolean) => {
      const k = correctedLineKey(l);
      const c = changes.get(k) ?? changes.set(k, { line: l, delta: dec(0), billed: dec(0), draws: new Map() }).get(k)!;
      c.delta = c.delta.plus(by);
      // What the line is billed at counts only where its draws are recorded (a line frozen before
      // they were gives nothing back: its draws are unknown, so it is taken as paid in cash).
      if (!billed || !l.commit_draws) return;
      c.billed = c.billed.minus(by);
      for (const d of l.commit_draws ?? []) c.draws.set(`${d.id}|${d.segment_id}`, (c.draws.get(`${d.id}|${d.segment_id}`) ?? dec(0)).plus(d.amount));
    };
    for (const l of againLines) if (BILLED_USAGE_TYPES.has(l.type)) change(l, dec(l.total), false);
    for (const l of f.lineItems) if (BILLED_USAGE_TYPES.has(l.type)) change(l, dec(l.total).negated(), true);
    for (const l of made) change(l, dec(l.total).negated(), true);
    for (const [k, c] of changes) {
      const carried = opts.carriedCorrections?.get(`${f.id}|${k}`) ?? dec(0);
      const delta = c.delta.minus(carried);
      if (delta.isZero()) continue;
      for (const [seg, v] of opts.carriedCorrectionDraws?.get(`${f.id}|${k}`) ?? []) c.draws.set(seg, (c.draws.get(seg) ?? dec(0)).plus(v));
      // Usage of the line went down: what commits and credits drew on it beyond its new total goes back to them (the latest draw first).
      const giveBack = delta.lt(0)
        ? [...c.draws].filter(([, v]) => v.gt(0)).reverse().map(([seg, v]) => ({ grantId: seg.split('|')[0]!, segmentId: seg.slice(seg.indexOf('|') + 1), amount: v.toString() }))
        : [];
      const lineBilled = c.billed.plus(carried).toString();
      const l = c.line;
      // In-trial late usage is marked for the trial that covers it (within its cap).
      const inTrial = !!trial && isInTrialCharge({ type: l.type === 'correction' ? 'usage' : l.type, startingAt: l.starting_at, endingBefore: l.ending_before }, trial.window);
      out.push({
        correctedInvoiceId: f.id, contractId: f.contractId, productId: l.product_id, productType: l.product_type as ProductType | undefined,
        startingAt: l.starting_at, endingBefore: l.ending_before, pricingGroupValues: l.pricing_group_values, presentationGroupValues: l.presentation_group_values,
        name: `${name}: ${productNameOf(l)}${inTrial ? ' (in trial)' : ''}`, amount: delta.toString(), ...(giveBack.length && !inTrial ? { giveBack, lineBilled } : {}),
        reason: inTrial
          ? 'usage inside the trial changed after the period was finalized (late events); the trial covers it within its spending cap'
          : 'usage for a finalized period changed after it was finalized (late events)',
        ...(inTrial ? { trialContractId: f.contractId } : {}),
      });
    }
  }
  return out;
}

/** Which line of a finalized invoice a usage line or a correction of it is: product, time slice, group values. */
export function correctedLineKey(l: Pick<StoredInvoiceLine, 'product_id' | 'product_type' | 'starting_at' | 'ending_before' | 'pricing_group_values' | 'presentation_group_values'>): string {
  return JSON.stringify([l.product_id ?? null, l.product_type ?? null, l.starting_at ?? null, l.ending_before ?? null,
    groupValuesKey(l.pricing_group_values ?? {}), groupValuesKey((l.presentation_group_values ?? {}) as Record<string, string>)]);
}

/** A correction's product name: the corrected line's name (correction lines carry theirs after ': '). */
function productNameOf(l: StoredInvoiceLine): string {
  return l.type === 'correction' ? l.name.slice(l.name.indexOf(': ') + 2).replace(/ \(in trial\)$/, '') : l.name;
}

/**
 * The correction of a finalized invoice for which corrections of its whole usage (no product or
 * time slice) were stored: one line for the whole change, as they were made, billed as it is.
 */
function wholeInvoiceCorrection(f: Invoice, againLines: StoredInvoiceLine[], made: StoredInvoiceLine[], name: string, trial: ReturnType<typeof contractTrial>, opts: ComputeOptions): CorrectionInput[] {
  const carried = [...opts.carriedCorrections ?? []].filter(([k]) => k.startsWith(`${f.id}|`)).reduce((a, [, v]) => a.plus(v), dec(0));
  const already = made.reduce((a, l) => a.plus(l.total), dec(0)).plus(carried);
  const delta = usageTotal(againLines).minus(usageTotal(f.lineItems)).minus(already);
  const out: CorrectionInput[] = [];
  const trialDelta = !trial ? dec(0) : inTrialUsageTotal(againLines, trial.window).minus(inTrialUsageTotal(f.lineItems, trial.window))
    .minus(made.filter((l) => l.trial_contract_id === f.contractId).reduce((a, l) => a.plus(l.total), dec(0)))
    .minus(opts.carriedTrialCorrections?.get(f.id) ?? 0);
  if (!trialDelta.isZero()) {
    out.push({
      correctedInvoiceId: f.id, name: `${name} (in trial)`, amount: trialDelta.toString(), trialContractId: f.contractId,
      reason: 'usage inside the trial changed after the period was finalized (late events); the trial covers it within its spending cap',
    });
  }
  const rest = delta.minus(trialDelta);
  if (!rest.isZero()) out.push({ correctedInvoiceId: f.id, name, amount: rest.toString(), reason: 'usage for a finalized period changed after it was finalized (late events)' });
  return out;
}

/**
 * The late-usage invoice of a contract that ended with no renewal: only correction lines, for
 * usage of its finalized periods that arrived after they closed. Its period is the empty interval
 * at the contract's end. Null when there is nothing to bill (or a successor bills it).
 */
export async function computeLateUsageInvoice(em: EntityManager, contract: Contract): Promise<AssembledInvoice | null> {
  if (!contract.endingBefore || contract.archivedAt) return null;
  const [successor] = await em.execute<{ id: string }[]>(`select id::text as id from contract where terms -> 'transition' ->> 'from_contract_id' = ? and archived_at is null`, [contract.id]);
  if (successor) return null; // the renewal bills it
  const end = contract.endingBefore.toISOString();
  const inv = await computeInvoice(em, contract, { start: end, end }, { invoiceId: lateUsageInvoiceId(contract.id) });
  return inv.lines.length ? inv : null;
}

export const lateUsageInvoiceId = (contractId: string) => uuidV5(`late-usage:${contractId}`);

/**
 * A regenerated invoice prices its period's usage afresh, late events included. Late usage that
 * finalized invoices (of any of the customer's contracts) already billed as corrections of the
 * voided invoice (or of any invoice it in turn regenerated) is therefore subtracted on the
 * regenerated one, with a line naming where it was billed: never billed twice. Corrections on
 * voided invoices were voided with them and count for nothing. A frozen invoice still awaiting
 * approval that carries such a correction could yet be rejected and recomputed without it, so
 * regenerating waits for its decision (409).
 */
async function correctionsBilledElsewhere(em: EntityManager, contract: Contract, voidedId: string, invoiceId?: string): Promise<CorrectionInput[]> {
  const chain = new Set<string>();
  for (let id: string | null = voidedId; id && !chain.has(id);) {
    chain.add(id);
    id = (await em.findOne(Invoice, { id }, { fields: ['regeneratedFromInvoiceId'] }))?.regeneratedFromInvoiceId ?? null;
  }
  // By invoice, trial and corrected line: in-trial late usage another invoice's trial covered is
  // subtracted marked for that trial, so this invoice's trial does not cover it a second time; the
  // rest is subtracted from this invoice's own lines of that product before commits and credits
  // draw on them (whatever paid for it there — cash or a commit — it is not drawn again here).
  // Per corrected line (a rise billed on one invoice and its fall on another net out), across the
  // invoices that billed it; corrections stored without their line, per invoice as they were made.
  const billed = new Map<string, { on: string[]; line: StoredInvoiceLine; amount: Decimal }>();
  for (const inv of await em.find(Invoice, { customerId: contract.customerId, status: { $ne: 'VOID' } }, { orderBy: { frozenAt: 'asc', id: 'asc' } })) {
    if (inv.id === invoiceId || chain.has(inv.id)) continue;
    const lines = inv.lineItems.filter((l) => l.type === 'correction' && l.corrected_invoice_id && chain.has(l.corrected_invoice_id));
    if (!lines.reduce((a, l) => a.plus(l.total), dec(0)).isZero() && inv.status !== 'FINALIZED') {
      throw new ConflictError(`invoice ${inv.id} bills late usage of invoice ${voidedId}'s period and is awaiting approval: approve or reject it before regenerating`);
    }
    for (const l of lines) {
      const key = `${l.trial_contract_id ?? ''}|${l.product_id ? correctedLineKey(l) : `whole:${inv.id}`}`;
      const b = billed.get(key) ?? billed.set(key, { on: [], line: l, amount: dec(0) }).get(key)!;
      if (!b.on.includes(inv.id)) b.on.push(inv.id);
      b.amount = b.amount.plus(l.total);
    }
  }
  return [...billed.values()].filter((b) => !b.amount.isZero()).map(({ on, line: l, amount }) => ({
    correctedInvoiceId: voidedId, name: `Late usage already billed on invoice ${on.join(', ')}${l.product_id ? `: ${productNameOf(l)}` : ''}${l.trial_contract_id ? ' (in trial)' : ''}`, amount: amount.negated().toString(),
    reason: `usage of this period was billed as a correction on invoice ${on.join(', ')} while invoice ${voidedId} stood`,
    ...(l.trial_contract_id ? { trialContractId: l.trial_contract_id } : {}),
    ...(l.product_id ? {
      productId: l.product_id, productType: l.product_type as ProductType | undefined, startingAt: l.starting_at, endingBefore: l.ending_before,
      pricingGroupValues: l.pricing_group_values, presentationGroupValues: l.presentation_group_values, netsOwnUsage: !l.trial_contract_id,
    } : {}),
  }));
}

/**
 * Why these invoices cannot be voided together: a correction of one of them on another live
 * invoice gave back to commits what it drew (its usage went down later). Voiding it would give that
 * draw back a second time. Undefined when nothing stands in the way.
 */
export async function voidBlockedByGiveBacks(em: EntityManager, invoiceIds: readonly string[]): Promise<string | undefined> {
  if (!invoiceIds.length) return undefined;
  const [row] = await em.execute<{ on_id: string; corrected: string }[]>(
    `select i.id::text as on_id, l ->> 'corrected_invoice_id' as corrected
       from invoice i cross join lateral jsonb_array_elements(i.line_items) l
      where i.customer_id = (select customer_id from invoice where id::text = any(?::text[]) limit 1)
        and i.status <> 'VOID' and not (i.id::text = any(?::text[]))
        and l ->> 'type' = 'correction' and l ->> 'corrected_invoice_id' = any(?::text[])
        and exists (select 1 from jsonb_array_elements(coalesce(l -> 'commit_draws', '[]'::jsonb)) d where (d ->> 'amount')::numeric < 0)
      limit 1`, [pgTextArray(invoiceIds), pgTextArray(invoiceIds), pgTextArray(invoiceIds)]);
  return row && `invoice ${row.on_id} gave back to commits what invoice ${row.corrected} drew (its usage went down later); voiding invoice ${row.corrected} would give it back twice`;
}

const str = (d: Decimal | undefined) => d?.toString();

export function storedLines(inv: AssembledInvoice): StoredInvoiceLine[] {
  return inv.lines.map((l) => {
    const line: StoredInvoiceLine = {
      type: l.type,
      name: l.name,
      total: l.total.toString(),
      product_id: l.productId,
      product_type: l.productType,
      quantity: str(l.quantity),
      unit_price: l.unitPrice ? l.unitPrice.toString() : undefined,
      starting_at: l.startingAt,
      ending_before: l.endingBefore,
      pricing_group_values: l.pricingGroupValues,
      presentation_group_values: l.presentationGroupValues,
      is_prorated: l.isProrated,
      tiers: l.tiers?.map((t) => ({ level: t.level, starting_at: t.startingAt, quantity: t.quantity, price: t.price, subtotal: t.subtotal })),
      commit_id: l.commitId,
      applied_commit_or_credit: l.appliedTo ? { id: l.appliedTo.id, type: l.appliedTo.type, segment_id: l.appliedTo.segmentId } : undefined,
      scheduled_charge_id: l.scheduledChargeId,
      discount_id: l.discountId,
      corrected_invoice_id: l.correctedInvoiceId,
      commit_draws: l.commitDraws?.map((d) => ({ id: d.grantId, segment_id: d.segmentId, amount: d.amount.toString() })),
      reason: l.reason,
      trial_contract_id: l.trialContractId,
    };
    return Object.fromEntries(Object.entries(line).filter(([, v]) => v !== undefined)) as unknown as StoredInvoiceLine;
  });
}

/** The ledger entries an invoice's draw-downs and true-ups write (amounts negative: they reduce the balance). */
export function ledgerEntriesOf(inv: AssembledInvoice, invoice: { id: string; contractId: string; periodEnd: string }): { grantId: string; segmentId: string; type: string; amount: string; ts: string }[] {
  // A give-back (a negative correction returning what its line's earlier corrections drew) is CREDITED.
  const out = inv.drawdowns.filter((d) => !d.amount.isZero()).map((d) => ({
    grantId: d.grantId, segmentId: d.segmentId, type: d.amount.lt(0) && d.kind !== 'POSTPAID' ? CREDITED[d.kind] : DEDUCTION[d.kind], amount: d.amount.negated().toString(), ts: invoice.periodEnd,
  }));
  for (const l of inv.lines) {
    if (l.type === 'postpaid_trueup' && l.commitId) {
      out.push({ grantId: l.commitId, segmentId: 'trueup', type: 'POSTPAID_COMMIT_TRUEUP', amount: l.total.negated().toString(), ts: invoice.periodEnd });
    }
  }
  return out;
}

/** What an invoice looks like to readers, whether frozen in PostgreSQL or computed live. */
export interface InvoiceView {
  id: string;
  customerId: string;
  contractId: string;
  type: 'USAGE' | 'SCHEDULED';
  periodStart: string;
  periodEnd: string;
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  approvalStatus: 'OPEN' | 'PENDING_APPROVAL' | 'APPROVED' | 'REJECTED';
  rejectionReason: string | null;
  creditType: { id: string; name: string };
  lines: StoredInvoiceLine[];
  total: string;
  subtotal: string;
  finalizedAt: string | null;
  emailedAt: string | null;
  createdAt: string;
  voidedAt?: string | null;
  regeneratedFromInvoiceId?: string | null;
}

export function viewOfStored(inv: Invoice): InvoiceView {
  return {
    id: inv.id,
    customerId: inv.customerId,
    contractId: inv.contractId,
    type: inv.type,
    periodStart: inv.periodStart.toISOString(),
    periodEnd: inv.periodEnd.toISOString(),
    status: inv.status,
    approvalStatus: inv.approvalStatus,
    rejectionReason: inv.rejectionReason ?? null,
    creditType: { id: inv.creditTypeId, name: inv.creditTypeName },
    lines: inv.lineItems,
    total: inv.total,
    subtotal: inv.subtotal ?? inv.total,
    finalizedAt: inv.finalizedAt?.toISOString() ?? null,
    emailedAt: inv.emailedAt?.toISOString() ?? null,
    createdAt: inv.createdAt.toISOString(),
    voidedAt: inv.voidedAt?.toISOString() ?? null,
    regeneratedFromInvoiceId: inv.regeneratedFromInvoiceId ?? null,
  };
}

/**
 * Every invoice of a customer: the frozen ones from PostgreSQL plus a live draft for every contract
 * period that has started and is not frozen yet (so drafts are always current). Drafts of one
 * contract are computed in period order, each seeing what the earlier drafts drew from commits
 * and credits.
 */
export async function listCustomerInvoices(em: EntityManager, customerId: string, now = new Date()): Promise<InvoiceView[]> {
  const stored = await em.find(Invoice, { customerId }, { orderBy: { periodStart: 'asc' } });
  const views = [...stored.map(viewOfStored), ...(await customerDrafts(em, customerId, now)).map((d) => d.view)];
  return views.sort((a, b) => a.periodStart.localeCompare(b.periodStart) || a.contractId.localeCompare(b.contractId));
}

/** One invoice of the customer by id: frozen, or the live draft (computing only the drafts before it). */
export async function findInvoiceView(em: EntityManager, customerId: string, invoiceId: string, now = new Date()): Promise<InvoiceView | undefined> {
  const stored = await em.findOne(Invoice, { id: invoiceId, customerId });
  if (stored) return viewOfStored(stored);
  return (await customerDrafts(em, customerId, now, { upToInvoiceId: invoiceId })).find((d) => d.view.id === invoiceId)?.view;
}

export interface OpenPeriod { contract: Contract; period: Period; id: string }

/**
 * The order in which a customer's periods draw on commits and credits — drafts are computed and
 * invoices frozen in this order, so a frozen invoice draws exactly what its draft showed: by period
 * end (so a period never waits for a longer one that ends later), then start, then contract id.
 */
export function periodOrder(x: { contractId: string; period: Pick<Period, 'start' | 'end'> }, y: { contractId: string; period: Pick<Period, 'start' | 'end'> }): number {
  return Date.parse(x.period.end) - Date.parse(y.period.end) || Date.parse(x.period.start) - Date.parse(y.period.start) || x.contractId.localeCompare(y.contractId);
}

/** Every period of the customer's live contracts that has started by `now` and is not frozen yet, in `periodOrder`. */
export async function openPeriods(em: EntityManager, customerId: string, now: Date): Promise<OpenPeriod[]> {
  const contracts = await em.find(Contract, { customerId, archivedAt: null }, { orderBy: { startingAt: 'asc', id: 'asc' } });
  if (!contracts.length) return [];
  const frozen = new Set((await em.find(Invoice, { customerId }, { fields: ['id'] })).map((i) => i.id));
  return openPeriodsOf(contracts, frozen, now);
}

/** `openPeriods` from loaded rows: the live contracts (start order) and the ids of frozen invoices. */
export function openPeriodsOf(contracts: readonly Contract[], frozen: ReadonlySet<string>, now: Date): OpenPeriod[] {
  const open: OpenPeriod[] = [];
  for (const contract of contracts) {
    for (const period of periodsStartedBefore(contractSchedule(contract), now.toISOString())) {
      const id = invoiceIdFor(contract.id, period.start);
      if (!frozen.has(id)) open.push({ contract, period, id });
    }
  }
  return open.sort((x, y) => periodOrder({ contractId: x.contract.id, period: x.period }, { contractId: y.contract.id, period: y.period }));
}

export interface Draft { view: InvoiceView; inv: AssembledInvoice; contract: Contract }

/**
 * The live drafts of every open (not frozen) period of the customer's contracts, computed in
 * `periodOrder` across contracts: each sees what earlier drafts drew from commits and credits,
 * including a customer-level commit shared by several contracts. With `upToInvoiceId`, stops
 * after that draft (and computes only the periods before it in `periodOrder`).
 */
export async function customerDrafts(em: EntityManager, customerId: string, now: Date, opts: { upToInvoiceId?: string; usageReader?: typeof usageParts; preload?: DraftsPreload } = {}): Promise<Draft[]> {
  const pre = opts.preload;
  const open = pre ? openPeriodsOf(pre.contracts.get(customerId) ?? [], pre.frozen, now) : await openPeriods(em, customerId, now);
  let upTo = open.length;
  if (opts.upToInvoiceId) {
    const target = open.findIndex((o) => o.id === opts.upToInvoiceId);
    if (target < 0) return [];
    upTo = target + 1;
  }
  const needed = open.slice(0, upTo);
  const context = new Map<string, { grants: BalanceGrant[]; pricing: PricingData; drawn: Map<string, Decimal> }>();
  await Promise.all([...new Set(needed.map((o) => o.contract))].map(async (contract) => {
    const grants = pre ? grantsApplying(pre.grants.get(customerId) ?? [], contract) : await grantsForContract(em, contract);
    const chargeProductIds = [...(contract.terms?.scheduled_charges ?? []), ...(contract.terms?.discounts ?? [])].map((c) => c.product_id);
    const [pricing, drawn] = await Promise.all([
      pre ? pre.pricing(contract.rateCardId, [...chargeProductIds, ...grants.map((g) => g.productId)]) : loadPricing(em, contract.rateCardId, [...chargeProductIds, ...grants.map((g) => g.productId)]),
      pre ? pre.drawn : drawnBySegment(em, grants.map((g) => g.id)),
    ]);
    context.set(contract.id, { grants, pricing, drawn });
  }));
  const carried = new Map<string, Decimal>();
  // Corrections on earlier drafts, by corrected invoice, across contracts (a renewal bills its predecessor's).
  const corrections = new Map<string, Decimal>();
  const correctionDraws = new Map<string, Map<string, Decimal>>();
  const trialCorrections = new Map<string, Decimal>();
  // What earlier drafts' trial lines covered, by the trial's contract.
  const trials = new Map<string, Decimal>();
  const add = (m: Map<string, Decimal>, k: string, v: Decimal) => m.set(k, (m.get(k) ?? dec(0)).plus(v));
  const out: Draft[] = [];
  for (const { contract, period, id } of needed) {
    const c = context.get(contract.id)!;
    const inv = await computeInvoice(em, contract, period, {
      invoiceId: id, carried, carriedCorrections: corrections, carriedCorrectionDraws: correctionDraws, carriedTrialCorrections: trialCorrections, carriedTrial: trials,
      pricing: c.pricing, grants: c.grants, drawn: c.drawn, usageReader: opts.usageReader ?? pre?.usageReader,
      // Preloaded: a contract with no finalized period to correct (and no predecessor) has no corrections.
      ...(pre && !pre.mayHaveCorrections.has(contract.id) ? { corrections: [] } : {}),
    });
    for (const d of inv.drawdowns) add(carried, `${d.grantId}|${d.segmentId}`, d.amount);
    for (const l of inv.lines) {
      if (l.type === 'correction' && l.correctedInvoiceId) {
        const key = `${l.correctedInvoiceId}|${l.productId ? correctedLineKey({ product_id: l.productId, product_type: l.productType, starting_at: l.startingAt, ending_before: l.endingBefore, pricing_group_values: l.pricingGroupValues, presentation_group_values: l.presentationGroupValues }) : ''}`;
        add(corrections, key, l.total);
        for (const d of l.commitDraws ?? []) add(correctionDraws.get(key) ?? correctionDraws.set(key, new Map()).get(key)!, `${d.grantId}|${d.segmentId}`, d.amount);
      }
      if (l.type === 'correction' && l.correctedInvoiceId && l.trialContractId) add(trialCorrections, l.correctedInvoiceId, l.total);
      if (l.type === 'trial' && l.trialContractId) add(trials, l.trialContractId, l.total.negated());
    }
    out.push({ view: draftViewOf(inv, contract, period, id, now), inv, contract });
  }
  return out;
}

/**
 * What `customerDrafts` reads, loaded once for many customers (alert evaluation's round): live
 * contracts, frozen invoice ids, grants and their draw-downs in one query each, pricing once per
 * rate card, usage through one batched reader; contracts that may have late usage to correct are
 * left to compute their corrections the usual way. Same drafts, far fewer round trips.
 */
export interface DraftsPreload {
  contracts: Map<string, Contract[]>;
  frozen: Set<string>;
  grants: Map<string, BalanceGrant[]>;
  pricing(rateCardId: string, extraProductIds: string[]): Promise<PricingData>;
  drawn: Map<string, Decimal>;
  mayHaveCorrections: Set<string>;
  usageReader: typeof usageParts;
}

export async function preloadDrafts(em: EntityManager, customerIds: string[], now: Date): Promise<DraftsPreload> {
  const ids = [...new Set(customerIds)];
  const contracts = await em.find(Contract, { customerId: { $in: ids }, archivedAt: null }, { orderBy: { startingAt: 'asc', id: 'asc' } });
  const frozen = await em.execute<{ id: string }[]>(`select id::text as id from invoice where customer_id = any(?::uuid[])`, [pgTextArray(ids)]);
  const grants = await em.find(BalanceGrant, { customerId: { $in: ids }, archivedAt: null }, { orderBy: { createdAt: 'asc', id: 'asc' } });
  const byCustomer = <T extends { customerId: string }>(rows: T[]) => {
    const m = new Map<string, T[]>();
    for (const r of rows) (m.get(r.customerId) ?? m.set(r.customerId, []).get(r.customerId)!).push(r);
    return m;
  };
  const late = contracts.length ? await invoicesWithLateUsage(em, contracts.map((c) => c.id), now.getTime()) : [];
  const lateContracts = late.length ? (await em.find(Invoice, { id: { $in: late } }, { fields: ['contractId'] })).map((i) => i.contractId) : [];
  const pricing = new Map<string, Promise<PricingData>>();
  return {
    contracts: byCustomer(contracts),
    frozen: new Set(frozen.map((i) => i.id)),
    grants: byCustomer(grants),
    pricing(rateCardId, extra) {
      const key = `${rateCardId}|${[...new Set(extra)].sort().join(',')}`;
      if (!pricing.has(key)) pricing.set(key, loadPricing(em, rateCardId, extra));
      return pricing.get(key)!;
    },
    drawn: await drawnBySegment(em, grants.map((g) => g.id)),
    mayHaveCorrections: new Set([...lateContracts, ...contracts.filter((c) => c.terms?.transition).map((c) => c.id)]),
    usageReader: batchingUsageReader(),
  };
}

export function draftViewOf(inv: AssembledInvoice, contract: Contract, period: Pick<Period, 'start' | 'end'>, id: string, now: Date): InvoiceView {
  return {
    id,
    customerId: contract.customerId,
    contractId: contract.id,
    type: 'USAGE',
    periodStart: period.start,
    periodEnd: period.end,
    status: 'DRAFT',
    approvalStatus: 'OPEN',
    rejectionReason: null,
    creditType: { id: inv.creditType.id, name: inv.creditType.name },
    lines: storedLines(inv),
    total: inv.total.toString(),
    subtotal: inv.subtotal.toString(),
    finalizedAt: null,
    emailedAt: null,
    createdAt: now.toISOString(),
  };
}
