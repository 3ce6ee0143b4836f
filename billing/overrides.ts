import { dec } from './money.js';
import type { RateSpec } from './pricing/index.js';
import type { ScheduleSegment } from './rate-schedule.js';

/**
 * Contract overrides on top of the rate card's schedule (Metronome's rules):
 * - an override applies over [starting_at, ending_before) to the rates its target selects: a
 *   product, products with any of `applicable_product_tags`, or `override_specifiers` (product,
 *   all of a set of tags, pricing group values, billing frequency);
 * - OVERWRITE beats MULTIPLIER; among several overwrites the lowest `priority` wins (then the
 *   latest starting);
 * - among several multipliers, LOWEST_MULTIPLIER (the default) applies the smallest multiplier,
 *   EXPLICIT the one with the lowest `priority`. One multiplier applies; they do not compound;
 * - `entitled` on an override changes the entitlement of the rates it selects.
 * Segments are split wherever an override starts or ends.
 */
export interface OverrideSpecifier {
  product_id?: string;
  product_tags?: string[];
  pricing_group_values?: Record<string, string>;
  billing_frequency?: string;
}

export interface ContractOverride {
  id: string;
  startingAt: number;
  endingBefore: number | null;
  type?: 'OVERWRITE' | 'MULTIPLIER';
  productId?: string;
  applicableProductTags?: string[];
  specifiers?: OverrideSpecifier[];
  multiplier?: string;
  overwriteRate?: RateSpec;
  entitled?: boolean;
  priority?: number;
}

export type Prioritization = 'LOWEST_MULTIPLIER' | 'EXPLICIT';

export interface EffectiveSegment extends ScheduleSegment {
  /** The rate after overrides (equals the list rate when none applies). */
  effective: RateSpec;
  entitled: boolean;
  overrideIds: string[];
}

export function overrideSelects(o: ContractOverride, seg: ScheduleSegment, productTags: readonly string[]): boolean {
  const r = seg.rate;
  if (o.specifiers?.length) {
    return o.specifiers.some((s) =>
      (!s.product_id || s.product_id === r.productId) &&
      (!s.product_tags?.length || s.product_tags.every((t) => productTags.includes(t))) &&
      (!s.pricing_group_values || Object.entries(s.pricing_group_values).every(([k, v]) => r.pricingGroupValues[k] === v)) &&
      (!s.billing_frequency || s.billing_frequency === r.billingFrequency));
  }
  if (o.productId) return o.productId === r.productId;
  if (o.applicableProductTags?.length) return o.applicableProductTags.some((t) => productTags.includes(t));
  return false;
}

export function multiplyRate(rate: RateSpec, multiplier: string): RateSpec {
  const m = dec(multiplier);
  const times = (v: string | undefined) => (v === undefined ? undefined : dec(v).times(m).toString());
  return {
    ...rate,
    price: rate.rateType === 'PERCENTAGE' ? times(rate.price) : times(rate.price),
    tiers: rate.tiers?.map((t) => ({ ...t, price: times(t.price)! })),
  };
}

function pick(applicable: ContractOverride[], prioritization: Prioritization): ContractOverride | undefined {
  const overwrites = applicable.filter((o) => o.type === 'OVERWRITE');
  if (overwrites.length) {
    return overwrites.sort((a, b) => (a.priority ?? Infinity) - (b.priority ?? Infinity) || b.startingAt - a.startingAt || a.id.localeCompare(b.id))[0];
  }
  const multipliers = applicable.filter((o) => o.type === 'MULTIPLIER');
  if (!multipliers.length) return undefined;
  return multipliers.sort((a, b) => prioritization === 'EXPLICIT'
    ? (a.priority ?? Infinity) - (b.priority ?? Infinity) || a.id.localeCompare(b.id)
    : dec(a.multiplier!).comparedTo(dec(b.multiplier!)) || a.id.localeCompare(b.id))[0];
}

export function applyOverrides(
  segments: readonly ScheduleSegment[],
  overrides: readonly ContractOverride[],
  productTags: (productId: string) => readonly string[],
  prioritization: Prioritization = 'LOWEST_MULTIPLIER',
): EffectiveSegment[] {
  const out: EffectiveSegment[] = [];
  for (const seg of segments) {
    const tags = productTags(seg.rate.productId);
    const relevant = overrides.filter((o) => overrideSelects(o, seg, tags)
      && (seg.endingBefore === null || o.startingAt < seg.endingBefore) && (o.endingBefore === null || o.endingBefore > seg.startingAt));
    const cuts = new Set<number>([seg.startingAt]);
    for (const o of relevant) {
      if (o.startingAt > seg.startingAt && (seg.endingBefore === null || o.startingAt < seg.endingBefore)) cuts.add(o.startingAt);
      if (o.endingBefore !== null && o.endingBefore > seg.startingAt && (seg.endingBefore === null || o.endingBefore < seg.endingBefore)) cuts.add(o.endingBefore);
    }
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i < points.length; i++) {
      const start = points[i]!;
      const end = i + 1 < points.length ? points[i + 1]! : seg.endingBefore;
      const active = relevant.filter((o) => o.startingAt <= start && (o.endingBefore === null || o.endingBefore > start));
      const chosen = pick(active, prioritization);
      const entitledOverride = active.filter((o) => o.entitled !== undefined).sort((a, b) => b.startingAt - a.startingAt || (a.priority ?? Infinity) - (b.priority ?? Infinity))[0];
      let effective = seg.rate.spec;
      if (chosen?.type === 'OVERWRITE') effective = chosen.overwriteRate!;
      else if (chosen?.type === 'MULTIPLIER') effective = multiplyRate(seg.rate.spec, chosen.multiplier!);
      out.push({
        rate: seg.rate, startingAt: start, endingBefore: end, effective,
        entitled: entitledOverride ? entitledOverride.entitled! : seg.rate.entitled,
        overrideIds: [chosen?.id, entitledOverride?.id].filter((x): x is string => !!x),
      });
    }
  }
  return out;
}
