import type { RateSpec } from './pricing/index.js';

/**
 * The rate schedule: which rate is in force for each product (× pricing group values) at each
 * moment. Pure, shared by invoices, `getRateSchedule` and reconciliation.
 *
 * Rule: rates for the same product and pricing group values form a timeline; at any moment the
 * rate in force is the one that started last (ties: added last) among those covering it. So a
 * price change is simply a new rate with a later `starting_at`: from that moment it applies to
 * every contract on the card, and a period spanning it is split there. No migration, no restart.
 */
export interface RateRow {
  id: string;
  productId: string;
  /** Canonical pricing group values ({} when the rate applies to the product as a whole). */
  pricingGroupValues: Record<string, string>;
  entitled: boolean;
  /** Epoch ms; inclusive. */
  startingAt: number;
  /** Epoch ms; exclusive; null = open-ended. */
  endingBefore: number | null;
  /** Epoch ms: breaks ties between rates that start at the same moment (later wins). */
  createdAt: number;
  spec: RateSpec;
  billingFrequency?: string | null;
  commitRate?: RateSpec | null;
  /**
   * Set by `ratesForFrequency` for one contract: the rate is on that contract's single timeline
   * per product and pricing group, and `true` when its billing frequency is the contract's (such
   * a rate wins over one without a frequency wherever both are in force).
   */
  ofContractFrequency?: boolean;
}

export interface ScheduleSegment {
  rate: RateRow;
  /** Epoch ms; inclusive. */
  startingAt: number;
  /** Epoch ms; exclusive; null = open-ended. */
  endingBefore: number | null;
}

export function groupValuesKey(values: Record<string, string> | null | undefined): string {
  if (!values) return '';
  return JSON.stringify(Object.keys(values).sort().map((k) => [k, values[k]]));
}

export function rateKey(r: Pick<RateRow, 'productId' | 'pricingGroupValues' | 'billingFrequency' | 'ofContractFrequency'>): string {
  const frequency = r.ofContractFrequency === undefined ? r.billingFrequency ?? '' : '*';
  return `${r.productId}|${groupValuesKey(r.pricingGroupValues)}|${frequency}`;
}

/**
 * The rates that price a contract billed at `frequency`. A rate card can price one product (and
 * pricing group) at several billing frequencies, e.g. MONTHLY and ANNUAL: for a contract, rates of
 * its own usage statement frequency and rates without a frequency form one timeline per product
 * and pricing group, in which a rate of the contract's frequency wins wherever it is in force and
 * a rate without one applies elsewhere. Rates of another frequency never apply (an annual price
 * billed monthly would be twelve times too high).
 */
export function ratesForFrequency(rates: readonly RateRow[], frequency: string): RateRow[] {
  return rates.filter((r) => !r.billingFrequency || r.billingFrequency === frequency).map((r) => ({ ...r, ofContractFrequency: !!r.billingFrequency }));
}

const wins = (a: RateRow, b: RateRow) => (!!a.ofContractFrequency !== !!b.ofContractFrequency ? !!a.ofContractFrequency : a.startingAt > b.startingAt || (a.startingAt === b.startingAt && (a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id))));

/**
 * The segments of every rate timeline that overlap [from, to) (to = null: open-ended), clipped to
 * it, in order of key then time.
 */
export function rateSchedule(rates: readonly RateRow[], from: number, to: number | null): ScheduleSegment[] {
  const byKey = new Map<string, RateRow[]>();
  for (const r of rates) {
    const k = rateKey(r);
    (byKey.get(k) ?? byKey.set(k, []).get(k)!).push(r);
  }
  const out: ScheduleSegment[] = [];
  for (const key of [...byKey.keys()].sort()) {
    const timeline = byKey.get(key)!;
    const cuts = new Set<number>([from]);
    for (const r of timeline) {
      if (r.startingAt > from && (to === null || r.startingAt < to)) cuts.add(r.startingAt);
      if (r.endingBefore !== null && r.endingBefore > from && (to === null || r.endingBefore < to)) cuts.add(r.endingBefore);
    }
    const points = [...cuts].sort((a, b) => a - b);
    let current: ScheduleSegment | null = null;
    for (let i = 0; i < points.length; i++) {
      const start = points[i]!;
      const end = i + 1 < points.length ? points[i + 1]! : to;
      let best: RateRow | null = null;
      for (const r of timeline) {
        if (r.startingAt <= start && (r.endingBefore === null || r.endingBefore > start) && (!best || wins(r, best))) best = r;
      }
      if (current && best && current.rate === best && current.endingBefore === start) {
        current.endingBefore = end;
        continue;
      }
      if (current) out.push(current);
      current = best ? { rate: best, startingAt: start, endingBefore: end } : null;
    }
    if (current) out.push(current);
  }
  return out;
}
