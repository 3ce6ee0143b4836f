import { assembleInvoice, type CorrectionInput, type FixedCharge, type GrantState, type InvoiceTrial, type ProductInfo, type RatedSlice } from './invoice.js';
import { sum } from './money.js';
import type { RateSpec } from './pricing/index.js';
import { trialWindow } from './trial.js';

/**
 * Trial lines with exact cents. Slices are cut at the trial's end the way db/invoices.ts cuts
 * them (usagePlans; tested on PostgreSQL in db/invoice-trial.test.ts); here: what the trial line
 * covers, how a spending cap is drawn across periods, and what commits draw after it.
 */
const P = (s: string) => Date.parse(s);
const JAN = P('2026-01-01T00:00:00Z');
const FEB = P('2026-02-01T00:00:00Z');
const MAR = P('2026-03-01T00:00:00Z');

const product = (id: string, type: ProductInfo['type'] = 'USAGE'): ProductInfo => ({ id, name: id, type, tags: [] });
const products = new Map([product('tokens'), product('images'), product('fee', 'FIXED'), product('seat', 'SUBSCRIPTION')].map((p) => [p.id, p]));
const FLAT1: RateSpec = { rateType: 'FLAT', price: '1' };
const GRADUATED: RateSpec = { rateType: 'TIERED', tiers: [{ size: '100', price: '2' }, { price: '1' }] };
const usage = (productId: string, quantity: string, from: number, to: number, rate: RateSpec = FLAT1): RatedSlice => ({ productId, quantity, rate, startingAt: from, endingBefore: to });
const trial = (start: string, days: number, cap?: string, coveredBefore = '0', extra: Partial<InvoiceTrial> = {}): InvoiceTrial => ({
  contractId: 'c1', window: trialWindow(start, { length_in_days: days }), spec: cap === undefined ? {} : { spending_cap: { amount: cap } }, coveredBefore, ownLines: true, ...extra,
});
const commit = (amount: string): GrantState => ({
  id: 'commit', kind: 'PREPAID', name: 'commit', priority: 1, contractLevel: true,
  segments: [{ id: 's0', startingAt: JAN, endingBefore: P('2027-01-01T00:00:00Z'), amount, remaining: amount }],
});

interface Case {
  periodStart: number;
  periodEnd: number;
  slices: RatedSlice[];
  fixedCharges?: FixedCharge[];
  grants?: GrantState[];
  corrections?: CorrectionInput[];
  trials: InvoiceTrial[];
  lines: string[];
  total: string;
}

const cases: [string, Case][] = [
  ['a trial covering the whole period: usage, subscription and a scheduled charge; a commit purchase and a discount stay', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '1000', JAN, FEB), { productId: 'seat', startingAt: JAN, endingBefore: FEB, rate: { rateType: 'SUBSCRIPTION', price: '3100', quantity: '1', isProrated: true }, prorationFactor: '1' }],
    fixedCharges: [
      { kind: 'scheduled', id: 'sc', productId: 'fee', name: 'Onboarding', timestamp: JAN, quantity: '1', unitPrice: '500' },
      { kind: 'discount', id: 'd', productId: 'fee', name: 'Launch discount', timestamp: JAN, quantity: '1', unitPrice: '100' },
      { kind: 'commit_purchase', id: 'cp', productId: 'fee', name: 'Prepaid', timestamp: JAN, quantity: '1', unitPrice: '10000', commitId: 'x' },
    ],
    trials: [trial('2026-01-01T00:00:00Z', 31)],
    lines: ['usage:tokens:1000', 'subscription:seat:3100', 'scheduled:Onboarding:500', 'scheduled:Launch discount:-100', 'commit_purchase:Prepaid:10000', 'trial:Trial (ends 2026-02-01):-4600'],
    total: '9900',
  }],
  ['a 14-day trial ending mid-period, graduated tiers restart after it', {
    periodStart: JAN, periodEnd: FEB,
    // 150 in the trial: 100 × 2 + 50 × 1 = 250 (covered); 80 after it through fresh tiers: 80 × 2 = 160.
    slices: [usage('tokens', '150', JAN, P('2026-01-15T00:00:00Z'), GRADUATED), usage('tokens', '80', P('2026-01-15T00:00:00Z'), FEB, GRADUATED)],
    trials: [trial('2026-01-01T00:00:00Z', 14)],
    lines: ['usage:tokens:250', 'usage:tokens:160', 'trial:Trial (ends 2026-01-15):-250'],
    total: '160',
  }],
  ['the cap is reached mid-trial: covered up to it, the rest billed', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '400', JAN, P('2026-01-15T00:00:00Z')), usage('images', '350', JAN, P('2026-01-15T00:00:00Z')), usage('tokens', '90', P('2026-01-15T00:00:00Z'), FEB)],
    trials: [trial('2026-01-01T00:00:00Z', 14, '500')],
    lines: ['usage:tokens:400', 'usage:images:350', 'usage:tokens:90', 'trial:Trial (ends 2026-01-15):-500'],
    total: '340',
  }],
  ['the cap spanning two periods, first period: 400 of 1000 covered', {
    periodStart: P('2026-01-20T00:00:00Z'), periodEnd: FEB,
    slices: [usage('tokens', '400', P('2026-01-20T00:00:00Z'), FEB)],
    trials: [trial('2026-01-20T00:00:00Z', 30, '1000')],
    lines: ['usage:tokens:400', 'trial:Trial (ends 2026-02-19):-400'],
    total: '0',
  }],
  ['the cap spanning two periods, second period: the 600 left of it, after what the first covered', {
    periodStart: FEB, periodEnd: MAR,
    slices: [usage('tokens', '800', FEB, P('2026-02-19T00:00:00Z')), usage('tokens', '300', P('2026-02-19T00:00:00Z'), MAR)],
    trials: [trial('2026-01-20T00:00:00Z', 30, '1000', '400')],
    lines: ['usage:tokens:800', 'usage:tokens:300', 'trial:Trial (ends 2026-02-19):-600'],
    total: '500',
  }],
  ['the cap used up in an earlier period: the trial line is 0', {
    periodStart: FEB, periodEnd: MAR,
    slices: [usage('tokens', '800', FEB, P('2026-02-19T00:00:00Z'))],
    trials: [trial('2026-01-20T00:00:00Z', 30, '1000', '1000')],
    lines: ['usage:tokens:800', 'trial:Trial (ends 2026-02-19):0'],
    total: '800',
  }],
  ['zero usage: a zero trial line, total 0', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '0', JAN, P('2026-01-15T00:00:00Z'), GRADUATED), usage('tokens', '0', P('2026-01-15T00:00:00Z'), FEB, GRADUATED)],
    trials: [trial('2026-01-01T00:00:00Z', 14, '500')],
    lines: ['usage:tokens:0', 'usage:tokens:0', 'trial:Trial (ends 2026-01-15):0'],
    total: '0',
  }],
  ['trial plus a commit: the trial covers the in-trial line, the commit draws only on what follows', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '600', JAN, P('2026-01-15T00:00:00Z')), usage('tokens', '700', P('2026-01-15T00:00:00Z'), FEB)],
    grants: [commit('1000')],
    trials: [trial('2026-01-01T00:00:00Z', 14)],
    lines: ['usage:tokens:600', 'usage:tokens:700', 'trial:Trial (ends 2026-01-15):-600', 'applied_commit_or_credit:commit:-700'],
    total: '0',
  }],
  ['a capped trial plus a commit: the commit draws on what the cap left of the in-trial line', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '600', JAN, P('2026-01-15T00:00:00Z')), usage('tokens', '700', P('2026-01-15T00:00:00Z'), FEB)],
    grants: [commit('1000')],
    trials: [trial('2026-01-01T00:00:00Z', 14, '200')],
    lines: ['usage:tokens:600', 'usage:tokens:700', 'trial:Trial (ends 2026-01-15):-200', 'applied_commit_or_credit:commit:-1000'],
    total: '100',
  }],
  ['late in-trial usage of a finalized period is covered within what is left of the cap', {
    periodStart: P('2026-02-15T00:00:00Z'), periodEnd: P('2026-03-15T00:00:00Z'),
    slices: [usage('tokens', '100', P('2026-02-15T00:00:00Z'), P('2026-03-15T00:00:00Z'))],
    corrections: [
      { correctedInvoiceId: 'i1', name: 'Correction (in trial)', amount: '250', reason: 'late', trialContractId: 'c1' },
      { correctedInvoiceId: 'i1', name: 'Correction', amount: '40', reason: 'late' },
    ],
    // The trial ended on Jan 29; earlier invoices covered 900 of the 1000 cap.
    trials: [trial('2026-01-15T00:00:00Z', 14, '1000', '900', { ownLines: false })],
    lines: ['usage:tokens:100', 'correction:Correction (in trial):250', 'correction:Correction:40', 'trial:Trial (ends 2026-01-29):-100'],
    total: '290',
  }],
  ['a negative in-trial correction (regenerate) nets against the own lines; the commit does not draw on them', {
    periodStart: JAN, periodEnd: FEB,
    slices: [usage('tokens', '1100', JAN, FEB)],
    corrections: [{ correctedInvoiceId: 'v', name: 'Late usage already billed (in trial)', amount: '-300', reason: 'billed elsewhere', trialContractId: 'c1' }],
    grants: [commit('1000')],
    trials: [trial('2026-01-01T00:00:00Z', 31)],
    lines: ['usage:tokens:1100', 'correction:Late usage already billed (in trial):-300', 'trial:Trial (ends 2026-02-01):-800'],
    total: '0',
  }],
];

describe('trial lines (exact cents)', () => {
  test.each(cases)('%s', (_name, c) => {
    const inv = assembleInvoice({ periodStart: c.periodStart, periodEnd: c.periodEnd, products, slices: c.slices, fixedCharges: c.fixedCharges, grants: c.grants, corrections: c.corrections, trials: c.trials });
    expect(inv.lines.map((l) => `${l.type}:${l.name}:${l.total.toString()}`)).toEqual(c.lines);
    expect(inv.total.toString()).toBe(c.total);
    expect(inv.total.eq(sum(inv.lines.map((l) => l.total)))).toBe(true);
  });

  test('the trial line spans the trial and names whose it is; the subtotal is before it', () => {
    const inv = assembleInvoice({ periodStart: JAN, periodEnd: FEB, products, slices: [usage('tokens', '10', JAN, FEB)], trials: [trial('2026-01-01T00:00:00Z', 31)] });
    expect(inv.lines.at(-1)).toMatchObject({ type: 'trial', startingAt: '2026-01-01T00:00:00.000Z', endingBefore: '2026-02-01T00:00:00.000Z', trialContractId: 'c1' });
    expect([inv.subtotal.toString(), inv.total.toString()]).toEqual(['10', '0']);
  });
});
