import { assembleInvoice, type GrantState, type ProductInfo, type RatedSlice } from './invoice.js';
import { applyOverrides, type ContractOverride } from './overrides.js';
import { prorationFraction, type Schedule } from './periods.js';
import { dec, sum } from './money.js';
import { rateSchedule, type RateRow } from './rate-schedule.js';
import type { RateSpec } from './pricing/index.js';

/**
 * Table-driven invoice scenarios with exact cents: each builds a period's inputs the way
 * db/invoices.ts does (rate schedule → overrides → slices → grants) and checks every line.
 */
const P = (s: string) => Date.parse(s);
const JAN = P('2026-01-01T00:00:00Z');
const FEB = P('2026-02-01T00:00:00Z');

const product = (id: string, type: ProductInfo['type'] = 'USAGE', tags: string[] = [], extra: Partial<ProductInfo> = {}): ProductInfo => ({ id, name: id, type, tags, ...extra });
const products = (...ps: ProductInfo[]) => new Map(ps.map((p) => [p.id, p]));
const rate = (productId: string, spec: RateSpec, startingAt = JAN, endingBefore: number | null = null, extra: Partial<RateRow> = {}): RateRow => ({
  id: `${productId}@${startingAt}${extra.pricingGroupValues ? JSON.stringify(extra.pricingGroupValues) : ''}`, productId, pricingGroupValues: {}, entitled: true, startingAt, endingBefore, createdAt: 0, spec, ...extra,
});
const usage = (productId: string, quantity: string, spec: RateSpec, from = JAN, to = FEB): RatedSlice => ({ productId, quantity, rate: spec, startingAt: from, endingBefore: to });
const grant = (id: string, kind: GrantState['kind'], amount: string, extra: Partial<GrantState> = {}, remaining = amount): GrantState => ({
  id, kind, name: id, priority: 1, contractLevel: true, segments: [{ id: `${id}-s0`, startingAt: JAN, endingBefore: P('2027-01-01T00:00:00Z'), amount, remaining }], ...extra,
});
const totals = (inv: ReturnType<typeof assembleInvoice>) => inv.lines.map((l) => `${l.type}:${l.name}:${l.total.toString()}`);

describe('invoice scenarios (exact cents)', () => {
  test('a prepaid commit that runs out mid-period, across a mid-period price change', () => {
    // The rate card's price doubles on Jan 15: the period is split there.
    const rates = [rate('tokens', { rateType: 'FLAT', price: '1' }), rate('tokens', { rateType: 'FLAT', price: '2' }, P('2026-01-15T00:00:00Z'))];
    const segs = rateSchedule(rates, JAN, FEB);
    expect(segs.map((s) => [new Date(s.startingAt).toISOString(), s.rate.spec.price])).toEqual([['2026-01-01T00:00:00.000Z', '1'], ['2026-01-15T00:00:00.000Z', '2']]);
    const qty = ['600', '400']; // 600 units before the change, 400 after
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens')),
      slices: segs.map((s, i) => usage('tokens', qty[i]!, s.rate.spec, s.startingAt, s.endingBefore!)),
      grants: [grant('commit', 'PREPAID', '1000')],
    });
    expect(totals(inv)).toEqual(['usage:tokens:600', 'usage:tokens:800', 'applied_commit_or_credit:commit:-1000']);
    expect(inv.total.toString()).toBe('400');
    expect(inv.drawdowns.map((d) => d.amount.toString())).toEqual(['1000']);
  });

  test('credits and commits draw in priority order; applicable products restrict them', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens'), product('images')),
      slices: [usage('tokens', '1000', { rateType: 'FLAT', price: '1' }), usage('images', '500', { rateType: 'FLAT', price: '1' })],
      grants: [
        grant('commit', 'PREPAID', '5000', { priority: 2 }),
        grant('trial-credit', 'CREDIT', '300', { priority: 1 }),
        grant('images-only', 'CREDIT', '100', { priority: 0, applicableProductIds: ['images'] }),
      ],
    });
    expect(totals(inv)).toEqual([
      'usage:tokens:1000', 'usage:images:500',
      'applied_commit_or_credit:trial-credit:-300', 'applied_commit_or_credit:commit:-1100', 'applied_commit_or_credit:images-only:-100',
    ]);
    expect(inv.total.toString()).toBe('0');
    expect(inv.subtotal.toString()).toBe('1500');
  });

  test('an earlier invoice already used part of the commit: only the remainder applies', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens')),
      slices: [usage('tokens', '1000', { rateType: 'FLAT', price: '1' })],
      grants: [grant('commit', 'PREPAID', '1000', {}, '250')],
    });
    expect(totals(inv)).toEqual(['usage:tokens:1000', 'applied_commit_or_credit:commit:-250']);
    expect(inv.total.toString()).toBe('750');
  });

  test('a postpaid minimum: usage counts against it, the shortfall is trued up at the end', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens')),
      slices: [usage('tokens', '3000', { rateType: 'FLAT', price: '1' })],
      grants: [grant('minimum', 'POSTPAID', '5000')],
      trueUps: [{ grantId: 'minimum', name: 'minimum', segmentId: 'minimum-s0', remainingBeforeInvoice: '5000' }],
    });
    expect(totals(inv)).toEqual(['usage:tokens:3000', 'postpaid_trueup:minimum (true-up):2000']);
    expect(inv.total.toString()).toBe('5000');
  });

  test('zero usage: zero lines, nothing drawn, total 0', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens')),
      slices: [usage('tokens', '0', { rateType: 'TIERED', tiers: [{ size: '10', price: '5' }, { price: '1' }] })],
      grants: [grant('commit', 'PREPAID', '1000')],
    });
    expect(totals(inv)).toEqual(['usage:tokens:0']);
    expect(inv.drawdowns).toEqual([]);
  });

  const overrideCases: [string, ContractOverride[], 'LOWEST_MULTIPLIER' | 'EXPLICIT', string][] = [
    ['no override: list price', [], 'LOWEST_MULTIPLIER', '1000'],
    ['a multiplier on the product', [{ id: 'm', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', productId: 'tokens', multiplier: '0.8' }], 'LOWEST_MULTIPLIER', '800'],
    ['the lowest multiplier wins by default', [
      { id: 'm1', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', productId: 'tokens', multiplier: '0.9', priority: 1 },
      { id: 'm2', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', applicableProductTags: ['ai'], multiplier: '0.7', priority: 2 },
    ], 'LOWEST_MULTIPLIER', '700'],
    ['EXPLICIT: the lowest priority value wins', [
      { id: 'm1', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', productId: 'tokens', multiplier: '0.9', priority: 1 },
      { id: 'm2', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', applicableProductTags: ['ai'], multiplier: '0.7', priority: 2 },
    ], 'EXPLICIT', '900'],
    ['an overwrite beats any multiplier', [
      { id: 'm', startingAt: JAN, endingBefore: null, type: 'MULTIPLIER', productId: 'tokens', multiplier: '0.5', priority: 1 },
      { id: 'o', startingAt: JAN, endingBefore: null, type: 'OVERWRITE', specifiers: [{ product_tags: ['ai'] }], overwriteRate: { rateType: 'FLAT', price: '1.25' }, priority: 9 },
    ], 'LOWEST_MULTIPLIER', '1250'],
    ['an override for half the period splits it', [
      { id: 'm', startingAt: P('2026-01-16T00:00:00Z'), endingBefore: null, type: 'MULTIPLIER', productId: 'tokens', multiplier: '0.5' },
    ], 'LOWEST_MULTIPLIER', '742'], // 15/31 of 1000 at 1 → 484, 16/31 at 0.5 → 258
    ['an override on other pricing group values does not apply', [
      { id: 'o', startingAt: JAN, endingBefore: null, type: 'OVERWRITE', specifiers: [{ product_id: 'tokens', pricing_group_values: { model: 'large' } }], overwriteRate: { rateType: 'FLAT', price: '9' } },
    ], 'LOWEST_MULTIPLIER', '1000'],
  ];
  test.each(overrideCases)('overrides: %s', (_name, overrides, prioritization, cents) => {
    const segs = applyOverrides(rateSchedule([rate('tokens', { rateType: 'FLAT', price: '1' })], JAN, FEB), overrides, () => ['ai'], prioritization);
    // 1000 units spread evenly over the 31 days: 15 days before Jan 16, 16 after.
    const slices = segs.map((s) => usage('tokens', dec(1000).times(s.endingBefore! - s.startingAt).div(FEB - JAN).toString(), s.effective, s.startingAt, s.endingBefore!));
    const inv = assembleInvoice({ periodStart: JAN, periodEnd: FEB, products: products(product('tokens', 'USAGE', ['ai'])), slices });
    expect(inv.total.toString()).toBe(cents);
  });

  test('entitlement: a non-entitled rate made entitled by an override', () => {
    const segs = applyOverrides(rateSchedule([rate('gpu', { rateType: 'FLAT', price: '1' }, JAN, null, { entitled: false })], JAN, FEB),
      [{ id: 'e', startingAt: JAN, endingBefore: null, productId: 'gpu', entitled: true }], () => []);
    expect(segs.map((s) => s.entitled)).toEqual([true]);
  });

  const monthly = (startingAt: string, endingBefore?: string): Schedule => ({ startingAt, endingBefore, frequency: 'MONTHLY', day: 'FIRST_OF_MONTH' });
  const prorationCases: [string, Schedule, string, string, string][] = [
    // name, schedule, slice from, slice to, expected cents for 3100/month × 1 seat
    ['whole month', monthly('2026-01-01T00:00:00Z'), '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', '3100'],
    ['starts Jan 15 (17 of 31 days)', monthly('2026-01-15T00:00:00Z'), '2026-01-15T00:00:00Z', '2026-02-01T00:00:00Z', '1700'],
    ['ends Jan 11 (10 of 31 days)', monthly('2026-01-01T00:00:00Z', '2026-01-11T00:00:00Z'), '2026-01-01T00:00:00Z', '2026-01-11T00:00:00Z', '1000'],
    ['Feb 15 in a leap year (15 of 29 days)', monthly('2028-02-15T00:00:00Z'), '2028-02-15T00:00:00Z', '2028-03-01T00:00:00Z', '1603'], // 3100 × 15/29 = 1603.45
    ['Feb 15 in a common year (14 of 28 days)', monthly('2027-02-15T00:00:00Z'), '2027-02-15T00:00:00Z', '2027-03-01T00:00:00Z', '1550'],
  ];
  test.each(prorationCases)('subscription proration: %s', (_name, schedule, from, to, cents) => {
    const f = prorationFraction(schedule, from, to);
    const inv = assembleInvoice({
      periodStart: P(from), periodEnd: P(to), products: products(product('seat', 'SUBSCRIPTION')),
      slices: [{ productId: 'seat', startingAt: P(from), endingBefore: P(to), rate: { rateType: 'SUBSCRIPTION', price: '3100', quantity: '1', isProrated: true }, prorationFactor: dec(f.numerator).div(f.denominator).toString() }],
    });
    expect(inv.total.toString()).toBe(cents);
  });

  test('proration with an amendment mid-period: a seat price overwritten from Jan 16 splits the period', () => {
    const schedule: Schedule = { startingAt: '2026-01-01T00:00:00Z', frequency: 'MONTHLY', day: 'FIRST_OF_MONTH' };
    const segs = applyOverrides(rateSchedule([rate('seat', { rateType: 'SUBSCRIPTION', price: '3100', quantity: '2', isProrated: true })], JAN, FEB),
      [{ id: 'amend', startingAt: P('2026-01-16T00:00:00Z'), endingBefore: null, type: 'OVERWRITE', productId: 'seat', overwriteRate: { rateType: 'SUBSCRIPTION', price: '6200', quantity: '2', isProrated: true } }], () => []);
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('seat', 'SUBSCRIPTION')),
      slices: segs.map((s) => {
        const f = prorationFraction(schedule, new Date(s.startingAt).toISOString(), new Date(s.endingBefore!).toISOString());
        return { productId: 'seat', startingAt: s.startingAt, endingBefore: s.endingBefore!, rate: s.effective, prorationFactor: dec(f.numerator).div(f.denominator).toString() };
      }),
    });
    // 2 seats × 3100 × 15/31 = 3000, then 2 × 6200 × 16/31 = 6400.
    expect(totals(inv)).toEqual(['subscription:seat:3000', 'subscription:seat:6400']);
  });

  test('composite product: 10 % of the spend on products tagged ai, after rounding each line', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB,
      products: products(product('tokens', 'USAGE', ['ai']), product('images', 'USAGE', ['ai']), product('storage'), product('support', 'COMPOSITE', [], { compositeTags: ['ai'] })),
      slices: [
        usage('tokens', '1234', { rateType: 'FLAT', price: '1.5' }), // 1851
        usage('images', '10', { rateType: 'FLAT', price: '33.33' }), // 333.3 → 333
        usage('storage', '100', { rateType: 'FLAT', price: '1' }),
        { productId: 'support', startingAt: JAN, endingBefore: FEB, rate: { rateType: 'PERCENTAGE', price: '0.1' } },
      ],
    });
    expect(totals(inv)).toEqual(['usage:tokens:1851', 'usage:images:333', 'usage:storage:100', 'usage:support:218']); // (1851 + 333) × 0.1 = 218.4
  });

  test('a composite whose rate changes mid-period counts each covered line once', () => {
    const MID = P('2026-01-16T00:00:00Z');
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB,
      products: products(product('tokens', 'USAGE', ['ai']), product('support', 'COMPOSITE', [], { compositeTags: ['ai'] })),
      slices: [
        usage('tokens', '1000', { rateType: 'FLAT', price: '1' }), // one line over the whole month: 1000
        { productId: 'support', startingAt: JAN, endingBefore: MID, rate: { rateType: 'PERCENTAGE', price: '0.1' } },
        { productId: 'support', startingAt: MID, endingBefore: FEB, rate: { rateType: 'PERCENTAGE', price: '0.2' } },
      ],
    });
    // The line starts in the first composite slice and counts there only: 10 % of 1000, not 10 % + 20 %.
    expect(totals(inv)).toEqual(['usage:tokens:1000', 'usage:support:100', 'usage:support:0']);
  });

  test('a composite whose rate starts mid-period still covers a line that started before it', () => {
    const MID = P('2026-01-16T00:00:00Z');
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB,
      products: products(product('tokens', 'USAGE', ['ai']), product('support', 'COMPOSITE', [], { compositeTags: ['ai'] })),
      slices: [
        usage('tokens', '1000', { rateType: 'FLAT', price: '1' }),
        { productId: 'support', startingAt: MID, endingBefore: FEB, rate: { rateType: 'PERCENTAGE', price: '0.1' } },
      ],
    });
    expect(totals(inv)).toEqual(['usage:tokens:1000', 'usage:support:100']);
  });

  test('scheduled charges, discounts and commit purchases; total is the sum of lines', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB, products: products(product('tokens'), product('fee', 'FIXED')),
      slices: [usage('tokens', '10', { rateType: 'FLAT', price: '1' })],
      fixedCharges: [
        { kind: 'scheduled', id: 'sc', productId: 'fee', name: 'Onboarding', timestamp: JAN, quantity: '1', unitPrice: '50000' },
        { kind: 'discount', id: 'd', productId: 'fee', name: 'Launch discount', timestamp: JAN, quantity: '1', unitPrice: '10000' },
        { kind: 'commit_purchase', id: 'cp', productId: 'fee', name: 'Prepaid commit', timestamp: JAN, quantity: '1', unitPrice: '100000', commitId: 'c' },
      ],
    });
    expect(totals(inv)).toEqual(['usage:tokens:10', 'scheduled:Onboarding:50000', 'scheduled:Launch discount:-10000', 'commit_purchase:Prepaid commit:100000']);
    expect(inv.total.eq(sum(inv.lines.map((l) => l.total)))).toBe(true);
    expect(inv.total.toString()).toBe('140010');
  });

  test('quantity conversion and rounding before pricing (MB → GB, rounded up)', () => {
    const inv = assembleInvoice({
      periodStart: JAN, periodEnd: FEB,
      products: products(product('egress', 'USAGE', [], { quantityConversion: { conversion_factor: '1024', operation: 'DIVIDE' }, quantityRounding: { decimal_places: 0, rounding_method: 'ROUND_UP' } })),
      slices: [usage('egress', '2049', { rateType: 'FLAT', price: '9' })],
    });
    expect(inv.lines[0]!.quantity!.toString()).toBe('3');
    expect(inv.total.toString()).toBe('27');
  });
});
