import { Decimal } from 'decimal.js';
import { Dec, dec, roundAmount, sum, USD_CENTS, type CreditType } from './money.js';
import { price, type RateSpec } from './pricing/index.js';
import { groupValuesKey } from './rate-schedule.js';
import type { TrialSpec } from './contract-terms.js';
import { trialLineName, type TrialWindow } from './trial.js';
import { isInTrialCharge, trialCapUsage } from './trial-cap.js';

/**
 * Invoice assembly: a pure function of the period's priced inputs (usage slices with the rate in
 * force, subscriptions, composite products, fixed charges) and the commit/credit balances left
 * before this invoice. Same inputs, same invoice, to the cent.
 *
 * Rounding (invariant I6) happens once per line, in `roundAmount`, half-up to the credit type's
 * precision. Everything after that — composite bases, commit draw-downs, the total — adds and
 * compares already-rounded amounts, so nothing drifts between the draft, the finalized invoice,
 * the email and any payment push. The total is the exact sum of the lines (invariant I2).
 */

export type ProductType = 'USAGE' | 'SUBSCRIPTION' | 'FIXED' | 'COMPOSITE' | 'PRO_SERVICE';

export interface QuantityConversion { conversion_factor: string; operation: 'MULTIPLY' | 'DIVIDE'; name?: string }
export interface QuantityRounding { decimal_places: number; rounding_method: 'ROUND_UP' | 'ROUND_DOWN' | 'ROUND_HALF_UP' }

/** A product's state in force for the invoice (billing/catalog.ts resolves updates). */
export interface ProductInfo {
  id: string;
  name: string;
  type: ProductType;
  tags: string[];
  customFields?: Record<string, string>;
  quantityConversion?: QuantityConversion | null;
  quantityRounding?: QuantityRounding | null;
  compositeProductIds?: string[];
  compositeTags?: string[];
  excludeFreeUsage?: boolean;
}

/** One product × group values × time slice with the rate in force over it. */
export interface RatedSlice {
  productId: string;
  /** Epoch ms, [startingAt, endingBefore). */
  startingAt: number;
  endingBefore: number;
  pricingGroupValues?: Record<string, string>;
  presentationGroupValues?: Record<string, string | null>;
  /** USAGE: the metric's value over the slice (decimal string), before quantity conversion. */
  quantity?: string;
  rate: RateSpec;
  /** SUBSCRIPTION: fraction of the full billing period the slice covers. */
  prorationFactor?: string;
}

export interface FixedCharge {
  kind: 'scheduled' | 'discount' | 'commit_purchase';
  id: string;
  productId: string;
  name: string;
  /** Epoch ms: when the charge falls due (inside the invoice period). */
  timestamp: number;
  quantity: string;
  unitPrice: string;
  /** commit_purchase: the commit being paid for. */
  commitId?: string;
}

export interface GrantSegment {
  id: string;
  /** Epoch ms, [startingAt, endingBefore). */
  startingAt: number;
  endingBefore: number;
  amount: string;
  /** What is left of the segment before this invoice (amount − earlier draw-downs). */
  remaining: string;
}

/** A commit or credit as the invoice sees it. */
export interface GrantState {
  id: string;
  kind: 'PREPAID' | 'POSTPAID' | 'CREDIT';
  name: string;
  priority: number;
  /** Contract-level grants go before customer-level ones of the same priority. */
  contractLevel: boolean;
  applicableProductIds?: string[];
  applicableProductTags?: string[];
  specifiers?: { product_id?: string; product_tags?: string[]; pricing_group_values?: Record<string, string>; presentation_group_values?: Record<string, string> }[];
  segments: GrantSegment[];
  /**
   * The contracts whose charges it may draw on: the invoice's own lines belong to the invoice's
   * contract, a correction to the contract of the invoice it corrects. Unset: any.
   */
  contractIds?: string[];
  /** Only here to take back a give-back (archived, or not this invoice's to draw on): draws nothing. */
  giveBackOnly?: boolean;
}

export interface CorrectionInput {
  /** The finalized invoice being corrected. */
  correctedInvoiceId: string;
  /** Its contract: the commits and credits that applied to that contract may draw on the correction. */
  contractId?: string;
  /**
   * The corrected line: product, time slice and group values (absent on corrections stored before
   * they were kept per line; those are billed as they are and nothing draws on them).
   */
  productId?: string;
  productType?: ProductType;
  startingAt?: string;
  endingBefore?: string;
  pricingGroupValues?: Record<string, string>;
  presentationGroupValues?: Record<string, string | null>;
  name: string;
  /** Already-rounded amount (recomputed − billed). */
  amount: string;
  reason: string;
  /** Late usage inside this contract's trial: the trial of that contract covers it (within its cap). */
  trialContractId?: string;
  /**
   * A regenerated invoice's subtraction of late usage that another invoice billed while the voided
   * one stood: that usage is among this invoice's own lines of the same product and group values,
   * already billed, so commits and credits draw on those lines net of it.
   */
  netsOwnUsage?: boolean;
  /**
   * A negative correction: what commits and credits drew on the corrected line and still hold
   * (positive, per segment, newest first). With `lineBilled` (what the line is billed at before
   * this correction) they give back what they hold beyond the line's new total, and a POSTPAID
   * minimum stops counting what is no longer billed in cash; without it the amounts are given back
   * as they are (re-deriving a stored invoice).
   */
  giveBack?: { grantId: string; segmentId: string; amount: string }[];
  lineBilled?: string;
}

/** A contract's trial as one invoice sees it. */
export interface InvoiceTrial {
  /** The contract whose trial it is. */
  contractId: string;
  window: TrialWindow;
  spec: Pick<TrialSpec, 'spending_cap'>;
  /** What earlier invoices' trial lines covered (cents, positive): they come first, in period order. */
  coveredBefore: string;
  /** The invoice's own lines fall under it (its own contract's trial); otherwise only corrections marked for it do. */
  ownLines: boolean;
}

export type LineType = 'usage' | 'subscription' | 'scheduled' | 'commit_purchase' | 'applied_commit_or_credit' | 'postpaid_trueup' | 'correction' | 'trial';

export interface InvoiceLine {
  type: LineType;
  name: string;
  productId?: string;
  productType?: ProductType;
  quantity?: Decimal;
  unitPrice?: Decimal;
  /** Rounded to the credit type's precision: the one rounding point. */
  total: Decimal;
  startingAt?: string;
  endingBefore?: string;
  pricingGroupValues?: Record<string, string>;
  presentationGroupValues?: Record<string, string | null>;
  isProrated?: boolean;
  tiers?: { level: number; startingAt: string; quantity: string; price: string; subtotal: string }[];
  commitId?: string;
  appliedTo?: { id: string; type: 'PREPAID' | 'POSTPAID' | 'CREDIT'; segmentId: string };
  scheduledChargeId?: string;
  discountId?: string;
  correctedInvoiceId?: string;
  reason?: string;
  /** Trial lines: whose trial; correction lines: in-trial late usage of that contract's trial. */
  trialContractId?: string;
  /** Correction lines (not stored): the corrected invoice's contract. */
  contractId?: string;
  /** Correction lines (not stored): see CorrectionInput.netsOwnUsage. */
  netsOwnUsage?: boolean;
  /** What each commit segment drew on the line (positive) or, on a correction, got back from it (negative). */
  commitDraws?: { grantId: string; segmentId: string; amount: Decimal }[];
}

export interface Drawdown {
  grantId: string;
  kind: GrantState['kind'];
  segmentId: string;
  /** Amount taken from the segment by this invoice (negative: given back by a negative correction). */
  amount: Decimal;
}

export interface InvoiceInput {
  creditType?: CreditType;
  /** The invoice's contract (its own lines belong to it); see GrantState.contractIds. */
  contractId?: string;
  periodStart: number;
  periodEnd: number;
  products: ReadonlyMap<string, ProductInfo>;
  slices: readonly RatedSlice[];
  fixedCharges?: readonly FixedCharge[];
  grants?: readonly GrantState[];
  /** POSTPAID commits whose access ends in this period: the unmet minimum is trued up here. */
  trueUps?: readonly { grantId: string; name: string; productId?: string; segmentId: string; remainingBeforeInvoice: string }[];
  corrections?: readonly CorrectionInput[];
  /** Trials covering this invoice's in-trial charges or in-trial corrections. */
  trials?: readonly InvoiceTrial[];
}

export interface AssembledInvoice {
  lines: InvoiceLine[];
  /** Sum of the lines before the trial, commits and credits. */
  subtotal: Decimal;
  /** Sum of all the lines, exactly (invariant I2). */
  total: Decimal;
  creditType: CreditType;
  drawdowns: Drawdown[];
}

const iso = (ms: number) => new Date(ms).toISOString();

export function convertQuantity(q: Decimal, product: ProductInfo): Decimal {
  let out = q;
  const conv = product.quantityConversion;
  if (conv) out = conv.operation === 'MULTIPLY' ? out.times(dec(conv.conversion_factor)) : out.div(dec(conv.conversion_factor));
  const r = product.quantityRounding;
  if (r) {
    const mode = { ROUND_UP: Decimal.ROUND_UP, ROUND_DOWN: Decimal.ROUND_DOWN, ROUND_HALF_UP: Decimal.ROUND_HALF_UP }[r.rounding_method];
    out = out.toDecimalPlaces(r.decimal_places, mode);
  }
  return out;
}

function rateLine(slice: RatedSlice, product: ProductInfo, creditType: CreditType, quantity: Decimal): InvoiceLine {
  const result = price({ quantity, rate: slice.rate, prorationFactor: slice.prorationFactor ? dec(slice.prorationFactor) : undefined });
  const isSub = product.type === 'SUBSCRIPTION';
  return {
    type: isSub ? 'subscription' : 'usage',
    name: product.name,
    productId: product.id,
    productType: product.type,
    // Usage lines show the usage itself (a PACKAGE rate's packages are not the customer's quantity).
    quantity: isSub ? result.billedQuantity ?? quantity : quantity,
    unitPrice: slice.rate.rateType === 'PACKAGE' ? undefined : result.unitPrice,
    total: roundAmount(result.amount, creditType),
    startingAt: iso(slice.startingAt),
    endingBefore: iso(slice.endingBefore),
    pricingGroupValues: slice.pricingGroupValues ?? {},
    presentationGroupValues: slice.presentationGroupValues ?? {},
    ...(isSub ? { isProrated: !!slice.rate.isProrated } : {}),
    ...(result.tierBreakdown && slice.rate.rateType === 'TIERED'
      ? { tiers: result.tierBreakdown.map((t) => ({ level: t.tier + 1, startingAt: t.startingAt.toString(), quantity: t.quantity.toString(), price: t.price.toString(), subtotal: t.amount.toString() })) }
      : {}),
  };
}

function grantApplies(g: GrantState, line: InvoiceLine, product: ProductInfo | undefined): boolean {
  if (!line.productId || !product) return false;
  if (g.specifiers?.length) {
    return g.specifiers.some((s) =>
      (!s.product_id || s.product_id === line.productId) &&
      (!s.product_tags?.length || s.product_tags.every((t) => product.tags.includes(t))) &&
      (!s.pricing_group_values || Object.entries(s.pricing_group_values).every(([k, v]) => line.pricingGroupValues?.[k] === v)) &&
      (!s.presentation_group_values || Object.entries(s.presentation_group_values).every(([k, v]) => line.presentationGroupValues?.[k] === v)));
  }
  const ids = g.applicableProductIds ?? [];
  const tags = g.applicableProductTags ?? [];
  if (!ids.length && !tags.length) return true;
  return ids.includes(line.productId) || tags.some((t) => product.tags.includes(t));
}

/**
 * What of each own usage or subscription line late usage billed elsewhere already paid for (a
 * regenerated invoice's `netsOwnUsage` corrections): taken from the lines of the same product and
 * group values in time order, after what the trial covered. Commits and credits draw on the rest.
 */
function netBilledElsewhere(lines: readonly InvoiceLine[], trialCovered: ReadonlyMap<InvoiceLine, Decimal>): Map<InvoiceLine, Decimal> {
  const out = new Map<InvoiceLine, Decimal>();
  const key = (l: InvoiceLine) => `${l.productId}|${groupValuesKey(l.pricingGroupValues ?? {})}|${groupValuesKey((l.presentationGroupValues ?? {}) as Record<string, string>)}`;
  const own = lines.filter((l) => l.type === 'usage' || l.type === 'subscription')
    .sort((a, b) => Date.parse(a.startingAt!) - Date.parse(b.startingAt!));
  for (const c of lines) {
    if (c.type !== 'correction' || !c.netsOwnUsage || !c.total.lt(0)) continue;
    let left = c.total.negated();
    for (const l of own) {
      if (left.lte(0)) break;
      if (key(l) !== key(c)) continue;
      const open = l.total.minus(trialCovered.get(l) ?? 0).minus(out.get(l) ?? 0);
      if (open.lte(0)) continue;
      const take = Dec.min(open, left);
      out.set(l, (out.get(l) ?? new Dec(0)).plus(take));
      left = left.minus(take);
    }
  }
  return out;
}

/** Order in which commits and credits are drawn: priority, then contract before customer level, then soonest to expire. */
export function grantOrder(a: { grant: GrantState; seg: GrantSegment }, b: { grant: GrantState; seg: GrantSegment }): number {
  return a.grant.priority - b.grant.priority
    || Number(b.grant.contractLevel) - Number(a.grant.contractLevel)
    || a.seg.endingBefore - b.seg.endingBefore
    || a.grant.id.localeCompare(b.grant.id)
    || a.seg.startingAt - b.seg.startingAt;
}

/**
 * The trial lines (pushed onto `lines`) and what each covers of which line. Per trial: the
 * in-trial charges on this invoice — its own in-trial lines (when `ownLines`) plus the late
 * in-trial usage corrections marked for it — are covered by `trialCapUsage` of the whole trial so
 * far (earlier invoices' coverage first, in period order) minus what earlier invoices covered.
 * Corrections are of earlier periods, so they take the coverage first; the rest goes to the own
 * lines in time order (commits then draw on what each line has left). A negative in-trial
 * correction (regenerate subtracting in-trial late usage billed elsewhere) nets against the
 * own lines, so the same usage is not covered twice. Amounts are rounded line
 * totals and a whole-cent cap, so the trial line needs no rounding of its own. A line is emitted
 * whenever the trial applies, at 0 when nothing is covered.
 */
function coverTrials(lines: InvoiceLine[], trials: readonly InvoiceTrial[]): Map<InvoiceLine, Decimal> {
  const covered = new Map<InvoiceLine, Decimal>();
  for (const t of trials) {
    const own = t.ownLines ? lines.filter((l) => isInTrialCharge(l, t.window)) : [];
    own.sort((a, b) => Date.parse(a.startingAt!) - Date.parse(b.startingAt!)); // stable: line order within a moment
    const corrections = sum(lines.filter((l) => l.type === 'correction' && l.trialContractId === t.contractId).map((l) => l.total));
    const ownTotal = sum(own.map((l) => Dec.max(l.total, 0)));
    const before = dec(t.coveredBefore);
    const cover = trialCapUsage(t.spec, before.plus(ownTotal).plus(corrections)).used.minus(before);
    let left = Dec.min(Dec.max(cover.minus(corrections), 0), ownTotal);
    for (const l of own) {
      const take = Dec.min(left, Dec.max(l.total, 0));
      if (take.gt(0)) covered.set(l, take);
      left = left.minus(take);
    }
    lines.push({ type: 'trial', name: trialLineName(t.window), total: cover.isZero() ? new Dec(0) : cover.negated(), startingAt: t.window.start, endingBefore: t.window.end, trialContractId: t.contractId });
  }
  return covered;
}

export function assembleInvoice(input: InvoiceInput): AssembledInvoice {
  const creditType = input.creditType ?? USD_CENTS;
  const products = input.products;
  const lines: InvoiceLine[] = [];

  // 1. Usage and subscriptions, each slice priced by the rate in force over it.
  const composites: RatedSlice[] = [];
  for (const slice of input.slices) {
    const product = products.get(slice.productId);
    if (!product) throw new RangeError(`slice for unknown product ${slice.productId}`);
    if (product.type === 'COMPOSITE' || slice.rate.rateType === 'PERCENTAGE') { composites.push(slice); continue; }
    const quantity = product.type === 'USAGE' ? convertQuantity(dec(slice.quantity ?? '0'), product) : new Dec(0);
    lines.push(rateLine(slice, product, creditType, quantity));
  }

  // 2. Composite products: a percentage of the (rounded) spend on the products they cover. A
  //    covered line counts once, towards the first slice of the composite that overlaps it (a
  //    composite whose rate changes mid-period has one slice per rate; a line spanning both would
  //    otherwise be charged in each).
  const counted = new Map<string, Set<InvoiceLine>>();
  for (const slice of composites) { // in time order per product (the caller sorts slices)
    const product = products.get(slice.productId)!;
    const seen = counted.get(slice.productId) ?? counted.set(slice.productId, new Set()).get(slice.productId)!;
    const covered = lines.filter((l) => {
      if (!l.productId || seen.has(l) || Date.parse(l.startingAt!) >= slice.endingBefore || Date.parse(l.endingBefore!) <= slice.startingAt) return false;
      const p = products.get(l.productId);
      if (!p || p.type === 'COMPOSITE') return false;
      if (product.excludeFreeUsage && l.total.isZero()) return false;
      return (product.compositeProductIds ?? []).includes(l.productId) || (product.compositeTags ?? []).some((t) => p.tags.includes(t));
    });
    for (const l of covered) seen.add(l);
    lines.push(rateLine(slice, product, creditType, sum(covered.map((l) => l.total))));
  }

  // 3. Scheduled charges, discounts and prepaid commit purchases falling due in the period.
  for (const c of input.fixedCharges ?? []) {
    const qty = dec(c.quantity);
    const unit = dec(c.unitPrice);
    const amount = roundAmount(qty.times(unit), creditType);
    lines.push({
      type: c.kind === 'commit_purchase' ? 'commit_purchase' : 'scheduled',
      name: c.name,
      productId: c.productId,
      productType: 'FIXED',
      quantity: qty,
      unitPrice: unit,
      total: c.kind === 'discount' ? amount.negated() : amount,
      startingAt: iso(c.timestamp),
      endingBefore: iso(c.timestamp),
      ...(c.kind === 'scheduled' ? { scheduledChargeId: c.id } : {}),
      ...(c.kind === 'discount' ? { discountId: c.id } : {}),
      ...(c.kind === 'commit_purchase' ? { commitId: c.commitId } : {}),
    });
  }

  // 4. Corrections for late usage of finalized periods, one per changed line of the corrected invoice.
  const giveBacks = new Map<InvoiceLine, Pick<CorrectionInput, 'giveBack' | 'lineBilled'>>();
  for (const c of input.corrections ?? []) {
    const line: InvoiceLine = {
      type: 'correction', name: c.name, productId: c.productId, total: dec(c.amount), correctedInvoiceId: c.correctedInvoiceId, reason: c.reason,
      ...(c.productType ? { productType: c.productType } : {}),
      ...(c.startingAt ? { startingAt: c.startingAt, endingBefore: c.endingBefore } : {}),
      ...(c.pricingGroupValues ? { pricingGroupValues: c.pricingGroupValues } : {}),
      ...(c.presentationGroupValues ? { presentationGroupValues: c.presentationGroupValues } : {}),
      ...(c.trialContractId ? { trialContractId: c.trialContractId } : {}),
      ...(c.contractId ? { contractId: c.contractId } : {}),
      ...(c.netsOwnUsage ? { netsOwnUsage: true } : {}),
    };
    lines.push(line);
    if (c.giveBack?.length && line.total.lt(0)) giveBacks.set(line, { giveBack: c.giveBack, lineBilled: c.lineBilled });
  }

  const subtotal = sum(lines.map((l) => l.total));

  // 5. Trials cover first; commits and credits draw on what the trial left of each line.
  const trialCovered = coverTrials(lines, input.trials ?? []);

  // 6. Commits and credits draw down the usage, subscription and composite lines they apply to —
  //    first the late usage of finalized periods (oldest first), from the commits and credits that
  //    applied to the corrected line's contract, time and product, while they have balance; then
  //    this period's own lines.
  const drawdowns = new Map<string, Drawdown>();
  const remaining = new Map<string, Decimal>();
  const ordered = (input.grants ?? []).flatMap((grant) => grant.segments.map((seg) => ({ grant, seg }))).sort(grantOrder);
  for (const { seg } of ordered) remaining.set(seg.id, dec(seg.remaining));
  const netted = netBilledElsewhere(lines, trialCovered);
  const kindOf = new Map(ordered.map(({ grant }) => [grant.id, grant.kind]));
  const take = (line: InvoiceLine, grantId: string, segmentId: string, amount: Decimal) => {
    const key = `${grantId}|${segmentId}`;
    const d = drawdowns.get(key) ?? { grantId, kind: kindOf.get(grantId)!, segmentId, amount: new Dec(0) };
    d.amount = d.amount.plus(amount);
    drawdowns.set(key, d);
    remaining.set(segmentId, remaining.get(segmentId)!.minus(amount));
    (line.commitDraws ??= []).push({ grantId, segmentId, amount });
  };
  // Usage of a finalized line that went down: the commits and credits that drew on it keep at most
  // the line's new total (the newest draws go back first), and a POSTPAID minimum counts at most
  // what is left billed in cash; only the rest is credited in cash.
  for (const [line, { giveBack = [], lineBilled }] of giveBacks) {
    const live = giveBack.filter((b) => kindOf.has(b.grantId) && remaining.has(b.segmentId) && dec(b.amount).gt(0));
    const prepaid = live.filter((b) => kindOf.get(b.grantId) !== 'POSTPAID');
    const postpaid = live.filter((b) => kindOf.get(b.grantId) === 'POSTPAID');
    const held = (list: typeof live) => sum(list.map((b) => dec(b.amount)));
    const giveUpTo = (list: typeof live, total: Decimal) => {
      let left = total;
      for (const b of list) {
        if (left.lte(0)) break;
        const amount = Dec.min(left, dec(b.amount));
        take(line, b.grantId, b.segmentId, amount.negated());
        left = left.minus(amount);
      }
      return total.minus(left);
    };
    if (lineBilled === undefined) { // as stored
      giveUpTo(prepaid, held(prepaid));
      giveUpTo(postpaid, held(postpaid));
      continue;
    }
    const now = Dec.max(dec(lineBilled).plus(line.total), 0);
    const kept = held(prepaid).minus(giveUpTo(prepaid, Dec.max(held(prepaid).minus(now), 0)));
    giveUpTo(postpaid, Dec.max(held(postpaid).minus(Dec.max(now.minus(kept), 0)), 0));
  }
  const drawable = [
    ...lines.filter((l) => l.type === 'correction' && l.productId && l.startingAt && !l.trialContractId && !l.netsOwnUsage && l.total.gt(0)),
    ...lines.filter((l) => l.type === 'usage' || l.type === 'subscription'),
  ];
  // Recorded on every line commits could draw on or give back to, even when nothing does.
  for (const line of lines) if (line.type === 'usage' || line.type === 'subscription' || line.type === 'correction') line.commitDraws ??= [];
  for (const line of drawable) {
    let open = line.total.minus(trialCovered.get(line) ?? 0).minus(netted.get(line) ?? 0);
    if (open.lte(0)) continue;
    const lineStart = Date.parse(line.startingAt!);
    const lineEnd = Date.parse(line.endingBefore!);
    const lineContract = line.type === 'correction' ? line.contractId : input.contractId;
    for (const { grant, seg } of ordered) {
      if (open.lte(0)) break;
      if (grant.giveBackOnly || seg.startingAt >= lineEnd || seg.endingBefore <= lineStart) continue;
      if (grant.contractIds && lineContract !== undefined && !grant.contractIds.includes(lineContract)) continue;
      if (!grantApplies(grant, line, products.get(line.productId!))) continue;
      const left = remaining.get(seg.id)!;
      if (left.lte(0)) continue;
      const amount = Dec.min(left, open);
      take(line, grant.id, seg.id, amount);
      open = open.minus(amount);
    }
  }
  const grantsById = new Map((input.grants ?? []).map((g) => [g.id, g]));
  for (const d of drawdowns.values()) {
    // A postpaid commit is paid in arrears: usage counts against its minimum but is still billed.
    if (d.kind === 'POSTPAID' || d.amount.isZero()) continue;
    const g = grantsById.get(d.grantId)!;
    lines.push({
      type: 'applied_commit_or_credit',
      name: g.name,
      total: d.amount.negated(),
      commitId: g.id,
      appliedTo: { id: g.id, type: g.kind, segmentId: d.segmentId },
    });
  }

  // 7. Postpaid minimums whose access ends in this period: bill what usage did not reach.
  for (const t of input.trueUps ?? []) {
    const used = drawdowns.get(`${t.grantId}|${t.segmentId}`)?.amount ?? new Dec(0);
    const shortfall = dec(t.remainingBeforeInvoice).minus(used);
    if (shortfall.gt(0)) {
      lines.push({ type: 'postpaid_trueup', name: `${t.name} (true-up)`, productId: t.productId, productType: 'FIXED', total: roundAmount(shortfall, creditType), commitId: t.grantId });
    }
  }

  return { lines, subtotal, total: sum(lines.map((l) => l.total)), creditType, drawdowns: [...drawdowns.values()] };
}
