import { assembleInvoice, type GrantState, type ProductInfo, type RatedSlice } from './invoice.js';
import { dec, sum } from './money.js';
import type { RateSpec } from './pricing/index.js';

/**
 * Invariants of invoice assembly over 500 seeded random periods (products, rates of every type,
 * commits and credits with random priorities, balances and restrictions):
 * - every line is whole cents and the total is exactly the sum of the lines (I2, I6);
 * - a segment never gives more than it had left, and never goes negative;
 * - commits and credits never take more than the usage and subscription lines they cover, and
 *   never touch other lines; postpaid commits add no negative line;
 * - the same inputs give the same invoice.
 */
let seed = 20261121;
const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const num = (max: number, places = 2) => (Math.floor(rnd() * max * 10 ** places) / 10 ** places).toFixed(places);

const JAN = Date.parse('2026-01-01T00:00:00Z');
const FEB = Date.parse('2026-02-01T00:00:00Z');

function randomRate(type: ProductInfo['type']): RateSpec {
  if (type === 'SUBSCRIPTION') return { rateType: 'SUBSCRIPTION', price: num(5000), quantity: String(1 + Math.floor(rnd() * 5)), isProrated: true };
  if (type === 'COMPOSITE') return { rateType: 'PERCENTAGE', price: num(1, 3) };
  const tiers = [{ size: String(1 + Math.floor(rnd() * 1000)), price: num(5, 4) }, { price: num(5, 4) }];
  return pick<RateSpec>([
    { rateType: 'FLAT', price: num(10, 6) },
    { rateType: 'TIERED', tiers },
    { rateType: 'VOLUME', tiers },
    { rateType: 'PACKAGE', price: num(500), packageSize: String(1 + Math.floor(rnd() * 100)), packageRounding: pick(['UP', 'DOWN'] as const) },
  ]);
}

function randomCase() {
  const products: ProductInfo[] = [];
  const n = 1 + Math.floor(rnd() * 6);
  for (let i = 0; i < n; i++) products.push({ id: `p${i}`, name: `P${i}`, type: pick(['USAGE', 'USAGE', 'USAGE', 'SUBSCRIPTION'] as const), tags: rnd() < 0.5 ? ['ai'] : [] });
  if (rnd() < 0.3) products.push({ id: 'c', name: 'Composite', type: 'COMPOSITE', tags: [], compositeTags: ['ai'] });
  const slices: RatedSlice[] = [];
  for (const p of products) {
    const cut = rnd() < 0.3 ? JAN + Math.floor(rnd() * 30) * 86_400_000 + 86_400_000 : null;
    for (const [from, to] of cut ? [[JAN, cut], [cut, FEB]] : [[JAN, FEB]]) {
      slices.push({ productId: p.id, startingAt: from!, endingBefore: to!, quantity: num(100000, Math.floor(rnd() * 4)), rate: randomRate(p.type), prorationFactor: dec(to! - from!).div(FEB - JAN).toString() });
    }
  }
  const grants: GrantState[] = [];
  const g = Math.floor(rnd() * 4);
  for (let i = 0; i < g; i++) {
    const amount = String(Math.floor(rnd() * 200000));
    grants.push({
      id: `g${i}`, kind: pick(['PREPAID', 'POSTPAID', 'CREDIT'] as const), name: `G${i}`, priority: Math.floor(rnd() * 3), contractLevel: rnd() < 0.5,
      applicableProductIds: rnd() < 0.3 ? [pick(products).id] : undefined,
      segments: [{ id: `g${i}s`, startingAt: JAN, endingBefore: FEB, amount, remaining: String(Math.floor(rnd() * Number(amount))) }],
    });
  }
  return { periodStart: JAN, periodEnd: FEB, products: new Map(products.map((p) => [p.id, p])), slices, grants };
}

describe('invoice assembly invariants (500 random periods)', () => {
  test('cents, totals, draw-down limits, determinism', () => {
    for (let k = 0; k < 500; k++) {
      const input = randomCase();
      const inv = assembleInvoice(input);
      expect(assembleInvoice(input)).toEqual(inv);
      for (const l of inv.lines) expect(l.total.isInteger()).toBe(true);
      expect(inv.total.eq(sum(inv.lines.map((l) => l.total)))).toBe(true);

      const remaining = new Map(input.grants.flatMap((g) => g.segments.map((s) => [s.id, dec(s.remaining)])));
      for (const d of inv.drawdowns) {
        expect(d.amount.gt(0)).toBe(true);
        expect(d.amount.lte(remaining.get(d.segmentId)!)).toBe(true);
      }
      const covered = sum(inv.lines.filter((l) => l.type === 'usage' || l.type === 'subscription').map((l) => l.total));
      expect(sum(inv.drawdowns.map((d) => d.amount)).lte(covered)).toBe(true);
      const applied = inv.lines.filter((l) => l.type === 'applied_commit_or_credit');
      for (const l of applied) expect(l.total.lte(0)).toBe(true);
      expect(applied.every((l) => input.grants.find((g) => g.id === l.appliedTo!.id)!.kind !== 'POSTPAID')).toBe(true);
      expect(inv.total.minus(inv.subtotal).eq(sum(applied.map((l) => l.total)))).toBe(true);
      for (const l of inv.lines) if (l.type !== 'applied_commit_or_credit') expect(l.total.gte(0)).toBe(true);
    }
  });
});
